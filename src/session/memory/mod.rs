//! The in-process backend: sessions in a `HashMap` behind a `std::sync::Mutex`, for a single
//! replica (trying the sidecar out, tests of logic that does not concern Redis).
//!
//! Owns expiry by the caller's clock: a session ends `session_lifetime` after its last change,
//! judged by the `now_ms` each call passes in. Expired sessions are dropped when touched and by
//! a sweep every [`SWEEP_EVERY`] new sessions, so memory stays bounded by the sessions started
//! within one lifetime. The lock is never held across an `.await` (no method awaits at all).
//!
//! Rate limits live in [`rate_limits`], a table of their own.
//!
//! There is no outbox here ([`SessionStore::queues`] is false): the requestToken handler
//! sends the message itself and calls [`SessionStore::undo_send`] when that fails, so the
//! client gets 500 and may try the same `send_attempt` again. A queue in this process's
//! memory would not survive the process, which is what an outbox is for.

mod admin;
mod rate_limits;

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::{
    OutboxMessage, OutboxReport, PURPOSE_NOTE_TTL, PurposeNote, RetryOutcome, SendDecision,
    SendRequest, Session, SessionDetails, SessionStore, StoreError, StoreSettings, SubmitOutcome,
};
use crate::config::RateLimit;
use crate::ratelimit::{AddressKey, LimitKey, RateDecision};
use crate::threepid::{Medium, Purpose};
use crate::token::{self, SecretHash, TokenHash};
use rate_limits::RateTable;

/// New sessions between two sweeps of expired ones.
const SWEEP_EVERY: u32 = 1024;

/// What identifies "the same request" for the `send_attempt` rule: a request for another
/// purpose starts a session of its own.
type LookupKey = (Medium, String, SecretHash, Purpose);

/// Via-upstream purpose notes are kept by (medium, address, secret).
type NoteKey = (Medium, String, SecretHash);

/// Sessions for one process. Cheap to share behind an `Arc`; every method is atomic because
/// it runs entirely under one lock.
#[derive(Debug)]
pub struct MemoryStore {
    settings: StoreSettings,
    inner: Mutex<Inner>,
    rate_limits: RateTable,
    /// Budgets: how much was spent, and until when (unix ms) it counts.
    budgets: Mutex<HashMap<String, (u64, u64)>>,
    /// Keys this process's address hashes (nothing outside it needs to agree).
    address_key: AddressKey,
    /// Via-upstream purpose notes, oldest first, each with its expiry (unix ms).
    purposes: Mutex<HashMap<NoteKey, VecDeque<(PurposeNote, u64)>>>,
}

#[derive(Debug, Default)]
struct Inner {
    sessions: HashMap<String, Entry>,
    lookup: HashMap<LookupKey, String>,
    created_since_sweep: u32,
}

#[derive(Debug)]
struct Entry {
    session: Session,
    /// Token hashes with their expiry (unix ms).
    tokens: Vec<(TokenHash, u64)>,
    /// The token whose send set the current `send_attempt` (for `undo_send`).
    attempt_token: Option<TokenHash>,
    /// Unix ms after which the session is gone.
    expires_at: u64,
    /// When it was created (unix ms).
    created_at: u64,
}

