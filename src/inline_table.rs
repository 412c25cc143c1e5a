//! [`InlineTable`]: a concurrent hash map of `Copy` keys and values stored
//! inline in 64-byte bucket lines, so a lookup touches one line.
//!
//! # Structure
//! Sharded like [`RouterTable`](crate::RouterTable): a key's shard comes
//! from the top bits of its hash, its home bucket from the low bits, and its
//! tag from bits 40..48. A shard's *head* word points to its bucket array (a
//! power of two of [`Bucket`] lines, 64-byte aligned, the size's log2 in the
//! head's low bits); null until the first insert.
//!
//! A probe reads the home bucket (see [`bucket`] for the optimistic read);
//! if the key is not there and the bucket's `OVERFLOW` bit is set, it reads
//! the next bucket, and so on. An insert takes the first free slot from the
//! home bucket on and sets `OVERFLOW` on every full bucket it passes, so
//! every key lies on its probe. A remove frees its slot at once; `OVERFLOW`
//! bits stay until the shard is rebuilt (after `buckets / 8` of them, or on
//! growing and shrinking).
//!
//! # Protocol
//! * Writers hold their shard's mutex, and change buckets in place with the
//!   bucket protocol; readers pin ([`crate::epoch`]), load the head
//!   (`Acquire`), probe, and unpin. They take no lock and store nothing but
//!   their own epoch row.
//! * A rebuild (grow, shrink, or one that clears `OVERFLOW` bits) fills a
//!   new array while the old one stays current, publishes it with one
//!   `Release` store of the head, and retires the old array through the
//!   shard's epoch bin; the old array is never written again. A reader
//!   still in it sees the shard as it was when it loaded the head, a moment
//!   at which that array was current: its lookup is linearizable there.
//! * Every other lookup is linearizable at the header load that validated
//!   the entry it returns, or, for a miss, at the header load of the last
//!   bucket of its probe (each bucket's state is one header word).
//!
//! loom checks readers against an in-place write, a remove and a resize
//! (`loom-tests/tests/inline_table.rs`).

use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::{self, NonNull};

use crossbeam_utils::CachePadded;

use crate::epoch::{self, Bin};
use crate::reentrancy::{self, Access};
use crate::sync::{lock, try_lock, AtomicPtr, AtomicUsize, Mutex, MutexGuard, Ordering};

mod bucket;

use bucket::{tag_of, Bucket, Codec, Found};

#[cfg(feature = "serde")]
mod serde;

/// The largest load (of slots) before a shard grows: 3/4.
const MAX_LOAD: (usize, usize) = (3, 4);

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
pub struct InlineTable<K, V, S = ahash::RandomState> {
    /// Each shard's bucket array, for readers.
    heads: Box<[AtomicPtr<Bucket>]>,
    /// Each shard's writer side.
    writers: Box<[CachePadded<Writer>]>,
    hasher: S,
    shard_bits: u32,
    /// Shards holding arrays that a collection kept back for a pinned
    /// reader (see `# Memory`).
    pending: CachePadded<AtomicUsize>,
    _entries: PhantomData<(K, V)>,
}

// SAFETY: the table owns plain copies of `K` and `V` (no `Drop`, no
// references handed out); they are copied into and out of it from any
// thread, so it is `Send` and `Sync` when they are `Send`. The hasher is
// moved with the table and shared by `&`.
unsafe impl<K: Send, V: Send, S: Send> Send for InlineTable<K, V, S> {}
// SAFETY: as above; `&S` is shared across threads.
unsafe impl<K: Send, V: Send, S: Sync> Sync for InlineTable<K, V, S> {}

/// A bucket array, owned: freed when dropped (its entries are `Copy`).
struct Array {
    base: NonNull<Bucket>,
    len: usize,
}

// SAFETY: an `Array` is plain memory of atomics, freed on any thread.
unsafe impl Send for Array {}

