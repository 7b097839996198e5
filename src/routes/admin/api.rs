//! The admin API (`/admin/v1/`, admin listener only): what an operator needs when a user
//! "never got the mail". Off (404) unless `admin.api_token_file` is set; every call needs a
//! bearer token ([`auth`]) and is logged with the token's fingerprint, the peer, what it did
//! and to whom (addresses masked), and counted in `admin_requests_total`.
//!
//! | call | does |
//! |---|---|
//! | `GET sessions/{sid}` | a session: medium, masked address, purpose, times, counts |
//! | `DELETE sessions/{sid}` | revokes it: it answers as an expired one from then on |
//! | `GET sessions?address=…[&medium=…]` | the sessions of one address |
//! | `GET outbox[?limit=N]` | pending and dead-letter counts, the newest dead letters |
//! | `POST outbox/dead/{id}/retry` | sends a dead letter's message again, with a new token |
//! | `DELETE outbox/dead/{id}` | forgets a dead letter |
//! | `DELETE rate-limits?address=…[&medium=…]` or `?ip=…` | lifts the limits on it |

use std::net::IpAddr;

use hyper::header::{HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};

use super::auth::{self, AdminCaller, Refusal};
use crate::AppState;
use crate::matrix::{Body, MatrixError, json_response};
use crate::proxy::ConnInfo;
use crate::ratelimit::LimitKey;
use crate::session::{DeadLetterView, RetryOutcome, SessionDetails};
use crate::threepid::Medium;
use crate::validate::{self, mask_address};

/// Where the API lives on the admin listener.
pub const PREFIX: &str = "/admin/v1/";

/// Dead letters listed by default, and at most.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

/// What a call asks for, from its method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Operation<'a> {
    GetSession(&'a str),
    RevokeSession(&'a str),
    ListSessions,
    Outbox,
    RetryDeadLetter(&'a str),
    DropDeadLetter(&'a str),
    ClearLimits,
}

impl Operation<'_> {
    /// Its name in the log and the metrics.
    fn name(&self) -> &'static str {
        match self {
            Operation::GetSession(_) => "get_session",
            Operation::RevokeSession(_) => "revoke_session",
            Operation::ListSessions => "list_sessions",
            Operation::Outbox => "outbox",
            Operation::RetryDeadLetter(_) => "retry_dead_letter",
            Operation::DropDeadLetter(_) => "drop_dead_letter",
            Operation::ClearLimits => "clear_rate_limits",
        }
    }
}

/// The operation for a method and a path under [`PREFIX`]; `Err(true)` when the path is
/// known but not with this method, `Err(false)` when it is not known.
fn operation<'a>(method: &Method, rest: &'a str) -> Result<Operation<'a>, bool> {
    let segments: Vec<&str> = rest.split('/').collect();
    let (known, op) = match segments.as_slice() {
        ["sessions"] => (
            true,
            (method == Method::GET).then_some(Operation::ListSessions),
        ),
        ["sessions", sid] if !sid.is_empty() => (
            true,
            match *method {
                Method::GET => Some(Operation::GetSession(sid)),
                Method::DELETE => Some(Operation::RevokeSession(sid)),
                _ => None,
            },
        ),
        ["outbox"] => (true, (method == Method::GET).then_some(Operation::Outbox)),
        ["outbox", "dead", id] if !id.is_empty() => (
            true,
            (method == Method::DELETE).then_some(Operation::DropDeadLetter(id)),
        ),
        ["outbox", "dead", id, "retry"] if !id.is_empty() => (
            true,
            (method == Method::POST).then_some(Operation::RetryDeadLetter(id)),
        ),
        ["rate-limits"] => (
            true,
            (method == Method::DELETE).then_some(Operation::ClearLimits),
        ),
        _ => (false, None),
    };
    op.ok_or(known)
}

