//! [`RouterTable`]: a sharded concurrent hash map for read-mostly maps.
//!
//! Each shard is a [`LinearMap`] behind a
//! [`LockedCell`](crate::sharded_rwlock::LockedCell); all shards share one
//! [`ReaderSlots`] matrix (a column each), so a thread's reader slots for
//! every shard sit together on the lines it alone writes. The lock protocol,
//! its orderings and its loom models are described in [`crate::raw_rwlock`].
//!
//! The one atomic this module adds is a [`SlotHint`]: a Relaxed copy of where
//! a shard's slots live, so that an operation can prefetch its key's home
//! slot before the lock's fence, which would otherwise hold the cache miss
//! back until the fence completes. The hint synchronizes nothing; a stale
//! one costs a useless prefetch.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::panic::{self, AssertUnwindSafe};

use std::ops::{Deref, DerefMut};
// Deliberately std, not the sync shim: see `SlotHint`.
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crossbeam_utils::CachePadded;

use crate::linear_map::LinearMap;
use crate::raw_rwlock::ReaderSlots;
use crate::reentrancy::{self, Access, Nesting};
use crate::sharded_rwlock::{LockedCell, ShardedReadGuard, ShardedWriteGuard};

#[cfg(feature = "serde")]
mod serde;

/// One shard, padded so that neighbouring shards' lock words never share a
/// line.
struct Shard<K, V> {
    map: LockedCell<LinearMap<K, V>>,
    hint: SlotHint,
}

/// Where a shard's slot array lives, copied out of the lock for prefetching.
/// Written (Relaxed) by each writer before it unlocks, read (Relaxed) before
/// locking. Plain std atomics, outside the sync shim: nothing is ever
/// concluded from them, so loom has nothing to explore.
#[derive(Default)]
struct SlotHint {
    /// Tag array address, slot array address, index mask.
    home: [AtomicUsize; 3],
}

impl SlotHint {
    fn publish<K, V>(&self, map: &LinearMap<K, V>) {
        for (hint, value) in self.home.iter().zip(map.home()) {
            hint.store(value, Relaxed);
        }
    }

    /// Starts loading `hash`'s home tag and home slot into the cache.
    #[inline(always)]
    fn prefetch<K, V>(&self, hash: u64) {
        #[cfg(all(target_arch = "x86_64", not(miri), not(loom)))]
        {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            let [tags, slots, mask] = [0, 1, 2].map(|i| self.home[i].load(Relaxed));
            let (tag, slot) = LinearMap::<K, V>::home_offsets(hash, mask);
            for address in [tags.wrapping_add(tag), slots.wrapping_add(slot)] {
                // SAFETY: a prefetch is only a hint: it never faults or reads
                // memory in the abstract machine, whatever the address (here
                // one in or near a map's arrays, possibly since freed).
                unsafe { _mm_prefetch::<_MM_HINT_T0>(address as *const i8) };
            }
        }
        let _ = hash;
    }
}

/// A shard's write guard; publishes the shard's [`SlotHint`] on unlock.
struct ShardWrite<'a, K, V> {
    guard: ShardedWriteGuard<'a, LinearMap<K, V>>,
    hint: &'a SlotHint,
}

impl<K, V> Deref for ShardWrite<'_, K, V> {
    type Target = LinearMap<K, V>;
    fn deref(&self) -> &LinearMap<K, V> {
        &self.guard
    }
}

impl<K, V> DerefMut for ShardWrite<'_, K, V> {
    fn deref_mut(&mut self) -> &mut LinearMap<K, V> {
        &mut self.guard
    }
}

impl<K, V> Drop for ShardWrite<'_, K, V> {
    fn drop(&mut self) {
        self.hint.publish(&self.guard);
    }
}

/// How many shards a table gets.
fn default_shards() -> usize {
    if cfg!(loom) {
        return 2;
    }
    (crate::thread_index::cpus() * 16)
        .next_power_of_two()
        .clamp(16, 256)
}

