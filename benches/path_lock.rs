//! PathLock: uncontended lock+unlock on a depth-3 path, and sets of 8,
//! beside the per-prefix baseline (a DashMap of parking_lot RwLocks, one per
//! path prefix: ancestors read-locked, the target in its mode).
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use dashmap::DashMap;
use parking_lot::RwLock;
use shardlock::{LockSet, PathLock};

/// The baseline's read lock+unlock of `path`.
fn prefix_read(map: &DashMap<Vec<String>, Arc<RwLock<()>>>, path: &[String]) {
    let locks: Vec<Arc<RwLock<()>>> = (1..=path.len())
        .map(|n| map.entry(path[..n].to_vec()).or_default().clone())
        .collect();
    let guards: Vec<_> = locks.iter().map(|l| l.read()).collect();
    drop(black_box(guards));
}

fn uncontended(c: &mut Criterion) {
    let lock = PathLock::new();
    let path = ["tenant", "users", "alice"];
    let mut group = c.benchmark_group("path_lock_depth3");
    group.bench_function("read", |b| b.iter(|| drop(black_box(lock.read(path)))));
    group.bench_function("write", |b| b.iter(|| drop(black_box(lock.write(path)))));
    let map = DashMap::new();
    let owned: Vec<String> = path.map(String::from).to_vec();
    group.bench_function("per_prefix_map_read", |b| {
        b.iter(|| prefix_read(&map, &owned))
    });
    let set = (0..8).fold(LockSet::new(), |s, i| {
        let leaf = format!("u{i}");
        if i % 4 == 0 {
            s.write(["tenant", "users", leaf.as_str()])
        } else {
            s.read(["tenant", "users", leaf.as_str()])
        }
    });
    group.bench_function("set_of_8", |b| {
        b.iter(|| drop(black_box(lock.lock(&set).unwrap())))
    });
    group.finish();
}

criterion_group!(benches, uncontended);
criterion_main!(benches);
