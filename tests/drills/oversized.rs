//! Drill 5: oversized input against the real binary. A request head over
//! `server.max_header_bytes` gets 431; a body over `server.max_body_bytes` on requestToken
//! gets 413 `M_TOO_LARGE` on HTTP/1.1 (with a length and chunked) and on HTTP/2 (h2c,
//! prior knowledge); a huge declared `Content-Length` gets 413 at once, without the body
//! being waited for; and the process keeps serving afterwards.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, SizeHint};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::sidecar::TestConfig;
use crate::common::upstream::Upstream;
use crate::support::{ChildSidecar, drill, figures, get_fresh, ms};

const MAX_HEADER_BYTES: usize = 16 * 1024;
const MAX_BODY_BYTES: usize = 64 * 1024;
const REQUEST_TOKEN: &str = "/_matrix/client/v3/register/email/requestToken";
/// A declared length no one would send.
const HUGE: u64 = 10_000_000_000;
/// Each exchange is answered within this, or the drill fails.
const BOUND: Duration = Duration::from_secs(3);
/// "At once" for a refusal that needs no body.
const PROMPTLY: Duration = Duration::from_millis(500);

/// What came back: a status and a body, or why not.
#[derive(Debug)]
struct Answer {
    result: Result<(StatusCode, Bytes), String>,
    took: Duration,
}

impl Answer {
    fn status(&self) -> Option<StatusCode> {
        self.result.as_ref().ok().map(|(s, _)| *s)
    }

    fn errcode(&self) -> Option<String> {
        let (_, body) = self.result.as_ref().ok()?;
        let json: serde_json::Value = serde_json::from_slice(body).ok()?;
        json["errcode"].as_str().map(str::to_owned)
    }

    fn describe(&self) -> String {
        match &self.result {
            Ok((status, body)) => format!(
                "{} {} in {:.1} ms",
                status.as_u16(),
                self.errcode()
                    .unwrap_or_else(|| format!("({} body bytes)", body.len())),
                ms(self.took)
            ),
            Err(e) => format!("no answer ({e}) after {:.1} ms", ms(self.took)),
        }
    }
}

/// Writes `head` (and nothing more) on a new connection and reads one HTTP/1.1 response.
async fn raw_http1(addr: std::net::SocketAddr, head: &[u8]) -> Answer {
    let started = Instant::now();
    let exchange = async {
        let mut stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // A server that answers early may close before it has read everything: keep going
        // and read its answer anyway.
        let _ = stream.write_all(head).await;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(answer) = parse_response(&buf) {
                return Ok(answer);
            }
            match stream.read(&mut chunk).await {
                Ok(0) => return Err(format!("EOF after {} bytes", buf.len())),
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read after {} bytes: {e}", buf.len())),
            }
        }
    };
    let result = tokio::time::timeout(BOUND, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("nothing within {BOUND:?}")));
    Answer {
        result,
        took: started.elapsed(),
    }
}

/// A whole response with a `Content-Length` body, once `buf` holds it.
fn parse_response(buf: &[u8]) -> Option<(StatusCode, Bytes)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let status: u16 = head.split_whitespace().nth(1)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    (buf.len() >= end + length).then(|| {
        (
            StatusCode::from_u16(status).expect("a status"),
            Bytes::copy_from_slice(&buf[end..end + length]),
        )
    })
}

/// A body of `chunks` × 16 KiB with no declared length (HTTP/1.1 sends it chunked).
struct Chunks(usize);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.0 == 0 {
            return Poll::Ready(None);
        }
        self.0 -= 1;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b' '; 16 * 1024])))))
    }
}

/// A body that declares [`HUGE`] bytes, sends a few, and then nothing, for ever.
struct Endless {
    sent: bool,
}

impl Body for Endless {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent {
            return Poll::Pending;
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
            b"{\"client_secret\":",
        )))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(HUGE)
    }
}