impl Array {
    /// A new array of `len` (a power of two) empty buckets.
    fn new(len: usize) -> Array {
        debug_assert!(len.is_power_of_two());
        let layout = std::alloc::Layout::array::<Bucket>(len).expect("bucket count fits");
        // SAFETY: the layout has a non-zero size; all-zero bytes are valid
        // empty buckets (see `Bucket`), except loom's, built below.
        let base = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<Bucket>();
        let Some(base) = NonNull::new(base) else {
            std::alloc::handle_alloc_error(layout)
        };
        #[cfg(loom)]
        for i in 0..len {
            // SAFETY: `i < len`, inside the allocation; written once.
            unsafe { base.as_ptr().add(i).write(Bucket::empty()) };
        }
        Array { base, len }
    }

    /// The head word: the address with `log2(len)` in its low bits.
    fn word(&self) -> *mut Bucket {
        self.base
            .as_ptr()
            .map_addr(|a| a | self.len.trailing_zeros() as usize)
    }

    /// Takes back ownership of the array a head word points to.
    ///
    /// # Safety
    /// `word` came from [`Self::word`] of an array that was then leaked
    /// (published), and no one else takes it back.
    unsafe fn from_word(word: *mut Bucket) -> Array {
        let len = 1 << (word.addr() & 63);
        let base = NonNull::new(word.map_addr(|a| a & !63)).expect("not null");
        Array { base, len }
    }

    fn buckets(&self) -> &[Bucket] {
        // SAFETY: `len` zero-initialised buckets at `base`, owned by `self`.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.len) }
    }
}

impl Drop for Array {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::array::<Bucket>(self.len).expect("was allocated");
        #[cfg(loom)]
        self.buckets().iter().for_each(Bucket::poison);
        // SAFETY: `len` buckets built in `new`, dropped once (a no-op but
        // under loom); then freed with the layout they were allocated with.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.base.as_ptr(),
                self.len,
            ));
            std::alloc::dealloc(self.base.as_ptr().cast(), layout);
        }
    }
}

/// The buckets a head word points to.
///
/// # Safety
/// The array is not freed during `'a`: the caller is pinned, or holds the
/// shard's lock (only lock holders retire arrays).
#[inline(always)]
unsafe fn buckets<'a>(word: *mut Bucket) -> Option<&'a [Bucket]> {
    if word.is_null() {
        return None;
    }
    let len = 1 << (word.addr() & 63);
    // SAFETY: a non-null head came from `Array::word`: `len` initialised
    // buckets, kept alive by the caller's contract.
    Some(unsafe { std::slice::from_raw_parts(word.map_addr(|a| a & !63), len) })
}

/// A shard's writer side.
struct Writer {
    state: Mutex<State>,
    /// `State::live`, readable without the lock.
    len: AtomicUsize,
    /// 1 while the bin keeps arrays back for a pinned reader.
    kept: AtomicUsize,
}

struct State {
    live: usize,
    /// Buckets with `OVERFLOW` set in the current array.
    overflowed: usize,
    /// `overflowed` right after the last rebuild: what the load alone
    /// causes. Only marks beyond it (left by removes) call for a rebuild.
    overflowed_at_rebuild: usize,
    /// Never shrink below this many buckets.
    min_buckets: usize,
    bin: Bin<Array>,
}

/// A locked shard.
struct Locked<'a> {
    head: &'a AtomicPtr<Bucket>,
    writer: &'a Writer,
    pending: &'a AtomicUsize,
    state: MutexGuard<'a, State>,
    /// Whether this write retired an array (then it collects).
    retired: bool,
}

