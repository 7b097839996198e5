//! Rate limits in Redis: one key per limit, holding its TAT, changed only by
//! `rate_limit.lua` so that the check and the update are one atomic step on every replica.

use super::RedisStore;
use crate::config::RateLimit;
use crate::ratelimit::{LimitKey, RateDecision, burst_tolerance_ms, emission_interval_ms};
use crate::redis_link::Conn;
use crate::session::StoreError;

impl RedisStore {
    /// `{prefix}rl:{<key string>}`: the whole key string is the hash tag, so the script's one
    /// key names its own slot on Redis Cluster.
    pub(super) fn rate_key(&self, key: &LimitKey) -> String {
        format!("{}rl:{{{key}}}", self.settings.key_prefix)
    }

    pub(super) async fn rate_limit_inner(
        &self,
        key: &LimitKey,
        limit: RateLimit,
        now_ms: u64,
    ) -> Result<RateDecision, StoreError> {
        let mut script = self.scripts.rate_limit.key(self.rate_key(key));
        script
            .arg(now_ms)
            .arg(emission_interval_ms(limit))
            .arg(burst_tolerance_ms(limit));
        let script = &script;
        // A repeat after a dropped connection may count one request twice: the error is on
        // the strict side, and rarer than the 503 it spares.
        let (_, reply): (Conn, Vec<i64>) = self
            .connection
            .first_call(move |mut c| async move { script.invoke_async(&mut c).await })
            .await?;
        match reply.as_slice() {
            [1, _] => Ok(RateDecision::Allowed),
            [0, retry] if *retry > 0 => Ok(RateDecision::Limited {
                retry_after_ms: retry.unsigned_abs(),
            }),
            _ => Err(StoreError::Corrupt(format!(
                "rate limit {} answered {reply:?}",
                key.name()
            ))),
        }
    }
}
