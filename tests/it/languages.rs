//! Mail, SMS and pages in the user's language (DESIGN §7): the requestToken's
//! `Accept-Language` picks the message's (kept with the session and its outbox entry), the
//! browser's picks the page's, else the session's; an operator's catalogue adds a language or
//! replaces a sentence. Real Redis (the outbox writes the mail) and a real SMTP server.

use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::json;

use crate::common::http::{self, Answer};
use crate::common::redis::RedisServer;
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::common::smtp::SmtpServer;
use crate::common::webhook::SmsGateway;

const MAIL_WAIT: Duration = Duration::from_secs(10);

struct Env {
    sidecar: Sidecar,
    smtp: SmtpServer,
    _redis: RedisServer,
}

impl Env {
    async fn start(configure: impl FnOnce(&mut TestConfig)) -> Self {
        let redis = RedisServer::start();
        let smtp = SmtpServer::start();
        let mut config = TestConfig::new("http://127.0.0.1:9");
        config
            .redis(&redis)
            .smtp(&smtp)
            .set("email.app_name", "Example Chat")
            .set("server.server_name", "example.org");
        configure(&mut config);
        let sidecar = Sidecar::start(config).await;
        Self {
            sidecar,
            smtp,
            _redis: redis,
        }
    }

    async fn request_token(&self, accept_language: Option<&str>, secret: &str) -> Answer {
        let mut headers = vec![("content-type", "application/json")];
        if let Some(lang) = accept_language {
            headers.push(("accept-language", lang));
        }
        let body = json!({"client_secret": secret, "email": format!("{secret}@example.org"),
                          "send_attempt": 1});
        http::send(
            Method::POST,
            &self
                .sidecar
                .url("/_matrix/client/v3/register/email/requestToken"),
            &headers,
            body.to_string(),
        )
        .await
    }
}

async fn get_page(link: &str, accept_language: Option<&str>) -> Answer {
    let headers: Vec<(&str, &str)> = accept_language
        .map(|l| vec![("accept-language", l)])
        .unwrap_or_default();
    http::send(Method::GET, link, &headers, "").await
}

