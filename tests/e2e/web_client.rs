//! Issue 11, in a real browser: Debian's Chromium loads a page served from another origin
//! (another loopback port) than the sidecar, running matrix-js-sdk 43 bundled for the browser
//! (`tests/web/`: `app/` is the page, `drive.mjs` bundles it with esbuild, serves it and drives
//! Chromium with playwright-core), and does what Element Web does against the sidecar in front
//! of Synapse 1.3.1 with `upstream.path_compat = "auto"`:
//!
//!   1. Element's homeserver check at start, `AutoDiscovery.fromDiscoveryConfig` (refused as
//!      "too old" unless `/versions` lists a version the js-sdk supports, v1.1 or later);
//!   2. registration with an email address (InteractiveAuth, `requestRegisterEmailToken` with
//!      Element's `next_link`), the mailed link confirmed in a second tab of the same browser;
//!   3. sign-out, password reset by email (the link in a second tab), sign-in with the new
//!      password (the old one refused);
//!   4. a second email added with the js-sdk's add-3PID call, as Element's AddThreepid:
//!      `requestAdd3pidEmailToken`, the link, `addThreePidOnly` (password UIA if asked), and
//!      both addresses listed by `getThreePids`.
//!
//! Every request crosses origins, so every answer (the sidecar's own and Synapse's) must carry
//! CORS headers, and preflights must be answered. The screenshots of each step go to
//! `target/screenshots/web-client/`. `scripts/install-test-deps` installs what it needs
//! (`npm ci` in tests/web, chromium, the pinned Node).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use crate::common::http;
use crate::common::logs;
use crate::flows::{Stack, link_in, query_param};