/// One request on a new HTTP/1.1 (or h2c prior-knowledge) connection with hyper's client.
async fn hyper_request<B>(addr: std::net::SocketAddr, h2: bool, request: Request<B>) -> Answer
where
    B: Body<Data = Bytes, Error = Infallible> + Send + Unpin + 'static,
{
    let started = Instant::now();
    let exchange = async {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let io = TokioIo::new(stream);
        let response = if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| format!("h2 handshake: {e}"))?;
            tokio::spawn(conn);
            sender.send_request(request).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(conn);
            sender.send_request(request).await
        }
        .map_err(|e| format!("{e:?}"))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e:?}"))?
            .to_bytes();
        Ok((status, body))
    };
    let result = tokio::time::timeout(BOUND, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("nothing within {BOUND:?}")));
    Answer {
        result,
        took: started.elapsed(),
    }
}

const TRICKLE_EVERY: Duration = Duration::from_millis(200);
const TRICKLE_FOR: Duration = Duration::from_secs(3);
/// The drill's `server.header_read_timeout`, which also bounds a handled request's body.
const BODY_WITHIN: Duration = Duration::from_secs(2);

/// Sends a requestToken head declaring 200 bytes, then the body one byte every
/// [`TRICKLE_EVERY`]: when the server answers (its status line) or closes the connection,
/// how long after connecting; `None` when it was still waiting after [`TRICKLE_FOR`].
async fn trickled_body(addr: std::net::SocketAddr) -> Option<(Duration, String)> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let connected = Instant::now();
    let (mut read, mut write) = stream.into_split();
    let head = format!(
        "POST {REQUEST_TOKEN} HTTP/1.1\r\nHost: drill\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    );
    write.write_all(head.as_bytes()).await.ok()?;
    let answered = async move {
        let mut buf = [0u8; 512];
        // Any answer or the end of the connection.
        let n = read.read(&mut buf).await.unwrap_or(0);
        let text = String::from_utf8_lossy(&buf[..n]);
        text.lines().next().unwrap_or("(closed)").to_owned()
    };
    let trickle = async move {
        loop {
            tokio::time::sleep(TRICKLE_EVERY).await;
            if write.write_all(b" ").await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    };
    let watched = async {
        tokio::select! {
            status = answered => Some((connected.elapsed(), status)),
            () = trickle => None,
        }
    };
    tokio::time::timeout(TRICKLE_FOR, watched)
        .await
        .ok()
        .flatten()
}

fn post<B>(addr: std::net::SocketAddr, body: B) -> Request<B> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{REQUEST_TOKEN}"))
        .header("content-type", "application/json")
        .body(body)
        .expect("a valid request")
}

