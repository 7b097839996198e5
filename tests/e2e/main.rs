//! End-to-end tests: the sidecar in front of a real legacy homeserver (Synapse 1.3.1, see
//! `tests/common/synapse.rs`). Needs `scripts/install-test-deps` first.

mod attacks;
mod browser;
mod clients;
#[path = "../common/mod.rs"]
mod common;
mod flows;
mod web_client;

use common::synapse::{Synapse, SynapseOptions};

fn legacy_synapse() -> Synapse {
    Synapse::start(SynapseOptions {
        identity_server_name: "localhost:8443".into(),
        ..SynapseOptions::default()
    })
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn synapse_starts_and_serves_r0_versions() {
    let synapse = legacy_synapse();

    let (status, body) = synapse.get("/_matrix/client/versions");

    assert_eq!(status, 200, "{body}");
    let versions = json(&body)["versions"].clone();
    let versions: Vec<&str> = versions
        .as_array()
        .expect("versions is an array")
        .iter()
        .map(|v| v.as_str().expect("a version is a string"))
        .collect();
    assert!(versions.contains(&"r0.5.0"), "{versions:?}");
    assert!(!versions.contains(&"v1.1"), "{versions:?}");
}

/// The baseline the sidecar exists for: a legacy homeserver refuses requestToken without
/// `id_server`.
#[test]
fn legacy_synapse_requires_id_server_on_register_request_token() {
    let synapse = legacy_synapse();

    let (status, body) = synapse.post_json(
        "/_matrix/client/r0/register/email/requestToken",
        r#"{"client_secret": "cs1", "email": "alice@example.org", "send_attempt": 1}"#,
    );

    assert_eq!(status, 400, "{body}");
    assert_eq!(json(&body)["errcode"], "M_MISSING_PARAM", "{body}");
}
