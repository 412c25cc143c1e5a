//! [`RouterTable`]: a sharded concurrent hash map for read-mostly maps.
//!
//! The table is a [`LineTable`] of [`NodeLine`]s: bucket lines of tags and
//! pointers to immutable nodes. Readers take no lock: they pin the thread
//! ([`crate::epoch`]) and probe one line (a miss) or one line and a node (a
//! hit). Writers lock one shard's mutex, store new nodes' pointers in place,
//! and retire what they unlink; retired memory is freed once no pinned
//! reader can reach it. The layout and protocol are written up in
//! `line_table` and `line_table/node_line.rs`.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::panic::{self, AssertUnwindSafe};

use crate::epoch;
use crate::line_table::node_line::{Node, NodeRef};
use crate::line_table::{
    drop_garbage, Line, LineTable, Locked, NodeLine, ShardByShard, Spot, Verdict,
};
use crate::reentrancy::{self, Access};

#[cfg(feature = "serde")]
mod serde;

/// What a `compute` closure decides for its key ([`RouterTable::compute`],
/// [`InlineTable::compute`](crate::InlineTable::compute)), with what the
/// call returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compute<V, R> {
    /// Leave the entry as it is (present or absent).
    Keep(R),
    /// Store this value at the key (inserting or replacing).
    Put(V, R),
    /// Remove the entry, if there is one.
    Remove(R),
}

/// How many shards a table gets (`InlineTable` too).
pub(crate) fn default_shards() -> usize {
    if cfg!(loom) {
        return 2;
    }
    (crate::thread_index::cpus() * 16)
        .next_power_of_two()
        .clamp(16, 256)
}

type Shard<'a, K, V> = Locked<'a, NodeLine<K, V>>;

/// A node's hash, for rebuilds (no `K::hash` under the lock).
fn rehome<K, V>(node: &NodeRef<K, V>, _: &()) -> u64 {
    // SAFETY: called by the lock holder on a node in the shard.
    u64::from(unsafe { node.node() }.hash)
}

