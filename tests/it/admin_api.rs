//! The admin API (`/admin/v1/` on the admin listener) against a real redis-server and the
//! aiosmtpd SMTP server, on both stores where both apply: off without a token file; a
//! missing, wrong or badly written token refused with 401; sessions read, listed by address
//! and revoked (a revoked session then answers as an expired one); dead letters listed,
//! retried with a new token that then validates, and dropped; rate limits lifted for an
//! address and for an IP. Every call is logged with the token's fingerprint and counted.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::eventually;
use crate::common::http::{self, Answer};
use crate::common::metrics;
use crate::common::redis::RedisServer;
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::smtp::SmtpServer;

const TOKEN: &str = "admin-token-0123456789-abcdefghijklmnop";
const ROTATED: &str = "admin-token-9876543210-zyxwvutsrqponmlk";
const MAIL_WAIT: Duration = Duration::from_secs(20);

#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    Redis,
}

struct Env {
    sidecar: Sidecar,
    smtp: SmtpServer,
    _redis: Option<RedisServer>,
}

impl Env {
    async fn start(backend: Backend, extra: impl FnOnce(&mut TestConfig)) -> Self {
        let smtp = SmtpServer::start();
        let redis = matches!(backend, Backend::Redis).then(RedisServer::start);
        let mut config = TestConfig::new("http://127.0.0.1:9");
        config
            .smtp(&smtp)
            .set("email.send_timeout", "2s")
            .set("sms.timeout", "2s");
        if let Some(redis) = &redis {
            config
                .redis(redis)
                .set("outbox.retry_base", "100ms")
                .set("outbox.claim_timeout", "3s");
        }
        let tokens = config.dir.path().join("admin-tokens");
        // Two tokens (a rotation) and the trailing newline an editor leaves.
        std::fs::write(&tokens, format!("{TOKEN}\n{ROTATED}\n")).unwrap();
        config.set("admin.api_token_file", tokens.display().to_string());
        extra(&mut config);
        Self {
            sidecar: Sidecar::start(config).await,
            smtp,
            _redis: redis,
        }
    }

    async fn call(&self, method: Method, path: &str) -> Answer {
        let auth = format!("Bearer {TOKEN}");
        let url = self.sidecar.admin_url(&format!("/admin/v1/{path}"));
        http::send(method, &url, &[("authorization", &auth)], "").await
    }

    async fn request_token(&self, email: &str, secret: &str, attempt: u64) -> Answer {
        http::post_json(
            &self
                .sidecar
                .url("/_matrix/client/v3/register/email/requestToken"),
            &json!({"client_secret": secret, "email": email, "send_attempt": attempt}),
        )
        .await
    }

    async fn submit(&self, sid: &str, secret: &str, token: &str) -> Answer {
        http::post_json(
            &self
                .sidecar
                .url("/_matrix/client/unstable/threepid/email/submit_token"),
            &json!({"sid": sid, "client_secret": secret, "token": token}),
        )
        .await
    }
}

