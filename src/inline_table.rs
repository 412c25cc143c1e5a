//! [`InlineTable`]: a concurrent hash map of `Copy` keys and values stored
//! inline in 64-byte bucket lines, so a lookup touches one line.
//!
//! The table is a [`LineTable`] of [`InlineLine`]s: the structure, the
//! probe, growth and reclamation are written up in `line_table`, and the
//! optimistic read of an inline line in `line_table/inline_line.rs`. loom
//! checks readers against an in-place write, a remove and a resize
//! (`loom-tests/tests/inline_table.rs`).

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::panic::{self, AssertUnwindSafe};

use crate::epoch;
use crate::line_table::{drop_garbage, InlineLine, Line, LineTable, Locked, ShardByShard, Verdict};
use crate::reentrancy::{self, Access};
use crate::router_table::Compute;

#[cfg(feature = "serde")]
mod serde;

/// A concurrent hash map for `Copy` keys and values, stored inline in
/// 64-byte bucket lines: a lookup touches one line (two when its home
/// bucket overflowed), takes no lock and stores nothing; a write changes
/// the entry in place under its shard's lock and allocates nothing.
///
/// Pick it over [`RouterTable`](crate::RouterTable) when keys and values
/// are small `Copy` types (key and value, each rounded up to a multiple of 4
/// bytes, in at most 28 bytes together: `u64 → u32` (4 entries a line),
/// `u64 → u64` (3), `u64 → [u64; 2]` (2), `(u32, u32) → f64`...), and
/// RouterTable when they are not (strings, `Arc`s, anything with a `Drop`).
///
/// # Semantics
/// * Every single-key operation is linearizable.
/// * Values come back by copy; no reference into the table escapes.
/// * [`iter`](Self::iter) and [`retain`](Self::retain) go one shard at a
///   time and are weakly consistent: `iter` copies a shard's entries (each
///   one validated whole) and yields the copies; `retain` holds each
///   shard's lock for that shard only.
/// * User code and reentrancy: reads hold no lock and run no user code but
///   `K::hash` and `K::eq`, which may do anything, this table included.
///   Writes run `K::hash`, `K::eq` and their closure (`update`,
///   `get_or_insert_with`, `retain`) under the shard's lock: from there,
///   reads of this table work, and writes to it panic at once instead of
///   deadlocking. Waits across threads are not detected (a closure that
///   waits for another thread writing the same shard hangs, as under any
///   mutex). A closure that panics leaves no lock held and writes nothing.
/// * Keys and values are copied word by word with atomic loads, so a read
///   racing a write is never a data race; padding inside `K` or `V` is
///   allowed (see the `bucket` module).
///
/// # Sizes
/// `K` and `V`, each rounded up to a multiple of 4 bytes, must fit in 28
/// bytes together, so that a line holds at least two entries. Larger ones
/// fail to compile (a `const` assertion that names `RouterTable`, which
/// stores entries of any size behind pointers):
///
/// ```compile_fail
/// let _ = shardlock::InlineTable::<[u64; 2], [u64; 2]>::new();
/// ```
///
/// # Memory
/// One 64-byte line per bucket, 2 to 4 entries a line, at a load between
/// 3/16 and 3/4 of the slots (see BENCHMARKS.md for bytes per entry).
/// Arrays are the only allocations; a replaced array is freed through the
/// epoch once no reader is in it, as `RouterTable` frees what it keeps (see
/// its `# Memory`: no further writes are needed).
///
/// ```
/// use shardlock::InlineTable;
///
/// let hits: InlineTable<u64, [u64; 2]> = InlineTable::new();
/// hits.insert(7, [1, 10]);
/// hits.update(&7, |v| v[0] += 1);
/// assert_eq!(hits.get(&7), Some([2, 10]));
/// assert_eq!(hits.get_many([&7, &8]), [Some([2, 10]), None]);
/// assert_eq!(hits.remove(&7), Some([2, 10]));
/// assert!(hits.is_empty());
/// ```
pub struct InlineTable<K: Copy, V: Copy, S = ahash::RandomState> {
    lines: LineTable<InlineLine<K, V>>,
    hasher: S,
}

// SAFETY: the table owns plain copies of `K` and `V` (no `Drop`, no
// references handed out); they are copied into and out of it from any
// thread, so it is `Send` and `Sync` when they are `Send`. The hasher is
// moved with the table and shared by `&`.
unsafe impl<K: Copy + Send, V: Copy + Send, S: Send> Send for InlineTable<K, V, S> {}
// SAFETY: as above; `&S` is shared across threads.
unsafe impl<K: Copy + Send, V: Copy + Send, S: Sync> Sync for InlineTable<K, V, S> {}