/// A concurrent hash map for read-mostly maps, such as a server's
/// socket address → peer table.
///
/// Sharded: a key's shard is chosen from its hash. Reads take no lock: they
/// execute no atomic read-modify-write and no StoreLoad fence, and write
/// only the reading thread's own cache line, so lookups scale with cores and
/// never wait for a writer. Writes lock one shard and publish immutable
/// entries, so a reader never sees a value while it changes; memory they
/// unlink is reclaimed by epochs.
///
/// # Semantics
/// * Every single-key operation is linearizable.
/// * [`for_each`](Self::for_each) and [`retain`](Self::retain) visit one shard
///   at a time. They are weakly consistent (an entry changed meanwhile may be
///   seen before or after the change); `retain` holds each shard's lock only
///   for that shard's entries, and `for_each` holds none.
/// * No references escape: values are returned by clone or seen inside a
///   closure, so nothing can be held across a write or an `.await`.
/// * Values are immutable once published. `update` and `retain` change a
///   *clone* of the value and publish it whole (so they need `K: Clone` and
///   `V: Clone`); `insert` over a key publishes a new entry with the key it
///   was given. `insert`, `remove` and `remove_if` return a clone of the
///   value they replaced or removed (so they need `V: Clone`): the original
///   is dropped, exactly once, after every reader that could still see it
///   has moved on.
/// * Closures and reentrancy. User code a table runs is covered by one rule,
///   whether it is a closure or a trait impl:
///   * during a read (`get_with` and `for_each` closures; `V::clone` in
///     `get` and `get_or_insert_with`; `K::eq` in every lookup), reads of
///     the same table work (they never wait for anything); writes panic at
///     once;
///   * under a shard's write lock (`update`, `retain`, `remove_if` and
///     `get_or_insert_with` closures; `K::eq`, `K::clone` and `V::clone` in
///     writes), any call on the same table panics at once.
///
///   `K::hash` runs before any lock is taken, and every key or value of
///   the user's that a table drops (values replaced or removed, the clones
///   `update` and `retain` work on or reject, a key `insert` or
///   `get_or_insert_with` did not keep, also when `K::eq` or a closure
///   panics) is dropped after the lock is released, so `Drop` is
///   unrestricted.
/// * Deadlocks: user code that calls the table it runs under, on the same
///   thread, panics as above, and reads never wait. Waits *across* threads
///   are not detected: an `update` closure that waits for another thread
///   while that thread writes the same shard hangs, as under any mutex.
/// * Several tables: code under one table's write lock may use another
///   table, but then the two tables are two locks, and the usual
///   lock-ordering rule applies: `a.update(k, |_| b.insert(..))` on one
///   thread and `b.update(k, |_| a.insert(..))` on another can deadlock, as
///   two `Mutex`es taken in opposite orders do. Take them in one global
///   order, or move the inner call out of the closure. Reads never wait, so
///   they need no order.
/// * Panics: a closure that panics releases every lock and publishes
///   nothing: if an `update` or `retain` closure panics, the entry keeps its
///   old value (the half-changed clone is dropped) and the panic resumes. A
///   panicking `Drop` of a reclaimed entry lets every other one be dropped.
/// * Shards shrink when they fall below a quarter full, but never below the
///   capacity asked for at construction.
/// * `Send` when `K`, `V` and `S` are `Send`; `Sync` when `K` and `V` are
///   `Send + Sync` and `S` is `Sync`: values are shared across threads and
///   moved between them, and the hasher is only shared. (That is
///   `RwLock<HashMap<K, V, S>>`'s bound, except that it also needs
///   `S: Send` for `Sync`.)
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
/// 2^31 lines (2^34 bytes) panics (use more shards), as does a capacity
/// whose slot count overflows `usize`.
///
/// # Memory
/// An empty table takes an 8-byte head and a padded 128-byte writer line per
/// shard, where `shards` defaults to `clamp((16 × cores).next_power_of_two(),
/// 16, 256)`: 4,352 bytes on 2 cores and 34,816 bytes at 16 cores and up.
/// [`with_shards`](Self::with_shards) with few shards brings it down
/// further. An entry is a heap node (key, value and 4 bytes of hash) plus
/// a slot of a 64-byte line of seven (9.1 bytes) at a load of 3/16 to 3/4.
/// Unlinked entries wait in their shard until a write finds that at least
/// `max(64, len / 16)` have piled up there (an outgrown array is collected
/// at once); that write frees those no pinned reader could see.
/// What it keeps back for readers is freed, once the last reader that
/// could see it unpins, by the shard's next collecting write or by a later
/// operation of any kind: each thread tries every 64th of its operations on
/// tables that keep garbage (on the table at hand), so a thread that keeps
/// using this table frees it within 64 operations; no further writes are
/// needed. [`retired`](Self::retired) counts what waits.
///
/// # Protocol
/// Readers pin themselves in an epoch (a plain store to their own line and
/// a compiler fence, paired with a `membarrier` on the reclaiming side) and
/// probe the shard's current array of lines; writers publish nodes with
/// `Release` stores under the shard's mutex. The write-ups are at the top of
/// `src/epoch.rs`, `src/line_table.rs` and `src/line_table/node_line.rs`.
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
    lines: LineTable<NodeLine<K, V>>,
    hasher: S,
}

// SAFETY: like `RwLock<HashMap<K, V>>`: shared `&K`/`&V` reach many threads
// at once (`Sync`), and entries are created and dropped on any thread
// (`Send`). The hasher is only used through `&S`.
unsafe impl<K: Send + Sync, V: Send + Sync, S: Sync> Sync for RouterTable<K, V, S> {}

