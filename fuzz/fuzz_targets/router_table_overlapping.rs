//! Two threads on *overlapping* keys, with values that encode versions.
//! Every version is assigned inside a closure that runs under the key's
//! shard lock, so per key the published versions only grow. Each thread
//! checks every value it reads: never torn (its check half matches), never
//! older than one it saw before for that key. At the end the table holds
//! exactly the keys whose last operation left them present.
#![no_main]
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shardlock::RouterTable;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    /// Publishes the next version, if present.
    Bump(u8),
    /// Inserts the next version, if absent.
    Create(u8),
    Remove(u8),
    Read(u8),
}

const KEYS: usize = 8;

/// A version and a check word derived from it and the key.
fn value(key: u32, version: u32) -> (u32, u64) {
    (
        version,
        u64::from(version).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(key),
    )
}

fuzz_target!(|ops: (Vec<Op>, Vec<Op>)| {
    let table: RouterTable<u32, (u32, u64)> = RouterTable::with_shards(2, 0, Default::default());
    let clocks: [AtomicU32; KEYS] = Default::default();
    let next = |k: u32| clocks[k as usize].fetch_add(1, Relaxed) + 1;
    std::thread::scope(|s| {
        let threads = [ops.0, ops.1].map(|ops| {
            let (table, next) = (&table, &next);
            s.spawn(move || {
                let mut seen: HashMap<u32, u32> = HashMap::new();
                let mut check = |k: u32, v: Option<(u32, u64)>| {
                    if let Some((version, word)) = v {
                        assert_eq!((version, word), value(k, version), "torn value");
                        let last = seen.entry(k).or_insert(0);
                        assert!(version >= *last, "key {k}: version {version} after {last}");
                        *last = version;
                    }
                };
                for op in ops {
                    match op {
                        Op::Bump(k) => {
                            let k = u32::from(k) % KEYS as u32;
                            let new = table.update(&k, |v| {
                                *v = value(k, next(k));
                                *v
                            });
                            check(k, new);
                        }
                        Op::Create(k) => {
                            let k = u32::from(k) % KEYS as u32;
                            let v = table.get_or_insert_with(k, || value(k, next(k)));
                            check(k, Some(v));
                        }
                        Op::Remove(k) => {
                            let k = u32::from(k) % KEYS as u32;
                            let old = table.remove(&k);
                            check(k, old);
                        }
                        Op::Read(k) => {
                            let k = u32::from(k) % KEYS as u32;
                            check(k, table.get(&k));
                            check(k, table.get_with(&k, |v| *v));
                        }
                    }
                }
            })
        });
        // Join explicitly: that waits for each thread's thread-local
        // destructors too, which the leak checker would otherwise see.
        for thread in threads {
            thread.join().unwrap();
        }
    });
    let mut entries = 0;
    table.for_each(|k, v| {
        assert_eq!(*v, value(*k, v.0), "torn value at rest");
        entries += 1;
    });
    assert_eq!(entries, table.len());
});
