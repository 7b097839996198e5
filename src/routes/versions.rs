//! `GET /_matrix/client/versions`: forwarded, and the answer told that this homeserver no
//! longer requires an identity server (`unstable_features["m.require_identity_server"]
//! = false`, MSC2263), and — while the v3→r0 mapping is on — `upstream.advertise_versions`
//! added to its `versions` (matrix-js-sdk refuses a homeserver without a `v1.x`).
//! Everything else in the answer is kept.

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use serde_json::{Map, Value};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::AppState;
use crate::matrix::{self, Body, Read, full};
use crate::metrics::Metrics;
use crate::proxy::{self, ConnInfo, Upstream};
use crate::state::VersionsRewrite;

/// The flag MSC2263 defines.
pub const FLAG: &str = "m.require_identity_server";

/// A `/versions` answer larger than this is passed on untouched.
const MAX_REWRITE_BYTES: usize = 1 << 20;

/// Sets the flag in a `/versions` JSON body; `None` when the body is not a JSON object
/// (then it passes unchanged). Key order is kept.
pub fn inject_flag(body: &[u8]) -> Option<Vec<u8>> {
    rewrite(serde_json::from_slice(body).ok()?, &[])
}

/// The `/versions` rewrite on an already parsed object: the flag set, and each of
/// `advertise` appended to `versions` unless it is already listed (nothing is ever removed;
/// a `versions` that is not a list of strings is left as it is). `None` when
/// `unstable_features` is there but not an object: replacing it would destroy data, so the
/// answer passes unchanged.
pub fn rewrite(mut object: Map<String, Value>, advertise: &[String]) -> Option<Vec<u8>> {
    let features = object
        .entry("unstable_features")
        .or_insert_with(|| Value::Object(Map::new()));
    match features {
        Value::Object(features) => {
            features.insert(FLAG.to_owned(), Value::Bool(false));
        }
        _ => return None,
    }
    if !advertise.is_empty()
        && let Some(Value::Array(listed)) = object.get_mut("versions")
        && listed.iter().all(Value::is_string)
    {
        for version in advertise {
            if !listed.iter().any(|v| v.as_str() == Some(version)) {
                listed.push(Value::String(version.clone()));
            }
        }
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
    let bytes = match matrix::read_up_to(body, MAX_REWRITE_BYTES).await {
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
    let rewrite = rewrite_answer(state, bytes);
    let body = match &rewrite.rewritten {
        Some(rewritten) => {
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            // The answer is ours now: a web client on another origin must be able to read it.
            matrix::add_cors(&mut parts.headers);
            rewritten.clone()
        }
        None => rewrite.upstream.clone(),
    };
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    Response::from_parts(parts, full(body))
}

/// The homeserver's `/versions` body, observed for the v3→r0 mapping and rewritten (the last
/// rewrite again when the answer is the same as last time).
fn rewrite_answer(state: &AppState, bytes: Bytes) -> Arc<VersionsRewrite> {
    if let Some(last) = state.versions_rewrite_of(&bytes) {
        if let Some(object) = &last.parsed {
            state.observe_upstream_versions(object);
        }
        if last.mapping == state.upstream.compat.is_active() {
            return last;
        }
    }
    let parsed: Option<Map<String, Value>> = serde_json::from_slice(&bytes).ok();
    if let Some(object) = &parsed {
        state.observe_upstream_versions(object);
    }
    // Read after observing: this very answer may have turned the mapping on or off.
    let mapping = state.upstream.compat.is_active();
    let advertise: &[String] = if mapping {
        &state.config.upstream.advertise_versions
    } else {
        &[]
    };
    let rewritten = parsed
        .clone()
        .and_then(|object| rewrite(object, advertise))
        .map(Bytes::from);
    let rewrite = Arc::new(VersionsRewrite {
        // A copy: the body may be a slice of a connection's whole read buffer.
        upstream: Bytes::copy_from_slice(&bytes),
        parsed,
        mapping,
        rewritten,
    });
    state.keep_versions_rewrite(rewrite.clone());
    rewrite
}

/// In `upstream.path_compat = "auto"`: reads the upstream's `/versions` at start and
/// every `upstream.versions_refresh` (every 5 s while it cannot be read), until `stop`.
pub async fn watch_upstream_versions(state: Arc<AppState>, mut stop: watch::Receiver<bool>) {
    const RETRY: Duration = Duration::from_secs(5);
    let refresh = state.config.upstream.versions_refresh;
    let mut logged = false;
    loop {
        let versions = fetch_upstream_json(&state.upstream, &state.metrics, VERSIONS_PATH).await;
        let wait = match versions {
            Ok(versions) => {
                state.observe_upstream_versions(&versions);
                if !logged {
                    tracing::info!(
                        active = state.upstream.compat.is_active(),
                        "upstream /versions read: v3→r0 path compatibility decided"
                    );
                    logged = true;
                    check_public_baseurl(&state).await;
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

/// Where the homeserver lists its spec versions.
pub const VERSIONS_PATH: &str = "/_matrix/client/versions";
/// Where a homeserver (Synapse with a `public_baseurl`) names the base URL clients should use.
pub const WELL_KNOWN_PATH: &str = "/.well-known/matrix/client";

/// A JSON object the upstream serves at `path` (GET, no account needed). `doctor` asks
/// the same way the running sidecar does.
pub async fn fetch_upstream_json(
    upstream: &Upstream,
    metrics: &Metrics,
    path: &'static str,
) -> Result<Map<String, Value>, String> {
    let path = hyper::http::uri::PathAndQuery::from_static(path);
    let mut request = Request::new(crate::matrix::empty());
    *request.uri_mut() = upstream.uri_for(Some(&path));
    let response = upstream
        .send(request, Duration::ZERO, metrics)
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

/// The base URL a homeserver tells clients to use (its `public_baseurl`, which Synapse puts
/// into `/.well-known/matrix/client` and into every `/login` answer), if it names one.
pub fn advertised_base_url(well_known: &Map<String, Value>) -> Option<&str> {
    well_known.get("m.homeserver")?.get("base_url")?.as_str()
}

/// Whether two base URLs name the same place (a trailing `/` and the case of the host
/// aside).
pub fn same_base_url(a: &str, b: &url::Url) -> bool {
    url::Url::parse(a).is_ok_and(|a| {
        a.scheme() == b.scheme()
            && a.host() == b.host()
            && a.port_or_known_default() == b.port_or_known_default()
            && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
    })
}

/// The base URL the homeserver advertises, when it is not `ours`.
pub fn other_base_url<'a>(well_known: &'a Map<String, Value>, ours: &url::Url) -> Option<&'a str> {
    advertised_base_url(well_known).filter(|theirs| !same_base_url(theirs, ours))
}

/// What another advertised base URL means, and what to do.
pub const OTHER_BASE_URL: &str = "the homeserver advertises another base URL than \
    server.public_baseurl: clients that follow it (Element does after sign-in) bypass the \
    sidecar; set the homeserver's public_baseurl to the sidecar's";

/// Warns when the homeserver advertises another base URL than `server.public_baseurl`:
/// Element switches to the `well_known` of a `/login` answer after sign-in, and would
/// then bypass the sidecar.
async fn check_public_baseurl(state: &AppState) {
    let Ok(well_known) =
        fetch_upstream_json(&state.upstream, &state.metrics, WELL_KNOWN_PATH).await
    else {
        return; // not served (no public_baseurl on the homeserver): nothing to compare
    };
    let ours = &state.config.server.public_baseurl;
    if let Some(theirs) = other_base_url(&well_known, ours) {
        tracing::warn!(homeserver = theirs, sidecar = %ours, "{OTHER_BASE_URL}");
    }
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
    fn advertised_versions_are_appended_once_and_nothing_is_removed() {
        let advertise = ["v1.1".to_owned(), "v1.2".to_owned()];
        let out = |text: &str| {
            String::from_utf8(
                super::rewrite(serde_json::from_str(text).unwrap(), &advertise).unwrap(),
            )
            .unwrap()
        };
        assert_eq!(
            out(r#"{"versions":["r0.0.1","r0.5.0"]}"#),
            r#"{"versions":["r0.0.1","r0.5.0","v1.1","v1.2"],"unstable_features":{"m.require_identity_server":false}}"#
        );
        assert_eq!(
            out(r#"{"versions":["v1.1","r0.5.0"]}"#),
            r#"{"versions":["v1.1","r0.5.0","v1.2"],"unstable_features":{"m.require_identity_server":false}}"#
        );
        // Not a list of strings, or absent: left as it is.
        assert_eq!(
            out(r#"{"versions":"r0.5.0"}"#),
            r#"{"versions":"r0.5.0","unstable_features":{"m.require_identity_server":false}}"#
        );
        assert_eq!(
            out(r#"{"versions":["r0.5.0",1]}"#),
            r#"{"versions":["r0.5.0",1],"unstable_features":{"m.require_identity_server":false}}"#
        );
        assert_eq!(
            out(r#"{}"#),
            r#"{"unstable_features":{"m.require_identity_server":false}}"#
        );
    }

    #[test]
    fn a_homeserver_advertising_its_own_address_is_told_apart_from_ours() {
        let ours = url::Url::parse("https://matrix.example.org/").unwrap();
        assert!(same_base_url("https://matrix.example.org", &ours));
        assert!(same_base_url("https://MATRIX.example.org:443/", &ours));
        assert!(!same_base_url("http://127.0.0.1:8008/", &ours));
        assert!(!same_base_url("https://matrix.example.org:8448/", &ours));
        assert!(!same_base_url("not a url", &ours));
        let well_known =
            serde_json::json!({"m.homeserver": {"base_url": "http://127.0.0.1:8008/"}});
        assert_eq!(
            advertised_base_url(well_known.as_object().unwrap()),
            Some("http://127.0.0.1:8008/")
        );
    }

    #[test]
    fn non_objects_are_left_alone() {
        assert_eq!(rewrite("not json"), None);
        assert_eq!(rewrite("[1,2]"), None);
        assert_eq!(rewrite(r#"{"unstable_features":[1]}"#), None);
    }
}
