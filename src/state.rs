//! [`AppState`]: what every request handler and the outbox's senders share (the config, the
//! upstream client, the store, the transports, the templates, the policy, the metrics), and
//! the few actions that need several of them (sending a token, mailing a notice).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::delivery::sms::SmsSender;
use crate::delivery::{self, Mailer};
use crate::metrics::Metrics;
use crate::policy;
use crate::proxy::Upstream;
use crate::ratelimit::AddressKey;
use crate::session::{self, SessionStore};
use crate::templates::Templates;
use crate::threepid;
use crate::validate;

/// Everything a request handler needs, shared by all connections.
pub struct AppState {
    pub config: Config,
    pub upstream: Upstream,
    pub metrics: Arc<Metrics>,
    pub store: Arc<dyn SessionStore>,
    pub mailer: Arc<dyn Mailer>,
    pub sms: Arc<dyn SmsSender>,
    pub templates: Arc<Templates>,
    /// Which addresses may be verified at all.
    pub policy: policy::Policy,
    /// What only this module's methods touch.
    pub(crate) internal: Internal,
    /// The UTC day (days since the epoch) the SMS budget was last found spent on, so that
    /// the log says so once a day.
    pub budget_spent_warned: AtomicU64,
}

/// The parts of [`AppState`] that only its methods use.
pub(crate) struct Internal {
    ready: AtomicBool,
    request_ids: AtomicU64,
    request_id_prefix: u32,
    /// The store's address-hash key, read from it once.
    address_key: tokio::sync::OnceCell<AddressKey>,
    /// The last `/versions` answer of the homeserver and its rewrite.
    versions: std::sync::Mutex<Option<Arc<VersionsRewrite>>>,
}

/// A homeserver `/versions` answer and what the sidecar made of it. The rewrite depends only
/// on the answer's bytes, on whether the v3→r0 mapping is on, and on the settings: clients
/// ask for `/versions` often and the homeserver's answer rarely changes, so an identical
/// answer reuses it instead of parsing and writing the JSON again.
pub struct VersionsRewrite {
    /// The homeserver's body, as it arrived.
    pub upstream: bytes::Bytes,
    /// It parsed as a JSON object (for the mapping's decision).
    pub parsed: Option<serde_json::Map<String, serde_json::Value>>,
    /// Whether the mapping was on for this rewrite.
    pub mapping: bool,
    /// The rewritten body; `None` when the answer passes unchanged.
    pub rewritten: Option<bytes::Bytes>,
}

impl Internal {
    /// Not ready yet, request ids from a random prefix, the address key not read yet.
    pub(crate) fn new() -> Self {
        Self {
            ready: AtomicBool::new(false),
            request_ids: AtomicU64::new(0),
            request_id_prefix: rand::random(),
            address_key: tokio::sync::OnceCell::new(),
            versions: std::sync::Mutex::new(None),
        }
    }
}

impl AppState {
    /// Ready for traffic: started and not draining.
    pub fn is_ready(&self) -> bool {
        self.internal.ready.load(Ordering::Acquire)
    }

    pub(crate) fn set_ready(&self, ready: bool) {
        self.internal.ready.store(ready, Ordering::Release);
        self.metrics.set_ready(ready);
    }

    /// A short id for log lines, unique within this process and unlikely to repeat
    /// across replicas.
    pub fn next_request_id(&self) -> String {
        let n = self.internal.request_ids.fetch_add(1, Ordering::Relaxed);
        format!("{:08x}{n:08x}", self.internal.request_id_prefix)
    }

    /// Takes an upstream `/versions` answer into account for the v3→r0 path mapping.
    pub fn observe_upstream_versions(&self, versions: &serde_json::Map<String, serde_json::Value>) {
        if let Some(active) = self.upstream.compat.observe_versions(versions) {
            tracing::info!(
                active,
                "v3→r0 path compatibility turned {}",
                if active { "on" } else { "off" }
            );
        }
        self.metrics
            .set_path_compat(self.upstream.compat.is_active());
    }

