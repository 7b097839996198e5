//! A small pool of SMTP connections over lettre's protocol client, owned here for two
//! reasons lettre's pooled transport (0.11) cannot serve:
//!
//! - **TCP_NODELAY.** lettre writes a message's body and its closing `\r\n.\r\n` in two
//!   writes; without TCP_NODELAY, Nagle's algorithm holds the second until the server's
//!   delayed ACK, about 40 ms per message. Every socket here has it set.
//! - **Cancellation.** A send that is cancelled halfway (a timeout, a client that goes
//!   away) must not hand its connection back with a reply still unread: the next message
//!   on it would read that stale reply as its own. A connection returns to the pool only
//!   after a completed send; anything else drops (closes) it.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::Envelope;
use lettre::transport::smtp::Error as SmtpError;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 8;
/// An idle connection older than this is not reused (servers close idle sessions).
const MAX_IDLE_AGE: Duration = Duration::from_secs(30);

/// How the connection is protected.
#[derive(Clone)]
pub enum Security {
    /// Plain text (a relay on loopback).
    None,
    /// STARTTLS, required.
    StartTls(TlsParameters),
    /// TLS from the first byte (`smtps://`).
    Implicit(TlsConnector),
}

/// Why a send failed: the SMTP conversation, or reaching the server at all.
#[derive(Debug)]
pub enum SendError {
    Smtp(SmtpError),
    Connect(io::Error),
}

impl From<SmtpError> for SendError {
    fn from(e: SmtpError) -> Self {
        SendError::Smtp(e)
    }
}

impl From<io::Error> for SendError {
    fn from(e: io::Error) -> Self {
        SendError::Connect(e)
    }
}

/// Where and how to send.
pub struct SmtpClient {
    host: String,
    port: u16,
    security: Security,
    credentials: Option<Credentials>,
    connect_timeout: Duration,
    hello: ClientId,
    idle: Mutex<Vec<(AsyncSmtpConnection, Instant)>>,
}

impl fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpClient")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

/// A rustls connector for implicit TLS, verifying against the Web PKI roots.
pub fn implicit_tls() -> Result<TlsConnector, rustls::Error> {
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

    /// Sends one message. A pooled connection that turns out to be dead is replaced once.
    pub async fn send(&self, envelope: &Envelope, message: &[u8]) -> Result<(), SendError> {
        if let Some(mut conn) = self.take_idle() {
            match conn.send(envelope, message).await {
                Ok(_) => {
                    self.put_back(conn);
                    return Ok(());
                }
                // The server refused the message itself: a fresh connection would not help.
                Err(e) if e.is_permanent() || e.is_transient() => return Err(e.into()),
                // The idle connection died under us: try a new one.
                Err(_) => {}
            }
        }
        let mut conn = self.connect().await?;
        conn.send(envelope, message).await?;
        self.put_back(conn);
        Ok(())
    }

    fn take_idle(&self) -> Option<AsyncSmtpConnection> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some((conn, since)) = idle.pop() {
            if since.elapsed() < MAX_IDLE_AGE && !conn.has_broken() {
                return Some(conn);
            }
        }
        None
    }

    fn put_back(&self, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push((conn, Instant::now()));
        }
    }

    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        let tcp = tokio::time::timeout(
            self.connect_timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        tcp.set_nodelay(true)?;
        let stream: Box<dyn AsyncTokioStream> = match &self.security {
            Security::Implicit(connector) => {
                let name = ServerName::try_from(self.host.clone())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                Box::new(TlsTcp(connector.connect(name, tcp).await?))
            }
            _ => Box::new(tcp),
        };
        let mut conn = AsyncSmtpConnection::connect_with_transport(stream, &self.hello).await?;
        if let Security::StartTls(parameters) = &self.security {
            conn.starttls(parameters.clone(), &self.hello).await?;
        }
        if let Some(credentials) = &self.credentials {
            conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials)
                .await?;
        }
        Ok(conn)
    }
}

/// A TLS stream lettre can drive: [`AsyncTokioStream`] wants `peer_addr`.
struct TlsTcp(tokio_rustls::client::TlsStream<TcpStream>);

impl fmt::Debug for TlsTcp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsTcp")
    }
}

impl AsyncRead for TlsTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}
