//! Unit tests for [`super`]: built-ins, escaping, overrides.

use super::*;

fn catalogues() -> Arc<Catalogues> {
    Arc::new(Catalogues::load(None, "en").expect("the shipped catalogues load"))
}

fn vars() -> MailVars<'static> {
    MailVars {
        app_name: "Example Chat",
        server_name: "example.org",
        link: "https://m.example.org/_matrix/client/unstable/threepid/email/submit_token?sid=s1&client_secret=cs&token=tok123",
        token: "tok123",
    }
}

/// How the link looks inside HTML after escaping.
fn html_escaped(s: &str) -> String {
    s.replace('&', "&amp;").replace('/', "&#x2f;")
}

#[test]
fn defaults_render_each_purpose_with_its_variables() {
    let t = Templates::load(None, catalogues()).unwrap();
    for purpose in PURPOSES {
        let m = t.mail(purpose, &vars(), "en").unwrap();
        for part in [&m.text, &m.html] {
            assert!(part.contains("tok123"), "{purpose:?}: {part}");
            assert!(part.contains("example.org"), "{purpose:?}: {part}");
            assert!(part.contains("Example Chat"), "{purpose:?}: {part}");
        }
        assert!(m.text.contains(vars().link), "{}", m.text);
        assert!(m.html.contains(&html_escaped(vars().link)), "{}", m.html);
        assert!(m.text.contains("ignore this email"), "{}", m.text);
    }
}

#[test]
fn subjects_follow_synapse_per_purpose() {
    let t = Templates::load(None, catalogues()).unwrap();
    let subject = |p| t.mail(p, &vars(), "en").unwrap().subject;
    assert_eq!(
        subject(Purpose::Registration),
        "[example.org] Validate your email"
    );
    assert_eq!(
        subject(Purpose::AddThreepid),
        "[example.org] Validate your email"
    );
    assert_eq!(
        subject(Purpose::PasswordReset),
        "[example.org] Password reset"
    );
}

#[test]
fn a_subject_never_contains_a_newline() {
    let t = Templates::load(None, catalogues()).unwrap();
    let hostile = MailVars {
        server_name: "evil.org\r\nBcc: victim@example.org\n",
        ..vars()
    };
    for purpose in PURPOSES {
        let subject = t.mail(purpose, &hostile, "en").unwrap().subject;
        assert!(!subject.contains(['\r', '\n']), "{subject:?}");
    }
}

#[test]
fn hostile_values_are_html_escaped_in_mail_and_pages() {
    let t = Templates::load(None, catalogues()).unwrap();
    let evil = "<script>alert(1)</script>";
    let m = t
        .mail(
            Purpose::Registration,
            &MailVars {
                app_name: evil,
                link: evil,
                ..vars()
            },
            "en",
        )
        .unwrap();
    assert!(!m.html.contains("<script>"), "{}", m.html);
    assert!(m.html.contains("&lt;script&gt;"));
    // Plain text is not HTML: it stays as typed.
    assert!(m.text.contains(evil));

    let pages = [
        t.page(
            Page::Confirm {
                app_name: evil,
                purpose: Purpose::PasswordReset,
                action: "\"><script>x</script>",
                sid: evil,
                client_secret: evil,
                token: evil,
            },
            "en",
        ),
        t.page(Page::Success { app_name: evil }, "en"),
        t.page(
            Page::Failure {
                app_name: evil,
                reason: Failure::Other,
            },
            "en",
        ),
    ];
    for page in pages {
        let page = page.unwrap();
        assert!(!page.contains("<script>"), "{page}");
        assert!(page.contains("&lt;script&gt;"), "{page}");
    }
}

