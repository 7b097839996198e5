//! Phone-number verification through the sidecar with a real redis-server and a stand-in SMS
//! gateway that records what it is sent: requestToken → the SMS → `submit_url` →
//! getValidated3pid; wrong codes; a gateway that refuses; the log transport. With Redis the
//! SMS is sent by the outbox right after the answer; the refusal tests use the memory store,
//! which sends before answering (the outbox's own tests cover a refusing gateway on Redis).

use std::time::Duration;

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::common::http::{self, Answer};
use crate::common::redis::RedisServer;
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::webhook::{SEND_PATH, SmsGateway};

const GATEWAY_TOKEN: &str = "gw-token-5f2c";
const SMS_WAIT: Duration = Duration::from_secs(5);

/// A sidecar on Redis whose SMS go to the stand-in gateway; the upstream is never reached.
struct Env {
    sidecar: Sidecar,
    gateway: SmsGateway,
    redis: RedisServer,
}

impl Env {
    async fn start(extra: impl FnOnce(&mut TestConfig)) -> Self {
        let redis = RedisServer::start();
        let gateway = SmsGateway::start().await;
        let mut config = TestConfig::new("http://127.0.0.1:9");
        config
            .redis(&redis)
            .sms_gateway(&gateway)
            .set("sms.webhook_token", GATEWAY_TOKEN)
            .set("sms.timeout", "3s")
            .set("email.app_name", "Example Chat");
        extra(&mut config);
        let sidecar = Sidecar::start(config).await;
        Self {
            sidecar,
            gateway,
            redis,
        }
    }

    async fn request_token(&self, endpoint: &str, body: &Value) -> Answer {
        http::post_json(
            &self.sidecar.url(&format!(
                "/_matrix/client/v3/{endpoint}/msisdn/requestToken"
            )),
            body,
        )
        .await
    }

    fn submit_url(&self) -> String {
        self.sidecar
            .url("/_matrix/client/unstable/threepid/msisdn/submit_token")
    }

    async fn submit(&self, sid: &str, client_secret: &str, token: &str) -> Answer {
        http::post_json(
            &self.submit_url(),
            &json!({"sid": sid, "client_secret": client_secret, "token": token}),
        )
        .await
    }

    async fn get_validated(&self, sid: &str, client_secret: &str) -> Answer {
        let url = format!(
            "https://localhost:{}/_matrix/identity/api/v1/3pid/getValidated3pid?sid={sid}&client_secret={client_secret}",
            self.sidecar.identity.port()
        );
        let ca = self
            .sidecar
            .config
            .dir
            .path()
            .join("certs/identity-cert.pem");
        http::get_tls(&url, &ca).await
    }