impl Locked<'_> {
    fn buckets(&self) -> Option<&[Bucket]> {
        // SAFETY: we hold the lock, and only lock holders retire arrays.
        unsafe { buckets(self.head.load(Ordering::Relaxed)) }
    }

    /// The bucket and slot of the key `eq` accepts on `hash`'s probe.
    fn lookup<K, V>(&self, hash: u64, mut eq: impl FnMut(&K) -> bool) -> Option<(&Bucket, usize)> {
        let buckets = self.buckets()?;
        let (mask, tag) = (buckets.len() - 1, tag_of(hash));
        let mut at = hash as usize & mask;
        for _ in 0..buckets.len() {
            let bucket = &buckets[at];
            if let (Some(slot), _) = bucket.find_locked::<K, V>(tag, &mut eq) {
                return Some((bucket, slot));
            }
            if !bucket.overflowed() {
                break;
            }
            at = (at + 1) & mask;
        }
        None
    }

    /// Puts an absent key in the first free slot of its probe, marking the
    /// full buckets it passes. The array has a free slot.
    fn place<K, V>(buckets: &[Bucket], hash: u64, key: &K, value: &V) -> usize {
        let (mask, tag) = (buckets.len() - 1, tag_of(hash));
        let mut at = hash as usize & mask;
        let mut marked = 0;
        loop {
            let bucket = &buckets[at];
            if let (_, Some(slot)) = bucket.find_locked::<K, V>(tag, |_| false) {
                bucket.insert(slot, tag, key, value);
                return marked;
            }
            if !bucket.overflowed() {
                bucket.set_overflow();
                marked += 1;
            }
            at = (at + 1) & mask;
        }
    }

    /// Makes room for one more entry: grows (or rebuilds, if too many
    /// buckets overflowed) first if needed.
    fn reserve_one<K: Hash, V, S: BuildHasher>(&mut self, hasher: &S) {
        let buckets = self.buckets().map_or(0, <[Bucket]>::len);
        let slots = buckets * Codec::<K, V>::SLOTS;
        if (self.state.live + 1) * MAX_LOAD.1 > slots * MAX_LOAD.0 {
            let want = (self.state.live + 1) * MAX_LOAD.1 / MAX_LOAD.0 / Codec::<K, V>::SLOTS + 1;
            let len = want
                .next_power_of_two()
                .max(self.state.min_buckets)
                .max(2 * buckets)
                .max(1);
            self.rebuild::<K, V, S>(len, hasher);
        } else if self.state.overflowed > self.state.overflowed_at_rebuild + buckets / 8 {
            self.rebuild::<K, V, S>(buckets, hasher);
        }
    }

    /// Shrinks if a remove left the shard under 3/16 full.
    fn tidy<K: Hash, V, S: BuildHasher>(&mut self, hasher: &S) {
        let buckets = self.buckets().map_or(0, <[Bucket]>::len);
        let slots = buckets * Codec::<K, V>::SLOTS;
        if buckets > self.state.min_buckets.max(1) && self.state.live * 16 < slots * 3 {
            self.rebuild::<K, V, S>(buckets / 2, hasher);
        }
    }

    /// Moves every entry into a new array of `len` buckets (0: none),
    /// publishes it, and retires the old one. `K::hash` runs here.
    fn rebuild<K: Hash, V, S: BuildHasher>(&mut self, len: usize, hasher: &S) {
        let fresh = (len > 0).then(|| Array::new(len));
        let mut overflowed = 0;
        if let (Some(fresh), Some(old)) = (&fresh, self.buckets()) {
            for bucket in old {
                let occupied = bucket.occupied::<K, V>();
                for slot in (0..Codec::<K, V>::SLOTS).filter(|s| occupied & (1 << s) != 0) {
                    let key: K = bucket.key::<K, V>(slot);
                    let value: V = bucket.value::<K, V>(slot);
                    overflowed += Self::place(fresh.buckets(), hasher.hash_one(&key), &key, &value);
                }
            }
        }
        let word = fresh.map_or(ptr::null_mut(), |array| {
            let word = array.word();
            std::mem::forget(array); // owned by the head from now on
            word
        });
        let old = self.head.swap(word, Ordering::Release);
        self.state.overflowed = overflowed;
        self.state.overflowed_at_rebuild = overflowed;
        if !old.is_null() {
            // SAFETY: `old` was published from an `Array` and is unlinked now.
            self.state.bin.push(unsafe { Array::from_word(old) });
            self.retired = true;
        }
    }

    /// Unlocks; if this write retired an array, collects first. Returns
    /// what to free after the lock is gone.
    fn finish(mut self) -> Vec<Array> {
        if !self.retired {
            return Vec::new();
        }
        let garbage = self.state.bin.collect();
        self.note_kept();
        garbage
    }

    fn oldest_kept(&self) -> Option<u64> {
        self.state.bin.oldest_sealed()
    }

    fn finish_kept(mut self, oldest_pinned: u64) -> Vec<Array> {
        let garbage = self.state.bin.free_up_to(oldest_pinned);
        self.note_kept();
        garbage
    }

    /// Updates `kept` and the table's `pending` count after a collection.
    fn note_kept(&mut self) {
        epoch::note_kept(&self.state.bin, &self.writer.kept, self.pending);
    }

    fn set_live(&mut self, live: usize) {
        self.state.live = live;
        self.writer.len.store(live, Ordering::Relaxed);
    }
}

