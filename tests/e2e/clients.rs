//! Today's clients on an r0-only homeserver (DESIGN §6), proven with real client libraries:
//! matrix-nio 0.26 (`tests/clients/nio_flow.py`, in the venv `.e2e/clients-venv`) and
//! matrix-js-sdk 43 (`tests/clients/js/flow.mjs`), both calling only v3 paths, against
//! Synapse 1.3.1 behind the sidecar with `upstream.path_compat = "auto"`. And what the mapping
//! is for: with `"off"`, the homeserver refuses the same v3 requests.
//! `scripts/install-test-deps` installs both libraries.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::common::http;
use crate::common::logs;
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::synapse::{Synapse, SynapseOptions};
use crate::flows::{Stack, link_in, query_param};

/// The scripts stop themselves after 60 s; this is the backstop.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(90);
const MAIL_WAIT: Duration = Duration::from_secs(15);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// What a script printed, for a failure message.
fn transcript(stdout: &str, stderr: &str) -> String {
    format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_nio_registers_chats_long_polls_and_moves_5_mib_through_v3_paths() {
    logs::capture();
    let python = repo(".e2e/clients-venv/bin/python");
    assert!(
        python.exists(),
        "matrix-nio venv missing: run scripts/install-test-deps (looked for {})",
        python.display()
    );
    let stack = Stack::start(|_| {}).await;
    let started = Instant::now();

    let mut command = Command::new(&python);
    command
        .arg(repo("tests/clients/nio_flow.py"))
        .arg(stack.sidecar.url(""))
        .arg(stack.synapse.server_name())
        .env("PYTHONUNBUFFERED", "1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(SCRIPT_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("nio_flow.py still running after {SCRIPT_TIMEOUT:?}"))
        .expect("the venv's python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "nio_flow.py failed ({}):\n{}",
        output.status,
        transcript(&stdout, &stderr)
    );
    assert_eq!(
        stdout.lines().last(),
        Some("OK"),
        "{}",
        transcript(&stdout, &stderr)
    );
    eprintln!(
        "nio flow took {:.1}s:\n{stdout}",
        started.elapsed().as_secs_f64()
    );

    // nio asked for v3 (and nothing older); the homeserver saw r0.
    let synapse_log = std::fs::read_to_string(stack.synapse.log_path()).unwrap_or_default();
    for seen in [
        "/_matrix/client/r0/register",
        "/_matrix/client/r0/login",
        "/_matrix/client/r0/createRoom",
        "/_matrix/client/r0/sync",
        "/_matrix/media/r0/upload",
        "/_matrix/media/r0/download/",
    ] {
        assert!(synapse_log.contains(seen), "Synapse never saw {seen}");
    }
    assert!(
        !synapse_log.contains("/_matrix/client/v3/") && !synapse_log.contains("/_matrix/media/v3/"),
        "a v3 path reached Synapse unmapped"
    );
}

/// The js-sdk script, driven over stdio: it prints `@@ WAIT_LINK <purpose> <sid>
/// <client_secret>` when a mail is on its way; this follows the link as a person would (the
/// page, then its button) and answers `GO`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_js_sdk_registers_and_resets_a_password_by_email_with_no_identity_server() {
    logs::capture();
    let js = repo("tests/clients/js");
    assert!(
        js.join("node_modules/matrix-js-sdk").exists(),
        "matrix-js-sdk missing: run scripts/install-test-deps (npm ci in tests/clients/js)"
    );
    let stack = Stack::start(|_| {}).await;
    let started = Instant::now();
    let email = "jess@example.org";

    let mut child = Command::from(crate::common::node::node())
        .arg(js.join("flow.mjs"))
        .arg(stack.sidecar.url(""))
        .arg(email)
        .arg("jess")
        .current_dir(&js)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the pinned node runs");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    let stderr = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text).await;
        text
    });

    let deadline = tokio::time::Instant::now() + SCRIPT_TIMEOUT;
    let mut said = Vec::new();
    let mut followed = Vec::new();
    let mut secrets = Vec::new();
    let mut mails_seen = 0;
    let finished_ok = loop {
        let line = match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Err(_) => break false,
            Ok(line) => line.expect("read the script's stdout"),
        };
        let Some(line) = line else { break false };
        let Some(message) = line.strip_prefix("@@ ") else {
            continue; // the SDK's own logging
        };
        said.push(message.to_owned());
        match message.split(' ').collect::<Vec<_>>()[..] {
            ["OK"] => break true,
            ["WAIT_LINK", purpose, sid, client_secret] => {
                let mail = stack
                    .smtp
                    .wait_for(mails_seen + 1, MAIL_WAIT)
                    .pop()
                    .expect("the mail");
                mails_seen += 1;
                assert_eq!(mail.to, email, "{purpose}: {}", mail.raw);
                let link = link_in(&mail.text);
                follow_link(&stack, &link, sid, client_secret).await;
                secrets.extend([client_secret.to_owned(), query_param(&link, "token")]);
                followed.push(purpose.to_owned());
                stdin.write_all(b"GO\n").await.expect("write to the script");
                stdin.flush().await.expect("flush the script's stdin");
            }
            _ => {}
        }
    };
    drop(stdin);
    let status = tokio::time::timeout_at(deadline, child.wait()).await;
    if status.is_err() {
        let _ = child.kill().await;
    }
    let stderr = tokio::time::timeout(Duration::from_secs(5), stderr)
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let transcript = transcript(&said.join("\n"), &stderr);
    assert!(
        finished_ok,
        "flow.mjs did not finish (exit {status:?}):\n{transcript}"
    );
    let status = status.expect("exited").expect("a status");
    assert!(
        status.success(),
        "flow.mjs exited with {status}:\n{transcript}"
    );
    assert_eq!(followed, ["register", "password"], "{transcript}");
    eprintln!(
        "js-sdk flow took {:.1}s:\n{}",
        started.elapsed().as_secs_f64(),
        said.join("\n")
    );

    // The homeserver checked both sessions with the sidecar's identity listener.
    let metrics = http::get(&stack.sidecar.admin_url("/metrics")).await.text();
    assert_eq!(
        metric(
            &metrics,
            r#"threepid_sidecar_identity_calls_total{endpoint="getValidated3pid",outcome="ok"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
    let synapse_log = std::fs::read_to_string(stack.synapse.log_path()).unwrap_or_default();
    for seen in [
        "/_matrix/client/r0/register",
        "/_matrix/client/r0/account/password",
        "/_matrix/client/r0/login",
    ] {
        assert!(synapse_log.contains(seen), "Synapse never saw {seen}");
    }
    assert!(
        !synapse_log.contains("/_matrix/client/v3/"),
        "a v3 path reached Synapse unmapped"
    );
    logs::assert_none_of(&secrets.iter().map(String::as_str).collect::<Vec<_>>());
}

/// The mailed link, followed as a person would: the page, then its button (a form POST).
async fn follow_link(stack: &Stack, link: &str, sid: &str, client_secret: &str) {
    let page = http::get(link).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text());
    let token = query_param(link, "token");
    let done = http::post_form(
        &stack
            .sidecar
            .url("/_matrix/client/unstable/threepid/email/submit_token"),
        &[
            ("sid", sid),
            ("client_secret", client_secret),
            ("token", &token),
        ],
    )
    .await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.text());
}

