//! Rate limits (DESIGN §5) seen from a client, on the memory and the Redis store: requestToken
//! per `(medium, client IP)` and per `(medium, address)`, submit per client IP; 429
//! `M_LIMIT_EXCEEDED` with `retry_after_ms` and `Retry-After`; nothing sent when refused;
//! limits shared by replicas on one Redis; `X-Forwarded-For` believed only from a trusted
//! proxy. The limits are slow (one request per 100 s) so no test waits for a refill. With
//! Redis the SMS are sent by the outbox right after the answers, so counts are read once the
//! outbox is empty ([`sent`]).

use std::time::{Duration, Instant};

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::http::{self, Answer};
use crate::common::redis::RedisServer;
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::webhook::SmsGateway;

/// One request per 100 s once the burst is spent.
const SLOW: f64 = 0.01;
const INTERVAL_MS: u64 = 100_000;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Memory,
    Redis,
}

/// A sidecar on one backend whose SMS go to a stand-in gateway.
struct Env {
    sidecar: Sidecar,
    gateway: SmsGateway,
    /// The Redis backend's server.
    redis: Option<RedisServer>,
}

impl Env {
    async fn start(backend: Backend, extra: impl FnOnce(&mut TestConfig)) -> Self {
        let gateway = SmsGateway::start().await;
        let redis = match backend {
            Backend::Memory => None,
            Backend::Redis => Some(RedisServer::start()),
        };
        let sidecar = Sidecar::start(config(redis.as_ref(), &gateway, extra)).await;
        Self {
            sidecar,
            gateway,
            redis,
        }
    }

    async fn sent(&self) -> usize {
        sent(&self.gateway, self.redis.as_ref()).await
    }
}

/// How many SMS the gateway got, once the Redis outbox (if any) has nothing left to send.
async fn sent(gateway: &SmsGateway, redis: Option<&RedisServer>) -> usize {
    if let Some(redis) = redis {
        let client = redis::Client::open(redis.url()).expect("a redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis answers");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let queued: u64 = redis::cmd("XLEN")
                .arg("threepid:outbox")
                .query_async(&mut conn)
                .await
                .expect("XLEN answers");
            if queued == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "{queued} SMS still queued");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    gateway.count()
}

/// The test config (generous limits unless `extra` sets its own), on Redis when given.
fn config(
    redis: Option<&RedisServer>,
    gateway: &SmsGateway,
    extra: impl FnOnce(&mut TestConfig),
) -> TestConfig {
    let mut config = TestConfig::new("http://127.0.0.1:9");
    config.sms_gateway(gateway);
    if let Some(redis) = redis {
        config.redis(redis);
    }
    extra(&mut config);
    config
}

fn limit(burst: u32) -> String {
    format!("{{ per_second = {SLOW}, burst = {burst} }}")
}

/// A valid UK mobile number of its own for each `n` (07400 1000nn).
fn phone(n: u32) -> String {
    format!("07400 1{n:05}")
}

fn sms_body(client_secret: &str, phone_number: &str, send_attempt: u64) -> Value {
    json!({
        "client_secret": client_secret, "country": "GB", "phone_number": phone_number,
        "send_attempt": send_attempt
    })
}

/// requestToken for msisdn registration, from `X-Forwarded-For: xff` when given.
async fn request_sms(sidecar: &Sidecar, xff: Option<&str>, body: &Value) -> Answer {
    let url = sidecar.url("/_matrix/client/v3/register/msisdn/requestToken");
    let mut headers = vec![("content-type", "application/json")];
    if let Some(xff) = xff {
        headers.push(("x-forwarded-for", xff));
    }
    http::send(Method::POST, &url, &headers, body.to_string()).await
}

fn assert_ok(answer: &Answer, what: &str) {
    assert_eq!(answer.status, StatusCode::OK, "{what}: {}", answer.text());
}

/// 429 `M_LIMIT_EXCEEDED`, with a `retry_after_ms` and a `Retry-After` (whole seconds) of
/// about one interval of the limit; returns `retry_after_ms`.
fn assert_limited(answer: &Answer, what: &str) -> u64 {
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{what}: {}",
        answer.text()
    );
    assert_eq!(answer.errcode(), "M_LIMIT_EXCEEDED", "{what}");
    let retry_after_ms = answer.json()["retry_after_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("{what}: no retry_after_ms in {}", answer.text()));
    // The refused request came at most a few seconds after the ones that spent the burst.
    assert!(
        (INTERVAL_MS - 10_000..=INTERVAL_MS).contains(&retry_after_ms),
        "{what}: retry_after_ms = {retry_after_ms}"
    );
    let header: u64 = answer
        .headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("{what}: no Retry-After header"))
        .to_str()
        .expect("Retry-After is text")
        .parse()
        .expect("Retry-After is whole seconds");
    assert_eq!(header, retry_after_ms.div_ceil(1000), "{what}");
    retry_after_ms
}

