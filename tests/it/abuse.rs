//! Abuse controls (`[policy]`, `[sms]`): denied domains and addresses, the disposable-domains
//! list (read again when it changes, on SIGHUP, and kept when the new file is bad), the
//! operator's webhook, SMS country rules, the per-country limit and the daily budget. A
//! refused request stores nothing and sends nothing. Real Redis, a real SMTP server, the
//! stand-in SMS gateway, and the echo stand-in as the webhook.

use std::time::Duration;

use hyper::StatusCode;
use serde_json::{Value, json};

use crate::common::http::{self, Answer};
use crate::common::redis::RedisServer;
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::smtp::SmtpServer;
use crate::common::upstream::{Canned, Upstream};
use crate::common::webhook::SmsGateway;

const WAIT: Duration = Duration::from_secs(10);

struct Env {
    sidecar: Sidecar,
    smtp: SmtpServer,
    gateway: SmsGateway,
    redis: RedisServer,
}

impl Env {
    async fn start(configure: impl FnOnce(&mut TestConfig)) -> Self {
        let redis = RedisServer::start();
        let smtp = SmtpServer::start();
        let gateway = SmsGateway::start().await;
        let mut config = TestConfig::new("http://127.0.0.1:9");
        config.redis(&redis).smtp(&smtp).sms_gateway(&gateway);
        configure(&mut config);
        let sidecar = Sidecar::start(config).await;
        Self {
            sidecar,
            smtp,
            gateway,
            redis,
        }
    }

    async fn email(&self, email: &str) -> Answer {
        request_email(&self.sidecar, email).await
    }

    async fn sms(&self, country: &str, number: &str, secret: &str) -> Answer {
        request_sms(&self.sidecar, country, number, secret).await
    }

    /// Session keys in Redis: what a refusal must not leave.
    fn sessions(&self) -> usize {
        crate::common::redis::query::<Vec<String>>(
            self.redis.port(),
            &["KEYS", "threepid:session:*"],
        )
        .map_or(0, |keys| keys.len())
    }

    /// Nothing was sent, now or a moment later (the outbox sends after the answer).
    async fn nothing_sent(&self) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(self.smtp.messages().is_empty(), "a mail was sent");
        assert_eq!(self.gateway.count(), 0, "an SMS was sent");
    }
}

async fn request_email(sidecar: &Sidecar, email: &str) -> Answer {
    http::post_json(
        &sidecar.url("/_matrix/client/v3/register/email/requestToken"),
        &json!({"client_secret": format!("s-{}", email.len()), "email": email, "send_attempt": 1}),
    )
    .await
}

async fn request_sms(sidecar: &Sidecar, country: &str, number: &str, secret: &str) -> Answer {
    http::post_json(
        &sidecar.url("/_matrix/client/v3/register/msisdn/requestToken"),
        &json!({"client_secret": secret, "country": country, "phone_number": number,
                "send_attempt": 1}),
    )
    .await
}

fn assert_denied(answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::FORBIDDEN,
        "{what}: {}",
        answer.text()
    );
    assert_eq!(answer.errcode(), "M_THREEPID_DENIED", "{what}");
}

