//! `POST /_matrix/client/{v}/{register,account/password,account/3pid}/{email,msisdn}/requestToken`
//! (DESIGN §1 step 2, §2). In direct mode the sidecar validates, starts or continues a
//! session, mails a link or texts a code, and answers `{"sid"}` (msisdn also `submit_url`,
//! `msisdn`, `intl_fmt`); it never says whether an address is registered. With the Redis
//! store the message is queued in the durable outbox and sent right after the answer
//! ([`crate::outbox`]); with the memory store it is sent before the answer. In via-upstream
//! mode the homeserver checks the request first and calls the identity listener, which
//! issues the token ([`issue`] serves both).

use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};

use crate::AppState;
use crate::config::{IdServerParam, Mode, RateLimit};
use crate::delivery::{Outgoing, submit_url};
use crate::matrix::{self, Body, MatrixError, full, json_response};
use crate::proxy::{self, ConnInfo};
use crate::ratelimit::LimitKey;
use crate::routes::check_rate_limit;
use crate::session::{LimitedSend, OutboxMessage, PurposeNote, SendDecision, SendRequest};
use crate::threepid::{Medium, Purpose};
use crate::token::{self, SecretHash, TokenHash};
use crate::validate::{self, TokenRequest};

/// The body a legacy homeserver's requestToken accepts: only the keys it knows (an extra
/// key such as `id_access_token` makes Synapse 1.3.1 answer 500), `id_server` set.
pub fn legacy_body(
    medium: Medium,
    body: &Map<String, Value>,
    id_server: &str,
) -> Map<String, Value> {
    let keys: &[&str] = match medium {
        Medium::Email => &["client_secret", "email", "send_attempt", "next_link"],
        Medium::Msisdn => &[
            "client_secret",
            "country",
            "phone_number",
            "send_attempt",
            "next_link",
        ],
    };
    let mut out: Map<String, Value> = keys
        .iter()
        .filter_map(|k| {
            body.get(*k)
                .filter(|v| !v.is_null())
                .map(|v| ((*k).to_owned(), v.clone()))
        })
        .collect();
    out.insert("id_server".into(), Value::String(id_server.to_owned()));
    out
}

fn endpoint_label(medium: Medium, purpose: Purpose) -> &'static str {
    match (medium, purpose) {
        (Medium::Email, Purpose::Registration) => "register_email",
        (Medium::Email, Purpose::PasswordReset) => "password_email",
        (Medium::Email, Purpose::AddThreepid) => "3pid_email",
        (Medium::Msisdn, Purpose::Registration) => "register_msisdn",
        (Medium::Msisdn, Purpose::PasswordReset) => "password_msisdn",
        (Medium::Msisdn, Purpose::AddThreepid) => "3pid_msisdn",
    }
}

/// POST …/{register,account/password,account/3pid}/{email,msisdn}/requestToken
pub async fn handle(
    state: &AppState,
    conn: &ConnInfo,
    medium: Medium,
    purpose: Purpose,
    request: Request<Body>,
) -> Response<Body> {
    let endpoint = endpoint_label(medium, purpose);
    match serve(state, conn, medium, purpose, request).await {
        Ok((response, outcome)) => {
            state.metrics.request_token(endpoint, outcome);
            response
        }
        Err(e) => {
            state.metrics.request_token(endpoint, e.errcode);
            tracing::info!(
                errcode = e.errcode,
                status = e.status.as_u16(),
                "requestToken refused"
            );
            e.into_response()
        }
    }
}

async fn serve(
    state: &AppState,
    conn: &ConnInfo,
    medium: Medium,
    purpose: Purpose,
    request: Request<Body>,
) -> Result<(Response<Body>, &'static str), MatrixError> {
    let threepid = &state.config.threepid;
    let limits = &state.config.rate_limit;
    // Before any other work, so that a flood costs almost nothing.
    let ip = proxy::client_ip(
        request.headers(),
        conn.peer.ip(),
        &state.config.server.trusted_proxies,
    );
    check_rate_limit(
        state,
        &LimitKey::RequestTokenIp { medium, ip },
        limits.request_token_per_ip,
    )
    .await?;
    let (parts, body) = request.into_parts();
    let bytes = matrix::read_body(
        body,
        state.config.server.max_body_bytes,
        state.config.server.header_read_timeout,
    )
    .await?;
    let body = matrix::parse_object(&bytes)?;
    let client_id_server = body
        .get("id_server")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    if client_id_server.is_some() && threepid.id_server_param == IdServerParam::Reject {
        return Err(MatrixError::bad_request(
            "M_SERVER_NOT_TRUSTED",
            "This homeserver verifies addresses itself: leave id_server out of the request.",
        ));
    }
    let req = validate::token_request(medium, &body, threepid.next_link_allowed_hosts.as_deref())?;
    if !threepid.address_allowed(medium.as_str(), &req.address) {
        return Err(address_denied());
    }
    check_policy(state, &req, purpose, ip).await?;
    match client_id_server {
        Some(id_server) if threepid.id_server_param == IdServerParam::Forward => {
            // The legacy path: the client's identity server does everything.
            check_rate_limit(
                state,
                &address_limit_key(state, medium, &req.address).await?,
                limits.request_token_per_address,
            )
            .await?;
            let response = forward(state, conn, parts, legacy_body(medium, &body, id_server)).await;
            return Ok((response, "forwarded"));
        }
        _ => {}
    }
    if threepid.mode == Mode::ViaUpstream {
        // The address limit is counted where the token is issued: the identity listener.
        return via_upstream(state, conn, parts, &body, &req, purpose).await;
    }
    let language = message_language(state, &parts.headers);
    let (sid, outcome) = issue(state, &req, purpose, &language).await?;
    Ok((answer(state, &req, &sid), outcome))
}

