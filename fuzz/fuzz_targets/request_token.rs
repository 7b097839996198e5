//! A requestToken body as the sidecar reads it: `matrix::parse_object`, then
//! `validate::token_request` (DESIGN §5), for both media. Never panics; every refusal is a
//! 400 with the errcode the table gives; what it accepts is canonical (checking it again
//! gives it back) and within the rules.
//!
//! Input: a first line choosing the medium and the policy, then the body. A first line
//! starting with `m` means msisdn, anything else email; ending in `+` means
//! `next_link_allowed_hosts = ["app.example.org", "localhost"]`. Seeds: `email`,
//! `msisdn+`, … (fuzz/corpus/request_token/).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use threepid_sidecar::matrix::parse_object;
use threepid_sidecar::threepid::Medium;
use threepid_sidecar::validate;
use url::Url;

fuzz_target!(|data: &[u8]| {
    let (head, body) = data
        .iter()
        .position(|&b| b == b'\n')
        .map_or((data, &data[data.len()..]), |i| {
            (&data[..i], &data[i + 1..])
        });
    let medium = if head.starts_with(b"m") {
        Medium::Msisdn
    } else {
        Medium::Email
    };
    let hosts = ["app.example.org".to_owned(), "localhost".to_owned()];
    let allowed = head.ends_with(b"+").then_some(&hosts[..]);

    let object = match parse_object(body) {
        Ok(object) => object,
        Err(e) => {
            assert_eq!(e.status, 400);
            assert!(matches!(e.errcode, "M_NOT_JSON" | "M_BAD_JSON"), "{e}");
            return;
        }
    };
    let request = match validate::token_request(medium, &object, allowed) {
        Ok(request) => request,
        Err(e) => {
            assert_eq!(e.status, 400);
            assert!(
                matches!(e.errcode, "M_MISSING_PARAM" | "M_INVALID_PARAM"),
                "{e}"
            );
            return;
        }
    };

    assert_eq!(request.medium, medium);
    assert_eq!(
        object.get("client_secret"),
        Some(&Value::String(request.client_secret.clone()))
    );
    validate::client_secret(&request.client_secret).expect("an accepted secret is valid");
    assert_eq!(
        object.get("send_attempt").and_then(Value::as_u64),
        Some(request.send_attempt)
    );

    match medium {
        Medium::Email => {
            assert_eq!(request.intl_fmt, None);
            let address = &request.address;
            assert!(
                !address.chars().any(|c| c.is_whitespace() || c.is_control()),
                "{address:?}"
            );
            assert!(address.len() <= validate::MAX_EMAIL_LEN, "{address:?}");
            assert_eq!(
                validate::email(address).as_ref(),
                Ok(address),
                "canonicalising twice gives the same"
            );
        }
        Medium::Msisdn => {
            let msisdn = &request.address;
            assert!(
                (1..=15).contains(&msisdn.len()) && msisdn.bytes().all(|b| b.is_ascii_digit()),
                "E.164 digits without '+': {msisdn:?}"
            );
            let intl = request.intl_fmt.as_deref().expect("msisdn has intl_fmt");
            assert!(intl.starts_with('+'), "{intl:?}");
            let digits: String = intl.chars().filter(char::is_ascii_digit).collect();
            assert_eq!(&digits, msisdn, "intl_fmt is the same number");
        }
    }
    let masked = validate::mask_address(&request.address);
    assert!(!masked.is_empty());

    match &request.next_link {
        None => assert!(matches!(object.get("next_link"), None | Some(Value::Null))),
        Some(link) => {
            let url = Url::parse(link).expect("an accepted next_link is a URL");
            assert!(matches!(url.scheme(), "http" | "https"), "{link}");
            assert_eq!(url.as_str(), link, "stored as it prints");
            if let Some(hosts) = allowed {
                let host = url.host_str().expect("has a host").to_ascii_lowercase();
                assert!(hosts.contains(&host), "{link}");
            }
            assert_eq!(
                validate::next_link(link, allowed).as_ref(),
                Ok(link),
                "checking next_link twice gives the same"
            );
            let with_sid = validate::next_link_with_sid(link, "S1");
            let with_sid = Url::parse(&with_sid).expect("still a URL with the sid");
            assert!(
                with_sid.query_pairs().any(|(k, v)| k == "sid" && v == "S1"),
                "{with_sid}"
            );
            assert_eq!(with_sid.host_str(), url.host_str());
        }
    }
});
