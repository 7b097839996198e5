//! A stand-in SMS gateway for `sms.transport = "webhook"`: an in-process HTTP/1.1 server on
//! `127.0.0.1:0` that records every request it gets (method, path, headers in order, the
//! whole body) and answers a programmable status, 200 until told otherwise.
//!
//! ```ignore
//! let gateway = SmsGateway::start().await;
//! config.sms_gateway(&gateway);
//! // … requestToken …
//! let sms = &gateway.received()[0];
//! assert_eq!(sms.header("authorization"), Some("Bearer tok"));
//! let code = sms.code();
//! gateway.set_status(StatusCode::INTERNAL_SERVER_ERROR); // the gateway refuses from now on
//! ```
//!
//! A request is recorded once its whole body has arrived and before it is answered, so a
//! sidecar that waits for the gateway's answer (as requestToken does) has always been
//! recorded by the time the client has its answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;

use super::serve::serve_http1;
use tokio::task::JoinHandle;

/// The path the gateway is reached at; any path is accepted and recorded.
pub const SEND_PATH: &str = "/sms/send";

/// One request the gateway received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    /// Every header, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Received {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics (naming the body) when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the gateway got a body that is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// `to` of the JSON body.
    pub fn to(&self) -> String {
        self.json()["to"]
            .as_str()
            .unwrap_or_else(|| panic!("no string `to` in {}", self.json()))
            .to_owned()
    }

    /// `body` of the JSON body: the text message.
    pub fn text(&self) -> String {
        self.json()["body"]
            .as_str()
            .unwrap_or_else(|| panic!("no string `body` in {}", self.json()))
            .to_owned()
    }

    /// The verification code in the text: its only run of exactly six digits.
    pub fn code(&self) -> String {
        let text = self.text();
        let runs: Vec<&str> = text
            .split(|c: char| !c.is_ascii_digit())
            .filter(|run| run.len() == 6)
            .collect();
        assert_eq!(runs.len(), 1, "one six-digit code in {text:?}");
        runs[0].to_owned()
    }
}

struct State {
    status: AtomicU16,
    received: Mutex<Vec<Received>>,
}

/// A running gateway; stops accepting when dropped.
pub struct SmsGateway {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for SmsGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmsGateway {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the stand-in SMS gateway");
        let addr = listener.local_addr().expect("a local address");
        let state = Arc::new(State {
            status: AtomicU16::new(StatusCode::OK.as_u16()),
            received: Mutex::new(Vec::new()),
        });
        let task = serve_http1(listener, state.clone(), |state, request| async move {
            handle(&state, request).await
        });
        Self { addr, state, task }
    }

    /// `http://127.0.0.1:<port>/sms/send`, for `sms.webhook_url`.
    pub fn url(&self) -> String {
        format!("http://{}{SEND_PATH}", self.addr)
    }

    /// What every later POST is answered with.
    pub fn set_status(&self, status: StatusCode) {
        self.state.status.store(status.as_u16(), Ordering::SeqCst);
    }

    /// Every request received so far, oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().expect("not poisoned").clone()
    }

    /// How many requests were received so far.
    pub fn count(&self) -> usize {
        self.state.received.lock().expect("not poisoned").len()
    }

    /// Waits until at least `n` requests have arrived and returns them all; panics after
    /// `limit`.
    pub async fn wait_for(&self, n: usize, limit: Duration) -> Vec<Received> {
        let waited = tokio::time::timeout(limit, async {
            while self.count() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "expected {n} SMS within {limit:?}, got {}",
            self.count()
        );
        self.received()
    }
}

async fn handle(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            let mut response = Response::new(Full::from(format!("body: {e}")));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
    };
    state.received.lock().expect("not poisoned").push(Received {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    });
    let status = if parts.method == Method::POST {
        StatusCode::from_u16(state.status.load(Ordering::SeqCst)).expect("a status set by a test")
    } else {
        StatusCode::METHOD_NOT_ALLOWED
    };
    let answer = if status.is_success() {
        r#"{"status":"queued"}"#
    } else {
        r#"{"error":"the stand-in gateway was told to refuse"}"#
    };
    let mut response = Response::new(Full::from(answer));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
