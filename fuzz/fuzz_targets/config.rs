//! The config parser, `Config::from_toml`, on any text: it never panics, and a config it
//! accepts prints as TOML (`redacted_toml`, what `check-config` shows).
//!
//! Texts that set `email.smtp_password_file` or `sms.webhook_token_file` are skipped:
//! validation reads those files, and a fuzzer must not read `/dev/zero`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use threepid_sidecar::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match toml::from_str::<toml::Table>(text) {
        Ok(table) if names_a_secret_file(&table) => return,
        Ok(_) => {}
        Err(_) => {
            assert!(Config::from_toml(text).is_err(), "not TOML, not a config");
            return;
        }
    }
    let Ok(config) = Config::from_toml(text) else {
        return;
    };
    let printed = config.redacted_toml();
    toml::from_str::<toml::Table>(&printed).expect("redacted_toml prints TOML");
    if let Some(password) = config.email.password() {
        // A password long enough not to appear by chance is never printed.
        if password.len() >= 12 && !password.contains("<redacted>") {
            assert!(!printed.contains(password), "the SMTP password was printed");
        }
    }
});

fn names_a_secret_file(table: &toml::Table) -> bool {
    let has = |section: &str, key: &str| {
        table
            .get(section)
            .and_then(toml::Value::as_table)
            .is_some_and(|t| t.contains_key(key))
    };
    has("email", "smtp_password_file") || has("sms", "webhook_token_file")
}
