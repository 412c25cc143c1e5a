use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::RouterTable;
use crate::test_support::panic_message;

fn small() -> RouterTable<u64, u64> {
    // Few shards keep miri fast and make shard collisions likely.
    RouterTable::with_shards(4, 0, ahash::RandomState::new())
}

#[test]
fn insert_get_remove_follow_a_hash_map() {
    let table = small();
    let mut model = HashMap::new();
    for i in 0..200u64 {
        let key = i * 7 % 61;
        match i % 5 {
            0 | 1 => assert_eq!(table.insert(key, i), model.insert(key, i)),
            2 => assert_eq!(table.remove(&key), model.remove(&key)),
            3 => assert_eq!(
                table.update(&key, |v| {
                    *v += 1;
                    *v
                }),
                model.get_mut(&key).map(|v| {
                    *v += 1;
                    *v
                })
            ),
            _ => assert_eq!(table.get(&key), model.get(&key).copied()),
        }
        assert_eq!(table.len(), model.len());
    }
    let mut seen = HashMap::new();
    table.for_each(|k, v| assert!(seen.insert(*k, *v).is_none()));
    assert_eq!(seen, model);
}

#[test]
fn borrowed_lookups_and_contains() {
    let table: RouterTable<String, usize> = RouterTable::new();
    table.insert("alpha".to_string(), 1);
    assert!(table.contains_key("alpha"));
    assert!(!table.contains_key("beta"));
    assert_eq!(table.get_with("alpha", |v| v + 1), Some(2));
    assert_eq!(table.remove_if("alpha", |v| *v == 2), None);
    assert_eq!(table.remove_if("alpha", |v| *v == 1), Some(1));
    assert!(table.is_empty());
}

#[test]
fn get_or_insert_with_runs_init_once() {
    let table = small();
    let calls = AtomicUsize::new(0);
    for _ in 0..3 {
        let v = table.get_or_insert_with(5, || {
            calls.fetch_add(1, Ordering::Relaxed);
            50
        });
        assert_eq!(v, 50);
    }
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[test]
fn get_or_insert_with_races_initialise_once() {
    let table = Arc::new(RouterTable::<u64, u64>::new());
    let calls = Arc::new(AtomicUsize::new(0));
    let threads = if cfg!(miri) { 2 } else { 4 };
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (table, calls) = (table.clone(), calls.clone());
            std::thread::spawn(move || {
                (0..16u64)
                    .map(|key| {
                        table.get_or_insert_with(key, || {
                            calls.fetch_add(1, Ordering::Relaxed);
                            key * 100 + t
                        })
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let results: Vec<Vec<u64>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(
        calls.load(Ordering::Relaxed),
        16,
        "an initialiser ran twice"
    );
    for r in &results {
        assert_eq!(r, &results[0], "threads saw different values");
    }
}

#[test]
fn retain_and_clear() {
    let mut table = small();
    table.extend((0..100).map(|i| (i, i)));
    table.retain(|k, v| {
        *v += 1;
        k % 2 == 0
    });
    assert_eq!(table.len(), 50);
    assert_eq!(table.get(&4), Some(5));
    assert_eq!(table.get(&5), None);
    table.clear();
    assert!(table.is_empty());
}

#[test]
fn shards_shrink_after_mass_removal_but_not_below_the_asked_capacity() {
    let mut table: RouterTable<u64, u64> =
        RouterTable::with_shards(1, 0, ahash::RandomState::new());
    let n = if cfg!(miri) { 300 } else { 5000 };
    table.extend((0..n).map(|i| (i, i)));
    let grown = table.shard_capacity(0);
    for i in 0..n - 10 {
        table.remove(&i);
    }
    assert!(table.shard_capacity(0) < grown / 4);
    let mut reserved: RouterTable<u64, u64> =
        RouterTable::with_shards(1, 1000, ahash::RandomState::new());
    reserved.extend((0..1000).map(|i| (i, i)));
    for i in 0..1000 {
        reserved.remove(&i);
    }
    assert!(reserved.shard_capacity(0) >= 1000);
}

#[test]
fn reads_inside_get_with_and_for_each_work() {
    let mut table = small();
    table.extend((0..20).map(|i| (i, i)));
    let sum = table.get_with(&3, |v| *v + table.get(&4).unwrap()).unwrap();
    assert_eq!(sum, 7);
    let mut total = 0;
    table.for_each(|k, _| total += table.get(k).unwrap());
    assert_eq!(total, (0..20).sum::<u64>());
}

#[test]
fn writes_inside_read_closures_panic_and_release_locks() {
    let mut table = small();
    table.extend((0..20).map(|i| (i, i)));
    for key in 0..20 {
        let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
            table.get_with(&key, |_| table.insert(100, 1));
        })));
        assert!(msg.contains("get_with/for_each"), "{msg}");
    }
    let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
        table.for_each(|k, _| {
            table.remove(k);
        })
    })));
    assert!(msg.contains("only reads"), "{msg}");
    // Every lock was released: writes work again.
    assert_eq!(table.insert(100, 1), None);
    assert_eq!(table.len(), 21);
}

