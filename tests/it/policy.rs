//! What happens to a requestToken that is not plain direct mode (DESIGN §2):
//! `threepid.id_server_param` (`ignore`, `forward`, `reject`) for clients that still send
//! `id_server`, and `threepid.mode = "via-upstream"`, where the homeserver checks the request
//! and then calls the identity listener's requestToken. The upstream is the echo stand-in,
//! which keeps every body it gets; mail goes to a real SMTP server.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::http::{self, Answer};
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::smtp::SmtpServer;
use crate::common::upstream::{Canned, Echo, Upstream};

const MAIL_WAIT: Duration = Duration::from_secs(10);
/// The sidecar's identity name: what the homeserver is told to ask.
const IDENTITY_NAME: &str = "id.sidecar.example.org:8090";

struct Env {
    sidecar: Sidecar,
    upstream: Upstream,
    smtp: SmtpServer,
}

impl Env {
    async fn start(extra: impl FnOnce(&mut TestConfig)) -> Self {
        let upstream = Upstream::start().await;
        let smtp = SmtpServer::start();
        let mut config = TestConfig::new(&upstream.url());
        config
            .smtp(&smtp)
            .set("email.send_timeout", "3s")
            .set("server.server_name", "example.org")
            .set("identity.server_name", IDENTITY_NAME);
        extra(&mut config);
        let sidecar = Sidecar::start(config).await;
        Self {
            sidecar,
            upstream,
            smtp,
        }
    }

    async fn request_token(&self, path: &str, body: &Value) -> Answer {
        http::post_json(&self.sidecar.url(path), body).await
    }

    /// Requests that reached the upstream on the client API.
    fn upstream_hits(&self) -> usize {
        self.upstream.hits("/_matrix/client/")
    }

    /// The one body the upstream got at `path`.
    fn forwarded(&self, path: &str) -> Value {
        let bodies = self.upstream.bodies_at(path);
        assert_eq!(bodies.len(), 1, "one request at {path}: {bodies:?}");
        assert_eq!(bodies[0].method, "POST");
        bodies[0].json()
    }

    /// POSTs to the identity listener over https, as the homeserver does.
    async fn identity_post(&self, path: &str, content_type: &str, body: String) -> Answer {
        let url = format!("https://localhost:{}{path}", self.sidecar.identity.port());
        let ca = self
            .sidecar
            .config
            .dir
            .path()
            .join("certs/identity-cert.pem");
        post_tls(&url, content_type, body, &ca).await
    }
}

/// A POST over https trusting only the certificate at `ca_pem`.
async fn post_tls(url: &str, content_type: &str, body: String, ca_pem: &std::path::Path) -> Answer {
    http::send_tls(
        Method::POST,
        url,
        &[("content-type", content_type)],
        body,
        ca_pem,
    )
    .await
}

fn email_body(client_secret: &str, email: &str) -> Value {
    json!({"client_secret": client_secret, "email": email, "send_attempt": 1})
}

/// `base` plus the keys of `extra`.
fn plus(base: Value, extra: Value) -> Value {
    let mut out = base;
    for (k, v) in extra.as_object().expect("an object") {
        out[k] = v.clone();
    }
    out
}

const PURPOSES: [&str; 3] = ["register", "account/password", "account/3pid"];

