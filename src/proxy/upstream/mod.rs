//! The upstream client: requests to the homeserver over a keep-alive pool of HTTP/1.1
//! connections (`pool`), bounded by `upstream.max_connections` and the response timeout,
//! with request bodies that may not stall (`server.body_idle_timeout`) and answer bodies that
//! stream (`body`).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Request, Response, StatusCode, Uri};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::compat::PathCompat;
use crate::config;
use crate::matrix::{Body, BodyError, MatrixError};
use crate::metrics::{Metrics, UpstreamErrorKind};

mod body;
mod pool;
#[cfg(test)]
mod tests;

use body::{Answer, forwarded};
use pool::{Conn, Connector, Pool};

/// Why a forwarded request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the homeserver is unreachable")]
    Connect,
    #[error("the homeserver did not answer in time")]
    Timeout,
    #[error("the homeserver connection failed: {0}")]
    Protocol(String),
    /// The client's fault, not the homeserver's: its request body stopped arriving
    /// (`server.body_idle_timeout`), and the request was abandoned.
    #[error("No part of the request body arrived for {} s.", .0.as_secs_f64())]
    BodyStalled(Duration),
    /// `upstream.max_connections` requests to the homeserver are in progress.
    #[error("Too many requests to the homeserver are in progress; try again shortly.")]
    Busy,
}

impl UpstreamError {
    /// What the upstream error metric counts it as; `None` for the client's own fault.
    pub fn kind(&self) -> Option<UpstreamErrorKind> {
        match self {
            UpstreamError::Connect => Some(UpstreamErrorKind::Connect),
            UpstreamError::Timeout => Some(UpstreamErrorKind::Timeout),
            UpstreamError::Protocol(_) => Some(UpstreamErrorKind::Protocol),
            UpstreamError::BodyStalled(_) | UpstreamError::Busy => None,
        }
    }

    /// 502 for an unreachable or broken upstream, 504 for a slow one, 503 at the cap, 408
    /// for a client whose body stopped.
    pub fn into_matrix(self) -> MatrixError {
        let status = match self {
            UpstreamError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            UpstreamError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            UpstreamError::BodyStalled(_) => StatusCode::REQUEST_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        };
        MatrixError::new(status, "M_UNKNOWN", self.to_string())
    }
}

/// The homeserver: a keep-alive pool of HTTP/1.1 connections (https via rustls).
pub struct Upstream {
    connector: Connector,
    pool: Arc<Pool>,
    /// `Host` for a request that has none of its own (the sidecar's own requests).
    host: HeaderValue,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// `server.body_idle_timeout`: the longest a forwarded request body may pause.
    body_idle_timeout: Duration,
    /// `upstream.max_connections`, and the gauge that counts requests against it.
    max_in_progress: i64,
    in_progress: Gauge,
    refused: Counter,
    /// v3→r0 mapping for r0-only homeservers.
    pub compat: PathCompat,
}

/// The most an HTTP/1.1 connection reads at once, client side and upstream side: a body
/// streams through in pieces of up to this size, and a connection's read buffer grows to it
/// at most (hyper's default, about 400 KB, would let every pooled upstream connection that
/// once carried a download keep that much; an idle connection keeps 8 KiB).
pub const MAX_READ_BUF: usize = 64 * 1024;

impl Upstream {
    pub fn new(
        config: &config::Upstream,
        body_idle_timeout: Duration,
        metrics: &Metrics,
    ) -> Result<Self, rustls::Error> {
        let (in_progress, refused) = metrics.upstream_requests();
        let url = &config.url;
        let https = url.scheme() == "https";
        let host = url.host_str().expect("config validation requires a host");
        let port = url
            .port_or_known_default()
            .expect("config validation requires http or https");
        // As a client library writes it: the port only when it is not the scheme's own.
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Ok(Self {
            connector: Connector::new(host, port, https, MAX_READ_BUF)?,
            pool: Pool::new(config.pool_max_idle, config.pool_idle_timeout),
            host: HeaderValue::try_from(authority)
                .expect("a host and port from a parsed URL are valid header text"),
            connect_timeout: config.connect_timeout,
            response_timeout: config.response_timeout,
            body_idle_timeout,
            max_in_progress: i64::try_from(config.max_connections).unwrap_or(i64::MAX),
            in_progress,
            refused,
            compat: PathCompat::new(config.path_compat),
        })
    }

