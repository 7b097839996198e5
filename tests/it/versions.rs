//! `GET /_matrix/client/versions` through the sidecar: the MSC2263 flag is injected into
//! the homeserver's answer and nothing else changes.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::http::{self, Answer};
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::upstream::{Canned, Upstream};

const VERSIONS: &str = "/_matrix/client/versions";
const FLAG: &str = "m.require_identity_server";

async fn bounded<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(10), test)
        .await
        .expect("the test finished in time")
}

async fn setup(canned: Canned) -> (Upstream, Sidecar) {
    let upstream = Upstream::start().await;
    upstream.set_versions(canned);
    let sidecar = Sidecar::start(TestConfig::new(&upstream.url())).await;
    (upstream, sidecar)
}

fn assert_content_length_is_right(answer: &Answer) {
    let declared = answer
        .headers
        .get("content-length")
        .expect("a Content-Length")
        .to_str()
        .expect("text")
        .parse::<usize>()
        .expect("a number");
    assert_eq!(declared, answer.body.len());
}

/// What Synapse and newer servers answer, with extra keys a future spec might add.
fn rich_body() -> Value {
    json!({
        "versions": ["r0.0.1", "r0.1.0", "r0.2.0", "r0.3.0", "r0.4.0", "r0.5.0", "v1.1"],
        "unstable_features": {
            "m.lazy_load_members": true,
            "m.id_access_token": false,
            "org.matrix.e2e_cross_signing": true,
            "org.example.nested": {"not": "a bool"}
        },
        "zz_server": {
            "name": "Synapse",
            "version": "1.3.1",
            "deep": [1, 2.5, null, {"x": "ünïcödé ✓"}]
        },
        "a_number": 1.5e10,
        "a_null": null,
        "an_empty_list": []
    })
}

#[tokio::test]
async fn the_flag_is_injected_and_everything_else_is_kept() {
    bounded(async {
        let original = rich_body();
        let (_upstream, sidecar) = setup(Canned::json(StatusCode::OK, &original)).await;
        let answer = http::get(&sidecar.url(VERSIONS)).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.headers["content-type"], "application/json");
        let got = answer.json();

        let mut want = original.clone();
        want["unstable_features"][FLAG] = Value::Bool(false);
        assert_eq!(got, want);
        // Key order, too, at both levels.
        let keys = |v: &Value| {
            v.as_object()
                .expect("an object")
                .keys()
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(keys(&got), keys(&original));
        assert_eq!(
            keys(&got["unstable_features"]),
            [
                "m.lazy_load_members",
                "m.id_access_token",
                "org.matrix.e2e_cross_signing",
                "org.example.nested",
                FLAG
            ]
        );
    })
    .await;
}

#[tokio::test]
async fn unstable_features_is_created_when_absent() {
    bounded(async {
        let (_upstream, sidecar) = setup(Canned::json(
            StatusCode::OK,
            &json!({"versions": ["r0.5.0"]}),
        ))
        .await;
        let answer = http::get(&sidecar.url(VERSIONS)).await;
        assert_eq!(
            answer.json(),
            json!({"versions": ["r0.5.0"], "unstable_features": {FLAG: false}})
        );
    })
    .await;
}

#[tokio::test]
async fn a_true_flag_is_turned_false() {
    bounded(async {
        let (_upstream, sidecar) = setup(Canned::json(
            StatusCode::OK,
            &json!({"versions": ["r0.5.0"], "unstable_features": {FLAG: true, "x": true}}),
        ))
        .await;
        let answer = http::get(&sidecar.url(VERSIONS)).await;
        assert_eq!(
            answer.json(),
            json!({"versions": ["r0.5.0"], "unstable_features": {FLAG: false, "x": true}})
        );
    })
    .await;
}

