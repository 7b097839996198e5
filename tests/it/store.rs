//! The session store: one behaviour suite run against both backends (`store::memory::*`,
//! `store::redis::*`, each Redis test with a `redis-server` of its own), then what only the
//! Redis backend has to show: its key layout, TTLs, and surviving Redis being down.

use std::io::Write;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use threepid_sidecar::session::memory::MemoryStore;
use threepid_sidecar::session::redis::RedisStore;
use threepid_sidecar::session::{
    Medium, Purpose, SendDecision, SendRequest, SessionStore, StoreError, StoreSettings,
    SubmitOutcome,
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

/// Generates `store::memory::<name>` and `store::redis::<name>` for each suite function.
macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(std::sync::Arc::new(
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
                    super::$name(super::redis_store(&server)).await;
                }
            )*
        }
    };
}

suite!(
    a_first_send_creates_a_session,
    a_repeated_or_lower_send_attempt_sends_nothing,
    a_higher_send_attempt_keeps_the_sid_and_older_tokens,
    next_link_changes_only_when_a_new_send_gives_one,
    another_secret_or_address_gets_another_session,
    undoing_a_created_send_deletes_the_session,
    undoing_a_continued_send_restores_the_attempt,
    undoing_a_send_overtaken_by_a_later_one_keeps_the_later,
    undoing_an_already_sent_decision_changes_nothing,
    an_unknown_sid_or_wrong_secret_is_no_session,
    the_right_token_validates_once_and_for_all,
    wrong_tokens_count_down_then_the_session_is_refused,
    a_right_token_gives_its_reserved_attempt_back,
    an_expired_token_is_refused,
    parallel_wrong_guesses_never_exceed_the_limit,
    ping_answers,
);

async fn a_first_send_creates_a_session(store: Arc<dyn SessionStore>) {
    let mut req = request("a@example.org", 1, "t1");
    req.next_link = Some("https://example.org/next".into());
    let decision = send(&*store, req).await;
    let SendDecision::Send {
        sid,
        created: true,
        previous_attempt: None,
    } = &decision
    else {
        panic!("expected a created session, got {decision:?}");
    };
    assert!(sid.len() >= 24 && sid.bytes().all(|b| b.is_ascii_alphanumeric()));
    let session = store.get(sid, NOW).await.unwrap().expect("live session");
    assert_eq!(session.sid, *sid);
    assert_eq!(session.medium, Medium::Email);
    assert_eq!(session.address, "a@example.org");
    assert_eq!(session.client_secret, secret());
    assert_eq!(session.purpose, Purpose::Registration);
    assert_eq!(
        session.next_link.as_deref(),
        Some("https://example.org/next")
    );
    assert_eq!(session.send_attempt, 1);
    assert_eq!(session.failed_submits, 0);
    assert_eq!(session.validated_at, None);
}

async fn a_repeated_or_lower_send_attempt_sends_nothing(store: Arc<dyn SessionStore>) {
    let sid = sid_of(&send(&*store, request("a@example.org", 5, "t1")).await);
    for attempt in [5, 4, 0] {
        let decision = send(&*store, request("a@example.org", attempt, "other")).await;
        assert_eq!(decision, SendDecision::AlreadySent { sid: sid.clone() });
    }
    assert_eq!(
        submit(&*store, &sid, "other").await,
        SubmitOutcome::WrongToken { remaining: 2 }
    );
    let session = store.get(&sid, NOW).await.unwrap().expect("live");
    assert_eq!(session.send_attempt, 5);
}

async fn a_higher_send_attempt_keeps_the_sid_and_older_tokens(store: Arc<dyn SessionStore>) {
    let sid = sid_of(&send(&*store, request("a@example.org", 1, "t1")).await);
    let decision = send(&*store, request("a@example.org", 2, "t2")).await;
    let expected = SendDecision::Send {
        sid: sid.clone(),
        created: false,
        previous_attempt: Some(1),
    };
    assert_eq!(decision, expected);
    // u64 beyond what a double holds exactly still compares right.
    let decision = send(&*store, request("a@example.org", u64::MAX - 1, "t3")).await;
    assert!(matches!(
        decision,
        SendDecision::Send {
            previous_attempt: Some(2),
            ..
        }
    ));
    let decision = send(&*store, request("a@example.org", u64::MAX - 2, "t4")).await;
    assert_eq!(decision, SendDecision::AlreadySent { sid: sid.clone() });
    assert!(matches!(
        submit(&*store, &sid, "t1").await,
        SubmitOutcome::Validated(_)
    ));
    let session = store.get(&sid, NOW).await.unwrap().expect("live");
    assert_eq!(session.send_attempt, u64::MAX - 1);
}

