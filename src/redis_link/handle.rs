//! What every Redis topology shares, below all of them: the connection [`Handle`] that
//! operations run commands on, the failure rules (which errors a connection does not recover
//! from by itself, how Redis errors become [`LinkError`]s) and the bound on a whole
//! operation. [`super::connection`] picks the topology; the topologies ([`super::sentinel`],
//! [`super::cluster`]) build on this and know nothing of each other or of the connection.

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

use super::LinkError;

/// A connection handle, usable as any `redis` async connection (`query_async`,
/// `invoke_async`, pipelines). Cheap to clone: clones share the underlying connection.
#[derive(Clone)]
pub enum Handle {
    /// One server, or the master of a Sentinel set-up.
    Node(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Handle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Handle::Node(c) => c.req_packed_command(cmd),
            Handle::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Handle::Node(c) => c.req_packed_commands(pipeline, offset, count),
            Handle::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Handle::Node(c) => c.get_db(),
            Handle::Cluster(c) => c.get_db(),
        }
    }
}

/// A connection handle and the generation of the connection it came from (see
/// [`Connection::call`]).
pub struct Conn {
    pub generation: u64,
    pub manager: Handle,
}

/// Short attempts and one retry: while Redis is down a call fails well within
/// `command_timeout`, and the next call starts a fresh reconnect.
pub(super) fn manager_config(command_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(command_timeout))
        .set_response_timeout(Some(command_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(command_timeout.min(Duration::from_millis(500)))
}

/// Only a clone or a replacement happens under these locks; a poisoned one is still whole.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An error that a connection does not recover from by itself. An error reply to a command
/// (OOM, LOADING, ...) says nothing against the connection, nor does an I/O error (the
/// connection reconnects).
pub(super) fn is_stuck(e: &RedisError) -> bool {
    !matches!(
        e.kind(),
        ErrorKind::Io | ErrorKind::Server(_) | ErrorKind::Extension
    )
}

/// A write reached a replica: the node was a master once, and is no longer.
pub(super) fn is_read_only(e: &RedisError) -> bool {
    e.kind() == ErrorKind::Server(ServerErrorKind::ReadOnly)
}

pub fn store_error(e: RedisError) -> LinkError {
    if e.is_timeout() {
        return LinkError::Timeout;
    }
    match e.kind() {
        ErrorKind::UnexpectedReturnType | ErrorKind::Parse => LinkError::Corrupt(e.to_string()),
        _ => LinkError::Unavailable(e.to_string()),
    }
}

/// Bounds a whole multi-step operation, so a caller waits about one command timeout at most
/// even when each step is slow (a step cut short leaves nothing a later call cannot handle).
pub async fn bound_all<T, E: From<LinkError>>(
    timeout: Duration,
    op: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::time::timeout(timeout, op)
        .await
        .unwrap_or_else(|_| Err(LinkError::Timeout.into()))
}
