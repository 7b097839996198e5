//! The `[store]` config in a running sidecar: `rediss://` (certificates checked against the
//! system's roots, or `SSL_CERT_FILE`), `[store.sentinel]` and `[store.cluster]`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use threepid_sidecar::session::SessionStore;
use threepid_sidecar::session::redis::RedisStore;

use super::{COMMAND_TIMEOUT, MASTER_NAME, RedisServer, settings, shared_cluster, shared_sentinel};
use crate::common::ports::free_port;
use crate::common::sidecar::{Sidecar, TestConfig};

const BIN: &str = env!("CARGO_BIN_EXE_threepid-sidecar");

/// The child, killed if still running when dropped.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The status of `GET url`, or None when the connection fails.
async fn try_status(url: &str) -> Option<StatusCode> {
    let uri = url.parse().ok()?;
    crate::common::http::client()
        .get(uri)
        .await
        .ok()
        .map(|r| r.status())
}

#[tokio::test(flavor = "multi_thread")]
async fn rediss_checks_the_certificate_against_the_system_roots_or_ssl_cert_file() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = RedisServer::start_tls(&cert, &key);
    assert!(server.url().starts_with("rediss://127.0.0.1:"));

    // This process has only the system's roots, which do not include the test certificate.
    let store = RedisStore::new(&server.url(), settings(), COMMAND_TIMEOUT).expect("valid url");
    let err = store.ping().await.expect_err("an unknown issuer");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );

    // The binary, with SSL_CERT_FILE naming it: ready, so its store answers PING over TLS.
    let admin = free_port();
    let mut config = TestConfig::new("http://127.0.0.1:9");
    config
        .set("admin.listen", format!("127.0.0.1:{admin}"))
        .redis(&server);
    let path = dir.path().join("sidecar.toml");
    std::fs::write(&path, config.to_toml()).unwrap();
    let stderr = dir.path().join("stderr");
    let _child = ChildGuard(
        Command::new(BIN)
            .arg("--config")
            .arg(&path)
            .env("SSL_CERT_FILE", &cert)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("the sidecar binary runs"),
    );
    let ready = format!("http://127.0.0.1:{admin}/health/ready");
    let deadline = Instant::now() + Duration::from_secs(10);
    while try_status(&ready).await != Some(StatusCode::OK) {
        assert!(
            Instant::now() < deadline,
            "never ready over rediss://; its stderr:\n{}",
            std::fs::read_to_string(&stderr).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sidecar_reaches_sentinel_and_cluster_from_its_config() {
    let sentinels: Vec<String> = shared_sentinel()
        .sentinels()
        .iter()
        .map(|(host, port)| format!("\"{host}:{port}\""))
        .collect();
    let nodes: Vec<String> = shared_cluster()
        .nodes()
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect();
    for (section, value) in [
        (
            "store.sentinel",
            format!(
                "{{ master_name = \"{MASTER_NAME}\", sentinels = [{}] }}",
                sentinels.join(", ")
            ),
        ),
        (
            "store.cluster",
            format!("{{ nodes = [{}] }}", nodes.join(", ")),
        ),
    ] {
        let mut config = TestConfig::new("http://127.0.0.1:9");
        config
            .set("store.backend", "redis")
            .set("store.key_prefix", "t:topologies:sidecar:")
            .set("store.url", "redis://127.0.0.1:1")
            .set_toml(section, &value);
        let sidecar = Sidecar::start(config).await;
        let ready = sidecar.admin_url("/health/ready");
        let deadline = Instant::now() + Duration::from_secs(5);
        while try_status(&ready).await != Some(StatusCode::OK) {
            assert!(Instant::now() < deadline, "{section}: never ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sidecar.stop().await;
    }
}