/// The address policy (`[policy]`, `sms` countries): the local rules, then the operator's
/// webhook (last, so that only requests that passed everything else reach it). A refusal is
/// counted by reason and changes nothing.
pub async fn check_policy(
    state: &AppState,
    req: &TokenRequest,
    purpose: Purpose,
    client_ip: std::net::IpAddr,
) -> Result<(), MatrixError> {
    let region = match req.medium {
        Medium::Msisdn => validate::region_of(&req.address),
        Medium::Email => None,
    };
    let refused = |denial: crate::policy::Denial| {
        state
            .metrics
            .policy_refused(req.medium.as_str(), denial.reason());
        tracing::info!(
            to = %validate::mask_address(&req.address),
            reason = denial.reason(),
            "requestToken refused by the address policy"
        );
        denial.into_matrix()
    };
    state
        .policy
        .check_local(req.medium, &req.address, region.as_deref())
        .map_err(refused)?;
    let candidate = crate::policy::Candidate {
        medium: req.medium,
        address: &req.address,
        purpose,
        client_ip,
    };
    state
        .policy
        .check_webhook(&candidate)
        .await
        .map_err(refused)
}

/// What an SMS costs before it is sent: the per-country limit (`sms.per_country_per_hour`)
/// and one unit of the day's budget (`sms.daily_budget`, per UTC day, shared by every
/// replica). At the budget: 429, nothing sent, and a warning in the log once a day.
async fn spend_on_sms(state: &AppState, req: &TokenRequest) -> Result<(), MatrixError> {
    let sms = &state.config.sms;
    let region = validate::region_of(&req.address).unwrap_or_default();
    if let Some(limit) = sms.per_country_per_hour {
        check_rate_limit(state, &LimitKey::SmsCountry { region }, limit).await?;
    }
    let Some(budget) = sms.daily_budget else {
        return Ok(());
    };
    const DAY_MS: u64 = 86_400_000;
    let now_ms = state.now_ms();
    let day = now_ms / DAY_MS;
    let spent = state
        .store
        .spend(
            &format!("sms:{day}"),
            budget,
            (day + 2).saturating_mul(DAY_MS),
            now_ms,
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "SMS budget: store failed");
            MatrixError::store_unavailable()
        })?;
    if spent {
        return Ok(());
    }
    state.metrics.policy_refused("msisdn", "budget");
    if state
        .budget_spent_warned
        .swap(day, std::sync::atomic::Ordering::Relaxed)
        != day
    {
        tracing::warn!(
            daily_budget = budget,
            "sms.daily_budget is spent for today (UTC): no more SMS until midnight"
        );
    }
    let until_midnight = (day + 1) * DAY_MS - now_ms;
    Err(MatrixError {
        error: "No more text messages can be sent today; try again tomorrow or use an email \
                address."
            .into(),
        ..MatrixError::limit_exceeded(until_midnight)
    })
}

/// The language of the message a requestToken sends: the best match of its
/// `Accept-Language` (Element and browsers send one), else the default language.
pub fn message_language(state: &AppState, headers: &hyper::HeaderMap) -> String {
    let catalogues = state.templates.catalogues();
    let header = headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    catalogues
        .negotiate(header)
        .unwrap_or_else(|| catalogues.default_language())
        .to_owned()
}

/// The per-address limit's key for a canonical address.
async fn address_limit_key(
    state: &AppState,
    medium: Medium,
    address: &str,
) -> Result<LimitKey, MatrixError> {
    let key = state.address_key().await.map_err(|e| {
        tracing::warn!(error = %e, "requestToken: store failed");
        MatrixError::store_unavailable()
    })?;
    Ok(LimitKey::request_token_address(key, medium, address))
}

