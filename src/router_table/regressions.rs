//! Regression tests for defects found in review (issue 6): deadlocks of
//! nested reads, user code under shard locks, panics in `clear`, serde
//! lengths and capacity overflow. Each failed on the code before its fix.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use super::RouterTable;
use crate::test_support::{at_thread_exit, finishes, leak, panic_message};

type Table = RouterTable<u64, u64>;

fn two_shards() -> Table {
    RouterTable::with_shards(2, 0, ahash::RandomState::new())
}

/// A key of `table` in shard `shard`.
fn key_in<V>(table: &RouterTable<u64, V>, shard: usize) -> u64 {
    (0..)
        .find(|k| table.lines.shard_of(table.hash(k)) == shard)
        .unwrap()
}

/// Item 4: T1 reads shard A and, nested, shard B; T2 the reverse; a writer
/// queues on each shard in between. Before the fix the nested reads waited
/// behind the queued writers, which waited for the outer reads: all four
/// threads hung.
#[test]
#[cfg_attr(miri, ignore = "sleeps to let writers queue")]
fn nested_reads_of_two_shards_do_not_deadlock_with_queued_writers() {
    for nested in ["get", "for_each", "len", "is_empty"] {
        finishes(nested, move || {
            let table = Arc::new(two_shards());
            let (a, b) = (key_in(&table, 0), key_in(&table, 1));
            table.insert(a, 1);
            table.insert(b, 2);
            let outer_in = Arc::new(Barrier::new(3));
            let reader = |outer: u64, inner: u64| {
                let (table, outer_in) = (table.clone(), outer_in.clone());
                std::thread::spawn(move || {
                    table.get_with(&outer, |_| {
                        outer_in.wait();
                        // Let both writers queue behind the outer reads.
                        std::thread::sleep(Duration::from_millis(50));
                        match nested {
                            "get" => table.get(&inner).unwrap(),
                            "for_each" => {
                                let mut n = 0;
                                table.for_each(|_, _| n += 1);
                                n
                            }
                            "len" => table.len() as u64,
                            _ => u64::from(table.is_empty()),
                        }
                    })
                })
            };
            let t1 = reader(a, b);
            let t2 = reader(b, a);
            outer_in.wait();
            let writer = |key: u64| {
                let table = table.clone();
                std::thread::spawn(move || table.insert(key, 9))
            };
            let (w1, w2) = (writer(a), writer(b));
            for t in [t1, t2] {
                t.join().unwrap();
            }
            w1.join().unwrap();
            w2.join().unwrap();
            assert_eq!((table.get(&a), table.get(&b)), (Some(9), Some(9)));
        });
    }
}

thread_local! {
    /// The table a [`Meddler`]'s `Clone` writes to, if any.
    static TARGET: Cell<Option<&'static Table>> = const { Cell::new(None) };
    /// The table an [`EqKey`]'s `Eq` writes to, if any.
    static KEYS: Cell<Option<&'static RouterTable<EqKey, u64>>> = const { Cell::new(None) };
}

/// A value whose `Clone` inserts into [`TARGET`].
struct Meddler(u64);

impl Clone for Meddler {
    fn clone(&self) -> Self {
        if let Some(table) = TARGET.get() {
            table.insert(1000 + self.0, 0);
        }
        Meddler(self.0)
    }
}

/// A key whose `Eq` inserts into [`KEYS`].
struct EqKey(u64);

impl std::hash::Hash for EqKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl PartialEq for EqKey {
    fn eq(&self, other: &Self) -> bool {
        if let Some(keys) = KEYS.get() {
            keys.insert(EqKey(self.0 + 1000), 0);
        }
        self.0 == other.0
    }
}

impl Eq for EqKey {}

/// Item 5: user `Clone` and `Eq` run under shard locks. Writing to another
/// table from them is allowed; writing to their own table must panic at
/// once, whatever shard the write falls in (it used to go through when it
/// fell in another shard, and deadlock when a writer was queued).
#[test]
fn user_clone_and_eq_under_shard_locks_are_covered() {
    let other: &'static Table = leak(two_shards());
    let values: RouterTable<u64, Meddler> = RouterTable::with_shards(2, 0, Default::default());
    values.insert(3, Meddler(3));
    TARGET.set(Some(other));
    assert_eq!(values.get(&3).map(|m| m.0), Some(3));
    TARGET.set(None);
    assert_eq!(other.get(&1003), Some(0));

    let keys: &'static RouterTable<EqKey, u64> =
        leak(RouterTable::with_shards(2, 0, Default::default()));
    for k in 0..8 {
        keys.insert(EqKey(k), k);
    }
    KEYS.set(Some(keys));
    for k in 0..8 {
        let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
            keys.get(&EqKey(k));
        })));
        assert!(msg.contains("during a read"), "{msg}");
        let msg = panic_message(catch_unwind(AssertUnwindSafe(|| {
            keys.insert(EqKey(k), 1);
        })));
        assert!(msg.contains("write lock"), "{msg}");
    }
    KEYS.set(None);
    assert_eq!(keys.len(), 8, "a write from Eq went through");
    for k in 0..8 {
        assert_eq!(keys.get(&EqKey(k)), Some(k), "locks were released");
    }
}

