//! DESIGN §5's input table, row by row, for email and msisdn on all three requestToken
//! endpoints: each refusal has its status, its errcode and a sentence, and leaves nothing
//! behind — no session in Redis, no mail at the SMTP server, no POST at the SMS gateway.

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::http::{self, Answer};
use crate::common::redis::RedisServer;
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::smtp::SmtpServer;
use crate::common::webhook::SmsGateway;

/// Small enough that a padded but otherwise valid body is over it.
const MAX_BODY_BYTES: i64 = 1024;

/// The three endpoints, each under another version prefix (all of them are answered).
const ENDPOINTS: [&str; 3] = [
    "r0/register",
    "v3/account/password",
    "unstable/account/3pid",
];

/// A body as sent: raw bytes, or JSON.
enum Input {
    Raw(String),
    Json(Value),
}

/// One row of the table.
struct Row {
    medium: &'static str,
    name: String,
    input: Input,
    status: u16,
    errcode: &'static str,
    /// A word the `error` sentence must contain (the missing parameter's name).
    names: Option<&'static str>,
}

fn valid(medium: &str) -> Value {
    match medium {
        "email" => json!({
            "client_secret": "table-secret", "email": "alice@example.org", "send_attempt": 1,
            "next_link": "https://app.example.org/done"
        }),
        _ => json!({
            "client_secret": "table-secret", "country": "GB", "phone_number": "07400 123456",
            "send_attempt": 1, "next_link": "https://app.example.org/done"
        }),
    }
}

fn with(medium: &str, key: &str, value: Value) -> Value {
    let mut body = valid(medium);
    body[key] = value;
    body
}

fn without(medium: &str, key: &str) -> Value {
    let mut body = valid(medium);
    body.as_object_mut()
        .expect("an object")
        .remove(key)
        .expect("the key was there");
    body
}

/// Every refusal of the table in direct mode, both media.
fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    let mut row = |medium: &'static str,
                   name: &str,
                   input: Input,
                   status: u16,
                   errcode: &'static str,
                   names: Option<&'static str>| {
        rows.push(Row {
            medium,
            name: name.to_owned(),
            input,
            status,
            errcode,
            names,
        });
    };
    for medium in ["email", "msisdn"] {
        // Not JSON, not an object.
        for raw in ["{nope", "", "client_secret=a&send_attempt=1", "{\"a\":1"] {
            row(
                medium,
                &format!("not JSON: {raw:?}"),
                Input::Raw(raw.into()),
                400,
                "M_NOT_JSON",
                None,
            );
        }
        for raw in ["[1,2]", "\"a string\"", "42", "null", "true"] {
            row(
                medium,
                &format!("JSON but not an object: {raw}"),
                Input::Raw(raw.into()),
                400,
                "M_BAD_JSON",
                None,
            );
        }
        // Over server.max_body_bytes, although valid otherwise.
        row(
            medium,
            "body over max_body_bytes",
            Input::Json(with(medium, "padding", json!("a".repeat(2000)))),
            413,
            "M_TOO_LARGE",
            None,
        );
        // Each missing parameter, named; null counts as missing.
        let required: &[&'static str] = match medium {
            "email" => &["client_secret", "email", "send_attempt"],
            _ => &["client_secret", "country", "phone_number", "send_attempt"],
        };
        for &key in required {
            row(
                medium,
                &format!("no {key}"),
                Input::Json(without(medium, key)),
                400,
                "M_MISSING_PARAM",
                Some(key),
            );
            row(
                medium,
                &format!("{key}: null"),
                Input::Json(with(medium, key, Value::Null)),
                400,
                "M_MISSING_PARAM",
                Some(key),
            );
        }
        // client_secret outside ^[0-9a-zA-Z.=_-]{1,255}$, or not a string.
        for bad in [
            json!(""),
            json!("has space"),
            json!("slash/y"),
            json!("ümlaut"),
            json!("a".repeat(256)),
            json!(12345),
        ] {
            row(
                medium,
                &format!("client_secret {bad}"),
                Input::Json(with(medium, "client_secret", bad)),
                400,
                "M_INVALID_PARAM",
                None,
            );
        }
        // send_attempt not an integer.
        for bad in [json!("1"), json!(1.5), json!(-1), json!(true), json!([1])] {
            row(
                medium,
                &format!("send_attempt {bad}"),
                Input::Json(with(medium, "send_attempt", bad)),
                400,
                "M_INVALID_PARAM",
                None,
            );
        }
        // next_link not http(s), or on a host not listed.
        for bad in [
            json!("file:///etc/passwd"),
            json!("javascript:alert(1)"),
            json!("ftp://app.example.org/done"),
            json!("not a url"),
            json!("https://evil.example/done"),
            json!("https://app.example.org.evil.example/done"),
            json!(7),
        ] {
            row(
                medium,
                &format!("next_link {bad}"),
                Input::Json(with(medium, "next_link", bad)),
                400,
                "M_INVALID_PARAM",
                None,
            );
        }
    }
    // Bad email addresses (the domain part is allowed, so only the syntax is at fault).
    for bad in [
        json!("nobody"),
        json!("a@b@example.org"),
        json!("@example.org"),
        json!("alice@"),
        json!("al ice@example.org"),
        json!("alice@exa mple.org"),
        json!("<alice@example.org>"),
        json!("alice@example.org\r\nBcc: mallory@example.org"),
        json!(format!("{}@example.org", "a".repeat(500))),
        json!(5),
    ] {
        row(
            "email",
            &format!("email {bad}"),
            Input::Json(with("email", "email", bad)),
            400,
            "M_INVALID_PARAM",
            None,
        );
    }
    // Bad countries, and numbers not valid for the country.
    for bad in ["gb", "GBR", "G", "XX", "44"] {
        row(
            "msisdn",
            &format!("country {bad:?}"),
            Input::Json(with("msisdn", "country", json!(bad))),
            400,
            "M_INVALID_PARAM",
            None,
        );
    }
    for bad in [
        json!("07700 900123"),
        json!("123"),
        json!("not a number"),
        json!("0740012345678901"),
        json!(7_400_123_456_u64),
    ] {
        row(
            "msisdn",
            &format!("phone_number {bad}"),
            Input::Json(with("msisdn", "phone_number", bad)),
            400,
            "M_INVALID_PARAM",
            None,
        );
    }
    // Valid, but refused by threepid.allowed_addresses.
    for bad in ["alice@example.com", "alice@sub.example.org.evil.example"] {
        row(
            "email",
            &format!("email {bad} not allowed"),
            Input::Json(with("email", "email", json!(bad))),
            403,
            "M_THREEPID_DENIED",
            None,
        );
    }
    let mut german = with("msisdn", "country", json!("DE"));
    german["phone_number"] = json!("030 901820");
    row(
        "msisdn",
        "a German number not allowed",
        Input::Json(german),
        403,
        "M_THREEPID_DENIED",
        None,
    );
    rows
}

