//! The pure parts of doctor: the report and exit code, and each check's verdict from what it
//! found (the network parts run against real services in `tests/it/toolkit.rs`).

use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, date_time_ymd,
};
use rustls::RootCertStore;
use rustls::pki_types::{CertificateDer, UnixTime};
use serde_json::{Map, Value, json};

use super::*;
use crate::config::{EmailTransport, PathCompatMode};
use crate::delivery::smtp::{Opening, SendError, Step};

fn object(value: Value) -> Map<String, Value> {
    value.as_object().expect("an object").clone()
}

#[test]
fn the_worst_status_decides_the_exit_code() {
    let ok = Check::ok("a", "fine");
    let warn = Check::warn("b", "do this");
    let fail = Check::fail("c", "do that");
    assert_eq!(exit_code(&[]), 0);
    assert_eq!(exit_code(&[ok.clone(), ok.clone()]), 0);
    assert_eq!(exit_code(&[ok.clone(), warn.clone()]), 1);
    assert_eq!(exit_code(&[fail.clone(), warn, ok]), 2);
    assert_eq!(exit_code(&[fail]), 2);
}

#[test]
fn a_line_is_status_name_sentence_and_json_is_an_array_of_the_same() {
    let checks = [
        Check::ok("store", "memory"),
        Check::fail("email.smtp", "cannot connect"),
    ];
    assert_eq!(
        report(&checks, false),
        "ok    store                      memory\nFAIL  email.smtp                 cannot connect\n"
    );
    let json: Value = serde_json::from_str(&report(&checks, true)).unwrap();
    assert_eq!(
        json,
        json!([
            {"name": "store", "status": "ok", "message": "memory"},
            {"name": "email.smtp", "status": "fail", "message": "cannot connect"}
        ])
    );
}

#[test]
fn a_refused_config_is_one_failure_and_exit_2() {
    let refused = crate::config::Config::from_toml("[nonsense]\n").unwrap_err();
    assert_eq!(main(Err(refused), None, true), 2);
}

#[test]
fn synapse_before_r0_6_is_legacy_and_later_homeservers_are_not() {
    let synapse_1_3 = object(json!({"versions": ["r0.0.1", "r0.5.0"]}));
    assert!(homeserver::is_legacy(&synapse_1_3));
    for modern in [
        json!({"versions": ["r0.5.0", "r0.6.0"]}),
        json!({"versions": ["r0.6.1", "v1.1"]}),
        json!({"versions": ["r0.5.0"], "unstable_features": {"m.require_identity_server": false}}),
    ] {
        assert!(!homeserver::is_legacy(&object(modern.clone())), "{modern}");
    }
}

#[test]
fn the_path_mapping_verdict_fits_mode_and_homeserver() {
    let r0_only = object(json!({"versions": ["r0.5.0"]}));
    let v1 = object(json!({"versions": ["r0.6.1", "v1.11"]}));
    let cases = [
        (PathCompatMode::Auto, &r0_only, Status::Ok, "on:"),
        (PathCompatMode::Auto, &v1, Status::Ok, "off:"),
        (PathCompatMode::R0, &r0_only, Status::Ok, "on "),
        (
            PathCompatMode::R0,
            &v1,
            Status::Warn,
            "set upstream.path_compat = \"auto\"",
        ),
        (
            PathCompatMode::Off,
            &r0_only,
            Status::Warn,
            "v3 paths it does not serve",
        ),
        (PathCompatMode::Off, &v1, Status::Ok, "off "),
    ];
    for (mode, versions, status, words) in cases {
        let check = homeserver::path_compat(mode, versions);
        assert_eq!(check.status, status, "{mode:?}: {}", check.message);
        assert!(check.message.contains(words), "{mode:?}: {}", check.message);
    }
}

#[test]
fn a_homeserver_advertising_its_own_address_is_a_warning() {
    let ours = url::Url::parse("https://matrix.example.org/").unwrap();
    let own = object(json!({"m.homeserver": {"base_url": "http://127.0.0.1:8008/"}}));
    let check = homeserver::public_baseurl(Some(&own), &ours);
    assert_eq!(check.status, Status::Warn);
    assert!(check.message.contains("(it says http://127.0.0.1:8008/)"));
    assert!(
        check
            .message
            .contains("set the homeserver's public_baseurl")
    );
    let same = object(json!({"m.homeserver": {"base_url": "https://matrix.example.org"}}));
    assert_eq!(
        homeserver::public_baseurl(Some(&same), &ours).status,
        Status::Ok
    );
    assert_eq!(homeserver::public_baseurl(None, &ours).status, Status::Ok);
}

