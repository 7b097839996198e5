//! Sending tokens: email over SMTP or to files ([`email`]). The [`Mailer`] trait is the
//! I/O seam; handlers never see lettre.

pub mod email;
pub mod sms;
pub mod smtp;

use futures_util::future::BoxFuture;

use crate::session::Purpose;

/// One verification mail to send.
#[derive(Debug)]
pub struct MailRequest<'a> {
    /// The canonical address.
    pub to: &'a str,
    pub purpose: Purpose,
    /// The link the user follows (the GET submit_token page).
    pub link: &'a str,
    /// The token itself, for clients that ask the user to type it.
    pub token: &'a str,
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
