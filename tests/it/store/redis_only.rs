//! What only the Redis backend has to show: its key layout and TTLs, and that it survives
//! Redis being down, restarting, or being something else.

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use threepid_sidecar::session::redis::RedisStore;
use threepid_sidecar::session::{SendDecision, SessionStore, StoreError, SubmitOutcome};
use threepid_sidecar::token::TokenHash;

use super::{
    COMMAND_TIMEOUT, HOUR, NOW, PREFIX, RedisServer, query, raw, redis_store, request, secret,
    send, sid_of, submit,
};

fn lookup_key(address: &str) -> String {
    let input = format!("email\0{address}\0{}\0registration\0", secret().to_hex());
    let hex: String = Sha256::digest(input)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{PREFIX}lookup:{{{hex}}}")
}

#[tokio::test]
async fn redis_keys_carry_the_prefix_and_a_sid_hash_tag() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    let sid = sid_of(&send(&*store, request("a@example.org", 1, "t1")).await);
    let mut con = raw(&server);
    assert_eq!(
        query::<i64>(&mut con, &["DBSIZE"]),
        4,
        "a lookup key, a session key, the address index's entry and the address-hash key"
    );
    let index: Vec<String> = query(&mut con, &["KEYS", &format!("{PREFIX}sessions-of:*")]);
    assert_eq!(index.len(), 1);
    assert!(
        index[0].starts_with(&format!("{PREFIX}sessions-of:{{email:")) && index[0].ends_with('}'),
        "{index:?}"
    );
    assert!(!index[0].contains("example.org"), "the address is hashed");
    let members: Vec<String> = query(&mut con, &["SMEMBERS", &index[0]]);
    assert_eq!(members, std::slice::from_ref(&sid));
    let ttl: i64 = query(&mut con, &["PTTL", &index[0]]);
    assert!(ttl > HOUR as i64 && ttl <= 2 * HOUR as i64, "{ttl}");
    let lookup: Option<String> = query(&mut con, &["GET", &lookup_key("a@example.org")]);
    assert_eq!(lookup.as_deref(), Some(sid.as_str()));
    let session_key = format!("{PREFIX}session:{{{sid}}}");
    let token_field = format!("t:{}", TokenHash::of("t1").to_hex());
    let expiry: Option<u64> = query(&mut con, &["HGET", &session_key, &token_field]);
    assert_eq!(expiry, Some(NOW + HOUR));
    let secret_field: Option<String> = query(&mut con, &["HGET", &session_key, "secret"]);
    assert_eq!(
        secret_field,
        Some(secret().to_hex()),
        "only the hash is stored"
    );
}

#[tokio::test]
async fn redis_every_key_expires_within_the_session_lifetime() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    let sid = sid_of(&send(&*store, request("a@example.org", 1, "t1")).await);
    let mut con = raw(&server);
    let session_key = format!("{PREFIX}session:{{{sid}}}");
    let keys = [session_key.clone(), lookup_key("a@example.org")];
    let assert_fresh = |con: &mut ::redis::Connection, when: &str| {
        for key in &keys {
            let ttl: i64 = query(con, &["PTTL", key]);
            // A validated session is kept for two lifetimes (usable for one).
            let lifetime = if when == "validated" && key == &session_key {
                2 * HOUR as i64
            } else {
                HOUR as i64
            };
            assert!(
                ttl > lifetime - 60_000 && ttl <= lifetime,
                "{when}: {key} has PTTL {ttl}"
            );
        }
    };
    assert_fresh(&mut con, "created");
    for (action, attempt) in [("continued", 2), ("validated", 0)] {
        for key in &keys {
            let _: i64 = query(&mut con, &["PEXPIRE", key, "5000"]);
        }
        if attempt > 0 {
            send(&*store, request("a@example.org", attempt, "t2")).await;
        } else {
            send(&*store, request("a@example.org", 1, "t1")).await; // refreshes the lookup
            assert!(matches!(
                submit(&*store, &sid, "t2").await,
                SubmitOutcome::Validated(_)
            ));
        }
        assert_fresh(&mut con, action);
    }
}

