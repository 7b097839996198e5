//! The Redis connection and its failure rules: one [`ConnectionManager`], created lazily so the
//! sidecar starts while Redis is down and reconnects by itself after a restart; a fresh
//! manager when the old one is stuck; one retry of a first round trip on a dropped
//! connection; every operation bounded by the command timeout ([`bound_all`]); and the
//! mapping of Redis errors to [`StoreError`].

use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError};

use crate::session::StoreError;

/// The connection shared by every operation of one store.
pub(super) struct Connection {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// The manager in use and its generation (see [`Connection::fail`]).
    current: Mutex<(u64, ConnectionManager)>,
}

/// A connection handle and the generation of the manager it came from.
pub(super) struct Conn {
    pub(super) generation: u64,
    pub(super) manager: ConnectionManager,
}

impl Connection {
    /// Prepares the connection without opening it. Fails only on a malformed `url`. Must be
    /// called inside a Tokio runtime.
    pub(super) fn new(url: &str, command_timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid redis url: {e}")))?;
        // Short attempts and one retry: while Redis is down a call fails well within
        // `command_timeout`, and the next call starts a fresh reconnect.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(command_timeout))
            .set_response_timeout(Some(command_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(command_timeout.min(Duration::from_millis(500)));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            client,
            config,
            current: Mutex::new((0, manager)),
        })
    }

    fn current(&self) -> MutexGuard<'_, (u64, ConnectionManager)> {
        // Only a clone or a replacement happens under this lock; a poisoned one is still whole.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A handle on the manager in use.
    pub(super) fn conn(&self) -> Conn {
        let current = self.current();
        Conn {
            generation: current.0,
            manager: current.1.clone(),
        }
    }

    /// Maps a Redis error. The manager reconnects by itself after I/O errors but keeps a
    /// connection attempt that failed any other way (a handshake refused, something that is
    /// not Redis answering) for good, so then a fresh manager replaces it, once per failure.
    /// An error reply to a command (OOM, LOADING, ...) says nothing against the connection.
    fn fail(&self, generation: u64, e: RedisError) -> StoreError {
        let stuck = !matches!(
            e.kind(),
            ErrorKind::Io | ErrorKind::Server(_) | ErrorKind::Extension
        );
        if stuck {
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
        store_error(e)
    }

    /// Awaits one Redis round trip on a handle from [`Connection::conn`] (the whole operation
    /// is bounded by [`bound_all`]).
    pub(super) async fn call<T>(
        &self,
        generation: u64,
        op: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        op.await.map_err(|e| self.fail(generation, e))
    }

    /// The first round trip of an operation, which must be safe to repeat. An idle
    /// connection to a Redis that restarted fails once when used, and the manager is already
    /// reconnecting by then: one retry on a dropped connection spares the client a 503.
    pub(super) async fn first_call<T, F, Fut>(&self, op: F) -> Result<(Conn, T), StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let mut conn = self.conn();
        let mut result = op(conn.manager.clone()).await;
        if result
            .as_ref()
            .is_err_and(RedisError::is_connection_dropped)
        {
            conn = self.conn();
            result = op(conn.manager.clone()).await;
        }
        match result {
            Ok(value) => Ok((conn, value)),
            Err(e) => Err(self.fail(conn.generation, e)),
        }
    }
}

fn store_error(e: RedisError) -> StoreError {
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
