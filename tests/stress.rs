//! Multi-thread stress tests of RouterTable (real threads; loom covers the
//! interleavings of small cases, these cover volume).
use std::collections::HashMap;
use std::sync::Arc;

use shardlock::RouterTable;

mod common;

use common::{run_threads, THREADS};

#[test]
fn concurrent_increments_on_shared_keys_sum_exactly() {
    const KEYS: u64 = 16;
    const ROUNDS: u64 = 20_000;
    let table = Arc::new(RouterTable::<u64, u64>::new());
    for k in 0..KEYS {
        table.insert(k, 0);
    }
    let t2 = table.clone();
    run_threads(move |t| {
        for i in 0..ROUNDS {
            let key = (i * 7 + t) % KEYS;
            t2.update(&key, |v| *v += 1).expect("key present");
            // Reads interleave with the updates.
            assert!(t2.get(&((key + 1) % KEYS)).is_some());
        }
    });
    let mut total = 0;
    table.for_each(|_, v| total += v);
    assert_eq!(total, THREADS * ROUNDS);
}

#[test]
fn disjoint_inserts_and_removes_end_in_the_expected_map() {
    const PER_THREAD: u64 = 20_000;
    let table = Arc::new(RouterTable::<u64, u64>::new());
    let t2 = table.clone();
    run_threads(move |t| {
        let base = t * 1_000_000;
        for i in 0..PER_THREAD {
            assert_eq!(t2.insert(base + i, i), None);
        }
        // Remove the odd keys again, check the even ones, update multiples of 3.
        for i in 0..PER_THREAD {
            let key = base + i;
            if i % 2 == 1 {
                assert_eq!(t2.remove(&key), Some(i));
            } else {
                assert_eq!(t2.get(&key), Some(i));
            }
            if i % 3 == 0 {
                t2.update(&key, |v| *v += 1);
            }
        }
    });
    let mut expected = HashMap::new();
    for t in 0..THREADS {
        for i in (0..PER_THREAD).step_by(2) {
            expected.insert(t * 1_000_000 + i, i + u64::from(i % 3 == 0));
        }
    }
    let mut actual = HashMap::new();
    table.for_each(|k, v| assert!(actual.insert(*k, *v).is_none()));
    assert_eq!(actual, expected);
    assert_eq!(table.len(), expected.len());
}

#[test]
fn for_each_and_retain_run_beside_writers() {
    let table = Arc::new(RouterTable::<u64, u64>::new());
    let t2 = table.clone();
    run_threads(move |t| {
        for i in 0..5_000u64 {
            match t {
                0 => {
                    let mut n = 0;
                    t2.for_each(|_, _| n += 1);
                }
                1 => t2.retain(|k, _| k % 1000 != 999),
                _ => {
                    t2.insert(t * 100_000 + i, i);
                }
            }
        }
    });
    table.retain(|k, _| k % 1000 != 999);
    assert_eq!(table.len(), 2 * 5_000 - 2 * 5);
}

/// Heap-owning values replaced, updated and removed while readers clone
/// them: every value a reader sees is whole (its two halves agree), and
/// per key the versions a reader sees never go backwards.
#[test]
fn readers_clone_heap_values_while_writers_replace_them() {
    const KEYS: u64 = 64;
    let rounds: u64 = if cfg!(debug_assertions) {
        20_000
    } else {
        200_000
    };
    let table = Arc::new(RouterTable::<u64, (String, Vec<u64>)>::new());
    let value = |k: u64, version: u64| (format!("{k}:{version}"), vec![k, version]);
    for k in 0..KEYS {
        table.insert(k, value(k, 0));
    }
    let t2 = table.clone();
    run_threads(move |t| {
        let mut newest = [0u64; KEYS as usize];
        for i in 0..rounds {
            let k = (i * 31 + t * 7) % KEYS;
            if t == 0 {
                // The one writer: versions only grow.
                let version = i + 1;
                match i % 4 {
                    0 => drop(t2.insert(k, value(k, version))),
                    1 => drop(t2.update(&k, |v| *v = value(k, version))),
                    2 => drop(t2.remove(&k)),
                    _ => drop(t2.get_or_insert_with(k, || value(k, version))),
                }
            } else if let Some((text, parts)) = t2.get(&k) {
                assert_eq!(text, format!("{}:{}", parts[0], parts[1]), "torn value");
                assert_eq!(parts[0], k);
                assert!(parts[1] >= newest[k as usize], "a version went backwards");
                newest[k as usize] = parts[1];
            }
        }
    });
}

/// Every value ever created is dropped exactly once: after a churn with
/// readers running, live values match the table, and reach zero when the
/// table is dropped.
#[test]
fn values_are_dropped_exactly_once_after_churn_and_drop() {
    use std::sync::atomic::{AtomicI64, Ordering::SeqCst};
    static LIVE: AtomicI64 = AtomicI64::new(0);
    struct Counted(u64);
    impl Counted {
        fn new(v: u64) -> Self {
            LIVE.fetch_add(1, SeqCst);
            Counted(v)
        }
    }
    impl Clone for Counted {
        fn clone(&self) -> Self {
            Counted::new(self.0)
        }
    }
    impl Drop for Counted {
        fn drop(&mut self) {
            LIVE.fetch_sub(1, SeqCst);
        }
    }
    let table = Arc::new(RouterTable::<u64, Counted>::new());
    let t2 = table.clone();
    run_threads(move |t| {
        for i in 0..20_000u64 {
            let k = (i * 13 + t) % 512;
            match (i + t) % 3 {
                0 => drop(t2.insert(k, Counted::new(i))),
                1 => drop(t2.remove(&k)),
                _ => drop(t2.get(&k)),
            }
        }
    });
    let table = Arc::try_unwrap(table).ok().expect("threads are done");
    // Retired values wait for a batch; the rest are in the table.
    let live = LIVE.load(SeqCst);
    assert!(
        live >= table.len() as i64,
        "a value in the table was dropped"
    );
    assert!(
        live <= (table.len() + table.retired()) as i64,
        "a value leaked"
    );
    table.clear();
    drop(table);
    assert_eq!(LIVE.load(SeqCst), 0, "values leaked or were dropped twice");
}