    /// How many SMS the gateway got, once the outbox has nothing left to send.
    async fn sent(&self) -> usize {
        let client = redis::Client::open(self.redis.url()).expect("a redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis answers");
        let deadline = std::time::Instant::now() + SMS_WAIT;
        loop {
            let queued: u64 = redis::cmd("XLEN")
                .arg("threepid:outbox")
                .query_async(&mut conn)
                .await
                .expect("XLEN answers");
            if queued == 0 {
                return self.gateway.count();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{queued} SMS still queued"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn body(client_secret: &str, phone_number: &str, send_attempt: u64) -> Value {
    json!({
        "client_secret": client_secret, "country": "GB", "phone_number": phone_number,
        "send_attempt": send_attempt
    })
}

/// Any six-digit code but `code`.
fn other_code(code: &str) -> String {
    let n: u32 = code.parse().expect("six digits");
    format!("{:06}", (n + 1) % 1_000_000)
}

#[tokio::test]
async fn an_sms_code_posted_to_submit_url_validates_the_session_for_the_homeserver() {
    let env = Env::start(|_| {}).await;
    let cases = [
        (
            "register",
            "07400 123456",
            "447400123456",
            "+44 7400 123456",
        ),
        (
            "account/password",
            "07400123457",
            "447400123457",
            "+44 7400 123457",
        ),
        (
            "account/3pid",
            "+44 7400 123458",
            "447400123458",
            "+44 7400 123458",
        ),
    ];
    for (i, (endpoint, dialled, msisdn, intl_fmt)) in cases.into_iter().enumerate() {
        let secret = format!("sms-secret-{i}");
        let answer = env
            .request_token(endpoint, &body(&secret, dialled, 1))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{endpoint}: {}",
            answer.text()
        );
        let answer = answer.json();
        let sid = answer["sid"].as_str().expect("a sid").to_owned();
        assert!(
            sid.len() >= 24 && sid.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{sid}"
        );
        assert_eq!(
            answer,
            json!({
                "sid": sid,
                "submit_url": format!(
                    "http://{}/_matrix/client/unstable/threepid/msisdn/submit_token",
                    env.sidecar.client
                ),
                "msisdn": msisdn,
                "intl_fmt": intl_fmt,
                "success": true,
            }),
            "{endpoint}"
        );

        // The gateway gets the code, from the outbox, with the bearer token.
        let received = env.gateway.wait_for(i + 1, SMS_WAIT).await;
        assert_eq!(env.sent().await, i + 1, "{endpoint}: one SMS per request");
        let sms = received.last().expect("an SMS").clone();
        assert_eq!(sms.method, "POST");
        assert_eq!(sms.path, SEND_PATH);
        assert_eq!(
            sms.header("authorization"),
            Some(format!("Bearer {GATEWAY_TOKEN}").as_str())
        );
        assert!(
            sms.header("content-type")
                .is_some_and(|v| v.starts_with("application/json")),
            "{:?}",
            sms.headers
        );
        let sent = sms.json();
        let keys: Vec<&String> = sent.as_object().expect("a JSON object").keys().collect();
        assert_eq!(keys, ["to", "body"], "{sent}");
        assert_eq!(sms.to(), format!("+{msisdn}"));
        let code = sms.code();
        assert!(
            sms.text().contains("Example Chat"),
            "the app is named: {}",
            sms.text()
        );

        let not_yet = env.get_validated(&sid, &secret).await;
        assert_eq!(not_yet.status, StatusCode::BAD_REQUEST);
        assert_eq!(not_yet.errcode(), "M_SESSION_NOT_VALIDATED");

        // The client posts the code to the submit_url it was given.
        let submitted = http::post_json(
            answer["submit_url"].as_str().expect("a submit_url"),
            &json!({"sid": sid, "client_secret": secret, "token": code}),
        )
        .await;
        assert_eq!(submitted.status, StatusCode::OK, "{}", submitted.text());
        assert_eq!(submitted.json(), json!({"success": true}));

        let validated = env.get_validated(&sid, &secret).await;
        assert_eq!(validated.status, StatusCode::OK, "{}", validated.text());
        let validated = validated.json();
        assert_eq!(validated["medium"], "msisdn");
        assert_eq!(validated["address"], msisdn);
        assert!(validated["validated_at"].as_u64().expect("a time") > 1_700_000_000_000);
    }
}

#[tokio::test]
async fn send_attempt_decides_whether_a_new_sms_goes_out() {
    let env = Env::start(|_| {}).await;
    let first = env
        .request_token("register", &body("sa", "07400 100001", 1))
        .await;
    let sid = first.json()["sid"].clone();
    let again = env
        .request_token("register", &body("sa", "07400 100001", 1))
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["sid"], sid, "same attempt → same sid");
    assert_eq!(env.sent().await, 1, "same attempt → no second SMS");
    let higher = env
        .request_token("register", &body("sa", "07400 100001", 2))
        .await;
    assert_eq!(higher.json()["sid"], sid, "higher attempt → same sid");
    let sent = env.gateway.wait_for(2, SMS_WAIT).await;
    assert_ne!(sent[0].code(), sent[1].code(), "a new code per send");
    // Only the newest code counts: a guess is tested against one code, not several.
    let sid = sid.as_str().expect("a sid");
    let old = env.submit(sid, "sa", &sent[0].code()).await;
    assert_eq!(old.status, StatusCode::BAD_REQUEST, "{}", old.text());
    assert_eq!(old.errcode(), "M_TOKEN_INCORRECT");
    let ok = env.submit(sid, "sa", &sent[1].code()).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
}

#[tokio::test]
async fn wrong_codes_exhaust_the_session_even_for_the_right_code() {
    let env = Env::start(|c| {
        c.set("threepid.max_submit_attempts", 3);
    })
    .await;
    let answer = env
        .request_token("register", &body("wc", "07400 200002", 1))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let sid = answer.json()["sid"].as_str().expect("a sid").to_owned();
    let code = env.gateway.wait_for(1, SMS_WAIT).await[0].code();
    let wrong = other_code(&code);
    for attempt in 1..=3 {
        let bad = env.submit(&sid, "wc", &wrong).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "attempt {attempt}");
        assert_eq!(bad.errcode(), "M_TOKEN_INCORRECT", "attempt {attempt}");
    }
    let late = env.submit(&sid, "wc", &code).await;
    assert_eq!(late.status, StatusCode::BAD_REQUEST, "{}", late.text());
    assert_eq!(late.errcode(), "M_SESSION_EXPIRED");
    let gv = env.get_validated(&sid, "wc").await;
    assert_eq!(gv.status, StatusCode::BAD_REQUEST);
    assert_eq!(gv.errcode(), "M_SESSION_EXPIRED");
}

