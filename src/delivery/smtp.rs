//! A small pool of SMTP connections, and the client conversation over them ([`conn`]),
//! owned here rather than lettre's pooled transport (0.11) for three reasons:
//!
//! - **TCP_NODELAY.** lettre writes a message's body and its closing `\r\n.\r\n` in two
//!   writes; without TCP_NODELAY, Nagle's algorithm held the second until the server's
//!   delayed ACK, about 40 ms per message. [`conn`] writes them together, and every socket
//!   here has TCP_NODELAY set all the same.
//! - **Cancellation.** A send that is cancelled halfway (a timeout, a client that goes
//!   away) must not hand its connection back with a reply still unread: the next message
//!   on it would read that stale reply as its own. A connection returns to the pool only
//!   after a completed send; anything else drops (closes) it.
//! - **Round trips.** lettre's connection waits for the reply to every command; with a
//!   server that offers PIPELINING, [`conn`] sends a message in two round trips, not four.
//!
//! For the operator's tools, [`SmtpClient::probe`] opens a session as a send would and sends
//! nothing, and [`SmtpClient::send_traced`] sends one message on a connection of its own; an
//! [`Opening`] says how far each got and what the server said.

mod conn;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::extension::ClientId;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use conn::Connection;

/// Idle connections kept for reuse: more than the outbox's senders use at once
/// (`outbox.concurrency`, 32 by default), so that a busy outbox does not close and reopen
/// connections; only as many as were ever busy at once exist.
const MAX_IDLE: usize = 64;
/// An idle connection older than this is not reused (servers close idle sessions).
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);

/// How the connection is protected.
#[derive(Clone)]
pub enum Security {
    /// Plain text (a relay on loopback).
    None,
    /// STARTTLS, required.
    StartTls(TlsConnector),
    /// TLS from the first byte (`smtps://`).
    Implicit(TlsConnector),
}

/// The steps of opening a session, in order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// The TCP connection.
    #[default]
    Connect,
    /// The TLS handshake of `smtps://`.
    Tls,
    /// The server's `220`.
    Greeting,
    Ehlo,
    /// STARTTLS and its TLS handshake.
    StartTls,
    Auth,
    /// The session is open.
    Ready,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::Tls => "TLS",
            Step::Greeting => "greeting",
            Step::Ehlo => "EHLO",
            Step::StartTls => "STARTTLS",
            Step::Auth => "AUTH",
            Step::Ready => "ready",
        }
    }
}

/// How far opening a session got and what the server said on the way, for `doctor` and
/// `send-test`: the step in hand when it failed, the greeting, the TLS version agreed, the
/// AUTH mechanism used. Holds nothing secret.
#[derive(Debug, Clone, Default)]
pub struct Opening {
    pub step: Step,
    /// The greeting's first line (`220 mail.example.org ESMTP`).
    pub greeting: Option<String>,
    /// `TLS 1.3`, when the session is protected.
    pub tls: Option<String>,
    /// `PLAIN` or `LOGIN`, when the session authenticated.
    pub auth: Option<String>,
}

/// Why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The server refused (a 4xx or 5xx reply).
    #[error("{text}")]
    Refused {
        code: u16,
        /// 5xx: the same message would be refused again.
        permanent: bool,
        text: String,
    },
    /// The server answered something this client cannot go on with.
    #[error("{0}")]
    Protocol(String),
    /// The server cannot carry this message (an extension it needs is not offered).
    #[error("{0}")]
    Unsendable(String),
    /// Connecting, TLS, reading or writing.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Where and how to send.
pub struct SmtpClient {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    connect_timeout: Duration,
    hello: ClientId,
    idle: Mutex<Vec<(Connection, Instant)>>,
}

impl fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpClient")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// A refusal while opening the session (greeting, EHLO, STARTTLS, AUTH) is about the server
/// or our credentials, never about the message: worth trying again later.
fn not_for_good(e: SendError) -> SendError {
    match e {
        SendError::Refused { code, text, .. } => SendError::Refused {
            code,
            permanent: false,
            text,
        },
        other => other,
    }
}

/// A rustls connector for STARTTLS and implicit TLS, verifying against the Web PKI roots.
pub fn tls_connector() -> Result<TlsConnector, rustls::Error> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

impl SmtpClient {
    pub fn new(
        host: String,
        port: u16,
        security: Security,
        credentials: Option<Credentials>,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            host,
            port,
            security,
            credentials,
            connect_timeout,
            hello: ClientId::default(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// `host:port`, for messages.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// How the session is protected, in words: `STARTTLS`, `TLS` or `plain text`.
    pub fn protection(&self) -> &'static str {
        match self.security {
            Security::None => "plain text",
            Security::StartTls(_) => "STARTTLS",
            Security::Implicit(_) => "TLS",
        }
    }

    /// Opens a session as a send would (greeting, EHLO, STARTTLS or TLS with the
    /// certificate checked, AUTH with the credentials), then says QUIT: nothing is sent.
    /// `trace` says how far it got.
    pub async fn probe(&self, trace: &mut Opening) -> Result<(), SendError> {
        let conn = self.connect_traced(trace).await?;
        conn.quit().await;
        Ok(())
    }

    /// Sends one message on a connection of its own, never pooled, and returns the server's
    /// reply to it (`250 2.0.0 Ok: queued as …`); `trace` says how opening the session went.
    pub async fn send_traced(
        &self,
        trace: &mut Opening,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<String, SendError> {
        let mut conn = self.connect_traced(trace).await.map_err(not_for_good)?;
        let reply = conn.send(envelope, message).await.map_err(|f| f.error)?;
        conn.quit().await;
        Ok(reply)
    }

    /// Sends one message. A pooled connection that turns out to have died while idle is
    /// replaced once, when nothing of the message can have been taken yet.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendError> {
        if let Some(mut conn) = self.take_idle() {
            match conn.send(envelope, message).await {
                Ok(_) => {
                    self.put_back(conn);
                    return Ok(());
                }
                Err(failed) if failed.stale => {}
                Err(failed) => return Err(failed.error),
            }
        }
        let mut conn = self.connect().await.map_err(not_for_good)?;
        conn.send(envelope, message).await.map_err(|f| f.error)?;
        self.put_back(conn);
        Ok(())
    }

    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < MAX_IDLE_AGE {
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // The oldest are first: close those past their age.
        let expired = idle
            .iter()
            .take_while(|(_, since)| since.elapsed() >= MAX_IDLE_AGE)
            .count();
        idle.drain(..expired);
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<Connection, SendError> {
        self.connect_traced(&mut Opening::default()).await
    }

    async fn connect_traced(&self, trace: &mut Opening) -> Result<Connection, SendError> {
        trace.step = Step::Connect;
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        tcp.set_nodelay(true)?;
        Connection::open(
            tcp,
            &self.host,
            &self.security,
            &self.hello,
            self.credentials.as_ref(),
            trace,
        )
        .await
    }
}
