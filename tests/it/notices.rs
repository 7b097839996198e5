//! Security notices (`[notices]`): "your password was changed" after the homeserver accepted a
//! reset completed with one of our sessions, "this address was removed" after it accepted
//! `/account/3pid/delete` of an email address; through the outbox (Redis) or at once (memory),
//! in the right language, never when the homeserver refused, never when turned off. The
//! homeserver is the echo stand-in; mail goes to a real SMTP server.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::common::http::{self, Answer};
use crate::common::redis::RedisServer;
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::smtp::{ReceivedMail, SmtpServer};
use crate::common::upstream::{Canned, Upstream};

const WAIT: Duration = Duration::from_secs(10);

struct Env {
    sidecar: Sidecar,
    upstream: Upstream,
    smtp: SmtpServer,
    _redis: Option<RedisServer>,
}

impl Env {
    async fn start(redis: bool, configure: impl FnOnce(&mut TestConfig)) -> Self {
        let upstream = Upstream::start().await;
        let smtp = SmtpServer::start();
        let redis = redis.then(RedisServer::start);
        let mut config = TestConfig::new(&upstream.url());
        config
            .smtp(&smtp)
            .set("server.server_name", "example.org")
            .set("email.app_name", "Example Chat");
        if let Some(redis) = &redis {
            config.redis(redis);
        }
        configure(&mut config);
        let sidecar = Sidecar::start(config).await;
        Self {
            sidecar,
            upstream,
            smtp,
            _redis: redis,
        }
    }

    async fn post(&self, path: &str, body: serde_json::Value, lang: &str) -> Answer {
        http::send(
            Method::POST,
            &self.sidecar.url(path),
            &[
                ("content-type", "application/json"),
                ("accept-language", lang),
            ],
            body.to_string(),
        )
        .await
    }

    /// A password-reset session of ours for `email`, its mail confirmed; the mail count.
    async fn reset_session(&self, email: &str, secret: &str, lang: &str) -> String {
        let before = self.smtp.messages().len();
        let answer = self
            .post(
                "/_matrix/client/v3/account/password/email/requestToken",
                json!({"client_secret": secret, "email": email, "send_attempt": 1}),
                lang,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let sid = answer.json()["sid"].as_str().expect("a sid").to_owned();
        let mail = self
            .smtp
            .wait_for(before + 1, WAIT)
            .pop()
            .expect("the mail");
        let link = mail
            .text
            .split_whitespace()
            .find(|w| w.starts_with("http"))
            .expect("a link")
            .to_owned();
        let token = url::Url::parse(&link)
            .expect("a URL")
            .query_pairs()
            .find(|(k, _)| k == "token")
            .expect("a token")
            .1
            .into_owned();
        let done = http::post_json(
            &self
                .sidecar
                .url("/_matrix/client/unstable/threepid/email/submit_token"),
            &json!({"sid": sid, "client_secret": secret, "token": token}),
        )
        .await;
        assert_eq!(done.status, StatusCode::OK);
        sid
    }

    async fn reset(&self, sid: &str, secret: &str) -> Answer {
        self.post(
            "/_matrix/client/v3/account/password",
            json!({"new_password": "new", "auth": {"type": "m.login.email.identity",
                   "threepid_creds": {"sid": sid, "client_secret": secret}}}),
            "en",
        )
        .await
    }

    fn mails(&self) -> Vec<ReceivedMail> {
        self.smtp.messages()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_reset_the_homeserver_accepted_is_told_to_the_address_in_its_language() {
    for redis in [true, false] {
        let env = Env::start(redis, |_| {}).await;
        let sid = env
            .reset_session("owner@example.org", "notice-1", "de")
            .await;
        let answer = env.reset(&sid, "notice-1").await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let mail = env.smtp.wait_for(2, WAIT).pop().expect("the notice");
        assert_eq!(mail.to, "owner@example.org");
        assert_eq!(mail.subject, "[example.org] Dein Passwort wurde geändert");
        assert!(mail.raw.contains("Content-Language: de"), "{}", mail.raw);
        assert!(
            mail.text.contains("127.0.0.*"),
            "the client's network: {}",
            mail.text
        );
        assert!(mail.text.contains(" UTC"), "when: {}", mail.text);
        let metrics = http::get(&env.sidecar.admin_url("/metrics")).await.text();
        assert!(
            metrics.contains(
                r#"threepid_sidecar_notices_total{notice="password_changed",outcome="sent"} 1"#
            ),
            "{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_reset_or_a_turned_off_notice_mails_nothing() {
    let env = Env::start(true, |_| {}).await;
    env.upstream.answer(
        "/_matrix/client/v3/account/password",
        Canned::json(
            StatusCode::UNAUTHORIZED,
            &json!({"errcode": "M_UNAUTHORIZED", "error": "no"}),
        ),
    );
    let sid = env.reset_session("a@example.org", "refused", "en").await;
    assert_eq!(
        env.reset(&sid, "refused").await.status,
        StatusCode::UNAUTHORIZED
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.mails().len(), 1, "only the reset mail");

    let off = Env::start(true, |c| {
        c.set("notices.password_changed", false)
            .set("notices.address_removed", false);
    })
    .await;
    let sid = off.reset_session("b@example.org", "off", "en").await;
    assert_eq!(off.reset(&sid, "off").await.status, StatusCode::OK);
    let removed = off
        .post(
            "/_matrix/client/v3/account/3pid/delete",
            json!({"medium": "email", "address": "b@example.org"}),
            "en",
        )
        .await;
    assert_eq!(removed.status, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(off.mails().len(), 1, "only the reset mail");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_email_address_is_told_so_and_the_request_reaches_the_homeserver_unchanged() {
    let env = Env::start(true, |_| {}).await;
    let body = r#"{"medium":"email","address":"Gone@Example.org","id_server":"x"}"#;
    let answer = http::send(
        Method::POST,
        &env.sidecar.url("/_matrix/client/r0/account/3pid/delete"),
        &[
            ("content-type", "application/json"),
            ("accept-language", "fr"),
            ("authorization", "Bearer syt_x"),
        ],
        body,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let received = env
        .upstream
        .bodies_at("/_matrix/client/r0/account/3pid/delete")
        .pop()
        .expect("forwarded");
    assert_eq!(received.body, body, "byte for byte");
    let mail = env.smtp.wait_for(1, WAIT).pop().expect("the notice");
    assert_eq!(mail.to, "gone@example.org");
    assert_eq!(mail.subject, "[example.org] Adresse e-mail retirée");

    // A phone number, or a refusal: nothing.
    env.post(
        "/_matrix/client/r0/account/3pid/delete",
        json!({"medium": "msisdn", "address": "447700900123"}),
        "en",
    )
    .await;
    env.upstream.answer(
        "/_matrix/client/r0/account/3pid/delete",
        Canned::json(
            StatusCode::BAD_REQUEST,
            &json!({"errcode": "M_UNKNOWN", "error": "no such address"}),
        ),
    );
    env.post(
        "/_matrix/client/r0/account/3pid/delete",
        json!({"medium": "email", "address": "other@example.org"}),
        "en",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.mails().len(), 1);
}
