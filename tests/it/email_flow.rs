//! Email verification through the sidecar with a real redis-server and a real SMTP server:
//! requestToken → the mail → the link page → validation → getValidated3pid. With Redis the
//! mail is sent by the outbox's sender task right after the answer, so the tests that wait
//! for mail (a blocking wait) run on a multi-threaded runtime, where that task keeps running.

use std::time::{Duration, Instant};

use hyper::StatusCode;
use serde_json::json;

use crate::common::http::{self, Answer};
use crate::common::redis::RedisServer;
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::smtp::{SmtpServer, query_param};

const MAIL_WAIT: Duration = Duration::from_secs(10);

/// A sidecar on Redis and SMTP; the upstream is never reached by these tests.
struct Env {
    sidecar: Sidecar,
    smtp: SmtpServer,
    redis: RedisServer,
}

impl Env {
    async fn start(extra: impl FnOnce(&mut TestConfig)) -> Self {
        let redis = RedisServer::start();
        let smtp = SmtpServer::start();
        let mut config = TestConfig::new("http://127.0.0.1:9");
        config
            .redis(&redis)
            .set("store.command_timeout", "500ms")
            .smtp(&smtp)
            .set("email.send_timeout", "3s")
            .set("email.app_name", "Example Chat")
            .set("server.server_name", "example.org");
        extra(&mut config);
        let sidecar = Sidecar::start(config).await;
        Self {
            sidecar,
            smtp,
            redis,
        }
    }

    async fn request_token(&self, endpoint: &str, body: serde_json::Value) -> Answer {
        http::post_json(
            &self
                .sidecar
                .url(&format!("/_matrix/client/r0/{endpoint}/email/requestToken")),
            &body,
        )
        .await
    }

    fn ca(&self) -> std::path::PathBuf {
        self.sidecar
            .config
            .dir
            .path()
            .join("certs/identity-cert.pem")
    }

    async fn get_validated(&self, version: &str, sid: &str, client_secret: &str) -> Answer {
        let prefix = if version == "v2" {
            "/_matrix/identity/v2"
        } else {
            "/_matrix/identity/api/v1"
        };
        let url = format!(
            "https://localhost:{}{prefix}/3pid/getValidated3pid?sid={sid}&client_secret={client_secret}",
            self.sidecar.identity.port()
        );
        http::get_tls(&url, &self.ca()).await
    }

