//! A real SMTP server for integration tests: Debian's `python3-aiosmtpd` as a process on
//! a free loopback port, delivering into a Maildir that the tests read back and parse
//! with `mail-parser`. Plain SMTP only (`?tls=none`); the process dies with the value.
//! A recipient whose local part starts with `nobody-` is refused for good (`550 5.1.1`), as a
//! real server refuses an unknown mailbox (`smtp/refusing_mailbox.py`).
//! [`SmtpServer::start_with_auth`] requires AUTH of one user (`smtp/auth_server.py`).

use crate::common::ports::free_port;
use std::io::Read as _;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mail_parser::{MessageParser, PartType};

/// Debian's interpreter: the one `apt-get install python3-aiosmtpd` serves (a pyenv
/// `python3` on PATH would not have it).
const PYTHON: &str = "/usr/bin/python3";
const MISSING: &str = "python3-aiosmtpd not found: apt-get install -y python3-aiosmtpd";

/// One received message, parsed.
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// The first `To:` address.
    pub to: String,
    /// The first `From:` address.
    pub from: String,
    pub subject: String,
    /// The `text/plain` part; empty when there is none.
    pub text: String,
    /// The `text/html` part (as sent, HTML-escaped); empty when there is none.
    pub html: String,
    /// The whole message as stored (aiosmtpd adds `X-Peer`, `X-MailFrom`, `X-RcptTo`).
    pub raw: String,
}

/// The first link in a mail's text part.
pub fn link_in(text: &str) -> String {
    let start = text.find("http").expect("a link in the mail");
    text[start..]
        .split_whitespace()
        .next()
        .expect("the link")
        .to_owned()
}

/// One query parameter of a link, decoded.
pub fn query_param(link: &str, key: &str) -> String {
    url::Url::parse(link)
        .expect("a URL")
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {key} in {link}"))
}

impl ReceivedMail {
    /// The link in its text part.
    pub fn link(&self) -> String {
        link_in(&self.text)
    }

    /// The token its link carries.
    pub fn token(&self) -> String {
        query_param(&self.link(), "token")
    }
}

/// A running aiosmtpd. Killed on drop.
pub struct SmtpServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// While stopped: the port, bound but not listening, so that connections are refused
    /// and no other test's server can take it before the restart.
    hold: Option<tokio::net::TcpSocket>,
    /// The one user and password AUTH accepts, when AUTH is required.
    auth: Option<(String, String)>,
}

impl SmtpServer {
    /// Starts a server on a free loopback port and waits until it accepts connections.
    /// Panics (never skips) when python3-aiosmtpd is not installed.
    pub fn start() -> SmtpServer {
        Self::start_with(None)
    }

    /// Starts a server that requires AUTH (PLAIN or LOGIN, over plain text) of `user` with
    /// `password`, and refuses any other with `535 5.7.8`.
    pub fn start_with_auth(user: &str, password: &str) -> SmtpServer {
        Self::start_with(Some((user.to_owned(), password.to_owned())))
    }

    fn start_with(auth: Option<(String, String)>) -> SmtpServer {
        let found = Command::new(PYTHON)
            .args(["-c", "import aiosmtpd"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(found, "{MISSING}");
        // The port is free when probed but could be taken before Python binds it: retry.
        let mut last_error = String::new();
        for _ in 0..5 {
            let mut server = SmtpServer {
                port: free_port(),
                dir: tempfile::tempdir().expect("a temporary folder can be made"),
                child: None,
                hold: None,
                auth: auth.clone(),
            };
            match server.spawn() {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("aiosmtpd did not start: {last_error}");
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `smtp://127.0.0.1:<port>?tls=none`, for `email.smtp_url`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }

    /// Kills the server; connections are refused until [`SmtpServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.hold = hold_port(self.port);
        }
    }

    /// Starts it again on the same port and Maildir (mail received so far is kept).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("aiosmtpd did not restart on port {}: {e}", self.port);
        }
    }

    /// Every message delivered so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        let mut files: Vec<PathBuf> = ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.maildir().join(sub)).ok())
            .flatten()
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .collect();
        // Maildir names start with the delivery time in seconds, then a unique part.
        files.sort_by_key(|p| {
            let modified = std::fs::metadata(p).and_then(|m| m.modified()).ok();
            (modified, p.clone())
        });
        files.iter().map(|p| parse(p)).collect()
    }

    /// Waits until at least `n` messages have arrived and returns them all; panics after
    /// `timeout`. It blocks the calling thread: the mail must be on its way already (the
    /// sidecar sends before answering requestToken), not queued on this thread's runtime.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMail> {
        let deadline = Instant::now() + timeout;
        loop {
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} message(s) within {timeout:?}, got {}",
                messages.len()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn maildir(&self) -> PathBuf {
        self.dir.path().join("maildir")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("aiosmtpd.log")
    }

    /// Runs the process and waits until the port accepts, or reports why not.
    fn spawn(&mut self) -> Result<(), String> {
        self.hold = None;
        let log = std::fs::File::create(self.log_path()).map_err(|e| e.to_string())?;
        let mut command = Command::new(PYTHON);
        match &self.auth {
            None => command
                .args(["-m", "aiosmtpd", "-n", "-l"])
                .arg(format!("127.0.0.1:{}", self.port))
                .args(["-c", "refusing_mailbox.RefusingMailbox"])
                .arg(self.maildir()),
            Some((user, password)) => command
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/common/smtp/auth_server.py"
                ))
                .arg(format!("127.0.0.1:{}", self.port))
                .arg(self.maildir())
                .env("SMTP_USER", user)
                .env("SMTP_PASSWORD", password),
        };
        let child = command
            .env(
                "PYTHONPATH",
                concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/smtp"),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run {PYTHON}: {e}"))?;
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            // Its greeting, not just an open port: a port another test took would accept too.
            if let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                let mut greeting = [0u8; 3];
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                if stream.read_exact(&mut greeting).is_ok() && &greeting == b"220" {
                    return Ok(());
                }
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() > deadline {
                self.stop();
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                return Err(format!("port {} never accepted; log:\n{log}", self.port));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// Binds `port` on loopback without listening: connections to it are refused, and no one
/// else can bind it. `None` when it cannot (then the port is merely free, as before).
fn hold_port(port: u16) -> Option<tokio::net::TcpSocket> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.set_reuseaddr(true).ok()?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port))).ok()?;
    Some(socket)
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn parse(path: &Path) -> ReceivedMail {
    let bytes = std::fs::read(path).expect("a delivered message can be read");
    let message = MessageParser::default()
        .parse(&bytes)
        .unwrap_or_else(|| panic!("{} is not a parseable message", path.display()));
    let first = |a: Option<&mail_parser::Address<'_>>| {
        a.and_then(|a| a.first())
            .and_then(|a| a.address())
            .unwrap_or_default()
            .to_owned()
    };
    let part = |html: bool| {
        message.parts.iter().find_map(|p| match &p.body {
            PartType::Html(s) if html => Some(s.to_string()),
            PartType::Text(s) if !html => Some(s.to_string()),
            _ => None,
        })
    };
    ReceivedMail {
        to: first(message.to()),
        from: first(message.from()),
        subject: message.subject().unwrap_or_default().to_owned(),
        text: part(false).unwrap_or_default(),
        html: part(true).unwrap_or_default(),
        raw: String::from_utf8_lossy(&bytes).into_owned(),
    }
}
