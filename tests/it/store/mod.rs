//! The session store: one behaviour suite run against every backend and Redis topology
//! (`store::memory::*`; `store::redis::*`, each test with a `redis-server` of its own;
//! `store::sentinel::*` and `store::cluster::*`, on one Sentinel set-up and one Redis Cluster
//! shared by the whole test binary, each test under a key prefix of its own), then what only
//! the Redis backend has to show: its key layout, TTLs, surviving Redis being down, replicas
//! sharing a rate limit, a Sentinel failover, keys spread over a cluster.
//!
//! - [`suite`]: sessions, everywhere;
//! - [`rate_limit`]: rate limits, everywhere with an explicit clock, and shared limits;
//! - [`redis_only`]: the Redis key layout and failure handling;
//! - [`sentinel_only`]: failovers, a sentinel that is down;
//! - [`cluster_only`]: keys over every node, a slot moved under the store;
//! - [`from_config`]: `rediss://`, `[store.sentinel]` and `[store.cluster]` in a running sidecar.

mod cluster_only;
mod from_config;
mod rate_limit;
mod redis_only;
mod sentinel_only;
mod suite;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use threepid_sidecar::config::SentinelSettings;
use threepid_sidecar::redis_link::Topology;
use threepid_sidecar::session::memory::MemoryStore;
use threepid_sidecar::session::redis::RedisStore;
use threepid_sidecar::session::{
    SendDecision, SendRequest, SessionStore, StoreSettings, SubmitOutcome,
};
use threepid_sidecar::threepid::{Medium, Purpose};
use threepid_sidecar::token::{SecretHash, TokenHash};

use crate::common::redis::RedisServer;
use crate::common::redis::cluster::RedisCluster;
use crate::common::redis::sentinel::{MASTER_NAME, RedisSentinel};

const HOUR: u64 = 3_600_000;
const NOW: u64 = 1_700_000_000_000;
const MAX_ATTEMPTS: u32 = 3;
const PREFIX: &str = "test:";
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
/// Sentinel and Cluster stores: their first call finds the master or the slot map, on a
/// machine that may be busy running the other tests.
const TOPOLOGY_COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

fn settings() -> StoreSettings {
    settings_with_prefix(PREFIX)
}

fn settings_with_prefix(prefix: &str) -> StoreSettings {
    StoreSettings {
        key_prefix: prefix.into(),
        session_lifetime: Duration::from_millis(HOUR),
        max_submit_attempts: MAX_ATTEMPTS,
    }
}

fn redis_store(server: &RedisServer) -> Arc<RedisStore> {
    Arc::new(RedisStore::new(&server.url(), settings(), COMMAND_TIMEOUT).expect("valid url"))
}

/// The Sentinel set-up the suite shares (never failed over: [`sentinel_only`] starts its own
/// for that).
fn shared_sentinel() -> &'static RedisSentinel {
    static SENTINEL: OnceLock<RedisSentinel> = OnceLock::new();
    SENTINEL.get_or_init(RedisSentinel::start)
}

/// The Redis Cluster the suite and [`cluster_only`] share.
fn shared_cluster() -> &'static RedisCluster {
    static CLUSTER: OnceLock<RedisCluster> = OnceLock::new();
    CLUSTER.get_or_init(RedisCluster::start)
}

/// `{prefix}session:{<sid>}`.
fn session_key(prefix: &str, sid: &str) -> String {
    format!("{prefix}session:{{{sid}}}")
}

fn sentinel_topology(sentinel: &RedisSentinel) -> Topology {
    Topology::Sentinel(SentinelSettings {
        master_name: MASTER_NAME.into(),
        sentinels: sentinel.sentinels(),
        password: None,
        sentinel_password: None,
    })
}

fn sentinel_store(sentinel: &RedisSentinel, prefix: &str) -> Arc<RedisStore> {
    let store = RedisStore::with_topology(
        &sentinel_topology(sentinel),
        settings_with_prefix(prefix),
        TOPOLOGY_COMMAND_TIMEOUT,
    );
    Arc::new(store.expect("valid sentinel settings"))
}

