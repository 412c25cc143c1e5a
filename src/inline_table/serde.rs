//! `serde` support: an [`InlineTable`] (de)serializes as a map.

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};

use super::InlineTable;

impl<K: Serialize + Copy, V: Serialize + Copy, S> Serialize for InlineTable<K, V, S> {
    /// Serializes a consistent snapshot, length first: every shard is
    /// locked while its entries are copied, so writers wait for the copy
    /// (not for the serializer); readers never wait.
    fn serialize<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        let entries = self.snapshot();
        let mut map = serializer.serialize_map(Some(entries.len()))?;
        for (k, v) in &entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, K, V, S> Deserialize<'de> for InlineTable<K, V, S>
where
    K: Deserialize<'de> + Copy + Hash + Eq,
    V: Deserialize<'de> + Copy,
    S: BuildHasher + Default,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TableVisitor<K: Copy, V: Copy, S>(PhantomData<InlineTable<K, V, S>>);

        impl<'de, K, V, S> Visitor<'de> for TableVisitor<K, V, S>
        where
            K: Deserialize<'de> + Copy + Hash + Eq,
            V: Deserialize<'de> + Copy,
            S: BuildHasher + Default,
        {
            type Value = InlineTable<K, V, S>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let capacity = access.size_hint().unwrap_or(0).min(1 << 16);
                let table = InlineTable::with_capacity_and_hasher(capacity, S::default());
                while let Some((k, v)) = access.next_entry()? {
                    table.insert(k, v);
                }
                Ok(table)
            }
        }

        deserializer.deserialize_map(TableVisitor(PhantomData))
    }
}
