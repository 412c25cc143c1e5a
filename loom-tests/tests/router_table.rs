//! loom models of RouterTable's lock-free read path against writers, with
//! epoch reclamation (`src/router_table/shard.rs`, `src/epoch.rs`). Under
//! loom a table has 2 shards, a table starts at 4 slots, and every write
//! that retires something collects at once.
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

/// A value held in a loom cell: reading it races (and loom reports it) with
/// its `Drop`, which writes it, unless the free waited for the reader.
struct Tracked(loom::cell::UnsafeCell<u32>);

impl Tracked {
    fn new(v: u32) -> Self {
        Tracked(loom::cell::UnsafeCell::new(v))
    }

    fn get(&self) -> u32 {
        // SAFETY: written only by `drop`, which loom orders against this.
        self.0.with(|p| unsafe { *p })
    }
}

impl Clone for Tracked {
    fn clone(&self) -> Self {
        Tracked::new(self.get())
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        // SAFETY: `&mut self`; loom checks no reader's access is concurrent.
        self.0.with_mut(|p| unsafe { *p = 0 });
    }
}

type Cells = RouterTable<u32, Tracked, BuildHasherDefault<DefaultHasher>>;

fn cells() -> Arc<Cells> {
    Arc::new(Cells::with_hasher(BuildHasherDefault::default()))
}

/// Runs `write` on another thread while this one reads key 1 (value 10):
/// the read must see a whole published value, and the value it reads must
/// not be freed under it.
fn reader_against(write: impl FnOnce(&Cells) + Send + 'static, allowed: &[Option<u32>]) {
    let table = cells();
    table.insert(1, Tracked::new(10));
    let writer = {
        let table = table.clone();
        thread::spawn(move || write(&table))
    };
    let seen = table.get_with(&1, Tracked::get);
    assert!(allowed.contains(&seen), "read {seen:?}");
    writer.join().unwrap();
}

#[test]
fn reader_against_a_replace_and_its_reclamation() {
    loom::model(|| {
        reader_against(
            |t| assert_eq!(t.insert(1, Tracked::new(11)).map(|v| v.get()), Some(10)),
            &[Some(10), Some(11)],
        )
    });
}

#[test]
fn reader_against_a_remove_and_its_reclamation() {
    loom::model(|| {
        reader_against(
            |t| assert_eq!(t.remove(&1).map(|v| v.get()), Some(10)),
            &[Some(10), None],
        )
    });
}

#[test]
fn reader_against_a_rebuild_and_its_reclamation() {
    loom::model(|| {
        // Key 1's shard holds 2 entries in its 4 slots; a third rebuilds it
        // into 8, retiring the old table, then an update replaces key 1.
        let same_shard: Vec<u32> = {
            use std::hash::BuildHasher;
            let hasher = BuildHasherDefault::<DefaultHasher>::default();
            let shard = hasher.hash_one(1u32) >> 63;
            (2..)
                .filter(|k| hasher.hash_one(k) >> 63 == shard)
                .take(2)
                .collect()
        };
        reader_against(
            move |t| {
                for k in same_shard {
                    t.insert(k, Tracked::new(k));
                }
                t.update(&1, |v| *v = Tracked::new(12));
            },
            &[Some(10), Some(12)],
        )
    });
}
