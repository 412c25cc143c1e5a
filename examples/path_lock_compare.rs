//! PathLock figures, each as a ratio measured in this one run:
//! uncontended lock+unlock, read-heavy scaling, a mixed 95/5 workload against
//! a per-prefix map of parking_lot RwLocks and one global RwLock, sets of 8,
//! and cost stability with a long-held lock.
//!
//! ```text
//! cargo run --release --example path_lock_compare
//! ```
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::RwLock;
use shardlock::{LockSet, PathLock};

const SPAN: Duration = Duration::from_millis(400);

/// Runs `op(thread, i)` on `threads` threads for `SPAN`; returns Mop/s.
fn throughput(threads: usize, op: impl Fn(usize, u64) + Sync) -> f64 {
    let barrier = Barrier::new(threads);
    let ops: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (op, barrier) = (&op, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut i = 0;
                    while start.elapsed() < SPAN {
                        for _ in 0..64 {
                            op(t, i);
                            i += 1;
                        }
                    }
                    i
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    ops as f64 / SPAN.as_secs_f64() / 1e6
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// ns per call of `op`, median of 5 runs.
fn ns_per(op: impl Fn(u64)) -> f64 {
    median(
        (0..5)
            .map(|_| {
                let n = 200_000;
                let start = Instant::now();
                for i in 0..n {
                    op(i);
                }
                start.elapsed().as_nanos() as f64 / n as f64
            })
            .collect(),
    )
}

/// The per-prefix baseline: one RwLock per path prefix in a DashMap;
/// ancestors taken shared, the target in its mode, root to leaf.
#[derive(Default)]
struct PrefixLocks(DashMap<Vec<String>, Arc<RwLock<()>>>);

impl PrefixLocks {
    fn with(&self, path: &[String], write: bool) {
        let locks: Vec<Arc<RwLock<()>>> = (1..=path.len())
            .map(|n| self.0.entry(path[..n].to_vec()).or_default().clone())
            .collect();
        let mut reads = Vec::new();
        for lock in &locks[..locks.len() - 1] {
            reads.push(lock.read());
        }
        let last = locks.last().unwrap();
        if write {
            drop(black_box(last.write()));
        } else {
            drop(black_box(last.read()));
        }
    }
}

fn main() {
    let lock = PathLock::new();
    println!("PathLock, this machine, one run. Medians; ratios within this run.\n");

    let read = ns_per(|_| drop(black_box(lock.read(["tenant", "users", "alice"]))));
    let write = ns_per(|_| drop(black_box(lock.write(["tenant", "users", "alice"]))));
    let prefix = PrefixLocks::default();
    let alice: Vec<String> = ["tenant", "users", "alice"].map(String::from).to_vec();
    let prefix_read = ns_per(|_| prefix.with(&alice, false));
    println!("uncontended lock+unlock, depth 3: read {read:.0} ns, write {write:.0} ns");
    println!(
        "  per-prefix DashMap<RwLock> read lock+unlock {prefix_read:.0} ns: \
         PathLock read {:.2}×, write {:.2}× of it",
        read / prefix_read,
        write / prefix_read
    );
    println!(
        "  vs Locktopus's engine (~10 µs per lock+unlock, shared/reference): {:.0}× / {:.0}×",
        10_000.0 / read,
        10_000.0 / write
    );

    let set = (0..8).fold(LockSet::new(), |s, i| {
        s.read(["tenant", "users", &format!("u{i}")])
    });
    let per_set = ns_per(|_| drop(black_box(lock.lock(&set).unwrap())));
    println!("lock set of 8 reads: {per_set:.0} ns per set");

    // Read-heavy scaling: each thread read-locks its own leaves under a
    // shared ancestor.
    let leaves: Vec<Vec<String>> = (0..2)
        .map(|t| (0..8).map(|k| format!("leaf-{t}-{k}")).collect())
        .collect();
    let own = |t: usize, i: u64| {
        let leaf = &leaves[t][(i % 8) as usize];
        drop(black_box(lock.read(["tenant", "users", leaf.as_str()])));
    };
    let (one, two) = (
        median((0..3).map(|_| throughput(1, own)).collect()),
        median((0..3).map(|_| throughput(2, own)).collect()),
    );
    println!(
        "read-heavy scaling, own leaves under a shared ancestor: 1 thread {one:.2} Mop/s, \
         2 threads {two:.2} Mop/s, ratio {:.2}",
        two / one
    );

    // Mixed 95% read / 5% write, random paths of a depth-3, fanout-16 tree.
    let paths: Vec<Vec<String>> = (0..4096u64)
        .map(|i| {
            let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
            (0..3)
                .map(|d| format!("n{}", (x >> (4 * d)) % 16))
                .collect()
        })
        .collect();
    let pick = |t: usize, i: u64| {
        let k = (i.wrapping_mul(2_654_435_761) as usize + t * 1237) % paths.len();
        (&paths[k], i.is_multiple_of(20))
    };
    let mixed_pathlock = median(
        (0..3)
            .map(|_| {
                throughput(2, |t, i| {
                    let (path, write) = pick(t, i);
                    let guard = if write {
                        lock.write(path)
                    } else {
                        lock.read(path)
                    };
                    drop(black_box(guard));
                })
            })
            .collect(),
    );
    let mixed_prefix = median(
        (0..3)
            .map(|_| {
                throughput(2, |t, i| {
                    let (path, write) = pick(t, i);
                    prefix.with(path, write);
                })
            })
            .collect(),
    );
    let global = RwLock::new(());
    let mixed_global = median(
        (0..3)
            .map(|_| {
                throughput(2, |t, i| {
                    let (_, write) = pick(t, i);
                    if write {
                        drop(black_box(global.write()));
                    } else {
                        drop(black_box(global.read()));
                    }
                })
            })
            .collect(),
    );
    println!(
        "mixed 95/5, depth 3 fanout 16, 2 threads: PathLock {mixed_pathlock:.2} Mop/s, \
         per-prefix DashMap<RwLock> {mixed_prefix:.2} ({:.2}×), one global RwLock {mixed_global:.2} \
         (not a tree lock: no per-path exclusion)",
        mixed_pathlock / mixed_prefix
    );

    // No degradation with a long-held lock: last 10% vs first 10% of
    // 1,000,000 cycles, median over 3 repeats.
    let held = lock.write(["long", "held", "lock"]);
    let ratios: Vec<f64> = (0..3)
        .map(|_| {
            let tenth = 100_000;
            let mut times = Vec::with_capacity(10);
            for chunk in 0..10 {
                let start = Instant::now();
                for i in 0..tenth {
                    let leaf = (chunk * tenth + i) % 64;
                    drop(black_box(lock.read(["tenant", "users", &leaf.to_string()])));
                }
                times.push(start.elapsed().as_secs_f64());
            }
            times[9] / times[0]
        })
        .collect();
    println!(
        "long-held lock, 1,000,000 cycles: last 10% ÷ first 10% = {:.2} (median of 3: {:.2?}); \
         nodes during: {} (held path length 3)",
        median(ratios.clone()),
        ratios,
        lock.stats().nodes
    );
    drop(held);
    println!("after release: {:?}", lock.stats());
}
