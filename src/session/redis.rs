//! The Redis backend: sessions shared by every replica (DESIGN §4).
//!
//! Owns the key layout and the Lua scripts that make each change atomic. Every script touches
//! exactly one key, so each runs in one hash slot and the layout works on Redis Cluster:
//!
//! - `{prefix}lookup:{<hex sha256 of medium\0address\0secret-hash-hex>}` → sid (PX = lifetime);
//! - `{prefix}session:{<sid>}` → hash of `medium`, `address`, `secret`, `purpose`, `next_link`,
//!   `attempt`, `attempt_token`, `failed`, `validated_at` and one `t:<token hash hex>` = expiry
//!   (unix ms) per live token, with PEXPIRE = lifetime, refreshed on every change.
//!
//! The connection is a [`ConnectionManager`] created lazily: the sidecar starts while Redis is
//! down and reconnects by itself after a restart. Every operation is bounded by the configured
//! command timeout.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, Script};
use sha2::{Digest, Sha256};

use super::{
    Medium, Purpose, SendDecision, SendRequest, Session, SessionStore, StoreError, StoreSettings,
    SubmitOutcome,
};
use crate::token::{self, SecretHash, TokenHash};

/// Step 1 of `begin_send`: the sid for a (medium, address, secret), creating it if none.
/// KEYS[1] lookup; ARGV: candidate sid, lifetime ms.
const LOOKUP: &str = r"
local sid = redis.call('GET', KEYS[1])
if sid then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return sid
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
";

/// Step 2 of `begin_send`: create the session, or continue it under the `send_attempt` rule.
/// A missing hash means "create" (which also heals a crash between the two steps).
/// KEYS[1] session; ARGV: lifetime ms, now ms, medium, address, secret, purpose,
/// has next_link ('1'/'0'), next_link, send_attempt, token hex, token expiry ms.
const BEGIN: &str = r"
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then
  redis.call('HSET', key, 'medium', ARGV[3], 'address', ARGV[4], 'secret', ARGV[5],
    'purpose', ARGV[6], 'attempt', ARGV[9], 'failed', '0', 'attempt_token', ARGV[10],
    't:' .. ARGV[10], ARGV[11])
  if ARGV[7] == '1' then redis.call('HSET', key, 'next_link', ARGV[8]) end
  redis.call('PEXPIRE', key, ARGV[1])
  return {'created'}
end
local s = redis.call('HMGET', key, 'medium', 'address', 'secret', 'attempt')
if s[1] ~= ARGV[3] or s[2] ~= ARGV[4] or s[3] ~= ARGV[5] or not s[4] then
  return {'mismatch'}
end
-- u64 as decimal strings without leading zeros: longer is larger, else compare as text.
local new, old = ARGV[9], s[4]
if #new < #old or (#new == #old and new <= old) then return {'already'} end
local now = tonumber(ARGV[2])
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 2) == 't:' and (tonumber(fields[i + 1]) or 0) <= now then
    redis.call('HDEL', key, fields[i])
  end
end
redis.call('HSET', key, 'attempt', new, 'attempt_token', ARGV[10], 't:' .. ARGV[10], ARGV[11])
if ARGV[7] == '1' then redis.call('HSET', key, 'next_link', ARGV[8]) end
redis.call('PEXPIRE', key, ARGV[1])
return {'continued', old}
";

/// `undo_send` on the session. A created session goes unless a later send continued it; a
/// continued one gets its old attempt back if this send is still the one that set it.
/// KEYS[1] session; ARGV: token hex, created ('1'/'0'), previous attempt ('' if none).
const UNDO: &str = r"
local key = KEYS[1]
if redis.call('EXISTS', key) == 0 then return {'gone'} end
redis.call('HDEL', key, 't:' .. ARGV[1])
if ARGV[2] == '1' then
  local tokens = 0
  for _, f in ipairs(redis.call('HKEYS', key)) do
    if string.sub(f, 1, 2) == 't:' then tokens = tokens + 1 end
  end
  if tokens == 0 then
    local s = redis.call('HMGET', key, 'medium', 'address', 'secret')
    redis.call('DEL', key)
    return {'deleted', s[1] or '', s[2] or '', s[3] or ''}
  end
