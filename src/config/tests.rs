use super::*;

#[test]
fn the_example_is_valid_and_needs_no_redis_or_mail_server() {
    let config = Config::from_toml(EXAMPLE).expect("config.example.toml is valid");
    assert_eq!(config.store.backend, StoreBackend::Memory);
    assert_eq!(config.email.transport, EmailTransport::File);
    assert_eq!(config.upstream.url.as_str(), "http://127.0.0.1:8008/");
}

#[test]
fn an_unknown_key_is_refused_with_line_and_column() {
    let err = Config::from_toml("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 3"), "{err}");
    assert!(err.contains("column 1"), "{err}");
    assert!(err.contains("listen_port"), "{err}");
}

#[test]
fn an_unknown_section_is_refused() {
    let err = Config::from_toml("[serverr]\n").unwrap_err().to_string();
    assert!(err.contains("line 1"), "{err}");
}

#[test]
fn a_bad_value_names_its_key() {
    let err = Config::from_toml("[threepid]\ntoken_lifetime = \"soon\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("threepid.token_lifetime:"), "{err}");
    let err = Config::from_toml("[upstream]\nurl = \"ftp://x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("upstream.url:"), "{err}");
}

#[test]
fn durations_are_strings() {
    let c = Config::from_toml("[threepid]\nsession_lifetime = \"2h 30m\"\n").unwrap();
    assert_eq!(c.threepid.session_lifetime, Duration::from_secs(9000));
}

#[test]
fn a_file_secret_is_read_and_its_trailing_newline_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    std::fs::write(&path, "s3cret\n").unwrap();
    let c = Config::from_toml(&format!(
        "[email]\nsmtp_password_file = {:?}\n",
        path.display().to_string()
    ))
    .unwrap();
    assert_eq!(c.email.password(), Some("s3cret"));
}

#[test]
fn inline_and_file_secret_together_are_refused() {
    let err = Config::from_toml("[email]\nsmtp_password = \"a\"\nsmtp_password_file = \"/x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("email.smtp_password:"), "{err}");
}

#[test]
fn redacted_output_never_shows_a_secret() {
    let c = Config::from_toml(
        "[email]\nsmtp_password = \"hunter2\"\nsmtp_url = \"smtp://u:pw99@mail:25\"\n[sms]\nwebhook_token = \"tok-abc\"\n[store]\nurl = \"redis://:redispw@r:6379\"\n",
    )
    .unwrap();
    let out = c.redacted_toml();
    for secret in ["hunter2", "pw99", "tok-abc", "redispw"] {
        assert!(!out.contains(secret), "{secret} leaked:\n{out}");
    }
    assert!(out.contains("<redacted>"));
    // …and it is itself TOML.
    toml::from_str::<toml::Value>(&out).unwrap();
}

#[test]
fn public_baseurl_always_ends_in_a_slash() {
    let c = Config::from_toml("[server]\npublic_baseurl = \"https://m.example.org/hs\"\n").unwrap();
    assert_eq!(
        c.server.public_baseurl.as_str(),
        "https://m.example.org/hs/"
    );
}

#[test]
fn allowed_addresses_are_regular_expressions_per_medium() {
    let c = Config::from_toml(
        "[threepid]\nallowed_addresses = [{ medium = \"email\", pattern = \"@example\\\\.org$\" }]\n",
    )
    .unwrap();
    assert!(c.threepid.address_allowed("email", "a@example.org"));
    assert!(!c.threepid.address_allowed("email", "a@example.com"));
    assert!(!c.threepid.address_allowed("msisdn", "447700900123"));
    let err = Config::from_toml(
        "[threepid]\nallowed_addresses = [{ medium = \"email\", pattern = \"(\" }]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("threepid.allowed_addresses:"), "{err}");
}

#[test]
fn store_sentinel_and_cluster_sections_set_the_topology() {
    let c = Config::from_toml("[store]\nbackend = \"redis\"\n").unwrap();
    assert!(matches!(c.store.topology, StoreTopology::Single));
    let c = Config::from_toml(
        "[store]\nbackend = \"redis\"\n[store.sentinel]\nmaster_name = \"m\"\nsentinels = [\"10.0.0.5:26379\", \"[::1]:26380\", \"s3.local:26381\"]\npassword = \"pw\"\n",
    )
    .unwrap();
    let StoreTopology::Sentinel(s) = &c.store.topology else {
        panic!("expected sentinel, got {:?}", c.store.topology);
    };
    assert_eq!(s.master_name, "m");
    let sentinels: Vec<_> = s.sentinels.iter().map(|(h, p)| (h.as_str(), *p)).collect();
    assert_eq!(
        sentinels,
        [("10.0.0.5", 26379), ("::1", 26380), ("s3.local", 26381)]
    );
    assert_eq!(s.password.as_ref().map(|p| p.expose_secret()), Some("pw"));
    assert!(s.sentinel_password.is_none());
    let c = Config::from_toml(
        "[store]\nbackend = \"redis\"\n[store.cluster]\nnodes = [\"redis://10.0.0.5:6379\", \"redis://10.0.0.6\"]\n",
    )
    .unwrap();
    let StoreTopology::Cluster { nodes } = &c.store.topology else {
        panic!("expected cluster, got {:?}", c.store.topology);
    };
    assert_eq!(nodes, &["redis://10.0.0.5:6379", "redis://10.0.0.6"]);
}

#[test]
fn a_bad_store_topology_is_refused_naming_its_key() {
    let redis = "[store]\nbackend = \"redis\"\n";
    let sentinel = "[store.sentinel]\nmaster_name = \"m\"\nsentinels = [\"h:1\"]\n";
    let cluster = "[store.cluster]\nnodes = [\"redis://h:1\"]\n";
    for (toml, key) in [
        (format!("{redis}{sentinel}{cluster}"), "store.cluster:"),
        (
            format!("[store]\nbackend = \"memory\"\n{sentinel}"),
            "store.backend:",
        ),
        (
            format!("{redis}{}", sentinel.replace("\"m\"", "\"\"")),
            "store.sentinel.master_name:",
        ),
        (
            format!("{redis}{}", sentinel.replace("[\"h:1\"]", "[]")),
            "store.sentinel.sentinels:",
        ),
        (
            format!("{redis}{}", sentinel.replace("h:1", "h")),
            "store.sentinel.sentinels:",
        ),
        (
            format!("{redis}{}", sentinel.replace("h:1", "redis://h:1")),
            "store.sentinel.sentinels:",
        ),
        (
            format!("{redis}{sentinel}password = \"a\"\npassword_file = \"/x\"\n"),
            "store.sentinel.password:",
        ),
        (
            format!("{redis}{}", cluster.replace("redis://h:1", "h:1")),
            "store.cluster.nodes:",
        ),
        (
            format!("{redis}{}", cluster.replace("[\"redis://h:1\"]", "[]")),
            "store.cluster.nodes:",
        ),
        (
            format!(
                "{redis}{}",
                cluster.replace("\"redis://h:1\"", "\"redis://h:1\", \"rediss://g:1\"")
            ),
            "store.cluster.nodes:",
        ),
    ] {
        let err = Config::from_toml(&toml).unwrap_err().to_string();
        assert!(err.starts_with(key), "{toml}\n→ {err}");
    }
    let err = Config::from_toml(&format!("{redis}{sentinel}sentinel = [\"h:2\"]\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("sentinel"), "an unknown key is refused: {err}");
}

#[test]
fn redacted_output_never_shows_a_sentinel_or_cluster_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pw");
    std::fs::write(&path, "filepw7\n").unwrap();
    let c = Config::from_toml(&format!(
        "[store]\nbackend = \"redis\"\n[store.sentinel]\nmaster_name = \"m\"\nsentinels = [\"[::1]:26379\"]\npassword = \"masterpw\"\nsentinel_password_file = {:?}\n",
        path.display().to_string()
    ))
    .unwrap();
    let out = c.redacted_toml();
    for secret in ["masterpw", "filepw7"] {
        assert!(!out.contains(secret), "{secret} leaked:\n{out}");
    }
    let value: toml::Value = toml::from_str(&out).unwrap();
    assert_eq!(
        value["store"]["sentinel"]["sentinels"][0].as_str(),
        Some("[::1]:26379")
    );
    assert_eq!(
        value["store"]["sentinel"]["password"].as_str(),
        Some("<redacted>")
    );
    let c = Config::from_toml(
        "[store]\nbackend = \"redis\"\n[store.cluster]\nnodes = [\"rediss://:clusterpw@h:1\"]\n",
    )
    .unwrap();
    let out = c.redacted_toml();
    assert!(!out.contains("clusterpw"), "leaked:\n{out}");
    toml::from_str::<toml::Value>(&out).unwrap();
}

#[test]
fn outbox_settings_have_defaults_and_are_checked() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c.email.max_retry_age, Duration::from_secs(3600));
    assert_eq!(c.sms.max_retry_age, Duration::from_secs(900));
    assert_eq!(c.outbox.claim_timeout, Duration::from_secs(30));
    assert_eq!(c.outbox.retry_base, Duration::from_secs(1));
    let redis = "[store]\nbackend = \"redis\"\n";
    for (toml, key) in [
        (
            format!("{redis}[outbox]\nclaim_timeout = \"10s\"\n"),
            "outbox.claim_timeout:",
        ),
        (
            format!("{redis}[outbox]\nclaim_timeout = \"2s\"\n[sms]\ntimeout = \"3s\"\n"),
            "outbox.claim_timeout:",
        ),
        (
            format!("{redis}[outbox]\nretry_base = \"0s\"\n"),
            "outbox.retry_base:",
        ),
        (
            format!("{redis}[outbox]\nconcurrency = 0\n"),
            "outbox.concurrency:",
        ),
        (
            format!("{redis}[email]\nmax_retry_age = \"soon\"\n"),
            "email.max_retry_age:",
        ),
        (
            "[sms]\nmax_retry_age = \"x\"\n".to_owned(),
            "sms.max_retry_age:",
        ),
    ] {
        let err = Config::from_toml(&toml).unwrap_err().to_string();
        assert!(err.starts_with(key), "{toml}\n→ {err}");
    }
    // Without Redis there is no outbox to claim from.
    Config::from_toml("[outbox]\nclaim_timeout = \"1s\"\n").unwrap();
    let c = Config::from_toml(&format!(
        "{redis}[outbox]\nclaim_timeout = \"2s\"\n[email]\nsend_timeout = \"1s\"\n[sms]\ntimeout = \"1s\"\n"
    ))
    .unwrap();
    assert_eq!(c.outbox.claim_timeout, Duration::from_secs(2));
}

#[test]
fn trusted_proxies_take_addresses_and_cidrs() {
    let c = Config::from_toml("[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n").unwrap();
    assert_eq!(c.server.trusted_proxies.len(), 2);
    assert!(Config::from_toml("[server]\ntrusted_proxies = [\"nope\"]\n").is_err());
}

#[test]
fn advertised_versions_must_be_shaped_like_spec_versions() {
    let config = Config::from_toml("").expect("the defaults are valid");
    assert_eq!(config.upstream.advertise_versions, ["v1.1"]);
    let config = Config::from_toml("[upstream]\nadvertise_versions = [\"v1.1\", \"v1.12\"]\n")
        .expect("two versions");
    assert_eq!(config.upstream.advertise_versions, ["v1.1", "v1.12"]);
    assert!(
        Config::from_toml("[upstream]\nadvertise_versions = []\n")
            .expect("none")
            .upstream
            .advertise_versions
            .is_empty()
    );
    for bad in [
        "1.1", "v1", "v1.", "r0.6.0", "v1.1.0", "v1.x", " v1.1", "V1.1", "v1.1\"]",
    ] {
        let text = format!("[upstream]\nadvertise_versions = [{bad:?}]\n");
        let err = Config::from_toml(&text).unwrap_err().to_string();
        assert!(
            err.starts_with("upstream.advertise_versions:"),
            "{bad}: {err}"
        );
    }
    let err = Config::from_toml("[upstream]\nadvertise_versions = [\"v1.1\", \"v1.1\"]\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("twice"), "{err}");
}

#[test]
fn policy_and_sms_rules_are_checked_naming_their_key() {
    let c = Config::from_toml("").expect("defaults");
    assert!(c.policy.denied_domains.is_empty() && c.policy.webhook.is_none());
    assert!(c.notices.password_changed && c.notices.address_removed);
    assert_eq!(c.sms.daily_budget, None);
    let c = Config::from_toml(
        "[policy]\ndenied_domains = [\"example.org\", \"*.spam.example\"]\n\
         denied_addresses = [\"^noreply@\"]\nwebhook_url = \"https://policy.internal/x\"\n\
         webhook_failure = \"deny\"\n\
         [sms]\nallowed_countries = [\"GB\"]\ndenied_countries = [\"NG\"]\n\
         per_country_per_hour = 60\ndaily_budget = 1000\n",
    )
    .expect("valid");
    assert_eq!(
        c.policy.webhook.as_ref().map(|w| w.failure),
        Some(WebhookFailure::Deny)
    );
    let per_country = c.sms.per_country_per_hour.expect("a limit");
    assert_eq!(per_country.burst, 60);
    assert!((per_country.per_second - 60.0 / 3600.0).abs() < 1e-12);
    for (text, key) in [
        (
            "[policy]\ndenied_domains = [\"*.\"]\n",
            "policy.denied_domains",
        ),
        (
            "[policy]\ndenied_domains = [\"ex*ample.org\"]\n",
            "policy.denied_domains",
        ),
        (
            "[policy]\ndenied_domains = [\"localhost\"]\n",
            "policy.denied_domains",
        ),
        (
            "[policy]\ndenied_domains = [\"a b.org\"]\n",
            "policy.denied_domains",
        ),
        (
            "[policy]\ndenied_addresses = [\"(unclosed\"]\n",
            "policy.denied_addresses",
        ),
        (
            "[policy]\ndisposable_domains_file = \"/nonexistent/list.txt\"\n",
            "policy.disposable_domains_file",
        ),
        (
            "[policy]\nwebhook_url = \"ftp://x\"\n",
            "policy.webhook_url",
        ),
        ("[policy]\nwebhook_token = \"t\"\n", "policy.webhook_token"),
        (
            "[sms]\nallowed_countries = [\"UK\"]\n",
            "sms.allowed_countries",
        ),
        (
            "[sms]\ndenied_countries = [\"gb\"]\n",
            "sms.denied_countries",
        ),
        (
            "[sms]\ndenied_countries = [\"GBR\"]\n",
            "sms.denied_countries",
        ),
        (
            "[sms]\nper_country_per_hour = 0\n",
            "sms.per_country_per_hour",
        ),
        ("[sms]\ndaily_budget = 0\n", "sms.daily_budget"),
    ] {
        let err = Config::from_toml(text).unwrap_err().to_string();
        assert!(err.starts_with(key), "{text}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("list.txt");
    std::fs::write(&list, "ok.example\nnot a domain\n").unwrap();
    let err = Config::from_toml(&format!(
        "[policy]\ndisposable_domains_file = {:?}\n",
        list.display().to_string()
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn edge_limits_have_defaults_and_are_checked() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c.server.max_connections, 10_000);
    assert_eq!(c.upstream.max_connections, 4096);
    assert!(
        Config::from_toml("[upstream]\nmax_connections = 0\n")
            .unwrap_err()
            .to_string()
            .starts_with("upstream.max_connections:")
    );
    assert!(
        Config::from_toml("[server]\nmax_connections = 0\n")
            .unwrap_err()
            .to_string()
            .starts_with("server.max_connections:")
    );
    assert_eq!(c.server.body_idle_timeout, Duration::from_secs(60));
    assert_eq!(c.server.http2_idle_timeout, Duration::from_secs(60));
    assert_eq!(c.server.http2_keep_alive_interval, Duration::from_secs(30));
    assert_eq!(c.server.http2_keep_alive_timeout, Duration::from_secs(20));
    for key in [
        "body_idle_timeout",
        "http2_idle_timeout",
        "http2_keep_alive_interval",
        "http2_keep_alive_timeout",
    ] {
        for bad in ["0s", "soon"] {
            let err = Config::from_toml(&format!("[server]\n{key} = \"{bad}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("server.{key}:")),
                "{key} = {bad}: {err}"
            );
        }
    }
    let printed: toml::Table = toml::from_str(&c.redacted_toml()).unwrap();
    assert_eq!(printed["server"]["http2_idle_timeout"].as_str(), Some("1m"));
}
