//! Unit tests of `InlineTable` (they reach every unsafe block; miri runs them).

use std::collections::HashMap;

use super::InlineTable;

fn small() -> InlineTable<u64, u64> {
    InlineTable::with_shards(2, 0, ahash::RandomState::new())
}

#[test]
fn insert_get_update_remove() {
    let table = small();
    assert_eq!(table.get(&1), None);
    assert_eq!(table.insert(1, 10), None);
    assert_eq!(table.insert(1, 11), Some(10));
    assert_eq!(table.get(&1), Some(11));
    assert!(table.contains_key(&1));
    assert_eq!(table.update(&1, |v| std::mem::replace(v, 12)), Some(11));
    assert_eq!(table.update(&2, |v| *v), None);
    assert_eq!(table.get_or_insert_with(2, || 20), 20);
    assert_eq!(table.get_or_insert_with(2, || unreachable!()), 20);
    assert_eq!(table.len(), 2);
    assert_eq!(table.remove(&1), Some(12));
    assert_eq!(table.remove(&1), None);
    assert_eq!(table.len(), 1);
    table.clear();
    assert!(table.is_empty());
    assert_eq!(table.get(&2), None);
}

#[test]
fn matches_a_hashmap_through_growth_overflow_and_shrinking() {
    let table = small();
    let mut model = HashMap::new();
    let n: u64 = if cfg!(miri) { 300 } else { 5_000 };
    for i in 0..n {
        let k = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % (n / 2);
        assert_eq!(table.insert(k, i), model.insert(k, i), "insert {k}");
        if i % 3 == 0 {
            let gone = (i * 7) % (n / 2);
            assert_eq!(table.remove(&gone), model.remove(&gone), "remove {gone}");
        }
    }
    assert_eq!(table.len(), model.len());
    for k in 0..n {
        assert_eq!(table.get(&k), model.get(&k).copied(), "get {k}");
    }
    let mut seen: Vec<(u64, u64)> = table.iter().collect();
    let mut want: Vec<(u64, u64)> = model.iter().map(|(k, v)| (*k, *v)).collect();
    seen.sort_unstable();
    want.sort_unstable();
    assert_eq!(seen, want);
    // Shrink back down.
    for k in 0..n {
        assert_eq!(table.remove(&k), model.remove(&k));
    }
    assert!(table.is_empty());
    assert_eq!(table.iter().count(), 0);
}

#[test]
fn retain_keeps_changes_and_drops_rejects() {
    let table: InlineTable<u64, [u64; 2]> = (0..200).map(|k| (k, [k, 0])).collect();
    table.retain(|k, v| {
        v[1] = k * 2;
        k % 4 != 0
    });
    assert_eq!(table.len(), 150);
    for k in 0..200 {
        assert_eq!(table.get(&k), (k % 4 != 0).then_some([k, k * 2]));
    }
}

#[test]
fn get_many_matches_get() {
    let table: InlineTable<u64, u32> = (0..100).map(|k| (k, k as u32 * 3)).collect();
    let got = table.get_many([&1, &50, &99, &100, &7]);
    assert_eq!(got, [Some(3), Some(150), Some(297), None, Some(21)]);
    assert_eq!(InlineTable::<u64, u32>::new().get_many([&1]), [None]);
}

#[test]
fn writes_from_user_code_under_a_lock_panic_and_reads_work() {
    let table = small();
    table.insert(1, 1);
    let read = table.update(&1, |v| {
        *v = table.get(&1).unwrap() + 1; // a read: fine
        *v
    });
    assert_eq!(read, Some(2));
    let write = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        table.update(&1, |_| table.insert(2, 2));
    }));
    let message = crate::test_support::panic_message(write);
    assert!(message.contains("under a shard write lock"), "{message}");
    assert_eq!(table.get(&1), Some(2), "the panicking update wrote nothing");
    assert_eq!(table.get(&2), None);
    table.insert(3, 3); // no lock was left held
}

#[test]
fn debug_default_and_padding() {
    let table: InlineTable<u8, u64> = InlineTable::default();
    table.insert(1, 2);
    assert_eq!(format!("{table:?}"), "{1: 2}");
    // A key with padding (u8 then u32) and a value with padding.
    #[cfg(not(miri))]
    {
        let padded: InlineTable<(u8, u32), (u16, u64)> = InlineTable::new();
        padded.insert((1, 2), (3, 4));
        assert_eq!(padded.get(&(1, 2)), Some((3, 4)));
    }
}

#[cfg(feature = "serde")]
#[test]
fn serde_round_trips() {
    let table: InlineTable<u64, u32> = (0..50).map(|k| (k, k as u32)).collect();
    let bytes = bincode::serialize(&table).unwrap();
    let back: InlineTable<u64, u32> = bincode::deserialize(&bytes).unwrap();
    assert_eq!(back.len(), 50);
    assert!((0..50).all(|k| back.get(&k) == Some(k as u32)));
}

#[test]
fn a_panicking_retain_keeps_len_exact_and_leaves_no_lock() {
    let table: InlineTable<u64, u64> = InlineTable::with_shards(1, 0, Default::default());
    for k in 0..100 {
        table.insert(k, k);
    }
    let mut seen = 0;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        table.retain(|_, _| {
            seen += 1;
            if seen == 50 {
                panic!("retain");
            }
            false // remove everything before the panic
        })
    }));
    assert_eq!(crate::test_support::panic_message(outcome), "retain");
    assert_eq!(table.len(), 51, "49 removed, the 50th kept its entry");
    assert_eq!(table.iter().count(), 51);
    table.insert(1000, 1); // the shard lock was released
    assert_eq!(table.len(), 52);
}

/// The RouterTable calls that apply to InlineTable (issue 18 item 3).
#[test]
fn delete_compute_keys_values_clone_eq_and_reserve() {
    use crate::Compute;
    let table: InlineTable<u64, u64> = InlineTable::new();
    let bump = |t: &InlineTable<u64, u64>, k| {
        t.compute(k, |n| {
            let next = n.map_or(1, |n| n + 1);
            Compute::Put(next, next)
        })
    };
    assert_eq!(
        (bump(&table, 7), bump(&table, 7), bump(&table, 8)),
        (1, 2, 1)
    );
    assert_eq!(table.compute(8, Compute::Remove), Some(1));
    assert_eq!(table.compute(9, Compute::Keep), None);
    assert!(table.delete(&7) && !table.delete(&7));
    for k in 0..50 {
        table.insert(k, k * 2);
    }
    let mut keys: Vec<u64> = table.keys().collect();
    keys.sort_unstable();
    assert_eq!(keys, (0..50).collect::<Vec<_>>());
    assert_eq!(
        table.values().map(|v| v / 2).sum::<u64>(),
        (0..50u64).sum::<u64>()
    );
    let copy = table.clone();
    assert!(copy == table);
    copy.update(&3, |v| *v += 1);
    assert!(copy != table);
    let reserved: InlineTable<u64, u64> = InlineTable::with_shards(2, 0, ahash::RandomState::new());
    reserved.reserve(1_000);
    assert!(reserved.capacity() >= 1_000, "{}", reserved.capacity());
}
