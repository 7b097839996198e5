//! The one TOML file: a raw serde shape that refuses unknown keys, turned into a typed
//! [`Config`] by [`Config::from_toml`]. Every key is documented here and in
//! `config.example.toml`, which is also the embedded default.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

pub use crate::compat::PathCompatMode;

/// The embedded default: runs with no Redis and no mail server.
pub const EXAMPLE: &str = include_str!("../config.example.toml");

/// Why a config file was refused. The message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.into(),
    }
}

// ---------------------------------------------------------------------------------------
// Raw shape, as written in the file.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Raw {
    server: RawServer,
    upstream: RawUpstream,
    identity: RawIdentity,
    threepid: RawThreepid,
    store: RawStore,
    email: RawEmail,
    sms: RawSms,
    outbox: RawOutbox,
    rate_limit: RawRateLimit,
    admin: RawAdmin,
    log: RawLog,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    public_baseurl: String,
    server_name: String,
    trusted_proxies: Vec<String>,
    max_body_bytes: u64,
    max_header_bytes: usize,
    header_read_timeout: String,
    shutdown_grace: String,
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
            header_read_timeout: "10s".into(),
            shutdown_grace: "25s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
    url: String,
    connect_timeout: String,
    response_timeout: String,
    pool_idle_timeout: String,
    pool_max_idle: usize,
    path_compat: PathCompatMode,
    versions_refresh: String,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8008".into(),
            connect_timeout: "5s".into(),
            response_timeout: "60s".into(),
            pool_idle_timeout: "90s".into(),
            pool_max_idle: 256,
            path_compat: PathCompatMode::Auto,
            versions_refresh: "5m".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIdentity {
    listen: String,
    server_name: String,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    generated_cert_dir: Option<PathBuf>,
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
struct RawThreepid {
    mode: Mode,
    id_server_param: IdServerParam,
    session_lifetime: String,
    token_lifetime: String,
    max_submit_attempts: u32,
    next_link_allowed_hosts: Option<Vec<String>>,
    allowed_addresses: Vec<RawAllowed>,
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
struct RawAllowed {
    medium: String,
    pattern: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStore {
    backend: StoreBackend,
    url: String,
    key_prefix: String,
    command_timeout: String,
    sentinel: Option<RawSentinel>,
    cluster: Option<RawCluster>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSentinel {
    master_name: String,
    sentinels: Vec<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    sentinel_password: Option<String>,
    sentinel_password_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    nodes: Vec<String>,
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
struct RawEmail {
    transport: EmailTransport,
    from: String,
    app_name: String,
    smtp_url: String,
    smtp_username: Option<String>,
    smtp_password: Option<String>,
    smtp_password_file: Option<PathBuf>,
    send_timeout: String,
    max_retry_age: String,
    file_dir: PathBuf,
    templates_dir: Option<PathBuf>,
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
struct RawSms {
    transport: SmsTransport,
    webhook_url: Option<String>,
    webhook_token: Option<String>,
    webhook_token_file: Option<PathBuf>,
    timeout: String,
    max_retry_age: String,
    log_codes: bool,
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
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawOutbox {
    claim_timeout: String,
    retry_base: String,
    concurrency: usize,
    dead_letter_max: usize,
}

impl Default for RawOutbox {
    fn default() -> Self {
        Self {
            claim_timeout: "30s".into(),
            retry_base: "1s".into(),
            concurrency: 16,
            dead_letter_max: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRateLimit {
    request_token_per_ip: RateLimit,
    request_token_per_address: RateLimit,
    submit_per_ip: RateLimit,
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
struct RawAdmin {
    listen: String,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9090".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: LogFormat,
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Typed config.
// ---------------------------------------------------------------------------------------

/// How requestToken is served (DESIGN §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The sidecar issues and sends tokens itself.
    Direct,
    /// The homeserver checks the request first, then calls the identity listener.
    ViaUpstream,
}

/// What to do with an `id_server` a client still sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdServerParam {
    Ignore,
    Forward,
    Reject,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreBackend {
    Memory,
    Redis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmailTransport {
    Smtp,
    File,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmsTransport {
    Log,
    Webhook,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    Json,
    Pretty,
}

/// A GCRA limit: a steady rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// The validated configuration. Built only by [`Config::from_toml`].
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub upstream: Upstream,
    pub identity: Identity,
    pub threepid: Threepid,
    pub store: Store,
    pub email: Email,
    pub sms: Sms,
    pub outbox: Outbox,
    pub rate_limit: RateLimits,
    pub admin: Admin,
    pub log: Log,
}

#[derive(Debug, Clone)]
pub struct Server {
    /// Where clients connect (HTTP/1.1 and h2c, or TLS with ALPN h2 / http/1.1).
    pub listen: SocketAddr,
    /// PEM certificate chain and key; both or neither.
    pub tls: Option<TlsFiles>,
    /// The address clients reach the sidecar at; links in mail and `submit_url` start here.
    pub public_baseurl: Url,
    /// The homeserver's Matrix server name, shown in messages.
    pub server_name: String,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest body accepted on an endpoint the sidecar handles itself.
    pub max_body_bytes: u64,
    /// Largest request head accepted; larger gets 431.
    pub max_header_bytes: usize,
    /// A client that has not sent its whole request head by then is dropped.
    pub header_read_timeout: Duration,
    /// On SIGTERM, how long in-flight requests may take before the process exits anyway.
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Upstream {
    /// The homeserver, `http://` or `https://`.
    pub url: Url,
    pub connect_timeout: Duration,
    /// Until the upstream's response head arrives; long-poll requests get their own
    /// `timeout` added on top.
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    /// v3→r0 path mapping for r0-only homeservers.
    pub path_compat: PathCompatMode,
    /// In `path_compat = "auto"`, how often the upstream's `/versions` is read again.
    pub versions_refresh: Duration,
}

#[derive(Debug, Clone)]
pub struct Identity {
    /// The https listener the homeserver calls as its identity server.
    pub listen: SocketAddr,
    /// The name the homeserver knows it by (`host[:port]`), put into `id_server`.
    pub server_name: String,
    /// Configured certificate; when absent one is generated at start.
    pub tls: Option<TlsFiles>,
    /// Where a generated certificate is written.
    pub generated_cert_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Threepid {
    pub mode: Mode,
    pub id_server_param: IdServerParam,
    pub session_lifetime: Duration,
    pub token_lifetime: Duration,
    pub max_submit_attempts: u32,
    pub next_link_allowed_hosts: Option<Vec<String>>,
    pub allowed_addresses: Vec<AllowedAddress>,
}

/// One `threepid.allowed_addresses` entry: addresses of `medium` matching `pattern` are
/// accepted (email: the canonical address; msisdn: E.164 digits without `+`).
#[derive(Debug, Clone)]
pub struct AllowedAddress {
    pub medium: String,
    pub pattern: regex::Regex,
}

impl Threepid {
    /// Whether `threepid.allowed_addresses` lets this address in (an empty list lets
    /// everything in).
    pub fn address_allowed(&self, medium: &str, address: &str) -> bool {
        self.allowed_addresses.is_empty()
            || self
                .allowed_addresses
                .iter()
                .any(|a| a.medium == medium && a.pattern.is_match(address))
    }
}

#[derive(Debug, Clone)]
pub struct Store {
    pub backend: StoreBackend,
    /// The one Redis server of [`StoreTopology::Single`].
    pub url: String,
    pub key_prefix: String,
    pub command_timeout: Duration,
    /// How the Redis of the `redis` backend is laid out.
    pub topology: StoreTopology,
}

/// `[store.sentinel]`, `[store.cluster]`, or neither.
#[derive(Debug, Clone)]
pub enum StoreTopology {
    /// One server at `store.url`.
    Single,
    /// `[store.sentinel]`: the master the sentinels name, followed across failovers.
    Sentinel(crate::session::redis::SentinelSettings),
    /// `[store.cluster]`: Redis Cluster, discovered from these `redis://`/`rediss://` nodes.
    Cluster { nodes: Vec<String> },
}

#[derive(Debug, Clone)]
pub struct Email {
    pub transport: EmailTransport,
    pub from: String,
    pub app_name: String,
    pub smtp_url: String,
    pub smtp_username: Option<String>,
    pub smtp_password: Option<SecretString>,
    pub send_timeout: Duration,
    /// Redis store: a mail not sent within this long after its request is dead-lettered.
    pub max_retry_age: Duration,
    pub file_dir: PathBuf,
    pub templates_dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Sms {
    pub transport: SmsTransport,
    pub webhook_url: Option<Url>,
    pub webhook_token: Option<SecretString>,
    pub timeout: Duration,
    /// Redis store: an SMS not sent within this long after its request is dead-lettered.
    pub max_retry_age: Duration,
    pub log_codes: bool,
}

/// The durable outbox's senders (Redis store only; DESIGN §7).
#[derive(Debug, Clone)]
pub struct Outbox {
    /// A message whose sender has not finished with it after this long is claimed by
    /// another sender; also the longest wait between two attempts. Longer than the send
    /// timeouts, so a message being sent is never claimed.
    pub claim_timeout: Duration,
    /// The wait after a first failed attempt, doubling with each further one.
    pub retry_base: Duration,
    /// Messages each replica's sender reads and sends at once.
    pub concurrency: usize,
    /// The dead-letter stream is trimmed to about this many entries.
    pub dead_letter_max: usize,
}
#[derive(Debug, Clone)]
pub struct RateLimits {
    pub request_token_per_ip: RateLimit,
    pub request_token_per_address: RateLimit,
    pub submit_per_ip: RateLimit,
}

#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text)
    }

    /// Parses and validates config text. Relative `*_file` paths are taken as they are
    /// (relative to the working directory).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        raw.validate()
    }

    /// The effective config as TOML, with every secret replaced by `"<redacted>"`.
    pub fn redacted_toml(&self) -> String {
        use serde_json::json;
        let redact = |s: &Option<SecretString>| s.as_ref().map(|_| "<redacted>");
        let rl = |r: &RateLimit| json!({"per_second": r.per_second, "burst": r.burst});
        let dur = |d: &Duration| humantime::format_duration(*d).to_string();
        let tls = |t: &Option<TlsFiles>| {
            t.as_ref()
                .map(|t| json!({"cert_file": t.cert, "key_file": t.key}))
        };
        let value = json!({
            "server": {
                "listen": self.server.listen.to_string(),
                "tls": tls(&self.server.tls),
                "public_baseurl": self.server.public_baseurl.as_str(),
                "server_name": self.server.server_name,
                "trusted_proxies": self.server.trusted_proxies.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
                "max_body_bytes": self.server.max_body_bytes,
                "max_header_bytes": self.server.max_header_bytes,
                "header_read_timeout": dur(&self.server.header_read_timeout),
                "shutdown_grace": dur(&self.server.shutdown_grace),
            },
            "upstream": {
                "url": self.upstream.url.as_str(),
                "connect_timeout": dur(&self.upstream.connect_timeout),
                "response_timeout": dur(&self.upstream.response_timeout),
                "pool_idle_timeout": dur(&self.upstream.pool_idle_timeout),
                "pool_max_idle": self.upstream.pool_max_idle,
                "path_compat": self.upstream.path_compat,
                "versions_refresh": dur(&self.upstream.versions_refresh),
            },
            "identity": {
                "listen": self.identity.listen.to_string(),
                "server_name": self.identity.server_name,
                "tls": tls(&self.identity.tls),
                "generated_cert_dir": self.identity.generated_cert_dir,
            },
            "threepid": {
                "mode": self.threepid.mode,
                "id_server_param": self.threepid.id_server_param,
                "session_lifetime": dur(&self.threepid.session_lifetime),
                "token_lifetime": dur(&self.threepid.token_lifetime),
                "max_submit_attempts": self.threepid.max_submit_attempts,
                "next_link_allowed_hosts": self.threepid.next_link_allowed_hosts,
                "allowed_addresses": self.threepid.allowed_addresses.iter()
                    .map(|a| json!({"medium": a.medium, "pattern": a.pattern.as_str()})).collect::<Vec<_>>(),
            },
            "store": {
                "backend": self.store.backend,
                "url": redact_url_password(&self.store.url),
                "key_prefix": self.store.key_prefix,
                "command_timeout": dur(&self.store.command_timeout),
                "sentinel": match &self.store.topology {
                    StoreTopology::Sentinel(s) => json!({
                        "master_name": s.master_name,
                        "sentinels": s.sentinels.iter().map(|(host, port)| host_port(host, *port)).collect::<Vec<_>>(),
                        "password": redact(&s.password),
                        "sentinel_password": redact(&s.sentinel_password),
                    }),
                    _ => serde_json::Value::Null,
                },
                "cluster": match &self.store.topology {
                    StoreTopology::Cluster { nodes } => json!({
                        "nodes": nodes.iter().map(|n| redact_url_password(n)).collect::<Vec<_>>(),
                    }),
                    _ => serde_json::Value::Null,
                },
            },
            "email": {
                "transport": self.email.transport,
                "from": self.email.from,
                "app_name": self.email.app_name,
                "smtp_url": redact_url_password(&self.email.smtp_url),
                "smtp_username": self.email.smtp_username,
                "smtp_password": redact(&self.email.smtp_password),
                "send_timeout": dur(&self.email.send_timeout),
                "max_retry_age": dur(&self.email.max_retry_age),
                "file_dir": self.email.file_dir,
                "templates_dir": self.email.templates_dir,
            },
            "sms": {
                "transport": self.sms.transport,
                "webhook_url": self.sms.webhook_url.as_ref().map(Url::as_str),
                "webhook_token": redact(&self.sms.webhook_token),
                "timeout": dur(&self.sms.timeout),
                "max_retry_age": dur(&self.sms.max_retry_age),
                "log_codes": self.sms.log_codes,
            },
            "outbox": {
                "claim_timeout": dur(&self.outbox.claim_timeout),
                "retry_base": dur(&self.outbox.retry_base),
                "concurrency": self.outbox.concurrency,
                "dead_letter_max": self.outbox.dead_letter_max,
            },
            "rate_limit": {
                "request_token_per_ip": rl(&self.rate_limit.request_token_per_ip),
                "request_token_per_address": rl(&self.rate_limit.request_token_per_address),
                "submit_per_ip": rl(&self.rate_limit.submit_per_ip),
            },
            "admin": { "listen": self.admin.listen.to_string() },
            "log": { "format": self.log.format, "level": self.log.level },
        });
        toml::to_string_pretty(&strip_nulls(value))
            .expect("a JSON object of tables serialises as TOML")
    }
}

/// TOML has no null: drop keys whose value is absent.
fn strip_nulls(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => map
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k, strip_nulls(v)))
            .collect(),
        other => other,
    }
}

/// `redis://user:secret@host` → `redis://user:<redacted>@host`.
fn redact_url_password(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("<redacted>"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// `host:port`, with brackets around an IPv6 address.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `[store.sentinel]`, checked.
fn sentinel(raw: RawSentinel) -> Result<crate::session::redis::SentinelSettings, ConfigError> {
    if raw.master_name.is_empty() || raw.master_name.contains(char::is_whitespace) {
        return Err(invalid(
            "store.sentinel.master_name",
            "must be the name the sentinels monitor the master under",
        ));
    }
    if raw.sentinels.is_empty() {
        return Err(invalid(
            "store.sentinel.sentinels",
            "name at least one sentinel",
        ));
    }
    let sentinels = raw
        .sentinels
        .iter()
        .map(|s| {
            let bad = || {
                invalid(
                    "store.sentinel.sentinels",
                    format!("{s:?} is not an address like \"10.0.0.5:26379\""),
                )
            };
            if s.contains(['/', '@', '?', '#']) {
                return Err(bad());
            }
            let url = Url::parse(&format!("redis://{s}")).map_err(|_| bad())?;
            let host = match url.host().ok_or_else(bad)? {
                url::Host::Domain(d) => d.to_owned(),
                url::Host::Ipv4(a) => a.to_string(),
                url::Host::Ipv6(a) => a.to_string(),
            };
            Ok((host, url.port().ok_or_else(bad)?))
        })
        .collect::<Result<_, _>>()?;
    Ok(crate::session::redis::SentinelSettings {
        master_name: raw.master_name,
        sentinels,
        password: secret("store.sentinel.password", raw.password, raw.password_file)?,
        sentinel_password: secret(
            "store.sentinel.sentinel_password",
            raw.sentinel_password,
            raw.sentinel_password_file,
        )?,
    })
}

/// `[store.cluster]` nodes, checked.
fn cluster_nodes(raw: RawCluster) -> Result<Vec<String>, ConfigError> {
    const KEY: &str = "store.cluster.nodes";
    if raw.nodes.is_empty() {
        return Err(invalid(KEY, "name at least one node"));
    }
    let mut schemes = Vec::new();
    for node in &raw.nodes {
        let url = Url::parse(node)
            .ok()
            .filter(|u| matches!(u.scheme(), "redis" | "rediss") && u.host().is_some())
            .ok_or_else(|| {
                invalid(
                    KEY,
                    format!(
                        "{:?} is not a URL like \"redis://10.0.0.5:6379\" or rediss://…",
                        redact_url_password(node)
                    ),
                )
            })?;
        if !schemes.contains(&url.scheme().to_owned()) {
            schemes.push(url.scheme().to_owned());
        }
    }
    if schemes.len() > 1 {
        return Err(invalid(KEY, "all redis:// or all rediss://, not a mix"));
    }
    Ok(raw.nodes)
}

fn duration(key: &'static str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        invalid(
            key,
            format!("{value:?} is not a duration like \"30s\" or \"24h\" ({e})"),
        )
    })
}

fn socket_addr(key: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            key,
            format!("{value:?} is not an address like \"127.0.0.1:8080\""),
        )
    })
}

fn tls_pair(
    cert_key: &'static str,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (None, None) => Ok(None),
        _ => Err(invalid(
            cert_key,
            "tls_cert_file and tls_key_file go together",
        )),
    }
}

/// A secret given inline or as `*_file` (a Kubernetes Secret mount); the file's trailing
/// newline is trimmed.
fn secret(
    key: &'static str,
    inline: Option<String>,
    file: Option<PathBuf>,
) -> Result<Option<SecretString>, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(invalid(key, "give the value or the _file, not both")),
        (Some(s), None) => Ok(Some(SecretString::from(s))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
            Ok(Some(SecretString::from(
                text.trim_end_matches(['\n', '\r']).to_owned(),
            )))
        }
        (None, None) => Ok(None),
    }
}

fn rate_limit(key: &'static str, r: RateLimit) -> Result<RateLimit, ConfigError> {
    if !(r.per_second.is_finite() && r.per_second > 0.0) || r.burst == 0 {
        return Err(invalid(
            key,
            "per_second must be above 0 and burst at least 1",
        ));
    }
    Ok(r)
}

impl Raw {
    fn validate(self) -> Result<Config, ConfigError> {
        let s = self.server;
        let public_baseurl = Url::parse(&s.public_baseurl)
            .map_err(|e| invalid("server.public_baseurl", e.to_string()))?;
        if !matches!(public_baseurl.scheme(), "http" | "https") {
            return Err(invalid(
                "server.public_baseurl",
                "must be http:// or https://",
            ));
        }
        // Links are built by appending to it, so it always ends in '/'.
        let public_baseurl = if public_baseurl.path().ends_with('/') {
            public_baseurl
        } else {
            Url::parse(&format!("{public_baseurl}/")).expect("a valid URL plus '/' is valid")
        };
        let trusted_proxies = s
            .trusted_proxies
            .iter()
            .map(|p| {
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        invalid(
                            "server.trusted_proxies",
                            format!("{p:?} is not an address or CIDR"),
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        if s.max_header_bytes < 8192 {
            return Err(invalid("server.max_header_bytes", "must be at least 8192"));
        }
        let server = Server {
            listen: socket_addr("server.listen", &s.listen)?,
            tls: tls_pair("server.tls_cert_file", s.tls_cert_file, s.tls_key_file)?,
            public_baseurl,
            server_name: s.server_name,
            trusted_proxies,
            max_body_bytes: s.max_body_bytes,
            max_header_bytes: s.max_header_bytes,
            header_read_timeout: duration("server.header_read_timeout", &s.header_read_timeout)?,
            shutdown_grace: duration("server.shutdown_grace", &s.shutdown_grace)?,
        };

        let u = self.upstream;
        let url = Url::parse(&u.url).map_err(|e| invalid("upstream.url", e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(invalid(
                "upstream.url",
                "must be http://host[:port] or https://host[:port]",
            ));
        }
        let upstream = Upstream {
            url,
            connect_timeout: duration("upstream.connect_timeout", &u.connect_timeout)?,
            response_timeout: duration("upstream.response_timeout", &u.response_timeout)?,
            pool_idle_timeout: duration("upstream.pool_idle_timeout", &u.pool_idle_timeout)?,
            pool_max_idle: u.pool_max_idle,
            path_compat: u.path_compat,
            versions_refresh: duration("upstream.versions_refresh", &u.versions_refresh)?,
        };

        let i = self.identity;
        if i.server_name.is_empty() || i.server_name.contains(['/', ' ']) {
            return Err(invalid("identity.server_name", "must be host or host:port"));
        }
        let identity = Identity {
            listen: socket_addr("identity.listen", &i.listen)?,
            server_name: i.server_name,
            tls: tls_pair("identity.tls_cert_file", i.tls_cert_file, i.tls_key_file)?,
            generated_cert_dir: i
                .generated_cert_dir
                .unwrap_or_else(|| std::env::temp_dir().join("threepid-sidecar")),
        };

        let t = self.threepid;
        if t.max_submit_attempts == 0 {
            return Err(invalid(
                "threepid.max_submit_attempts",
                "must be at least 1",
            ));
        }
        let allowed_addresses = t
            .allowed_addresses
            .into_iter()
            .map(|a| match a.medium.as_str() {
                "email" | "msisdn" => Ok(AllowedAddress {
                    pattern: regex::Regex::new(&a.pattern).map_err(|e| {
                        invalid(
                            "threepid.allowed_addresses",
                            format!("pattern {:?}: {e}", a.pattern),
                        )
                    })?,
                    medium: a.medium,
                }),
                other => Err(invalid(
                    "threepid.allowed_addresses",
                    format!("medium {other:?} is neither \"email\" nor \"msisdn\""),
                )),
            })
            .collect::<Result<_, _>>()?;
        let threepid = Threepid {
            mode: t.mode,
            id_server_param: t.id_server_param,
            session_lifetime: duration("threepid.session_lifetime", &t.session_lifetime)?,
            token_lifetime: duration("threepid.token_lifetime", &t.token_lifetime)?,
            max_submit_attempts: t.max_submit_attempts,
            next_link_allowed_hosts: t
                .next_link_allowed_hosts
                .map(|hosts| hosts.into_iter().map(|h| h.to_ascii_lowercase()).collect()),
            allowed_addresses,
        };

        let st = self.store;
        let topology = match (st.sentinel, st.cluster) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "store.cluster",
                    "give [store.sentinel] or [store.cluster], not both",
                ));
            }
            (Some(s), None) => StoreTopology::Sentinel(sentinel(s)?),
            (None, Some(c)) => StoreTopology::Cluster {
                nodes: cluster_nodes(c)?,
            },
            (None, None) => StoreTopology::Single,
        };
        if st.backend == StoreBackend::Memory && !matches!(topology, StoreTopology::Single) {
            return Err(invalid(
                "store.backend",
                "[store.sentinel] and [store.cluster] need backend = \"redis\"",
            ));
        }
        if st.backend == StoreBackend::Redis && matches!(topology, StoreTopology::Single) {
            Url::parse(&st.url)
                .ok()
                .filter(|u| matches!(u.scheme(), "redis" | "rediss"))
                .ok_or_else(|| {
                    invalid(
                        "store.url",
                        "must be redis://host[:port][/db] or rediss://…",
                    )
                })?;
        }
        let store = Store {
            backend: st.backend,
            url: st.url,
            key_prefix: st.key_prefix,
            command_timeout: duration("store.command_timeout", &st.command_timeout)?,
            topology,
        };

        let e = self.email;
        if e.transport == EmailTransport::Smtp {
            let u = Url::parse(&e.smtp_url)
                .map_err(|err| invalid("email.smtp_url", err.to_string()))?;
            if !matches!(u.scheme(), "smtp" | "smtps") {
                return Err(invalid(
                    "email.smtp_url",
                    "must be smtp://host[:port] or smtps://host[:port]",
                ));
            }
        }
        if e.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid(
                "email.from",
                format!(
                    "{:?} is not a mailbox like \"Matrix <noreply@example.org>\"",
                    e.from
                ),
            ));
        }
        let email = Email {
            transport: e.transport,
            from: e.from,
            app_name: e.app_name,
            smtp_url: e.smtp_url,
            smtp_username: e.smtp_username,
            smtp_password: secret("email.smtp_password", e.smtp_password, e.smtp_password_file)?,
            send_timeout: duration("email.send_timeout", &e.send_timeout)?,
            max_retry_age: duration("email.max_retry_age", &e.max_retry_age)?,
            file_dir: e.file_dir,
            templates_dir: e.templates_dir,
        };

        let m = self.sms;
        let webhook_url = m
            .webhook_url
            .map(|u| Url::parse(&u).map_err(|e| invalid("sms.webhook_url", e.to_string())))
            .transpose()?;
        if m.transport == SmsTransport::Webhook && webhook_url.is_none() {
            return Err(invalid(
                "sms.webhook_url",
                "required when sms.transport = \"webhook\"",
            ));
        }
        let sms = Sms {
            transport: m.transport,
            webhook_url,
            webhook_token: secret("sms.webhook_token", m.webhook_token, m.webhook_token_file)?,
            timeout: duration("sms.timeout", &m.timeout)?,
            max_retry_age: duration("sms.max_retry_age", &m.max_retry_age)?,
            log_codes: m.log_codes,
        };

        let o = self.outbox;
        let outbox = Outbox {
            claim_timeout: duration("outbox.claim_timeout", &o.claim_timeout)?,
            retry_base: duration("outbox.retry_base", &o.retry_base)?,
            concurrency: o.concurrency,
            dead_letter_max: o.dead_letter_max,
        };
        if outbox.retry_base.is_zero() {
            return Err(invalid("outbox.retry_base", "must be above 0"));
        }
        if !(1..=1000).contains(&outbox.concurrency) {
            return Err(invalid("outbox.concurrency", "must be 1 to 1000"));
        }
        if outbox.dead_letter_max == 0 {
            return Err(invalid("outbox.dead_letter_max", "must be at least 1"));
        }
        // Only the Redis store has an outbox; a longer send would let a second sender
        // claim a message while the first is still sending it.
        let longest_send = email.send_timeout.max(sms.timeout);
        if store.backend == StoreBackend::Redis && outbox.claim_timeout <= longest_send {
            return Err(invalid(
                "outbox.claim_timeout",
                format!(
                    "must be longer than email.send_timeout and sms.timeout ({})",
                    humantime::format_duration(longest_send)
                ),
            ));
        }

        let r = self.rate_limit;
        let rate_limit = RateLimits {
            request_token_per_ip: rate_limit(
                "rate_limit.request_token_per_ip",
                r.request_token_per_ip,
            )?,
            request_token_per_address: rate_limit(
                "rate_limit.request_token_per_address",
                r.request_token_per_address,
            )?,
            submit_per_ip: rate_limit("rate_limit.submit_per_ip", r.submit_per_ip)?,
        };

        let l = self.log;
        tracing_subscriber::EnvFilter::try_new(&l.level)
            .map_err(|e| invalid("log.level", e.to_string()))?;

        Ok(Config {
            server,
            upstream,
            identity,
            threepid,
            store,
            email,
            sms,
            outbox,
            rate_limit,
            admin: Admin {
                listen: socket_addr("admin.listen", &self.admin.listen)?,
            },
            log: Log {
                format: l.format,
                level: l.level,
            },
        })
    }
}

