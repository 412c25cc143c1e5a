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

/// A key in shard `shard` of a 2-shard table: the shard is the hash's top
/// bit (see `RouterTable::shard_of`).
fn key_in_shard(shard: u64) -> u32 {
    use std::hash::BuildHasher;
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    (0..).find(|k| hasher.hash_one(k) >> 63 == shard).unwrap()
}

#[test]
fn nested_reads_on_two_shards_never_wait_behind_draining_writers() {
    // Each reader reads one shard and, nested, the other; a writer on each
    // shard may queue in between. Nested reads that waited behind a writer
    // still draining readers would close a cycle (reader -> writer ->
    // other reader -> other writer -> reader): loom reports a deadlock. Four
    // threads are many schedules, so this model bounds preemptions at 1
    // (blocking and waking are not preemptions, so the cycle is reachable).
    let mut model = loom::model::Builder::new();
    model.preemption_bound = Some(1);
    model.check(|| {
        let table = table();
        let (a, b) = (key_in_shard(0), key_in_shard(1));
        table.insert(a, 1);
        table.insert(b, 2);
        let spawn_writer = |key: u32| {
            let table = table.clone();
            thread::spawn(move || table.insert(key, 9))
        };
        let other = {
            let table = table.clone();
            thread::spawn(move || table.get_with(&b, |_| table.get(&a)).flatten())
        };
        let writers = [spawn_writer(a), spawn_writer(b)];
        let mine = table.get_with(&a, |_| table.get(&b)).flatten();
        assert!(matches!(mine, Some(2) | Some(9)));
        assert!(matches!(other.join().unwrap(), Some(1) | Some(9)));
        for w in writers {
            w.join().unwrap();
        }
        assert_eq!((table.get(&a), table.get(&b)), (Some(9), Some(9)));
    });
}
