//! SMS: the webhook's host resolves, and a TLS handshake with it succeeds, its certificate
//! checked as the sender checks it (Web PKI roots). No request is made, so nothing is sent.

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::{Check, is_loopback, timed};
use crate::config::{Config, SmsTransport};
// The webhook sender trusts the Web PKI roots, as the SMTP client does.
use crate::delivery::smtp::tls_connector;

const NAME: &str = "sms";

pub async fn checks(config: &Config) -> Vec<Check> {
    let sms = &config.sms;
    match (sms.transport, &sms.webhook_url) {
        (SmsTransport::Log, _) if sms.log_codes => vec![Check::warn(
            NAME,
            "SMS off (sms.transport = \"log\"), and sms.log_codes = true writes every code into the log: never in production",
        )],
        (SmsTransport::Log, _) => vec![Check::ok(
            NAME,
            "SMS off (sms.transport = \"log\": codes are not sent, and not logged)",
        )],
        (SmsTransport::Webhook, None) => vec![Check::fail(NAME, "sms.webhook_url is not set")],
        (SmsTransport::Webhook, Some(url)) => vec![webhook(url).await],
    }
}

async fn webhook(url: &url::Url) -> Check {
    let Some(host) = url.host_str() else {
        return Check::fail(NAME, "sms.webhook_url has no host");
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<_> = match timed(tokio::net::lookup_host((host, port))).await {
        Some(Ok(addrs)) => addrs.collect(),
        Some(Err(e)) => {
            return Check::fail(
                NAME,
                format!("sms.webhook_url's host {host} does not resolve ({e})"),
            );
        }
        None => return Check::fail(NAME, format!("resolving {host} timed out")),
    };
    let mut tcp = None;
    let mut last_error = String::from("no address");
    for addr in &addrs {
        match timed(TcpStream::connect(addr)).await {
            Some(Ok(stream)) => {
                tcp = Some(stream);
                break;
            }
            Some(Err(e)) => last_error = e.to_string(),
            None => last_error = "timed out".into(),
        }
    }
    let Some(tcp) = tcp else {
        return Check::fail(
            NAME,
            format!("cannot connect to {host}:{port} ({last_error}): is sms.webhook_url right?"),
        );
    };
    if url.scheme() == "http" {
        let said = format!("{host}:{port} accepts connections; nothing sent");
        return if is_loopback(host) {
            Check::ok(NAME, said)
        } else {
            Check::warn(
                NAME,
                format!(
                    "{said}, but over plain http the numbers, codes and the bearer token cross the network readable: use https://"
                ),
            )
        };
    }
    let Ok(name) = ServerName::try_from(host.to_owned()) else {
        return Check::fail(NAME, format!("{host:?} is not a host name"));
    };
    let connector = match tls_connector() {
        Ok(connector) => connector,
        Err(e) => return Check::fail(NAME, format!("TLS: {e}")),
    };
    match timed(connector.connect(name, tcp)).await {
        Some(Ok(tls)) => {
            let version = tls
                .get_ref()
                .1
                .protocol_version()
                .map_or("TLS".to_owned(), crate::tls::version_name);
            Check::ok(
                NAME,
                format!(
                    "{host}:{port} resolves and completes a TLS handshake ({version}, certificate valid); nothing sent"
                ),
            )
        }
        Some(Err(e)) => Check::fail(
            NAME,
            format!(
                "TLS with {host}:{port} failed ({e}): the gateway's certificate must be valid for {host} and from a public CA"
            ),
        ),
        None => Check::fail(NAME, format!("no TLS handshake with {host}:{port}")),
    }
}