/// What the mapping is for: the same v3 requests through a sidecar with `path_compat = "off"`
/// are refused by the r0-only homeserver with 404 (no such resource), and get past the path
/// with `"auto"` (here: a wrong password, refused as such).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_path_compat_an_r0_only_homeserver_refuses_v3_requests() {
    logs::capture();
    let synapse = tokio::task::spawn_blocking(|| {
        Synapse::start(SynapseOptions {
            identity_server_name: "localhost:8443".into(),
            ..SynapseOptions::default()
        })
    })
    .await
    .expect("Synapse starts");
    let sidecar = |mode: &'static str| {
        let mut config = TestConfig::new(&synapse.url());
        config.set("upstream.path_compat", mode);
        Sidecar::start(config)
    };
    let off = sidecar("off").await;
    let auto = sidecar("auto").await;
    let login = json!({
        "type": "m.login.password",
        "identifier": {"type": "m.id.user", "user": "nobody"},
        "password": "not-the-password",
    });

    // "off": v3 passes as it is, and Synapse 1.3.1 has nothing there: its client and media
    // resources hang under .../r0 (and older prefixes) only, so Twisted answers a bare 404
    // HTML page ("No Such Resource"), not even a Matrix error body.
    for path in ["/_matrix/client/v3/login", "/_matrix/media/v3/config"] {
        let refused = if path.ends_with("login") {
            http::post_json(&off.url(path), &login).await
        } else {
            http::get(&off.url(path)).await
        };
        assert_eq!(
            refused.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            refused.text()
        );
        assert!(
            refused.text().contains("No Such Resource"),
            "{path}: {}",
            refused.text()
        );
    }
    // ... exactly what the homeserver itself answers.
    let (status, body) = synapse.post_json("/_matrix/client/v3/login", &login.to_string());
    assert_eq!(status, 404, "{body}");

    // "auto": the upstream lists no v1.x, so v3 goes out as r0 and reaches the endpoint.
    let wrong_password = http::post_json(&auto.url("/_matrix/client/v3/login"), &login).await;
    assert_eq!(
        wrong_password.status,
        StatusCode::FORBIDDEN,
        "{}",
        wrong_password.text()
    );
    assert_eq!(wrong_password.errcode(), "M_FORBIDDEN");
    let media = http::get(&auto.url("/_matrix/media/v3/config")).await;
    assert_eq!(media.status, StatusCode::UNAUTHORIZED, "{}", media.text());
    assert_eq!(media.errcode(), "M_MISSING_TOKEN");

    for (sidecar, active) in [(&off, 0.0), (&auto, 1.0)] {
        let metrics = http::get(&sidecar.admin_url("/metrics")).await.text();
        assert_eq!(
            metric(&metrics, "threepid_sidecar_path_compat_active"),
            Some(active),
            "{metrics}"
        );
    }
}
