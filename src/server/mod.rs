//! The three listeners (client, identity, admin), TLS, and graceful shutdown: readiness
//! turns false first, the client and identity listeners stop accepting, in-flight
//! requests get `server.shutdown_grace` to finish, then the admin listener closes.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::Request;
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::AppState;
use crate::matrix::Body;
use crate::proxy::{self, ConnInfo};
use crate::routes;

mod cap;
mod h2;
mod idle;
mod sniff;
mod tracked;

use sniff::{Prefixed, Sniffed};

/// Which listener a connection arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Client,
    Identity,
    Admin,
}

impl Listener {
    fn name(self) -> &'static str {
        match self {
            Listener::Client => "client",
            Listener::Identity => "identity",
            Listener::Admin => "admin",
        }
    }
}

/// A bound listener, ready to be served.
pub struct Bound {
    pub kind: Listener,
    pub listener: TcpListener,
    pub tls: Option<TlsAcceptor>,
}

impl Bound {
    pub async fn bind(
        kind: Listener,
        addr: SocketAddr,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self {
            kind,
            listener,
            tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }
}

/// Serves one listener until `stop` turns true, then drains its connections for at most
/// `grace`.
pub fn spawn_listener(
    bound: Bound,
    state: Arc<AppState>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> JoinHandle<()> {
    let builders = Arc::new(Builders::new(&state, bound.kind, stop.clone()));
    tokio::spawn(async move {
        let Bound {
            kind,
            listener,
            tls,
        } = bound;
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        if !builders.cap.admit() {
                            tracing::debug!(listener = kind.name(), "server.max_connections reached; connection refused");
                            builders.cap.refuse(stream, tls.is_some());
                            continue;
                        }
                        let slot = Slot(builders.clone());
                        let watcher = graceful.watcher();
                        let state = state.clone();
                        let tls = tls.clone();
                        tokio::spawn(async move {
                            serve_connection(kind, stream, peer, tls, state, slot, watcher).await;
                        });
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(listener = kind.name(), error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        drop(listener);
        tracing::info!(
            listener = kind.name(),
            open = graceful.count(),
            "stopped accepting; draining"
        );
        if tokio::time::timeout(grace, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                listener = kind.name(),
                "drain deadline passed; closing what is left"
            );
        }
    })
}

/// The HTTP/1.1 and HTTP/2 connection settings of a listener, and what its HTTP/2
/// connections need to end themselves.
///
/// The two protocols are served by their own builders rather than hyper-util's `auto`
/// builder: its version sniff reads the first bytes itself and hands them back through a
/// rewind buffer, which makes hyper's first read a short one and doubles the connection's
/// read buffer to 16 KiB for its whole life. Peeking leaves the socket as it was.
struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    /// The listener's stop signal (HTTP/1.1 connections get theirs from the watcher).
    stop: watch::Receiver<bool>,
    header_read_timeout: Duration,
    http2_idle_timeout: Duration,
    /// `server.max_connections` for this listener.
    cap: cap::Cap,
    /// The idle plain HTTP/1.1 connections that keep hyper's state (see [`idle`]).
    warm: idle::Warm,
}

/// A connection's place under its listener's cap, given back when dropped; it also hands the
/// connection its listener's settings.
struct Slot(Arc<Builders>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.cap.release();
    }
}

impl std::ops::Deref for Slot {
    type Target = Builders;

    fn deref(&self) -> &Builders {
        &self.0
    }
}

impl Builders {
    fn new(state: &AppState, kind: Listener, stop: watch::Receiver<bool>) -> Self {
        let server = &state.config.server;
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(server.header_read_timeout)
            .max_header_size(server.max_header_bytes)
            .max_buf_size(proxy::MAX_READ_BUF);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX))
            .max_concurrent_streams(256)
            .keep_alive_interval(server.http2_keep_alive_interval)
            .keep_alive_timeout(server.http2_keep_alive_timeout);
        Self {
            http1,
            http2,
            stop,
            header_read_timeout: server.header_read_timeout,
            http2_idle_timeout: server.http2_idle_timeout,
            cap: {
                let (open, refused) = state.metrics.connections(kind.name());
                cap::Cap::new(server.max_connections, open, refused)
            },
            warm: idle::Warm::default(),
        }
    }
}

type ConnResult = Result<(), hyper::Error>;

