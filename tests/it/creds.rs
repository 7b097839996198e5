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

/// How often the sidecar has looked a session up in its store.
async fn store_gets(env: &Env) -> f64 {
    let text = http::get(&env.sidecar.admin_url("/metrics")).await.text();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(r#"threepid_sidecar_store_call_seconds_count{operation="get"} "#)
        })
        .map_or(0.0, |v| v.trim().parse().expect("a number"))
}

/// POSTs without asserting anything.
async fn post_raw(env: &Env, path: &str, body: String) -> Answer {
    http::send(
        Method::POST,
        &env.sidecar.url(path),
        &[("content-type", "application/json")],
        body,
    )
    .await
}

/// The account takeover of the security review (finding 1): someone asks for a registration
/// (or add-address) mail to *your* address with their own client secret; you confirm it; they
/// use that session to reset your password. A session completes only the endpoints of its
/// own purpose, whatever `id_server` the client names, and a mismatch reaches nothing.
#[tokio::test]
async fn a_session_completes_only_the_endpoints_of_its_purpose() {
    let env = Env::start().await;
    let purposes = ["register", "account/password", "account/3pid"];
    // (endpoint, the purposes it accepts)
    let endpoints = [
        ("register", &["register"][..]),
        ("account/password", &["account/password"][..]),
        ("account/3pid", &["register", "account/3pid"][..]),
        ("account/3pid/add", &["account/3pid"][..]),
    ];
    let id_servers = [None, Some(IDENTITY_NAME), Some("vector.im")];
    for (n, purpose) in purposes.iter().enumerate() {
        let secret = format!("purpose-{n}");
        let sid = env
            .session(purpose, &secret, &format!("victim{n}@example.org"))
            .await;
        for (endpoint, accepts) in endpoints {
            for id_server in id_servers {
                let mut creds = json!({"sid": sid, "client_secret": secret});
                if let Some(id_server) = id_server {
                    creds["id_server"] = json!(id_server);
                }
                let body = match endpoint {
                    "account/3pid" => json!({"three_pid_creds": creds, "bind": false}),
                    "account/3pid/add" => creds,
                    _ => json!({"new_password": "pw", "username": "u",
                                "auth": {"type": "m.login.email.identity", "threepid_creds": creds}}),
                };
                let before = env.upstream.seen().len();
                let answer = post_raw(
                    &env,
                    &format!("/_matrix/client/v3/{endpoint}"),
                    body.to_string(),
                )
                .await;
                let what = format!("{purpose} session on {endpoint} (id_server {id_server:?})");
                if accepts.contains(purpose) {
                    assert_eq!(answer.status, StatusCode::OK, "{what}: {}", answer.text());
                    assert_eq!(env.upstream.seen().len(), before + 1, "{what}");
                } else {
                    assert_eq!(
                        answer.status,
                        StatusCode::FORBIDDEN,
                        "{what}: {}",
                        answer.text()
                    );
                    assert_eq!(answer.errcode(), "M_THREEPID_AUTH_FAILED", "{what}");
                    assert!(
                        answer.json()["error"]
                            .as_str()
                            .is_some_and(|e| e.contains("verified to")),
                        "{what}: {}",
                        answer.text()
                    );
                    assert_eq!(env.upstream.seen().len(), before, "{what}: forwarded");
                }
            }
        }
    }
}

#[tokio::test]
async fn a_requesttoken_for_another_purpose_starts_a_new_session() {
    let env = Env::start().await;
    let registration = env
        .session("register", "same-secret", "one@example.org")
        .await;
    // The same address and client secret, a higher send_attempt, another purpose.
    let answer = http::post_json(
        &env.sidecar
            .url("/_matrix/client/v3/account/password/email/requestToken"),
        &json!({"client_secret": "same-secret", "email": "one@example.org", "send_attempt": 2}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let reset = answer.json()["sid"].as_str().expect("a sid").to_owned();
    assert_ne!(reset, registration, "a session of its own");
    // And each completes only its own endpoint.
    let on_password = |sid: &str| {
        json!({"new_password": "pw", "auth": {"type": "m.login.email.identity",
               "threepid_creds": {"sid": sid, "client_secret": "same-secret"}}})
        .to_string()
    };
    let path = "/_matrix/client/v3/account/password";
    assert_eq!(
        post_raw(&env, path, on_password(&registration))
            .await
            .status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        post_raw(&env, path, on_password(&reset)).await.status,
        StatusCode::OK
    );
}

/// Finding 6: one body naming a thousand creds was a thousand store lookups.
#[tokio::test]
async fn creds_are_looked_up_at_most_a_handful_and_only_when_they_can_be_ours() {
    let env = Env::start().await;
    let sid = env
        .session("account/password", "handful", "h@example.org")
        .await;
    let before = store_gets(&env).await;
    let many: Vec<Value> = (0..1000)
        .map(|i| json!({"sid": format!("{i:024}"), "client_secret": "cs"}))
        .collect();
    let seen = env.upstream.seen().len();
    let answer = post_raw(
        &env,
        "/_matrix/client/v3/account/3pid",
        json!({"three_pid_creds": many}).to_string(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text());
    assert_eq!(answer.errcode(), "M_INVALID_PARAM");
    assert_eq!(env.upstream.seen().len(), seen, "nothing forwarded");
    assert_eq!(store_gets(&env).await, before, "nothing looked up");

    // Sids that cannot be ours (ours are 24 letters and digits) are not looked up either.
    for not_ours in [
        "short",
        "way-too-long-to-be-a-sid-of-ours-at-all",
        "has space 0123456789abc",
    ] {
        let (answer, _) = env
            .post(
                "v3",
                "account/3pid",
                &json!({"three_pid_creds": {"sid": not_ours, "client_secret": "cs"}}).to_string(),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    assert_eq!(store_gets(&env).await, before, "nothing looked up");
    // Element's two spellings of one session: one lookup.
    let creds = json!({"sid": sid, "client_secret": "handful"});
    env.post(
        "v3",
        "account/password",
        &json!({"auth": {"type": "m.login.email.identity", "threepid_creds": creds,
                         "threepidCreds": creds}})
        .to_string(),
    )
    .await;
    assert_eq!(store_gets(&env).await, before + 1.0);
}

/// A body the homeserver could read and the sidecar could not (Python's json takes `NaN`)
/// would carry creds nobody checked: refused here.
#[tokio::test]
async fn a_completion_body_that_is_not_json_is_refused_not_forwarded() {
    let env = Env::start().await;
    let seen = env.upstream.seen().len();
    for body in [
        r#"{"auth": {"threepid_creds": {"sid": "x", "client_secret": "y"}}, "n": NaN}"#,
        "not json",
        "[1, 2]",
    ] {
        let answer = post_raw(&env, "/_matrix/client/r0/account/password", body.into()).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            ["M_NOT_JSON", "M_BAD_JSON"].contains(&answer.errcode().as_str()),
            "{body}: {}",
            answer.text()
        );
    }
    assert_eq!(env.upstream.seen().len(), seen, "nothing forwarded");
}
