//! Deleting handled entries in batches (a group commit): every entry finished while a
//! deletion is under way goes in the next one, one XACK + XDEL for all of them, so a busy
//! sender spends one Redis round trip on many messages instead of one each.

use std::mem;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::Queue;

/// The entries waiting for their XACK + XDEL, and whether a handler is deleting some now.
pub(super) struct Finisher<Q> {
    queue: Arc<Q>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    ids: Vec<String>,
    flushing: bool,
}

impl<Q: Queue> Finisher<Q> {
    pub(super) fn new(queue: Arc<Q>) -> Self {
        Self {
            queue,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Only pushes and takes happen under the lock; a poisoned one is still whole.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `id` for deletion. The handler that finds no deletion under way deletes, and
    /// goes on until nothing is queued: every handler that queued an entry returns only once
    /// it is deleted or queued behind a handler still at work, so once all have returned
    /// (the sender waits for them before it stops) every entry was deleted or given up on.
    /// An entry whose deletion fails twice stays pending and is claimed and sent again after
    /// `claim_timeout`: at least once, as before.
    pub(super) async fn finish(&self, id: String) {
        {
            let mut state = self.state();
            state.ids.push(id);
            if state.flushing {
                return;
            }
            state.flushing = true;
        }
        // Should this handler be dropped halfway, the next one takes over.
        let mut guard = Flushing(Some(self));
        loop {
            let ids = {
                let mut state = self.state();
                if state.ids.is_empty() {
                    state.flushing = false;
                    guard.0 = None;
                    return;
                }
                mem::take(&mut state.ids)
            };
            self.delete(&ids).await;
        }
    }

    /// XACK + XDEL, tried twice.
    async fn delete(&self, ids: &[String]) {
        for _ in 0..2 {
            match self.queue.finish(ids).await {
                Ok(()) => return,
                Err(e) => tracing::debug!(error = %e, "outbox: could not delete entries"),
            }
        }
        // They will be claimed and sent again: at least once.
        tracing::warn!(
            entries = ids.len(),
            "outbox: handled entries could not be deleted; they will be handled again"
        );
    }
}

/// Clears `flushing` when the handler doing the deletions is dropped before it is done.
struct Flushing<'a, Q: Queue>(Option<&'a Finisher<Q>>);

impl<Q: Queue> Drop for Flushing<'_, Q> {
    fn drop(&mut self) {
        if let Some(finisher) = self.0 {
            finisher.state().flushing = false;
        }
    }
}