// SAFETY: moving the table moves ownership of every entry with it.
unsafe impl<K: Send, V: Send, S: Send> Send for RouterTable<K, V, S> {}

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
        RouterTable {
            lines: LineTable::new(shards, capacity),
            hasher,
        }
    }

    /// The table's hasher.
    pub fn hasher(&self) -> &S {
        &self.hasher
    }

    /// The number of shards.
    pub fn shard_count(&self) -> usize {
        self.lines.shards()
    }

    /// Identifies this table to the reentrancy check.
    #[inline]
    fn id(&self) -> usize {
        self.lines.id()
    }

    /// Runs `f` pinned, inside a scope that lets user code read this table
    /// and makes writes panic.
    #[inline]
    fn with_read<R>(&self, f: impl FnOnce(&epoch::Guard) -> R) -> R {
        reentrancy::check(self.id(), false);
        let result = {
            let guard = epoch::pin();
            reentrancy::scoped(self.id(), Access::Shared, || f(&guard))
        };
        self.lines.after_operation();
        result
    }

    /// Runs `f` on shard `index` under its write lock, inside a scope that
    /// makes every call on this table from user code (`f`'s closures, `Eq`,
    /// `Clone`) panic; then drops what the write freed, outside the lock.
    #[inline]
    fn with_write<R>(&self, index: usize, f: impl FnOnce(&mut Shard<'_, K, V>) -> R) -> R {
        reentrancy::check(self.id(), true);
        let mut shard = self.lines.lock(index);
        let result = reentrancy::scoped(self.id(), Access::Exclusive, || f(&mut shard));
        drop_garbage(shard.finish());
        self.lines.after_operation();
        result
    }

    /// Runs `f` with every shard write-locked at once: a consistent snapshot.
    /// Writers wait meanwhile; user code inside may read this table.
    #[cfg(feature = "serde")]
    fn with_all_locked<R>(&self, f: impl FnOnce(&[Shard<'_, K, V>]) -> R) -> R {
        reentrancy::check(self.id(), true);
        let shards: Vec<_> = (0..self.lines.shards())
            .map(|i| self.lines.lock(i))
            .collect();
        let _pin = epoch::pin();
        reentrancy::scoped(self.id(), Access::Shared, || f(&shards))
    }

    /// Removes every entry, one shard at a time. The entries are dropped
    /// after each shard's lock is released, once no reader can see them; if
    /// a `Drop` panics, every other entry is still dropped and every shard
    /// cleared, and the first panic then resumes.
    pub fn clear(&self) {
        let garbage: Vec<_> = (0..self.lines.shards())
            .flat_map(|index| {
                reentrancy::check(self.id(), true);
                let mut shard = self.lines.lock(index);
                shard.clear();
                shard.finish_now()
            })
            .collect();
        drop_garbage(garbage);
    }

    /// The number of entries (a sum over shards, each read at a different
    /// moment while writers run).
    pub fn len(&self) -> usize {
        reentrancy::check(self.id(), false);
        self.lines.len()
    }

    /// Whether the table has no entries (with the same caveat as `len`).
    pub fn is_empty(&self) -> bool {
        reentrancy::check(self.id(), false);
        self.lines.is_empty()
    }

    /// Entries removed or replaced (and arrays outgrown) whose memory is not
    /// yet freed: they wait for a batch to fill, or for readers that may
    /// still see them. See the type's `# Memory`.
    pub fn retired(&self) -> usize {
        reentrancy::check(self.id(), true);
        self.lines.retired()
    }

    /// How many entries the table holds before some shard grows (each
    /// shard grows on its own, at 3/4 of its slots).
    pub fn capacity(&self) -> usize {
        self.lines.capacity()
    }

    /// The entries as clones, one shard at a time: each shard's entries are
    /// cloned (pinned, taking no lock) when the iterator reaches it, so
    /// nothing is held between `next`s and the iterator may be dropped at
    /// any point. Weakly consistent, like [`for_each`](Self::for_each).
    pub fn iter(&self) -> Iter<'_, K, V, S>
    where
        K: Clone,
        V: Clone,
    {
        Iter {
            table: self,
            shards: ShardByShard::new(self.lines.shards()),
        }
    }

    /// The keys, as clones (see [`iter`](Self::iter)).
    pub fn keys(&self) -> impl Iterator<Item = K> + '_
    where
        K: Clone,
        V: Clone,
    {
        self.iter().map(|(k, _)| k)
    }

    /// The values, as clones (see [`iter`](Self::iter)).
    pub fn values(&self) -> impl Iterator<Item = V> + '_
    where
        K: Clone,
        V: Clone,
    {
        self.iter().map(|(_, v)| v)
    }

    /// Clones shard `index`'s entries into `out`.
    fn clone_shard(&self, index: usize, out: &mut Vec<(K, V)>)
    where
        K: Clone,
        V: Clone,
    {
        self.with_read(|guard| {
            self.lines.read_shard(guard, index, |node, ()| {
                // SAFETY: loaded from a line while pinned (`guard`).
                let node = unsafe { node.node() };
                out.push((node.key.clone(), node.value.clone()));
            });
        });
    }

    /// How many entries shard `index` holds before it grows.
    #[cfg(test)]
    fn shard_capacity(&self, index: usize) -> usize {
        let lines = self.lines.lock(index).lines().map_or(0, <[_]>::len);
        lines * NodeLine::<K, V>::SLOTS / 4 * 3
    }

    /// Calls `f` on every entry, one shard at a time, taking no lock.
    /// Weakly consistent; see the type's docs for what `f` may do.
    pub fn for_each(&self, mut f: impl FnMut(&K, &V)) {
        self.with_read(|guard| {
            for index in 0..self.lines.shards() {
                self.lines.read_shard(guard, index, |node, ()| {
                    // SAFETY: loaded from a line while pinned (`guard`).
                    let node = unsafe { node.node() };
                    f(&node.key, &node.value);
                });
            }
        });
    }
}

/// Calls for callers inside the crate that hash keys themselves and match
/// entries by a predicate over key and value (PathLock's nodes, whose path
/// only the node's chain of parents spells). `hash` must be the same for
/// every call about one entry; the table's own hasher is not used.
impl<K, V, S> RouterTable<K, V, S> {
    /// The value of the entry `eq` accepts on `hash`'s probe, valid while
    /// `guard` pins this thread. `eq` runs no user code of this table.
    #[inline]
    pub(crate) fn find_hashed<'g>(
        &'g self,
        hash: u64,
        guard: &'g epoch::Guard,
        mut eq: impl FnMut(&K, &V) -> bool,
    ) -> Option<&'g V> {
        let node = self.lines.search(guard, hash, |node, _| {
            // SAFETY: pinned by `guard` for `'g`.
            let node: &'g Node<K, V> = unsafe { node.node() };
            eq(&node.key, &node.value).then_some(node)
        })?;
        Some(&node.value)
    }

    /// A clone of the value of the entry `eq` accepts on `hash`'s probe,
    /// inserting `make()` first if there is none.
    pub(crate) fn get_or_insert_hashed(
        &self,
        hash: u64,
        mut eq: impl FnMut(&K, &V) -> bool,
        make: impl FnOnce() -> (K, V),
    ) -> V
    where
        V: Clone,
    {
        let found = self.with_read(|guard| self.find_hashed(hash, guard, &mut eq).cloned());
        if let Some(value) = found {
            return value;
        }
        self.with_write(self.lines.shard_of(hash), |shard| {
            if let Some(spot) = find_by(shard, hash, &mut eq) {
                return node_at(shard, spot).value.clone();
            }
            let (key, value) = make();
            let copy = value.clone();
            shard.insert_new(hash, &NodeRef::new(hash, key, value), &(), rehome);
            copy
        })
    }

    /// Removes the entry `eq` accepts on `hash`'s probe if `approve` agrees
    /// (under the shard's lock), returning a clone of its value.
    pub(crate) fn remove_hashed_if(
        &self,
        hash: u64,
        eq: impl FnMut(&K, &V) -> bool,
        approve: impl FnOnce(&V) -> bool,
    ) -> Option<V>
    where
        V: Clone,
    {
        self.with_write(self.lines.shard_of(hash), |shard| {
            let spot = find_by(shard, hash, eq)?;
            let node = node_at(shard, spot);
            if !approve(&node.value) {
                return None;
            }
            let value = node.value.clone();
            shard.remove(spot, rehome);
            Some(value)
        })
    }
}

