//! The outbox on Redis (DESIGN §7): [`RedisQueue`], the [`Queue`] the senders work with, on
//! the stream that accepted requestTokens write their message to (see
//! `session::redis::queue`). The sending rules live in [`crate::outbox`]; the layout lives
//! here:
//!
//! - `{prefix}outbox` → a stream, read through the consumer group [`GROUP`]. Entry fields:
//!   `sid`, `medium`, `address`, `purpose`, `token` (the raw token: the one place it is ever
//!   kept), `hash` (its SHA-256, hex), `secret` (email: the client secret the link carries;
//!   empty for SMS). The entry ID's time is the enqueue time. An entry is deleted (XACK +
//!   XDEL) once it is sent, dropped or dead-lettered, so the stream holds only messages not
//!   yet sent.
//! - `{prefix}outbox-dead` → a stream of the messages given up on: `id` (the outbox entry's),
//!   `sid`, `medium`, `address` (masked), `purpose`, `error`, `attempts`, `enqueued_ms` —
//!   never the token or the client secret; trimmed to about `outbox.dead_letter_max` entries.
//!   An email message's client secret goes to `{prefix}resend:{<sid>}` for one session
//!   lifetime (the session's slot), so that the admin API can send it again with a new token;
//!   past that lifetime the session is gone and so is any use for it.
//!
//! Neither key shares a slot with the sessions, so no script touches both: an entry is sent
//! only if its session holds `t:<hash>` (see `begin_send_queued_inner` in
//! `session::redis::sessions`).
//!
//! A pending entry's idle time is its retry clock, so retries keep no state outside Redis:
//! any sender claims entries idle for `claim_timeout` ([`Queue::claim_due`]); a sender that
//! just took an entry holds it (idle near 0) while it sends; a failed send sets the idle time
//! so that the entry comes due after its backoff ([`Queue::retry_in`]). The blocking read
//! needs a connection of its own ([`OutboxReader`]): it would stall every command queued
//! behind it on the shared one.

use std::collections::HashMap;
use std::time::Duration;

mod reader;
mod reply;

use std::sync::Arc;

use redis::Value;
use secrecy::{ExposeSecret, SecretString};

use super::{DeadLetter, Delivery, Queue};
use crate::redis_link::Connection;
use crate::redis_link::{LinkError, bound_all, store_error};
use crate::session::StoreError;
use crate::session::redis::RedisStore;
use crate::token::TokenHash;
pub use reader::OutboxReader;
use reply::{array, consumers, entries, int, stream_entries, text};

/// The consumer group every replica's senders read through.
pub const GROUP: &str = "senders";

/// How long a read waits for new entries before the sender's loop goes round (claims due
/// entries, updates the gauges, looks at the stop signal).
pub const READ_BLOCK: Duration = Duration::from_secs(1);

/// The outbox stream of a Redis store, read through `reader`.
pub struct RedisQueue {
    store: Arc<RedisStore>,
    reader: tokio::sync::Mutex<OutboxReader>,
    blocks: bool,
}

impl RedisQueue {
    pub fn new(store: Arc<RedisStore>, reader: OutboxReader) -> Self {
        Self {
            store,
            blocks: reader.blocks(),
            reader: tokio::sync::Mutex::new(reader),
        }
    }

    fn link(&self) -> &Connection {
        self.store.link()
    }
}

impl Queue for RedisQueue {
    fn blocks(&self) -> bool {
        self.blocks
    }

