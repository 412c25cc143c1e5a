//! Single-thread lookups on a 1k-entry table: RouterTable against a bare
//! std `HashMap` (hashbrown) with the same hasher, and against the peers.
use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use shardlock::RouterTable;

const N: u64 = 1000;

fn keys() -> Vec<u64> {
    // A fixed pseudo-random probe order over the present keys.
    (0..N).map(|i| (i * 617) % N).collect()
}

fn get_hit(c: &mut Criterion) {
    let keys = keys();
    let mut group = c.benchmark_group("get_hit_1k");

    let router: RouterTable<u64, u32> = (0..N).map(|k| (k, k as u32)).collect();
    group.bench_function("RouterTable", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(router.get(black_box(&keys[i])))
        })
    });

    let inline: shardlock::InlineTable<u64, u32> = (0..N).map(|k| (k, k as u32)).collect();
    group.bench_function("InlineTable", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(inline.get(black_box(&keys[i])))
        })
    });

    let std_map: HashMap<u64, u32, ahash::RandomState> = (0..N).map(|k| (k, k as u32)).collect();
    group.bench_function("std HashMap+ahash", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(std_map.get(black_box(&keys[i])).copied())
        })
    });

    let dash: dashmap::DashMap<u64, u32, ahash::RandomState> =
        (0..N).map(|k| (k, k as u32)).collect();
    group.bench_function("dashmap", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(dash.get(black_box(&keys[i])).map(|r| *r))
        })
    });

    let papaya: papaya::HashMap<u64, u32, ahash::RandomState> =
        papaya::HashMap::with_hasher(ahash::RandomState::new());
    for k in 0..N {
        papaya.pin().insert(k, k as u32);
    }
    group.bench_function("papaya", |b| {
        let map = papaya.pin();
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % keys.len();
            black_box(map.get(black_box(&keys[i])).copied())
        })
    });
    group.finish();
}

/// What crossbeam-epoch's `pin` (the named reclamation dependency) would
/// add to every lookup: a pin and unpin on an unpinned thread, which runs a
/// SeqCst fence (`lock`-prefixed on x86). RouterTable's own pin is a store
/// and a compiler fence; the whole `get` above includes it.
fn epoch_pin(c: &mut Criterion) {
    let mut group = c.benchmark_group("epoch_pin");
    group.bench_function("crossbeam-epoch pin+unpin", |b| {
        b.iter(|| drop(black_box(crossbeam_epoch::pin())))
    });
    group.finish();
}

criterion_group!(benches, get_hit, epoch_pin);
criterion_main!(benches);