#[test]
fn a_server_name_gives_host_and_port_443_by_default() {
    let split = identity::split_server_name;
    assert_eq!(split("localhost:8090"), ("localhost".into(), 8090));
    assert_eq!(split("id.example.org"), ("id.example.org".into(), 443));
    assert_eq!(split("[::1]:8090"), ("::1".into(), 8090));
    assert_eq!(split("[::1]"), ("::1".into(), 443));
}

#[test]
fn info_fields_and_the_memory_policy_are_read_from_every_node() {
    let info = "# Server\r\nredis_version:7.0.15\r\nrole:master\r\n# Memory\r\nmaxmemory_policy:noeviction\r\n";
    assert_eq!(store::info_field(info, "redis_version"), Some("7.0.15"));
    assert_eq!(store::info_field(info, "role"), Some("master"));
    assert_eq!(store::info_field(info, "missing"), None);
    assert_eq!(store::memory_policy(&[info.to_owned()]).status, Status::Ok);
    let evicting = info.replace("noeviction", "allkeys-lru");
    let check = store::memory_policy(&[info.to_owned(), evicting]);
    assert_eq!(check.status, Status::Warn);
    assert!(check.message.contains("maxmemory-policy is allkeys-lru"));
    assert!(check.message.contains("set maxmemory-policy noeviction"));
}

#[test]
fn the_store_is_named_without_its_password_and_how_it_is_reached_is_said() {
    let config = crate::config::Config::from_toml(
        "[store]\nbackend = \"redis\"\nurl = \"rediss://sidecar:s3cret@redis.internal:6380/2\"\n",
    )
    .unwrap();
    assert_eq!(
        store::describe(&config.store),
        "rediss://redis.internal:6380/2"
    );
    assert_eq!(store::access(&config.store), " over TLS with a password");
}

#[test]
fn a_cluster_must_serve_every_slot() {
    let healthy = "cluster_state:ok\r\ncluster_slots_ok:16384\r\ncluster_size:3\r\n";
    assert_eq!(store::cluster(healthy).status, Status::Ok);
    let broken = "cluster_state:fail\r\ncluster_slots_ok:10923\r\ncluster_size:2\r\n";
    let check = store::cluster(broken);
    assert_eq!(check.status, Status::Fail);
    assert!(
        check.message.contains("10923 of 16384"),
        "{}",
        check.message
    );
}

#[test]
fn a_from_on_localhost_is_a_warning_only_when_mail_leaves_the_machine() {
    let local = "Matrix <noreply@localhost>";
    assert_eq!(
        email::from(local, EmailTransport::Smtp).status,
        Status::Warn
    );
    assert_eq!(email::from(local, EmailTransport::File).status, Status::Ok);
    assert_eq!(
        email::from("Chat <noreply@chat.example.org>", EmailTransport::Smtp).status,
        Status::Ok
    );
    assert_eq!(
        email::from("not a mailbox", EmailTransport::Smtp).status,
        Status::Fail
    );
}

#[test]
fn an_smtp_failure_says_what_to_do_for_the_step_it_happened_at() {
    let trace = |step| Opening {
        step,
        ..Opening::default()
    };
    let refused = SendError::Refused {
        code: 535,
        permanent: true,
        text: "permanent error (535): 5.7.8 Authentication credentials invalid".into(),
    };
    let auth = email::refused("mail:587", &trace(Step::Auth), &refused, Some("sidecar"));
    assert!(auth.message.contains("refused AUTH as sidecar"));
    assert!(
        auth.message
            .contains("check email.smtp_username and email.smtp_password")
    );
    let down = SendError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
    let connect = email::refused("mail:587", &trace(Step::Connect), &down, None);
    assert!(connect.message.starts_with("cannot connect to mail:587"));
    let no_starttls = SendError::Protocol("STARTTLS is not supported on this server".into());
    let starttls = email::refused("mail:587", &trace(Step::StartTls), &no_starttls, None);
    assert!(
        starttls
            .message
            .contains("offers no STARTTLS: use smtps://")
    );
}

#[test]
fn an_opened_session_in_plain_text_is_fine_on_loopback_only() {
    let trace = Opening {
        step: Step::Ready,
        greeting: Some("220 mail ESMTP".into()),
        tls: None,
        auth: Some("PLAIN".into()),
    };
    let local = email::opened("127.0.0.1:25", "plain text", &trace, Some("sidecar"));
    assert_eq!(local.status, Status::Ok);
    assert_eq!(
        local.message,
        "127.0.0.1:25: 220 mail ESMTP; plain text; AUTH PLAIN as sidecar accepted; nothing sent"
    );
    let remote = email::opened("mail.example.org:25", "plain text", &trace, Some("sidecar"));
    assert_eq!(remote.status, Status::Warn);
    let tls = Opening {
        tls: Some("TLS 1.3".into()),
        ..trace
    };
    let check = email::opened("mail.example.org:587", "STARTTLS", &tls, Some("sidecar"));
    assert_eq!(check.status, Status::Ok);
    assert!(
        check
            .message
            .contains("STARTTLS, TLS 1.3, certificate valid")
    );
}