impl<K, V> InlineTable<K, V> {
    /// Creates an empty table with the default hasher (`ahash`).
    pub fn new() -> Self {
        Self::with_capacity_and_hasher(0, ahash::RandomState::new())
    }

    /// Creates an empty table with room for `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, ahash::RandomState::new())
    }
}

impl<K, V, S> InlineTable<K, V, S> {
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
                Codec::<K, V>::SLOTS >= 2,
                "InlineTable: the key and value, each rounded up to a multiple of 4 bytes, must \
                 fit in 28 bytes together (two entries per cache line); use RouterTable for \
                 larger ones"
            );
        }
        let shards = shards.clamp(1, 1 << 16).next_power_of_two();
        let per_shard = capacity.div_ceil(shards);
        let min_buckets = match per_shard {
            0 => 0,
            n => (n * MAX_LOAD.1)
                .div_ceil(MAX_LOAD.0 * Codec::<K, V>::SLOTS)
                .checked_next_power_of_two()
                .expect("capacity overflow"),
        };
        let table = InlineTable {
            heads: (0..shards)
                .map(|_| AtomicPtr::new(ptr::null_mut()))
                .collect(),
            writers: (0..shards)
                .map(|_| {
                    CachePadded::new(Writer {
                        state: Mutex::new(State {
                            live: 0,
                            overflowed: 0,
                            overflowed_at_rebuild: 0,
                            min_buckets,
                            bin: Bin::default(),
                        }),
                        len: AtomicUsize::new(0),
                        kept: AtomicUsize::new(0),
                    })
                })
                .collect(),
            hasher,
            shard_bits: shards.trailing_zeros(),
            pending: CachePadded::new(AtomicUsize::new(0)),
            _entries: PhantomData,
        };
        if min_buckets > 0 {
            for head in table.heads.iter() {
                let array = Array::new(min_buckets);
                head.store(array.word(), Ordering::Relaxed);
                std::mem::forget(array);
            }
        }
        table
    }

    /// The table's hasher.
    pub fn hasher(&self) -> &S {
        &self.hasher
    }

    /// The number of entries (a sum over shards, each read at a different
    /// moment while writers run).
    pub fn len(&self) -> usize {
        self.writers
            .iter()
            .map(|w| w.len.load(Ordering::Relaxed))
            .sum()
    }

    /// Whether the table has no entries (with the same caveat as `len`).
    pub fn is_empty(&self) -> bool {
        self.writers
            .iter()
            .all(|w| w.len.load(Ordering::Relaxed) == 0)
    }

    /// Identifies this table to the reentrancy check.
    fn id(&self) -> usize {
        self.heads.as_ptr() as usize
    }

    fn lock(&self, index: usize) -> Locked<'_> {
        Locked {
            head: &self.heads[index],
            writer: &self.writers[index],
            pending: &self.pending,
            state: lock(&self.writers[index].state),
            retired: false,
        }
    }

    /// After an operation: frees arrays kept back for readers, if any.
    #[inline(always)]
    fn after_operation(&self) {
        if self.pending.load(Ordering::Relaxed) != 0 {
            self.help_reclaim();
        }
    }

    #[cold]
    #[inline(never)]
    fn help_reclaim(&self) {
        let garbage = epoch::help_free(
            || {
                self.writers
                    .iter()
                    .zip(self.heads.iter())
                    .filter(|(writer, _)| writer.kept.load(Ordering::Relaxed) != 0)
                    .filter_map(|(writer, head)| {
                        Some(Locked {
                            head,
                            writer,
                            pending: &self.pending,
                            state: try_lock(&writer.state)?,
                            retired: false,
                        })
                    })
                    .collect()
            },
            Locked::oldest_kept,
            Locked::finish_kept,
        );
        drop(garbage);
    }

    /// Removes every entry, one shard at a time.
    pub fn clear(&self) {
        reentrancy::check(self.id(), true);
        for index in 0..self.heads.len() {
            let mut shard = self.lock(index);
            let old = shard.head.swap(ptr::null_mut(), Ordering::Release);
            if !old.is_null() {
                // SAFETY: published from an `Array`, unlinked just now.
                shard.state.bin.push(unsafe { Array::from_word(old) });
                shard.retired = true;
            }
            shard.state.overflowed = 0;
            shard.state.overflowed_at_rebuild = 0;
            shard.set_live(0);
            drop(shard.finish());
        }
        self.after_operation();
    }

    /// The entries, as copies, one shard at a time (each shard's entries
    /// are copied when the iterator reaches it; weakly consistent).
    pub fn iter(&self) -> Iter<'_, K, V, S>
    where
        K: Copy,
        V: Copy,
    {
        Iter {
            table: self,
            next_shard: 0,
            copies: Vec::new().into_iter(),
        }
    }

    /// Every entry, copied with every shard locked at once (a consistent
    /// snapshot; writers wait meanwhile, readers do not).
    #[cfg(feature = "serde")]
    fn snapshot(&self) -> Vec<(K, V)>
    where
        K: Copy,
        V: Copy,
    {
        reentrancy::check(self.id(), true);
        let shards: Vec<Locked<'_>> = (0..self.heads.len()).map(|i| self.lock(i)).collect();
        let mut entries = Vec::with_capacity(shards.iter().map(|s| s.state.live).sum());
        for shard in &shards {
            for bucket in shard.buckets().unwrap_or(&[]) {
                bucket.read_all(&mut entries);
            }
        }
        entries
    }

    /// Copies shard `index`'s entries into `out`.
    fn copy_shard(&self, index: usize, out: &mut Vec<(K, V)>)
    where
        K: Copy,
        V: Copy,
    {
        {
            let _pin = epoch::pin();
            // SAFETY: pinned, so the array stays allocated.
            if let Some(buckets) = unsafe { buckets(self.heads[index].load(Ordering::Acquire)) } {
                for bucket in buckets {
                    bucket.read_all(out);
                }
            }
        }
        self.after_operation();
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

    /// The shard of `hash`: its top bits.
    #[inline(always)]
    fn shard_of(&self, hash: u64) -> usize {
        (hash >> 1 >> (63 - self.shard_bits)) as usize & (self.heads.len() - 1)
    }

    /// Runs `visit` on the entries of `key`'s probe until it returns `Some`.
    #[inline(always)]
    fn probe<R>(&self, hash: u64, visit: impl FnMut(&K, &V) -> Option<R>) -> Option<R> {
        let head = &self.heads[self.shard_of(hash)];
        let found = {
            let _pin = epoch::pin();
            // SAFETY: pinned, so the array stays allocated.
            unsafe { buckets(head.load(Ordering::Acquire)) }
                .and_then(|buckets| search(buckets, hash, visit))
        };
        self.after_operation();
        found
    }

    /// A copy of the value at `key`.
    #[inline]
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.probe(self.hash(key), |k, v| (k.borrow() == key).then_some(*v))
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
    /// every home bucket, then probes: the batch's cache misses overlap, so
    /// on a table much larger than the caches this is faster than as many
    /// `get`s (see BENCHMARKS.md). On small tables, `get` is as fast.
    pub fn get_many<Q, const N: usize>(&self, keys: [&Q; N]) -> [Option<V>; N]
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hashes = keys.map(|key| self.hash(key));
        let mut results = [None; N];
        {
            let _pin = epoch::pin();
            let heads = hashes.map(|hash| self.heads[self.shard_of(hash)].load(Ordering::Acquire));
            for (hash, head) in hashes.iter().zip(heads) {
                // SAFETY: pinned, so the array stays allocated.
                if let Some(buckets) = unsafe { buckets(head) } {
                    crate::prefetch::prefetch(&buckets[*hash as usize & (buckets.len() - 1)]);
                }
            }
            for ((key, hash), (head, out)) in keys
                .iter()
                .zip(hashes)
                .zip(heads.into_iter().zip(&mut results))
            {
                // SAFETY: as above.
                if let Some(buckets) = unsafe { buckets(head) } {
                    *out = search(buckets, hash, |k: &K, v: &V| {
                        (k.borrow() == *key).then_some(*v)
                    });
                }
            }
        }
        self.after_operation();
        results
    }

    /// Runs `f` on `key`'s shard under its lock, in a scope that makes
    /// writes to this table from user code panic; then collects, unlocked.
    fn with_write<R>(&self, hash: u64, f: impl FnOnce(&mut Locked<'_>) -> R) -> R {
        reentrancy::check(self.id(), true);
        let mut shard = self.lock(self.shard_of(hash));
        let result = reentrancy::scoped(self.id(), Access::Exclusive, || f(&mut shard));
        drop(shard.finish());
        self.after_operation();
        result
    }

    /// Inserts `value` at `key`, returning the value it replaced.
    pub fn insert(&self, key: K, value: V) -> Option<V> {
        let hash = self.hash(&key);
        self.with_write(hash, |shard| {
            match shard.lookup::<K, V>(hash, |k| *k == key) {
                Some((bucket, slot)) => {
                    let old = bucket.value::<K, V>(slot);
                    bucket.set_value::<K, V>(slot, &value);
                    Some(old)
                }
                None => {
                    shard.reserve_one::<K, V, S>(&self.hasher);
                    Self::place_new(shard, hash, &key, &value);
                    None
                }
            }
        })
    }

    /// Places an absent key (room was reserved).
    fn place_new(shard: &mut Locked<'_>, hash: u64, key: &K, value: &V) {
        let buckets = shard.buckets().expect("reserved");
        let marked = Locked::place(buckets, hash, key, value);
        shard.state.overflowed += marked;
        let live = shard.state.live + 1;
        shard.set_live(live);
    }

    /// Removes `key`, returning its value.
    pub fn remove<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let hash = self.hash(key);
        self.with_write(hash, |shard| {
            let (bucket, slot) = shard.lookup::<K, V>(hash, |k| k.borrow() == key)?;
            let value = bucket.value::<K, V>(slot);
            bucket.remove(slot);
            let live = shard.state.live - 1;
            shard.set_live(live);
            shard.tidy::<K, V, S>(&self.hasher);
            Some(value)
        })
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
            let (bucket, slot) = shard.lookup::<K, V>(hash, |k| k.borrow() == key)?;
            let mut value = bucket.value::<K, V>(slot);
            let result = f(&mut value);
            bucket.set_value::<K, V>(slot, &value);
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
            if let Some((bucket, slot)) = shard.lookup::<K, V>(hash, |k| *k == key) {
                return bucket.value::<K, V>(slot);
            }
            let value = f();
            shard.reserve_one::<K, V, S>(&self.hasher);
            Self::place_new(shard, hash, &key, &value);
            value
        })
    }

    /// Keeps only the entries for which `f` returns `true`, one shard at a
    /// time under its lock; `f` may change the value it is given, and a kept
    /// entry is written back whole. If `f` panics, the entry it was given
    /// keeps its old value and the panic resumes.
    pub fn retain(&self, mut f: impl FnMut(&K, &mut V) -> bool) {
        reentrancy::check(self.id(), true);
        for index in 0..self.heads.len() {
            let mut shard = self.lock(index);
            // Removals are counted even if `f` panics partway, so `len`
            // stays exact; the panic resumes once the shard is consistent.
            let (removed, panicked) = reentrancy::scoped(self.id(), Access::Exclusive, || {
                let mut removed = 0;
                let Some(buckets) = shard.buckets() else {
                    return (removed, None);
                };
                for bucket in buckets {
                    let occupied = bucket.occupied::<K, V>();
                    for slot in (0..Codec::<K, V>::SLOTS).filter(|s| occupied & (1 << s) != 0) {
                        let key = bucket.key::<K, V>(slot);
                        let mut value = bucket.value::<K, V>(slot);
                        match panic::catch_unwind(AssertUnwindSafe(|| f(&key, &mut value))) {
                            Ok(true) => bucket.set_value::<K, V>(slot, &value),
                            Ok(false) => {
                                bucket.remove(slot);
                                removed += 1;
                            }
                            Err(payload) => return (removed, Some(payload)),
                        }
                    }
                }
                (removed, None)
            });
            let live = shard.state.live - removed;
            shard.set_live(live);
            if panicked.is_none() {
                reentrancy::scoped(self.id(), Access::Exclusive, || {
                    shard.tidy::<K, V, S>(&self.hasher);
                });
            }
            drop(shard.finish());
            if let Some(payload) = panicked {
                panic::resume_unwind(payload);
            }
        }
        self.after_operation();
    }
}