impl MemoryStore {
    /// An empty store enforcing `settings` (the key prefix is unused here).
    pub fn new(settings: StoreSettings) -> Self {
        Self {
            settings,
            inner: Mutex::new(Inner::default()),
            rate_limits: RateTable::new(),
            address_key: AddressKey::random(),
            budgets: Mutex::new(HashMap::new()),
            purposes: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic under the lock cannot leave a half-made change (every change is a few
        // plain assignments), so a poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lifetime_ms(&self) -> u64 {
        u64::try_from(self.settings.session_lifetime.as_millis()).unwrap_or(u64::MAX)
    }

    fn begin_send_now(&self, req: SendRequest) -> SendDecision {
        let now = req.now_ms;
        let expires_at = now.saturating_add(self.lifetime_ms());
        let mut inner = self.lock();
        let key: LookupKey = (
            req.medium,
            req.address.clone(),
            req.client_secret,
            req.purpose,
        );
        let live_sid = inner
            .lookup
            .get(&key)
            .cloned()
            .filter(|sid| inner.live(sid, now));

        if let Some(sid) = live_sid {
            let entry = inner
                .sessions
                .get_mut(&sid)
                .expect("live() just found this session");
            let previous = entry.session.send_attempt;
            if req.send_attempt <= previous {
                return SendDecision::AlreadySent { sid };
            }
            if entry.session.medium == Medium::Msisdn {
                // Only the newest code counts: each guess is tested against one code.
                entry.tokens.clear();
            } else {
                entry.tokens.retain(|&(_, exp)| exp > now);
            }
            entry.tokens.push((req.token, req.token_expires_ms));
            entry.attempt_token = Some(req.token);
            entry.session.send_attempt = req.send_attempt;
            if req.next_link.is_some() {
                entry.session.next_link = req.next_link;
            }
            entry.session.language = Some(req.language);
            // A validated session lives one lifetime from its validation, however often it
            // is continued.
            if entry.session.validated_at.is_none() {
                entry.expires_at = expires_at;
            }
            return SendDecision::Send {
                sid,
                created: false,
                previous_attempt: Some(previous),
            };
        }

        inner.created_since_sweep += 1;
        if inner.created_since_sweep >= SWEEP_EVERY {
            inner.sweep(now);
        }
        let sid = token::new_sid();
        let session = Session {
            sid: sid.clone(),
            medium: req.medium,
            address: req.address,
            client_secret: req.client_secret,
            purpose: req.purpose,
            next_link: req.next_link,
            language: Some(req.language),
            send_attempt: req.send_attempt,
            failed_submits: 0,
            validated_at: None,
        };
        let entry = Entry {
            session,
            tokens: vec![(req.token, req.token_expires_ms)],
            attempt_token: Some(req.token),
            expires_at,
            created_at: now,
        };
        // A lookup entry left by an expired session is simply replaced.
        if let Some(old) = inner.lookup.insert(key, sid.clone()) {
            inner.sessions.remove(&old);
        }
        inner.sessions.insert(sid.clone(), entry);
        SendDecision::Send {
            sid,
            created: true,
            previous_attempt: None,
        }
    }

    fn undo_send_now(&self, decision: &SendDecision, token: &TokenHash) {
        let SendDecision::Send {
            sid,
            created,
            previous_attempt,
        } = decision
        else {
            return;
        };
        let mut inner = self.lock();
        let Some(entry) = inner.sessions.get_mut(sid) else {
            return;
        };
        entry.tokens.retain(|(t, _)| !t.ct_eq(token));
        let set_by_us = entry.attempt_token.is_some_and(|t| t.ct_eq(token));
        // A created session is deleted unless a later send continued it meanwhile.
        if *created && entry.tokens.is_empty() {
            inner.remove(sid);
            return;
        }
        if set_by_us {
            if let Some(previous) = previous_attempt {
                entry.session.send_attempt = *previous;
            }
            entry.attempt_token = None;
        }
    }

    fn get_now(&self, sid: &str, now: u64) -> Option<Session> {
        let mut inner = self.lock();
        inner
            .live(sid, now)
            .then(|| inner.sessions.get(sid).map(|e| e.session.clone()))
            .flatten()
    }

    fn submit_now(
        &self,
        sid: &str,
        client_secret: &SecretHash,
        token: &str,
        now: u64,
    ) -> SubmitOutcome {
        let max = self.settings.max_submit_attempts;
        let lifetime = self.lifetime_ms();
        let mut inner = self.lock();
        if !inner.live(sid, now) {
            return SubmitOutcome::NoSession;
        }
        let Some(entry) = inner.sessions.get_mut(sid) else {
            return SubmitOutcome::NoSession;
        };
        let session = &mut entry.session;
        if !session.client_secret.ct_eq(client_secret) {
            return SubmitOutcome::NoSession;
        }
        if session.failed_submits >= max {
            return SubmitOutcome::TooManyAttempts;
        }
        if session.validated_at.is_some() {
            return SubmitOutcome::Validated(session.clone());
        }
        // Reserve the attempt before comparing, as the Redis backend must; under this lock the
        // two steps are one, but the counts come out the same.
        session.failed_submits += 1;
        let live_tokens = entry
            .tokens
            .iter()
            .filter(|&&(_, exp)| exp > now)
            .map(|(t, _)| t);
        if token::matches_any(token, live_tokens) {
            session.failed_submits -= 1;
            session.validated_at = Some(now);
            // Usable for one lifetime from now, kept for two (see `Session::usable_until`).
            entry.expires_at = now.saturating_add(lifetime.saturating_mul(2));
            SubmitOutcome::Validated(session.clone())
        } else {
            SubmitOutcome::WrongToken {
                remaining: max - session.failed_submits,
            }
        }
    }
}

impl Inner {
    /// Whether `sid` is a live session; an expired one is removed on the way.
    fn live(&mut self, sid: &str, now: u64) -> bool {
        match self.sessions.get(sid) {
            Some(entry) if entry.expires_at > now => true,
            Some(_) => {
                self.remove(sid);
                false
            }
            None => false,
        }
    }

    /// Removes a session and the lookup entry that points at it.
    fn remove(&mut self, sid: &str) {
        if let Some(entry) = self.sessions.remove(sid) {
            let s = entry.session;
            let key: LookupKey = (s.medium, s.address, s.client_secret, s.purpose);
            if self.lookup.get(&key).is_some_and(|v| v == sid) {
                self.lookup.remove(&key);
            }
        }
    }

    /// Drops every expired session and every lookup entry left without a session.
    fn sweep(&mut self, now: u64) {
        self.created_since_sweep = 0;
        self.sessions.retain(|_, e| e.expires_at > now);
        let sessions = &self.sessions;
        self.lookup.retain(|_, sid| sessions.contains_key(sid));
    }
}

impl SessionStore for MemoryStore {
    fn begin_send(&self, req: SendRequest) -> BoxFuture<'_, Result<SendDecision, StoreError>> {
        let decision = self.begin_send_now(req);
        async move { Ok(decision) }.boxed()
    }

    fn queues(&self) -> bool {
        false
    }

    fn begin_send_queued(
        &self,
        _req: SendRequest,
        _message: OutboxMessage,
    ) -> BoxFuture<'_, Result<SendDecision, StoreError>> {
        async {
            Err(StoreError::Unavailable(
                "the memory store has no outbox: send directly".into(),
            ))
        }
        .boxed()
    }

