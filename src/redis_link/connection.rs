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
//! [`LinkError`] ([`super::handle`]). Operations get a [`Handle`], which runs any command or
//! script (the key of a script routes it on a cluster).

use std::future::Future;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use redis::RedisError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::LinkError;
use super::Topology;
use super::cluster::Cluster;
use super::handle::{Conn, Handle, is_stuck, lock, manager_config, store_error};
use super::sentinel::Sentinel;

/// The connection shared by every operation of one store. What is behind it (one server, a
/// Sentinel set-up's master, a cluster) is its own business.
pub struct Connection(Kind);

enum Kind {
    Single(Single),
    Sentinel(Sentinel),
    Cluster(Cluster),
}

impl Connection {
    /// Prepares the connection without opening it. Fails only on a malformed URL or address.
    /// Must be called inside a Tokio runtime (Sentinel starts its failover watch).
    pub fn new(topology: &Topology, command_timeout: Duration) -> Result<Self, LinkError> {
        Ok(match topology {
            Topology::Single { url } => {
                let client = redis::Client::open(url.as_str())
                    .map_err(|e| LinkError::Unavailable(format!("invalid redis url: {e}")))?;
                Connection(Kind::Single(Single::new(client, command_timeout)?))
            }
            Topology::Sentinel(settings) => {
                Connection(Kind::Sentinel(Sentinel::new(settings, command_timeout)?))
            }
            Topology::Cluster { nodes } => {
                Connection(Kind::Cluster(Cluster::new(nodes, command_timeout)?))
            }
        })
    }

    /// Whether every key is on one server (one server, or a Sentinel set-up's master), so
    /// that one script may touch keys of different hash slots.
    pub fn one_node(&self) -> bool {
        !matches!(self.0, Kind::Cluster(_))
    }

    /// A handle on the connection in use; Sentinel may have to find the master first, and
    /// Cluster to connect.
    async fn conn(&self) -> Result<Conn, LinkError> {
        match &self.0 {
            Kind::Single(single) => Ok(single.conn()),
            Kind::Sentinel(sentinel) => sentinel.conn().await,
            Kind::Cluster(cluster) => cluster.conn().await,
        }
    }

    /// Maps a Redis error, and takes note of what it says against the connection.
    fn fail(&self, generation: u64, e: RedisError) -> LinkError {
        match &self.0 {
            Kind::Single(single) => single.fail(generation, &e),
            Kind::Sentinel(sentinel) => {
                sentinel.fail(generation, &e);
            }
            Kind::Cluster(cluster) => cluster.fail(generation, &e),
        }
        store_error(e)
    }

    /// Whether a first round trip that failed this way is worth one more try.
    fn worth_a_retry(&self, generation: u64, e: &RedisError) -> bool {
        match &self.0 {
            Kind::Single(_) | Kind::Cluster(_) => e.is_connection_dropped(),
            // The master may have moved: the retry asks the sentinels first.
            Kind::Sentinel(sentinel) => sentinel.fail(generation, e),
        }
    }

    /// Awaits one Redis round trip on a handle from a [`Connection::first_call`] (the whole
    /// operation is bounded by [`bound_all`]). Not retried: a step after the first may not be
    /// safe to repeat.
    pub async fn call<T>(
        &self,
        generation: u64,
        op: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, LinkError> {
        op.await.map_err(|e| self.fail(generation, e))
    }

    /// The first round trip of an operation, which must be safe to repeat. An idle
    /// connection to a Redis that restarted fails once when used, and the manager is already
    /// reconnecting by then; after a Sentinel failover the old master drops its clients or
    /// answers READONLY: one retry spares the client a 503. `op` may run any commands.
    pub async fn first_call<T, F, Fut>(&self, op: F) -> Result<(Conn, T), LinkError>
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
    pub(super) fn new(client: redis::Client, command_timeout: Duration) -> Result<Self, LinkError> {
        let config = manager_config(command_timeout);
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| LinkError::Unavailable(e.to_string()))?;
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
