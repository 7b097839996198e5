//! Forwarding to the homeserver (DESIGN §6): the pooled upstream client, the header rules
//! (hop-by-hop, `X-Forwarded-*`, `Host`) as small pure functions, and the mapping of
//! upstream trouble to Matrix 502/504 bodies.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::body::Body as _;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;

use crate::compat::PathCompat;
use crate::config;
use crate::matrix::{Body, BodyError, MatrixError};
use crate::metrics::{Metrics, UpstreamErrorKind};

/// What the server knows about the connection a request came on.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    /// The client connection is TLS (sets `X-Forwarded-Proto: https`).
    pub tls: bool,
}

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
        last_part: tokio::time::Instant::now(),
        timer: None,
    }
    .boxed();
    (Request::from_parts(parts, body), rx)
}

/// A request body on its way upstream. It drops its sender when it ends, which wakes
/// [`forwarded`]'s receiver; and it fails when no part of it has arrived for `idle`, which
/// makes hyper abandon the upstream request (a client trickling a body would otherwise hold
/// an upstream connection, and a homeserver request, for as long as it likes). It streams:
/// nothing is held back.
struct Forwarded {
    inner: Body,
    done: Option<oneshot::Sender<()>>,
    idle: Duration,
    last_part: tokio::time::Instant,
    /// Armed the first time a part is awaited, moved on only when it fires: a clock read per
    /// part, not a timer update.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
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
                this.last_part = tokio::time::Instant::now();
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
                let deadline = this.last_part + this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                loop {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    let deadline = this.last_part + this.idle;
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

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Turns a client request into the request the homeserver gets: upstream URI, HTTP/1.1,
/// hop-by-hop headers gone, `Host` kept, `X-Forwarded-*` set.
pub fn prepare_request(
    request: Request<Body>,
    upstream: &Upstream,
    conn: &ConnInfo,
    trusted_proxies: &[IpNet],
) -> Request<Body> {
    let (mut parts, body) = request.into_parts();
    // HTTP/2 carries the host in :authority; the upstream speaks HTTP/1.1 and needs Host.
    let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    strip_hop_by_hop(&mut parts.headers);
    // Our own server already answered any `Expect: 100-continue`.
    parts.headers.remove(header::EXPECT);
    if let Some(host) = &original_host {
        parts.headers.insert(header::HOST, host.clone());
    }
    let trusted = is_trusted(conn.peer.ip(), trusted_proxies);
    let client = if trusted {
        client_ip(&parts.headers, conn.peer.ip(), trusted_proxies)
    } else {
        conn.peer.ip()
    };
    set_forwarded_headers(
        &mut parts.headers,
        client,
        trusted,
        conn.tls,
        original_host.as_ref(),
    );
    parts.uri = upstream.uri_for(parts.uri.path_and_query());
    parts.version = Version::HTTP_11;
    Request::from_parts(parts, body)
}

/// Cleans the homeserver's response for the client.
pub fn prepare_response(response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body)
}

/// Headers that concern one connection only (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers, every header named in `Connection`, and any other
/// `Proxy-*` header.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let proxy_other: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy_other {
        headers.remove(name);
    }
}

pub fn is_trusted(peer: IpAddr, trusted_proxies: &[IpNet]) -> bool {
    let peer = canonical_ip(peer);
    trusted_proxies.iter().any(|net| net.contains(&peer))
}

