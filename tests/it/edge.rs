//! The edge's own limits (security review 2026-12, findings 4 and 5): HTTP/2 connections
//! closed when idle or silent, forwarded bodies that stop arriving cut, and caps on client
//! connections and on upstream requests, each with a clear 503 and a metric.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::common::http::ChannelBody;
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::upstream::{Upstream, wait_until};

/// Every test finishes within this or fails.
async fn bounded<T>(limit: Duration, test: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, test)
        .await
        .expect("the test finished in time")
}

async fn setup_with(configure: impl FnOnce(&mut TestConfig)) -> (Upstream, Sidecar) {
    let upstream = Upstream::start().await;
    let mut config = TestConfig::new(&upstream.url());
    configure(&mut config);
    let sidecar = Sidecar::start(config).await;
    (upstream, sidecar)
}

/// An h2c (prior knowledge) connection to the sidecar over `io`; the connection's own task
/// is returned, to see when the sidecar ends it.
async fn h2c<T>(
    io: T,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("an h2c prior-knowledge handshake");
    (sender, tokio::spawn(connection))
}

/// GET `path` on an HTTP/2 connection and read the whole answer.
async fn h2_get(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    sidecar: &Sidecar,
    path: &str,
) -> StatusCode {
    let request = Request::get(sidecar.url(path))
        .body(Full::new(Bytes::new()))
        .expect("a request");
    let response = sender.send_request(request).await.expect("an answer");
    assert_eq!(response.version(), Version::HTTP_2);
    let status = response.status();
    response.into_body().collect().await.expect("the body");
    status
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout_and_a_busy_one_is_not() {
    bounded(Duration::from_secs(15), async {
        let (_upstream, sidecar) = setup_with(|c| {
            c.set("server.http2_idle_timeout", "500ms")
                .set("server.header_read_timeout", "10s");
        })
        .await;
        let stream = TcpStream::connect(sidecar.client).await.expect("connect");
        let (mut sender, connection) = h2c(stream).await;
        assert_eq!(
            h2_get(&mut sender, &sidecar, "/first").await,
            StatusCode::OK
        );
        // A request that takes longer than the idle timeout keeps the connection.
        assert_eq!(
            h2_get(&mut sender, &sidecar, "/slow?ms=1200").await,
            StatusCode::OK
        );
        let idle_from = Instant::now();
        let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
        let after = idle_from.elapsed();
        assert!(
            ended.is_ok(),
            "the idle HTTP/2 connection was still open {after:?} after its last request"
        );
        assert!(
            after >= Duration::from_millis(400),
            "closed {after:?} after its last request; the idle timeout is 500 ms"
        );
    })
    .await;
}

/// A client stream whose reading can be stopped: the client then never sees, so never
/// answers, the server's PINGs.
struct Deaf {
    inner: TcpStream,
    deaf: Arc<AtomicBool>,
}

impl AsyncRead for Deaf {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.deaf.load(Ordering::SeqCst) {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Deaf {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn an_http2_client_that_stops_answering_pings_is_disconnected_mid_request() {
    bounded(Duration::from_secs(15), async {
        let (upstream, sidecar) = setup_with(|c| {
            c.set("server.http2_keep_alive_interval", "300ms")
                .set("server.http2_keep_alive_timeout", "300ms");
        })
        .await;
        let deaf = Arc::new(AtomicBool::new(false));
        let stream = TcpStream::connect(sidecar.client).await.expect("connect");
        let (mut sender, _connection) = h2c(Deaf {
            inner: stream,
            deaf: deaf.clone(),
        })
        .await;
        // A request held by the upstream: the connection is not idle, only silent.
        let request = Request::get(sidecar.url("/hang"))
            .body(Full::new(Bytes::new()))
            .expect("a request");
        let _pending = tokio::spawn(sender.send_request(request));
        assert!(
            wait_until(Duration::from_secs(3), || upstream.hits("/hang") == 1).await,
            "the request reached the upstream"
        );
        deaf.store(true, Ordering::SeqCst);
        assert!(
            wait_until(Duration::from_secs(5), || upstream.hangs_dropped() == 1).await,
            "the sidecar kept serving a client that answered no PING"
        );
    })
    .await;
}

/// Uploads 10 × 1 KiB to the sidecar, a part every `every` (the sender stops after
/// `parts`); returns the status and body of the answer and how long it took.
async fn trickled_upload(
    sidecar: &Sidecar,
    parts: usize,
    every: Duration,
) -> (StatusCode, Bytes, Duration) {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let part = Bytes::from(vec![b'v'; 1024]);
    let feeder = tokio::spawn(async move {
        for _ in 0..parts {
            tokio::time::sleep(every).await;
            if tx.send(part.clone()).await.is_err() {
                return;
            }
        }
        // Stalled, not ended: the body stays open.
        std::future::pending::<()>().await;
    });
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<ChannelBody>();
    let request = Request::post(sidecar.url("/_matrix/media/r0/upload?filename=clip.mp4"))
        .body(ChannelBody {
            parts: rx,
            len: 10 * 1024,
        })
        .expect("a request");
    let started = Instant::now();
    let response = client.request(request).await.expect("an answer");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the answer's body")
        .to_bytes();
    feeder.abort();
    (status, body, started.elapsed())
}

#[tokio::test]
async fn a_forwarded_upload_that_stalls_is_cut_with_408_and_a_steady_one_is_not() {
    bounded(Duration::from_secs(15), async {
        let (upstream, sidecar) = setup_with(|c| {
            c.set("server.body_idle_timeout", "300ms");
        })
        .await;
        // A part every 100 ms for a second: longer than the timeout in all, never idle that
        // long.
        let (status, body, _) = trickled_upload(&sidecar, 10, Duration::from_millis(100)).await;
        assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
        let echo: crate::common::upstream::Echo = serde_json::from_slice(&body).expect("an echo");
        assert_eq!(echo.body_len, 10 * 1024);

        // Two parts, then nothing.
        let (status, body, took) = trickled_upload(&sidecar, 2, Duration::from_millis(100)).await;
        assert_eq!(
            status,
            StatusCode::REQUEST_TIMEOUT,
            "{}",
            String::from_utf8_lossy(&body)
        );
        let error: serde_json::Value = serde_json::from_slice(&body).expect("a Matrix error");
        assert_eq!(error["errcode"], "M_UNKNOWN");
        assert!(
            took < Duration::from_secs(3),
            "cut only after {took:?} (body_idle_timeout 300 ms)"
        );
        assert_eq!(upstream.hits("/_matrix/media/r0/upload"), 2);
    })
    .await;
}

/// One series of the sidecar's `/metrics` (0 when absent).
async fn metric(sidecar: &Sidecar, series: &str) -> f64 {
    let text = crate::common::http::get(&sidecar.admin_url("/metrics"))
        .await
        .text();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().expect("a number"))
}

/// Sends raw bytes on a fresh connection and reads until the peer closes.
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write the request");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_connection_over_server_max_connections_gets_503_and_is_counted() {
    bounded(Duration::from_secs(15), async {
        let (_upstream, sidecar) = setup_with(|c| {
            c.set("server.max_connections", 2i64);
        })
        .await;
        const OPEN: &str = r#"threepid_sidecar_connections_open{listener="client"}"#;
        const REFUSED: &str = r#"threepid_sidecar_connections_refused_total{listener="client"}"#;
        let first = TcpStream::connect(sidecar.client).await.expect("connect");
        let _second = TcpStream::connect(sidecar.client).await.expect("connect");
        let mut held = false;
        for _ in 0..200 {
            if metric(&sidecar, OPEN).await == 2.0 {
                held = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(held, "the sidecar did not take both connections");

        let answer = raw_exchange(
            sidecar.client,
            b"GET /_matrix/client/r0/account/whoami HTTP/1.1\r\nhost: hs.example\r\n\r\n",
        )
        .await;
        let (head, body) = answer.split_once("\r\n\r\n").expect("a whole answer");
        assert!(head.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(head.contains("\r\nconnection: close"), "{head}");
        let error: serde_json::Value = serde_json::from_str(body).expect("a Matrix error");
        assert_eq!(error["errcode"], "M_UNKNOWN");
        assert!(error["error"].as_str().is_some_and(|e| e.len() > 10));
        assert_eq!(metric(&sidecar, REFUSED).await, 1.0);
        assert_eq!(metric(&sidecar, OPEN).await, 2.0);

        // A place given back is taken again.
        drop(first);
        let mut answered = None;
        for _ in 0..100 {
            let answer = raw_exchange(
                sidecar.client,
                b"GET /after HTTP/1.1\r\nhost: hs.example\r\nconnection: close\r\n\r\n",
            )
            .await;
            if answer.starts_with("HTTP/1.1 200") {
                answered = Some(answer);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(answered.is_some(), "no place was given back");
    })
    .await;
}

#[tokio::test]
async fn a_request_over_upstream_max_connections_gets_503_until_a_place_is_given_back() {
    bounded(Duration::from_secs(20), async {
        let (upstream, sidecar) = setup_with(|c| {
            c.set("upstream.max_connections", 1i64);
        })
        .await;
        const OPEN: &str = "threepid_sidecar_upstream_requests_open";
        const REFUSED: &str = "threepid_sidecar_upstream_requests_refused_total";
        let busy = |answer: &crate::common::http::Answer| {
            answer.status == StatusCode::SERVICE_UNAVAILABLE && answer.errcode() == "M_UNKNOWN"
        };

        // A request the homeserver holds takes the one place.
        let hang_url = sidecar.url("/hang");
        let hang = tokio::spawn(async move { crate::common::http::get(&hang_url).await });
        assert!(
            wait_until(Duration::from_secs(3), || upstream.hits("/hang") == 1).await,
            "the request reached the upstream"
        );
        let refused = crate::common::http::get(&sidecar.url("/refused")).await;
        assert!(busy(&refused), "{} {}", refused.status, refused.text());
        assert_eq!(upstream.hits("/refused"), 0);
        assert_eq!(metric(&sidecar, OPEN).await, 1.0);
        assert_eq!(metric(&sidecar, REFUSED).await, 1.0);
        hang.abort();
        assert!(
            wait_until(Duration::from_secs(3), || upstream.hangs_dropped() == 1).await,
            "the upstream request was cancelled"
        );
        assert_eq!(
            crate::common::http::get(&sidecar.url("/after-hang"))
                .await
                .status,
            StatusCode::OK
        );

        // An answer whose body is still on its way holds the place too, until it is dropped.
        let client = crate::common::http::client();
        let download = client
            .get(sidecar.url("/download/67108864").parse().expect("a URI"))
            .await
            .expect("the download starts");
        assert_eq!(download.status(), StatusCode::OK);
        let refused = crate::common::http::get(&sidecar.url("/refused")).await;
        assert!(busy(&refused), "{} {}", refused.status, refused.text());
        drop(download);
        let mut status = None;
        for _ in 0..100 {
            let answer = crate::common::http::get(&sidecar.url("/after-download")).await;
            if answer.status == StatusCode::OK {
                status = Some(answer.status);
                break;
            }
            assert!(busy(&answer), "{} {}", answer.status, answer.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(status, Some(StatusCode::OK), "the place was not given back");
        assert_eq!(metric(&sidecar, OPEN).await, 0.0);
    })
    .await;
}
