//! Matrix error bodies and the shared HTTP body type. Every refusal the sidecar makes
//! itself is a [`MatrixError`]: an `errcode`, a sentence, and the right status.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::{BodyExt, BodyStream, Empty, Full, StreamBody, combinators::BoxBody};
use hyper::HeaderMap;
use hyper::body::{Body as _, Frame};
use hyper::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue,
};
use hyper::{Response, StatusCode};

/// Why a [`Body`] failed: hyper's error for a streamed body, or the sidecar's own when a
/// forwarded request body stopped arriving (`server.body_idle_timeout`, see `proxy`).
/// A concrete type rather than a boxed `dyn Error`: hyper's bounds are then met without
/// higher-ranked lifetimes that async handlers cannot prove `Send`.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error(transparent)]
    Hyper(#[from] hyper::Error),
    #[error("no part of the request body arrived for {} s", .0.as_secs_f64())]
    Idle(Duration),
}

/// The one body type of every request and response the sidecar handles: streamed
/// (`hyper::body::Incoming`) or built here (`Full`).
pub type Body = BoxBody<Bytes, BodyError>;

/// A streamed body as a [`Body`]. One without content (most requests) becomes [`empty`],
/// which allocates nothing.
pub fn streamed(body: hyper::body::Incoming) -> Body {
    if body.is_end_stream() {
        return empty();
    }
    body.map_err(BodyError::Hyper).boxed()
}

/// A body from bytes in memory.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body (boxing it allocates nothing: it has no size).
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// The CORS headers the Matrix spec asks of servers ("Web Browser Clients" in the
/// client-server API): any origin, the methods and the request headers its clients use.
const CORS: [(HeaderName, HeaderValue); 3] = [
    (ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")),
    (
        ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, POST, PUT, DELETE, OPTIONS"),
    ),
    (
        ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("X-Requested-With, Content-Type, Authorization"),
    ),
];

/// Adds the CORS headers: every JSON answer the sidecar writes itself carries them, so that
/// a web client on another origin can read it (a browser drops an answer without them).
pub fn add_cors(headers: &mut HeaderMap) {
    for (name, value) in CORS {
        headers.insert(name, value);
    }
}

/// A JSON response with the right `Content-Length` and the CORS headers.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).expect("a serde_json::Value always serialises");
    let len = bytes.len();
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, JSON);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    add_cors(headers);
    response
}

/// A Matrix error: `{"errcode": …, "error": …}` with a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub error: String,
    /// For 429: milliseconds until a retry can succeed (`retry_after_ms` and `Retry-After`).
    pub retry_after_ms: Option<u64>,
}

impl MatrixError {
    pub fn new(status: StatusCode, errcode: &'static str, error: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            error: error.into(),
            retry_after_ms: None,
        }
    }

    pub fn bad_request(errcode: &'static str, error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, errcode, error)
    }

    pub fn missing_param(name: &str) -> Self {
        Self::bad_request("M_MISSING_PARAM", format!("Missing parameter: {name}"))
    }

    pub fn invalid_param(error: impl Into<String>) -> Self {
        Self::bad_request("M_INVALID_PARAM", error)
    }

    pub fn not_json() -> Self {
        Self::bad_request("M_NOT_JSON", "Content not JSON.")
    }

    pub fn bad_json(error: impl Into<String>) -> Self {
        Self::bad_request("M_BAD_JSON", error)
    }

    pub fn too_large(limit: u64) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "M_TOO_LARGE",
            format!("The request body is larger than {limit} bytes."),
        )
    }

    /// The body of a request the sidecar answers itself did not arrive in time.
    pub fn body_timeout(within: Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "M_UNKNOWN",
            format!(
                "The request body did not arrive within {} s.",
                within.as_secs_f64()
            ),
        )
    }

    /// What a v1.x client expects of an endpoint the server does not have (404, not the
    /// 400 or HTML page a legacy homeserver answers).
    pub fn unrecognized() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "M_UNRECOGNIZED",
            "Unrecognized request",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "M_UNRECOGNIZED",
            "This endpoint does not accept this method.",
        )
    }

    /// The session store is down: the client should try again.
    pub fn store_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "M_UNKNOWN",
            "The verification service is temporarily unavailable; try again.",
        )
    }

    /// Our own failure.
    pub fn internal(error: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", error)
    }

    pub fn limit_exceeded(retry_after_ms: u64) -> Self {
        Self {
            retry_after_ms: Some(retry_after_ms),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "M_LIMIT_EXCEEDED",
                "Too many requests; wait before trying again.",
            )
        }
    }

    pub fn into_response(self) -> Response<Body> {
        let mut body = serde_json::json!({ "errcode": self.errcode, "error": self.error });
        if let Some(ms) = self.retry_after_ms {
            body["retry_after_ms"] = ms.into();
        }
        let mut response = json_response(self.status, &body);
        if let Some(ms) = self.retry_after_ms {
            let secs = ms.div_ceil(1000).max(1);
            response
                .headers_mut()
                .insert(hyper::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl std::fmt::Display for MatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.errcode,
            self.error
        )
    }
}

impl std::error::Error for MatrixError {}

/// Reads a whole request body of at most `limit` bytes: 413 `M_TOO_LARGE` beyond, 408 when
/// it has not all arrived `within` (a client trickling a body holds no handler for long).
pub async fn read_body(body: Body, limit: u64, within: Duration) -> Result<Bytes, MatrixError> {
    match tokio::time::timeout(within, read_whole_body(body, limit)).await {
        Ok(read) => read,
        Err(_) => Err(MatrixError::body_timeout(within)),
    }
}

