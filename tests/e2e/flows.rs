//! Registration, add-email and password reset on a real Synapse 1.3.1 behind the sidecar,
//! with requests that carry no `id_server`, and no identity server but the sidecar's.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::http::{self, Answer};
use crate::common::logs;
use crate::common::ports::free_port;
use crate::common::redis::RedisServer;
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::smtp::SmtpServer;
pub use crate::common::smtp::{link_in, query_param};
use crate::common::synapse::{Synapse, SynapseOptions};

const MAIL_WAIT: Duration = Duration::from_secs(15);

/// Synapse, Redis, an SMTP server and the sidecar in front of Synapse.
pub struct Stack {
    pub sidecar: Sidecar,
    pub smtp: SmtpServer,
    pub synapse: Synapse,
    _redis: RedisServer,
}

impl Stack {
    pub async fn start(configure: impl FnOnce(&mut TestConfig)) -> Self {
        let identity_port = free_port();
        let identity_name = format!("localhost:{identity_port}");
        let options = SynapseOptions {
            identity_server_name: identity_name.clone(),
            ..SynapseOptions::default()
        };
        let synapse = tokio::task::spawn_blocking(move || Synapse::start(options))
            .await
            .expect("Synapse starts");
        let redis = RedisServer::start();
        let smtp = SmtpServer::start();
        let mut config = TestConfig::new(&synapse.url());
        config
            .set("identity.listen", format!("127.0.0.1:{identity_port}"))
            .set("identity.server_name", identity_name)
            .redis(&redis)
            .smtp(&smtp)
            .set("server.server_name", "localhost")
            .set("upstream.path_compat", "auto")
            .set("log.level", "debug");
        configure(&mut config);
        let sidecar = Sidecar::start(config).await;
        Self {
            sidecar,
            smtp,
            synapse,
            _redis: redis,
        }
    }

    pub async fn post(&self, path: &str, body: &Value, access_token: Option<&str>) -> Answer {
        let auth = access_token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        http::send(
            Method::POST,
            &self.sidecar.url(path),
            &headers,
            serde_json::to_vec(body).expect("JSON"),
        )
        .await
    }

    /// A user-interactive-auth request: `body` alone gets 401 and a UIA session, then
    /// `body` with an `auth` of `stage` whose creds name `(sid, client_secret)` and carry
    /// no `id_server`. Returns the second answer.
    pub async fn complete_uia(
        &self,
        path: &str,
        body: &Value,
        stage: &str,
        sid: &str,
        client_secret: &str,
    ) -> Answer {
        let start = self.post(path, body, None).await;
        assert_eq!(
            start.status,
            StatusCode::UNAUTHORIZED,
            "{path}: {}",
            start.text()
        );
        let session = start.json()["session"]
            .as_str()
            .expect("a UIA session")
            .to_owned();
        let mut body = body.clone();
        body["auth"] = json!({
            "type": stage, "session": session,
            "threepid_creds": {"sid": sid, "client_secret": client_secret}
        });
        self.post(path, &body, None).await
    }

    /// requestToken, the mail, and the link followed as a person would (page, button).
    /// Returns the sid.
    pub async fn verify_email(&self, endpoint: &str, email: &str, client_secret: &str) -> String {
        let before = self.smtp.messages().len();
        let answer = self
            .post(
                &format!("/_matrix/client/r0/{endpoint}/email/requestToken"),
                &json!({"client_secret": client_secret, "email": email, "send_attempt": 1}),
                None,
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "{endpoint}: {}",
            answer.text()
        );
        let sid = answer.json()["sid"].as_str().expect("a sid").to_owned();
        let mail = self
            .smtp
            .wait_for(before + 1, MAIL_WAIT)
            .pop()
            .expect("the mail");
        assert_eq!(mail.to, email);
        let link = link_in(&mail.text);
        let page = http::get(&link).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let token = query_param(&link, "token");
        let done = http::post_form(
            &self
                .sidecar
                .url("/_matrix/client/unstable/threepid/email/submit_token"),
            &[
                ("sid", &sid),
                ("client_secret", client_secret),
                ("token", &token),
            ],
        )
        .await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.text());
        sid
    }
}

