//! PathLock: uncontended lock+unlock on a depth-3 path, and sets of 8.
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use shardlock::{LockSet, PathLock};

fn uncontended(c: &mut Criterion) {
    let lock = PathLock::new();
    let path = ["tenant", "users", "alice"];
    let mut group = c.benchmark_group("path_lock_depth3");
    group.bench_function("read", |b| b.iter(|| drop(black_box(lock.read(path)))));
    group.bench_function("write", |b| b.iter(|| drop(black_box(lock.write(path)))));
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
