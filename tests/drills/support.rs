//! What the drills share: one drill at a time on a runtime of its own, the real binary as a
//! child process, one-connection HTTP/1.1 requests with a bound on each, the open-file
//! limit, and small figures (percentiles).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::common::ports::free_addr;
use crate::common::sidecar::TestConfig;

pub const BIN: &str = env!("CARGO_BIN_EXE_threepid-sidecar");

/// `eprintln!` past the test harness's output capture (which takes only the print macros'
/// output), so that a drill's figures show in every run, CI's included, not only with
/// `--nocapture`.
macro_rules! figures {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}
pub(crate) use figures;

/// Sends `request` through the pooled `client` and reads the whole answer; errors as text.
pub async fn exchange(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Bytes), String> {
    let response = client
        .request(request)
        .await
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok((status, body))
}

/// Drills load the machine and measure time: never two at once.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs one drill alone, on a runtime of its own (so nothing it spawned outlives it).
pub fn drill<F, Fut>(name: &str, body: F)
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = ()>,
{
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let started = Instant::now();
    figures!("[{name}] start");
    runtime.block_on(body());
    figures!(
        "[{name}] passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Milliseconds, for figures.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The `p`-th percentile (0–100) of some durations; zero when there are none.
pub fn percentile(durations: &[Duration], p: f64) -> Duration {
    if durations.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = durations.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// How one request through a fresh connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A whole response.
    Answered(StatusCode, Bytes),
    /// The TCP connection was refused.
    Refused,
    /// Connected, then the connection failed before a whole response.
    Failed(String),
    /// No whole response within the bound.
    TimedOut,
}

impl Outcome {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Outcome::Answered(status, _) => Some(*status),
            _ => None,
        }
    }

    pub fn is_ok(&self) -> bool {
        self.status() == Some(StatusCode::OK)
    }
}

/// One request on a new connection, with when it connected.
#[derive(Debug, Clone)]
pub struct FreshRequest {
    pub started: Instant,
    /// When the TCP connection was established (absent when it never was).
    pub connected: Option<Instant>,
    pub ended: Instant,
    pub outcome: Outcome,
}

impl FreshRequest {
    pub fn latency(&self) -> Duration {
        self.ended - self.started
    }
}

/// `GET path` over a new HTTP/1.1 connection (closed afterwards); the whole exchange is
/// bounded by `bound`.
pub async fn get_fresh(addr: SocketAddr, path: &str, bound: Duration) -> FreshRequest {
    let started = Instant::now();
    let mut connected = None;
    let exchange = async {
        let stream = match TcpStream::connect(addr).await {
            Ok(stream) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Outcome::Refused;
            }
            Err(e) => return Outcome::Failed(format!("connect: {e}")),
        };
        connected = Some(Instant::now());
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                Ok(pair) => pair,
                Err(e) => return Outcome::Failed(format!("handshake: {e}")),
            };
        let conn = tokio::spawn(conn);
        let request = Request::get(path)
            .header("host", addr.to_string())
            .header("connection", "close")
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let outcome = match sender.send_request(request).await {
            Ok(response) => {
                let status = response.status();
                match response.into_body().collect().await {
                    Ok(body) => Outcome::Answered(status, body.to_bytes()),
                    Err(e) => Outcome::Failed(format!("body: {e}")),
                }
            }
            Err(e) => Outcome::Failed(format!("request: {e}")),
        };
        conn.abort();
        outcome
    };
    let outcome = tokio::time::timeout(bound, exchange)
        .await
        .unwrap_or(Outcome::TimedOut);
    FreshRequest {
        started,
        connected,
        ended: Instant::now(),
        outcome,
    }
}

/// This process's open-file limits (soft, hard) from `/proc/self/limits`; `u64::MAX` is
/// "unlimited".
pub fn open_file_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut values = line["Max open files".len()..]
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
    let soft = values.next().expect("a soft limit");
    let hard = values.next().expect("a hard limit");
    (soft, hard)
}

