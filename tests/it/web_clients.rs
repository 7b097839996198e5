//! What a web client on another origin needs (DESIGN §3, §6): the CORS headers on every
//! answer the sidecar writes itself, `OPTIONS` preflights on its own paths answered without
//! the store, a limit or the homeserver, `v1.1` in `/versions` while the v3→r0 mapping is
//! on, `/account/3pid/add` bridged to a legacy homeserver's `/account/3pid`, and "no such
//! endpoint" answered as v1.x clients expect it. The homeserver is the echo stand-in.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::http::{self, Answer};
use crate::common::redis::RedisServer;
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::upstream::{Canned, Upstream};

const IDENTITY_NAME: &str = "id.sidecar.example.org:8090";

fn assert_cors(answer: &Answer, what: &str) {
    let header = |name: &str| {
        answer
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what} ({}): no {name}", answer.status))
            .to_owned()
    };
    assert_eq!(header("access-control-allow-origin"), "*", "{what}");
    let methods = header("access-control-allow-methods");
    for method in ["GET", "POST", "PUT", "DELETE", "OPTIONS"] {
        assert!(methods.contains(method), "{what}: {methods}");
    }
    let allowed = header("access-control-allow-headers").to_ascii_lowercase();
    for name in ["x-requested-with", "content-type", "authorization"] {
        assert!(allowed.contains(name), "{what}: {allowed}");
    }
}

async fn sidecar(upstream: &Upstream, configure: impl FnOnce(&mut TestConfig)) -> Sidecar {
    let mut config = TestConfig::new(&upstream.url());
    config.set("identity.server_name", IDENTITY_NAME);
    configure(&mut config);
    Sidecar::start(config).await
}

async fn post(sidecar: &Sidecar, path: &str, body: &Value) -> Answer {
    http::post_json(&sidecar.url(path), body).await
}

async fn request_token(sidecar: &Sidecar, endpoint: &str, secret: &str, email: &str) -> Answer {
    post(
        sidecar,
        &format!("/_matrix/client/v3/{endpoint}/email/requestToken"),
        &json!({"client_secret": secret, "email": email, "send_attempt": 1}),
    )
    .await
}

/// A request head that promises a body which never comes: 408 once
/// `header_read_timeout` has passed.
async fn trickled_request_token(sidecar: &Sidecar) -> Answer {
    let mut stream = tokio::net::TcpStream::connect(sidecar.client)
        .await
        .expect("connect");
    stream
        .write_all(
            b"POST /_matrix/client/v3/register/email/requestToken HTTP/1.1\r\nhost: x\r\n\
              connection: close\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n{",
        )
        .await
        .expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    let mut lines = head.lines();
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let mut headers = hyper::HeaderMap::new();
    for line in lines {
        let (k, v) = line.split_once(':').expect("a header line");
        headers.append(
            hyper::header::HeaderName::from_bytes(k.trim().as_bytes()).expect("a name"),
            v.trim().parse().expect("a value"),
        );
    }
    Answer {
        version: hyper::Version::HTTP_11,
        status: StatusCode::from_u16(status).expect("a status"),
        headers,
        body: bytes::Bytes::from(body.to_owned()),
    }
}

