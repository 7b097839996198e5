//! Rate-limit state of the in-process backend: one TAT per key string, under its own lock so
//! that limits never wait on sessions.
//!
//! Memory is bounded twice over. A key is worth keeping only while its TAT is ahead of now (a
//! TAT in the past is the same as no TAT), so expired keys are swept whenever the table has
//! doubled since the last sweep. And the table never holds more than [`MAX_KEYS`]: when a
//! flood of new keys (one host spraying IPv6 /64s) fills it with live keys, the half whose
//! TATs come soonest — the keys closest to being forgotten anyway — is dropped at once, so a
//! new client is never locked out, and the cost per new key stays constant (one pass per
//! `MAX_KEYS / 2` new keys). The price: under such a flood the quietest keys regain their
//! burst early. This table is for one process trying the sidecar out; the Redis store keeps
//! every key until it expires.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use crate::config::RateLimit;
use crate::ratelimit::{Decision, LimitKey, RateDecision, gcra};

/// Keys at most; about 150 bytes each.
pub(super) const MAX_KEYS: usize = 100_000;
/// The table is never swept below this size (a sweep is a full pass).
const MIN_SWEEP_AT: usize = 1024;

/// TATs by key string. See the module docs for how it stays small.
#[derive(Debug)]
pub(super) struct RateTable {
    inner: Mutex<Tats>,
}

#[derive(Debug)]
struct Tats {
    tats: HashMap<String, u64>,
    /// Sweep when a new key arrives and the table holds this many.
    sweep_at: usize,
    /// The earliest TAT left by the last sweep: a full table cannot shrink before it.
    next_expiry_ms: u64,
    max_keys: usize,
}

impl RateTable {
    pub(super) fn new() -> Self {
        Self::with_max_keys(MAX_KEYS)
    }

    fn with_max_keys(max_keys: usize) -> Self {
        Self {
            inner: Mutex::new(Tats {
                tats: HashMap::new(),
                sweep_at: MIN_SWEEP_AT.min(max_keys),
                next_expiry_ms: 0,
                max_keys,
            }),
        }
    }

    /// Applies [`gcra`] to `key` and stores the new TAT if the request is allowed.
    pub(super) fn check(&self, key: &LimitKey, limit: RateLimit, now_ms: u64) -> RateDecision {
        let key = key.to_string();
        // Only plain map operations happen under the lock; a poisoned one is still whole.
        let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let stored = t.tats.get(&key).copied();
        let new_tat_ms = match gcra(stored.filter(|&tat| tat > now_ms), now_ms, limit) {
            Decision::Deny { retry_after_ms } => return RateDecision::Limited { retry_after_ms },
            Decision::Allow { new_tat_ms } => new_tat_ms,
        };
        if stored.is_none() {
            let len = t.tats.len();
            if len >= t.sweep_at && (len < t.max_keys || now_ms >= t.next_expiry_ms) {
                t.sweep(now_ms);
            }
            if t.tats.len() >= t.max_keys {
                t.evict_soonest_half();
            }
        }
        t.tats.insert(key, new_tat_ms);
        RateDecision::Allowed
    }

    /// Forgets `key`'s TAT; whether there was one.
    pub(super) fn clear(&self, key: &LimitKey) -> bool {
        let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        t.tats.remove(&key.to_string()).is_some()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tats
            .len()
    }
}

impl Tats {
    /// Drops the half of the (full, live) table whose TATs come soonest.
    fn evict_soonest_half(&mut self) {
        let mut tats: Vec<u64> = self.tats.values().copied().collect();
        let middle = tats.len() / 2;
        let (below, &mut cut, _) = tats.select_nth_unstable(middle);
        // Everything before the cut goes, and as many keys at the cut as make up half, so
        // that a table of equal TATs halves too.
        let mut ties_to_drop = middle - below.iter().filter(|&&tat| tat < cut).count();
        self.tats.retain(|_, tat| {
            if *tat < cut {
                false
            } else if *tat == cut && ties_to_drop > 0 {
                ties_to_drop -= 1;
                false
            } else {
                true
            }
        });
        self.next_expiry_ms = self.tats.values().min().copied().unwrap_or(u64::MAX);
        tracing::warn!(
            kept = self.tats.len(),
            "the memory store's rate-limit table was full: the keys nearest their end were \
             dropped (a flood of distinct clients; use the Redis store beyond one machine)"
        );
    }

    /// Drops every key back to a full burst; the next sweep waits until the table has doubled.
    fn sweep(&mut self, now_ms: u64) {
        self.tats.retain(|_, tat| *tat > now_ms);
        self.next_expiry_ms = self.tats.values().min().copied().unwrap_or(u64::MAX);
        self.sweep_at = self
            .tats
            .len()
            .saturating_mul(2)
            .max(MIN_SWEEP_AT)
            .min(self.max_keys);
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    const LIMIT: RateLimit = RateLimit {
        per_second: 1.0,
        burst: 2,
    };

    fn ip_key(n: u32) -> LimitKey {
        LimitKey::SubmitIp {
            ip: IpAddr::V4(Ipv4Addr::from(n)),
        }
    }

    #[test]
    fn keys_back_to_a_full_burst_are_swept_once_the_table_doubles() {
        let table = RateTable::new();
        for n in 0..MIN_SWEEP_AT as u32 {
            assert_eq!(table.check(&ip_key(n), LIMIT, 0), RateDecision::Allowed);
        }
        assert_eq!(table.len(), MIN_SWEEP_AT);
        // One interval later every TAT has expired: the next new key sweeps them all.
        assert_eq!(
            table.check(&ip_key(u32::MAX), LIMIT, 1000),
            RateDecision::Allowed
        );
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn a_full_table_drops_its_soonest_half_and_never_refuses_a_new_client() {
        let table = RateTable::with_max_keys(4);
        for n in 0..4 {
            assert_eq!(
                table.check(&ip_key(n), LIMIT, n.into()),
                RateDecision::Allowed
            );
        }
        // Full of live keys: a new client is let in, and the two keys due soonest (0 and 1)
        // make room.
        assert_eq!(table.check(&ip_key(9), LIMIT, 10), RateDecision::Allowed);
        assert_eq!(table.len(), 3);
        // The keys that stayed are still limited as before.
        assert_eq!(table.check(&ip_key(3), LIMIT, 10), RateDecision::Allowed);
        assert!(matches!(
            table.check(&ip_key(3), LIMIT, 10),
            RateDecision::Limited { .. }
        ));
    }

    #[test]
    fn a_flood_of_new_keys_costs_a_pass_per_half_table_not_per_key() {
        let table = RateTable::with_max_keys(1000);
        // Ten times the table in distinct keys, all live: every one is let in.
        for n in 0..10_000 {
            assert_eq!(table.check(&ip_key(n), LIMIT, 0), RateDecision::Allowed);
            assert!(table.len() <= 1000);
        }
    }
}
