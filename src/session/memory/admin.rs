//! The admin API's reads on the in-process backend. Finding the sessions of one address is a
//! pass over every live session: this store holds one process's sessions of one lifetime,
//! and the admin API is not a hot path.

use super::{Entry, MemoryStore};
use crate::session::SessionDetails;
use crate::threepid::Medium;

impl MemoryStore {
    pub(super) fn details_now(&self, sid: &str, now: u64) -> Option<SessionDetails> {
        let mut inner = self.lock();
        if !inner.live(sid, now) {
            return None;
        }
        inner.sessions.get(sid).map(|e| details(e, now))
    }

    pub(super) fn sessions_of_now(
        &self,
        medium: Medium,
        address: &str,
        now: u64,
    ) -> Vec<SessionDetails> {
        let inner = self.lock();
        let mut found: Vec<SessionDetails> = inner
            .sessions
            .values()
            .filter(|e| e.expires_at > now)
            .filter(|e| e.session.medium == medium && e.session.address == address)
            .map(|e| details(e, now))
            .collect();
        found.sort_by_key(|d| d.created_ms);
        found
    }
}

fn details(entry: &Entry, now: u64) -> SessionDetails {
    SessionDetails {
        session: entry.session.clone(),
        created_ms: Some(entry.created_at),
        expires_ms: Some(entry.expires_at),
        live_tokens: entry
            .tokens
            .iter()
            .filter(|&&(_, exp)| exp > now)
            .count()
            .try_into()
            .unwrap_or(u32::MAX),
    }
}