#[tokio::test]
async fn ignore_handles_a_clients_id_server_here() {
    let env = Env::start(|_| {}).await;
    let cases = [
        json!({"id_server": "vector.im", "id_access_token": "tok"}),
        // Older clients (matrix-js-sdk ≤ 27) send id_server without a token.
        json!({"id_server": "matrix.org"}),
    ];
    for (i, extra) in cases.into_iter().enumerate() {
        let address = format!("ignored{i}@example.org");
        let body = plus(email_body(&format!("ig{i}"), &address), extra);
        let answer = env
            .request_token("/_matrix/client/r0/register/email/requestToken", &body)
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{body}: {}", answer.text());
        let keys: Vec<String> = answer
            .json()
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, ["sid"], "the sidecar's own answer");
        let mails = env.smtp.wait_for(i + 1, MAIL_WAIT);
        assert_eq!(mails[i].to, address);
    }
    assert_eq!(env.upstream_hits(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn forward_hands_the_legacy_body_with_the_clients_id_server_to_the_upstream() {
    let env = Env::start(|c| {
        c.set("threepid.id_server_param", "forward");
    })
    .await;
    for (i, purpose) in PURPOSES.into_iter().enumerate() {
        let path = format!("/_matrix/client/r0/{purpose}/email/requestToken");
        // Everything a current client may send, and a key nobody knows.
        let body = json!({
            "client_secret": format!("fw{i}"), "email": "Forward@Example.org", "send_attempt": 2,
            "next_link": "https://app.example.org/done", "id_server": "id.example.com",
            "id_access_token": "tok", "something_new": {"x": 1}
        });
        let answer = env.request_token(&path, &body).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
        // The client gets the upstream's answer: here the echo of what it received.
        let echo: Echo = serde_json::from_slice(&answer.body).expect("the echo");
        assert_eq!(echo.method, "POST");
        assert_eq!(echo.path, path, "the same path");
        assert_eq!(
            env.forwarded(&path),
            json!({
                "client_secret": format!("fw{i}"), "email": "Forward@Example.org", "send_attempt": 2,
                "next_link": "https://app.example.org/done", "id_server": "id.example.com"
            }),
            "{path}: only the legacy keys, the client's id_server"
        );
        assert_eq!(
            echo.header("content-type"),
            Some("application/json"),
            "{path}"
        );
    }

    // id_server without id_access_token (and without next_link) is forwarded too.
    let path = "/_matrix/client/v3/register/email/requestToken";
    let body = plus(
        email_body("fw-no-token", "b@example.org"),
        json!({"id_server": "matrix.org"}),
    );
    let answer = env.request_token(path, &body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let forwarded = env.upstream.bodies().pop().expect("a forwarded body");
    // v3 may reach an r0-only upstream as r0 (upstream.path_compat).
    assert!(
        forwarded.path.ends_with("/register/email/requestToken"),
        "{}",
        forwarded.path
    );
    assert_eq!(
        forwarded.json(),
        json!({"client_secret": "fw-no-token", "email": "b@example.org", "send_attempt": 1, "id_server": "matrix.org"})
    );

    // msisdn: its own legacy keys.
    let path = "/_matrix/client/r0/account/3pid/msisdn/requestToken";
    let body = json!({
        "client_secret": "fw-sms", "country": "GB", "phone_number": "07400 123456",
        "send_attempt": 1, "id_server": "id.example.com", "id_access_token": "tok", "extra": 1
    });
    let answer = env.request_token(path, &body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        env.forwarded(path),
        json!({
            "client_secret": "fw-sms", "country": "GB", "phone_number": "07400 123456",
            "send_attempt": 1, "id_server": "id.example.com"
        })
    );

    // The sidecar sent nothing itself.
    assert!(env.smtp.messages().is_empty(), "no mail from the sidecar");

    // Without id_server the sidecar handles the request here.
    let hits = env.upstream_hits();
    let answer = env
        .request_token(
            "/_matrix/client/r0/register/email/requestToken",
            &email_body("fw-here", "here@example.org"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(answer.json()["sid"].is_string());
    assert_eq!(env.smtp.wait_for(1, MAIL_WAIT)[0].to, "here@example.org");
    assert_eq!(env.upstream_hits(), hits, "not forwarded");
}

#[tokio::test]
async fn reject_refuses_a_clients_id_server() {
    let env = Env::start(|c| {
        c.set("threepid.id_server_param", "reject");
    })
    .await;
    for purpose in PURPOSES {
        let path = format!("/_matrix/client/v3/{purpose}/email/requestToken");
        for extra in [
            json!({"id_server": "vector.im", "id_access_token": "tok"}),
            json!({"id_server": "matrix.org"}),
        ] {
            let body = plus(email_body("rj", "rj@example.org"), extra);
            let answer = env.request_token(&path, &body).await;
            assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{path}: {body}");
            assert_eq!(answer.errcode(), "M_SERVER_NOT_TRUSTED", "{path}: {body}");
        }
    }
    assert!(env.smtp.messages().is_empty(), "nothing sent");
    assert_eq!(env.upstream_hits(), 0, "nothing forwarded");
    // Without id_server: handled.
    let answer = env
        .request_token(
            "/_matrix/client/v3/register/email/requestToken",
            &email_body("rj", "rj@example.org"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    env.smtp.wait_for(1, MAIL_WAIT);
}

#[tokio::test]
async fn via_upstream_asks_the_homeserver_with_our_identity_name_and_legacy_keys_only() {
    let env = Env::start(|c| {
        c.set("threepid.mode", "via-upstream");
    })
    .await;
    for (i, purpose) in PURPOSES.into_iter().enumerate() {
        let path = format!("/_matrix/client/r0/{purpose}/email/requestToken");
        let body = json!({
            "client_secret": format!("vu{i}"), "email": "Via@Example.org", "send_attempt": 1,
            "next_link": "https://app.example.org/", "id_server": "vector.im",
            "id_access_token": "tok", "unknown": true
        });
        let answer = env.request_token(&path, &body).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
        let echo: Echo = serde_json::from_slice(&answer.body).expect("the upstream's answer");
        assert_eq!(echo.path, path);
        assert_eq!(
            env.forwarded(&path),
            json!({
                "client_secret": format!("vu{i}"), "email": "Via@Example.org", "send_attempt": 1,
                "next_link": "https://app.example.org/", "id_server": IDENTITY_NAME
            }),
            "{path}"
        );
    }
    // msisdn: the homeserver's answer gains the submit_url clients need.
    let path = "/_matrix/client/r0/register/msisdn/requestToken";
    let body = json!({
        "client_secret": "vu-sms", "country": "GB", "phone_number": "07400 123456",
        "send_attempt": 1, "id_access_token": "tok"
    });
    let answer = env.request_token(path, &body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(
        env.forwarded(path),
        json!({
            "client_secret": "vu-sms", "country": "GB", "phone_number": "07400 123456",
            "send_attempt": 1, "id_server": IDENTITY_NAME
        })
    );
    let answer = answer.json();
    assert_eq!(answer["path"], path, "the upstream's answer: {answer}");
    assert_eq!(
        answer["submit_url"],
        format!(
            "http://{}/_matrix/client/unstable/threepid/msisdn/submit_token",
            env.sidecar.client
        )
    );
    // Until the homeserver calls back, nothing is sent.
    assert!(env.smtp.messages().is_empty());
}

#[tokio::test]
async fn via_upstream_the_identity_request_token_sends_the_mail_of_the_noted_purpose() {
    let env = Env::start(|c| {
        c.set("threepid.mode", "via-upstream");
    })
    .await;
    let identity_path = "/_matrix/identity/api/v1/validate/email/requestToken";

    // A password reset; the homeserver (Synapse) calls back with JSON.
    let answer = env
        .request_token(
            "/_matrix/client/r0/account/password/email/requestToken",
            &email_body("reset-cs", "Reset@Example.org"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    // A legacy homeserver passes the address on as the client spelled it.
    let callback = json!({
        "client_secret": "reset-cs", "email": "Reset@Example.org", "send_attempt": 1,
        "next_link": "https://app.example.org/reset"
    });
    let answer = env
        .identity_post(identity_path, "application/json", callback.to_string())
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let sid = answer.json()["sid"].as_str().expect("a sid").to_owned();
    let mails = env.smtp.wait_for(1, MAIL_WAIT);
    assert_eq!(mails[0].to, "reset@example.org");
    assert_eq!(mails[0].subject, "[example.org] Password reset");
    assert!(mails[0].text.contains(&sid), "the link carries the sid");
    // It is a real session: the mailed token validates it.
    let link = mails[0]
        .text
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .expect("a link in the mail");
    let token = url::Url::parse(link)
        .expect("a URL")
        .query_pairs()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .expect("a token in the link");
    let submitted = http::post_json(
        &env.sidecar
            .url("/_matrix/client/unstable/threepid/email/submit_token"),
        &json!({"sid": sid, "client_secret": "reset-cs", "token": token}),
    )
    .await;
    assert_eq!(submitted.status, StatusCode::OK, "{}", submitted.text());

    // Adding an address; the homeserver (Dendrite) calls back with a form.
    let answer = env
        .request_token(
            "/_matrix/client/v3/account/3pid/email/requestToken",
            &email_body("add-cs", "added@example.org"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("client_secret", "add-cs"),
            ("email", "added@example.org"),
            ("send_attempt", "1"),
        ])
        .finish();
    let answer = env
        .identity_post(identity_path, "application/x-www-form-urlencoded", form)
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let sid = answer.json()["sid"].as_str().expect("a sid").to_owned();
    let mails = env.smtp.wait_for(2, MAIL_WAIT);
    assert_eq!(mails[1].to, "added@example.org");
    assert_eq!(mails[1].subject, "[example.org] Validate your email");
    assert!(
        mails[1].text.contains("add this email address"),
        "the add-3PID text: {}",
        mails[1].text
    );
    assert!(mails[1].text.contains(&sid));
}

/// Finding 3: whoever reached the identity listener could mail or text any address, without
/// a limit and past `allowed_addresses`. Only a request the client listener accepted (and
/// noted) gets a message, once.
#[tokio::test]
async fn via_upstream_an_identity_request_token_no_client_asked_for_sends_nothing() {
    let env = Env::start(|c| {
        c.set("threepid.mode", "via-upstream");
    })
    .await;
    let identity_path = "/_matrix/identity/api/v1/validate/email/requestToken";
    let callback = email_body("gun", "target@example.org").to_string();
    for _ in 0..3 {
        let answer = env
            .identity_post(identity_path, "application/json", callback.clone())
            .await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text());
        assert_eq!(answer.errcode(), "M_FORBIDDEN");
    }
    // One client request: one message, and the note is spent.
    let answer = env
        .request_token(
            "/_matrix/client/v3/register/email/requestToken",
            &email_body("gun", "target@example.org"),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let answer = env
        .identity_post(identity_path, "application/json", callback.clone())
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let answer = env
        .identity_post(identity_path, "application/json", callback)
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.smtp.messages().len(), 1, "exactly one mail");
}

#[tokio::test]
async fn via_upstream_the_identity_request_token_keeps_allowed_addresses_and_the_address_limit() {
    let env = Env::start(|c| {
        c.set("threepid.mode", "via-upstream")
            .set_toml(
                "threepid.allowed_addresses",
                r#"[{ medium = "email", pattern = "@example\\.org$" }]"#,
            )
            .set_toml(
                "rate_limit.request_token_per_address",
                "{ per_second = 0.001, burst = 1 }",
            );
    })
    .await;
    let identity_path = "/_matrix/identity/api/v1/validate/email/requestToken";
    let answer = env
        .identity_post(
            identity_path,
            "application/json",
            email_body("x", "someone@not-allowed.test").to_string(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text());
    assert_eq!(answer.errcode(), "M_THREEPID_DENIED");
    // Two client requests for one address (two client secrets): the second is over the
    // address's limit where its token would be issued.
    for (secret, status) in [
        ("one", StatusCode::OK),
        ("two", StatusCode::TOO_MANY_REQUESTS),
    ] {
        let answer = env
            .request_token(
                "/_matrix/client/v3/register/email/requestToken",
                &email_body(secret, "limited@example.org"),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let answer = env
            .identity_post(
                identity_path,
                "application/json",
                email_body(secret, "limited@example.org").to_string(),
            )
            .await;
        assert_eq!(answer.status, status, "{secret}: {}", answer.text());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(env.smtp.messages().len(), 1, "one mail");
}

#[tokio::test]
async fn outside_via_upstream_the_identity_request_token_is_unrecognized() {
    let env = Env::start(|_| {}).await;
    for path in [
        "/_matrix/identity/api/v1/validate/email/requestToken",
        "/_matrix/identity/api/v1/validate/msisdn/requestToken",
        "/_matrix/identity/v2/validate/email/requestToken",
    ] {
        let answer = env
            .identity_post(
                path,
                "application/json",
                email_body("x", "x@example.org").to_string(),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            answer.text()
        );
        assert_eq!(answer.errcode(), "M_UNRECOGNIZED", "{path}");
    }
    assert!(env.smtp.messages().is_empty(), "nothing sent");
}

#[tokio::test]
async fn the_upstreams_refusal_reaches_the_client_unchanged() {
    let refusal = br#"{"errcode": "M_THREEPID_IN_USE", "error": "Email is already in use"}"#;
    for (mode, param) in [("via-upstream", "ignore"), ("direct", "forward")] {
        let env = Env::start(|c| {
            c.set("threepid.mode", mode)
                .set("threepid.id_server_param", param);
        })
        .await;
        let path = "/_matrix/client/r0/register/email/requestToken";
        env.upstream.answer(
            path,
            Canned::raw(StatusCode::BAD_REQUEST, "application/json", &refusal[..]),
        );
        let body = plus(
            email_body("in-use", "taken@example.org"),
            json!({"id_server": "id.example.com"}),
        );
        let answer = env.request_token(path, &body).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{mode}");
        assert_eq!(&answer.body[..], &refusal[..], "{mode}: byte for byte");
        assert_eq!(answer.errcode(), "M_THREEPID_IN_USE");
        assert_eq!(env.upstream.bodies_at(path).len(), 1, "{mode}");
        assert!(env.smtp.messages().is_empty(), "{mode}: nothing sent");
    }
}