/// Runs a scenario once on each backend, as `<name>::memory` and `<name>::redis`.
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            use super::Backend;

            #[tokio::test]
            async fn memory() {
                super::$name(Backend::Memory).await;
            }

            #[tokio::test]
            async fn redis() {
                super::$name(Backend::Redis).await;
            }
        }
    };
}

on_both_backends!(the_burst_passes_then_429_and_nothing_is_sent);
async fn the_burst_passes_then_429_and_nothing_is_sent(backend: Backend) {
    let env = Env::start(backend, |c| {
        c.set_toml("rate_limit.request_token_per_ip", &limit(3));
    })
    .await;
    for n in 0..3 {
        let answer = request_sms(&env.sidecar, None, &sms_body("b", &phone(n), 1)).await;
        assert_ok(&answer, &format!("request {n} of the burst"));
    }
    assert_eq!(env.sent().await, 3);
    let refused = request_sms(&env.sidecar, None, &sms_body("b", &phone(3), 1)).await;
    assert_limited(&refused, "past the burst");
    assert_eq!(env.sent().await, 3, "nothing sent for the refused one");
    // The limit is per medium: email from the same address still passes.
    let email = http::post_json(
        &env.sidecar
            .url("/_matrix/client/v3/register/email/requestToken"),
        &json!({"client_secret": "b", "email": "b@example.org", "send_attempt": 1}),
    )
    .await;
    assert_ok(&email, "email from the same IP");
    // The refusal is counted by limit, in an exposition a Prometheus parser accepts.
    let text = http::get(&env.sidecar.admin_url("/metrics")).await.text();
    let families = crate::common::metrics::parse(&text);
    let limited = crate::common::metrics::sum(
        &families,
        "threepid_sidecar_rate_limited",
        "threepid_sidecar_rate_limited_total",
        &[("limit", "request_token_ip")],
    );
    assert_eq!(limited, 1.0);
}

