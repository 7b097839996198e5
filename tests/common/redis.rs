//! A real `redis-server` (the Debian binary) on a free loopback port, with no persistence and
//! a temp dir of its own, for the store tests.
//!
//! ```ignore
//! let mut redis = RedisServer::start();
//! let store = RedisStore::new(&redis.url(), settings, timeout)?;
//! redis.stop();    // as if it crashed
//! redis.restart(); // same port, empty
//! ```
//!
//! The server runs under a small `sh` guard that holds a pipe from this process: when the pipe
//! closes (drop, `stop`, or this test binary dying in any way) the guard kills the server, so
//! no `redis-server` outlives its test. A missing binary is a panic, never a skip.

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Port races (the free port taken before redis binds it) get a new port on `start`.
const START_ATTEMPTS: usize = 3;
/// Runs the server in the background, waits for stdin to close, then kills it (as a crash
/// would) and waits until it is gone, so the port is free when the guard exits.
const GUARD: &str = r#""$@" & pid=$!; read _ignored; kill -KILL "$pid"; wait "$pid""#;

/// A running `redis-server`; killed when dropped.
pub struct RedisServer {
    binary: PathBuf,
    port: u16,
    dir: TempDir,
    guard: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        let binary = find_binary();
        for attempt in 1..=START_ATTEMPTS {
            let mut server = RedisServer {
                binary: binary.clone(),
                port: free_port(),
                dir: tempfile::tempdir().expect("temp dir for redis-server"),
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

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (SIGKILL, like a crash) and waits until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut guard) = self.guard.take() {
            drop(guard.stdin.take());
            let _ = guard.wait();
        }
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
        let guard = Command::new("sh")
            .arg("-c")
            .arg(GUARD)
            .arg("redis-guard")
            .arg(&self.binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs");
        self.guard = Some(guard);
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if self.answers_ping() {
                return true;
            }
            thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn answers_ping(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
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

fn find_binary() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("redis-server"))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("redis-server not found: apt-get install -y redis-server"))
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}