#[tokio::test]
async fn every_answer_the_sidecar_writes_itself_carries_the_cors_headers() {
    let upstream = Upstream::start().await;
    let redis = RedisServer::start();
    let sidecar = sidecar(&upstream, |c| {
        c.set("upstream.path_compat", "r0")
            .set("upstream.response_timeout", "300ms")
            .set("server.header_read_timeout", "1s")
            .set("server.max_body_bytes", 1024)
            .set_toml(
                "threepid.allowed_addresses",
                r#"[{ medium = "email", pattern = "@example\\.org$" }]"#,
            );
    })
    .await;
    let mut seen = Vec::new();
    let mut check = |answer: Answer, status: StatusCode, what: &str| {
        assert_eq!(answer.status, status, "{what}: {}", answer.text());
        assert_cors(&answer, what);
        seen.push(status.as_u16());
    };

    // Success, and the answers the sidecar computes from the homeserver's.
    let ok = request_token(&sidecar, "account/3pid", "cors-1", "a@example.org").await;
    let sid = ok.json()["sid"].as_str().expect("a sid").to_owned();
    check(ok, StatusCode::OK, "requestToken");
    check(
        http::get(&sidecar.url("/_matrix/client/versions")).await,
        StatusCode::OK,
        "the rewritten /versions",
    );
    upstream.answer(
        "/_matrix/client/r0/no/such/endpoint",
        Canned::json(
            StatusCode::BAD_REQUEST,
            &json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"}),
        ),
    );
    check(
        http::get(&sidecar.url("/_matrix/client/v3/no/such/endpoint")).await,
        StatusCode::NOT_FOUND,
        "an unknown endpoint",
    );
    // Every Matrix error class.
    check(
        post(
            &sidecar,
            "/_matrix/client/v3/register/email/requestToken",
            &json!([1]),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "400",
    );
    check(
        request_token(&sidecar, "register", "cors-2", "a@elsewhere.test").await,
        StatusCode::FORBIDDEN,
        "403 (allowed_addresses)",
    );
    check(
        post(
            &sidecar,
            "/_matrix/client/v3/account/password",
            &json!({"new_password": "x", "auth": {"type": "m.login.email.identity",
                    "threepid_creds": {"sid": sid, "client_secret": "cors-1"}}}),
        )
        .await,
        StatusCode::FORBIDDEN,
        "403 (a session verified for another purpose)",
    );
    check(
        post(
            &sidecar,
            "/_matrix/client/unstable/threepid/msisdn/submit_token",
            &json!({"sid": "a".repeat(24), "client_secret": "x", "token": "123456"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "404 (no such session)",
    );
    let json_submit = post(
        &sidecar,
        "/_matrix/client/unstable/threepid/email/submit_token",
        &json!({"sid": sid, "client_secret": "cors-1", "token": "wrong"}),
    )
    .await;
    check(json_submit, StatusCode::BAD_REQUEST, "the JSON submit");
    check(
        trickled_request_token(&sidecar).await,
        StatusCode::REQUEST_TIMEOUT,
        "408",
    );
    check(
        post(
            &sidecar,
            "/_matrix/client/v3/register/email/requestToken",
            &json!({"client_secret": "x".repeat(2000)}),
        )
        .await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "413",
    );
    check(
        http::get(&sidecar.url("/slow?ms=3000")).await,
        StatusCode::GATEWAY_TIMEOUT,
        "504",
    );
    drop(sidecar);

    // 429: a limit of one request.
    let limited = self::sidecar(&upstream, |c| {
        c.set_toml(
            "rate_limit.request_token_per_ip",
            "{ per_second = 0.001, burst = 1 }",
        );
    })
    .await;
    let first = request_token(&limited, "register", "cors-3", "b@example.org").await;
    assert_eq!(first.status, StatusCode::OK);
    check(
        request_token(&limited, "register", "cors-4", "c@example.org").await,
        StatusCode::TOO_MANY_REQUESTS,
        "429",
    );

    // 502: the homeserver is unreachable.
    let gone = {
        let port = crate::common::ports::free_port();
        let mut config = TestConfig::new(&format!("http://127.0.0.1:{port}"));
        config.set("upstream.connect_timeout", "1s");
        Sidecar::start(config).await
    };
    check(
        http::get(&gone.url("/_matrix/client/v3/sync")).await,
        StatusCode::BAD_GATEWAY,
        "502",
    );
    check(
        http::get(&gone.url("/_matrix/client/versions")).await,
        StatusCode::BAD_GATEWAY,
        "502 on /versions",
    );

    // 503: the store is unreachable.
    let mut redis = redis;
    let stored = self::sidecar(&upstream, |c| {
        c.redis(&redis);
    })
    .await;
    redis.stop();
    check(
        request_token(&stored, "register", "cors-5", "d@example.org").await,
        StatusCode::SERVICE_UNAVAILABLE,
        "503",
    );
    assert_eq!(
        seen,
        [
            200, 200, 404, 400, 403, 403, 404, 400, 408, 413, 504, 429, 502, 502, 503
        ]
    );
}

#[tokio::test]
async fn forwarded_answers_keep_the_homeservers_headers() {
    let upstream = Upstream::start().await;
    let sidecar = sidecar(&upstream, |c| {
        c.set("upstream.path_compat", "r0");
    })
    .await;
    upstream.answer(
        "/_matrix/client/r0/profile/x",
        Canned::json(StatusCode::OK, &json!({"displayname": "X"})),
    );
    let answer = http::get(&sidecar.url("/_matrix/client/v3/profile/x")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, r#"{"displayname":"X"}"#);
    assert!(
        answer.headers.get("access-control-allow-origin").is_none(),
        "the stand-in sends none, so none is added: {:?}",
        answer.headers
    );
}

async fn preflight(sidecar: &Sidecar, path: &str) -> Answer {
    http::send(
        Method::OPTIONS,
        &sidecar.url(path),
        &[
            ("origin", "http://app.example.test"),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "authorization, content-type",
            ),
        ],
        "",
    )
    .await
}

const OUR_PATHS: [&str; 10] = [
    "/_matrix/client/versions",
    "/_matrix/client/v3/register/email/requestToken",
    "/_matrix/client/r0/account/password/email/requestToken",
    "/_matrix/client/v3/account/3pid/msisdn/requestToken",
    "/_matrix/client/unstable/threepid/email/submit_token",
    "/_matrix/client/unstable/threepid/msisdn/submit_token",
    "/_matrix/client/v3/register",
    "/_matrix/client/v3/account/password",
    "/_matrix/client/v3/account/3pid",
    "/_matrix/client/v3/account/3pid/add",
];

#[tokio::test]
async fn preflights_on_our_paths_are_answered_here_without_store_limit_or_homeserver() {
    let upstream = Upstream::start().await;
    // The store is down: a preflight does not need it.
    let mut redis = RedisServer::start();
    let stored = sidecar(&upstream, |c| {
        c.redis(&redis);
    })
    .await;
    redis.stop();
    for path in OUR_PATHS {
        let answer = preflight(&stored, path).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}: {}", answer.text());
        assert_cors(&answer, path);
        assert_eq!(answer.json(), json!({}), "{path}");
    }
    assert_eq!(upstream.seen().len(), 0, "nothing reached the homeserver");

    // Nor is a preflight counted against a limit of one request.
    let limited = sidecar(&upstream, |c| {
        c.set_toml(
            "rate_limit.request_token_per_ip",
            "{ per_second = 0.001, burst = 1 }",
        )
        .set_toml(
            "rate_limit.submit_per_ip",
            "{ per_second = 0.001, burst = 1 }",
        );
    })
    .await;
    for _ in 0..3 {
        for path in OUR_PATHS {
            assert_eq!(preflight(&limited, path).await.status, StatusCode::OK);
        }
    }
    let answer = request_token(&limited, "register", "preflight-1", "p@example.org").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(upstream.seen().len(), 0, "nothing reached the homeserver");

    // OPTIONS elsewhere is the homeserver's, answered as it answers.
    let answer = preflight(&limited, "/_matrix/client/v3/sync").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(upstream.hits("/_matrix/client/v3/sync"), 1);
    assert!(answer.headers.get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn v1_1_is_advertised_only_while_the_mapping_is_on() {
    let upstream = Upstream::start().await;
    upstream.set_versions(Canned::json(
        StatusCode::OK,
        &json!({"versions": ["r0.0.1", "r0.5.0"], "unstable_features": {"m.lazy_load_members": true}}),
    ));
    let versions = |sidecar: &Sidecar| {
        let url = sidecar.url("/_matrix/client/versions");
        async move {
            let answer = http::get(&url).await;
            assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
            assert_cors(&answer, "/versions");
            answer.json()
        }
    };
    let auto = sidecar(&upstream, |c| {
        c.set("upstream.path_compat", "auto");
    })
    .await;
    assert_eq!(
        versions(&auto).await,
        json!({"versions": ["r0.0.1", "r0.5.0", "v1.1"],
               "unstable_features": {"m.lazy_load_members": true, "m.require_identity_server": false}})
    );
    let several = sidecar(&upstream, |c| {
        c.set("upstream.path_compat", "r0")
            .set_toml("upstream.advertise_versions", r#"["v1.1", "v1.2"]"#);
    })
    .await;
    assert_eq!(
        versions(&several).await["versions"],
        json!(["r0.0.1", "r0.5.0", "v1.1", "v1.2"])
    );
    for (mode, advertise) in [("off", r#"["v1.1"]"#), ("r0", "[]")] {
        let none = sidecar(&upstream, |c| {
            c.set("upstream.path_compat", mode)
                .set_toml("upstream.advertise_versions", advertise);
        })
        .await;
        assert_eq!(
            versions(&none).await["versions"],
            json!(["r0.0.1", "r0.5.0"]),
            "{mode} {advertise}"
        );
    }
    // A homeserver that speaks v1.x turns the mapping off: nothing is added.
    upstream.set_versions(Canned::json(
        StatusCode::OK,
        &json!({"versions": ["r0.6.1", "v1.11"]}),
    ));
    assert_eq!(
        versions(&auto).await["versions"],
        json!(["r0.6.1", "v1.11"])
    );
}

#[tokio::test]
async fn account_3pid_add_is_bridged_for_our_add_threepid_sessions_while_the_mapping_is_on() {
    let upstream = Upstream::start().await;
    let mapped = sidecar(&upstream, |c| {
        c.set("upstream.path_compat", "r0");
    })
    .await;
    let sid = request_token(&mapped, "account/3pid", "bridge-1", "e@example.org")
        .await
        .json()["sid"]
        .as_str()
        .expect("a sid")
        .to_owned();
    let add = |sidecar: &Sidecar, body: Value| {
        let url = sidecar.url("/_matrix/client/v3/account/3pid/add?access_token=q");
        async move {
            http::send(
                Method::POST,
                &url,
                &[
                    ("content-type", "application/json"),
                    ("authorization", "Bearer syt_user"),
                ],
                serde_json::to_vec(&body).expect("JSON"),
            )
            .await
        }
    };
    // Element's add-email body, with the UIA it sends on retry: the legacy endpoint asks for
    // none, so it is dropped.
    let answer = add(
        &mapped,
        json!({"sid": sid, "client_secret": "bridge-1",
               "auth": {"type": "m.login.password", "password": "pw", "session": "U"}}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let received = upstream.bodies().pop().expect("a request upstream");
    assert_eq!(received.method, "POST");
    assert_eq!(
        received.uri,
        "/_matrix/client/r0/account/3pid?access_token=q"
    );
    assert_eq!(
        received.json(),
        json!({"three_pid_creds": {"sid": sid, "client_secret": "bridge-1", "id_server": IDENTITY_NAME},
               "bind": false})
    );
    let seen = upstream.seen().pop().expect("a request head");
    assert_eq!(seen.header("authorization"), Some("Bearer syt_user"));

    // A session that is not ours: forwarded as it is (v3 mapped to r0).
    let theirs = r#"{"sid":"theirs","client_secret":"cs","auth":{}}"#;
    let answer = http::send(
        Method::POST,
        &mapped.url("/_matrix/client/v3/account/3pid/add"),
        &[("content-type", "application/json")],
        theirs,
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let received = upstream.bodies().pop().expect("a request upstream");
    assert_eq!(received.uri, "/_matrix/client/r0/account/3pid/add");
    assert_eq!(received.body, theirs);

    // A registration session does not add an address through /3pid/add.
    let reg = request_token(&mapped, "register", "bridge-2", "f@example.org")
        .await
        .json()["sid"]
        .as_str()
        .expect("a sid")
        .to_owned();
    let before = upstream.seen().len();
    let answer = add(&mapped, json!({"sid": reg, "client_secret": "bridge-2"})).await;
    assert_eq!(answer.status, StatusCode::FORBIDDEN, "{}", answer.text());
    assert_eq!(answer.errcode(), "M_THREEPID_AUTH_FAILED");
    assert_eq!(upstream.seen().len(), before, "nothing forwarded");

    // Without the mapping the homeserver has /3pid/add: only the creds are pointed at us.
    let native = sidecar(&upstream, |c| {
        c.set("upstream.path_compat", "off");
    })
    .await;
    let sid = request_token(&native, "account/3pid", "bridge-3", "g@example.org")
        .await
        .json()["sid"]
        .as_str()
        .expect("a sid")
        .to_owned();
    let answer = add(&native, json!({"sid": sid, "client_secret": "bridge-3"})).await;
    assert_eq!(answer.status, StatusCode::OK);
    let received = upstream.bodies().pop().expect("a request upstream");
    assert_eq!(
        received.uri,
        "/_matrix/client/v3/account/3pid/add?access_token=q"
    );
    assert_eq!(
        received.json(),
        json!({"sid": sid, "client_secret": "bridge-3", "id_server": IDENTITY_NAME})
    );
}

#[tokio::test]
async fn no_such_endpoint_becomes_404_m_unrecognized_only_while_the_mapping_is_on() {
    let upstream = Upstream::start().await;
    let unrecognized = json!({"errcode": "M_UNRECOGNIZED", "error": "Unrecognized request"});
    upstream.answer(
        "/_matrix/client/r0/unknown",
        Canned::json(StatusCode::BAD_REQUEST, &unrecognized),
    );
    upstream.answer(
        "/_matrix/client/v1/auth_metadata",
        Canned::raw(
            StatusCode::NOT_FOUND,
            "text/html",
            "<html><title>404 - No Such Resource</title></html>",
        ),
    );
    upstream.answer(
        "/_matrix/client/r0/wrong-method",
        Canned::raw(StatusCode::METHOD_NOT_ALLOWED, "text/html", "nope").chunked(),
    );
    let other_400 = r#"{"errcode":"M_BAD_JSON","error":"Content not JSON."}"#;
    upstream.answer(
        "/_matrix/client/r0/bad",
        Canned::raw(StatusCode::BAD_REQUEST, "application/json", other_400),
    );
    let json_404 = r#"{"errcode":"M_NOT_FOUND","error":"Room alias not found"}"#;
    upstream.answer(
        "/_matrix/client/r0/directory/room/x",
        Canned::raw(StatusCode::NOT_FOUND, "application/json", json_404),
    );
    upstream.answer(
        "/not-matrix",
        Canned::raw(StatusCode::NOT_FOUND, "text/html", "plain 404"),
    );

    let mapped = sidecar(&upstream, |c| {
        c.set("upstream.path_compat", "r0");
    })
    .await;
    for path in [
        "/_matrix/client/v3/unknown",
        "/_matrix/client/r0/unknown",
        "/_matrix/client/v1/auth_metadata",
        "/_matrix/client/v3/wrong-method",
    ] {
        let answer = http::get(&mapped.url(path)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.json(), unrecognized, "{path}");
        assert_cors(&answer, path);
    }
    for (path, status, body) in [
        ("/_matrix/client/v3/bad", StatusCode::BAD_REQUEST, other_400),
        (
            "/_matrix/client/v3/directory/room/x",
            StatusCode::NOT_FOUND,
            json_404,
        ),
        ("/not-matrix", StatusCode::NOT_FOUND, "plain 404"),
    ] {
        let answer = http::get(&mapped.url(path)).await;
        assert_eq!(
            (answer.status, answer.text().as_str()),
            (status, body),
            "{path}"
        );
    }

    // Without the mapping every answer passes as the homeserver gave it.
    let off = sidecar(&upstream, |c| {
        c.set("upstream.path_compat", "off");
    })
    .await;
    let answer = http::get(&off.url("/_matrix/client/r0/unknown")).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.json(), unrecognized);
    let answer = http::get(&off.url("/_matrix/client/v1/auth_metadata")).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(answer.text().contains("No Such Resource"));
}

#[tokio::test]
async fn a_homeserver_advertising_another_base_url_is_warned_about_at_start() {
    crate::common::logs::capture();
    let upstream = Upstream::start().await;
    // A homeserver whose public_baseurl is its own address, as often left from before.
    let own = format!("http://127.0.0.1:{}/", upstream.addr.port());
    upstream.answer(
        "/.well-known/matrix/client",
        Canned::json(StatusCode::OK, &json!({"m.homeserver": {"base_url": own}})),
    );
    let _sidecar = sidecar(&upstream, |c| {
        c.set("upstream.path_compat", "auto");
    })
    .await;
    let warned = crate::common::upstream::wait_until(Duration::from_secs(5), || {
        crate::common::logs::text()
            .lines()
            .any(|l| l.contains("another base URL") && l.contains(&own))
    })
    .await;
    assert!(warned, "no warning naming {own}");

    // The same homeserver naming the sidecar's address: no warning.
    let upstream = Upstream::start().await;
    let mut config = TestConfig::new(&upstream.url());
    config.set("upstream.path_compat", "auto");
    let ours = config.build().server.public_baseurl.to_string();
    upstream.answer(
        "/.well-known/matrix/client",
        Canned::json(StatusCode::OK, &json!({"m.homeserver": {"base_url": ours}})),
    );
    let _sidecar = Sidecar::start(config).await;
    crate::common::upstream::wait_until(Duration::from_secs(5), || {
        upstream.hits("/.well-known/matrix/client") > 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !crate::common::logs::text()
            .lines()
            .any(|l| l.contains("another base URL") && l.contains(&ours)),
        "warned although the homeserver names {ours}"
    );
}