    /// The last `/versions` rewrite, when it was of exactly this homeserver answer.
    pub fn versions_rewrite_of(&self, upstream: &[u8]) -> Option<Arc<VersionsRewrite>> {
        let last = self
            .internal
            .versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.as_ref()
            .filter(|last| last.upstream == upstream)
            .cloned()
    }

    /// Keeps a `/versions` rewrite for the next identical answer.
    pub fn keep_versions_rewrite(&self, rewrite: Arc<VersionsRewrite>) {
        *self
            .internal
            .versions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(rewrite);
    }

    /// The key of the address hashes in rate-limit keys: the store's, asked for once.
    pub async fn address_key(&self) -> Result<&AddressKey, session::StoreError> {
        self.internal
            .address_key
            .get_or_try_init(|| self.store.address_key())
            .await
    }

    /// Sends one token through the configured mailer or SMS sender (links start at
    /// `server.public_baseurl`).
    pub async fn deliver(
        &self,
        message: &delivery::Outgoing<'_>,
    ) -> Result<(), delivery::DeliveryError> {
        let sent = delivery::deliver(
            &*self.mailer,
            &*self.sms,
            &self.config.server.public_baseurl,
            message,
        )
        .await;
        if sent.is_ok() && message.medium == threepid::Medium::Msisdn {
            self.metrics
                .sms_sent(&validate::region_of(message.address).unwrap_or_default());
        }
        sent
    }

    /// Mails a security notice now (the outbox's senders, or the memory store's request).
    pub async fn mail_notice(
        &self,
        notice: threepid::Notice,
        address: &str,
        language: &str,
        time: &str,
        client_ip: &str,
    ) -> Result<(), delivery::DeliveryError> {
        let mail = delivery::MailRequest {
            to: address,
            language,
            content: delivery::MailContent::Notice {
                notice,
                time,
                client_ip,
            },
        };
        let sent = self.mailer.send(mail).await;
        self.metrics.notice(
            notice.as_str(),
            if sent.is_ok() { "sent" } else { "failed" },
        );
        sent
    }

    /// Tells the owner of `address` (an email address) that its account changed, if
    /// `[notices]` says so: queued in the outbox, or (memory store) sent here. Never fails
    /// the request that caused it: a notice that cannot be queued or sent is logged.
    pub async fn notify(
        &self,
        notice: threepid::Notice,
        address: &str,
        language: &str,
        client_ip: std::net::IpAddr,
    ) {
        let wanted = match notice {
            threepid::Notice::PasswordChanged => self.config.notices.password_changed,
            threepid::Notice::AddressRemoved => self.config.notices.address_removed,
        };
        if !wanted {
            return;
        }
        let message = session::NoticeMessage {
            notice,
            address: address.to_owned(),
            language: language.to_owned(),
            time: notice_time(self.now_ms()),
            client_ip: validate::mask_ip(client_ip),
        };
        let to = validate::mask_address(address);
        match self.store.queue_notice(&message).await {
            Ok(true) => {
                self.metrics.notice(notice.as_str(), "queued");
                tracing::info!(%to, notice = notice.as_str(), "notice queued");
            }
            Ok(false) => {
                let sent = self
                    .mail_notice(
                        notice,
                        &message.address,
                        &message.language,
                        &message.time,
                        &message.client_ip,
                    )
                    .await;
                if let Err(e) = sent {
                    tracing::warn!(%to, error = %e, "could not send a notice");
                }
            }
            Err(e) => tracing::warn!(%to, error = %e, "could not queue a notice"),
        }
    }

    /// Now, in unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }
}

/// `2026-12-06 18:40 UTC`: how a notice says when.
fn notice_time(now_ms: u64) -> String {
    let at = UNIX_EPOCH + std::time::Duration::from_millis(now_ms);
    let text = humantime::format_rfc3339_seconds(at).to_string();
    // 2026-12-06T18:40:12Z
    format!("{} {} UTC", &text[..10], &text[11..16])
}