/// Any request under [`PREFIX`].
pub async fn handle(state: &AppState, conn: &ConnInfo, request: Request<Body>) -> Response<Body> {
    let tokens = &state.config.admin.api_tokens;
    if tokens.is_empty() {
        return MatrixError::unrecognized().into_response();
    }
    let caller = match auth::check(tokens, request.headers(), conn.peer.ip()) {
        Ok(caller) => caller,
        Err(refusal) => {
            state.metrics.admin_request("any", "unauthorized");
            tracing::warn!(peer = %conn.peer.ip(), ?refusal, "admin API: refused a call without a valid token");
            return unauthorized(refusal);
        }
    };
    let rest = &request.uri().path()[PREFIX.len()..];
    let op = match operation(request.method(), rest) {
        Ok(op) => op,
        Err(known) => {
            let error = if known {
                MatrixError::method_not_allowed()
            } else {
                MatrixError::unrecognized()
            };
            return error.into_response();
        }
    };
    let query = request.uri().query().unwrap_or("");
    let (answer, about) = match &op {
        Operation::GetSession(sid) => get_session(state, sid).await,
        Operation::RevokeSession(sid) => revoke_session(state, sid).await,
        Operation::ListSessions => list_sessions(state, query).await,
        Operation::Outbox => outbox(state, query).await,
        Operation::RetryDeadLetter(id) => retry_dead_letter(state, id).await,
        Operation::DropDeadLetter(id) => drop_dead_letter(state, id).await,
        Operation::ClearLimits => clear_limits(state, query).await,
    };
    let status = match &answer {
        Ok((status, _)) => *status,
        Err(e) => e.status,
    };
    audit(state, &caller, op.name(), &about, status);
    match answer {
        Ok((status, body)) => json_response(status, &body),
        Err(e) => e.into_response(),
    }
}

/// A handler's answer, and what it was about for the log (a sid, a masked address, an ID).
type Answer = (Result<(StatusCode, Value), MatrixError>, String);

/// One log line and one count per call: who, what, about what, with which result.
fn audit(
    state: &AppState,
    caller: &AdminCaller,
    operation: &'static str,
    about: &str,
    status: StatusCode,
) {
    let outcome = match status.as_u16() {
        200..=299 => "ok",
        400 => "bad_request",
        404 => "not_found",
        409 | 410 => "refused",
        _ => "error",
    };
    state.metrics.admin_request(operation, outcome);
    tracing::info!(
        token = %caller.token,
        peer = %caller.peer,
        operation,
        about,
        status = status.as_u16(),
        "admin API call"
    );
}

fn unauthorized(refusal: Refusal) -> Response<Body> {
    let (errcode, error, challenge) = match refusal {
        Refusal::Missing => (
            "M_MISSING_TOKEN",
            "The admin API needs Authorization: Bearer <a token from admin.api_token_file>.",
            r#"Bearer realm="threepid-sidecar admin""#,
        ),
        Refusal::Wrong => (
            "M_UNKNOWN_TOKEN",
            "That token is not in admin.api_token_file.",
            r#"Bearer realm="threepid-sidecar admin", error="invalid_token""#,
        ),
    };
    let mut response = MatrixError::new(StatusCode::UNAUTHORIZED, errcode, error).into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    response
}

fn not_found(what: &str) -> MatrixError {
    MatrixError::new(
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
        format!("No such {what}."),
    )
}

fn store_error(e: crate::session::StoreError) -> MatrixError {
    tracing::warn!(error = %e, "admin API: the session store failed");
    MatrixError::store_unavailable()
}

async fn get_session(state: &AppState, sid: &str) -> Answer {
    let about = sid.to_owned();
    let answer = match state.store.details(sid, state.now_ms()).await {
        Ok(Some(details)) => Ok((StatusCode::OK, session_json(state, &details))),
        Ok(None) => Err(not_found(
            "session (it expired, was revoked, or never existed)",
        )),
        Err(e) => Err(store_error(e)),
    };
    (answer, about)
}

async fn revoke_session(state: &AppState, sid: &str) -> Answer {
    let address = match state.store.details(sid, state.now_ms()).await {
        Ok(Some(d)) => mask_address(&d.session.address),
        Ok(None) => String::new(),
        Err(e) => return (Err(store_error(e)), sid.to_owned()),
    };
    let about = format!("{sid} {address}");
    let answer = match state.store.revoke(sid).await {
        Ok(true) => Ok((StatusCode::OK, json!({ "sid": sid, "revoked": true }))),
        Ok(false) => Err(not_found("session")),
        Err(e) => Err(store_error(e)),
    };
    (answer, about)
}