/// With `threepid.id_server_param = "reject"`: a client's `id_server`, with or without
/// `id_access_token`.
fn reject_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for medium in ["email", "msisdn"] {
        let mut both = with(medium, "id_server", json!("vector.im"));
        both["id_access_token"] = json!("abc");
        for (name, body) in [
            ("id_server and id_access_token", both),
            (
                "id_server alone",
                with(medium, "id_server", json!("matrix.org")),
            ),
        ] {
            rows.push(Row {
                medium,
                name: name.to_owned(),
                input: Input::Json(body),
                status: 400,
                errcode: "M_SERVER_NOT_TRUSTED",
                names: None,
            });
        }
    }
    rows
}

async fn send(sidecar: &Sidecar, endpoint: &str, row: &Row) -> Answer {
    let url = sidecar.url(&format!(
        "/_matrix/client/{endpoint}/{}/requestToken",
        row.medium
    ));
    let body = match &row.input {
        Input::Raw(raw) => raw.clone(),
        Input::Json(value) => value.to_string(),
    };
    http::send(
        Method::POST,
        &url,
        &[("content-type", "application/json")],
        body,
    )
    .await
}

fn check(endpoint: &str, row: &Row, answer: &Answer) {
    let what = format!("{endpoint} {}: {}", row.medium, row.name);
    assert_eq!(
        answer.status.as_u16(),
        row.status,
        "{what}: {}",
        answer.text()
    );
    assert_eq!(
        answer
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "{what}"
    );
    // errcode() also asserts that `error` is a sentence.
    assert_eq!(answer.errcode(), row.errcode, "{what}: {}", answer.text());
    if let Some(name) = row.names {
        let error = answer.json()["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            error.contains(name),
            "{what}: {error:?} does not name {name}"
        );
    }
}

async fn redis_keys(redis: &RedisServer, pattern: &str) -> Vec<String> {
    let client = redis::Client::open(redis.url()).expect("a redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers");
    redis::cmd("KEYS")
        .arg(pattern)
        .query_async(&mut conn)
        .await
        .expect("KEYS answers")
}