    /// Creates the consumer group (and the stream) if missing. The group starts at the
    /// stream's beginning, not at `$`: entries a request added before the group existed (a
    /// Redis that restarted empty) are delivered too, and the stream holds nothing already
    /// sent.
    async fn create_group(&self) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("XGROUP");
        cmd.arg("CREATE")
            .arg(self.store.outbox_key())
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM");
        let cmd = &cmd;
        let op = self
            .link()
            .first_call(move |mut c| async move { cmd.query_async::<Value>(&mut c).await });
        match bound_all(self.store.command_timeout(), op).await {
            Ok(_) => Ok(()),
            Err(LinkError::Unavailable(e)) if e.contains("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// New entries for `consumer`: up to `count`, waiting at most [`READ_BLOCK`] for some.
    async fn read(&self, consumer: &str, count: usize) -> Result<Vec<Delivery>, StoreError> {
        let mut reader = self.reader.lock().await;
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(GROUP)
            .arg(consumer)
            .arg("COUNT")
            .arg(count);
        let Some(blocking) = reader.blocking.as_mut() else {
            // No connection of our own: ask without blocking on the shared one, and wait
            // a little between empty answers.
            read.arg("STREAMS").arg(self.store.outbox_key()).arg(">");
            let read = &read;
            let op = self
                .link()
                .first_call(move |mut c| async move { read.query_async::<Value>(&mut c).await });
            let (_, reply) = bound_all(self.store.command_timeout(), op).await?;
            let entries = stream_entries(&reply)?;
            if entries.is_empty() {
                tokio::time::sleep(POLL_WITHOUT_BLOCKING).await;
            }
            return Ok(entries.into_iter().map(|e| e.delivery(1)).collect());
        };
        let block_ms = u64::try_from(READ_BLOCK.as_millis()).unwrap_or(u64::MAX);
        read.arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(self.store.outbox_key())
            .arg(">");
        let mut conn = blocking.connection().await?;
        match read.query_async::<Value>(&mut conn).await {
            Ok(reply) => Ok(stream_entries(&reply)?
                .into_iter()
                .map(|e| e.delivery(1))
                .collect()),
            Err(e) => {
                // A fresh connection next time: this one may be broken or out of step.
                blocking.conn = None;
                Err(store_error(e).into())
            }
        }
    }

    /// Entries of any consumer idle for at least `claim_timeout` (their sender died or got
    /// stuck, or their retry is due), claimed for `consumer`: up to `count`. Claiming is
    /// atomic with the idle check, so two senders never both get an entry.
    async fn claim_due(
        &self,
        consumer: &str,
        claim_timeout: Duration,
        count: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let min_idle = millis(claim_timeout);
        let op = async move {
            let mut pending = redis::cmd("XPENDING");
            pending
                .arg(self.store.outbox_key())
                .arg(GROUP)
                .arg("IDLE")
                .arg(min_idle)
                .arg("-")
                .arg("+")
                .arg(count);
            let pending = &pending;
            let (mut conn, reply) = self
                .link()
                .first_call(move |mut c| async move { pending.query_async::<Value>(&mut c).await })
                .await?;
            // id → deliveries so far.
            let mut deliveries = HashMap::new();
            for item in array(&reply)? {
                if let [id, _consumer, _idle, count] = array(item)? {
                    deliveries.insert(text(id)?, int(count)?);
                }
            }
            if deliveries.is_empty() {
                return Ok(Vec::new());
            }
            let mut claim = redis::cmd("XCLAIM");
            claim
                .arg(self.store.outbox_key())
                .arg(GROUP)
                .arg(consumer)
                .arg(min_idle);
            for id in deliveries.keys() {
                claim.arg(id);
            }
            let claimed: Value = self
                .link()
                .call(conn.generation, claim.query_async(&mut conn.manager))
                .await?;
            let mut out: Vec<Delivery> = entries(&claimed)?
                .into_iter()
                .map(|e| {
                    let attempt = deliveries.get(&e.id).copied().unwrap_or(0) + 1;
                    e.delivery(attempt)
                })
                .collect();
            out.sort_by(|a, b| a.id().cmp(b.id()));
            Ok(out)
        };
        bound_all(self.store.command_timeout(), op).await
    }

    /// When the token of an entry stops being accepted (unix ms), or `None` when its
    /// session does not hold it: the session change never committed (a crash or a refusal
    /// after the XADD), or the session has expired or was deleted.
    async fn token_expiry(&self, sid: &str, token: &TokenHash) -> Result<Option<u64>, StoreError> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.store.session_key(sid))
            .arg(format!("t:{}", token.to_hex()));
        let cmd = &cmd;
        let op = self
            .link()
            .first_call(move |mut c| async move { cmd.query_async::<Option<u64>>(&mut c).await });
        Ok(bound_all(self.store.command_timeout(), op).await?.1)
    }