async fn next_link_changes_only_when_a_new_send_gives_one(store: Arc<dyn SessionStore>) {
    let mut req = request("a@example.org", 1, "t1");
    req.next_link = Some("https://example.org/one".into());
    let sid = sid_of(&send(&*store, req).await);
    send(&*store, request("a@example.org", 2, "t2")).await;
    let link = |s: Option<threepid_sidecar::session::Session>| s.expect("live").next_link;
    let got = link(store.get(&sid, NOW).await.unwrap());
    assert_eq!(got.as_deref(), Some("https://example.org/one"));
    let mut req = request("a@example.org", 3, "t3");
    req.next_link = Some("https://example.org/two".into());
    send(&*store, req).await;
    let got = link(store.get(&sid, NOW).await.unwrap());
    assert_eq!(got.as_deref(), Some("https://example.org/two"));
}

async fn another_secret_or_address_gets_another_session(store: Arc<dyn SessionStore>) {
    let first = sid_of(&send(&*store, request("a@example.org", 1, "t")).await);
    let mut other_secret = request("a@example.org", 1, "t");
    other_secret.client_secret = SecretHash::of("another secret");
    let mut other_medium = request("a@example.org", 1, "t");
    other_medium.medium = Medium::Msisdn;
    for req in [request("b@example.org", 1, "t"), other_secret, other_medium] {
        let decision = send(&*store, req).await;
        assert!(
            matches!(decision, SendDecision::Send { created: true, .. }),
            "{decision:?}"
        );
        assert_ne!(sid_of(&decision), first);
    }
}

async fn undoing_a_created_send_deletes_the_session(store: Arc<dyn SessionStore>) {
    let decision = send(&*store, request("a@example.org", 1, "t1")).await;
    store
        .undo_send(&decision, &TokenHash::of("t1"))
        .await
        .unwrap();
    assert_eq!(store.get(&sid_of(&decision), NOW).await.unwrap(), None);
    // The same request starts afresh rather than being "already sent".
    let again = send(&*store, request("a@example.org", 1, "t1")).await;
    assert!(
        matches!(again, SendDecision::Send { created: true, .. }),
        "{again:?}"
    );
}

async fn undoing_a_continued_send_restores_the_attempt(store: Arc<dyn SessionStore>) {
    let sid = sid_of(&send(&*store, request("a@example.org", 1, "t1")).await);
    let decision = send(&*store, request("a@example.org", 2, "t2")).await;
    store
        .undo_send(&decision, &TokenHash::of("t2"))
        .await
        .unwrap();
    let session = store.get(&sid, NOW).await.unwrap().expect("still live");
    assert_eq!(session.send_attempt, 1);
    assert_eq!(
        submit(&*store, &sid, "t2").await,
        SubmitOutcome::WrongToken { remaining: 2 }
    );
    // The client's retry with the same attempt is sent this time.
    let retry = send(&*store, request("a@example.org", 2, "t2b")).await;
    assert!(
        matches!(retry, SendDecision::Send { created: false, .. }),
        "{retry:?}"
    );
    assert!(matches!(
        submit(&*store, &sid, "t1").await,
        SubmitOutcome::Validated(_)
    ));
}

async fn undoing_a_send_overtaken_by_a_later_one_keeps_the_later(store: Arc<dyn SessionStore>) {
    let first = send(&*store, request("a@example.org", 1, "t1")).await;
    let second = send(&*store, request("a@example.org", 2, "t2")).await;
    let third = send(&*store, request("a@example.org", 3, "t3")).await;
    store
        .undo_send(&second, &TokenHash::of("t2"))
        .await
        .unwrap();
    store.undo_send(&first, &TokenHash::of("t1")).await.unwrap();
    let sid = sid_of(&third);
    let session = store
        .get(&sid, NOW)
        .await
        .unwrap()
        .expect("kept for the third send");
    assert_eq!(session.send_attempt, 3);
    assert!(matches!(
        submit(&*store, &sid, "t1").await,
        SubmitOutcome::WrongToken { .. }
    ));
    assert!(matches!(
        submit(&*store, &sid, "t3").await,
        SubmitOutcome::Validated(_)
    ));
}

async fn undoing_an_already_sent_decision_changes_nothing(store: Arc<dyn SessionStore>) {
    let sid = sid_of(&send(&*store, request("a@example.org", 1, "t1")).await);
    let decision = send(&*store, request("a@example.org", 1, "t1")).await;
    store
        .undo_send(&decision, &TokenHash::of("t1"))
        .await
        .unwrap();
    assert!(matches!(
        submit(&*store, &sid, "t1").await,
        SubmitOutcome::Validated(_)
    ));
}

