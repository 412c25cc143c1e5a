//! Prometheus metrics: counted in atomics where they happen, encoded by
//! `prometheus-client` (the OpenMetrics text format) when scraped.
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram as PromHistogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry as Exposition;

use crate::cluster::Cluster;
use crate::namespace::{Registry, StatsV1};
use crate::protocol::ErrorKind;

/// Lock wait and hold times (seconds) fall in these buckets.
const BOUNDS: [f64; 12] = [
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0,
];

/// A histogram of durations with fixed buckets (shared with the
/// exposition: cloning it shares its counts).
#[derive(Clone)]
pub struct Histogram(PromHistogram);

impl Default for Histogram {
    fn default() -> Self {
        Histogram(PromHistogram::new(BOUNDS))
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

/// Everything the server counts.
#[derive(Default)]
pub struct Metrics {
    pub connections: AtomicI64,
    pub connections_total: AtomicU64,
    pub rejected_connections: AtomicU64,
    pub dead_peers: AtomicU64,
    pub abandoned_locks: AtomicU64,
    /// Abandoned locks kept now, over all namespaces.
    pub abandoned_now: AtomicU64,
    /// Locks released at once because the abandoned-lock limits were full.
    pub abandoned_refused: AtomicU64,
    protocol_errors: [AtomicU64; ErrorKind::ALL.len()],
    pub lock_wait: Histogram,
    pub lock_hold: Histogram,
}

impl Metrics {
    pub fn protocol_error(&self, kind: ErrorKind) {
        let i = ErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("listed");
        self.protocol_errors[i].fetch_add(1, Relaxed);
    }

    pub fn protocol_errors(&self, kind: ErrorKind) -> u64 {
        let i = ErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("listed");
        self.protocol_errors[i].load(Relaxed)
    }

    /// The exposition text (OpenMetrics), with gauges read from the
    /// namespaces now.
    pub fn render(
        &self,
        namespaces: &Registry,
        cluster: Option<&Cluster>,
        namespace: Option<(&str, Option<StatsV1>)>,
    ) -> String {
        let all = namespaces.all();
        let (mut held, mut waiting, mut tree_bytes) = (0, 0, 0);
        for (_, ns) in &all {
            let stats = ns.lock.stats();
            held += stats.held;
            waiting += stats.waiting;
            tree_bytes += ns.lock.node_bytes();
        }
        let mut out = Exposition::default();
        let gauge = |out: &mut Exposition, name: &str, help: &str, v: i64| {
            out.register(name, help, ConstGauge::new(v));
        };
        // Counters' names get `_total` from the encoder.
        let counter = |out: &mut Exposition, name: &str, help: &str, v: u64| {
            out.register(name, help, ConstCounter::new(v));
        };
        out.register(
            "shardlock_build",
            "The server's version",
            Info::new(vec![(
                "version".to_string(),
                env!("CARGO_PKG_VERSION").to_string(),
            )]),
        );
        gauge(
            &mut out,
            "shardlock_connections",
            "Open WebSocket sessions",
            self.connections.load(Relaxed),
        );
        gauge(
            &mut out,
            "shardlock_namespaces",
            "Live namespaces",
            all.len() as i64,
        );
        gauge(
            &mut out,
            "shardlock_locks_held",
            "Lock requests holding their locks",
            held as i64,
        );
        gauge(
            &mut out,
            "shardlock_locks_waiting",
            "Lock requests waiting in line",
            waiting as i64,
        );
        gauge(
            &mut out,
            "shardlock_lock_tree_bytes",
            "About the bytes of every namespace's lock tree nodes, idle cached ones included",
            tree_bytes as i64,
        );
        // Not `shardlock_connections_total`: under OpenMetrics that
        // counter's family name would clash with the gauge above.
        counter(
            &mut out,
            "shardlock_sessions_accepted",
            "Sessions accepted",
            self.connections_total.load(Relaxed),
        );
        counter(
            &mut out,
            "shardlock_connections_rejected",
            "Connections refused by a limit",
            self.rejected_connections.load(Relaxed),
        );
        counter(
            &mut out,
            "shardlock_dead_peers",
            "Sessions closed for missing pongs",
            self.dead_peers.load(Relaxed),
        );
        counter(
            &mut out,
            "shardlock_abandoned_locks",
            "Locks kept for the abandon timeout after their session ended",
            self.abandoned_locks.load(Relaxed),
        );
        gauge(
            &mut out,
            "shardlock_abandoned_locks_kept",
            "Abandoned locks kept now (bounded by --max-abandoned-locks)",
            self.abandoned_now.load(Relaxed) as i64,
        );
        counter(
            &mut out,
            "shardlock_abandoned_locks_refused",
            "Locks released when their session ended because the abandoned-lock limits were full",
            self.abandoned_refused.load(Relaxed),
        );
        let by_kind =
            Family::<Vec<(String, String)>, prometheus_client::metrics::counter::Counter>::default(
            );
        for kind in ErrorKind::ALL {
            by_kind
                .get_or_create(&vec![("kind".to_string(), kind.label().to_string())])
                .inc_by(self.protocol_errors(kind));
        }
        out.register(
            "shardlock_protocol_errors",
            "Protocol errors, by kind",
            by_kind,
        );
        out.register(
            "shardlock_lock_wait_seconds",
            "Time from a lock request to its grant",
            self.lock_wait.0.clone(),
        );
        out.register(
            "shardlock_lock_hold_seconds",
            "Time from a grant to its release",
            self.lock_hold.0.clone(),
        );
        if let Some(cluster) = cluster {
            let c = &cluster.counters;
            gauge(
                &mut out,
                "shardlock_cluster_lease_valid",
                "1 while this instance holds a valid etcd lease (else it is fenced)",
                i64::from(cluster.ready()),
            );
            gauge(
                &mut out,
                "shardlock_cluster_namespaces_owned",
                "Namespaces this instance owns",
                cluster.owned() as i64,
            );
            counter(
                &mut out,
                "shardlock_cluster_ownership_changes",
                "Namespaces claimed, given up or lost by this instance",
                c.ownership_changes.load(Relaxed),
            );
            counter(
                &mut out,
                "shardlock_cluster_leases_lost",
                "Times this instance lost its lease and fenced",
                c.leases_lost.load(Relaxed),
            );
            counter(
                &mut out,
                "shardlock_cluster_etcd_errors",
                "etcd requests that failed",
                c.etcd_errors.load(Relaxed),
            );
            counter(
                &mut out,
                "shardlock_cluster_forwarded_connections",
                "Sessions forwarded to another instance",
                c.forwarded_total.load(Relaxed),
            );
            gauge(
                &mut out,
                "shardlock_cluster_forwarded_open",
                "Forwarded sessions open now",
                c.forwarded_open.load(Relaxed),
            );
        }
        if let Some((name, stats)) = namespace {
            let stats = stats.unwrap_or_default();
            let labels = vec![("namespace".to_string(), name.to_string())];
            let mut scoped = |metric: &str, help: &str, v: u64| {
                let family = Family::<Vec<(String, String)>, Gauge>::default();
                family.get_or_create(&labels).set(v as i64);
                out.register(metric, help, family);
            };
            scoped(
                "shardlock_namespace_locks_held",
                "Lock requests holding their locks in the namespace asked about",
                stats.groups_acquired,
            );
            scoped(
                "shardlock_namespace_locks_waiting",
                "Lock requests waiting in the namespace asked about",
                stats.groups_pending,
            );
            scoped(
                "shardlock_namespace_last_id",
                "The last lock id given in the namespace asked about",
                stats.last_group_id,
            );
        }
        let mut text = String::new();
        encode(&mut text, &out).expect("writing to a String cannot fail");
        text
    }
}