fn cluster_store(cluster: &RedisCluster, prefix: &str) -> Arc<RedisStore> {
    let topology = Topology::Cluster {
        nodes: cluster.nodes(),
    };
    let store = RedisStore::with_topology(
        &topology,
        settings_with_prefix(prefix),
        TOPOLOGY_COMMAND_TIMEOUT,
    );
    Arc::new(store.expect("valid cluster nodes"))
}

fn request(address: &str, attempt: u64, token: &str) -> SendRequest {
    SendRequest {
        medium: Medium::Email,
        address: address.into(),
        client_secret: SecretHash::of("secret"),
        purpose: Purpose::Registration,
        next_link: None,
        send_attempt: attempt,
        language: "en".into(),
        token: TokenHash::of(token),
        token_expires_ms: NOW + HOUR,
        now_ms: NOW,
    }
}

fn secret() -> SecretHash {
    SecretHash::of("secret")
}

fn sid_of(decision: &SendDecision) -> String {
    match decision {
        SendDecision::Send { sid, .. } | SendDecision::AlreadySent { sid } => sid.clone(),
    }
}

async fn send(store: &dyn SessionStore, req: SendRequest) -> SendDecision {
    store.begin_send(req).await.expect("begin_send")
}

async fn submit(store: &dyn SessionStore, sid: &str, token: &str) -> SubmitOutcome {
    store
        .submit(sid, &secret(), token, NOW + 1)
        .await
        .expect("submit")
}

/// A plain connection to look at what the store wrote.
fn raw(server: &RedisServer) -> ::redis::Connection {
    ::redis::Client::open(server.url())
        .and_then(|c| c.get_connection())
        .expect("raw connection")
}

fn query<T: ::redis::FromRedisValue>(con: &mut ::redis::Connection, args: &[&str]) -> T {
    let mut cmd = ::redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(con).expect("raw command")
}

/// Generates `store::{memory,redis,sentinel,cluster}::<name>` for each `module::name`, a
/// function taking the store under test.
macro_rules! every_backend {
    ($($module:ident :: $name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$module::$name(std::sync::Arc::new(
                        super::MemoryStore::new(super::settings()),
                    ))
                    .await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let server = super::RedisServer::start();
                    super::$module::$name(super::redis_store(&server)).await;
                }
            )*
        }
        mod sentinel {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let prefix = concat!("t:", stringify!($module), ":", stringify!($name), ":");
                    let store = super::sentinel_store(super::shared_sentinel(), prefix);
                    super::$module::$name(store).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    let prefix = concat!("t:", stringify!($module), ":", stringify!($name), ":");
                    let store = super::cluster_store(super::shared_cluster(), prefix);
                    super::$module::$name(store).await;
                }
            )*
        }
    };
}

every_backend!(
    suite::a_first_send_creates_a_session,
    suite::a_repeated_or_lower_send_attempt_sends_nothing,
    suite::a_higher_send_attempt_keeps_the_sid_and_older_tokens,
    suite::next_link_changes_only_when_a_new_send_gives_one,
    suite::another_secret_or_address_gets_another_session,
    suite::undoing_a_created_send_deletes_the_session,
    suite::undoing_a_continued_send_restores_the_attempt,
    suite::undoing_a_send_overtaken_by_a_later_one_keeps_the_later,
    suite::undoing_an_already_sent_decision_changes_nothing,
    suite::an_unknown_sid_or_wrong_secret_is_no_session,
    suite::the_right_token_validates_once_and_for_all,
    suite::wrong_tokens_count_down_then_the_session_is_refused,
    suite::a_right_token_gives_its_reserved_attempt_back,
    suite::an_expired_token_is_refused,
    suite::parallel_wrong_guesses_never_exceed_the_limit,
    suite::ping_answers,
    suite::a_noted_purpose_is_taken_once_by_the_same_request_only,
    suite::a_request_for_another_purpose_starts_its_own_session,
    suite::only_the_newest_sms_code_is_accepted,
    rate_limit::a_burst_passes_then_the_next_waits_one_interval,
    rate_limit::limited_requests_are_not_counted,
    rate_limit::a_full_burst_comes_back_after_idling,
    rate_limit::different_limit_keys_are_independent,
    rate_limit::parallel_requests_never_exceed_the_burst,
);