/// Where the entry `eq` accepts lies in a locked shard.
fn find_by<K, V>(
    shard: &Shard<'_, K, V>,
    hash: u64,
    mut eq: impl FnMut(&K, &V) -> bool,
) -> Option<Spot> {
    shard.lookup(hash, |node| {
        // SAFETY: we hold the shard's lock, so none of its nodes is freed.
        let node = unsafe { node.node() };
        eq(&node.key, &node.value)
    })
}

/// The node of `key` among a probe's entries, if `node` is it.
///
/// # Safety
/// As [`NodeRef::node`]: the caller is pinned (or holds the lock) during
/// `'g`, and loaded `node` from a line.
#[inline(always)]
unsafe fn matching<'g, K: Borrow<Q>, V, Q: Eq + ?Sized>(
    node: &NodeRef<K, V>,
    key: &Q,
) -> Option<&'g Node<K, V>> {
    // SAFETY: the caller's contract.
    let node = unsafe { node.node() };
    (node.key.borrow() == key).then_some(node)
}

/// Where `key` lies in a locked shard.
fn find<K: Borrow<Q>, V, Q: Eq + ?Sized>(
    shard: &Shard<'_, K, V>,
    hash: u64,
    key: &Q,
) -> Option<Spot> {
    find_by(shard, hash, |k, _| k.borrow() == key)
}

