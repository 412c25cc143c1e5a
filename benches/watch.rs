//! `Watch::load` (and `borrow`) against `ArcSwap::load`, tokio's
//! `watch::Receiver::borrow` and `RwLock<Arc<T>>`, one thread. The
//! two-thread figures come from `examples/watch_compare.rs`.
use std::hint::black_box;
use std::sync::{Arc, RwLock};

use arc_swap::ArcSwap;
use criterion::{criterion_group, criterion_main, Criterion};
use shardlock::Watch;

fn loads(c: &mut Criterion) {
    let mut group = c.benchmark_group("watch_load");
    let watch = Watch::new(42u64);
    group.bench_function("watch_load", |b| b.iter(|| black_box(watch.load())));
    group.bench_function("watch_borrow", |b| b.iter(|| *black_box(watch.borrow())));
    let swap = ArcSwap::from_pointee(42u64);
    group.bench_function("arc_swap_load", |b| b.iter(|| **black_box(swap.load())));
    group.bench_function("arc_swap_load_full", |b| {
        b.iter(|| black_box(swap.load_full()))
    });
    let (_tx, rx) = tokio::sync::watch::channel(42u64);
    group.bench_function("tokio_watch_borrow", |b| b.iter(|| *black_box(rx.borrow())));
    let lock = RwLock::new(Arc::new(42u64));
    group.bench_function("rwlock_arc_clone", |b| {
        b.iter(|| black_box(lock.read().unwrap().clone()))
    });
    group.finish();
}

criterion_group!(benches, loads);
criterion_main!(benches);
