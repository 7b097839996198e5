//! Which code answers a client request: [`classify`] is a pure function of method and
//! path; [`client`] dispatches, wraps every request in a tracing span and counts it.

pub mod admin;
pub mod creds;
pub mod identity;
pub mod removal;
pub mod request_token;
pub mod submit_token;
pub mod versions;

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use hyper::{Method, Request, Response};
use tracing::Instrument;

use crate::AppState;
use crate::config::RateLimit;
use crate::matrix::{Body, MatrixError};
use crate::metrics::RouteClass;
use crate::proxy::{self, ConnInfo};
use crate::ratelimit::{LimitKey, RateDecision};
use crate::threepid::{Medium, Purpose};

/// What the sidecar does with a client request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /_matrix/client/versions`: forward and inject the flag.
    Versions,
    /// `POST …/{register,account/password,account/3pid}/{email,msisdn}/requestToken`.
    RequestToken(Medium, Purpose),
    /// `GET /_matrix/client/unstable/threepid/email/submit_token`: the confirmation page.
    EmailLinkPage,
    /// `POST` of the same path: form or JSON.
    EmailSubmit,
    /// `POST /_matrix/client/unstable/threepid/msisdn/submit_token`.
    MsisdnSubmit,
    /// `POST …/register`, `…/account/password`, `…/account/3pid`, `…/account/3pid/add`.
    Creds(Completion),
    /// `POST …/account/3pid/delete`: forwarded, then a notice to the removed address.
    ThreepidDelete,
    /// `OPTIONS` on any path above: a CORS preflight, answered here.
    Preflight,
    /// Everything else: forward unchanged.
    Forward,
}

/// The endpoints where a client uses a verified address: each accepts sessions of some
/// purposes only ([`Completion::accepts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// `…/register` (the UIA stage `m.login.email.identity` / `m.login.msisdn`).
    Register,
    /// `…/account/password` (the same UIA stages).
    Password,
    /// `…/account/3pid` (`three_pid_creds`).
    AddThreepidLegacy,
    /// `…/account/3pid/add` (creds at the top level).
    AddThreepid,
}

impl Completion {
    /// Whether a session started for `purpose` may complete this endpoint. A password reset
    /// is the one act that hands over an account, so only a session whose mail said "reset
    /// your password" completes it, and such a session completes nothing else. Older
    /// clients bind the address they registered with through `/account/3pid` right after
    /// registering, so a registration session completes that too.
    pub fn accepts(self, purpose: Purpose) -> bool {
        match self {
            Completion::Register => purpose == Purpose::Registration,
            Completion::Password => purpose == Purpose::PasswordReset,
            Completion::AddThreepidLegacy => {
                matches!(purpose, Purpose::Registration | Purpose::AddThreepid)
            }
            Completion::AddThreepid => purpose == Purpose::AddThreepid,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Completion::Register => "register",
            Completion::Password => "account/password",
            Completion::AddThreepidLegacy => "account/3pid",
            Completion::AddThreepid => "account/3pid/add",
        }
    }
}

impl Route {
    pub fn class(self) -> RouteClass {
        match self {
            Route::Versions => RouteClass::Versions,
            Route::Forward => RouteClass::Forwarded,
            _ => RouteClass::Handled,
        }
    }
}

const CLIENT_PREFIX: &str = "/_matrix/client/";

/// Decides the route from the method and the path alone. The sidecar's endpoints answer
/// under any version prefix (`r0`, `v3`, `unstable`, …).
pub fn classify(method: &Method, path: &str) -> Route {
    if *method == Method::OPTIONS {
        // `…/3pid/delete` is the homeserver's endpoint (the sidecar only watches its answer):
        // its preflight is the homeserver's too.
        let ours = [Method::GET, Method::POST].iter().any(|m| {
            !matches!(
                classify_method(m, path),
                Route::Forward | Route::ThreepidDelete
            )
        });
        return if ours {
            Route::Preflight
        } else {
            Route::Forward
        };
    }
    classify_method(method, path)
}

fn classify_method(method: &Method, path: &str) -> Route {
    let Some(rest) = path.strip_prefix(CLIENT_PREFIX) else {
        return Route::Forward;
    };
    if *method == Method::GET && rest == "versions" {
        return Route::Versions;
    }
    match rest {
        "unstable/threepid/email/submit_token" if *method == Method::GET => {
            return Route::EmailLinkPage;
        }
        "unstable/threepid/email/submit_token" if *method == Method::POST => {
            return Route::EmailSubmit;
        }
        "unstable/threepid/msisdn/submit_token" if *method == Method::POST => {
            return Route::MsisdnSubmit;
        }
        _ => {}
    }
    if *method != Method::POST {
        return Route::Forward;
    }
    // Past the version segment.
    let Some((_version, endpoint)) = rest.split_once('/') else {
        return Route::Forward;
    };
    match endpoint {
        "register" => Route::Creds(Completion::Register),
        "account/password" => Route::Creds(Completion::Password),
        "account/3pid" => Route::Creds(Completion::AddThreepidLegacy),
        "account/3pid/add" => Route::Creds(Completion::AddThreepid),
        "account/3pid/delete" => Route::ThreepidDelete,
        _ => request_token_route(endpoint).unwrap_or(Route::Forward),
    }
}

