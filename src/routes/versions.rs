//! `GET /_matrix/client/versions`: forwarded, and the answer told that this homeserver no
//! longer requires an identity server (`unstable_features["m.require_identity_server"]
//! = false`, MSC2263). Everything else in the answer is kept.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::{BodyExt, BodyStream, Limited, StreamBody};
use hyper::body::Frame;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::AppState;
use crate::matrix::{Body, full};
use crate::proxy::{self, ConnInfo};

/// The flag MSC2263 defines.
pub const FLAG: &str = "m.require_identity_server";

/// A `/versions` answer larger than this is passed on untouched.
const MAX_REWRITE_BYTES: usize = 1 << 20;

/// Sets the flag in a `/versions` JSON body; `None` when the body is not a JSON object
/// (then it passes unchanged). Key order is kept.
pub fn inject_flag(body: &[u8]) -> Option<Vec<u8>> {
    inject_flag_into(serde_json::from_slice(body).ok()?)
}

/// [`inject_flag`] on an already parsed object.
pub fn inject_flag_into(mut object: Map<String, Value>) -> Option<Vec<u8>> {
    let features = object
        .entry("unstable_features")
        .or_insert_with(|| Value::Object(Map::new()));
    match features {
        Value::Object(features) => {
            features.insert(FLAG.to_owned(), Value::Bool(false));
        }
        // Not an object: replacing it would destroy data, so leave the answer alone.
        _ => return None,
    }
    Some(serde_json::to_vec(&object).expect("a JSON map always serialises"))
}

/// GET /_matrix/client/versions
pub async fn handle(
    state: &AppState,
    conn: &ConnInfo,
    mut request: Request<Body>,
) -> Response<Body> {
    // Ask for a plain answer so that it can be rewritten.
    request.headers_mut().remove(header::ACCEPT_ENCODING);
    let request = proxy::prepare_request(
        request,
        &state.upstream,
        conn,
        &state.config.server.trusted_proxies,
    );
    let response = match state
        .upstream
        .send(request, Duration::ZERO, &state.metrics)
        .await
    {
        Ok(response) => response,
        Err(e) => {
            tracing::warn!(error = %e, "upstream /versions failed");
            return e.into_matrix().into_response();
        }
    };
    let encoded = response
        .headers()
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v != "identity");
    if response.status() != StatusCode::OK || encoded {
        return proxy::prepare_response(response);
    }
    let declared_too_large = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|len| len > MAX_REWRITE_BYTES);
    if declared_too_large {
        return proxy::prepare_response(response);
    }
    let (mut parts, body) = proxy::prepare_response(response).into_parts();
    let bytes = match read_up_to(body, MAX_REWRITE_BYTES).await {
        Ok(Read::Whole(bytes)) => bytes,
        // Too large to rewrite: what was read, then the rest, unchanged.
        Ok(Read::Partial(body)) => return Response::from_parts(parts, body),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the upstream /versions answer");
            state
                .metrics
                .upstream_error(crate::metrics::UpstreamErrorKind::Protocol);
            return proxy::UpstreamError::Protocol(e.to_string())
                .into_matrix()
                .into_response();
        }
    };
    let parsed: Option<Map<String, Value>> = serde_json::from_slice(&bytes).ok();
    if let Some(object) = &parsed {
        state.observe_upstream_versions(object);
    }
    let body = match parsed.and_then(inject_flag_into) {
        Some(rewritten) => {
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Bytes::from(rewritten)
        }
        None => bytes,
    };
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, full(body))
}

enum Read {
    /// The whole body, within the limit.
    Whole(Bytes),
    /// Over the limit: a body that replays what was read, then streams the rest.
    Partial(Body),
}

/// Reads a body of at most `limit` bytes; a larger one comes back whole but unread.
async fn read_up_to(mut body: Body, limit: usize) -> Result<Read, hyper::Error> {
    let mut buffer = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue; // trailers: nothing to rewrite
        };
        if buffer.len() + data.len() > limit {
            buffer.extend_from_slice(&data);
            let read = futures_util::stream::once(async move { Ok(Frame::data(buffer.freeze())) });
            let rest = BodyStream::new(body);
            return Ok(Read::Partial(BodyExt::boxed(StreamBody::new(
                read.chain(rest),
            ))));
        }
        buffer.extend_from_slice(&data);
    }
    Ok(Read::Whole(buffer.freeze()))
}

/// In `upstream.path_compat = "auto"`: reads the upstream's `/versions` at start and
/// every `upstream.versions_refresh` (every 5 s while it cannot be read), until `stop`.
pub async fn watch_upstream_versions(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    const RETRY: Duration = Duration::from_secs(5);
    let refresh = state.config.upstream.versions_refresh;
    let mut logged = false;
    loop {
        let wait = match fetch_upstream_versions(&state).await {
            Ok(versions) => {
                state.observe_upstream_versions(&versions);
                if !logged {
                    tracing::info!(
                        active = state.upstream.compat.is_active(),
                        "upstream /versions read: v3→r0 path compatibility decided"
                    );
                    logged = true;
                }
                refresh
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the upstream /versions; trying again");
                RETRY.min(refresh)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn fetch_upstream_versions(state: &AppState) -> Result<Map<String, Value>, String> {
    let path = hyper::http::uri::PathAndQuery::from_static("/_matrix/client/versions");
    let mut request = Request::new(crate::matrix::empty());
    *request.uri_mut() = state.upstream.uri_for(Some(&path));
    let response = state
        .upstream
        .send(request, Duration::ZERO, &state.metrics)
        .await
        .map_err(|e| e.to_string())?;
    if response.status() != StatusCode::OK {
        return Err(format!("status {}", response.status()));
    }
    let bytes = Limited::new(response.into_body(), MAX_REWRITE_BYTES)
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(text: &str) -> Option<String> {
        inject_flag(text.as_bytes()).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn the_flag_is_added_to_existing_unstable_features() {
        let out =
            rewrite(r#"{"versions":["r0.5.0"],"unstable_features":{"m.lazy_load_members":true}}"#)
                .unwrap();
        assert_eq!(
            out,
            r#"{"versions":["r0.5.0"],"unstable_features":{"m.lazy_load_members":true,"m.require_identity_server":false}}"#
        );
    }

    #[test]
    fn unstable_features_is_created_when_absent() {
        let out = rewrite(r#"{"versions":["r0.5.0"]}"#).unwrap();
        assert_eq!(
            out,
            r#"{"versions":["r0.5.0"],"unstable_features":{"m.require_identity_server":false}}"#
        );
    }

    #[test]
    fn a_true_flag_is_turned_false() {
        let out = rewrite(r#"{"unstable_features":{"m.require_identity_server":true}}"#).unwrap();
        assert_eq!(
            out,
            r#"{"unstable_features":{"m.require_identity_server":false}}"#
        );
    }

    #[test]
    fn unknown_fields_and_their_order_survive() {
        let out = rewrite(r#"{"z":1,"a":{"deep":[1,2,{"x":null}]},"versions":[]}"#).unwrap();
        assert!(
            out.starts_with(r#"{"z":1,"a":{"deep":[1,2,{"x":null}]},"versions":[],"#),
            "{out}"
        );
    }

    #[test]
    fn non_objects_are_left_alone() {
        assert_eq!(rewrite("not json"), None);
        assert_eq!(rewrite("[1,2]"), None);
        assert_eq!(rewrite(r#"{"unstable_features":[1]}"#), None);
    }
}
