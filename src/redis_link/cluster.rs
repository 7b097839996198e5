//! Redis Cluster: one [`ClusterConnection`] to all the masters, which routes each command and
//! script by its key, follows MOVED/ASK and refreshes its slot map itself. Every script of
//! this backend touches one key, so each runs in one slot. Connected on first use, so the
//! sidecar starts while the cluster is down.

use std::sync::Mutex;
use std::time::Duration;

use redis::RedisError;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

use super::LinkError;
use super::handle::{Conn, Handle, is_stuck, lock, store_error};

pub(super) struct Cluster {
    client: ClusterClient,
    /// The connection in use and its generation; none before the first call or after one
    /// that will not recover by itself.
    current: Mutex<(u64, Option<ClusterConnection>)>,
    /// One connection attempt at a time.
    connecting: tokio::sync::Mutex<()>,
}

impl Cluster {
    /// Checks the node URLs; connects to nothing yet.
    pub(super) fn new(nodes: &[String], command_timeout: Duration) -> Result<Self, LinkError> {
        let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        // Redirections and reconnections are retried inside the command timeout, which
        // bounds the whole operation anyway.
        let client = ClusterClient::builder(nodes.iter().map(String::as_str))
            .connection_timeout(command_timeout)
            .response_timeout(command_timeout)
            .retries(5)
            .min_retry_wait(10)
            .max_retry_wait(millis(command_timeout / 4).max(10))
            .build()
            .map_err(|e| LinkError::Unavailable(format!("invalid redis cluster nodes: {e}")))?;
        Ok(Self {
            client,
            current: Mutex::new((0, None)),
            connecting: tokio::sync::Mutex::new(()),
        })
    }

    fn current(&self) -> Option<Conn> {
        let current = lock(&self.current);
        current.1.as_ref().map(|c| Conn {
            generation: current.0,
            manager: Handle::Cluster(c.clone()),
        })
    }

    /// The connection, connecting first if there is none.
    pub(super) async fn conn(&self) -> Result<Conn, LinkError> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let _one = self.connecting.lock().await;
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let connection = self
            .client
            .get_async_connection()
            .await
            .map_err(store_error)?;
        let mut current = lock(&self.current);
        *current = (current.0 + 1, Some(connection.clone()));
        Ok(Conn {
            generation: current.0,
            manager: Handle::Cluster(connection),
        })
    }

    /// A connection that failed in a way it does not recover from is dropped, so the next
    /// call connects afresh from the configured nodes.
    pub(super) fn fail(&self, generation: u64, e: &RedisError) {
        if is_stuck(e) {
            let mut current = lock(&self.current);
            if current.0 == generation {
                current.1 = None;
            }
        }
    }
}