    /// The request target sent upstream for a client request's path and query, in origin
    /// form (`/path?query`: the connection is to the homeserver itself), v3 mapped to r0
    /// when the path compatibility is on.
    pub fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Uri {
        let Some(original) = path_and_query else {
            return Uri::from_static("/");
        };
        match self.compat.rewrite(original.as_str()) {
            Some(mapped) => Uri::try_from(mapped)
                .expect("a valid path with its prefix replaced is a valid path"),
            None => Uri::from(original.clone()),
        }
    }

    /// Sends a prepared request (its target in origin form, see [`Upstream::uri_for`]) and
    /// waits for the response head. The response timeout (plus `extra` for long-polls) starts
    /// once the request body has been sent, so a slow upload is never cut short; a stalled
    /// one is (`server.body_idle_timeout` between two parts of it). At
    /// `upstream.max_connections` requests in progress, refuses at once; the answer's body
    /// holds its place until it ends or is dropped.
    pub async fn send(
        &self,
        request: Request<Body>,
        extra: Duration,
        metrics: &Metrics,
    ) -> Result<Response<Body>, UpstreamError> {
        let Some(place) = self.take_place() else {
            tracing::debug!("upstream.max_connections requests in progress; refused");
            return Err(UpstreamError::Busy);
        };
        let started = Instant::now();
        let (mut parts, body) = request.into_parts();
        if !parts.headers.contains_key(header::HOST) {
            parts.headers.insert(header::HOST, self.host.clone());
        }
        let (body, sent) = forwarded(body, self.body_idle_timeout);
        let request = Request::from_parts(parts, body);
        let timeout = self.response_timeout + extra;
        let deadline = async move {
            // A dropped sender means the body ended (or failed): either way, count from now.
            if let Some(sent) = sent {
                let _ = sent.await;
            }
            tokio::time::sleep(timeout).await;
        };
        let result = tokio::select! {
            biased;
            result = self.exchange(request) => result,
            () = deadline => Err(UpstreamError::Timeout),
        };
        metrics.observe_upstream(started.elapsed());
        match result {
            Ok((response, conn)) => {
                let (parts, inner) = response.into_parts();
                let answer = Answer::new(inner, conn, self.pool.clone(), place);
                Ok(Response::from_parts(parts, answer.boxed()))
            }
            Err(e) => {
                if let Some(kind) = e.kind() {
                    metrics.upstream_error(kind);
                }
                Err(e)
            }
        }
    }

    /// Sends the request on an idle connection (or a new one) and drives that connection
    /// until the answer's head has arrived; returns it with the connection, which the
    /// answer's body drives from then on (`None` when the connection has already ended).
    /// A request that an idle connection turned away unsent (it had just been closed) is
    /// sent once more, on a new connection.
    async fn exchange(
        &self,
        request: Request<Body>,
    ) -> Result<(Response<Incoming>, Option<Conn>), UpstreamError> {
        let (conn, reused) = match self.pool.take() {
            Some(conn) => (conn, true),
            None => (self.connect().await?, false),
        };
        let error = match round_trip(conn, request).await {
            Ok(answer) => return Ok(answer),
            Err(e) => e,
        };
        let error = match error {
            Failed::Unsent(request, _) if reused => {
                tracing::debug!("an idle homeserver connection had closed; sending again");
                match round_trip(self.connect().await?, *request).await {
                    Ok(answer) => return Ok(answer),
                    Err(e) => e,
                }
            }
            e => e,
        };
        let e = match error {
            Failed::Unsent(_, e) | Failed::Sent(e) => e,
        };
        if stalled_body(&e) {
            Err(UpstreamError::BodyStalled(self.body_idle_timeout))
        } else {
            Err(UpstreamError::Protocol(error_chain(&e)))
        }
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        match tokio::time::timeout(self.connect_timeout, self.connector.connect()).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "could not connect to the homeserver");
                Err(UpstreamError::Connect)
            }
            Err(_) => {
                tracing::debug!("connecting to the homeserver timed out");
                Err(UpstreamError::Connect)
            }
        }
    }

    fn take_place(&self) -> Option<Place> {
        if self.in_progress.inc() >= self.max_in_progress {
            self.in_progress.dec();
            self.refused.inc();
            return None;
        }
        Some(Place(self.in_progress.clone()))
    }
}