type Shard<'a, K, V> = Locked<'a, InlineLine<K, V>>;

impl<K: Copy, V: Copy> InlineTable<K, V> {
    /// Creates an empty table with the default hasher (`ahash`).
    pub fn new() -> Self {
        Self::with_capacity_and_hasher(0, ahash::RandomState::new())
    }

    /// Creates an empty table with room for `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, ahash::RandomState::new())
    }
}

impl<K: Copy, V: Copy, S> InlineTable<K, V, S> {
    /// Creates an empty table hashing with `hasher`.
    pub fn with_hasher(hasher: S) -> Self {
        Self::with_capacity_and_hasher(0, hasher)
    }

    /// Creates an empty table with room for `capacity` entries, hashing with
    /// `hasher`.
    pub fn with_capacity_and_hasher(capacity: usize, hasher: S) -> Self {
        Self::with_shards(crate::router_table::default_shards(), capacity, hasher)
    }

    /// Creates an empty table with `shards` shards (rounded up to a power of
    /// two, at most 2^16) and room for `capacity` entries.
    pub fn with_shards(shards: usize, capacity: usize, hasher: S) -> Self {
        const {
            assert!(
                InlineLine::<K, V>::FIT >= 2,
                "InlineTable: the key and value, each rounded up to a multiple of 4 bytes, must \
                 fit in 28 bytes together (two entries per cache line); use RouterTable for \
                 larger ones"
            );
        }
        InlineTable {
            lines: LineTable::new(shards, capacity),
            hasher,
        }
    }

    /// The table's hasher.
    pub fn hasher(&self) -> &S {
        &self.hasher
    }

    /// The number of entries (a sum over shards, each read at a different
    /// moment while writers run).
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Whether the table has no entries (with the same caveat as `len`).
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

impl<K: Copy, V: Copy, S> InlineTable<K, V, S> {
    /// Removes every entry, one shard at a time.
    pub fn clear(&self) {
        reentrancy::check(self.lines.id(), true);
        for index in 0..self.lines.shards() {
            let mut shard = self.lines.lock(index);
            shard.clear();
            drop_garbage(shard.finish_now());
        }
        self.lines.after_operation();
    }

    /// The entries, as copies, one shard at a time (each shard's entries
    /// are copied when the iterator reaches it; weakly consistent).
    pub fn iter(&self) -> Iter<'_, K, V, S> {
        Iter {
            table: self,
            shards: ShardByShard::new(self.lines.shards()),
        }
    }

    /// How many entries the table holds before some shard grows.
    pub fn capacity(&self) -> usize {
        self.lines.capacity()
    }

    /// The keys, as copies (see [`iter`](Self::iter)).
    pub fn keys(&self) -> impl Iterator<Item = K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// The values, as copies (see [`iter`](Self::iter)).
    pub fn values(&self) -> impl Iterator<Item = V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// Every entry, copied with every shard locked at once (a consistent
    /// snapshot; writers wait meanwhile, readers do not).
    #[cfg(feature = "serde")]
    fn snapshot(&self) -> Vec<(K, V)> {
        reentrancy::check(self.lines.id(), true);
        let shards: Vec<Shard<'_, K, V>> = (0..self.lines.shards())
            .map(|i| self.lines.lock(i))
            .collect();
        let mut entries = Vec::with_capacity(shards.iter().map(|s| s.live()).sum());
        for shard in &shards {
            for line in shard.lines().unwrap_or(&[]) {
                line.read_each(|k, v| entries.push((k, v)));
            }
        }
        entries
    }

    /// Copies shard `index`'s entries into `out`.
    fn copy_shard(&self, index: usize, out: &mut Vec<(K, V)>) {
        {
            let guard = epoch::pin();
            self.lines
                .read_shard(&guard, index, |k, v| out.push((k, v)));
        }
        self.lines.after_operation();
    }
}