/// The node at `spot` of a locked shard.
fn node_at<'s, K, V>(shard: &'s Shard<'_, K, V>, spot: Spot) -> &'s Node<K, V> {
    // SAFETY: we hold the lock during `'s`; a node retired under it is
    // freed only by a collection after it is released.
    unsafe { shard.key(spot).node() }
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

    /// Inserts `value` at `key`, returning a clone of the value it replaced
    /// (the original is dropped once no reader can see it).
    pub fn insert(&self, key: K, value: V) -> Option<V>
    where
        V: Clone,
    {
        self.put(key, value, V::clone)
    }

    /// Inserts `value` at `key`; if that replaced a value, returns what
    /// `old` makes of it (under the write lock, before the replace).
    pub(crate) fn put<R>(&self, key: K, value: V, old: impl FnOnce(&V) -> R) -> Option<R> {
        let hash = self.hash(&key);
        // Declared before the lock is taken, so dropped after it is released
        // even if `K::eq` or `old` panics: a key's or value's `Drop` may use
        // the table.
        let mut entry = Some((key, value));
        self.with_write(self.lines.shard_of(hash), |shard| {
            let key = &entry.as_ref().expect("present").0;
            match find(shard, hash, key) {
                Some(spot) => {
                    let result = old(&node_at(shard, spot).value);
                    let (key, value) = entry.take().expect("present");
                    shard.replace(spot, &NodeRef::new(hash, key, value), &());
                    Some(result)
                }
                None => {
                    let (key, value) = entry.take().expect("present");
                    shard.insert_new(hash, &NodeRef::new(hash, key, value), &(), rehome);
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

    /// Clones of the values of a batch of keys, in order. Hashes every key,
    /// prefetches every home line, then every matching node, then probes:
    /// the batch's cache misses overlap, so on a table much larger than the
    /// caches this beats as many `get`s (see BENCHMARKS.md); on a small one
    /// it gains nothing.
    pub fn get_many<Q, const N: usize>(&self, keys: [&Q; N]) -> [Option<V>; N]
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: Clone,
    {
        let hashes = keys.map(|key| self.hash(key));
        self.with_read(|guard| {
            for &hash in &hashes {
                self.lines.prefetch(guard, hash);
            }
            for &hash in &hashes {
                self.lines.search(guard, hash, |node, _| {
                    crate::prefetch::prefetch(node.as_ptr());
                    None::<()>
                });
            }
            let mut at = 0;
            keys.map(|key| {
                at += 1;
                // SAFETY: pinned (`guard`).
                self.lines
                    .search(guard, hashes[at - 1], |node, _| unsafe {
                        matching(node, key)
                    })
                    .map(|node| node.value.clone())
            })
        })
    }

    /// Calls `f` on the value at `key`, without locking: `f` sees one
    /// published value, whole, which stays valid until `f` returns.
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

    /// Calls `f` on the value at `key`, pinned.
    #[inline]
    fn find_with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        self.with_read(|guard| {
            // SAFETY: pinned (`guard`) until `f` returns.
            let node = self
                .lines
                .search(guard, hash, |node, _| unsafe { matching(node, key) })?;
            Some(f(&node.value))
        })
    }

    /// Changes the value at `key`; `None` if `key` is absent.
    ///
    /// Copy-on-write: `f` changes a clone, which is then published whole, so
    /// readers see the old value or the new one, never a half-changed one.
    /// `f` runs under the shard's write lock and may not use this table. If
    /// it panics, the entry keeps its old value and the panic resumes.
    pub fn update<Q, R>(&self, key: &Q, f: impl FnOnce(&mut V) -> R) -> Option<R>
    where
        K: Borrow<Q> + Clone,
        Q: Hash + Eq + ?Sized,
        V: Clone,
    {
        let hash = self.hash(key);
        // Declared before the lock is taken, so the clone (half-changed if
        // `f` panicked) is dropped after it is released.
        let mut work: Option<V> = None;
        let outcome = self.with_write(self.lines.shard_of(hash), |shard| {
            let spot = find(shard, hash, key)?;
            let node = node_at(shard, spot);
            let value = work.insert(node.value.clone());
            Some(match panic::catch_unwind(AssertUnwindSafe(|| f(value))) {
                Ok(result) => {
                    let fresh = NodeRef::new(hash, node.key.clone(), work.take().expect("present"));
                    shard.replace(spot, &fresh, &());
                    Ok(result)
                }
                Err(payload) => Err(payload),
            })
        });
        drop(work);
        match outcome? {
            Ok(result) => Some(result),
            Err(payload) => panic::resume_unwind(payload),
        }
    }

    /// Removes `key`, returning a clone of its value (the original is dropped
    /// once no reader can see it).
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: Clone,
    {
        self.remove_where(key, |v| Some(v.clone()))
    }

    /// Removes `key` if `f` approves its value, returning a clone of the
    /// value. `f` runs under the shard's write lock and may not use this
    /// table.
    pub fn remove_if<Q>(&self, key: &Q, f: impl FnOnce(&V) -> bool) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        V: Clone,
    {
        self.remove_where(key, |v| f(v).then(|| v.clone()))
    }

    /// Removes `key`, returning what `f` makes of its value (for any `V`:
    /// no clone). `f` runs under the shard's write lock and may not use this
    /// table; the value itself is dropped once no reader can see it.
    pub fn remove_with<Q, R>(&self, key: &Q, f: impl FnOnce(&V) -> R) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.remove_where(key, |v| Some(f(v)))
    }

    /// Removes `key`; whether it was there (for any `V`).
    pub fn delete<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.remove_where(key, |_| Some(())).is_some()
    }

    /// Removes `key` if `decide` returns `Some` for its value; shrinks the
    /// shard if that left it under 3/16 full.
    fn remove_where<Q, R>(&self, key: &Q, decide: impl FnOnce(&V) -> Option<R>) -> Option<R>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        self.with_write(self.lines.shard_of(hash), |shard| {
            let spot = find(shard, hash, key)?;
            let result = decide(&node_at(shard, spot).value)?;
            shard.remove(spot, rehome);
            Some(result)
        })
    }

    /// One atomic read-modify-write of `key`: `f` sees the current value
    /// (or `None`) and decides to keep, put or remove it ([`Compute`]); the
    /// call returns what `f` returned with its decision. `f` runs under the
    /// shard's write lock (it may not use this table) and at most once; if
    /// it panics, nothing changes. Nothing needs `Clone`: a put publishes
    /// the new value whole, and the old one, like an unused `key`, is
    /// dropped after the lock is released.
    ///
    /// ```
    /// use shardlock::{Compute, RouterTable};
    ///
    /// let hits: RouterTable<&str, u64> = RouterTable::new();
    /// let count = |t: &RouterTable<&str, u64>| t.compute("home", |n| {
    ///     let next = n.map_or(1, |n| n + 1);
    ///     Compute::Put(next, next)
    /// });
    /// assert_eq!((count(&hits), count(&hits)), (1, 2));
    /// assert_eq!(hits.compute("home", |_| Compute::Remove("gone")), "gone");
    /// assert!(hits.is_empty());
    /// ```
    pub fn compute<R>(&self, key: K, f: impl FnOnce(Option<&V>) -> Compute<V, R>) -> R {
        let hash = self.hash(&key);
        // Declared before the lock is taken, so dropped after it is released
        // when unused (also if `f` or `K::eq` panics).
        let mut unused_key = Some(key);
        self.with_write(self.lines.shard_of(hash), |shard| {
            let spot = find(shard, hash, unused_key.as_ref().expect("present"));
            match f(spot.map(|spot| &node_at(shard, spot).value)) {
                Compute::Keep(result) => result,
                Compute::Remove(result) => {
                    if let Some(spot) = spot {
                        shard.remove(spot, rehome);
                    }
                    result
                }
                Compute::Put(value, result) => {
                    let node = NodeRef::new(hash, unused_key.take().expect("present"), value);
                    match spot {
                        Some(spot) => shard.replace(spot, &node, &()),
                        None => shard.insert_new(hash, &node, &(), rehome),
                    }
                    result
                }
            }
        })
    }

    /// Makes room for `additional` more entries than the table holds now,
    /// spread over its shards as the hash spreads keys, so that inserting
    /// them does not grow a shard (unless keys fall unevenly).
    pub fn reserve(&self, additional: usize) {
        let per_shard = additional.div_ceil(self.lines.shards());
        for index in 0..self.lines.shards() {
            self.with_write(index, |shard| shard.reserve(per_shard, rehome));
        }
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
        // Declared before the lock is taken, so dropped after it is released
        // (the key when the table had it, or the key and the new value when
        // `f`, `K::eq` or `V::clone` panics).
        let mut unused_key = Some(key);
        let mut made: Option<V> = None;
        self.with_write(self.lines.shard_of(hash), |shard| {
            let key = unused_key.as_ref().expect("present");
            if let Some(spot) = find(shard, hash, key) {
                return node_at(shard, spot).value.clone();
            }
            let copy = made.insert(f()).clone();
            let key = unused_key.take().expect("present");
            let node = NodeRef::new(hash, key, made.take().expect("present"));
            shard.insert_new(hash, &node, &(), rehome);
            copy
        })
    }

    /// Keeps only the entries for which `f` returns `true`, one shard at a
    /// time under its write lock. `f` gets a clone of each value, and a kept
    /// entry is republished with it (copy-on-write, as in `update`). `f` may
    /// not use this table. If it panics, the entry it was given keeps its old
    /// value and the panic resumes.
    pub fn retain(&self, mut f: impl FnMut(&K, &mut V) -> bool)
    where
        K: Clone,
        V: Clone,
    {
        for index in 0..self.lines.shards() {
            // Declared before each shard's lock is taken, so dropped after it
            // is released: the clone being worked on, and those of rejected
            // values (a value's `Drop` may use the table).
            let mut current: Option<V> = None;
            let mut rejected: Vec<V> = Vec::new();
            let panicked = self.with_write(index, |shard| {
                let swept = shard.sweep(|line, slot| {
                    // SAFETY: we hold the shard's lock.
                    let node = unsafe { line.key(slot).node() };
                    let value = current.insert(node.value.clone());
                    match panic::catch_unwind(AssertUnwindSafe(|| f(&node.key, value)))? {
                        true => {
                            let value = current.take().expect("present");
                            let fresh = NodeRef::new(u64::from(node.hash), node.key.clone(), value);
                            Ok(Verdict::Replace(fresh, ()))
                        }
                        false => {
                            rejected.extend(current.take());
                            Ok(Verdict::Remove)
                        }
                    }
                });
                shard.tidy(rehome);
                swept.err()
            });
            // The half-changed clone (if `f` panicked), then the rejected
            // ones; every one is dropped even if a `Drop` panics.
            let dropped = panic::catch_unwind(AssertUnwindSafe(|| {
                crate::unwind::each_then_resume(current.into_iter().chain(rejected), drop)
            }));
            if let Some(payload) = panicked {
                panic::resume_unwind(payload);
            }
            if let Err(payload) = dropped {
                panic::resume_unwind(payload);
            }
        }
    }
}

/// The iterator of [`RouterTable::iter`]: yields `(K, V)` clones.
pub struct Iter<'a, K, V, S> {
    table: &'a RouterTable<K, V, S>,
    shards: ShardByShard<(K, V)>,
}

