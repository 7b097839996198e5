//! The homeserver at `upstream.url`, asked as the running sidecar asks it: its `/versions`
//! (reachable; a legacy homeserver that needs the identity listener; whether the v3→r0 path
//! mapping will be on), and its `/.well-known/matrix/client` (whether it sends clients past
//! the sidecar).

use serde_json::{Map, Value};

use super::{Check, NETWORK_TIMEOUT};
use crate::compat::needs_r0;
use crate::config::{Config, PathCompatMode};
use crate::metrics::Metrics;
use crate::proxy::Upstream;
use crate::routes::versions::{
    OTHER_BASE_URL, VERSIONS_PATH, WELL_KNOWN_PATH, advertised_base_url, fetch_upstream_json,
    other_base_url,
};

pub async fn checks(config: &Config) -> Vec<Check> {
    let mut settings = config.upstream.clone();
    settings.connect_timeout = settings.connect_timeout.min(NETWORK_TIMEOUT);
    settings.response_timeout = settings.response_timeout.min(NETWORK_TIMEOUT);
    let url = &config.upstream.url;
    let metrics = Metrics::new();
    let upstream = match Upstream::new(&settings, NETWORK_TIMEOUT, &metrics) {
        Ok(upstream) => upstream,
        Err(e) => return vec![Check::fail("homeserver", format!("upstream TLS: {e}"))],
    };
    let versions = match fetch_upstream_json(&upstream, &metrics, VERSIONS_PATH).await {
        Ok(versions) => versions,
        Err(e) => {
            let at = url
                .join(VERSIONS_PATH)
                .map_or_else(|_| url.to_string(), String::from);
            return vec![Check::fail(
                "homeserver",
                format!("cannot read {at} ({e}): start the homeserver, or correct upstream.url"),
            )];
        }
    };
    let well_known = fetch_upstream_json(&upstream, &metrics, WELL_KNOWN_PATH).await;
    vec![
        Check::ok(
            "homeserver",
            format!(
                "{url} answers {VERSIONS_PATH}: {}",
                listed(&versions).join(", ")
            ),
        ),
        legacy(&versions),
        path_compat(config.upstream.path_compat, &versions),
        public_baseurl(well_known.ok().as_ref(), &config.server.public_baseurl),
    ]
}

/// The spec versions a `/versions` answer lists.
fn listed(versions: &Map<String, Value>) -> Vec<&str> {
    versions
        .get("versions")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A homeserver from before MSC2263 (spec r0.6.0): it lists nothing from r0.6 on and does
/// not say that it no longer needs an identity server.
pub(super) fn is_legacy(versions: &Map<String, Value>) -> bool {
    let modern = listed(versions)
        .iter()
        .any(|v| v.starts_with("r0.6") || v.starts_with("v1.") || v.starts_with("v2."));
    let says_no_identity_server = versions
        .get("unstable_features")
        .and_then(|f| f.get(crate::routes::versions::FLAG))
        .and_then(Value::as_bool)
        == Some(false);
    !modern && !says_no_identity_server
}

fn legacy(versions: &Map<String, Value>) -> Check {
    if is_legacy(versions) {
        Check::ok(
            "homeserver.legacy",
            "a legacy homeserver (spec before r0.6): it verifies addresses through an identity \
             server, so it calls the identity listener; list identity.server_name in its \
             trusted_third_party_id_servers",
        )
    } else {
        Check::warn(
            "homeserver.legacy",
            "the homeserver speaks spec r0.6 or later and verifies addresses itself (MSC2263): \
             the sidecar is made for legacy homeservers; check that upstream.url is the one you mean",
        )
    }
}

/// Whether the v3→r0 mapping will be on, and whether that fits the homeserver.
pub(super) fn path_compat(mode: PathCompatMode, versions: &Map<String, Value>) -> Check {
    const NAME: &str = "homeserver.path_compat";
    let r0_only = needs_r0(versions);
    match (mode, r0_only) {
        (PathCompatMode::Auto, true) => Check::ok(
            NAME,
            "on: the homeserver lists no v1.x, so today's clients' v3 paths go to it as r0 \
             (upstream.path_compat = \"auto\")",
        ),
        (PathCompatMode::Auto, false) => Check::ok(
            NAME,
            "off: the homeserver lists v1.x and serves v3 paths itself (upstream.path_compat = \"auto\")",
        ),
        (PathCompatMode::R0, true) => Check::ok(NAME, "on (upstream.path_compat = \"r0\")"),
        (PathCompatMode::R0, false) => Check::warn(
            NAME,
            "on (upstream.path_compat = \"r0\") although the homeserver lists v1.x and serves v3 \
             paths itself: set upstream.path_compat = \"auto\"",
        ),
        (PathCompatMode::Off, true) => Check::warn(
            NAME,
            "off (upstream.path_compat = \"off\") but the homeserver lists no v1.x: today's \
             clients (Element, matrix-js-sdk) call v3 paths it does not serve; set \
             upstream.path_compat = \"auto\"",
        ),
        (PathCompatMode::Off, false) => Check::ok(NAME, "off (upstream.path_compat = \"off\")"),
    }
}

/// Whether the base URL the homeserver hands clients is the sidecar's; `None` when it
/// serves no `/.well-known/matrix/client`.
pub(super) fn public_baseurl(well_known: Option<&Map<String, Value>>, ours: &url::Url) -> Check {
    const NAME: &str = "homeserver.public_baseurl";
    let Some(well_known) = well_known else {
        return Check::ok(
            NAME,
            format!(
                "the homeserver serves no {WELL_KNOWN_PATH}, so it advertises no other base URL"
            ),
        );
    };
    match (
        other_base_url(well_known, ours),
        advertised_base_url(well_known),
    ) {
        (Some(theirs), _) => Check::warn(NAME, format!("{OTHER_BASE_URL} (it says {theirs})")),
        (None, Some(_)) => Check::ok(
            NAME,
            format!("the homeserver advertises server.public_baseurl ({ours})"),
        ),
        (None, None) => Check::ok(
            NAME,
            format!("the homeserver's {WELL_KNOWN_PATH} names no base URL"),
        ),
    }
}
