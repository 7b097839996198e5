//! A stand-in homeserver for the proxy tests: an in-process HTTP/1.1 server on
//! `127.0.0.1:0` that says, as JSON, exactly what it received (method, path and query,
//! version, every header in order, and the SHA-256 and length of the body, hashed as it
//! streams in), plus a few programmable routes:
//!
//! - `GET /_matrix/client/versions`: whatever [`Upstream::set_versions`] last set;
//! - `GET /download/<n>[?chunked=1]`: `n` bytes of [`pattern`], streamed in 64 KiB chunks,
//!   with a `Content-Length` or (with `chunked=1`) without one;
//! - `/slow?ms=N` and `…/sync?timeout=N`: the echo, after N ms;
//! - `/hang`: never answers; counts when its request future is dropped;
//! - `/hop-by-hop`: the echo, with hop-by-hop response headers that must not reach a
//!   client.
//!
//! Every request is also logged ([`Upstream::seen`]) as soon as its head arrives, and every
//! body of at most [`KEPT_BODY_LIMIT`] bytes is kept once it has arrived
//! ([`Upstream::bodies`]), for tests that check what a forwarded body became.
//! [`Upstream::answer`] programs the answer of one path (any method) in place of the echo,
//! e.g. a homeserver's own `M_THREEPID_IN_USE`; the body is still read and kept.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use super::serve::serve_http1;
use tokio::task::JoinHandle;

/// The stand-in's answer on most routes: what it received.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Echo {
    pub method: String,
    /// Path and query exactly as they arrived.
    pub uri: String,
    pub path: String,
    pub query: Option<String>,
    /// `HTTP/1.1`.
    pub version: String,
    /// Every header, in arrival order, repeated ones repeated.
    pub headers: Vec<(String, String)>,
    /// Lower-case hex.
    pub body_sha256: String,
    pub body_len: u64,
}

impl Echo {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

/// A request as logged when its head arrived (before its body was read).
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Bodies up to this size are kept whole ([`Upstream::bodies`]); larger ones only hashed.
pub const KEPT_BODY_LIMIT: usize = 64 * 1024;

/// A whole request body as it arrived, kept when it was small.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    /// Path and query exactly as they arrived.
    pub uri: String,
    pub path: String,
    pub body: Bytes,
}

impl Received {
    /// The body as JSON; panics (naming the body) when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} {} got a body that is not JSON ({e}): {}",
                self.method,
                self.uri,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// What `GET /_matrix/client/versions` answers, or a path programmed with
/// [`Upstream::answer`].
#[derive(Debug, Clone)]
pub struct Canned {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Bytes,
    /// Send the body without a `Content-Length` (chunked).
    pub chunked: bool,
}

impl Canned {
    pub fn json(status: StatusCode, body: &serde_json::Value) -> Self {
        Self {
            status,
            content_type: Some("application/json".into()),
            body: Bytes::from(serde_json::to_vec(body).expect("JSON serialises")),
            chunked: false,
        }
    }

    pub fn raw(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            content_type: Some(content_type.into()),
            body: body.into(),
            chunked: false,
        }
    }

    pub fn chunked(mut self) -> Self {
        self.chunked = true;
        self
    }
}

/// Shared between the server and the test.
pub struct State {
    versions: Mutex<Canned>,
    seen: Mutex<Vec<Seen>>,
    bodies: Mutex<Vec<Received>>,
    answers: Mutex<HashMap<String, Canned>>,
    /// `/hang` request futures dropped so far.
    pub hangs_dropped: AtomicUsize,
}

/// A running stand-in; stops accepting when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type RespBody = BoxBody<Bytes, Infallible>;

