//! The creds rewrite (DESIGN §1 step 4) with bodies as real clients send them, on the r0
//! and v3 prefixes: creds that name one of the sidecar's sessions are pointed at its
//! identity listener (whatever `id_server` the client put there), lose `id_access_token`,
//! and stop asking for a bind; bodies that name no session of ours reach the homeserver
//! byte for byte. The homeserver is the echo stand-in, which keeps every body.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::http::{self, Answer};
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::upstream::{Received, Upstream};

const IDENTITY_NAME: &str = "id.sidecar.example.org:8090";
const PREFIXES: [&str; 2] = ["r0", "v3"];

struct Env {
    sidecar: Sidecar,
    upstream: Upstream,
}

impl Env {
    async fn start() -> Self {
        let upstream = Upstream::start().await;
        let mut config = TestConfig::new(&upstream.url());
        config.set("identity.server_name", IDENTITY_NAME);
        let sidecar = Sidecar::start(config).await;
        Self { sidecar, upstream }
    }

    /// A real session of the sidecar's (mail to the file transport) for the purpose of
    /// `endpoint` (`register`, `account/password` or `account/3pid`); its sid.
    async fn session(&self, endpoint: &str, client_secret: &str, email: &str) -> String {
        let answer = http::post_json(
            &self
                .sidecar
                .url(&format!("/_matrix/client/v3/{endpoint}/email/requestToken")),
            &json!({"client_secret": client_secret, "email": email, "send_attempt": 1}),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        answer.json()["sid"].as_str().expect("a sid").to_owned()
    }

    /// POSTs `body` (exact bytes) to `/_matrix/client/{prefix}/{endpoint}` and returns the
    /// answer and the body the upstream got.
    async fn post(&self, prefix: &str, endpoint: &str, body: &str) -> (Answer, Received) {
        let before = self.upstream.bodies().len();
        let path = format!("/_matrix/client/{prefix}/{endpoint}");
        let answer = http::send(
            Method::POST,
            &self.sidecar.url(&path),
            &[
                ("content-type", "application/json"),
                ("authorization", "Bearer syt_user_token"),
            ],
            body.to_owned(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
        let mut bodies = self.upstream.bodies();
        assert_eq!(bodies.len(), before + 1, "{path}: one request upstream");
        let received = bodies.pop().expect("a body");
        assert_eq!(received.method, "POST");
        // v3 may reach an r0-only upstream as r0 (upstream.path_compat); the endpoint is
        // the same.
        assert!(
            received.path == path || received.path == format!("/_matrix/client/r0/{endpoint}"),
            "{path} arrived as {}",
            received.path
        );
        (answer, received)
    }
}

/// Creds as they are when the sidecar has pointed them at itself.
fn ours(sid: &str, client_secret: &str) -> Value {
    json!({"sid": sid, "client_secret": client_secret, "id_server": IDENTITY_NAME})
}

#[tokio::test]
async fn element_registration_creds_with_vector_im_are_pointed_at_us() {
    let env = Env::start().await;
    for prefix in PREFIXES {
        let secret = format!("reg-{prefix}");
        let sid = env
            .session("register", &secret, &format!("reg-{prefix}@example.org"))
            .await;
        // Element's InteractiveAuth adds its default identity server and a token for it.
        let body = json!({
            "username": "alice", "password": "correct horse", "initial_device_display_name": "Element",
            "bind_email": true, "bind_msisdn": true,
            "auth": {
                "type": "m.login.email.identity", "session": "UIA-SESSION",
                "threepid_creds": {"sid": sid, "client_secret": secret,
                                   "id_server": "vector.im", "id_access_token": "ia-token"}
            }
        });
        let (_, received) = env.post(prefix, "register", &body.to_string()).await;
        assert_eq!(
            received.json(),
            json!({
                "username": "alice", "password": "correct horse", "initial_device_display_name": "Element",
                "bind_email": false, "bind_msisdn": false,
                "auth": {
                    "type": "m.login.email.identity", "session": "UIA-SESSION",
                    "threepid_creds": ours(&sid, &secret)
                }
            }),
            "{prefix}"
        );
    }
}

#[tokio::test]
async fn creds_without_id_server_get_ours() {
    let env = Env::start().await;
    for prefix in PREFIXES {
        let secret = format!("plain-{prefix}");
        let sid = env
            .session("register", &secret, &format!("plain-{prefix}@example.org"))
            .await;
        // What an MSC2263 client sends: no id_server at all.
        let body = json!({
            "username": "carol", "password": "pw",
            "auth": {"type": "m.login.email.identity", "session": "S",
                     "threepid_creds": {"sid": sid, "client_secret": secret}}
        });
        let (_, received) = env.post(prefix, "register", &body.to_string()).await;
        assert_eq!(
            received.json(),
            json!({
                "username": "carol", "password": "pw",
                "auth": {"type": "m.login.email.identity", "session": "S",
                         "threepid_creds": ours(&sid, &secret)}
            }),
            "{prefix}"
        );
    }
}

#[tokio::test]
async fn element_password_reset_sends_both_spellings_and_both_are_rewritten() {
    let env = Env::start().await;
    for prefix in PREFIXES {
        let secret = format!("pw-{prefix}");
        let sid = env
            .session(
                "account/password",
                &secret,
                &format!("pw-{prefix}@example.org"),
            )
            .await;
        let creds = json!({"sid": sid, "client_secret": secret, "id_server": "vector.im",
                           "id_access_token": "ia-token"});
        let body = json!({
            "new_password": "new pass", "logout_devices": true,
            "auth": {"type": "m.login.email.identity",
                     "threepid_creds": creds, "threepidCreds": creds}
        });
        let (_, received) = env
            .post(prefix, "account/password", &body.to_string())
            .await;
        assert_eq!(
            received.json(),
            json!({
                "new_password": "new pass", "logout_devices": true,
                "auth": {"type": "m.login.email.identity",
                         "threepid_creds": ours(&sid, &secret),
                         "threepidCreds": ours(&sid, &secret)}
            }),
            "{prefix}"
        );
    }
}

#[tokio::test]
async fn three_pid_creds_on_account_3pid_are_rewritten_and_not_bound() {
    let env = Env::start().await;
    for prefix in PREFIXES {
        let secret = format!("add-{prefix}");
        let sid = env
            .session(
                "account/3pid",
                &secret,
                &format!("add-{prefix}@example.org"),
            )
            .await;
        let body = json!({
            "three_pid_creds": {"sid": sid, "client_secret": secret, "id_server": "vector.im",
                                "id_access_token": "ia-token"},
            "bind": true
        });
        let (_, received) = env.post(prefix, "account/3pid", &body.to_string()).await;
        assert_eq!(
            received.json(),
            json!({"three_pid_creds": ours(&sid, &secret), "bind": false}),
            "{prefix}"
        );
        // `/account/3pid/add` carries the creds at the top level.
        let body = json!({
            "sid": sid, "client_secret": secret,
            "auth": {"type": "m.login.password", "user": "alice", "password": "pw"}
        });
        let (_, received) = env
            .post(prefix, "account/3pid/add", &body.to_string())
            .await;
        assert_eq!(
            received.json(),
            json!({
                "sid": sid, "client_secret": secret,
                "auth": {"type": "m.login.password", "user": "alice", "password": "pw"},
                "id_server": IDENTITY_NAME
            }),
            "{prefix}"
        );
    }
}

#[tokio::test]
async fn bodies_that_name_no_session_of_ours_arrive_byte_for_byte() {
    let env = Env::start().await;
    let sid = env
        .session("account/3pid", "the-right-secret", "real@example.org")
        .await;
    // Unusual spacing and key order, so that any re-serialisation would show.
    let cases = [
        // A session we never issued.
        (
            "register",
            r#"{ "auth" : {"type":"m.login.email.identity","session":"U",
                 "threepid_creds":{"sid":"notOurs0123456789abcdefgh","client_secret":"cs","id_server":"vector.im","id_access_token":"t"}},
               "bind_email" : true, "username":"bob" }"#
                .to_owned(),
        ),
        (
            "account/password",
            r#"{"auth":{"threepidCreds":{"sid":"notOurs0123456789abcdefgh","client_secret":"cs","id_server":"matrix.org"},"type":"m.login.email.identity"},
                "new_password":"x"}"#
                .to_owned(),
        ),
        (
            "account/3pid",
            r#"{"bind":true,"three_pid_creds":{"id_server":"matrix.org","id_access_token":"t","client_secret":"cs","sid":"notOurs0123456789abcdefgh"}}"#
                .to_owned(),
        ),
        // Our session, but the wrong client_secret: not ours.
        (
            "register",
            format!(
                r#"{{"bind_email":true,  "auth":{{"type":"m.login.email.identity","threepid_creds":{{"sid":"{sid}","client_secret":"a-wrong-secret","id_server":"vector.im","id_access_token":"t"}}}}}}"#
            ),
        ),
        (
            "account/3pid",
            format!(
                r#"{{ "three_pid_creds": {{"sid":"{sid}","client_secret":"a-wrong-secret","id_server":"vector.im"}}, "bind": true }}"#
            ),
        ),
        (
            "account/3pid/add",
            format!(r#"{{"sid":"{sid}","client_secret":"a-wrong-secret","auth":{{}}}}"#),
        ),
        // No creds at all.
        (
            "account/password",
            r#"{"new_password" :"x", "auth": {"type":"m.login.password"}}"#.to_owned(),
        ),
    ];
    for prefix in PREFIXES {
        for (endpoint, body) in &cases {
            let (_, received) = env.post(prefix, endpoint, body).await;
            assert_eq!(
                String::from_utf8_lossy(&received.body),
                body.as_str(),
                "{prefix}/{endpoint}"
            );
        }
    }
}