/// A concurrent hash map for read-mostly maps, such as a server's
/// socket address → peer table.
///
/// Sharded: a key's shard is chosen from its hash, and each shard is an
/// open-addressing table behind a [`ShardedRwLock`](crate::ShardedRwLock)-style
/// lock whose read path writes only the reading thread's own cache line.
/// Lookups therefore scale with cores; writes lock one shard.
///
/// # Semantics
/// * Every single-key operation is linearizable.
/// * [`for_each`](Self::for_each) and [`retain`](Self::retain) visit one shard
///   at a time. They are weakly consistent (an entry changed meanwhile may be
///   seen before or after the change) and hold each shard's lock only for
///   that shard's entries, so writers to other shards never wait for them.
/// * No references escape: values are returned by clone or seen inside a
///   closure, so no guard can be held across a write or an `.await`.
/// * Closures and reentrancy. User code that runs under a shard lock is
///   covered by one rule, whether it is a closure or a trait impl:
///   * under a read lock (`get_with` and `for_each` closures; `V::clone` in
///     `get` and `get_or_insert_with`; `K::eq` in every lookup), reads of
///     the same table work, and never wait behind a queued writer, so
///     nested reads on two threads cannot deadlock; writes panic at once;
///   * under a write lock (`update`, `retain`, `remove_if` and
///     `get_or_insert_with` closures; `K::eq` in write lookups; the `Drop`
///     of entries `retain` removes, and of the key `insert` or
///     `get_or_insert_with` was given when the table already had it), any
///     call on the same table panics at once.
///
///   `K::hash` runs before any lock is taken, and values returned to the
///   caller (by `insert`, `remove`, `clear`...) are dropped after the lock is
///   released, so they are unrestricted. Nothing deadlocks silently *within
///   one table*.
/// * Several tables: code under one table's lock may use another table, but
///   then the two tables are two locks, and the usual lock-ordering rule
///   applies: `a.update(k, |_| b.insert(..))` on one thread and
///   `b.update(k, |_| a.insert(..))` on another can deadlock, as two
///   `Mutex`es taken in opposite orders do. Take them in one global order,
///   or move the inner call out of the closure.
/// * Panics: a closure that panics releases every lock. If an `update` or
///   `retain` closure panics, the entry it was changing is removed, so no
///   half-written value is ever visible; the panic then resumes. A panicking
///   `Drop` during `clear` leaves every shard cleared.
/// * Shards shrink when they fall below a quarter full, but never below the
///   capacity asked for at construction.
/// * `Send` and `Sync` exactly when `RwLock<HashMap<K, V, S>>` would be:
///   values are shared across threads (`Sync`) and moved between them (`Send`).
///
/// ```compile_fail
/// fn sync<T: Sync>() {}
/// sync::<shardlock::RouterTable<u8, std::cell::Cell<u8>>>(); // Cell is not Sync
/// ```
/// ```compile_fail
/// fn send<T: Send>() {}
/// send::<shardlock::RouterTable<std::rc::Rc<u8>, u8>>(); // Rc is not Send
/// ```
///
/// # Panics
/// Constructing or growing a table whose single shard would need more than
/// 2^31 slots panics (use more shards), as does a capacity whose slot count
/// overflows `usize`.
///
/// # Memory
/// An empty table takes one padded 128-byte line per shard plus its reader
/// slots: `(rows + 1) × ⌈shards / 16⌉ × 128` bytes, where `rows` is
/// `clamp(2 × cores, 4, 64)` and `shards` defaults to
/// `clamp((16 × cores).next_power_of_two(), 16, 256)`. That is 5,376 bytes
/// on 2 cores and at most 165,888 bytes (64 cores and up). For many small
/// tables on a large host, [`with_shards`](Self::with_shards) with few
/// shards brings it down to a few KiB.
///
/// # Protocol
/// Each shard is a [`ShardedRwLock`](crate::ShardedRwLock)-style lock (the
/// protocol is summarised there) around an open-addressing map; all shards
/// share one reader-slot matrix, a column each, so one thread's reads of
/// every shard write only its own lines. Reads nested in a read of the same
/// table enter past a writer that is still draining readers (a CAS on the
/// shard's state word), which is what keeps nested reads deadlock-free. The
/// write-up is at the top of `src/raw_rwlock.rs`.
///
/// ```
/// use shardlock::RouterTable;
/// use std::net::SocketAddr;
///
/// let routes: RouterTable<SocketAddr, u32> = RouterTable::new();
/// let addr: SocketAddr = "10.0.0.7:4000".parse().unwrap();
/// routes.insert(addr, 7);
/// assert_eq!(routes.get(&addr), Some(7));
/// routes.update(&addr, |peer| *peer += 1);
/// assert_eq!(routes.get_with(&addr, |peer| *peer * 2), Some(16));
/// assert_eq!(routes.remove(&addr), Some(8));
/// assert!(routes.is_empty());
/// ```
pub struct RouterTable<K, V, S = ahash::RandomState> {
    shards: Box<[CachePadded<Shard<K, V>>]>,
    slots: ReaderSlots,
    hasher: S,
    shard_bits: u32,
    min_shard_capacity: usize,
}

