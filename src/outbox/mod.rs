//! The durable outbox (DESIGN §7), Redis backend only: an accepted requestToken queues its
//! message in a Redis stream and answers at once; the senders here — one task per replica —
//! read the stream through one consumer group, send, and delete what they sent. A message
//! survives an SMTP or SMS gateway outage (retried with exponential backoff for up to
//! `email.max_retry_age` / `sms.max_retry_age`, then moved to a dead-letter stream without its
//! token) and the death of the replica that accepted it or was sending it (another sender
//! claims it after `outbox.claim_timeout`). The memory backend has no outbox: there the
//! request sends its message itself ([`crate::routes::request_token::issue`]).
//!
//! **Why a message is sent only for a committed session change, on Redis Cluster too.** The
//! stream and the session live in different hash slots, so no one script can write both.
//! The request therefore writes the outbox entry first and commits the token's hash to the
//! session second (`begin_send_queued`); a sender sends an entry only once the session holds
//! that hash (`HGET session t:<hash>`). If the second step never happens (a crash, a timeout,
//! the `send_attempt` rule saying "already sent") the entry is an orphan: its hash is in no
//! session, and the sender drops it without sending. A session that expired or was deleted
//! drops its entries the same way. So an entry is sent if and only if its session change
//! committed — the guarantee one atomic step would give. A sender that sees an entry before
//! the request's second step has run waits for it a little, then looks again later; an entry
//! whose hash is still missing after [`orphan_grace`] is an orphan.
//!
//! **Delivery guarantee.** Each entry is delivered to one sender by the consumer group and
//! deleted (XACK + XDEL) right after it was sent (with the other entries handled meanwhile,
//! in one round trip), so in the normal case a message is sent once. Across crashes it is at least once: a sender that dies after sending but before
//! deleting leaves the entry to be claimed and sent again.
//!
//! **Retries** keep no state outside Redis (see `session::redis::outbox`): a failed entry's
//! idle time is set so that it comes due after its backoff, and any sender claims entries
//! that are due. The backoff doubles from `outbox.retry_base` and is capped at
//! `outbox.claim_timeout`, which must exceed the send timeouts so that an entry being sent is
//! never claimed by another sender.
//!
//! **Connections.** The blocking `XREADGROUP … BLOCK` runs on a connection of its own
//! ([`OutboxReader::dedicated`](crate::session::redis::OutboxReader::dedicated), one server at
//! `store.url`): on the store's shared connection
//! it would hold up every command queued behind it. Every other command uses the shared
//! connection, whatever the topology. With Sentinel or Cluster the sender does not open a
//! connection of its own yet and polls without blocking instead ([`OutboxReader::polling`](crate::session::redis::OutboxReader::polling):
//! a new message waits up to 200 ms longer).

mod finish;
pub mod redis;
mod sender;

use std::future::Future;
use std::time::Duration;

use secrecy::SecretString;

pub use crate::session::DeadLetter;
use crate::session::StoreError;
use crate::threepid::{Medium, Notice, Purpose};
use crate::token::TokenHash;
use crate::validate::mask_address;

pub use sender::spawn;

/// A queued message, as a sender got it.
#[derive(Debug)]
pub struct Queued {
    /// The stream entry ID.
    pub id: String,
    pub sid: String,
    pub medium: Medium,
    /// Canonical, as in the session.
    pub address: String,
    pub purpose: Purpose,
    pub token: SecretString,
    /// The session field `t:<hash>` that says the session change committed.
    pub token_hash: TokenHash,
    /// Email: the client secret the link carries; empty for SMS.
    pub client_secret: SecretString,
    /// The language to write the message in.
    pub language: Option<String>,
    /// When the request queued it (unix ms, Redis' clock).
    pub enqueued_ms: u64,
    /// Which delivery of the entry this is: 1 for the first.
    pub attempt: u64,
}

/// A queued security notice: everything it says is in the entry.
#[derive(Debug)]
pub struct QueuedNotice {
    pub id: String,
    pub notice: Notice,
    /// Canonical email address.
    pub address: String,
    pub language: Option<String>,
    pub time: String,
    pub client_ip: String,
    pub enqueued_ms: u64,
    pub attempt: u64,
}

/// What a read or a claim gave a sender.
#[derive(Debug)]
pub enum Delivery {
    Message(Queued),
    Notice(QueuedNotice),
    /// An entry that cannot be sent (a missing or bad field); it is dead-lettered.
    Malformed {
        id: String,
        enqueued_ms: u64,
        reason: String,
    },
    /// A pending entry that was deleted meanwhile: only acknowledged.
    Gone {
        id: String,
    },
}

impl Delivery {
    pub fn id(&self) -> &str {
        match self {
            Delivery::Message(m) => &m.id,
            Delivery::Notice(n) => &n.id,
            Delivery::Malformed { id, .. } | Delivery::Gone { id } => id,
        }
    }
}

