//! Redis Sentinel: the master the sentinels name, and finding it again after a failover
//! (the `redis` crate does neither by itself).
//!
//! The sentinels are asked (`SENTINEL get-master-addr-by-name`, the last one that answered
//! first) before the first call, and again when something says the master may have moved:
//!
//! - a call failed with a connection error, or a READONLY reply (a write reached the old
//!   master after it was made a replica): the failed round trip is retried once after asking;
//! - a sentinel announced `+switch-master` for our master: a watch task subscribes to one
//!   sentinel at a time. Without it the store would keep writing to the old master, which
//!   stays a master for seconds after a forced failover and loses those writes when it is
//!   made a replica.
//!
//! The named master is checked with `ROLE` before use, so a sentinel with an old view cannot
//! send writes to a replica. Everything is bounded by the store's command timeout.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, RedisError,
    Value,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::task::AbortHandle;

use super::LinkError;
use super::handle::{Conn, Handle, is_read_only, is_stuck, lock, manager_config, store_error};
use crate::config::SentinelSettings;

/// The channel on which sentinels announce a new master: `<name> <old ip> <old port> <new ip>
/// <new port>`.
const SWITCH_MASTER: &str = "+switch-master";
/// Pause before the watch subscribes again after losing its sentinel.
const WATCH_RETRY: Duration = Duration::from_secs(1);
/// The watch reconnects when it has heard nothing for this long, so a connection that died
/// without a word (a network partition) is not listened to for ever.
const WATCH_IDLE: Duration = Duration::from_secs(60);

/// The master of a Sentinel set-up.
pub(super) struct Sentinel {
    shared: Arc<Shared>,
    /// One resolution at a time: the calls that find the master stale wait for it.
    resolving: tokio::sync::Mutex<()>,
    watch: AbortHandle,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

/// What the store's calls and the watch task share.
struct Shared {
    master_name: String,
    /// One client per sentinel and its `host:port`, for messages.
    sentinels: Vec<(redis::Client, String)>,
    /// The master's password.
    password: Option<SecretString>,
    command_timeout: Duration,
    config: ConnectionManagerConfig,
    state: Mutex<State>,
}

struct State {
    /// Bumped with every new master connection (see [`Sentinel::fail`]).
    generation: u64,
    /// None until the sentinels were first asked.
    master: Option<Master>,
    /// Counts the reasons to ask the sentinels again; `resolved_at` is its value when they
    /// were last asked, so a reason that comes up while asking is not lost.
    marks: u64,
    resolved_at: u64,
    /// The sentinel that answered last, asked first next time.
    preferred: usize,
}

struct Master {
    addr: (String, u16),
    manager: ConnectionManager,
    /// The manager will not recover by itself: replace it even if the address is the same.
    stuck: bool,
}

impl Sentinel {
    /// Prepares the clients and starts the failover watch; connects to nothing yet. Must be
    /// called inside a Tokio runtime.
    pub(super) fn new(
        settings: &SentinelSettings,
        command_timeout: Duration,
    ) -> Result<Self, LinkError> {
        if settings.sentinels.is_empty() {
            return Err(LinkError::Unavailable("no sentinels configured".into()));
        }
        let sentinels = settings
            .sentinels
            .iter()
            .map(|(host, port)| {
                let client = client(host, *port, settings.sentinel_password.as_ref())?;
                Ok((client, format!("{host}:{port}")))
            })
            .collect::<Result<Vec<_>, LinkError>>()?;
        let shared = Arc::new(Shared {
            master_name: settings.master_name.clone(),
            sentinels,
            password: settings.password.clone(),
            command_timeout,
            config: manager_config(command_timeout),
            state: Mutex::new(State {
                generation: 0,
                master: None,
                marks: 0,
                resolved_at: 0,
                preferred: 0,
            }),
        });
        let watch = tokio::spawn(watch(Arc::downgrade(&shared))).abort_handle();
        Ok(Self {
            shared,
            resolving: tokio::sync::Mutex::new(()),
            watch,
        })
    }

    /// A handle on the master, asking the sentinels first if there is reason to.
    pub(super) async fn conn(&self) -> Result<Conn, LinkError> {
        if let Some(conn) = self.shared.fresh() {
            return Ok(conn);
        }
        let _one = self.resolving.lock().await;
        if let Some(conn) = self.shared.fresh() {
            return Ok(conn);
        }
        self.shared.resolve().await
    }

    /// Takes note of an error on a handle of `generation`; true when the sentinels are to be
    /// asked again (the master may have moved), which makes a retry worth it.
    pub(super) fn fail(&self, generation: u64, e: &RedisError) -> bool {
        let moved = e.is_io_error() || is_read_only(e) || is_stuck(e);
        if moved {
            let mut state = lock(&self.shared.state);
            if state.generation == generation {
                state.marks += 1;
                if is_stuck(e)
                    && let Some(master) = &mut state.master
                {
                    master.stuck = true;
                }
            }
        }
        moved
    }
}

impl Shared {
    /// The master in use, unless there is reason to ask the sentinels.
    fn fresh(&self) -> Option<Conn> {
        let state = lock(&self.state);
        let master = state.master.as_ref()?;
        (state.resolved_at == state.marks).then(|| Conn {
            generation: state.generation,
            manager: Handle::Node(master.manager.clone()),
        })
    }

