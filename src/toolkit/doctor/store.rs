//! The store: Redis reached as the sidecar reaches it (its topology, auth and TLS, through
//! [`crate::redis_link`]), what it is (version, role, Sentinel master, Cluster slots), the
//! outbox's stream and consumer group, the dead letters, and a memory policy that could evict
//! sessions. The memory store needs nothing, and holds only one process's sessions.

use redis::Value;

use super::{Check, NETWORK_TIMEOUT};
use crate::config::{self, Config, StoreBackend, StoreTopology};
use crate::outbox::redis::GROUP;
use crate::redis_link::{LinkError, Topology, bound_all};
use crate::session::redis::RedisStore;
use crate::session::{SessionStore, StoreError, StoreSettings};

/// Redis Cluster's hash slots: all must be served.
const SLOTS: u64 = 16384;

pub async fn checks(config: &Config) -> Vec<Check> {
    match config.store.backend {
        StoreBackend::Memory => vec![Check::ok(
            "store",
            "memory: sessions, rate limits and the SMS budget live in this one process (lost on \
             restart, not shared by replicas); use store.backend = \"redis\" for more than one",
        )],
        StoreBackend::Redis => redis(config).await,
    }
}

async fn redis(config: &Config) -> Vec<Check> {
    let timeout = config.store.command_timeout.min(NETWORK_TIMEOUT);
    let place = describe(&config.store);
    let topology = Topology::from_config(&config.store);
    let store =
        match RedisStore::with_topology(&topology, StoreSettings::from_config(config), timeout) {
            Ok(store) => store,
            Err(e) => return vec![Check::fail("store.redis", format!("{place}: {e}"))],
        };
    let infos = match query(&store, timeout, &redis::cmd("INFO")).await {
        Ok(reply) => texts(&reply),
        Err(e) => {
            return vec![Check::fail(
                "store.redis",
                format!(
                    "cannot reach Redis at {place} ({e}): start it, or correct [store] (address, password, TLS)"
                ),
            )];
        }
    };
    let first = infos.first().map(String::as_str).unwrap_or_default();
    let version = info_field(first, "redis_version").unwrap_or("of unknown version");
    let mut checks = vec![Check::ok(
        "store.redis",
        format!("{place} answers{}: Redis {version}", access(&config.store)),
    )];
    checks.push(topology_check(&store, timeout, &config.store.topology, first).await);
    // The counts the admin API shows: messages waiting, and those given up on.
    let report = store.outbox_report(0).await;
    checks.push(outbox(&store, timeout, report.as_ref().map(|r| r.pending)).await);
    checks.push(dead_letters(&store, report.as_ref().map(|r| r.dead)));
    checks.push(memory_policy(&infos));
    checks
}

