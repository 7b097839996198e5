//! Drill 2: the homeserver goes away for about a second under load (listener and every
//! connection closed) and comes back on the same port. Clients get 502s only while it is
//! down, every request is answered within a bound (nothing hangs), and everything is 200
//! again once it is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::common::sidecar::{Sidecar, TestConfig};
use crate::support::{drill, exchange, figures, ms, percentile};
use crate::upstream::RestartableUpstream;

const CLIENTS: usize = 16;
const BEFORE: Duration = Duration::from_millis(1500);
const DOWN: Duration = Duration::from_secs(1);
const AFTER: Duration = Duration::from_millis(1500);
const BOUND: Duration = Duration::from_secs(3);

#[derive(Debug, Clone)]
struct Sample {
    started: Instant,
    ended: Instant,
    /// None: no answer within [`BOUND`], or the connection to the sidecar failed.
    status: Option<StatusCode>,
    errcode: Option<String>,
    failure: Option<String>,
}

impl Sample {
    /// For failure messages: what happened, and how long it took.
    fn describe(&self) -> String {
        let what = match (self.status, &self.failure) {
            (Some(status), detail) => {
                format!("{} {}", status.as_u16(), detail.as_deref().unwrap_or(""))
            }
            (None, Some(failure)) => failure.clone(),
            (None, None) => "nothing".to_owned(),
        };
        format!("{what} after {:.0} ms", ms(self.ended - self.started))
    }
}

/// The first few, described.
fn first_few(samples: &[&Sample]) -> Vec<String> {
    samples.iter().take(5).map(|s| s.describe()).collect()
}

#[test]
fn drill_2_upstream_restarted_under_load() {
    drill("drill 2: upstream restarted", || async {
        let mut upstream = RestartableUpstream::start().await;
        let mut config = TestConfig::new(&upstream.url());
        config.set("upstream.connect_timeout", "1s");
        let sidecar = Sidecar::start(config).await;
        let base = sidecar.url("");

        let stop = Arc::new(AtomicBool::new(false));
        let counter = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..CLIENTS {
            let (stop, counter, base) = (stop.clone(), counter.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let request =
                        Request::get(format!("{base}/_matrix/client/r0/profile/drill?n={n}"))
                            .body(Full::new(Bytes::new()))
                            .expect("a valid request");
                    let started = Instant::now();
                    let sample = match tokio::time::timeout(BOUND, exchange(&client, request)).await
                    {
                        Ok(Ok((status, body))) => Sample {
                            started,
                            ended: Instant::now(),
                            status: Some(status),
                            errcode: serde_json::from_slice::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|v| v["errcode"].as_str().map(str::to_owned)),
                            failure: (status != StatusCode::OK)
                                .then(|| String::from_utf8_lossy(&body).into_owned()),
                        },
                        Ok(Err(e)) => Sample {
                            started,
                            ended: Instant::now(),
                            status: None,
                            errcode: None,
                            failure: Some(e),
                        },
                        Err(_) => Sample {
                            started,
                            ended: Instant::now(),
                            status: None,
                            errcode: None,
                            failure: Some(format!("no answer within {BOUND:?}")),
                        },
                    };
                    samples.push(sample);
                }
                samples
            }));
        }

        tokio::time::sleep(BEFORE).await;
        // Requests that end before this saw a healthy upstream.
        let stopping = Instant::now();
        upstream.stop().await;
        let stopped = Instant::now();
        tokio::time::sleep(DOWN).await;
        upstream.restart().await;
        let restarted = Instant::now();
        tokio::time::sleep(AFTER).await;
        stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        for task in tasks {
            samples.extend(task.await.expect("a load task"));
        }

        let before: Vec<&Sample> = samples.iter().filter(|s| s.ended < stopping).collect();
        let after: Vec<&Sample> = samples.iter().filter(|s| s.started >= restarted).collect();
        let during: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.ended >= stopping && s.started < restarted)
            .collect();
        let count = |set: &[&Sample], status: StatusCode| {
            set.iter().filter(|s| s.status == Some(status)).count()
        };
        let unanswered: Vec<&Sample> = samples.iter().filter(|s| s.status.is_none()).collect();
        let latencies: Vec<Duration> = samples.iter().map(|s| s.ended - s.started).collect();
        let during_latencies: Vec<Duration> = during.iter().map(|s| s.ended - s.started).collect();
        let first_ok_after = after.iter().filter(|s| ok(s)).map(|s| s.ended).min();

        figures!(
            "[drill 2] upstream down for {:.0} ms; {} requests in all, p99 {:.1} ms, max {:.1} ms",
            ms(restarted - stopped),
            samples.len(),
            ms(percentile(&latencies, 99.0)),
            ms(percentile(&latencies, 100.0)),
        );
        figures!(
            "[drill 2] before: {} (200: {}, 502: {}) | during: {} (200: {}, 502: {}, max {:.1} ms) | after: {} (200: {}, 502: {}) | unanswered: {}",
            before.len(),
            count(&before, StatusCode::OK),
            count(&before, StatusCode::BAD_GATEWAY),
            during.len(),
            count(&during, StatusCode::OK),
            count(&during, StatusCode::BAD_GATEWAY),
            ms(percentile(&during_latencies, 100.0)),
            after.len(),
            count(&after, StatusCode::OK),
            count(&after, StatusCode::BAD_GATEWAY),
            unanswered.len(),
        );
        figures!(
            "[drill 2] first 200 after the restart: {}",
            first_ok_after.map_or("never".to_owned(), |t| format!(
                "{:.1} ms",
                ms(t - restarted)
            ))
        );

        assert!(
            unanswered.is_empty(),
            "requests hung or failed at the client: {:?}",
            first_few(&unanswered)
        );
        assert!(
            before.iter().all(|s| ok(s)),
            "requests failed before the upstream stopped: {:?}",
            first_few(
                &before
                    .iter()
                    .copied()
                    .filter(|s| !ok(s))
                    .collect::<Vec<_>>()
            )
        );
        assert!(
            after.iter().all(|s| ok(s)),
            "requests started after the restart failed: {:?}",
            first_few(&after.iter().copied().filter(|s| !ok(s)).collect::<Vec<_>>())
        );
        assert!(
            count(&during, StatusCode::BAD_GATEWAY) > 0,
            "no request saw the upstream down"
        );
        let wrong: Vec<&Sample> = during
            .iter()
            .copied()
            .filter(|s| {
                !(ok(s)
                    || (s.status == Some(StatusCode::BAD_GATEWAY)
                        && s.errcode.as_deref() == Some("M_UNKNOWN")))
            })
            .collect();
        assert!(
            wrong.is_empty(),
            "while the upstream was down the answer must be 200 or 502 M_UNKNOWN: {:?}",
            first_few(&wrong)
        );
        assert!(!after.is_empty(), "no request ran after the restart");
    });
}

fn ok(s: &Sample) -> bool {
    s.status == Some(StatusCode::OK)
}
