//! The sender task of one replica: claims due messages and reads new ones through the
//! consumer group, each handled by a task of its own (at most `outbox.concurrency` at once):
//! checked against its session, sent, then deleted, retried later, or dead-lettered.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::future::join_all;
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::{JoinHandle, JoinSet};

use super::Queue;
use super::finish::Finisher;
use super::{
    AfterFailure, DeadLetter, Delivery, Queued, QueuedNotice, after_failure, consumer_name,
    orphan_grace, scrub,
};
use crate::AppState;
use crate::delivery::Outgoing;
use crate::session::StoreError;
use crate::threepid::Medium;
use crate::validate::mask_address;

/// How often the outbox gauges are updated.
const STATS_EVERY: Duration = Duration::from_secs(5);
/// How often the group is rid of the consumer names of processes gone for [`FORGET_AFTER`].
const FORGET_EVERY: Duration = Duration::from_secs(600);
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// After a Redis error, before the next try.
const ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Waits for the request's second step, when a sender sees an entry before it ran (it
/// usually runs within a millisecond of the first).
const COMMIT_WAITS_MS: [u64; 7] = [1, 4, 15, 50, 130, 300, 500];

/// Starts the sender of this replica. It stops when `stop` turns true (or its sender is
/// dropped), after finishing the messages in hand.
pub fn spawn<Q: Queue>(
    state: Arc<AppState>,
    queue: Q,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let queue = Arc::new(queue);
    let sender = Sender {
        consumer: consumer_name(),
        state,
        finisher: Finisher::new(queue.clone()),
        queue,
    };
    tokio::spawn(Arc::new(sender).run(stop))
}

struct Sender<Q> {
    state: Arc<AppState>,
    queue: Arc<Q>,
    consumer: String,
    /// Deletes handled entries, many in one round trip.
    finisher: Finisher<Q>,
}

/// What the session says about a queued message.
enum Committed {
    /// The token is in the session; it stops being accepted then (unix ms).
    Yes { token_expires_ms: u64 },
    /// Never committed, or the session is gone: drop it.
    Orphan,
    /// Not yet: look again in this long.
    NotYet(Duration),
}

