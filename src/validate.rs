//! The input rules of DESIGN §5 as pure functions: client secrets, email addresses,
//! `send_attempt`, `next_link`. Each refusal is the Matrix error the client gets.

use serde_json::{Map, Value};
use url::Url;

use crate::matrix::MatrixError;
use crate::threepid::Medium;

/// Longest email address accepted (Synapse and Sydent use the same bound).
pub const MAX_EMAIL_LEN: usize = 500;

/// `client_secret` must match `^[0-9a-zA-Z.=_-]{1,255}$`.
pub fn client_secret(secret: &str) -> Result<(), MatrixError> {
    let valid = (1..=255).contains(&secret.len())
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'=' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(MatrixError::invalid_param(
            "Invalid client_secret parameter: use 1 to 255 characters of [0-9a-zA-Z.=_-].",
        ))
    }
}

/// The canonical form of an email address: trimmed, exactly one `@`, the domain
/// lowercased and the local part case-folded (as Synapse's `canonicalise_email`), and
/// acceptable to a mail transport (no spaces, controls or header-breaking characters).
pub fn email(address: &str) -> Result<String, MatrixError> {
    let refuse = || MatrixError::invalid_param("Invalid email address.");
    let address = address.trim();
    if address.len() < 3 || address.len() > MAX_EMAIL_LEN {
        return Err(refuse());
    }
    let (local, domain) = address.split_once('@').ok_or_else(refuse)?;
    if domain.contains('@') || local.is_empty() || domain.is_empty() {
        return Err(refuse());
    }
    let canonical = format!("{}@{}", local.to_lowercase(), domain.to_ascii_lowercase());
    if canonical.chars().any(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"' | '\\')
    }) {
        return Err(refuse());
    }
    canonical.parse::<lettre::Address>().map_err(|_| refuse())?;
    Ok(canonical)
}

/// A string member of a JSON object: 400 `M_MISSING_PARAM` when absent,
/// `M_INVALID_PARAM` when not a string.
pub fn required_str<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, MatrixError> {
    match body.get(key) {
        None | Some(Value::Null) => Err(MatrixError::missing_param(key)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(MatrixError::invalid_param(format!(
            "{key} must be a string."
        ))),
    }
}

/// An optional string member: `M_INVALID_PARAM` when present but not a string.
pub fn optional_str<'a>(
    body: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, MatrixError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(MatrixError::invalid_param(format!(
            "{key} must be a string."
        ))),
    }
}

/// `send_attempt`: required, a non-negative JSON integer (not a string, not a float).
pub fn send_attempt(body: &Map<String, Value>) -> Result<u64, MatrixError> {
    match body.get("send_attempt") {
        None | Some(Value::Null) => Err(MatrixError::missing_param("send_attempt")),
        Some(Value::Number(n)) if n.is_u64() => Ok(n.as_u64().expect("checked is_u64")),
        Some(_) => Err(MatrixError::invalid_param(
            "send_attempt must be a non-negative integer.",
        )),
    }
}

/// `next_link`: http(s) only, and when `allowed_hosts` is set, a listed host.
pub fn next_link(link: &str, allowed_hosts: Option<&[String]>) -> Result<String, MatrixError> {
    let refuse = || {
        MatrixError::invalid_param(
            "'next_link' domain not included in the allowed list, or not http(s).",
        )
    };
    let url = Url::parse(link).map_err(|_| refuse())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(refuse());
    }
    let host = url.host_str().ok_or_else(refuse)?.to_ascii_lowercase();
    if allowed_hosts.is_some_and(|hosts| !hosts.contains(&host)) {
        return Err(refuse());
    }
    Ok(url.to_string())
}

/// `next_link` with `sid` appended, where the user lands after validating.
pub fn next_link_with_sid(next_link: &str, sid: &str) -> String {
    match Url::parse(next_link) {
        Ok(mut url) => {
            url.query_pairs_mut().append_pair("sid", sid);
            url.to_string()
        }
        // Stored links were validated as URLs; this is only a fallback.
        Err(_) => next_link.to_owned(),
    }
}

/// A phone number that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msisdn {
    /// E.164 without the `+`, as stored and as homeservers expect (`447400123456`).
    pub msisdn: String,
    /// International format for people (`+44 7400 123456`).
    pub intl_fmt: String,
}

