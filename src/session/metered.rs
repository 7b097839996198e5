//! A [`SessionStore`] that times every call and counts failures, whichever backend is
//! behind it: the store command latency histogram and error counter on `/metrics`.

use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use super::{
    LimitedSend, OutboxMessage, OutboxReport, PurposeNote, RetryOutcome, SendDecision, SendRequest,
    Session, SessionDetails, SessionStore, StoreError, SubmitOutcome,
};
use crate::config::RateLimit;
use crate::metrics::Metrics;
use crate::ratelimit::{LimitKey, RateDecision};
use crate::threepid::Medium;
use crate::token::{SecretHash, TokenHash};

/// Wraps a store; every call is observed under its operation name.
pub struct Metered {
    inner: Arc<dyn SessionStore>,
    metrics: Arc<Metrics>,
}

impl Metered {
    pub fn new(inner: Arc<dyn SessionStore>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn observe<'a, T: Send + 'a>(
        &'a self,
        operation: &'static str,
        call: BoxFuture<'a, Result<T, StoreError>>,
    ) -> BoxFuture<'a, Result<T, StoreError>> {
        async move {
            let started = Instant::now();
            let result = call.await;
            self.metrics
                .store_call(operation, started.elapsed(), result.is_ok());
            result
        }
        .boxed()
    }
}

impl SessionStore for Metered {
    fn begin_send(&self, req: SendRequest) -> BoxFuture<'_, Result<SendDecision, StoreError>> {
        self.observe("begin_send", self.inner.begin_send(req))
    }

    fn queues(&self) -> bool {
        self.inner.queues()
    }

    fn begin_send_queued(
        &self,
        req: SendRequest,
        message: OutboxMessage,
    ) -> BoxFuture<'_, Result<SendDecision, StoreError>> {
        let call = self.inner.begin_send_queued(req, message);
        self.observe("begin_send_queued", call)
    }

    fn begin_send_queued_limited<'a>(
        &'a self,
        key: &'a LimitKey,
        limit: RateLimit,
        limit_now_ms: u64,
        req: SendRequest,
        message: OutboxMessage,
    ) -> BoxFuture<'a, Result<LimitedSend, StoreError>> {
        let call = self
            .inner
            .begin_send_queued_limited(key, limit, limit_now_ms, req, message);
        self.observe("begin_send_queued_limited", call)
    }

    fn undo_send<'a>(
        &'a self,
        decision: &'a SendDecision,
        token: &'a TokenHash,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.observe("undo_send", self.inner.undo_send(decision, token))
    }

    fn get<'a>(
        &'a self,
        sid: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        self.observe("get", self.inner.get(sid, now_ms))
    }

    fn submit<'a>(
        &'a self,
        sid: &'a str,
        client_secret: &'a SecretHash,
        token: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<SubmitOutcome, StoreError>> {
        self.observe(
            "submit",
            self.inner.submit(sid, client_secret, token, now_ms),
        )
    }

    fn rate_limit<'a>(
        &'a self,
        key: &'a LimitKey,
        limit: RateLimit,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<RateDecision, StoreError>> {
        self.observe("rate_limit", self.inner.rate_limit(key, limit, now_ms))
    }

    fn note_purpose<'a>(
        &'a self,
        medium: Medium,
        address: &'a str,
        client_secret: &'a SecretHash,
        note: &'a PurposeNote,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let call = self
            .inner
            .note_purpose(medium, address, client_secret, note, now_ms);
        self.observe("note_purpose", call)
    }

    fn take_purpose<'a>(
        &'a self,
        medium: Medium,
        address: &'a str,
        client_secret: &'a SecretHash,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<PurposeNote>, StoreError>> {
        let call = self
            .inner
            .take_purpose(medium, address, client_secret, now_ms);
        self.observe("take_purpose", call)
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.observe("ping", self.inner.ping())
    }

    fn spend<'a>(
        &'a self,
        key: &'a str,
        limit: u64,
        until_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.observe("spend", self.inner.spend(key, limit, until_ms, now_ms))
    }

    fn queue_notice<'a>(
        &'a self,
        notice: &'a super::NoticeMessage,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.observe("queue_notice", self.inner.queue_notice(notice))
    }

    fn address_key(&self) -> BoxFuture<'_, Result<crate::ratelimit::AddressKey, StoreError>> {
        self.observe("address_key", self.inner.address_key())
    }

    fn details<'a>(
        &'a self,
        sid: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<SessionDetails>, StoreError>> {
        self.observe("details", self.inner.details(sid, now_ms))
    }

    fn sessions_of<'a>(
        &'a self,
        medium: Medium,
        address: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<SessionDetails>, StoreError>> {
        self.observe(
            "sessions_of",
            self.inner.sessions_of(medium, address, now_ms),
        )
    }

    fn revoke<'a>(&'a self, sid: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.observe("revoke", self.inner.revoke(sid))
    }

    fn clear_limits<'a>(&'a self, keys: &'a [LimitKey]) -> BoxFuture<'a, Result<u64, StoreError>> {
        self.observe("clear_limits", self.inner.clear_limits(keys))
    }

    fn outbox_report(&self, max: usize) -> BoxFuture<'_, Result<OutboxReport, StoreError>> {
        self.observe("outbox_report", self.inner.outbox_report(max))
    }

    fn retry_dead_letter<'a>(
        &'a self,
        id: &'a str,
        token_lifetime_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<RetryOutcome, StoreError>> {
        let call = self.inner.retry_dead_letter(id, token_lifetime_ms, now_ms);
        self.observe("retry_dead_letter", call)
    }

    fn drop_dead_letter<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        self.observe("drop_dead_letter", self.inner.drop_dead_letter(id))
    }
}