/// Direct sending, as the memory store does it.
#[tokio::test]
async fn a_gateway_that_refuses_gets_500_and_leaves_no_session() {
    let env = Env::start(|c| {
        c.set("store.backend", "memory");
    })
    .await;
    env.gateway.set_status(StatusCode::INTERNAL_SERVER_ERROR);
    let request = body("gw", "07400 300003", 1);
    let answer = env.request_token("register", &request).await;
    assert_eq!(
        answer.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        answer.text()
    );
    assert_eq!(answer.errcode(), "M_UNKNOWN");
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("could not be sent"),
        "{}",
        answer.text()
    );
    assert_eq!(env.gateway.count(), 1, "the gateway was asked");

    // The gateway recovers: the same send_attempt sends (no session was left: one with this
    // attempt would answer "already sent"), and the session works.
    env.gateway.set_status(StatusCode::OK);
    let answer = env.request_token("register", &request).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let sid = answer.json()["sid"].as_str().expect("a sid").to_owned();
    let sent = env.gateway.wait_for(2, SMS_WAIT).await;
    assert_eq!(sent.len(), 2);
    let ok = env.submit(&sid, "gw", &sent[1].code()).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(env.get_validated(&sid, "gw").await.status, StatusCode::OK);
}

/// Direct sending, as the memory store does it.
#[tokio::test]
async fn a_refused_resend_leaves_the_session_as_it_was() {
    let env = Env::start(|c| {
        c.set("store.backend", "memory");
    })
    .await;
    let first = env
        .request_token("register", &body("rs", "07400 400004", 1))
        .await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text());
    let sid = first.json()["sid"].as_str().expect("a sid").to_owned();
    let first_code = env.gateway.wait_for(1, SMS_WAIT).await[0].code();

    env.gateway.set_status(StatusCode::SERVICE_UNAVAILABLE);
    let refused = env
        .request_token("register", &body("rs", "07400 400004", 2))
        .await;
    assert_eq!(
        refused.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        refused.text()
    );
    assert_eq!(refused.errcode(), "M_UNKNOWN");
    assert_eq!(env.gateway.count(), 2, "the gateway was asked");

    // The refused attempt did not count: after recovery, attempt 2 sends again.
    env.gateway.set_status(StatusCode::OK);
    let retried = env
        .request_token("register", &body("rs", "07400 400004", 2))
        .await;
    assert_eq!(retried.status, StatusCode::OK, "{}", retried.text());
    assert_eq!(retried.json()["sid"], sid.as_str(), "the same session");
    let sent = env.gateway.wait_for(3, SMS_WAIT).await;
    assert_eq!(sent.len(), 3, "attempt 2 was sent once it could be");
    // The newest code is the one that counts; the first was replaced by attempt 2.
    let old = env.submit(&sid, "rs", &first_code).await;
    assert_eq!(old.status, StatusCode::BAD_REQUEST, "{}", old.text());
    let ok = env.submit(&sid, "rs", &sent[2].code()).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(env.get_validated(&sid, "rs").await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_log_transport_answers_like_the_webhook() {
    let mut config = TestConfig::new("http://127.0.0.1:9");
    config.set("sms.transport", "log");
    let sidecar = Sidecar::start(config).await;
    let answer = http::post_json(
        &sidecar.url("/_matrix/client/r0/register/msisdn/requestToken"),
        &body("log", "07400 123456", 1),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let answer = answer.json();
    assert!(answer["sid"].is_string(), "{answer}");
    assert_eq!(answer["msisdn"], "447400123456");
    assert_eq!(answer["success"], true);
}

/// Finding 10: a validated session was kept usable by new sends. It proves its address for
/// `session_lifetime` after its validation, however often it is continued; then the
/// homeserver is told it expired, and later that there is no such session.
#[tokio::test]
async fn a_validated_session_proves_its_address_one_lifetime_after_validation() {
    for backend in ["redis", "memory"] {
        let env = Env::start(|c| {
            c.set("store.backend", backend)
                .set("threepid.session_lifetime", "2s");
        })
        .await;
        let first = env
            .request_token("register", &body("life", "07400 500005", 1))
            .await;
        let sid = first.json()["sid"].as_str().expect("a sid").to_owned();
        let code = env.gateway.wait_for(1, SMS_WAIT).await[0].code();
        assert_eq!(env.submit(&sid, "life", &code).await.status, StatusCode::OK);
        assert_eq!(env.get_validated(&sid, "life").await.status, StatusCode::OK);
        // Continued twice, a second apart: that does not keep it usable.
        for attempt in [2, 3] {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            let again = env
                .request_token("register", &body("life", "07400 500005", attempt))
                .await;
            assert_eq!(again.json()["sid"], sid.as_str(), "{backend}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let expired = env.get_validated(&sid, "life").await;
        assert_eq!(
            expired.status,
            StatusCode::BAD_REQUEST,
            "{backend}: {}",
            expired.text()
        );
        assert_eq!(expired.errcode(), "M_SESSION_EXPIRED", "{backend}");
        // Kept one more lifetime to say so, then gone.
        tokio::time::sleep(Duration::from_millis(2200)).await;
        let gone = env.get_validated(&sid, "life").await;
        assert_eq!(
            gone.status,
            StatusCode::NOT_FOUND,
            "{backend}: {}",
            gone.text()
        );
    }
}
