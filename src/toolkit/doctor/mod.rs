//! `threepid-sidecar doctor`: every link of the chain a legacy deployment depends on, checked
//! from where the sidecar runs, one line each. Nothing is sent and nothing is written (but a
//! probe file in `email.file_dir`, removed again).
//!
//! Checks, by concern: the config, its languages and the listeners ([`config`]); the
//! homeserver ([`homeserver`]); the identity listener as the homeserver reaches it
//! ([`identity`]); the store ([`store`]); mail ([`email`]); SMS ([`sms`]); the templates
//! ([`templates`]). The network checks run at the same time, each step bounded by
//! [`NETWORK_TIMEOUT`]. A check whose prerequisite failed is left out (its line would only
//! repeat the failure).

mod config;
mod email;
mod homeserver;
mod identity;
mod sms;
mod store;
mod templates;
#[cfg(test)]
mod tests;

use std::fmt;
use std::future::Future;
use std::path::Path;

use serde::Serialize;

use super::NETWORK_TIMEOUT;
use crate::config::{Config, ConfigError};

/// How a check came out. Ordered: the worst decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but something should be done.
    Warn,
    /// Broken: users will not get their mail or cannot complete a step.
    Fail,
}

impl Status {
    /// The word at the start of a line: `ok`, `warn`, `FAIL`.
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

/// One finding: its status, the check's name, and one sentence (for warn and FAIL: what to do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub message: String,
}

impl Check {
    pub fn ok(name: &'static str, message: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, message)
    }

    pub fn warn(name: &'static str, message: impl Into<String>) -> Self {
        Self::new(name, Status::Warn, message)
    }

    pub fn fail(name: &'static str, message: impl Into<String>) -> Self {
        Self::new(name, Status::Fail, message)
    }

    fn new(name: &'static str, status: Status, message: impl Into<String>) -> Self {
        Self {
            name,
            status,
            message: message.into(),
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:<4}  {:<26} {}",
            self.status.label(),
            self.name,
            self.message
        )
    }
}

/// 0 when every check is ok, 1 with warnings, 2 with any failure.
pub fn exit_code(checks: &[Check]) -> u8 {
    match checks.iter().map(|c| c.status).max() {
        Some(Status::Fail) => 2,
        Some(Status::Warn) => 1,
        _ => 0,
    }
}

/// The report: one line per check, or (`json`) an array of `{name, status, message}`.
pub fn report(checks: &[Check], json: bool) -> String {
    if json {
        let mut text = serde_json::to_string_pretty(checks).expect("checks serialise");
        text.push('\n');
        text
    } else {
        checks.iter().map(|c| format!("{c}\n")).collect()
    }
}

/// `doctor` from the command line: the config as read (a refused one is a failure of its
/// own), the report on stdout; returns the exit code.
pub fn main(loaded: Result<Config, ConfigError>, path: Option<&Path>, json: bool) -> u8 {
    let checks = match loaded {
        Ok(config) => super::block_on(run(&config, path)),
        Err(e) => vec![Check::fail(
            "config",
            format!("refused: {e}; fix it (check-config says the same)"),
        )],
    };
    print!("{}", report(&checks, json));
    exit_code(&checks)
}

/// Every check, in a fixed order; the network ones at the same time.
pub async fn run(config: &Config, path: Option<&Path>) -> Vec<Check> {
    let mut checks = config::checks(config, path);
    let (homeserver, identity, store, email, sms) = tokio::join!(
        bounded("homeserver", homeserver::checks(config)),
        bounded("identity", identity::checks(config)),
        bounded("store", store::checks(config)),
        bounded("email", email::checks(config)),
        bounded("sms", sms::checks(config)),
    );
    checks.extend(homeserver);
    checks.extend(identity);
    checks.extend(store);
    checks.extend(email);
    checks.extend(sms);
    checks.extend(templates::checks(config));
    checks
}

/// A group of checks, each of whose steps is bounded already; this bounds the whole group too
/// (a few steps in a row), so that doctor always finishes.
async fn bounded(name: &'static str, checks: impl Future<Output = Vec<Check>>) -> Vec<Check> {
    let limit = NETWORK_TIMEOUT * 3;
    tokio::time::timeout(limit, checks)
        .await
        .unwrap_or_else(|_| {
            vec![Check::fail(
                name,
                format!(
                    "no answer within {} s: see the other lines, and the address in the config",
                    limit.as_secs()
                ),
            )]
        })
}

/// `fut` bounded by [`NETWORK_TIMEOUT`]; `None` when it took longer.
async fn timed<T>(fut: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(NETWORK_TIMEOUT, fut).await.ok()
}

/// Whether `host` is this machine (a relay or gateway there may be spoken to in plain text).
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
