//! Drill 3: SIGTERM to the real binary while concurrent clients have requests in flight,
//! some held ~500 ms by the upstream. No request in flight fails, new connections are
//! refused once the drain has started, and the process exits 0.
//!
//! Every request uses a connection of its own, so "in flight" is exact: a request whose
//! connection was established well before the signal (or which the upstream had already
//! received) must get its 200. A connection made in the last instant before the signal may
//! still sit in the kernel's accept queue when the listener closes; it is then reset before
//! any answer (as with any server that closes its listening socket), and is counted
//! separately.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::sidecar::TestConfig;
use crate::common::upstream::Upstream;
use crate::support::{ChildSidecar, FreshRequest, Outcome, drill, figures, get_fresh, ms};

const CLIENTS: usize = 16;
const SLOW_MS: u64 = 500;
const LOAD_BEFORE_SIGNAL: Duration = Duration::from_millis(1200);
/// Every request is answered (or fails) within this.
const BOUND: Duration = Duration::from_secs(5);
/// A connection established this long before the signal has surely been accepted.
const ACCEPTED_FOR_SURE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
struct Sample {
    id: u64,
    slow: bool,
    request: FreshRequest,
}

fn id_of(uri: &str) -> Option<u64> {
    uri.split_once("id=")?.1.split('&').next()?.parse().ok()
}

