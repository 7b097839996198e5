//! Verification sessions (DESIGN §4): what a requestToken starts and a submit completes,
//! and the rate-limit state that must be shared the same way (DESIGN §5).
//! One [`SessionStore`] trait, two backends: [`memory`] for a single process and [`redis`]
//! for production, with the same semantics and one shared test suite.
//!
//! The backends differ in one respect, on purpose: Redis [queues](SessionStore::queues)
//! messages in a durable outbox ([`crate::outbox`], DESIGN §7) that every replica's senders
//! drain, while with the memory store the request sends its message itself and takes the
//! session change back when that fails (a process that keeps its sessions in memory has
//! nothing durable to queue into).

pub mod admin;
pub mod memory;
pub mod metered;
pub mod redis;

use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use secrecy::SecretString;

pub use admin::{DeadLetter, DeadLetterView, OutboxReport, RetryOutcome, SessionDetails};

use crate::config::RateLimit;
use crate::ratelimit::{AddressKey, LimitKey, RateDecision};
use crate::threepid::{Medium, Notice, Purpose};
use crate::token::{SecretHash, TokenHash};

/// Lifetimes and limits every backend enforces the same way.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Every key starts with it (Redis only).
    pub key_prefix: String,
    /// A session ends this long after its last change (creation, a new send); a validated one
    /// is usable this long after its validation and kept twice as long
    /// ([`Session::usable_until`]).
    pub session_lifetime: Duration,
    /// Wrong tokens a session survives.
    pub max_submit_attempts: u32,
}

impl StoreSettings {
    /// What `[store]` and `[threepid]` say.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            key_prefix: config.store.key_prefix.clone(),
            session_lifetime: config.threepid.session_lifetime,
            max_submit_attempts: config.threepid.max_submit_attempts,
        }
    }
}

/// How long a via-upstream purpose note lives: the homeserver calls back while the
/// client's request is still in flight, so minutes are plenty.
pub const PURPOSE_NOTE_TTL: Duration = Duration::from_secs(600);

/// Why a via-upstream requestToken was accepted, and in which language its message goes:
/// what the client listener notes for the identity listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurposeNote {
    pub purpose: Purpose,
    /// A catalogue's tag.
    pub language: String,
}

/// A security notice to mail, as queued: everything it says, written out (no session, no
/// token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeMessage {
    pub notice: Notice,
    /// The canonical email address.
    pub address: String,
    /// A catalogue's tag.
    pub language: String,
    /// When it happened, written out (`2026-12-06 18:40 UTC`).
    pub time: String,
    /// The client's network, partly hidden.
    pub client_ip: String,
}

/// A requestToken that passed validation: start a session or continue the one that
/// `(medium, address, client_secret)` already has.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub medium: Medium,
    /// Canonical form (DESIGN §5).
    pub address: String,
    pub client_secret: SecretHash,
    pub purpose: Purpose,
    pub next_link: Option<String>,
    pub send_attempt: u64,
    /// The language its messages are written in (the requestToken's `Accept-Language`,
    /// negotiated): kept with the session and its outbox entry, so any replica writes the
    /// same language, and the link page falls back to it.
    pub language: String,
    /// Hash of the token that will be sent if the decision is [`SendDecision::Send`].
    pub token: TokenHash,
    /// When that token stops being accepted (unix ms).
    pub token_expires_ms: u64,
    /// Now (unix ms), passed in so that tests control time.
    pub now_ms: u64,
}

/// What the outbox needs, besides the [`SendRequest`], to send the token later, from any
/// replica: the secrets that the session itself never stores (`Debug` shows neither).
#[derive(Debug)]
pub struct OutboxMessage {
    /// The token itself. It lives only in the outbox entry, which is deleted once sent.
    pub token: SecretString,
    /// Email only (empty for SMS): the link in the mail carries it.
    pub client_secret: SecretString,
}

/// What the store decided for a [`SendRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendDecision {
    /// The token was stored: send it. If sending fails, call [`SessionStore::undo_send`]
    /// with this decision so that nothing is left half-made. From
    /// [`SessionStore::begin_send_queued`]: the message is queued, and will be sent.
    Send {
        sid: String,
        /// The session was created by this request.
        created: bool,
        /// The session's `send_attempt` before this request (None when created).
        previous_attempt: Option<u64>,
    },
    /// `send_attempt` was not above the last one: answer with the same sid, send nothing.
    AlreadySent { sid: String },
}

