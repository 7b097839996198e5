//! The creds rewrite (DESIGN §1 step 4) on `POST …/register`, `…/account/password`,
//! `…/account/3pid` and `…/account/3pid/add`: wherever `(sid, client_secret)` names one
//! of the sidecar's sessions, the homeserver is told to ask the sidecar's identity
//! listener about it (`id_server`), and not to bind. Bodies that name no session of ours
//! are forwarded byte for byte.
//!
//! A session completes only the endpoints of the purpose it was verified for
//! ([`Completion::accepts`]); a mismatch is refused here and nothing is forwarded. While the
//! v3→r0 mapping is on, `/account/3pid/add` with a session of ours is bridged to the legacy
//! `/account/3pid`, which homeservers older than Synapse 1.4 have instead.

use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use serde_json::{Map, Value};

use crate::AppState;
use crate::matrix::{self, Body, MatrixError, full};
use crate::proxy::{self, ConnInfo};
use crate::routes::Completion;
use crate::session::Session;
use crate::threepid::{Medium, Notice, Purpose};
use crate::token::{self, SecretHash};

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

/// The nested creds objects of a body, as [`nested_creds_mut`] finds them.
fn nested_creds(body: &Map<String, Value>) -> Vec<&Map<String, Value>> {
    fn objects(value: &Value) -> Vec<&Map<String, Value>> {
        match value {
            Value::Object(map) => vec![map],
            Value::Array(items) => items.iter().filter_map(Value::as_object).collect(),
            _ => Vec::new(),
        }
    }
    let mut found = Vec::new();
    for (key, value) in body {
        match (key.as_str(), value) {
            ("auth", Value::Object(auth)) => {
                for (k, v) in auth {
                    if k == "threepid_creds" || k == "threepidCreds" {
                        found.extend(objects(v));
                    }
                }
            }
            ("three_pid_creds" | "threePidCreds", v) => found.extend(objects(v)),
            _ => {}
        }
    }
    found
}

/// How many creds objects a body holds, in every spelling, top level included (each is a
/// store lookup: see [`MAX_CREDS_OBJECTS`]).
pub fn count_creds(body: &Map<String, Value>) -> usize {
    nested_creds(body).len() + usize::from(creds_of(body).is_some())
}