impl<K: Clone, V: Clone, S> Iterator for Iter<'_, K, V, S> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        let table = self.table;
        self.shards.next(|index, out| table.clone_shard(index, out))
    }
}

impl<'a, K: Clone, V: Clone, S> IntoIterator for &'a RouterTable<K, V, S> {
    type Item = (K, V);
    type IntoIter = Iter<'a, K, V, S>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K, V, S> Clone for RouterTable<K, V, S>
where
    K: Hash + Eq + Clone,
    V: Clone,
    S: BuildHasher + Clone,
{
    /// A table with the same shards, hasher and entries (cloned one shard
    /// at a time: weakly consistent while writers run).
    fn clone(&self) -> Self {
        let table = Self::with_shards(self.shard_count(), self.len(), self.hasher.clone());
        for (k, v) in self.iter() {
            table.put(k, v, |_| ());
        }
        table
    }
}

impl<K, V, S> PartialEq for RouterTable<K, V, S>
where
    K: Hash + Eq + Clone,
    V: PartialEq + Clone,
    S: BuildHasher,
{
    /// The same keys with equal values (compared one entry at a time: only
    /// meaningful while neither table is written).
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .all(|(k, v)| other.get_with(&k, |w| *w == v).unwrap_or(false))
    }
}

impl<K: Hash + Eq + Clone, V: Eq + Clone, S: BuildHasher> Eq for RouterTable<K, V, S> {}

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
            self.put(k, v, |_| ());
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

#[cfg(all(test, not(loom)))]
mod regressions_issue15;
