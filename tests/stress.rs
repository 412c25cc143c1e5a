//! Multi-thread stress tests of RouterTable (real threads; loom covers the
//! interleavings of small cases, these cover volume).
use std::collections::HashMap;
use std::sync::{Arc, Barrier};

use shardlock::RouterTable;

const THREADS: u64 = 4;

fn run_threads(f: impl Fn(u64) + Send + Sync + 'static) {
    let f = Arc::new(f);
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f(t)
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
}

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
