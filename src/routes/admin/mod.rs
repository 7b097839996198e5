//! The admin listener: liveness, readiness and Prometheus metrics, and the admin API under
//! `/admin/v1/` ([`api`]) when `admin.api_token_file` is set. Liveness never depends on
//! Redis, SMTP or the homeserver; readiness does depend on the store.

mod api;
mod auth;

use std::time::Duration;

use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};

use crate::AppState;
use crate::matrix::{Body, MatrixError, full};
use crate::proxy::ConnInfo;

/// How long readiness waits for the store to answer a PING.
const STORE_PING_TIMEOUT: Duration = Duration::from_millis(500);

/// GET /health/live, GET /health/ready, GET /metrics; /admin/v1/…
pub async fn handle(state: &AppState, conn: &ConnInfo, request: Request<Body>) -> Response<Body> {
    if request.uri().path().starts_with(api::PREFIX) {
        return api::handle(state, conn, request).await;
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return MatrixError::method_not_allowed().into_response();
    }
    match request.uri().path() {
        "/health/live" => text(StatusCode::OK, "live\n"),
        "/health/ready" => {
            if !state.is_ready() {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: starting or draining\n",
                );
            }
            match tokio::time::timeout(STORE_PING_TIMEOUT, state.store.ping()).await {
                Ok(Ok(())) => text(StatusCode::OK, "ready\n"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "readiness: store unreachable");
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: session store unreachable\n",
                    )
                }
                Err(_) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: session store timed out\n",
                ),
            }
        }
        "/metrics" => {
            let mut response = text(StatusCode::OK, state.metrics.encode());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            response
        }
        _ => MatrixError::unrecognized().into_response(),
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let body = body.into();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
