//! The config as `check-config` reads it, its languages' coverage, and what will listen where.

use std::path::Path;

use super::{Check, is_loopback};
use crate::config::Config;
use crate::i18n::Catalogues;

pub fn checks(config: &Config, path: Option<&Path>) -> Vec<Check> {
    let mut checks = vec![match path {
        Some(path) => Check::ok("config", format!("{} is valid", path.display())),
        None => Check::ok(
            "config",
            "the embedded default (config.example.toml) is valid; give your own with --config",
        ),
    }];
    checks.push(languages(config));
    checks.extend(listeners(config));
    checks
}

/// Every language's catalogue against English's (what `check-config` reports).
fn languages(config: &Config) -> Check {
    let catalogues =
        match Catalogues::load(config.i18n.dir.as_deref(), &config.i18n.default_language) {
            Ok(catalogues) => catalogues,
            Err(e) => return Check::fail("i18n", format!("{e}: fix the catalogue")),
        };
    let tags: Vec<&str> = catalogues.tags().collect();
    let mut gaps = Vec::new();
    for coverage in catalogues.coverage() {
        if !coverage.missing.is_empty() {
            gaps.push(format!(
                "{} lacks {} message(s) English has",
                coverage.language,
                coverage.missing.len()
            ));
        }
        if !coverage.extra.is_empty() {
            gaps.push(format!(
                "{} has {} message(s) English lacks, never used",
                coverage.language,
                coverage.extra.len()
            ));
        }
    }
    if gaps.is_empty() {
        Check::ok(
            "i18n",
            format!(
                "{} languages ({}), default {}; every catalogue has every message",
                tags.len(),
                tags.join(", "),
                catalogues.default_language()
            ),
        )
    } else {
        Check::warn(
            "i18n",
            format!(
                "{}: English is used where a message is missing; check-config lists the keys to add under i18n.dir",
                gaps.join("; ")
            ),
        )
    }
}

/// What will listen where, and the address clients and links use.
fn listeners(config: &Config) -> Vec<Check> {
    let server = &config.server;
    let scheme = if server.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let public = &server.public_baseurl;
    let client = format!(
        "{scheme} on {} (HTTP/1.1 and HTTP/2), reached by clients and mailed links at {public}",
        server.listen
    );
    let public_host = public.host_str().unwrap_or_default();
    let client = if public.scheme() == "http" && !is_loopback(public_host) {
        Check::warn(
            "listen.client",
            format!(
                "{client}: links in mail and submit_url will be plain http; set server.public_baseurl to the https:// address clients use"
            ),
        )
    } else {
        Check::ok("listen.client", client)
    };
    let identity = &config.identity;
    let certificate = match &identity.tls {
        Some(files) => format!("the certificate {}", files.cert.display()),
        None => format!(
            "a self-signed certificate generated at start into {}",
            identity.generated_cert_dir.display()
        ),
    };
    vec![
        client,
        Check::ok(
            "listen.identity",
            format!(
                "https on {} for the homeserver, which calls it as {}, with {certificate}",
                identity.listen, identity.server_name
            ),
        ),
        Check::ok(
            "listen.admin",
            format!(
                "http on {}: /health/live, /health/ready, /metrics",
                config.admin.listen
            ),
        ),
    ]
}
