//! The input rules of DESIGN §5 as pure functions: client secrets, email addresses,
//! `send_attempt`, `next_link`. Each refusal is the Matrix error the client gets.

use serde_json::{Map, Value};
use url::Url;

use crate::matrix::MatrixError;

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
    if canonical
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | ',' | ';' | '"' | '\\'))
    {
        return Err(refuse());
    }
    canonical
        .parse::<lettre::Address>()
        .map_err(|_| refuse())?;
    Ok(canonical)
}

/// A string member of a JSON object: 400 `M_MISSING_PARAM` when absent,
/// `M_INVALID_PARAM` when not a string.
pub fn required_str<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, MatrixError> {
    match body.get(key) {
        None | Some(Value::Null) => Err(MatrixError::missing_param(key)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(MatrixError::invalid_param(format!("{key} must be a string."))),
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
        Some(_) => Err(MatrixError::invalid_param(format!("{key} must be a string."))),
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

/// An address shown in logs: `a***@example.org`, `+44*******01`.
pub fn mask_address(address: &str) -> String {
    match address.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => {
            let digits: Vec<char> = address.chars().collect();
            if digits.len() <= 4 {
                return "***".into();
            }
            let head: String = digits[..2].iter().collect();
            let tail: String = digits[digits.len() - 2..].iter().collect();
            format!("{head}{}{tail}", "*".repeat(digits.len() - 4))
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
        assert_eq!(email("  Alice.B@Example.ORG ").unwrap(), "alice.b@example.org");
        assert_eq!(email("ÄRGER@example.org").unwrap(), "ärger@example.org");
    }

    #[test]
    fn bad_emails_are_refused() {
        let long = format!("{}@example.org", "a".repeat(500));
        for bad in [
            "", "a", "no-at-sign", "@example.org", "alice@", "a@b@c", "al ice@example.org",
            "alice@exa mple.org", "alice@example.org\r\nBcc: x@y", "<a@b.c>", &long,
        ] {
            assert_eq!(email(bad).unwrap_err().errcode, "M_INVALID_PARAM", "{bad:?}");
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
    fn addresses_are_masked() {
        assert_eq!(mask_address("alice@example.org"), "a***@example.org");
        assert_eq!(mask_address("447700900001"), "44********01");
        assert_eq!(mask_address("123"), "***");
    }

    #[test]
    fn required_strings_name_what_is_missing() {
        let body = obj(json!({"email": 5}));
        assert_eq!(required_str(&body, "email").unwrap_err().errcode, "M_INVALID_PARAM");
        let err = required_str(&body, "client_secret").unwrap_err();
        assert_eq!(err.errcode, "M_MISSING_PARAM");
        assert!(err.error.contains("client_secret"));
    }
}
