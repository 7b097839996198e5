//! Expiry and sweeping of the memory backend, judged by the caller's clock (what the shared
//! suite in `tests/it/store` cannot see from outside).

use std::time::Duration;

use super::*;
use crate::threepid::Purpose;

const HOUR: u64 = 3_600_000;

fn store() -> MemoryStore {
    MemoryStore::new(StoreSettings {
        key_prefix: String::new(),
        session_lifetime: Duration::from_millis(HOUR),
        max_submit_attempts: 3,
    })
}

fn request(address: &str, attempt: u64, token: &str, now_ms: u64) -> SendRequest {
    SendRequest {
        medium: Medium::Email,
        address: address.into(),
        client_secret: SecretHash::of("secret"),
        purpose: Purpose::Registration,
        next_link: None,
        send_attempt: attempt,
        language: "en".into(),
        token: TokenHash::of(token),
        token_expires_ms: now_ms + HOUR,
        now_ms,
    }
}

fn sid_of(decision: &SendDecision) -> String {
    match decision {
        SendDecision::Send { sid, .. } | SendDecision::AlreadySent { sid } => sid.clone(),
    }
}

#[test]
fn a_session_expires_one_lifetime_after_its_last_change() {
    let store = store();
    let sid = sid_of(&store.begin_send_now(request("a@example.org", 1, "t1", 0)));
    assert!(store.get_now(&sid, HOUR - 1).is_some());
    assert!(store.get_now(&sid, HOUR).is_none());
    assert!(
        store.lock().sessions.is_empty(),
        "expired entry removed lazily"
    );
    assert!(store.lock().lookup.is_empty());
}

#[test]
fn a_new_send_and_a_validation_each_refresh_the_lifetime() {
    let store = store();
    let sid = sid_of(&store.begin_send_now(request("a@example.org", 1, "t1", 0)));
    store.begin_send_now(request("a@example.org", 2, "t2", HOUR / 2));
    assert!(store.get_now(&sid, HOUR + 1).is_some(), "refreshed by send");
    let secret = SecretHash::of("secret");
    let outcome = store.submit_now(&sid, &secret, "t2", HOUR + 1);
    assert!(matches!(outcome, SubmitOutcome::Validated(_)));
    // Validated: usable for a lifetime, kept for two.
    assert!(
        store.get_now(&sid, 3 * HOUR).is_some(),
        "refreshed by validation"
    );
    assert!(store.get_now(&sid, 3 * HOUR + 1).is_none());
}

#[test]
fn continuing_a_validated_session_does_not_extend_it() {
    let store = store();
    let sid = sid_of(&store.begin_send_now(request("a@example.org", 1, "t1", 0)));
    let secret = SecretHash::of("secret");
    let outcome = store.submit_now(&sid, &secret, "t1", 10);
    assert!(matches!(outcome, SubmitOutcome::Validated(_)));
    // Kept alive by new sends every half lifetime: it still ends one lifetime after its
    // validation.
    for (attempt, at) in [(2, HOUR / 2), (3, HOUR - 1)] {
        let decision = store.begin_send_now(request("a@example.org", attempt, "t", at));
        assert_eq!(sid_of(&decision), sid);
    }
    let session = store.get_now(&sid, HOUR + 9).expect("kept");
    assert_eq!(
        session.usable_until(Duration::from_millis(HOUR)),
        Some(HOUR + 10)
    );
    assert!(store.get_now(&sid, 2 * HOUR + 9).is_some());
    assert!(store.get_now(&sid, 2 * HOUR + 10).is_none());
}

#[test]
fn an_already_sent_request_does_not_refresh_the_lifetime() {
    let store = store();
    let sid = sid_of(&store.begin_send_now(request("a@example.org", 1, "t1", 0)));
    store.begin_send_now(request("a@example.org", 1, "t1", HOUR / 2));
    assert!(store.get_now(&sid, HOUR).is_none());
}

#[test]
fn after_expiry_the_same_request_starts_a_new_session() {
    let store = store();
    let first = sid_of(&store.begin_send_now(request("a@example.org", 1, "t1", 0)));
    let decision = store.begin_send_now(request("a@example.org", 1, "t1", HOUR));
    assert!(matches!(decision, SendDecision::Send { created: true, .. }));
    assert_ne!(sid_of(&decision), first);
}

#[test]
fn the_sweep_bounds_memory_to_live_sessions() {
    let store = store();
    for i in 0..SWEEP_EVERY - 1 {
        store.begin_send_now(request(&format!("u{i}@example.org"), 1, "t", 0));
    }
    assert_eq!(store.lock().sessions.len(), (SWEEP_EVERY - 1) as usize);
    // The next creation, one lifetime later, sweeps everything created before.
    store.begin_send_now(request("late@example.org", 1, "t", HOUR));
    let inner = store.lock();
    assert_eq!(inner.sessions.len(), 1);
    assert_eq!(inner.lookup.len(), 1);
}