/// 403 `M_THREEPID_DENIED`: `threepid.allowed_addresses` keeps this address out.
pub fn address_denied() -> MatrixError {
    MatrixError::new(
        StatusCode::FORBIDDEN,
        "M_THREEPID_DENIED",
        "Third-party identifier is not allowed on this server.",
    )
}

/// The client's answer: `{"sid"}`, and for msisdn what Sydent and Synapse add.
fn answer(state: &AppState, req: &TokenRequest, sid: &str) -> Response<Body> {
    let body = match req.medium {
        Medium::Email => json!({ "sid": sid }),
        Medium::Msisdn => json!({
            "sid": sid,
            "submit_url": submit_url(&state.config.server.public_baseurl),
            "msisdn": req.address,
            "intl_fmt": req.intl_fmt,
            "success": true,
        }),
    };
    json_response(StatusCode::OK, &body)
}

/// Via-upstream mode: note the purpose, let the homeserver check the request, and pass
/// its answer on (its own `M_THREEPID_IN_USE` and the like reach the client unchanged).
async fn via_upstream(
    state: &AppState,
    conn: &ConnInfo,
    parts: hyper::http::request::Parts,
    body: &Map<String, Value>,
    req: &TokenRequest,
    purpose: Purpose,
) -> Result<(Response<Body>, &'static str), MatrixError> {
    let now_ms = state.now_ms();
    let note = PurposeNote {
        purpose,
        language: message_language(state, &parts.headers),
    };
    state
        .store
        .note_purpose(
            req.medium,
            &req.address,
            &SecretHash::of(&req.client_secret),
            &note,
            now_ms,
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "requestToken: store failed");
            MatrixError::store_unavailable()
        })?;
    let legacy = legacy_body(req.medium, body, &state.config.identity.server_name);
    let response = forward(state, conn, parts, legacy).await;
    if req.medium == Medium::Msisdn && response.status() == StatusCode::OK {
        // A legacy homeserver passes on what the identity listener said, without the
        // submit_url today's clients need.
        return Ok((add_submit_url(state, response).await, "via_upstream"));
    }
    Ok((response, "via_upstream"))
}

async fn add_submit_url(state: &AppState, response: Response<Body>) -> Response<Body> {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = matrix::read_whole_body(body, 1 << 20).await else {
        return proxy::UpstreamError::Protocol("unreadable answer".into())
            .into_matrix()
            .into_response();
    };
    let bytes = match matrix::parse_object(&bytes) {
        Ok(mut object) => {
            object
                .entry("submit_url")
                .or_insert_with(|| Value::String(submit_url(&state.config.server.public_baseurl)));
            serde_json::to_vec(&object)
                .expect("a JSON map always serialises")
                .into()
        }
        Err(_) => bytes,
    };
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    Response::from_parts(parts, full(bytes))
}

/// Forwards the request to the homeserver with `body` instead of the client's.
async fn forward(
    state: &AppState,
    conn: &ConnInfo,
    mut parts: hyper::http::request::Parts,
    body: Map<String, Value>,
) -> Response<Body> {
    let bytes = serde_json::to_vec(&body).expect("a JSON map always serialises");
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    proxy::forward(
        &state.upstream,
        &state.metrics,
        &state.config.server.trusted_proxies,
        conn,
        Request::from_parts(parts, full(bytes)),
    )
    .await
}

/// Starts or continues the session for a validated request and sends a new token when the
/// `send_attempt` rule says so, after counting the request against the per-address limit (a
/// limited request gets 429 and changes nothing). Returns the sid and what happened:
/// "repeat" (nothing to send), "queued" or "sent".
///
/// With a store that [queues](crate::session::SessionStore::queues) (Redis), the message goes
/// to the durable outbox with the session change, in the same step as the limit (one round
/// trip), and the client has its answer at once; the outbox's senders deliver it, retrying
/// through an outage ([`crate::outbox`]). Otherwise (memory) it is sent here, and a failed
/// send takes the session change back and answers 500: nothing is left half-made, and the
/// same `send_attempt` may be tried again.
pub async fn issue(
    state: &AppState,
    req: &TokenRequest,
    purpose: Purpose,
    language: &str,
) -> Result<(String, &'static str), MatrixError> {
    if req.medium == Medium::Msisdn {
        spend_on_sms(state, req).await?;
    }
    let key = address_limit_key(state, req.medium, &req.address).await?;
    let limit = state.config.rate_limit.request_token_per_address;
    issue_limited(state, req, purpose, language, Some((&key, limit))).await
}