/// Messages in the outbox, not sent yet.
async fn outbox_len(redis: &RedisServer) -> u64 {
    let client = redis::Client::open(redis.url()).expect("a redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers");
    redis::cmd("XLEN")
        .arg("threepid:outbox")
        .query_async(&mut conn)
        .await
        .expect("XLEN answers")
}

/// Sessions, address lookups and via-upstream purpose notes: what a refusal must not leave.
async fn session_keys(redis: &RedisServer) -> Vec<String> {
    let mut keys = Vec::new();
    for pattern in ["*session:*", "*lookup:*", "*purpose:*"] {
        keys.extend(redis_keys(redis, pattern).await);
    }
    keys
}

#[tokio::test]
async fn every_bad_input_gets_its_error_and_leaves_nothing_behind() {
    let redis = RedisServer::start();
    let smtp = SmtpServer::start();
    let gateway = SmsGateway::start().await;
    let configure = |config: &mut TestConfig| {
        config
            .redis(&redis)
            .smtp(&smtp)
            .sms_gateway(&gateway)
            .set("sms.webhook_token", "table-token")
            .set("server.max_body_bytes", MAX_BODY_BYTES)
            .set_toml("threepid.next_link_allowed_hosts", r#"["app.example.org"]"#)
            .set_toml(
                "threepid.allowed_addresses",
                r#"[{ medium = "email", pattern = "@example\\.org$" },
                    { medium = "msisdn", pattern = "^44" }]"#,
            );
    };
    let mut config = TestConfig::new("http://127.0.0.1:9");
    configure(&mut config);
    let sidecar = Sidecar::start(config).await;
    let mut config = TestConfig::new("http://127.0.0.1:9");
    configure(&mut config);
    config.set("threepid.id_server_param", "reject");
    let rejecting = Sidecar::start(config).await;

    let table = rows();
    assert!(table.len() > 80, "the table has {} rows", table.len());
    let reject_table = reject_rows();
    for endpoint in ENDPOINTS {
        for row in &table {
            check(endpoint, row, &send(&sidecar, endpoint, row).await);
        }
        for row in &reject_table {
            check(endpoint, row, &send(&rejecting, endpoint, row).await);
        }
    }

    // Nothing stored…
    assert_eq!(session_keys(&redis).await, Vec::<String>::new());
    // …and nothing queued or sent: what a request queues is in the outbox before the answer,
    // and stays there until it has been sent.
    assert_eq!(outbox_len(&redis).await, 0, "nothing queued");
    assert_eq!(smtp.messages().len(), 0, "no mail");
    assert_eq!(gateway.count(), 0, "no SMS");

    // The bodies every row started from are accepted, and then something is stored and
    // sent: the checks above would have seen it.
    for medium in ["email", "msisdn"] {
        let url = sidecar.url(&format!(
            "/_matrix/client/v3/register/{medium}/requestToken"
        ));
        let answer = http::post_json(&url, &valid(medium)).await;
        assert_eq!(answer.status, StatusCode::OK, "{medium}: {}", answer.text());
        assert!(answer.json()["sid"].is_string());
    }
    // Without id_server the rejecting sidecar handles the same body.
    let url = rejecting.url("/_matrix/client/v3/account/password/email/requestToken");
    let mut body = valid("email");
    body["client_secret"] = json!("other-secret");
    let answer = http::post_json(&url, &body).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(!session_keys(&redis).await.is_empty());
    // Sent by the outbox's task on this runtime: wait without blocking it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while smtp.messages().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "two mails expected");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let sms = gateway
        .wait_for(1, std::time::Duration::from_secs(10))
        .await;
    assert_eq!(sms.len(), 1);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408_and_changes_nothing() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut config = TestConfig::new("http://127.0.0.1:9");
    config.set("server.header_read_timeout", "1s");
    let sidecar = Sidecar::start(config).await;
    let body = valid("email").to_string();
    let mut stream = tokio::net::TcpStream::connect(sidecar.client)
        .await
        .expect("connect");
    let head = format!(
        "POST /_matrix/client/v3/register/email/requestToken HTTP/1.1\r\nHost: x\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.expect("the head");
    // Half the body, then nothing more: a client trickling it, or one that died.
    stream
        .write_all(&body.as_bytes()[..body.len() / 2])
        .await
        .expect("half the body");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("an answer within 10 s")
        .expect("the answer");
    let waited = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains(r#""errcode":"M_UNKNOWN""#), "{answer}");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(5)).contains(&waited),
        "answered after {waited:?}, header_read_timeout is 1 s"
    );
    let mails = std::fs::read_dir(sidecar.config.mail_dir())
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert_eq!(mails, 0, "no mail for a request whose body never arrived");
}
