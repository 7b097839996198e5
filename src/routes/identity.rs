//! The identity listener (DESIGN §3): what a legacy homeserver calls, believing the sidecar
//! to be its identity server. Its main job is `getValidated3pid`, the check behind the
//! UIA stages `m.login.email.identity` / `m.login.msisdn` and behind `/account/3pid`.

use hyper::{Method, Request, Response, StatusCode};
use tracing::Instrument;

use crate::AppState;
use crate::config::Mode;
use crate::matrix::{self, Body, MatrixError, json_response};
use crate::proxy::ConnInfo;
use crate::routes::{request_token, submit_token};
use crate::threepid::Medium;
use crate::token::SecretHash;

/// What the identity listener serves, from the path alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityRoute {
    /// `GET /_matrix/identity/api/v1`, `GET /_matrix/identity/v2`: `{}` (liveness check).
    Root,
    GetValidated3pid,
    SubmitToken,
    RequestToken(Medium),
    Bind,
    Unknown,
}

impl IdentityRoute {
    fn label(self) -> &'static str {
        match self {
            IdentityRoute::Root => "root",
            IdentityRoute::GetValidated3pid => "getValidated3pid",
            IdentityRoute::SubmitToken => "submitToken",
            IdentityRoute::RequestToken(_) => "requestToken",
            IdentityRoute::Bind => "bind",
            IdentityRoute::Unknown => "unknown",
        }
    }
}

/// Classifies an identity-API path, v1 or v2.
pub fn classify(path: &str) -> IdentityRoute {
    let rest = path
        .strip_prefix("/_matrix/identity/api/v1")
        .or_else(|| path.strip_prefix("/_matrix/identity/v2"));
    match rest {
        Some("" | "/") => IdentityRoute::Root,
        Some("/3pid/getValidated3pid") => IdentityRoute::GetValidated3pid,
        Some("/validate/email/submitToken" | "/validate/msisdn/submitToken") => {
            IdentityRoute::SubmitToken
        }
        Some("/validate/email/requestToken") => IdentityRoute::RequestToken(Medium::Email),
        Some("/validate/msisdn/requestToken") => IdentityRoute::RequestToken(Medium::Msisdn),
        Some("/3pid/bind") => IdentityRoute::Bind,
        _ => IdentityRoute::Unknown,
    }
}

/// Every request on the identity listener.
pub async fn handle(state: &AppState, conn: &ConnInfo, request: Request<Body>) -> Response<Body> {
    let route = classify(request.uri().path());
    let span = tracing::info_span!(
        "identity",
        id = %state.next_request_id(),
        method = %request.method(),
        route = route.label(),
    );
    let response = async {
        match route {
            IdentityRoute::Root if request.method() == Method::GET => {
                json_response(StatusCode::OK, &serde_json::json!({}))
            }
            IdentityRoute::GetValidated3pid
                if request.method() == Method::GET || request.method() == Method::POST =>
            {
                get_validated_3pid(state, request)
                    .await
                    .unwrap_or_else(MatrixError::into_response)
            }
            IdentityRoute::SubmitToken
                if request.method() == Method::GET || request.method() == Method::POST =>
            {
                submit_token::identity_submit(state, conn.peer.ip(), request).await
            }
            IdentityRoute::Bind => MatrixError::bad_request(
                "M_UNRECOGNIZED",
                "This identity service only verifies addresses for its homeserver; it does not \
             bind them. Bind with a lookup identity server instead.",
            )
            .into_response(),
            IdentityRoute::RequestToken(medium)
                if request.method() == Method::POST
                    && state.config.threepid.mode == Mode::ViaUpstream =>
            {
                request_token(state, medium, request)
                    .await
                    .unwrap_or_else(MatrixError::into_response)
            }
            // Outside via-upstream mode nobody should call this.
            IdentityRoute::RequestToken(_) => MatrixError::unrecognized().into_response(),
            IdentityRoute::Unknown => MatrixError::unrecognized().into_response(),
            _ => MatrixError::method_not_allowed().into_response(),
        }
    }
    .instrument(span.clone())
    .await;
    let status = response.status();
    let outcome = if status.is_success() { "ok" } else { "error" };
    state.metrics.identity_call(route.label(), outcome);
    state
        .metrics
        .request(crate::metrics::RouteClass::Identity, status.as_u16());
    span.in_scope(|| tracing::info!(status = status.as_u16(), "identity call"));
    response
}

