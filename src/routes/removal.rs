//! `POST /_matrix/client/{v}/account/3pid/delete`: forwarded unchanged; when the homeserver
//! answers 200 for an email address, its owner gets a notice that it was removed from an
//! account (`notices.address_removed`), in the language the client asked for.

use hyper::{Request, Response, StatusCode};

use crate::AppState;
use crate::matrix::{self, Body, full};
use crate::proxy::{self, ConnInfo};
use crate::routes::request_token::message_language;
use crate::threepid::Notice;
use crate::validate;

/// POST …/account/3pid/delete
pub async fn handle(state: &AppState, conn: &ConnInfo, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
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
    let removed = matrix::parse_object(&bytes).ok().and_then(|body| {
        let medium = body.get("medium")?.as_str()?;
        let address = body.get("address")?.as_str()?;
        (medium == "email")
            .then(|| validate::email(address).ok())
            .flatten()
    });
    let client_ip = proxy::client_ip(
        &parts.headers,
        conn.peer.ip(),
        &state.config.server.trusted_proxies,
    );
    let language = message_language(state, &parts.headers);
    // The body goes on as it came (byte for byte): the homeserver judges it.
    let response = proxy::forward(
        &state.upstream,
        &state.metrics,
        &state.config.server.trusted_proxies,
        conn,
        Request::from_parts(parts, full(bytes)),
    )
    .await;
    if let Some(address) = removed
        && response.status() == StatusCode::OK
    {
        state
            .notify(Notice::AddressRemoved, &address, &language, client_ip)
            .await;
    }
    response
}