    /// Session and lookup keys in Redis (rate-limit state is not a session).
    async fn redis_keys(&self) -> usize {
        let client = redis::Client::open(self.redis.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap();
        keys.iter()
            .filter(|k| k.contains("session:") || k.contains("lookup:"))
            .count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_purpose_mails_a_link_whose_page_validates_only_on_post() {
    let env = Env::start(|_| {}).await;
    let cases = [
        ("register", "[example.org] Validate your email"),
        ("account/password", "[example.org] Password reset"),
        ("account/3pid", "[example.org] Validate your email"),
    ];
    for (i, (endpoint, subject)) in cases.into_iter().enumerate() {
        let secret = format!("secret-{i}");
        let answer = env
            .request_token(
                endpoint,
                json!({"client_secret": secret, "email": format!("Alice{i}@Example.org"), "send_attempt": 1}),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let sid = answer.json()["sid"].as_str().unwrap().to_owned();
        assert!(sid.len() >= 24 && sid.bytes().all(|b| b.is_ascii_alphanumeric()));

        let mails = env.smtp.wait_for(i + 1, MAIL_WAIT);
        let mail = &mails[i];
        assert_eq!(mail.subject, subject);
        assert_eq!(mail.to, format!("alice{i}@example.org"));
        assert!(!mail.html.is_empty(), "an HTML part");
        let link = mail.link();
        assert_eq!(query_param(&link, "sid"), sid);
        let token = query_param(&link, "token");
        // The HTML part links the same page (HTML-escaped there).
        assert!(
            mail.html.contains(&token) && mail.html.contains(&sid),
            "{}",
            mail.html
        );
        assert!(
            mail.text.contains(&token),
            "the token is in the text for clients that ask for it"
        );

        // Opening the link validates nothing.
        let page = http::get(&link).await;
        assert_eq!(page.status, StatusCode::OK);
        let html = page.text();
        assert!(html.contains("<form"), "{html}");
        assert!(html.contains("Example Chat"));
        let not_yet = env.get_validated("v1", &sid, &secret).await;
        assert_eq!(not_yet.status, StatusCode::BAD_REQUEST);
        assert_eq!(not_yet.errcode(), "M_SESSION_NOT_VALIDATED");

        // The button POSTs the form.
        let done = http::post_form(
            &env.sidecar
                .url("/_matrix/client/unstable/threepid/email/submit_token"),
            &[("sid", &sid), ("client_secret", &secret), ("token", &token)],
        )
        .await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text());
        assert!(
            done.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );

        let validated = env.get_validated("v1", &sid, &secret).await;
        assert_eq!(validated.status, StatusCode::OK, "{}", validated.text());
        let body = validated.json();
        assert_eq!(body["medium"], "email");
        assert_eq!(body["address"], format!("alice{i}@example.org"));
        assert!(body["validated_at"].as_u64().unwrap() > 1_700_000_000_000);
        // v2 with any bearer answers the same.
        assert_eq!(
            env.get_validated("v2", &sid, &secret).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_submit_and_the_identity_submit_token_validate_too() {
    let env = Env::start(|_| {}).await;
    for (i, via) in ["client", "identity"].into_iter().enumerate() {
        let secret = format!("s{i}");
        let sid = env
            .request_token("register", json!({"client_secret": secret, "email": format!("b{i}@example.org"), "send_attempt": 1}))
            .await
            .json()["sid"]
            .as_str()
            .unwrap()
            .to_owned();
        let token = env.smtp.wait_for(i + 1, MAIL_WAIT)[i].token();
        let body = json!({"sid": sid, "client_secret": secret, "token": token});
        let wrong = json!({"sid": sid, "client_secret": secret, "token": "wrong"});
        let answer = match via {
            "client" => {
                let url = env
                    .sidecar
                    .url("/_matrix/client/unstable/threepid/email/submit_token");
                let bad = http::post_json(&url, &wrong).await;
                assert_eq!(bad.status, StatusCode::BAD_REQUEST);
                assert_eq!(bad.errcode(), "M_TOKEN_INCORRECT");
                http::post_json(&url, &body).await
            }
            _ => {
                // The identity API's POST, over TLS: use curl-free hyper with the CA.
                let url = format!(
                    "https://localhost:{}/_matrix/identity/api/v1/validate/email/submitToken?sid={sid}&client_secret={secret}&token={token}",
                    env.sidecar.identity.port()
                );
                http::get_tls(&url, &env.ca()).await
            }
        };
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        if via == "client" {
            assert_eq!(answer.json(), json!({"success": true}));
        }
        assert_eq!(
            env.get_validated("v1", &sid, &secret).await.status,
            StatusCode::OK
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_link_is_where_the_form_redirects_with_the_sid() {
    let env = Env::start(|_| {}).await;
    let sid = env
        .request_token(
            "register",
            json!({"client_secret": "n1", "email": "c@example.org", "send_attempt": 1, "next_link": "https://app.example.org/welcome?x=1"}),
        )
        .await
        .json()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = env.smtp.wait_for(1, MAIL_WAIT)[0].token();
    let done = http::post_form(
        &env.sidecar
            .url("/_matrix/client/unstable/threepid/email/submit_token"),
        &[("sid", &sid), ("client_secret", "n1"), ("token", &token)],
    )
    .await;
    assert_eq!(done.status, StatusCode::FOUND);
    assert_eq!(
        done.headers["location"],
        format!("https://app.example.org/welcome?x=1&sid={sid}").as_str()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_attempt_decides_whether_a_new_mail_goes_out() {
    let env = Env::start(|_| {}).await;
    let body = |attempt: u64| json!({"client_secret": "sa", "email": "d@example.org", "send_attempt": attempt});
    let first = env.request_token("register", body(1)).await.json()["sid"].clone();
    env.smtp.wait_for(1, MAIL_WAIT);
    let again = env.request_token("register", body(1)).await.json()["sid"].clone();
    assert_eq!(first, again, "same attempt → same sid");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        env.smtp.messages().len(),
        1,
        "same attempt → no second mail"
    );

    let higher = env.request_token("register", body(2)).await.json()["sid"].clone();
    assert_eq!(first, higher, "higher attempt → same sid");
    let mails = env.smtp.wait_for(2, MAIL_WAIT);
    let token1 = mails[0].token();
    let token2 = mails[1].token();
    assert_ne!(token1, token2, "a new token per send");

    // The older token is still valid.
    let url = env
        .sidecar
        .url("/_matrix/client/unstable/threepid/email/submit_token");
    let sid = first.as_str().unwrap();
    let ok = http::post_json(
        &url,
        &json!({"sid": sid, "client_secret": "sa", "token": token1}),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_exhaust_the_session() {
    let env = Env::start(|c| {
        c.set("threepid.max_submit_attempts", 3);
    })
    .await;
    let sid = env
        .request_token(
            "register",
            json!({"client_secret": "w", "email": "e@example.org", "send_attempt": 1}),
        )
        .await
        .json()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = env.smtp.wait_for(1, MAIL_WAIT)[0].token();
    let url = env
        .sidecar
        .url("/_matrix/client/unstable/threepid/email/submit_token");
    for _ in 0..3 {
        let bad = http::post_json(
            &url,
            &json!({"sid": sid, "client_secret": "w", "token": "nope"}),
        )
        .await;
        assert_eq!(bad.errcode(), "M_TOKEN_INCORRECT");
    }
    let late = http::post_json(
        &url,
        &json!({"sid": sid, "client_secret": "w", "token": token}),
    )
    .await;
    assert_eq!(late.status, StatusCode::BAD_REQUEST);
    assert_eq!(late.errcode(), "M_SESSION_EXPIRED");
    let gv = env.get_validated("v1", &sid, "w").await;
    assert_eq!(gv.errcode(), "M_SESSION_EXPIRED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_email_requests_get_matrix_errors_and_change_nothing() {
    let env = Env::start(|c| {
        c.set("server.max_body_bytes", 1024);
        c.set_toml("threepid.next_link_allowed_hosts", r#"["app.example.org"]"#);
    })
    .await;
    let ok = json!({"client_secret": "cs", "email": "f@example.org", "send_attempt": 1});
    let with = |key: &str, value: serde_json::Value| {
        let mut body = ok.clone();
        body[key] = value;
        body
    };
    let without = |key: &str| {
        let mut body = ok.clone();
        body.as_object_mut().unwrap().remove(key);
        body
    };
    let raw_cases: Vec<(&str, String, u16, &str)> = vec![
        ("not JSON", "{nope".into(), 400, "M_NOT_JSON"),
        ("not an object", "[1,2]".into(), 400, "M_BAD_JSON"),
        (
            "too large",
            format!("{{\"x\":\"{}\"}}", "a".repeat(2000)),
            413,
            "M_TOO_LARGE",
        ),
    ];
    let json_cases: Vec<(&str, serde_json::Value, u16, &str)> = vec![
        (
            "no client_secret",
            without("client_secret"),
            400,
            "M_MISSING_PARAM",
        ),
        ("no email", without("email"), 400, "M_MISSING_PARAM"),
        (
            "no send_attempt",
            without("send_attempt"),
            400,
            "M_MISSING_PARAM",
        ),
        (
            "bad client_secret",
            with("client_secret", json!("has space")),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "long client_secret",
            with("client_secret", json!("a".repeat(256))),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "send_attempt string",
            with("send_attempt", json!("1")),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "send_attempt float",
            with("send_attempt", json!(1.5)),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "email without @",
            with("email", json!("nobody")),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "email with two @",
            with("email", json!("a@b@example.org")),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "email too long",
            with("email", json!(format!("{}@example.org", "a".repeat(500)))),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "email header injection",
            with("email", json!("a@example.org\r\nBcc: x@example.org")),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "next_link not http",
            with("next_link", json!("file:///etc/passwd")),
            400,
            "M_INVALID_PARAM",
        ),
        (
            "next_link host not allowed",
            with("next_link", json!("https://evil.example/")),
            400,
            "M_INVALID_PARAM",
        ),
    ];
    for endpoint in ["register", "account/password", "account/3pid"] {
        let url = env
            .sidecar
            .url(&format!("/_matrix/client/v3/{endpoint}/email/requestToken"));
        for (name, body, status, errcode) in &raw_cases {
            let answer = http::send(
                hyper::Method::POST,
                &url,
                &[("content-type", "application/json")],
                body.clone(),
            )
            .await;
            assert_eq!(
                answer.status.as_u16(),
                *status,
                "{endpoint}: {name}: {}",
                answer.text()
            );
            assert_eq!(answer.errcode(), *errcode, "{endpoint}: {name}");
        }
        for (name, body, status, errcode) in &json_cases {
            let answer = http::post_json(&url, body).await;
            assert_eq!(
                answer.status.as_u16(),
                *status,
                "{endpoint}: {name}: {}",
                answer.text()
            );
            assert_eq!(answer.errcode(), *errcode, "{endpoint}: {name}");
        }
    }
    assert_eq!(env.redis_keys().await, 0, "nothing stored");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(env.smtp.messages().is_empty(), "nothing sent");
    // The same address and secret then work from the first attempt.
    let good = env.request_token("register", ok.clone()).await;
    assert_eq!(good.status, StatusCode::OK);
    env.smtp.wait_for(1, MAIL_WAIT);
}

/// Direct sending, as the memory store does it (with Redis the message is queued instead and
/// sent once the mail server is back: `outbox::with_the_mail_server_down_…`).
#[tokio::test]
async fn a_mail_server_that_is_down_gets_500_and_leaves_no_session() {
    let mut env = Env::start(|c| {
        c.set("store.backend", "memory");
    })
    .await;
    env.smtp.stop();
    let answer = env
        .request_token(
            "register",
            json!({"client_secret": "m", "email": "g@example.org", "send_attempt": 1}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.errcode(), "M_UNKNOWN");
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("could not be sent")
    );

    // With the mail server back, the same attempt sends: no session was left half-made (one
    // with this attempt would answer "already sent" and send nothing).
    env.smtp.restart();
    let answer = env
        .request_token(
            "register",
            json!({"client_secret": "m", "email": "g@example.org", "send_attempt": 1}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    env.smtp.wait_for(1, MAIL_WAIT);
}

#[tokio::test]
async fn a_store_that_is_down_gets_503_promptly_and_comes_back_by_itself() {
    let mut env = Env::start(|_| {}).await;
    let body = |cs: &str| json!({"client_secret": cs, "email": "h@example.org", "send_attempt": 1});
    assert_eq!(
        env.request_token("register", body("r1")).await.status,
        StatusCode::OK
    );

    env.redis.stop();
    let started = Instant::now();
    let down = env.request_token("register", body("r2")).await;
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        down.text()
    );
    assert_eq!(down.errcode(), "M_UNKNOWN");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "prompt: {:?}",
        started.elapsed()
    );
    let ready = http::get(&env.sidecar.admin_url("/health/ready")).await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let live = http::get(&env.sidecar.admin_url("/health/live")).await;
    assert_eq!(
        live.status,
        StatusCode::OK,
        "liveness never depends on Redis"
    );

    env.redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = env.request_token("register", body("r3")).await;
        if answer.status == StatusCode::OK {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "store did not come back: {}",
            answer.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Review, informational: the pages' Content-Security-Policy had no `form-action` (which does
/// not fall back to `default-src`). The confirmation page may post only to itself and follow
/// the redirect to the session's `next_link`; the other pages may post nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn the_pages_say_where_their_form_may_go() {
    let env = Env::start(|_| {}).await;
    let csp = |answer: &Answer| {
        answer.headers["content-security-policy"]
            .to_str()
            .expect("text")
            .to_owned()
    };
    for (i, next_link) in [None, Some("https://app.example.org/welcome?x=1")]
        .into_iter()
        .enumerate()
    {
        let mut body = json!({"client_secret": format!("csp-{i}"), "email": "csp@example.org",
                              "send_attempt": 1});
        if let Some(next_link) = next_link {
            body["next_link"] = json!(next_link);
        }
        assert_eq!(
            env.request_token("register", body).await.status,
            StatusCode::OK
        );
        let link = env.smtp.wait_for(i + 1, MAIL_WAIT)[i].link();
        let page = http::get(&link).await;
        let policy = csp(&page);
        assert!(policy.contains("base-uri 'none'"), "{policy}");
        match next_link {
            None => assert!(policy.ends_with("form-action 'self'"), "{policy}"),
            Some(_) => assert!(
                policy.ends_with("form-action 'self' https://app.example.org"),
                "{policy}"
            ),
        }
    }
    let failure = http::get(
        &env.sidecar
            .url("/_matrix/client/unstable/threepid/email/submit_token?sid=x"),
    )
    .await;
    assert!(
        csp(&failure).ends_with("form-action 'none'"),
        "{}",
        csp(&failure)
    );
}
