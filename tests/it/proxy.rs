//! Forwarding, black-box (DESIGN §6): the sidecar started in process in front of the
//! stand-in upstream (`common::upstream`), driven by real HTTP/1.1 and HTTP/2 clients.

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, Version};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::Digest as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::http::{self, Answer, ChannelBody};
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::upstream::{Echo, PatternBody, Upstream, hash_body, pattern_sha256, wait_until};

const MIB: u64 = 1024 * 1024;

/// Every test finishes within this or fails.
async fn bounded<T>(limit: Duration, test: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, test)
        .await
        .expect("the test finished in time")
}

async fn setup() -> (Upstream, Sidecar) {
    setup_with(|_| {}).await
}

async fn setup_with(configure: impl FnOnce(&mut TestConfig)) -> (Upstream, Sidecar) {
    let upstream = Upstream::start().await;
    let mut config = TestConfig::new(&upstream.url());
    configure(&mut config);
    let sidecar = Sidecar::start(config).await;
    (upstream, sidecar)
}

fn echo(answer: &Answer) -> Echo {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    serde_json::from_slice(&answer.body)
        .unwrap_or_else(|e| panic!("not an echo ({e}): {}", answer.text()))
}

/// An address nothing listens on.
fn closed_port_url() -> String {
    format!("http://{}", crate::common::ports::free_addr())
}

/// Sends raw bytes on a fresh connection and reads until the peer closes (or `limit`).
async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8], limit: Duration) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write the request");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

#[tokio::test]
async fn method_path_query_body_and_end_to_end_headers_arrive_unchanged() {
    bounded(Duration::from_secs(20), async {
        let (_upstream, sidecar) = setup().await;
        let path_and_query = concat!(
            "/_matrix/client/r0/rooms/%21abc%3Aexample.org/state/m.room.name/%20x%2Fy",
            "?filter=%7B%22limit%22%3A1%7D&dup=1&dup=2&empty=&plus=a+b",
        );
        let body: &[u8] = b"\x00\x01 binary \xff\xfe {\"not\": \"parsed\"}";
        let sent: &[(&str, &str)] = &[
            ("authorization", "Bearer syt_secret_token"),
            ("x-repeat", "first"),
            ("x-repeat", "second"),
            ("x-repeat", "third, with comma"),
            ("accept-encoding", "gzip, br"),
            ("cookie", "a=1; b=2"),
            ("content-type", "application/octet-stream"),
            ("user-agent", "matrix-nio/0.26 odd; \"quoted\""),
            ("x-odd", "  spaces kept inside  ;=,\t tab"),
        ];
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            let method = Method::from_bytes(method.as_bytes()).expect("a method");
            let answer = http::send(
                method.clone(),
                &sidecar.url(path_and_query),
                sent,
                Bytes::from_static(body),
            )
            .await;
            let echo = echo(&answer);
            assert_eq!(echo.method, method.as_str());
            assert_eq!(
                echo.uri, path_and_query,
                "path and query are passed byte for byte"
            );
            assert_eq!(echo.version, "HTTP/1.1");
            assert_eq!(echo.body_len, body.len() as u64);
            assert_eq!(
                echo.body_sha256,
                crate::common::upstream::hex(&sha2::Sha256::digest(body))
            );
            for name in [
                "authorization",
                "x-repeat",
                "accept-encoding",
                "cookie",
                "content-type",
                "user-agent",
                "x-odd",
            ] {
                let want: Vec<&str> = sent
                    .iter()
                    .filter(|(k, _)| *k == name)
                    .map(|(_, v)| v.trim())
                    .collect();
                assert_eq!(echo.header_all(name), want, "{method} {name}");
            }
            assert_eq!(
                echo.header("content-length"),
                Some(body.len().to_string().as_str())
            );
        }
        sidecar.stop().await;
    })
    .await;
}

