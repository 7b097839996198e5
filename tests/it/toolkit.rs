//! The operator's tools through the real binary: `doctor` against a running sidecar (identity
//! listener with a certificate from a test CA), real Redis and a real SMTP server that
//! requires AUTH, in front of an in-process homeserver that answers `/versions` as Synapse
//! 1.3.1 does; `send-test` into that SMTP server; `templates render` into a folder.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::common::ports::free_port;
use crate::common::redis::{RedisServer, query};
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::smtp::SmtpServer;
use crate::common::upstream::{Canned, Upstream, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_threepid-sidecar");
const SMTP_USER: &str = "sidecar";
const SMTP_PASSWORD: &str = "smtp-pw-3c1d9e";
const MAIL_WAIT: Duration = Duration::from_secs(10);
/// Shipped languages.
const LANGUAGES: usize = 9;

struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Outcome {
    /// The lines that start with `status` (`ok`, `warn`, `FAIL`).
    fn lines(&self, status: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(status))
            .collect()
    }

    /// The line of check `name`.
    fn line(&self, name: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no {name} line:\n{}", self.stdout))
    }
}

/// Runs the binary (killed after 30 s) with no config or trust store from the environment
/// but `env`'s.
async fn run(args: &[&str], env: &[(&str, &Path)]) -> Outcome {
    let mut command = tokio::process::Command::new(BIN);
    command
        .args(args)
        .env_remove("THREEPID_SIDECAR_CONFIG")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .unwrap_or_else(|_| panic!("{args:?} did not finish within 30 s"))
        .expect("the binary runs");
    Outcome {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// A test CA, and a certificate it issued for `names` with its key, as PEM files.
struct Certs {
    _dir: TempDir,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn certs(names: &[&str]) -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "threepid-sidecar doctor test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("a CA key"))
        .expect("a CA certificate");
    let key = KeyPair::generate().expect("a key");
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let cert = CertificateParams::new(names)
        .expect("certificate params")
        .signed_by(&key, &ca)
        .expect("a certificate");
    let certs = Certs {
        ca: dir.path().join("ca.crt"),
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        _dir: dir,
    };
    std::fs::write(&certs.ca, ca.pem()).expect("write ca.crt");
    std::fs::write(&certs.cert, cert.pem()).expect("write tls.crt");
    std::fs::write(&certs.key, key.serialize_pem()).expect("write tls.key");
    certs
}

/// What Synapse 1.3.1 answers to `/versions`.
fn synapse_1_3_1_versions() -> Value {
    json!({
        "versions": ["r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0"],
        "unstable_features": {"m.lazy_load_members": true}
    })
}

/// A healthy deployment: the sidecar running with Redis and an SMTP relay that requires AUTH,
/// in front of a homeserver like Synapse 1.3.1, its identity certificate from `certs` (made
/// for `localhost` unless a test says otherwise). `config` is the file doctor reads.
struct Deployment {
    upstream: Option<Upstream>,
    redis: RedisServer,
    smtp: SmtpServer,
    certs: Certs,
    /// Kept running for the test.
    _sidecar: Sidecar,
    config: PathBuf,
}

impl Deployment {
    async fn start(cert_names: &[&str]) -> Self {
        let upstream = Upstream::start().await;
        upstream.set_versions(Canned::json(StatusCode::OK, &synapse_1_3_1_versions()));
        let redis = RedisServer::start();
        let smtp = SmtpServer::start_with_auth(SMTP_USER, SMTP_PASSWORD);
        let certs = certs(cert_names);
        let identity_port = free_port();
        let mut config = TestConfig::new(&upstream.url());
        config
            .set("upstream.path_compat", "auto")
            .set("store.backend", "redis")
            .set("store.url", redis.url())
            .set("email.transport", "smtp")
            .set("email.smtp_url", smtp.url())
            .set("email.smtp_username", SMTP_USER)
            .set("email.smtp_password", SMTP_PASSWORD)
            .set("email.from", "Example Chat <noreply@chat.example.org>")
            .set("identity.listen", format!("127.0.0.1:{identity_port}"))
            .set("identity.server_name", format!("localhost:{identity_port}"))
            .set("identity.tls_cert_file", certs.cert.display().to_string())
            .set("identity.tls_key_file", certs.key.display().to_string());
        // A homeserver whose public_baseurl is the sidecar's, as README asks.
        let public = config.build().server.public_baseurl.to_string();
        upstream.answer(
            "/.well-known/matrix/client",
            Canned::json(
                StatusCode::OK,
                &json!({"m.homeserver": {"base_url": public}}),
            ),
        );
        let path = config.dir.path().join("sidecar.toml");
        std::fs::write(&path, config.to_toml()).expect("write the config");
        let sidecar = Sidecar::start(config).await;
        // The outbox's sender creates the stream and its group as it starts.
        let port = redis.port();
        let created = wait_until(Duration::from_secs(10), || {
            query::<::redis::Value>(port, &["XINFO", "GROUPS", "threepid:outbox"]).is_some()
        })
        .await;
        assert!(created, "the outbox's group was never created");
        Self {
            upstream: Some(upstream),
            redis,
            smtp,
            certs,
            _sidecar: sidecar,
            config: path,
        }
    }

    /// doctor on the deployment's config, trusting the test CA as the homeserver would.
    async fn doctor(&self, extra: &[&str]) -> Outcome {
        self.doctor_with(&self.config, extra).await
    }

    async fn doctor_with(&self, config: &Path, extra: &[&str]) -> Outcome {
        let mut args = vec!["doctor", "--config", config.to_str().expect("utf-8")];
        args.extend_from_slice(extra);
        run(&args, &[("SSL_CERT_FILE", &self.certs.ca)]).await
    }

    /// A copy of the config with `edit` applied to its text, for doctor only.
    fn config_variant(&self, name: &str, edit: impl FnOnce(&mut toml::Table)) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).expect("read the config");
        let mut table: toml::Table = toml::from_str(&text).expect("the config is TOML");
        edit(&mut table);
        let path = self.config.with_file_name(name);
        std::fs::write(&path, toml::to_string(&table).expect("TOML")).expect("write");
        path
    }
}

