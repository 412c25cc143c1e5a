//! loom models of RouterTable's lock-free read path against writers, with
//! epoch reclamation (`src/line_table/node_line.rs`, `src/epoch.rs`). Under
//! loom a table has 2 shards, a shard starts at one line of 7 slots (it
//! grows at the 6th entry), and every write that retires something collects
//! at once. Readers run on spawned threads: loom explores the schedules of
//! spawned threads against each other.
//!
//! Mutation checks (run by hand): storing a node's pointer before its tag
//! on insert fails `a_key_removed_and_put_back_is_never_seen_new_then_absent`;
//! loading slots `Relaxed` instead of `Acquire` fails
//! `reader_against_a_rebuild_and_its_reclamation` (a race on the value's
//! cell).
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
        // Capacity 0: the writer's inserts create the other shard's array
        // and fill key 1's line while the reader looks keys up in it.
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
        let reader = {
            let table = table.clone();
            thread::spawn(move || (table.get(&1).unwrap(), table.get(&5)))
        };
        let (v, late) = reader.join().unwrap();
        assert!(v == 10 || v == 11);
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

/// Runs `write` on one thread while another reads key 1 (value 10): the
/// read must see a whole published value, and the value it reads must not
/// be freed under it.
fn reader_against(write: impl FnOnce(&Cells) + Send + 'static, allowed: &[Option<u32>]) {
    reader_against_prepared(|_| {}, write, allowed)
}

/// [`reader_against`] after `prepare` ran on the table.
fn reader_against_prepared(
    prepare: impl FnOnce(&Cells),
    write: impl FnOnce(&Cells) + Send + 'static,
    allowed: &[Option<u32>],
) {
    let table = cells();
    table.insert(1, Tracked::new(10));
    prepare(&table);
    let writer = {
        let table = table.clone();
        thread::spawn(move || write(&table))
    };
    let reader = {
        let table = table.clone();
        thread::spawn(move || table.get_with(&1, Tracked::get))
    };
    let seen = reader.join().unwrap();
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
        // Key 1's shard holds 5 entries in its one line of 7 slots; a
        // sixth rebuilds it into 2 lines, retiring the old array, then an
        // update replaces key 1.
        let same_shard: Vec<u32> = {
            use std::hash::BuildHasher;
            let hasher = BuildHasherDefault::<DefaultHasher>::default();
            let shard = hasher.hash_one(1u32) >> 63;
            (2..)
                .filter(|k| hasher.hash_one(k) >> 63 == shard)
                .take(5)
                .collect()
        };
        let (before, last) = same_shard.split_at(4);
        let last = last[0];
        reader_against_prepared(
            |t| {
                for &k in before {
                    t.insert(k, Tracked::new(k));
                }
            },
            move |t| {
                t.insert(last, Tracked::new(last));
                t.update(&1, |v| *v = Tracked::new(12));
            },
            &[Some(10), Some(12)],
        )
    });
}

#[test]
fn a_key_removed_and_put_back_is_never_seen_new_then_absent() {
    // The remove frees key 1's slot and the insert takes the same slot back.
    // Two reads in a row must not see the new value and then nothing: the
    // tag filter must never hide a filled slot, nor show a slot whose
    // insert has not happened (header before pointer on insert, pointer
    // before header on remove).
    loom::model(|| {
        let table = table();
        table.insert(1, 10);
        let writer = {
            let table = table.clone();
            thread::spawn(move || {
                table.remove(&1);
                table.insert(1, 11);
            })
        };
        let reader = {
            let table = table.clone();
            thread::spawn(move || (table.get(&1), table.get(&1)))
        };
        let (first, second) = reader.join().unwrap();
        writer.join().unwrap();
        assert!(
            !(first == Some(11) && second.is_none()),
            "saw the new value, then no value"
        );
        assert_eq!(table.get(&1), Some(11));
    });
}
