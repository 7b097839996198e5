//! The Redis connection and its failure rules, the one place that knows the [`Topology`]:
//!
//! - one server: one [`ConnectionManager`], created lazily so the sidecar starts while Redis is
//!   down and reconnects by itself after a restart; a fresh manager when the old one is stuck;
//! - Sentinel: the same, to the master the sentinels name, found again after a failover
//!   ([`super::sentinel`]);
//! - Cluster: one [`ClusterConnection`], which follows MOVED/ASK and refreshes its slot map
//!   itself ([`super::cluster`]);
//!
//! and for all three: one retry of a first round trip on a dropped connection; every
//! operation bounded by the command timeout ([`bound_all`]); the mapping of Redis errors to
//! [`StoreError`]. Operations get a [`Handle`], which runs any command or script (the key of a
//! script routes it on a cluster).

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

use super::Topology;
use super::cluster::Cluster;
use super::sentinel::Sentinel;
use crate::session::StoreError;

/// The connection shared by every operation of one store.
pub(super) enum Connection {
    Single(Single),
    Sentinel(Sentinel),
    Cluster(Cluster),
}

/// A connection handle, usable as any `redis` async connection (`query_async`,
/// `invoke_async`, pipelines). Cheap to clone: clones share the underlying connection.
#[derive(Clone)]
pub(super) enum Handle {
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
pub(super) struct Conn {
    pub(super) generation: u64,
    pub(super) manager: Handle,
}

impl Connection {
    /// Prepares the connection without opening it. Fails only on a malformed URL or address.
    /// Must be called inside a Tokio runtime (Sentinel starts its failover watch).
    pub(super) fn new(topology: &Topology, command_timeout: Duration) -> Result<Self, StoreError> {
        Ok(match topology {
            Topology::Single { url } => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| StoreError::Unavailable(format!("invalid redis url: {e}")))?;
                Connection::Single(Single::new(client, command_timeout)?)
            }
            Topology::Sentinel(settings) => {
                Connection::Sentinel(Sentinel::new(settings, command_timeout)?)
            }
            Topology::Cluster { nodes } => {
                Connection::Cluster(Cluster::new(nodes, command_timeout)?)
            }
        })
    }

    /// Whether every key is on one server (one server, or a Sentinel set-up's master), so
    /// that one script may touch keys of different hash slots.
    pub(super) fn one_node(&self) -> bool {
        !matches!(self, Connection::Cluster(_))
    }

    /// A handle on the connection in use; Sentinel may have to find the master first, and
    /// Cluster to connect.
    async fn conn(&self) -> Result<Conn, StoreError> {
        match self {
            Connection::Single(single) => Ok(single.conn()),
            Connection::Sentinel(sentinel) => sentinel.conn().await,
            Connection::Cluster(cluster) => cluster.conn().await,
        }
    }

    /// Maps a Redis error, and takes note of what it says against the connection.
    fn fail(&self, generation: u64, e: RedisError) -> StoreError {
        match self {
            Connection::Single(single) => single.fail(generation, &e),
            Connection::Sentinel(sentinel) => {
                sentinel.fail(generation, &e);
            }
            Connection::Cluster(cluster) => cluster.fail(generation, &e),
        }
        store_error(e)
    }

    /// Whether a first round trip that failed this way is worth one more try.
    fn worth_a_retry(&self, generation: u64, e: &RedisError) -> bool {
        match self {
            Connection::Single(_) | Connection::Cluster(_) => e.is_connection_dropped(),
            // The master may have moved: the retry asks the sentinels first.
            Connection::Sentinel(sentinel) => sentinel.fail(generation, e),
        }
    }

    /// Awaits one Redis round trip on a handle from a [`Connection::first_call`] (the whole
    /// operation is bounded by [`bound_all`]). Not retried: a step after the first may not be
    /// safe to repeat.
    pub(super) async fn call<T>(
        &self,
        generation: u64,
        op: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        op.await.map_err(|e| self.fail(generation, e))
    }

    /// The first round trip of an operation, which must be safe to repeat. An idle
    /// connection to a Redis that restarted fails once when used, and the manager is already
    /// reconnecting by then; after a Sentinel failover the old master drops its clients or
    /// answers READONLY: one retry spares the client a 503. `op` may run any commands.
    pub(super) async fn first_call<T, F, Fut>(&self, op: F) -> Result<(Conn, T), StoreError>
    where
        F: Fn(Handle) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let mut conn = self.conn().await?;
        let mut result = op(conn.manager.clone()).await;
        if let Err(e) = &result
            && self.worth_a_retry(conn.generation, e)
        {
            conn = self.conn().await?;
            result = op(conn.manager.clone()).await;
        }
        match result {
            Ok(value) => Ok((conn, value)),
            Err(e) => Err(self.fail(conn.generation, e)),
        }
    }
}

/// One server behind one address.
pub(super) struct Single {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// The manager in use and its generation (see [`Single::fail`]).
    current: Mutex<(u64, ConnectionManager)>,
}

impl Single {
    pub(super) fn new(
        client: redis::Client,
        command_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let config = manager_config(command_timeout);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            client,
            config,
            current: Mutex::new((0, manager)),
        })
    }

    fn current(&self) -> MutexGuard<'_, (u64, ConnectionManager)> {
        lock(&self.current)
    }

    pub(super) fn conn(&self) -> Conn {
        let current = self.current();
        Conn {
            generation: current.0,
            manager: Handle::Node(current.1.clone()),
        }
    }

    /// The manager reconnects by itself after I/O errors but keeps a connection attempt that
    /// failed any other way (a handshake refused, something that is not Redis answering) for
    /// good, so then a fresh manager replaces it, once per failure.
    fn fail(&self, generation: u64, e: &RedisError) {
        if is_stuck(e) {
            let mut current = self.current();
            if current.0 == generation
                && let Ok(fresh) = ConnectionManager::new_lazy_with_config(
                    self.client.clone(),
                    self.config.clone(),
                )
            {
                *current = (generation + 1, fresh);
            }
        }
    }
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

pub(super) fn store_error(e: RedisError) -> StoreError {
    if e.is_timeout() {
        return StoreError::Timeout;
    }
    match e.kind() {
        ErrorKind::UnexpectedReturnType | ErrorKind::Parse => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Bounds a whole multi-step operation, so a caller waits about one command timeout at most
/// even when each step is slow (a step cut short leaves nothing a later call cannot handle).
pub(super) async fn bound_all<T>(
    timeout: Duration,
    op: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, op)
        .await
        .unwrap_or(Err(StoreError::Timeout))
}
