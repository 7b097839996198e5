//! Who may call the admin API: a bearer token from `admin.api_token_file`. An [`AdminCaller`]
//! exists only once a token was checked, and every API handler takes one.

use std::net::IpAddr;

use hyper::HeaderMap;
use hyper::header::AUTHORIZATION;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A caller whose token matched: what the audit log says of it.
#[derive(Debug, Clone)]
pub struct AdminCaller {
    /// The first 8 hex digits of the token's SHA-256: tells two tokens apart in the logs
    /// (during a rotation) without being any use to a reader.
    pub token: String,
    pub peer: IpAddr,
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A token that is not one of ours.
    Wrong,
}

/// Checks the request's bearer token (the scheme's case does not matter, RFC 9110 §11.1)
/// against every configured token, comparing SHA-256 digests in constant time, all of them
/// whichever matches.
pub fn check(
    configured: &[SecretString],
    headers: &HeaderMap,
    peer: IpAddr,
) -> Result<AdminCaller, Refusal> {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty())
        .ok_or(Refusal::Missing)?;
    let presented = digest(presented);
    let matched = configured
        .iter()
        .fold(subtle::Choice::from(0), |any, known| {
            any | digest(known.expose_secret()).ct_eq(&presented)
        });
    if bool::from(matched) {
        Ok(AdminCaller {
            token: crate::token::lower_hex(&presented[..4]),
            peer,
        })
    } else {
        Err(Refusal::Wrong)
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;

    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    fn tokens() -> Vec<SecretString> {
        vec![
            SecretString::from("old-token-old-token-old-token-old"),
            SecretString::from("new-token-new-token-new-token-new"),
        ]
    }

    #[test]
    fn either_configured_token_is_accepted_with_any_case_of_the_scheme() {
        let t = tokens();
        for value in [
            "Bearer old-token-old-token-old-token-old",
            "bearer new-token-new-token-new-token-new",
            "BEARER new-token-new-token-new-token-new",
        ] {
            let caller = check(&t, &headers(value), PEER).expect(value);
            assert_eq!(caller.token.len(), 8);
        }
        let a = check(
            &t,
            &headers("Bearer old-token-old-token-old-token-old"),
            PEER,
        );
        let b = check(
            &t,
            &headers("Bearer new-token-new-token-new-token-new"),
            PEER,
        );
        assert_ne!(
            a.unwrap().token,
            b.unwrap().token,
            "the log tells them apart"
        );
    }

    #[test]
    fn a_missing_or_wrong_token_is_refused() {
        let t = tokens();
        assert_eq!(
            check(&t, &HeaderMap::new(), PEER).unwrap_err(),
            Refusal::Missing
        );
        for value in [
            "Bearer",
            "Bearer ",
            "Basic b2xkOnRva2Vu",
            "old-token-old-token-old-token-old",
        ] {
            assert_eq!(
                check(&t, &headers(value), PEER).unwrap_err(),
                Refusal::Missing,
                "{value}"
            );
        }
        for value in [
            "Bearer old-token-old-token-old-token-ol",
            "Bearer old-token-old-token-old-token-oldx",
            "Bearer OLD-TOKEN-OLD-TOKEN-OLD-TOKEN-OLD",
        ] {
            assert_eq!(
                check(&t, &headers(value), PEER).unwrap_err(),
                Refusal::Wrong,
                "{value}"
            );
        }
        assert_eq!(
            check(&[], &headers("Bearer anything-at-all"), PEER).unwrap_err(),
            Refusal::Wrong
        );
    }
}