async fn an_unknown_sid_or_wrong_secret_is_no_session(store: Arc<dyn SessionStore>) {
    let sid = sid_of(&send(&*store, request("a@example.org", 1, "t1")).await);
    assert_eq!(store.get("nosuchsid", NOW).await.unwrap(), None);
    assert_eq!(
        submit(&*store, "nosuchsid", "t1").await,
        SubmitOutcome::NoSession
    );
    let wrong = SecretHash::of("wrong");
    let outcome = store.submit(&sid, &wrong, "t1", NOW).await.unwrap();
    assert_eq!(outcome, SubmitOutcome::NoSession);
    let session = store.get(&sid, NOW).await.unwrap().expect("live");
    assert_eq!(
        session.failed_submits, 0,
        "a wrong secret spends no attempt"
    );
    assert_eq!(session.validated_at, None);
}

async fn the_right_token_validates_once_and_for_all(store: Arc<dyn SessionStore>) {
    let sid = sid_of(&send(&*store, request("a@example.org", 1, "t1")).await);
    let SubmitOutcome::Validated(session) = submit(&*store, &sid, "t1").await else {
        panic!("the right token must validate");
    };
    assert_eq!(session.validated_at, Some(NOW + 1));
    assert_eq!(session.failed_submits, 0);
    // Later submits, even wrong ones, see the validation and are not counted.
    let later = store
        .submit(&sid, &secret(), "wrong", NOW + 50)
        .await
        .unwrap();
    assert_eq!(later, SubmitOutcome::Validated(session.clone()));
    assert_eq!(store.get(&sid, NOW).await.unwrap(), Some(session));
}

async fn wrong_tokens_count_down_then_the_session_is_refused(store: Arc<dyn SessionStore>) {
    let sid = sid_of(&send(&*store, request("a@example.org", 1, "t1")).await);
    for remaining in (0..MAX_ATTEMPTS).rev() {
        assert_eq!(
            submit(&*store, &sid, "wrong").await,
            SubmitOutcome::WrongToken { remaining }
        );
    }
    assert_eq!(
        submit(&*store, &sid, "wrong").await,
        SubmitOutcome::TooManyAttempts
    );
    assert_eq!(
        submit(&*store, &sid, "t1").await,
        SubmitOutcome::TooManyAttempts
    );
    let session = store.get(&sid, NOW).await.unwrap().expect("live");
    assert_eq!(session.failed_submits, MAX_ATTEMPTS);
    assert_eq!(session.validated_at, None);
}

async fn a_right_token_gives_its_reserved_attempt_back(store: Arc<dyn SessionStore>) {
    let sid = sid_of(&send(&*store, request("a@example.org", 1, "t1")).await);
    submit(&*store, &sid, "wrong").await;
    submit(&*store, &sid, "wrong").await;
    let SubmitOutcome::Validated(session) = submit(&*store, &sid, "t1").await else {
        panic!("the last allowed attempt with the right token must validate");
    };
    assert_eq!(session.failed_submits, 2);
}

async fn an_expired_token_is_refused(store: Arc<dyn SessionStore>) {
    let mut req = request("a@example.org", 1, "short");
    req.token_expires_ms = NOW + 10;
    let sid = sid_of(&send(&*store, req).await);
    send(&*store, request("a@example.org", 2, "long")).await;
    let late = store
        .submit(&sid, &secret(), "short", NOW + 10)
        .await
        .unwrap();
    assert_eq!(late, SubmitOutcome::WrongToken { remaining: 2 });
    let outcome = store
        .submit(&sid, &secret(), "long", NOW + 10)
        .await
        .unwrap();
    assert!(matches!(outcome, SubmitOutcome::Validated(_)));
}

async fn parallel_wrong_guesses_never_exceed_the_limit(store: Arc<dyn SessionStore>) {
    let sid = sid_of(&send(&*store, request("a@example.org", 1, "t1")).await);
    let guesses: Vec<_> = (0..32)
        .map(|i| {
            let (store, sid) = (store.clone(), sid.clone());
            tokio::spawn(async move {
                let guess = format!("guess{i}");
                store
                    .submit(&sid, &SecretHash::of("secret"), &guess, NOW)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut wrong = 0;
    for guess in guesses {
        match guess.await.unwrap() {
            SubmitOutcome::WrongToken { .. } => wrong += 1,
            SubmitOutcome::TooManyAttempts => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(wrong, MAX_ATTEMPTS);
    assert_eq!(
        submit(&*store, &sid, "t1").await,
        SubmitOutcome::TooManyAttempts
    );
}

async fn ping_answers(store: Arc<dyn SessionStore>) {
    store.ping().await.expect("ping");
}

// ---- Redis only ----

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

fn lookup_key(address: &str) -> String {
    let input = format!("email\0{address}\0{}", secret().to_hex());
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
        2,
        "a lookup key and a session key"
    );
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
            let lifetime = HOUR as i64;
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
