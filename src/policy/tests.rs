use super::disposable::{DisposableList, Reloaded, parse};
use super::webhook::{WebhookAnswer, read_answer};
use super::*;

fn policy(toml: &str) -> Policy {
    let config = config::Config::from_toml(toml).unwrap_or_else(|e| panic!("{e}"));
    Policy::new(&config.policy, &config.sms).expect("a policy")
}

fn email(p: &Policy, address: &str) -> Result<(), Denial> {
    p.check_local(Medium::Email, address, None)
}

#[test]
fn nothing_configured_lets_everything_in() {
    let p = policy("");
    assert_eq!(email(&p, "a@example.org"), Ok(()));
    assert_eq!(
        p.check_local(Medium::Msisdn, "447700900123", Some("GB")),
        Ok(())
    );
}

#[test]
fn a_domain_is_denied_exactly_and_a_star_denies_every_name_under_it() {
    let p = policy("[policy]\ndenied_domains = [\"example.org\", \"*.spam.test\"]\n");
    assert_eq!(email(&p, "a@example.org"), Err(Denial::DeniedDomain));
    assert_eq!(email(&p, "a@EXAMPLE.ORG"), Err(Denial::DeniedDomain));
    assert_eq!(
        email(&p, "a@sub.example.org"),
        Ok(()),
        "only example.org itself"
    );
    assert_eq!(email(&p, "a@notexample.org"), Ok(()));
    assert_eq!(email(&p, "a@x.spam.test"), Err(Denial::DeniedDomain));
    assert_eq!(email(&p, "a@y.x.spam.test"), Err(Denial::DeniedDomain));
    assert_eq!(
        email(&p, "a@spam.test"),
        Ok(()),
        "*.spam.test is the names under it"
    );
    assert_eq!(
        email(&p, "a@nospam.test"),
        Ok(()),
        "never across a label boundary"
    );
}

#[test]
fn international_domains_are_compared_in_their_ascii_form() {
    let p = policy("[policy]\ndenied_domains = [\"bücher.example\"]\n");
    assert_eq!(
        email(&p, "a@xn--bcher-kva.example"),
        Err(Denial::DeniedDomain)
    );
    assert_eq!(email(&p, "a@bücher.example"), Err(Denial::DeniedDomain));
}

#[test]
fn denied_addresses_are_regular_expressions_on_the_canonical_address() {
    let p = policy("[policy]\ndenied_addresses = [\"^admin@\", \"\\\\+spam@\"]\n");
    assert_eq!(email(&p, "admin@example.org"), Err(Denial::DeniedAddress));
    assert_eq!(email(&p, "me+spam@example.org"), Err(Denial::DeniedAddress));
    assert_eq!(email(&p, "me@example.org"), Ok(()));
    assert_eq!(email(&p, "sysadmin@example.org"), Ok(()));
}

#[test]
fn a_disposable_domain_and_its_subdomains_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("disposable.txt");
    std::fs::write(
        &file,
        "# a list\nmailinator.com\n  Trash-Mail.example  # inline\n\n",
    )
    .unwrap();
    let p = policy(&format!(
        "[policy]\ndisposable_domains_file = {:?}\n",
        file.display().to_string()
    ));
    assert_eq!(email(&p, "a@mailinator.com"), Err(Denial::Disposable));
    assert_eq!(email(&p, "a@x.mailinator.com"), Err(Denial::Disposable));
    assert_eq!(email(&p, "a@trash-mail.example"), Err(Denial::Disposable));
    assert_eq!(email(&p, "a@notmailinator.com"), Ok(()));
    assert_eq!(p.disposable().expect("a list").len(), 2);
}

#[test]
fn a_changed_list_is_read_again_and_a_bad_one_keeps_the_old() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("list.txt");
    std::fs::write(&file, "one.example\n").unwrap();
    let list = DisposableList::load(&file).unwrap();
    assert_eq!(list.reload(false), Reloaded::Unchanged);
    std::fs::write(&file, "one.example\ntwo.example\n").unwrap();
    assert_eq!(list.reload(false), Reloaded::Replaced(2));
    assert!(list.contains("two.example"));
    std::fs::write(&file, "three.example\nnot a domain\n").unwrap();
    let kept = list.reload(false);
    assert!(
        matches!(&kept, Reloaded::Kept(why) if why.contains("line 2")),
        "{kept:?}"
    );
    assert!(list.contains("two.example") && !list.contains("three.example"));
    std::fs::remove_file(&file).unwrap();
    assert!(matches!(list.reload(true), Reloaded::Kept(_)));
    assert_eq!(list.len(), 2);
}

#[test]
fn list_lines_must_be_domains() {
    assert!(parse("example.org\n*.example.net\n# c\n").is_ok());
    for bad in ["localhost", "a b.example", "exa mple.org", "-", "x..y"] {
        assert!(parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn countries_are_allowed_or_denied_by_the_numbers_region() {
    let p = policy("[sms]\nallowed_countries = [\"GB\", \"DE\"]\ndenied_countries = [\"DE\"]\n");
    let msisdn = |region| p.check_local(Medium::Msisdn, "447700900123", region);
    assert_eq!(msisdn(Some("GB")), Ok(()));
    assert_eq!(msisdn(Some("DE")), Err(Denial::Country), "denied wins");
    assert_eq!(msisdn(Some("FR")), Err(Denial::Country), "not allowed");
    assert_eq!(msisdn(None), Err(Denial::Country));
    let p = policy("[sms]\ndenied_countries = [\"NG\"]\n");
    assert_eq!(
        p.check_local(Medium::Msisdn, "234", Some("NG")),
        Err(Denial::Country)
    );
    assert_eq!(p.check_local(Medium::Msisdn, "44", Some("GB")), Ok(()));
}

#[test]
fn the_webhooks_answer_is_read_strictly() {
    assert_eq!(read_answer(br#"{"allow": true}"#), WebhookAnswer::Allow);
    assert_eq!(
        read_answer(br#"{"allow": false, "reason": "Use your work address."}"#),
        WebhookAnswer::Deny(Some("Use your work address.".into()))
    );
    assert_eq!(
        read_answer(br#"{"allow": false}"#),
        WebhookAnswer::Deny(None)
    );
    for bad in [&b"[]"[..], b"{}", br#"{"allow": "yes"}"#, b"not json"] {
        assert!(matches!(read_answer(bad), WebhookAnswer::Failed(_)));
    }
}

#[test]
fn each_denial_is_a_matrix_refusal_with_a_sentence() {
    for denial in [
        Denial::DeniedDomain,
        Denial::DeniedAddress,
        Denial::Disposable,
        Denial::Country,
        Denial::Webhook(None),
    ] {
        let e = denial.into_matrix();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(e.errcode, "M_THREEPID_DENIED");
        assert!(e.error.len() > 20);
    }
    let e = Denial::WebhookUnavailable.into_matrix();
    assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
}