/// GET/POST …/3pid/getValidated3pid?sid&client_secret
async fn get_validated_3pid(
    state: &AppState,
    request: Request<Body>,
) -> Result<Response<Body>, MatrixError> {
    let params = matrix::Params::from_request(
        request,
        state.config.server.max_body_bytes,
        state.config.server.header_read_timeout,
    )
    .await?;
    let sid = params.required_plural("sid")?;
    let client_secret = params.required_plural("client_secret")?;
    crate::validate::client_secret(client_secret)?;
    if !crate::token::is_sid(sid) {
        return Err(no_valid_session()); // cannot be ours: not looked up
    }
    let session = state
        .store
        .get(sid, state.now_ms())
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "getValidated3pid: store failed");
            MatrixError::store_unavailable()
        })?
        .filter(|s| s.client_secret.ct_eq(&SecretHash::of(client_secret)))
        .ok_or_else(no_valid_session)?;
    if session.failed_submits >= state.config.threepid.max_submit_attempts {
        return Err(MatrixError::bad_request(
            "M_SESSION_EXPIRED",
            "This validation session has expired: too many wrong tokens",
        ));
    }
    let Some(validated_at) = session.validated_at else {
        return Err(MatrixError::bad_request(
            "M_SESSION_NOT_VALIDATED",
            "This validation session has not yet been completed",
        ));
    };
    let lifetime = state.config.threepid.session_lifetime;
    if session
        .usable_until(lifetime)
        .is_some_and(|until| state.now_ms() >= until)
    {
        return Err(MatrixError::bad_request(
            "M_SESSION_EXPIRED",
            "This validation session has expired: verify the address again",
        ));
    }
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({
            "medium": session.medium.as_str(),
            "address": session.address,
            "validated_at": validated_at,
        }),
    ))
}

/// POST …/validate/{email,msisdn}/requestToken (via-upstream mode)
///
/// The homeserver accepted the client's requestToken and asks its "identity server" to
/// send the token: the session is issued here, with the purpose the client listener noted.
/// JSON or a form (as Dendrite sends).
async fn request_token(
    state: &AppState,
    medium: Medium,
    request: Request<Body>,
) -> Result<Response<Body>, MatrixError> {
    let params = matrix::Params::from_request(
        request,
        state.config.server.max_body_bytes,
        state.config.server.header_read_timeout,
    )
    .await?;
    let mut body: serde_json::Map<String, serde_json::Value> = [
        "client_secret",
        "email",
        "country",
        "phone_number",
        "next_link",
    ]
    .into_iter()
    .filter_map(|k| params.get(k).map(|v| (k.to_owned(), v.into())))
    .collect();
    if let Some(attempt) = params.get("send_attempt") {
        // A form carries text: "1" is the integer 1 here.
        let value = attempt.parse::<u64>().map_or_else(
            |_| serde_json::Value::from(attempt),
            serde_json::Value::from,
        );
        body.insert("send_attempt".into(), value);
    }
    let req = crate::validate::token_request(
        medium,
        &body,
        state.config.threepid.next_link_allowed_hosts.as_deref(),
    )?;
    // The client listener's checks, again: this port may be reachable by more than the
    // homeserver.
    if !state
        .config
        .threepid
        .address_allowed(medium.as_str(), &req.address)
    {
        return Err(request_token::address_denied());
    }
    let region = match medium {
        Medium::Msisdn => crate::validate::region_of(&req.address),
        Medium::Email => None,
    };
    if let Err(denial) = state
        .policy
        .check_local(medium, &req.address, region.as_deref())
    {
        state
            .metrics
            .policy_refused(medium.as_str(), denial.reason());
        return Err(denial.into_matrix());
    }
    // Only a request the client listener accepted (and noted) gets a message: anyone else who
    // reaches this port must not be able to mail or text any address.
    let noted = state
        .store
        .take_purpose(
            medium,
            &req.address,
            &SecretHash::of(&req.client_secret),
            state.now_ms(),
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "identity requestToken: store failed");
            MatrixError::store_unavailable()
        })?;
    let Some(note) = noted else {
        tracing::warn!(
            to = %crate::validate::mask_address(&req.address),
            "identity requestToken that no client request asked for: refused"
        );
        return Err(MatrixError::new(
            StatusCode::FORBIDDEN,
            "M_FORBIDDEN",
            "This identity service sends tokens only for requests its homeserver's clients made \
             through the sidecar.",
        ));
    };
    let (sid, _) = request_token::issue(state, &req, note.purpose, &note.language).await?;
    let answer = match medium {
        Medium::Email => serde_json::json!({ "sid": sid }),
        Medium::Msisdn => serde_json::json!({
            "sid": sid,
            "msisdn": req.address,
            "intl_fmt": req.intl_fmt,
            "success": true,
        }),
    };
    Ok(json_response(StatusCode::OK, &answer))
}

fn no_valid_session() -> MatrixError {
    MatrixError::new(
        StatusCode::NOT_FOUND,
        "M_NO_VALID_SESSION",
        "No valid session was found matching that sid and client secret",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_paths_are_classified_alike() {
        for prefix in ["/_matrix/identity/api/v1", "/_matrix/identity/v2"] {
            assert_eq!(classify(prefix), IdentityRoute::Root);
            assert_eq!(
                classify(&format!("{prefix}/3pid/getValidated3pid")),
                IdentityRoute::GetValidated3pid
            );
            assert_eq!(
                classify(&format!("{prefix}/validate/email/submitToken")),
                IdentityRoute::SubmitToken
            );
            assert_eq!(
                classify(&format!("{prefix}/validate/msisdn/requestToken")),
                IdentityRoute::RequestToken(Medium::Msisdn)
            );
            assert_eq!(
                classify(&format!("{prefix}/3pid/bind")),
                IdentityRoute::Bind
            );
        }
        assert_eq!(
            classify("/_matrix/identity/api/v1/lookup"),
            IdentityRoute::Unknown
        );
        assert_eq!(classify("/_matrix/client/versions"), IdentityRoute::Unknown);
    }
}
