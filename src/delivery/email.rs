//! The email [`Mailer`]: renders the purpose's templates into a `multipart/alternative`
//! message ([`Composer`], which `templates render` uses too) and sends it over pooled SMTP ([`super::smtp`]; `smtp://` STARTTLS required,
//! `smtps://` implicit TLS, `?tls=none` plain for a loopback relay) or into `.eml` files.
//! Logs show only the masked address; never the link, token or SMTP password.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncFileTransport, AsyncTransport, Message, Tokio1Executor};
use url::Url;

use super::smtp::{self, Opening, Security, SendError, SmtpClient};
use super::{DeliveryError, MailRequest, Mailer};
use crate::config::{Email, EmailTransport};
use crate::templates::Templates;

mod compose;
mod skeleton;

pub use compose::{Composer, Stamp};

/// Sends verification mail with lettre. Built once at start; connects on first send.
pub struct EmailSender {
    transport: Transport,
    composer: Composer,
    send_timeout: Duration,
}

enum Transport {
    Smtp(SmtpClient),
    /// Into `.eml` files in this folder.
    File(AsyncFileTransport<Tokio1Executor>, std::path::PathBuf),
    #[cfg(test)]
    Stub(lettre::transport::stub::AsyncStubTransport),
}

impl EmailSender {
    /// Builds the configured transport without connecting, so start-up does not depend
    /// on the mail server (health stays independent of SMTP). For `file`, creates
    /// `file_dir` when missing.
    pub fn new(
        config: &Email,
        server_name: &str,
        templates: Arc<Templates>,
    ) -> Result<Self, DeliveryError> {
        let transport = match config.transport {
            EmailTransport::Smtp => Transport::Smtp(smtp_client(config)?),
            EmailTransport::File => {
                std::fs::create_dir_all(&config.file_dir).map_err(|e| {
                    DeliveryError::Build(format!(
                        "email.file_dir: cannot create {}: {e}",
                        config.file_dir.display()
                    ))
                })?;
                Transport::File(
                    AsyncFileTransport::new(&config.file_dir),
                    config.file_dir.clone(),
                )
            }
        };
        Self::with_transport(transport, config, server_name, templates)
    }

    /// For unit tests: a sender whose messages land in the returned stub transport.
    #[cfg(test)]
    pub(crate) fn with_stub(
        config: &Email,
        server_name: &str,
        templates: Arc<Templates>,
        stub: lettre::transport::stub::AsyncStubTransport,
    ) -> Result<Self, DeliveryError> {
        Self::with_transport(Transport::Stub(stub), config, server_name, templates)
    }

    fn with_transport(
        transport: Transport,
        config: &Email,
        server_name: &str,
        templates: Arc<Templates>,
    ) -> Result<Self, DeliveryError> {
        Ok(Self {
            transport,
            composer: Composer::new(config, server_name, templates)?,
            send_timeout: config.send_timeout,
        })
    }

    async fn deliver(&self, message: Message, to: &str) -> Result<(), DeliveryError> {
        let sent = async {
            match &self.transport {
                Transport::Smtp(client) => client
                    .send(message.envelope(), &message.formatted())
                    .await
                    .map_err(|e| send_error(e, to)),
                Transport::File(t, _) => t.send(message).await.map(drop).map_err(file_error),
                #[cfg(test)]
                Transport::Stub(t) => t
                    .send(message)
                    .await
                    .map_err(|e| DeliveryError::Refused(e.to_string())),
            }
        };
        tokio::time::timeout(self.send_timeout, sent)
            .await
            .unwrap_or(Err(DeliveryError::Timeout))
    }

    /// The SMTP server (`host:port`) and how the session is protected, when mail goes out
    /// over SMTP.
    pub fn smtp_server(&self) -> Option<(String, &'static str)> {
        match &self.transport {
            Transport::Smtp(client) => Some((client.server(), client.protection())),
            _ => None,
        }
    }

