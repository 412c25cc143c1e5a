//! Differential: an arbitrary operation sequence on `InlineTable` (16-byte
//! entries, and keys from a small range so that buckets overflow, grow and
//! shrink) and on `std::collections::HashMap`, compared after every step.
#![no_main]
use std::collections::HashMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shardlock::InlineTable;

#[derive(Arbitrary, Debug)]
enum Op {
    Insert(u8, u64),
    Remove(u8),
    Update(u8, u64),
    GetOrInsert(u8, u64),
    Get(u8),
    GetMany(u8, u8, u8),
    RetainBelow(u8),
    Clear,
}

fuzz_target!(|ops: Vec<Op>| {
    let table: InlineTable<u64, u64> =
        InlineTable::with_shards(2, 0, ahash::RandomState::with_seeds(1, 2, 3, 4));
    let mut model: HashMap<u64, u64> = HashMap::new();
    for op in ops {
        match op {
            Op::Insert(k, v) => assert_eq!(table.insert(k.into(), v), model.insert(k.into(), v)),
            Op::Remove(k) => assert_eq!(table.remove(&k.into()), model.remove(&k.into())),
            Op::Update(k, d) => {
                let want = model.get_mut(&k.into()).map(|v| {
                    *v = v.wrapping_add(d);
                    *v
                });
                assert_eq!(
                    table.update(&k.into(), |v| {
                        *v = v.wrapping_add(d);
                        *v
                    }),
                    want
                );
            }
            Op::GetOrInsert(k, v) => {
                let want = *model.entry(k.into()).or_insert(v);
                assert_eq!(table.get_or_insert_with(k.into(), || v), want);
            }
            Op::Get(k) => assert_eq!(table.get(&k.into()), model.get(&k.into()).copied()),
            Op::GetMany(a, b, c) => {
                let keys = [u64::from(a), u64::from(b), u64::from(c)];
                let want = keys.map(|k| model.get(&k).copied());
                assert_eq!(table.get_many([&keys[0], &keys[1], &keys[2]]), want);
            }
            Op::RetainBelow(n) => {
                table.retain(|k, _| *k < u64::from(n));
                model.retain(|k, _| *k < u64::from(n));
            }
            Op::Clear => {
                table.clear();
                model.clear();
            }
        }
        assert_eq!(table.len(), model.len());
    }
    let mut seen: Vec<(u64, u64)> = table.iter().collect();
    let mut want: Vec<(u64, u64)> = model.into_iter().collect();
    seen.sort_unstable();
    want.sort_unstable();
    assert_eq!(seen, want);
});
