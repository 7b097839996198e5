//! Mail: the `From` mailbox, and the transport. SMTP is opened as a send opens it (greeting,
//! EHLO, STARTTLS or TLS with the certificate checked, AUTH with the configured credentials)
//! by the sidecar's own client, then closed with QUIT: no message is sent. The file transport's
//! folder must be writable.

use std::path::Path;

use lettre::message::Mailbox;

use super::{Check, is_loopback, timed};
use crate::config::{Config, EmailTransport};
use crate::delivery::email::smtp_client;
use crate::delivery::smtp::{Opening, SendError, Step};

const SMTP: &str = "email.smtp";

pub async fn checks(config: &Config) -> Vec<Check> {
    let email = &config.email;
    let mut checks = vec![from(&email.from, email.transport)];
    checks.push(match email.transport {
        EmailTransport::File => file_dir(&email.file_dir),
        EmailTransport::Smtp => smtp(config).await,
    });
    checks
}

/// `email.from` parses, and names a domain a relay would send from.
pub(super) fn from(from: &str, transport: EmailTransport) -> Check {
    const NAME: &str = "email.from";
    let mailbox = match from.parse::<Mailbox>() {
        Ok(mailbox) => mailbox,
        Err(e) => return Check::fail(NAME, format!("{from:?} is not a mailbox ({e})")),
    };
    let domain = mailbox.email.domain();
    let local_only = is_loopback(domain) || !domain.contains('.');
    if transport == EmailTransport::Smtp && local_only {
        Check::warn(
            NAME,
            format!(
                "{mailbox}: relays refuse or junk mail from {domain}; set email.from to an address of your mail domain"
            ),
        )
    } else {
        Check::ok(NAME, format!("{mailbox}"))
    }
}

/// The file transport's folder: writable, or creatable.
fn file_dir(dir: &Path) -> Check {
    const NAME: &str = "email.file";
    let said = format!(
        "mail is written as .eml files to {} (email.transport = \"file\"): nothing leaves this machine; for trying out",
        dir.display()
    );
    // The folder, or the nearest one above it that exists (the sidecar creates the rest).
    let existing = dir
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("."));
    let probe = existing.join(format!(".threepid-sidecar-doctor-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Check::ok(NAME, said)
        }
        Err(e) => Check::fail(
            NAME,
            format!(
                "cannot write to {} ({e}): make it writable by the sidecar's user, or set email.file_dir",
                existing.display()
            ),
        ),
    }
}

/// A session opened with the relay and closed again.
async fn smtp(config: &Config) -> Check {
    let email = &config.email;
    let client = match smtp_client(email) {
        Ok(client) => client,
        Err(e) => return Check::fail(SMTP, e.to_string()),
    };
    let server = client.server();
    let mut trace = Opening::default();
    let result = timed(client.probe(&mut trace)).await;
    let user = email.smtp_username.as_deref();
    match result {
        Some(Ok(())) => opened(&server, client.protection(), &trace, user),
        Some(Err(e)) => refused(&server, &trace, &e, user),
        None => Check::fail(
            SMTP,
            format!(
                "{server} did not get past {} within {} s: is it an SMTP server, and email.smtp_url right?",
                trace.step.as_str(),
                super::NETWORK_TIMEOUT.as_secs()
            ),
        ),
    }
}

/// What an opened session says: greeting, protection, authentication.
pub(super) fn opened(server: &str, protection: &str, trace: &Opening, user: Option<&str>) -> Check {
    let greeting = trace.greeting.as_deref().unwrap_or("no greeting");
    let tls = match &trace.tls {
        Some(version) => format!("{protection}, {version}, certificate valid"),
        None => "plain text".to_owned(),
    };
    let auth = match (&trace.auth, user) {
        (Some(mechanism), Some(user)) => format!("AUTH {mechanism} as {user} accepted"),
        _ => "no AUTH (no email.smtp_username)".to_owned(),
    };
    let said = format!("{server}: {greeting}; {tls}; {auth}; nothing sent");
    let host = server.rsplit_once(':').map_or(server, |(host, _)| host);
    if trace.tls.is_none() && !is_loopback(host) {
        Check::warn(
            SMTP,
            format!(
                "{said}: mail and password cross the network in plain text; use smtp:// (STARTTLS) or smtps://"
            ),
        )
    } else {
        Check::ok(SMTP, said)
    }
}

/// Why the session did not open, and what to do, by the step it failed at.
pub(super) fn refused(server: &str, trace: &Opening, e: &SendError, user: Option<&str>) -> Check {
    let message = match trace.step {
        Step::Connect => format!(
            "cannot connect to {server} ({e}): is the mail server running, and email.smtp_url right?"
        ),
        Step::Tls | Step::StartTls if e.to_string().contains("STARTTLS is not supported") => {
            format!(
                "{server} offers no STARTTLS: use smtps:// if it speaks TLS from the start (or ?tls=none, only for a relay on loopback)"
            )
        }
        Step::Tls | Step::StartTls => format!(
            "TLS with {server} failed ({e}): its certificate must be valid for its name and from a public CA"
        ),
        Step::Greeting | Step::Ehlo => format!(
            "{server} answered {} with {e}: is it an SMTP server that takes mail from this host?",
            trace.step.as_str()
        ),
        Step::Auth => format!(
            "{server} refused AUTH as {} ({e}): check email.smtp_username and email.smtp_password",
            user.unwrap_or("?")
        ),
        Step::Ready => format!("{server}: {e}"),
    };
    Check::fail(SMTP, message)
}
