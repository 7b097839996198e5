//! Starting and stopping: [`start`] builds the [`AppState`], binds the three listeners,
//! starts the durable outbox's sender when the store is Redis ([`crate::outbox`]), and
//! returns a [`Running`] handle (tests start the whole server in process on `127.0.0.1:0`);
//! [`run`] also waits for SIGTERM/SIGINT and drains.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::{self, Config, StoreBackend};
use crate::delivery::Mailer;
use crate::delivery::sms;
use crate::metrics::Metrics;
use crate::proxy::Upstream;
use crate::server::{self, Bound, Listener};
use crate::session::{self, SessionStore, StoreSettings};
use crate::state::{self, AppState};
use crate::templates::{self, Templates};
use crate::{delivery, i18n, outbox, policy, routes, tls};

/// Why the sidecar could not start. The binary exits with a non-zero status.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({listener}): {source}")]
    Bind {
        listener: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("upstream TLS: {0}")]
    UpstreamTls(#[from] rustls::Error),
    #[error("session store: {0}")]
    Store(#[from] session::StoreError),
    #[error("templates: {0}")]
    Templates(#[from] templates::TemplateError),
    #[error("i18n: {0}")]
    I18n(#[from] i18n::I18nError),
    #[error("policy: {0}")]
    Policy(String),
    #[error("email: {0}")]
    Mail(#[from] delivery::DeliveryError),
}

/// A started sidecar: its bound addresses and the handle to stop it.
pub struct Running {
    pub client_addr: SocketAddr,
    pub identity_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub state: Arc<AppState>,
    stop_traffic: watch::Sender<bool>,
    stop_admin: watch::Sender<bool>,
    stop_outbox: watch::Sender<bool>,
    traffic: Vec<JoinHandle<()>>,
    admin: JoinHandle<()>,
    /// The outbox's sender (Redis store).
    outbox: Option<JoinHandle<()>>,
}

impl Running {
    /// Graceful shutdown: readiness false, stop accepting, let in-flight requests finish
    /// (at most `server.shutdown_grace`), let the outbox's sender finish the messages in
    /// hand (as long again at most; what it has not taken stays queued for the other
    /// replicas), then close the admin listener.
    pub async fn shutdown(self) {
        self.state.set_ready(false);
        tracing::info!("draining");
        let _ = self.stop_traffic.send(true);
        for task in self.traffic {
            let _ = task.await;
        }
        let _ = self.stop_outbox.send(true);
        if let Some(sender) = self.outbox {
            let grace = self.state.config.server.shutdown_grace;
            if tokio::time::timeout(grace, sender).await.is_err() {
                tracing::warn!(
                    "the outbox sender did not finish in time; its messages stay queued"
                );
            }
        }
        let _ = self.stop_admin.send(true);
        let _ = self.admin.await;
        tracing::info!("stopped");
    }
}

/// The store, and the same store as Redis for the outbox's sender when it is Redis.
type Stores = (
    Arc<dyn SessionStore>,
    Option<Arc<session::redis::RedisStore>>,
);

fn build_store(config: &Config, metrics: &Arc<Metrics>) -> Result<Stores, session::StoreError> {
    let settings = StoreSettings::from_config(config);
    let mut redis = None;
    let backend: Arc<dyn SessionStore> = match config.store.backend {
        StoreBackend::Memory => Arc::new(session::memory::MemoryStore::new(settings)),
        StoreBackend::Redis => {
            use crate::session::redis::RedisStore;
            let store = Arc::new(RedisStore::with_topology(
                &crate::redis_link::Topology::from_config(&config.store),
                settings,
                config.store.command_timeout,
            )?);
            redis = Some(store.clone());
            store
        }
    };
    let metered = Arc::new(session::metered::Metered::new(backend, metrics.clone()));
    Ok((metered, redis))
}

/// How the outbox's sender waits for new messages: blocking on a connection of its own to
/// the one server; polling the store's connection for Sentinel and Cluster, whose
/// connections this sender does not open itself yet.
fn outbox_reader(config: &Config) -> Result<outbox::redis::OutboxReader, session::StoreError> {
    use outbox::redis::OutboxReader;
    match config.store.topology {
        config::StoreTopology::Single => {
            OutboxReader::dedicated(&config.store.url, config.store.command_timeout)
        }
        _ => Ok(OutboxReader::polling()),
    }
}

/// Builds the state, binds every listener and starts serving. Returns once all listeners
/// are bound and readiness is true.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let catalogues = Arc::new(i18n::Catalogues::load(
        config.i18n.dir.as_deref(),
        &config.i18n.default_language,
    )?);
    let templates = Arc::new(Templates::load(
        config.email.templates_dir.as_deref(),
        catalogues,
    )?);
    let mailer: Arc<dyn Mailer> = Arc::new(delivery::email::EmailSender::new(
        &config.email,
        &config.server.server_name,
        templates.clone(),
    )?);
    let sms = sms::from_config(&config.sms, &config.email.app_name, templates.clone())?;
    let policy = policy::Policy::new(&config.policy, &config.sms).map_err(StartError::Policy)?;
    let metrics = Arc::new(Metrics::new());
    let (store, redis) = build_store(&config, &metrics)?;
    let outbox_reader = redis.as_ref().map(|_| outbox_reader(&config)).transpose()?;
    let upstream = Upstream::new(&config.upstream, config.server.body_idle_timeout, &metrics)?;

    let client_tls = config
        .server
        .tls
        .as_ref()
        .map(|files| tls::server_config(files, &[b"h2", b"http/1.1"]))
        .transpose()?
        .map(TlsAcceptor::from);
    // Legacy homeservers speak HTTP/1.1 to identity servers.
    const IDENTITY_ALPN: &[&[u8]] = &[b"http/1.1"];
    let identity_tls = match &config.identity.tls {
        Some(files) => tls::server_config(files, IDENTITY_ALPN)?,
        None => {
            let generated = tls::generate_self_signed(
                &config.identity.server_name,
                &config.identity.generated_cert_dir,
            )?;
            tracing::info!(
                cert = %generated.cert_path.display(),
                server_name = %config.identity.server_name,
                "generated a self-signed identity certificate; make the homeserver trust it"
            );
            generated.server_config(IDENTITY_ALPN)?
        }
    };
    let identity_tls = TlsAcceptor::from(identity_tls);

    let bind = |listener: Listener, name: &'static str, addr: SocketAddr, tls| async move {
        Bound::bind(listener, addr, tls)
            .await
            .map_err(|source| StartError::Bind {
                listener: name,
                addr,
                source,
            })
    };
    let client = bind(
        Listener::Client,
        "server.listen",
        config.server.listen,
        client_tls,
    )
    .await?;
    let identity = bind(
        Listener::Identity,
        "identity.listen",
        config.identity.listen,
        Some(identity_tls),
    )
    .await?;
    let admin = bind(Listener::Admin, "admin.listen", config.admin.listen, None).await?;
    let (client_addr, identity_addr, admin_addr) = (
        client.local_addr(),
        identity.local_addr(),
        admin.local_addr(),
    );

    let grace = config.server.shutdown_grace;
    let state = Arc::new(AppState {
        config,
        upstream,
        metrics,
        store,
        mailer,
        sms,
        templates,
        policy,
        internal: state::Internal::new(),
        budget_spent_warned: AtomicU64::new(0),
    });
    let (stop_traffic, stop_traffic_rx) = watch::channel(false);
    let (stop_admin, stop_admin_rx) = watch::channel(false);
    let (stop_outbox, stop_outbox_rx) = watch::channel(false);
    let traffic = vec![
        server::spawn_listener(client, state.clone(), stop_traffic_rx.clone(), grace),
        server::spawn_listener(identity, state.clone(), stop_traffic_rx, grace),
    ];
    // The admin listener outlives the drain so that probes see readiness turn false.
    let admin = server::spawn_listener(admin, state.clone(), stop_admin_rx, grace);
    state
        .metrics
        .set_path_compat(state.upstream.compat.is_active());
    if state.upstream.compat.mode() == config::PathCompatMode::Auto {
        tokio::spawn(routes::versions::watch_upstream_versions(
            state.clone(),
            stop_traffic.subscribe(),
        ));
    } else {
        tracing::info!(mode = ?state.upstream.compat.mode(), active = state.upstream.compat.is_active(), "v3→r0 path compatibility");
    }
    if state.policy.disposable().is_some() {
        let watching = state.clone();
        let stop = stop_traffic.subscribe();
        let hangups = policy::disposable::hangups();
        tokio::spawn(async move {
            if let Some(list) = watching.policy.disposable() {
                policy::disposable::watch(list, hangups, stop).await;
            }
        });
    }
    let outbox = redis.zip(outbox_reader).map(|(redis, reader)| {
        let queue = outbox::redis::RedisQueue::new(redis, reader);
        outbox::spawn(state.clone(), queue, stop_outbox_rx)
    });
    state.set_ready(true);
    tracing::info!(%client_addr, %identity_addr, %admin_addr, "listening");
    Ok(Running {
        client_addr,
        identity_addr,
        admin_addr,
        state,
        stop_traffic,
        stop_admin,
        stop_outbox,
        traffic,
        admin,
        outbox,
    })
}

/// Starts, serves until SIGTERM or SIGINT, then drains and returns.
pub async fn run(config: Config) -> Result<(), StartError> {
    let running = start(config).await?;
    server::shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}
