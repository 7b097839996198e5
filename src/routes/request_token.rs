//! `POST /_matrix/client/{v}/{register,account/password,account/3pid}/email/requestToken`
//! in direct mode (DESIGN §1 step 2): validate, start or continue a session, mail a link,
//! answer `{"sid"}`. The sidecar never says whether the address is registered; the
//! homeserver decides that when the session is used.

use hyper::{Request, Response, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use crate::AppState;
use crate::delivery::MailRequest;
use crate::matrix::{self, Body, MatrixError, json_response};
use crate::routes::submit_token::EMAIL_SUBMIT_PATH;
use crate::session::{Medium, Purpose, SendDecision, SendRequest};
use crate::token::{self, SecretHash, TokenHash};
use crate::validate;

/// A requestToken body that passed every input rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailRequest {
    pub client_secret: String,
    /// Canonical form.
    pub email: String,
    pub send_attempt: u64,
    pub next_link: Option<String>,
}

/// Applies DESIGN §5 to a requestToken body, in the table's order. `id_server` and
/// `id_access_token` are accepted and ignored (`threepid.id_server_param = "ignore"`).
pub fn parse_email_request(
    body: &Map<String, Value>,
    next_link_allowed_hosts: Option<&[String]>,
) -> Result<EmailRequest, MatrixError> {
    let client_secret = validate::required_str(body, "client_secret")?;
    let email = validate::required_str(body, "email")?;
    if !body.contains_key("send_attempt") {
        return Err(MatrixError::missing_param("send_attempt"));
    }
    validate::client_secret(client_secret)?;
    let send_attempt = validate::send_attempt(body)?;
    let email = validate::email(email)?;
    let next_link = validate::optional_str(body, "next_link")?
        .map(|link| validate::next_link(link, next_link_allowed_hosts))
        .transpose()?;
    Ok(EmailRequest {
        client_secret: client_secret.to_owned(),
        email,
        send_attempt,
        next_link,
    })
}

/// The link mailed to the user: the confirmation page, with everything it needs.
pub fn email_link(public_baseurl: &url::Url, sid: &str, client_secret: &str, token: &str) -> String {
    let mut link = public_baseurl
        .join(EMAIL_SUBMIT_PATH)
        .expect("a fixed relative path joins onto a base URL");
    link.query_pairs_mut()
        .append_pair("token", token)
        .append_pair("client_secret", client_secret)
        .append_pair("sid", sid);
    link.to_string()
}

fn endpoint_label(purpose: Purpose) -> &'static str {
    match purpose {
        Purpose::Registration => "register_email",
        Purpose::PasswordReset => "password_email",
        Purpose::AddThreepid => "3pid_email",
    }
}

/// POST …/{register,account/password,account/3pid}/email/requestToken
pub async fn email(state: &AppState, purpose: Purpose, request: Request<Body>) -> Response<Body> {
    let endpoint = endpoint_label(purpose);
    match email_inner(state, purpose, request).await {
        Ok((response, outcome)) => {
            state.metrics.request_token(endpoint, outcome);
            response
        }
        Err(e) => {
            state.metrics.request_token(endpoint, e.errcode);
            tracing::info!(errcode = e.errcode, status = e.status.as_u16(), "requestToken refused");
            e.into_response()
        }
    }
}

async fn email_inner(
    state: &AppState,
    purpose: Purpose,
    request: Request<Body>,
) -> Result<(Response<Body>, &'static str), MatrixError> {
    let bytes = matrix::read_body(request.into_body(), state.config.server.max_body_bytes).await?;
    let body = matrix::parse_object(&bytes)?;
    let req = parse_email_request(&body, state.config.threepid.next_link_allowed_hosts.as_deref())?;

    let token = token::new_email_token();
    let token_hash = TokenHash::of_secret(&token);
    let now_ms = state.now_ms();
    let lifetime_ms = u64::try_from(state.config.threepid.token_lifetime.as_millis()).unwrap_or(u64::MAX);
    let decision = state
        .store
        .begin_send(SendRequest {
            medium: Medium::Email,
            address: req.email.clone(),
            client_secret: SecretHash::of(&req.client_secret),
            purpose,
            next_link: req.next_link.clone(),
            send_attempt: req.send_attempt,
            token: token_hash,
            token_expires_ms: now_ms.saturating_add(lifetime_ms),
            now_ms,
        })
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "requestToken: store failed");
            MatrixError::store_unavailable()
        })?;
    let masked = validate::mask_address(&req.email);
    let (sid, outcome) = match &decision {
        SendDecision::AlreadySent { sid } => {
            tracing::info!(to = %masked, "requestToken: send_attempt already seen; nothing sent");
            (sid.clone(), "repeat")
        }
        SendDecision::Send { sid, .. } => {
            let link = email_link(
                &state.config.server.public_baseurl,
                sid,
                &req.client_secret,
                token.expose_secret(),
            );
            let mail = MailRequest {
                to: &req.email,
                purpose,
                link: &link,
                token: token.expose_secret(),
            };
            if let Err(e) = state.mailer.send(mail).await {
                tracing::warn!(to = %masked, error = %e, "requestToken: could not send mail");
                if let Err(undo) = state.store.undo_send(&decision, &token_hash).await {
                    tracing::error!(error = %undo, "requestToken: could not take back the session");
                }
                return Err(MatrixError::internal(
                    "The verification email could not be sent; try again later.",
                ));
            }
            tracing::info!(to = %masked, "requestToken: verification email sent");
            (sid.clone(), "sent")
        }
    };
    Ok((
        json_response(StatusCode::OK, &serde_json::json!({ "sid": sid })),
        outcome,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<EmailRequest, MatrixError> {
        parse_email_request(v.as_object().unwrap(), None)
    }

    #[test]
    fn a_good_body_is_canonicalised_and_id_server_is_ignored() {
        let req = parse(json!({
            "client_secret": "cs1", "email": "Alice@Example.org", "send_attempt": 1,
            "id_server": "vector.im", "id_access_token": "x", "next_link": "https://app.example.org/"
        }))
        .unwrap();
        assert_eq!(req.email, "alice@example.org");
        assert_eq!(req.send_attempt, 1);
        assert_eq!(req.next_link.as_deref(), Some("https://app.example.org/"));
    }

    #[test]
    fn each_missing_parameter_is_named() {
        for (body, missing) in [
            (json!({"email": "a@b.c", "send_attempt": 1}), "client_secret"),
            (json!({"client_secret": "c", "send_attempt": 1}), "email"),
            (json!({"client_secret": "c", "email": "a@b.c"}), "send_attempt"),
        ] {
            let err = parse(body).unwrap_err();
            assert_eq!(err.errcode, "M_MISSING_PARAM");
            assert!(err.error.contains(missing), "{}", err.error);
        }
    }

    #[test]
    fn the_link_carries_sid_secret_and_token() {
        let base = url::Url::parse("https://matrix.example.org/").unwrap();
        let link = email_link(&base, "S1", "c.s=1", "TOK");
        assert_eq!(
            link,
            "https://matrix.example.org/_matrix/client/unstable/threepid/email/submit_token?token=TOK&client_secret=c.s%3D1&sid=S1"
        );
    }
}