/// What [`SessionStore::begin_send_queued_limited`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitedSend {
    /// The limit refused the request: nothing was counted, started or queued.
    Limited { retry_after_ms: u64 },
    /// The limit let the request through (counting it), and then this was decided.
    Decided(SendDecision),
}

/// A session as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub sid: String,
    pub medium: Medium,
    pub address: String,
    pub client_secret: SecretHash,
    pub purpose: Purpose,
    pub next_link: Option<String>,
    /// The language of its last message (absent in sessions a version before languages
    /// started).
    pub language: Option<String>,
    pub send_attempt: u64,
    pub failed_submits: u32,
    /// Unix ms, once validated.
    pub validated_at: Option<u64>,
}

impl Session {
    /// Until when (unix ms) a validated session proves its address: one `session_lifetime`
    /// after its validation, however often it was continued since. The store keeps it one
    /// lifetime longer, so that a homeserver asking later is told the session expired rather
    /// than that it never existed.
    pub fn usable_until(&self, lifetime: Duration) -> Option<u64> {
        let lifetime = u64::try_from(lifetime.as_millis()).unwrap_or(u64::MAX);
        self.validated_at.map(|at| at.saturating_add(lifetime))
    }
}

/// What a submitted token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// The token matched (or the session was already validated by an earlier submit).
    Validated(Session),
    /// Wrong or expired token; `remaining` more wrong tokens are allowed.
    WrongToken { remaining: u32 },
    /// `max_submit_attempts` wrong tokens were spent: the session is refused for good.
    TooManyAttempts,
    /// No such sid, or the client_secret does not match it.
    NoSession,
}

/// The store could not be reached or answered nonsense: the client gets 503.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    #[error("session store timed out")]
    Timeout,
    #[error("session store returned unexpected data: {0}")]
    Corrupt(String),
}

impl From<crate::redis_link::LinkError> for StoreError {
    fn from(e: crate::redis_link::LinkError) -> Self {
        use crate::redis_link::LinkError;
        match e {
            LinkError::Unavailable(why) => StoreError::Unavailable(why),
            LinkError::Timeout => StoreError::Timeout,
            LinkError::Corrupt(why) => StoreError::Corrupt(why),
        }
    }
}

