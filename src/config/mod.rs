//! The one TOML file: a raw serde shape that refuses unknown keys, turned into a typed
//! [`Config`] by [`Config::from_toml`]. Every key is documented here and in
//! `config.example.toml`, which is also the embedded default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

mod raw;
mod redact;
#[cfg(test)]
mod tests;
mod validate;

use raw::Raw;

/// The embedded default: runs with no Redis and no mail server.
pub const EXAMPLE: &str = include_str!("../../config.example.toml");

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

/// `upstream.path_compat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathCompatMode {
    /// Never rewrite.
    Off,
    /// Always rewrite v3 to r0.
    R0,
    /// Rewrite while the upstream's `/versions` lists no `v1.x`.
    Auto,
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
    pub i18n: I18n,
    pub policy: Policy,
    pub notices: Notices,
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
    /// Connections each listener holds open at most; one more is answered 503 and closed.
    /// Keeps a flood of connections from exhausting file descriptors and memory.
    pub max_connections: usize,
    /// A client that has not sent its whole request head by then is dropped. It is also how
    /// long an HTTP/1.1 keep-alive connection waits for its next request: hyper times that
    /// wait and the head together.
    pub header_read_timeout: Duration,
    /// A forwarded request body that pauses this long between two of its parts is cut:
    /// the upstream request is abandoned and the client gets 408 (or, when the
    /// homeserver's answer has begun, a closed connection). Like nginx's
    /// `client_body_timeout`; the body still streams.
    pub body_idle_timeout: Duration,
    /// An HTTP/2 connection with no request open for this long is closed (GOAWAY): hyper
    /// has no idle timeout of its own for HTTP/2, and idle connections would pile up.
    pub http2_idle_timeout: Duration,
    /// How long an HTTP/2 connection may go without receiving anything before it is sent a
    /// PING; a client that vanished is found out even while a long-poll is open.
    pub http2_keep_alive_interval: Duration,
    /// A PING not answered within this closes the HTTP/2 connection.
    pub http2_keep_alive_timeout: Duration,
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
    /// Requests to the homeserver in progress at most (each holds one upstream connection,
    /// from its head until the answer's body has been sent on or dropped); one more is
    /// answered 503 at once rather than queued.
    pub max_connections: usize,
    /// v3→r0 path mapping for r0-only homeservers.
    pub path_compat: PathCompatMode,
    /// In `path_compat = "auto"`, how often the upstream's `/versions` is read again.
    pub versions_refresh: Duration,
    /// Versions added to the `/versions` answer while the v3→r0 mapping is on: matrix-js-sdk
    /// (and so Element) refuses a homeserver that lists no `v1.x`.
    pub advertise_versions: Vec<String>,
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
    Sentinel(SentinelSettings),
    /// `[store.cluster]`: Redis Cluster, discovered from these `redis://`/`rediss://` nodes.
    Cluster { nodes: Vec<String> },
}

/// How to reach a master through Redis Sentinel.
#[derive(Debug, Clone)]
pub struct SentinelSettings {
    /// The name the sentinels monitor the master under.
    pub master_name: String,
    /// Host and port of each sentinel; asked in turn.
    pub sentinels: Vec<(String, u16)>,
    /// The master's (and replicas') password.
    pub password: Option<SecretString>,
    /// The sentinels' own password (`requirepass` in sentinel.conf), if they have one.
    pub sentinel_password: Option<SecretString>,
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
    /// Only numbers of these countries (ISO 3166-1 alpha-2, as the number resolves), if set.
    pub allowed_countries: Option<Vec<String>>,
    /// Never numbers of these countries.
    pub denied_countries: Vec<String>,
    /// SMS per country and hour, across replicas (GCRA: a burst of this many, then a steady
    /// rate), if set.
    pub per_country_per_hour: Option<RateLimit>,
    /// SMS per UTC day across replicas, if set: at the budget, msisdn requestToken answers 429.
    pub daily_budget: Option<u64>,
}

/// `[policy]`: which addresses may be verified at all.
#[derive(Debug, Clone)]
pub struct Policy {
    /// `example.org` (that domain) or `*.example.org` (every name under it); checked.
    pub denied_domains: Vec<String>,
    pub denied_addresses: Vec<regex::Regex>,
    /// One domain per line (a domain and its parents are matched); reloaded on SIGHUP and
    /// when it changes.
    pub disposable_domains_file: Option<PathBuf>,
    pub webhook: Option<PolicyWebhook>,
}

/// `policy.webhook_*`: the operator's own rules over HTTP.
#[derive(Debug, Clone)]
pub struct PolicyWebhook {
    pub url: Url,
    pub token: Option<SecretString>,
    pub timeout: Duration,
    pub failure: WebhookFailure,
}

/// What a webhook that cannot be asked means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WebhookFailure {
    /// Let the address in (the local rules still apply).
    Allow,
    /// Refuse for now: 503, "try again".
    Deny,
}

/// `[notices]`: security mails to an address after its account changed.
#[derive(Debug, Clone, Copy)]
pub struct Notices {
    /// "Your password was changed", after a reset completed with one of our sessions.
    pub password_changed: bool,
    /// "This address was removed", after `/account/3pid/delete` of an email address.
    pub address_removed: bool,
}

/// One domain per line, `#` comments, blank lines: the disposable-domains file's format.
/// Domains come back lower case, in their ASCII (IDNA) form; a `*.` prefix is dropped (a
/// listed domain covers the names under it anyway).
pub fn parse_domain_list(text: &str) -> Result<std::collections::HashSet<String>, String> {
    let mut domains = std::collections::HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let domain = normalize_domain(line.trim_start_matches("*."));
        if !is_domain(&domain) {
            return Err(format!("line {}: {line:?} is not a domain", n + 1));
        }
        domains.insert(domain);
    }
    Ok(domains)
}

/// A domain as rules compare it: lower case, international names in their ASCII (IDNA) form.
pub fn normalize_domain(domain: &str) -> String {
    let domain = domain.trim().trim_end_matches('.').to_lowercase();
    match url::Host::parse(&domain) {
        Ok(url::Host::Domain(ascii)) => ascii,
        _ => domain,
    }
}

/// `a.b`: labels of letters, digits, `-` and `_`, at least two of them.
fn is_domain(domain: &str) -> bool {
    domain.contains('.')
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
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
    /// The admin API's bearer tokens, one per line of `api_token_file` (two during a
    /// rotation); the API is off when there are none.
    pub api_tokens: Vec<SecretString>,
    /// Where they were read from (printed by check-config, never the tokens).
    pub api_token_file: Option<PathBuf>,
}

/// The languages of mail, SMS and pages.
#[derive(Debug, Clone)]
pub struct I18n {
    /// Used when neither the request nor the browser asks for one we have.
    pub default_language: String,
    /// The operator's catalogues: `<dir>/<tag>/*.ftl` add a language or replace sentences.
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Log {
    pub format: LogFormat,
    pub level: String,
}

/// `host:port`, with brackets around an IPv6 address.
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
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
}

impl Email {
    /// The SMTP password, for the transport only.
    pub fn password(&self) -> Option<&str> {
        self.smtp_password.as_ref().map(ExposeSecret::expose_secret)
    }
}
