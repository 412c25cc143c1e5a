//! `serde` support: a [`RouterTable`] (de)serializes as a map.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::RouterTable;
use crate::line_table::Line;

impl<K: Serialize, V: Serialize, S> Serialize for RouterTable<K, V, S> {
    /// Serializes a consistent snapshot, length first (so length-prefixed
    /// formats such as bincode work): every shard is write-locked for the
    /// duration, so writers wait meanwhile (readers do not).
    fn serialize<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        self.with_all_locked(|shards| {
            let len = shards.iter().map(|shard| shard.live()).sum();
            let mut map = serializer.serialize_map(Some(len))?;
            for shard in shards {
                for line in shard.lines().unwrap_or(&[]) {
                    for slot in line.occupied() {
                        // SAFETY: every shard is locked, so no node is freed.
                        let node = unsafe { line.key(slot).node() };
                        map.serialize_entry(&node.key, &node.value)?;
                    }
                }
            }
            map.end()
        })
    }
}

impl<'de, K, V, S> Deserialize<'de> for RouterTable<K, V, S>
where
    K: Deserialize<'de> + Hash + Eq,
    V: Deserialize<'de>,
    S: BuildHasher + Default,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TableVisitor<K, V, S>(PhantomData<RouterTable<K, V, S>>);

        impl<'de, K, V, S> Visitor<'de> for TableVisitor<K, V, S>
        where
            K: Deserialize<'de> + Hash + Eq,
            V: Deserialize<'de>,
            S: BuildHasher + Default,
        {
            type Value = RouterTable<K, V, S>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let capacity = access.size_hint().unwrap_or(0).min(1 << 16);
                let table = RouterTable::with_capacity_and_hasher(capacity, S::default());
                while let Some((k, v)) = access.next_entry()? {
                    table.put(k, v, |_| ());
                }
                Ok(table)
            }
        }

        deserializer.deserialize_map(TableVisitor(PhantomData))
    }
}