end
if redis.call('HGET', key, 'attempt_token') == ARGV[1] then
  if ARGV[3] ~= '' then redis.call('HSET', key, 'attempt', ARGV[3]) end
  redis.call('HDEL', key, 'attempt_token')
end
return {'kept'}
";

/// Deletes a lookup entry only if it still names this sid. KEYS[1] lookup; ARGV: sid.
const UNLOOK: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Reserves one submit attempt and returns the token hashes to compare against.
/// KEYS[1] session; ARGV: secret hex, max attempts.
const RESERVE: &str = r"
local key = KEYS[1]
local s = redis.call('HMGET', key, 'secret', 'failed', 'validated_at')
if s[1] ~= ARGV[1] then return {'none'} end
local failed = tonumber(s[2])
if not failed then return {'corrupt'} end
if failed >= tonumber(ARGV[2]) then return {'too_many'} end
if s[3] then return {'validated'} end
local out = {'reserved', tostring(redis.call('HINCRBY', key, 'failed', 1))}
local fields = redis.call('HGETALL', key)
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 2) == 't:' then
    out[#out + 1] = string.sub(fields[i], 3)
    out[#out + 1] = fields[i + 1]
  end
end
return out
";

/// Marks a session validated after a token matched, giving the reserved attempt back.
/// KEYS[1] session; ARGV: secret hex, now ms, lifetime ms. Returns the hash, or {} if gone.
const VALIDATE: &str = r"
local key = KEYS[1]
if redis.call('HGET', key, 'secret') ~= ARGV[1] then return {} end
if not redis.call('HGET', key, 'validated_at') then
  redis.call('HSET', key, 'validated_at', ARGV[2])
end
if (tonumber(redis.call('HGET', key, 'failed')) or 0) > 0 then
  redis.call('HINCRBY', key, 'failed', -1)
end
redis.call('PEXPIRE', key, ARGV[3])
return redis.call('HGETALL', key)
";

/// Sessions in Redis, shared by every replica. Cheap to share behind an `Arc`.
pub struct RedisStore {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// The manager in use and its generation (see [`RedisStore::fail`]).
    current: Mutex<(u64, ConnectionManager)>,
    settings: StoreSettings,
    command_timeout: Duration,
    lookup: Script,
    begin: Script,
    undo: Script,
    unlook: Script,
    reserve: Script,
    validate: Script,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("settings", &self.settings)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

/// A connection handle and the generation of the manager it came from.
struct Conn {
    generation: u64,
    manager: ConnectionManager,
}

impl RedisStore {
    /// Prepares the connection without opening it, so the sidecar starts (and answers "not
    /// ready") while Redis is down; the first call connects. Fails only on a malformed `url`.
    /// Must be called inside a Tokio runtime.
    pub fn new(
        url: &str,
        settings: StoreSettings,
        command_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let client = redis::Client::open(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid redis url: {e}")))?;
        // Short attempts and one retry: while Redis is down a call fails well within
        // `command_timeout`, and the next call starts a fresh reconnect.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(command_timeout))
            .set_response_timeout(Some(command_timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(command_timeout.min(Duration::from_millis(500)));
        let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            client,
            config,
            current: Mutex::new((0, manager)),
            settings,
            command_timeout,
            lookup: Script::new(LOOKUP),
            begin: Script::new(BEGIN),
            undo: Script::new(UNDO),
            unlook: Script::new(UNLOOK),
            reserve: Script::new(RESERVE),
            validate: Script::new(VALIDATE),
        })
    }

    fn session_key(&self, sid: &str) -> String {
        format!("{}session:{{{sid}}}", self.settings.key_prefix)
    }

    fn lookup_key(&self, medium: &str, address: &str, secret_hex: &str) -> String {
        let digest = Sha256::new()
            .chain_update(medium)
            .chain_update([0])
            .chain_update(address)
            .chain_update([0])
            .chain_update(secret_hex)
            .finalize();
        let hex = TokenHash(digest.into()).to_hex();
        format!("{}lookup:{{{hex}}}", self.settings.key_prefix)
    }

    fn lifetime_ms(&self) -> u64 {
        u64::try_from(self.settings.session_lifetime.as_millis()).unwrap_or(u64::MAX)
    }

    fn current(&self) -> MutexGuard<'_, (u64, ConnectionManager)> {
        // Only a clone or a replacement happens under this lock; a poisoned one is still whole.
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn conn(&self) -> Conn {
        let current = self.current();
        Conn {
            generation: current.0,
            manager: current.1.clone(),
        }
    }

    /// Maps a Redis error. The manager reconnects by itself after I/O errors but keeps a
    /// connection attempt that failed any other way (a handshake refused, something that is
    /// not Redis answering) for good, so then a fresh manager replaces it, once per failure.
    /// An error reply to a command (OOM, LOADING, ...) says nothing against the connection.
    fn fail(&self, generation: u64, e: RedisError) -> StoreError {
        let stuck = !matches!(
            e.kind(),
            ErrorKind::Io | ErrorKind::Server(_) | ErrorKind::Extension
        );
        if stuck {
            let mut current = self.current();
            if current.0 == generation
                && let Ok(fresh) = ConnectionManager::new_lazy_with_config(
                    self.client.clone(),
                    self.config.clone(),
                )
            {
                *current = (generation + 1, fresh);
            }
        }
        store_error(e)
    }

    /// Awaits one Redis round trip on `conn` (the whole operation is bounded by
    /// [`bound_all`]).
    async fn call<T>(
        &self,
        generation: u64,
        op: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        op.await.map_err(|e| self.fail(generation, e))
    }

    /// The first round trip of an operation, which is always safe to repeat. An idle
    /// connection to a Redis that restarted fails once when used, and the manager is already
    /// reconnecting by then: one retry on a dropped connection spares the client a 503.
    async fn first_call<T, F, Fut>(&self, op: F) -> Result<(Conn, T), StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let mut conn = self.conn();
        let mut result = op(conn.manager.clone()).await;
        if result
            .as_ref()
            .is_err_and(RedisError::is_connection_dropped)
        {
            conn = self.conn();
            result = op(conn.manager.clone()).await;
        }
        match result {
            Ok(value) => Ok((conn, value)),
            Err(e) => Err(self.fail(conn.generation, e)),
        }
    }

    async fn hgetall(&self, sid: &str) -> Result<(Conn, HashMap<String, String>), StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.session_key(sid));
        let cmd = &cmd;
        self.first_call(move |mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    async fn begin_send_inner(&self, req: SendRequest) -> Result<SendDecision, StoreError> {
        let (medium, secret) = (req.medium.as_str(), req.client_secret.to_hex());
        let lifetime = self.lifetime_ms();
        let mut step1 = self
            .lookup
            .key(self.lookup_key(medium, &req.address, &secret));
        step1.arg(token::new_sid()).arg(lifetime);
        let step1 = &step1;
        let (mut conn, sid): (Conn, String) = self
            .first_call(move |mut c| async move { step1.invoke_async(&mut c).await })
            .await?;
        let mut step2 = self.begin.key(self.session_key(&sid));
        step2
            .arg(lifetime)
            .arg(req.now_ms)
            .arg(medium)
            .arg(&req.address)
            .arg(&secret)
            .arg(req.purpose.as_str())
            .arg(if req.next_link.is_some() { "1" } else { "0" })
            .arg(req.next_link.as_deref().unwrap_or(""))
            .arg(req.send_attempt)
            .arg(req.token.to_hex())
            .arg(req.token_expires_ms);
        let reply: Vec<String> = self
            .call(conn.generation, step2.invoke_async(&mut conn.manager))
            .await?;
        match reply.as_slice() {
            [s] if s == "created" => Ok(SendDecision::Send {
                sid,
                created: true,
                previous_attempt: None,
            }),
            [s] if s == "already" => Ok(SendDecision::AlreadySent { sid }),
            [s, old] if s == "continued" => Ok(SendDecision::Send {
                sid,
                created: false,
                previous_attempt: Some(parse(old, "attempt")?),
            }),
            _ => Err(StoreError::Corrupt(format!(
                "session {sid} does not match its lookup entry"
            ))),
        }
    }

    async fn undo_send_inner(
        &self,
        decision: &SendDecision,
        token: &TokenHash,
    ) -> Result<(), StoreError> {
        let SendDecision::Send {
            sid,
            created,
            previous_attempt,
        } = decision
        else {
            return Ok(());
        };
        let mut undo = self.undo.key(self.session_key(sid));
        undo.arg(token.to_hex())
            .arg(if *created { "1" } else { "0" })
            .arg(previous_attempt.map(|a| a.to_string()).unwrap_or_default());
        let undo = &undo;
        // Repeating UNDO is harmless: the token is gone, the attempt restored only once.
        let (mut conn, reply): (Conn, Vec<String>) = self
            .first_call(move |mut c| async move { undo.invoke_async(&mut c).await })
            .await?;
        if let [s, medium, address, secret] = reply.as_slice()
            && s == "deleted"
        {
            let mut unlook = self.unlook.key(self.lookup_key(medium, address, secret));
            unlook.arg(sid);
            let _: i64 = self
                .call(conn.generation, unlook.invoke_async(&mut conn.manager))
                .await?;
        }
        Ok(())
    }

    async fn get_inner(&self, sid: &str) -> Result<Option<Session>, StoreError> {
        let (_, fields) = self.hgetall(sid).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        session_from(sid, &fields).map(Some)
    }

    async fn submit_inner(
        &self,
        sid: &str,
        client_secret: &SecretHash,
        token: &str,
        now_ms: u64,
    ) -> Result<SubmitOutcome, StoreError> {
        let max = self.settings.max_submit_attempts;
        // Read first so that the secret is compared in constant time, here, before any
        // script compares it again as a guard.
        let (mut conn, fields) = self.hgetall(sid).await?;
        if fields.is_empty() {
            return Ok(SubmitOutcome::NoSession);
        }
        let session = session_from(sid, &fields)?;
        if !session.client_secret.ct_eq(client_secret) {
            return Ok(SubmitOutcome::NoSession);
        }
        if session.failed_submits >= max {
            return Ok(SubmitOutcome::TooManyAttempts);
        }
        if session.validated_at.is_some() {
            return Ok(SubmitOutcome::Validated(session));
        }
        let secret = client_secret.to_hex();
        let mut reserve = self.reserve.key(self.session_key(sid));
        reserve.arg(&secret).arg(max);
        let reply: Vec<String> = self
            .call(conn.generation, reserve.invoke_async(&mut conn.manager))
            .await?;
        let (failed, tokens) = match reply.split_first() {
            Some((s, [failed, tokens @ ..])) if s == "reserved" => (failed, tokens),
            Some((s, [])) if s == "none" => return Ok(SubmitOutcome::NoSession),
            Some((s, [])) if s == "too_many" => return Ok(SubmitOutcome::TooManyAttempts),
            Some((s, [])) if s == "validated" => {
                return Ok(match self.get_inner(sid).await? {
                    Some(session) => SubmitOutcome::Validated(session),
                    None => SubmitOutcome::NoSession,
                });
            }
            _ => {
                return Err(StoreError::Corrupt(format!(
                    "session {sid}: bad reservation"
                )));
            }
        };
        let failed: u32 = parse(failed, "failed")?;
        let mut live = Vec::with_capacity(tokens.len() / 2);
        for pair in tokens.chunks(2) {
            if let [hash, expiry] = pair
                && parse::<u64>(expiry, "token expiry")? > now_ms
            {
                let hash = TokenHash::from_hex(hash)
                    .ok_or_else(|| StoreError::Corrupt(format!("session {sid}: bad token")))?;
                live.push(hash);
            }
        }
        if !token::matches_any(token, &live) {
            return Ok(SubmitOutcome::WrongToken {
                remaining: max.saturating_sub(failed),
            });
        }
        let mut validate = self.validate.key(self.session_key(sid));
        validate.arg(&secret).arg(now_ms).arg(self.lifetime_ms());
        let pairs: Vec<String> = self
            .call(conn.generation, validate.invoke_async(&mut conn.manager))
            .await?;
        if pairs.is_empty() {
            return Ok(SubmitOutcome::NoSession);
        }
        let fields: HashMap<String, String> = pairs
            .chunks_exact(2)
            .map(|kv| (kv[0].clone(), kv[1].clone()))
            .collect();
        session_from(sid, &fields).map(SubmitOutcome::Validated)
    }
}

fn store_error(e: RedisError) -> StoreError {
    if e.is_timeout() {
        return StoreError::Timeout;
    }
    match e.kind() {
        ErrorKind::UnexpectedReturnType | ErrorKind::Parse => StoreError::Corrupt(e.to_string()),
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn parse<T: std::str::FromStr>(value: &str, what: &str) -> Result<T, StoreError> {
    value
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("bad {what} in session")))
}

fn session_from(sid: &str, f: &HashMap<String, String>) -> Result<Session, StoreError> {
    let field = |name: &str| {
        f.get(name)
            .ok_or_else(|| StoreError::Corrupt(format!("session {sid} lacks {name}")))
    };
    let bad = |name: &str| StoreError::Corrupt(format!("session {sid}: bad {name}"));
    Ok(Session {
        sid: sid.to_owned(),
        medium: Medium::parse(field("medium")?).ok_or_else(|| bad("medium"))?,
        address: field("address")?.clone(),
        client_secret: SecretHash::from_hex(field("secret")?).ok_or_else(|| bad("secret"))?,
        purpose: Purpose::parse(field("purpose")?).ok_or_else(|| bad("purpose"))?,
        next_link: f.get("next_link").cloned(),
        send_attempt: parse(field("attempt")?, "attempt")?,
        failed_submits: parse(field("failed")?, "failed")?,
        validated_at: f
            .get("validated_at")
            .map(|v| parse(v, "validated_at"))
            .transpose()?,
    })
}

impl SessionStore for RedisStore {
    fn begin_send(&self, req: SendRequest) -> BoxFuture<'_, Result<SendDecision, StoreError>> {
        bound_all(self.command_timeout, self.begin_send_inner(req)).boxed()
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

    fn ping(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        let op = async move {
            let ping = &redis::cmd("PING");
            let (_, pong): (Conn, String) = self
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

/// Bounds a whole multi-step operation, so a caller waits about one command timeout at most
/// even when each step is slow (a step cut short leaves nothing a later call cannot handle).
async fn bound_all<T>(
    timeout: Duration,
    op: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, op)
        .await
        .unwrap_or(Err(StoreError::Timeout))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let lookup = store.lookup_key("email", "a@example.org", "00");
        assert!(lookup.starts_with("tp:lookup:{") && lookup.ends_with('}'));
        assert_eq!(lookup.len(), "tp:lookup:{}".len() + 64);
        assert_ne!(lookup, store.lookup_key("email", "a@example.org", "01"));
        assert_ne!(lookup, store.lookup_key("msisdn", "a@example.org", "00"));
    }

    #[tokio::test]
    async fn a_malformed_url_is_refused() {
        let err = RedisStore::new("not a url", settings(), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    }

    #[test]
    fn a_session_hash_missing_a_field_is_corrupt() {
        let fields = HashMap::from([("medium".to_owned(), "email".to_owned())]);
        assert!(matches!(
            session_from("s", &fields),
            Err(StoreError::Corrupt(_))
        ));
    }
}
