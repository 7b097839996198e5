//! Rate limits (DESIGN §5): the GCRA arithmetic and the keys limits are counted under.
//!
//! The state of a limit is one number per key, its "theoretical arrival time" (TAT), kept in
//! the [`SessionStore`](crate::session::SessionStore) so that every replica sharing the store
//! shares the limit. [`gcra`] is the rule both backends apply (the Redis backend in Lua, with
//! the same integers from [`emission_interval_ms`] and [`burst_tolerance_ms`]).
//!
//! Keys never hold an address in plain text: [`AddressHash`] is all a key keeps of one, an
//! HMAC under the store's [`AddressKey`], so that a dictionary of addresses does not reverse
//! it.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::config::RateLimit;
use crate::threepid::Medium;

/// Upper bound of the interval and the tolerance (about 35 years). Keeps every sum of a time
/// and a span exact in a Lua double (below 2^53), so the Redis script and [`gcra`] agree.
const MAX_SPAN_MS: u64 = 1 << 40;

/// What [`gcra`] decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let it through and store `new_tat_ms` as the key's TAT.
    Allow { new_tat_ms: u64 },
    /// Refuse it; the stored TAT stays as it was, and the same request is allowed again in
    /// `retry_after_ms`.
    Deny { retry_after_ms: u64 },
}

/// What a store answers for one request against one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateDecision {
    Allowed,
    /// Refused: the client gets 429 `M_LIMIT_EXCEEDED` with this `retry_after_ms`.
    Limited {
        retry_after_ms: u64,
    },
}

/// Milliseconds between two requests at the steady rate: `1000 / per_second`, rounded, at
/// least 1. Fractional rates are the common case (0.003/s is one every 333 333 ms).
pub fn emission_interval_ms(limit: RateLimit) -> u64 {
    let interval = (1000.0 / limit.per_second).round();
    if interval.is_nan() || interval < 1.0 {
        1
    } else if interval >= MAX_SPAN_MS as f64 {
        MAX_SPAN_MS
    } else {
        // In range 1..2^40, checked just above: the cast is exact.
        interval as u64
    }
}

/// How far ahead of now a key's TAT may be and a request still pass: `(burst - 1)` intervals,
/// which is what lets `burst` requests through at once.
pub fn burst_tolerance_ms(limit: RateLimit) -> u64 {
    emission_interval_ms(limit)
        .saturating_mul(u64::from(limit.burst.saturating_sub(1)))
        .min(MAX_SPAN_MS)
}

/// The generic cell rate algorithm. `tat_ms` is the key's stored TAT (None for a key never
/// seen or expired), `now_ms` the caller's clock. A request passes when the TAT is at most one
/// burst tolerance ahead of now; it then moves the TAT one interval on from `max(tat, now)`.
/// A TAT at or before now is the same as no TAT, which is why stores may expire it then.
pub fn gcra(tat_ms: Option<u64>, now_ms: u64, limit: RateLimit) -> Decision {
    let interval = emission_interval_ms(limit);
    let tolerance = burst_tolerance_ms(limit);
    let tat = tat_ms.unwrap_or(now_ms).max(now_ms);
    let ahead = tat - now_ms;
    if ahead > tolerance {
        Decision::Deny {
            retry_after_ms: ahead - tolerance,
        }
    } else {
        Decision::Allow {
            new_tat_ms: tat.saturating_add(interval),
        }
    }
}

/// The secret that keys [`AddressHash`]es: random, made once per store and shared by every
/// replica of it ([`SessionStore::address_key`](crate::session::SessionStore::address_key)).
#[derive(Clone, PartialEq, Eq)]
pub struct AddressKey([u8; 32]);

impl AddressKey {
    pub fn random() -> Self {
        Self(rand::random())
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Lowercase hex, as a store keeps it.
    pub fn to_hex(&self) -> String {
        crate::token::lower_hex(&self.0)
    }

    /// From [`AddressKey::to_hex`]'s form.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl fmt::Debug for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AddressKey(..)")
    }
}

/// HMAC-SHA256 of a canonical address under the store's [`AddressKey`], in hex: lets a limit
/// follow an address without the store (or a log line) ever holding the address itself, or
/// anything a list of likely addresses could be matched against.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AddressHash(String);

impl AddressHash {
    /// Hashes a canonical address (DESIGN §5), so equal addresses share one limit.
    pub fn of(key: &AddressKey, address: &str) -> Self {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key.0).expect("HMAC takes a key of any length");
        mac.update(address.as_bytes());
        let digest = mac.finalize().into_bytes();
        Self(crate::token::lower_hex(&digest))
    }

    /// Lowercase hex, as it appears in a key.
    pub fn as_hex(&self) -> &str {
        &self.0
    }
}