impl Email {
    /// The SMTP password, for the transport only.
    pub fn password(&self) -> Option<&str> {
        self.smtp_password.as_ref().map(ExposeSecret::expose_secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_valid_and_needs_no_redis_or_mail_server() {
        let config = Config::from_toml(EXAMPLE).expect("config.example.toml is valid");
        assert_eq!(config.store.backend, StoreBackend::Memory);
        assert_eq!(config.email.transport, EmailTransport::File);
        assert_eq!(config.upstream.url.as_str(), "http://127.0.0.1:8008/");
    }

    #[test]
    fn an_unknown_key_is_refused_with_line_and_column() {
        let err = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("column 1"), "{err}");
        assert!(err.contains("listen_port"), "{err}");
    }

    #[test]
    fn an_unknown_section_is_refused() {
        let err = Config::from_toml("[serverr]\n").unwrap_err().to_string();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = Config::from_toml("[threepid]\ntoken_lifetime = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("threepid.token_lifetime:"), "{err}");
        let err = Config::from_toml("[upstream]\nurl = \"ftp://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("upstream.url:"), "{err}");
    }

    #[test]
    fn durations_are_strings() {
        let c = Config::from_toml("[threepid]\nsession_lifetime = \"2h 30m\"\n").unwrap();
        assert_eq!(c.threepid.session_lifetime, Duration::from_secs(9000));
    }

    #[test]
    fn a_file_secret_is_read_and_its_trailing_newline_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "s3cret\n").unwrap();
        let c = Config::from_toml(&format!(
            "[email]\nsmtp_password_file = {:?}\n",
            path.display().to_string()
        ))
        .unwrap();
        assert_eq!(c.email.password(), Some("s3cret"));
    }

    #[test]
    fn inline_and_file_secret_together_are_refused() {
        let err =
            Config::from_toml("[email]\nsmtp_password = \"a\"\nsmtp_password_file = \"/x\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.starts_with("email.smtp_password:"), "{err}");
    }

    #[test]
    fn redacted_output_never_shows_a_secret() {
        let c = Config::from_toml(
            "[email]\nsmtp_password = \"hunter2\"\nsmtp_url = \"smtp://u:pw99@mail:25\"\n[sms]\nwebhook_token = \"tok-abc\"\n[store]\nurl = \"redis://:redispw@r:6379\"\n",
        )
        .unwrap();
        let out = c.redacted_toml();
        for secret in ["hunter2", "pw99", "tok-abc", "redispw"] {
            assert!(!out.contains(secret), "{secret} leaked:\n{out}");
        }
        assert!(out.contains("<redacted>"));
        // …and it is itself TOML.
        toml::from_str::<toml::Value>(&out).unwrap();
    }

    #[test]
    fn public_baseurl_always_ends_in_a_slash() {
        let c =
            Config::from_toml("[server]\npublic_baseurl = \"https://m.example.org/hs\"\n").unwrap();
        assert_eq!(
            c.server.public_baseurl.as_str(),
            "https://m.example.org/hs/"
        );
    }

    #[test]
    fn allowed_addresses_are_regular_expressions_per_medium() {
        let c = Config::from_toml(
            "[threepid]\nallowed_addresses = [{ medium = \"email\", pattern = \"@example\\\\.org$\" }]\n",
        )
        .unwrap();
        assert!(c.threepid.address_allowed("email", "a@example.org"));
        assert!(!c.threepid.address_allowed("email", "a@example.com"));
        assert!(!c.threepid.address_allowed("msisdn", "447700900123"));
        let err = Config::from_toml(
            "[threepid]\nallowed_addresses = [{ medium = \"email\", pattern = \"(\" }]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("threepid.allowed_addresses:"), "{err}");
    }

    #[test]
    fn store_sentinel_and_cluster_sections_set_the_topology() {
        let c = Config::from_toml("[store]\nbackend = \"redis\"\n").unwrap();
        assert!(matches!(c.store.topology, StoreTopology::Single));
        let c = Config::from_toml(
            "[store]\nbackend = \"redis\"\n[store.sentinel]\nmaster_name = \"m\"\nsentinels = [\"10.0.0.5:26379\", \"[::1]:26380\", \"s3.local:26381\"]\npassword = \"pw\"\n",
        )
        .unwrap();
        let StoreTopology::Sentinel(s) = &c.store.topology else {
            panic!("expected sentinel, got {:?}", c.store.topology);
        };
        assert_eq!(s.master_name, "m");
        let sentinels: Vec<_> = s.sentinels.iter().map(|(h, p)| (h.as_str(), *p)).collect();
        assert_eq!(
            sentinels,
            [("10.0.0.5", 26379), ("::1", 26380), ("s3.local", 26381)]
        );
        assert_eq!(s.password.as_ref().map(|p| p.expose_secret()), Some("pw"));
        assert!(s.sentinel_password.is_none());
        let c = Config::from_toml(
            "[store]\nbackend = \"redis\"\n[store.cluster]\nnodes = [\"redis://10.0.0.5:6379\", \"redis://10.0.0.6\"]\n",
        )
        .unwrap();
        let StoreTopology::Cluster { nodes } = &c.store.topology else {
            panic!("expected cluster, got {:?}", c.store.topology);
        };
        assert_eq!(nodes, &["redis://10.0.0.5:6379", "redis://10.0.0.6"]);
    }

    #[test]
    fn a_bad_store_topology_is_refused_naming_its_key() {
        let redis = "[store]\nbackend = \"redis\"\n";
        let sentinel = "[store.sentinel]\nmaster_name = \"m\"\nsentinels = [\"h:1\"]\n";
        let cluster = "[store.cluster]\nnodes = [\"redis://h:1\"]\n";
        for (toml, key) in [
            (format!("{redis}{sentinel}{cluster}"), "store.cluster:"),
            (
                format!("[store]\nbackend = \"memory\"\n{sentinel}"),
                "store.backend:",
            ),
            (
                format!("{redis}{}", sentinel.replace("\"m\"", "\"\"")),
                "store.sentinel.master_name:",
            ),
            (
                format!("{redis}{}", sentinel.replace("[\"h:1\"]", "[]")),
                "store.sentinel.sentinels:",
            ),
            (
                format!("{redis}{}", sentinel.replace("h:1", "h")),
                "store.sentinel.sentinels:",
            ),
            (
                format!("{redis}{}", sentinel.replace("h:1", "redis://h:1")),
                "store.sentinel.sentinels:",
            ),
            (
                format!("{redis}{sentinel}password = \"a\"\npassword_file = \"/x\"\n"),
                "store.sentinel.password:",
            ),
            (
                format!("{redis}{}", cluster.replace("redis://h:1", "h:1")),
                "store.cluster.nodes:",
            ),
            (
                format!("{redis}{}", cluster.replace("[\"redis://h:1\"]", "[]")),
                "store.cluster.nodes:",
            ),
            (
                format!(
                    "{redis}{}",
                    cluster.replace("\"redis://h:1\"", "\"redis://h:1\", \"rediss://g:1\"")
                ),
                "store.cluster.nodes:",
            ),
        ] {
            let err = Config::from_toml(&toml).unwrap_err().to_string();
            assert!(err.starts_with(key), "{toml}\n→ {err}");
        }
        let err = Config::from_toml(&format!("{redis}{sentinel}sentinel = [\"h:2\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sentinel"), "an unknown key is refused: {err}");
    }

    #[test]
    fn redacted_output_never_shows_a_sentinel_or_cluster_password() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "filepw7\n").unwrap();
        let c = Config::from_toml(&format!(
            "[store]\nbackend = \"redis\"\n[store.sentinel]\nmaster_name = \"m\"\nsentinels = [\"[::1]:26379\"]\npassword = \"masterpw\"\nsentinel_password_file = {:?}\n",
            path.display().to_string()
        ))
        .unwrap();
        let out = c.redacted_toml();
        for secret in ["masterpw", "filepw7"] {
            assert!(!out.contains(secret), "{secret} leaked:\n{out}");
        }
        let value: toml::Value = toml::from_str(&out).unwrap();
        assert_eq!(
            value["store"]["sentinel"]["sentinels"][0].as_str(),
            Some("[::1]:26379")
        );
        assert_eq!(
            value["store"]["sentinel"]["password"].as_str(),
            Some("<redacted>")
        );
        let c = Config::from_toml(
            "[store]\nbackend = \"redis\"\n[store.cluster]\nnodes = [\"rediss://:clusterpw@h:1\"]\n",
        )
        .unwrap();
        let out = c.redacted_toml();
        assert!(!out.contains("clusterpw"), "leaked:\n{out}");
        toml::from_str::<toml::Value>(&out).unwrap();
    }

    #[test]
    fn outbox_settings_have_defaults_and_are_checked() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.email.max_retry_age, Duration::from_secs(3600));
        assert_eq!(c.sms.max_retry_age, Duration::from_secs(900));
        assert_eq!(c.outbox.claim_timeout, Duration::from_secs(30));
        assert_eq!(c.outbox.retry_base, Duration::from_secs(1));
        let redis = "[store]\nbackend = \"redis\"\n";
        for (toml, key) in [
            (
                format!("{redis}[outbox]\nclaim_timeout = \"10s\"\n"),
                "outbox.claim_timeout:",
            ),
            (
                format!("{redis}[outbox]\nclaim_timeout = \"2s\"\n[sms]\ntimeout = \"3s\"\n"),
                "outbox.claim_timeout:",
            ),
            (
                format!("{redis}[outbox]\nretry_base = \"0s\"\n"),
                "outbox.retry_base:",
            ),
            (
                format!("{redis}[outbox]\nconcurrency = 0\n"),
                "outbox.concurrency:",
            ),
            (
                format!("{redis}[email]\nmax_retry_age = \"soon\"\n"),
                "email.max_retry_age:",
            ),
            (
                "[sms]\nmax_retry_age = \"x\"\n".to_owned(),
                "sms.max_retry_age:",
            ),
        ] {
            let err = Config::from_toml(&toml).unwrap_err().to_string();
            assert!(err.starts_with(key), "{toml}\n→ {err}");
        }
        // Without Redis there is no outbox to claim from.
        Config::from_toml("[outbox]\nclaim_timeout = \"1s\"\n").unwrap();
        let c = Config::from_toml(&format!(
            "{redis}[outbox]\nclaim_timeout = \"2s\"\n[email]\nsend_timeout = \"1s\"\n[sms]\ntimeout = \"1s\"\n"
        ))
        .unwrap();
        assert_eq!(c.outbox.claim_timeout, Duration::from_secs(2));
    }

    #[test]
    fn trusted_proxies_take_addresses_and_cidrs() {
        let c =
            Config::from_toml("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n").unwrap();
        assert_eq!(c.server.trusted_proxies.len(), 2);
        assert!(Config::from_toml("[server]\ntrusted_proxies = [\"nope\"]\n").is_err());
    }
}