/// `{register,account/password,account/3pid}/{email,msisdn}/requestToken`
fn request_token_route(endpoint: &str) -> Option<Route> {
    let rest = endpoint.strip_suffix("/requestToken")?;
    let (purpose, medium) = rest.rsplit_once('/')?;
    let purpose = match purpose {
        "register" => Purpose::Registration,
        "account/password" => Purpose::PasswordReset,
        "account/3pid" => Purpose::AddThreepid,
        _ => return None,
    };
    Some(Route::RequestToken(Medium::parse(medium)?, purpose))
}

/// Counts a request against a limit kept in the store: 429 `M_LIMIT_EXCEEDED` when it is
/// spent, 503 when the store is down.
pub async fn check_rate_limit(
    state: &AppState,
    key: &LimitKey,
    limit: RateLimit,
) -> Result<(), MatrixError> {
    match state.store.rate_limit(key, limit, state.now_ms()).await {
        Ok(RateDecision::Allowed) => Ok(()),
        Ok(RateDecision::Limited { retry_after_ms }) => {
            state.metrics.rate_limited(key.name());
            tracing::info!(limit = key.name(), retry_after_ms, "rate limited");
            Err(MatrixError::limit_exceeded(retry_after_ms))
        }
        Err(e) => {
            tracing::warn!(error = %e, "rate limit: store failed");
            Err(MatrixError::store_unavailable())
        }
    }
}

/// `OPTIONS` on one of the sidecar's own paths: the CORS headers, nothing read, nothing
/// counted against a limit, nothing forwarded (the homeserver may not know the path).
fn preflight() -> Response<Body> {
    crate::matrix::json_response(hyper::StatusCode::OK, &serde_json::json!({}))
}