/// `phone_number` as dialled from `country` (ISO 3166-1 alpha-2, upper case).
pub fn phone(country: &str, phone_number: &str) -> Result<Msisdn, MatrixError> {
    if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(MatrixError::invalid_param(
            "country must be a two-letter upper-case country code such as \"GB\".",
        ));
    }
    let refuse = || MatrixError::invalid_param("Invalid phone number for that country.");
    if phone_number.len() > 64 {
        return Err(refuse());
    }
    let id = country
        .parse::<phonenumber::country::Id>()
        .map_err(|_| MatrixError::invalid_param("Unknown country code."))?;
    let number = phonenumber::parse(Some(id), phone_number).map_err(|_| refuse())?;
    msisdn_of(&number).ok_or_else(refuse)
}

/// A number written internationally (`+447400123456`, the `+` optional), as an operator
/// types one for `send-test`.
pub fn international(number: &str) -> Result<Msisdn, MatrixError> {
    let refuse = || MatrixError::invalid_param("Invalid international phone number.");
    let digits = number.trim().trim_start_matches('+');
    if digits.is_empty() || digits.len() > 64 {
        return Err(refuse());
    }
    let number = phonenumber::parse(None, format!("+{digits}")).map_err(|_| refuse())?;
    msisdn_of(&number).ok_or_else(refuse)
}

/// The E.164 and international forms of a parsed number that can receive an SMS.
fn msisdn_of(number: &phonenumber::PhoneNumber) -> Option<Msisdn> {
    // An extension cannot receive an SMS, and E.164 has no place for it: refuse rather than
    // silently verify the number without it.
    if number.extension().is_some() || !phonenumber::is_valid(number) {
        return None;
    }
    let e164 = number.format().mode(phonenumber::Mode::E164).to_string();
    let intl_fmt = number
        .format()
        .mode(phonenumber::Mode::International)
        .to_string();
    Some(Msisdn {
        msisdn: e164.trim_start_matches('+').to_owned(),
        intl_fmt,
    })
}

/// An MSISDN as stored (E.164 digits without `+`), from E.164 with or without the `+`: what
/// an operator pastes into the admin API.
pub fn msisdn(e164: &str) -> Result<String, MatrixError> {
    let digits = e164.trim().trim_start_matches('+');
    let refuse = || MatrixError::invalid_param("Not a phone number in E.164 (+447400123456).");
    if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse());
    }
    let number = phonenumber::parse(None, format!("+{digits}")).map_err(|_| refuse())?;
    if !phonenumber::is_valid(&number) {
        return Err(refuse());
    }
    Ok(number
        .format()
        .mode(phonenumber::Mode::E164)
        .to_string()
        .trim_start_matches('+')
        .to_owned())
}

/// A requestToken body that passed every input rule (DESIGN §5), either medium.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub medium: Medium,
    pub client_secret: String,
    /// Canonical: a case-folded email, or E.164 digits without `+`.
    pub address: String,
    /// For msisdn: the international format shown to people.
    pub intl_fmt: Option<String>,
    pub send_attempt: u64,
    pub next_link: Option<String>,
}

/// Applies the input rules to a requestToken body, in the table's order: missing
/// parameters, `client_secret`, `send_attempt`, the address, `next_link`. `id_server` and
/// `id_access_token` are not looked at here.
pub fn token_request(
    medium: Medium,
    body: &Map<String, Value>,
    next_link_allowed_hosts: Option<&[String]>,
) -> Result<TokenRequest, MatrixError> {
    let client_secret = required_str(body, "client_secret")?;
    let address_fields = match medium {
        Medium::Email => (required_str(body, "email")?, None),
        Medium::Msisdn => (
            required_str(body, "country")?,
            Some(required_str(body, "phone_number")?),
        ),
    };
    if !body.contains_key("send_attempt") {
        return Err(MatrixError::missing_param("send_attempt"));
    }
    self::client_secret(client_secret)?;
    let send_attempt = send_attempt(body)?;
    let (address, intl_fmt) = match address_fields {
        (email_address, None) => (email(email_address)?, None),
        (country, Some(number)) => {
            let parsed = phone(country, number)?;
            (parsed.msisdn, Some(parsed.intl_fmt))
        }
    };
    let next_link = optional_str(body, "next_link")?
        .map(|link| next_link(link, next_link_allowed_hosts))
        .transpose()?;
    Ok(TokenRequest {
        medium,
        client_secret: client_secret.to_owned(),
        address,
        intl_fmt,
        send_attempt,
        next_link,
    })
}

/// The country (ISO 3166-1 alpha-2) a canonical phone number (E.164 digits without `+`)
/// belongs to, as the phone-number library resolves it from the number itself — never
/// from what the client said its country was.
pub fn region_of(msisdn: &str) -> Option<String> {
    let number = phonenumber::parse(None, format!("+{msisdn}")).ok()?;
    let country = number.country();
    if let Some(id) = country.id() {
        return Some(id.as_ref().to_owned());
    }
    // A number in no region's ranges: the main region of its calling code (+44 → GB).
    phonenumber::metadata::DATABASE
        .region(&country.code())?
        .first()
        .map(|region| (*region).to_owned())
}