/// `::ffff:10.0.0.1` is 10.0.0.1.
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// `X-Forwarded-For` is one hop: the client's address as [`client_ip`] worked it out (the
/// peer, or behind a trusted proxy the rightmost hop it did not write itself). Legacy
/// homeservers (Synapse ≤ 1.3 with `x_forwarded`) take the leftmost hop, so a hop a client
/// wrote must never reach them. `X-Forwarded-Proto` and `-Host` are ours unless a trusted
/// proxy set them.
pub fn set_forwarded_headers(
    headers: &mut HeaderMap,
    client: IpAddr,
    trusted: bool,
    tls: bool,
    host: Option<&HeaderValue>,
) {
    let client = canonical_ip(client).to_string();
    headers.insert(
        X_FORWARDED_FOR,
        HeaderValue::from_str(&client).expect("an address is valid header text"),
    );
    if !(trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        let proto = if tls { "https" } else { "http" };
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match host {
            Some(host) => headers.insert(X_FORWARDED_HOST, host.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
}

/// One `X-Forwarded-For` hop as an address: `203.0.113.9`, `2001:db8::1`, and with a port
/// as some proxies write them, `203.0.113.9:443` and `[2001:db8::1]:443`.
pub fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = hop.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    // `[v6]` without a port.
    hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

/// The client's address as the rate limits see it, and as the homeserver is told. Behind
/// trusted proxies it is the rightmost `X-Forwarded-For` hop that is not itself a trusted
/// proxy: each trusted proxy appends the address it saw, so hops further left were written by
/// the client and can be anything (taking the first hop would let a client pick its own
/// rate-limit bucket). A hop that does not parse where the client's should be stops the walk:
/// the peer (the proxy) stands in, never a hop to its left.
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted_proxies: &[IpNet]) -> IpAddr {
    let peer = canonical_ip(peer);
    if !is_trusted(peer, trusted_proxies) {
        return peer;
    }
    let mut leftmost = None;
    let Ok(lines) = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .map(HeaderValue::to_str)
        .collect::<Result<Vec<&str>, _>>()
    else {
        return peer; // not text: nothing in it can be believed
    };
    for hop in lines.iter().rev().flat_map(|line| line.rsplit(',')) {
        if hop.trim().is_empty() {
            continue;
        }
        let Some(ip) = parse_hop(hop).map(canonical_ip) else {
            return peer;
        };
        if !is_trusted(ip, trusted_proxies) {
            return ip;
        }
        leftmost = Some(ip);
    }
    // Every hop is a trusted proxy: the first one is as close to the client as we know.
    leftmost.unwrap_or(peer)
}

/// Long-poll endpoints hold the response for the client's `timeout` (ms): that much is
/// added to the response timeout so `/sync` is never cut short.
pub fn long_poll_allowance(path: &str, query: Option<&str>) -> Duration {
    const MAX: Duration = Duration::from_secs(600);
    let long_poll = path.ends_with("/sync") || path.ends_with("/events");
    if !long_poll {
        return Duration::ZERO;
    }
    query
        .into_iter()
        .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
        .find(|(k, _)| k == "timeout")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .map_or(Duration::ZERO, |ms| Duration::from_millis(ms).min(MAX))
}

/// Forwards a request unchanged (but for the header rules) and streams the answer back.
pub async fn forward(
    upstream: &Upstream,
    metrics: &Metrics,
    trusted_proxies: &[IpNet],
    conn: &ConnInfo,
    request: Request<Body>,
) -> Response<Body> {
    let extra = long_poll_allowance(request.uri().path(), request.uri().query());
    let matrix_path = request.uri().path().starts_with("/_matrix/");
    let request = prepare_request(request, upstream, conn, trusted_proxies);
    match upstream.send(request, extra, metrics).await {
        Ok(response) if matrix_path && upstream.compat.is_active() => {
            unrecognized_as_404(prepare_response(response)).await
        }
        Ok(response) => prepare_response(response),
        Err(e @ (UpstreamError::BodyStalled(_) | UpstreamError::Busy)) => {
            tracing::debug!(error = %e, "not forwarded");
            e.into_matrix().into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "upstream request failed");
            e.into_matrix().into_response()
        }
    }
}

/// The most of a `400` answer read to see whether it is `M_UNRECOGNIZED`.
const MAX_UNRECOGNIZED_BYTES: usize = 16 * 1024;

/// What a legacy homeserver answers for an endpoint it does not have, as today's clients
/// expect it (DESIGN §6): its `400 M_UNRECOGNIZED` (Synapse ≤ 1.3 for an unknown path under
/// a prefix it serves) or a page that is not JSON with 404/405 (Twisted's "No Such
/// Resource" for a prefix it does not serve) becomes `404 M_UNRECOGNIZED`, with the CORS
/// headers a web client needs to read it. Every other answer passes unchanged.
pub async fn unrecognized_as_404(response: Response<Body>) -> Response<Body> {
    let status = response.status();
    let json = is_json(response.headers());
    if matches!(
        status,
        StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
    ) && !json
    {
        drain(response.into_body(), MAX_UNRECOGNIZED_BYTES).await;
        return MatrixError::unrecognized().into_response();
    }
    if status != StatusCode::BAD_REQUEST || !json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match crate::matrix::read_up_to(body, MAX_UNRECOGNIZED_BYTES).await {
        Ok(crate::matrix::Read::Whole(bytes)) => bytes,
        Ok(crate::matrix::Read::Partial(body)) => return Response::from_parts(parts, body),
        Err(e) => {
            return UpstreamError::Protocol(error_chain(&e))
                .into_matrix()
                .into_response();
        }
    };
    let errcode = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("errcode")?.as_str().map(str::to_owned));
    if errcode.as_deref() == Some("M_UNRECOGNIZED") {
        return MatrixError::unrecognized().into_response();
    }
    Response::from_parts(parts, crate::matrix::full(bytes))
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

/// Reads and drops a small body, so that its upstream connection goes back to the pool.
async fn drain(mut body: Body, limit: usize) {
    let mut read = 0;
    while let Some(Ok(frame)) = body.frame().await {
        read += frame.data_ref().map_or(0, bytes::Bytes::len);
        if read > limit {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = headers(&[
            ("connection", "keep-alive"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("authorization", "Bearer keep-me"),
            ("content-type", "application/json"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["authorization", "content-type"]);
    }

    #[test]
    fn connection_header_names_are_removed_case_insensitively() {
        let mut h = headers(&[
            ("connection", "X-Secret-Hop, close"),
            ("connection", " x-other "),
            ("x-secret-hop", "1"),
            ("x-other", "2"),
            ("x-end-to-end", "3"),
        ]);
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret-hop").is_none());
        assert!(h.get("x-other").is_none());
        assert_eq!(h["x-end-to-end"], "3");
    }

    #[test]
    fn an_untrusted_peer_cannot_forge_x_forwarded_headers() {
        let mut h = headers(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
        ]);
        let host = HeaderValue::from_static("matrix.example.org");
        set_forwarded_headers(
            &mut h,
            "192.0.2.7".parse().unwrap(),
            false,
            false,
            Some(&host),
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "matrix.example.org");
    }

    #[test]
    fn a_trusted_proxy_keeps_its_proto_and_host_and_the_homeserver_gets_one_hop() {
        let mut h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 203.0.113.9"),
            ("x-forwarded-for", "10.1.1.1"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "matrix.example.org"),
        ]);
        let host = HeaderValue::from_static("internal:8080");
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let client = client_ip(&h, "10.0.0.2".parse().unwrap(), &trusted);
        set_forwarded_headers(&mut h, client, true, false, Some(&host));
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "matrix.example.org");
    }

    #[test]
    fn hops_with_ports_are_read_and_an_unreadable_one_is_never_skipped() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        let ip = |xff: &str| client_ip(&headers(&[("x-forwarded-for", xff)]), peer, &trusted);
        assert_eq!(
            ip("1.2.3.4, 198.51.100.7:443"),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            ip("1.2.3.4, [2001:db8::1]:443"),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            ip("1.2.3.4, [2001:db8::1]"),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            ip("1.2.3.4,198.51.100.7, 10.9.9.9:80"),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // The client's hop is garbage: the proxy stands in, never 1.2.3.4 to its left.
        assert_eq!(ip("1.2.3.4, unknown"), peer);
        assert_eq!(ip("1.2.3.4, 198.51.100.7:x"), peer);
        // Every hop a trusted proxy, or none at all.
        assert_eq!(
            ip("10.1.1.1, 10.2.2.2"),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(ip(""), peer);
    }

    #[test]
    fn tls_connections_are_forwarded_as_https() {
        let mut h = HeaderMap::new();
        set_forwarded_headers(&mut h, "::1".parse().unwrap(), false, true, None);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-for"], "::1");
        assert!(h.get("x-forwarded-host").is_none());
    }

    #[test]
    fn a_client_cannot_choose_its_address_by_prepending_hops() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // The client wrote 1.1.1.1 itself; the ingress (10.1.1.1) saw 203.0.113.9.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.1.1.1")]);
        assert_eq!(
            client_ip(&h, "10.0.0.2".parse().unwrap(), &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn the_client_ip_is_the_first_hop_only_behind_a_trusted_proxy() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[("x-forwarded-for", "203.0.113.9, 10.1.1.1")]);
        assert_eq!(
            client_ip(&h, "10.0.0.2".parse().unwrap(), &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(&h, "192.0.2.1".parse().unwrap(), &trusted),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
        // An IPv4 peer seen through an IPv6 socket is still trusted.
        assert!(is_trusted("::ffff:10.0.0.2".parse().unwrap(), &trusted));
    }

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

    #[test]
    fn long_polls_get_their_timeout_added() {
        let sync = long_poll_allowance("/_matrix/client/r0/sync", Some("since=s1&timeout=30000"));
        assert_eq!(sync, Duration::from_secs(30));
        assert_eq!(
            long_poll_allowance("/_matrix/client/r0/rooms/x/messages", Some("timeout=30000")),
            Duration::ZERO
        );
        assert_eq!(
            long_poll_allowance("/_matrix/client/v3/sync", None),
            Duration::ZERO
        );
        assert_eq!(
            long_poll_allowance("/_matrix/client/v3/sync", Some("timeout=99999999")),
            Duration::from_secs(600)
        );
    }
}
