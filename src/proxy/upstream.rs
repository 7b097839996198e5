//! The pooled upstream client: requests to the homeserver, bounded by
//! `upstream.max_connections` and the response timeout, with request bodies that may not
//! stall (`server.body_idle_timeout`).

use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;

use crate::compat::PathCompat;
use crate::config;
use crate::matrix::{Body, BodyError, MatrixError};
use crate::metrics::{Metrics, UpstreamErrorKind};

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
    client: Client<HttpsConnector<HttpConnector>, Body>,
    scheme: Scheme,
    authority: Authority,
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
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_idle)
            .http1_max_buf_size(MAX_READ_BUF)
            .build(https);
        let (in_progress, refused) = metrics.upstream_requests();
        let url = &config.url;
        let scheme = if url.scheme() == "https" {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let host = url.host_str().expect("config validation requires a host");
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let authority = authority
            .parse()
            .expect("a host and port from a parsed URL form a valid authority");
        Ok(Self {
            client,
            scheme,
            authority,
            response_timeout: config.response_timeout,
            body_idle_timeout,
            max_in_progress: i64::try_from(config.max_connections).unwrap_or(i64::MAX),
            in_progress,
            refused,
            compat: PathCompat::new(config.path_compat),
        })
    }

    /// The upstream URI for a client request's path and query (v3 mapped to r0 when the
    /// path compatibility is on).
    pub fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Uri {
        let original = path_and_query.map_or("/", PathAndQuery::as_str);
        let mapped = self.compat.rewrite(original);
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(mapped.as_deref().unwrap_or(original))
            .build()
            .expect("scheme, authority and an already valid path form a URI")
    }

    /// Sends a prepared request and waits for the response head. The response timeout
    /// (plus `extra` for long-polls) starts once the request body has been sent, so a slow
    /// upload is never cut short; a stalled one is (`server.body_idle_timeout` between two
    /// parts of it). At `upstream.max_connections` requests in progress, refuses at once;
    /// the answer's body holds its place until it ends or is dropped.
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
        let (request, sent) = forwarded(request, self.body_idle_timeout);
        let timeout = self.response_timeout + extra;
        let deadline = async move {
            // A dropped sender means the body ended (or failed): either way, count from now.
            let _ = sent.await;
            tokio::time::sleep(timeout).await;
        };
        let result = tokio::select! {
            result = self.client.request(request) => Some(result),
            () = deadline => None,
        };
        metrics.observe_upstream(started.elapsed());
        let result = match result {
            None => Err(UpstreamError::Timeout),
            Some(Err(e)) if e.is_connect() => Err(UpstreamError::Connect),
            Some(Err(e)) if stalled_body(&e) => {
                Err(UpstreamError::BodyStalled(self.body_idle_timeout))
            }
            Some(Err(e)) => Err(UpstreamError::Protocol(error_chain(&e))),
            Some(Ok(response)) => Ok(response.map(|body| {
                UpstreamBody {
                    inner: body,
                    place: Some(place),
                }
                .boxed()
            })),
        };
        if let Some(kind) = result.as_ref().err().and_then(UpstreamError::kind) {
            metrics.upstream_error(kind);
        }
        result
    }
}

impl Upstream {
    fn take_place(&self) -> Option<Place> {
        if self.in_progress.inc() >= self.max_in_progress {
            self.in_progress.dec();
            self.refused.inc();
            return None;
        }
        Some(Place(self.in_progress.clone()))
    }
}

/// One request's place under `upstream.max_connections`, given back when dropped.
struct Place(Gauge);

impl Drop for Place {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The homeserver's answer body: holds its request's [`Place`] until it ends or is dropped.
struct UpstreamBody {
    inner: hyper::body::Incoming,
    place: Option<Place>,
}

impl hyper::body::Body for UpstreamBody {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) || self.inner.is_end_stream() {
            self.place = None;
        }
        polled.map_err(BodyError::Hyper)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Wraps a request body for its way upstream ([`Forwarded`]); the returned receiver
/// completes once the body has been sent to the end (or has failed).
fn forwarded(request: Request<Body>, idle: Duration) -> (Request<Body>, oneshot::Receiver<()>) {
    let (tx, rx) = oneshot::channel();
    let (parts, body) = request.into_parts();
    // An empty body is never polled: it is sent as soon as the head is.
    if body.is_end_stream() {
        return (Request::from_parts(parts, body), rx);
    }
    let body = Forwarded {
        inner: body,
        done: Some(tx),
        idle,
        waiting_since: None,
        timer: None,
    }
    .boxed();
    (Request::from_parts(parts, body), rx)
}

/// A request body on its way upstream. It drops its sender when it ends, which wakes
/// [`forwarded`]'s receiver; and it fails when it has waited `idle` for the client's next
/// part, which makes hyper abandon the upstream request (a client trickling a body would
/// otherwise hold an upstream connection, and a homeserver request, for as long as it
/// likes). Only waiting on the client counts: while the homeserver is slow to read, the body
/// is not polled and its clock does not run. It streams: nothing is held back.
struct Forwarded {
    inner: Body,
    done: Option<oneshot::Sender<()>>,
    idle: Duration,
    /// Since when the client's next part has been awaited.
    waiting_since: Option<tokio::time::Instant>,
    /// Armed the first time a part is awaited, moved on only when it fires, and polled only
    /// then or when another task polls the body: a clock read per wait, not a timer update.
    /// With the waker it was last polled with (the timer wakes that task).
    timer: Option<(Pin<Box<tokio::time::Sleep>>, Waker)>,
}

impl hyper::body::Body for Forwarded {
    type Data = bytes::Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting_since = None;
                if this.inner.is_end_stream() {
                    this.done = None;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(end) => {
                this.done = None;
                Poll::Ready(end)
            }
            Poll::Pending => {
                let since = *this
                    .waiting_since
                    .get_or_insert_with(tokio::time::Instant::now);
                let deadline = since + this.idle;
                if let Some((timer, waker)) = &this.timer
                    && !timer.is_elapsed()
                    && waker.will_wake(cx.waker())
                {
                    // Armed for this task, at or before the deadline: it will wake us.
                    return Poll::Pending;
                }
                let (timer, waker) = this.timer.get_or_insert_with(|| {
                    (
                        Box::pin(tokio::time::sleep_until(deadline)),
                        cx.waker().clone(),
                    )
                });
                waker.clone_from(cx.waker());
                loop {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if deadline <= tokio::time::Instant::now() {
                        this.done = None;
                        return Poll::Ready(Some(Err(BodyError::Idle(this.idle))));
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether a failed upstream request failed because its body stalled ([`Forwarded`]).
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
mod tests {
    use super::*;

    /// A forwarded body fed part by part by the test, and what it yields.
    fn fed_body(idle: Duration) -> (tokio::sync::mpsc::Sender<bytes::Bytes>, Body) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(1);
        let stream = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
                .map(|part| part.map(|b| Ok::<_, BodyError>(hyper::body::Frame::data(b))))
        });
        let request = Request::new(http_body_util::StreamBody::new(stream).boxed());
        let (request, _sent) = forwarded(request, idle);
        (tx, request.into_body())
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