/// A client address as a notice shows it: the network, not the host (`203.0.113.*`,
/// `2001:db8:1::*`).
pub fn mask_ip(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            format!("{a}.{b}.{c}.*")
        }
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => mask_ip(std::net::IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::*", s[0], s[1], s[2])
            }
        },
    }
}

/// An address shown in logs: `a***@example.org`, `+44*******01`.
pub fn mask_address(address: &str) -> String {
    Masked(address).to_string()
}

/// [`mask_address`] written only when displayed: a log line filtered out by the level costs
/// nothing.
#[derive(Clone, Copy)]
pub struct Masked<'a>(pub &'a str);

impl std::fmt::Display for Masked<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let address = self.0;
        match address.split_once('@') {
            Some((local, domain)) => {
                if let Some(first) = local.chars().next() {
                    std::fmt::Write::write_char(f, first)?;
                }
                write!(f, "***@{domain}")
            }
            None => {
                let count = address.chars().count();
                if count <= 4 {
                    return f.write_str("***");
                }
                let head: String = address.chars().take(2).collect();
                let tail: String = address.chars().skip(count - 2).collect();
                write!(f, "{head}{}{tail}", "*".repeat(count - 4))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn an_e164_number_is_read_with_or_without_its_plus() {
        assert_eq!(msisdn("+447400123456").unwrap(), "447400123456");
        assert_eq!(msisdn(" 447400123456").unwrap(), "447400123456");
        for bad in [
            "",
            "+",
            "44 7400 123456",
            "+4474001234567890",
            "+999123",
            "abc",
        ] {
            assert!(msisdn(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_numbers_region_comes_from_the_number_itself() {
        assert_eq!(region_of("447700900123").as_deref(), Some("GB"));
        assert_eq!(region_of("4915123456789").as_deref(), Some("DE"));
        assert_eq!(region_of("12015550123").as_deref(), Some("US"));
        assert_eq!(region_of("notanumber"), None);
    }

    #[test]
    fn a_notice_shows_the_network_not_the_host() {
        assert_eq!(mask_ip("203.0.113.9".parse().unwrap()), "203.0.113.*");
        assert_eq!(mask_ip("2001:db8:1:2::5".parse().unwrap()), "2001:db8:1::*");
        assert_eq!(mask_ip("::ffff:10.1.2.3".parse().unwrap()), "10.1.2.*");
    }

    #[test]
    fn client_secrets_follow_the_spec_pattern() {
        assert!(client_secret("abc.DEF=_-123").is_ok());
        assert!(client_secret(&"a".repeat(255)).is_ok());
        for bad in ["", "has space", "ü", "a/b", &"a".repeat(256)] {
            let err = client_secret(bad).unwrap_err();
            assert_eq!(err.errcode, "M_INVALID_PARAM", "{bad:?}");
        }
    }

    #[test]
    fn emails_are_canonicalised() {
        assert_eq!(
            email("  Alice.B@Example.ORG ").unwrap(),
            "alice.b@example.org"
        );
        assert_eq!(email("ÄRGER@example.org").unwrap(), "ärger@example.org");
    }

    #[test]
    fn bad_emails_are_refused() {
        let long = format!("{}@example.org", "a".repeat(500));
        for bad in [
            "",
            "a",
            "no-at-sign",
            "@example.org",
            "alice@",
            "a@b@c",
            "al ice@example.org",
            "alice@exa mple.org",
            "alice@example.org\r\nBcc: x@y",
            "<a@b.c>",
            &long,
        ] {
            assert_eq!(
                email(bad).unwrap_err().errcode,
                "M_INVALID_PARAM",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn send_attempt_must_be_an_integer() {
        assert_eq!(send_attempt(&obj(json!({"send_attempt": 3}))).unwrap(), 3);
        assert_eq!(
            send_attempt(&obj(json!({}))).unwrap_err().errcode,
            "M_MISSING_PARAM"
        );
        for bad in [json!("1"), json!(1.5), json!(-1), json!(true)] {
            let err = send_attempt(&obj(json!({ "send_attempt": bad }))).unwrap_err();
            assert_eq!(err.errcode, "M_INVALID_PARAM");
        }
    }

    #[test]
    fn next_link_must_be_http_and_on_an_allowed_host() {
        assert!(next_link("https://app.example.org/done", None).is_ok());
        assert!(next_link("file:///etc/passwd", None).is_err());
        assert!(next_link("javascript:alert(1)", None).is_err());
        assert!(next_link("not a url", None).is_err());
        let hosts = vec!["app.example.org".to_owned()];
        assert!(next_link("https://APP.example.org/x", Some(&hosts)).is_ok());
        assert!(next_link("https://evil.example/x", Some(&hosts)).is_err());
    }

    #[test]
    fn the_sid_is_appended_to_next_link() {
        assert_eq!(
            next_link_with_sid("https://app.example.org/done", "S1"),
            "https://app.example.org/done?sid=S1"
        );
        assert_eq!(
            next_link_with_sid("https://app.example.org/done?x=1#frag", "S1"),
            "https://app.example.org/done?x=1&sid=S1#frag"
        );
    }

    #[test]
    fn phone_numbers_are_read_as_dialled_from_the_country() {
        let gb = phone("GB", "07400 123456").unwrap();
        assert_eq!(gb.msisdn, "447400123456");
        assert_eq!(gb.intl_fmt, "+44 7400 123456");
        assert_eq!(
            phone("US", "+1 (201) 555-0123").unwrap().msisdn,
            "12015550123"
        );
        assert_eq!(phone("DE", "030 901820").unwrap().msisdn, "4930901820");
    }

    #[test]
    fn an_international_number_needs_no_country_and_its_plus_is_optional() {
        let gb = international("+44 7400 123456").unwrap();
        assert_eq!(gb.msisdn, "447400123456");
        assert_eq!(gb.intl_fmt, "+44 7400 123456");
        assert_eq!(international("12015550123").unwrap().msisdn, "12015550123");
        for bad in ["", "+", "07400 123456x", "+44 123", "not a number"] {
            assert!(international(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_phone_numbers_and_countries_are_refused() {
        for (country, number) in [
            ("gb", "07700900123"),
            ("GBR", "07700900123"),
            ("XX", "07700900123"),
            ("GB", "123"),
            ("GB", "not a number"),
            ("GB", ""),
        ] {
            let err = phone(country, number).unwrap_err();
            assert_eq!(err.errcode, "M_INVALID_PARAM", "{country} {number}");
        }
    }

    #[test]
    fn a_token_request_is_canonicalised_and_id_server_is_not_its_business() {
        let req = token_request(
            Medium::Email,
            &obj(json!({
                "client_secret": "cs1", "email": "Alice@Example.org", "send_attempt": 1,
                "id_server": "vector.im", "id_access_token": "x", "next_link": "https://app.example.org/"
            })),
            None,
        )
        .unwrap();
        assert_eq!(req.address, "alice@example.org");
        assert_eq!(req.send_attempt, 1);
        assert_eq!(req.next_link.as_deref(), Some("https://app.example.org/"));
        let req = token_request(
            Medium::Msisdn,
            &obj(json!({"client_secret": "c", "country": "GB", "phone_number": "07400123456", "send_attempt": 2})),
            None,
        )
        .unwrap();
        assert_eq!(req.address, "447400123456");
        assert_eq!(req.intl_fmt.as_deref(), Some("+44 7400 123456"));
    }

    #[test]
    fn each_missing_parameter_is_named() {
        for (medium, body, missing) in [
            (
                Medium::Email,
                json!({"email": "a@b.c", "send_attempt": 1}),
                "client_secret",
            ),
            (
                Medium::Email,
                json!({"client_secret": "c", "send_attempt": 1}),
                "email",
            ),
            (
                Medium::Email,
                json!({"client_secret": "c", "email": "a@b.c"}),
                "send_attempt",
            ),
            (
                Medium::Msisdn,
                json!({"client_secret": "c", "phone_number": "1", "send_attempt": 1}),
                "country",
            ),
            (
                Medium::Msisdn,
                json!({"client_secret": "c", "country": "GB", "send_attempt": 1}),
                "phone_number",
            ),
        ] {
            let err = token_request(medium, &obj(body), None).unwrap_err();
            assert_eq!(err.errcode, "M_MISSING_PARAM");
            assert!(err.error.contains(missing), "{}", err.error);
        }
    }

    #[test]
    fn addresses_are_masked() {
        assert_eq!(mask_address("alice@example.org"), "a***@example.org");
        assert_eq!(mask_address("447700900001"), "44********01");
        assert_eq!(mask_address("123"), "***");
    }

    #[test]
    fn required_strings_name_what_is_missing() {
        let body = obj(json!({"email": 5}));
        assert_eq!(
            required_str(&body, "email").unwrap_err().errcode,
            "M_INVALID_PARAM"
        );
        let err = required_str(&body, "client_secret").unwrap_err();
        assert_eq!(err.errcode, "M_MISSING_PARAM");
        assert!(err.error.contains("client_secret"));
    }
}
