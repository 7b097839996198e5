//! [`OutboxReader`]: the connection a sender's blocking read uses. A blocking command on the
//! store's shared connection would hold up every command queued behind it, so a read blocks
//! on a connection of its own, or, where the sender cannot open one, polls.

use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use super::READ_BLOCK;
use crate::redis_link::store_error;
use crate::session::StoreError;

/// What the blocking read of one sender uses: a connection of its own when there is one.
pub struct OutboxReader {
    pub(super) blocking: Option<Blocking>,
}

pub(super) struct Blocking {
    client: redis::Client,
    config: AsyncConnectionConfig,
    pub(super) conn: Option<MultiplexedConnection>,
}

impl OutboxReader {
    /// Reads block on a connection of their own to the one server at `url`, made on the
    /// first read and again after an error. `command_timeout` bounds connecting and, on
    /// top of [`READ_BLOCK`], each read.
    pub fn dedicated(url: &str, command_timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid redis url: {e}")))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(command_timeout))
            .set_response_timeout(Some(READ_BLOCK + command_timeout));
        Ok(Self {
            blocking: Some(Blocking {
                client,
                config,
                conn: None,
            }),
        })
    }

    /// Reads poll the store's shared connection (no blocking command may run there): for a
    /// topology this sender cannot open a connection of its own to.
    pub fn polling() -> Self {
        Self { blocking: None }
    }

    /// Whether reads block on a connection of their own.
    pub fn blocks(&self) -> bool {
        self.blocking.is_some()
    }
}

impl Blocking {
    pub(super) async fn connection(&mut self) -> Result<MultiplexedConnection, StoreError> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await
            .map_err(store_error)?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }
}
