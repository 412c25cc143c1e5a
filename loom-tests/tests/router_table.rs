//! loom models of RouterTable's read and write paths (`src/router_table.rs`
//! over `src/raw_rwlock.rs`). Under loom a table has 2 shards.
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use shardlock::RouterTable;
use std::collections::hash_map::DefaultHasher;
use std::hash::BuildHasherDefault;

/// loom replays schedules, so everything but the schedule must be
/// deterministic: a fixed-key hasher, not ahash's random seeds.
type Table = RouterTable<u32, u32, BuildHasherDefault<DefaultHasher>>;

fn table() -> Arc<Table> {
    Arc::new(Table::with_hasher(BuildHasherDefault::default()))
}

#[test]
fn reader_during_growth_sees_old_or_new_never_torn() {
    loom::model(|| {
        // Capacity 0: the writer's inserts grow (rehash) the shard's table
        // while the reader looks keys up in it.
        let table = table();
        table.insert(1, 10);
        let writer = {
            let table = table.clone();
            thread::spawn(move || {
                for k in 2..6 {
                    table.insert(k, k * 10);
                }
                table.update(&1, |v| *v += 1);
            })
        };
        let v = table.get(&1).unwrap();
        assert!(v == 10 || v == 11);
        let late = table.get(&5);
        assert!(late.is_none() || late == Some(50));
        writer.join().unwrap();
        assert_eq!(table.len(), 5);
        assert_eq!(table.get(&1), Some(11));
    });
}

#[test]
fn concurrent_updates_on_one_key_both_land() {
    loom::model(|| {
        let table = table();
        table.insert(7, 0);
        let other = {
            let table = table.clone();
            thread::spawn(move || table.update(&7, |v| *v += 1))
        };
        table.update(&7, |v| *v += 1);
        other.join().unwrap();
        assert_eq!(table.get(&7), Some(2));
    });
}

#[test]
fn get_or_insert_with_initialises_once() {
    loom::model(|| {
        let table = table();
        let calls = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
        let racer = {
            let (table, calls) = (table.clone(), calls.clone());
            thread::spawn(move || {
                table.get_or_insert_with(3, || {
                    calls.fetch_add(1, loom::sync::atomic::Ordering::Relaxed);
                    1
                })
            })
        };
        let mine = table.get_or_insert_with(3, || {
            calls.fetch_add(1, loom::sync::atomic::Ordering::Relaxed);
            2
        });
        let theirs = racer.join().unwrap();
        assert_eq!(mine, theirs);
        assert_eq!(calls.load(loom::sync::atomic::Ordering::Relaxed), 1);
    });
}
