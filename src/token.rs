//! Random identifiers and tokens, and the hashes that are all the store ever keeps of
//! tokens and client secrets (DESIGN §4).

use std::fmt;

use rand::Rng;
use rand::distr::{Alphanumeric, Uniform};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Length of a session id: 24 characters of `[A-Za-z0-9]` (~143 bits).
pub const SID_LEN: usize = 24;
/// Length of an email token: 32 characters of `[A-Za-z0-9]` (~190 bits).
pub const EMAIL_TOKEN_LEN: usize = 32;
/// Digits in an SMS code.
pub const SMS_TOKEN_DIGITS: usize = 6;

fn alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A new session id.
pub fn new_sid() -> String {
    alphanumeric(SID_LEN)
}

/// Whether `s` can be a session id of ours: anything else is not looked up in the store.
pub fn is_sid(s: &str) -> bool {
    s.len() == SID_LEN && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// A new token for an email link.
pub fn new_email_token() -> SecretString {
    SecretString::from(alphanumeric(EMAIL_TOKEN_LEN))
}

/// A new code for an SMS.
pub fn new_sms_token() -> SecretString {
    let digit = Uniform::new_inclusive(b'0', b'9').expect("0..=9 is a valid range");
    let code: String = rand::rng()
        .sample_iter(digit)
        .take(SMS_TOKEN_DIGITS)
        .map(char::from)
        .collect();
    SecretString::from(code)
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Lowercase hex of `bytes`, as keys and hashes are stored. A table rather than `format!`
/// per byte: an address hash is made twice per requestToken.
pub fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut hex = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        hex.push(char::from(DIGITS[usize::from(b >> 4)]));
        hex.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    hex
}

macro_rules! hash_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Lowercase hex, as stored.
            pub fn to_hex(&self) -> String {
                lower_hex(&self.0)
            }

            /// Parses what [`Self::to_hex`] wrote.
            pub fn from_hex(hex: &str) -> Option<Self> {
                if hex.len() != 64 || !hex.is_ascii() {
                    return None;
                }
                let mut out = [0u8; 32];
                for (i, byte) in out.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
                }
                Some(Self(out))
            }

            /// Constant-time comparison.
            pub fn ct_eq(&self, other: &Self) -> bool {
                self.0.ct_eq(&other.0).into()
            }
        }

        // Never print the bytes: a hash in a log line is still a lead.
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(..)"))
            }
        }
    };
}

hash_type!(
    /// SHA-256 of a token.
    TokenHash
);
hash_type!(
    /// SHA-256 of a client secret.
    SecretHash
);

impl TokenHash {
    pub fn of(token: &str) -> Self {
        Self(sha256(token.as_bytes()))
    }

    pub fn of_secret(token: &SecretString) -> Self {
        Self::of(token.expose_secret())
    }
}

impl SecretHash {
    pub fn of(client_secret: &str) -> Self {
        Self(sha256(client_secret.as_bytes()))
    }
}

/// Whether `token` hashes to one of `candidates`. Every candidate is compared, in
/// constant time, so the answer's timing says nothing about which one matched.
pub fn matches_any<'a>(token: &str, candidates: impl IntoIterator<Item = &'a TokenHash>) -> bool {
    let hash = TokenHash::of(token);
    candidates
        .into_iter()
        .fold(false, |found, c| found | c.ct_eq(&hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sids_and_email_tokens_are_alphanumeric_of_the_documented_length() {
        let sid = new_sid();
        assert_eq!(sid.len(), SID_LEN);
        assert!(sid.bytes().all(|b| b.is_ascii_alphanumeric()));
        let token = new_email_token();
        assert_eq!(token.expose_secret().len(), EMAIL_TOKEN_LEN);
        assert!(
            token
                .expose_secret()
                .bytes()
                .all(|b| b.is_ascii_alphanumeric())
        );
        assert_ne!(new_sid(), sid);
    }

    #[test]
    fn sms_tokens_are_six_digits() {
        for _ in 0..100 {
            let code = new_sms_token();
            assert_eq!(code.expose_secret().len(), 6);
            assert!(code.expose_secret().bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn lower_hex_writes_two_digits_a_byte() {
        assert_eq!(lower_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(lower_hex(&[]), "");
        // A known SHA-256: of "abc".
        assert_eq!(
            TokenHash::of("abc").to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn hashes_round_trip_through_hex() {
        let h = TokenHash::of("abc");
        assert_eq!(TokenHash::from_hex(&h.to_hex()), Some(h));
        assert_eq!(TokenHash::from_hex("zz"), None);
        assert_eq!(format!("{h:?}"), "TokenHash(..)");
    }

    #[test]
    fn matches_any_finds_the_token_among_several() {
        let hashes = [TokenHash::of("one"), TokenHash::of("two")];
        assert!(matches_any("two", &hashes));
        assert!(!matches_any("three", &hashes));
        assert!(!matches_any("two", &[]));
    }
}