fn set(table: &mut toml::Table, section: &str, key: &str, value: impl Into<toml::Value>) {
    table
        .get_mut(section)
        .and_then(toml::Value::as_table_mut)
        .expect("the section is there")
        .insert(key.to_owned(), value.into());
}

/// Exit 2, exactly one FAIL line, the one of `name`, saying `sentence`.
fn assert_one_failure(out: &Outcome, name: &str, sentence: &[&str]) {
    assert_eq!(out.code, Some(2), "{}\n{}", out.stdout, out.stderr);
    let failures = out.lines("FAIL");
    assert_eq!(failures.len(), 1, "{}", out.stdout);
    let line = out.line(name);
    eprintln!("{line}");
    assert!(line.starts_with("FAIL"), "{}", out.stdout);
    for words in sentence {
        assert!(line.contains(words), "{words:?} not in {line:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_is_all_ok_on_a_healthy_deployment_and_says_so_in_json_too() {
    let deployment = Deployment::start(&["localhost"]).await;
    let out = deployment.doctor(&[]).await;
    eprintln!("{}", out.stdout);
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.lines("warn").is_empty() && out.lines("FAIL").is_empty());
    for name in [
        "config",
        "i18n",
        "listen.client",
        "listen.identity",
        "listen.admin",
        "homeserver",
        "homeserver.legacy",
        "homeserver.path_compat",
        "homeserver.public_baseurl",
        "identity.reach",
        "identity.certificate",
        "store.redis",
        "store.topology",
        "store.outbox",
        "store.dead_letters",
        "store.maxmemory",
        "email.from",
        "email.smtp",
        "sms",
        "templates",
    ] {
        assert!(out.line(name).starts_with("ok"), "{name}");
    }
    assert!(out.line("homeserver").contains("r0.5.0"));
    assert!(
        out.line("homeserver.path_compat")
            .contains(" on: the homeserver lists no v1.x")
    );
    assert!(
        out.line("identity.certificate")
            .contains("from a CA this machine trusts")
    );
    assert!(
        out.line("email.smtp")
            .contains("AUTH PLAIN as sidecar accepted; nothing sent")
    );
    assert!(!out.stdout.contains(SMTP_PASSWORD));
    assert!(deployment.smtp.messages().is_empty(), "nothing was sent");

    let out = deployment.doctor(&["--json"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let checks: Vec<Value> = serde_json::from_str(&out.stdout).expect("a JSON array");
    assert_eq!(checks.len(), 20);
    for check in &checks {
        assert_eq!(check["status"], "ok", "{check}");
        assert!(check["name"].is_string() && check["message"].is_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_when_the_smtp_server_is_down() {
    let mut deployment = Deployment::start(&["localhost"]).await;
    deployment.smtp.stop();
    let out = deployment.doctor(&[]).await;
    let server = format!("127.0.0.1:{}", deployment.smtp.port());
    assert_one_failure(
        &out,
        "email.smtp",
        &[
            &format!("cannot connect to {server}"),
            "is the mail server running, and email.smtp_url right?",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_on_a_wrong_smtp_password_and_never_prints_it() {
    let deployment = Deployment::start(&["localhost"]).await;
    let wrong = "not-the-password-77";
    let config = deployment.config_variant("wrong-password.toml", |t| {
        set(t, "email", "smtp_password", wrong)
    });
    let out = deployment.doctor_with(&config, &[]).await;
    assert_one_failure(
        &out,
        "email.smtp",
        &[
            "refused AUTH as sidecar",
            "535",
            "check email.smtp_username and email.smtp_password",
        ],
    );
    assert!(!out.stdout.contains(wrong) && !out.stdout.contains(SMTP_PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_when_redis_is_down() {
    let mut deployment = Deployment::start(&["localhost"]).await;
    deployment.redis.stop();
    let out = deployment.doctor(&[]).await;
    assert_one_failure(
        &out,
        "store.redis",
        &[
            &format!("cannot reach Redis at {}", deployment.redis.url()),
            "start it, or correct [store]",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_when_the_homeserver_is_down() {
    let mut deployment = Deployment::start(&["localhost"]).await;
    let upstream = deployment.upstream.take().expect("running");
    let addr = upstream.addr;
    drop(upstream);
    let refused = wait_until(Duration::from_secs(5), || TcpStream::connect(addr).is_err()).await;
    assert!(refused, "the stand-in homeserver still accepts");
    let out = deployment.doctor(&[]).await;
    assert_one_failure(
        &out,
        "homeserver",
        &[
            &format!("cannot read http://{addr}/_matrix/client/versions"),
            "start the homeserver, or correct upstream.url",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_on_an_identity_certificate_for_another_name() {
    let deployment = Deployment::start(&["wrong.example.org"]).await;
    let out = deployment.doctor(&[]).await;
    assert_one_failure(
        &out,
        "identity.certificate",
        &[
            "not valid for localhost (it names wrong.example.org)",
            "the homeserver refuses it",
        ],
    );
    assert!(out.line("identity.reach").starts_with("ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_fails_on_a_template_override_with_a_syntax_error_naming_the_file() {
    let deployment = Deployment::start(&["localhost"]).await;
    let overrides = deployment.config.with_file_name("templates");
    std::fs::create_dir_all(&overrides).expect("a folder");
    let broken = overrides.join("registration.html");
    std::fs::write(&broken, "<p>{% if link %}unclosed</p>\n").expect("write");
    let config = deployment.config_variant("broken-template.toml", |t| {
        set(t, "email", "templates_dir", overrides.display().to_string())
    });
    let out = deployment.doctor_with(&config, &[]).await;
    assert_one_failure(
        &out,
        "templates",
        &[
            &format!("template {}", broken.display()),
            "fix the file, or remove it to use the built-in one",
        ],
    );
}

#[tokio::test]
async fn with_the_sidecar_down_doctor_says_so_and_judges_the_configured_certificate() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let port = free_port();
    let write = |name: &str, certs: &Certs| {
        let mut config = TestConfig::new("http://127.0.0.1:9");
        config
            .set("identity.listen", format!("127.0.0.1:{port}"))
            .set("identity.server_name", format!("localhost:{port}"))
            .set("identity.tls_cert_file", certs.cert.display().to_string())
            .set("identity.tls_key_file", certs.key.display().to_string());
        let path = dir.path().join(name);
        std::fs::write(&path, config.to_toml()).expect("write the config");
        path
    };
    let right = certs(&["localhost"]);
    let config = write("right.toml", &right);
    let out = run(
        &["doctor", "--config", config.to_str().expect("utf-8")],
        &[("SSL_CERT_FILE", &right.ca)],
    )
    .await;
    assert!(
        out.line("identity.reach")
            .contains("the sidecar is not running; start it and run doctor again"),
        "{}",
        out.stdout
    );
    assert!(out.line("identity.reach").starts_with("warn"));
    assert!(
        out.line("identity.certificate").starts_with("ok"),
        "{}",
        out.stdout
    );

    let wrong = certs(&["wrong.example.org"]);
    let config = write("wrong.toml", &wrong);
    let out = run(
        &["doctor", "--config", config.to_str().expect("utf-8")],
        &[],
    )
    .await;
    assert_eq!(out.code, Some(2), "{}", out.stdout);
    assert!(
        out.line("identity.certificate")
            .starts_with("FAIL  identity.certificate       not valid for localhost"),
        "{}",
        out.stdout
    );
}

/// A config for send-test: SMTP with AUTH, nothing else running.
fn send_test_config(dir: &Path, smtp: &SmtpServer, password: &str) -> PathBuf {
    let mut config = TestConfig::new("http://127.0.0.1:9");
    config
        .set("email.transport", "smtp")
        .set("email.smtp_url", smtp.url())
        .set("email.smtp_username", SMTP_USER)
        .set("email.smtp_password", password)
        .set("email.from", "Example Chat <noreply@chat.example.org>");
    let path = dir.join(format!("send-test-{password}.toml"));
    std::fs::write(&path, config.to_toml()).expect("write the config");
    path
}

#[tokio::test]
async fn send_test_delivers_one_mail_and_prints_each_step_with_the_address_masked() {
    let smtp = SmtpServer::start_with_auth(SMTP_USER, SMTP_PASSWORD);
    let dir = tempfile::tempdir().expect("a temp dir");
    let config = send_test_config(dir.path(), &smtp, SMTP_PASSWORD);
    let out = run(
        &[
            "send-test",
            "--config",
            config.to_str().expect("utf-8"),
            "--email",
            "Alice@Example.org",
            "--purpose",
            "password_reset",
            "--lang",
            "de",
        ],
        &[],
    )
    .await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let server = format!("127.0.0.1:{}", smtp.port());
    for step in [
        "send-test: the password_reset mail in de to a***@example.org",
        &format!("  server    {server} (plain text)"),
        "  greeting  220 ",
        "  TLS       none: plain text",
        "  AUTH      PLAIN, accepted",
        "  reply     250 OK",
        "sent: the mail was handed over",
    ] {
        assert!(
            out.stdout.contains(step),
            "{step:?} not in:\n{}",
            out.stdout
        );
    }
    assert!(
        !out.stdout.to_lowercase().contains("alice@"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains(SMTP_PASSWORD));
    let mails = smtp.wait_for(1, MAIL_WAIT);
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, "alice@example.org");
    assert_eq!(mails[0].from, "noreply@chat.example.org");
    assert!(
        mails[0].raw.contains("Content-Language: de"),
        "{}",
        mails[0].raw
    );
    assert!(
        mails[0].text.contains("SampleEmailToken"),
        "{}",
        mails[0].text
    );
}

#[tokio::test]
async fn send_test_exits_non_zero_when_the_relay_refuses_or_is_down() {
    let mut smtp = SmtpServer::start_with_auth(SMTP_USER, SMTP_PASSWORD);
    let dir = tempfile::tempdir().expect("a temp dir");
    let wrong = send_test_config(dir.path(), &smtp, "wrong-pw-5e");
    let args = |config: &Path| {
        [
            "send-test".to_owned(),
            "--config".to_owned(),
            config.display().to_string(),
            "--email".to_owned(),
            "bob@example.org".to_owned(),
        ]
    };
    let out = run(&args(&wrong).each_ref().map(String::as_str), &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(out.stdout.contains("  failed at AUTH: "), "{}", out.stdout);
    assert!(out.stdout.contains("535"), "{}", out.stdout);
    assert!(!out.stdout.contains("wrong-pw-5e"));

    let good = send_test_config(dir.path(), &smtp, SMTP_PASSWORD);
    smtp.stop();
    let out = run(&args(&good).each_ref().map(String::as_str), &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(
        out.stdout.contains("  failed at connect: "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("not sent: threepid-sidecar doctor says what to do"),
        "{}",
        out.stdout
    );
    assert!(smtp.messages().is_empty());
}

#[tokio::test]
async fn templates_render_writes_every_mail_sms_and_page_in_every_language_with_the_override() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let overrides = dir.path().join("templates");
    std::fs::create_dir_all(&overrides).expect("a folder");
    std::fs::write(
        overrides.join("registration.txt"),
        "OVERRIDE-MARKER {{ t(\"mail-greeting\") }}\n{{ link }}\n",
    )
    .expect("write the override");
    let mut config = TestConfig::new("http://127.0.0.1:9");
    config.set("email.templates_dir", overrides.display().to_string());
    let path = dir.path().join("sidecar.toml");
    std::fs::write(&path, config.to_toml()).expect("write the config");
    let out_dir = dir.path().join("preview");
    let args = [
        "templates",
        "render",
        "--config",
        path.to_str().expect("utf-8"),
        "--out",
        out_dir.to_str().expect("utf-8"),
    ];
    let started = Instant::now();
    let out = run(&args, &[]).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    eprintln!("rendered in {:?}", started.elapsed());

    // Per language: 3 purposes × (mail .eml, mail .html, confirmation page), 2 notices ×
    // (.eml, .html), the SMS, the success page and the failure page.
    let per_language = 3 * 3 + 2 * 2 + 3;
    let mut names: Vec<String> = std::fs::read_dir(&out_dir)
        .expect("the folder")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    assert_eq!(names.len(), LANGUAGES * per_language, "{names:?}");
    assert!(
        out.stdout.contains(&format!(
            "wrote {} files to {}",
            names.len(),
            out_dir.display()
        )),
        "{}",
        out.stdout
    );
    for name in &names {
        assert!(
            out.stdout.contains(&format!("  {name}")),
            "{name} not printed"
        );
    }
    for name in [
        "registration.de.eml",
        "registration.de.html",
        "password_reset.pt-BR.eml",
        "add_threepid.zh-Hans.html",
        "notice_password.fr.eml",
        "notice_removed.nl.html",
        "sms.pl.txt",
        "confirm-registration.es.html",
        "success.it.html",
        "failure.en.html",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
    }
    assert!(
        out.stdout.contains("sms.en.txt  (GSM-7, 1 SMS: "),
        "{}",
        out.stdout
    );
    let eml = std::fs::read_to_string(out_dir.join("registration.de.eml")).expect("read");
    assert!(eml.contains("OVERRIDE-MARKER Hallo"), "{eml}");
    assert!(eml.contains("Content-Language: de"), "{eml}");
    let builtin = std::fs::read_to_string(out_dir.join("password_reset.de.eml")).expect("read");
    assert!(!builtin.contains("OVERRIDE-MARKER"));

    // A second render into the same folder is refused: an old file could pass for a new one.
    let out = run(&args, &[]).await;
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(out.stderr.contains("not empty"), "{}", out.stderr);
}
