//! shardlock-server: a drop-in replacement for the Locktopus lock server,
//! speaking its protocol v1 byte for byte, on shardlock's `PathLock`.
//!
//! * [`protocol`]: frames, replies and the per-connection state machine.
//! * [`session`]: one WebSocket connection.
//! * [`namespace`]: namespaces (one `PathLock` each) and `stats_v1`.
//! * [`metrics`]: Prometheus metrics.
//! * [`http`]: routes, auth and the accept loop.
//! * [`config`]: the command line (Locktopus's flags and env variables).
//! * [`tls`]: optional TLS with rustls.
//! * [`cluster`]: cluster mode on etcd (ownership, fencing, forwarding).
pub mod cluster;
pub mod config;
pub mod http;
pub mod metrics;
pub mod namespace;
pub mod protocol;
pub mod session;
pub mod tls;

use std::sync::Arc;

use shardlock::Watch;

pub use config::Config;

/// What every handler and session shares.
pub struct Shared {
    pub config: Config,
    pub namespaces: Arc<namespace::Registry>,
    pub metrics: metrics::Metrics,
    /// Set once, when the server starts shutting down.
    pub shutdown: Watch<bool>,
    /// Connections accepted and not yet upgraded or closed (TLS handshake,
    /// HTTP requests), for the drain.
    http_open: std::sync::atomic::AtomicUsize,
    /// Notified whenever a session or an HTTP connection ends (for the drain).
    closed: tokio::sync::Notify,
    /// Cluster mode's state (`None` on a single node).
    pub cluster: Option<Arc<cluster::Cluster>>,
}

impl Shared {
    pub fn new(config: Config) -> Arc<Self> {
        Shared::with_cluster(config, None)
    }

    pub fn with_cluster(config: Config, cluster: Option<Arc<cluster::Cluster>>) -> Arc<Self> {
        let idle_cache = 4 * config.max_message_bytes;
        Arc::new(Shared {
            cluster,
            config,
            // Idle nodes per namespace: a small multiple of one message.
            namespaces: Arc::new(namespace::Registry::new(idle_cache)),
            metrics: metrics::Metrics::default(),
            shutdown: Watch::new(false),
            http_open: std::sync::atomic::AtomicUsize::new(0),
            closed: tokio::sync::Notify::new(),
        })
    }
}

/// Binds `config`'s address and serves until `stop` resolves (then drains).
/// Calls `on_bound` with the bound address first (the port may be 0).
/// Fails at once on unusable TLS files or an address it cannot bind.
pub async fn run(
    config: Config,
    stop: impl std::future::Future<Output = ()>,
    on_bound: impl FnOnce(std::net::SocketAddr),
) -> std::io::Result<()> {
    // Bad TLS files fail the start, before the port is taken.
    let tls = config.tls()?;
    let listener = tokio::net::TcpListener::bind((config.host, config.port))
        .await
        .map_err(|e| {
            let addr = std::net::SocketAddr::from((config.host, config.port));
            std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))
        })?;
    let cluster = match config.cluster() {
        Some(settings) => Some(
            cluster::Cluster::start(settings)
                .await
                .map_err(std::io::Error::other)?,
        ),
        None => None,
    };
    on_bound(listener.local_addr()?);
    let shared = Shared::with_cluster(config, cluster);
    if let Some(cluster) = &shared.cluster {
        // Idle namespaces are given up, so etcd keeps keys for live ones.
        let cluster = Arc::downgrade(cluster);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(cluster::RELEASE_IDLE_AFTER / 4);
            loop {
                ticks.tick().await;
                let Some(cluster) = cluster.upgrade() else {
                    return;
                };
                cluster.sweep().await;
            }
        });
    }
    if shared.config.stats_interval > 0 {
        let (shared, every) = (
            shared.clone(),
            std::time::Duration::from_secs(shared.config.stats_interval),
        );
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                for (name, ns) in shared.namespaces.all() {
                    tracing::info!(namespace = name, stats = ?ns.stats(), "statistics");
                }
            }
        });
    }
    http::serve(listener, tls, shared.clone(), stop).await;
    if let Some(cluster) = &shared.cluster {
        // Revoke the lease, so that the namespaces move at once.
        cluster.leave().await;
    }
    Ok(())
}
