//! The admin API's operations on the Redis backend (see the key layout in [`super`]): a
//! session's details, the sessions of one address through its index, revoking, lifting
//! limits, and the outbox's dead letters (their layout is the outbox's, `outbox::redis`).

use std::collections::HashMap;

use redis::Value;
use secrecy::ExposeSecret;

use super::RedisStore;
use super::sessions::session_from;
use crate::ratelimit::LimitKey;
use crate::redis_link::Conn;
use crate::session::{
    DeadLetter, DeadLetterView, OutboxReport, RetryOutcome, SessionDetails, StoreError,
};
use crate::threepid::Medium;
use crate::token::{self, TokenHash};

/// A stream entry as XRANGE answers it: its ID, then its fields and values in turn.
type StreamEntry = (String, Vec<String>);

/// At most this many sessions of one address are read (an address with more is being
/// flooded, and its newest sessions tell the story as well).
const MAX_SESSIONS_OF: usize = 100;

impl RedisStore {
    pub(super) async fn details_inner(
        &self,
        sid: &str,
        now_ms: u64,
    ) -> Result<Option<SessionDetails>, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL")
            .arg(self.session_key(sid))
            .cmd("PTTL")
            .arg(self.session_key(sid));
        let pipe = &pipe;
        let (_, (fields, ttl)): (Conn, (HashMap<String, String>, i64)) = self
            .connection
            .first_call(move |mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        if fields.is_empty() {
            return Ok(None);
        }
        let session = session_from(sid, &fields)?;
        let live_tokens = fields
            .iter()
            .filter(|(name, expiry)| {
                name.starts_with("t:") && expiry.parse::<u64>().is_ok_and(|e| e > now_ms)
            })
            .count();
        Ok(Some(SessionDetails {
            session,
            created_ms: fields.get("created").and_then(|c| c.parse().ok()),
            expires_ms: u64::try_from(ttl)
                .ok()
                .map(|ttl| now_ms.saturating_add(ttl)),
            live_tokens: u32::try_from(live_tokens).unwrap_or(u32::MAX),
        }))
    }

    pub(super) async fn sessions_of_inner(
        &self,
        medium: Medium,
        address: &str,
        now_ms: u64,
    ) -> Result<Vec<SessionDetails>, StoreError> {
        let index = self.index_key_of(medium, address).await?;
        let mut members = redis::cmd("SMEMBERS");
        members.arg(&index);
        let members = &members;
        let (_, sids): (Conn, Vec<String>) = self
            .connection
            .first_call(move |mut c| async move { members.query_async(&mut c).await })
            .await?;
        let mut found = Vec::new();
        let mut gone = Vec::new();
        for sid in sids {
            match self.details_inner(&sid, now_ms).await? {
                Some(d) if d.session.medium == medium && d.session.address == address => {
                    found.push(d);
                }
                Some(_) => {}
                None => gone.push(sid),
            }
        }
        if !gone.is_empty() {
            let mut srem = redis::cmd("SREM");
            srem.arg(&index).arg(&gone);
            let srem = &srem;
            let _: (Conn, i64) = self
                .connection
                .first_call(move |mut c| async move { srem.query_async(&mut c).await })
                .await?;
        }
        found.sort_by_key(|d| d.created_ms);
        let skip = found.len().saturating_sub(MAX_SESSIONS_OF);
        found.drain(..skip);
        Ok(found)
    }

    pub(super) async fn revoke_inner(&self, sid: &str) -> Result<bool, StoreError> {
        let mut get = redis::cmd("HGETALL");
        get.arg(self.session_key(sid));
        let get = &get;
        let (mut conn, fields): (Conn, HashMap<String, String>) = self
            .connection
            .first_call(move |mut c| async move { get.query_async(&mut c).await })
            .await?;
        if fields.is_empty() {
            return Ok(false);
        }
        let session = session_from(sid, &fields)?;
        // The session first: from this moment it answers as an expired one. Its lookup entry
        // and index entry would be healed or dropped anyway; they go too.
        let mut del = redis::cmd("DEL");
        del.arg(self.session_key(sid)).arg(self.resend_key(sid));
        let _: i64 = self
            .connection
            .call(conn.generation, del.query_async(&mut conn.manager))
            .await?;
        let mut unlook = self.scripts.unlook.key(self.lookup_key(
            session.medium.as_str(),
            &session.address,
            &session.client_secret.to_hex(),
            session.purpose.as_str(),
        ));
        unlook.arg(sid);
        let _: i64 = self
            .connection
            .call(conn.generation, unlook.invoke_async(&mut conn.manager))
            .await?;
        let index = self.index_key_of(session.medium, &session.address).await?;
        let mut srem = redis::cmd("SREM");
        srem.arg(index).arg(sid);
        let _: i64 = self
            .connection
            .call(conn.generation, srem.query_async(&mut conn.manager))
            .await?;
        Ok(true)
    }