/// Runs `visit` on the entries of `hash`'s probe in `buckets` until it
/// returns `Some`: the home bucket inline, the rest (rare) out of line.
#[inline(always)]
fn search<K, V, R>(
    buckets: &[Bucket],
    hash: u64,
    mut visit: impl FnMut(&K, &V) -> Option<R>,
) -> Option<R> {
    let home = hash as usize & (buckets.len() - 1);
    match buckets[home].read::<K, V, R>(tag_of(hash), &mut visit) {
        Found::Hit(result) => Some(result),
        Found::Miss { overflow: false } => None,
        Found::Miss { overflow: true } => search_on(buckets, home, tag_of(hash), visit),
    }
}

/// The probe past an overflowed home bucket.
#[cold]
#[inline(never)]
fn search_on<K, V, R>(
    buckets: &[Bucket],
    home: usize,
    tag: u8,
    mut visit: impl FnMut(&K, &V) -> Option<R>,
) -> Option<R> {
    let mask = buckets.len() - 1;
    let mut at = home;
    for _ in 1..buckets.len() {
        at = (at + 1) & mask;
        match buckets[at].read::<K, V, R>(tag, &mut visit) {
            Found::Hit(result) => return Some(result),
            Found::Miss { overflow: false } => return None,
            Found::Miss { overflow: true } => {}
        }
    }
    None
}

