//! Submitting a token (DESIGN §3): the mailed link's confirmation page and its form, the
//! JSON `submit_url` endpoints, and the identity-API `submitToken`. All of them end in
//! [`SessionStore::submit`](crate::session::SessionStore::submit).

use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use std::net::IpAddr;

use crate::AppState;
use crate::matrix::{self, Body, MatrixError, Params, full, json_response};
use crate::ratelimit::LimitKey;
use crate::routes::check_rate_limit;
use crate::session::SubmitOutcome;
use crate::templates::{Failure, Page};
use crate::token::{self, SecretHash};
use crate::validate;

/// A validated submission: the session, where to send the browser next, and the language
/// of its messages.
struct Validated {
    sid: String,
    next_link: Option<String>,
    language: Option<String>,
}

/// Checks `(sid, client_secret, token)` against the store, after the per-IP limit.
async fn submit(
    state: &AppState,
    client_ip: IpAddr,
    params: &Params,
) -> Result<Validated, MatrixError> {
    check_rate_limit(
        state,
        &LimitKey::SubmitIp { ip: client_ip },
        state.config.rate_limit.submit_per_ip,
    )
    .await?;
    let sid = params.required("sid")?;
    let client_secret = params.required("client_secret")?;
    let token = params.required("token")?;
    validate::client_secret(client_secret)?;
    if token.is_empty() || token.len() > 255 {
        return Err(token_incorrect());
    }
    let outcome = if crate::token::is_sid(sid) {
        state
            .store
            .submit(sid, &SecretHash::of(client_secret), token, state.now_ms())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "submit: store failed");
                MatrixError::store_unavailable()
            })?
    } else {
        SubmitOutcome::NoSession // cannot be ours: not looked up
    };
    let label = match &outcome {
        SubmitOutcome::Validated(_) => "validated",
        SubmitOutcome::WrongToken { .. } => "wrong_token",
        SubmitOutcome::TooManyAttempts => "too_many_attempts",
        SubmitOutcome::NoSession => "no_session",
    };
    state.metrics.submit("submit_token", label);
    tracing::info!(outcome = label, "token submitted");
    match outcome {
        SubmitOutcome::Validated(session) => Ok(Validated {
            sid: session.sid,
            next_link: session.next_link,
            language: session.language,
        }),
        SubmitOutcome::WrongToken { .. } => Err(token_incorrect()),
        SubmitOutcome::TooManyAttempts => Err(MatrixError::bad_request(
            "M_SESSION_EXPIRED",
            "Too many wrong tokens were submitted for this session; start again.",
        )),
        SubmitOutcome::NoSession => Err(MatrixError::new(
            StatusCode::NOT_FOUND,
            "M_NO_VALID_SESSION",
            "No valid session was found matching that sid and client secret.",
        )),
    }
}

fn token_incorrect() -> MatrixError {
    MatrixError::bad_request(
        "M_TOKEN_INCORRECT",
        "The token is incorrect or has expired.",
    )
}

fn success_json() -> Response<Body> {
    json_response(StatusCode::OK, &serde_json::json!({ "success": true }))
}