    /// One DEL per key: each lives in a slot of its own.
    pub(super) async fn clear_limits_inner(&self, keys: &[LimitKey]) -> Result<u64, StoreError> {
        let mut cleared = 0;
        for key in keys {
            let mut del = redis::cmd("DEL");
            del.arg(self.rate_key(key));
            let del = &del;
            let (_, n): (Conn, u64) = self
                .connection
                .first_call(move |mut c| async move { del.query_async(&mut c).await })
                .await?;
            cleared += n;
        }
        Ok(cleared)
    }

    /// The outbox's length and oldest entry, and the dead letters; the two streams live in
    /// different slots, so two round trips.
    pub(super) async fn outbox_report_inner(&self, max: usize) -> Result<OutboxReport, StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN")
            .arg(self.outbox_key())
            .cmd("XRANGE")
            .arg(self.outbox_key())
            .arg("-")
            .arg("+")
            .arg("COUNT")
            .arg(1);
        let pipe = &pipe;
        let (_, (pending, oldest)): (Conn, (u64, Vec<(String, Value)>)) = self
            .connection
            .first_call(move |mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        let mut pipe = redis::pipe();
        pipe.cmd("XLEN")
            .arg(self.dead_letter_key())
            .cmd("XREVRANGE")
            .arg(self.dead_letter_key())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            // Not 0, which some Redis versions read as "no limit".
            .arg(max.max(1));
        let pipe = &pipe;
        let (_, (dead, mut newest)): (Conn, (u64, Vec<StreamEntry>)) = self
            .connection
            .first_call(move |mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        newest.truncate(max);
        Ok(OutboxReport {
            durable: true,
            pending,
            oldest_ms: oldest.first().and_then(|(id, _)| id_ms(id)),
            dead,
            dead_letters: newest
                .iter()
                .map(|(id, fields)| dead_letter_view(id, fields))
                .collect(),
        })
    }

    async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetterView>, StoreError> {
        let mut range = redis::cmd("XRANGE");
        range.arg(self.dead_letter_key()).arg(id).arg(id);
        let range = &range;
        let (_, found): (Conn, Vec<StreamEntry>) = self
            .connection
            .first_call(move |mut c| async move { range.query_async(&mut c).await })
            .await?;
        Ok(found
            .iter()
            .find(|(found, _)| found == id)
            .map(|(id, fields)| dead_letter_view(id, fields)))
    }

    /// Reads the dead letter, puts a new token in its session (`resend.lua`), queues the
    /// message, then deletes the dead letter. The token is committed before its entry exists,
    /// so a sender can never find an entry whose token is not in the session; if queuing
    /// fails, the session holds a token nobody knows, and the dead letter stays to retry.
    pub(super) async fn retry_dead_letter_inner(
        &self,
        id: &str,
        token_lifetime_ms: u64,
        now_ms: u64,
    ) -> Result<RetryOutcome, StoreError> {
        if !is_stream_id(id) {
            return Ok(RetryOutcome::NotFound);
        }
        let Some(DeadLetterView { letter: dead, .. }) = self.dead_letter(id).await? else {
            return Ok(RetryOutcome::NotFound);
        };
        let Some(medium) = Medium::parse(&dead.medium).filter(|_| !dead.sid.is_empty()) else {
            return Ok(RetryOutcome::NotRetriable);
        };
        let new_token = match medium {
            Medium::Email => token::new_email_token(),
            Medium::Msisdn => token::new_sms_token(),
        };
        let hash = TokenHash::of_secret(&new_token);
        let mut resend = self.scripts.resend.prepare_invoke();
        resend
            .key(self.session_key(&dead.sid))
            .key(self.resend_key(&dead.sid))
            .arg(hash.to_hex())
            .arg(now_ms.saturating_add(token_lifetime_ms))
            .arg(self.lifetime_ms());
        let resend = &resend;
        let (mut conn, reply): (Conn, Vec<String>) = self
            .connection
            .first_call(move |mut c| async move { resend.invoke_async(&mut c).await })
            .await?;
        let [ok, medium, address, purpose, language, secret] = reply.as_slice() else {
            return Ok(match reply.first().map(String::as_str) {
                Some("validated") => RetryOutcome::Validated,
                Some("gone") => RetryOutcome::SessionGone,
                _ => return Err(StoreError::Corrupt(format!("resend answered {reply:?}"))),
            });
        };
        if ok != "ok" {
            return Err(StoreError::Corrupt("resend answered nonsense".into()));
        }
        let mut xadd = redis::cmd("XADD");
        xadd.arg(self.outbox_key())
            .arg("*")
            .arg("sid")
            .arg(&dead.sid)
            .arg("medium")
            .arg(medium)
            .arg("address")
            .arg(address)
            .arg("purpose")
            .arg(purpose)
            .arg("token")
            .arg(new_token.expose_secret())
            .arg("hash")
            .arg(hash.to_hex())
            .arg("secret")
            .arg(secret)
            .arg("lang")
            .arg(language);
        let entry: String = self
            .connection
            .call(conn.generation, xadd.query_async(&mut conn.manager))
            .await?;
        let mut pipe = redis::pipe();
        pipe.cmd("XDEL")
            .arg(self.dead_letter_key())
            .arg(id)
            .ignore()
            .cmd("DEL")
            .arg(self.resend_key(&dead.sid))
            .ignore();
        let () = self
            .connection
            .call(conn.generation, pipe.query_async(&mut conn.manager))
            .await?;
        Ok(RetryOutcome::Queued {
            entry,
            medium: Medium::parse(medium).unwrap_or(Medium::Email),
        })
    }

    pub(super) async fn drop_dead_letter_inner(&self, id: &str) -> Result<bool, StoreError> {
        if !is_stream_id(id) {
            return Ok(false);
        }
        let Some(DeadLetterView { letter: dead, .. }) = self.dead_letter(id).await? else {
            return Ok(false);
        };
        let mut pipe = redis::pipe();
        pipe.cmd("XDEL").arg(self.dead_letter_key()).arg(id);
        if !dead.sid.is_empty() {
            pipe.cmd("DEL").arg(self.resend_key(&dead.sid)).ignore();
        }
        let pipe = &pipe;
        let (_, (deleted,)): (Conn, (u64,)) = self
            .connection
            .first_call(move |mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        Ok(deleted > 0)
    }
}

/// `<ms>-<seq>`, as Redis makes stream IDs: anything else is no dead letter's ID (and would
/// be an error, or a range, to XRANGE).
fn is_stream_id(id: &str) -> bool {
    id.split_once('-').is_some_and(|(ms, seq)| {
        [ms, seq]
            .iter()
            .all(|n| !n.is_empty() && n.len() <= 20 && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The unix ms of a stream entry ID.
fn id_ms(id: &str) -> Option<u64> {
    id.split_once('-').and_then(|(ms, _)| ms.parse().ok())
}

/// A dead-letter stream entry (fields as `outbox::redis` writes them).
fn dead_letter_view(id: &str, fields: &[String]) -> DeadLetterView {
    let get = |name: &str| {
        fields
            .chunks_exact(2)
            .find(|kv| kv[0] == name)
            .map(|kv| kv[1].clone())
            .unwrap_or_default()
    };
    DeadLetterView {
        id: id.to_owned(),
        dead_ms: id_ms(id).unwrap_or(0),
        letter: DeadLetter {
            id: get("id"),
            sid: get("sid"),
            medium: get("medium"),
            masked_address: get("address"),
            purpose: get("purpose"),
            error: get("error"),
            attempts: get("attempts").parse().unwrap_or(0),
            enqueued_ms: get("enqueued_ms").parse().unwrap_or(0),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stream_ids_are_taken_as_dead_letter_ids() {
        assert!(is_stream_id("1733500000000-0"));
        assert!(is_stream_id("0-1"));
        for bad in [
            "",
            "-",
            "1-",
            "-1",
            "+",
            "1733500000000",
            "a-1",
            "1-1-1",
            "1 -1",
        ] {
            assert!(!is_stream_id(bad), "{bad:?}");
        }
    }
}