impl<K, V, S> InlineTable<K, V, S>
where
    K: Copy + Hash + Eq,
    V: Copy,
    S: BuildHasher,
{
    #[inline(always)]
    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// An entry's hash, for rebuilds (`K::hash` runs under the lock).
    fn rehome(&self) -> impl Fn(&K, &V) -> u64 + '_ {
        |key, _| self.hasher.hash_one(key)
    }

    /// A copy of the value at `key`.
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        let found = {
            let guard = epoch::pin();
            self.lines
                .search(&guard, hash, |k: &K, v| (k.borrow() == key).then_some(*v))
        };
        self.lines.after_operation();
        found
    }

    /// Whether `key` is present.
    #[inline]
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(key).is_some()
    }

    /// The values of a batch of keys, in order. Hashes every key, prefetches
    /// every home line, then probes: the batch's cache misses overlap, so
    /// on a table much larger than the caches this is faster than as many
    /// `get`s (see BENCHMARKS.md). On small tables, `get` is as fast.
    pub fn get_many<Q, const N: usize>(&self, keys: [&Q; N]) -> [Option<V>; N]
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hashes = keys.map(|key| self.hash(key));
        let results = {
            let guard = epoch::pin();
            for &hash in &hashes {
                self.lines.prefetch(&guard, hash);
            }
            let mut at = 0;
            keys.map(|key| {
                at += 1;
                self.lines.search(&guard, hashes[at - 1], |k: &K, v| {
                    (k.borrow() == key).then_some(*v)
                })
            })
        };
        self.lines.after_operation();
        results
    }

    /// Runs `f` on `key`'s shard under its lock, in a scope that makes
    /// writes to this table from user code panic; then collects, unlocked.
    fn with_write<R>(&self, hash: u64, f: impl FnOnce(&mut Shard<'_, K, V>) -> R) -> R {
        let id = self.lines.id();
        reentrancy::check(id, true);
        let mut shard = self.lines.lock(self.lines.shard_of(hash));
        let result = reentrancy::scoped(id, Access::Exclusive, || f(&mut shard));
        drop_garbage(shard.finish());
        self.lines.after_operation();
        result
    }

    /// Inserts `value` at `key`, returning the value it replaced.
    pub fn insert(&self, key: K, value: V) -> Option<V> {
        let hash = self.hash(&key);
        self.with_write(hash, |shard| match shard.lookup(hash, |k| *k == key) {
            Some(spot) => {
                let old = shard.value(spot);
                shard.replace(spot, &key, &value);
                Some(old)
            }
            None => {
                shard.insert_new(hash, &key, &value, self.rehome());
                None
            }
        })
    }

    /// Removes `key`, returning its value.
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        self.with_write(hash, |shard| {
            let spot = shard.lookup(hash, |k| k.borrow() == key)?;
            let value = shard.value(spot);
            shard.remove(spot, self.rehome());
            Some(value)
        })
    }

    /// Removes `key`; whether it was there.
    pub fn delete<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.remove(key).is_some()
    }

    /// One atomic read-modify-write of `key`, as
    /// [`RouterTable::compute`](crate::RouterTable::compute): `f` sees a
    /// copy of the current value (or `None`) and decides to keep, put or
    /// remove it; it runs under the shard's lock, at most once.
    pub fn compute<R>(&self, key: K, f: impl FnOnce(Option<V>) -> Compute<V, R>) -> R {
        let hash = self.hash(&key);
        self.with_write(hash, |shard| {
            let spot = shard.lookup(hash, |k| *k == key);
            match f(spot.map(|spot| shard.value(spot))) {
                Compute::Keep(result) => result,
                Compute::Remove(result) => {
                    if let Some(spot) = spot {
                        shard.remove(spot, self.rehome());
                    }
                    result
                }
                Compute::Put(value, result) => {
                    match spot {
                        Some(spot) => shard.replace(spot, &key, &value),
                        None => shard.insert_new(hash, &key, &value, self.rehome()),
                    }
                    result
                }
            }
        })
    }

    /// Makes room for `additional` more entries than the table holds now
    /// (see [`RouterTable::reserve`](crate::RouterTable::reserve)).
    pub fn reserve(&self, additional: usize) {
        let per_shard = additional.div_ceil(self.lines.shards());
        let id = self.lines.id();
        reentrancy::check(id, true);
        for index in 0..self.lines.shards() {
            let mut shard = self.lines.lock(index);
            reentrancy::scoped(id, Access::Exclusive, || {
                shard.reserve(per_shard, self.rehome())
            });
            drop_garbage(shard.finish());
        }
        self.lines.after_operation();
    }

    /// Changes the value at `key` in place; `None` if `key` is absent. `f`
    /// runs on a copy under the shard's lock (see the type's docs), and the
    /// result is written whole; if `f` panics, nothing is written.
    pub fn update<Q, R>(&self, key: &Q, f: impl FnOnce(&mut V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        self.with_write(hash, |shard| {
            let spot = shard.lookup(hash, |k| k.borrow() == key)?;
            let mut value = shard.value(spot);
            let result = f(&mut value);
            shard.replace(spot, &shard.key(spot), &value);
            Some(result)
        })
    }

    /// The value at `key`, inserting `f()` first if `key` is absent. `f`
    /// runs at most once per absent key, under the shard's lock.
    pub fn get_or_insert_with(&self, key: K, f: impl FnOnce() -> V) -> V {
        if let Some(value) = self.get(&key) {
            return value;
        }
        let hash = self.hash(&key);
        self.with_write(hash, |shard| {
            if let Some(spot) = shard.lookup(hash, |k| *k == key) {
                return shard.value(spot);
            }
            let value = f();
            shard.insert_new(hash, &key, &value, self.rehome());
            value
        })
    }

    /// Keeps only the entries for which `f` returns `true`, one shard at a
    /// time under its lock; `f` may change the value it is given, and a kept
    /// entry is written back whole. If `f` panics, the entry it was given
    /// keeps its old value and the panic resumes.
    pub fn retain(&self, mut f: impl FnMut(&K, &mut V) -> bool) {
        let id = self.lines.id();
        reentrancy::check(id, true);
        for index in 0..self.lines.shards() {
            let mut shard = self.lines.lock(index);
            // Each removal is counted as it happens, so `len` stays exact
            // even if `f` panics partway; the panic resumes once the shard
            // is consistent.
            let panicked = reentrancy::scoped(id, Access::Exclusive, || {
                shard
                    .sweep(|line, slot| {
                        let key = line.key(slot);
                        let mut value = line.value(slot);
                        match panic::catch_unwind(AssertUnwindSafe(|| f(&key, &mut value)))? {
                            true => Ok(Verdict::Replace(key, value)),
                            false => Ok(Verdict::Remove),
                        }
                    })
                    .err()
            });
            if panicked.is_none() {
                reentrancy::scoped(id, Access::Exclusive, || shard.tidy(self.rehome()));
            }
            drop_garbage(shard.finish());
            if let Some(payload) = panicked {
                panic::resume_unwind(payload);
            }
        }
        self.lines.after_operation();
    }
}

