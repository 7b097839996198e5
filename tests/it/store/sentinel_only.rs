//! What only Sentinel has to show: a forced failover in the middle of a test, announced
//! (`+switch-master`) and not (the old master's dropped connection or READONLY reply), a
//! sentinel that is down, and a master name the sentinels do not know. The suite itself runs
//! as `store::sentinel::*`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use threepid_sidecar::config::RateLimit;
use threepid_sidecar::config::SentinelSettings;
use threepid_sidecar::ratelimit::{LimitKey, RateDecision};
use threepid_sidecar::redis_link::Topology;
use threepid_sidecar::session::redis::RedisStore;
use threepid_sidecar::session::{SessionStore, SubmitOutcome};
use threepid_sidecar::threepid::Medium;

use super::{
    MASTER_NAME, NOW, PREFIX, RedisSentinel, TOPOLOGY_COMMAND_TIMEOUT, request, send,
    sentinel_store, session_key, settings, settings_with_prefix, shared_sentinel, sid_of, submit,
};
use crate::common::redis::{query, role};

const LIMIT: RateLimit = RateLimit {
    per_second: 0.003,
    burst: 5,
};

/// How many of `n` requests under `key` at [`NOW`] pass.
async fn passes(store: &dyn SessionStore, key: &LimitKey, n: usize) -> usize {
    let mut allowed = 0;
    for _ in 0..n {
        if store.rate_limit(key, LIMIT, NOW).await.expect("rate_limit") == RateDecision::Allowed {
            allowed += 1;
        }
    }
    allowed
}

