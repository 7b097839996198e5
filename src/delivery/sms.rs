//! Sending SMS codes: a webhook (`POST {"to", "body"}` with a bearer token, which fits
//! Twilio-style relays and in-house gateways) or the log, for trying the sidecar out.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use crate::config::{self, SmsTransport};
use crate::delivery::DeliveryError;
use crate::templates::Templates;
use crate::validate::mask_address;

/// One code to send.
#[derive(Debug)]
pub struct SmsRequest<'a> {
    /// E.164 without `+`.
    pub msisdn: &'a str,
    pub token: &'a str,
    /// The language to write it in.
    pub language: &'a str,
}

/// Sends verification codes.
pub trait SmsSender: Send + Sync + 'static {
    fn send<'a>(&'a self, sms: SmsRequest<'a>) -> BoxFuture<'a, Result<(), DeliveryError>>;
}

/// Builds the configured sender.
pub fn from_config(
    config: &config::Sms,
    app_name: &str,
    templates: Arc<Templates>,
) -> Result<Arc<dyn SmsSender>, DeliveryError> {
    Ok(match config.transport {
        SmsTransport::Log => Arc::new(LogSms {
            log_codes: config.log_codes,
        }),
        SmsTransport::Webhook => Arc::new(WebhookSms::new(config, app_name, templates)?),
    })
}

/// Logs that a code was sent; the code itself only with `sms.log_codes = true`.
pub struct LogSms {
    log_codes: bool,
}

impl SmsSender for LogSms {
    fn send<'a>(&'a self, sms: SmsRequest<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let to = mask_address(sms.msisdn);
            if self.log_codes {
                tracing::warn!(%to, code = sms.token, "SMS code (sms.log_codes = true: never in production)");
            } else {
                tracing::info!(%to, "SMS code sent to the log transport");
            }
            Ok(())
        })
    }
}

/// POSTs `{"to": "+<E.164>", "body": "<text>"}` to `sms.webhook_url`.
pub struct WebhookSms {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Url,
    token: Option<SecretString>,
    timeout: Duration,
    app_name: String,
    templates: Arc<Templates>,
}

impl WebhookSms {
    pub fn new(
        config: &config::Sms,
        app_name: &str,
        templates: Arc<Templates>,
    ) -> Result<Self, DeliveryError> {
        let url = config
            .webhook_url
            .clone()
            .ok_or_else(|| DeliveryError::Build("sms.webhook_url is not set".into()))?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(config.timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| DeliveryError::Build(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(https),
            url,
            token: config.webhook_token.clone(),
            timeout: config.timeout,
            app_name: app_name.to_owned(),
            templates,
        })
    }

    /// Sends one SMS now, for `send-test`; returns the gateway's (successful) HTTP status.
    pub async fn send_traced(&self, sms: SmsRequest<'_>) -> Result<StatusCode, DeliveryError> {
        tokio::time::timeout(self.timeout, self.post(&sms))
            .await
            .unwrap_or(Err(DeliveryError::Timeout))
    }

    async fn post(&self, sms: &SmsRequest<'_>) -> Result<StatusCode, DeliveryError> {
        let text = self
            .templates
            .sms(&self.app_name, sms.token, sms.language)
            .map_err(|e| DeliveryError::Build(e.to_string()))?;
        let body = serde_json::json!({ "to": format!("+{}", sms.msisdn), "body": text });
        let mut request = Request::builder()
            .method(Method::POST)
            .uri(self.url.as_str())
            .header(CONTENT_TYPE, "application/json");
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
                .map_err(|_| DeliveryError::Build("sms.webhook_token is not header text".into()))?;
            request = request.header(AUTHORIZATION, value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| DeliveryError::Build(e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| DeliveryError::Unreachable(e.to_string()))?;
        let status = response.status();
        // Drain the answer so the connection can be reused.
        let _ = response.into_body().collect().await;
        let refused = format!("SMS gateway answered {status}");
        if status.is_success() {
            Ok(status)
        } else if status.is_client_error()
            && !matches!(
                status,
                StatusCode::UNAUTHORIZED
                    | StatusCode::FORBIDDEN
                    | StatusCode::NOT_FOUND
                    | StatusCode::REQUEST_TIMEOUT
                    | StatusCode::TOO_MANY_REQUESTS
            )
        {
            // The gateway refuses this request (a number it cannot reach, a body it will not
            // take); 401, 403 and 404 are about our configuration and 408 and 429 about now,
            // so those are tried again.
            Err(DeliveryError::Permanent(refused))
        } else {
            Err(DeliveryError::Refused(refused))
        }
    }
}

impl SmsSender for WebhookSms {
    fn send<'a>(&'a self, sms: SmsRequest<'a>) -> BoxFuture<'a, Result<(), DeliveryError>> {
        Box::pin(async move {
            let to = mask_address(sms.msisdn);
            match tokio::time::timeout(self.timeout, self.post(&sms)).await {
                Ok(Ok(_)) => {
                    tracing::info!(%to, "SMS code handed to the gateway");
                    Ok(())
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(DeliveryError::Timeout),
            }
        })
    }
}