fn header<'a>(answer: &'a Answer, name: &str) -> &'a str {
    answer
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name}: {:?}", answer.headers))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_in_german_gets_german_mail_and_its_link_page_is_german_unless_the_browser_asks_otherwise()
 {
    let env = Env::start(|_| {}).await;
    let answer = env
        .request_token(Some("de-DE,de;q=0.9,en;q=0.5"), "lang-de")
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let mail = env.smtp.wait_for(1, MAIL_WAIT).remove(0);
    assert_eq!(mail.subject, "[example.org] E-Mail-Adresse bestätigen");
    assert!(mail.text.starts_with("Hallo,"), "{}", mail.text);
    assert!(mail.raw.contains("Content-Language: de"), "{}", mail.raw);
    assert!(
        mail.html.contains(r#"<html lang="de" dir="ltr">"#),
        "{}",
        mail.html
    );
    let link = mail
        .text
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .expect("a link in the mail")
        .to_owned();

    // No Accept-Language from the browser: the session's language.
    let page = get_page(&link, None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(header(&page, "content-language"), "de");
    assert_eq!(header(&page, "vary"), "Accept-Language");
    assert!(
        page.text().contains(r#"<html lang="de""#),
        "{}",
        page.text()
    );
    assert!(
        page.text().contains("Bestätige deine E-Mail-Adresse"),
        "{}",
        page.text()
    );
    // The browser asks for French: French.
    let page = get_page(&link, Some("fr-CH, fr;q=0.9")).await;
    assert_eq!(header(&page, "content-language"), "fr");
    assert!(page.text().contains(r#"<html lang="fr""#));
    // The browser asks for a language we lack: still the session's.
    let page = get_page(&link, Some("ja")).await;
    assert_eq!(header(&page, "content-language"), "de");

    // A request that names no language we have: the default.
    let answer = env.request_token(Some("ja, ko;q=0.5"), "lang-none").await;
    assert_eq!(answer.status, StatusCode::OK);
    let mail = env.smtp.wait_for(2, MAIL_WAIT).remove(1);
    assert_eq!(mail.subject, "[example.org] Validate your email");
    assert!(mail.raw.contains("Content-Language: en"), "{}", mail.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_shipped_language_mails_in_that_language() {
    let env = Env::start(|_| {}).await;
    let cases = [
        ("en-GB", "en", "Hello,"),
        ("de-AT", "de", "Hallo,"),
        ("es-419", "es", "Hola:"),
        ("fr-CA", "fr", "Bonjour,"),
        ("it", "it", "Ciao,"),
        ("nl-BE", "nl", "Hallo,"),
        ("pl", "pl", "Cześć,"),
        ("pt-BR", "pt-BR", "Olá,"),
        ("zh-CN", "zh-Hans", "你好，"),
    ];
    for (n, (asked, tag, greeting)) in cases.iter().enumerate() {
        let answer = env.request_token(Some(asked), &format!("every-{n}")).await;
        assert_eq!(answer.status, StatusCode::OK, "{asked}: {}", answer.text());
        let mail = env.smtp.wait_for(n + 1, MAIL_WAIT).remove(n);
        assert!(
            mail.raw.contains(&format!("Content-Language: {tag}")),
            "{asked}: {}",
            mail.raw
        );
        assert!(mail.text.starts_with(greeting), "{asked}: {}", mail.text);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sms_is_written_in_the_requests_language() {
    let redis = RedisServer::start();
    let gateway = SmsGateway::start().await;
    let mut config = TestConfig::new("http://127.0.0.1:9");
    config
        .redis(&redis)
        .sms_gateway(&gateway)
        .set("email.app_name", "Example Chat");
    let sidecar = Sidecar::start(config).await;
    let answer = http::send(
        Method::POST,
        &sidecar.url("/_matrix/client/v3/register/msisdn/requestToken"),
        &[
            ("content-type", "application/json"),
            ("accept-language", "it-IT"),
        ],
        json!({"client_secret": "sms-it", "country": "GB", "phone_number": "07400 123987",
               "send_attempt": 1})
        .to_string(),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let sent = gateway.wait_for(1, Duration::from_secs(10)).await;
    let text = sent[0].text();
    assert!(
        text.starts_with("Il tuo codice di verifica per Example Chat"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operators_catalogue_adds_a_language_and_overrides_a_sentence() {
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::create_dir_all(dir.path().join("sv")).expect("sv");
    std::fs::write(
        dir.path().join("sv/messages.ftl"),
        "mail-greeting = Hej,\nregistration-subject = Bekräfta din e-postadress\n",
    )
    .expect("write sv");
    std::fs::create_dir_all(dir.path().join("en")).expect("en");
    std::fs::write(
        dir.path().join("en/ours.ftl"),
        "mail-greeting = Hi there,\n",
    )
    .expect("write en");
    let path = dir.path().display().to_string();
    let env = Env::start(|c| {
        c.set("i18n.dir", path);
    })
    .await;
    let answer = env.request_token(Some("sv-SE"), "ours-sv").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    let mail = env.smtp.wait_for(1, MAIL_WAIT).remove(0);
    assert_eq!(mail.subject, "[example.org] Bekräfta din e-postadress");
    assert!(mail.text.starts_with("Hej,"), "{}", mail.text);
    // What sv lacks comes from the default language.
    assert!(mail.text.contains("You asked to register"), "{}", mail.text);
    let answer = env.request_token(Some("en"), "ours-en").await;
    assert_eq!(answer.status, StatusCode::OK);
    let mail = env.smtp.wait_for(2, MAIL_WAIT).remove(1);
    assert!(mail.text.starts_with("Hi there,"), "{}", mail.text);
    assert_eq!(mail.subject, "[example.org] Validate your email");
}