// SAFETY: like `RwLock<HashMap<K, V>>`: shared `&K`/`&V` reach many threads
// at once (`Sync`), and entries move in and out, or are mutated, on any thread
// (`Send`). The hasher is only used through `&S`.
unsafe impl<K: Send + Sync, V: Send + Sync, S: Sync> Sync for RouterTable<K, V, S> {}

impl<K, V> RouterTable<K, V> {
    /// Creates an empty table with the default hasher (`ahash`).
    pub fn new() -> Self {
        Self::with_capacity_and_hasher(0, ahash::RandomState::new())
    }

    /// Creates an empty table with room for `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, ahash::RandomState::new())
    }
}

impl<K, V, S> RouterTable<K, V, S> {
    /// Creates an empty table hashing with `hasher`.
    pub fn with_hasher(hasher: S) -> Self {
        Self::with_capacity_and_hasher(0, hasher)
    }

    /// Creates an empty table with room for `capacity` entries, hashing with
    /// `hasher`.
    pub fn with_capacity_and_hasher(capacity: usize, hasher: S) -> Self {
        Self::with_shards(default_shards(), capacity, hasher)
    }

    /// Creates an empty table with `shards` shards (rounded up to a power of
    /// two, at most 2^16) and room for `capacity` entries.
    pub fn with_shards(shards: usize, capacity: usize, hasher: S) -> Self {
        let shards = shards.clamp(1, 1 << 16).next_power_of_two();
        let min_shard_capacity = capacity.div_ceil(shards);
        RouterTable {
            shards: (0..shards)
                .map(|_| {
                    let map = LinearMap::with_capacity(min_shard_capacity);
                    let hint = SlotHint::default();
                    hint.publish(&map);
                    CachePadded::new(Shard {
                        map: LockedCell::new(map),
                        hint,
                    })
                })
                .collect(),
            slots: ReaderSlots::new(shards),
            hasher,
            shard_bits: shards.trailing_zeros(),
            min_shard_capacity,
        }
    }

    /// The table's hasher.
    pub fn hasher(&self) -> &S {
        &self.hasher
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Identifies this table to the reentrancy check.
    #[inline]
    fn id(&self) -> usize {
        self.shards.as_ptr() as usize
    }

    /// Read-locks shard `index`; `nested` if this thread already holds a
    /// read of another shard of this table (see [`crate::raw_rwlock`]).
    #[inline]
    fn read_shard(&self, index: usize, nested: bool) -> ShardedReadGuard<'_, LinearMap<K, V>> {
        // SAFETY: shard `index` always locks through column `index` of
        // `self.slots`, and nothing else uses that column.
        unsafe { self.shards[index].map.read(&self.slots, index, nested) }
    }

    /// Runs `f` on shard `index` under its read lock. Every piece of user
    /// code a read runs (closures, `Clone`, `Eq`) runs inside `f`, so inside
    /// a scope that lets it read this table and makes writes panic.
    #[inline]
    fn with_read<R>(&self, index: usize, f: impl FnOnce(&LinearMap<K, V>) -> R) -> R {
        let nested = reentrancy::check(self.id(), false) == Nesting::NestedRead;
        let map = self.read_shard(index, nested);
        reentrancy::scoped(self.id(), Access::Shared, || f(&map))
    }

    /// Runs `f` on shard `index` under its write lock, inside a scope that
    /// makes every call on this table from user code (`f`'s closures, `Eq`,
    /// `Drop`) panic.
    #[inline]
    fn with_write<R>(&self, index: usize, f: impl FnOnce(&mut LinearMap<K, V>) -> R) -> R {
        reentrancy::check(self.id(), true);
        let shard = &self.shards[index];
        let mut map = ShardWrite {
            // SAFETY: as in `read_shard`.
            guard: unsafe { shard.map.write(&self.slots, index) },
            hint: &shard.hint,
        };
        reentrancy::scoped(self.id(), Access::Exclusive, || f(&mut map))
    }