/// How a request on one connection failed.
enum Failed {
    /// Turned away before any of it was written: it may be sent elsewhere.
    /// Boxed: the error path is rare, and the request is large.
    Unsent(Box<Request<Body>>, hyper::Error),
    Sent(hyper::Error),
}

/// Sends a request on a connection and drives the connection until the answer's head has
/// arrived.
async fn round_trip(
    mut conn: Conn,
    request: Request<Body>,
) -> Result<(Response<Incoming>, Option<Conn>), Failed> {
    let mut response = pin!(conn.send(request));
    let mut conn = Some(conn);
    let result = std::future::poll_fn(|cx| {
        // The connection writes the request (and its body) and reads the answer's head,
        // then the response future has it.
        if let Some(c) = &mut conn
            && c.drive(cx)
        {
            conn = None;
        }
        response.as_mut().poll(cx)
    })
    .await;
    match result {
        Ok(response) => Ok((response, conn)),
        Err(mut e) => Err(match e.take_message() {
            Some(request) => Failed::Unsent(Box::new(request), e.into_error()),
            None => Failed::Sent(e.into_error()),
        }),
    }
}

/// One request's place under `upstream.max_connections`, given back when dropped.
struct Place(Gauge);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Whether a failed upstream request failed because its body stalled (`body::Forwarded`).
fn stalled_body(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(e);
    while let Some(e) = source {
        if matches!(e.downcast_ref::<BodyError>(), Some(BodyError::Idle(_))) {
            return true;
        }
        source = e.source();
    }
    false
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod body_tests {
    use super::*;

    /// A forwarded body fed part by part by the test, and what it yields.
    fn fed_body(idle: Duration) -> (tokio::sync::mpsc::Sender<bytes::Bytes>, Body) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
        let stream = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|part| part.map(|b| Ok::<_, BodyError>(hyper::body::Frame::data(b))))
        });
        let (body, _sent) = forwarded(http_body_util::StreamBody::new(stream).boxed(), idle);
        (tx, body)
    }

    #[tokio::test(start_paused = true)]
    async fn a_forwarded_body_may_take_long_but_not_pause_long() {
        let idle = Duration::from_secs(60);
        let (tx, mut body) = fed_body(idle);
        // Ten parts 50 s apart: 500 s in all, never 60 s without a part.
        for _ in 0..10 {
            let feed = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(50)).await;
                feed.send(bytes::Bytes::from_static(b"part")).await.unwrap();
            });
            let frame = body.frame().await.expect("a part").expect("no error");
            assert_eq!(frame.into_data().unwrap(), "part");
        }
        let started = tokio::time::Instant::now();
        let stalled = body.frame().await.expect("an error");
        assert!(
            matches!(stalled, Err(BodyError::Idle(d)) if d == idle),
            "{stalled:?}"
        );
        assert_eq!(started.elapsed(), idle);
        assert!(stalled_body(&stalled.unwrap_err()));
    }

    #[tokio::test(start_paused = true)]
    async fn time_the_homeserver_takes_to_read_does_not_count_against_the_client() {
        let idle = Duration::from_secs(60);
        let (tx, mut body) = fed_body(idle);
        tx.send(bytes::Bytes::from_static(b"first")).await.unwrap();
        body.frame().await.expect("a part").expect("no error");
        // The homeserver reads nothing for 100 s: the body is not polled meanwhile.
        tokio::time::sleep(Duration::from_secs(100)).await;
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            tx.send(bytes::Bytes::from_static(b"second")).await.unwrap();
        });
        let frame = body.frame().await.expect("a part").expect("no error");
        assert_eq!(frame.into_data().unwrap(), "second");
    }
}