fn sid_of(answer: &Answer) -> String {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    answer.json()["sid"].as_str().expect("a sid").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_off_without_a_token_file_and_refuses_a_missing_or_wrong_token() {
    let off = Sidecar::start(TestConfig::new("http://127.0.0.1:9")).await;
    let answer = http::get(&off.admin_url("/admin/v1/outbox")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.errcode(), "M_UNRECOGNIZED");

    let env = Env::start(Backend::Memory, |_| {}).await;
    let url = env.sidecar.admin_url("/admin/v1/outbox");
    let answer = http::get(&url).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.errcode(), "M_MISSING_TOKEN");
    assert!(
        answer.headers["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    for bad in [
        format!("Bearer {TOKEN}x"),
        "Bearer not-the-token".to_owned(),
        format!("Basic {TOKEN}"),
    ] {
        let answer = http::send(Method::GET, &url, &[("authorization", &bad)], "").await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert!(
            ["M_MISSING_TOKEN", "M_UNKNOWN_TOKEN"].contains(&answer.errcode().as_str()),
            "{bad}"
        );
    }
    // An unknown path is refused before anyone learns that it is unknown.
    let answer = http::get(&env.sidecar.admin_url("/admin/v1/nothing-here")).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

    for good in [format!("Bearer {TOKEN}"), format!("bearer {ROTATED}")] {
        let answer = http::send(Method::GET, &url, &[("authorization", &good)], "").await;
        assert_eq!(answer.status, StatusCode::OK, "{good}: {}", answer.text());
        assert_eq!(
            answer.json(),
            json!({"durable": false, "pending": 0, "oldest_queued_at": null, "dead": 0, "dead_letters": []})
        );
    }
    let answer = env.call(Method::POST, "outbox").await;
    assert_eq!(answer.status, StatusCode::METHOD_NOT_ALLOWED);
    let answer = env.call(Method::GET, "nothing-here").await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);

    let families = metrics::parse(&http::get(&env.sidecar.admin_url("/metrics")).await.text());
    let calls = |operation, outcome| {
        metrics::sum(
            &families,
            "threepid_sidecar_admin_requests",
            "threepid_sidecar_admin_requests_total",
            &[("operation", operation), ("outcome", outcome)],
        )
    };
    assert_eq!(calls("any", "unauthorized"), 5.0);
    assert_eq!(calls("outbox", "ok"), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_read_listed_by_address_and_revoked_on_both_stores() {
    for backend in [Backend::Memory, Backend::Redis] {
        sessions_are_read_listed_and_revoked(backend).await;
    }
}

async fn sessions_are_read_listed_and_revoked(backend: Backend) {
    let env = Env::start(backend, |_| {}).await;
    let first = sid_of(&env.request_token("Ann@Example.org", "s1", 1).await);
    let second = sid_of(&env.request_token("ann@example.org", "s2", 1).await);
    let other = sid_of(&env.request_token("bob@example.org", "s3", 1).await);
    let mails = env.smtp.wait_for(3, MAIL_WAIT);
    let wrong = env.submit(&first, "s1", "000000").await;
    assert_eq!(wrong.status, StatusCode::BAD_REQUEST, "{backend:?}");

    let answer = env.call(Method::GET, &format!("sessions/{first}")).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "{backend:?}: {}",
        answer.text()
    );
    let s = answer.json();
    assert_eq!(s["sid"], first.as_str());
    assert_eq!(s["medium"], "email");
    assert_eq!(s["address"], "a***@example.org", "masked");
    assert_eq!(s["purpose"], "registration");
    assert_eq!(s["send_attempt"], 1);
    assert_eq!(s["failed_submits"], 1);
    assert_eq!(s["live_tokens"], 1);
    assert_eq!(s["validated_at"], Value::Null);
    let created = s["created_at"].as_u64().expect("created_at");
    assert!(s["expires_at"].as_u64().expect("expires_at") > created);
    assert!(
        !answer.text().contains("ann@"),
        "{backend:?}: no whole address"
    );

    // Any spelling of the address finds both of its sessions, and only those.
    let answer = env
        .call(Method::GET, "sessions?address=ANN%40example.org")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let sids: Vec<String> = answer.json()["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sid"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(sids, [first.clone(), second.clone()], "{backend:?}");
    assert!(!sids.contains(&other));

    let answer = env.call(Method::DELETE, &format!("sessions/{first}")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.json()["revoked"], true);
    // The token that was mailed no longer validates anything.
    let token = mails
        .iter()
        .find(|m| m.link().contains(&first))
        .expect("the first session's mail")
        .token();
    let late = env.submit(&first, "s1", &token).await;
    assert_eq!(late.status, StatusCode::NOT_FOUND, "{}", late.text());
    assert_eq!(
        env.call(Method::GET, &format!("sessions/{first}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        env.call(Method::DELETE, &format!("sessions/{first}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let left = env
        .call(Method::GET, "sessions?address=ann%40example.org")
        .await;
    assert_eq!(left.json()["sessions"].as_array().unwrap().len(), 1);
    // The same client secret starts afresh.
    let again = sid_of(&env.request_token("ann@example.org", "s1", 1).await);
    assert_ne!(again, first);

    let bad = env
        .call(Method::GET, "sessions?address=not-an-address")
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.errcode(), "M_INVALID_PARAM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_sent_again_with_a_new_token_and_dropped() {
    let mut env = Env::start(Backend::Redis, |c| {
        c.set("email.max_retry_age", "1s");
    })
    .await;
    env.smtp.stop();
    let sid = sid_of(&env.request_token("carol@example.org", "c1", 1).await);
    let gone = sid_of(&env.request_token("dave@example.org", "d1", 1).await);
    eventually(MAIL_WAIT, "both messages are dead-lettered", || async {
        env.call(Method::GET, "outbox").await.json()["dead"] == 2
    })
    .await;
    let outbox = env.call(Method::GET, "outbox?limit=10").await.json();
    assert_eq!(outbox["durable"], true);
    assert_eq!(outbox["pending"], 0);
    let letters = outbox["dead_letters"].as_array().unwrap().clone();
    let letter = |sid: &str| -> Value {
        letters
            .iter()
            .find(|l| l["sid"] == sid)
            .cloned()
            .unwrap_or_else(|| panic!("no dead letter for {sid}: {letters:?}"))
    };
    let carol = letter(&sid);
    assert_eq!(carol["address"], "c***@example.org");
    assert_eq!(carol["purpose"], "registration");
    assert!(carol["attempts"].as_u64().unwrap() >= 1);
    assert!(!carol["error"].as_str().unwrap().is_empty());
    assert!(!outbox.to_string().contains("carol@"), "masked: {outbox}");
    eventually(MAIL_WAIT, "the gauge shows them", || async {
        http::get(&env.sidecar.admin_url("/metrics"))
            .await
            .text()
            .contains("\nthreepid_sidecar_outbox_dead_letters 2\n")
    })
    .await;

    env.smtp.restart();
    let carol_id = carol["id"].as_str().unwrap();
    let answer = env
        .call(Method::POST, &format!("outbox/dead/{carol_id}/retry"))
        .await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.text());
    let mail = env.smtp.wait_for(1, MAIL_WAIT).remove(0);
    assert_eq!(mail.to, "carol@example.org");
    let validated = env.submit(&sid, "c1", &mail.token()).await;
    assert_eq!(validated.status, StatusCode::OK, "{}", validated.text());
    let again = env
        .call(Method::POST, &format!("outbox/dead/{carol_id}/retry"))
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "a retry takes it out");

    // A revoked session's message cannot be sent again; the dead letter can be dropped.
    let dave_id = letter(&gone)["id"].as_str().unwrap().to_owned();
    env.call(Method::DELETE, &format!("sessions/{gone}")).await;
    let answer = env
        .call(Method::POST, &format!("outbox/dead/{dave_id}/retry"))
        .await;
    assert_eq!(answer.status, StatusCode::GONE, "{}", answer.text());
    assert_eq!(answer.errcode(), "M_SESSION_EXPIRED");
    let answer = env
        .call(Method::DELETE, &format!("outbox/dead/{dave_id}"))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        env.call(Method::DELETE, &format!("outbox/dead/{dave_id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(env.call(Method::GET, "outbox").await.json()["dead"], 0);
    for bad in ["+", "-", "0-0-", "x"] {
        let answer = env
            .call(Method::DELETE, &format!("outbox/dead/{bad}"))
            .await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{bad}");
    }
    assert_eq!(env.smtp.messages().len(), 1, "dave got nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_lifted_for_an_address_and_for_an_ip_on_both_stores() {
    for backend in [Backend::Memory, Backend::Redis] {
        let env = Env::start(backend, |c| {
            c.set_toml(
                "rate_limit.request_token_per_address",
                "{ per_second = 0.001, burst = 1 }",
            )
            .set_toml(
                "rate_limit.request_token_per_ip",
                "{ per_second = 0.001, burst = 3 }",
            );
        })
        .await;
        assert_eq!(
            env.request_token("eve@example.org", "e1", 1).await.status,
            StatusCode::OK
        );
        let limited = env.request_token("eve@example.org", "e2", 1).await;
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{backend:?}");
        let answer = env
            .call(Method::DELETE, "rate-limits?address=EVE%40example.org")
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        assert_eq!(
            answer.json(),
            json!({"cleared": 1, "limits": ["request_token_address"]}),
            "{backend:?}"
        );
        assert_eq!(
            env.request_token("eve@example.org", "e2", 1).await.status,
            StatusCode::OK
        );

        // Three from this IP in all: the next is refused until the IP's limit is lifted.
        let by_ip = env.request_token("fay@example.org", "f1", 1).await;
        assert_eq!(by_ip.status, StatusCode::TOO_MANY_REQUESTS, "{backend:?}");
        let answer = env.call(Method::DELETE, "rate-limits?ip=127.0.0.1").await;
        assert_eq!(
            answer.json()["cleared"],
            1,
            "{backend:?}: {}",
            answer.text()
        );
        assert_eq!(
            env.request_token("fay@example.org", "f1", 1).await.status,
            StatusCode::OK
        );

        let answer = env.call(Method::DELETE, "rate-limits").await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.errcode(), "M_MISSING_PARAM");
        let answer = env.call(Method::DELETE, "rate-limits?ip=300.1.1.1").await;
        assert_eq!(answer.errcode(), "M_INVALID_PARAM");
    }
}
