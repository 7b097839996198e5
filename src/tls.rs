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

/// `TLS 1.3`: a protocol version as people write it.
pub fn version_name(version: rustls::ProtocolVersion) -> String {
    match version {
        rustls::ProtocolVersion::TLSv1_2 => "TLS 1.2".to_owned(),
        rustls::ProtocolVersion::TLSv1_3 => "TLS 1.3".to_owned(),
        other => format!("{other:?}"),
    }
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

/// A self-signed identity certificate: the certificate written to a file (the homeserver
/// must be told to trust it), the key only in memory (it never touches the disk).
pub struct SelfSigned {
    /// Where the certificate was written.
    pub cert_path: PathBuf,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

impl SelfSigned {
    /// A server config with this certificate and key, offering `alpn`.
    pub fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
        build(vec![self.cert.clone()], self.key.clone_key(), alpn)
    }
}

/// Generates a self-signed certificate for `server_name` (its host part) and writes the
/// certificate as PEM into `dir`, a directory that only this user may write to (created
/// `0700` if missing; refused if it is a symlink, writable by others, or someone else's, so
/// that no other local user can plant or swap what the homeserver is told to trust).
pub fn generate_self_signed(server_name: &str, dir: &Path) -> Result<SelfSigned, TlsError> {
    let host = host_of(server_name);
    let mut names = vec![host.to_owned()];
    if host != "localhost" {
        names.push("localhost".into());
    }
    let certified =
        rcgen::generate_simple_self_signed(names).map_err(|e| TlsError::Generate(e.to_string()))?;
    let cert_path = dir.join("identity-cert.pem");
    write_private(dir, &cert_path, certified.cert.pem().as_bytes())?;
    Ok(SelfSigned {
        cert_path,
        cert: certified.cert.der().clone(),
        key: PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into()),
    })
}

/// Writes `path` (in `dir`) as a new file, after checking `dir` as [`generate_self_signed`]
/// says.
fn write_private(dir: &Path, path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
    let fail = |path: &Path, source: std::io::Error| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let refuse = |why: String| {
        fail(
            dir,
            std::io::Error::new(std::io::ErrorKind::PermissionDenied, why),
        )
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail(dir, e))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| fail(dir, e))?;
    if !meta.file_type().is_dir() {
        return Err(refuse("not a directory (a symlink?)".into()));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(refuse(format!(
            "other users may write to it (mode {:o}): use a directory of this user's",
            meta.permissions().mode() & 0o777
        )));
    }
    // A fresh file: an old one (or a link planted in its place) goes, and is never followed.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(path, e)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| fail(path, e))?;
    let mine = file.metadata().map_err(|e| fail(path, e))?.uid();
    if meta.uid() != mine {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(refuse("it belongs to another user".into()));
    }
    file.write_all(contents).map_err(|e| fail(path, e))
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
    fn a_generated_certificate_loads_as_a_server_config_and_its_key_stays_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let generated = generate_self_signed("localhost:8090", dir.path()).unwrap();
        let config = generated.server_config(&[b"http/1.1"]).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(files, ["identity-cert.pem"]);
        let text = std::fs::read_to_string(&generated.cert_path).unwrap();
        assert!(!text.contains("PRIVATE KEY"));
    }

    #[test]
    fn a_directory_others_may_write_to_or_a_planted_link_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let shared = parent.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = generate_self_signed("localhost", &shared).err().unwrap();
        assert!(err.to_string().contains("other users may write"), "{err}");

        let link = parent.path().join("link");
        std::os::unix::fs::symlink(parent.path(), &link).unwrap();
        let err = generate_self_signed("localhost", &link).err().unwrap();
        assert!(err.to_string().contains("not a directory"), "{err}");

        // A link planted where the certificate goes is replaced, not followed.
        let private = parent.path().join("private");
        std::fs::create_dir(&private).unwrap();
        let victim = parent.path().join("victim");
        std::fs::write(&victim, "keep me").unwrap();
        std::os::unix::fs::symlink(&victim, private.join("identity-cert.pem")).unwrap();
        generate_self_signed("localhost", &private).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    }

    #[test]
    fn a_missing_directory_is_created_private() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("a/b");
        generate_self_signed("localhost", &dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
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
