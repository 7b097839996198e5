//! The creds rewrite (DESIGN §1 step 4) on `POST …/register`, `…/account/password`,
//! `…/account/3pid` and `…/account/3pid/add`: wherever `(sid, client_secret)` names one
//! of the sidecar's sessions, the homeserver is told to ask the sidecar's identity
//! listener about it (`id_server`), and not to bind. Bodies that name no session of ours
//! are forwarded byte for byte.

use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response};
use serde_json::{Map, Value};

use crate::AppState;
use crate::matrix::{self, Body, MatrixError, full};
use crate::proxy::{self, ConnInfo};
use crate::token::SecretHash;

/// A `(sid, client_secret)` pair found in a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    pub sid: String,
    pub client_secret: String,
}

/// The nested creds objects of a body, by the spellings clients and homeservers have
/// used (`auth.threepid_creds`, `auth.threepidCreds`, `three_pid_creds`,
/// `threePidCreds`). The top level itself can be creds too (`/account/3pid/add`).
fn nested_creds_mut(body: &mut Map<String, Value>) -> Vec<&mut Map<String, Value>> {
    let mut found = Vec::new();
    for (key, value) in body.iter_mut() {
        match key.as_str() {
            "auth" => {
                if let Value::Object(auth) = value {
                    for (k, v) in auth.iter_mut() {
                        if k == "threepid_creds" || k == "threepidCreds" {
                            collect_objects(v, &mut found);
                        }
                    }
                }
            }
            "three_pid_creds" | "threePidCreds" => collect_objects(value, &mut found),
            _ => {}
        }
    }
    found
}

/// A creds value is an object, or (old spec) a list of objects.
fn collect_objects<'a>(value: &'a mut Value, out: &mut Vec<&'a mut Map<String, Value>>) {
    match value {
        Value::Object(map) => out.push(map),
        Value::Array(items) => {
            for item in items {
                if let Value::Object(map) = item {
                    out.push(map);
                }
            }
        }
        _ => {}
    }
}

fn creds_of(map: &Map<String, Value>) -> Option<Creds> {
    let sid = map.get("sid")?.as_str()?;
    let client_secret = map
        .get("client_secret")
        .or_else(|| map.get("clientSecret"))?
        .as_str()?;
    Some(Creds {
        sid: sid.to_owned(),
        client_secret: client_secret.to_owned(),
    })
}

/// Every creds pair a body names, in every spelling, top level included.
pub fn find_creds(body: &Map<String, Value>) -> Vec<Creds> {
    let mut copy = body.clone();
    let mut found: Vec<Creds> = nested_creds_mut(&mut copy)
        .into_iter()
        .filter_map(|m| creds_of(m))
        .collect();
    found.extend(creds_of(body));
    let mut unique: Vec<Creds> = Vec::with_capacity(found.len());
    for creds in found {
        if !unique.contains(&creds) {
            unique.push(creds);
        }
    }
    unique
}

/// Rewrites every creds object whose pair `is_ours` says is ours: `id_server` becomes
/// `id_server_name`, `id_access_token` goes, and the body's `bind`, `bind_email` and
/// `bind_msisdn` (where present) become false. Returns whether anything changed.
pub fn rewrite(
    body: &mut Map<String, Value>,
    id_server_name: &str,
    is_ours: impl Fn(&Creds) -> bool,
) -> bool {
    let mut changed = false;
    let mut fix = |map: &mut Map<String, Value>| {
        if creds_of(map).is_some_and(|creds| is_ours(&creds)) {
            map.insert("id_server".into(), Value::String(id_server_name.to_owned()));
            map.remove("id_access_token");
            changed = true;
        }
    };
    for map in nested_creds_mut(body) {
        fix(map);
    }
    fix(body);
    if changed {
        for key in ["bind", "bind_email", "bind_msisdn"] {
            if body.contains_key(key) {
                body.insert(key.into(), Value::Bool(false));
            }
        }
    }
    changed
}

