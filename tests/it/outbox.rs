//! The durable outbox (DESIGN §7) with a real redis-server, the aiosmtpd SMTP server and the
//! stand-in SMS gateway: requestToken answers at once while the mail server is down and every
//! message arrives once it is back; a sidecar killed before sending (in process, and the real
//! binary with SIGKILL) leaves its messages to another; a gateway that keeps refusing ends in
//! the dead-letter stream without the token; an entry whose session change never happened is
//! dropped unsent; and the same on Redis Cluster, where the stream and the sessions live in
//! different slots.

use std::collections::HashMap;
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hyper::StatusCode;
use redis::aio::MultiplexedConnection;
use serde_json::json;

use crate::common::eventually;
use crate::common::http::{self, Answer};
use crate::common::ports::free_addr;
use crate::common::redis::cluster::RedisCluster;
use crate::common::redis::{RedisServer, query};
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::smtp::SmtpServer;
use crate::common::webhook::SmsGateway;

const BIN: &str = env!("CARGO_BIN_EXE_threepid-sidecar");
const OUTBOX: &str = "threepid:outbox";
const DEAD: &str = "threepid:outbox-dead";
/// Every wait on delivery is bounded by this.
const DELIVERY_WAIT: Duration = Duration::from_secs(20);
/// A requestToken is answered within this, whatever the mail server does (generous: a loaded
/// machine; the answer never waits for a send, let alone for its retries).
const PROMPT: Duration = Duration::from_secs(3);

/// Test settings for a sidecar on `redis` whose mail goes to `smtp`: short retries and a
/// short claim timeout (the send timeout below it, as the config requires).
fn config(redis: &RedisServer, smtp: &SmtpServer) -> TestConfig {
    let mut config = TestConfig::new("http://127.0.0.1:9");
    config
        .redis(redis)
        .set("store.command_timeout", "500ms")
        .smtp(smtp)
        .set("email.send_timeout", "1s")
        .set("sms.timeout", "1s")
        .set("outbox.retry_base", "200ms")
        .set("outbox.claim_timeout", "2s");
    config
}

async fn redis_conn(redis: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("a redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis answers")
}

async fn xlen(conn: &mut MultiplexedConnection, key: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(key)
        .query_async(conn)
        .await
        .expect("XLEN answers")
}

async fn xrange(conn: &mut MultiplexedConnection, key: &str) -> Vec<HashMap<String, String>> {
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .expect("XRANGE answers");
    entries.into_iter().map(|(_, fields)| fields).collect()
}

/// Entries read by some sender and not yet acknowledged.
async fn pending(conn: &mut MultiplexedConnection) -> u64 {
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(OUTBOX)
        .arg("senders")
        .query_async(conn)
        .await
        .expect("XPENDING answers");
    match summary {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => u64::try_from(*n).expect("a count"),
            other => panic!("XPENDING: {other:?}"),
        },
        other => panic!("XPENDING: {other:?}"),
    }
}

