//! The upstream client against small in-process homeservers: connections are kept for the
//! next request whatever the shape of the answer, and given up when they cannot be.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;
use crate::config::Config;

/// A server on loopback that hands each connection to `serve`, and counts its connections.
async fn counting_server<F, Fut>(serve: F) -> (String, Arc<AtomicUsize>)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream));
        }
    });
    (url, accepted)
}

/// An HTTP/1.1 homeserver on loopback that answers by path, and counts its connections.
async fn homeserver() -> (String, Arc<AtomicUsize>) {
    counting_server(|stream| async move {
        let service = service_fn(|request: Request<hyper::body::Incoming>| async move {
            let path = request.uri().path().to_owned();
            let _ = request.into_body().collect().await;
            let body: http_body_util::combinators::BoxBody<Bytes, Infallible> = match path.as_str()
            {
                "/empty" => Full::new(Bytes::new()).boxed(),
                "/chunked" => StreamBody::new(futures_util::stream::iter(
                    ["one ", "two"].map(|p| Ok(Frame::data(Bytes::from(p)))),
                ))
                .boxed(),
                "/large" => Full::new(Bytes::from(vec![7u8; 4 << 20])).boxed(),
                _ => Full::new(Bytes::from_static(b"{}")).boxed(),
            };
            Ok::<_, Infallible>(Response::new(body))
        });
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
            .await;
    })
    .await
}

fn upstream(url: &str, metrics: &Metrics) -> Upstream {
    let config = Config::from_toml(&format!("[upstream]\nurl = \"{url}\"\n")).unwrap();
    Upstream::new(&config.upstream, Duration::from_secs(60), metrics).unwrap()
}

fn request(method: Method, path: &'static str, upstream: &Upstream) -> Request<Body> {
    let mut request = Request::new(crate::matrix::empty());
    *request.method_mut() = method;
    *request.uri_mut() = upstream.uri_for(Some(&PathAndQuery::from_static(path)));
    request
}

async fn fetch(
    upstream: &Upstream,
    metrics: &Metrics,
    method: Method,
    path: &'static str,
) -> Bytes {
    let response = upstream
        .send(request(method, path, upstream), Duration::ZERO, metrics)
        .await
        .unwrap();
    response.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test]
async fn one_connection_carries_every_shape_of_answer_one_after_another() {
    let (url, accepted) = homeserver().await;
    let metrics = Metrics::new();
    let upstream = upstream(&url, &metrics);
    for _ in 0..3 {
        assert_eq!(fetch(&upstream, &metrics, Method::GET, "/json").await, "{}");
        assert_eq!(fetch(&upstream, &metrics, Method::GET, "/empty").await, "");
        assert_eq!(
            fetch(&upstream, &metrics, Method::GET, "/chunked").await,
            "one two"
        );
        assert_eq!(fetch(&upstream, &metrics, Method::HEAD, "/json").await, "");
        assert_eq!(
            fetch(&upstream, &metrics, Method::POST, "/json").await,
            "{}"
        );
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    assert_eq!(upstream.pool.idle_count(), 1);
    assert_eq!(
        metrics.upstream_requests().0.get(),
        0,
        "every place given back"
    );
}

#[tokio::test]
async fn an_answer_dropped_before_its_end_closes_its_connection_and_gives_back_its_place() {
    let (url, accepted) = homeserver().await;
    let metrics = Metrics::new();
    let upstream = upstream(&url, &metrics);
    let response = upstream
        .send(
            request(Method::GET, "/large", &upstream),
            Duration::ZERO,
            &metrics,
        )
        .await
        .unwrap();
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(
        metrics.upstream_requests().0.get(),
        1,
        "held while it streams"
    );
    drop(body);
    assert_eq!(metrics.upstream_requests().0.get(), 0);
    assert_eq!(upstream.pool.idle_count(), 0);
    assert_eq!(fetch(&upstream, &metrics, Method::GET, "/json").await, "{}");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

/// A homeserver that answers one request per connection with keep-alive, then closes the
/// connection soon after, as a homeserver's own idle timeout does.
async fn closing_homeserver() -> (String, Arc<AtomicUsize>) {
    counting_server(|mut stream| async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            head.extend_from_slice(&buf[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    })
    .await
}

#[tokio::test]
async fn an_idle_connection_the_homeserver_closed_is_not_used_again() {
    let (url, accepted) = closing_homeserver().await;
    let metrics = Metrics::new();
    let upstream = upstream(&url, &metrics);
    for round in 1..=3 {
        assert_eq!(fetch(&upstream, &metrics, Method::GET, "/json").await, "{}");
        assert_eq!(upstream.pool.idle_count(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), round);
    }
}

#[tokio::test]
async fn a_request_to_a_closed_port_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let metrics = Metrics::new();
    let upstream = upstream(&url, &metrics);
    let result = upstream
        .send(
            request(Method::GET, "/json", &upstream),
            Duration::ZERO,
            &metrics,
        )
        .await;
    assert!(matches!(result, Err(UpstreamError::Connect)), "{result:?}");
    assert_eq!(metrics.upstream_requests().0.get(), 0);
}
