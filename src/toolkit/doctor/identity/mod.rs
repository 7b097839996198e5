//! The identity listener as the homeserver reaches it: `https://<identity.server_name>`
//! resolved, connected to, its TLS handshake, its identity API (`GET
//! /_matrix/identity/api/v1` answers `{}`), and its certificate ([`certificate`]).

mod certificate;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{Check, timed};
use crate::config::Config;

pub(super) use certificate::judge;
use certificate::system_roots;

const REACH: &str = "identity.reach";
/// What the homeserver asks first; the sidecar answers `{}`.
const IDENTITY_API: &str = "/_matrix/identity/api/v1";

pub async fn checks(config: &Config) -> Vec<Check> {
    let server_name = &config.identity.server_name;
    let (host, port) = split_server_name(server_name);
    let addrs: Vec<SocketAddr> = match timed(tokio::net::lookup_host((host.as_str(), port))).await {
        Some(Ok(addrs)) => addrs.collect(),
        Some(Err(e)) => {
            return vec![Check::fail(
                REACH,
                format!(
                    "identity.server_name's host {host} does not resolve ({e}): make it resolve, for the homeserver, to the sidecar's identity.listen"
                ),
            )];
        }
        None => return vec![Check::fail(REACH, format!("resolving {host} timed out"))],
    };
    let mut last_error = String::from("no address");
    let mut connected = None;
    for addr in &addrs {
        match timed(TcpStream::connect(addr)).await {
            Some(Ok(tcp)) => {
                connected = Some((*addr, tcp));
                break;
            }
            Some(Err(e)) => last_error = e.to_string(),
            None => last_error = "timed out".into(),
        }
    }
    let Some((addr, tcp)) = connected else {
        let mut checks = vec![unreachable(config, &addrs, &last_error).await];
        // The certificate the sidecar will serve can be judged from its file all the same.
        if let Some(files) = &config.identity.tls {
            checks.push(match configured_chain(&files.cert) {
                Ok(chain) => judge(&chain, &host, system_roots(), UnixTime::now()),
                Err(e) => Check::fail(
                    "identity.certificate",
                    format!("cannot read {} ({e})", files.cert.display()),
                ),
            });
        }
        return checks;
    };
    let Ok(name) = ServerName::try_from(host.clone()) else {
        return vec![Check::fail(
            REACH,
            format!("identity.server_name's host {host:?} is not a DNS name or an IP address"),
        )];
    };
    let tls = match timed(connector().connect(name, tcp)).await {
        Some(Ok(tls)) => tls,
        Some(Err(e)) => {
            return vec![Check::fail(
                REACH,
                format!(
                    "the TLS handshake with {addr} failed ({e}): identity.server_name must lead to the sidecar's identity.listen, which speaks https"
                ),
            )];
        }
        None => return vec![Check::fail(REACH, format!("no TLS handshake with {addr}"))],
    };
    let chain: Vec<CertificateDer<'static>> = tls
        .get_ref()
        .1
        .peer_certificates()
        .map(|certs| certs.iter().map(|c| c.clone().into_owned()).collect())
        .unwrap_or_default();
    let reach = match timed(ask(tls, server_name)).await {
        Some(Ok(())) => Check::ok(
            REACH,
            format!(
                "{server_name} resolves to {}; {addr} answers {IDENTITY_API} as the sidecar does",
                addresses(&addrs)
            ),
        ),
        Some(Err(why)) => Check::fail(
            REACH,
            format!(
                "{addr} ({server_name}) {why}: that is not the sidecar's identity listener; make identity.server_name resolve to identity.listen"
            ),
        ),
        None => Check::fail(
            REACH,
            format!("{addr} ({server_name}) did not answer {IDENTITY_API} in time"),
        ),
    };
    vec![reach, judge(&chain, &host, system_roots(), UnixTime::now())]
}

/// `host[:port]` → the host (brackets of an IPv6 address removed) and the port, 443 when none
/// is given (the homeserver calls `https://<server_name>`).
pub(super) fn split_server_name(server_name: &str) -> (String, u16) {
    if let Some(rest) = server_name.strip_prefix('[')
        && let Some((host, after)) = rest.split_once(']')
    {
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (host.to_owned(), port.unwrap_or(443));
    }
    match server_name.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host.to_owned(), port.parse().unwrap_or(443)),
        _ => (server_name.to_owned(), 443),
    }
}

/// Nothing answered at the name: the sidecar is down, or the name leads elsewhere.
async fn unreachable(config: &Config, addrs: &[SocketAddr], error: &str) -> Check {
    let identity = &config.identity;
    let listen = reachable_at(identity.listen);
    let running = matches!(timed(TcpStream::connect(listen)).await, Some(Ok(_)));
    let at = format!("{} ({}: {error})", identity.server_name, addresses(addrs));
    if running {
        Check::fail(
            REACH,
            format!(
                "nothing answers at {at}, but the sidecar listens on identity.listen {}: make identity.server_name resolve to it, or the homeserver cannot call back",
                identity.listen
            ),
        )
    } else {
        Check::warn(
            REACH,
            format!(
                "nothing answers at {at}, nor on identity.listen {}: the sidecar is not running; start it and run doctor again to check the identity listener and its certificate",
                identity.listen
            ),
        )
    }
}

/// The certificates of the PEM file `identity.tls_cert_file`, leaf first.
fn configured_chain(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| e.to_string())
}

/// Where to connect to a listener bound to `listen` (the unspecified address is this machine).
fn reachable_at(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    }
}

/// `127.0.0.1, ::1`: each address once.
fn addresses(addrs: &[SocketAddr]) -> String {
    let mut ips: Vec<String> = Vec::new();
    for addr in addrs {
        let ip = addr.ip().to_string();
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips.join(", ")
}

/// `GET /_matrix/identity/api/v1` over the connection; `Ok` when it answers 200 with a JSON
/// object, else what it answered.
async fn ask(tls: TlsStream<TcpStream>, server_name: &str) -> Result<(), String> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| format!("speaks no HTTP/1.1 ({e})"))?;
    let driver = tokio::spawn(connection);
    let request = Request::get(IDENTITY_API)
        .header(hyper::header::HOST, server_name)
        .body(Empty::<Bytes>::new())
        .expect("a fixed request is valid");
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("did not answer {IDENTITY_API} ({e})"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), 64 * 1024)
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let object =
            serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v.is_object());
        if status == StatusCode::OK && object {
            Ok(())
        } else {
            Err(format!("answers {status} to {IDENTITY_API}"))
        }
    };
    let result = answer.await;
    driver.abort();
    result
}

/// A TLS client that completes any handshake (signatures checked, the certificate taken as it
/// is): [`judge`] decides about the certificate afterwards, with reasons.
fn connector() -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(TakeAnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

#[derive(Debug)]
struct TakeAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for TakeAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
