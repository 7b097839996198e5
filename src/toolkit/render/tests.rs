use super::*;

fn config(extra: &str) -> Config {
    Config::from_toml(extra).expect("a valid config")
}

#[test]
fn every_language_gets_every_mail_sms_and_page_once() {
    let files = render_all(&config("")).unwrap();
    let languages = 9;
    assert_eq!(FILES_PER_LANGUAGE, 16);
    assert_eq!(files.len(), languages * FILES_PER_LANGUAGE);
    let mut names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), files.len(), "no name twice");
    let en: Vec<&str> = files
        .iter()
        .map(|f| f.name.as_str())
        .filter(|n| n.contains(".en."))
        .collect();
    assert_eq!(
        en,
        [
            "registration.en.eml",
            "registration.en.html",
            "password_reset.en.eml",
            "password_reset.en.html",
            "add_threepid.en.eml",
            "add_threepid.en.html",
            "notice_password.en.eml",
            "notice_password.en.html",
            "notice_removed.en.eml",
            "notice_removed.en.html",
            "sms.en.txt",
            "confirm-registration.en.html",
            "confirm-password_reset.en.html",
            "confirm-add_threepid.en.html",
            "success.en.html",
            "failure.en.html",
        ]
    );
}

#[test]
fn two_renders_are_byte_for_byte_the_same_and_links_start_at_public_baseurl() {
    let config = config("[server]\npublic_baseurl = \"https://matrix.example.org/\"\n");
    let first = render_all(&config).unwrap();
    let second = render_all(&config).unwrap();
    for (a, b) in first.iter().zip(&second) {
        assert_eq!(a.content, b.content, "{}", a.name);
    }
    let mail = first
        .iter()
        .find(|f| f.name == "registration.en.html")
        .unwrap();
    let html = String::from_utf8_lossy(&mail.content);
    let link =
        "https://matrix.example.org/_matrix/client/unstable/threepid/email/submit_token?token=";
    assert!(html.contains(&link.replace('/', "&#x2f;")), "{html}");
    let page = first
        .iter()
        .find(|f| f.name == "confirm-registration.en.html")
        .unwrap();
    let html = String::from_utf8_lossy(&page.content);
    assert!(html.contains("matrix.example.org"), "{html}");
}

#[test]
fn sms_sizes_count_gsm7_places_and_ucs2_characters() {
    assert_eq!(sms_size(b"Code 123456\n"), "GSM-7, 1 SMS: 11 of 160 places");
    assert_eq!(
        sms_size("€".repeat(80).as_bytes()),
        "GSM-7, 1 SMS: 160 of 160 places"
    );
    assert_eq!(
        sms_size("€".repeat(81).as_bytes()),
        "GSM-7, 2 SMS parts: 162 places"
    );
    assert_eq!(
        sms_size("验证码 123456".as_bytes()),
        "UCS-2, 1 SMS: 10 of 70 characters"
    );
    assert_eq!(
        sms_size("验".repeat(71).as_bytes()),
        "UCS-2, 2 SMS parts: 71 characters"
    );
}

#[test]
fn a_folder_that_is_not_empty_is_refused_and_a_missing_one_made() {
    let dir = tempfile::tempdir().unwrap();
    let files = [Rendered {
        name: "a.en.txt".into(),
        content: b"a".to_vec(),
    }];
    let new = dir.path().join("new");
    write(&new, &files).unwrap();
    assert_eq!(std::fs::read(new.join("a.en.txt")).unwrap(), b"a");
    let err = write(&new, &files).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}