    /// Runs `f` with every shard read-locked at once: a consistent snapshot.
    /// Writers wait meanwhile.
    #[cfg(feature = "serde")]
    fn with_all_read<R>(&self, f: impl FnOnce(&[ShardedReadGuard<'_, LinearMap<K, V>>]) -> R) -> R {
        let nested = reentrancy::check(self.id(), false) == Nesting::NestedRead;
        let mut maps = Vec::with_capacity(self.shards.len());
        for index in 0..self.shards.len() {
            // Holding earlier shards makes every later read nested.
            maps.push(self.read_shard(index, nested || index > 0));
        }
        reentrancy::scoped(self.id(), Access::Shared, || f(&maps))
    }

    /// Removes every entry, one shard at a time. The entries are dropped
    /// after each shard's lock is released; if a `Drop` panics, every other
    /// entry is still dropped and every shard cleared, and the first panic
    /// then resumes.
    pub fn clear(&self) {
        let old: Vec<LinearMap<K, V>> = (0..self.shards.len())
            .map(|index| {
                let fresh = LinearMap::with_capacity(self.min_shard_capacity);
                self.with_write(index, |map| std::mem::replace(map, fresh))
            })
            .collect();
        crate::unwind::each_then_resume(old.into_iter().flat_map(LinearMap::into_entries), drop);
    }

    /// The number of entries (a sum over shards, each read at a different
    /// moment while writers run).
    pub fn len(&self) -> usize {
        (0..self.shards.len())
            .map(|i| self.with_read(i, LinearMap::len))
            .sum()
    }

    /// Whether the table has no entries (with the same caveat as `len`).
    pub fn is_empty(&self) -> bool {
        (0..self.shards.len()).all(|i| self.with_read(i, LinearMap::is_empty))
    }

    /// Calls `f` on every entry, holding one shard's read lock at a time.
    /// Weakly consistent; see the type's docs for what `f` may do.
    pub fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        for index in 0..self.shards.len() {
            self.with_read(index, |map| map.iter().for_each(|(k, v)| f(k, v)));
        }
    }
}

impl<K, V, S> RouterTable<K, V, S>
where
    K: Hash + Eq,
    S: BuildHasher,
{
    #[inline]
    fn hash<Q: Hash + ?Sized>(&self, key: &Q) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard of `hash`: its top bits (a shard's map indexes by the low
    /// ones), after prefetching the key's home slot in it.
    #[inline]
    fn shard_of(&self, hash: u64) -> usize {
        // Two shifts, so that 0 shard bits (one shard) is not a shift by 64.
        let index = (hash >> 1 >> (63 - self.shard_bits)) as usize & (self.shards.len() - 1);
        self.shards[index].hint.prefetch::<K, V>(hash);
        index
    }

    /// Shrinks a shard that fell below a quarter full, down to half full but
    /// never below the capacity asked for at construction.
    fn maybe_shrink(&self, map: &mut LinearMap<K, V>) {
        if map.capacity() > self.min_shard_capacity.max(64) && map.len() * 4 < map.capacity() {
            map.shrink_to((map.len() * 2).max(self.min_shard_capacity));
        }
    }

    /// Inserts `value` at `key`, returning the value it replaced.
    pub fn insert(&self, key: K, value: V) -> Option<V> {
        let hash = self.hash(&key);
        self.with_write(self.shard_of(hash), |map| {
            match map.lookup(hash, |k| *k == key) {
                Ok(i) => Some(std::mem::replace(map.value_mut(i), value)),
                Err(vacant) => {
                    map.insert_vacant(vacant, hash, key, value);
                    None
                }
            }
        })
    }

    /// A clone of the value at `key`.
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: Clone,
    {
        self.find_with(key, V::clone)
    }

    /// Calls `f` on the value at `key` under the shard's read lock.
    /// Inside `f`, reads of this table work and writes panic.
    #[inline]
    pub fn get_with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.find_with(key, f)
    }

    /// Whether `key` is present.
    #[inline]
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.find_with(key, |_| ()).is_some()
    }

