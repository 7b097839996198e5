//! Today's clients on an r0-only homeserver (DESIGN §6): current client libraries call only
//! `/_matrix/client/v3/…` and `/_matrix/media/v3/…`, which a legacy homeserver serves as
//! `r0`. [`map_path`] is the one rewrite; [`PathCompat`] decides whether it is on, from
//! `upstream.path_compat` and, in `"auto"`, from the upstream's own `/versions`.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::PathCompatMode;

const REWRITES: [(&str, &str); 2] = [
    ("/_matrix/client/v3/", "/_matrix/client/r0/"),
    ("/_matrix/media/v3/", "/_matrix/media/r0/"),
];

/// `/_matrix/{client,media}/v3/X` → `/_matrix/{client,media}/r0/X`, everything after the
/// prefix (later path segments, percent-encoding, the query) kept byte for byte; `None`
/// for every other path.
pub fn map_path(path_and_query: &str) -> Option<String> {
    REWRITES.iter().find_map(|(from, to)| {
        path_and_query
            .strip_prefix(from)
            .map(|rest| format!("{to}{rest}"))
    })
}

/// Whether an upstream `/versions` answer needs the mapping: it lists no `v1.x`.
pub fn needs_r0(versions: &serde_json::Map<String, serde_json::Value>) -> bool {
    let listed = versions
        .get("versions")
        .and_then(serde_json::Value::as_array);
    !listed.is_some_and(|list| {
        list.iter()
            .filter_map(serde_json::Value::as_str)
            .any(|v| v.starts_with("v1."))
    })
}

/// The live decision, shared by every request.
#[derive(Debug)]
pub struct PathCompat {
    mode: PathCompatMode,
    /// In `"auto"`: the last decision. Starts on, so that an r0-only upstream that was not
    /// reachable at start still works once it is.
    active: AtomicBool,
}

impl PathCompat {
    pub fn new(mode: PathCompatMode) -> Self {
        Self {
            mode,
            active: AtomicBool::new(mode != PathCompatMode::Off),
        }
    }

    pub fn mode(&self) -> PathCompatMode {
        self.mode
    }

    /// Whether v3 paths are mapped to r0 right now.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// In `"auto"`, takes the upstream's `/versions` answer into account; returns the new
    /// decision when it flipped (for the log line).
    pub fn observe_versions(
        &self,
        versions: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<bool> {
        if self.mode != PathCompatMode::Auto {
            return None;
        }
        let active = needs_r0(versions);
        let before = self.active.swap(active, Ordering::Relaxed);
        (before != active).then_some(active)
    }

    /// The path to send upstream, when it differs from the client's.
    pub fn rewrite(&self, path_and_query: &str) -> Option<String> {
        if self.is_active() {
            map_path(path_and_query)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn versions(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn client_and_media_v3_become_r0() {
        assert_eq!(
            map_path("/_matrix/client/v3/login").as_deref(),
            Some("/_matrix/client/r0/login")
        );
        assert_eq!(
            map_path("/_matrix/media/v3/download/example.org/abc").as_deref(),
            Some("/_matrix/media/r0/download/example.org/abc")
        );
    }

    #[test]
    fn query_strings_and_percent_encoding_are_kept_byte_for_byte() {
        assert_eq!(
            map_path("/_matrix/client/v3/rooms/%21room%3Aexample.org/messages?from=t1&dir=b&filter=%7B%7D")
                .as_deref(),
            Some("/_matrix/client/r0/rooms/%21room%3Aexample.org/messages?from=t1&dir=b&filter=%7B%7D")
        );
        assert_eq!(
            map_path("/_matrix/client/v3/sync?timeout=30000").as_deref(),
            Some("/_matrix/client/r0/sync?timeout=30000")
        );
    }

    #[test]
    fn v1_unstable_r0_and_unknown_prefixes_are_untouched() {
        for path in [
            "/_matrix/client/v1/rooms/x/hierarchy",
            "/_matrix/client/unstable/org.matrix.msc2432/rooms/x",
            "/_matrix/client/r0/login",
            "/_matrix/client/versions",
            "/_matrix/client/v3",
            "/_matrix/client/v30/login",
            "/_matrix/federation/v3/x",
            "/_synapse/admin/v3/x",
            "/",
        ] {
            assert_eq!(map_path(path), None, "{path}");
        }
    }

    #[test]
    fn off_leaves_everything_alone() {
        let compat = PathCompat::new(PathCompatMode::Off);
        assert_eq!(compat.rewrite("/_matrix/client/v3/login"), None);
        assert_eq!(
            compat.observe_versions(&versions(json!({"versions": ["r0.5.0"]}))),
            None
        );
        assert!(!compat.is_active());
    }

    #[test]
    fn r0_always_maps() {
        let compat = PathCompat::new(PathCompatMode::R0);
        assert_eq!(
            compat.observe_versions(&versions(json!({"versions": ["v1.11"]}))),
            None
        );
        assert_eq!(
            compat.rewrite("/_matrix/client/v3/login").as_deref(),
            Some("/_matrix/client/r0/login")
        );
    }

    #[test]
    fn auto_follows_the_upstream_versions() {
        let compat = PathCompat::new(PathCompatMode::Auto);
        assert!(compat.is_active(), "on until the upstream says otherwise");
        assert_eq!(
            compat.observe_versions(&versions(json!({"versions": ["r0.5.0"]}))),
            None
        );
        assert_eq!(
            compat.observe_versions(&versions(json!({"versions": ["r0.6.1", "v1.1", "v1.11"]}))),
            Some(false)
        );
        assert_eq!(compat.rewrite("/_matrix/client/v3/login"), None);
        assert_eq!(
            compat.observe_versions(&versions(json!({"versions": ["r0.5.0"]}))),
            Some(true)
        );
    }

    #[test]
    fn a_versions_answer_without_v1_needs_r0() {
        assert!(needs_r0(&versions(
            json!({"versions": ["r0.0.1", "r0.5.0"]})
        )));
        assert!(needs_r0(&versions(json!({}))));
        assert!(!needs_r0(&versions(json!({"versions": ["v1.1"]}))));
    }
}
