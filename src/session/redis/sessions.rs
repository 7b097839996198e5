//! The session operations of the Redis backend: each a short sequence of the scripts in this
//! folder, every one of which touches a single key (see the key layout in [`super`]); and
//! `begin_send` with the message queued in the outbox ([`super::outbox`]).

use std::collections::HashMap;

use super::RedisStore;
use super::connection::Conn;
use crate::session::{
    Medium, OutboxMessage, Purpose, SendDecision, SendRequest, Session, StoreError, SubmitOutcome,
};
use crate::token::{self, SecretHash, TokenHash};

impl RedisStore {
    async fn hgetall(&self, sid: &str) -> Result<(Conn, HashMap<String, String>), StoreError> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.session_key(sid));
        let cmd = &cmd;
        self.connection
            .first_call(move |mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    pub(super) async fn begin_send_inner(
        &self,
        req: SendRequest,
    ) -> Result<SendDecision, StoreError> {
        let (mut conn, sid) = self.lookup_sid(&req).await?;
        self.commit_send(&mut conn, sid, &req).await
    }

    /// `begin_send` with the message queued, in three steps that work on Redis Cluster
    /// although the stream and the session live in different slots: (a) the sid; (b) the
    /// outbox entry, before (c) the session change that commits the token's hash. A sender
    /// sends an entry only once its hash is in the session, so a crash or a timeout between
    /// (b) and (c) leaves an orphan that is dropped, never a message for an uncommitted
    /// token. When (c) says "already sent", the entry goes at once (it would be dropped
    /// anyway).
    pub(super) async fn begin_send_queued_inner(
        &self,
        req: SendRequest,
        message: OutboxMessage,
    ) -> Result<SendDecision, StoreError> {
        let (mut conn, sid) = self.lookup_sid(&req).await?;
        let entry = self.enqueue(&mut conn, &sid, &req, &message).await?;
        let decision = self.commit_send(&mut conn, sid, &req).await;
        // Only when (c) certainly did not commit. Not on an error: (c) may have committed with
        // its answer lost, and then the entry must stay; an orphan is the sender's to drop.
        if matches!(decision, Ok(SendDecision::AlreadySent { .. })) {
            self.unqueue(&mut conn, &entry).await;
        }
        decision
    }

    /// Step 1 of `begin_send`: the sid for (medium, address, secret), made if there is none.
    async fn lookup_sid(&self, req: &SendRequest) -> Result<(Conn, String), StoreError> {
        let (medium, secret) = (req.medium.as_str(), req.client_secret.to_hex());
        let mut step1 = self
            .scripts
            .lookup
            .key(self.lookup_key(medium, &req.address, &secret));
        step1.arg(token::new_sid()).arg(self.lifetime_ms());
        let step1 = &step1;
        self.connection
            .first_call(move |mut c| async move { step1.invoke_async(&mut c).await })
            .await
    }

    /// Step 2 of `begin_send`: create or continue the session under the `send_attempt` rule.
    async fn commit_send(
        &self,
        conn: &mut Conn,
        sid: String,
        req: &SendRequest,
    ) -> Result<SendDecision, StoreError> {
        let mut step2 = self.scripts.begin.key(self.session_key(&sid));
        step2
            .arg(self.lifetime_ms())
            .arg(req.now_ms)
            .arg(req.medium.as_str())
            .arg(&req.address)
            .arg(req.client_secret.to_hex())
            .arg(req.purpose.as_str())
            .arg(if req.next_link.is_some() { "1" } else { "0" })
            .arg(req.next_link.as_deref().unwrap_or(""))
            .arg(req.send_attempt)
            .arg(req.token.to_hex())
            .arg(req.token_expires_ms);
        let reply: Vec<String> = self
            .connection
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
        if let [s, medium, address, secret] = reply.as_slice()
            && s == "deleted"
        {
            let mut unlook = self
                .scripts
                .unlook
                .key(self.lookup_key(medium, address, secret));
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
        validate.arg(&secret).arg(now_ms).arg(self.lifetime_ms());
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
        send_attempt: parse(field("attempt")?, "attempt")?,
        failed_submits: parse(field("failed")?, "failed")?,
        validated_at: f
            .get("validated_at")
            .map(|v| parse(v, "validated_at"))
            .transpose()?,
    })
}