/// GET /_matrix/client/unstable/threepid/email/submit_token?sid&client_secret&token
///
/// The page the mailed link opens: a confirmation form, validating nothing, so that mail
/// scanners that fetch links cannot validate on the user's behalf.
pub async fn email_link_page(state: &AppState, request: Request<Body>) -> Response<Body> {
    let browser = browser_languages(&request);
    let params =
        match Params::from_request(request, 0, state.config.server.header_read_timeout).await {
            Ok(params) => params,
            Err(e) => return failure_page(state, &browser, None, e.status, failure_of(&e)),
        };
    let (Some(sid), Some(client_secret), Some(token)) = (
        params.get("sid"),
        params.get("client_secret"),
        params.get("token"),
    ) else {
        return failure_page(
            state,
            &browser,
            None,
            StatusCode::BAD_REQUEST,
            Failure::LinkIncomplete,
        );
    };
    let session = if token::is_sid(sid) {
        match state.store.get(sid, state.now_ms()).await {
            Ok(session) => session,
            Err(e) => {
                tracing::warn!(error = %e, "link page: store failed");
                return failure_page(
                    state,
                    &browser,
                    None,
                    StatusCode::SERVICE_UNAVAILABLE,
                    Failure::Unavailable,
                );
            }
        }
    } else {
        None // cannot be ours: not looked up
    };
    let Some(session) = session.filter(|s| s.client_secret.ct_eq(&SecretHash::of(client_secret)))
    else {
        return failure_page(
            state,
            &browser,
            None,
            StatusCode::NOT_FOUND,
            Failure::LinkExpired,
        );
    };
    let lang = page_language(state, &browser, session.language.as_deref());
    let page = Page::Confirm {
        app_name: &state.config.email.app_name,
        purpose: session.purpose,
        action: "submit_token",
        sid,
        client_secret,
        token,
    };
    // The form posts here, and the answer may redirect to next_link: browsers hold that
    // redirect to form-action too.
    let form_action = match session.next_link.as_deref().and_then(origin_of) {
        Some(origin) => format!("form-action 'self' {origin}"),
        None => "form-action 'self'".to_owned(),
    };
    html_with(state, &lang, StatusCode::OK, page, &form_action)
}