#[test]
fn drill_5_oversized_input() {
    drill("drill 5: oversized input", || async {
        let upstream = Upstream::start().await;
        let mut config = TestConfig::new(&upstream.url());
        config
            .set("server.max_header_bytes", MAX_HEADER_BYTES as i64)
            .set("server.max_body_bytes", MAX_BODY_BYTES as i64)
            .set(
                "server.header_read_timeout",
                format!("{}s", BODY_WITHIN.as_secs()),
            );
        let mut sidecar = ChildSidecar::start(config).await;
        let addr = sidecar.client;
        let big_value = "a".repeat(2 * MAX_HEADER_BYTES);
        let big_body = Bytes::from(vec![b' '; 2 * MAX_BODY_BYTES]);

        // A body trickled to requestToken: 408 once header_read_timeout has passed.
        let slow_body = tokio::spawn(trickled_body(addr));
        let mut results: Vec<(&str, Answer)> = Vec::new();
        // Request heads.
        let head = format!(
            "GET /_matrix/client/r0/profile/x HTTP/1.1\r\nHost: drill\r\nX-Big: {big_value}\r\n\r\n"
        );
        results.push((
            "HTTP/1.1 head over max_header_bytes",
            raw_http1(addr, head.as_bytes()).await,
        ));
        let big_h2 = Request::get(format!("http://{addr}/_matrix/client/r0/profile/x"))
            .header("x-big", big_value.as_str())
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        results.push((
            "HTTP/2 headers over max_header_bytes",
            hyper_request(addr, true, big_h2).await,
        ));
        // Bodies.
        results.push((
            "HTTP/1.1 body over max_body_bytes (Content-Length)",
            hyper_request(addr, false, post(addr, Full::new(big_body.clone()))).await,
        ));
        results.push((
            "HTTP/1.1 body over max_body_bytes (chunked)",
            hyper_request(addr, false, post(addr, Chunks(8))).await,
        ));
        results.push((
            "HTTP/2 body over max_body_bytes",
            hyper_request(addr, true, post(addr, Full::new(big_body.clone()))).await,
        ));
        // Huge declared lengths, body never sent.
        let head = format!(
            "POST {REQUEST_TOKEN} HTTP/1.1\r\nHost: drill\r\nContent-Type: application/json\r\nContent-Length: {HUGE}\r\n\r\n{{\"client_secret\":"
        );
        results.push((
            "HTTP/1.1 Content-Length 10 GB, body not sent",
            raw_http1(addr, head.as_bytes()).await,
        ));
        results.push((
            "HTTP/2 content-length 10 GB, body not sent",
            hyper_request(addr, true, post(addr, Endless { sent: false })).await,
        ));
        let slow_body = slow_body.await.expect("the slow-body task");
        // Still serving, and a normal requestToken still works.
        let after = get_fresh(addr, "/_matrix/client/r0/after", BOUND).await;
        let token = hyper_request(
            addr,
            false,
            post(
                addr,
                Full::new(Bytes::from(
                    serde_json::json!({
                        "client_secret": "drill-after",
                        "email": "after@example.org",
                        "send_attempt": 1,
                    })
                    .to_string(),
                )),
            ),
        )
        .await;
        let running = sidecar.is_running();
        let log = sidecar.log();

        for (name, answer) in &results {
            figures!("[drill 5] {name}: {}", answer.describe());
        }
        figures!(
            "[drill 5] a requestToken body trickled at one byte per {:.0} ms (Content-Length 200): {} (header_read_timeout {:.0} ms)",
            ms(TRICKLE_EVERY),
            match &slow_body {
                Some((after, status)) => format!("{status:?} after {:.0} ms", ms(*after)),
                None => format!("still being waited for after {:.0} ms", ms(TRICKLE_FOR)),
            },
            ms(BODY_WITHIN)
        );
        figures!(
            "[drill 5] afterwards: pass-through {:?}, requestToken {}, process running: {running}, panics in the log: {}",
            after.outcome.status(),
            token.describe(),
            log.matches("panicked").count()
        );

        assert!(running, "the sidecar died; log:\n{log}");
        assert!(
            !log.contains("panicked"),
            "the sidecar panicked; log:\n{log}"
        );
        assert!(
            after.outcome.is_ok(),
            "no longer serving: {:?}",
            after.outcome
        );
        assert_eq!(token.status(), Some(StatusCode::OK), "{}", token.describe());
        assert!(
            slow_body.as_ref().is_some_and(|(after, status)| {
                status.starts_with("HTTP/1.1 408 ") && *after >= BODY_WITHIN.mul_f64(0.9)
            }),
            "a trickled body must get 408 once header_read_timeout has passed: {slow_body:?}"
        );
        let mut wrong = Vec::new();
        for (name, answer) in &results {
            let ok = if name.contains("max_header_bytes") {
                answer.status() == Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
            } else {
                answer.status() == Some(StatusCode::PAYLOAD_TOO_LARGE)
                    && answer.errcode().as_deref() == Some("M_TOO_LARGE")
                    && (!name.contains("10 GB") || answer.took <= PROMPTLY)
            };
            if !ok {
                wrong.push(format!("{name}: {}", answer.describe()));
            }
        }
        assert!(
            wrong.is_empty(),
            "oversized input was not refused as it should be:\n  {}",
            wrong.join("\n  ")
        );
    });
}
