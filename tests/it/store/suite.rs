//! Sessions (DESIGN §4), the same on both backends: the `send_attempt` rule, undoing a send
//! that could not be delivered, and submitting tokens.

use std::sync::Arc;

use threepid_sidecar::session::{PurposeNote, SendDecision, SessionStore, SubmitOutcome};
use threepid_sidecar::threepid::{Medium, Purpose};
use threepid_sidecar::token::{SecretHash, TokenHash};

use super::{MAX_ATTEMPTS, NOW, request, secret, send, sid_of, submit};

pub(super) async fn a_first_send_creates_a_session(store: Arc<dyn SessionStore>) {
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

pub(super) async fn a_repeated_or_lower_send_attempt_sends_nothing(store: Arc<dyn SessionStore>) {
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

pub(super) async fn a_higher_send_attempt_keeps_the_sid_and_older_tokens(
    store: Arc<dyn SessionStore>,
) {
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

pub(super) async fn next_link_changes_only_when_a_new_send_gives_one(store: Arc<dyn SessionStore>) {
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

pub(super) async fn another_secret_or_address_gets_another_session(store: Arc<dyn SessionStore>) {
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

pub(super) async fn undoing_a_created_send_deletes_the_session(store: Arc<dyn SessionStore>) {
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

pub(super) async fn undoing_a_continued_send_restores_the_attempt(store: Arc<dyn SessionStore>) {
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

pub(super) async fn undoing_a_send_overtaken_by_a_later_one_keeps_the_later(
    store: Arc<dyn SessionStore>,
) {
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

pub(super) async fn undoing_an_already_sent_decision_changes_nothing(store: Arc<dyn SessionStore>) {
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

pub(super) async fn an_unknown_sid_or_wrong_secret_is_no_session(store: Arc<dyn SessionStore>) {
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

pub(super) async fn the_right_token_validates_once_and_for_all(store: Arc<dyn SessionStore>) {
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

pub(super) async fn wrong_tokens_count_down_then_the_session_is_refused(
    store: Arc<dyn SessionStore>,
) {
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

pub(super) async fn a_right_token_gives_its_reserved_attempt_back(store: Arc<dyn SessionStore>) {
    let sid = sid_of(&send(&*store, request("a@example.org", 1, "t1")).await);
    submit(&*store, &sid, "wrong").await;
    submit(&*store, &sid, "wrong").await;
    let SubmitOutcome::Validated(session) = submit(&*store, &sid, "t1").await else {
        panic!("the last allowed attempt with the right token must validate");
    };
    assert_eq!(session.failed_submits, 2);
}

pub(super) async fn an_expired_token_is_refused(store: Arc<dyn SessionStore>) {
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

pub(super) async fn parallel_wrong_guesses_never_exceed_the_limit(store: Arc<dyn SessionStore>) {
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

pub(super) async fn ping_answers(store: Arc<dyn SessionStore>) {
    store.ping().await.expect("ping");
}

fn note(purpose: Purpose, language: &str) -> PurposeNote {
    PurposeNote {
        purpose,
        language: language.to_owned(),
    }
}

pub(super) async fn a_noted_purpose_is_taken_once_by_the_same_request_only(
    store: Arc<dyn SessionStore>,
) {
    let other = SecretHash::of("other");
    store
        .note_purpose(
            Medium::Email,
            "a@example.org",
            &secret(),
            &note(Purpose::PasswordReset, "de"),
            NOW,
        )
        .await
        .unwrap();
    let found = |medium, address: &'static str, secret: SecretHash| {
        let store = store.clone();
        async move {
            store
                .take_purpose(medium, address, &secret, NOW + 1)
                .await
                .unwrap()
        }
    };
    assert_eq!(found(Medium::Email, "a@example.org", other).await, None);
    assert_eq!(found(Medium::Email, "b@example.org", secret()).await, None);
    assert_eq!(found(Medium::Msisdn, "a@example.org", secret()).await, None);
    assert_eq!(
        found(Medium::Email, "a@example.org", secret()).await,
        Some(note(Purpose::PasswordReset, "de"))
    );
    assert_eq!(
        found(Medium::Email, "a@example.org", secret()).await,
        None,
        "a note is taken once"
    );
    // Two accepted requests, two notes, taken in their order.
    for purpose in [Purpose::AddThreepid, Purpose::Registration] {
        store
            .note_purpose(
                Medium::Email,
                "a@example.org",
                &secret(),
                &note(purpose, "en"),
                NOW + 2,
            )
            .await
            .unwrap();
    }
    assert_eq!(
        found(Medium::Email, "a@example.org", secret()).await,
        Some(note(Purpose::AddThreepid, "en"))
    );
    assert_eq!(
        found(Medium::Email, "a@example.org", secret()).await,
        Some(note(Purpose::Registration, "en"))
    );
    assert_eq!(found(Medium::Email, "a@example.org", secret()).await, None);
}

pub(super) async fn a_request_for_another_purpose_starts_its_own_session(
    store: Arc<dyn SessionStore>,
) {
    let registration = sid_of(&send(&*store, request("a@example.org", 1, "t1")).await);
    let mut reset = request("a@example.org", 2, "t2");
    reset.purpose = Purpose::PasswordReset;
    let decision = send(&*store, reset).await;
    assert!(
        matches!(decision, SendDecision::Send { created: true, .. }),
        "{decision:?}"
    );
    let reset = sid_of(&decision);
    assert_ne!(reset, registration);
    // Each keeps its purpose, and its own token.
    for (sid, purpose, token, other) in [
        (&registration, Purpose::Registration, "t1", "t2"),
        (&reset, Purpose::PasswordReset, "t2", "t1"),
    ] {
        let session = store.get(sid, NOW).await.unwrap().expect("live");
        assert_eq!(session.purpose, purpose);
        assert!(matches!(
            submit(&*store, sid, other).await,
            SubmitOutcome::WrongToken { .. }
        ));
        assert!(matches!(
            submit(&*store, sid, token).await,
            SubmitOutcome::Validated(_)
        ));
    }
    // A continuation of the registration session stays a registration session.
    let decision = send(&*store, request("a@example.org", 3, "t3")).await;
    assert_eq!(sid_of(&decision), registration);
}

pub(super) async fn only_the_newest_sms_code_is_accepted(store: Arc<dyn SessionStore>) {
    let sms = |attempt: u64, code: &str| {
        let mut req = request("447700900123", attempt, code);
        req.medium = Medium::Msisdn;
        req
    };
    let sid = sid_of(&send(&*store, sms(1, "111111")).await);
    send(&*store, sms(2, "222222")).await;
    assert!(matches!(
        submit(&*store, &sid, "111111").await,
        SubmitOutcome::WrongToken { .. }
    ));
    assert!(matches!(
        submit(&*store, &sid, "222222").await,
        SubmitOutcome::Validated(_)
    ));
}