    /// Sends one mail now, for `send-test`: over an SMTP connection of its own (never
    /// pooled), whose opening `trace` follows, or into a file. Returns what the transport
    /// said: the SMTP server's final reply (the address in it masked), or the file written.
    pub async fn send_traced(
        &self,
        mail: MailRequest<'_>,
        trace: &mut Opening,
    ) -> Result<String, DeliveryError> {
        let message = self.composer.message(&mail, Stamp::Now)?;
        let sent = async {
            match &self.transport {
                Transport::Smtp(client) => client
                    .send_traced(trace, message.envelope(), &message.formatted())
                    .await
                    .map(|reply| reply.replace(mail.to, &mask_email(mail.to)))
                    .map_err(|e| send_error(e, mail.to)),
                Transport::File(t, dir) => t
                    .send(message)
                    .await
                    .map(|id| format!("written to {}", dir.join(format!("{id}.eml")).display()))
                    .map_err(file_error),
                #[cfg(test)]
                Transport::Stub(t) => t
                    .send(message)
                    .await
                    .map(|()| "stub".to_owned())
                    .map_err(|e| DeliveryError::Refused(e.to_string())),
            }
        };
        tokio::time::timeout(self.send_timeout, sent)
            .await
            .unwrap_or(Err(DeliveryError::Timeout))
    }
}

fn file_error(e: lettre::transport::file::Error) -> DeliveryError {
    DeliveryError::Unreachable(format!("cannot write the .eml file: {e}"))
}

impl Mailer for EmailSender {
    fn send<'a>(&'a self, mail: MailRequest<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let masked = mask_email(mail.to);
            let result = match self.composer.message(&mail, Stamp::Now) {
                Ok(message) => self.deliver(message, mail.to).await,
                Err(e) => Err(e),
            };
            match &result {
                Ok(()) => {
                    tracing::info!(to = %masked, kind = mail.content.label(), "mail sent")
                }
                Err(e) => {
                    tracing::warn!(to = %masked, kind = mail.content.label(), error = %e, "mail not sent")
                }
            }
            result
        })
    }
}

/// The pooled SMTP client `email.smtp_url` describes (and `doctor` probes with).
pub fn smtp_client(config: &Email) -> Result<SmtpClient, DeliveryError> {
    let bad = |reason: &str| DeliveryError::Build(format!("email.smtp_url: {reason}"));
    let url = Url::parse(&config.smtp_url).map_err(|e| bad(&e.to_string()))?;
    let host = url
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("has no host"))?
        .to_owned();
    let tls_param = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    let tls = || smtp::tls_connector().map_err(|e| bad(&e.to_string()));
    let (tls, default_port) = match (url.scheme(), tls_param.as_deref()) {
        ("smtp", None | Some("required")) => (Security::StartTls(tls()?), 587),
        ("smtp", Some("none")) => {
            if !is_loopback(&host) {
                tracing::warn!(host = %host, "email.smtp_url: plain SMTP (tls=none) to a host that is not loopback");
            }
            (Security::None, 25)
        }
        ("smtps", None) => (Security::Implicit(tls()?), 465),
        ("smtp" | "smtps", Some(other)) => {
            return Err(bad(&format!(
                "tls={other:?} is not supported (smtp:// takes tls=none)"
            )));
        }
        (scheme, _) => return Err(bad(&format!("scheme {scheme:?} is neither smtp nor smtps"))),
    };
    let credentials = match (&config.smtp_username, config.password()) {
        (Some(user), password) => Some(Credentials::new(
            user.clone(),
            password.unwrap_or_default().to_owned(),
        )),
        (None, Some(_)) => {
            return Err(DeliveryError::Build(
                "email.smtp_password needs email.smtp_username".into(),
            ));
        }
        (None, None) => None,
    };
    Ok(SmtpClient::new(
        host,
        url.port().unwrap_or(default_port),
        tls,
        credentials,
        config.send_timeout,
    ))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Sorts a failed send into ours. The server's reply may quote the recipient, so the
/// address is masked in the text that is kept.
fn send_error(e: SendError, to: &str) -> DeliveryError {
    let masked = |text: String| text.replace(to, &mask_email(to));
    match e {
        SendError::Refused {
            permanent: true,
            text,
            ..
        } => DeliveryError::Permanent(masked(text)),
        SendError::Refused { text, .. } => DeliveryError::Refused(masked(text)),
        SendError::Unsendable(text) => DeliveryError::Permanent(masked(text)),
        SendError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => DeliveryError::Timeout,
        SendError::Io(e) => DeliveryError::Unreachable(masked(e.to_string())),
        SendError::Protocol(text) => DeliveryError::Unreachable(masked(text)),
    }
}

/// `alice@example.org` → `a***@example.org`: enough to tell addresses apart in a log,
/// not enough to learn them. Anything without an `@` becomes `***`.
pub fn mask_email(addr: &str) -> String {
    match addr.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

#[cfg(test)]
mod tests;