#[tokio::test(flavor = "multi_thread")]
async fn sentinel_a_forced_failover_keeps_the_store_working() {
    // A set-up of its own: the shared one must never fail over under the suite.
    let setup = Arc::new(
        tokio::task::spawn_blocking(RedisSentinel::start)
            .await
            .unwrap(),
    );
    let store = sentinel_store(&setup, PREFIX);
    let before = sid_of(&send(&*store, request("before@example.org", 1, "t1")).await);
    let limit_key = LimitKey::request_token_address(
        &threepid_sidecar::ratelimit::AddressKey::random(),
        Medium::Email,
        "before@example.org",
    );
    assert_eq!(passes(&*store, &limit_key, 1).await, 1);
    let replicated = setup.clone();
    tokio::task::spawn_blocking(move || replicated.wait_replicated())
        .await
        .unwrap();

    // Another task keeps using the store while the master changes.
    let stop = Arc::new(AtomicBool::new(false));
    let worker = tokio::spawn({
        let (store, stop) = (store.clone(), stop.clone());
        async move {
            let mut calls = Vec::new();
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let req = request(&format!("during{i}@example.org"), 1, "t");
                let ok = store.begin_send(req).await.is_ok() && store.ping().await.is_ok();
                calls.push((Instant::now(), ok));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            calls
        }
    });
    let started = Instant::now();
    let failing_over = setup.clone();
    let (old, new) = tokio::task::spawn_blocking(move || failing_over.failover())
        .await
        .unwrap();
    let switched = Instant::now();

    // Within a few seconds the store works, and writes to the new master.
    let after = loop {
        match store
            .begin_send(request("after@example.org", 1, "t2"))
            .await
        {
            Ok(decision) => break sid_of(&decision),
            Err(e) => {
                assert!(
                    switched.elapsed() < Duration::from_secs(5),
                    "still failing 5 s after the switch: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let recovered = switched.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let calls = worker.await.unwrap();
    let after_key = session_key(PREFIX, &after);
    assert_eq!(
        query::<i64>(new, &["EXISTS", &after_key]),
        Some(1),
        "written to the new master"
    );
    if role(old).as_deref() == Some("master") {
        // Not yet made a replica by the sentinels: it must not have been written to.
        assert_eq!(query::<i64>(old, &["EXISTS", &after_key]), Some(0));
    }

    // What was written before the failover is still there, and still works.
    assert!(store.get(&before, NOW).await.unwrap().is_some());
    assert!(matches!(
        submit(&*store, &before, "t1").await,
        SubmitOutcome::Validated(_)
    ));
    assert_eq!(
        passes(&*store, &limit_key, 5).await,
        4,
        "the limit's state moved with the data"
    );

    // The calls made across the failover failed for a short while at most.
    let failed: Vec<Instant> = calls.iter().filter(|c| !c.1).map(|c| c.0).collect();
    if let (Some(first), Some(last)) = (failed.first(), failed.last()) {
        assert!(
            *last - *first < Duration::from_secs(5),
            "calls failed for {:?}",
            *last - *first
        );
    }
    assert!(
        calls.iter().any(|(at, ok)| *ok && *at > switched),
        "no call worked after the switch"
    );
    eprintln!(
        "failover {old} → {new}: {:?} to switch, store writing again {recovered:?} after; \
         {} of {} calls across it failed",
        switched - started,
        failed.len(),
        calls.len()
    );
}

/// When no announcement reaches the store (its sentinel is cut off), the old master's
/// dropped connection or READONLY reply sends it to the sentinels, past the silent one.
#[tokio::test(flavor = "multi_thread")]
async fn sentinel_a_demoted_master_sends_the_store_to_the_new_one_unannounced() {
    let setup = Arc::new(
        tokio::task::spawn_blocking(RedisSentinel::start)
            .await
            .unwrap(),
    );
    let store = sentinel_store(&setup, PREFIX);
    // The failover watch listens to the first sentinel: let it subscribe (the store asks the
    // sentinels again after that), then silence it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = sid_of(&send(&*store, request("before@example.org", 1, "t1")).await);
    let failing_over = setup.clone();
    let (old, new) = tokio::task::spawn_blocking(move || {
        failing_over.wait_replicated();
        failing_over.freeze_sentinel(0);
        failing_over.failover_via(1)
    })
    .await
    .unwrap();

    // Unannounced, the old master, still a master, keeps taking the writes...
    let stray = sid_of(&send(&*store, request("stray@example.org", 1, "t")).await);
    assert_eq!(
        query::<i64>(old, &["EXISTS", &session_key(PREFIX, &stray)]),
        Some(1)
    );
    // ...until it is made a replica of the new one: then the store asks the sentinels.
    let demoting = setup.clone();
    tokio::task::spawn_blocking(move || demoting.demote(old, new))
        .await
        .unwrap();
    let demoted = Instant::now();
    let after = loop {
        match store
            .begin_send(request("after@example.org", 1, "t2"))
            .await
        {
            Ok(decision) => break sid_of(&decision),
            Err(e) => {
                assert!(
                    demoted.elapsed() < Duration::from_secs(5),
                    "still failing 5 s after the demotion: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let key = session_key(PREFIX, &after);
    assert_eq!(
        query::<i64>(new, &["EXISTS", &key]),
        Some(1),
        "written to the new master"
    );
    assert!(store.get(&before, NOW).await.unwrap().is_some());
    eprintln!(
        "unannounced failover {old} → {new}: writing again {:?} after the demotion",
        demoted.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sentinel_a_sentinel_that_is_down_is_skipped() {
    let setup = shared_sentinel();
    let down = crate::common::ports::free_port();
    let mut sentinels = vec![("127.0.0.1".to_owned(), down)];
    sentinels.extend(setup.sentinels());
    let topology = Topology::Sentinel(SentinelSettings {
        master_name: MASTER_NAME.into(),
        sentinels,
        password: None,
        sentinel_password: None,
    });
    let prefix = "t:topologies:down-sentinel:";
    let store = RedisStore::with_topology(
        &topology,
        settings_with_prefix(prefix),
        TOPOLOGY_COMMAND_TIMEOUT,
    )
    .expect("valid settings");
    let sid = sid_of(&send(&store, request("a@example.org", 1, "t1")).await);
    let key = session_key(prefix, &sid);
    assert_eq!(
        query::<i64>(setup.master_port(), &["EXISTS", &key]),
        Some(1)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sentinel_an_unknown_master_name_is_unavailable() {
    let topology = Topology::Sentinel(SentinelSettings {
        master_name: "nosuchmaster".into(),
        sentinels: shared_sentinel().sentinels(),
        password: None,
        sentinel_password: None,
    });
    let store = RedisStore::with_topology(&topology, settings(), TOPOLOGY_COMMAND_TIMEOUT)
        .expect("valid settings");
    let err = store.ping().await.expect_err("no such master");
    assert!(err.to_string().contains("nosuchmaster"), "{err}");
}
