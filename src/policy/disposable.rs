//! The disposable-domains list (`policy.disposable_domains_file`): one domain per line, `#`
//! starts a comment. A domain is listed when it or one of its parents is in the file. The
//! file is read at start (a missing or bad one is a config error) and again on SIGHUP and
//! whenever it changes; a file that cannot be read or holds something that is not a domain
//! keeps the old list, and the log says why.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use super::domain_and_parents;

/// The list, swapped whole on reload.
pub struct DisposableList {
    path: PathBuf,
    current: RwLock<Loaded>,
}

#[derive(Clone)]
struct Loaded {
    domains: Arc<HashSet<String>>,
    /// What the file looked like when read: a change of either means "read it again".
    stamp: Option<(SystemTime, u64)>,
}

/// What a reload did.
#[derive(Debug, PartialEq, Eq)]
pub enum Reloaded {
    /// The file had not changed (only when not forced).
    Unchanged,
    /// The new list, of this many domains, is in use.
    Replaced(usize),
    /// The file could not be used; the old list stays.
    Kept(String),
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Parses the file's text: every non-comment line a domain.
pub fn parse(text: &str) -> Result<HashSet<String>, String> {
    crate::config::parse_domain_list(text)
}

impl DisposableList {
    /// Reads the file; an error names it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let domains = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self {
            path: path.to_owned(),
            current: RwLock::new(Loaded {
                domains: Arc::new(domains),
                stamp: stamp(path),
            }),
        })
    }

    fn loaded(&self) -> Loaded {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many domains are listed.
    pub fn len(&self) -> usize {
        self.loaded().domains.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `domain` (normalized) or one of its parents is listed.
    pub fn contains(&self, domain: &str) -> bool {
        let domains = self.loaded().domains;
        domain_and_parents(domain).any(|d| domains.contains(d))
    }

    /// Reads the file again if it changed (or always, when `force`): a good file replaces
    /// the list, a bad one leaves it as it was.
    pub fn reload(&self, force: bool) -> Reloaded {
        let now = stamp(&self.path);
        if !force && now.is_some() && now == self.loaded().stamp {
            return Reloaded::Unchanged;
        }
        let read = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))
            .and_then(|text| parse(&text).map_err(|e| format!("{}: {e}", self.path.display())));
        let mut current = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match read {
            Ok(domains) => {
                let n = domains.len();
                *current = Loaded {
                    domains: Arc::new(domains),
                    stamp: now,
                };
                Reloaded::Replaced(n)
            }
            Err(why) => {
                // Not again for the same bad file: until it changes.
                current.stamp = now;
                Reloaded::Kept(why)
            }
        }
    }
}

/// How often the file is looked at for a change.
const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// SIGHUP, listened to from now on (so that one arriving before the watch runs is not the
/// default action, which ends the process).
pub fn hangups() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

/// Reloads `list` when its file changes (looked at every few seconds) and on each of
/// `hangups`, until `stop`.
pub async fn watch(
    list: &DisposableList,
    mut hangups: Option<tokio::signal::unix::Signal>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let hangup_signal = async {
            match hangups.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let forced = tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(CHECK_EVERY) => false,
            () = hangup_signal => true,
        };
        match list.reload(forced) {
            Reloaded::Unchanged => {}
            Reloaded::Replaced(n) => tracing::info!(
                file = %list.path().display(),
                domains = n,
                "disposable domains list read again"
            ),
            Reloaded::Kept(why) => tracing::warn!(
                error = %why,
                "disposable domains list not read again: the previous one stays in use"
            ),
        }
    }
}