fn metric(metrics: &str, line_start: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_add_email_and_reset_password_with_no_identity_server_but_ours() {
    logs::capture();
    let stack = Stack::start(|_| {}).await;
    let user = "alice";
    let email = "alice@example.org";
    let second_email = "alice.second@example.org";
    let (secret1, secret2, secret3) = ("e2e-secret-one", "e2e-secret-two", "e2e-secret-three");
    let (old_password, new_password) = ("old-pass-Quux9", "new-pass-Zorg7");

    // /versions through the sidecar: the flag is there.
    let versions = http::get(&stack.sidecar.url("/_matrix/client/versions"))
        .await
        .json();
    assert_eq!(
        versions["unstable_features"]["m.require_identity_server"],
        false
    );
    assert_eq!(versions["unstable_features"]["m.lazy_load_members"], true);

    // 1. Register with an email (UIA m.login.email.identity), no id_server anywhere.
    let sid = stack.verify_email("register", email, secret1).await;
    let registered = stack
        .complete_uia(
            "/_matrix/client/r0/register",
            &json!({"username": user, "password": old_password}),
            "m.login.email.identity",
            &sid,
            secret1,
        )
        .await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.text());
    let access_token = registered.json()["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned();

    // 2. Add a second email with POST /account/3pid and bind: true.
    let sid2 = stack
        .verify_email("account/3pid", second_email, secret2)
        .await;
    let added = stack
        .post(
            "/_matrix/client/r0/account/3pid",
            &json!({"three_pid_creds": {"sid": sid2, "client_secret": secret2}, "bind": true}),
            Some(&access_token),
        )
        .await;
    assert_eq!(added.status, StatusCode::OK, "{}", added.text());
    let listed = http::send(
        Method::GET,
        &stack.sidecar.url("/_matrix/client/r0/account/3pid"),
        &[("authorization", &format!("Bearer {access_token}"))],
        "",
    )
    .await
    .json();
    let addresses: Vec<&str> = listed["threepids"]
        .as_array()
        .expect("threepids")
        .iter()
        .map(|t| t["address"].as_str().expect("an address"))
        .collect();
    assert_eq!(addresses, [email, second_email]);

    // 3. Reset the password.
    let sid3 = stack.verify_email("account/password", email, secret3).await;
    let reset = stack
        .complete_uia(
            "/_matrix/client/r0/account/password",
            &json!({"new_password": new_password}),
            "m.login.email.identity",
            &sid3,
            secret3,
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.text());

    // 4. The new password logs in; the old one is refused.
    let login = |password: &str| json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user}, "password": password});
    let ok = stack
        .post("/_matrix/client/r0/login", &login(new_password), None)
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let refused = stack
        .post("/_matrix/client/r0/login", &login(old_password), None)
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());

    // The homeserver asked the sidecar's identity listener, and nothing else: three
    // getValidated3pid calls (register, add, reset), no bind, and no other identity server
    // in its log.
    let metrics = http::get(&stack.sidecar.admin_url("/metrics")).await.text();
    let validated = metric(
        &metrics,
        r#"threepid_sidecar_identity_calls_total{endpoint="getValidated3pid",outcome="ok"}"#,
    );
    assert_eq!(validated, 3, "{metrics}");
    assert_eq!(
        metric(
            &metrics,
            r#"threepid_sidecar_identity_calls_total{endpoint="bind""#
        ),
        0
    );
    // The exposition parses as OpenMetrics and has the series an operator watches.
    let families = crate::common::metrics::parse(&metrics);
    let m = crate::common::metrics::sum;
    let handled = m(
        &families,
        "threepid_sidecar_http_requests",
        "threepid_sidecar_http_requests_total",
        &[("route", "handled")],
    );
    assert!(
        handled >= 3.0,
        "requestTokens, submits and creds rewrites: {handled}"
    );
    assert!(
        m(
            &families,
            "threepid_sidecar_http_requests",
            "threepid_sidecar_http_requests_total",
            &[("route", "forwarded")]
        ) >= 1.0
    );
    assert!(
        m(
            &families,
            "threepid_sidecar_upstream_response_seconds",
            "threepid_sidecar_upstream_response_seconds_count",
            &[]
        ) >= 1.0
    );
    for endpoint in ["register_email", "3pid_email", "password_email"] {
        let queued_or_sent = m(
            &families,
            "threepid_sidecar_request_tokens",
            "threepid_sidecar_request_tokens_total",
            &[("endpoint", endpoint)],
        );
        assert_eq!(queued_or_sent, 1.0, "{endpoint}");
    }
    assert_eq!(
        m(
            &families,
            "threepid_sidecar_submits",
            "threepid_sidecar_submits_total",
            &[("outcome", "validated")]
        ),
        3.0
    );
    assert_eq!(
        m(
            &families,
            "threepid_sidecar_messages",
            "threepid_sidecar_messages_total",
            &[("medium", "email"), ("outcome", "sent")]
        ),
        3.0
    );
    assert!(
        m(
            &families,
            "threepid_sidecar_store_call_seconds",
            "threepid_sidecar_store_call_seconds_count",
            &[("operation", "submit")]
        ) >= 3.0
    );
    assert_eq!(
        m(
            &families,
            "threepid_sidecar_identity_calls",
            "threepid_sidecar_identity_calls_total",
            &[("endpoint", "getValidated3pid")]
        ),
        3.0
    );
    for gauge in [
        "threepid_sidecar_outbox_length",
        "threepid_sidecar_outbox_oldest_age_seconds",
        "threepid_sidecar_path_compat_active",
        "threepid_sidecar_ready",
    ] {
        assert_eq!(
            crate::common::metrics::family(&families, gauge).kind,
            "gauge"
        );
    }
    assert_eq!(
        m(
            &families,
            "threepid_sidecar_path_compat_active",
            "threepid_sidecar_path_compat_active",
            &[]
        ),
        1.0
    );

    let synapse_log = std::fs::read_to_string(stack.synapse.log_path()).unwrap_or_default();
    for other in ["matrix.org", "vector.im"] {
        assert!(!synapse_log.contains(other), "Synapse talked to {other}");
    }

    // No token, client secret or password reached the sidecar's logs.
    let mails = stack.smtp.messages();
    // Every verification mail's token (the notices carry none).
    let tokens: Vec<String> = mails
        .iter()
        .filter(|m| m.text.contains("token="))
        .map(|m| query_param(&link_in(&m.text), "token"))
        .collect();
    let mut secrets: Vec<&str> = vec![
        secret1,
        secret2,
        secret3,
        old_password,
        new_password,
        &access_token,
    ];
    secrets.extend(tokens.iter().map(String::as_str));
    logs::assert_none_of(&secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unvalidated_session_is_refused_by_the_homeserver() {
    logs::capture();
    let stack = Stack::start(|_| {}).await;
    let answer = stack
        .post(
            "/_matrix/client/r0/register/email/requestToken",
            &json!({"client_secret": "unvalidated", "email": "bob@example.org", "send_attempt": 1}),
            None,
        )
        .await;
    let sid = answer.json()["sid"].as_str().expect("a sid").to_owned();
    let early = register_with(&stack, "bob", "m.login.email.identity", &sid, "unvalidated").await;
    assert_eq!(early.status, StatusCode::BAD_REQUEST, "{}", early.text());
    assert_eq!(early.json()["errcode"], "M_SESSION_NOT_VALIDATED");
}

/// Registers `user` with the UIA stage `stage`, the creds naming `sid`.
async fn register_with(
    stack: &Stack,
    user: &str,
    stage: &str,
    sid: &str,
    client_secret: &str,
) -> Answer {
    stack
        .complete_uia(
            "/_matrix/client/r0/register",
            &json!({"username": user, "password": "pw-Reg-42"}),
            stage,
            sid,
            client_secret,
        )
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn via_upstream_mode_lets_the_homeserver_check_first() {
    logs::capture();
    let stack = Stack::start(|c| {
        c.set("threepid.mode", "via-upstream");
    })
    .await;
    // The homeserver accepts the address and calls back; the sidecar mails the link.
    let sid = stack
        .verify_email("register", "carol@example.org", "via-one")
        .await;
    let registered =
        register_with(&stack, "carol", "m.login.email.identity", &sid, "via-one").await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.text());

    // The same address again: the homeserver's own answer reaches the client.
    let again = stack
        .post(
            "/_matrix/client/r0/register/email/requestToken",
            &json!({"client_secret": "via-two", "email": "carol@example.org", "send_attempt": 1}),
            None,
        )
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST, "{}", again.text());
    assert_eq!(again.json()["errcode"], "M_THREEPID_IN_USE");

    let metrics = http::get(&stack.sidecar.admin_url("/metrics")).await.text();
    assert_eq!(
        metric(
            &metrics,
            r#"threepid_sidecar_identity_calls_total{endpoint="requestToken",outcome="ok"}"#
        ),
        1,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_number_registers_with_m_login_msisdn_in_direct_mode() {
    logs::capture();
    let gateway = crate::common::webhook::SmsGateway::start().await;
    let stack = Stack::start(|c| {
        c.sms_gateway(&gateway)
            .set("sms.webhook_token", "gateway-secret");
    })
    .await;
    let answer = stack
        .post(
            "/_matrix/client/v3/register/msisdn/requestToken",
            &json!({"client_secret": "phone-one", "country": "GB", "phone_number": "07400 123456", "send_attempt": 1}),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["msisdn"], "447400123456");
    let sid = body["sid"].as_str().expect("a sid").to_owned();
    let submit_url = body["submit_url"]
        .as_str()
        .expect("a submit_url")
        .to_owned();

    let sms = gateway.wait_for(1, MAIL_WAIT).await.pop().expect("the SMS");
    assert_eq!(sms.to(), "+447400123456");
    let code = sms.code();
    assert_eq!(code.len(), 6, "{}", sms.text());
    let done = http::post_json(
        &submit_url,
        &json!({"sid": sid, "client_secret": "phone-one", "token": code}),
    )
    .await;
    assert_eq!(done.json(), json!({"success": true}));

    let registered = register_with(&stack, "dave", "m.login.msisdn", &sid, "phone-one").await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.text());
    let token = registered.json()["access_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let listed = http::send(
        Method::GET,
        &stack.sidecar.url("/_matrix/client/r0/account/3pid"),
        &[("authorization", &format!("Bearer {token}"))],
        "",
    )
    .await
    .json();
    assert_eq!(listed["threepids"][0]["medium"], "msisdn");
    assert_eq!(listed["threepids"][0]["address"], "447400123456");
}

/// `[notices]` on the legacy homeserver: a password reset by email, then the address removed
/// from the account; each time the address gets a notice, in the language asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_is_told_when_the_password_changes_and_when_it_is_removed() {
    logs::capture();
    let stack = Stack::start(|_| {}).await;
    let (user, email, password) = ("nora", "nora@example.org", "nora-Pass-1");
    let sid = stack.verify_email("register", email, "nora-reg").await;
    let registered = stack
        .complete_uia(
            "/_matrix/client/r0/register",
            &json!({"username": user, "password": password}),
            "m.login.email.identity",
            &sid,
            "nora-reg",
        )
        .await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.text());

    let sid = stack
        .verify_email("account/password", email, "nora-reset")
        .await;
    let reset = stack
        .complete_uia(
            "/_matrix/client/r0/account/password",
            &json!({"new_password": "nora-New-2"}),
            "m.login.email.identity",
            &sid,
            "nora-reset",
        )
        .await;
    assert_eq!(reset.status, StatusCode::OK, "{}", reset.text());
    let mails = stack.smtp.wait_for(3, MAIL_WAIT);
    let notice = &mails[2];
    assert_eq!(notice.to, email);
    assert_eq!(notice.subject, "[localhost] Your password was changed");
    assert!(notice.text.contains("127.0.0.*"), "{}", notice.text);

    // The reset signed every device out: in again, with the new password.
    let login = stack
        .post(
            "/_matrix/client/r0/login",
            &json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
                    "password": "nora-New-2"}),
            None,
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.text());
    let access_token = login.json()["access_token"]
        .as_str()
        .expect("a token")
        .to_owned();
    let removed = http::send(
        Method::POST,
        &stack.sidecar.url("/_matrix/client/v3/account/3pid/delete"),
        &[
            ("content-type", "application/json"),
            ("authorization", &format!("Bearer {access_token}")),
            ("accept-language", "nl"),
        ],
        json!({"medium": "email", "address": email}).to_string(),
    )
    .await;
    assert_eq!(removed.status, StatusCode::OK, "{}", removed.text());
    let mails = stack.smtp.wait_for(4, MAIL_WAIT);
    let notice = &mails[3];
    assert_eq!(notice.to, email);
    assert!(
        notice.raw.contains("Content-Language: nl"),
        "{}",
        notice.raw
    );
    // Gone from the account, as the homeserver says.
    let listed = http::send(
        Method::GET,
        &stack.sidecar.url("/_matrix/client/v3/account/3pid"),
        &[("authorization", &format!("Bearer {access_token}"))],
        "",
    )
    .await
    .json();
    assert_eq!(listed["threepids"], json!([]));
}