/// Where sessions live. Every method is atomic with respect to the others, across all
/// replicas that share the store.
pub trait SessionStore: Send + Sync + 'static {
    /// Starts or continues a session (the `send_attempt` rule of DESIGN §4).
    fn begin_send(&self, req: SendRequest) -> BoxFuture<'_, Result<SendDecision, StoreError>>;

    /// Whether this store has a durable outbox: then requestToken calls
    /// [`SessionStore::begin_send_queued`] and answers at once, and the outbox's senders
    /// deliver (Redis). Otherwise it calls [`SessionStore::begin_send`] and sends the
    /// message itself (memory).
    fn queues(&self) -> bool;

    /// [`SessionStore::begin_send`], and on [`SendDecision::Send`] the message queued for
    /// the outbox's senders, who send it only if the session change committed. A store that
    /// does not [queue](SessionStore::queues) refuses (`Unavailable`).
    fn begin_send_queued(
        &self,
        req: SendRequest,
        message: OutboxMessage,
    ) -> BoxFuture<'_, Result<SendDecision, StoreError>>;

    /// [`SessionStore::rate_limit`] on `key` at `limit_now_ms`, then, if the request may go
    /// on, [`SessionStore::begin_send_queued`]: in one step (one round trip) where the store
    /// can (Redis with every key on one server), as the two calls otherwise. A limited
    /// request changes nothing else.
    fn begin_send_queued_limited<'a>(
        &'a self,
        key: &'a LimitKey,
        limit: RateLimit,
        limit_now_ms: u64,
        req: SendRequest,
        message: OutboxMessage,
    ) -> BoxFuture<'a, Result<LimitedSend, StoreError>> {
        async move {
            match self.rate_limit(key, limit, limit_now_ms).await? {
                RateDecision::Limited { retry_after_ms } => {
                    Ok(LimitedSend::Limited { retry_after_ms })
                }
                RateDecision::Allowed => self
                    .begin_send_queued(req, message)
                    .await
                    .map(LimitedSend::Decided),
            }
        }
        .boxed()
    }

    /// Takes back a [`SendDecision::Send`] whose message could not be sent: the token is
    /// removed, a created session is deleted, a continued one gets its old `send_attempt`.
    fn undo_send<'a>(
        &'a self,
        decision: &'a SendDecision,
        token: &'a TokenHash,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// A live session by sid.
    fn get<'a>(
        &'a self,
        sid: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>>;

    /// Checks a submitted token in constant time and validates the session on a match.
    /// A wrong token is counted before it is compared, so parallel guesses cannot exceed
    /// `max_submit_attempts`.
    fn submit<'a>(
        &'a self,
        sid: &'a str,
        client_secret: &'a SecretHash,
        token: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<SubmitOutcome, StoreError>>;

    /// Counts one request against `limit` under `key` (GCRA, [`crate::ratelimit::gcra`]) and
    /// says whether it may go on. Lives in the store so that every replica sharing it shares
    /// the limit; the check and the update are one atomic step, so parallel requests cannot
    /// slip through together. A limited request is not counted. `now_ms` (unix ms) comes from
    /// the caller so that replicas agree and tests control time. The state of a key is gone
    /// once the key is back to a full burst, so idle keys cost nothing.
    fn rate_limit<'a>(
        &'a self,
        key: &'a LimitKey,
        limit: RateLimit,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<RateDecision, StoreError>>;

    /// Via-upstream mode: notes that the client listener accepted a requestToken of
    /// `(medium, address, client_secret)` for `purpose`, after all its checks. Each note lives
    /// [`PURPOSE_NOTE_TTL`] and allows one identity-listener requestToken
    /// ([`SessionStore::take_purpose`]): no note, no message.
    fn note_purpose<'a>(
        &'a self,
        medium: Medium,
        address: &'a str,
        client_secret: &'a SecretHash,
        note: &'a PurposeNote,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Takes the oldest live note of [`SessionStore::note_purpose`] for the request, if any
    /// (each note is taken once).
    fn take_purpose<'a>(
        &'a self,
        medium: Medium,
        address: &'a str,
        client_secret: &'a SecretHash,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<PurposeNote>, StoreError>>;

    /// Spends one unit of a budget every replica shares: `key` counts up to `limit` until
    /// `until_ms` (unix ms), when it starts afresh. False, and nothing spent, once used up.
    fn spend<'a>(
        &'a self,
        key: &'a str,
        limit: u64,
        until_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Queues a security notice for the outbox's senders. False when this store has no
    /// outbox ([`SessionStore::queues`]): then the caller sends it itself.
    fn queue_notice<'a>(
        &'a self,
        notice: &'a NoticeMessage,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// The random key of this store's address hashes ([`crate::ratelimit::AddressHash`]):
    /// made once, then the same for every replica sharing the store.
    fn address_key(&self) -> BoxFuture<'_, Result<AddressKey, StoreError>>;

    /// Whether the store answers (readiness).
    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>>;

    // The admin API's operations (`routes::admin::api`).

    /// A session with its times, live or kept after its validation.
    fn details<'a>(
        &'a self,
        sid: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<SessionDetails>, StoreError>>;

    /// The sessions of one canonical address (found through an index keyed by its hash, not
    /// by a scan), oldest first.
    fn sessions_of<'a>(
        &'a self,
        medium: Medium,
        address: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<SessionDetails>, StoreError>>;

    /// Ends a session now: from then on it answers like an expired one (its tokens, its
    /// validation and its lookup entry go with it). Whether there was one.
    fn revoke<'a>(&'a self, sid: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Lifts the limits under `keys` (each back to a full burst); how many were holding
    /// anything back.
    fn clear_limits<'a>(&'a self, keys: &'a [LimitKey]) -> BoxFuture<'a, Result<u64, StoreError>>;

    /// The outbox's counts and its newest `max` dead letters.
    fn outbox_report(&self, max: usize) -> BoxFuture<'_, Result<OutboxReport, StoreError>>;

    /// Sends a dead letter's message again, with a new token (one `token_lifetime_ms`
    /// long) in the session, through the outbox. The message is written from the session
    /// (address, purpose, language), so a dead letter need not keep any of it.
    fn retry_dead_letter<'a>(
        &'a self,
        id: &'a str,
        token_lifetime_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<RetryOutcome, StoreError>>;

    /// Deletes a dead letter; whether there was one.
    fn drop_dead_letter<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;
}