on_both_backends!(the_per_address_limit_holds_across_client_ips);
async fn the_per_address_limit_holds_across_client_ips(backend: Backend) {
    let env = Env::start(backend, |c| {
        c.set_toml("server.trusted_proxies", r#"["127.0.0.1"]"#)
            .set_toml("rate_limit.request_token_per_address", &limit(2));
    })
    .await;
    for (attempt, ip) in [(1, "198.51.100.1"), (2, "198.51.100.2")] {
        let answer = request_sms(
            &env.sidecar,
            Some(ip),
            &sms_body("addr", "07400 123456", attempt),
        )
        .await;
        assert_ok(&answer, &format!("attempt {attempt} from {ip}"));
    }
    assert_eq!(env.sent().await, 2);
    // A third IP, and the number spelled another way: the same canonical address.
    let refused = request_sms(
        &env.sidecar,
        Some("198.51.100.3"),
        &sms_body("addr", "+44 7400 123456", 3),
    )
    .await;
    assert_limited(&refused, "third attempt for the address");
    assert_eq!(env.sent().await, 2, "nothing sent for the refused one");
    // Another address from that IP is not limited.
    let other = request_sms(
        &env.sidecar,
        Some("198.51.100.3"),
        &sms_body("addr", &phone(42), 1),
    )
    .await;
    assert_ok(&other, "another address");
    assert_eq!(env.sent().await, 3);
}

on_both_backends!(a_trusted_proxys_x_forwarded_for_is_honoured);
async fn a_trusted_proxys_x_forwarded_for_is_honoured(backend: Backend) {
    let env = Env::start(backend, |c| {
        c.set_toml("server.trusted_proxies", r#"["127.0.0.0/8", "10.0.0.0/8"]"#)
            .set_toml("rate_limit.request_token_per_ip", &limit(1));
    })
    .await;
    let cases = [
        ("203.0.113.1", true),
        ("203.0.113.1", false),
        ("203.0.113.2", true),
        // The client is the rightmost hop that is not a trusted proxy.
        ("203.0.113.3, 10.0.0.1", true),
        ("203.0.113.1, 10.0.0.2", false),
        // A hop the client prepended itself does not get it a fresh bucket.
        ("203.0.113.4,203.0.113.3", false),
    ];
    for (n, (xff, passes)) in cases.into_iter().enumerate() {
        let answer =
            request_sms(&env.sidecar, Some(xff), &sms_body("x", &phone(n as u32), 1)).await;
        let what = format!("X-Forwarded-For: {xff}");
        if passes {
            assert_ok(&answer, &what);
        } else {
            assert_limited(&answer, &what);
        }
    }
    assert_eq!(env.sent().await, 3);
}

on_both_backends!(an_untrusted_peers_x_forwarded_for_does_not_escape_the_limit);
async fn an_untrusted_peers_x_forwarded_for_does_not_escape_the_limit(backend: Backend) {
    // No trusted proxies, and then proxies that do not include the peer (127.0.0.1).
    for trusted in ["[]", r#"["10.0.0.0/8", "::1"]"#] {
        let env = Env::start(backend, |c| {
            c.set_toml("server.trusted_proxies", trusted)
                .set_toml("rate_limit.request_token_per_ip", &limit(1));
        })
        .await;
        let first = request_sms(
            &env.sidecar,
            Some("203.0.113.1"),
            &sms_body("u", &phone(0), 1),
        )
        .await;
        assert_ok(&first, &format!("trusted_proxies = {trusted}: first"));
        for (n, xff) in [Some("203.0.113.2"), Some("198.51.100.7, 10.0.0.1"), None]
            .into_iter()
            .enumerate()
        {
            let answer =
                request_sms(&env.sidecar, xff, &sms_body("u", &phone(n as u32 + 1), 1)).await;
            assert_limited(
                &answer,
                &format!("trusted_proxies = {trusted}: X-Forwarded-For {xff:?}"),
            );
        }
        assert_eq!(env.sent().await, 1, "trusted_proxies = {trusted}");
    }
}

on_both_backends!(submit_endpoints_are_limited_per_client_ip);
async fn submit_endpoints_are_limited_per_client_ip(backend: Backend) {
    let env = Env::start(backend, |c| {
        c.set_toml("server.trusted_proxies", r#"["127.0.0.1"]"#)
            .set_toml("rate_limit.submit_per_ip", &limit(3));
    })
    .await;
    let answer = request_sms(&env.sidecar, None, &sms_body("s", &phone(0), 1)).await;
    assert_ok(&answer, "requestToken");
    let sid = answer.json()["sid"].as_str().expect("a sid").to_owned();
    let code = env.gateway.wait_for(1, Duration::from_secs(10)).await[0].code();
    let wrong = format!(
        "{:06}",
        (code.parse::<u32>().expect("digits") + 1) % 1_000_000
    );
    let msisdn_submit = env
        .sidecar
        .url("/_matrix/client/unstable/threepid/msisdn/submit_token");
    let email_submit = env
        .sidecar
        .url("/_matrix/client/unstable/threepid/email/submit_token");
    let submit = |url: &str, ip: &'static str, token: &str| {
        let url = url.to_owned();
        let body = json!({"sid": sid, "client_secret": "s", "token": token}).to_string();
        async move {
            http::send(
                Method::POST,
                &url,
                &[
                    ("content-type", "application/json"),
                    ("x-forwarded-for", ip),
                ],
                body,
            )
            .await
        }
    };
    // The burst: three wrong codes from one client, over both submit endpoints.
    for url in [&msisdn_submit, &email_submit, &msisdn_submit] {
        let bad = submit(url, "203.0.113.9", &wrong).await;
        assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text());
        assert_eq!(bad.errcode(), "M_TOKEN_INCORRECT");
    }
    // Now even the right code is refused from that client, on either endpoint…
    for url in [&msisdn_submit, &email_submit] {
        assert_limited(&submit(url, "203.0.113.9", &code).await, url);
    }
    // …and accepted from another one.
    let ok = submit(&msisdn_submit, "203.0.113.10", &code).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.text());
    assert_eq!(ok.json(), json!({"success": true}));
}

#[tokio::test]
async fn two_sidecars_sharing_one_redis_share_the_limits() {
    let redis = RedisServer::start();
    let gateway = SmsGateway::start().await;
    let limits = |c: &mut TestConfig| {
        c.set_toml("server.trusted_proxies", r#"["127.0.0.1"]"#)
            .set_toml("rate_limit.request_token_per_ip", &limit(2))
            .set_toml("rate_limit.request_token_per_address", &limit(2));
    };
    let a = Sidecar::start(config(Some(&redis), &gateway, limits)).await;
    let b = Sidecar::start(config(Some(&redis), &gateway, limits)).await;

    // Per IP: one request on each replica spends the burst of two.
    let ip = Some("203.0.113.50");
    assert_ok(
        &request_sms(&a, ip, &sms_body("p", &phone(0), 1)).await,
        "a",
    );
    assert_ok(
        &request_sms(&b, ip, &sms_body("p", &phone(1), 1)).await,
        "b",
    );
    assert_limited(
        &request_sms(&a, ip, &sms_body("p", &phone(2), 1)).await,
        "a, third",
    );
    assert_limited(
        &request_sms(&b, ip, &sms_body("p", &phone(3), 1)).await,
        "b, third",
    );

    // Per address, from different clients.
    let number = phone(99);
    assert_ok(
        &request_sms(&a, Some("198.51.100.1"), &sms_body("q", &number, 1)).await,
        "address on a",
    );
    assert_ok(
        &request_sms(&b, Some("198.51.100.2"), &sms_body("q", &number, 2)).await,
        "address on b",
    );
    assert_limited(
        &request_sms(&a, Some("198.51.100.3"), &sms_body("q", &number, 3)).await,
        "address, third",
    );
    assert_eq!(
        sent(&gateway, Some(&redis)).await,
        4,
        "nothing sent for the refused ones"
    );
}
