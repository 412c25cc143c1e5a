//! ShardedRwLock against std, parking_lot and crossbeam's ShardedLock:
//! an uncontended read lock+unlock, and 2-thread read-only throughput.
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};

/// The read side of each lock under test.
trait ReadLock: Send + Sync + 'static {
    fn read_value(&self) -> u64;
}

impl ReadLock for shardlock::ShardedRwLock<u64> {
    fn read_value(&self) -> u64 {
        *self.read()
    }
}
impl ReadLock for std::sync::RwLock<u64> {
    fn read_value(&self) -> u64 {
        *self.read().unwrap()
    }
}
impl ReadLock for parking_lot::RwLock<u64> {
    fn read_value(&self) -> u64 {
        *self.read()
    }
}
impl ReadLock for crossbeam_utils::sync::ShardedLock<u64> {
    fn read_value(&self) -> u64 {
        *self.read().unwrap()
    }
}

fn locks() -> Vec<(&'static str, Arc<dyn ReadLock>)> {
    vec![
        (
            "ShardedRwLock",
            Arc::new(shardlock::ShardedRwLock::new(1u64)),
        ),
        ("std RwLock", Arc::new(std::sync::RwLock::new(1u64))),
        (
            "parking_lot RwLock",
            Arc::new(parking_lot::RwLock::new(1u64)),
        ),
        (
            "crossbeam ShardedLock",
            Arc::new(crossbeam_utils::sync::ShardedLock::new(1u64)),
        ),
    ]
}

fn uncontended_read(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_lock_unlock");
    for (name, lock) in locks() {
        group.bench_function(name, |b| b.iter(|| black_box(lock.read_value())));
    }
    group.finish();
}

/// Time for `iters` read lock+unlock cycles on each of 2 threads at once;
/// criterion reports it per iteration, i.e. per pair of reads.
fn two_thread_reads(lock: &Arc<dyn ReadLock>, iters: u64) -> Duration {
    let start = Arc::new(Barrier::new(3));
    let workers: Vec<_> = (0..2)
        .map(|_| {
            let (lock, start) = (lock.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let t = Instant::now();
                for _ in 0..iters {
                    black_box(lock.read_value());
                }
                t.elapsed()
            })
        })
        .collect();
    start.wait();
    workers
        .into_iter()
        .map(|w| w.join().unwrap())
        .max()
        .unwrap()
}

fn read_throughput_2_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("read_2_threads");
    for (name, lock) in locks() {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| two_thread_reads(&lock, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, uncontended_read, read_throughput_2_threads);
criterion_main!(benches);
