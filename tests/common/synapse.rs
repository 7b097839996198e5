//! A real legacy homeserver for the e2e suite: Synapse 1.3.1 (the last release before MSC2263),
//! run as a process from the venv that `scripts/install-test-deps` builds at
//! `.e2e/synapse-venv`, listening on a free loopback port, with its whole state (config, SQLite
//! database, signing key, log) in a temp dir of its own.
//!
//! ```ignore
//! let synapse = Synapse::start(SynapseOptions {
//!     identity_server_name: "localhost:8443".into(),
//!     ..SynapseOptions::default()
//! });
//! let (status, body) = synapse.get("/_matrix/client/versions");
//! ```
//!
//! `start` blocks (a few seconds) until `GET /_matrix/client/versions` answers; the process is
//! killed when the `Synapse` is dropped. A missing venv is a panic, never a skip.

use crate::common::ports::free_port;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const VENV_PYTHON: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/.e2e/synapse-venv/bin/python");
const CONFIG_TEMPLATE: &str = include_str!("../e2e/synapse/homeserver.yaml.in");
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);
/// A port race (the free port taken by someone else before Synapse binds it) gets a new port;
/// any other failure to start is final.
const START_ATTEMPTS: usize = 3;

/// Python's logging config: everything at INFO (one line per request) to `homeserver.log`.
const LOG_CONFIG_TEMPLATE: &str = r#"version: 1
formatters:
  precise:
    format: "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s"
filters:
  context:
    (): synapse.logging.context.LoggingContextFilter
    request: ""
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: @LOG_FILE@
    filters: [context]
root:
  level: INFO
  handlers: [file]
disable_existing_loggers: false
"#;

/// Runs `synapse.app.homeserver` as `python -m` would, plus a watchdog thread that exits the
/// process when its stdin (a pipe held by this test process) closes: a test binary that dies
/// without unwinding (abort, SIGKILL) leaves no Synapse behind.
/// (It reads the raw fd: a daemon thread blocked in `sys.stdin` aborts interpreter shutdown.)
const LAUNCHER: &str = "\
import os, runpy, sys, threading
def _watch():
    while os.read(0, 4096):
        pass
    os._exit(0)
threading.Thread(target=_watch, daemon=True).start()
sys.argv = ['synapse.app.homeserver'] + sys.argv[1:]
runpy.run_module('synapse.app.homeserver', run_name='__main__', alter_sys=True)
";

/// What differs between the homeservers of different tests.
#[derive(Debug, Clone, Default)]
pub struct SynapseOptions {
    /// The sidecar's `identity.server_name`, e.g. `"localhost:8443"`: the only entry of
    /// `trusted_third_party_id_servers`.
    pub identity_server_name: String,
    /// `registrations_require_3pid`, e.g. `vec!["email".into()]`.
    pub registrations_require_3pid: Vec<String>,
    /// YAML appended verbatim at the end of homeserver.yaml; top-level keys here win over the
    /// template's (PyYAML keeps the last of duplicate keys).
    pub extra_yaml: String,
}

/// A running Synapse 1.3.1; killed on drop.
pub struct Synapse {
    child: Child,
    port: u16,
    /// `None` once kept for a post-mortem (dropped while panicking).
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
}

impl Synapse {
    /// Writes the config into a fresh temp dir, generates the signing key, starts the
    /// homeserver and waits (up to 60 s) until `/_matrix/client/versions` answers 200.
    /// Blocking; panics with the tail of Synapse's output when it does not come up.
    pub fn start(opts: SynapseOptions) -> Synapse {
        assert!(
            Path::new(VENV_PYTHON).exists(),
            "Synapse 1.3.1 venv missing: run scripts/install-test-deps (looked for {VENV_PYTHON})"
        );
        let dir = tempfile::Builder::new()
            .prefix("synapse-")
            .tempdir()
            .expect("a temp dir for Synapse");
        let dir_path = dir.path().to_path_buf();
        let config_path = dir_path.join("homeserver.yaml");

        let mut failures = Vec::new();
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port();
            fs::write(&config_path, render_config(&dir_path, port, &opts))
                .expect("write homeserver.yaml");
            fs::write(dir_path.join("log.yaml"), render_log_config(&dir_path))
                .expect("write log.yaml");
            if attempt == 1 {
                generate_keys(&dir_path, &config_path);
            }
            let child = spawn(&dir_path, &config_path);
            let mut synapse = Synapse {
                child,
                port,
                dir: None,
                dir_path: dir_path.clone(),
            };
            match synapse.wait_ready() {
                Ok(()) => {
                    synapse.dir = Some(dir);
                    return synapse;
                }
                Err(why) => {
                    // dir is None: dropping only kills the process, the dir stays with us.
                    drop(synapse);
                    failures.push(format!("attempt {attempt} (port {port}): {why}"));
                    // Synapse 1.3.1 logs a bind failure to its log file, and exits 0.
                    let said = |name| fs::read_to_string(dir_path.join(name)).unwrap_or_default();
                    if !(said("homeserver.log") + &said("stderr.log"))
                        .contains("Address already in use")
                    {
                        break;
                    }
                }
            }
        }
        let kept = dir.keep();
        panic!(
            "Synapse did not start:\n{}\n--- stderr ---\n{}\n--- homeserver.log ---\n{}\n(kept {})",
            failures.join("\n"),
            tail(&kept.join("stderr.log"), 30),
            tail(&kept.join("homeserver.log"), 30),
            kept.display()
        );
    }

    /// `server_name` of the homeserver: user IDs are `@name:localhost`.
    pub fn server_name(&self) -> &'static str {
        "localhost"
    }

    /// The loopback port of the client listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`, no trailing slash: the sidecar's upstream.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Synapse's own log (INFO: one line per request it processed).
    pub fn log_path(&self) -> PathBuf {
        self.dir_path.join("homeserver.log")
    }

    /// The temp dir with homeserver.yaml, the database and the logs.
    pub fn dir(&self) -> &Path {
        &self.dir_path
    }

    /// Blocking `GET <path>` straight to Synapse: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http_request(self.port, "GET", path, None).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Blocking `POST <path>` with a JSON body straight to Synapse: (status, body).
    pub fn post_json(&self, path: &str, body: &str) -> (u16, String) {
        http_request(self.port, "POST", path, Some(body))
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the Synapse process") {
                return Err(format!("exited with {status} before answering"));
            }
            if let Ok((200, _)) = http_request(self.port, "GET", "/_matrix/client/versions", None) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "/_matrix/client/versions did not answer 200 within {READY_TIMEOUT:?}"
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // A failing test: keep the dir and show what Synapse saw.
        if thread::panicking()
            && let Some(dir) = self.dir.take()
        {
            let kept = dir.keep();
            eprintln!(
                "Synapse on port {} — its log (dir kept at {}):\n{}",
                self.port,
                kept.display(),
                tail(&kept.join("homeserver.log"), 40)
            );
        }
    }
}

