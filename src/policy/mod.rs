//! Which addresses may be verified at all (`[policy]`, and `[sms]`'s countries): checked after
//! an address is parsed and before any session, limit on its address, or message.
//!
//! [`Policy::check`] applies the local rules — denied domains (`example.org` is that domain,
//! `*.example.org` any name under it), denied addresses (regular expressions), the disposable
//! domains of [`disposable`] (a domain and its parents), and for phone numbers the countries
//! the number belongs to — and then, when configured, asks the operator's [`webhook`]. Each
//! refusal is a [`Denial`] with a stable reason for the metrics.

pub mod disposable;
pub mod webhook;

use std::collections::HashSet;
use std::net::IpAddr;

use hyper::StatusCode;

use crate::config::{self, WebhookFailure};
use crate::matrix::MatrixError;
use crate::threepid::{Medium, Purpose};
use disposable::DisposableList;
use webhook::{Webhook, WebhookAnswer};

/// Why an address was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// Its domain is in `policy.denied_domains`.
    DeniedDomain,
    /// It matches one of `policy.denied_addresses`.
    DeniedAddress,
    /// Its domain is on the disposable-domains list.
    Disposable,
    /// The phone number's country is not allowed (`sms.allowed_countries` /
    /// `denied_countries`).
    Country,
    /// The operator's webhook said no (with its reason, if it gave one).
    Webhook(Option<String>),
    /// The webhook could not be asked, and `webhook_failure = "deny"`.
    WebhookUnavailable,
}

impl Denial {
    /// The metrics label.
    pub fn reason(&self) -> &'static str {
        match self {
            Denial::DeniedDomain => "denied_domain",
            Denial::DeniedAddress => "denied_address",
            Denial::Disposable => "disposable",
            Denial::Country => "country",
            Denial::Webhook(_) | Denial::WebhookUnavailable => "webhook",
        }
    }

    /// What the client is told: 403 `M_THREEPID_DENIED` with a sentence, or 503 when the
    /// webhook could not be asked (the address may well be fine: try again).
    pub fn into_matrix(self) -> MatrixError {
        let denied = |sentence: String| {
            MatrixError::new(StatusCode::FORBIDDEN, "M_THREEPID_DENIED", sentence)
        };
        match self {
            Denial::DeniedDomain => {
                denied("Email addresses of this domain are not accepted on this server.".into())
            }
            Denial::DeniedAddress => denied("This address is not accepted on this server.".into()),
            Denial::Disposable => denied(
                "Disposable email addresses are not accepted on this server; use a lasting one."
                    .into(),
            ),
            Denial::Country => {
                denied("Phone numbers of this country are not accepted on this server.".into())
            }
            Denial::Webhook(reason) => denied(
                reason.unwrap_or_else(|| "This address is not accepted on this server.".to_owned()),
            ),
            Denial::WebhookUnavailable => MatrixError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "M_UNKNOWN",
                "The address could not be checked just now; try again in a minute.",
            ),
        }
    }
}

/// What a check looks at.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub medium: Medium,
    /// Canonical (DESIGN §5).
    pub address: &'a str,
    pub purpose: Purpose,
    /// The client, for the webhook.
    pub client_ip: IpAddr,
}

/// The compiled rules.
pub struct Policy {
    denied_domains: HashSet<String>,
    /// `*.x` entries, as `x`: any name under it.
    denied_parents: HashSet<String>,
    denied_addresses: Vec<regex::Regex>,
    disposable: Option<DisposableList>,
    allowed_countries: Option<HashSet<String>>,
    denied_countries: HashSet<String>,
    webhook: Option<(Webhook, WebhookFailure)>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("denied_domains", &self.denied_domains.len())
            .field("denied_parents", &self.denied_parents.len())
            .field("denied_addresses", &self.denied_addresses.len())
            .field(
                "disposable",
                &self.disposable.as_ref().map(DisposableList::len),
            )
            .field("webhook", &self.webhook.is_some())
            .finish_non_exhaustive()
    }
}