/// drive.mjs stops itself after 90 s; this is the backstop.
const DRIVER_TIMEOUT: Duration = Duration::from_secs(120);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn element_s_flows_work_in_a_real_browser_on_another_origin() {
    logs::capture();
    let web = repo("tests/web");
    for package in ["matrix-js-sdk", "esbuild", "playwright-core"] {
        assert!(
            web.join("node_modules").join(package).exists(),
            "{package} missing in tests/web: run scripts/install-test-deps (npm ci in tests/web)"
        );
    }
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "chromium missing: apt-get install -y chromium (scripts/install-test-deps does it)"
    );
    let node = crate::common::node::node(); // panics, saying what to install, without it
    let stack = Stack::start(|_| {}).await;
    let started = Instant::now();
    let shots = repo("target/screenshots/web-client");
    let (user, email, second_email) = ("wendy", "wendy@example.org", "wendy.work@example.org");

    let mut child = Command::from(node)
        .arg(web.join("drive.mjs"))
        .arg(stack.sidecar.url(""))
        .arg(&shots)
        .arg(user)
        .arg(email)
        .arg(second_email)
        .current_dir(&web)
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

    // The driver's protocol (see tests/web/drive.mjs): "@@ STEP", "@@ SECRET", "@@ WAIT_LINK
    // <purpose> <sid> <client_secret>" (answered "LINK <url>" from the mail), "@@ FAIL", "@@ OK".
    let deadline = tokio::time::Instant::now() + DRIVER_TIMEOUT;
    let mut said = Vec::new();
    let mut steps = Vec::new();
    let mut secrets = Vec::new();
    let mut mails_seen = 0;
    let finished_ok = loop {
        let line = match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Err(_) => break false,
            Ok(line) => line.expect("read the driver's stdout"),
        };
        let Some(line) = line else { break false };
        let Some(message) = line.strip_prefix("@@ ") else {
            continue;
        };
        match message.split(' ').collect::<Vec<_>>()[..] {
            ["OK"] => break true,
            ["SECRET", secret] => {
                secrets.push(secret.to_owned());
                continue; // not in the transcript
            }
            ["STEP", name, ..] => steps.push(name.to_owned()),
            ["WAIT_LINK", purpose, sid, client_secret] => {
                let to = if purpose == "add" {
                    second_email
                } else {
                    email
                };
                let mail = stack
                    .smtp
                    .wait_for(mails_seen + 1, MAIL_WAIT)
                    .pop()
                    .unwrap_or_else(|| panic!("no {purpose} mail within {MAIL_WAIT:?}"));
                mails_seen += 1;
                assert_eq!(mail.to, to, "{purpose}: {}", mail.raw);
                let link = link_in(&mail.text);
                assert_eq!(query_param(&link, "sid"), sid, "{purpose}: {link}");
                secrets.extend([client_secret.to_owned(), query_param(&link, "token")]);
                stdin
                    .write_all(format!("LINK {link}\n").as_bytes())
                    .await
                    .expect("write to the driver");
                stdin.flush().await.expect("flush the driver's stdin");
            }
            _ => {}
        }
        said.push(message.to_owned());
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
    let transcript = format!(
        "--- drive.mjs said ---\n{}\n--- stderr ---\n{stderr}\n(screenshots in {})",
        said.join("\n"),
        shots.display()
    );
    assert!(
        finished_ok,
        "the browser run did not finish (exit {status:?}):\n{transcript}"
    );
    let status = status.expect("exited").expect("a status");
    assert!(
        status.success(),
        "drive.mjs exited with {status}:\n{transcript}"
    );
    assert_eq!(
        steps,
        [
            "load",
            "discover",
            "registerStart",
            "register-link",
            "registerFinish",
            "logout",
            "resetStart",
            "password-link",
            "resetFinish",
            "login",
            "addEmailStart",
            "add-link",
            "addEmailFinish",
        ],
        "{transcript}"
    );
    eprintln!(
        "browser run took {:.1}s:\n{}",
        started.elapsed().as_secs_f64(),
        said.join("\n")
    );

    // The homeserver checked the three sessions (register, reset, add) with the sidecar's
    // identity listener.
    let metrics = http::get(&stack.sidecar.admin_url("/metrics")).await.text();
    assert_eq!(
        metric(
            &metrics,
            r#"threepid_sidecar_identity_calls_total{endpoint="getValidated3pid",outcome="ok"}"#
        ),
        Some(3.0),
        "{metrics}"
    );
    // v3 went out as r0, and /account/3pid/add (which Synapse 1.3.1 lacks) was bridged to the
    // legacy POST /account/3pid.
    let synapse_log = std::fs::read_to_string(stack.synapse.log_path()).unwrap_or_default();
    for seen in [
        "POST /_matrix/client/r0/register",
        "POST /_matrix/client/r0/logout",
        "POST /_matrix/client/r0/account/password",
        "POST /_matrix/client/r0/login",
        "POST /_matrix/client/r0/account/3pid ",
        "GET /_matrix/client/r0/account/3pid ",
    ] {
        assert!(synapse_log.contains(seen), "Synapse never saw {seen}");
    }
    for unseen in [
        "/_matrix/client/v3/",
        "POST /_matrix/client/r0/account/3pid/add",
    ] {
        assert!(
            !synapse_log.contains(unseen),
            "{unseen} reached Synapse (it has no such resource)"
        );
    }
    for other in ["matrix.org", "vector.im"] {
        assert!(!synapse_log.contains(other), "Synapse talked to {other}");
    }

    let taken: Vec<String> = std::fs::read_dir(&shots)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let missing: Vec<_> = [
        "homeserver-check",
        "register-link",
        "register-link-confirmed",
        "registered",
        "signed-out",
        "password-link-confirmed",
        "signed-in",
        "add-link-confirmed",
        "both-emails-listed",
    ]
    .into_iter()
    .filter(|name| !taken.iter().any(|f| f.ends_with(&format!("-{name}.png"))))
    .collect();
    assert!(missing.is_empty(), "screenshots missing: {missing:?}");

    // No client secret, token, password or access token reached the sidecar's logs.
    assert!(secrets.len() >= 10, "secrets seen: {}", secrets.len());
    logs::assert_none_of(&secrets.iter().map(String::as_str).collect::<Vec<_>>());
}
