//! The attacks of the security review in which the homeserver takes part, against the real
//! Synapse 1.3.1: an account takeover through a session verified for another purpose
//! (finding 1), and a client choosing the address the homeserver logs and rate-limits
//! (finding 2).

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::common::http;
use crate::common::logs;
use crate::flows::{Stack, link_in, query_param};

const MAIL_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

fn login(user: &str, password: &str) -> serde_json::Value {
    json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": user},
           "password": password})
}

/// Someone asks for a mail to *your* address with their own client secret — "finish creating
/// your account", or "add this address" — and you press the button. Before: they then reset
/// your password with that session (Synapse asked the sidecar, which vouched for it). Now
/// the sidecar refuses, whatever `id_server` they name, and the homeserver never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_victim_confirmed_for_something_else_does_not_reset_their_password() {
    logs::capture();
    let stack = Stack::start(|_| {}).await;
    let (victim, email, password) = ("victim", "victim@example.org", "victim-Pass-1");
    let sid = stack.verify_email("register", email, "victim-secret").await;
    let registered = stack
        .complete_uia(
            "/_matrix/client/r0/register",
            &json!({"username": victim, "password": password}),
            "m.login.email.identity",
            &sid,
            "victim-secret",
        )
        .await;
    assert_eq!(registered.status, StatusCode::OK, "{}", registered.text());
    let identity_name = stack.sidecar.config.build().identity.server_name.clone();

    for (n, lure) in ["register", "account/3pid"].into_iter().enumerate() {
        // The attacker's request; the mail goes to the victim, who confirms it.
        let secret = format!("attacker-secret-{n}");
        let mails = stack.smtp.messages().len();
        let answer = stack
            .post(
                &format!("/_matrix/client/v3/{lure}/email/requestToken"),
                &json!({"client_secret": secret, "email": email, "send_attempt": 1}),
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
        let sid = answer.json()["sid"].as_str().expect("a sid").to_owned();
        let mail = stack
            .smtp
            .wait_for(mails + 1, MAIL_WAIT)
            .pop()
            .expect("the lure");
        assert_eq!(mail.to, email);
        let link = link_in(&mail.text);
        assert_eq!(http::get(&link).await.status, StatusCode::OK);
        let confirmed = http::post_form(
            &stack
                .sidecar
                .url("/_matrix/client/unstable/threepid/email/submit_token"),
            &[
                ("sid", &sid),
                ("client_secret", &secret),
                ("token", &query_param(&link, "token")),
            ],
        )
        .await;
        assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.text());

        // The attacker's password reset, the UIA stage naming that session, with our identity
        // name written by themselves, another one, or none.
        for id_server in [Some(identity_name.as_str()), Some("vector.im"), None] {
            let start = stack
                .post(
                    "/_matrix/client/r0/account/password",
                    &json!({"new_password": "attacker-Pass-9"}),
                    None,
                )
                .await;
            assert_eq!(start.status, StatusCode::UNAUTHORIZED, "{}", start.text());
            let session = start.json()["session"]
                .as_str()
                .expect("a UIA session")
                .to_owned();
            let mut creds = json!({"sid": sid, "client_secret": secret});
            if let Some(id_server) = id_server {
                creds["id_server"] = json!(id_server);
            }
            let synapse_log = std::fs::read_to_string(stack.synapse.log_path()).unwrap_or_default();
            let resets_seen = synapse_log
                .matches("POST /_matrix/client/r0/account/password")
                .count();
            let takeover = stack
                .post(
                    "/_matrix/client/r0/account/password",
                    &json!({"new_password": "attacker-Pass-9",
                            "auth": {"type": "m.login.email.identity", "session": session,
                                     "threepid_creds": creds}}),
                    None,
                )
                .await;
            assert_eq!(
                takeover.status,
                StatusCode::FORBIDDEN,
                "{lure} session, id_server {id_server:?}: {}",
                takeover.text()
            );
            assert_eq!(takeover.errcode(), "M_THREEPID_AUTH_FAILED");
            let synapse_log = std::fs::read_to_string(stack.synapse.log_path()).unwrap_or_default();
            assert_eq!(
                synapse_log
                    .matches("POST /_matrix/client/r0/account/password")
                    .count(),
                resets_seen,
                "the refused reset reached the homeserver"
            );
        }
    }

    // The victim's password still works, the attacker's does not.
    let ok = stack
        .post("/_matrix/client/r0/login", &login(victim, password), None)
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    let refused = stack
        .post(
            "/_matrix/client/r0/login",
            &login(victim, "attacker-Pass-9"),
            None,
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
}

/// Behind a trusted proxy, a client wrote `X-Forwarded-For: 6.6.6.6` itself; Synapse ≤ 1.3
/// with `x_forwarded: true` believes the leftmost hop. It now gets one hop: the address the
/// proxy saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_homeserver_sees_the_address_the_proxy_saw_not_one_the_client_wrote() {
    logs::capture();
    let stack = Stack::start(|c| {
        c.set_toml("server.trusted_proxies", r#"["127.0.0.1"]"#);
    })
    .await;
    let answer = http::send(
        Method::POST,
        &stack.sidecar.url("/_matrix/client/v3/login"),
        &[
            ("content-type", "application/json"),
            // The client's own words, then what the (trusted) ingress appended.
            ("x-forwarded-for", "6.6.6.6, 203.0.113.9"),
        ],
        login("nobody", "wrong").to_string(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text());
    let synapse_log = std::fs::read_to_string(stack.synapse.log_path()).unwrap_or_default();
    let line = synapse_log
        .lines()
        .find(|l| l.contains("/_matrix/client/r0/login") && l.contains("POST"))
        .unwrap_or_else(|| panic!("Synapse logged no login:\n{synapse_log}"));
    assert!(line.contains("203.0.113.9"), "{line}");
    assert!(!synapse_log.contains("6.6.6.6"), "{line}");
}