fn render_config(dir: &Path, port: u16, opts: &SynapseOptions) -> String {
    let path = |name: &str| json(&dir.join(name).to_string_lossy());
    let config = [
        ("@PID_FILE@", path("homeserver.pid")),
        ("@PORT@", port.to_string()),
        ("@DATABASE@", path("homeserver.db")),
        ("@LOG_CONFIG@", path("log.yaml")),
        ("@MEDIA_STORE_PATH@", path("media_store")),
        ("@UPLOADS_PATH@", path("uploads")),
        ("@SIGNING_KEY_PATH@", path("signing.key")),
        (
            "@REGISTRATIONS_REQUIRE_3PID@",
            serde_json::to_string(&opts.registrations_require_3pid).expect("strings serialize"),
        ),
        ("@IDENTITY_SERVER@", json(&opts.identity_server_name)),
    ]
    .iter()
    .fold(CONFIG_TEMPLATE.to_owned(), |text, (placeholder, value)| {
        assert!(
            text.contains(placeholder),
            "{placeholder} missing from the template"
        );
        text.replace(placeholder, value)
    });
    assert!(
        config.contains("@EXTRA_YAML@"),
        "@EXTRA_YAML@ missing from the template"
    );
    // Last, so that extra_yaml is never searched for placeholders.
    config.replace("@EXTRA_YAML@", &opts.extra_yaml)
}

fn render_log_config(dir: &Path) -> String {
    LOG_CONFIG_TEMPLATE.replace(
        "@LOG_FILE@",
        &json(&dir.join("homeserver.log").to_string_lossy()),
    )
}

/// A YAML-safe scalar: a JSON string.
fn json(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn synapse_command(dir: &Path) -> Command {
    let mut cmd = Command::new(VENV_PYTHON);
    cmd.current_dir(dir).env("PYTHONWARNINGS", "ignore");
    cmd
}

fn generate_keys(dir: &Path, config: &Path) {
    let out = synapse_command(dir)
        .args(["-m", "synapse.app.homeserver", "-c"])
        .arg(config)
        .arg("--generate-keys")
        .stdin(Stdio::null())
        .output()
        .expect("run synapse.app.homeserver --generate-keys");
    assert!(
        out.status.success(),
        "synapse --generate-keys failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn spawn(dir: &Path, config: &Path) -> Child {
    // Truncated: each attempt's output on its own.
    let log = |name: &str| {
        fs::File::create(dir.join(name)).unwrap_or_else(|e| panic!("create {name}: {e}"))
    };
    synapse_command(dir)
        .args(["-c", LAUNCHER, "-c"])
        .arg(config)
        // Held open by the Child; its end is the watchdog's signal (see LAUNCHER).
        .stdin(Stdio::piped())
        .stdout(log("stdout.log"))
        .stderr(log("stderr.log"))
        .spawn()
        .expect("start Synapse")
}

/// One HTTP/1.0 exchange (Synapse closes the connection after the answer).
fn http_request(
    port: u16,
    method: &str,
    path: &str,
    json_body: Option<&str>,
) -> io::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
    stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
    if let Some(body) = json_body {
        request.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let response = String::from_utf8_lossy(&response);
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not HTTP: {response:?}"),
        )
    };
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(bad)?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(bad)?;
    Ok((status, body.to_owned()))
}

/// The last `lines` lines of a file, or why there are none.
fn tail(path: &Path, lines: usize) -> String {
    match fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}
