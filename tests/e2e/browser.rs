//! The link pages in a real browser: headless Chromium (Debian's), driven by
//! `tests/browser/link-page.mjs` (playwright-core), opens a mailed link, sees the
//! confirmation page, clicks its one button and lands on the success page, the failure
//! page, or `next_link`. Screenshots at a phone and a desktop width go to
//! `target/screenshots/` for a person to look at.

use std::path::PathBuf;

use serde_json::json;

use crate::common::http;
use crate::common::sidecar::{Sidecar, TestConfig};
use crate::flows::{link_in, query_param};

fn screenshots(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/screenshots")
        .join(name)
}

fn browser(args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/browser/link-page.mjs");
    assert!(
        script
            .with_file_name("node_modules/playwright-core")
            .exists(),
        "playwright-core missing: run scripts/install-test-deps (npm ci in tests/browser)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "chromium missing: apt-get install -y chromium (scripts/install-test-deps does it)"
    );
    let output = crate::common::node::node()
        .arg(&script)
        .args(args)
        .output()
        .expect("the pinned node runs");
    let said = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "browser check failed: {args:?}\n{said}"
    );
}

/// A sidecar writing mail to files (no upstream needed: only its own pages are used).
async fn sidecar() -> Sidecar {
    let mut config = TestConfig::new("http://127.0.0.1:9");
    config.set("email.app_name", "Example Chat");
    Sidecar::start(config).await
}

/// requestToken, then the link from the .eml file the file transport wrote.
async fn mailed_link(sidecar: &Sidecar, client_secret: &str, next_link: Option<&str>) -> String {
    let mut body =
        json!({"client_secret": client_secret, "email": "pat@example.org", "send_attempt": 1});
    if let Some(next_link) = next_link {
        body["next_link"] = json!(next_link);
    }
    let before = eml_files(sidecar).len();
    let answer = http::post_json(
        &sidecar.url("/_matrix/client/v3/register/email/requestToken"),
        &body,
    )
    .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let files = eml_files(sidecar);
    assert_eq!(files.len(), before + 1);
    let newest = files.last().expect("a mail file");
    let raw = std::fs::read(newest).expect("the .eml");
    let message = mail_parser::MessageParser::default()
        .parse(&raw)
        .expect("a parsable mail");
    link_in(&message.body_text(0).expect("a text part"))
}

fn eml_files(sidecar: &Sidecar) -> Vec<PathBuf> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> =
        std::fs::read_dir(sidecar.config.mail_dir())
            .map(|dir| {
                dir.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                    .map(|p| (p.metadata().and_then(|m| m.modified()).expect("mtime"), p))
                    .collect()
            })
            .unwrap_or_default();
    files.sort();
    files.into_iter().map(|(_, p)| p).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_confirms_the_link_in_a_browser() {
    let sidecar = sidecar().await;
    let dir = screenshots("link-pages");
    let phone = mailed_link(&sidecar, "browser-one", None).await;
    let desktop = mailed_link(&sidecar, "browser-two", None).await;
    let dir_s = dir.display().to_string();
    tokio::task::spawn_blocking(move || {
        browser(&[
            "--phone",
            &phone,
            "--desktop",
            &desktop,
            "--text",
            "Example Chat",
            &dir_s,
            "success",
        ]);
    })
    .await
    .expect("browser run");

    // A wrong token: the failure page says why.
    let phone = mailed_link(&sidecar, "browser-three", None).await;
    let desktop = mailed_link(&sidecar, "browser-four", None).await;
    let spoil = |link: String| {
        let token = query_param(&link, "token");
        link.replace(&token, "wrongtoken")
    };
    let (phone, desktop) = (spoil(phone), spoil(desktop));
    let dir_s = dir.display().to_string();
    tokio::task::spawn_blocking(move || {
        browser(&[
            "--phone",
            &phone,
            "--desktop",
            &desktop,
            "--text",
            "wrong or has expired",
            &dir_s,
            "failure",
        ]);
    })
    .await
    .expect("browser run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_next_link_the_browser_lands_there_with_the_sid() {
    let sidecar = sidecar().await;
    let next = "https://app.example.org/welcome";
    let link = mailed_link(&sidecar, "browser-next", Some(next)).await;
    let sid = query_param(&link, "sid");
    let dir = screenshots("next-link").display().to_string();
    let expect = format!("redirect:{next}?sid={sid}");
    tokio::task::spawn_blocking(move || {
        browser(&["--viewport", "desktop", &link, &dir, &expect]);
    })
    .await
    .expect("browser run");
}

/// Each shipped language in Chromium: a requestToken that asks for it mails in it, and a
/// browser set to it sees the confirmation page (`<html lang>`, its button) and the success
/// page in it. Screenshots: `target/screenshots/languages/<tag>/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shipped_language_s_link_pages_in_a_browser_set_to_it() {
    let sidecar = sidecar().await;
    let catalogues =
        threepid_sidecar::i18n::Catalogues::load(None, "en").expect("the shipped catalogues");
    for (n, tag) in catalogues.tags().enumerate() {
        let before = eml_files(&sidecar).len();
        let answer = http::send(
            hyper::Method::POST,
            &sidecar.url("/_matrix/client/v3/register/email/requestToken"),
            &[
                ("content-type", "application/json"),
                ("accept-language", tag),
            ],
            json!({"client_secret": format!("lang-{n}"), "email": "pat@example.org",
                   "send_attempt": 1})
            .to_string(),
        )
        .await;
        assert_eq!(answer.status, 200, "{tag}: {}", answer.text());
        let files = eml_files(&sidecar);
        assert_eq!(files.len(), before + 1);
        let raw = std::fs::read(files.last().expect("a mail")).expect("the .eml");
        let message = mail_parser::MessageParser::default()
            .parse(&raw)
            .expect("a parsable mail");
        let subject = message.subject().expect("a subject").to_owned();
        assert!(
            subject.ends_with(&catalogues.message(tag, "registration-subject", None)),
            "{tag}: {subject}"
        );
        let link = link_in(&message.body_text(0).expect("a text part"));
        let button = catalogues.message(tag, "confirm-registration-button", None);
        let done = catalogues.message(tag, "success-title", None);
        let dir = screenshots(&format!("languages/{tag}"))
            .display()
            .to_string();
        let tag = tag.to_owned();
        tokio::task::spawn_blocking(move || {
            browser(&[
                "--viewport",
                "desktop",
                "--locale",
                &tag,
                "--lang",
                &tag,
                "--confirm-text",
                &button,
                "--text",
                &done,
                &link,
                &dir,
                "success",
            ]);
        })
        .await
        .expect("browser run");
    }
}