// Like the token hashes: a hash in a log line is still a lead.
impl fmt::Debug for AddressHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AddressHash(..)")
    }
}

/// What a request is counted against. Its [`Display`](fmt::Display) form is the stable string
/// the stores key on (`request_token_ip:email:192.0.2.1`), so it must not change between
/// releases without accepting that every limit starts afresh.
///
/// IPs are counted by the block one client controls: an IPv4 address (an IPv4-mapped IPv6
/// address counts as its IPv4 address) or an IPv6 /64, since a single host usually has a
/// whole /64 to pick addresses from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LimitKey {
    /// requestToken, per `(medium, client IP)`.
    RequestTokenIp { medium: Medium, ip: IpAddr },
    /// requestToken, per `(medium, address)`: stops mail or SMS bombing one address from
    /// many IPs.
    RequestTokenAddress {
        medium: Medium,
        address: AddressHash,
    },
    /// submitToken, per client IP: slows token guessing across sessions.
    SubmitIp { ip: IpAddr },
    /// SMS, per country of the number (ISO 3166-1 alpha-2): `sms.per_country_per_hour`.
    SmsCountry { region: String },
}

impl LimitKey {
    /// The per-address requestToken key for a canonical address (hashed here under `key`).
    pub fn request_token_address(key: &AddressKey, medium: Medium, address: &str) -> Self {
        Self::RequestTokenAddress {
            medium,
            address: AddressHash::of(key, address),
        }
    }

    /// Which limit this is, as a metrics label.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RequestTokenIp { .. } => "request_token_ip",
            Self::RequestTokenAddress { .. } => "request_token_address",
            Self::SubmitIp { .. } => "submit_ip",
            Self::SmsCountry { .. } => "sms_country",
        }
    }
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.name();
        match self {
            Self::RequestTokenIp { medium, ip } => write!(f, "{name}:{medium}:{}", IpBlock(*ip)),
            Self::RequestTokenAddress { medium, address } => {
                write!(f, "{name}:{medium}:{}", address.as_hex())
            }
            Self::SubmitIp { ip } => write!(f, "{name}:{}", IpBlock(*ip)),
            Self::SmsCountry { region } => write!(f, "{name}:{region}"),
        }
    }
}

/// The block of addresses one client is assumed to control (see [`LimitKey`]).
struct IpBlock(IpAddr);

