//! Rate limits (DESIGN §5) kept in the store: the same GCRA on both backends, driven by an
//! explicit clock (no sleeps), then what Redis adds: replicas sharing one limit, and keys that
//! expire by themselves and never hold an address.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use threepid_sidecar::config::RateLimit;
use threepid_sidecar::ratelimit::{AddressHash, AddressKey, LimitKey, RateDecision};
use threepid_sidecar::session::SessionStore;
use threepid_sidecar::threepid::Medium;

use super::{NOW, PREFIX, RedisServer, query, raw, redis_store};

/// Synapse's `rc_3pid_validation` default, the sidecar's requestToken default.
const LIMIT: RateLimit = RateLimit {
    per_second: 0.003,
    burst: 5,
};
/// 1000 / 0.003, rounded.
const INTERVAL: u64 = 333_333;

fn ip_key(last_octet: u8) -> LimitKey {
    LimitKey::RequestTokenIp {
        medium: Medium::Email,
        ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, last_octet)),
    }
}

async fn check(store: &dyn SessionStore, key: &LimitKey, now_ms: u64) -> RateDecision {
    store
        .rate_limit(key, LIMIT, now_ms)
        .await
        .expect("rate_limit")
}

/// How many of `n` requests at `now_ms` pass.
async fn passes(store: &dyn SessionStore, key: &LimitKey, now_ms: u64, n: usize) -> usize {
    let mut allowed = 0;
    for _ in 0..n {
        if check(store, key, now_ms).await == RateDecision::Allowed {
            allowed += 1;
        }
    }
    allowed
}

pub(super) async fn a_burst_passes_then_the_next_waits_one_interval(store: Arc<dyn SessionStore>) {
    let key = ip_key(1);
    assert_eq!(passes(&*store, &key, NOW, 5).await, 5);
    let RateDecision::Limited { retry_after_ms } = check(&*store, &key, NOW).await else {
        panic!("the sixth request of a burst of 5 must be limited");
    };
    assert!(
        (INTERVAL - 1000..=INTERVAL).contains(&retry_after_ms),
        "retry_after_ms {retry_after_ms}"
    );
    let later = NOW + retry_after_ms;
    assert_eq!(
        check(&*store, &key, later - 1).await,
        RateDecision::Limited { retry_after_ms: 1 }
    );
    assert_eq!(
        passes(&*store, &key, later, 3).await,
        1,
        "one interval refills one"
    );
}

pub(super) async fn limited_requests_are_not_counted(store: Arc<dyn SessionStore>) {
    let key = ip_key(1);
    assert_eq!(passes(&*store, &key, NOW, 5).await, 5);
    assert_eq!(passes(&*store, &key, NOW + 1000, 50).await, 0);
    assert_eq!(passes(&*store, &key, NOW + INTERVAL, 1).await, 1);
}

pub(super) async fn a_full_burst_comes_back_after_idling(store: Arc<dyn SessionStore>) {
    let key = ip_key(1);
    assert_eq!(passes(&*store, &key, NOW, 5).await, 5);
    assert_eq!(passes(&*store, &key, NOW + 5 * INTERVAL, 10).await, 5);
    assert_eq!(passes(&*store, &key, NOW + 100 * INTERVAL, 10).await, 5);
}

pub(super) async fn different_limit_keys_are_independent(store: Arc<dyn SessionStore>) {
    let exhausted = ip_key(1);
    assert_eq!(passes(&*store, &exhausted, NOW, 6).await, 5);
    let ip = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let others = [
        ip_key(2),
        LimitKey::RequestTokenIp {
            medium: Medium::Msisdn,
            ip,
        },
        LimitKey::SubmitIp { ip },
        LimitKey::request_token_address(&AddressKey::random(), Medium::Email, "a@example.org"),
        LimitKey::request_token_address(&AddressKey::random(), Medium::Email, "b@example.org"),
        LimitKey::request_token_address(&AddressKey::random(), Medium::Msisdn, "a@example.org"),
    ];
    for key in &others {
        assert_eq!(passes(&*store, key, NOW, 6).await, 5, "{key}");
    }
    assert_eq!(passes(&*store, &exhausted, NOW, 1).await, 0);
}

pub(super) async fn parallel_requests_never_exceed_the_burst(store: Arc<dyn SessionStore>) {
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { check(&*store, &ip_key(1), NOW).await })
        })
        .collect();
    let mut allowed = 0;
    for task in tasks {
        if task.await.expect("task") == RateDecision::Allowed {
            allowed += 1;
        }
    }
    assert_eq!(allowed, 5);
}

/// Two stores on one Redis stand for two sidecar replicas behind a load balancer.
#[tokio::test]
async fn redis_two_replicas_share_a_limit() {
    let server = RedisServer::start();
    let replicas = [redis_store(&server), redis_store(&server)];
    // Each replica asks the store for the address-hash key: they get the same one.
    let secret = replicas[0].address_key().await.expect("a key");
    assert_eq!(replicas[1].address_key().await.expect("a key"), secret);
    assert_eq!(replicas[0].address_key().await.expect("a key"), secret);
    let key = LimitKey::request_token_address(&secret, Medium::Email, "a@example.org");
    for i in 0..5 {
        let replica = &*replicas[i % 2];
        assert_eq!(check(replica, &key, NOW).await, RateDecision::Allowed);
    }
    for replica in &replicas {
        assert!(matches!(
            check(&**replica, &key, NOW).await,
            RateDecision::Limited { .. }
        ));
    }
    assert_eq!(passes(&*replicas[1], &key, NOW + INTERVAL, 2).await, 1);
    assert_eq!(passes(&*replicas[0], &key, NOW + INTERVAL, 2).await, 0);
}

#[tokio::test]
async fn redis_a_rate_key_holds_no_address_and_expires_with_its_tat() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    let secret = AddressKey::random();
    let key = LimitKey::request_token_address(&secret, Medium::Email, "a@example.org");
    assert_eq!(passes(&*store, &key, NOW, 2).await, 2);
    let mut con = raw(&server);
    let keys: Vec<String> = query(&mut con, &["KEYS", "*"]);
    let hex = AddressHash::of(&secret, "a@example.org")
        .as_hex()
        .to_owned();
    assert_ne!(
        hex,
        format!("{:x}", Sha256::digest("a@example.org")),
        "keyed"
    );
    let expected = format!("{PREFIX}rl:{{request_token_address:email:{hex}}}");
    assert_eq!(
        keys,
        std::slice::from_ref(&expected),
        "one key, the address hashed"
    );
    let tat: u64 = query(&mut con, &["GET", &expected]);
    assert_eq!(tat, NOW + 2 * INTERVAL);
    let ttl: i64 = query(&mut con, &["PTTL", &expected]);
    let until_tat = (2 * INTERVAL) as i64;
    assert!(
        ttl > until_tat - 60_000 && ttl <= until_tat,
        "PTTL {ttl}, the TAT is {until_tat} ms away"
    );
}