    /// Asks the sentinels for the master, checks that it is one, and uses it.
    async fn resolve(&self) -> Result<Conn, LinkError> {
        let marks = lock(&self.state).marks;
        let (addr, answered) = self.ask_sentinels().await?;
        let (generation, manager) = {
            let state = lock(&self.state);
            match &state.master {
                Some(m) if m.addr == addr && !m.stuck => (state.generation, m.manager.clone()),
                _ => (state.generation + 1, self.manager(&addr)?),
            }
        };
        let mut handle = Handle::Node(manager.clone());
        let role: Vec<Value> = redis::cmd("ROLE")
            .query_async(&mut handle)
            .await
            .map_err(store_error)?;
        let role = match role.first() {
            Some(Value::BulkString(role)) => String::from_utf8_lossy(role).into_owned(),
            _ => return Err(LinkError::Corrupt(format!("ROLE answered {role:?}"))),
        };
        let (host, port) = &addr;
        if role != "master" {
            return Err(LinkError::Unavailable(format!(
                "the sentinels name {host}:{port} master of {:?}, but it is a {role}",
                self.master_name
            )));
        }
        let mut state = lock(&self.state);
        if state.generation != generation {
            tracing::info!(
                master = %format!("{host}:{port}"),
                name = %self.master_name,
                "redis sentinel: using this master"
            );
            state.generation = generation;
            state.master = Some(Master {
                addr,
                manager,
                stuck: false,
            });
        }
        state.resolved_at = marks;
        state.preferred = answered;
        Ok(Conn {
            generation,
            manager: handle,
        })
    }

    /// The master's address from the first sentinel that knows it, starting with the one
    /// that answered last; and which one answered.
    async fn ask_sentinels(&self) -> Result<((String, u16), usize), LinkError> {
        let count = self.sentinels.len();
        let first = lock(&self.state).preferred;
        let mut why = Vec::new();
        for at in (0..count).map(|i| (first + i) % count) {
            let (_, sentinel) = &self.sentinels[at];
            match self.ask(at).await {
                Ok(Some(addr)) => return Ok((addr, at)),
                Ok(None) => why.push(format!("{sentinel}: unknown master")),
                Err(e) => why.push(format!("{sentinel}: {e}")),
            }
        }
        Err(LinkError::Unavailable(format!(
            "no sentinel named the master of {:?} ({})",
            self.master_name,
            why.join("; ")
        )))
    }

    async fn ask(&self, at: usize) -> Result<Option<(String, u16)>, RedisError> {
        // Each sentinel gets a share of the time, so that a dead one leaves time for the next.
        let timeout = (self.command_timeout / 4).max(Duration::from_millis(50));
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut con = self.sentinels[at]
            .0
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.master_name)
            .query_async(&mut con)
            .await
    }

    fn manager(&self, (host, port): &(String, u16)) -> Result<ConnectionManager, LinkError> {
        let client = client(host, *port, self.password.as_ref())?;
        ConnectionManager::new_lazy_with_config(client, self.config.clone())
            .map_err(|e| LinkError::Unavailable(e.to_string()))
    }

    /// Sentinel `at` said the master changed, or it may have while nobody listened. That
    /// sentinel is asked first: the others may learn of the change only seconds later.
    fn mark(&self, at: usize) {
        let mut state = lock(&self.state);
        state.marks += 1;
        state.preferred = at;
    }
}

fn client(
    host: &str,
    port: u16,
    password: Option<&SecretString>,
) -> Result<redis::Client, LinkError> {
    let mut redis = RedisConnectionInfo::default();
    if let Some(password) = password {
        redis = redis.set_password(password.expose_secret());
    }
    ConnectionAddr::Tcp(host.to_owned(), port)
        .into_connection_info()
        .map(|info| info.set_redis_settings(redis))
        .and_then(redis::Client::open)
        .map_err(|e| LinkError::Unavailable(format!("redis {host}:{port}: {e}")))
}

/// Listens for `+switch-master` on one sentinel at a time, until the store is dropped.
async fn watch(shared: Weak<Shared>) {
    for turn in 0usize.. {
        let Some((at, client, master_name, timeout)) = shared.upgrade().map(|s| {
            let at = turn % s.sentinels.len();
            let (client, _) = &s.sentinels[at];
            (at, client.clone(), s.master_name.clone(), s.command_timeout)
        }) else {
            return;
        };
        let subscribed = tokio::time::timeout(timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(SWITCH_MASTER).await?;
            Ok::<_, RedisError>(pubsub)
        })
        .await;
        if let Ok(Ok(mut pubsub)) = subscribed {
            // A failover may have happened while nobody listened.
            match shared.upgrade() {
                Some(shared) => shared.mark(at),
                None => return,
            }
            let mut messages = pubsub.on_message();
            while let Ok(Some(message)) = tokio::time::timeout(WATCH_IDLE, messages.next()).await {
                let payload: String = message.get_payload().unwrap_or_default();
                if payload.split(' ').next() != Some(master_name.as_str()) {
                    continue;
                }
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                tracing::info!(name = %master_name, "redis sentinel: failover announced");
                shared.mark(at);
            }
        }
        tokio::time::sleep(WATCH_RETRY).await;
    }
}
