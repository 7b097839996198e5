//! Turning the raw file into the typed [`Config`]: every value checked, every error naming
//! its key, secrets read from their `*_file`s.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::SecretString;
use url::Url;

use super::raw::*;
use super::*;

/// `[store.sentinel]`, checked.
fn sentinel(raw: RawSentinel) -> Result<SentinelSettings, ConfigError> {
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
    Ok(SentinelSettings {
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

/// A duration above zero (a timeout of zero would close everything at once).
fn positive(key: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let d = duration(key, value)?;
    if d.is_zero() {
        return Err(invalid(key, "must be above 0"));
    }
    Ok(d)
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

/// The shortest admin API token accepted: 32 characters (say 24 random bytes in base64).
const MIN_ADMIN_TOKEN_LEN: usize = 32;

/// `admin.api_token_file`: one token per line (blank lines and the trailing newline
/// ignored), each at least [`MIN_ADMIN_TOKEN_LEN`] printable ASCII characters.
fn admin_tokens(file: Option<&std::path::Path>) -> Result<Vec<SecretString>, ConfigError> {
    const KEY: &str = "admin.api_token_file";
    let Some(path) = file else {
        return Ok(Vec::new());
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(KEY, format!("cannot read {}: {e}", path.display())))?;
    let mut tokens = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let token = line.trim();
        if token.is_empty() {
            continue;
        }
        if token.len() < MIN_ADMIN_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                KEY,
                format!(
                    "line {} of {}: a token is at least {MIN_ADMIN_TOKEN_LEN} printable ASCII \
                     characters without spaces (e.g. `openssl rand -base64 32`)",
                    n + 1,
                    path.display()
                ),
            ));
        }
        tokens.push(SecretString::from(token.to_owned()));
    }
    if tokens.is_empty() {
        return Err(invalid(
            KEY,
            format!(
                "{} holds no token; remove the setting to turn the admin API off",
                path.display()
            ),
        ));
    }
    Ok(tokens)
}