async fn serve_connection(
    kind: Listener,
    mut stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    state: Arc<AppState>,
    builders: Slot,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = stream.set_nodelay(true);
    let conn = ConnInfo {
        peer,
        tls: tls.is_some(),
    };
    // hyper's header_read_timeout covers HTTP/1 request heads once a connection is being
    // served; the protocol sniff, the TLS handshake and HTTP/2 have none of their own: the
    // first request head must arrive within header_read_timeout, or the connection is closed
    // (HTTP/2: by h2::serve, which also closes it once idle).
    let deadline = tokio::time::Instant::now() + state.config.server.header_read_timeout;
    let handle = move |request: Request<Incoming>| {
        let state = state.clone();
        async move {
            let request = request.map(crate::matrix::streamed);
            let response = match kind {
                Listener::Client => routes::client(&state, &conn, request).await,
                // Boxed, like the client routes' handlers: see routes::client.
                Listener::Identity => {
                    Box::pin(routes::identity::handle(&state, &conn, request)).await
                }
                Listener::Admin => Box::pin(routes::admin::handle(&state, &conn, request)).await,
            };
            Ok::<_, Infallible>(response)
        }
    };
    // The paths other than plain HTTP/1.1 learn of the first request head through this.
    let first_request = Arc::new(tokio::sync::Notify::new());
    // This future lives as long as the connection: what it holds inline is paid by every
    // idle keep-alive connection, so only plain HTTP/1.1 (nearly all of a sidecar's traffic)
    // is inline, and it keeps hyper's connection boxed and only while it is not idle (see
    // [`idle`]); HTTP/2 and TLS are boxed.
    let result: ConnResult = match tls {
        None => match tokio::time::timeout_at(deadline, sniff::sniff(&mut stream)).await {
            Ok(Ok(Some(Sniffed::Http1))) => {
                let settings = idle::Settings {
                    http1: &builders.http1,
                    warm: &builders.warm,
                    header_read_timeout: builders.header_read_timeout,
                };
                let result =
                    idle::serve(stream, handle, settings, deadline, builders.stop.clone()).await;
                // Counted by the listener's drain until here.
                drop(watcher);
                result
            }
            // Rare (see sniff): boxed, like HTTP/2, to keep the common case small.
            Ok(Ok(Some(Sniffed::Http1Read(prefix)))) => {
                let io = TokioIo::new(Prefixed::new(prefix, stream));
                let conn = builders
                    .http1
                    .serve_connection(io, service_fn(noting(&first_request, handle)));
                Box::pin(first_request_within(
                    deadline,
                    &first_request,
                    watcher.watch(conn),
                ))
                .await
            }
            Ok(Ok(Some(Sniffed::Http2(prefix)))) => {
                let io = TokioIo::new(Prefixed::new(prefix, stream));
                Box::pin(serve_http2(
                    io,
                    noting(&first_request, handle),
                    &builders,
                    deadline,
                    watcher,
                ))
                .await
            }
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::debug!(listener = kind.name(), error = %e, "connection failed");
                return;
            }
            Err(_) => {
                tracing::debug!(
                    listener = kind.name(),
                    "no request within header_read_timeout; closing"
                );
                return;
            }
        },
        Some(acceptor) => {
            Box::pin(async {
                let stream = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await
                {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(listener = kind.name(), error = %e, "TLS handshake failed");
                        return Ok(());
                    }
                    Err(_) => {
                        tracing::debug!(listener = kind.name(), "TLS handshake timed out");
                        return Ok(());
                    }
                };
                // HTTP/2 over TLS is chosen by ALPN (RFC 9113 §3.2); without it, HTTP/1.1.
                if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                    serve_http2(
                        TokioIo::new(stream),
                        noting(&first_request, handle),
                        &builders,
                        deadline,
                        watcher,
                    )
                    .await
                } else {
                    let conn = builders.http1.serve_connection(
                        TokioIo::new(stream),
                        service_fn(noting(&first_request, handle)),
                    );
                    first_request_within(deadline, &first_request, watcher.watch(conn)).await
                }
            })
            .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(listener = kind.name(), error = %e, "connection ended with an error");
    }
}

/// `handle`, telling `first_request` of each request head (for [`first_request_within`] and
/// HTTP/2's first deadline).
fn noting<H, F>(
    first_request: &Arc<tokio::sync::Notify>,
    handle: H,
) -> impl Fn(Request<Incoming>) -> F + Send + Sync + 'static
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
{
    let notify = first_request.clone();
    move |request| {
        notify.notify_one();
        handle(request)
    }
}

/// Serves HTTP/2 on `io` with `handle` answering each request; the connection closes once
/// idle (see [`h2`]) or when the listener stops.
async fn serve_http2<I, H, F>(
    io: I,
    handle: H,
    builders: &Builders,
    first_deadline: tokio::time::Instant,
    watcher: hyper_util::server::graceful::Watcher,
) -> ConnResult
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<hyper::Response<Body>, Infallible>> + Send + 'static,
{
    let streams = h2::Streams::new();
    let tracked = streams.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        let open = tracked.open();
        let response = handle(request);
        async move {
            let Ok(response) = response.await;
            Ok::<_, Infallible>(response.map(|body| tracked::Tracked::new(body, open)))
        }
    });
    let conn = builders.http2.serve_connection(io, service);
    let lifetime = h2::Lifetime {
        first_deadline,
        idle: builders.http2_idle_timeout,
        closing: builders.header_read_timeout,
    };
    let result = h2::serve(
        conn,
        |conn| conn.graceful_shutdown(),
        &streams,
        builders.stop.clone(),
        lifetime,
    )
    .await;
    // Counted by the listener's drain until here.
    drop(watcher);
    result
}

/// Serves a connection, closing it (by dropping it) if no request head has arrived by
/// `deadline`.
async fn first_request_within<F, E>(
    deadline: tokio::time::Instant,
    first_request: &tokio::sync::Notify,
    conn: F,
) -> Result<(), E>
where
    F: std::future::Future<Output = Result<(), E>>,
{
    tokio::pin!(conn);
    tokio::select! {
        result = &mut conn => result,
        () = first_request.notified() => conn.await,
        () = tokio::time::sleep_until(deadline) => {
            tracing::debug!("no request head within header_read_timeout; closing");
            Ok(())
        }
    }
}

/// Waits for SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler works on unix at start-up");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
