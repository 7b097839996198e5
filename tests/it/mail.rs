//! `EmailSender` against a real SMTP server (aiosmtpd) and into `.eml` files: what
//! arrives, and how a dead or silent server fails.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use threepid_sidecar::config::Config;
use threepid_sidecar::delivery::email::EmailSender;
use threepid_sidecar::delivery::{DeliveryError, MailContent, MailRequest, Mailer};
use threepid_sidecar::i18n::Catalogues;
use threepid_sidecar::templates::Templates;
use threepid_sidecar::threepid::Purpose;

use crate::common::smtp::SmtpServer;

const MAIL_WAIT: Duration = Duration::from_secs(10);
/// Time allowed on top of `send_timeout` before a failure counts as slow.
const SLACK: Duration = Duration::from_secs(1);

fn sender(email_section: &str) -> EmailSender {
    let config = Config::from_toml(&format!(
        "[email]\nfrom = \"Example Chat <noreply@chat.example.org>\"\napp_name = \"Example Chat\"\n{email_section}"
    ))
    .expect("test config is valid");
    let catalogues = Arc::new(Catalogues::load(None, "en").expect("catalogues load"));
    let templates = Arc::new(Templates::load(None, catalogues).expect("built-in templates load"));
    EmailSender::new(&config.email, "example.org", templates).expect("sender builds")
}

fn smtp_sender(url: &str, send_timeout: &str) -> EmailSender {
    sender(&format!(
        "transport = \"smtp\"\nsmtp_url = \"{url}\"\nsend_timeout = \"{send_timeout}\"\n"
    ))
}

fn link(token: &str) -> String {
    format!(
        "https://m.example.org/_matrix/client/unstable/threepid/email/submit_token?sid=s1&client_secret=cs&token={token}"
    )
}

fn request<'a>(purpose: Purpose, link: &'a str, token: &'a str) -> MailRequest<'a> {
    MailRequest {
        to: "alice@example.org",
        language: "en",
        content: MailContent::Verification {
            purpose,
            link,
            token,
        },
    }
}

#[tokio::test]
async fn each_purpose_arrives_with_its_subject_both_parts_and_the_link_and_token() {
    let smtp = SmtpServer::start();
    let mailer = smtp_sender(&smtp.url(), "5s");
    let cases = [
        (
            Purpose::Registration,
            "tokreg1",
            "[example.org] Validate your email",
        ),
        (
            Purpose::PasswordReset,
            "tokpwd2",
            "[example.org] Password reset",
        ),
        (
            Purpose::AddThreepid,
            "tokadd3",
            "[example.org] Validate your email",
        ),
    ];
    for (i, (purpose, token, subject)) in cases.into_iter().enumerate() {
        let link = link(token);
        mailer
            .send(request(purpose, &link, token))
            .await
            .unwrap_or_else(|e| panic!("{purpose:?}: {e}"));
        let mails = smtp.wait_for(i + 1, MAIL_WAIT);
        let mail = mails
            .iter()
            .find(|m| m.text.contains(token))
            .unwrap_or_else(|| panic!("no mail for {purpose:?}"));
        assert_eq!(mail.subject, subject);
        assert_eq!(mail.to, "alice@example.org");
        assert_eq!(mail.from, "noreply@chat.example.org");
        assert!(
            !mail.text.is_empty() && !mail.html.is_empty(),
            "both parts: {}",
            mail.raw
        );
        assert!(mail.text.contains(&link), "{}", mail.text);
        let escaped = link.replace('&', "&amp;").replace('/', "&#x2f;");
        assert!(mail.html.contains(&escaped), "{}", mail.html);
        assert!(mail.html.contains(token), "{}", mail.html);
        assert!(mail.raw.contains("multipart/alternative"), "{}", mail.raw);
        assert!(
            mail.raw.contains("\nDate: ") && mail.raw.contains("\nMessage-ID: <"),
            "{}",
            mail.raw
        );
    }
    assert_eq!(smtp.messages().len(), 3);
}

#[tokio::test]
async fn a_stopped_server_fails_quickly_and_a_restarted_one_is_used_again() {
    let mut smtp = SmtpServer::start();
    let send_timeout = Duration::from_secs(2);
    let mailer = smtp_sender(&smtp.url(), "2s");
    let link = link("tok1");
    mailer
        .send(request(Purpose::Registration, &link, "tok1"))
        .await
        .unwrap();
    smtp.wait_for(1, MAIL_WAIT);

    smtp.stop();
    assert!(
        TcpStream::connect(("127.0.0.1", smtp.port())).is_err(),
        "stopped"
    );
    let started = Instant::now();
    let err = mailer
        .send(request(Purpose::Registration, &link, "tok1"))
        .await
        .expect_err("nobody is listening");
    assert!(
        started.elapsed() < send_timeout + SLACK,
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, DeliveryError::Unreachable(_)), "{err:?}");

    smtp.restart();
    mailer
        .send(request(Purpose::PasswordReset, &link, "tok1"))
        .await
        .expect("the pool reconnects to the restarted server");
    let mails = smtp.wait_for(2, MAIL_WAIT);
    assert_eq!(mails.len(), 2, "mail from before the restart is kept");
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    // Connections complete in the kernel's backlog, but no greeting ever comes.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "smtp://127.0.0.1:{}?tls=none",
        silent.local_addr().unwrap().port()
    );
    let mailer = smtp_sender(&url, "1s");
    let link = link("tok1");
    let started = Instant::now();
    let err = mailer
        .send(request(Purpose::Registration, &link, "tok1"))
        .await
        .expect_err("no greeting");
    assert!(matches!(err, DeliveryError::Timeout), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(1) + SLACK,
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_file_transport_writes_an_eml_with_the_subject() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("outbox");
    let mailer = sender(&format!(
        "transport = \"file\"\nfile_dir = {:?}\n",
        folder.display().to_string()
    ));
    let link = link("tok1");
    mailer
        .send(request(Purpose::PasswordReset, &link, "tok1"))
        .await
        .unwrap();
    let files: Vec<_> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(files[0].extension().and_then(|e| e.to_str()), Some("eml"));
    let eml = std::fs::read_to_string(&files[0]).unwrap();
    assert!(
        eml.contains("Subject: [example.org] Password reset"),
        "{eml}"
    );
    assert!(eml.contains("To: alice@example.org"), "{eml}");
}