/// `upstream.advertise_versions`: each shaped `vN.N` (a Matrix spec version), no repeats.
fn advertise_versions(versions: Vec<String>) -> Result<Vec<String>, ConfigError> {
    const KEY: &str = "upstream.advertise_versions";
    let shaped = |v: &str| {
        v.strip_prefix('v')
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(major, minor)| {
                [major, minor]
                    .iter()
                    .all(|n| !n.is_empty() && n.len() <= 4 && n.bytes().all(|b| b.is_ascii_digit()))
            })
    };
    for (i, v) in versions.iter().enumerate() {
        if !shaped(v) {
            return Err(invalid(
                KEY,
                format!("{v:?} is not a Matrix spec version like \"v1.1\""),
            ));
        }
        if versions[..i].contains(v) {
            return Err(invalid(KEY, format!("{v:?} is listed twice")));
        }
    }
    Ok(versions)
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
    pub(super) fn validate(self) -> Result<Config, ConfigError> {
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
        if s.max_connections == 0 {
            return Err(invalid("server.max_connections", "must be at least 1"));
        }
        let server = Server {
            listen: socket_addr("server.listen", &s.listen)?,
            tls: tls_pair("server.tls_cert_file", s.tls_cert_file, s.tls_key_file)?,
            public_baseurl,
            server_name: s.server_name,
            trusted_proxies,
            max_body_bytes: s.max_body_bytes,
            max_header_bytes: s.max_header_bytes,
            max_connections: s.max_connections,
            header_read_timeout: duration("server.header_read_timeout", &s.header_read_timeout)?,
            body_idle_timeout: positive("server.body_idle_timeout", &s.body_idle_timeout)?,
            http2_idle_timeout: positive("server.http2_idle_timeout", &s.http2_idle_timeout)?,
            http2_keep_alive_interval: positive(
                "server.http2_keep_alive_interval",
                &s.http2_keep_alive_interval,
            )?,
            http2_keep_alive_timeout: positive(
                "server.http2_keep_alive_timeout",
                &s.http2_keep_alive_timeout,
            )?,
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
        if u.max_connections == 0 {
            return Err(invalid("upstream.max_connections", "must be at least 1"));
        }
        let upstream = Upstream {
            url,
            connect_timeout: duration("upstream.connect_timeout", &u.connect_timeout)?,
            response_timeout: duration("upstream.response_timeout", &u.response_timeout)?,
            pool_idle_timeout: duration("upstream.pool_idle_timeout", &u.pool_idle_timeout)?,
            pool_max_idle: u.pool_max_idle,
            max_connections: u.max_connections,
            path_compat: u.path_compat,
            versions_refresh: duration("upstream.versions_refresh", &u.versions_refresh)?,
            advertise_versions: advertise_versions(u.advertise_versions)?,
        };

        let i = self.identity;
        if i.server_name.is_empty() || i.server_name.contains(['/', ' ']) {
            return Err(invalid("identity.server_name", "must be host or host:port"));
        }
        let identity_listen = socket_addr("identity.listen", &i.listen)?;
        let identity = Identity {
            listen: identity_listen,
            server_name: i.server_name,
            tls: tls_pair("identity.tls_cert_file", i.tls_cert_file, i.tls_key_file)?,
            // One folder per identity port: two sidecars on one host never share one.
            generated_cert_dir: i.generated_cert_dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!(
                    "threepid-sidecar-identity-{}",
                    identity_listen.port()
                ))
            }),
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
        let countries =
            |key: &'static str, codes: Vec<String>| -> Result<Vec<String>, ConfigError> {
                for code in &codes {
                    let known = code.len() == 2
                        && code.bytes().all(|b| b.is_ascii_uppercase())
                        && code.parse::<phonenumber::country::Id>().is_ok();
                    if !known {
                        return Err(invalid(
                            key,
                            format!("{code:?} is not an ISO 3166-1 alpha-2 region like \"GB\""),
                        ));
                    }
                }
                Ok(codes)
            };
        let sms = Sms {
            transport: m.transport,
            webhook_url,
            webhook_token: secret("sms.webhook_token", m.webhook_token, m.webhook_token_file)?,
            timeout: duration("sms.timeout", &m.timeout)?,
            max_retry_age: duration("sms.max_retry_age", &m.max_retry_age)?,
            log_codes: m.log_codes,
            allowed_countries: m
                .allowed_countries
                .map(|c| countries("sms.allowed_countries", c))
                .transpose()?,
            denied_countries: countries("sms.denied_countries", m.denied_countries)?,
            per_country_per_hour: match m.per_country_per_hour {
                Some(0) => {
                    return Err(invalid(
                        "sms.per_country_per_hour",
                        "must be at least 1 (leave it out for no limit)",
                    ));
                }
                Some(n) => Some(RateLimit {
                    per_second: f64::from(n) / 3600.0,
                    burst: n,
                }),
                None => None,
            },
            daily_budget: match m.daily_budget {
                Some(0) => {
                    return Err(invalid(
                        "sms.daily_budget",
                        "must be at least 1 (leave it out for no budget)",
                    ));
                }
                other => other,
            },
        };

        let p = self.policy;
        for glob in &p.denied_domains {
            let bare = glob.strip_prefix("*.").unwrap_or(glob);
            if bare.contains('*') || !is_domain(&normalize_domain(bare)) {
                return Err(invalid(
                    "policy.denied_domains",
                    format!("{glob:?} is not a domain like \"example.org\" or \"*.example.org\""),
                ));
            }
        }
        let denied_addresses = p
            .denied_addresses
            .iter()
            .map(|pattern| {
                regex::Regex::new(pattern).map_err(|e| {
                    invalid(
                        "policy.denied_addresses",
                        format!("pattern {pattern:?}: {e}"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        if let Some(path) = &p.disposable_domains_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    "policy.disposable_domains_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            parse_domain_list(&text).map_err(|e| {
                invalid(
                    "policy.disposable_domains_file",
                    format!("{}: {e}", path.display()),
                )
            })?;
        }
        let webhook_token = secret(
            "policy.webhook_token",
            p.webhook_token,
            p.webhook_token_file,
        )?;
        let webhook = match p.webhook_url {
            Some(url) => {
                let url = Url::parse(&url)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                    .ok_or_else(|| invalid("policy.webhook_url", "must be an http(s) URL"))?;
                Some(PolicyWebhook {
                    url,
                    token: webhook_token,
                    timeout: duration("policy.webhook_timeout", &p.webhook_timeout)?,
                    failure: p.webhook_failure,
                })
            }
            None if webhook_token.is_some() => {
                return Err(invalid(
                    "policy.webhook_token",
                    "set only with policy.webhook_url",
                ));
            }
            None => None,
        };
        let policy = Policy {
            denied_domains: p.denied_domains,
            denied_addresses,
            disposable_domains_file: p.disposable_domains_file,
            webhook,
        };
        let notices = Notices {
            password_changed: self.notices.password_changed,
            address_removed: self.notices.address_removed,
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

        let i18n = I18n {
            default_language: self.i18n.default_language,
            dir: self.i18n.dir,
        };
        // The catalogues are read here, so that a bad one or an unknown default language is a
        // refused config (exit 64) with the file named.
        crate::i18n::Catalogues::load(i18n.dir.as_deref(), &i18n.default_language)
            .map_err(|e| invalid("i18n", e.to_string()))?;

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
            i18n,
            policy,
            notices,
            admin: Admin {
                listen: socket_addr("admin.listen", &self.admin.listen)?,
                api_tokens: admin_tokens(self.admin.api_token_file.as_deref())?,
                api_token_file: self.admin.api_token_file,
            },
            log: Log {
                format: l.format,
                level: l.level,
            },
        })
    }
}
