//! What Redis answers the stream commands with, parsed: entries (XREADGROUP, XCLAIM,
//! XRANGE), consumers (XINFO CONSUMERS), in RESP2 or RESP3 shape. A malformed entry becomes a
//! [`Delivery::Malformed`], not an error, so one bad entry cannot stop a sender.

use std::collections::HashMap;

use redis::Value;
use secrecy::SecretString;

use crate::outbox::{Delivery, Queued, QueuedNotice};
use crate::session::StoreError;
use crate::threepid::{Medium, Notice, Purpose};
use crate::token::TokenHash;

/// A stream entry as read: its ID and fields (none when it was deleted meanwhile).
pub(super) struct RawEntry {
    pub(super) id: String,
    fields: Option<HashMap<String, String>>,
}

impl RawEntry {
    /// The message, or why it cannot be sent. `attempt` counts this delivery.
    pub(super) fn delivery(self, attempt: u64) -> Delivery {
        let enqueued_ms = id_time(&self.id);
        let Some(mut f) = self.fields else {
            return Delivery::Gone { id: self.id };
        };
        let mut take = |name: &str| f.remove(name).ok_or(name.to_owned());
        if let Ok(kind) = take("notice") {
            let notice = (|| -> Result<QueuedNotice, String> {
                Ok(QueuedNotice {
                    notice: Notice::parse(&kind).ok_or("notice")?,
                    address: take("address")?,
                    language: take("lang").ok().filter(|l| !l.is_empty()),
                    time: take("time")?,
                    client_ip: take("client_ip")?,
                    id: self.id.clone(),
                    enqueued_ms,
                    attempt,
                })
            })();
            return match notice {
                Ok(notice) => Delivery::Notice(notice),
                Err(field) => Delivery::Malformed {
                    id: self.id,
                    enqueued_ms,
                    reason: format!("missing or bad field {field:?}"),
                },
            };
        }
        let parsed = (|| -> Result<Queued, String> {
            let medium = take("medium")?;
            let purpose = take("purpose")?;
            let hash = take("hash")?;
            Ok(Queued {
                sid: take("sid")?,
                medium: Medium::parse(&medium).ok_or("medium")?,
                address: take("address")?,
                purpose: Purpose::parse(&purpose).ok_or("purpose")?,
                token: SecretString::from(take("token")?),
                token_hash: TokenHash::from_hex(&hash).ok_or("hash")?,
                client_secret: SecretString::from(take("secret").unwrap_or_default()),
                // Entries queued before languages were kept have none: the default.
                language: take("lang").ok().filter(|l| !l.is_empty()),
                id: self.id.clone(),
                enqueued_ms,
                attempt,
            })
        })();
        match parsed {
            Ok(message) => Delivery::Message(message),
            Err(field) => Delivery::Malformed {
                id: self.id,
                enqueued_ms,
                reason: format!("missing or bad field {field:?}"),
            },
        }
    }
}

/// The time part of a stream entry ID (`<unix ms>-<seq>`).
pub(super) fn id_time(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("outbox: {what}"))
}

pub(super) fn array(value: &Value) -> Result<&[Value], StoreError> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(&[]),
        _ => Err(corrupt("expected an array")),
    }
}

pub(super) fn text(value: &Value) -> Result<String, StoreError> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes.clone()).map_err(|_| corrupt("not UTF-8"))
        }
        Value::SimpleString(s) => Ok(s.clone()),
        Value::VerbatimString { text, .. } => Ok(text.clone()),
        _ => Err(corrupt("expected a string")),
    }
}

pub(super) fn int(value: &Value) -> Result<u64, StoreError> {
    match value {
        Value::Int(n) => u64::try_from(*n).map_err(|_| corrupt("a negative count")),
        other => text(other)?
            .parse()
            .map_err(|_| corrupt("expected a number")),
    }
}

/// Entries as XRANGE and XCLAIM give them: `[[id, [field, value, …]], …]`; a deleted entry
/// comes as `[id, nil]` (or as nil, which is skipped).
pub(super) fn entries(value: &Value) -> Result<Vec<RawEntry>, StoreError> {
    let mut out = Vec::new();
    for item in array(value)? {
        if matches!(item, Value::Nil) {
            continue;
        }
        let [id, fields] = array(item)? else {
            return Err(corrupt("an entry is not [id, fields]"));
        };
        let fields = match fields {
            Value::Nil => None,
            Value::Map(pairs) => Some(
                pairs
                    .iter()
                    .map(|(k, v)| Ok((text(k)?, text(v)?)))
                    .collect::<Result<_, StoreError>>()?,
            ),
            other => Some(
                array(other)?
                    .chunks_exact(2)
                    .map(|kv| Ok((text(&kv[0])?, text(&kv[1])?)))
                    .collect::<Result<_, StoreError>>()?,
            ),
        };
        out.push(RawEntry {
            id: text(id)?,
            fields,
        });
    }
    Ok(out)
}

