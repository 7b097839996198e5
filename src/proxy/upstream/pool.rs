//! Connections to the homeserver: opened (plain TCP or TLS), kept idle between requests, and
//! each driven by the task of the request that uses it. hyper-util's pooled client gives every
//! connection a task of its own, so a request went to it through a channel and its answer
//! came back through a oneshot (two task wake-ups a request, plus a task spawned per request
//! to put the connection back); here the request's own task polls the connection, from
//! sending the head to the last byte of the answer's body, and then puts it back.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::matrix::Body;

/// One HTTP/1.1 connection to the homeserver: the handle a request is sent on, and the
/// connection's state machine, which reads and writes only while someone polls it. Boxed: it
/// moves from the pool to a request to its answer's body and back, and hyper's state is a
/// few hundred bytes.
pub(super) struct Conn(Box<ConnInner>);

struct ConnInner {
    sender: http1::SendRequest<Body>,
    driver: http1::Connection<TokioIo<Io>, Body>,
}

impl Conn {
    /// Lets the connection read and write what it can; `true` once it has ended (closed by the
    /// homeserver, or failed: the request or body it was carrying gets the error), after which
    /// it must not be polled again.
    pub(super) fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        Pin::new(&mut self.0.driver).poll(cx).is_ready()
    }

    /// Whether it has finished its last exchange and takes a new request. The connection
    /// asks for the next request only when polled after the last one's answer ended: drive it
    /// once more before asking.
    pub(super) fn is_idle(&self) -> bool {
        self.0.sender.is_ready()
    }

    /// Hands a request to the connection, which writes it when next driven; the future
    /// resolves to the answer's head, or to the request itself when the connection turned it
    /// away unsent.
    pub(super) fn send(
        &mut self,
        request: Request<Body>,
    ) -> impl Future<Output = Result<Response<Incoming>, TrySendError<Request<Body>>>> + use<> {
        self.0.sender.try_send_request(request)
    }
}

/// The transport under a connection.
pub(super) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// How connections to the homeserver are opened.
pub(super) struct Connector {
    host: String,
    port: u16,
    /// `https://`: the TLS client and the name the certificate must carry.
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// The most a connection's read buffer grows to (see `MAX_READ_BUF`).
    max_buf_size: usize,
}

/// Why no connection could be opened.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnectError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("HTTP/1.1 handshake: {0}")]
    Handshake(#[from] hyper::Error),
}

impl Connector {
    pub(super) fn new(
        host: &str,
        port: u16,
        https: bool,
        max_buf_size: usize,
    ) -> Result<Self, rustls::Error> {
        let tls = if https {
            let name = ServerName::try_from(host.to_owned())
                .map_err(|e| rustls::Error::General(format!("{host}: {e}")))?;
            Some((tls_connector()?, name))
        } else {
            None
        };
        Ok(Self {
            // A bracketed IPv6 literal from the URL is connected to without its brackets.
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port,
            tls,
            max_buf_size,
        })
    }

    /// Opens a connection (every address the host resolves to, in turn); the caller bounds
    /// the time it takes.
    pub(super) async fn connect(&self) -> Result<Conn, ConnectError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        let io = match &self.tls {
            None => Io::Plain(tcp),
            Some((connector, name)) => {
                Io::Tls(Box::new(connector.connect(name.clone(), tcp).await?))
            }
        };
        let (sender, driver) = http1::Builder::new()
            .max_buf_size(self.max_buf_size)
            .handshake(TokioIo::new(io))
            .await?;
        Ok(Conn(Box::new(ConnInner { sender, driver })))
    }
}

/// The rustls client for an `https://` homeserver: the Web PKI roots, HTTP/1.1 by ALPN.
fn tls_connector() -> Result<TlsConnector, rustls::Error> {
    let roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Idle connections, the most recently used first out (it is the likeliest to be warm and
/// still open). A connection waits here for at most `upstream.pool_idle_timeout`, and there
/// are at most `upstream.pool_max_idle` of them.
pub(super) struct Pool {
    idle: Mutex<Vec<Idle>>,
    max_idle: usize,
    idle_timeout: Duration,
    /// Whether the task that closes expired connections has been started.
    reaping: AtomicBool,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Pool {
    pub(super) fn new(max_idle: usize, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            idle: Mutex::new(Vec::new()),
            max_idle,
            idle_timeout,
            reaping: AtomicBool::new(false),
        })
    }

    /// An idle connection that is still open, if there is one.
    pub(super) fn take(&self) -> Option<Conn> {
        let now = Instant::now();
        loop {
            let mut conn = {
                let mut idle = self.lock();
                let entry = idle.pop()?;
                if now.duration_since(entry.since) >= self.idle_timeout {
                    // The newest has expired, so have all the others: closed outside the lock.
                    let expired = std::mem::take(&mut *idle);
                    drop(idle);
                    drop(expired);
                    return None;
                }
                entry.conn
            };
            // The homeserver may have closed it while it waited: a poll (nothing to wake)
            // reads the end of the stream if it has arrived.
            if !conn.drive(&mut Context::from_waker(Waker::noop())) && conn.is_idle() {
                return Some(conn);
            }
        }
    }

    /// Keeps a connection whose last exchange has ended for the next request.
    pub(super) fn put(self: &Arc<Self>, conn: Conn) {
        if self.max_idle == 0 {
            return;
        }
        {
            let mut idle = self.lock();
            if idle.len() >= self.max_idle {
                return;
            }
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
        if !self.reaping.swap(true, Ordering::Relaxed) {
            tokio::spawn(reap(Arc::downgrade(self), self.idle_timeout));
        }
    }

    /// How many connections are idle.
    #[cfg(test)]
    pub(super) fn idle_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic while holding the lock leaves only a list of connections behind.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Closes idle connections that have expired or that the homeserver has closed, every
/// `idle_timeout`, for as long as the pool exists.
async fn reap(pool: Weak<Pool>, idle_timeout: Duration) {
    let every = idle_timeout.max(Duration::from_secs(1));
    loop {
        tokio::time::sleep(every).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        let now = Instant::now();
        let mut cx = Context::from_waker(Waker::noop());
        pool.lock().retain_mut(|entry| {
            now.duration_since(entry.since) < pool.idle_timeout && !entry.conn.drive(&mut cx)
        });
    }
}