async fn list_sessions(state: &AppState, query: &str) -> Answer {
    let (medium, address) = match address_param(query) {
        Ok(found) => found,
        Err(e) => return (Err(e), String::new()),
    };
    let about = mask_address(&address);
    let answer = match state
        .store
        .sessions_of(medium, &address, state.now_ms())
        .await
    {
        Ok(found) => Ok((
            StatusCode::OK,
            json!({
                "medium": medium.as_str(),
                "address": about,
                "sessions": found.iter().map(|d| session_json(state, d)).collect::<Vec<_>>(),
            }),
        )),
        Err(e) => Err(store_error(e)),
    };
    (answer, about)
}

async fn outbox(state: &AppState, query: &str) -> Answer {
    let limit = match param(query, "limit") {
        None => DEFAULT_LIMIT,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                let error = format!("limit must be a whole number from 1 to {MAX_LIMIT}.");
                return (Err(MatrixError::invalid_param(error)), String::new());
            }
        },
    };
    let answer = match state.store.outbox_report(limit).await {
        Ok(report) => Ok((
            StatusCode::OK,
            json!({
                "durable": report.durable,
                "pending": report.pending,
                "oldest_queued_at": report.oldest_ms,
                "dead": report.dead,
                "dead_letters": report.dead_letters.iter().map(dead_letter_json).collect::<Vec<_>>(),
            }),
        )),
        Err(e) => Err(store_error(e)),
    };
    (answer, String::new())
}

async fn retry_dead_letter(state: &AppState, id: &str) -> Answer {
    let lifetime_ms =
        u64::try_from(state.config.threepid.token_lifetime.as_millis()).unwrap_or(u64::MAX);
    let outcome = state
        .store
        .retry_dead_letter(id, lifetime_ms, state.now_ms())
        .await;
    let refused = |status, errcode, error: &str| Err(MatrixError::new(status, errcode, error));
    let answer = match outcome {
        Ok(RetryOutcome::Queued { entry, medium }) => {
            state.metrics.message(medium.as_str(), "queued");
            Ok((StatusCode::ACCEPTED, json!({ "id": id, "queued": entry })))
        }
        Ok(RetryOutcome::NotFound) => Err(not_found("dead letter")),
        Ok(RetryOutcome::NotRetriable) => refused(
            StatusCode::CONFLICT,
            "M_UNKNOWN",
            "Only a verification message can be sent again (this is a notice, or an entry that \
             could not be read).",
        ),
        Ok(RetryOutcome::SessionGone) => refused(
            StatusCode::GONE,
            "M_SESSION_EXPIRED",
            "Its session has ended: the user has to ask for a new message from their client.",
        ),
        Ok(RetryOutcome::Validated) => refused(
            StatusCode::CONFLICT,
            "M_UNKNOWN",
            "Its session was validated meanwhile: there is nothing to send.",
        ),
        Err(e) => Err(store_error(e)),
    };
    (answer, id.to_owned())
}

async fn drop_dead_letter(state: &AppState, id: &str) -> Answer {
    let answer = match state.store.drop_dead_letter(id).await {
        Ok(true) => Ok((StatusCode::OK, json!({ "id": id, "deleted": true }))),
        Ok(false) => Err(not_found("dead letter")),
        Err(e) => Err(store_error(e)),
    };
    (answer, id.to_owned())
}

async fn clear_limits(state: &AppState, query: &str) -> Answer {
    let (keys, about) = if let Some(ip) = param(query, "ip") {
        let Ok(ip) = ip.trim().parse::<IpAddr>() else {
            let error = MatrixError::invalid_param("ip must be an IPv4 or IPv6 address.");
            return (Err(error), String::new());
        };
        let keys = vec![
            LimitKey::RequestTokenIp {
                medium: Medium::Email,
                ip,
            },
            LimitKey::RequestTokenIp {
                medium: Medium::Msisdn,
                ip,
            },
            LimitKey::SubmitIp { ip },
        ];
        (keys, validate::mask_ip(ip))
    } else {
        let (medium, address) = match address_param(query) {
            Ok(found) => found,
            Err(_) => {
                let error = MatrixError::missing_param("address (or ip)");
                return (Err(error), String::new());
            }
        };
        let key = match state.address_key().await {
            Ok(key) => key,
            Err(e) => return (Err(store_error(e)), String::new()),
        };
        let keys = vec![LimitKey::request_token_address(key, medium, &address)];
        (keys, mask_address(&address))
    };
    let answer = match state.store.clear_limits(&keys).await {
        Ok(cleared) => Ok((
            StatusCode::OK,
            json!({
                "cleared": cleared,
                "limits": keys.iter().map(|k| k.name()).collect::<Vec<_>>(),
            }),
        )),
        Err(e) => Err(store_error(e)),
    };
    (answer, about)
}