#[tokio::test]
async fn redis_continuing_a_validated_session_does_not_extend_it() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    let sid = sid_of(&send(&*store, request("a@example.org", 1, "t1")).await);
    assert!(matches!(
        submit(&*store, &sid, "t1").await,
        SubmitOutcome::Validated(_)
    ));
    let mut con = raw(&server);
    let session_key = format!("{PREFIX}session:{{{sid}}}");
    // As if validated long ago: five seconds of its lifetime left.
    let _: i64 = query(&mut con, &["PEXPIRE", &session_key, "5000"]);
    let decision = send(&*store, request("a@example.org", 2, "t2")).await;
    assert_eq!(sid_of(&decision), sid, "the same session, continued");
    let ttl: i64 = query(&mut con, &["PTTL", &session_key]);
    assert!(ttl > 0 && ttl <= 5000, "PTTL {ttl}: continuing extended it");
}

#[tokio::test]
async fn redis_a_lost_session_hash_is_recreated_under_its_sid() {
    let server = RedisServer::start();
    let store = redis_store(&server);
    let sid = sid_of(&send(&*store, request("a@example.org", 1, "t1")).await);
    let _: i64 = query(
        &mut raw(&server),
        &["DEL", &format!("{PREFIX}session:{{{sid}}}")],
    );
    let decision = send(&*store, request("a@example.org", 1, "t1")).await;
    let expected = SendDecision::Send {
        sid,
        created: true,
        previous_attempt: None,
    };
    assert_eq!(decision, expected);
}

/// Calls while Redis is down fail with Unavailable or Timeout, and fast.
async fn assert_fails_fast(store: &RedisStore) {
    let started = Instant::now();
    let ping = store.ping().await;
    let send = store.begin_send(request("a@example.org", 1, "t1")).await;
    let elapsed = started.elapsed();
    for result in [ping.map(|_| ()), send.map(|_| ())] {
        let err = result.expect_err("Redis is down");
        assert!(
            matches!(err, StoreError::Unavailable(_) | StoreError::Timeout),
            "unexpected error {err:?}"
        );
    }
    let bound = 2 * COMMAND_TIMEOUT + Duration::from_millis(500);
    assert!(elapsed < bound, "two calls took {elapsed:?}");
}

/// Waits (a bounded while) until the store answers again.
async fn assert_recovers(store: &RedisStore) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.ping().await.is_err() {
        assert!(Instant::now() < deadline, "the store never reconnected");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let decision = store
        .begin_send(request("a@example.org", 1, "t1"))
        .await
        .expect("works");
    assert!(matches!(decision, SendDecision::Send { created: true, .. }));
}

#[tokio::test]
async fn redis_store_starts_while_redis_is_down_and_connects_later() {
    let mut server = RedisServer::start();
    server.stop();
    let store = redis_store(&server);
    assert_fails_fast(&store).await;
    server.restart();
    assert_recovers(&store).await;
}

#[tokio::test]
async fn redis_calls_work_again_after_a_restart() {
    let mut server = RedisServer::start();
    let store = redis_store(&server);
    store.ping().await.expect("up");
    server.stop();
    assert_fails_fast(&store).await;
    server.restart();
    assert_recovers(&store).await;
}

#[tokio::test]
async fn redis_the_first_call_after_a_restart_succeeds() {
    let mut server = RedisServer::start();
    let store = redis_store(&server);
    store.ping().await.expect("up");
    server.restart();
    // The idle connection died with the old server; the store must not pass that on.
    let decision = store.begin_send(request("a@example.org", 1, "t1")).await;
    assert!(
        matches!(decision, Ok(SendDecision::Send { created: true, .. })),
        "{decision:?}"
    );
}

/// Answers every connection with something that is not Redis, until dropped.
struct NotRedis {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl NotRedis {
    fn listen(port: u16) -> NotRedis {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("port just freed");
        listener.set_nonblocking(true).expect("non-blocking");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        NotRedis {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for NotRedis {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[tokio::test]
async fn redis_a_failed_handshake_does_not_stick() {
    let mut server = RedisServer::start();
    server.stop();
    let port = server
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let impostor = NotRedis::listen(port);
    let store = redis_store(&server);
    let err = store.ping().await.expect_err("not Redis");
    assert!(
        matches!(err, StoreError::Corrupt(_) | StoreError::Unavailable(_)),
        "{err:?}"
    );
    drop(impostor);
    server.restart();
    assert_recovers(&store).await;
}