pub use crate::config::normalize_domain;

/// A domain and each of its parents: `a.b.example.org`, `b.example.org`, `example.org`,
/// `org`. Never across a label boundary.
pub fn domain_and_parents(domain: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(domain), |d| d.split_once('.').map(|(_, rest)| rest))
        .filter(|d| !d.is_empty())
}

impl Policy {
    /// Compiles the configured rules; reads the disposable list (a missing or bad file is an
    /// error here, at start).
    pub fn new(policy: &config::Policy, sms: &config::Sms) -> Result<Self, String> {
        let mut denied_domains = HashSet::new();
        let mut denied_parents = HashSet::new();
        for glob in &policy.denied_domains {
            match glob.strip_prefix("*.") {
                Some(parent) => denied_parents.insert(normalize_domain(parent)),
                None => denied_domains.insert(normalize_domain(glob)),
            };
        }
        let disposable = policy
            .disposable_domains_file
            .as_deref()
            .map(DisposableList::load)
            .transpose()?;
        Ok(Self {
            denied_domains,
            denied_parents,
            denied_addresses: policy.denied_addresses.clone(),
            disposable,
            allowed_countries: sms
                .allowed_countries
                .as_ref()
                .map(|c| c.iter().cloned().collect()),
            denied_countries: sms.denied_countries.iter().cloned().collect(),
            webhook: policy
                .webhook
                .as_ref()
                .map(|w| (Webhook::new(w), w.failure)),
        })
    }

    /// The disposable list, to reload it (SIGHUP, or when its file changes).
    pub fn disposable(&self) -> Option<&DisposableList> {
        self.disposable.as_ref()
    }

    /// The local rules: denied domains, denied addresses, disposable domains, countries.
    /// `region` is the phone number's country (ISO 3166-1 alpha-2), for msisdn.
    pub fn check_local(
        &self,
        medium: Medium,
        address: &str,
        region: Option<&str>,
    ) -> Result<(), Denial> {
        match medium {
            Medium::Email => {
                let domain = normalize_domain(address.rsplit_once('@').map_or("", |(_, d)| d));
                if self.denied_domains.contains(&domain)
                    || domain_and_parents(&domain)
                        .skip(1)
                        .any(|parent| self.denied_parents.contains(parent))
                {
                    return Err(Denial::DeniedDomain);
                }
                if self.denied_addresses.iter().any(|r| r.is_match(address)) {
                    return Err(Denial::DeniedAddress);
                }
                if self
                    .disposable
                    .as_ref()
                    .is_some_and(|list| list.contains(&domain))
                {
                    return Err(Denial::Disposable);
                }
            }
            Medium::Msisdn => {
                if self.denied_addresses.iter().any(|r| r.is_match(address)) {
                    return Err(Denial::DeniedAddress);
                }
                let region = region.unwrap_or("");
                let allowed = self
                    .allowed_countries
                    .as_ref()
                    .is_none_or(|allowed| allowed.contains(region));
                if !allowed || self.denied_countries.contains(region) {
                    return Err(Denial::Country);
                }
            }
        }
        Ok(())
    }

    /// The operator's webhook, when configured; its failure is judged by `webhook_failure`.
    pub async fn check_webhook(&self, candidate: &Candidate<'_>) -> Result<(), Denial> {
        let Some((webhook, on_failure)) = &self.webhook else {
            return Ok(());
        };
        match webhook.ask(candidate).await {
            WebhookAnswer::Allow => Ok(()),
            WebhookAnswer::Deny(reason) => Err(Denial::Webhook(reason)),
            WebhookAnswer::Failed(why) => {
                tracing::warn!(error = %why, "policy webhook failed");
                match on_failure {
                    WebhookFailure::Allow => Ok(()),
                    WebhookFailure::Deny => Err(Denial::WebhookUnavailable),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
