//! What the identity listener's certificate means to the homeserver: valid for
//! `identity.server_name` (whoever issued it), trusted by this machine's trust store (the
//! system's, or the bundle `SSL_CERT_FILE` names, as OpenSSL, and so Synapse, reads it) or
//! self-signed / from a private CA, and not expiring within 30 days.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, RootCertStore};

use crate::toolkit::doctor::Check;

const NAME: &str = "identity.certificate";
/// A certificate that ends sooner than this is to be renewed now.
const SOON: Duration = Duration::from_secs(30 * 24 * 3600);
/// Far enough ahead that any certificate has ended by then: checking it then tells its end.
const FAR: Duration = Duration::from_secs(200 * 365 * 24 * 3600);

/// What the homeserver is told to do about a certificate it does not trust yet.
const TRUST_IT: &str = "in its trust store (SSL_CERT_FILE, or update-ca-certificates; see \
    deploy/README.md), or with use_insecure_ssl_client_just_for_testing_do_not_use: true \
    (development only, never in production)";

/// This machine's trust store, as OpenSSL reads it: `SSL_CERT_FILE` (and `SSL_CERT_DIR`)
/// when set, else the system's certificates. `None` when it holds none.
pub fn system_roots() -> Option<Arc<RootCertStore>> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    (!roots.is_empty()).then(|| Arc::new(roots))
}

/// Which trust store a certificate's chain verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Anchor {
    /// This machine's.
    System,
    /// Its own chain: self-signed, or a private CA sent along with it.
    Own,
}

/// The verdict on `chain` (leaf first) for `host`, at `now`.
pub fn judge(
    chain: &[CertificateDer<'static>],
    host: &str,
    system: Option<Arc<RootCertStore>>,
    now: UnixTime,
) -> Check {
    let Some(leaf) = chain.first() else {
        return Check::fail(NAME, "the identity listener sent no certificate");
    };
    let Ok(name) = ServerName::try_from(host.to_owned()) else {
        return Check::fail(
            NAME,
            format!("identity.server_name's host {host:?} is not a DNS name or an IP address"),
        );
    };
    match webpki::EndEntityCert::try_from(leaf) {
        Err(e) => return Check::fail(NAME, format!("the certificate cannot be read ({e})")),
        Ok(end_entity) => {
            if let Err(e) = end_entity.verify_is_valid_for_subject_name(&name) {
                return wrong_name(host, &e);
            }
        }
    }
    let own = own_roots(chain);
    let verified = [(Anchor::System, system), (Anchor::Own, own)]
        .into_iter()
        .filter_map(|(anchor, roots)| Some((anchor, verifier(roots?)?)))
        .find(|(_, verifier)| {
            matches!(
                verify(verifier, chain, &name, now),
                Ok(()) | Err(CertificateError::Expired | CertificateError::ExpiredContext { .. })
            )
        });
    let Some((anchor, verifier)) = verified else {
        return Check::warn(
            NAME,
            format!(
                "valid for {host}, issued by a CA this machine does not trust and the listener \
                 does not send: the homeserver accepts it only with that CA {TRUST_IT}; to check the \
                 certificate's dates too, run doctor with SSL_CERT_FILE naming a bundle that holds \
                 it (the homeserver's)"
            ),
        );
    };
    match verify(&verifier, chain, &name, now) {
        Ok(()) => {}
        Err(CertificateError::ExpiredContext { not_after, .. }) => {
            return Check::fail(
                NAME,
                format!(
                    "expired on {}: the homeserver refuses it; renew it (deploy/make-identity-cert) and restart the sidecar",
                    date(not_after)
                ),
            );
        }
        Err(e) => return Check::fail(NAME, format!("not usable: {e}")),
    }
    let ends = ends(&verifier, chain, &name, now);
    let soon = ends.filter(|&end| end.as_secs() < plus(now, SOON).as_secs());
    let until = ends.map_or_else(
        || "with no end date in the next 200 years".to_owned(),
        |end| format!("until {}", date(end)),
    );
    let issuer = if chain.len() == 1 {
        "self-signed"
    } else {
        "from a private CA"
    };
    match (anchor, soon) {
        (_, Some(end)) => Check::warn(
            NAME,
            format!(
                "valid for {host} but ends on {}, within 30 days: renew it (deploy/make-identity-cert) and restart the sidecar",
                date(end)
            ),
        ),
        (Anchor::System, None) => Check::ok(
            NAME,
            format!("valid for {host} {until}, from a CA this machine trusts"),
        ),
        (Anchor::Own, None) => Check::warn(
            NAME,
            format!(
                "valid for {host} {until}, but {issuer}: Synapse 1.3.1 accepts it only with {} {TRUST_IT}",
                if chain.len() == 1 {
                    "the certificate"
                } else {
                    "that CA"
                }
            ),
        ),
    }
}

/// The certificate names other hosts than `host`.
fn wrong_name(host: &str, e: &webpki::Error) -> Check {
    let presented = match e {
        webpki::Error::CertNotValidForName(context) if !context.presented.is_empty() => {
            let names: Vec<&str> = context.presented.iter().map(|n| bare(n)).collect();
            format!(" (it names {})", names.join(", "))
        }
        _ => String::new(),
    };
    Check::fail(
        NAME,
        format!(
            "not valid for {host}{presented}: the homeserver refuses it; use a certificate for {host} \
             (deploy/make-identity-cert DIR {host}), or set identity.server_name to a name it has"
        ),
    )
}

/// `DnsName("id.example.org")` (how webpki lists a certificate's names) → `id.example.org`.
fn bare(name: &str) -> &str {
    match (name.find('"'), name.rfind('"')) {
        (Some(start), Some(end)) if start < end => &name[start + 1..end],
        _ => name,
    }
}

/// A trust store of the chain's own certificates: a self-signed one verifies with itself.
fn own_roots(chain: &[CertificateDer<'static>]) -> Option<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(chain.iter().cloned());
    (!roots.is_empty()).then(|| Arc::new(roots))
}

fn verifier(roots: Arc<RootCertStore>) -> Option<Arc<WebPkiServerVerifier>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .ok()
}

fn verify(
    verifier: &WebPkiServerVerifier,
    chain: &[CertificateDer<'static>],
    name: &ServerName<'static>,
    at: UnixTime,
) -> Result<(), CertificateError> {
    match verifier.verify_server_cert(&chain[0], &chain[1..], name, &[], at) {
        Ok(_) => Ok(()),
        Err(rustls::Error::InvalidCertificate(e)) => Err(e),
        Err(e) => Err(CertificateError::Other(rustls::OtherError(Arc::new(e)))),
    }
}

/// When the chain stops verifying: checked far ahead, the error names the end.
fn ends(
    verifier: &WebPkiServerVerifier,
    chain: &[CertificateDer<'static>],
    name: &ServerName<'static>,
    now: UnixTime,
) -> Option<UnixTime> {
    match verify(verifier, chain, name, plus(now, FAR)) {
        Err(CertificateError::ExpiredContext { not_after, .. }) => Some(not_after),
        _ => None,
    }
}

fn plus(at: UnixTime, by: Duration) -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(at.as_secs()) + by)
}

/// `2027-03-01`.
fn date(at: UnixTime) -> String {
    let time: SystemTime = UNIX_EPOCH + Duration::from_secs(at.as_secs());
    let text = humantime::format_rfc3339_seconds(time).to_string();
    text[..10].to_owned()
}