/// Every creds pair a body names, in every spelling, top level included, each once.
pub fn find_creds(body: &Map<String, Value>) -> Vec<Creds> {
    let mut unique: Vec<Creds> = Vec::new();
    let nested = nested_creds(body).into_iter().filter_map(creds_of);
    for creds in nested.chain(creds_of(body)) {
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

/// A body naming more creds objects than this is refused: clients send one, Element two
/// spellings of the same one, and every object costs a store lookup.
pub const MAX_CREDS_OBJECTS: usize = 4;

/// POST …/register, …/account/password, …/account/3pid, …/account/3pid/add
pub async fn handle(
    state: &AppState,
    conn: &ConnInfo,
    completion: Completion,
    request: Request<Body>,
) -> Response<Body> {
    match serve(state, conn, completion, request).await {
        Ok(response) => response,
        Err(e) => {
            tracing::info!(
                errcode = e.errcode,
                status = e.status.as_u16(),
                endpoint = completion.as_str(),
                "creds refused"
            );
            e.into_response()
        }
    }
}

async fn serve(
    state: &AppState,
    conn: &ConnInfo,
    completion: Completion,
    request: Request<Body>,
) -> Result<Response<Body>, MatrixError> {
    let (mut parts, body) = request.into_parts();
    let bytes = matrix::read_body(
        body,
        state.config.server.max_body_bytes,
        state.config.server.header_read_timeout,
    )
    .await?;
    // Refused here rather than passed on: a body the homeserver's parser reads and ours
    // does not (Python's json takes `NaN`) would carry creds that nobody checked.
    let mut object = matrix::parse_object(&bytes)?;
    if count_creds(&object) > MAX_CREDS_OBJECTS {
        return Err(MatrixError::invalid_param(format!(
            "A request names at most {MAX_CREDS_OBJECTS} sets of threepid credentials."
        )));
    }
    let ours = our_sessions(state, &find_creds(&object)).await?;
    if ours.is_empty() {
        return Ok(forward(state, conn, parts, full(bytes)).await);
    }
    // The purpose check is the trust boundary, not the rewrite: a client can name the
    // identity listener in `id_server` itself, and the homeserver then asks it about the
    // session whatever the sidecar does here.
    if let Some((_, session)) = ours.iter().find(|(_, s)| !completion.accepts(s.purpose)) {
        return Err(wrong_purpose(session.purpose, completion));
    }
    let client_ip = proxy::client_ip(
        &parts.headers,
        conn.peer.ip(),
        &state.config.server.trusted_proxies,
    );
    let identity = &state.config.identity.server_name;
    if completion == Completion::AddThreepid && state.upstream.compat.is_active() {
        // A legacy homeserver has no /account/3pid/add (Synapse added it in 1.4): the older
        // /account/3pid does the same with the creds nested, and asks for no UIA.
        if let Some(creds) = creds_of(&object).filter(|c| ours.iter().any(|(o, _)| o == c)) {
            tracing::info!("account/3pid/add bridged to the homeserver's account/3pid");
            let body = serde_json::to_vec(&bridged_add_body(&creds, identity))
                .expect("a JSON value always serialises");
            set_length(&mut parts.headers, body.len());
            parts.uri = legacy_add_uri(&parts.uri);
            return Ok(forward(state, conn, parts, full(body)).await);
        }
    }
    if !rewrite(&mut object, identity, |c| ours.iter().any(|(o, _)| o == c)) {
        return Ok(forward(state, conn, parts, full(bytes)).await);
    }
    tracing::info!(
        sessions = ours.len(),
        "creds rewritten to our identity listener"
    );
    let rewritten = serde_json::to_vec(&object).expect("a JSON map always serialises");
    set_length(&mut parts.headers, rewritten.len());
    let response = forward(state, conn, parts, full(rewritten)).await;
    if completion == Completion::Password && response.status() == StatusCode::OK {
        // The password was changed with an address of ours: tell its owner, once per
        // address, in the language of the reset mail.
        let mut told: Vec<&str> = Vec::new();
        for (_, session) in &ours {
            if session.medium == Medium::Email && !told.contains(&session.address.as_str()) {
                told.push(&session.address);
                let language = state
                    .templates
                    .catalogues()
                    .resolve(session.language.as_deref())
                    .to_owned();
                state
                    .notify(
                        Notice::PasswordChanged,
                        &session.address,
                        &language,
                        client_ip,
                    )
                    .await;
            }
        }
    }
    Ok(response)
}
/// The sessions of ours that `candidates` name (sid and client secret both matching),
/// with their purposes. A sid that cannot be ours is never looked up; the rest are looked
/// up at once (one pipelined round trip on Redis).
async fn our_sessions(
    state: &AppState,
    candidates: &[Creds],
) -> Result<Vec<(Creds, Session)>, MatrixError> {
    let now_ms = state.now_ms();
    let lookups = candidates
        .iter()
        .filter(|c| token::is_sid(&c.sid))
        .map(|c| async move { (c, state.store.get(&c.sid, now_ms).await) });
    let mut ours = Vec::new();
    for (creds, found) in futures_util::future::join_all(lookups).await {
        match found {
            Ok(Some(session))
                if session
                    .client_secret
                    .ct_eq(&SecretHash::of(&creds.client_secret)) =>
            {
                ours.push((creds.clone(), session));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "creds: store failed");
                return Err(MatrixError::store_unavailable());
            }
        }
    }
    Ok(ours)
}

/// 403 `M_THREEPID_AUTH_FAILED`: the session proves the address, but for another act.
fn wrong_purpose(purpose: Purpose, completion: Completion) -> MatrixError {
    let verified_to = match purpose {
        Purpose::Registration => "register an account",
        Purpose::PasswordReset => "reset a password",
        Purpose::AddThreepid => "add it to an account",
    };
    let used_to = match completion {
        Completion::Register => "register an account",
        Completion::Password => "reset a password",
        Completion::AddThreepid | Completion::AddThreepidLegacy => "add it to an account",
    };
    tracing::info!(
        purpose = purpose.as_str(),
        endpoint = completion.as_str(),
        "creds name a session verified for another purpose"
    );
    MatrixError::new(
        StatusCode::FORBIDDEN,
        "M_THREEPID_AUTH_FAILED",
        format!(
            "This address was verified to {verified_to}, not to {used_to}. Verify it again \
             from the screen where you {}.",
            match completion {
                Completion::Register => "register",
                Completion::Password => "reset your password",
                Completion::AddThreepid | Completion::AddThreepidLegacy => "add an address",
            }
        ),
    )
}

/// The legacy `/account/3pid` body for a `/account/3pid/add` of ours: the creds nested, with
/// our identity name, and no binding (a client's `auth` is dropped: the legacy endpoint asks
/// for none).
pub fn bridged_add_body(creds: &Creds, id_server: &str) -> Value {
    serde_json::json!({
        "three_pid_creds": {
            "sid": creds.sid,
            "client_secret": creds.client_secret,
            "id_server": id_server,
        },
        "bind": false,
    })
}

/// `/_matrix/client/r0/account/3pid`, with the client's query (an `access_token` may be in it).
fn legacy_add_uri(uri: &Uri) -> Uri {
    const PATH: &str = "/_matrix/client/r0/account/3pid";
    let path_and_query = match uri.query() {
        Some(query) => format!("{PATH}?{query}"),
        None => PATH.to_owned(),
    };
    path_and_query
        .parse()
        .expect("a fixed path and an already valid query form a URI")
}

fn set_length(headers: &mut hyper::HeaderMap, len: usize) {
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.remove(header::TRANSFER_ENCODING);
}

async fn forward(
    state: &AppState,
    conn: &ConnInfo,
    parts: hyper::http::request::Parts,
    body: Body,
) -> Response<Body> {
    proxy::forward(
        &state.upstream,
        &state.metrics,
        &state.config.server.trusted_proxies,
        conn,
        Request::from_parts(parts, body),
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
