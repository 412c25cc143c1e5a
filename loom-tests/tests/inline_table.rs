//! loom models of InlineTable's bucket protocol (`src/line_table/inline_line.rs`):
//! optimistic reads against an in-place write, a remove and a resize, and
//! two writers handing the shard lock over. Values are pairs that are only
//! ever written with both halves equal, so a torn read shows as unequal
//! halves. Readers run on spawned threads: loom's bounded search finds the
//! races of these models from that side (with the reader on the main thread
//! it explores a single schedule).
//!
//! Mutation checks (by hand; each weakening applied alone): without the
//! version check, without the reader's `fence(Acquire)`, without the
//! writer's `fence(Release)`, with the final header store or the first
//! header load `Relaxed`, or without the odd version, the torn-write model
//! fails (and all but the last, the remove model too); freeing a replaced
//! array at once instead of through the epoch fails the resize model (a
//! freed array is poisoned under loom). A `Relaxed` publication of the new
//! array is not caught: each bucket's own `Release` header store already
//! orders its entries, and loom does not model the zeroed memory the
//! `Release` also covers.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use shardlock::InlineTable;
use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;

/// loom replays schedules, so the hasher must be deterministic.
type Table = InlineTable<u64, [u64; 2], BuildHasherDefault<DefaultHasher>>;

/// One shard; under loom it starts with one bucket of two slots.
fn table() -> Arc<Table> {
    Arc::new(InlineTable::with_shards(1, 0, Default::default()))
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = builder.max_branches.max(20_000);
    builder.check(f);
}

fn whole(pair: [u64; 2]) -> [u64; 2] {
    assert_eq!(pair[0], pair[1], "torn read {pair:?}");
    pair
}

#[test]
fn a_read_never_sees_a_torn_in_place_write() {
    model(|| {
        let t = table();
        t.insert(1, [10, 10]);
        let reader = {
            let t = t.clone();
            thread::spawn(move || {
                let seen = whole(t.get(&1).expect("present throughout"));
                assert!(seen == [10, 10] || seen == [20, 20]);
            })
        };
        t.insert(1, [20, 20]);
        reader.join().unwrap();
        assert_eq!(t.get(&1), Some([20, 20]));
    });
}

#[test]
fn a_read_racing_a_remove_sees_the_entry_whole_or_not_at_all() {
    model(|| {
        let t = table();
        t.insert(1, [10, 10]);
        t.insert(2, [30, 30]);
        let reader = {
            let t = t.clone();
            thread::spawn(move || {
                if let Some(seen) = t.get(&1) {
                    let seen = whole(seen);
                    assert!(seen == [10, 10] || seen == [40, 40], "{seen:?}");
                }
                assert_eq!(t.get(&2), Some([30, 30]), "a neighbour went missing");
            })
        };
        assert_eq!(t.remove(&1), Some([10, 10]));
        t.insert(1, [40, 40]);
        reader.join().unwrap();
        assert_eq!(t.get(&1), Some([40, 40]));
    });
}

#[test]
fn a_read_during_a_resize_finds_every_key() {
    model(|| {
        // Three keys fill 3/4 of the shard's two buckets (four slots), so
        // the fourth grows it: a new array, the old one retired through the
        // epoch while the reader may still be in it.
        let t = table();
        for k in 1..4 {
            t.insert(k, [k, k]);
        }
        let reader = {
            let t = t.clone();
            thread::spawn(move || {
                assert_eq!(t.get(&1), Some([1, 1]));
                assert_eq!(t.get(&3), Some([3, 3]));
            })
        };
        t.insert(4, [4, 4]);
        reader.join().unwrap();
        assert_eq!(t.get(&4), Some([4, 4]));
        assert_eq!(t.len(), 4);
    });
}

#[test]
fn two_writers_hand_the_shard_lock_over() {
    model(|| {
        let t = table();
        t.insert(1, [0, 0]);
        let other = {
            let t = t.clone();
            thread::spawn(move || {
                t.update(&1, |v| *v = [v[0] + 1, v[1] + 1]);
            })
        };
        t.update(&1, |v| *v = [v[0] + 1, v[1] + 1]);
        other.join().unwrap();
        assert_eq!(t.get(&1), Some([2, 2]), "an update was lost");
    });
}
