//! The Redis backend: sessions and rate limits shared by every replica (DESIGN §4, §5).
//!
//! Owns the key layout and the Lua scripts (the `.lua` files next to this one) that make each
//! change atomic. Every script but one touches exactly one key, so each runs in one hash slot
//! and the layout works on Redis Cluster:
//!
//! - `{prefix}lookup:{<hex sha256 of medium\0address\0secret-hash-hex\0purpose\0>}` → sid
//!   (PX = lifetime): a request for another purpose starts a session of its own;
//! - `{prefix}session:{<sid>}` → hash of `medium`, `address`, `secret`, `purpose`, `next_link`,
//!   `attempt`, `attempt_token`, `failed`, `validated_at` and one `t:<token hash hex>` = expiry
//!   (unix ms) per live token (for SMS only the newest), with PEXPIRE = lifetime, refreshed on
//!   every change until it is validated and not after (a validated session lives one lifetime
//!   from its validation);
//! - `{prefix}rl:{<limit key>}` → the limit's TAT (unix ms), with PX = the time until it is
//!   reached (see [`LimitKey`] for the key string, which never holds an address);
//! - `{prefix}purpose:{<hex sha256 of medium\0address\0secret-hash-hex\0>}` → a list of
//!   via-upstream purpose notes, one per accepted requestToken, each taken once, PX =
//!   [`PURPOSE_NOTE_TTL`].
//! - `{prefix}address-key` → the random key of the address hashes in rate-limit keys and
//!   the address index, made once by whichever replica asks first, never expiring;
//! - `{prefix}sessions-of:{<medium>:<address hash>}` → the set of sids started for one
//!   address (the admin API's index; PX = twice the lifetime from the last send, so it
//!   outlives its sessions; members whose session is gone are dropped when read);
//! - `{prefix}resend:{<sid>}` → an email dead letter's client secret (PX = lifetime), so that
//!   the admin API can send the message again; in the session's slot;
//! - `{prefix}outbox` and `{prefix}outbox-dead` → the durable outbox's streams (see
//!   [`outbox`]); `begin_send` with a queued message writes the stream first and the session
//!   second: in two steps on Redis Cluster (DESIGN §7), in one script (`begin_queued.lua`, the
//!   one script with more than one key) where every key is on one server.
//!
//! [`connection`] owns the connection, its timeouts and its retry, and is the one place that
//! knows the [`Topology`] (with [`sentinel`] and [`cluster`]); [`sessions`], [`rate_limit`]
//! and [`outbox`] the operations.

mod admin;
mod queue;
mod rate_limit;
mod sessions;

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis::Script;
use sha2::{Digest, Sha256};

use super::{
    LimitedSend, OutboxMessage, OutboxReport, PURPOSE_NOTE_TTL, PurposeNote, RetryOutcome,
    SendDecision, SendRequest, Session, SessionDetails, SessionStore, StoreError, StoreSettings,
    SubmitOutcome,
};
use crate::config::RateLimit;
use crate::ratelimit::{AddressHash, AddressKey, LimitKey, RateDecision};
use crate::redis_link::{Connection, Topology, bound_all};
use crate::threepid::{Medium, Purpose};
use crate::token::{SecretHash, TokenHash};

/// The scripts, each loaded once (by SHA) per connection and re-sent when Redis forgot it.
struct Scripts {
    /// Step 1 of `begin_send`: the sid for a (medium, address, secret).
    lookup: Script,
    /// Step 2 of `begin_send`: create or continue the session.
    begin: Script,
    /// `begin_send` with the message queued, in one step, where every key is on one server.
    begin_queued: Script,
    /// The admin API's retry of a dead letter: a new token in the session.
    resend: Script,
    /// `undo_send` on the session.
    undo: Script,
    /// `undo_send` on the lookup entry of a deleted session.
    unlook: Script,
    /// `submit`: reserve an attempt, fetch the tokens.
    reserve: Script,
    /// `submit`: a token matched.
    validate: Script,
    /// `rate_limit`: GCRA on one key.
    rate_limit: Script,
    /// `address_key`: the shared key, made by whichever replica asks first.
    address_key: Script,
    /// `spend`: one unit of a fixed-window budget.
    spend: Script,
}