/// The iterator of [`InlineTable::iter`]: yields `(K, V)` copies.
pub struct Iter<'a, K, V, S> {
    table: &'a InlineTable<K, V, S>,
    next_shard: usize,
    copies: std::vec::IntoIter<(K, V)>,
}

impl<K: Copy, V: Copy, S> Iterator for Iter<'_, K, V, S> {
    type Item = (K, V);

    fn next(&mut self) -> Option<(K, V)> {
        loop {
            if let Some(entry) = self.copies.next() {
                return Some(entry);
            }
            if self.next_shard == self.table.heads.len() {
                return None;
            }
            let mut copies = std::mem::take(&mut self.copies).collect::<Vec<_>>();
            copies.clear();
            self.table.copy_shard(self.next_shard, &mut copies);
            self.next_shard += 1;
            self.copies = copies.into_iter();
        }
    }
}

impl<'a, K: Copy, V: Copy, S> IntoIterator for &'a InlineTable<K, V, S> {
    type Item = (K, V);
    type IntoIter = Iter<'a, K, V, S>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<K, V, S> Drop for InlineTable<K, V, S> {
    fn drop(&mut self) {
        for (head, writer) in self.heads.iter_mut().zip(self.writers.iter_mut()) {
            let word =
                std::mem::replace(head, AtomicPtr::new(ptr::null_mut())).load(Ordering::Relaxed);
            if !word.is_null() {
                // SAFETY: published from an `Array`; `&mut self`: no reader.
                drop(unsafe { Array::from_word(word) });
            }
            drop(lock(&writer.state).bin.take_all());
        }
    }
}

impl<K, V> Default for InlineTable<K, V> {
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
