//! The real binary's command line: `check-config`, `--version`, and the config path from
//! `THREEPID_SIDECAR_CONFIG`.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_threepid-sidecar");
/// EX_CONFIG.
const EXIT_CONFIG: i32 = 64;

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs the binary to completion (killed after 10 s), with no config from the environment
/// unless `env` sets it.
fn run(args: &[&str], env: &[(&str, &Path)]) -> Outcome {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("THREEPID_SIDECAR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("the binary starts");
    // Both pipes are drained on threads so that a chatty child cannot block.
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?} did not finish within 10 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Outcome {
        code: status.code(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

const INLINE_SMTP_PASSWORD: &str = "inline-smtp-pw-7f3a";
const URL_SMTP_PASSWORD: &str = "url-smtp-pw-91c2";
const REDIS_PASSWORD: &str = "redis-pw-5d8e";
const FILE_WEBHOOK_TOKEN: &str = "file-webhook-token-2b6c";

/// A valid config with secrets inline, in URLs and in a `*_file`.
fn config_with_secrets(dir: &Path) -> std::path::PathBuf {
    let token_file = dir.join("webhook-token");
    std::fs::write(&token_file, format!("{FILE_WEBHOOK_TOKEN}\n")).expect("write the token file");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:18080"
server_name = "cli-test.example.org"

[upstream]
url = "http://127.0.0.1:18008"

[store]
url = "redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0"

[email]
transport = "smtp"
smtp_url = "smtp://sidecar:{URL_SMTP_PASSWORD}@mail.example.org:587"
smtp_username = "sidecar"
smtp_password = "{INLINE_SMTP_PASSWORD}"

[sms]
transport = "webhook"
webhook_url = "https://sms.example.org/send"
webhook_token_file = {token_file:?}
"#,
        token_file = token_file.display().to_string(),
    );
    let path = dir.join("sidecar.toml");
    std::fs::write(&path, text).expect("write the config");
    path
}

#[test]
fn check_config_prints_the_config_with_secrets_redacted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = config_with_secrets(dir.path());
    let out = run(
        &["check-config", "--config", path.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    for secret in [
        INLINE_SMTP_PASSWORD,
        URL_SMTP_PASSWORD,
        REDIS_PASSWORD,
        FILE_WEBHOOK_TOKEN,
    ] {
        assert!(
            !out.stdout.contains(secret),
            "{secret} leaked to stdout:\n{}",
            out.stdout
        );
        assert!(
            !out.stderr.contains(secret),
            "{secret} leaked to stderr:\n{}",
            out.stderr
        );
    }
    let printed: toml::Table = toml::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("check-config printed no TOML ({e}):\n{}", out.stdout));
    assert_eq!(
        printed["email"]["smtp_password"].as_str(),
        Some("<redacted>")
    );
    assert_eq!(printed["sms"]["webhook_token"].as_str(), Some("<redacted>"));
    assert!(
        printed["email"]["smtp_url"]
            .as_str()
            .expect("a URL")
            .contains("<redacted>")
            || printed["email"]["smtp_url"]
                .as_str()
                .expect("a URL")
                .contains("%3Credacted%3E"),
        "{}",
        out.stdout
    );
    // Non-secrets are shown as they are.
    assert_eq!(
        printed["server"]["server_name"].as_str(),
        Some("cli-test.example.org")
    );
    assert_eq!(printed["email"]["smtp_username"].as_str(), Some("sidecar"));
    assert_eq!(
        printed["server"]["listen"].as_str(),
        Some("127.0.0.1:18080")
    );
}

#[test]
fn check_config_refuses_an_unknown_key_with_line_and_column_and_exit_64() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:18080\"\n  listen_port = 3\n",
    )
    .expect("write the config");
    let out = run(
        &["check-config", "--config", path.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(
        out.code,
        Some(EXIT_CONFIG),
        "stdout: {}\nstderr: {}",
        out.stdout,
        out.stderr
    );
    assert!(out.stderr.contains("listen_port"), "{}", out.stderr);
    assert!(out.stderr.contains("line 3"), "{}", out.stderr);
    assert!(out.stderr.contains("column 3"), "{}", out.stderr);
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}

#[test]
fn a_refused_config_exits_64_before_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[threepid]\ntoken_lifetime = \"soon\"\n").expect("write the config");
    // `run` (the default command) refuses it too, without binding anything.
    let out = run(&["--config", path.to_str().expect("utf-8")], &[]);
    assert_eq!(out.code, Some(EXIT_CONFIG), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("threepid.token_lifetime"),
        "{}",
        out.stderr
    );
}

#[test]
fn version_prints_the_package_version() {
    let out = run(&["--version"], &[]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert_eq!(
        out.stdout.trim(),
        format!("threepid-sidecar {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_config_path_can_come_from_threepid_sidecar_config() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = config_with_secrets(dir.path());
    let out = run(&["check-config"], &[("THREEPID_SIDECAR_CONFIG", &good)]);
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stdout.contains("cli-test.example.org"),
        "{}",
        out.stdout
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[nonsense]\n").expect("write the config");
    let out = run(&["check-config"], &[("THREEPID_SIDECAR_CONFIG", &bad)]);
    assert_eq!(out.code, Some(EXIT_CONFIG), "stdout: {}", out.stdout);

    // --config wins over the environment.
    let out = run(
        &["check-config", "--config", good.to_str().expect("utf-8")],
        &[("THREEPID_SIDECAR_CONFIG", &bad)],
    );
    assert_eq!(out.code, Some(0), "stderr: {}", out.stderr);
}

#[test]
fn check_config_reports_catalogue_keys_missing_or_unknown_against_english_and_refuses_a_broken_one()
{
    let dir = tempfile::tempdir().expect("temp dir");
    let i18n = dir.path().join("i18n");
    std::fs::create_dir_all(i18n.join("sv")).expect("sv");
    std::fs::write(
        i18n.join("sv/messages.ftl"),
        "mail-greeting = Hej,\nsv-only = Bara här\n",
    )
    .expect("write sv");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!("[i18n]\ndir = {:?}\n", i18n.display().to_string()),
    )
    .expect("write the config");
    let out = run(
        &["check-config", "--config", path.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("i18n: sv lacks 53 message(s) English has"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("registration-subject"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("i18n: sv has message(s) English lacks, never used: sv-only"),
        "{}",
        out.stderr
    );
    // The shipped languages are complete: nothing is said of them.
    assert!(!out.stderr.contains("i18n: de "), "{}", out.stderr);

    std::fs::write(i18n.join("sv/messages.ftl"), "mail-greeting = { $broken\n").expect("write");
    let out = run(
        &["check-config", "--config", path.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(out.code, Some(EXIT_CONFIG), "{}", out.stderr);
    assert!(out.stderr.contains("messages.ftl"), "{}", out.stderr);

    std::fs::write(&path, "[i18n]\ndefault_language = \"xx\"\n").expect("write the config");
    let out = run(
        &["check-config", "--config", path.to_str().expect("utf-8")],
        &[],
    );
    assert_eq!(out.code, Some(EXIT_CONFIG), "{}", out.stderr);
    assert!(
        out.stderr.contains("i18n.default_language"),
        "{}",
        out.stderr
    );
}
