//! The session store: one behaviour suite run against both backends (`store::memory::*`,
//! `store::redis::*`, each Redis test with a `redis-server` of its own), then what only the
//! Redis backend has to show: its key layout, TTLs, surviving Redis being down, and replicas
//! sharing a rate limit.
//!
//! - [`suite`]: sessions, on both backends;
//! - [`rate_limit`]: rate limits, on both backends with an explicit clock, and shared limits;
//! - [`redis_only`]: the Redis key layout and failure handling.

mod rate_limit;
mod redis_only;
mod suite;

use std::sync::Arc;
use std::time::Duration;

use threepid_sidecar::session::memory::MemoryStore;
use threepid_sidecar::session::redis::RedisStore;
use threepid_sidecar::session::{
    Medium, Purpose, SendDecision, SendRequest, SessionStore, StoreSettings, SubmitOutcome,
};
use threepid_sidecar::token::{SecretHash, TokenHash};

use crate::common::redis::RedisServer;

const HOUR: u64 = 3_600_000;
const NOW: u64 = 1_700_000_000_000;
const MAX_ATTEMPTS: u32 = 3;
const PREFIX: &str = "test:";
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

fn settings() -> StoreSettings {
    StoreSettings {
        key_prefix: PREFIX.into(),
        session_lifetime: Duration::from_millis(HOUR),
        max_submit_attempts: MAX_ATTEMPTS,
    }
}

fn redis_store(server: &RedisServer) -> Arc<RedisStore> {
    Arc::new(RedisStore::new(&server.url(), settings(), COMMAND_TIMEOUT).expect("valid url"))
}

fn request(address: &str, attempt: u64, token: &str) -> SendRequest {
    SendRequest {
        medium: Medium::Email,
        address: address.into(),
        client_secret: SecretHash::of("secret"),
        purpose: Purpose::Registration,
        next_link: None,
        send_attempt: attempt,
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

/// Generates `store::memory::<name>` and `store::redis::<name>` for each `module::name`, a
/// function taking the store under test.
macro_rules! both_backends {
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
    };
}

both_backends!(
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
    suite::a_noted_purpose_is_found_for_the_same_request_only,
    rate_limit::a_burst_passes_then_the_next_waits_one_interval,
    rate_limit::limited_requests_are_not_counted,
    rate_limit::a_full_burst_comes_back_after_idling,
    rate_limit::different_limit_keys_are_independent,
    rate_limit::parallel_requests_never_exceed_the_burst,
);
