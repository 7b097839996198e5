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
    #[error("the mail server refused the message: {0}")]
    Refused(String),
    #[error("could not reach the mail server: {0}")]
    Unreachable(String),
    #[error("sending timed out")]
    Timeout,
    #[error("could not build the message: {0}")]
    Build(String),
}

/// Sends verification mail.
pub trait Mailer: Send + Sync + 'static {
    fn send<'a>(&'a self, mail: MailRequest<'a>) -> BoxFuture<'a, Result<(), DeliveryError>>;
}
