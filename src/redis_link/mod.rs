//! The connection to Redis, whatever its topology: one server, the master of a Sentinel
//! set-up, or a cluster ([`Topology`]). The session store and the outbox's queue run every
//! command on a [`Connection`]; only [`connection`] knows which topology is behind it, and the
//! topologies ([`sentinel`], [`cluster`]) build on what they share ([`handle`]) and know
//! nothing of each other or of the connection.
//!
//! Failures come out as [`LinkError`]s, which the store turns into its own errors.

mod cluster;
mod connection;
mod handle;
mod sentinel;

use crate::config::{self, SentinelSettings, StoreTopology};
pub use connection::Connection;
pub use handle::{Conn, Handle, bound_all, store_error};

/// Where the store's Redis is and how it is laid out.
#[derive(Debug, Clone)]
pub enum Topology {
    /// One server (or one address a managed service fails over behind): `redis://` or
    /// `rediss://` (TLS, the certificate checked against the system's root certificates, or
    /// only those of the PEM bundle `SSL_CERT_FILE` names, for a private CA).
    Single { url: String },
    /// A master found through Redis Sentinel, and found again after a failover.
    Sentinel(SentinelSettings),
    /// Redis Cluster: the nodes to discover it from, `redis://` or `rediss://` URLs (the
    /// first one's credentials are used for every node).
    Cluster { nodes: Vec<String> },
}

impl Topology {
    /// The topology `[store]` describes (`store.url`, `[store.sentinel]` or `[store.cluster]`).
    pub fn from_config(store: &config::Store) -> Self {
        match &store.topology {
            StoreTopology::Single => Topology::Single {
                url: store.url.clone(),
            },
            StoreTopology::Sentinel(sentinel) => Topology::Sentinel(sentinel.clone()),
            StoreTopology::Cluster { nodes } => Topology::Cluster {
                nodes: nodes.clone(),
            },
        }
    }
}

/// Why a Redis round trip failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("redis timed out")]
    Timeout,
    #[error("redis returned unexpected data: {0}")]
    Corrupt(String),
}
