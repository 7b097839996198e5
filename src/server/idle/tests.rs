//! Plain HTTP/1.1 connections served with hyper's state let go of while idle: answers, order,
//! timeouts and the listener's stop are as hyper's own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::*;

const HEADER_READ_TIMEOUT: Duration = Duration::from_millis(400);

/// How many times a hyper connection was taken apart, in every test of this process.
pub(super) static TAKEN_APART: AtomicUsize = AtomicUsize::new(0);

/// A listener serving each connection with [`serve`]: the answer is the request's path; a
/// listener with `warm` places (0: every idle connection lets go of hyper's state at once).
async fn listener(warm: usize) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop) = watch::channel(false);
    let warm = Arc::new(Warm::new(warm));
    tokio::spawn(async move {
        let mut http1 = http1::Builder::new();
        http1
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let http1 = Arc::new(http1);
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (http1, warm, stop) = (http1.clone(), warm.clone(), stop.clone());
            tokio::spawn(async move {
                let handle = |request: Request<Incoming>| async move {
                    let path = request.uri().path().to_owned();
                    let mut response = Response::new(crate::matrix::full(path));
                    *response.status_mut() = StatusCode::OK;
                    Ok::<_, Infallible>(response)
                };
                let settings = Settings {
                    http1: &http1,
                    warm: &warm,
                    header_read_timeout: HEADER_READ_TIMEOUT,
                };
                let first_head = Instant::now() + HEADER_READ_TIMEOUT;
                let _ = serve(stream, handle, settings, first_head, stop).await;
            });
        }
    });
    (addr, stop_tx)
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").into_bytes()
}

/// Reads answers until `count` have arrived; returns their bodies.
async fn answers(stream: &mut TcpStream, count: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut bodies = Vec::new();
    let mut buf = [0u8; 4096];
    while bodies.len() < count {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed after {} answers", bodies.len());
        seen.extend_from_slice(&buf[..n]);
        // Each answer: a head with a content-length, then that many bytes.
        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .unwrap()
                .parse()
                .unwrap();
            if seen.len() < end + 4 + len {
                break;
            }
            bodies.push(String::from_utf8_lossy(&seen[end + 4..end + 4 + len]).into_owned());
            seen.drain(..end + 4 + len);
        }
    }
    bodies
}

/// Whether the server closes the connection within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn a_connection_that_let_go_while_idle_is_served_again() {
    for warm in [0, 64] {
        let (addr, _stop) = listener(warm).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let before = TAKEN_APART.load(Ordering::Relaxed);
        for round in 0..3 {
            let path = format!("/round/{round}");
            client.write_all(&get(&path)).await.unwrap();
            assert_eq!(answers(&mut client, 1).await, [path]);
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        if warm == 0 {
            assert!(TAKEN_APART.load(Ordering::Relaxed) >= before + 3);
        }
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    for warm in [0, 64] {
        let (addr, _stop) = listener(warm).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut both = get("/first");
        both.extend(get("/second"));
        client.write_all(&both).await.unwrap();
        assert_eq!(answers(&mut client, 2).await, ["/first", "/second"]);
        // The second head, split across the wait.
        let third = get("/third");
        client.write_all(&third[..5]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(&third[5..]).await.unwrap();
        assert_eq!(answers(&mut client, 1).await, ["/third"]);
    }
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_header_read_timeout() {
    for warm in [0, 64] {
        let (addr, _stop) = listener(warm).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(&get("/")).await.unwrap();
        answers(&mut client, 1).await;
        assert!(!closed_within(&mut client, HEADER_READ_TIMEOUT / 2).await);
        assert!(
            closed_within(&mut client, HEADER_READ_TIMEOUT).await,
            "warm {warm}"
        );
    }
}

#[tokio::test]
async fn a_head_trickled_after_an_idle_wait_is_bounded_from_the_end_of_the_last_answer() {
    for warm in [0, 64] {
        let (addr, _stop) = listener(warm).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(&get("/")).await.unwrap();
        answers(&mut client, 1).await;
        tokio::time::sleep(HEADER_READ_TIMEOUT * 3 / 4).await;
        client.write_all(b"GET /slow").await.unwrap();
        // Closed a quarter of the timeout later, not a whole timeout after the first byte.
        assert!(
            closed_within(&mut client, HEADER_READ_TIMEOUT / 2).await,
            "warm {warm}"
        );
    }
}

#[tokio::test]
async fn the_listener_stopping_closes_an_idle_connection_at_once() {
    for warm in [0, 64] {
        let (addr, stop) = listener(warm).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(&get("/")).await.unwrap();
        answers(&mut client, 1).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.send(true).unwrap();
        assert!(
            closed_within(&mut client, HEADER_READ_TIMEOUT / 4).await,
            "warm {warm}"
        );
    }
}