/// The browser's `Accept-Language`, read before the request is consumed.
fn browser_languages(request: &Request<Body>) -> Option<String> {
    request
        .headers()
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// A page's language: the browser's best match, else the session's messages' language,
/// else the default.
fn page_language(state: &AppState, browser: &Option<String>, session: Option<&str>) -> String {
    let catalogues = state.templates.catalogues();
    catalogues
        .negotiate(browser.as_deref())
        .unwrap_or_else(|| catalogues.resolve(session))
        .to_owned()
}

/// What the failure page says for a refusal.
fn failure_of(e: &MatrixError) -> Failure {
    match e.errcode {
        "M_TOKEN_INCORRECT" => Failure::TokenIncorrect,
        "M_SESSION_EXPIRED" => Failure::TooManyAttempts,
        "M_NO_VALID_SESSION" => Failure::LinkExpired,
        "M_LIMIT_EXCEEDED" => Failure::RateLimited,
        "M_MISSING_PARAM" | "M_INVALID_PARAM" | "M_NOT_JSON" | "M_BAD_JSON" => {
            Failure::LinkIncomplete
        }
        _ if e.status == StatusCode::SERVICE_UNAVAILABLE => Failure::Unavailable,
        _ => Failure::Other,
    }
}

/// `scheme://host[:port]` of an (already validated) http(s) URL.
fn origin_of(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    matches!(url.scheme(), "http" | "https").then(|| url.origin().ascii_serialization())
}

/// POST /_matrix/client/unstable/threepid/email/submit_token
///
/// A form (the confirmation page's button) gets a redirect to `next_link` or an HTML
/// page; a JSON body gets JSON.
pub async fn email_submit(
    state: &AppState,
    client_ip: IpAddr,
    request: Request<Body>,
) -> Response<Body> {
    let form = matrix::is_form(request.headers());
    let browser = browser_languages(&request);
    let params = Params::from_request(
        request,
        state.config.server.max_body_bytes,
        state.config.server.header_read_timeout,
    )
    .await;
    let result = match params {
        Ok(params) => submit(state, client_ip, &params).await,
        Err(e) => Err(e),
    };
    match (form, result) {
        (true, Ok(validated)) => browser_success(state, &browser, validated),
        (true, Err(e)) => failure_page(state, &browser, None, e.status, failure_of(&e)),
        (false, Ok(_)) => success_json(),
        (false, Err(e)) => e.into_response(),
    }
}

/// POST /_matrix/client/unstable/threepid/msisdn/submit_token (the `submit_url`)
pub async fn json_submit(
    state: &AppState,
    client_ip: IpAddr,
    request: Request<Body>,
) -> Response<Body> {
    let result = match Params::from_request(
        request,
        state.config.server.max_body_bytes,
        state.config.server.header_read_timeout,
    )
    .await
    {
        Ok(params) => submit(state, client_ip, &params).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => success_json(),
        Err(e) => e.into_response(),
    }
}

/// GET/POST /_matrix/identity/api/v1/validate/{email,msisdn}/submitToken
///
/// The identity-API form: GET is a link a person opens (HTML, or a redirect to
/// `next_link`); POST answers JSON.
pub async fn identity_submit(
    state: &AppState,
    client_ip: IpAddr,
    request: Request<Body>,
) -> Response<Body> {
    if request.method() == Method::GET {
        let browser = browser_languages(&request);
        let result =
            match Params::from_request(request, 0, state.config.server.header_read_timeout).await {
                Ok(params) => submit(state, client_ip, &params).await,
                Err(e) => Err(e),
            };
        return match result {
            Ok(validated) => browser_success(state, &browser, validated),
            Err(e) => failure_page(state, &browser, None, e.status, failure_of(&e)),
        };
    }
    json_submit(state, client_ip, request).await
}

fn browser_success(
    state: &AppState,
    browser: &Option<String>,
    validated: Validated,
) -> Response<Body> {
    let lang = page_language(state, browser, validated.language.as_deref());
    match validated.next_link {
        Some(next_link) => {
            let location = validate::next_link_with_sid(&next_link, &validated.sid);
            let mut response = Response::new(matrix::empty());
            *response.status_mut() = StatusCode::FOUND;
            match HeaderValue::from_str(&location) {
                Ok(value) => {
                    response.headers_mut().insert(header::LOCATION, value);
                    response
                }
                Err(_) => html(
                    state,
                    &lang,
                    StatusCode::OK,
                    Page::Success {
                        app_name: &state.config.email.app_name,
                    },
                ),
            }
        }
        None => html(
            state,
            &lang,
            StatusCode::OK,
            Page::Success {
                app_name: &state.config.email.app_name,
            },
        ),
    }
}

fn failure_page(
    state: &AppState,
    browser: &Option<String>,
    session_language: Option<&str>,
    status: StatusCode,
    reason: Failure,
) -> Response<Body> {
    let lang = page_language(state, browser, session_language);
    html(
        state,
        &lang,
        status,
        Page::Failure {
            app_name: &state.config.email.app_name,
            reason,
        },
    )
}

fn html(state: &AppState, lang: &str, status: StatusCode, page: Page<'_>) -> Response<Body> {
    html_with(state, lang, status, page, "form-action 'none'")
}

/// A page with its Content-Security-Policy's `form-action` directive (which, unlike the
/// others, does not fall back to `default-src`).
fn html_with(
    state: &AppState,
    lang: &str,
    status: StatusCode,
    page: Page<'_>,
    form_action: &str,
) -> Response<Body> {
    match state.templates.page(page, lang) {
        Ok(text) => {
            let mut response = Response::new(full(text));
            *response.status_mut() = status;
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            // Which language, and that it depends on the browser's.
            if let Ok(value) = HeaderValue::from_str(lang) {
                headers.insert(header::CONTENT_LANGUAGE, value);
            }
            headers.insert(header::VARY, HeaderValue::from_static("Accept-Language"));
            // The page carries the token in its form: keep it out of caches and frames.
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            let policy = format!(
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; \
                 base-uri 'none'; {form_action}"
            );
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_str(&policy)
                    .unwrap_or(HeaderValue::from_static("default-src 'none'")),
            );
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
            response
        }
        Err(e) => {
            tracing::error!(error = %e, "could not render a page");
            MatrixError::internal("Could not render the page.").into_response()
        }
    }
}
