//! TLS for the listeners: rustls server configs (ring provider) from PEM files, and the
//! self-signed certificate the identity listener uses when none is configured.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificate {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("cannot read private key {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("certificate and key do not make a TLS config: {0}")]
    Config(#[from] rustls::Error),
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
    #[error("cannot write the generated certificate to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A server config from PEM files, offering `alpn` (e.g. h2 and http/1.1).
pub fn server_config(files: &TlsFiles, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Cert {
            path: files.cert.clone(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: files.cert.clone(),
            reason: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| TlsError::Key {
        path: files.key.clone(),
        reason: e.to_string(),
    })?;
    build(certs, key, alpn)
}

fn build(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    alpn: &[&[u8]],
) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// Generates a self-signed certificate for `server_name` (its host part), writes the
/// certificate and key as PEM into `dir`, and returns them as [`TlsFiles`]. The
/// homeserver must be told to trust it (or, in tests, to skip verification).
pub fn generate_self_signed(server_name: &str, dir: &Path) -> Result<TlsFiles, TlsError> {
    let host = host_of(server_name);
    let mut names = vec![host.to_owned()];
    if host != "localhost" {
        names.push("localhost".into());
    }
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|source| TlsError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let files = TlsFiles {
        cert: dir.join("identity-cert.pem"),
        key: dir.join("identity-key.pem"),
    };
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|source| TlsError::Write {
            path: path.to_owned(),
            source,
        })
    };
    write(&files.cert, certified.cert.pem())?;
    write(&files.key, certified.signing_key.serialize_pem())?;
    Ok(files)
}

/// `host:port` → `host`; `[::1]:8090` → `::1`.
fn host_of(server_name: &str) -> &str {
    if let Some(rest) = server_name.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match server_name.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => server_name,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_is_taken_from_a_server_name() {
        assert_eq!(host_of("localhost:8090"), "localhost");
        assert_eq!(host_of("id.example.org"), "id.example.org");
        assert_eq!(host_of("[::1]:8090"), "::1");
    }

    #[test]
    fn a_generated_certificate_loads_as_a_server_config() {
        let dir = tempfile::tempdir().unwrap();
        let files = generate_self_signed("localhost:8090", dir.path()).unwrap();
        let config = server_config(&files, &[b"http/1.1"]).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn a_missing_certificate_names_the_file() {
        let files = TlsFiles {
            cert: "/nonexistent/cert.pem".into(),
            key: "/nonexistent/key.pem".into(),
        };
        let err = server_config(&files, &[]).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    }
}
