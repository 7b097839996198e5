//! The session operations of the Redis backend: each a short sequence of the scripts in this
//! folder, every one of which but `begin_queued.lua` touches a single key (see the key layout
//! in [`super`]); and `begin_send` with the message queued in the outbox ([`super::outbox`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use redis::{ErrorKind, ScriptInvocation, ServerErrorKind};
use secrecy::ExposeSecret;

use super::RedisStore;
use crate::config::RateLimit;
use crate::ratelimit::{LimitKey, RateDecision, burst_tolerance_ms, emission_interval_ms};
use crate::redis_link::Conn;
use crate::session::{
    LimitedSend, OutboxMessage, SendDecision, SendRequest, Session, StoreError, SubmitOutcome,
};
use crate::threepid::{Medium, Purpose};
use crate::token::{self, SecretHash, TokenHash};

impl RedisStore {
    async fn hgetall(&self, sid: &str) -> Result<(Conn, HashMap<String, String>), StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.session_key(sid));
        let cmd = &cmd;
        self.connection
            .first_call(move |mut c| async move { cmd.query_async(&mut c).await })
            .await
            .map_err(Into::into)
    }

    pub(super) async fn begin_send_inner(
        &self,
        req: SendRequest,
    ) -> Result<SendDecision, StoreError> {
        let (mut conn, sid) = self.lookup_sid(&req).await?;
        let decision = self.commit_send(&mut conn, sid, &req).await?;
        self.index_session(&decision, &req).await;
        Ok(decision)
    }

    /// Adds a sent-to session to its address's index, where no script did (the steps):
    /// best effort, since the index only serves the admin API.
    async fn index_session(&self, decision: &SendDecision, req: &SendRequest) {
        let SendDecision::Send { sid, .. } = decision else {
            return;
        };
        let indexed = async {
            let key = self.index_key_of(req.medium, &req.address).await?;
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("SADD")
                .arg(&key)
                .arg(sid)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(self.lifetime_ms().saturating_mul(2))
                .ignore();
            let pipe = &pipe;
            let (_, ()): (Conn, ()) = self
                .connection
                .first_call(move |mut c| async move { pipe.query_async(&mut c).await })
                .await?;
            Ok::<_, StoreError>(())
        };
        if let Err(e) = indexed.await {
            tracing::warn!(error = %e, "could not add a session to its address's index");
        }
    }

    /// `begin_send` with the message queued. Where every key is on one server, one script
    /// does it all atomically (`begin_queued.lua`). On Redis Cluster, where the stream and
    /// the session live in different slots, in three steps: (a) the sid; (b) the outbox
    /// entry, before (c) the session change that commits the token's hash. A sender sends
    /// an entry only once its hash is in the session, so a crash or a timeout between (b)
    /// and (c) leaves an orphan that is dropped, never a message for an uncommitted token.
    /// When (c) says "already sent", the entry goes at once (it would be dropped anyway).
    pub(super) async fn begin_send_queued_inner(
        &self,
        req: SendRequest,
        message: OutboxMessage,
    ) -> Result<SendDecision, StoreError> {
        if self.queues_at_once() {
            match self.begin_queued_at_once(&req, &message, None).await? {
                Some(LimitedSend::Decided(decision)) => return Ok(decision),
                Some(LimitedSend::Limited { .. }) => {
                    return Err(StoreError::Corrupt("limited without a limit".into()));
                }
                None => self.queue_in_steps_from_now_on(),
            }
        }
        let (mut conn, sid) = self.lookup_sid(&req).await?;
        let entry = self.enqueue(&mut conn, &sid, &req, &message).await?;
        let decision = self.commit_send(&mut conn, sid, &req).await;
        // Only when (c) certainly did not commit. Not on an error: (c) may have committed with
        // its answer lost, and then the entry must stay; an orphan is the sender's to drop.
        if matches!(decision, Ok(SendDecision::AlreadySent { .. })) {
            self.unqueue(&mut conn, &entry).await;
        }
        if let Ok(sent) = &decision {
            self.index_session(sent, &req).await;
        }
        decision
    }

    /// The rate limit on `key`, then `begin_send_queued`: one script where every key is on
    /// one server, the limit's script and the steps above otherwise.
    pub(super) async fn begin_send_queued_limited_inner(
        &self,
        key: &LimitKey,
        limit: RateLimit,
        limit_now_ms: u64,
        req: SendRequest,
        message: OutboxMessage,
    ) -> Result<LimitedSend, StoreError> {
        if self.queues_at_once() {
            let limit = Some((key, limit, limit_now_ms));
            match self.begin_queued_at_once(&req, &message, limit).await? {
                Some(done) => return Ok(done),
                None => self.queue_in_steps_from_now_on(),
            }
        }
        match self.rate_limit_inner(key, limit, limit_now_ms).await? {
            RateDecision::Limited { retry_after_ms } => Ok(LimitedSend::Limited { retry_after_ms }),
            RateDecision::Allowed => self
                .begin_send_queued_inner(req, message)
                .await
                .map(LimitedSend::Decided),
        }
    }

    fn queues_at_once(&self) -> bool {
        self.connection.one_node() && !self.queue_in_steps.load(Ordering::Relaxed)
    }

    fn queue_in_steps_from_now_on(&self) {
        self.queue_in_steps.store(true, Ordering::Relaxed);
        tracing::warn!(
            "Redis refused a script on keys in different slots (a cluster behind one \
             address?): queuing in steps from now on"
        );
    }

    /// `begin_queued.lua`, with the rate limit first when given; `None` when the server
    /// refused it for its keys' slots (nothing ran). Safe to repeat after a dropped
    /// connection: a repeat of a call that did run finds the same `send_attempt` and queues
    /// nothing (it may count the limit twice, as a repeated `rate_limit` may).
    async fn begin_queued_at_once(
        &self,
        req: &SendRequest,
        message: &OutboxMessage,
        limit: Option<(&LimitKey, RateLimit, u64)>,
    ) -> Result<Option<LimitedSend>, StoreError> {
        let (medium, secret) = (req.medium.as_str(), req.client_secret.to_hex());
        let index = self.index_key_of(req.medium, &req.address).await?;
        let mut script = self.scripts.begin_queued.prepare_invoke();
        script
            .key(self.lookup_key(medium, &req.address, &secret, req.purpose.as_str()))
            .key(self.outbox_key())
            .key(index);
        self.rule_args(&mut script, req, &secret);
        script
            .arg(token::new_sid())
            .arg(format!("{}session:{{", self.settings.key_prefix))
            .arg(message.token.expose_secret())
            .arg(message.client_secret.expose_secret());
        if let Some((key, limit, now_ms)) = limit {
            script
                .key(self.rate_key(key))
                .arg(now_ms)
                .arg(emission_interval_ms(limit))
                .arg(burst_tolerance_ms(limit));
        }
        let script = &script;
        let (_, reply): (Conn, Option<Vec<String>>) = self
            .connection
            .first_call(move |mut c| async move {
                match script.invoke_async(&mut c).await {
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::CrossSlot) => Ok(None),
                    other => other.map(Some),
                }
            })
            .await?;
        let Some(reply) = reply else {
            return Ok(None);
        };
        match reply.as_slice() {
            [_, s, retry] if s == "limited" => match parse::<u64>(retry, "retry") {
                Ok(retry_after_ms) if retry_after_ms > 0 => {
                    Ok(Some(LimitedSend::Limited { retry_after_ms }))
                }
                _ => Err(StoreError::Corrupt(format!(
                    "rate limit {} answered {reply:?}",
                    limit.map_or("?", |(key, ..)| key.name())
                ))),
            },
            [sid, decision @ ..] => decision_from(sid.clone(), decision)
                .map(LimitedSend::Decided)
                .map(Some),
            [] => Err(StoreError::Corrupt("begin_queued answered nothing".into())),
        }
    }

    /// Step 1 of `begin_send`: the sid for (medium, address, secret), made if there is none.
    async fn lookup_sid(&self, req: &SendRequest) -> Result<(Conn, String), StoreError> {
        let (medium, secret) = (req.medium.as_str(), req.client_secret.to_hex());
        let mut step1 = self.scripts.lookup.key(self.lookup_key(
            medium,
            &req.address,
            &secret,
            req.purpose.as_str(),
        ));
        step1.arg(token::new_sid()).arg(self.lifetime_ms());
        let step1 = &step1;
        self.connection
            .first_call(move |mut c| async move { step1.invoke_async(&mut c).await })
            .await
            .map_err(Into::into)
    }

    /// The arguments of the `send_attempt` rule (`send_rule.lua`), in its order.
    fn rule_args(&self, script: &mut ScriptInvocation<'_>, req: &SendRequest, secret_hex: &str) {
        script
            .arg(self.lifetime_ms())
            .arg(req.now_ms)
            .arg(req.medium.as_str())
            .arg(&req.address)
            .arg(secret_hex)
            .arg(req.purpose.as_str())
            .arg(if req.next_link.is_some() { "1" } else { "0" })
            .arg(req.next_link.as_deref().unwrap_or(""))
            .arg(req.send_attempt)
            .arg(req.token.to_hex())
            .arg(req.token_expires_ms)
            .arg(&req.language);
    }

    /// Step 2 of `begin_send`: create or continue the session under the `send_attempt` rule.
    async fn commit_send(
        &self,
        conn: &mut Conn,
        sid: String,
        req: &SendRequest,
    ) -> Result<SendDecision, StoreError> {
        let mut step2 = self.scripts.begin.key(self.session_key(&sid));
        self.rule_args(&mut step2, req, &req.client_secret.to_hex());
        let reply: Vec<String> = self
            .connection
            .call(conn.generation, step2.invoke_async(&mut conn.manager))
            .await?;
        decision_from(sid, &reply)
    }

    pub(super) async fn undo_send_inner(
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
        let mut undo = self.scripts.undo.key(self.session_key(sid));
        undo.arg(token.to_hex())
            .arg(if *created { "1" } else { "0" })
            .arg(previous_attempt.map(|a| a.to_string()).unwrap_or_default());
        let undo = &undo;
        // Repeating UNDO is harmless: the token is gone, the attempt restored only once.
        let (mut conn, reply): (Conn, Vec<String>) = self
            .connection
            .first_call(move |mut c| async move { undo.invoke_async(&mut c).await })
            .await?;
        if let [s, medium, address, secret, purpose] = reply.as_slice()
            && s == "deleted"
        {
            let mut unlook = self
                .scripts
                .unlook
                .key(self.lookup_key(medium, address, secret, purpose));
            unlook.arg(sid);
            let _: i64 = self
                .connection
                .call(conn.generation, unlook.invoke_async(&mut conn.manager))
                .await?;
        }
        Ok(())
    }

    pub(super) async fn get_inner(&self, sid: &str) -> Result<Option<Session>, StoreError> {
        let (_, fields) = self.hgetall(sid).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        session_from(sid, &fields).map(Some)
    }

    pub(super) async fn submit_inner(
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
        let mut reserve = self.scripts.reserve.key(self.session_key(sid));
        reserve.arg(&secret).arg(max);
        let reply: Vec<String> = self
            .connection
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
        let mut validate = self.scripts.validate.key(self.session_key(sid));
        // Usable for one lifetime from now, kept for two (see `Session::usable_until`).
        validate
            .arg(&secret)
            .arg(now_ms)
            .arg(self.lifetime_ms().saturating_mul(2));
        let pairs: Vec<String> = self
            .connection
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

/// What `send_rule.lua` decided, as a [`SendDecision`] for `sid`.
fn decision_from(sid: String, reply: &[String]) -> Result<SendDecision, StoreError> {
    match reply {
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

fn parse<T: std::str::FromStr>(value: &str, what: &str) -> Result<T, StoreError> {
    value
        .parse()
        .map_err(|_| StoreError::Corrupt(format!("bad {what} in session")))
}

pub(super) fn session_from(sid: &str, f: &HashMap<String, String>) -> Result<Session, StoreError> {
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
        language: f.get("lang").filter(|l| !l.is_empty()).cloned(),
        send_attempt: parse(field("attempt")?, "attempt")?,
        failed_submits: parse(field("failed")?, "failed")?,
        validated_at: f
            .get("validated_at")
            .map(|v| parse(v, "validated_at"))
            .transpose()?,
    })
}
