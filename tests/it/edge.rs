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
