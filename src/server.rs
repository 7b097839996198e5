//! The three listeners (client, identity, admin), TLS, and graceful shutdown: readiness
//! turns false first, the client and identity listeners stop accepting, in-flight
//! requests get `server.shutdown_grace` to finish, then the admin listener closes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::Request;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::AppState;
use crate::proxy::ConnInfo;
use crate::routes;

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
    let builder = Arc::new(connection_builder(&state));
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
                        let watcher = graceful.watcher();
                        let state = state.clone();
                        let builder = builder.clone();
                        let tls = tls.clone();
                        tokio::spawn(async move {
                            serve_connection(kind, stream, peer, tls, state, builder, watcher).await;
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

fn connection_builder(state: &AppState) -> auto::Builder<TokioExecutor> {
    let server = &state.config.server;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(server.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    builder
}

async fn serve_connection(
    kind: Listener,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    state: Arc<AppState>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: hyper_util::server::graceful::Watcher,
) {
    let _ = stream.set_nodelay(true);
    let conn = ConnInfo {
        peer,
        tls: tls.is_some(),
    };
    // hyper's header_read_timeout runs only once HTTP/1 has been recognised (the auto
    // builder's version sniff waits for bytes with no deadline) and HTTP/2 has none: the
    // first request head must arrive within header_read_timeout, or the connection is closed.
    let header_read_timeout = state.config.server.header_read_timeout;
    let first_request = Arc::new(tokio::sync::Notify::new());
    let notify = first_request.clone();
    let service = service_fn(move |request: Request<Incoming>| {
        notify.notify_one();
        let state = state.clone();
        async move {
            let request = request.map(BodyExt::boxed);
            let response = match kind {
                Listener::Client => routes::client(&state, &conn, request).await,
                Listener::Identity => routes::identity::handle(&state, &conn, request).await,
                Listener::Admin => routes::admin::handle(&state, request).await,
            };
            Ok::<_, Infallible>(response)
        }
    });
    let deadline = tokio::time::Instant::now() + header_read_timeout;
    let result = match tls {
        None => {
            let conn = watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
            first_request_within(deadline, &first_request, conn).await
        }
        Some(acceptor) => {
            let handshake =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await;
            match handshake {
                Ok(Ok(stream)) => {
                    let conn =
                        watcher.watch(builder.serve_connection(TokioIo::new(stream), service));
                    let deadline = tokio::time::Instant::now() + header_read_timeout;
                    first_request_within(deadline, &first_request, conn).await
                }
                Ok(Err(e)) => {
                    tracing::debug!(listener = kind.name(), error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(listener = kind.name(), "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(listener = kind.name(), error = %e, "connection ended with an error");
    }
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