#[tokio::test]
async fn accept_encoding_is_not_sent_upstream() {
    bounded(async {
        let (upstream, sidecar) = setup(Canned::json(StatusCode::OK, &rich_body())).await;
        let headers = [
            ("accept-encoding", "gzip, deflate, br"),
            ("authorization", "Bearer t"),
        ];
        let answer = http::send(Method::GET, &sidecar.url(VERSIONS), &headers, Bytes::new()).await;
        assert_eq!(answer.status, StatusCode::OK);
        // The sidecar may read /versions itself too (path_compat); none of its requests
        // asks for compression either.
        let seen = upstream.seen();
        let asked: Vec<_> = seen.iter().filter(|s| s.path == VERSIONS).collect();
        assert!(
            asked
                .iter()
                .any(|s| s.header("authorization") == Some("Bearer t")),
            "the client's request reached the upstream: {asked:?}"
        );
        for versions in asked {
            assert_eq!(
                versions.header("accept-encoding"),
                None,
                "{:?}",
                versions.headers
            );
        }

        // Forwarded requests keep theirs.
        let other = "/_matrix/client/r0/pushrules/";
        let _ = http::send(Method::GET, &sidecar.url(other), &headers, Bytes::new()).await;
        let seen = upstream.seen();
        let forwarded = seen.iter().find(|s| s.path == other).expect("forwarded");
        assert_eq!(
            forwarded.header("accept-encoding"),
            Some("gzip, deflate, br")
        );
    })
    .await;
}

#[tokio::test]
async fn an_upstream_error_passes_unchanged() {
    bounded(async {
        let body =
            br#"{"errcode":"M_UNKNOWN","error":"Internal server error", "unstable_features": {}}"#;
        let (_upstream, sidecar) = setup(Canned::raw(
            StatusCode::INTERNAL_SERVER_ERROR,
            "application/json",
            &body[..],
        ))
        .await;
        let answer = http::get(&sidecar.url(VERSIONS)).await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(&answer.body[..], &body[..]);
        assert_eq!(answer.headers["content-type"], "application/json");
    })
    .await;
}

#[tokio::test]
async fn a_non_json_answer_passes_unchanged() {
    bounded(async {
        for body in [
            &b"<html><body>It works!</body></html>"[..],
            &br#"["versions", "r0.5.0"]"#[..],
            &br#"{"versions": ["r0.5.0"], "unstable_features": ["not", "an", "object"]}"#[..],
        ] {
            let (_upstream, sidecar) = setup(Canned::raw(StatusCode::OK, "text/html", body)).await;
            let answer = http::get(&sidecar.url(VERSIONS)).await;
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(&answer.body[..], body, "{}", answer.text());
            assert_eq!(answer.headers["content-type"], "text/html");
            assert_content_length_is_right(&answer);
        }
    })
    .await;
}

#[tokio::test]
async fn the_content_length_matches_the_rewritten_body() {
    bounded(async {
        for canned in [
            Canned::json(StatusCode::OK, &rich_body()),
            Canned::json(StatusCode::OK, &rich_body()).chunked(),
        ] {
            let original_len = canned.body.len();
            let (_upstream, sidecar) = setup(canned).await;
            let answer = http::get(&sidecar.url(VERSIONS)).await;
            assert_eq!(answer.status, StatusCode::OK);
            assert!(answer.body.len() > original_len, "the flag was added");
            assert_content_length_is_right(&answer);
            assert!(answer.headers.get("transfer-encoding").is_none());
        }
    })
    .await;
}

#[tokio::test]
async fn a_versions_answer_too_large_to_rewrite_passes_unchanged() {
    bounded(async {
        // Over the sidecar's 1 MiB rewrite limit, with and without a Content-Length.
        let big = json!({"versions": ["r0.5.0"], "padding": "p".repeat(2 << 20)});
        for canned in [
            Canned::json(StatusCode::OK, &big),
            Canned::json(StatusCode::OK, &big).chunked(),
        ] {
            let original = canned.body.clone();
            let (_upstream, sidecar) = setup(canned).await;
            let answer = http::get(&sidecar.url(VERSIONS)).await;
            assert_eq!(
                answer.status,
                StatusCode::OK,
                "{}",
                answer.text().chars().take(200).collect::<String>()
            );
            assert_eq!(answer.body.len(), original.len());
            assert!(answer.body == original, "the answer changed");
        }
    })
    .await;
}
