//! A small HTTP client for tests: one request, the whole answer.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Method, Request, StatusCode, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A whole response.
#[derive(Debug)]
pub struct Answer {
    pub version: Version,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The Matrix `errcode`, asserting that `error` is a sentence.
    pub fn errcode(&self) -> String {
        let body = self.json();
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.len() > 5, "error is not a sentence: {body}");
        body["errcode"].as_str().unwrap_or_default().to_owned()
    }
}

pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends one request and reads the whole answer.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let mut request = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(Full::new(body.into()))
        .expect("a valid test request");
    let response = client()
        .request(request)
        .await
        .unwrap_or_else(|e| panic!("request to {url} failed: {e:?}"));
    answer(response).await
}

pub async fn get(url: &str) -> Answer {
    send(Method::GET, url, &[], Bytes::new()).await
}

pub async fn post_json(url: &str, body: &serde_json::Value) -> Answer {
    send(
        Method::POST,
        url,
        &[("content-type", "application/json")],
        serde_json::to_vec(body).expect("JSON serialises"),
    )
    .await
}

pub async fn post_form(url: &str, pairs: &[(&str, &str)]) -> Answer {
    let body: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    send(
        Method::POST,
        url,
        &[("content-type", "application/x-www-form-urlencoded")],
        body,
    )
    .await
}

/// A request over https trusting only the certificate at `ca_pem` (the self-signed one
/// the sidecar generated for its identity listener).
pub async fn send_tls(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
    ca_pem: &std::path::Path,
) -> Answer {
    send_tls_as(Version::HTTP_11, method, url, headers, body, ca_pem).await
}

/// [`send_tls`] offering only `version` in ALPN (HTTP/1.1 or HTTP/2); the answer's version
/// is in [`Answer::version`].
pub async fn send_tls_as(
    version: Version,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
    ca_pem: &std::path::Path,
) -> Answer {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_pem).expect("the generated certificate") {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a usable root");
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let connector = if version == Version::HTTP_2 {
        connector.enable_http2().build()
    } else {
        connector.enable_http1().build()
    };
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(version == Version::HTTP_2)
        .build(connector);
    let mut request = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let request = request
        .body(Full::new(body.into()))
        .expect("a valid request");
    let response = client
        .request(request)
        .await
        .unwrap_or_else(|e| panic!("https request to {url} failed: {e:?}"));
    answer(response).await
}

/// GET over https to the identity listener (see [`send_tls`]).
pub async fn get_tls(url: &str, ca_pem: &std::path::Path) -> Answer {
    send_tls(Method::GET, url, &[], Bytes::new(), ca_pem).await
}

async fn answer(response: hyper::Response<hyper::body::Incoming>) -> Answer {
    let version = response.version();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("the whole body")
        .to_bytes();
    Answer {
        version,
        status,
        headers,
        body,
    }
}

/// A request body fed part by part through a channel, as a slow client sends it; its length
/// is announced up front.
pub struct ChannelBody {
    pub parts: tokio::sync::mpsc::Receiver<Bytes>,
    pub len: u64,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.parts
            .poll_recv(cx)
            .map(|part| part.map(|b| Ok(hyper::body::Frame::data(b))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.len)
    }
}