// The identity certificate, judged at a fixed time.

/// 2030-01-01.
fn at(year: i32, month: u8, day: u8) -> UnixTime {
    let secs = date_time_ymd(year, month, day).unix_timestamp();
    UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(secs).unwrap()))
}

struct Pki {
    ca: CertificateDer<'static>,
    leaf: CertificateDer<'static>,
}

/// A CA and a leaf it issued for `names`, ending on `not_after`.
fn issued(names: &[&str], not_after: (i32, u8, u8)) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    params.not_after = date_time_ymd(not_after.0, not_after.1, not_after.2);
    let leaf = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca: ca.der().clone(),
        leaf: leaf.der().clone(),
    }
}

fn roots(ca: &CertificateDer<'static>) -> Option<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    Some(Arc::new(roots))
}

#[test]
fn a_certificate_from_a_trusted_ca_for_the_name_is_ok_and_says_until_when() {
    let pki = issued(&["localhost"], (2031, 6, 1));
    let check = identity::judge(&[pki.leaf], "localhost", roots(&pki.ca), at(2030, 1, 1));
    assert_eq!(check.status, Status::Ok, "{}", check.message);
    assert_eq!(
        check.message,
        "valid for localhost until 2031-06-01, from a CA this machine trusts"
    );
}

#[test]
fn a_certificate_for_another_name_fails_and_names_what_it_is_for() {
    let pki = issued(&["wrong.example.org"], (2031, 6, 1));
    let check = identity::judge(&[pki.leaf], "localhost", roots(&pki.ca), at(2030, 1, 1));
    assert_eq!(check.status, Status::Fail);
    assert!(
        check
            .message
            .starts_with("not valid for localhost (it names wrong.example.org)"),
        "{}",
        check.message
    );
}

#[test]
fn a_certificate_ending_within_30_days_is_a_warning_and_an_ended_one_fails() {
    let pki = issued(&["localhost"], (2030, 1, 15));
    let soon = identity::judge(
        std::slice::from_ref(&pki.leaf),
        "localhost",
        roots(&pki.ca),
        at(2030, 1, 1),
    );
    assert_eq!(soon.status, Status::Warn);
    assert!(soon.message.contains("ends on 2030-01-15, within 30 days"));
    let ended = identity::judge(&[pki.leaf], "localhost", roots(&pki.ca), at(2030, 2, 1));
    assert_eq!(ended.status, Status::Fail);
    assert!(ended.message.starts_with("expired on 2030-01-15"));
}

#[test]
fn a_self_signed_certificate_says_what_synapse_needs() {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let leaf = generated.cert.der().clone();
    let check = identity::judge(&[leaf], "localhost", None, UnixTime::now());
    assert_eq!(check.status, Status::Warn, "{}", check.message);
    assert!(
        check.message.contains("but self-signed"),
        "{}",
        check.message
    );
    assert!(
        check
            .message
            .contains("Synapse 1.3.1 accepts it only with the certificate in its trust store")
    );
    assert!(
        check
            .message
            .contains("use_insecure_ssl_client_just_for_testing_do_not_use")
    );
}

#[test]
fn a_leaf_from_a_ca_doctor_does_not_know_is_checked_for_its_name_and_says_how_to_check_more() {
    let pki = issued(&["localhost"], (2031, 6, 1));
    let check = identity::judge(
        std::slice::from_ref(&pki.leaf),
        "localhost",
        None,
        at(2030, 1, 1),
    );
    assert_eq!(check.status, Status::Warn, "{}", check.message);
    assert!(check.message.contains("SSL_CERT_FILE"), "{}", check.message);
    let elsewhere = identity::judge(&[pki.leaf], "id.example.org", None, at(2030, 1, 1));
    assert_eq!(elsewhere.status, Status::Fail);
    // With the CA sent along: a private CA, dates known.
    let chain = [issued(&["localhost"], (2031, 6, 1))];
    let check = identity::judge(
        &[chain[0].leaf.clone(), chain[0].ca.clone()],
        "localhost",
        None,
        at(2030, 1, 1),
    );
    assert_eq!(check.status, Status::Warn, "{}", check.message);
    assert!(
        check
            .message
            .contains("until 2031-06-01, but from a private CA"),
        "{}",
        check.message
    );
}