/// Makes sure this process may hold `needed` open files: when the soft limit is lower, it
/// is raised towards the hard limit with util-linux `prlimit` on our own pid (no unsafe
/// code needed). Panics, naming the limits, when that is not enough.
pub fn ensure_open_files(needed: u64) -> u64 {
    let (soft, hard) = open_file_limits();
    if soft >= needed {
        return soft;
    }
    let target = hard.min(needed.max(20_000));
    let status = Command::new("prlimit")
        .arg("--pid")
        .arg(std::process::id().to_string())
        .arg(format!("--nofile={target}:"))
        .status();
    let (raised, hard) = open_file_limits();
    assert!(
        raised >= needed,
        "this drill needs {needed} open files; the soft limit is {soft} and could not be raised \
         (hard limit {hard}, prlimit: {status:?}): raise `ulimit -n` before `cargo test`"
    );
    figures!("open-file limit raised from {soft} to {raised} (hard {hard})");
    raised
}

/// The real binary as a child process, its open-file limit raised by the shell that
/// starts it; killed if the drill ends before it exits.
pub struct ChildSidecar {
    child: Child,
    pub client: SocketAddr,
    log_path: PathBuf,
    /// Holds the temp dir (config, log, mail) for as long as the child runs.
    _config: Option<TestConfig>,
}

/// Raises the soft open-file limit as far as allowed, then becomes the sidecar (same pid).
const WITH_MORE_FILES: &str =
    r#"ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$0" "$@""#;

impl ChildSidecar {
    /// Starts the binary with `config` on fixed free ports and waits until it is ready.
    /// The ports are chosen before the child binds them, so another socket can take one in
    /// between (the drills make thousands of connections): then it starts again on others.
    pub async fn start(mut config: TestConfig) -> Self {
        let mut attempts = 0;
        loop {
            attempts += 1;
            match Self::try_start(&mut config).await {
                Ok(mut sidecar) => {
                    sidecar._config = Some(config);
                    return sidecar;
                }
                Err(log) if attempts < 3 && log.contains("Address already in use") => {}
                Err(log) => panic!("the sidecar exited at start; its log:\n{log}"),
            }
        }
    }

    /// One start; the log when the child exited before it was ready.
    async fn try_start(config: &mut TestConfig) -> Result<Self, String> {
        let (client, admin) = (free_addr(), free_addr());
        config
            .set("server.listen", client.to_string())
            .set("server.public_baseurl", format!("http://{client}/"))
            .set("admin.listen", admin.to_string());
        let dir = config.dir.path().to_owned();
        let config_path = dir.join("sidecar.toml");
        std::fs::write(&config_path, config.to_toml()).expect("write the config");
        let log_path = dir.join("sidecar.log");
        let log = std::fs::File::create(&log_path).expect("the log file");
        let child = Command::new("sh")
            .arg("-c")
            .arg(WITH_MORE_FILES)
            .arg(BIN)
            .arg("--config")
            .arg(&config_path)
            .arg("run")
            .env_remove("THREEPID_SIDECAR_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the log file"))
            .stderr(log)
            .spawn()
            .expect("sh starts the binary");
        let mut sidecar = Self {
            child,
            client,
            log_path,
            _config: None,
        };
        let started = Instant::now();
        loop {
            let probe = get_fresh(admin, "/health/ready", Duration::from_secs(1)).await;
            if probe.outcome.is_ok() {
                return Ok(sidecar);
            }
            if !sidecar.is_running() {
                return Err(sidecar.log());
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "the sidecar never became ready; its log:\n{}",
                sidecar.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends SIGTERM with the `kill` command.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the child to exit, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait().expect("wait on the child") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Resident memory in KiB, from `/proc/<pid>/status`.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }

    /// CPU time the child has used so far (user + system), from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).ok()?;
        // Past the command name (in parentheses, and it may hold spaces): state is field 3,
        // utime and stime fields 14 and 15, in clock ticks.
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        Some(Duration::from_secs_f64(
            ticks as f64 / clock_ticks_per_second() as f64,
        ))
    }

    /// Open file descriptors of the child.
    pub fn open_fds(&self) -> Option<usize> {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .ok()
            .map(Iterator::count)
    }
}

/// `getconf CLK_TCK`: the unit of the CPU times in `/proc/<pid>/stat` (100 on Linux, where
/// the value is fixed for user space; asked rather than assumed).
fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100)
}

impl Drop for ChildSidecar {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