    /// Calls `f` on the value at `key` under the shard's read lock.
    #[inline]
    fn find_with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        self.with_read(self.shard_of(hash), |map| {
            let i = map.find(hash, |k| k.borrow() == key)?;
            Some(f(map.value(i)))
        })
    }

    /// Changes the value at `key` in place; `None` if `key` is absent.
    ///
    /// `f` runs under the shard's write lock and may not use this table. If
    /// it panics, the entry is removed (and dropped once the lock is
    /// released) and the panic resumes.
    pub fn update<Q, R>(&self, key: &Q, f: impl FnOnce(&mut V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        let outcome = self.with_write(self.shard_of(hash), |map| {
            let i = map.find(hash, |k| k.borrow() == key)?;
            Some(
                panic::catch_unwind(AssertUnwindSafe(|| f(map.value_mut(i))))
                    .map_err(|payload| (map.remove_at(i), payload)),
            )
        })?;
        match outcome {
            Ok(result) => Some(result),
            Err((entry, payload)) => {
                drop(entry);
                panic::resume_unwind(payload)
            }
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.remove_entry(key, |_| true)
    }

    /// Removes `key` if `f` approves its value, returning the value.
    /// `f` runs under the shard's write lock and may not use this table.
    pub fn remove_if<Q>(&self, key: &Q, f: impl FnOnce(&V) -> bool) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.remove_entry(key, f)
    }

    /// Removes `key` if `approve` accepts its value; shrinks the shard if
    /// that left it a quarter full.
    fn remove_entry<Q>(&self, key: &Q, approve: impl FnOnce(&V) -> bool) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        let (key, value) = self.with_write(self.shard_of(hash), |map| {
            let i = map.find(hash, |k| k.borrow() == key)?;
            if !approve(map.value(i)) {
                return None;
            }
            let entry = map.remove_at(i);
            self.maybe_shrink(map);
            Some(entry)
        })?;
        drop(key); // after the lock is released, like the returned value
        Some(value)
    }

    /// The value at `key`, inserting `f()` first if `key` is absent.
    ///
    /// `f` runs at most once per absent key, however many threads race on
    /// it: it runs under the shard's write lock (so it may not use this
    /// table). If it panics, nothing is inserted.
    pub fn get_or_insert_with(&self, key: K, f: impl FnOnce() -> V) -> V
    where
        V: Clone,
    {
        if let Some(value) = self.get(&key) {
            return value;
        }
        let hash = self.hash(&key);
        self.with_write(self.shard_of(hash), |map| {
            let vacant = match map.lookup(hash, |k| *k == key) {
                Ok(i) => return map.value(i).clone(),
                Err(vacant) => vacant,
            };
            // `f` cannot touch this table (the scope forbids it), so `vacant`
            // stays valid.
            let value = f();
            map.insert_vacant(vacant, hash, key, value.clone());
            value
        })
    }

    /// Keeps only the entries for which `f` returns `true`, one shard at a
    /// time under its write lock. `f` may not use this table. If it panics,
    /// the entry it was given is removed and the panic resumes.
    pub fn retain(&self, mut f: impl FnMut(&K, &mut V) -> bool) {
        for index in 0..self.shards.len() {
            let mut panicked = None;
            self.with_write(index, |map| {
                map.retain(|k, v| {
                    if panicked.is_some() {
                        return true;
                    }
                    panic::catch_unwind(AssertUnwindSafe(|| f(k, v))).unwrap_or_else(|payload| {
                        panicked = Some(payload);
                        false
                    })
                });
                self.maybe_shrink(map);
            });
            if let Some(payload) = panicked {
                panic::resume_unwind(payload);
            }
        }
    }
}

impl<K, V> Default for RouterTable<K, V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: fmt::Debug, V: fmt::Debug, S> fmt::Debug for RouterTable<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        self.for_each(|k, v| {
            map.entry(k, v);
        });
        map.finish()
    }
}

impl<K: Hash + Eq, V, S: BuildHasher> Extend<(K, V)> for RouterTable<K, V, S> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: Hash + Eq, V> FromIterator<(K, V)> for RouterTable<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut table = Self::with_capacity(iter.size_hint().0);
        table.extend(iter);
        table
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, not(loom)))]
mod regressions;