#[test]
fn any_call_inside_write_closures_panics() {
    let mut table = small();
    table.extend((0..8).map(|i| (i, i)));
    for key in 0..8 {
        let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
            table.update(&key, |_| table.get(&((key + 1) % 8)));
        })));
        assert!(msg.contains("update/retain"), "{msg}");
    }
    let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
        table.get_or_insert_with(99, || table.len() as u64);
    })));
    assert!(msg.contains("write lock"), "{msg}");
    assert_eq!(table.get(&99), None, "a panicking initialiser inserted");
    assert_eq!(table.len(), 8, "a panicking update removed its entry");
    assert_eq!(
        table.get(&3),
        Some(3),
        "a panicking update changed its entry"
    );
}

#[test]
fn panicking_update_keeps_the_old_value_and_releases_the_lock() {
    let table = small();
    table.insert(1, 10);
    let result = catch_unwind(AssertUnwindSafe(|| {
        table.update(&1, |v| {
            *v = 999; // half-written...
            panic!("boom");
        });
    }));
    assert!(result.is_err());
    assert_eq!(table.get(&1), Some(10), "...and never visible");
    assert_eq!(table.insert(1, 11), Some(10));
}

#[test]
fn panicking_retain_keeps_the_visited_entry_unchanged() {
    let mut table = small();
    table.extend((0..10).map(|i| (i, i)));
    let result = catch_unwind(AssertUnwindSafe(|| {
        table.retain(|k, v| {
            *v += 100;
            if *k == 5 {
                panic!("boom")
            }
            true
        });
    }));
    assert!(result.is_err());
    assert_eq!(table.get(&5), Some(5));
    assert_eq!(table.len(), 10);
    table.retain(|_, _| true); // locks were released
}