#[tokio::test]
async fn the_host_header_is_kept() {
    bounded(Duration::from_secs(10), async {
        let (_upstream, sidecar) = setup().await;
        let answer = http::send(
            Method::GET,
            &sidecar.url("/_matrix/client/r0/account/whoami"),
            &[("host", "matrix.example.org:8448")],
            Bytes::new(),
        )
        .await;
        let echo = echo(&answer);
        assert_eq!(echo.header_all("host"), ["matrix.example.org:8448"]);
        assert_eq!(
            echo.header("x-forwarded-host"),
            Some("matrix.example.org:8448")
        );

        // With the client library's own Host: the address it connected to.
        let echo = self::echo(&http::get(&sidecar.url("/plain")).await);
        assert_eq!(echo.header_all("host"), [sidecar.client.to_string()]);
    })
    .await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_in_both_directions() {
    bounded(Duration::from_secs(10), async {
        let (upstream, sidecar) = setup().await;
        let sent: &[(&str, &str)] = &[
            ("connection", "x-named-hop, X-Other-Hop"),
            ("x-named-hop", "1"),
            ("x-other-hop", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic cHJveHk6c2VjcmV0"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("upgrade", "example/1"),
            ("x-end-to-end", "kept"),
        ];
        let request_hop = [
            "connection",
            "x-named-hop",
            "x-other-hop",
            "keep-alive",
            "proxy-authorization",
            "proxy-connection",
            "te",
            "trailer",
            "upgrade",
        ];
        let response_hop = [
            "connection",
            "x-hop",
            "keep-alive",
            "proxy-authenticate",
            "proxy-connection",
            "upgrade",
            "trailer",
        ];

        // Control: without the sidecar, every one of them goes through both ways.
        let direct = http::send(
            Method::GET,
            &format!("{}/hop-by-hop", upstream.url()),
            sent,
            Bytes::new(),
        )
        .await;
        let direct_echo = echo(&direct);
        for name in request_hop {
            assert!(direct_echo.has(name), "the control did not send {name}");
        }
        for name in response_hop {
            assert!(
                direct.headers.contains_key(name),
                "the control did not receive {name}"
            );
        }

        let answer = http::send(Method::GET, &sidecar.url("/hop-by-hop"), sent, Bytes::new()).await;

        // Toward the homeserver.
        let echo = echo(&answer);
        for gone in request_hop.into_iter().chain(["transfer-encoding"]) {
            assert!(
                !echo.has(gone),
                "{gone} reached the upstream: {:?}",
                echo.headers
            );
        }
        assert_eq!(echo.header("x-end-to-end"), Some("kept"));

        // Toward the client.
        for gone in response_hop {
            assert!(
                answer.headers.get(gone).is_none(),
                "{gone} reached the client: {:?}",
                answer.headers
            );
        }
        assert_eq!(answer.headers["x-end-to-end"], "kept");
    })
    .await;
}

#[tokio::test]
async fn an_untrusted_peer_cannot_forge_x_forwarded_headers() {
    bounded(Duration::from_secs(10), async {
        let (_upstream, sidecar) = setup().await;
        let answer = http::send(
            Method::GET,
            &sidecar.url("/_matrix/client/r0/profile/@a:b"),
            &[
                ("host", "matrix.example.org"),
                ("x-forwarded-for", "1.2.3.4"),
                ("x-forwarded-for", "5.6.7.8"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "evil.example"),
            ],
            Bytes::new(),
        )
        .await;
        let echo = echo(&answer);
        assert_eq!(echo.header_all("x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(echo.header_all("x-forwarded-proto"), ["http"]);
        assert_eq!(echo.header_all("x-forwarded-host"), ["matrix.example.org"]);
    })
    .await;
}

#[tokio::test]
async fn a_trusted_proxy_keeps_proto_and_host_and_the_homeserver_sees_one_hop_the_client() {
    bounded(Duration::from_secs(10), async {
        let (_upstream, sidecar) = setup_with(|c| {
            c.set_toml("server.trusted_proxies", r#"["127.0.0.1"]"#);
        })
        .await;
        let answer = http::send(
            Method::GET,
            &sidecar.url("/_matrix/client/r0/profile/@a:b"),
            &[
                ("host", "sidecar.internal:8080"),
                // The client wrote 6.6.6.6; the trusted proxy saw 203.0.113.9.
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-for", "203.0.113.9"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "matrix.example.org"),
            ],
            Bytes::new(),
        )
        .await;
        let echo = echo(&answer);
        assert_eq!(echo.header_all("x-forwarded-for"), ["203.0.113.9"]);
        assert_eq!(echo.header_all("x-forwarded-proto"), ["https"]);
        assert_eq!(echo.header_all("x-forwarded-host"), ["matrix.example.org"]);
        assert_eq!(echo.header_all("host"), ["sidecar.internal:8080"]);

        // A trusted proxy that sent none gets ours.
        let echo = self::echo(
            &http::send(
                Method::GET,
                &sidecar.url("/x"),
                &[("host", "sidecar.internal:8080")],
                Bytes::new(),
            )
            .await,
        );
        assert_eq!(echo.header_all("x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(echo.header_all("x-forwarded-proto"), ["http"]);
        assert_eq!(
            echo.header_all("x-forwarded-host"),
            ["sidecar.internal:8080"]
        );
    })
    .await;
}

#[tokio::test]
async fn a_64_mib_upload_arrives_byte_identical() {
    bounded(Duration::from_secs(60), async {
        let (_upstream, sidecar) = setup().await;
        let len = 64 * MIB;
        let client = Client::builder(TokioExecutor::new()).build_http::<PatternBody>();
        let request = Request::post(sidecar.url("/_matrix/media/r0/upload?filename=big.bin"))
            .header("content-type", "application/octet-stream")
            .body(PatternBody::new(len, true))
            .expect("a request");
        let response = client
            .request(request)
            .await
            .expect("the upload is answered");
        assert_eq!(response.status(), StatusCode::OK);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the echo")
            .to_bytes();
        let echo: Echo = serde_json::from_slice(&body).expect("an echo");
        assert_eq!(
            echo.header("content-length"),
            Some(len.to_string().as_str())
        );
        assert_eq!(echo.body_len, len);
        assert_eq!(echo.body_sha256, pattern_sha256(len));
    })
    .await;
}

#[tokio::test]
async fn a_64_mib_download_arrives_byte_identical() {
    bounded(Duration::from_secs(60), async {
        let (_upstream, sidecar) = setup().await;
        let len = 64 * MIB;
        let client = http::client();
        let response = client
            .get(
                sidecar
                    .url(&format!("/download/{len}"))
                    .parse()
                    .expect("a URI"),
            )
            .await
            .expect("the download starts");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()["content-length"],
            len.to_string().as_str()
        );
        let (sha, got) = hash_body(response.into_body()).await;
        assert_eq!(got, len);
        assert_eq!(sha, pattern_sha256(len));
    })
    .await;
}

#[tokio::test]
async fn chunked_request_bodies_are_streamed_through() {
    bounded(Duration::from_secs(20), async {
        let (_upstream, sidecar) = setup().await;
        let len = 3 * MIB + 17;
        let client = Client::builder(TokioExecutor::new()).build_http::<PatternBody>();
        let request = Request::put(sidecar.url("/_matrix/media/v3/upload/example.org/abc"))
            .body(PatternBody::new(len, false))
            .expect("a request");
        let response = client
            .request(request)
            .await
            .expect("the upload is answered");
        assert_eq!(response.status(), StatusCode::OK);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the echo")
            .to_bytes();
        let echo: Echo = serde_json::from_slice(&body).expect("an echo");
        assert_eq!(echo.header_all("transfer-encoding"), ["chunked"]);
        assert!(!echo.has("content-length"));
        assert_eq!(echo.body_len, len);
        assert_eq!(echo.body_sha256, pattern_sha256(len));
    })
    .await;
}

#[tokio::test]
async fn chunked_response_bodies_are_streamed_through() {
    bounded(Duration::from_secs(20), async {
        let (_upstream, sidecar) = setup().await;
        let len = 3 * MIB + 5;
        let response = http::client()
            .get(
                sidecar
                    .url(&format!("/download/{len}?chunked=1"))
                    .parse()
                    .expect("a URI"),
            )
            .await
            .expect("the download starts");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("content-length").is_none());
        assert_eq!(response.headers()["transfer-encoding"], "chunked");
        let (sha, got) = hash_body(response.into_body()).await;
        assert_eq!(got, len);
        assert_eq!(sha, pattern_sha256(len));
    })
    .await;
}

#[tokio::test]
async fn an_http2_client_is_forwarded_as_http1_with_a_host_header() {
    bounded(Duration::from_secs(10), async {
        let (_upstream, sidecar) = setup().await;
        let stream = TcpStream::connect(sidecar.client).await.expect("connect");
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("an h2c prior-knowledge handshake");
        tokio::spawn(connection);
        let body = Bytes::from_static(b"{\"over\":\"h2\"}");
        let request = Request::post(
            sidecar.url("/_matrix/client/r0/rooms/%21r%3Ax/send/m.room.message/t1?a=b"),
        )
        .header("authorization", "Bearer h2-token")
        .header("x-repeat", "1")
        .header("x-repeat", "2")
        .body(Full::new(body.clone()))
        .expect("a request");
        let response = sender
            .send_request(request)
            .await
            .expect("an answer over h2");
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::OK);
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("the echo")
            .to_bytes();
        let echo: Echo = serde_json::from_slice(&bytes).expect("an echo");
        assert_eq!(echo.version, "HTTP/1.1");
        assert_eq!(echo.method, "POST");
        assert_eq!(
            echo.uri,
            "/_matrix/client/r0/rooms/%21r%3Ax/send/m.room.message/t1?a=b"
        );
        assert_eq!(echo.header_all("host"), [sidecar.client.to_string()]);
        assert_eq!(
            echo.header("x-forwarded-host"),
            Some(sidecar.client.to_string().as_str())
        );
        assert_eq!(echo.header("authorization"), Some("Bearer h2-token"));
        assert_eq!(echo.header_all("x-repeat"), ["1", "2"]);
        assert_eq!(echo.body_len, body.len() as u64);
        assert_eq!(
            echo.body_sha256,
            crate::common::upstream::hex(&sha2::Sha256::digest(&body))
        );
    })
    .await;
}

/// Speaks h2c (prior knowledge) to the sidecar, its first `first` bytes alone and the rest
/// 100 ms later, and checks that a GET is answered over HTTP/2.
async fn h2_served_when_the_preface_is_split_after(first: usize) {
    bounded(Duration::from_secs(10), async {
        let (_upstream, sidecar) = setup().await;
        let stream = TcpStream::connect(sidecar.client).await.expect("connect");
        let stream = Trickle::new(stream, first, Duration::from_millis(100));
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("an h2c prior-knowledge handshake");
        tokio::spawn(connection);
        let request = Request::get(sidecar.url("/_matrix/client/r0/pushrules/"))
            .body(Full::new(Bytes::new()))
            .expect("a request");
        let response = sender.send_request(request).await.expect("an answer");
        assert_eq!(response.version(), Version::HTTP_2);
        assert_eq!(response.status(), StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn an_http2_preface_that_arrives_in_pieces_is_still_served_as_http2() {
    // The first 5 bytes of the preface ("PRI *") are also how no HTTP/1 request starts, but
    // not enough to tell.
    h2_served_when_the_preface_is_split_after(5).await;
}

#[tokio::test]
async fn an_http2_preface_whose_first_byte_arrives_alone_is_still_served_as_http2() {
    // "P" alone is a prefix of the preface and of POST, PUT and PATCH.
    h2_served_when_the_preface_is_split_after(1).await;
}

#[tokio::test]
async fn an_http1_request_sent_a_byte_at_a_time_is_served_with_every_byte() {
    bounded(Duration::from_secs(10), async {
        let (_upstream, sidecar) = setup().await;
        let request = b"POST /_matrix/client/r0/bytewise HTTP/1.1\r\nhost: hs.example\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
        let mut stream = TcpStream::connect(sidecar.client).await.expect("connect");
        // The first bytes one at a time ("P", "PO": prefixes of the HTTP/2 preface
        // and not), then the rest.
        for byte in &request[..6] {
            stream.write_all(&[*byte]).await.expect("a byte");
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        stream.write_all(&request[6..]).await.expect("the rest");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.expect("the answer");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let body = &answer[answer.find("\r\n\r\n").expect("a head") + 4..];
        let echo: Echo = serde_json::from_str(body).expect("an echo");
        assert_eq!(echo.method, "POST");
        assert_eq!(echo.uri, "/_matrix/client/r0/bytewise");
        assert_eq!(echo.body_len, 5);
    })
    .await;
}

#[tokio::test]
async fn a_tls_client_listener_serves_http2_when_alpn_chooses_it_and_http1_otherwise() {
    bounded(Duration::from_secs(10), async {
        let upstream = Upstream::start().await;
        let certs = tempfile::tempdir().expect("a temp dir");
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("a self-signed certificate");
        let files = threepid_sidecar::config::TlsFiles {
            cert: certs.path().join("cert.pem"),
            key: certs.path().join("key.pem"),
        };
        std::fs::write(&files.cert, certified.cert.pem()).expect("write the certificate");
        std::fs::write(&files.key, certified.signing_key.serialize_pem()).expect("write the key");
        let mut config = TestConfig::new(&upstream.url());
        config
            .set("server.tls_cert_file", files.cert.display().to_string())
            .set("server.tls_key_file", files.key.display().to_string());
        let sidecar = Sidecar::start(config).await;
        let url = format!(
            "https://localhost:{}/_matrix/client/r0/pushrules/",
            sidecar.client.port()
        );
        for version in [Version::HTTP_2, Version::HTTP_11] {
            let answer =
                http::send_tls_as(version, Method::GET, &url, &[], Bytes::new(), &files.cert).await;
            assert_eq!(answer.version, version);
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
            let echo: Echo = serde_json::from_slice(&answer.body).expect("an echo");
            assert_eq!(echo.version, "HTTP/1.1");
        }
    })
    .await;
}

/// A client stream whose first write sends only `first` bytes and whose next write waits
/// `pause`: a request head (or preface) that reaches the server in two pieces.
struct Trickle {
    inner: TcpStream,
    first: usize,
    pause: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    pause_for: Duration,
    written: usize,
}

impl Trickle {
    fn new(inner: TcpStream, first: usize, pause: Duration) -> Self {
        Self {
            inner,
            first,
            pause: None,
            pause_for: pause,
            written: 0,
        }
    }
}

impl tokio::io::AsyncRead for Trickle {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Trickle {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.written == 0 {
            let n = buf.len().min(this.first);
            let result = std::pin::Pin::new(&mut this.inner).poll_write(cx, &buf[..n]);
            if let Poll::Ready(Ok(n)) = result {
                this.written = n;
                this.pause = Some(Box::pin(tokio::time::sleep(this.pause_for)));
            }
            return result;
        }
        if let Some(pause) = this.pause.as_mut() {
            if pause.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.pause = None;
        }
        std::pin::Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[tokio::test]
async fn an_unreachable_upstream_gets_502_with_a_matrix_body() {
    bounded(Duration::from_secs(10), async {
        let mut config = TestConfig::new(&closed_port_url());
        config.set("upstream.connect_timeout", "2s");
        let sidecar = Sidecar::start(config).await;
        let answer = http::get(&sidecar.url("/_matrix/client/r0/account/whoami")).await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
        assert_eq!(answer.errcode(), "M_UNKNOWN");
        assert_eq!(answer.headers["content-type"], "application/json");
    })
    .await;
}

#[tokio::test]
async fn a_slow_upstream_gets_504_with_a_matrix_body() {
    bounded(Duration::from_secs(10), async {
        let (_upstream, sidecar) = setup_with(|c| {
            c.set("upstream.response_timeout", "300ms");
        })
        .await;
        let started = Instant::now();
        let answer = http::get(&sidecar.url("/slow?ms=3000")).await;
        assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(answer.errcode(), "M_UNKNOWN");
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(
            took < Duration::from_millis(2000),
            "the timeout did not fire: {took:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_sync_long_poll_longer_than_the_response_timeout_is_not_cut_short() {
    bounded(Duration::from_secs(10), async {
        let (_upstream, sidecar) = setup_with(|c| {
            c.set("upstream.response_timeout", "300ms");
        })
        .await;
        let started = Instant::now();
        let answer =
            http::get(&sidecar.url("/_matrix/client/r0/sync?since=s72_1&timeout=900")).await;
        let echo = echo(&answer);
        assert!(started.elapsed() >= Duration::from_millis(900));
        assert_eq!(echo.uri, "/_matrix/client/r0/sync?since=s72_1&timeout=900");

        // The same wait on an endpoint that is not a long-poll is cut short.
        let answer = http::get(&sidecar.url("/slow?ms=900&timeout=900")).await;
        assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    })
    .await;
}

#[tokio::test]
async fn a_client_that_hangs_up_cancels_the_upstream_request() {
    bounded(Duration::from_secs(10), async {
        let (upstream, sidecar) = setup().await;
        let mut stream = TcpStream::connect(sidecar.client).await.expect("connect");
        stream
            .write_all(b"GET /hang HTTP/1.1\r\nhost: hs.example\r\n\r\n")
            .await
            .expect("write");
        assert!(
            wait_until(Duration::from_secs(3), || upstream.hits("/hang") == 1).await,
            "the request reached the upstream"
        );
        assert_eq!(upstream.hangs_dropped(), 0);
        drop(stream);
        assert!(
            wait_until(Duration::from_secs(2), || upstream.hangs_dropped() == 1).await,
            "the upstream request was not cancelled when the client went away"
        );
    })
    .await;
}

#[tokio::test]
async fn oversized_request_headers_get_431() {
    bounded(Duration::from_secs(10), async {
        let (upstream, sidecar) = setup_with(|c| {
            c.set("server.max_header_bytes", 8192i64);
        })
        .await;
        // Under the limit: forwarded.
        let fits = "a".repeat(4000);
        let answer = http::send(
            Method::GET,
            &sidecar.url("/fits"),
            &[("x-big", &fits)],
            Bytes::new(),
        )
        .await;
        assert_eq!(echo(&answer).header("x-big"), Some(fits.as_str()));

        let big = "b".repeat(9000);
        let request = format!("GET /too-big HTTP/1.1\r\nhost: hs.example\r\nx-big: {big}\r\n\r\n");
        let out = raw_exchange(sidecar.client, request.as_bytes(), Duration::from_secs(3)).await;
        let head = String::from_utf8_lossy(&out);
        assert!(head.starts_with("HTTP/1.1 431"), "{head}");
        assert_eq!(upstream.hits("/too-big"), 0);
    })
    .await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_and_upstream_errors_by_kind() {
    bounded(Duration::from_secs(10), async {
        let sidecar = Sidecar::start(TestConfig::new(&closed_port_url())).await;
        let answer = http::get(&sidecar.url("/_matrix/client/r0/account/whoami")).await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
        let answer = http::get(&sidecar.url("/_matrix/client/versions")).await;
        assert_eq!(answer.status, StatusCode::BAD_GATEWAY);

        let metrics = http::get(&sidecar.admin_url("/metrics")).await;
        assert_eq!(metrics.status, StatusCode::OK);
        let text = metrics.text();
        let value = |series: &str| -> f64 {
            text.lines()
                .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
                .unwrap_or_else(|| panic!("no {series} in\n{text}"))
                .parse()
                .expect("a number")
        };
        assert_eq!(
            value(r#"threepid_sidecar_http_requests_total{route="forwarded",status="5xx"}"#),
            1.0
        );
        assert_eq!(
            value(r#"threepid_sidecar_http_requests_total{route="versions",status="5xx"}"#),
            1.0
        );
        // At least these two; the sidecar may also have asked the upstream on its own.
        assert!(value(r#"threepid_sidecar_upstream_errors_total{kind="connect"}"#) >= 2.0);
        let count = value("threepid_sidecar_upstream_response_seconds_count");
        assert!(count >= 2.0, "{text}");
        assert_eq!(
            value(r#"threepid_sidecar_upstream_response_seconds_bucket{le="+Inf"}"#),
            count
        );
        assert!(
            text.contains("# TYPE threepid_sidecar_upstream_response_seconds histogram"),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_slow_upload_is_not_cut_short_by_the_response_timeout() {
    bounded(Duration::from_secs(10), async {
        let (_upstream, sidecar) = setup_with(|c| {
            c.set("upstream.response_timeout", "300ms");
        })
        .await;
        // 10 KiB over a second: a phone uploading a video, scaled down.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let chunk = Bytes::from(vec![b'v'; 1024]);
        tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                if tx.send(chunk.clone()).await.is_err() {
                    return;
                }
            }
        });
        let client = Client::builder(TokioExecutor::new()).build_http::<ChannelBody>();
        let request = Request::post(sidecar.url("/_matrix/media/r0/upload?filename=clip.mp4"))
            .body(ChannelBody {
                parts: rx,
                len: 10 * 1024,
            })
            .expect("a request");
        let response = client.request(request).await.expect("an answer");
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the answer's body")
            .to_bytes();
        assert_eq!(
            status,
            StatusCode::OK,
            "the upload was cut off: {}",
            String::from_utf8_lossy(&body)
        );
        let echo: Echo = serde_json::from_slice(&body).expect("an echo");
        assert_eq!(echo.body_len, 10 * 1024);
    })
    .await;
}

#[tokio::test]
async fn oversized_request_headers_over_http2_get_431() {
    bounded(Duration::from_secs(10), async {
        let (upstream, sidecar) = setup_with(|c| {
            c.set("server.max_header_bytes", 8192i64);
        })
        .await;
        let stream = TcpStream::connect(sidecar.client).await.expect("connect");
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("an h2c prior-knowledge handshake");
        tokio::spawn(connection);
        let request = Request::get(sidecar.url("/too-big"))
            .header("x-big", "b".repeat(20_000))
            .body(Full::new(Bytes::new()))
            .expect("a request");
        let response = sender.send_request(request).await;
        match response {
            Ok(response) => assert_eq!(
                response.status(),
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            ),
            Err(e) => panic!("no 431 over h2: {e:?}"),
        }
        assert_eq!(upstream.hits("/too-big"), 0);
    })
    .await;
}

#[tokio::test]
async fn an_http2_client_that_resets_its_stream_cancels_the_upstream_request() {
    bounded(Duration::from_secs(10), async {
        let (upstream, sidecar) = setup().await;
        let stream = TcpStream::connect(sidecar.client).await.expect("connect");
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("an h2c prior-knowledge handshake");
        tokio::spawn(connection);
        let request = Request::get(sidecar.url("/hang"))
            .body(Full::new(Bytes::new()))
            .expect("a request");
        let pending = tokio::spawn(sender.send_request(request));
        assert!(
            wait_until(Duration::from_secs(3), || upstream.hits("/hang") == 1).await,
            "the request reached the upstream"
        );
        // Dropping the response future resets the stream; the connection stays open.
        pending.abort();
        assert!(
            wait_until(Duration::from_secs(2), || upstream.hangs_dropped() == 1).await,
            "the upstream request was not cancelled when the client reset its stream"
        );
        assert!(sender.is_ready(), "the h2 connection is still up");
    })
    .await;
}