fn stopping(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Sleeps for `d`, or less when asked to stop.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) {
    tokio::select! {
        _ = stop.changed() => {}
        () = tokio::time::sleep(d) => {}
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl<Q: Queue> Sender<Q> {
    fn claim_timeout(&self) -> Duration {
        self.state.config.outbox.claim_timeout
    }

    fn max_retry_age(&self, medium: Medium) -> Duration {
        match medium {
            Medium::Email => self.state.config.email.max_retry_age,
            Medium::Msisdn => self.state.config.sms.max_retry_age,
        }
    }

    /// Claims due messages and reads new ones while fewer than `outbox.concurrency` are in
    /// hand, each handled by a task of its own; on stop, finishes those in hand.
    async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let claim_every =
            (self.claim_timeout() / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let slots = Arc::new(Semaphore::new(self.state.config.outbox.concurrency));
        let mut in_hand = JoinSet::new();
        tracing::info!(
            consumer = %self.consumer,
            blocking_reads = self.queue.blocks(),
            "outbox sender started"
        );
        let mut group_ready = false;
        let mut last_claim: Option<Instant> = None;
        let mut last_stats: Option<Instant> = None;
        let mut last_forget: Option<Instant> = None;
        let mut failing = false;
        while !stopping(&stop) {
            while in_hand.try_join_next().is_some() {}
            if slots.available_permits() == 0 {
                // Every slot busy: wait for one (a send is bounded by its timeout).
                in_hand.join_next().await;
                continue;
            }
            if !group_ready {
                if let Err(e) = self.queue.create_group().await {
                    self.note_error(&mut failing, &e);
                    pause(&mut stop, ERROR_PAUSE).await;
                    continue;
                }
                group_ready = true;
            }
            if last_stats.is_none_or(|t| t.elapsed() >= STATS_EVERY) {
                last_stats = Some(Instant::now());
                self.update_gauges().await;
            }
            if last_forget.is_none_or(|t| t.elapsed() >= FORGET_EVERY) {
                last_forget = Some(Instant::now());
                self.forget_gone_consumers().await;
            }
            if last_claim.is_none_or(|t| t.elapsed() >= claim_every) {
                last_claim = Some(Instant::now());
                let claimed = self
                    .queue
                    .claim_due(
                        &self.consumer,
                        self.claim_timeout(),
                        slots.available_permits(),
                    )
                    .await;
                match claimed {
                    Ok(claimed) => self.take(claimed, &slots, &mut in_hand).await,
                    Err(e) => {
                        group_ready = false;
                        self.note_error(&mut failing, &e);
                        pause(&mut stop, ERROR_PAUSE).await;
                        continue;
                    }
                }
                if stopping(&stop) || slots.available_permits() == 0 {
                    continue;
                }
            }
            let read = self
                .queue
                .read(&self.consumer, slots.available_permits())
                .await;
            match read {
                Ok(read) => {
                    if failing {
                        failing = false;
                        tracing::info!("outbox sender: Redis answers again");
                    }
                    // Delivered to this sender: handled even when a stop came meanwhile.
                    self.take(read, &slots, &mut in_hand).await;
                }
                Err(e) => {
                    // NOGROUP after Redis restarted empty, or Redis down: start over.
                    group_ready = false;
                    self.note_error(&mut failing, &e);
                    pause(&mut stop, ERROR_PAUSE).await;
                }
            }
        }
        while in_hand.join_next().await.is_some() {}
        tracing::info!(consumer = %self.consumer, "outbox sender stopped");
    }

    /// Starts a task per message, each holding a slot until it is done. The batch was asked
    /// for with the slots free, so there is one for each. Whether each message's session
    /// change committed is asked for the whole batch at once first (one round trip, where
    /// each task would wait for its own); a message not found committed then is looked at
    /// again by its task, which waits for a request still under way.
    async fn take(
        self: &Arc<Self>,
        batch: Vec<Delivery>,
        slots: &Arc<Semaphore>,
        in_hand: &mut JoinSet<()>,
    ) {
        let taken = Instant::now();
        let expiries = join_all(batch.iter().map(|delivery| async move {
            match delivery {
                Delivery::Message(m) => self
                    .queue
                    .token_expiry(&m.sid, &m.token_hash)
                    .await
                    .ok()
                    .flatten(),
                Delivery::Notice(_) | Delivery::Malformed { .. } | Delivery::Gone { .. } => None,
            }
        }))
        .await;
        for (delivery, committed) in batch.into_iter().zip(expiries) {
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                // Not expected; the message comes due again after claim_timeout.
                tracing::warn!(id = delivery.id(), "outbox: no free slot for a message");
                continue;
            };
            let sender = self.clone();
            in_hand.spawn(async move {
                let _slot: OwnedSemaphorePermit = slot;
                sender.handle(delivery, taken, committed).await;
            });
        }
    }

    /// Logs the first error of a run of them, the rest at debug level.
    fn note_error(&self, failing: &mut bool, e: &StoreError) {
        if *failing {
            tracing::debug!(error = %e, "outbox sender: Redis still failing");
        } else {
            *failing = true;
            tracing::warn!(error = %e, "outbox sender: Redis failed; retrying every second");
        }
    }

    async fn forget_gone_consumers(&self) {
        match self
            .queue
            .forget_consumers(&self.consumer, FORGET_AFTER)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(consumers = n, "outbox: forgot senders gone for an hour"),
            Err(e) => tracing::debug!(error = %e, "outbox: could not list the senders"),
        }
    }

    async fn update_gauges(&self) {
        match self.state.store.outbox_report(0).await {
            Ok(report) => {
                let age_ms = report.oldest_ms.map_or(0, |t| now_ms().saturating_sub(t));
                self.state
                    .metrics
                    .set_outbox(report.pending, age_ms as f64 / 1000.0, report.dead);
            }
            Err(e) => tracing::debug!(error = %e, "outbox: could not read its length"),
        }
    }

    /// `committed`: the token's expiry, when the session was already seen to hold it.
    async fn handle(&self, delivery: Delivery, taken: Instant, committed: Option<u64>) {
        match delivery {
            Delivery::Message(message) => self.handle_message(message, taken, committed).await,
            Delivery::Notice(notice) => self.handle_notice(notice, taken).await,
            Delivery::Gone { id } => self.finisher.finish(id).await,
            Delivery::Malformed {
                id,
                enqueued_ms,
                reason,
            } => {
                tracing::error!(%id, %reason, "outbox: an entry that cannot be sent");
                let record = DeadLetter {
                    id,
                    sid: String::new(),
                    medium: String::new(),
                    masked_address: String::new(),
                    purpose: String::new(),
                    error: reason,
                    attempts: 0,
                    enqueued_ms,
                };
                self.dead_letter(record, None, "unknown").await;
            }
        }
    }

    async fn handle_message(&self, m: Queued, taken: Instant, committed: Option<u64>) {
        let to = crate::validate::Masked(&m.address);
        let medium = m.medium.as_str();
        let committed = match committed {
            Some(token_expires_ms) => Ok(Committed::Yes { token_expires_ms }),
            None => self.committed(&m).await,
        };
        let token_expires_ms = match committed {
            Ok(Committed::Yes { token_expires_ms }) => token_expires_ms,
            Ok(Committed::Orphan) => {
                tracing::debug!(%to, %medium, "outbox: dropped a message whose session change did not happen");
                self.state.metrics.message(medium, "dropped");
                self.finisher.finish(m.id).await;
                return;
            }
            Ok(Committed::NotYet(wait)) => {
                self.retry_in(&m, taken, wait).await;
                return;
            }
            Err(e) => {
                // It stays pending and is claimed again after claim_timeout.
                tracing::warn!(%to, error = %e, "outbox: store failed; the message stays queued");
                return;
            }
        };
        let max_age = self.max_retry_age(m.medium);
        let age = |now: u64| Duration::from_millis(now.saturating_sub(m.enqueued_ms));
        // No attempt for a token that would be refused anyway. (An old message whose token
        // is still good is tried: max_retry_age limits the retries after a failure.)
        if token_expires_ms <= now_ms() {
            return self
                .give_up(&m, "the token expired before it could be sent".into())
                .await;
        }
        if m.attempt > 1 {
            self.state.metrics.message(medium, "retried");
        }
        let outgoing = Outgoing {
            medium: m.medium,
            address: &m.address,
            purpose: m.purpose,
            sid: &m.sid,
            client_secret: m.client_secret.expose_secret(),
            token: m.token.expose_secret(),
            language: m.language.as_deref().unwrap_or(""),
        };
        match self.state.deliver(&outgoing).await {
            Ok(()) => {
                self.state.metrics.message(medium, "sent");
                tracing::info!(%to, %medium, attempt = m.attempt, "outbox: token sent");
                self.finisher.finish(m.id).await;
            }
            Err(e) => {
                self.state.metrics.message(medium, "failed");
                let error = scrub(
                    &e.to_string(),
                    &m.address,
                    &[m.token.expose_secret(), m.client_secret.expose_secret()],
                );
                if e.is_permanent() {
                    tracing::warn!(%to, %error, attempt = m.attempt, "outbox: refused for good");
                    return self.give_up(&m, error).await;
                }
                let outbox = &self.state.config.outbox;
                match after_failure(
                    m.attempt,
                    age(now_ms()),
                    max_age,
                    outbox.retry_base,
                    outbox.claim_timeout,
                ) {
                    AfterFailure::RetryIn(wait) => {
                        tracing::warn!(%to, %error, attempt = m.attempt, retry_in = ?wait, "outbox: could not send; will retry");
                        self.retry_in(&m, taken, wait).await;
                    }
                    AfterFailure::GiveUp => self.give_up(&m, error).await,
                }
            }
        }
    }

    /// Whether the session holds the message's token, waiting a little for a request whose
    /// second step has not run yet.
    async fn committed(&self, m: &Queued) -> Result<Committed, StoreError> {
        let grace = orphan_grace(self.state.config.store.command_timeout);
        let mut waits = COMMIT_WAITS_MS.iter();
        loop {
            if let Some(token_expires_ms) = self.queue.token_expiry(&m.sid, &m.token_hash).await? {
                return Ok(Committed::Yes { token_expires_ms });
            }
            let age = Duration::from_millis(now_ms().saturating_sub(m.enqueued_ms));
            if age >= grace || !self.queue.entry_exists(&m.id).await? {
                // Too old to be waiting for its request, or deleted by it: never committed.
                return Ok(Committed::Orphan);
            }
            match waits.next() {
                Some(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
                None => return Ok(Committed::NotYet(grace - age)),
            }
        }
    }

    /// A security notice: no session to look at, no token to expire; sent, or retried like
    /// a mail, or dead-lettered.
    async fn handle_notice(&self, n: QueuedNotice, taken: Instant) {
        let to = mask_address(&n.address);
        let sent = self
            .state
            .mail_notice(
                n.notice,
                &n.address,
                n.language.as_deref().unwrap_or(""),
                &n.time,
                &n.client_ip,
            )
            .await;
        match sent {
            Ok(()) => {
                tracing::info!(%to, notice = n.notice.as_str(), "outbox: notice sent");
                self.finisher.finish(n.id).await;
            }
            Err(e) => {
                let error = scrub(&e.to_string(), &n.address, &[]);
                let outbox = &self.state.config.outbox;
                let age = Duration::from_millis(now_ms().saturating_sub(n.enqueued_ms));
                let verdict = if e.is_permanent() {
                    AfterFailure::GiveUp
                } else {
                    after_failure(
                        n.attempt,
                        age,
                        self.state.config.email.max_retry_age,
                        outbox.retry_base,
                        outbox.claim_timeout,
                    )
                };
                match verdict {
                    AfterFailure::RetryIn(wait) => {
                        tracing::warn!(%to, %error, attempt = n.attempt, retry_in = ?wait, "outbox: could not send a notice; will retry");
                        self.retry_entry(&n.id, taken, wait).await;
                    }
                    AfterFailure::GiveUp => {
                        let record = DeadLetter {
                            id: n.id.clone(),
                            sid: String::new(),
                            medium: "email".to_owned(),
                            masked_address: to,
                            purpose: n.notice.as_str().to_owned(),
                            error,
                            attempts: n.attempt,
                            enqueued_ms: n.enqueued_ms,
                        };
                        self.dead_letter(record, None, "email").await;
                    }
                }
            }
        }
    }

    async fn retry_in(&self, m: &Queued, taken: Instant, wait: Duration) {
        self.retry_entry(&m.id, taken, wait).await;
    }

    async fn retry_entry(&self, id: &str, taken: Instant, wait: Duration) {
        let set = self
            .queue
            .retry_in(
                &self.consumer,
                id,
                taken.elapsed(),
                wait,
                self.claim_timeout(),
            )
            .await;
        if let Err(e) = set {
            // Then it comes due after claim_timeout instead.
            tracing::debug!(error = %e, "outbox: could not schedule a retry");
        }
    }

    async fn give_up(&self, m: &Queued, error: String) {
        let record = DeadLetter {
            id: m.id.clone(),
            sid: m.sid.clone(),
            medium: m.medium.as_str().to_owned(),
            masked_address: mask_address(&m.address),
            purpose: m.purpose.as_str().to_owned(),
            error,
            attempts: m.attempt,
            enqueued_ms: m.enqueued_ms,
        };
        let resend = (m.medium == Medium::Email).then_some(&m.client_secret);
        self.dead_letter(record, resend, m.medium.as_str()).await;
    }

    async fn dead_letter(
        &self,
        record: DeadLetter,
        resend: Option<&SecretString>,
        medium: &'static str,
    ) {
        let max_len = self.state.config.outbox.dead_letter_max;
        match self.queue.dead_letter(&record, resend, max_len).await {
            Ok(()) => {
                self.state.metrics.message(medium, "dead_lettered");
                tracing::warn!(
                    to = %record.masked_address,
                    %medium,
                    error = %record.error,
                    attempts = record.attempts,
                    "outbox: message given up on and dead-lettered"
                );
            }
            // It stays pending, and the next sender to claim it tries again.
            Err(e) => tracing::warn!(error = %e, "outbox: could not dead-letter a message"),
        }
    }
}