impl Upstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in upstream");
        let addr = listener.local_addr().expect("a local address");
        let state = Arc::new(State {
            versions: Mutex::new(Canned::json(
                StatusCode::OK,
                &serde_json::json!({"versions": ["r0.5.0"]}),
            )),
            seen: Mutex::new(Vec::new()),
            bodies: Mutex::new(Vec::new()),
            answers: Mutex::new(HashMap::new()),
            hangs_dropped: AtomicUsize::new(0),
        });
        let task = serve_http1(listener, state.clone(), |state, request| async move {
            handle(&state, request).await
        });
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:<port>`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_versions(&self, canned: Canned) {
        *self.state.versions.lock().expect("not poisoned") = canned;
    }

    /// From now on, requests to exactly `path` (any method, any query) get `canned`
    /// instead of the echo.
    pub fn answer(&self, path: &str, canned: Canned) {
        self.state
            .answers
            .lock()
            .expect("not poisoned")
            .insert(path.to_owned(), canned);
    }

    /// Every body of at most [`KEPT_BODY_LIMIT`] bytes received whole so far, oldest first.
    pub fn bodies(&self) -> Vec<Received> {
        self.state.bodies.lock().expect("not poisoned").clone()
    }

    /// The kept bodies of requests whose path is exactly `path`.
    pub fn bodies_at(&self, path: &str) -> Vec<Received> {
        self.bodies()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Every request head received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("not poisoned").clone()
    }

    /// Requests received so far whose path starts with `prefix`.
    pub fn hits(&self, prefix: &str) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path.starts_with(prefix))
            .count()
    }

    pub fn hangs_dropped(&self) -> usize {
        self.state.hangs_dropped.load(Ordering::SeqCst)
    }
}

/// Polls `condition` every 10 ms until it holds or `limit` passes; says whether it held.
pub async fn wait_until(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    tokio::time::timeout(limit, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok()
}

fn headers_of<B>(request: &Request<B>) -> Vec<(String, String)> {
    request
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query
        .into_iter()
        .flat_map(|q| form_urlencoded::parse(q.as_bytes()))
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<RespBody> {
    let path = request.uri().path().to_owned();
    let query = request.uri().query().map(str::to_owned);
    state.seen.lock().expect("not poisoned").push(Seen {
        method: request.method().to_string(),
        uri: request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
        path: path.clone(),
        headers: headers_of(&request),
    });
    let programmed = state
        .answers
        .lock()
        .expect("not poisoned")
        .get(&path)
        .cloned();
    if let Some(canned) = programmed {
        let (parts, body) = request.into_parts();
        if let Ok(collected) = body.collect().await {
            keep_body(state, &parts, collected.to_bytes());
        }
        return canned_response(canned);
    }
    if path == "/_matrix/client/versions" {
        let canned = state.versions.lock().expect("not poisoned").clone();
        return canned_response(canned);
    }
    if let Some(n) = path.strip_prefix("/download/") {
        let len: u64 = n.parse().expect("/download/<bytes>");
        let chunked = query_param(query.as_deref(), "chunked").is_some();
        let mut response = Response::new(PatternBody::new(len, !chunked).boxed());
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return response;
    }
    if path == "/hang" {
        let _guard = DropCounter(&state.hangs_dropped);
        std::future::pending::<()>().await;
        unreachable!("a pending future never completes");
    }
    let delay_ms = if path == "/slow" {
        query_param(query.as_deref(), "ms")
    } else if path.ends_with("/sync") {
        query_param(query.as_deref(), "timeout")
    } else {
        None
    };
    if let Some(ms) = delay_ms {
        let ms: u64 = ms.parse().expect("a number of milliseconds");
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let hop_by_hop = path == "/hop-by-hop";
    let mut response = echo(state, request).await;
    if hop_by_hop {
        let headers = response.headers_mut();
        for (name, value) in [
            ("connection", "x-hop, keep-alive"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5, max=100"),
            ("proxy-authenticate", "Basic realm=\"upstream\""),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "example/1"),
            ("trailer", "x-checksum"),
            ("x-end-to-end", "kept"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
    }
    response
}

struct DropCounter<'a>(&'a AtomicUsize);

impl Drop for DropCounter<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn canned_response(canned: Canned) -> Response<RespBody> {
    let body = if canned.chunked {
        // No exact size: hyper sends it chunked.
        OneChunk(Some(canned.body)).boxed()
    } else {
        Full::new(canned.body).boxed()
    };
    let mut response = Response::new(body);
    *response.status_mut() = canned.status;
    if let Some(content_type) = canned.content_type {
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_str(&content_type).expect("a valid content type"),
        );
    }
    response
}

fn keep_body(state: &State, parts: &hyper::http::request::Parts, body: Bytes) {
    state.bodies.lock().expect("not poisoned").push(Received {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
        path: parts.uri.path().to_owned(),
        body,
    });
}

async fn echo(state: &State, request: Request<Incoming>) -> Response<RespBody> {
    let (parts, mut body) = request.into_parts();
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    // The body itself while it is small enough to keep.
    let mut kept: Option<Vec<u8>> = Some(Vec::new());
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    len += data.len() as u64;
                    hasher.update(&data);
                    kept = kept
                        .filter(|k| k.len() + data.len() <= KEPT_BODY_LIMIT)
                        .map(|mut k| {
                            k.extend_from_slice(&data);
                            k
                        });
                }
            }
            Err(e) => {
                let mut response = Response::new(Full::from(format!("body: {e}")).boxed());
                *response.status_mut() = StatusCode::BAD_REQUEST;
                return response;
            }
        }
    }
    if let Some(kept) = kept {
        keep_body(state, &parts, Bytes::from(kept));
    }
    let echo = Echo {
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        version: format!("{:?}", parts.version),
        headers: headers_of(&Request::from_parts(parts, ())),
        body_sha256: hex(&hasher.finalize()),
        body_len: len,
    };
    let mut response = Response::new(
        Full::new(Bytes::from(
            serde_json::to_vec(&echo).expect("an echo serialises"),
        ))
        .boxed(),
    );
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A body of one chunk with no size hint, so that hyper sends it chunked.
struct OneChunk(Option<Bytes>);

impl Body for OneChunk {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }
}

/// The deterministic byte pattern: a pseudo-random block of a prime length repeated, so
/// that 64 KiB chunks out of order or repeated change the hash.
const PATTERN_PERIOD: usize = 65_521;
const CHUNK: usize = 64 * 1024;

fn pattern_block() -> Arc<[u8]> {
    let mut x: u32 = 0x2545_f491;
    (0..PATTERN_PERIOD)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// `len` bytes of the pattern, streamed in 64 KiB chunks without holding them all:
/// a request or response body for large transfers.
pub struct PatternBody {
    block: Arc<[u8]>,
    offset: u64,
    len: u64,
    /// Announce the exact size (a `Content-Length`); otherwise hyper sends it chunked.
    exact: bool,
}

impl PatternBody {
    pub fn new(len: u64, exact: bool) -> Self {
        Self {
            block: pattern_block(),
            offset: 0,
            len,
            exact,
        }
    }

    fn next_chunk(&mut self) -> Option<Bytes> {
        if self.offset >= self.len {
            return None;
        }
        let size = (self.len - self.offset).min(CHUNK as u64) as usize;
        let mut chunk = Vec::with_capacity(size);
        let mut at = (self.offset % PATTERN_PERIOD as u64) as usize;
        while chunk.len() < size {
            let take = (size - chunk.len()).min(PATTERN_PERIOD - at);
            chunk.extend_from_slice(&self.block[at..at + take]);
            at = (at + take) % PATTERN_PERIOD;
        }
        self.offset += size as u64;
        Some(Bytes::from(chunk))
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.next_chunk().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset >= self.len
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.len - self.offset)
        } else {
            SizeHint::default()
        }
    }
}

/// SHA-256 (hex) and length of `len` bytes of the pattern, computed chunk by chunk.
pub fn pattern_sha256(len: u64) -> String {
    let mut body = PatternBody::new(len, true);
    let mut hasher = Sha256::new();
    while let Some(chunk) = body.next_chunk() {
        hasher.update(&chunk);
    }
    hex(&hasher.finalize())
}

/// Reads a body to its end, hashing as it goes: (SHA-256 hex, length). Never holds more
/// than one frame.
pub async fn hash_body<B>(mut body: B) -> (String, u64)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("the body streams without error");
        if let Ok(data) = frame.into_data() {
            len += data.len() as u64;
            hasher.update(&data);
        }
    }
    (hex(&hasher.finalize()), len)
}