    fn undo_send<'a>(
        &'a self,
        decision: &'a SendDecision,
        token: &'a TokenHash,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.undo_send_now(decision, token);
        async { Ok(()) }.boxed()
    }

    fn get<'a>(
        &'a self,
        sid: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        let session = self.get_now(sid, now_ms);
        async move { Ok(session) }.boxed()
    }

    fn submit<'a>(
        &'a self,
        sid: &'a str,
        client_secret: &'a SecretHash,
        token: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<SubmitOutcome, StoreError>> {
        let outcome = self.submit_now(sid, client_secret, token, now_ms);
        async move { Ok(outcome) }.boxed()
    }

    fn rate_limit<'a>(
        &'a self,
        key: &'a LimitKey,
        limit: RateLimit,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<RateDecision, StoreError>> {
        let decision = self.rate_limits.check(key, limit, now_ms);
        async move { Ok(decision) }.boxed()
    }

    fn note_purpose<'a>(
        &'a self,
        medium: Medium,
        address: &'a str,
        client_secret: &'a SecretHash,
        note: &'a PurposeNote,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let ttl = u64::try_from(PURPOSE_NOTE_TTL.as_millis()).unwrap_or(u64::MAX);
        let mut notes = self.purposes.lock().unwrap_or_else(|e| e.into_inner());
        // Notes are short-lived; sweep the expired ones now and then, not on every insert.
        if notes
            .len()
            .is_multiple_of(usize::try_from(SWEEP_EVERY).unwrap_or(1024))
        {
            notes.retain(|_, queue| queue.iter().any(|(_, expires)| *expires > now_ms));
        }
        notes
            .entry((medium, address.to_owned(), *client_secret))
            .or_default()
            .push_back((note.clone(), now_ms.saturating_add(ttl)));
        futures_util::future::ready(Ok(())).boxed()
    }

    fn take_purpose<'a>(
        &'a self,
        medium: Medium,
        address: &'a str,
        client_secret: &'a SecretHash,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<PurposeNote>, StoreError>> {
        let mut notes = self.purposes.lock().unwrap_or_else(|e| e.into_inner());
        let key = (medium, address.to_owned(), *client_secret);
        let mut found = None;
        if let Some(queue) = notes.get_mut(&key) {
            while let Some((note, expires)) = queue.pop_front() {
                if expires > now_ms {
                    found = Some(note);
                    break;
                }
            }
            if queue.is_empty() {
                notes.remove(&key);
            }
        }
        futures_util::future::ready(Ok(found)).boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        async { Ok(()) }.boxed()
    }

    fn spend<'a>(
        &'a self,
        key: &'a str,
        limit: u64,
        until_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut budgets = self.budgets.lock().unwrap_or_else(|e| e.into_inner());
        budgets.retain(|_, (_, until)| *until > now_ms);
        let (spent, _) = budgets.entry(key.to_owned()).or_insert((0, until_ms));
        let allowed = *spent < limit;
        if allowed {
            *spent += 1;
        }
        futures_util::future::ready(Ok(allowed)).boxed()
    }

    fn queue_notice<'a>(
        &'a self,
        _notice: &'a super::NoticeMessage,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        futures_util::future::ready(Ok(false)).boxed()
    }

    fn address_key(&self) -> BoxFuture<'_, Result<AddressKey, StoreError>> {
        futures_util::future::ready(Ok(self.address_key.clone())).boxed()
    }

    fn details<'a>(
        &'a self,
        sid: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<SessionDetails>, StoreError>> {
        futures_util::future::ready(Ok(self.details_now(sid, now_ms))).boxed()
    }

    fn sessions_of<'a>(
        &'a self,
        medium: Medium,
        address: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<SessionDetails>, StoreError>> {
        futures_util::future::ready(Ok(self.sessions_of_now(medium, address, now_ms))).boxed()
    }

    fn revoke<'a>(&'a self, sid: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let mut inner = self.lock();
        let existed = inner.sessions.contains_key(sid);
        inner.remove(sid);
        drop(inner);
        futures_util::future::ready(Ok(existed)).boxed()
    }

    fn clear_limits<'a>(&'a self, keys: &'a [LimitKey]) -> BoxFuture<'a, Result<u64, StoreError>> {
        let cleared = keys.iter().filter(|k| self.rate_limits.clear(k)).count();
        futures_util::future::ready(Ok(cleared as u64)).boxed()
    }

    /// No outbox here: nothing pending, nothing dead.
    fn outbox_report(&self, _max: usize) -> BoxFuture<'_, Result<OutboxReport, StoreError>> {
        futures_util::future::ready(Ok(OutboxReport::default())).boxed()
    }

    fn retry_dead_letter<'a>(
        &'a self,
        _id: &'a str,
        _token_lifetime_ms: u64,
        _now_ms: u64,
    ) -> BoxFuture<'a, Result<RetryOutcome, StoreError>> {
        futures_util::future::ready(Ok(RetryOutcome::NotFound)).boxed()
    }

    fn drop_dead_letter<'a>(&'a self, _id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        futures_util::future::ready(Ok(false)).boxed()
    }
}

#[cfg(test)]
mod tests;
