//! `threepid-sidecar send-test`: one real message through the configured transport, now (not
//! through the outbox), with each step printed: the server, how the session opened (TLS
//! version, AUTH), and the relay's final reply or the gateway's HTTP status. The message is
//! the real template of its purpose and language, with sample values; no session is made, so
//! its link leads to an "expired" page. The address is shown masked.

use std::io::Write;
use std::sync::Arc;

use super::sample;
use crate::config::{Config, EmailTransport, SmsTransport};
use crate::delivery::email::EmailSender;
use crate::delivery::sms::{SmsRequest, WebhookSms};
use crate::delivery::smtp::{Opening, Step};
use crate::delivery::{self, DeliveryError, MailContent, MailRequest};
use crate::i18n::Catalogues;
use crate::templates::Templates;
use crate::threepid::Purpose;
use crate::validate::{self, mask_address};

/// Where the test message goes.
#[derive(Debug, Clone)]
pub enum Target {
    Email(String),
    Msisdn(String),
}

/// `send-test` from the command line: steps on stdout; 0 when the transport took the
/// message, 1 when it did not (or the address is not one).
pub fn main(config: &Config, target: &Target, purpose: Purpose, language: Option<&str>) -> u8 {
    let mut out = std::io::stdout().lock();
    let sent = super::block_on(run(config, target, purpose, language, &mut out));
    let _ = out.flush();
    u8::from(!sent)
}

/// Sends and writes each step to `out`; whether the transport took the message.
pub async fn run(
    config: &Config,
    target: &Target,
    purpose: Purpose,
    language: Option<&str>,
    out: &mut impl Write,
) -> bool {
    let loaded = Catalogues::load(config.i18n.dir.as_deref(), &config.i18n.default_language)
        .map_err(|e| e.to_string())
        .and_then(|catalogues| {
            Templates::load(config.email.templates_dir.as_deref(), Arc::new(catalogues))
                .map_err(|e| e.to_string())
        });
    let templates = match loaded {
        Ok(templates) => Arc::new(templates),
        Err(e) => {
            let _ = writeln!(out, "not sent: {e}");
            return false;
        }
    };
    let language = templates.catalogues().resolve(language).to_owned();
    match target {
        Target::Email(address) => match validate::email(address) {
            Ok(address) => email(config, templates, &address, purpose, &language, out).await,
            Err(e) => {
                let _ = writeln!(out, "not sent: --email: {}", e.error);
                false
            }
        },
        Target::Msisdn(number) => match validate::international(number) {
            Ok(number) => sms(config, templates, &number.msisdn, &language, out).await,
            Err(e) => {
                let _ = writeln!(out, "not sent: --msisdn: {}", e.error);
                false
            }
        },
    }
}

async fn email(
    config: &Config,
    templates: Arc<Templates>,
    address: &str,
    purpose: Purpose,
    language: &str,
    out: &mut impl Write,
) -> bool {
    let email = &config.email;
    let _ = writeln!(
        out,
        "send-test: the {} mail in {language} to {}",
        purpose.as_str(),
        mask_address(address)
    );
    let sender = match EmailSender::new(email, &config.server.server_name, templates) {
        Ok(sender) => sender,
        Err(e) => {
            let _ = writeln!(out, "not sent: {e}");
            return false;
        }
    };
    match sender.smtp_server() {
        Some((server, protection)) => {
            let _ = writeln!(out, "  server    {server} ({protection})");
        }
        None => {
            let _ = writeln!(
                out,
                "  transport email.transport = \"file\": into {}, nothing leaves this machine",
                email.file_dir.display()
            );
        }
    }
    let link = delivery::email_link(
        &config.server.public_baseurl,
        sample::SID,
        sample::CLIENT_SECRET,
        sample::EMAIL_TOKEN,
    );
    let mail = MailRequest {
        to: address,
        language,
        content: MailContent::Verification {
            purpose,
            link: &link,
            token: sample::EMAIL_TOKEN,
        },
    };
    let mut trace = Opening::default();
    let sent = sender.send_traced(mail, &mut trace).await;
    if email.transport == EmailTransport::Smtp {
        write_opening(out, &trace, sent.as_ref().err());
    }
    match sent {
        Ok(reply) => {
            let _ = writeln!(out, "  reply     {reply}");
            let _ = writeln!(
                out,
                "sent: the mail was handed over; if it does not arrive, the relay's log knows why (its link leads to an \"expired\" page: no session was made)"
            );
            true
        }
        Err(e) => {
            let smtp = email.transport == EmailTransport::Smtp;
            write_failure(out, smtp.then_some(&trace), &e);
            false
        }
    }
}

/// How the SMTP session went, step by step, up to where it failed.
fn write_opening(out: &mut impl Write, trace: &Opening, failed: Option<&DeliveryError>) {
    if let Some(greeting) = &trace.greeting {
        let _ = writeln!(out, "  greeting  {greeting}");
    }
    if trace.step > Step::StartTls || trace.tls.is_some() {
        let tls = trace.tls.as_deref().unwrap_or("none: plain text");
        let _ = writeln!(out, "  TLS       {tls}");
    }
    if trace.step > Step::Auth {
        let auth = trace.auth.as_deref().map_or_else(
            || "none (no email.smtp_username)".to_owned(),
            |mechanism| format!("{mechanism}, accepted"),
        );
        let _ = writeln!(out, "  AUTH      {auth}");
    }
    if let Some(e) = failed
        && trace.step != Step::Ready
    {
        let _ = writeln!(out, "  failed at {}: {e}", trace.step.as_str());
    }
}

/// The last line of a send that failed: where it failed was said already, if it was while
/// opening the session.
fn write_failure(out: &mut impl Write, trace: Option<&Opening>, e: &DeliveryError) {
    match trace {
        Some(trace) if trace.step != Step::Ready => {
            let _ = writeln!(out, "not sent: threepid-sidecar doctor says what to do");
        }
        _ => {
            let _ = writeln!(out, "not sent: {e}");
        }
    }
}

async fn sms(
    config: &Config,
    templates: Arc<Templates>,
    msisdn: &str,
    language: &str,
    out: &mut impl Write,
) -> bool {
    let _ = writeln!(
        out,
        "send-test: the SMS in {language} to {}",
        mask_address(msisdn)
    );
    let request = SmsRequest {
        msisdn,
        token: sample::SMS_CODE,
        language,
    };
    let (SmsTransport::Webhook, Some(url)) = (config.sms.transport, &config.sms.webhook_url) else {
        let _ = writeln!(
            out,
            "not sent: sms.transport = \"log\" sends no SMS; set sms.transport = \"webhook\" and sms.webhook_url"
        );
        return false;
    };
    let _ = writeln!(
        out,
        "  gateway   {}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    );
    let sender = match WebhookSms::new(&config.sms, &config.email.app_name, templates) {
        Ok(sender) => sender,
        Err(e) => {
            let _ = writeln!(out, "not sent: {e}");
            return false;
        }
    };
    match sender.send_traced(request).await {
        Ok(status) => {
            let _ = writeln!(out, "  status    {status}");
            let _ = writeln!(out, "sent: the gateway took the SMS");
            true
        }
        Err(e) => {
            let _ = writeln!(out, "not sent: {e}");
            false
        }
    }
}