/// `(name, pending, idle ms)` of each consumer in an XINFO CONSUMERS reply: one list (RESP2)
/// or map (RESP3) of field names and values per consumer.
pub(super) fn consumers(value: &Value) -> Result<Vec<(String, u64, u64)>, StoreError> {
    let mut out = Vec::new();
    for consumer in array(value)? {
        let pairs: Vec<(&Value, &Value)> = match consumer {
            Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
            other => array(other)?
                .chunks_exact(2)
                .map(|kv| (&kv[0], &kv[1]))
                .collect(),
        };
        let (mut name, mut pending, mut idle) = (None, None, None);
        for (key, value) in pairs {
            match text(key)?.as_str() {
                "name" => name = Some(text(value)?),
                "pending" => pending = Some(int(value)?),
                "idle" => idle = Some(int(value)?),
                _ => {}
            }
        }
        match (name, pending, idle) {
            (Some(name), Some(pending), Some(idle)) => out.push((name, pending, idle)),
            _ => return Err(corrupt("a consumer without name, pending or idle")),
        }
    }
    Ok(out)
}

/// The entries of the one stream an XREADGROUP names: `[[key, entries]]` (RESP2) or
/// `{key: entries}` (RESP3); nil when the wait ran out.
pub(super) fn stream_entries(value: &Value) -> Result<Vec<RawEntry>, StoreError> {
    match value {
        Value::Nil => Ok(Vec::new()),
        Value::Map(streams) => match streams.first() {
            Some((_, list)) => entries(list),
            None => Ok(Vec::new()),
        },
        other => match array(other)?.first() {
            Some(stream) => match array(stream)? {
                [_key, list] => entries(list),
                _ => Err(corrupt("a stream is not [key, entries]")),
            },
            None => Ok(Vec::new()),
        },
    }
}

#[cfg(test)]
mod tests {
    use secrecy::ExposeSecret;

    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[(&str, &str)]) -> Value {
        let fields = fields
            .iter()
            .flat_map(|(k, v)| [bulk(k), bulk(v)])
            .collect();
        Value::Array(vec![bulk(id), Value::Array(fields)])
    }

    const HASH: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn full(id: &str) -> Value {
        entry(
            id,
            &[
                ("sid", "S"),
                ("medium", "email"),
                ("address", "a@example.org"),
                ("purpose", "registration"),
                ("token", "TOK"),
                ("hash", HASH),
                ("secret", "cs"),
            ],
        )
    }

    #[test]
    fn an_xreadgroup_reply_gives_its_messages_with_enqueue_time_and_attempt() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("tp:outbox"),
            Value::Array(vec![full("1700000000123-0")]),
        ])]);
        let got: Vec<Delivery> = stream_entries(&reply)
            .unwrap()
            .into_iter()
            .map(|e| e.delivery(1))
            .collect();
        let [Delivery::Message(m)] = got.as_slice() else {
            panic!("one message expected");
        };
        assert_eq!(m.id, "1700000000123-0");
        assert_eq!(m.enqueued_ms, 1_700_000_000_123);
        assert_eq!(
            (m.sid.as_str(), m.medium, m.purpose),
            ("S", Medium::Email, Purpose::Registration)
        );
        assert_eq!(m.token.expose_secret(), "TOK");
        assert_eq!(m.client_secret.expose_secret(), "cs");
        assert_eq!(m.token_hash.to_hex(), HASH);
        assert_eq!(m.attempt, 1);
        assert!(
            stream_entries(&Value::Nil).unwrap().is_empty(),
            "a wait that ran out"
        );
    }

    #[test]
    fn a_deleted_or_incomplete_entry_is_malformed_not_an_error() {
        let reply = Value::Array(vec![
            Value::Array(vec![bulk("5-0"), Value::Nil]),
            entry("6-0", &[("sid", "S"), ("medium", "fax")]),
        ]);
        let got: Vec<Delivery> = entries(&reply)
            .unwrap()
            .into_iter()
            .map(|e| e.delivery(3))
            .collect();
        assert!(
            matches!(&got[..], [Delivery::Gone { id: a }, Delivery::Malformed { id: b, .. }] if a == "5-0" && b == "6-0"),
            "{got:?}"
        );
    }

    #[test]
    fn xinfo_consumers_gives_name_pending_and_idle() {
        let consumer = |name: &str, pending: i64, idle: i64| {
            Value::Array(vec![
                bulk("name"),
                bulk(name),
                bulk("pending"),
                Value::Int(pending),
                bulk("idle"),
                Value::Int(idle),
                bulk("inactive"),
                Value::Int(-1),
            ])
        };
        let reply = Value::Array(vec![consumer("a", 0, 5), consumer("b", 2, 7_200_000)]);
        assert_eq!(
            consumers(&reply).unwrap(),
            [("a".to_owned(), 0, 5), ("b".to_owned(), 2, 7_200_000)]
        );
    }

    #[test]
    fn an_entry_id_carries_its_enqueue_time() {
        assert_eq!(id_time("1700000000000-7"), 1_700_000_000_000);
        assert_eq!(id_time("garbage"), 0);
    }
}
