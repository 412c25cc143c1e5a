//! Prometheus metrics, rendered in the text exposition format.
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::namespace::Registry;
use crate::protocol::ErrorKind;

/// A histogram of durations with fixed buckets (seconds).
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

const BOUNDS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0,
];

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            bounds: BOUNDS,
            counts: BOUNDS.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|&b| secs <= b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.sum_nanos.fetch_add(d.as_nanos() as u64, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_nanos.load(Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
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

    /// The exposition text, with gauges read from the namespaces now.
    pub fn render(&self, namespaces: &Registry) -> String {
        let mut out = String::new();
        let all = namespaces.all();
        let (mut held, mut waiting, mut tree_bytes) = (0, 0, 0);
        for (_, ns) in &all {
            let stats = ns.lock.stats();
            held += stats.held;
            waiting += stats.waiting;
            tree_bytes += ns.lock.node_bytes();
        }
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let _ = writeln!(
            out,
            "# HELP shardlock_build_info The server's version.\n# TYPE shardlock_build_info gauge\n\
             shardlock_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        gauge(
            &mut out,
            "shardlock_connections",
            "Open WebSocket sessions.",
            self.connections.load(Relaxed),
        );
        gauge(
            &mut out,
            "shardlock_namespaces",
            "Live namespaces.",
            all.len() as i64,
        );
        gauge(
            &mut out,
            "shardlock_locks_held",
            "Lock requests holding their locks.",
            held as i64,
        );
        gauge(
            &mut out,
            "shardlock_locks_waiting",
            "Lock requests waiting in line.",
            waiting as i64,
        );
        gauge(
            &mut out,
            "shardlock_lock_tree_bytes",
            "About the bytes of every namespace's lock tree nodes, idle cached ones included.",
            tree_bytes as i64,
        );
        counter(
            &mut out,
            // Not `shardlock_connections_total`: under OpenMetrics that
            // counter's family name would clash with the gauge above.
            "shardlock_sessions_accepted_total",
            "Sessions accepted.",
            self.connections_total.load(Relaxed),
        );
        counter(
            &mut out,
            "shardlock_connections_rejected_total",
            "Connections refused by a limit.",
            self.rejected_connections.load(Relaxed),
        );
        counter(
            &mut out,
            "shardlock_dead_peers_total",
            "Sessions closed for missing pongs.",
            self.dead_peers.load(Relaxed),
        );
        counter(
            &mut out,
            "shardlock_abandoned_locks_total",
            "Locks kept for the abandon timeout after their session ended.",
            self.abandoned_locks.load(Relaxed),
        );
        gauge(
            &mut out,
            "shardlock_abandoned_locks",
            "Abandoned locks kept now (bounded by --max-abandoned-locks).",
            self.abandoned_now.load(Relaxed) as i64,
        );
        counter(
            &mut out,
            "shardlock_abandoned_locks_refused_total",
            "Locks released when their session ended because the abandoned-lock limits were full.",
            self.abandoned_refused.load(Relaxed),
        );
        let name = "shardlock_protocol_errors_total";
        let _ = writeln!(
            out,
            "# HELP {name} Protocol errors, by kind.\n# TYPE {name} counter"
        );
        for kind in ErrorKind::ALL {
            let _ = writeln!(
                out,
                "{name}{{kind=\"{}\"}} {}",
                kind.label(),
                self.protocol_errors(kind)
            );
        }
        self.lock_wait.render(
            &mut out,
            "shardlock_lock_wait_seconds",
            "Time from a lock request to its grant.",
        );
        self.lock_hold.render(
            &mut out,
            "shardlock_lock_hold_seconds",
            "Time from a grant to its release.",
        );
        out
    }
}
