//! The file's shape as serde reads it: every section optional, every key defaulted, and
//! unknown keys refused (with their line and column). Turned into the typed
//! [`Config`](super::Config) by `validate`.

use std::path::PathBuf;

use serde::Deserialize;

use super::{
    EmailTransport, IdServerParam, LogFormat, Mode, PathCompatMode, RateLimit, SmsTransport,
    StoreBackend, WebhookFailure,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct Raw {
    pub(super) server: RawServer,
    pub(super) upstream: RawUpstream,
    pub(super) identity: RawIdentity,
    pub(super) threepid: RawThreepid,
    pub(super) store: RawStore,
    pub(super) email: RawEmail,
    pub(super) sms: RawSms,
    pub(super) outbox: RawOutbox,
    pub(super) rate_limit: RawRateLimit,
    pub(super) admin: RawAdmin,
    pub(super) i18n: RawI18n,
    pub(super) policy: RawPolicy,
    pub(super) notices: RawNotices,
    pub(super) log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    pub(super) listen: String,
    pub(super) tls_cert_file: Option<PathBuf>,
    pub(super) tls_key_file: Option<PathBuf>,
    pub(super) public_baseurl: String,
    pub(super) server_name: String,
    pub(super) trusted_proxies: Vec<String>,
    pub(super) max_body_bytes: u64,
    pub(super) max_header_bytes: usize,
    pub(super) max_connections: usize,
    pub(super) header_read_timeout: String,
    pub(super) body_idle_timeout: String,
    pub(super) http2_idle_timeout: String,
    pub(super) http2_keep_alive_interval: String,
    pub(super) http2_keep_alive_timeout: String,
    pub(super) shutdown_grace: String,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            tls_cert_file: None,
            tls_key_file: None,
            public_baseurl: "http://127.0.0.1:8080/".into(),
            server_name: "localhost".into(),
            trusted_proxies: Vec::new(),
            max_body_bytes: 65_536,
            max_header_bytes: 16_384,
            max_connections: 10_000,
            header_read_timeout: "10s".into(),
            body_idle_timeout: "60s".into(),
            http2_idle_timeout: "60s".into(),
            http2_keep_alive_interval: "30s".into(),
            http2_keep_alive_timeout: "20s".into(),
            shutdown_grace: "25s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawUpstream {
    pub(super) url: String,
    pub(super) connect_timeout: String,
    pub(super) response_timeout: String,
    pub(super) pool_idle_timeout: String,
    pub(super) pool_max_idle: usize,
    pub(super) max_connections: usize,
    pub(super) path_compat: PathCompatMode,
    pub(super) versions_refresh: String,
    pub(super) advertise_versions: Vec<String>,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8008".into(),
            connect_timeout: "5s".into(),
            response_timeout: "60s".into(),
            pool_idle_timeout: "90s".into(),
            pool_max_idle: 256,
            max_connections: 4096,
            path_compat: PathCompatMode::Auto,
            versions_refresh: "5m".into(),
            advertise_versions: vec!["v1.1".into()],
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawIdentity {
    pub(super) listen: String,
    pub(super) server_name: String,
    pub(super) tls_cert_file: Option<PathBuf>,
    pub(super) tls_key_file: Option<PathBuf>,
    pub(super) generated_cert_dir: Option<PathBuf>,
}

impl Default for RawIdentity {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8090".into(),
            server_name: "localhost:8090".into(),
            tls_cert_file: None,
            tls_key_file: None,
            generated_cert_dir: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawThreepid {
    pub(super) mode: Mode,
    pub(super) id_server_param: IdServerParam,
    pub(super) session_lifetime: String,
    pub(super) token_lifetime: String,
    pub(super) max_submit_attempts: u32,
    pub(super) next_link_allowed_hosts: Option<Vec<String>>,
    pub(super) allowed_addresses: Vec<RawAllowed>,
}

impl Default for RawThreepid {
    fn default() -> Self {
        Self {
            mode: Mode::Direct,
            id_server_param: IdServerParam::Ignore,
            session_lifetime: "24h".into(),
            token_lifetime: "1h".into(),
            max_submit_attempts: 10,
            next_link_allowed_hosts: None,
            allowed_addresses: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAllowed {
    pub(super) medium: String,
    pub(super) pattern: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStore {
    pub(super) backend: StoreBackend,
    pub(super) url: String,
    pub(super) key_prefix: String,
    pub(super) command_timeout: String,
    pub(super) sentinel: Option<RawSentinel>,
    pub(super) cluster: Option<RawCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSentinel {
    pub(super) master_name: String,
    pub(super) sentinels: Vec<String>,
    pub(super) password: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) sentinel_password: Option<String>,
    pub(super) sentinel_password_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) nodes: Vec<String>,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Memory,
            url: "redis://127.0.0.1:6379".into(),
            key_prefix: "threepid:".into(),
            command_timeout: "2s".into(),
            sentinel: None,
            cluster: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawEmail {
    pub(super) transport: EmailTransport,
    pub(super) from: String,
    pub(super) app_name: String,
    pub(super) smtp_url: String,
    pub(super) smtp_username: Option<String>,
    pub(super) smtp_password: Option<String>,
    pub(super) smtp_password_file: Option<PathBuf>,
    pub(super) send_timeout: String,
    pub(super) max_retry_age: String,
    pub(super) file_dir: PathBuf,
    pub(super) templates_dir: Option<PathBuf>,
}

impl Default for RawEmail {
    fn default() -> Self {
        Self {
            transport: EmailTransport::File,
            from: "Matrix <noreply@localhost>".into(),
            app_name: "Matrix".into(),
            smtp_url: "smtp://127.0.0.1:25".into(),
            smtp_username: None,
            smtp_password: None,
            smtp_password_file: None,
            send_timeout: "10s".into(),
            max_retry_age: "1h".into(),
            file_dir: PathBuf::from("mail"),
            templates_dir: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSms {
    pub(super) transport: SmsTransport,
    pub(super) webhook_url: Option<String>,
    pub(super) webhook_token: Option<String>,
    pub(super) webhook_token_file: Option<PathBuf>,
    pub(super) timeout: String,
    pub(super) max_retry_age: String,
    pub(super) log_codes: bool,
    pub(super) allowed_countries: Option<Vec<String>>,
    pub(super) denied_countries: Vec<String>,
    pub(super) per_country_per_hour: Option<u32>,
    pub(super) daily_budget: Option<u64>,
}

impl Default for RawSms {
    fn default() -> Self {
        Self {
            transport: SmsTransport::Log,
            webhook_url: None,
            webhook_token: None,
            webhook_token_file: None,
            timeout: "10s".into(),
            max_retry_age: "15m".into(),
            log_codes: false,
            allowed_countries: None,
            denied_countries: Vec::new(),
            per_country_per_hour: None,
            daily_budget: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawOutbox {
    pub(super) claim_timeout: String,
    pub(super) retry_base: String,
    pub(super) concurrency: usize,
    pub(super) dead_letter_max: usize,
}

impl Default for RawOutbox {
    fn default() -> Self {
        Self {
            claim_timeout: "30s".into(),
            retry_base: "1s".into(),
            concurrency: 32,
            dead_letter_max: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRateLimit {
    pub(super) request_token_per_ip: RateLimit,
    pub(super) request_token_per_address: RateLimit,
    pub(super) submit_per_ip: RateLimit,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        Self {
            request_token_per_ip: RateLimit {
                per_second: 0.003,
                burst: 5,
            },
            request_token_per_address: RateLimit {
                per_second: 0.003,
                burst: 5,
            },
            submit_per_ip: RateLimit {
                per_second: 1.0,
                burst: 20,
            },
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawAdmin {
    pub(super) listen: String,
    pub(super) api_token_file: Option<PathBuf>,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9090".into(),
            api_token_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPolicy {
    pub(super) denied_domains: Vec<String>,
    pub(super) denied_addresses: Vec<String>,
    pub(super) disposable_domains_file: Option<PathBuf>,
    pub(super) webhook_url: Option<String>,
    pub(super) webhook_token: Option<String>,
    pub(super) webhook_token_file: Option<PathBuf>,
    pub(super) webhook_timeout: String,
    pub(super) webhook_failure: WebhookFailure,
}

impl Default for RawPolicy {
    fn default() -> Self {
        Self {
            denied_domains: Vec::new(),
            denied_addresses: Vec::new(),
            disposable_domains_file: None,
            webhook_url: None,
            webhook_token: None,
            webhook_token_file: None,
            webhook_timeout: "2s".into(),
            webhook_failure: WebhookFailure::Allow,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawNotices {
    pub(super) password_changed: bool,
    pub(super) address_removed: bool,
}

impl Default for RawNotices {
    fn default() -> Self {
        Self {
            password_changed: true,
            address_removed: true,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawI18n {
    pub(super) default_language: String,
    pub(super) dir: Option<PathBuf>,
}

impl Default for RawI18n {
    fn default() -> Self {
        Self {
            default_language: "en".into(),
            dir: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLog {
    pub(super) format: LogFormat,
    pub(super) level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}