/// The queue operations the senders need: read new entries, claim due ones, check that an
/// entry's session change committed, finish, retry later, dead-letter. [`redis::RedisQueue`]
/// is the one implementation (the memory store has no outbox).
pub trait Queue: Send + Sync + 'static {
    /// Whether [`Queue::read`] blocks waiting for entries (else it polls).
    fn blocks(&self) -> bool;

    /// Creates what the queue needs (the consumer group), if missing.
    fn create_group(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// New entries for `consumer`: up to `count`, waiting at most about a second for some.
    fn read(
        &self,
        consumer: &str,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send;

    /// Entries of any consumer idle for at least `claim_timeout` (their sender died or got
    /// stuck, or their retry is due), claimed for `consumer`: up to `count`, each to one
    /// sender only.
    fn claim_due(
        &self,
        consumer: &str,
        claim_timeout: Duration,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Delivery>, StoreError>> + Send;

    /// When the token of an entry stops being accepted (unix ms), or `None` when its session
    /// does not hold it (the session change never committed, or the session is gone).
    fn token_expiry(
        &self,
        sid: &str,
        token: &TokenHash,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send;

    /// Whether an entry is still queued.
    fn entry_exists(&self, id: &str) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Done with entries: they are gone, and their tokens with them.
    fn finish(&self, ids: &[String]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Makes an entry that `consumer` holds come due for any sender in `due_in` (at most
    /// `claim_timeout`); `held_for` is how long ago it was read or claimed (if another sender
    /// claimed it since, nothing changes).
    fn retry_in(
        &self,
        consumer: &str,
        id: &str,
        held_for: Duration,
        due_in: Duration,
        claim_timeout: Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Moves an entry to the dead letters (the record holds no secret) and finishes it. An
    /// email message's client secret is kept beside its session, for as long as the session
    /// can live, so that the admin API can send the message again (`resend`).
    fn dead_letter(
        &self,
        record: &DeadLetter,
        resend: Option<&SecretString>,
        max_len: usize,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Forgets the consumers other than `me` that hold nothing and have not read for
    /// `idle`; returns how many.
    fn forget_consumers(
        &self,
        me: &str,
        idle: Duration,
    ) -> impl Future<Output = Result<usize, StoreError>> + Send;
}

/// What to do after attempt `attempt` of a message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again this much later.
    RetryIn(Duration),
    /// The next attempt would come after `max_retry_age`: dead-letter it now.
    GiveUp,
}

/// The wait after failed attempt `attempt` (1 for the first): `base`, doubling, at most `cap`.
pub fn backoff(attempt: u64, base: Duration, cap: Duration) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1).min(31)).unwrap_or(31);
    base.saturating_mul(1u32 << doublings).min(cap)
}

/// After attempt `attempt` failed when the message was `age` old: retry after the backoff,
/// unless that would be past `max_age`.
pub fn after_failure(
    attempt: u64,
    age: Duration,
    max_age: Duration,
    base: Duration,
    cap: Duration,
) -> AfterFailure {
    let wait = backoff(attempt, base, cap);
    if age.saturating_add(wait) > max_age {
        AfterFailure::GiveUp
    } else {
        AfterFailure::RetryIn(wait)
    }
}

/// How long an entry whose token hash is in no session may wait for the request's second
/// step before it counts as an orphan. That step is bounded by the command timeout; the
/// floor leaves room for clocks that differ a little between replicas and Redis.
pub fn orphan_grace(command_timeout: Duration) -> Duration {
    command_timeout
        .saturating_mul(2)
        .max(Duration::from_secs(5))
}

/// An error as it may be logged and kept: the address masked, no token, no client secret
/// (a mail server's refusal may quote the recipient).
pub fn scrub(error: &str, address: &str, secrets: &[&str]) -> String {
    let mut out = error.replace(address, &mask_address(address));
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret, "***");
    }
    out
}

/// This process's name in the consumer group: host, pid and a random part, so that a
/// restarted process never inherits the pending entries of the one before (those are
/// claimed after `claim_timeout`, like any dead sender's).
pub fn consumer_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sidecar".into());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_backoff_doubles_from_the_base_up_to_the_cap() {
        let waits: Vec<u64> = (1..=8).map(|a| backoff(a, S, 30 * S).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(backoff(0, S, 30 * S), S, "attempt 0 counts as the first");
        assert_eq!(backoff(u64::MAX, S, 30 * S), 30 * S, "no overflow");
    }

    #[test]
    fn a_failure_is_retried_unless_the_next_attempt_would_be_past_max_retry_age() {
        let max = 60 * S;
        assert_eq!(
            after_failure(1, 10 * S, max, S, 30 * S),
            AfterFailure::RetryIn(S)
        );
        assert_eq!(
            after_failure(5, 44 * S, max, S, 30 * S),
            AfterFailure::RetryIn(16 * S)
        );
        assert_eq!(
            after_failure(5, 45 * S, max, S, 30 * S),
            AfterFailure::GiveUp
        );
        assert_eq!(
            after_failure(1, 61 * S, max, S, 30 * S),
            AfterFailure::GiveUp
        );
    }

    #[test]
    fn an_orphan_waits_at_least_two_command_timeouts() {
        assert_eq!(orphan_grace(Duration::from_millis(500)), 5 * S);
        assert_eq!(orphan_grace(4 * S), 8 * S);
    }

    #[test]
    fn a_kept_error_has_the_address_masked_and_no_secret() {
        let error = "550 5.1.1 <alice@example.org>: no such user (token TOKEN123, secret cs-1)";
        let kept = scrub(error, "alice@example.org", &["TOKEN123", "cs-1", ""]);
        assert_eq!(
            kept,
            "550 5.1.1 <a***@example.org>: no such user (token ***, secret ***)"
        );
    }

    #[test]
    fn consumer_names_differ_between_processes_and_restarts() {
        let (a, b) = (consumer_name(), consumer_name());
        assert_ne!(a, b);
        assert!(a.contains(&format!("-{}-", std::process::id())), "{a}");
    }
}
