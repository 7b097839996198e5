//! Real Redis processes (the Debian binaries) on free loopback ports, each with no persistence
//! and a temp dir, for the store tests:
//!
//! - [`RedisServer`]: one server, which a test can stop (as if it crashed) and restart, or
//!   serve TLS only;
//! - [`sentinel::RedisSentinel`]: a master, a replica and two sentinels, which a test can fail
//!   over;
//! - [`cluster::RedisCluster`]: a three-master Redis Cluster.
//!
//! ```ignore
//! let mut redis = RedisServer::start();
//! let store = RedisStore::new(&redis.url(), settings, timeout)?;
//! redis.stop();    // as if it crashed
//! redis.restart(); // same port, empty
//! ```
//!
//! Every process runs under a small `sh` guard that holds a pipe from this process: when the
//! pipe closes (drop, `stop`, or this test binary dying in any way) the guard kills the
//! process, so none outlives its test, even one kept in a `static`. A temp dir is removed the
//! same way. A missing binary is a panic naming its Debian package, never a skip.

pub mod cluster;
pub mod sentinel;

use crate::common::ports::free_port;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Port races (the free port taken before redis binds it) get new ports on `start`.
const START_ATTEMPTS: usize = 3;
/// Runs the process in the background, waits for stdin to close, then kills it (as a crash
/// would) and waits until it is gone, so the port is free when the guard exits.
const GUARD: &str = r#""$@" & pid=$!; read _ignored; kill -KILL "$pid"; wait "$pid""#;
/// Waits for stdin to close, gives the process guards a moment, then removes the dir.
const DIR_GUARD: &str = r#"read _ignored; sleep 1; rm -rf -- "$1""#;

/// A running `redis-server`; killed when dropped.
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: TempDir,
    /// PEM certificate and key: TLS only, on `port`.
    tls: Option<(PathBuf, PathBuf)>,
    guard: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        Self::start_with(None)
    }

    /// Starts a server that speaks TLS only, with this PEM certificate and key, and waits
    /// until it accepts connections.
    pub fn start_tls(cert: &Path, key: &Path) -> RedisServer {
        Self::start_with(Some((cert.to_owned(), key.to_owned())))
    }

    fn start_with(tls: Option<(PathBuf, PathBuf)>) -> RedisServer {
        let binary = find_binary("redis-server", "redis-server");
        for attempt in 1..=START_ATTEMPTS {
            let mut server = RedisServer {
                binary: binary.clone(),
                port: free_port(),
                dir: tempfile::tempdir().expect("temp dir for redis-server"),
                tls: tls.clone(),
                guard: None,
            };
            if server.spawn_and_wait() {
                return server;
            }
            server.stop();
            assert!(
                attempt < START_ATTEMPTS,
                "redis-server did not answer PING; its log:\n{}",
                server.log()
            );
        }
        unreachable!("the loop returns or panics")
    }

    /// Its loopback port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://` for TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, like a crash) and waits until it has exited.
    pub fn stop(&mut self) {
        stop(&mut self.guard);
    }

    /// Starts the server again on the same port (empty: nothing is persisted).
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn_and_wait(),
            "redis-server did not come back on port {}; its log:\n{}",
            self.port,
            self.log()
        );
    }

    fn spawn_and_wait(&mut self) -> bool {
        let log = self.dir.path().join("redis.log");
        let mut args = server_args(self.port, self.dir.path(), &log);
        if let Some((cert, key)) = &self.tls {
            let (cert, key) = (cert.display().to_string(), key.display().to_string());
            args.extend(
                [
                    "--port",
                    "0",
                    "--tls-port",
                    &self.port.to_string(),
                    "--tls-cert-file",
                    &cert,
                    "--tls-key-file",
                    &key,
                    "--tls-ca-cert-file",
                    &cert,
                    "--tls-auth-clients",
                    "no",
                ]
                .map(String::from),
            );
        }
        self.guard = Some(spawn(&self.binary, &args));
        if self.tls.is_some() {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
            let accepts = || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
            wait_until(READY_TIMEOUT, accepts)
        } else {
            wait_until(READY_TIMEOUT, || serves(self.port, &log))
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One process of a topology: its port and its guard.
struct Node {
    port: u16,
    guard: Option<Child>,
}

impl Drop for Node {
    fn drop(&mut self) {
        stop(&mut self.guard);
    }
}

/// A temp dir removed when dropped or when this process dies, whichever comes first.
struct Dir {
    path: PathBuf,
    _guard: Child,
}

impl Dir {
    fn new(what: &str) -> Dir {
        let path = tempfile::Builder::new()
            .prefix(&format!("{what}-"))
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir for {what}: {e}"))
            .keep();
        let guard = Command::new("sh")
            .args(["-c", DIR_GUARD, "dir-guard"])
            .arg(&path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs");
        Dir {
            path,
            _guard: guard,
        }
    }

    fn logs(&self) -> String {
        let mut names: Vec<_> = fs::read_dir(&self.path)
            .map(|entries| entries.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .map(|p| {
                format!(
                    "--- {}\n{}",
                    p.display(),
                    fs::read_to_string(p).unwrap_or_default()
                )
            })
            .collect()
    }
}

/// Sends one command to `127.0.0.1:<port>` on a fresh connection; None if that fails.
pub fn query<T: ::redis::FromRedisValue>(port: u16, args: &[&str]) -> Option<T> {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    con.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let mut cmd = ::redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut con).ok()
}

/// `ROLE`'s first word: `master`, `slave` or `sentinel`.
pub fn role(port: u16) -> Option<String> {
    query::<Vec<::redis::Value>>(port, &["ROLE"])?
        .first()
        .and_then(|v| ::redis::from_redis_value_ref(v).ok())
}

fn info(port: u16, section: &str) -> Option<String> {
    info_command(port, &["INFO", section])
}

fn info_command(port: u16, args: &[&str]) -> Option<String> {
    query::<String>(port, args)
}

fn server_args(port: u16, dir: &Path, log: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
    ]
    .map(String::from)
    .into();
    args.extend([
        "--dir".into(),
        dir.display().to_string(),
        "--logfile".into(),
        log.display().to_string(),
    ]);
    args
}

fn spawn(binary: &Path, args: &[String]) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(GUARD)
        .arg("redis-guard")
        .arg(binary)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh runs")
}

/// Closes the guard's pipe (it kills the process) and waits until it is done.
fn stop(guard: &mut Option<Child>) {
    if let Some(mut guard) = guard.take() {
        drop(guard.stdin.take());
        let _ = guard.wait();
    }
}

fn wait_until(timeout: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// The server on `port` answers, and it is the one writing to `log`, not some other test's
/// that took the port first.
fn serves(port: u16, log: &Path) -> bool {
    answers_ping(port)
        && query::<Vec<String>>(port, &["CONFIG", "GET", "logfile"])
            .is_some_and(|kv| kv.get(1).map(String::as_str) == log.to_str())
}

fn dir_name(dir: &Path) -> &str {
    dir.file_name()
        .and_then(|n| n.to_str())
        .expect("a temp dir has a UTF-8 name")
}

fn answers_ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0u8; 7];
    stream.write_all(b"PING\r\n").is_ok()
        && stream.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

fn find_optional(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

fn find_binary(name: &str, package: &str) -> PathBuf {
    find_optional(name).unwrap_or_else(|| panic!("{name} not found: apt-get install -y {package}"))
}
