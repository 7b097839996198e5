//! Unit tests for [`super`] with lettre's stub transport (real SMTP is in `tests/it/mail.rs`).

use lettre::transport::stub::AsyncStubTransport;

use super::*;
use crate::config::Config;
use crate::delivery::MailContent;
use crate::threepid::Purpose;

/// Held by every test that sends. tracing caches each callsite's interest globally: a
/// log callsite first hit on another thread while the log test installs its subscriber
/// can be cached as "not interested", and the line the test looks for is never written.
static SENDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn email_config(extra: &str) -> Email {
    Config::from_toml(&format!(
        "[email]\nfrom = \"Example Chat <noreply@chat.example.org>\"\napp_name = \"Example Chat\"\n{extra}"
    ))
    .expect("test config is valid")
    .email
}

fn templates() -> Arc<Templates> {
    Arc::new(
        Templates::load(
            None,
            Arc::new(crate::i18n::Catalogues::load(None, "en").expect("catalogues")),
        )
        .expect("built-in templates load"),
    )
}

fn request(purpose: Purpose) -> MailRequest<'static> {
    MailRequest {
        to: "alice@example.org",
        language: "en",
        content: MailContent::Verification {
            purpose,
            link: "https://m.example.org/submit?sid=s1&token=tok123",
            token: "tok123",
        },
    }
}

#[test]
fn mask_email_keeps_the_first_letter_and_the_domain() {
    assert_eq!(mask_email("alice@example.org"), "a***@example.org");
    assert_eq!(mask_email("élodie@example.org"), "é***@example.org");
    assert_eq!(mask_email("@example.org"), "***@example.org");
    assert_eq!(mask_email("not-an-address"), "***");
    assert_eq!(mask_email("a@b@example.org"), "a***@example.org");
}

#[tokio::test]
async fn a_message_is_multipart_alternative_with_headers_and_both_parts() {
    let _serial = SENDING.lock().await;
    let stub = AsyncStubTransport::new_ok();
    let sender =
        EmailSender::with_stub(&email_config(""), "example.org", templates(), stub.clone())
            .unwrap();
    sender.send(request(Purpose::PasswordReset)).await.unwrap();
    let messages = stub.messages().await;
    assert_eq!(messages.len(), 1);
    let (envelope, raw) = &messages[0];
    assert_eq!(envelope.to()[0].to_string(), "alice@example.org");
    assert_eq!(
        envelope.from().unwrap().to_string(),
        "noreply@chat.example.org"
    );
    for header in [
        "Subject: [example.org] Password reset\r\n",
        "To: alice@example.org\r\n",
        "From: \"Example Chat\" <noreply@chat.example.org>\r\n",
        "Auto-Submitted: auto-generated\r\n",
        "Content-Type: multipart/alternative;",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Type: text/html; charset=utf-8",
    ] {
        assert!(raw.contains(header), "{header:?} missing:\n{raw}");
    }
    assert!(raw.contains("\r\nDate: "), "{raw}");
    assert!(
        raw.contains("\r\nMessage-ID: <") && raw.contains("@chat.example.org>"),
        "{raw}"
    );
}

/// Collects formatted log lines for the test below.
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_show_the_masked_address_never_the_address_link_or_token() {
    let _serial = SENDING.lock().await;
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    for stub in [
        AsyncStubTransport::new_ok(),
        AsyncStubTransport::new_error(),
    ] {
        let sender =
            EmailSender::with_stub(&email_config(""), "example.org", templates(), stub).unwrap();
        let _ = sender.send(request(Purpose::Registration)).await;
    }
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("a***@example.org"), "{logs}");
    assert!(
        logs.contains("mail sent") && logs.contains("not sent"),
        "{logs}"
    );
    for secret in ["alice@", "tok123", "https://m.example.org"] {
        assert!(!logs.contains(secret), "{secret} in logs:\n{logs}");
    }
}

#[tokio::test]
async fn a_stub_failure_is_reported_not_panicked() {
    let _serial = SENDING.lock().await;
    let stub = AsyncStubTransport::new_error();
    let sender =
        EmailSender::with_stub(&email_config(""), "example.org", templates(), stub).unwrap();
    let err = sender
        .send(request(Purpose::Registration))
        .await
        .unwrap_err();
    assert!(matches!(err, DeliveryError::Refused(_)), "{err:?}");
}

#[tokio::test]
async fn an_invalid_recipient_is_a_build_error_that_does_not_show_it() {
    let _serial = SENDING.lock().await;
    let sender = EmailSender::with_stub(
        &email_config(""),
        "example.org",
        templates(),
        AsyncStubTransport::new_ok(),
    )
    .unwrap();
    let req = MailRequest {
        to: "alice at example.org",
        ..request(Purpose::Registration)
    };
    let err = sender.send(req).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Build(_)), "{err:?}");
    assert!(!err.to_string().contains("alice"), "{err}");
}