#[test]
fn debug_and_from_iterator() {
    let table: RouterTable<u8, &str> = [(1, "a")].into_iter().collect();
    assert_eq!(format!("{table:?}"), r#"{1: "a"}"#);
    let empty: RouterTable<u8, u8> = RouterTable::default();
    assert_eq!(format!("{empty:?}"), "{}");
}

#[test]
fn send_and_sync_exactly_when_sound() {
    fn is_send<T: Send>() {}
    fn is_sync<T: Sync>() {}
    is_send::<RouterTable<String, Vec<u8>>>();
    is_sync::<RouterTable<String, Vec<u8>>>();
    is_send::<RouterTable<u64, std::cell::Cell<u8>>>();
    // The negative cases (`Rc` keys, `Cell` values) are compile_fail
    // doctests on `RouterTable`.
}

#[cfg(feature = "serde")]
#[test]
fn serde_round_trip() {
    let mut table = small();
    table.extend((0..5).map(|i| (i, i * i)));
    let json = serde_json::to_string(&table).unwrap();
    let back: RouterTable<u64, u64> = serde_json::from_str(&json).unwrap();
    let mut entries = Vec::new();
    back.for_each(|k, v| entries.push((*k, *v)));
    entries.sort_unstable();
    assert_eq!(entries, (0..5).map(|i| (i, i * i)).collect::<Vec<_>>());
}

#[test]
fn get_many_matches_get() {
    let table: RouterTable<u64, String> = (0..100).map(|k| (k, k.to_string())).collect();
    let got = table.get_many([&1, &50, &100, &99]);
    assert_eq!(
        got,
        [Some("1".into()), Some("50".into()), None, Some("99".into())]
    );
    let empty: RouterTable<u64, u64> = RouterTable::new();
    assert_eq!(empty.get_many([&1, &2]), [None, None]);
}

use super::Compute;

/// Issue 18 item 3: what dashmap, papaya and scc users port from.
#[test]
fn removal_for_any_value_compute_iterators_clone_eq_and_reserve() {
    // A value that is not Clone.
    struct Conn(u32);
    let conns: RouterTable<u32, Conn> = RouterTable::new();
    conns.compute(1, |old| {
        assert!(old.is_none());
        Compute::Put(Conn(10), ())
    });
    conns.compute(2, |_| Compute::Put(Conn(20), ()));
    assert_eq!(conns.remove_with(&1, |c| c.0), Some(10));
    assert_eq!(conns.remove_with(&1, |c| c.0), None);
    assert!(conns.delete(&2) && !conns.delete(&2));
    assert!(conns.is_empty());

    // compute: insert, update, keep, remove, atomically.
    let counts: RouterTable<&str, u64> = RouterTable::new();
    let bump = |t: &RouterTable<&str, u64>, k| {
        t.compute(k, |n| {
            let next = n.map_or(1, |n| n + 1);
            Compute::Put(next, next)
        })
    };
    assert_eq!(
        (bump(&counts, "a"), bump(&counts, "a"), bump(&counts, "b")),
        (1, 2, 1)
    );
    assert_eq!(counts.compute("a", |n| Compute::Keep(n.copied())), Some(2));
    assert!(!counts.compute("z", |n| Compute::Remove(n.is_some())));
    assert_eq!(
        counts.compute("b", |n| Compute::Remove(n.copied())),
        Some(1)
    );
    assert_eq!((counts.len(), counts.get(&"a")), (1, Some(2)));
    // A panicking closure changes nothing and leaves no lock.
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        counts.compute("a", |_| -> Compute<u64, ()> { panic!("no") })
    }));
    assert!(caught.is_err());
    assert_eq!(counts.get(&"a"), Some(2));
    // User code under the lock may not call the table.
    let nested = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        counts.compute("a", |_| Compute::Keep(counts.get(&"a")))
    }));
    assert!(nested.is_err(), "a call from compute's closure panics");

    // Iterators with early exit; keys and values; Clone and PartialEq.
    let table: RouterTable<u32, String> = (0..100).map(|i| (i, i.to_string())).collect();
    assert_eq!(table.iter().take(3).count(), 3);
    let mut keys: Vec<u32> = table.keys().collect();
    keys.sort_unstable();
    assert_eq!(keys, (0..100).collect::<Vec<_>>());
    assert_eq!(table.values().filter(|v| v.len() == 1).count(), 10);
    let copy = table.clone();
    assert!(copy == table);
    copy.insert(5, "five".into());
    assert!(copy != table);

    // reserve and capacity.
    let grown: RouterTable<u64, u64> = RouterTable::with_shards(4, 0, ahash::RandomState::new());
    assert_eq!(grown.capacity(), 0);
    grown.reserve(10_000);
    assert!(grown.capacity() >= 10_000, "{}", grown.capacity());
}