#[test]
fn drill_3_sigterm_under_load() {
    drill("drill 3: SIGTERM under load", || async {
        let upstream = Upstream::start().await;
        let mut config = TestConfig::new(&upstream.url());
        config
            .set("server.shutdown_grace", "5s")
            .set("log.level", "info");
        let mut sidecar = ChildSidecar::start(config).await;
        let client = sidecar.client;

        let stop = Arc::new(AtomicBool::new(false));
        let counter = Arc::new(AtomicU64::new(0));
        let slow_in_flight = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for task in 0..CLIENTS {
            let (stop, counter, slow_in_flight) =
                (stop.clone(), counter.clone(), slow_in_flight.clone());
            tasks.push(tokio::spawn(async move {
                let slow = task % 2 == 0;
                let mut samples = Vec::new();
                // The slow clients start apart, spread over one slow request, so that some
                // are always mid-request.
                if slow {
                    let nth = (task / 2) as u64;
                    let stagger = SLOW_MS / (CLIENTS as u64 / 2) * nth;
                    tokio::time::sleep(Duration::from_millis(stagger)).await;
                }
                while !stop.load(Ordering::Relaxed) {
                    let id = counter.fetch_add(1, Ordering::Relaxed);
                    let path = if slow {
                        format!("/slow?ms={SLOW_MS}&id={id}")
                    } else {
                        format!("/_matrix/client/r0/fast?id={id}")
                    };
                    if slow {
                        slow_in_flight.fetch_add(1, Ordering::SeqCst);
                    }
                    let request = get_fresh(client, &path, BOUND).await;
                    if slow {
                        slow_in_flight.fetch_sub(1, Ordering::SeqCst);
                    }
                    let refused = request.outcome == Outcome::Refused;
                    samples.push(Sample { id, slow, request });
                    if refused {
                        // The listener is gone: try again a little later, not in a spin.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                samples
            }));
        }

        tokio::time::sleep(LOAD_BEFORE_SIGNAL).await;
        // Signal while at least half the slow clients (a quarter of all) are waiting on the
        // upstream.
        let waiting = Instant::now();
        while slow_in_flight.load(Ordering::SeqCst) < CLIENTS / 4
            && waiting.elapsed() < Duration::from_secs(2)
        {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // What the upstream has received by now is in flight or done.
        let received: HashSet<u64> = upstream
            .seen()
            .iter()
            .filter_map(|s| id_of(&s.uri))
            .collect();
        let signalled = Instant::now();
        sidecar.sigterm();

        // The first refused connection after the signal.
        let mut first_refusal = None;
        while signalled.elapsed() < Duration::from_secs(2) {
            let probe = get_fresh(client, "/_matrix/client/r0/probe", BOUND).await;
            if probe.outcome == Outcome::Refused {
                first_refusal = Some(probe.started);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let exit = sidecar.wait_exit(Duration::from_secs(8)).await;
        let exited = Instant::now();
        // A little more load against the closed port, then stop.
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        for task in tasks {
            samples.extend(task.await.expect("a load task"));
        }

        let in_flight: Vec<&Sample> = samples
            .iter()
            .filter(|s| received.contains(&s.id) && s.request.ended > signalled)
            .collect();
        let established_before: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                s.request
                    .connected
                    .is_some_and(|c| c + ACCEPTED_FOR_SURE <= signalled)
            })
            .collect();
        let in_flight_failed: Vec<&Sample> = in_flight
            .iter()
            .chain(established_before.iter())
            .filter(|s| !s.request.outcome.is_ok())
            .copied()
            .collect();
        let last_instant: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                s.request.started + ACCEPTED_FOR_SURE > signalled && s.request.started <= signalled
            })
            .collect();
        let first_refusal = first_refusal.unwrap_or(exited);
        let after_refusal: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.request.started >= first_refusal)
            .collect();
        let accepted_after_refusal: Vec<&Sample> = after_refusal
            .iter()
            .filter(|s| s.request.connected.is_some())
            .copied()
            .collect();
        let timed_out = samples
            .iter()
            .filter(|s| s.request.outcome == Outcome::TimedOut)
            .count();
        let completed_after_signal = samples
            .iter()
            .filter(|s| s.request.ended > signalled && s.request.outcome.is_ok())
            .count();
        let slowest_in_flight = in_flight
            .iter()
            .map(|s| s.request.ended - signalled)
            .max()
            .unwrap_or_default();

        figures!(
            "[drill 3] {} requests; at SIGTERM {} in flight ({} held by the upstream), all 200: {}; {} completed after the signal, the last {:.0} ms after it",
            samples.len(),
            in_flight.len(),
            in_flight.iter().filter(|s| s.slow).count(),
            in_flight.iter().all(|s| s.request.outcome.is_ok()),
            completed_after_signal,
            ms(slowest_in_flight),
        );
        figures!(
            "[drill 3] connections made in the last {:.0} ms before the signal: {} ({} answered 200, {} refused or reset)",
            ms(ACCEPTED_FOR_SURE),
            last_instant.len(),
            last_instant
                .iter()
                .filter(|s| s.request.outcome.is_ok())
                .count(),
            last_instant
                .iter()
                .filter(|s| !s.request.outcome.is_ok())
                .count(),
        );
        figures!(
            "[drill 3] first refused connection {:.1} ms after the signal; connections tried after it: {} (accepted: {}); exit {:?} after {:.0} ms; timed out: {}",
            ms(first_refusal.saturating_duration_since(signalled)),
            after_refusal.len(),
            accepted_after_refusal.len(),
            exit.and_then(|e| e.code()),
            ms(exited - signalled),
            timed_out,
        );

        assert!(
            !in_flight.is_empty() && in_flight.iter().any(|s| s.slow),
            "no slow request was in flight at the signal"
        );
        assert!(
            in_flight_failed.is_empty(),
            "requests in flight at SIGTERM failed: {:?}\nlog:\n{}",
            &in_flight_failed[..in_flight_failed.len().min(5)],
            sidecar.log()
        );
        assert!(
            timed_out == 0,
            "{timed_out} requests got no answer within {BOUND:?}"
        );
        assert!(
            first_refusal < exited,
            "no new connection was refused during the drain"
        );
        assert!(
            accepted_after_refusal.is_empty(),
            "connections were accepted after the listener closed: {:?}",
            &accepted_after_refusal[..accepted_after_refusal.len().min(5)]
        );
        let exit = exit.unwrap_or_else(|| panic!("no exit after SIGTERM; log:\n{}", sidecar.log()));
        assert_eq!(exit.code(), Some(0), "log:\n{}", sidecar.log());
    });
}