/// [`issue`] with the limit to count, if any.
async fn issue_limited(
    state: &AppState,
    req: &TokenRequest,
    purpose: Purpose,
    language: &str,
    limit: Option<(&LimitKey, RateLimit)>,
) -> Result<(String, &'static str), MatrixError> {
    let token = match req.medium {
        Medium::Email => token::new_email_token(),
        Medium::Msisdn => token::new_sms_token(),
    };
    let token_hash = TokenHash::of_secret(&token);
    let now_ms = state.now_ms();
    let lifetime_ms =
        u64::try_from(state.config.threepid.token_lifetime.as_millis()).unwrap_or(u64::MAX);
    let send_request = SendRequest {
        medium: req.medium,
        address: req.address.clone(),
        client_secret: SecretHash::of(&req.client_secret),
        purpose,
        next_link: req.next_link.clone(),
        send_attempt: req.send_attempt,
        language: language.to_owned(),
        token: token_hash,
        token_expires_ms: now_ms.saturating_add(lifetime_ms),
        now_ms,
    };
    let queued = state.store.queues();
    let decision = if queued {
        let message = OutboxMessage {
            token: token.clone(),
            client_secret: match req.medium {
                Medium::Email => SecretString::from(req.client_secret.clone()),
                Medium::Msisdn => SecretString::from(String::new()),
            },
        };
        match limit {
            Some((key, limit)) => state
                .store
                .begin_send_queued_limited(key, limit, now_ms, send_request, message)
                .await
                .map(|done| match done {
                    LimitedSend::Limited { retry_after_ms } => Err((key.name(), retry_after_ms)),
                    LimitedSend::Decided(decision) => Ok(decision),
                }),
            None => state
                .store
                .begin_send_queued(send_request, message)
                .await
                .map(Ok),
        }
    } else {
        if let Some((key, limit)) = limit {
            check_rate_limit(state, key, limit).await?;
        }
        state.store.begin_send(send_request).await.map(Ok)
    }
    .map_err(|e| {
        tracing::warn!(error = %e, "requestToken: store failed");
        MatrixError::store_unavailable()
    })?;
    let decision = match decision {
        Ok(decision) => decision,
        Err((name, retry_after_ms)) => {
            // As check_rate_limit answers a limited request.
            state.metrics.rate_limited(name);
            tracing::info!(limit = name, retry_after_ms, "rate limited");
            return Err(MatrixError::limit_exceeded(retry_after_ms));
        }
    };
    let masked = validate::Masked(&req.address);
    match &decision {
        SendDecision::AlreadySent { sid } => {
            tracing::info!(to = %masked, "requestToken: send_attempt already seen; nothing sent");
            Ok((sid.clone(), "repeat"))
        }
        SendDecision::Send { sid, .. } if queued => {
            state.metrics.message(req.medium.as_str(), "queued");
            tracing::info!(to = %masked, medium = %req.medium, "requestToken: token queued");
            Ok((sid.clone(), "queued"))
        }
        SendDecision::Send { sid, .. } => {
            let outgoing = Outgoing {
                medium: req.medium,
                address: &req.address,
                purpose,
                sid,
                client_secret: &req.client_secret,
                token: token.expose_secret(),
                language,
            };
            if let Err(e) = state.deliver(&outgoing).await {
                state.metrics.message(req.medium.as_str(), "failed");
                tracing::warn!(to = %masked, error = %e, "requestToken: could not send");
                if let Err(undo) = state.store.undo_send(&decision, &token_hash).await {
                    tracing::error!(error = %undo, "requestToken: could not take back the session");
                }
                return Err(MatrixError::internal(match req.medium {
                    Medium::Email => "The verification email could not be sent; try again later.",
                    Medium::Msisdn => "The verification SMS could not be sent; try again later.",
                }));
            }
            state.metrics.message(req.medium.as_str(), "sent");
            tracing::info!(to = %masked, medium = %req.medium, "requestToken: token sent");
            Ok((sid.clone(), "sent"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_legacy_body_keeps_only_what_a_legacy_homeserver_knows() {
        let body = json!({
            "client_secret": "cs", "email": "a@example.org", "send_attempt": 1,
            "next_link": "https://x.example/", "id_server": "vector.im", "id_access_token": "t",
            "something_new": true
        });
        let out = legacy_body(Medium::Email, body.as_object().unwrap(), "sidecar:8090");
        assert_eq!(
            Value::Object(out),
            json!({"client_secret": "cs", "email": "a@example.org", "send_attempt": 1,
                   "next_link": "https://x.example/", "id_server": "sidecar:8090"})
        );
        let body = json!({"client_secret": "cs", "country": "GB", "phone_number": "07700900123", "send_attempt": 1, "next_link": null});
        let out = legacy_body(Medium::Msisdn, body.as_object().unwrap(), "sidecar:8090");
        assert_eq!(
            Value::Object(out),
            json!({"client_secret": "cs", "country": "GB", "phone_number": "07700900123", "send_attempt": 1, "id_server": "sidecar:8090"})
        );
    }
}