/// Item 5, the deadlocking case: a `Clone` (run by `get`) that writes into
/// its own table, while a writer queues on the same shard. Before the fix
/// the clone's insert waited behind that writer, which waited for the
/// clone's read: a silent deadlock. Now the insert panics at once.
#[test]
#[cfg_attr(miri, ignore = "sleeps to let a writer queue")]
fn a_clone_writing_its_own_table_panics_even_with_a_writer_queued() {
    thread_local! {
        static SELF_TABLE: Cell<Option<&'static RouterTable<u64, Cloner>>> =
            const { Cell::new(None) };
    }
    struct Cloner;
    impl Clone for Cloner {
        fn clone(&self) -> Self {
            if let Some(table) = SELF_TABLE.get() {
                std::thread::sleep(Duration::from_millis(50)); // a writer queues
                table.insert(7, Cloner);
            }
            Cloner
        }
    }
    let msg = finishes("clone inserting into its own table", || {
        let table: &'static RouterTable<u64, Cloner> =
            leak(RouterTable::with_shards(1, 0, Default::default()));
        table.insert(7, Cloner);
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            table.insert(8, Cloner);
        });
        SELF_TABLE.set(Some(table));
        let result = catch_unwind(AssertUnwindSafe(|| {
            table.get(&7);
        }));
        SELF_TABLE.set(None);
        writer.join().unwrap();
        panic_message(result)
    });
    assert!(msg.contains("during a read"), "{msg}");
}

/// Item 8: a `Drop` that panics during `clear` used to leave the shard's
/// tags and length stale, so keys went missing and duplicates crept in.
/// Entries are now dropped once no reader can see them (during `clear` if
/// none is pinned, else at a later write or when the table drops); wherever
/// a `Drop` panics, every shard is cleared and every entry dropped once.
#[test]
fn a_panicking_drop_during_clear_leaves_every_shard_cleared() {
    static DROPS: AtomicUsize = AtomicUsize::new(0);
    #[derive(Clone)]
    struct Bomb(bool);
    impl Drop for Bomb {
        fn drop(&mut self) {
            DROPS.fetch_add(1, SeqCst);
            if self.0 {
                panic!("bomb");
            }
        }
    }
    let table: RouterTable<u64, Bomb> = RouterTable::with_shards(4, 0, Default::default());
    for k in 0..64 {
        table.insert(k, Bomb(k % 10 == 3));
    }
    let cleared = catch_unwind(AssertUnwindSafe(|| table.clear()));
    assert_eq!(table.len(), 0);
    let mut seen = 0;
    table.for_each(|_, _| seen += 1);
    assert_eq!(seen, 0, "stale entries survived");
    for k in 0..64 {
        assert!(!table.contains_key(&k));
        assert!(table.insert(k, Bomb(false)).is_none());
        assert!(table.insert(k, Bomb(false)).is_some(), "duplicate key");
    }
    assert_eq!(table.len(), 64);
    let dropped = catch_unwind(AssertUnwindSafe(|| drop(table)));
    assert!(
        cleared.is_err() || dropped.is_err(),
        "a bomb never went off"
    );
    // 64 + 128 inserted, 64 clones returned by the second inserts.
    assert_eq!(DROPS.load(SeqCst), 64 + 128 + 64);
}

/// Item 12: length-prefixed formats need the map's length up front.
#[cfg(feature = "serde")]
#[test]
fn serde_round_trips_through_a_length_prefixed_format() {
    let table = two_shards();
    for k in 0..50 {
        table.insert(k, k * 3);
    }
    let bytes = bincode::serialize(&table).expect("bincode needs the length");
    let back: Table = bincode::deserialize(&bytes).unwrap();
    assert_eq!(back.len(), 50);
    for k in 0..50 {
        assert_eq!(back.get(&k), Some(k * 3));
    }
}

/// Item 13: a capacity whose slot count overflows used to give an 8-slot
/// shard in release builds.
#[test]
#[should_panic(expected = "capacity overflow")]
fn a_capacity_near_usize_max_panics() {
    let _ = Table::with_shards(1, usize::MAX - 4, ahash::RandomState::new());
}

/// Item 3: every closure-taking method used to panic inside a thread-local
/// destructor (its reentrancy scope lived in a destroyed thread-local), and
/// a panic there aborts the process.
#[test]
fn closure_methods_work_from_a_thread_local_destructor() {
    let table: &'static Table = leak(two_shards());
    for k in 0..8 {
        table.insert(k, k);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        at_thread_exit(move || {
            let mut sum = 0;
            table.for_each(|_, v| sum += v);
            let doubled = table.get_with(&3, |v| v * 2);
            table.update(&4, |v| *v += 100);
            table.retain(|k, _| *k != 5);
            let removed = table.remove_if(&6, |v| *v == 6);
            let inserted = table.get_or_insert_with(9, || 90);
            tx.send((sum, doubled, removed, inserted)).unwrap();
        });
        // Use the table now, so its thread-locals exist and are destroyed
        // before the destructor above runs.
        table.get_with(&0, |_| ());
    });
    let got = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(got, (28, Some(6), Some(6), 90));
    assert_eq!(table.get(&4), Some(104));
    assert!(!table.contains_key(&5));
    assert_eq!(table.len(), 7);
}
