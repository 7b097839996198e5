//! Drill 1: Redis is killed (SIGKILL) under load and started again on the same port, empty.
//! Pass-through traffic never notices; requestToken answers 503 `M_UNKNOWN` quickly while
//! Redis is down (never hangs) and works again within 2 s of the restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::common::redis::RedisServer;
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::upstream::Upstream;
use crate::support::{drill, exchange, figures, ms, percentile};

const PASS_THROUGH_CLIENTS: usize = 8;
const REQUEST_TOKEN_CLIENTS: usize = 8;
const BEFORE: Duration = Duration::from_millis(1500);
const DOWN: Duration = Duration::from_secs(2);
const AFTER: Duration = Duration::from_millis(2500);
/// Every request must be answered within this (the store command timeout is 1 s).
const BOUND: Duration = Duration::from_secs(3);
/// requestToken must work again this soon after Redis answers PING again.
const RECOVERY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    PassThrough,
    RequestToken,
}

#[derive(Debug, Clone)]
struct Sample {
    kind: Kind,
    started: Instant,
    ended: Instant,
    /// None: no answer within [`BOUND`], or the connection failed.
    status: Option<StatusCode>,
    errcode: Option<String>,
    failure: Option<String>,
}

impl Sample {
    /// For failure messages: what happened, and how long it took.
    fn describe(&self) -> String {
        let what = match (self.status, &self.failure) {
            (Some(status), _) => format!(
                "{} {}",
                status.as_u16(),
                self.errcode.as_deref().unwrap_or("")
            ),
            (None, Some(failure)) => failure.clone(),
            (None, None) => "nothing".to_owned(),
        };
        format!(
            "{:?} {what} after {:.0} ms",
            self.kind,
            ms(self.ended - self.started)
        )
    }
}

/// The first few, described.
fn first_few(samples: &[&Sample]) -> Vec<String> {
    samples.iter().take(5).map(|s| s.describe()).collect()
}

async fn one(
    client: &Client<HttpConnector, Full<Bytes>>,
    kind: Kind,
    base: &str,
    n: u64,
) -> Sample {
    let request = match kind {
        Kind::PassThrough => Request::get(format!(
            "{base}/_matrix/client/r0/rooms/drill/messages?n={n}"
        ))
        .body(Full::new(Bytes::new())),
        Kind::RequestToken => {
            let body = serde_json::json!({
                "client_secret": format!("drill-secret-{n}"),
                "email": format!("drill-{n}@example.org"),
                "send_attempt": 1,
            });
            Request::builder()
                .method(Method::POST)
                .uri(format!(
                    "{base}/_matrix/client/v3/register/email/requestToken"
                ))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
        }
    }
    .expect("a valid request");
    let started = Instant::now();
    let (status, errcode, failure) =
        match tokio::time::timeout(BOUND, exchange(client, request)).await {
            Ok(Ok((status, body))) => {
                let errcode = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["errcode"].as_str().map(str::to_owned));
                (Some(status), errcode, None)
            }
            Ok(Err(e)) => (None, None, Some(e)),
            Err(_) => (None, None, Some(format!("no answer within {BOUND:?}"))),
        };
    Sample {
        kind,
        started,
        ended: Instant::now(),
        status,
        errcode,
        failure,
    }
}