/// Every request on the client listener.
pub async fn client(state: &AppState, conn: &ConnInfo, request: Request<Body>) -> Response<Body> {
    let route = classify(request.method(), request.uri().path());
    let span = tracing::info_span!(
        "request",
        id = %state.next_request_id(),
        method = %request.method(),
        route = route.class().as_str(),
        status = tracing::field::Empty,
        duration_ms = tracing::field::Empty,
    );
    // The duration only goes into the span: no clock read when nothing records it.
    let started = (!span.is_disabled()).then(Instant::now);
    // Only the submit endpoints need the client's address (for their rate limit).
    let client_ip = |request: &Request<Body>| {
        proxy::client_ip(
            request.headers(),
            conn.peer.ip(),
            &state.config.server.trusted_proxies,
        )
    };
    // Every handler's future is boxed: hyper keeps room for the service's future for as long
    // as a connection lives, so its size is paid by every idle keep-alive connection.
    let handler: Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>> = match route {
        Route::Versions => Box::pin(versions::handle(state, conn, request)),
        Route::RequestToken(medium, purpose) => {
            Box::pin(request_token::handle(state, conn, medium, purpose, request))
        }
        Route::EmailLinkPage => Box::pin(submit_token::email_link_page(state, request)),
        Route::EmailSubmit => {
            let ip = client_ip(&request);
            Box::pin(submit_token::email_submit(state, ip, request))
        }
        Route::MsisdnSubmit => {
            let ip = client_ip(&request);
            Box::pin(submit_token::json_submit(state, ip, request))
        }
        Route::Creds(completion) => Box::pin(creds::handle(state, conn, completion, request)),
        Route::ThreepidDelete => Box::pin(removal::handle(state, conn, request)),
        Route::Preflight => Box::pin(std::future::ready(preflight())),
        Route::Forward => Box::pin(proxy::forward(
            &state.upstream,
            &state.metrics,
            &state.config.server.trusted_proxies,
            conn,
            request,
        )),
    };
    let response = handler.instrument(span.clone()).await;
    let status = response.status().as_u16();
    state.metrics.request(route.class(), status);
    span.record("status", status);
    if let Some(started) = started {
        span.record("duration_ms", started.elapsed().as_secs_f64() * 1000.0);
    }
    // Forwarded traffic is the homeserver's to log; what the sidecar answers itself is
    // logged at info.
    if route.class() == RouteClass::Handled {
        span.in_scope(|| tracing::info!("request finished"));
    } else {
        span.in_scope(|| tracing::debug!("request finished"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_token_routes_answer_on_every_version_prefix() {
        for v in ["r0", "v3", "unstable"] {
            assert_eq!(
                classify(
                    &Method::POST,
                    &format!("/_matrix/client/{v}/register/email/requestToken")
                ),
                Route::RequestToken(Medium::Email, Purpose::Registration)
            );
            assert_eq!(
                classify(
                    &Method::POST,
                    &format!("/_matrix/client/{v}/account/password/email/requestToken")
                ),
                Route::RequestToken(Medium::Email, Purpose::PasswordReset)
            );
            assert_eq!(
                classify(
                    &Method::POST,
                    &format!("/_matrix/client/{v}/account/3pid/email/requestToken")
                ),
                Route::RequestToken(Medium::Email, Purpose::AddThreepid)
            );
            assert_eq!(
                classify(
                    &Method::POST,
                    &format!("/_matrix/client/{v}/account/3pid/msisdn/requestToken")
                ),
                Route::RequestToken(Medium::Msisdn, Purpose::AddThreepid)
            );
            for (path, completion) in [
                ("register", Completion::Register),
                ("account/password", Completion::Password),
                ("account/3pid", Completion::AddThreepidLegacy),
                ("account/3pid/add", Completion::AddThreepid),
            ] {
                assert_eq!(
                    classify(&Method::POST, &format!("/_matrix/client/{v}/{path}")),
                    Route::Creds(completion)
                );
            }
        }
        assert_eq!(
            classify(
                &Method::GET,
                "/_matrix/client/r0/register/email/requestToken"
            ),
            Route::Forward
        );
        assert_eq!(
            classify(&Method::GET, "/_matrix/client/r0/account/3pid"),
            Route::Forward
        );
        assert_eq!(
            classify(&Method::POST, "/_matrix/client/r0/account/3pid/bind"),
            Route::Forward
        );
    }

    #[test]
    fn the_submit_endpoints_are_recognised_by_method() {
        let email = "/_matrix/client/unstable/threepid/email/submit_token";
        assert_eq!(classify(&Method::GET, email), Route::EmailLinkPage);
        assert_eq!(classify(&Method::POST, email), Route::EmailSubmit);
        assert_eq!(
            classify(
                &Method::POST,
                "/_matrix/client/unstable/threepid/msisdn/submit_token"
            ),
            Route::MsisdnSubmit
        );
    }

    #[test]
    fn options_on_our_paths_is_a_preflight_and_elsewhere_is_forwarded() {
        for path in [
            "/_matrix/client/versions",
            "/_matrix/client/v3/register/email/requestToken",
            "/_matrix/client/r0/account/password/msisdn/requestToken",
            "/_matrix/client/unstable/threepid/email/submit_token",
            "/_matrix/client/unstable/threepid/msisdn/submit_token",
            "/_matrix/client/v3/register",
            "/_matrix/client/v3/account/password",
            "/_matrix/client/v3/account/3pid",
            "/_matrix/client/v3/account/3pid/add",
        ] {
            assert_eq!(classify(&Method::OPTIONS, path), Route::Preflight, "{path}");
        }
        for path in [
            "/_matrix/client/v3/sync",
            "/_matrix/client/v3/login",
            "/_matrix/client/v3/account/3pid/delete",
            "/_matrix/media/v3/upload",
            "/.well-known/matrix/client",
        ] {
            assert_eq!(classify(&Method::OPTIONS, path), Route::Forward, "{path}");
        }
    }

    #[test]
    fn a_password_reset_is_completed_only_by_a_password_reset_session() {
        use Purpose::*;
        let accepted = |c: Completion| {
            [Registration, PasswordReset, AddThreepid]
                .into_iter()
                .filter(|p| c.accepts(*p))
                .collect::<Vec<_>>()
        };
        assert_eq!(accepted(Completion::Password), [PasswordReset]);
        assert_eq!(accepted(Completion::Register), [Registration]);
        assert_eq!(
            accepted(Completion::AddThreepidLegacy),
            [Registration, AddThreepid]
        );
        assert_eq!(accepted(Completion::AddThreepid), [AddThreepid]);
    }

    #[test]
    fn only_get_versions_is_the_versions_route() {
        assert_eq!(
            classify(&Method::GET, "/_matrix/client/versions"),
            Route::Versions
        );
        assert_eq!(
            classify(&Method::POST, "/_matrix/client/versions"),
            Route::Forward
        );
        assert_eq!(
            classify(&Method::GET, "/_matrix/client/versions/"),
            Route::Forward
        );
        assert_eq!(
            classify(&Method::GET, "/_matrix/client/r0/sync"),
            Route::Forward
        );
    }
}