impl fmt::Display for IpBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => write!(f, "{v4}"),
                None => {
                    let bits = u128::from(v6) & !((1u128 << 64) - 1);
                    write!(f, "{}/64", Ipv6Addr::from(bits))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1000;

    fn limit(per_second: f64, burst: u32) -> RateLimit {
        RateLimit { per_second, burst }
    }

    /// Runs requests at `now_ms`, storing the TAT as a store would; returns the decisions.
    fn run(tat: &mut Option<u64>, now_ms: u64, limit: RateLimit, n: usize) -> Vec<Decision> {
        (0..n)
            .map(|_| {
                let decision = gcra(*tat, now_ms, limit);
                if let Decision::Allow { new_tat_ms } = decision {
                    *tat = Some(new_tat_ms);
                }
                decision
            })
            .collect()
    }

    fn allowed(decisions: &[Decision]) -> usize {
        decisions
            .iter()
            .filter(|d| matches!(d, Decision::Allow { .. }))
            .count()
    }

    #[test]
    fn a_whole_burst_passes_at_once_and_the_next_waits_one_interval() {
        let limit = limit(1.0, 5);
        let mut tat = None;
        let now = 1_700_000_000_000;
        assert_eq!(allowed(&run(&mut tat, now, limit, 5)), 5);
        assert_eq!(
            gcra(tat, now, limit),
            Decision::Deny {
                retry_after_ms: SECOND
            }
        );
        assert_eq!(
            gcra(tat, now + 400, limit),
            Decision::Deny {
                retry_after_ms: 600
            }
        );
    }

    #[test]
    fn the_rate_refills_one_request_per_interval() {
        let limit = limit(2.0, 3);
        let mut tat = None;
        assert_eq!(allowed(&run(&mut tat, 0, limit, 10)), 3);
        assert_eq!(allowed(&run(&mut tat, 500, limit, 10)), 1);
        assert_eq!(allowed(&run(&mut tat, 1499, limit, 10)), 1);
        assert_eq!(allowed(&run(&mut tat, 1500, limit, 10)), 1);
        // Long idle: the full burst is back, and no more than it.
        assert_eq!(allowed(&run(&mut tat, 60 * SECOND, limit, 10)), 3);
    }

    #[test]
    fn a_denied_request_does_not_push_the_next_allowed_time_back() {
        let limit = limit(1.0, 1);
        let mut tat = None;
        run(&mut tat, 0, limit, 1);
        assert_eq!(allowed(&run(&mut tat, 10, limit, 100)), 0);
        assert_eq!(tat, Some(SECOND));
        assert_eq!(allowed(&run(&mut tat, SECOND, limit, 1)), 1);
    }

    #[test]
    fn a_fractional_rate_like_synapses_3pid_default_works() {
        let limit = limit(0.003, 5);
        assert_eq!(emission_interval_ms(limit), 333_333);
        assert_eq!(burst_tolerance_ms(limit), 4 * 333_333);
        let mut tat = None;
        assert_eq!(allowed(&run(&mut tat, 0, limit, 6)), 5);
        assert_eq!(
            gcra(tat, 0, limit),
            Decision::Deny {
                retry_after_ms: 333_333
            }
        );
        assert_eq!(allowed(&run(&mut tat, 333_332, limit, 1)), 0);
        assert_eq!(allowed(&run(&mut tat, 333_333, limit, 2)), 1);
    }

    #[test]
    fn a_burst_of_one_allows_exactly_the_rate() {
        let limit = limit(10.0, 1);
        assert_eq!(burst_tolerance_ms(limit), 0);
        let mut tat = None;
        let passed: usize = (0..1000)
            .map(|ms| allowed(&run(&mut tat, ms, limit, 1)))
            .sum();
        assert_eq!(passed, 10);
    }

    #[test]
    fn extreme_limits_stay_within_exact_double_range() {
        assert_eq!(emission_interval_ms(limit(1e9, 5)), 1);
        assert_eq!(emission_interval_ms(limit(1e-30, 5)), MAX_SPAN_MS);
        assert_eq!(burst_tolerance_ms(limit(1e-9, u32::MAX)), MAX_SPAN_MS);
        let decision = gcra(Some(u64::MAX), 0, limit(1.0, 1));
        assert!(matches!(decision, Decision::Deny { .. }));
    }

    #[test]
    fn keys_have_stable_names_and_string_forms() {
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let key = LimitKey::RequestTokenIp {
            medium: Medium::Email,
            ip,
        };
        assert_eq!(key.name(), "request_token_ip");
        assert_eq!(key.to_string(), "request_token_ip:email:192.0.2.7");
        let key = LimitKey::SubmitIp { ip };
        assert_eq!(key.name(), "submit_ip");
        assert_eq!(key.to_string(), "submit_ip:192.0.2.7");
        let secret = AddressKey::from_bytes([7; 32]);
        let key = LimitKey::request_token_address(&secret, Medium::Msisdn, "447700900123");
        assert_eq!(key.name(), "request_token_address");
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[7; 32]).unwrap();
        mac.update(b"447700900123");
        assert_eq!(
            key.to_string(),
            format!(
                "request_token_address:msisdn:{:x}",
                mac.finalize().into_bytes()
            )
        );
    }

    #[test]
    fn an_address_never_appears_in_a_key_or_its_debug_form() {
        let secret = AddressKey::random();
        let key = LimitKey::request_token_address(&secret, Medium::Email, "alice@example.org");
        assert!(!key.to_string().contains("alice"));
        assert!(!format!("{key:?}").contains("alice"));
        let hash = AddressHash::of(&secret, "alice@example.org");
        assert!(!format!("{key:?}").contains(hash.as_hex()));
        assert!(!format!("{secret:?}").contains(&secret.to_hex()));
    }

    #[test]
    fn the_address_hash_depends_on_the_key_and_the_key_survives_hex() {
        let (a, b) = (AddressKey::random(), AddressKey::random());
        assert_ne!(
            AddressHash::of(&a, "alice@example.org"),
            AddressHash::of(&b, "alice@example.org")
        );
        assert_eq!(AddressKey::from_hex(&a.to_hex()), Some(a.clone()));
        assert_eq!(AddressKey::from_hex("00"), None);
        assert_eq!(AddressKey::from_hex(&"zz".repeat(32)), None);
        // Unsalted SHA-256, as before: a dictionary of addresses reversed it.
        use sha2::Digest;
        let plain = format!("{:x}", Sha256::digest("alice@example.org"));
        assert_ne!(AddressHash::of(&a, "alice@example.org").as_hex(), plain);
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let submit = |ip: &str| {
            LimitKey::SubmitIp {
                ip: ip.parse().unwrap(),
            }
            .to_string()
        };
        assert_eq!(
            submit("2001:db8:1:2:aaaa::1"),
            "submit_ip:2001:db8:1:2::/64"
        );
        assert_eq!(submit("2001:db8:1:2:bbbb::9"), submit("2001:db8:1:2::1"));
        assert_ne!(submit("2001:db8:1:3::1"), submit("2001:db8:1:2::1"));
        assert_eq!(submit("::ffff:192.0.2.7"), "submit_ip:192.0.2.7");
    }
}