/// The `send_attempt` rule, the start of both scripts that apply it.
const SEND_RULE: &str = include_str!("send_rule.lua");
/// GCRA, the start of both scripts that count a rate limit.
const GCRA: &str = include_str!("gcra.lua");

impl Scripts {
    fn new() -> Self {
        Self {
            lookup: Script::new(include_str!("lookup.lua")),
            begin: Script::new(&[SEND_RULE, include_str!("begin.lua")].concat()),
            begin_queued: Script::new(
                &[SEND_RULE, GCRA, include_str!("begin_queued.lua")].concat(),
            ),
            resend: Script::new(include_str!("resend.lua")),
            undo: Script::new(include_str!("undo.lua")),
            unlook: Script::new(include_str!("unlook.lua")),
            reserve: Script::new(include_str!("reserve.lua")),
            validate: Script::new(include_str!("validate.lua")),
            rate_limit: Script::new(&[GCRA, include_str!("rate_limit.lua")].concat()),
            address_key: Script::new(include_str!("address_key.lua")),
            spend: Script::new(include_str!("spend.lua")),
        }
    }
}

/// Sessions in Redis, shared by every replica. Cheap to share behind an `Arc`.
pub struct RedisStore {
    connection: Connection,
    settings: StoreSettings,
    command_timeout: Duration,
    scripts: Scripts,
    /// `begin_send_queued` in three steps although the topology is one server: set when
    /// that server refused a script on keys in different slots (a proxy in front of a
    /// cluster, presented as one server).
    queue_in_steps: AtomicBool,
    /// The store's address-hash key, read once.
    address_key: tokio::sync::OnceCell<AddressKey>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("settings", &self.settings)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// One server at `url`; see [`RedisStore::with_topology`].
    pub fn new(
        url: &str,
        settings: StoreSettings,
        command_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let topology = Topology::Single {
            url: url.to_owned(),
        };
        Self::with_topology(&topology, settings, command_timeout)
    }

    /// Prepares the connection without opening it, so the sidecar starts (and answers "not
    /// ready") while Redis is down; the first call connects. Fails only on a malformed URL or
    /// address. Must be called inside a Tokio runtime.
    pub fn with_topology(
        topology: &Topology,
        settings: StoreSettings,
        command_timeout: Duration,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            connection: Connection::new(topology, command_timeout)?,
            settings,
            command_timeout,
            scripts: Scripts::new(),
            queue_in_steps: AtomicBool::new(false),
            address_key: tokio::sync::OnceCell::new(),
        })
    }

    /// The connection every operation of this store runs on (the outbox's queue too).
    pub(crate) fn link(&self) -> &Connection {
        &self.connection
    }

    /// What bounds each operation.
    pub fn command_timeout(&self) -> Duration {
        self.command_timeout
    }

    /// `{prefix}session:{<sid>}`.
    pub fn session_key(&self, sid: &str) -> String {
        format!("{}session:{{{sid}}}", self.settings.key_prefix)
    }

    /// `{prefix}<family>:{<hex sha256 of the parts, each followed by a 0 byte>}`.
    fn hashed_key(&self, family: &str, parts: &[&str]) -> String {
        let mut digest = Sha256::new();
        for part in parts {
            digest.update(part);
            digest.update([0]);
        }
        let hex = TokenHash(digest.finalize().into()).to_hex();
        format!("{}{family}:{{{hex}}}", self.settings.key_prefix)
    }

    /// `{prefix}lookup:{…}`: the session of a (medium, address, secret, purpose). The purpose
    /// is part of it: a request for another purpose starts a session of its own.
    fn lookup_key(&self, medium: &str, address: &str, secret_hex: &str, purpose: &str) -> String {
        self.hashed_key("lookup", &[medium, address, secret_hex, purpose])
    }

    /// `{prefix}purpose:{<hash of medium, address, client secret>}` (via-upstream notes).
    fn purpose_key(&self, medium: Medium, address: &str, client_secret: &SecretHash) -> String {
        self.hashed_key(
            "purpose",
            &[medium.as_str(), address, &client_secret.to_hex()],
        )
    }

    /// `{prefix}resend:{<sid>}`: a dead letter's client secret, beside its session.
    pub fn resend_key(&self, sid: &str) -> String {
        format!("{}resend:{{{sid}}}", self.settings.key_prefix)
    }

    /// `{prefix}sessions-of:{<medium>:<address hash>}`: the sids of one address.
    fn index_key(&self, key: &AddressKey, medium: Medium, address: &str) -> String {
        let hash = AddressHash::of(key, address);
        format!(
            "{}sessions-of:{{{medium}:{}}}",
            self.settings.key_prefix,
            hash.as_hex()
        )
    }

    /// The address index's key for a request's address (the address key read once).
    async fn index_key_of(&self, medium: Medium, address: &str) -> Result<String, StoreError> {
        let key = self
            .address_key
            .get_or_try_init(|| self.read_address_key())
            .await?;
        Ok(self.index_key(key, medium, address))
    }

    /// How long a session lives after its last change, unvalidated.
    pub fn session_lifetime(&self) -> Duration {
        self.settings.session_lifetime
    }

    fn lifetime_ms(&self) -> u64 {
        u64::try_from(self.settings.session_lifetime.as_millis()).unwrap_or(u64::MAX)
    }

    async fn read_address_key(&self) -> Result<AddressKey, StoreError> {
        let mut script = self
            .scripts
            .address_key
            .key(format!("{}address-key", self.settings.key_prefix));
        script.arg(AddressKey::random().to_hex());
        let script = &script;
        let (_, hex): (crate::redis_link::Conn, String) = self
            .connection
            .first_call(move |mut c| async move { script.invoke_async(&mut c).await })
            .await?;
        AddressKey::from_hex(&hex)
            .ok_or_else(|| StoreError::Corrupt("the address-hash key is not 64 hex digits".into()))
    }
}