/// Waits until the outbox is empty and at least `n` mails have arrived, then returns the
/// number of mails per recipient: with the outbox empty, nothing more is on its way.
async fn delivered(
    smtp: &SmtpServer,
    conn: &mut MultiplexedConnection,
    n: usize,
) -> HashMap<String, usize> {
    let deadline = Instant::now() + DELIVERY_WAIT;
    loop {
        let queued = xlen(conn, OUTBOX).await;
        let mails = smtp.messages();
        if queued == 0 && mails.len() >= n {
            let mut per_recipient = HashMap::new();
            for mail in &mails {
                *per_recipient.entry(mail.to.clone()).or_default() += 1;
            }
            return per_recipient;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {n} mails and {queued} queued after {DELIVERY_WAIT:?}",
            mails.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn request_email(sidecar_url: &str, secret: &str, email: &str, attempt: u64) -> Answer {
    let started = Instant::now();
    let answer = http::post_json(
        &format!("{sidecar_url}/_matrix/client/v3/register/email/requestToken"),
        &json!({"client_secret": secret, "email": email, "send_attempt": attempt}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{email}: {}", answer.text());
    assert!(
        started.elapsed() < PROMPT,
        "{email}: answered after {:?}",
        started.elapsed()
    );
    answer
}

/// The value of one sample on `/metrics`, 0 when it is absent.
async fn metric(sidecar: &Sidecar, sample: &str) -> f64 {
    let text = http::get(&sidecar.admin_url("/metrics")).await.text();
    text.lines()
        .find_map(|line| line.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_mail_server_down_requests_are_answered_and_every_mail_arrives_once_later() {
    let redis = RedisServer::start();
    let mut smtp = SmtpServer::start();
    let sidecar = Sidecar::start(config(&redis, &smtp)).await;
    let mut conn = redis_conn(&redis).await;
    let base = sidecar.url("");

    smtp.stop();
    let mut sids = HashMap::new();
    for i in 0..4 {
        let email = format!("user{i}@example.org");
        let answer = request_email(&base, &format!("secret-{i}"), &email, 1).await;
        sids.insert(
            email,
            answer.json()["sid"].as_str().expect("a sid").to_owned(),
        );
    }
    // The same attempt again sends nothing; a higher one sends a second mail.
    let again = request_email(&base, "secret-0", "user0@example.org", 1).await;
    assert_eq!(again.json()["sid"], sids["user0@example.org"].as_str());
    request_email(&base, "secret-1", "user1@example.org", 2).await;

    // The mail server refuses connections: attempts fail and are retried.
    eventually(DELIVERY_WAIT, "retries of failed sends", || async {
        metric(
            &sidecar,
            r#"threepid_sidecar_messages_total{medium="email",outcome="retried"}"#,
        )
        .await
            >= 1.0
    })
    .await;
    assert_eq!(xlen(&mut conn, OUTBOX).await, 5, "five messages queued");
    assert!(smtp.messages().is_empty());
    // The gauges show the backlog (they are updated every 5 s).
    eventually(Duration::from_secs(10), "the outbox gauges", || async {
        metric(&sidecar, "threepid_sidecar_outbox_length").await == 5.0
            && metric(&sidecar, "threepid_sidecar_outbox_oldest_age_seconds").await > 0.0
    })
    .await;

    smtp.restart();
    let per_recipient = delivered(&smtp, &mut conn, 5).await;
    let expected: HashMap<String, usize> = [
        ("user0@example.org", 1),
        ("user1@example.org", 2),
        ("user2@example.org", 1),
        ("user3@example.org", 1),
    ]
    .into_iter()
    .map(|(to, n)| (to.to_owned(), n))
    .collect();
    assert_eq!(per_recipient, expected);
    assert_eq!(
        metric(
            &sidecar,
            r#"threepid_sidecar_messages_total{medium="email",outcome="sent"}"#
        )
        .await,
        5.0
    );
    assert_eq!(
        metric(
            &sidecar,
            r#"threepid_sidecar_messages_total{medium="email",outcome="queued"}"#
        )
        .await,
        5.0
    );
    assert!(
        metric(
            &sidecar,
            r#"threepid_sidecar_messages_total{medium="email",outcome="failed"}"#
        )
        .await
            >= 5.0,
        "each message failed at least once"
    );
    assert_eq!(xlen(&mut conn, DEAD).await, 0, "nothing given up on");

    // Each mail's token validates its session.
    let mails = smtp.messages();
    for mail in &mails {
        let token = mail.token();
        let i = &mail.to["user".len()..mail.to.find('@').expect("an address")];
        let answer = http::post_json(
            &sidecar.url("/_matrix/client/unstable/threepid/email/submit_token"),
            &json!({"sid": sids[&mail.to], "client_secret": format!("secret-{i}"), "token": token}),
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    }

    tokio::time::timeout(Duration::from_secs(10), sidecar.stop())
        .await
        .expect("a graceful stop, sender included, within 10 s");
}

/// A sidecar on a runtime of its own, so that a test can kill it: shutting the runtime
/// down drops every task at once, the outbox's sender with the messages it holds.
struct Killable {
    runtime: Option<tokio::runtime::Runtime>,
    sidecar: Option<Sidecar>,
}

impl Killable {
    fn start(config: TestConfig) -> Self {
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime");
            let sidecar = runtime.block_on(Sidecar::start(config));
            Killable {
                runtime: Some(runtime),
                sidecar: Some(sidecar),
            }
        })
        .join()
        .expect("the sidecar starts")
    }

    fn url(&self) -> String {
        self.sidecar.as_ref().expect("running").url("")
    }

    /// No drain, no goodbye: the sender stops wherever it was.
    fn kill(self) {
        drop(self);
    }
}

impl Drop for Killable {
    fn drop(&mut self) {
        let (runtime, sidecar) = (self.runtime.take(), self.sidecar.take());
        // On a thread of its own: a runtime cannot be shut down from within another.
        std::thread::spawn(move || {
            if let Some(runtime) = runtime {
                {
                    // What the handles' drops start needs a runtime (the tasks still hold
                    // the state, so nothing stops here).
                    let _context = runtime.enter();
                    drop(sidecar);
                }
                runtime.shutdown_background();
            }
        })
        .join()
        .expect("killed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_accepted_by_a_sidecar_that_dies_is_sent_by_another() {
    let redis = RedisServer::start();
    let mut smtp = SmtpServer::start();
    let mut conn = redis_conn(&redis).await;
    smtp.stop();
    let first = Killable::start(config(&redis, &smtp));
    let mut sids = Vec::new();
    for i in 0..3 {
        let answer = request_email(
            &first.url(),
            &format!("k{i}"),
            &format!("k{i}@example.org"),
            1,
        )
        .await;
        sids.push(answer.json()["sid"].as_str().expect("a sid").to_owned());
    }
    // Its sender has taken all three (and failed: the mail server is down).
    eventually(
        DELIVERY_WAIT,
        "the first sender holds the messages",
        || async {
            let mut conn = conn.clone();
            pending(&mut conn).await == 3
        },
    )
    .await;
    first.kill();

    smtp.restart();
    let second = Sidecar::start(config(&redis, &smtp)).await;
    let per_recipient = delivered(&smtp, &mut conn, 3).await;
    assert_eq!(per_recipient.len(), 3, "{per_recipient:?}");
    assert!(per_recipient.values().all(|n| *n == 1), "{per_recipient:?}");
    assert_eq!(pending(&mut conn).await, 0);
    // The second sidecar's sessions are the first's: a mailed token validates.
    let mail = smtp
        .messages()
        .into_iter()
        .find(|m| m.to == "k0@example.org")
        .expect("k0's mail");
    let answer = http::post_json(
        &second.url("/_matrix/client/unstable/threepid/email/submit_token"),
        &json!({"sid": sids[0], "client_secret": "k0", "token": mail.token()}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
}

/// The binary, killed when the test ends if it is still running.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_accepted_by_a_binary_killed_with_sigkill_is_sent_by_another() {
    let redis = RedisServer::start();
    let mut smtp = SmtpServer::start();
    let mut conn = redis_conn(&redis).await;
    smtp.stop();
    let (client, identity, admin) = (free_addr(), free_addr(), free_addr());
    let mut config = config(&redis, &smtp);
    config
        .set("server.listen", client.to_string())
        .set("server.public_baseurl", format!("http://{client}/"))
        .set("identity.listen", identity.to_string())
        .set("admin.listen", admin.to_string())
        .set("log.level", "debug");
    let config_path = config.dir.path().join("sidecar.toml");
    std::fs::write(&config_path, config.to_toml()).expect("write the config");
    let log_path = config.dir.path().join("sidecar.log");
    let log = File::create(&log_path).expect("the log file");
    let mut child = ChildGuard(
        Command::new(BIN)
            .arg("--config")
            .arg(&config_path)
            .arg("run")
            .env_remove("THREEPID_SIDECAR_CONFIG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("the binary starts"),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let ready = format!("http://{admin}/health/ready");
    eventually(Duration::from_secs(10), "the binary is ready", || {
        let ready = ready.clone();
        async move {
            let client = http::client();
            match client.get(ready.parse().expect("a URL")).await {
                Ok(response) => response.status() == StatusCode::OK,
                Err(_) => false,
            }
        }
    })
    .await;

    for i in 0..3 {
        request_email(
            &format!("http://{client}"),
            &format!("binary-secret-{i}"),
            &format!("b{i}@example.org"),
            1,
        )
        .await;
    }
    eventually(
        DELIVERY_WAIT,
        "the binary's sender holds the messages",
        || async {
            let mut conn = conn.clone();
            pending(&mut conn).await == 3
        },
    )
    .await;
    let status = Command::new("kill")
        .args(["-KILL", &child.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.0.wait().expect("the binary is reaped");
    assert!(!exit.success(), "killed, not exited; log:\n{}", log());

    smtp.restart();
    let _second = Sidecar::start(config).await;
    let per_recipient = delivered(&smtp, &mut conn, 3).await;
    let expected: HashMap<String, usize> =
        (0..3).map(|i| (format!("b{i}@example.org"), 1)).collect();
    assert_eq!(
        per_recipient,
        expected,
        "log of the killed binary:\n{}",
        log()
    );
    // The binary queued these tokens and failed to send them, logging at debug level: no
    // token, client secret or full address reached its log.
    let logged = log();
    assert!(
        logged.contains("could not send"),
        "no failure logged:\n{logged}"
    );
    let mut secrets: Vec<String> = (0..3).map(|i| format!("binary-secret-{i}")).collect();
    for mail in smtp.messages() {
        secrets.push(mail.token());
        secrets.push(mail.to.clone());
    }
    for secret in &secrets {
        assert!(!logged.contains(secret.as_str()), "{secret:?} in the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_keeps_refusing_ends_in_the_dead_letter_stream_without_the_code() {
    let redis = RedisServer::start();
    let smtp = SmtpServer::start();
    let gateway = SmsGateway::start().await;
    gateway.set_status(StatusCode::INTERNAL_SERVER_ERROR);
    let mut config = config(&redis, &smtp);
    config
        .sms_gateway(&gateway)
        .set("sms.timeout", "500ms")
        .set("email.send_timeout", "500ms")
        .set("sms.max_retry_age", "2s")
        .set("outbox.claim_timeout", "1s");
    let sidecar = Sidecar::start(config).await;
    let mut conn = redis_conn(&redis).await;

    let started = Instant::now();
    let answer = http::post_json(
        &sidecar.url("/_matrix/client/v3/register/msisdn/requestToken"),
        &json!({"client_secret": "dl", "country": "GB", "phone_number": "07400 555111", "send_attempt": 1}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert!(started.elapsed() < PROMPT);
    let sid = answer.json()["sid"].as_str().expect("a sid").to_owned();

    eventually(DELIVERY_WAIT, "the message is dead-lettered", || async {
        let mut conn = conn.clone();
        xlen(&mut conn, DEAD).await == 1
    })
    .await;
    assert_eq!(xlen(&mut conn, OUTBOX).await, 0, "gone from the outbox");
    let tried = gateway.received();
    assert!(
        tried.len() >= 2,
        "retried before giving up: {}",
        tried.len()
    );
    let code = tried[0].code();
    let dead = xrange(&mut conn, DEAD).await.remove(0);
    assert_eq!(dead["sid"], sid);
    assert_eq!(dead["medium"], "msisdn");
    assert_eq!(dead["purpose"], "registration");
    assert_eq!(dead["address"], "44********11", "masked");
    assert!(dead["error"].contains("500"), "{dead:?}");
    let attempts: usize = dead["attempts"].parse().expect("a number");
    assert!(attempts >= 2 && attempts <= tried.len(), "{dead:?}");
    let mut keys: Vec<&str> = dead.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "address",
            "attempts",
            "enqueued_ms",
            "error",
            "id",
            "medium",
            "purpose",
            "sid"
        ]
    );
    for (key, value) in &dead {
        assert!(!value.contains(&code), "the code in {key}: {value}");
        assert!(
            !value.contains("447400555111"),
            "the number in {key}: {value}"
        );
    }
    assert_eq!(
        metric(
            &sidecar,
            r#"threepid_sidecar_messages_total{medium="msisdn",outcome="dead_lettered"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            &sidecar,
            r#"threepid_sidecar_messages_total{medium="msisdn",outcome="failed"}"#
        )
        .await,
        tried.len() as f64
    );
    // The gateway heard nothing more once the message was given up on.
    let heard = gateway.count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(gateway.count(), heard);
    // The outbox gauges come back to empty.
    eventually(Duration::from_secs(10), "the length gauge", || async {
        let length = metric(&sidecar, "threepid_sidecar_outbox_length").await;
        let age = metric(&sidecar, "threepid_sidecar_outbox_oldest_age_seconds").await;
        length == 0.0 && age == 0.0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_whose_session_change_never_happened_is_dropped_unsent() {
    let redis = RedisServer::start();
    let smtp = SmtpServer::start();
    let sidecar = Sidecar::start(config(&redis, &smtp)).await;
    let mut conn = redis_conn(&redis).await;
    // What a crash between the XADD and the session script leaves: an entry whose token
    // hash is in no session. One as old as a crash a minute ago, one fresh.
    let hash = "ab".repeat(32);
    let orphan = |id: String, to: &str| {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(OUTBOX).arg(id);
        for (k, v) in [
            ("sid", "NoSuchSessionAtAllXXXXXXX"),
            ("medium", "email"),
            ("address", to),
            ("purpose", "registration"),
            ("token", "OrphanTokenOrphanTokenOrphanTok"),
            ("hash", hash.as_str()),
            ("secret", "orphan-secret"),
        ] {
            cmd.arg(k).arg(v);
        }
        cmd
    };
    let minute_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
        - 60_000;
    let _: String = orphan(format!("{minute_ago}-0"), "old@example.org")
        .query_async(&mut conn)
        .await
        .expect("XADD");
    let _: String = orphan("*".into(), "fresh@example.org")
        .query_async(&mut conn)
        .await
        .expect("XADD");
    // A real request next to them is sent.
    request_email(&sidecar.url(""), "real", "real@example.org", 1).await;

    let per_recipient = delivered(&smtp, &mut conn, 1).await;
    assert_eq!(
        per_recipient,
        HashMap::from([("real@example.org".to_owned(), 1)])
    );
    assert_eq!(
        metric(
            &sidecar,
            r#"threepid_sidecar_messages_total{medium="email",outcome="dropped"}"#
        )
        .await,
        2.0
    );
    assert_eq!(xlen(&mut conn, DEAD).await, 0);
}

/// The outbox key's length on a cluster: asked of every node, only its owner answers.
fn cluster_xlen(cluster: &RedisCluster, key: &str) -> u64 {
    cluster
        .ports()
        .into_iter()
        .filter_map(|port| query::<u64>(port, &["XLEN", key]))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_redis_cluster_queued_mail_survives_an_outage_and_arrives_once() {
    let cluster = RedisCluster::start();
    let mut smtp = SmtpServer::start();
    let mut config = TestConfig::new("http://127.0.0.1:9");
    config
        .set("store.backend", "redis")
        .set_toml(
            "store.cluster",
            &format!("{{ nodes = {:?} }}", cluster.nodes()),
        )
        .set("store.command_timeout", "1s")
        .smtp(&smtp)
        .set("email.send_timeout", "1s")
        .set("sms.timeout", "1s")
        .set("outbox.retry_base", "200ms")
        .set("outbox.claim_timeout", "2s");
    let sidecar = Sidecar::start(config).await;
    let base = sidecar.url("");

    smtp.stop();
    for i in 0..3 {
        request_email(&base, &format!("c{i}"), &format!("c{i}@example.org"), 1).await;
    }
    // A repeat: its entry is queued, then deleted when the session script says "already".
    request_email(&base, "c0", "c0@example.org", 1).await;
    eventually(DELIVERY_WAIT, "retries of failed sends", || async {
        metric(
            &sidecar,
            r#"threepid_sidecar_messages_total{medium="email",outcome="retried"}"#,
        )
        .await
            >= 1.0
    })
    .await;
    assert_eq!(cluster_xlen(&cluster, OUTBOX), 3);

    smtp.restart();
    let deadline = Instant::now() + DELIVERY_WAIT;
    while cluster_xlen(&cluster, OUTBOX) > 0 || smtp.messages().len() < 3 {
        assert!(Instant::now() < deadline, "not delivered on the cluster");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut per_recipient: HashMap<String, usize> = HashMap::new();
    for mail in smtp.messages() {
        *per_recipient.entry(mail.to).or_default() += 1;
    }
    let expected: HashMap<String, usize> =
        (0..3).map(|i| (format!("c{i}@example.org"), 1)).collect();
    assert_eq!(per_recipient, expected);
}

/// Finding 9: a refusal that will not change (no such mailbox, a number the gateway cannot
/// reach) was retried until `max_retry_age`, about 120 attempts with the defaults. It goes to
/// the dead letters after the one attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_refusal_is_dead_lettered_at_once() {
    let redis = RedisServer::start();
    let smtp = SmtpServer::start();
    let gateway = SmsGateway::start().await;
    gateway.set_status(StatusCode::BAD_REQUEST);
    let mut config = config(&redis, &smtp);
    config
        .sms_gateway(&gateway)
        // Hours: nothing here may be the retry age running out.
        .set("email.max_retry_age", "5h")
        .set("sms.max_retry_age", "5h")
        .set("outbox.retry_base", "100ms");
    let sidecar = Sidecar::start(config).await;
    let mut conn = redis_conn(&redis).await;

    let answer = http::post_json(
        &sidecar.url("/_matrix/client/v3/register/email/requestToken"),
        &json!({"client_secret": "perm", "email": "nobody-here@example.org", "send_attempt": 1}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let answer = http::post_json(
        &sidecar.url("/_matrix/client/v3/register/msisdn/requestToken"),
        &json!({"client_secret": "perm", "country": "GB", "phone_number": "07400 555222", "send_attempt": 1}),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());

    eventually(
        DELIVERY_WAIT,
        "both are dead-lettered and gone from the outbox",
        || async {
            let mut conn = conn.clone();
            xlen(&mut conn, DEAD).await == 2 && xlen(&mut conn, OUTBOX).await == 0
        },
    )
    .await;
    let dead = xrange(&mut conn, DEAD).await;
    for letter in &dead {
        assert_eq!(letter["attempts"], "1", "{letter:?}");
    }
    let email = dead
        .iter()
        .find(|d| d["medium"] == "email")
        .expect("the mail");
    assert!(email["error"].contains("550"), "{email:?}");
    assert!(
        !email["error"].contains("nobody-here@"),
        "masked: {email:?}"
    );
    // A moment later, still one attempt each.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gateway.count(), 1);
    assert!(smtp.messages().is_empty());
}