/// [`read_body`] with no deadline of its own (an upstream's answer, already under the
/// upstream response timeout).
pub async fn read_whole_body(body: Body, limit: u64) -> Result<Bytes, MatrixError> {
    // A declared length (Content-Length, or content-length on HTTP/2) over the limit is
    // refused before anything is read: `Limited` alone would wait for the body to arrive.
    if hyper::body::Body::size_hint(&body).lower() > limit {
        return Err(MatrixError::too_large(limit));
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match http_body_util::Limited::new(body, limit_usize)
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(MatrixError::too_large(limit)),
        Err(e) => Err(MatrixError::bad_request(
            "M_UNKNOWN",
            format!("Could not read the request body: {e}"),
        )),
    }
}

/// A body read up to a limit ([`read_up_to`]).
pub enum Read {
    /// The whole body, within the limit.
    Whole(Bytes),
    /// Over the limit: a body that replays what was read, then streams the rest.
    Partial(Body),
}

/// Reads a body of at most `limit` bytes; a larger one comes back whole but unread.
pub async fn read_up_to(mut body: Body, limit: usize) -> Result<Read, BodyError> {
    // A body that comes in one piece (nearly every small one) is kept as it came; a second
    // piece starts a copy.
    let mut whole: Option<Bytes> = None;
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers: nothing to rewrite
        };
        let so_far = whole.as_ref().map_or(buffer.len(), Bytes::len);
        if so_far + data.len() > limit {
            let mut read = BytesMut::with_capacity(so_far + data.len());
            read.extend_from_slice(whole.as_deref().unwrap_or(&buffer));
            read.extend_from_slice(&data);
            let read = futures_util::stream::once(async move { Ok(Frame::data(read.freeze())) });
            let rest = BodyStream::new(body);
            return Ok(Read::Partial(BodyExt::boxed(StreamBody::new(
                read.chain(rest),
            ))));
        }
        match whole.take() {
            None if buffer.is_empty() => whole = Some(data),
            Some(first) => {
                buffer.extend_from_slice(&first);
                buffer.extend_from_slice(&data);
            }
            None => buffer.extend_from_slice(&data),
        }
    }
    Ok(Read::Whole(whole.unwrap_or_else(|| buffer.freeze())))
}

/// A JSON object from a body: 400 `M_NOT_JSON` when it is not JSON, `M_BAD_JSON` when it
/// is JSON but not an object.
pub fn parse_object(
    bytes: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, MatrixError> {
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        Ok(_) => Err(MatrixError::bad_json(
            "The request body must be a JSON object.",
        )),
        Err(_) => Err(MatrixError::not_json()),
    }
}

/// Whether the request says its body is a form (`application/x-www-form-urlencoded`).
pub fn is_form(headers: &hyper::HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .starts_with("application/x-www-form-urlencoded")
        })
}

/// String parameters from the query string and the body (JSON object or form), as the
/// identity-service API accepts them. Body values win over query values.
#[derive(Debug, Default)]
pub struct Params(std::collections::HashMap<String, String>);

impl Params {
    pub async fn from_request(
        request: hyper::Request<Body>,
        limit: u64,
        within: Duration,
    ) -> Result<Self, MatrixError> {
        let (parts, body) = request.into_parts();
        let bytes = read_body(body, limit, within).await?;
        Self::parse(parts.uri.query(), is_form(&parts.headers), &bytes)
    }

    /// The parameters of a query string and a body (a form when `form`, else JSON).
    pub fn parse(query: Option<&str>, form: bool, body: &[u8]) -> Result<Self, MatrixError> {
        let mut map: std::collections::HashMap<String, String> = query
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        if form {
            map.extend(form_urlencoded::parse(body).into_owned());
        } else if !body.iter().all(u8::is_ascii_whitespace) {
            for (key, value) in parse_object(body)? {
                let text = match value {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => continue,
                };
                map.insert(key, text);
            }
        }
        Ok(Self(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// A parameter the client API requires: 400 `M_MISSING_PARAM` without it.
    pub fn required(&self, key: &str) -> Result<&str, MatrixError> {
        self.get(key).ok_or_else(|| MatrixError::missing_param(key))
    }

    /// A parameter the identity API requires: 400 `M_MISSING_PARAMS` (its spelling).
    pub fn required_plural(&self, key: &str) -> Result<&str, MatrixError> {
        self.get(key).ok_or_else(|| {
            MatrixError::bad_request("M_MISSING_PARAMS", format!("Missing parameter: {key}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_json(response: Response<Body>) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn an_error_is_a_matrix_body_with_content_length() {
        let response = MatrixError::missing_param("email").into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let len: usize = response.headers()[CONTENT_LENGTH]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let body = body_json(response).await;
        assert_eq!(body["errcode"], "M_MISSING_PARAM");
        assert_eq!(body["error"], "Missing parameter: email");
        assert_eq!(len, serde_json::to_vec(&body).unwrap().len());
    }

    #[tokio::test]
    async fn limit_exceeded_carries_retry_after_in_body_and_header() {
        let response = MatrixError::limit_exceeded(1500).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[hyper::header::RETRY_AFTER], "2");
        assert_eq!(body_json(response).await["retry_after_ms"], 1500);
    }
}
