//! Sending tokens: email over SMTP or to files ([`email`]). The [`Mailer`] trait is the
//! I/O seam; handlers never see lettre.

pub mod email;
pub mod sms;
pub mod smtp;

use futures_util::future::BoxFuture;

use crate::threepid::{Medium, Notice, Purpose};

/// One mail to send: a verification or a security notice.
#[derive(Debug)]
pub struct MailRequest<'a> {
    /// The canonical address.
    pub to: &'a str,
    /// The language to write it in (a catalogue's tag; an unknown one is the default).
    pub language: &'a str,
    pub content: MailContent<'a>,
}

/// What a mail says.
#[derive(Debug)]
pub enum MailContent<'a> {
    /// A verification: the link (and the token) for `purpose`.
    Verification {
        purpose: Purpose,
        /// The link the user follows (the GET submit_token page).
        link: &'a str,
        /// The token itself, for clients that ask the user to type it.
        token: &'a str,
    },
    /// A security notice.
    Notice {
        notice: Notice,
        /// When it happened, written out.
        time: &'a str,
        /// The client's address, partly hidden.
        client_ip: &'a str,
    },
}

impl MailContent<'_> {
    /// For log lines and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            MailContent::Verification { purpose, .. } => purpose.as_str(),
            MailContent::Notice { notice, .. } => notice.as_str(),
        }
    }
}

/// Why a message was not sent. The client gets 500 `M_UNKNOWN` "could not send".
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Refused for now (a 4xx, or a refusal before the message was offered): a later
    /// attempt may succeed.
    #[error("the mail server refused the message: {0}")]
    Refused(String),
    /// Refused for good: this very message to this recipient would be refused again (an SMTP
    /// 5xx to its envelope or content, a server that cannot carry it, an SMS gateway's 4xx
    /// about the request). The outbox dead-letters it at once.
    #[error("refused for good: {0}")]
    Permanent(String),
    #[error("could not reach the mail server: {0}")]
    Unreachable(String),
    #[error("sending timed out")]
    Timeout,
    #[error("could not build the message: {0}")]
    Build(String),
}

impl DeliveryError {
    /// Whether trying the same message again is pointless.
    pub fn is_permanent(&self) -> bool {
        matches!(self, DeliveryError::Permanent(_))
    }
}

/// Sends verification mail.
pub trait Mailer: Send + Sync + 'static {
    fn send<'a>(&'a self, mail: MailRequest<'a>) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// The link in verification mail, relative to `server.public_baseurl`.
pub const EMAIL_SUBMIT_PATH: &str = "_matrix/client/unstable/threepid/email/submit_token";
/// The `submit_url` of SMS sessions, relative to `server.public_baseurl`.
pub const MSISDN_SUBMIT_PATH: &str = "_matrix/client/unstable/threepid/msisdn/submit_token";

/// The link mailed to the user: the confirmation page, with everything it needs.
pub fn email_link(
    public_baseurl: &url::Url,
    sid: &str,
    client_secret: &str,
    token: &str,
) -> String {
    let mut link = public_baseurl
        .join(EMAIL_SUBMIT_PATH)
        .expect("a fixed relative path joins onto a base URL");
    link.query_pairs_mut()
        .append_pair("token", token)
        .append_pair("client_secret", client_secret)
        .append_pair("sid", sid);
    link.to_string()
}

/// Where SMS codes are submitted: `public_baseurl` + the msisdn submit path.
pub fn submit_url(public_baseurl: &url::Url) -> String {
    public_baseurl
        .join(MSISDN_SUBMIT_PATH)
        .expect("a fixed relative path joins onto a base URL")
        .to_string()
}

/// One token to send, by whoever sends it: the request itself (memory store) or an outbox
/// sender (Redis).
pub struct Outgoing<'a> {
    pub medium: Medium,
    /// Canonical.
    pub address: &'a str,
    pub purpose: Purpose,
    pub sid: &'a str,
    /// Email only: the link carries it.
    pub client_secret: &'a str,
    pub token: &'a str,
    /// The language to write it in.
    pub language: &'a str,
}

/// Sends one token: a mail with the link (and the token), or an SMS with the code. Links
/// start at `public_baseurl`.
pub async fn deliver(
    mailer: &dyn Mailer,
    sms: &dyn sms::SmsSender,
    public_baseurl: &url::Url,
    message: &Outgoing<'_>,
) -> Result<(), DeliveryError> {
    match message.medium {
        Medium::Email => {
            let link = email_link(
                public_baseurl,
                message.sid,
                message.client_secret,
                message.token,
            );
            let mail = MailRequest {
                to: message.address,
                language: message.language,
                content: MailContent::Verification {
                    purpose: message.purpose,
                    link: &link,
                    token: message.token,
                },
            };
            mailer.send(mail).await
        }
        Medium::Msisdn => {
            let text = sms::SmsRequest {
                msisdn: message.address,
                token: message.token,
                language: message.language,
            };
            sms.send(text).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_carries_sid_secret_and_token() {
        let base = url::Url::parse("https://matrix.example.org/").unwrap();
        let link = email_link(&base, "S1", "c.s=1", "TOK");
        assert_eq!(
            link,
            "https://matrix.example.org/_matrix/client/unstable/threepid/email/submit_token?token=TOK&client_secret=c.s%3D1&sid=S1"
        );
    }

    #[test]
    fn the_submit_url_follows_public_baseurl() {
        let base = url::Url::parse("https://m.example.org/prefix/").unwrap();
        assert_eq!(
            submit_url(&base),
            "https://m.example.org/prefix/_matrix/client/unstable/threepid/msisdn/submit_token"
        );
    }
}
