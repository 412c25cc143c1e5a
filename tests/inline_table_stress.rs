//! Stress tests of `InlineTable` on real threads: readers never see a pair
//! that was never written together (16- and 24-byte entries), keys stay
//! visible while their shard grows and shrinks, and `len` is exact after a
//! churn. Bounded in operations, not time. AddressSanitizer runs these too.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{run_threads, THREADS};
use shardlock::InlineTable;

fn mix(key: u64) -> u64 {
    key.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

const ROUNDS: u64 = if cfg!(debug_assertions) {
    20_000
} else {
    200_000
};

#[test]
fn readers_never_see_a_torn_or_foreign_16_byte_entry() {
    // Value: version in the top 44 bits, the key in the low 20.
    let table = Arc::new(InlineTable::<u64, u64>::with_shards(
        2,
        0,
        Default::default(),
    ));
    for k in 0..64 {
        table.insert(k, k);
    }
    let t = table.clone();
    run_threads(move |thread| {
        for i in 0..ROUNDS {
            let key = (i * 7 + thread) % 64;
            if thread % 2 == 0 {
                t.insert(key, (i << 20) | key);
            } else if let Some(value) = t.get(&key) {
                assert_eq!(value & 0xF_FFFF, key, "a value of another key");
            }
        }
    });
    assert_eq!(table.len(), 64);
}

#[test]
fn readers_never_see_a_torn_24_byte_entry() {
    let table = Arc::new(InlineTable::<u64, [u64; 2]>::with_shards(
        2,
        0,
        Default::default(),
    ));
    for k in 0..64 {
        table.insert(k, [0, mix(k)]);
    }
    let t = table.clone();
    run_threads(move |thread| {
        for i in 0..ROUNDS {
            let key = (i * 5 + thread) % 64;
            match thread % 2 {
                0 => {
                    t.update(&key, |v| *v = [v[0] + 1, (v[0] + 1) ^ mix(key)]);
                }
                _ => {
                    let [version, check] = t.get(&key).expect("never removed");
                    assert_eq!(check, version ^ mix(key), "torn pair for {key}");
                }
            }
        }
    });
    let total: u64 = table.iter().map(|(_, [version, _])| version).sum();
    assert_eq!(total, (THREADS / 2) * ROUNDS, "an update was lost");
}

#[test]
fn keys_stay_visible_while_shards_grow_and_shrink() {
    let table = Arc::new(InlineTable::<u64, u64>::with_shards(
        4,
        0,
        Default::default(),
    ));
    const STABLE: u64 = 100;
    for k in 0..STABLE {
        table.insert(k, k);
    }
    let churning = Arc::new(AtomicBool::new(true));
    let (t, c) = (table.clone(), churning.clone());
    run_threads(move |thread| {
        if thread == 0 {
            // Grow every shard well past its size, then shrink it back.
            for round in 0..(ROUNDS / 20_000).max(3) {
                let base = 1_000_000 * (round + 1);
                for k in base..base + 5_000 {
                    t.insert(k, k);
                }
                for k in base..base + 5_000 {
                    assert_eq!(t.remove(&k), Some(k));
                }
            }
            c.store(false, Ordering::Release);
        } else {
            while c.load(Ordering::Acquire) {
                for k in 0..STABLE {
                    assert_eq!(t.get(&k), Some(k), "stable key {k} went missing");
                }
            }
        }
    });
    assert_eq!(table.len() as u64, STABLE);
}

#[test]
fn len_is_exact_after_a_churn() {
    let table = Arc::new(InlineTable::<u64, u32>::with_shards(
        4,
        0,
        Default::default(),
    ));
    let t = table.clone();
    run_threads(move |thread| {
        // Each thread owns keys ≡ thread (mod THREADS): it inserts 3,000 and
        // removes every third, twice over.
        for pass in 0..2 {
            for i in 0..3_000 {
                t.insert(i * THREADS + thread, pass);
            }
            for i in (0..3_000).step_by(3) {
                assert!(t.remove(&(i * THREADS + thread)).is_some());
            }
        }
    });
    assert_eq!(table.len() as u64, THREADS * 2_000);
    assert_eq!(table.iter().count() as u64, THREADS * 2_000);
}
