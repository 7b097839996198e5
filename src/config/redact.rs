//! `check-config`'s output: the effective config as TOML with every secret redacted.

use std::time::Duration;

use secrecy::SecretString;
use url::Url;

use super::{Config, RateLimit, StoreTopology, TlsFiles, host_port, redact_url_password};

impl Config {
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
                "max_connections": self.server.max_connections,
                "header_read_timeout": dur(&self.server.header_read_timeout),
                "body_idle_timeout": dur(&self.server.body_idle_timeout),
                "http2_idle_timeout": dur(&self.server.http2_idle_timeout),
                "http2_keep_alive_interval": dur(&self.server.http2_keep_alive_interval),
                "http2_keep_alive_timeout": dur(&self.server.http2_keep_alive_timeout),
                "shutdown_grace": dur(&self.server.shutdown_grace),
            },
            "upstream": {
                "url": self.upstream.url.as_str(),
                "connect_timeout": dur(&self.upstream.connect_timeout),
                "response_timeout": dur(&self.upstream.response_timeout),
                "pool_idle_timeout": dur(&self.upstream.pool_idle_timeout),
                "pool_max_idle": self.upstream.pool_max_idle,
                "max_connections": self.upstream.max_connections,
                "path_compat": self.upstream.path_compat,
                "versions_refresh": dur(&self.upstream.versions_refresh),
                "advertise_versions": self.upstream.advertise_versions,
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
                "allowed_countries": self.sms.allowed_countries,
                "denied_countries": self.sms.denied_countries,
                "per_country_per_hour": self.sms.per_country_per_hour.map(|r| r.burst),
                "daily_budget": self.sms.daily_budget,
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
            "admin": {
                "listen": self.admin.listen.to_string(),
                "api_token_file": self.admin.api_token_file,
                "api_tokens": self.admin.api_tokens.len(),
            },
            "policy": {
                "denied_domains": self.policy.denied_domains,
                "denied_addresses": self.policy.denied_addresses.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
                "disposable_domains_file": self.policy.disposable_domains_file,
                "webhook_url": self.policy.webhook.as_ref().map(|w| w.url.as_str()),
                "webhook_token": self.policy.webhook.as_ref().and_then(|w| redact(&w.token)),
                "webhook_timeout": self.policy.webhook.as_ref().map(|w| dur(&w.timeout)),
                "webhook_failure": self.policy.webhook.as_ref().map(|w| w.failure),
            },
            "notices": {
                "password_changed": self.notices.password_changed,
                "address_removed": self.notices.address_removed,
            },
            "i18n": {
                "default_language": self.i18n.default_language,
                "dir": self.i18n.dir,
            },
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