/// The iterator of [`InlineTable::iter`]: yields `(K, V)` copies.
pub struct Iter<'a, K: Copy, V: Copy, S> {
    table: &'a InlineTable<K, V, S>,
    shards: ShardByShard<(K, V)>,
}

impl<K: Copy, V: Copy, S> Iterator for Iter<'_, K, V, S> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        let table = self.table;
        self.shards.next(|index, out| table.copy_shard(index, out))
    }
}

impl<'a, K: Copy, V: Copy, S> IntoIterator for &'a InlineTable<K, V, S> {
    type Item = (K, V);
    type IntoIter = Iter<'a, K, V, S>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K: Copy + Hash + Eq, V: Copy, S: BuildHasher + Clone> Clone for InlineTable<K, V, S> {
    /// A table with the same shards, hasher and entries (copied one shard
    /// at a time: weakly consistent while writers run).
    fn clone(&self) -> Self {
        let table = Self::with_shards(self.lines.shards(), self.len(), self.hasher.clone());
        for (k, v) in self.iter() {
            table.insert(k, v);
        }
        table
    }
}

impl<K: Copy + Hash + Eq, V: Copy + PartialEq, S: BuildHasher> PartialEq for InlineTable<K, V, S> {
    /// The same keys with equal values (compared one entry at a time: only
    /// meaningful while neither table is written).
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(&k) == Some(v))
    }
}

impl<K: Copy + Hash + Eq, V: Copy + Eq, S: BuildHasher> Eq for InlineTable<K, V, S> {}

impl<K: Copy, V: Copy> Default for InlineTable<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + fmt::Debug, V: Copy + fmt::Debug, S> fmt::Debug for InlineTable<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Copy + Hash + Eq, V: Copy, S: BuildHasher> Extend<(K, V)> for InlineTable<K, V, S> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: Copy + Hash + Eq, V: Copy> FromIterator<(K, V)> for InlineTable<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut table = Self::with_capacity(iter.size_hint().0);
        table.extend(iter);
        table
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
