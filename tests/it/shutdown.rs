//! SIGTERM on the real binary: readiness turns false at once, the client port stops
//! accepting, the request in flight still completes, and the process exits 0.

use std::fs::File;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::common::ports::free_addr;
use crate::common::sidecar::TestConfig;
use crate::common::upstream::{Echo, Upstream, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_threepid-sidecar");

/// The child, killed if the test ends before it exits.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A GET that reports failure instead of panicking: `None` when the connection fails.
async fn try_get(url: &str) -> Option<(StatusCode, Bytes)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let response = client.get(url.parse().ok()?).await.ok()?;
    let status = response.status();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, body))
}

async fn wait_for_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("wait") {
            return Some(status);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_0() {
    let upstream = Upstream::start().await;
    let (client, identity, admin) = (free_addr(), free_addr(), free_addr());
    let mut config = TestConfig::new(&upstream.url());
    config
        .set("server.listen", client.to_string())
        .set("identity.listen", identity.to_string())
        .set("admin.listen", admin.to_string())
        .set("server.shutdown_grace", "5s")
        .set("log.level", "info");
    let config_path = config.dir.path().join("sidecar.toml");
    std::fs::write(&config_path, config.to_toml()).expect("write the config");
    let log_path = config.dir.path().join("sidecar.log");
    let log = File::create(&log_path).expect("the log file");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(&config_path)
        .arg("run")
        .env_remove("THREEPID_SIDECAR_CONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .expect("the binary starts");
    let mut child = ChildGuard(child);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let ready_url = format!("http://{admin}/health/ready");
    let started = Instant::now();
    loop {
        if let Some((StatusCode::OK, _)) = try_get(&ready_url).await {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the sidecar never became ready; its log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // A request in flight when the signal comes.
    let slow_url = format!("http://{client}/slow?ms=1500");
    let slow = tokio::spawn(async move { try_get(&slow_url).await });
    assert!(
        wait_until(Duration::from_secs(3), || upstream.hits("/slow") == 1).await,
        "the slow request reached the upstream"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let signalled = Instant::now();

    // Readiness turns false at once, while the slow request is still running.
    let mut not_ready = false;
    while signalled.elapsed() < Duration::from_secs(1) {
        if let Some((StatusCode::SERVICE_UNAVAILABLE, _)) = try_get(&ready_url).await {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(not_ready, "/health/ready did not turn 503; log:\n{}", log());
    assert!(
        !slow.is_finished(),
        "readiness turned false only after the drain"
    );

    // New connections to the client port are refused.
    let mut refused = false;
    while signalled.elapsed() < Duration::from_secs(1) {
        match tokio::net::TcpStream::connect(client).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                refused = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    assert!(refused, "the client port still accepts after SIGTERM");
    assert!(!slow.is_finished(), "the slow request was still in flight");

    // The request in flight completes.
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("the slow request finished")
        .expect("the task did not panic")
        .unwrap_or_else(|| panic!("the in-flight request was cut off; log:\n{}", log()));
    assert_eq!(status, StatusCode::OK);
    let echo: Echo = serde_json::from_slice(&body).expect("an echo");
    assert_eq!(echo.uri, "/slow?ms=1500");

    let exit = wait_for_exit(&mut child.0, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("the sidecar did not exit after draining; log:\n{}", log()));
    assert_eq!(exit.code(), Some(0), "log:\n{}", log());
}
