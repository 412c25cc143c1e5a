//! Random lookups on a table much larger than the caches, one thread, for
//! the batched-lookup comparison: ns per lookup for `get` in a loop and for
//! `get_many` batches of 16, on InlineTable and RouterTable, and dashmap's
//! `get` for reference.
//!
//! ```sh
//! cargo run --release --example big_lookup [-- ENTRIES LOOKUPS ROUNDS]
//! ```
use std::hint::black_box;
use std::time::Instant;

use shardlock::{InlineTable, RouterTable};

fn keys(n: u64) -> impl Iterator<Item = u64> {
    (0..n).map(|i| (i ^ 0x5555_5555).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().expect("a number"));
    let entries = args.next().unwrap_or(3 << 20);
    let lookups = args.next().unwrap_or(20_000_000);
    let rounds = args.next().unwrap_or(3);
    let all: Vec<u64> = keys(entries).collect();
    // A fixed pseudo-random lookup order over present keys.
    let order: Vec<u64> = (0..lookups)
        .map(|i| all[(i.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 7) as usize % all.len()])
        .collect();
    let inline: InlineTable<u64, u32> = InlineTable::with_capacity(entries as usize);
    let router: RouterTable<u64, u32> = RouterTable::with_capacity(entries as usize);
    let dash: dashmap::DashMap<u64, u32, ahash::RandomState> =
        dashmap::DashMap::with_capacity_and_hasher(entries as usize, Default::default());
    for &k in &all {
        inline.insert(k, k as u32);
        router.insert(k, k as u32);
        dash.insert(k, k as u32);
    }
    let time = |f: &dyn Fn() -> u64| {
        let start = Instant::now();
        black_box(f());
        start.elapsed().as_nanos() as f64 / lookups as f64
    };
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); 5];
    for _ in 0..rounds {
        samples[0].push(time(&|| {
            order.iter().filter(|k| inline.get(k).is_some()).count() as u64
        }));
        samples[1].push(time(&|| {
            order
                .chunks_exact(16)
                .map(|c| {
                    let batch: [&u64; 16] = std::array::from_fn(|i| &c[i]);
                    inline
                        .get_many(batch)
                        .iter()
                        .filter(|v| v.is_some())
                        .count() as u64
                })
                .sum()
        }));
        samples[2].push(time(&|| {
            order.iter().filter(|k| router.get(k).is_some()).count() as u64
        }));
        samples[3].push(time(&|| {
            order
                .chunks_exact(16)
                .map(|c| {
                    let batch: [&u64; 16] = std::array::from_fn(|i| &c[i]);
                    router
                        .get_many(batch)
                        .iter()
                        .filter(|v| v.is_some())
                        .count() as u64
                })
                .sum()
        }));
        samples[4].push(time(&|| {
            order.iter().filter(|k| dash.get(*k).is_some()).count() as u64
        }));
    }
    let names = [
        "InlineTable get",
        "InlineTable get_many(16)",
        "RouterTable get",
        "RouterTable get_many(16)",
        "dashmap get",
    ];
    println!("{entries} entries, {lookups} random hits, median of {rounds} interleaved rounds, ns per lookup");
    for (name, s) in names.iter().zip(samples) {
        println!("| {name} | {:.1} |", median(s));
    }
}
