//! What the admin API reads from a store and changes in it (`routes::admin::api`): a
//! session's details, the sessions of one address, the outbox's dead letters. The operations
//! themselves are on [`super::SessionStore`], so both backends answer them.

use super::Session;
use crate::threepid::Medium;

/// A session as the admin API shows it: the session, and its times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDetails {
    pub session: Session,
    /// When it was created (unix ms); absent in sessions stored before this was kept.
    pub created_ms: Option<u64>,
    /// When the store forgets it (unix ms), if known.
    pub expires_ms: Option<u64>,
    /// Tokens sent for it that are still accepted.
    pub live_tokens: u32,
}

/// A message given up on, as the outbox's dead-letter list keeps it: no token, no client
/// secret, the address masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The outbox entry's ID.
    pub id: String,
    /// The session it was for (empty for a security notice or a malformed entry).
    pub sid: String,
    pub medium: String,
    pub masked_address: String,
    /// The session's purpose, or the notice's name.
    pub purpose: String,
    /// The last delivery error.
    pub error: String,
    pub attempts: u64,
    /// When the request queued it (unix ms).
    pub enqueued_ms: u64,
}

/// A dead letter as kept and listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterView {
    /// Its own ID in the dead-letter list: what retry and delete take.
    pub id: String,
    /// When it was given up on (unix ms).
    pub dead_ms: u64,
    pub letter: DeadLetter,
}

/// The outbox, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboxReport {
    /// Whether the store has an outbox at all (the memory store sends at once).
    pub durable: bool,
    /// Messages queued and not yet sent.
    pub pending: u64,
    /// When the oldest of them was queued (unix ms).
    pub oldest_ms: Option<u64>,
    /// Dead letters kept.
    pub dead: u64,
    /// The newest dead letters, newest first.
    pub dead_letters: Vec<DeadLetterView>,
}

/// What retrying a dead letter did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOutcome {
    /// A new message, with a new token, is queued as this outbox entry; the dead letter is
    /// gone.
    Queued { entry: String, medium: Medium },
    /// No dead letter has this ID.
    NotFound,
    /// Not a verification message (a notice or a malformed entry): nothing to send again.
    NotRetriable,
    /// Its session is gone (expired or revoked): the user has to ask again.
    SessionGone,
    /// Its session was validated meanwhile: nothing to send.
    Validated,
}