/// Where the store is, for messages: the URL without its password, or the Sentinel set-up's
/// master name and sentinels, or the cluster's first node.
pub(super) fn describe(store: &config::Store) -> String {
    match &store.topology {
        StoreTopology::Single => without_credentials(&store.url),
        StoreTopology::Sentinel(sentinel) => format!(
            "the master sentinels name \"{}\" ({})",
            sentinel.master_name,
            sentinel
                .sentinels
                .iter()
                .map(|(host, port)| format!("{host}:{port}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        StoreTopology::Cluster { nodes } => format!(
            "the cluster of {}",
            nodes
                .iter()
                .map(|n| without_credentials(n))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `redis://user:secret@host:6379/0` → `redis://host:6379/0`: how it is reached is said apart
/// ([`access`]), without the noise of a redacted, percent-encoded password.
fn without_credentials(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_password(None);
            let _ = parsed.set_username("");
            parsed.to_string()
        }
        Err(_) => "store.url (not a URL)".to_owned(),
    }
}

/// How the store is reached, as far as the config says: ` over TLS with a password`.
pub(super) fn access(store: &config::Store) -> String {
    let url = match &store.topology {
        StoreTopology::Single => Some(store.url.as_str()),
        StoreTopology::Cluster { nodes } => nodes.first().map(String::as_str),
        StoreTopology::Sentinel(sentinel) => {
            return match sentinel.password {
                Some(_) => " with the master's password".to_owned(),
                None => " without a password".to_owned(),
            };
        }
    };
    let Some(url) = url.and_then(|u| url::Url::parse(u).ok()) else {
        return String::new();
    };
    let tls = if url.scheme() == "rediss" {
        " over TLS"
    } else {
        " over plain TCP"
    };
    let auth = if url.password().is_some() {
        " with a password"
    } else {
        " without a password"
    };
    format!("{tls}{auth}")
}

/// One command, bounded, as the store runs its own.
async fn query(
    store: &RedisStore,
    timeout: std::time::Duration,
    cmd: &redis::Cmd,
) -> Result<Value, LinkError> {
    let op = store
        .link()
        .first_call(move |mut c| async move { cmd.query_async::<Value>(&mut c).await });
    bound_all(timeout, op).await.map(|(_, reply)| reply)
}

/// One server must be a master; a Sentinel master should have a replica to fail over to; a
/// cluster must serve every slot.
async fn topology_check(
    store: &RedisStore,
    timeout: std::time::Duration,
    topology: &StoreTopology,
    info: &str,
) -> Check {
    const NAME: &str = "store.topology";
    let role = info_field(info, "role").unwrap_or("unknown");
    let replicas = info_field(info, "connected_slaves").unwrap_or("0");
    match topology {
        StoreTopology::Single if role == "master" => Check::ok(
            NAME,
            format!("one server, a master ({replicas} replica(s))"),
        ),
        StoreTopology::Single => Check::fail(
            NAME,
            format!(
                "store.url leads to a {role}, which refuses writes: point it at the master, or use [store.sentinel]"
            ),
        ),
        StoreTopology::Sentinel(sentinel) if replicas == "0" => Check::warn(
            NAME,
            format!(
                "the sentinels name master \"{}\", which has no replica connected: a failover would have nothing to promote; add a replica",
                sentinel.master_name
            ),
        ),
        StoreTopology::Sentinel(sentinel) => Check::ok(
            NAME,
            format!(
                "the sentinels name master \"{}\", a {role} with {replicas} replica(s) connected",
                sentinel.master_name
            ),
        ),
        StoreTopology::Cluster { .. } => {
            let mut cmd = redis::cmd("CLUSTER");
            cmd.arg("INFO");
            match query(store, timeout, &cmd).await {
                Ok(reply) => cluster(texts(&reply).first().map_or("", String::as_str)),
                Err(e) => Check::fail(NAME, format!("CLUSTER INFO failed ({e})")),
            }
        }
    }
}

/// `CLUSTER INFO`: every slot served, the state ok.
pub(super) fn cluster(info: &str) -> Check {
    const NAME: &str = "store.topology";
    let state = info_field(info, "cluster_state").unwrap_or("unknown");
    let served = info_field(info, "cluster_slots_ok")
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    let masters = info_field(info, "cluster_size").unwrap_or("?");
    if state == "ok" && served == SLOTS {
        Check::ok(
            NAME,
            format!("a cluster of {masters} master(s); all {SLOTS} slots served"),
        )
    } else {
        Check::fail(
            NAME,
            format!(
                "the cluster is {state} with {served} of {SLOTS} slots served: every slot must be; see redis-cli --cluster check"
            ),
        )
    }
}

/// The outbox's stream and its consumer group, which the sidecar creates when it starts.
async fn outbox(
    store: &RedisStore,
    timeout: std::time::Duration,
    waiting: Result<u64, &StoreError>,
) -> Check {
    const NAME: &str = "store.outbox";
    let key = store.outbox_key();
    let mut groups = redis::cmd("XINFO");
    groups.arg("GROUPS").arg(&key);
    let absent = format!(
        "the stream {key} and its consumer group \"{GROUP}\" do not exist yet: the sidecar creates them when it starts; start it"
    );
    let reply = match query(store, timeout, &groups).await {
        Ok(reply) => reply,
        Err(e) if e.to_string().contains("no such key") => return Check::warn(NAME, absent),
        Err(e) => return Check::fail(NAME, format!("XINFO GROUPS {key} failed ({e})")),
    };
    let group = match &reply {
        Value::Array(groups) | Value::Set(groups) => groups
            .iter()
            .map(fields)
            .find(|f| field(f, "name").as_deref() == Some(GROUP)),
        _ => None,
    };
    let Some(group) = group else {
        return Check::warn(
            NAME,
            format!(
                "the stream {key} has no consumer group \"{GROUP}\": the sidecar creates it when it starts; start it"
            ),
        );
    };
    let waiting = match waiting {
        Ok(n) => n,
        Err(e) => return Check::fail(NAME, format!("XLEN {key} failed ({e})")),
    };
    Check::ok(
        NAME,
        format!(
            "{key} holds {waiting} message(s) not sent yet; group \"{GROUP}\" has {} consumer(s), {} message(s) in hand",
            field(&group, "consumers").unwrap_or_default(),
            field(&group, "pending").unwrap_or_default()
        ),
    )
}

/// Messages given up on: each is a user who did not get a mail or SMS.
fn dead_letters(store: &RedisStore, dead: Result<u64, &StoreError>) -> Check {
    const NAME: &str = "store.dead_letters";
    let key = store.dead_letter_key();
    match dead {
        Ok(0) => Check::ok(NAME, format!("none ({key} is empty)")),
        Ok(n) => Check::warn(
            NAME,
            format!(
                "{n} message(s) given up on in {key}: the log says why (\"dead-lettered\"), and GET /admin/v1/outbox lists them; fix the mail server or gateway, then send them again (POST /admin/v1/outbox/dead/{{id}}/retry)"
            ),
        ),
        Err(e) => Check::fail(NAME, format!("XLEN {key} failed ({e})")),
    }
}

/// Any server whose `maxmemory-policy` may evict keys: sessions and limits could vanish.
pub(super) fn memory_policy(infos: &[String]) -> Check {
    const NAME: &str = "store.maxmemory";
    let policies: Vec<&str> = infos
        .iter()
        .filter_map(|info| info_field(info, "maxmemory_policy"))
        .collect();
    match policies.iter().find(|p| **p != "noeviction") {
        Some(policy) => Check::warn(
            NAME,
            format!(
                "maxmemory-policy is {policy}: when memory runs short Redis evicts keys, and a session (its mailed link) or a rate limit vanishes; set maxmemory-policy noeviction"
            ),
        ),
        None if policies.is_empty() => Check::warn(
            NAME,
            "INFO names no maxmemory_policy: make sure it is noeviction",
        ),
        None => Check::ok(
            NAME,
            "maxmemory-policy noeviction: Redis never evicts a session",
        ),
    }
}

/// `key:value` from an INFO text (`# Section` lines and CRLFs aside).
pub(super) fn info_field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        let (k, v) = line.trim_end().split_once(':')?;
        (k == key).then_some(v)
    })
}

/// The text of a reply: one server's, or each node's (a cluster answers INFO per master).
fn texts(value: &Value) -> Vec<String> {
    match value {
        Value::Map(pairs) => pairs.iter().filter_map(|(_, v)| text(v)).collect(),
        other => text(other).into_iter().collect(),
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The fields of one XINFO entry: a map (RESP3) or a flat list of pairs (RESP2).
fn fields(value: &Value) -> Vec<(String, String)> {
    let pairs: Vec<(&Value, &Value)> = match value {
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        Value::Array(flat) => flat.chunks_exact(2).map(|kv| (&kv[0], &kv[1])).collect(),
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(k, v)| Some((text(k)?, text(v)?)))
        .collect()
}

fn field(fields: &[(String, String)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}