impl SessionStore for RedisStore {
    fn begin_send(&self, req: SendRequest) -> BoxFuture<'_, Result<SendDecision, StoreError>> {
        bound_all(self.command_timeout, self.begin_send_inner(req)).boxed()
    }

    fn queues(&self) -> bool {
        true
    }

    fn begin_send_queued(
        &self,
        req: SendRequest,
        message: OutboxMessage,
    ) -> BoxFuture<'_, Result<SendDecision, StoreError>> {
        let op = self.begin_send_queued_inner(req, message);
        bound_all(self.command_timeout, op).boxed()
    }

    fn begin_send_queued_limited<'a>(
        &'a self,
        key: &'a LimitKey,
        limit: RateLimit,
        limit_now_ms: u64,
        req: SendRequest,
        message: OutboxMessage,
    ) -> BoxFuture<'a, Result<LimitedSend, StoreError>> {
        let op = self.begin_send_queued_limited_inner(key, limit, limit_now_ms, req, message);
        bound_all(self.command_timeout, op).boxed()
    }

    fn undo_send<'a>(
        &'a self,
        decision: &'a SendDecision,
        token: &'a TokenHash,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        bound_all(self.command_timeout, self.undo_send_inner(decision, token)).boxed()
    }

    fn get<'a>(
        &'a self,
        sid: &'a str,
        _now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<Session>, StoreError>> {
        // Redis expires the key itself, one lifetime after the last change.
        bound_all(self.command_timeout, self.get_inner(sid)).boxed()
    }

    fn submit<'a>(
        &'a self,
        sid: &'a str,
        client_secret: &'a SecretHash,
        token: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<SubmitOutcome, StoreError>> {
        let op = self.submit_inner(sid, client_secret, token, now_ms);
        bound_all(self.command_timeout, op).boxed()
    }

    fn rate_limit<'a>(
        &'a self,
        key: &'a LimitKey,
        limit: RateLimit,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<RateDecision, StoreError>> {
        let op = self.rate_limit_inner(key, limit, now_ms);
        bound_all(self.command_timeout, op).boxed()
    }

    fn note_purpose<'a>(
        &'a self,
        medium: Medium,
        address: &'a str,
        client_secret: &'a SecretHash,
        note: &'a PurposeNote,
        _now_ms: u64,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let op = async move {
            let ttl = u64::try_from(PURPOSE_NOTE_TTL.as_millis()).unwrap_or(u64::MAX);
            let key = self.purpose_key(medium, address, client_secret);
            // A list, one entry per accepted request; MULTI so that the list never lives
            // without its expiry.
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("RPUSH")
                .arg(&key)
                .arg(format!("{} {}", note.purpose.as_str(), note.language))
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl)
                .ignore();
            let pipe = &pipe;
            let (_, ()): (crate::redis_link::Conn, ()) = self
                .connection
                .first_call(move |mut c| async move { pipe.query_async(&mut c).await })
                .await?;
            Ok(())
        };
        bound_all(self.command_timeout, op).boxed()
    }

    fn take_purpose<'a>(
        &'a self,
        medium: Medium,
        address: &'a str,
        client_secret: &'a SecretHash,
        _now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<PurposeNote>, StoreError>> {
        let op = async move {
            let mut cmd = redis::cmd("LPOP");
            cmd.arg(self.purpose_key(medium, address, client_secret));
            let cmd = &cmd;
            let (_, noted): (crate::redis_link::Conn, Option<String>) = self
                .connection
                .first_call(move |mut c| async move { cmd.query_async(&mut c).await })
                .await?;
            // "<purpose> <language>"
            noted
                .map(|text| {
                    let (purpose, language) = text.split_once(' ').unwrap_or((&text, ""));
                    Purpose::parse(purpose)
                        .map(|purpose| PurposeNote {
                            purpose,
                            language: language.to_owned(),
                        })
                        .ok_or_else(|| StoreError::Corrupt(format!("unknown purpose {purpose:?}")))
                })
                .transpose()
        };
        bound_all(self.command_timeout, op).boxed()
    }

    fn spend<'a>(
        &'a self,
        key: &'a str,
        limit: u64,
        until_ms: u64,
        _now_ms: u64,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let op = async move {
            let mut script = self
                .scripts
                .spend
                .key(format!("{}budget:{{{key}}}", self.settings.key_prefix));
            script.arg(limit).arg(until_ms);
            let script = &script;
            let (_, spent): (crate::redis_link::Conn, i64) = self
                .connection
                .first_call(move |mut c| async move { script.invoke_async(&mut c).await })
                .await?;
            Ok(spent == 1)
        };
        bound_all(self.command_timeout, op).boxed()
    }

    fn queue_notice<'a>(
        &'a self,
        notice: &'a super::NoticeMessage,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        bound_all(self.command_timeout, self.enqueue_notice(notice))
            .map(|queued| queued.map(|()| true))
            .boxed()
    }

    fn address_key(&self) -> BoxFuture<'_, Result<AddressKey, StoreError>> {
        let op = async move {
            self.address_key
                .get_or_try_init(|| self.read_address_key())
                .await
                .cloned()
        };
        bound_all(self.command_timeout, op).boxed()
    }

    fn details<'a>(
        &'a self,
        sid: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Option<SessionDetails>, StoreError>> {
        bound_all(self.command_timeout, self.details_inner(sid, now_ms)).boxed()
    }

    fn sessions_of<'a>(
        &'a self,
        medium: Medium,
        address: &'a str,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<SessionDetails>, StoreError>> {
        let op = self.sessions_of_inner(medium, address, now_ms);
        bound_all(self.command_timeout, op).boxed()
    }

    fn revoke<'a>(&'a self, sid: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        bound_all(self.command_timeout, self.revoke_inner(sid)).boxed()
    }

    fn clear_limits<'a>(&'a self, keys: &'a [LimitKey]) -> BoxFuture<'a, Result<u64, StoreError>> {
        bound_all(self.command_timeout, self.clear_limits_inner(keys)).boxed()
    }

    fn outbox_report(&self, max: usize) -> BoxFuture<'_, Result<OutboxReport, StoreError>> {
        bound_all(self.command_timeout, self.outbox_report_inner(max)).boxed()
    }

    fn retry_dead_letter<'a>(
        &'a self,
        id: &'a str,
        token_lifetime_ms: u64,
        now_ms: u64,
    ) -> BoxFuture<'a, Result<RetryOutcome, StoreError>> {
        let op = self.retry_dead_letter_inner(id, token_lifetime_ms, now_ms);
        bound_all(self.command_timeout, op).boxed()
    }

    fn drop_dead_letter<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        bound_all(self.command_timeout, self.drop_dead_letter_inner(id)).boxed()
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let op = async move {
            let ping = &redis::cmd("PING");
            let (_, pong): (crate::redis_link::Conn, String) = self
                .connection
                .first_call(move |mut c| async move { ping.query_async(&mut c).await })
                .await?;
            match pong.as_str() {
                "PONG" => Ok(()),
                other => Err(StoreError::Corrupt(format!("PING answered {other:?}"))),
            }
        };
        bound_all(self.command_timeout, op).boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{IpAddr, Ipv6Addr};

    use super::*;
    use crate::threepid::Medium;

    fn settings() -> StoreSettings {
        StoreSettings {
            key_prefix: "tp:".into(),
            session_lifetime: Duration::from_secs(60),
            max_submit_attempts: 3,
        }
    }

    #[tokio::test]
    async fn keys_carry_the_prefix_and_a_hash_tag() {
        let store = RedisStore::new("redis://127.0.0.1:1", settings(), Duration::from_secs(1))
            .expect("a well-formed url needs no server");
        assert_eq!(store.session_key("abc"), "tp:session:{abc}");
        let lookup = store.lookup_key("email", "a@example.org", "00", "registration");
        assert!(lookup.starts_with("tp:lookup:{") && lookup.ends_with('}'));
        assert_eq!(lookup.len(), "tp:lookup:{}".len() + 64);
        assert_ne!(
            lookup,
            store.lookup_key("email", "a@example.org", "01", "registration")
        );
        assert_ne!(
            lookup,
            store.lookup_key("msisdn", "a@example.org", "00", "registration")
        );
        assert_ne!(
            lookup,
            store.lookup_key("email", "a@example.org", "00", "password_reset")
        );
    }

    #[tokio::test]
    async fn rate_limit_keys_carry_the_prefix_and_the_whole_limit_key_as_hash_tag() {
        let store = RedisStore::new("redis://127.0.0.1:1", settings(), Duration::from_secs(1))
            .expect("a well-formed url needs no server");
        let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 2, 3, 4, 5));
        let key = LimitKey::RequestTokenIp {
            medium: Medium::Email,
            ip,
        };
        assert_eq!(
            store.rate_key(&key),
            "tp:rl:{request_token_ip:email:2001:db8:0:1::/64}"
        );
        let key =
            LimitKey::request_token_address(&AddressKey::random(), Medium::Email, "a@example.org");
        let rate_key = store.rate_key(&key);
        assert!(rate_key.starts_with("tp:rl:{request_token_address:email:"));
        assert!(rate_key.ends_with('}') && !rate_key.contains("example"));
    }

    #[tokio::test]
    async fn a_malformed_url_is_refused() {
        let err = RedisStore::new("not a url", settings(), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    }

    #[tokio::test]
    async fn a_topology_with_no_node_or_a_malformed_one_is_refused() {
        let sentinel = crate::config::SentinelSettings {
            master_name: "m".into(),
            sentinels: Vec::new(),
            password: None,
            sentinel_password: None,
        };
        for topology in [
            Topology::Cluster { nodes: Vec::new() },
            Topology::Cluster {
                nodes: vec!["not a url".into()],
            },
            Topology::Sentinel(sentinel),
        ] {
            let refused = RedisStore::with_topology(&topology, settings(), Duration::from_secs(1));
            assert!(
                matches!(refused, Err(StoreError::Unavailable(_))),
                "{topology:?}"
            );
        }
    }

    #[test]
    fn a_session_hash_missing_a_field_is_corrupt() {
        let fields = HashMap::from([("medium".to_owned(), "email".to_owned())]);
        assert!(matches!(
            sessions::session_from("s", &fields),
            Err(StoreError::Corrupt(_))
        ));
    }
}