#[test]
fn the_confirm_page_has_one_form_posting_the_hidden_fields_to_the_action() {
    let t = Templates::load(None, catalogues()).unwrap();
    for purpose in PURPOSES {
        let page = t
            .page(
                Page::Confirm {
                    app_name: "Example Chat",
                    purpose,
                    action: "submit_token",
                    sid: "s1",
                    client_secret: "cs",
                    token: "tok123",
                },
                "en",
            )
            .unwrap();
        assert_eq!(page.matches("<form").count(), 1, "{page}");
        assert_eq!(page.matches("<button").count(), 1, "{page}");
        assert!(
            page.contains(r#"method="post" action="submit_token""#),
            "{page}"
        );
        for (name, value) in [("sid", "s1"), ("client_secret", "cs"), ("token", "tok123")] {
            let input = format!(r#"<input type="hidden" name="{name}" value="{value}">"#);
            assert!(page.contains(&input), "{input} missing: {page}");
        }
        assert!(page.contains("name=\"viewport\""));
        assert!(!page.contains("<script"), "no JavaScript: {page}");
        assert!(!page.contains("http"), "no external assets: {page}");
    }
}

#[test]
fn the_confirm_page_explains_what_confirming_does_per_purpose() {
    let t = Templates::load(None, catalogues()).unwrap();
    let page = |purpose| {
        t.page(
            Page::Confirm {
                app_name: "A",
                purpose,
                action: "x",
                sid: "s",
                client_secret: "c",
                token: "t",
            },
            "en",
        )
        .unwrap()
    };
    assert!(page(Purpose::Registration).contains("creating your account"));
    assert!(page(Purpose::PasswordReset).contains("reset your password"));
    assert!(page(Purpose::AddThreepid).contains("add it to your account"));
}

#[test]
fn success_and_failure_pages_show_the_app_and_the_reason() {
    let t = Templates::load(None, catalogues()).unwrap();
    let ok = t
        .page(
            Page::Success {
                app_name: "Example Chat",
            },
            "en",
        )
        .unwrap();
    assert!(
        ok.contains("Example Chat") && ok.contains("verified"),
        "{ok}"
    );
    let bad = t
        .page(
            Page::Failure {
                app_name: "Example Chat",
                reason: Failure::TokenIncorrect,
            },
            "en",
        )
        .unwrap();
    assert!(
        bad.contains("The code in this link is wrong or has expired."),
        "{bad}"
    );
}

#[test]
fn an_override_replaces_one_template_and_leaves_the_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("registration.subject.txt"),
        "Welcome to {{ app_name }}\n",
    )
    .unwrap();
    let t = Templates::load(Some(dir.path()), catalogues()).unwrap();
    assert_eq!(
        t.mail(Purpose::Registration, &vars(), "en")
            .unwrap()
            .subject,
        "Welcome to Example Chat"
    );
    assert_eq!(
        t.mail(Purpose::PasswordReset, &vars(), "en")
            .unwrap()
            .subject,
        "[example.org] Password reset"
    );
    assert!(
        t.mail(Purpose::Registration, &vars(), "en")
            .unwrap()
            .text
            .contains("tok123")
    );
}

#[test]
fn a_broken_override_fails_load_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("confirm.html"),
        "{% if purpose %}never closed",
    )
    .unwrap();
    let err = Templates::load(Some(dir.path()), catalogues())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("confirm.html"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
}

#[test]
fn an_override_printing_an_unknown_variable_fails_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("add_threepid.txt"), "open {{ lnik }}\n").unwrap();
    let err = Templates::load(Some(dir.path()), catalogues())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("add_threepid.txt"), "{err}");
}

#[test]
fn a_missing_templates_dir_fails_load() {
    let err = Templates::load(Some(Path::new("/nonexistent/templates")), catalogues())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("/nonexistent/templates"), "{err}");
}

#[test]
fn each_purpose_names_its_three_mail_templates_after_itself() {
    for purpose in PURPOSES {
        let base = purpose.as_str();
        let want = [
            format!("{base}.subject.txt"),
            format!("{base}.txt"),
            format!("{base}.html"),
        ];
        assert_eq!(mail_templates(purpose), want.each_ref().map(String::as_str));
        for name in mail_templates(purpose) {
            assert!(BUILTINS.iter().any(|(known, _)| *known == name), "{name}");
        }
    }
}