/// `address` (canonicalised as requestToken does) and `medium` (`email` or `msisdn`;
/// from the address when absent: with an `@` it is email).
fn address_param(query: &str) -> Result<(Medium, String), MatrixError> {
    let address = param(query, "address").ok_or_else(|| MatrixError::missing_param("address"))?;
    let medium = match param(query, "medium") {
        Some(m) => Medium::parse(&m)
            .ok_or_else(|| MatrixError::invalid_param("medium must be email or msisdn."))?,
        None if address.contains('@') => Medium::Email,
        None => Medium::Msisdn,
    };
    let canonical = match medium {
        Medium::Email => validate::email(&address)?,
        Medium::Msisdn => validate::msisdn(&address)?,
    };
    Ok((medium, canonical))
}

/// The first value of `name` in a query string, decoded.
fn param(query: &str, name: &str) -> Option<String> {
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn session_json(state: &AppState, d: &SessionDetails) -> Value {
    let s = &d.session;
    let max = state.config.threepid.max_submit_attempts;
    json!({
        "sid": s.sid,
        "medium": s.medium.as_str(),
        "address": mask_address(&s.address),
        "purpose": s.purpose.as_str(),
        "language": s.language,
        "created_at": d.created_ms,
        "validated_at": s.validated_at,
        "usable_until": s.usable_until(state.config.threepid.session_lifetime),
        "expires_at": d.expires_ms,
        "send_attempt": s.send_attempt,
        "failed_submits": s.failed_submits,
        "submits_left": max.saturating_sub(s.failed_submits),
        "live_tokens": d.live_tokens,
        "next_link": s.next_link.is_some(),
    })
}

fn dead_letter_json(d: &DeadLetterView) -> Value {
    let l = &d.letter;
    json!({
        "id": d.id,
        "sid": l.sid,
        "medium": l.medium,
        "address": l.masked_address,
        "purpose": l.purpose,
        "error": l.error,
        "attempts": l.attempts,
        "queued_at": l.enqueued_ms,
        "dead_at": d.dead_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_methods_map_to_operations() {
        let (get, delete, post) = (Method::GET, Method::DELETE, Method::POST);
        assert_eq!(
            operation(&get, "sessions/abc"),
            Ok(Operation::GetSession("abc"))
        );
        assert_eq!(
            operation(&delete, "sessions/abc"),
            Ok(Operation::RevokeSession("abc"))
        );
        assert_eq!(operation(&get, "sessions"), Ok(Operation::ListSessions));
        assert_eq!(operation(&get, "outbox"), Ok(Operation::Outbox));
        assert_eq!(
            operation(&post, "outbox/dead/1-0/retry"),
            Ok(Operation::RetryDeadLetter("1-0"))
        );
        assert_eq!(
            operation(&delete, "outbox/dead/1-0"),
            Ok(Operation::DropDeadLetter("1-0"))
        );
        assert_eq!(
            operation(&delete, "rate-limits"),
            Ok(Operation::ClearLimits)
        );
        assert_eq!(operation(&post, "sessions/abc"), Err(true));
        assert_eq!(operation(&get, "rate-limits"), Err(true));
        for unknown in [
            "",
            "session",
            "sessions/",
            "sessions/a/b",
            "outbox/dead",
            "outbox/dead//retry",
        ] {
            assert_eq!(operation(&get, unknown), Err(false), "{unknown:?}");
        }
    }

    #[test]
    fn the_medium_follows_the_address_unless_given() {
        assert_eq!(
            address_param("address=A%40Example.ORG").unwrap(),
            (Medium::Email, "a@example.org".to_owned())
        );
        assert_eq!(
            address_param("address=%2B447400123456").unwrap(),
            (Medium::Msisdn, "447400123456".to_owned())
        );
        assert_eq!(
            address_param("medium=msisdn&address=447400123456")
                .unwrap()
                .0,
            Medium::Msisdn
        );
        assert_eq!(address_param("").unwrap_err().errcode, "M_MISSING_PARAM");
        assert_eq!(
            address_param("medium=fax&address=1").unwrap_err().errcode,
            "M_INVALID_PARAM"
        );
    }
}