#[test]
fn drill_1_redis_killed_and_restarted_under_load() {
    drill("drill 1: redis killed and restarted", || async {
        let upstream = Upstream::start().await;
        let mut redis = RedisServer::start();
        let mut config = TestConfig::new(&upstream.url());
        config.redis(&redis).set("store.command_timeout", "1s");
        for limit in [
            "request_token_per_ip",
            "request_token_per_address",
            "submit_per_ip",
        ] {
            config.set_toml(
                &format!("rate_limit.{limit}"),
                "{ per_second = 1000000.0, burst = 1000000 }",
            );
        }
        let sidecar = Sidecar::start(config).await;
        let base = sidecar.url("");

        let stop = Arc::new(AtomicBool::new(false));
        let counter = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        let kinds = std::iter::repeat_n(Kind::PassThrough, PASS_THROUGH_CLIENTS).chain(
            std::iter::repeat_n(Kind::RequestToken, REQUEST_TOKEN_CLIENTS),
        );
        for kind in kinds {
            let (stop, counter, base) = (stop.clone(), counter.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                let client = Client::builder(TokioExecutor::new()).build_http();
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    samples.push(one(&client, kind, &base, n).await);
                }
                samples
            }));
        }

        tokio::time::sleep(BEFORE).await;
        // Requests that end before this saw a healthy Redis; from `killed` on it is dead.
        let killing = Instant::now();
        let (redis_back, killed) = tokio::task::spawn_blocking(move || {
            redis.stop();
            let killed = Instant::now();
            (redis, killed)
        })
        .await
        .expect("stopping redis");
        redis = redis_back;
        tokio::time::sleep(DOWN).await;
        // Requests that end before `reviving` saw a dead Redis; the server may answer again
        // any time between `reviving` and `restarted` (when the helper saw it ready).
        let (redis_back, reviving, restarted) = tokio::task::spawn_blocking(move || {
            let reviving = Instant::now();
            redis.restart();
            let restarted = Instant::now();
            (redis, reviving, restarted)
        })
        .await
        .expect("restarting redis");
        let _redis = redis_back;
        tokio::time::sleep(AFTER).await;
        stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        for task in tasks {
            samples.extend(task.await.expect("a load task"));
        }
        let down_for = restarted - killed;

        // Pass-through.
        let pass: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.kind == Kind::PassThrough)
            .collect();
        let pass_errors: Vec<&Sample> = pass
            .iter()
            .copied()
            .filter(|s| s.status != Some(StatusCode::OK))
            .collect();
        let pass_during = pass
            .iter()
            .filter(|s| s.started >= killed && s.ended <= reviving)
            .count();
        let pass_latencies: Vec<Duration> = pass.iter().map(|s| s.ended - s.started).collect();

        // requestToken, by phase.
        let tokens: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.kind == Kind::RequestToken)
            .collect();
        let before: Vec<&Sample> = tokens
            .iter()
            .copied()
            .filter(|s| s.ended < killing)
            .collect();
        let down: Vec<&Sample> = tokens
            .iter()
            .copied()
            .filter(|s| s.started >= killed && s.ended <= reviving)
            .collect();
        let after: Vec<&Sample> = tokens
            .iter()
            .copied()
            .filter(|s| s.started >= restarted)
            .collect();
        let down_latencies: Vec<Duration> = down.iter().map(|s| s.ended - s.started).collect();
        let hung: Vec<&Sample> = tokens
            .iter()
            .copied()
            .filter(|s| s.status.is_none())
            .collect();
        let first_ok_after = after
            .iter()
            .filter(|s| s.status == Some(StatusCode::OK))
            .map(|s| s.ended)
            .min();
        let recovery = first_ok_after.map(|t| t - restarted);
        let late_failures: Vec<&Sample> = after
            .iter()
            .copied()
            .filter(|s| s.started >= restarted + RECOVERY && s.status != Some(StatusCode::OK))
            .collect();
        let failures_after_restart = after
            .iter()
            .filter(|s| s.status != Some(StatusCode::OK))
            .count();

        figures!("[drill 1] redis down for {:.0} ms", ms(down_for));
        let lat = |set: &[&Sample]| -> Vec<Duration> {
            set.iter().map(|s| s.ended - s.started).collect()
        };
        let pass_before: Vec<&Sample> =
            pass.iter().copied().filter(|s| s.ended < killing).collect();
        figures!(
            "[drill 1] before the kill: pass-through {} p50 {:.1} ms p99 {:.1} ms; requestToken p50 {:.1} ms p99 {:.1} ms",
            pass_before.len(),
            ms(percentile(&lat(&pass_before), 50.0)),
            ms(percentile(&lat(&pass_before), 99.0)),
            ms(percentile(&lat(&before), 50.0)),
            ms(percentile(&lat(&before), 99.0)),
        );
        figures!(
            "[drill 1] pass-through: {} requests ({} while redis was down), errors {}, p99 {:.1} ms, max {:.1} ms",
            pass.len(),
            pass_during,
            pass_errors.len(),
            ms(percentile(&pass_latencies, 99.0)),
            ms(percentile(&pass_latencies, 100.0)),
        );
        figures!(
            "[drill 1] requestToken: {} before (ok {}), {} while down (503 M_UNKNOWN {}; p50 {:.1} ms, max {:.1} ms), {} after restart (failed {}), unanswered {}",
            before.len(),
            before
                .iter()
                .filter(|s| s.status == Some(StatusCode::OK))
                .count(),
            down.len(),
            down.iter().filter(|s| is_store_unavailable(s)).count(),
            ms(percentile(&down_latencies, 50.0)),
            ms(percentile(&down_latencies, 100.0)),
            after.len(),
            failures_after_restart,
            hung.len(),
        );
        figures!(
            "[drill 1] requestToken recovery after the restart: {}",
            recovery.map_or("never".to_owned(), |r| format!("{:.0} ms", ms(r)))
        );

        assert!(
            pass_errors.is_empty(),
            "pass-through requests failed while redis restarted: {:?}",
            first_few(&pass_errors)
        );
        assert!(
            pass_during > 0,
            "no pass-through request ran while redis was down"
        );
        assert!(
            hung.is_empty(),
            "requestToken got no answer within {BOUND:?}: {:?}",
            first_few(&hung)
        );
        assert!(
            before.iter().all(|s| s.status == Some(StatusCode::OK)),
            "requestToken failed before redis was killed: {:?}",
            first_few(
                &before
                    .iter()
                    .copied()
                    .filter(|s| s.status != Some(StatusCode::OK))
                    .collect::<Vec<_>>()
            )
        );
        assert!(!down.is_empty(), "no requestToken ran while redis was down");
        let wrong: Vec<&Sample> = down
            .iter()
            .copied()
            .filter(|s| !is_store_unavailable(s))
            .collect();
        assert!(
            wrong.is_empty(),
            "while redis was down requestToken must answer 503 M_UNKNOWN: {:?}",
            first_few(&wrong)
        );
        let odd: Vec<&Sample> = tokens
            .iter()
            .copied()
            .filter(|s| s.status != Some(StatusCode::OK) && !is_store_unavailable(s))
            .collect();
        assert!(
            odd.is_empty(),
            "requestToken answered something other than 200 or 503 M_UNKNOWN: {:?}",
            first_few(&odd)
        );
        let recovery = recovery.expect("requestToken never worked again after the restart");
        assert!(
            recovery <= RECOVERY,
            "requestToken took {recovery:?} to work again after the restart"
        );
        assert!(
            late_failures.is_empty(),
            "requestToken still failed {RECOVERY:?} after the restart: {:?}",
            first_few(&late_failures)
        );
    });
}

fn is_store_unavailable(s: &Sample) -> bool {
    s.status == Some(StatusCode::SERVICE_UNAVAILABLE) && s.errcode.as_deref() == Some("M_UNKNOWN")
}