/// POST …/register, …/account/password, …/account/3pid, …/account/3pid/add
pub async fn handle(state: &AppState, conn: &ConnInfo, request: Request<Body>) -> Response<Body> {
    let (mut parts, body) = request.into_parts();
    let bytes = match matrix::read_body(
        body,
        state.config.server.max_body_bytes,
        state.config.server.header_read_timeout,
    )
    .await
    {
        Ok(bytes) => bytes,
        Err(e) => return e.into_response(),
    };
    let forward_as_is =
        |parts: hyper::http::request::Parts, bytes: Bytes| Request::from_parts(parts, full(bytes));
    let Ok(mut object) = matrix::parse_object(&bytes) else {
        // Not ours to judge: the homeserver answers bad JSON itself.
        return forward(state, conn, forward_as_is(parts, bytes)).await;
    };
    let candidates = find_creds(&object);
    if candidates.is_empty() {
        return forward(state, conn, forward_as_is(parts, bytes)).await;
    }
    let mut ours = Vec::new();
    for creds in candidates {
        match state.store.get(&creds.sid, state.now_ms()).await {
            Ok(Some(session))
                if session
                    .client_secret
                    .ct_eq(&SecretHash::of(&creds.client_secret)) =>
            {
                ours.push(creds);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "creds rewrite: store failed");
                return MatrixError::store_unavailable().into_response();
            }
        }
    }
    if !rewrite(&mut object, &state.config.identity.server_name, |c| {
        ours.contains(c)
    }) {
        return forward(state, conn, forward_as_is(parts, bytes)).await;
    }
    tracing::info!(
        sessions = ours.len(),
        "creds rewritten to our identity listener"
    );
    let rewritten = serde_json::to_vec(&object).expect("a JSON map always serialises");
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
    parts.headers.remove(header::TRANSFER_ENCODING);
    forward(state, conn, Request::from_parts(parts, full(rewritten))).await
}

async fn forward(state: &AppState, conn: &ConnInfo, request: Request<Body>) -> Response<Body> {
    proxy::forward(
        &state.upstream,
        &state.metrics,
        &state.config.server.trusted_proxies,
        conn,
        request,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ours(c: &Creds) -> bool {
        c.sid == "OURS"
    }

    fn rewritten(body: Value) -> (Value, bool) {
        let mut map = body.as_object().unwrap().clone();
        let changed = rewrite(&mut map, "sidecar:8090", ours);
        (Value::Object(map), changed)
    }

    #[test]
    fn uia_creds_naming_our_session_get_our_id_server_and_no_token() {
        let (body, changed) = rewritten(json!({
            "username": "alice", "password": "pw", "bind_email": true,
            "auth": {"type": "m.login.email.identity", "session": "S",
                     "threepid_creds": {"sid": "OURS", "client_secret": "cs",
                                        "id_server": "vector.im", "id_access_token": "tok"}}
        }));
        assert!(changed);
        assert_eq!(
            body,
            json!({
                "username": "alice", "password": "pw", "bind_email": false,
                "auth": {"type": "m.login.email.identity", "session": "S",
                         "threepid_creds": {"sid": "OURS", "client_secret": "cs", "id_server": "sidecar:8090"}}
            })
        );
    }

    #[test]
    fn both_spellings_are_rewritten_when_a_client_sends_both() {
        let (body, _) = rewritten(json!({
            "new_password": "x",
            "auth": {"type": "m.login.email.identity",
                     "threepid_creds": {"sid": "OURS", "client_secret": "cs"},
                     "threepidCreds": {"sid": "OURS", "client_secret": "cs"}}
        }));
        assert_eq!(body["auth"]["threepid_creds"]["id_server"], "sidecar:8090");
        assert_eq!(body["auth"]["threepidCreds"]["id_server"], "sidecar:8090");
    }

    #[test]
    fn add_3pid_creds_and_bind_are_rewritten() {
        let (body, _) = rewritten(json!({
            "three_pid_creds": {"sid": "OURS", "client_secret": "cs", "id_server": "matrix.org"},
            "bind": true
        }));
        assert_eq!(body["three_pid_creds"]["id_server"], "sidecar:8090");
        assert_eq!(body["bind"], false);
        let (body, _) =
            rewritten(json!({"threePidCreds": [{"sid": "OURS", "client_secret": "cs"}]}));
        assert_eq!(body["threePidCreds"][0]["id_server"], "sidecar:8090");
    }

    #[test]
    fn top_level_creds_are_rewritten() {
        let (body, changed) = rewritten(json!({"sid": "OURS", "client_secret": "cs", "auth": {}}));
        assert!(changed);
        assert_eq!(body["id_server"], "sidecar:8090");
    }

    #[test]
    fn a_body_naming_no_session_of_ours_is_untouched() {
        let original = json!({
            "bind": true,
            "three_pid_creds": {"sid": "THEIRS", "client_secret": "cs", "id_server": "matrix.org", "id_access_token": "t"}
        });
        let (body, changed) = rewritten(original.clone());
        assert!(!changed);
        assert_eq!(body, original);
    }

    #[test]
    fn every_spelling_is_found() {
        let found = find_creds(
            json!({
                "sid": "A", "client_secret": "1",
                "auth": {"threepid_creds": {"sid": "B", "client_secret": "2"},
                         "threepidCreds": {"sid": "B", "client_secret": "2"}},
                "three_pid_creds": {"sid": "C", "clientSecret": "3"}
            })
            .as_object()
            .unwrap(),
        );
        let sids: Vec<&str> = found.iter().map(|c| c.sid.as_str()).collect();
        assert_eq!(sids, ["B", "C", "A"]);
    }
}