#[tokio::test]
async fn smtp_urls_choose_tls_and_refuse_unknown_modes() {
    let smtp = |url: &str| {
        let mut c = email_config("");
        c.smtp_url = url.to_owned();
        smtp_client(&c)
    };
    assert!(smtp("smtp://mail.example.org").is_ok());
    assert!(smtp("smtps://mail.example.org:2465").is_ok());
    assert!(smtp("smtp://127.0.0.1:2525?tls=none").is_ok());
    assert!(smtp("smtp://[::1]:2525?tls=none").is_ok());
    assert!(smtp("smtp://mail.example.org?tls=opportunistic").is_err());
    assert!(smtp("smtps://mail.example.org?tls=none").is_err());
    assert!(smtp("http://mail.example.org").is_err());
}

#[test]
fn a_password_without_a_username_is_refused() {
    let c = email_config("transport = \"smtp\"\nsmtp_password = \"hunter2\"\n");
    let err = EmailSender::new(&c, "example.org", templates())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("smtp_username"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn the_file_transport_creates_its_folder() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("a/b");
    let c = email_config(&format!("file_dir = {:?}\n", folder.display().to_string()));
    EmailSender::new(&c, "example.org", templates()).unwrap();
    assert!(folder.is_dir());
}

#[test]
fn a_fixed_stamp_composes_the_same_bytes_twice_and_now_does_not() {
    let composer = Composer::new(&email_config(""), "example.org", templates()).unwrap();
    let mail = request(Purpose::Registration);
    let first = composer.eml(&mail, Stamp::Fixed).unwrap();
    assert_eq!(first, composer.eml(&mail, Stamp::Fixed).unwrap());
    let text = String::from_utf8(first).unwrap();
    assert!(
        text.contains("Date: Thu, 01 Jan 2026 00:00:00 +0000"),
        "{text}"
    );
    assert!(
        text.contains("Message-ID: <preview@chat.example.org>"),
        "{text}"
    );
    assert!(
        text.contains("boundary=\"threepid-sidecar-preview\""),
        "{text}"
    );
    assert_ne!(
        composer.eml(&mail, Stamp::Now).unwrap(),
        composer.eml(&mail, Stamp::Now).unwrap()
    );
}

#[test]
fn an_english_mail_goes_out_7bit_with_its_long_link_whole() {
    let composer = Composer::new(&email_config(""), "example.org", templates()).unwrap();
    let link = format!(
        "https://m.example.org/submit?sid=s1&client_secret={}&token=tok123",
        "c".repeat(64)
    );
    let mail = MailRequest {
        content: MailContent::Verification {
            purpose: Purpose::Registration,
            link: &link,
            token: "tok123",
        },
        ..request(Purpose::Registration)
    };
    let text = String::from_utf8(composer.eml(&mail, Stamp::Fixed).unwrap()).unwrap();
    assert_eq!(
        text.matches("Content-Transfer-Encoding: 7bit\r\n").count(),
        2,
        "{text}"
    );
    assert!(!text.contains("quoted-printable"), "{text}");
    assert!(
        text.contains(&format!("\r\n{link}\r\n")),
        "the link is not one line:\n{text}"
    );
    assert!(
        text.split("\r\n")
            .all(|line| line.len() <= 998 && !line.contains('\n')),
        "a line is too long or has a bare LF:\n{text}"
    );
}

#[test]
fn text_that_7bit_cannot_carry_as_it_is_goes_to_lettre() {
    for (text, why) in [
        ("Grüße\n".to_owned(), "not ASCII"),
        (format!("{}\n", "x".repeat(999)), "a line over 998 octets"),
        ("a\rb\n".to_owned(), "a bare CR"),
    ] {
        let ours = super::compose::body(text.clone());
        let lettres = lettre::message::Body::new(text);
        assert_eq!(ours.encoding(), lettres.encoding(), "{why}");
        assert_eq!(ours.into_vec(), lettres.into_vec(), "{why}");
    }
    let body = super::compose::body("a\nb\r\n.c".to_owned());
    assert_eq!(
        body.encoding(),
        lettre::message::header::ContentTransferEncoding::SevenBit
    );
    assert_eq!(body.into_vec(), b"a\r\nb\r\n.c");
}

#[test]
fn every_built_in_verification_mail_has_a_skeleton_that_renders_as_its_templates() {
    let templates = templates();
    let composer = Composer::new(&email_config(""), "example.org", templates.clone()).unwrap();
    let link = "https://m.example.org/_matrix/client/unstable/add_threepid/email/submit_token?\
                token=Abc123xyz&client_secret=s3cr%2Ft&sid=QWErty";
    for lang in templates.catalogues().tags() {
        for purpose in [
            Purpose::Registration,
            Purpose::PasswordReset,
            Purpose::AddThreepid,
        ] {
            let skeleton = composer
                .skeleton(purpose, lang)
                .unwrap_or_else(|| panic!("no skeleton for {purpose:?} in {lang}"));
            let filled = skeleton.fill(link, "Abc123xyz");
            let rendered = composer
                .verification(purpose, link, "Abc123xyz", lang)
                .unwrap();
            assert_eq!(filled.subject, rendered.subject, "{purpose:?} {lang}");
            assert_eq!(filled.text, rendered.text, "{purpose:?} {lang}");
            assert_eq!(filled.html, rendered.html, "{purpose:?} {lang}");
            assert_eq!(filled.language, rendered.language, "{purpose:?} {lang}");
        }
    }
}
