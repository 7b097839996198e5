//! The operator's own rules (`policy.webhook_url`): `POST {"medium", "address", "purpose",
//! "client_ip"}` with the bearer token, within `webhook_timeout`; the answer
//! `{"allow": bool, "reason"?: string}` decides. Anything else — a timeout, a status that is
//! not 2xx, a body that does not say — is a failure, which `webhook_failure` judges.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::Candidate;
use crate::config::PolicyWebhook;

/// The most of an answer read.
const MAX_ANSWER_BYTES: usize = 16 * 1024;
/// A refusal reason is shown to the user: kept short.
const MAX_REASON_CHARS: usize = 200;

pub struct Webhook {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Url,
    token: Option<SecretString>,
    timeout: Duration,
}

/// What the webhook said.
#[derive(Debug, PartialEq, Eq)]
pub enum WebhookAnswer {
    Allow,
    Deny(Option<String>),
    /// It could not be asked, or its answer says nothing.
    Failed(String),
}

impl Webhook {
    pub fn new(config: &PolicyWebhook) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .expect("the ring provider supports the default protocol versions")
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            url: config.url.clone(),
            token: config.token.clone(),
            timeout: config.timeout,
        }
    }

    pub async fn ask(&self, candidate: &Candidate<'_>) -> WebhookAnswer {
        match tokio::time::timeout(self.timeout, self.post(candidate)).await {
            Ok(answer) => answer,
            Err(_) => WebhookAnswer::Failed(format!(
                "no answer within {}",
                humantime::format_duration(self.timeout)
            )),
        }
    }

    async fn post(&self, candidate: &Candidate<'_>) -> WebhookAnswer {
        let body = serde_json::json!({
            "medium": candidate.medium.as_str(),
            "address": candidate.address,
            "purpose": candidate.purpose.as_str(),
            "client_ip": candidate.client_ip.to_string(),
        });
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.url.as_str())
            .header(CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token
            && let Ok(value) = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
        {
            request = request.header(AUTHORIZATION, value);
        }
        let Ok(request) = request.body(Full::new(Bytes::from(body.to_string()))) else {
            return WebhookAnswer::Failed("cannot build the request".into());
        };
        let response = match self.client.request(request).await {
            Ok(response) => response,
            Err(e) => return WebhookAnswer::Failed(e.to_string()),
        };
        let status = response.status();
        let bytes = match Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            Err(e) => return WebhookAnswer::Failed(format!("reading the answer: {e}")),
        };
        if !status.is_success() {
            return WebhookAnswer::Failed(format!("answered {status}"));
        }
        read_answer(&bytes)
    }
}

/// `{"allow": true}` or `{"allow": false, "reason": "…"}`.
pub fn read_answer(bytes: &[u8]) -> WebhookAnswer {
    let Ok(serde_json::Value::Object(answer)) = serde_json::from_slice(bytes) else {
        return WebhookAnswer::Failed("the answer is not a JSON object".into());
    };
    match answer.get("allow") {
        Some(serde_json::Value::Bool(true)) => WebhookAnswer::Allow,
        Some(serde_json::Value::Bool(false)) => WebhookAnswer::Deny(
            answer
                .get("reason")
                .and_then(serde_json::Value::as_str)
                .map(|r| {
                    r.chars()
                        .filter(|c| !c.is_control())
                        .take(MAX_REASON_CHARS)
                        .collect()
                })
                .filter(|r: &String| !r.trim().is_empty()),
        ),
        _ => WebhookAnswer::Failed("the answer has no boolean \"allow\"".into()),
    }
}
