//! `GET /_matrix/client/versions`: forwarded, and the answer told that this homeserver no
//! longer requires an identity server (`unstable_features["m.require_identity_server"]
//! = false`, MSC2263). Everything else in the answer is kept.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value};

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
    let mut object: Map<String, Value> = serde_json::from_slice(body).ok()?;
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
        .send(request, std::time::Duration::ZERO, &state.metrics)
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
    let (mut parts, body) = proxy::prepare_response(response).into_parts();
    let bytes: Bytes = match Limited::new(body, MAX_REWRITE_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the upstream /versions answer");
            return proxy::UpstreamError::Protocol(e.to_string())
                .into_matrix()
                .into_response();
        }
    };
    let body = match inject_flag(&bytes) {
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