    /// Whether an entry is still in the stream (a request deletes an entry whose session
    /// change was refused).
    async fn entry_exists(&self, id: &str) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(self.store.outbox_key()).arg(id).arg(id);
        let cmd = &cmd;
        let op = self
            .link()
            .first_call(move |mut c| async move { cmd.query_async::<Value>(&mut c).await });
        let (_, reply) = bound_all(self.store.command_timeout(), op).await?;
        Ok(!array(&reply)?.is_empty())
    }

    /// Done with entries: XACK and XDEL (together, on one key), so their tokens are gone.
    async fn finish(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.cmd("XACK")
            .arg(self.store.outbox_key())
            .arg(GROUP)
            .arg(ids)
            .ignore()
            .cmd("XDEL")
            .arg(self.store.outbox_key())
            .arg(ids)
            .ignore();
        let pipe = &pipe;
        let op = self
            .link()
            .first_call(move |mut c| async move { pipe.query_async::<()>(&mut c).await });
        Ok(bound_all(self.store.command_timeout(), op)
            .await
            .map(|_| ())?)
    }

    /// Makes an entry that `consumer` holds come due for any sender in `due_in` (at most
    /// `claim_timeout`): its idle time is set to `claim_timeout - due_in`, and the delivery
    /// count is left alone. `held_for` is how long ago the entry was read or claimed: if
    /// another sender claimed it since (its idle time is then shorter), nothing changes.
    async fn retry_in(
        &self,
        consumer: &str,
        id: &str,
        held_for: Duration,
        due_in: Duration,
        claim_timeout: Duration,
    ) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("XCLAIM");
        cmd.arg(self.store.outbox_key())
            .arg(GROUP)
            .arg(consumer)
            .arg(millis(held_for.saturating_sub(CLOCK_SLACK)))
            .arg(id)
            .arg("IDLE")
            .arg(millis(claim_timeout.saturating_sub(due_in)))
            .arg("JUSTID");
        let cmd = &cmd;
        let op = self
            .link()
            .first_call(move |mut c| async move { cmd.query_async::<Value>(&mut c).await });
        Ok(bound_all(self.store.command_timeout(), op)
            .await
            .map(|_| ())?)
    }

    /// Moves an entry to the dead-letter stream (the record holds no secret), keeps an email's
    /// client secret in the session's slot for a lifetime, and finishes the entry.
    async fn dead_letter(
        &self,
        record: &DeadLetter,
        resend: Option<&SecretString>,
        max_len: usize,
    ) -> Result<(), StoreError> {
        if let Some(secret) = resend {
            let mut set = redis::cmd("SET");
            set.arg(self.store.resend_key(&record.sid))
                .arg(secret.expose_secret())
                .arg("PX")
                .arg(u64::try_from(self.store.session_lifetime().as_millis()).unwrap_or(u64::MAX));
            let set = &set;
            let op = self
                .link()
                .first_call(move |mut c| async move { set.query_async::<Value>(&mut c).await });
            bound_all(self.store.command_timeout(), op).await?;
        }
        let mut xadd = redis::cmd("XADD");
        xadd.arg(self.store.dead_letter_key())
            .arg("MAXLEN")
            .arg("~")
            .arg(max_len)
            .arg("*")
            .arg("id")
            .arg(&record.id)
            .arg("sid")
            .arg(&record.sid)
            .arg("medium")
            .arg(&record.medium)
            .arg("address")
            .arg(&record.masked_address)
            .arg("purpose")
            .arg(&record.purpose)
            .arg("error")
            .arg(&record.error)
            .arg("attempts")
            .arg(record.attempts)
            .arg("enqueued_ms")
            .arg(record.enqueued_ms);
        let xadd = &xadd;
        let op = self
            .link()
            .first_call(move |mut c| async move { xadd.query_async::<Value>(&mut c).await });
        bound_all(self.store.command_timeout(), op).await?;
        self.finish(std::slice::from_ref(&record.id)).await
    }

    /// Removes from the group the consumers other than `me` that hold no entry and have not
    /// read for `idle` (every process start adds a consumer name; a live sender reads every
    /// [`READ_BLOCK`]). Returns how many went.
    async fn forget_consumers(&self, me: &str, idle: Duration) -> Result<usize, StoreError> {
        let op = async move {
            let mut info = redis::cmd("XINFO");
            info.arg("CONSUMERS")
                .arg(self.store.outbox_key())
                .arg(GROUP);
            let info = &info;
            let (mut conn, reply) = self
                .link()
                .first_call(move |mut c| async move { info.query_async::<Value>(&mut c).await })
                .await?;
            let mut forgotten = 0;
            for (name, pending, consumer_idle) in consumers(&reply)? {
                if name == me || pending > 0 || consumer_idle < millis(idle) {
                    continue;
                }
                let mut del = redis::cmd("XGROUP");
                del.arg("DELCONSUMER")
                    .arg(self.store.outbox_key())
                    .arg(GROUP)
                    .arg(&name);
                let _: Value = self
                    .link()
                    .call(conn.generation, del.query_async(&mut conn.manager))
                    .await?;
                forgotten += 1;
            }
            Ok(forgotten)
        };
        bound_all(self.store.command_timeout(), op).await
    }
}

/// Between two reads that found nothing, without a connection to block on.
const POLL_WITHOUT_BLOCKING: Duration = Duration::from_millis(200);

/// Room for the time between a sender taking an entry and Redis noting it.
const CLOCK_SLACK: Duration = Duration::from_millis(100);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
