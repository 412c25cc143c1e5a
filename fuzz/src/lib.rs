//! Shared by the fuzz targets: RouterTable operations, applied both to the
//! table and to a `std::collections::HashMap` model, with the results compared.
pub mod grant_model;

use std::collections::HashMap;

use arbitrary::Arbitrary;
use shardlock::RouterTable;

/// One single-key operation. Keys are small so that operations collide.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum KeyOp {
    Insert(u8, u16),
    Get(u8),
    GetWith(u8),
    Contains(u8),
    Update(u8, u16),
    Remove(u8),
    RemoveIf(u8, u16),
    GetOrInsert(u8, u16),
}

/// An operation on the whole table.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Op {
    Key(KeyOp),
    /// Keep entries whose value is not divisible by the (non-zero) modulus,
    /// adding 1 to those kept.
    Retain(u8),
    Clear,
    Len,
}

pub type Table = RouterTable<u32, u32>;
pub type Model = HashMap<u32, u32>;

/// A table with few shards, so that keys share shards and shards grow.
pub fn table() -> Table {
    RouterTable::with_shards(2, 0, ahash::RandomState::new())
}

/// Applies `op` (with its key mapped through `key`) to both, and panics if
/// they disagree.
pub fn apply_key_op(table: &Table, model: &mut Model, op: KeyOp, key: impl Fn(u8) -> u32) {
    match op {
        KeyOp::Insert(k, v) => {
            assert_eq!(
                table.insert(key(k), v.into()),
                model.insert(key(k), v.into())
            )
        }
        KeyOp::Get(k) => assert_eq!(table.get(&key(k)), model.get(&key(k)).copied()),
        KeyOp::GetWith(k) => assert_eq!(
            table.get_with(&key(k), |v| v.wrapping_mul(3)),
            model.get(&key(k)).map(|v| v.wrapping_mul(3))
        ),
        KeyOp::Contains(k) => assert_eq!(table.contains_key(&key(k)), model.contains_key(&key(k))),
        KeyOp::Update(k, d) => {
            let bump = |v: &mut u32| {
                *v = v.wrapping_add(d.into());
                *v
            };
            assert_eq!(
                table.update(&key(k), bump),
                model.get_mut(&key(k)).map(bump)
            )
        }
        KeyOp::Remove(k) => assert_eq!(table.remove(&key(k)), model.remove(&key(k))),
        KeyOp::RemoveIf(k, limit) => {
            let small = |v: &u32| *v < u32::from(limit);
            let expected = match model.get(&key(k)) {
                Some(v) if small(v) => model.remove(&key(k)),
                _ => None,
            };
            assert_eq!(table.remove_if(&key(k), small), expected)
        }
        KeyOp::GetOrInsert(k, v) => {
            let expected = *model.entry(key(k)).or_insert(v.into());
            assert_eq!(table.get_or_insert_with(key(k), || v.into()), expected)
        }
    }
}

/// Applies a whole-table `op` to both and compares.
pub fn apply(table: &Table, model: &mut Model, op: Op) {
    match op {
        Op::Key(op) => apply_key_op(table, model, op, u32::from),
        Op::Retain(m) => {
            let m = u32::from(m.max(1));
            let keep = |v: &mut u32| {
                *v += 1;
                !(*v - 1).is_multiple_of(m)
            };
            table.retain(|_, v| keep(v));
            model.retain(|_, v| keep(v));
        }
        Op::Clear => {
            table.clear();
            model.clear();
        }
        Op::Len => assert_eq!(table.len(), model.len()),
    }
}

/// Panics unless the table holds exactly the model's entries.
pub fn assert_same(table: &Table, model: &Model) {
    let mut seen = Model::new();
    table.for_each(|k, v| assert!(seen.insert(*k, *v).is_none(), "key {k} seen twice"));
    assert_eq!(&seen, model);
    assert_eq!(table.len(), model.len());
}
