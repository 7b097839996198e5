//! The writes of the outbox stream that are part of a session change: `begin_send_queued`
//! adds the message's entry (in `begin_queued.lua` where every key is on one server, with
//! [`RedisStore::enqueue`] in steps on Redis Cluster) and takes it back when the change did not
//! happen. The stream's layout and everything the senders do with it belong to the outbox
//! ([`crate::outbox`]); the key names are here so that both agree.

use secrecy::ExposeSecret;

use super::RedisStore;
use crate::redis_link::Conn;
use crate::session::{OutboxMessage, SendRequest, StoreError};

impl RedisStore {
    /// `{prefix}outbox`.
    pub fn outbox_key(&self) -> String {
        format!("{}outbox", self.settings.key_prefix)
    }

    /// `{prefix}outbox-dead`.
    pub fn dead_letter_key(&self) -> String {
        format!("{}outbox-dead", self.settings.key_prefix)
    }

    /// Step (b) of `begin_send_queued`: XADD the message. Never retried (a second entry
    /// would be a second message); returns the entry ID.
    pub(super) async fn enqueue(
        &self,
        conn: &mut Conn,
        sid: &str,
        req: &SendRequest,
        message: &OutboxMessage,
    ) -> Result<String, StoreError> {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(self.outbox_key())
            .arg("*")
            .arg("sid")
            .arg(sid)
            .arg("medium")
            .arg(req.medium.as_str())
            .arg("address")
            .arg(&req.address)
            .arg("purpose")
            .arg(req.purpose.as_str())
            .arg("token")
            .arg(message.token.expose_secret())
            .arg("hash")
            .arg(req.token.to_hex())
            .arg("secret")
            .arg(message.client_secret.expose_secret())
            .arg("lang")
            .arg(&req.language);
        self.connection
            .call(conn.generation, xadd.query_async(&mut conn.manager))
            .await
            .map_err(Into::into)
    }

    /// Deletes an entry whose session change did not happen. Best effort: a sender drops
    /// such an entry anyway.
    pub(super) async fn unqueue(&self, conn: &mut Conn, id: &str) {
        let mut xdel = redis::cmd("XDEL");
        xdel.arg(self.outbox_key()).arg(id);
        let deleted: Result<i64, _> = self
            .connection
            .call(conn.generation, xdel.query_async(&mut conn.manager))
            .await;
        if let Err(e) = deleted {
            tracing::debug!(error = %e, "outbox: could not delete an entry not to send");
        }
    }

    /// A security notice, as an outbox entry of its own kind (`notice` set; no session, no
    /// token): the senders mail it without looking for a session.
    pub(super) async fn enqueue_notice(
        &self,
        notice: &crate::session::NoticeMessage,
    ) -> Result<(), StoreError> {
        let mut xadd = redis::cmd("XADD");
        xadd.arg(self.outbox_key())
            .arg("*")
            .arg("notice")
            .arg(notice.notice.as_str())
            .arg("medium")
            .arg("email")
            .arg("address")
            .arg(&notice.address)
            .arg("lang")
            .arg(&notice.language)
            .arg("time")
            .arg(&notice.time)
            .arg("client_ip")
            .arg(&notice.client_ip);
        let xadd = &xadd;
        let (_, _id): (Conn, String) = self
            .connection
            .first_call(move |mut c| async move { xadd.query_async(&mut c).await })
            .await?;
        Ok(())
    }
}