async fn refusals(sidecar: &Sidecar, reason: &str) -> f64 {
    let text = http::get(&sidecar.admin_url("/metrics")).await.text();
    text.lines()
        .filter(|l| {
            l.starts_with("threepid_sidecar_policy_refusals_total{")
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn denied_domains_and_addresses_refuse_before_anything_is_stored_or_sent() {
    let env = Env::start(|c| {
        c.set_toml(
            "policy.denied_domains",
            r#"["blocked.example", "*.spam.example"]"#,
        )
        .set_toml("policy.denied_addresses", r#"["^noreply@", "^4470"]"#)
        .set_toml(
            "threepid.allowed_addresses",
            r#"[{ medium = "email", pattern = "example$" }, { medium = "msisdn", pattern = "" }]"#,
        );
    })
    .await;
    for email in [
        "a@blocked.example",
        "a@BLOCKED.example",
        "a@x.spam.example",
        "noreply@fine.example",
    ] {
        assert_denied(&env.email(email).await, email);
    }
    assert_denied(&env.sms("GB", "07000 000000", "x").await, "denied msisdn");
    assert_eq!(refusals(&env.sidecar, "denied_domain").await, 3.0);
    assert_eq!(refusals(&env.sidecar, "denied_address").await, 2.0);
    assert_eq!(env.sessions(), 0, "nothing stored");
    env.nothing_sent().await;
    // Names next to the denied ones pass.
    for email in [
        "a@sub.blocked.example",
        "a@spam.example",
        "a@notblocked.example",
    ] {
        let answer = env.email(email).await;
        assert_eq!(answer.status, StatusCode::OK, "{email}: {}", answer.text());
    }
    env.smtp.wait_for(3, WAIT);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_disposable_list_is_matched_with_parents_and_read_again_when_it_changes() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let list = dir.path().join("disposable.txt");
    std::fs::write(&list, "# from a published list\nmailinator.example\n").expect("write");
    let path = list.display().to_string();
    let env = Env::start(|c| {
        c.set("policy.disposable_domains_file", path);
    })
    .await;
    assert_denied(&env.email("a@mailinator.example").await, "listed");
    assert_denied(&env.email("a@eu.mailinator.example").await, "a subdomain");
    assert_eq!(refusals(&env.sidecar, "disposable").await, 2.0);
    assert_eq!(env.email("a@trash.example").await.status, StatusCode::OK);

    // A new domain in the file: refused once the file has been read again (it is looked at
    // every few seconds).
    std::fs::write(&list, "mailinator.example\ntrash.example\n").expect("write");
    let mut status = StatusCode::OK;
    for _ in 0..60 {
        status = env.email("b@trash.example").await.status;
        if status == StatusCode::FORBIDDEN {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "the changed file was not read"
    );

    // A bad file keeps the old list.
    std::fs::write(&list, "this is not a domain\n").expect("write");
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_denied(&env.email("c@trash.example").await, "the old list stays");
    assert_eq!(env.email("c@fine.example").await.status, StatusCode::OK);
}

#[test]
fn sighup_reads_the_disposable_list_again_at_once() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let list = dir.path().join("disposable.txt");
    std::fs::write(&list, "one.example\n").expect("write");
    let mut config = TestConfig::new("http://127.0.0.1:9");
    config
        .set("policy.disposable_domains_file", list.display().to_string())
        .set("log.level", "info");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config.to_toml()).expect("write the config");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_threepid-sidecar"))
        .args(["--config", path.to_str().expect("utf-8")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stderr = child.stderr.take().expect("piped");
    let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while let Ok(line) = lines.recv_timeout(deadline - std::time::Instant::now()) {
            if line.contains(needle) {
                return true;
            }
        }
        false
    };
    assert!(wait_for("listening"), "the sidecar did not start");
    std::fs::write(&list, "one.example\ntwo.example\nthree.example\n").expect("write");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    assert!(
        wait_for("disposable domains list read again"),
        "no reload after SIGHUP"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_is_asked_last_and_its_answer_or_failure_decides() {
    let hook = Upstream::start().await;
    hook.answer(
        "/deny",
        Canned::json(
            StatusCode::OK,
            &json!({"allow": false, "reason": "Use your company address."}),
        ),
    );
    hook.answer(
        "/allow",
        Canned::json(StatusCode::OK, &json!({"allow": true})),
    );
    let env_with = |path: &'static str, failure: &'static str| {
        let url = format!("{}{path}", hook.url());
        Env::start(move |c| {
            c.set("policy.webhook_url", url)
                .set("policy.webhook_token", "hook-token")
                .set("policy.webhook_timeout", "500ms")
                .set("policy.webhook_failure", failure)
                .set_toml("policy.denied_domains", r#"["local.example"]"#);
        })
    };

    let allow = env_with("/allow", "deny").await;
    let answer = allow.email("ok@example.org").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let asked = hook
        .bodies_at("/allow")
        .pop()
        .expect("the webhook was asked");
    assert_eq!(asked.json()["medium"], "email");
    assert_eq!(asked.json()["address"], "ok@example.org");
    assert_eq!(asked.json()["purpose"], "registration");
    assert_eq!(asked.json()["client_ip"], "127.0.0.1");
    let seen = hook.seen().pop().expect("a request head");
    assert_eq!(seen.header("authorization"), Some("Bearer hook-token"));
    // A local rule refuses first: the webhook is not asked.
    let before = hook.hits("/allow");
    assert_denied(&allow.email("a@local.example").await, "local rule");
    assert_eq!(hook.hits("/allow"), before);

    let deny = env_with("/deny", "allow").await;
    let answer = deny.email("no@example.org").await;
    assert_denied(&answer, "webhook says no");
    assert_eq!(answer.json()["error"], "Use your company address.");
    assert_eq!(refusals(&deny.sidecar, "webhook").await, 1.0);
    deny.nothing_sent().await;

    // Too slow: allowed or refused as webhook_failure says.
    let slow_allow = env_with("/slow?ms=3000", "allow").await;
    assert_eq!(
        slow_allow.email("late@example.org").await.status,
        StatusCode::OK
    );
    let slow_deny = env_with("/slow?ms=3000", "deny").await;
    let answer = slow_deny.email("late@example.org").await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.text()
    );
    slow_deny.nothing_sent().await;
    // Not JSON, or no "allow": a failure too.
    hook.answer(
        "/garbage",
        Canned::raw(StatusCode::OK, "text/plain", "yes please"),
    );
    let garbage = env_with("/garbage", "deny").await;
    assert_eq!(
        garbage.email("x@example.org").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sms_countries_come_from_the_number_and_each_country_has_its_hourly_limit() {
    let env = Env::start(|c| {
        c.set_toml("sms.allowed_countries", r#"["GB", "DE", "FR"]"#)
            .set_toml("sms.denied_countries", r#"["FR"]"#)
            .set("sms.per_country_per_hour", 2);
    })
    .await;
    // The client says GB, the number is American: the number decides.
    assert_denied(&env.sms("GB", "+1 201 555 0123", "us").await, "a US number");
    assert_denied(&env.sms("FR", "06 12 34 56 78", "fr").await, "denied");
    assert_eq!(refusals(&env.sidecar, "country").await, 2.0);
    assert_eq!(env.gateway.count(), 0);
    for n in 0..2 {
        let answer = env
            .sms("GB", &format!("07400 12345{n}"), &format!("gb{n}"))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }
    let answer = env.sms("GB", "07400 123459", "gb9").await;
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        answer.text()
    );
    // Another country has its own.
    let answer = env.sms("DE", "01512 3456789", "de").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    env.gateway.wait_for(3, WAIT).await;
    let text = http::get(&env.sidecar.admin_url("/metrics")).await.text();
    assert!(
        text.contains(r#"threepid_sidecar_sms_sent_total{country="GB"} 2"#),
        "{text}"
    );
    assert!(
        text.contains(r#"threepid_sidecar_sms_sent_total{country="DE"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daily_sms_budget_is_shared_by_every_sidecar_on_one_redis() {
    let redis = RedisServer::start();
    let gateway = SmsGateway::start().await;
    let sidecar = || {
        let mut config = TestConfig::new("http://127.0.0.1:9");
        config
            .redis(&redis)
            .sms_gateway(&gateway)
            .set("sms.daily_budget", 3);
        Sidecar::start(config)
    };
    let (one, two) = (sidecar().await, sidecar().await);
    let mut statuses: Vec<StatusCode> = Vec::new();
    let mut last: Option<Value> = None;
    for n in 0..5u32 {
        let replica = if n % 2 == 0 { &one } else { &two };
        let answer = request_sms(replica, "GB", &format!("07400 55500{n}"), &format!("b{n}")).await;
        statuses.push(answer.status);
        if answer.status != StatusCode::OK {
            assert_eq!(answer.errcode(), "M_LIMIT_EXCEEDED");
            assert!(answer.headers.contains_key("retry-after"));
            last = Some(answer.json());
        }
    }
    assert_eq!(
        statuses,
        [
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::OK,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
    assert!(
        last.expect("a refusal")["error"]
            .as_str()
            .is_some_and(|e| e.contains("today")),
        "a sentence about the day"
    );
    gateway.wait_for(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gateway.count(), 3, "nothing sent past the budget");
    assert_eq!(refusals(&one, "budget").await, 1.0);
    assert_eq!(refusals(&two, "budget").await, 1.0);
    // Email is not counted.
    let mut config = TestConfig::new("http://127.0.0.1:9");
    config.redis(&redis).set("sms.daily_budget", 3);
    let three = Sidecar::start(config).await;
    assert_eq!(
        request_email(&three, "mail@example.org").await.status,
        StatusCode::OK
    );
}
