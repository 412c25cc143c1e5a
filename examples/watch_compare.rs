//! `Watch` reads against arc-swap, tokio's `watch` and `RwLock<Arc<T>>`, at
//! 1 and 2 threads, as ratios within one run (median of 3 rounds each).
//!
//! ```text
//! cargo run --release --example watch_compare
//! ```
use std::hint::black_box;
use std::sync::{Arc, Barrier, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use shardlock::Watch;

const SPAN: Duration = Duration::from_millis(300);

/// Mop/s of `op` on `threads` threads for `SPAN`.
fn throughput(threads: usize, op: &(dyn Fn() + Sync)) -> f64 {
    let barrier = Barrier::new(threads);
    let ops: u64 = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    let mut n = 0u64;
                    while start.elapsed() < SPAN {
                        for _ in 0..256 {
                            op();
                        }
                        n += 256;
                    }
                    n
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

fn main() {
    let watch = Watch::new(42u64);
    let swap = ArcSwap::from_pointee(42u64);
    let (_tx, rx) = tokio::sync::watch::channel(42u64);
    let lock = RwLock::new(Arc::new(42u64));
    let ops: [(&str, &(dyn Fn() + Sync)); 6] = [
        ("Watch::load (Arc)", &|| drop(black_box(watch.load()))),
        ("Watch::borrow", &|| {
            black_box(*watch.borrow());
        }),
        ("ArcSwap::load (guard)", &|| {
            black_box(**swap.load());
        }),
        ("ArcSwap::load_full (Arc)", &|| {
            drop(black_box(swap.load_full()))
        }),
        ("tokio watch::Receiver::borrow", &|| {
            black_box(*rx.borrow());
        }),
        ("RwLock<Arc<T>> read + clone", &|| {
            drop(black_box(lock.read().unwrap().clone()))
        }),
    ];
    println!("Watch reads, this machine, one run; Mop/s (median of 3 interleaved rounds)\n");
    for threads in [1, 2] {
        let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); ops.len()];
        for _ in 0..3 {
            for (i, (_, op)) in ops.iter().enumerate() {
                rounds[i].push(throughput(threads, *op));
            }
        }
        let mops: Vec<f64> = rounds.into_iter().map(median).collect();
        println!("{threads} thread(s):");
        for ((name, _), m) in ops.iter().zip(&mops) {
            println!(
                "  {name:32} {m:8.1} Mop/s  Watch::load is {:.2}x its time",
                mops[0].recip() / m.recip()
            );
        }
    }
}
