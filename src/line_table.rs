//! [`LineTable`]: the engine under [`InlineTable`](crate::InlineTable) and
//! [`RouterTable`](crate::RouterTable): sharded arrays of 64-byte bucket
//! lines, probed with no lock and changed in place under a shard's mutex.
//! The two tables differ only in their [`Line`] (the slot codec): entries
//! stored inline ([`InlineLine`]), or tagged pointers to immutable nodes
//! ([`NodeLine`]). Hashing, probing, growth, shrinking and reclamation are
//! written once, here.
//!
//! # Structure
//! A key's shard comes from the top bits of its hash, its home bucket from
//! the low bits, and its tag from bits 40..48. A shard's *head* word points
//! to its bucket array (a power of two of lines, 64-byte aligned, the
//! size's log2 in the head's low bits); null until the first insert.
//!
//! A probe reads the home bucket; if the key is not there and the bucket's
//! `OVERFLOW` bit is set, it reads the next bucket, and so on. An insert
//! takes the first free slot from the home bucket on and sets `OVERFLOW` on
//! every full bucket it passes, so every key lies on its probe. A remove
//! frees its slot at once; `OVERFLOW` bits stay until the shard is rebuilt
//! (after `buckets / 8` of them beyond what the load alone set, or on
//! growing and shrinking). A miss reads one line unless its home overflowed.
//!
//! # Protocol
//! * Writers hold their shard's mutex and change lines in place with the
//!   line's own protocol (see [`inline_line`] and [`node_line`]); readers
//!   pin ([`crate::epoch`]), load the head (`Acquire`), probe and unpin.
//!   They take no lock and store nothing but their own epoch row.
//! * A rebuild (grow, shrink, or one that clears `OVERFLOW` bits) fills a
//!   new array while the old one stays current, publishes it with one
//!   `Release` store of the head, and retires the old array through the
//!   shard's epoch bin; the old array is never written again. A reader
//!   still in it sees the shard as it was when it loaded the head, a moment
//!   at which that array was current: its lookup is linearizable there.
//! * Every other lookup is linearizable at a moment of its probe given by
//!   the line's protocol.
//! * What an entry owns outside its line (a node) is retired into the same
//!   bin when a writer unlinks it, so it outlives every reader that pinned
//!   before the unlink, and so every reader that could have loaded it.
//!
//! loom checks readers against in-place writes, removes and resizes of both
//! tables (`loom-tests/tests/inline_table.rs`, `router_table.rs`).
//!
//! # Reclamation
//! A write that retired an array collects at once; otherwise a shard
//! collects once what it retired weighs `max(64, live / 16)` (an array
//! weighs a quarter of its slots). What a collection keeps back for a
//! pinned reader is freed by later operations ([`crate::epoch::help_free`]).

use std::ptr::{self, NonNull};

use crossbeam_utils::CachePadded;

use crate::epoch::{self, Bin, Guard};
use crate::reentrancy;
use crate::sync::{lock, try_lock, AtomicPtr, AtomicUsize, Mutex, MutexGuard, Ordering};

pub(crate) mod inline_line;
pub(crate) mod node_line;

pub(crate) use inline_line::InlineLine;
pub(crate) use node_line::NodeLine;

/// The largest load (of slots) before a shard grows: 3/4.
const MAX_LOAD: (usize, usize) = (3, 4);
/// The most lines a shard may have (a node keeps the low 32 bits of its
/// hash for rebuilds, which address this many).
const MAX_LINES: usize = 1 << 31;
/// The least weight of retired garbage a collection waits for.
const MIN_BATCH: usize = 64;

/// The tag byte of `hash`: never 0 (0 marks an empty slot).
#[inline(always)]
pub(crate) fn tag_of(hash: u64) -> u8 {
    (hash >> 40) as u8 | 0x80
}

/// What a probe of one line found.
pub(crate) enum Found<R> {
    /// The visitor accepted an entry.
    Hit(R),
    /// Not here; whether the probe must go on to the next line.
    Miss { overflow: bool },
}

/// A slot codec: one 64-byte bucket line of entries, with a tag per slot,
/// read with no lock and written by one writer at a time (the shard's lock
/// holder). All-zero bytes must be a valid empty line.
pub(crate) trait Line: Sized {
    /// What a slot holds, as copies: the entry itself, or its node.
    type Key: Copy;
    type Value: Copy;
    /// What an entry owns outside the line (freed through the epoch once
    /// the entry is unlinked).
    type Owned;
    /// Entries per line.
    const SLOTS: usize;
    /// Whether entries own anything (else `release` is never called).
    const OWNS: bool;

    /// An empty line (loom's atomics must be built, not zeroed).
    #[cfg(loom)]
    fn empty() -> Self;
    /// Under loom, marks a line whose array is being freed, so that a reader
    /// that reaches it (a reclamation bug) fails the model.
    #[cfg(loom)]
    fn poison(&self);

    /// Calls `visit` on entries tagged `tag` until it returns `Some`. No
    /// lock, no store. `visit` may see an entry again after a retry, so it
    /// must have no effect when it returns `None`.
    fn read<R>(
        &self,
        tag: u8,
        visit: impl FnMut(&Self::Key, &Self::Value) -> Option<R>,
    ) -> Found<R>;
    /// Calls `f` on every entry, each seen whole and at most once. No lock.
    fn read_each(&self, f: impl FnMut(Self::Key, Self::Value));

    /// For the lock holder: slot `slot`'s tag (0: free), key and value.
    fn tag(&self, slot: usize) -> u8;
    fn key(&self, slot: usize) -> Self::Key;
    fn value(&self, slot: usize) -> Self::Value;
    fn overflowed(&self) -> bool;

    /// For the lock holder: fills free `slot`.
    fn insert(&self, slot: usize, tag: u8, key: &Self::Key, value: &Self::Value);
    /// Replaces the entry in occupied `slot` with one of an equal key.
    fn replace(&self, slot: usize, key: &Self::Key, value: &Self::Value);
    /// Frees `slot`.
    fn remove(&self, slot: usize);
    /// Marks that an insert passed this line full.
    fn set_overflow(&self);

    /// What the entry in `slot` owns, now that it is unlinked.
    ///
    /// # Safety
    /// The entry was just unlinked (or its array is being dropped with no
    /// reader left), and its owned part is taken only this once.
    unsafe fn release(key: Self::Key, value: Self::Value) -> Option<Self::Owned>;

    /// The slot whose tag is `tag` and whose key `eq` accepts, and the first
    /// free slot. For the lock holder.
    #[inline]
    fn find_locked(
        &self,
        tag: u8,
        mut eq: impl FnMut(&Self::Key) -> bool,
    ) -> (Option<usize>, Option<usize>) {
        let mut free = None;
        for slot in 0..Self::SLOTS {
            match self.tag(slot) {
                0 => {
                    free.get_or_insert(slot);
                }
                t if t == tag && eq(&self.key(slot)) => return (Some(slot), free),
                _ => {}
            }
        }
        (None, free)
    }

    /// The occupied slots. For the lock holder.
    fn occupied(&self) -> impl Iterator<Item = usize> + '_ {
        (0..Self::SLOTS).filter(|&slot| self.tag(slot) != 0)
    }
}

/// The state of an iterator that copies (or clones) one shard's entries at
/// a time, when it reaches that shard (both tables' `iter`).
pub(crate) struct ShardByShard<T> {
    next_shard: usize,
    shards: usize,
    buffer: std::vec::IntoIter<T>,
}

impl<T> ShardByShard<T> {
    pub(crate) fn new(shards: usize) -> Self {
        ShardByShard {
            next_shard: 0,
            shards,
            buffer: Vec::new().into_iter(),
        }
    }

    /// The next entry; `fill(index, out)` puts shard `index`'s entries in
    /// `out` when the buffer runs dry.
    pub(crate) fn next(&mut self, mut fill: impl FnMut(usize, &mut Vec<T>)) -> Option<T> {
        loop {
            if let Some(entry) = self.buffer.next() {
                return Some(entry);
            }
            if self.next_shard == self.shards {
                return None;
            }
            let mut entries = Vec::new();
            fill(self.next_shard, &mut entries);
            self.next_shard += 1;
            self.buffer = entries.into_iter();
        }
    }
}

/// A bucket array, owned: freed (lines only, not what entries own) when
/// dropped.
pub(crate) struct Array<L: Line> {
    base: NonNull<L>,
    len: usize,
}

// SAFETY: an `Array` is plain memory of atomics, freed on any thread; what
// its entries own is released separately.
unsafe impl<L: Line> Send for Array<L> {}

impl<L: Line> Array<L> {
    /// A new array of `len` (a power of two) empty lines.
    fn new(len: usize) -> Self {
        debug_assert!(len.is_power_of_two());
        const { assert!(std::mem::align_of::<L>() >= 64, "a line is a cache line") };
        let layout = std::alloc::Layout::array::<L>(len).expect("bucket count fits");
        // SAFETY: the layout has a non-zero size; all-zero bytes are valid
        // empty lines (the `Line` contract), except loom's, built below.
        let base = unsafe { std::alloc::alloc_zeroed(layout) }.cast::<L>();
        let Some(base) = NonNull::new(base) else {
            std::alloc::handle_alloc_error(layout)
        };
        #[cfg(loom)]
        for i in 0..len {
            // SAFETY: `i < len`, inside the allocation; written once.
            unsafe { base.as_ptr().add(i).write(L::empty()) };
        }
        Array { base, len }
    }

    /// The head word: the address with `log2(len)` in its low bits.
    fn word(&self) -> *mut L {
        self.base
            .as_ptr()
            .map_addr(|a| a | self.len.trailing_zeros() as usize)
    }

    /// Takes back ownership of the array a head word points to.
    ///
    /// # Safety
    /// `word` came from [`Self::word`] of an array that was then leaked
    /// (published), and no one else takes it back.
    unsafe fn from_word(word: *mut L) -> Self {
        let len = len_of(word);
        let base = NonNull::new(word.map_addr(|a| a & !63)).expect("not null");
        Array { base, len }
    }

    fn lines(&self) -> &[L] {
        // SAFETY: `len` initialised lines at `base`, owned by `self`.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.len) }
    }
}

impl<L: Line> Drop for Array<L> {
    fn drop(&mut self) {
        let layout = std::alloc::Layout::array::<L>(self.len).expect("was allocated");
        #[cfg(loom)]
        self.lines().iter().for_each(L::poison);
        // SAFETY: `len` lines built in `new`, dropped once (a no-op but under
        // loom); then freed with the layout they were allocated with.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                self.base.as_ptr(),
                self.len,
            ));
            std::alloc::dealloc(self.base.as_ptr().cast(), layout);
        }
    }
}

/// How many lines the array of a head word has (0 for none): the log2 in
/// its low bits. Reads the word only, never the array.
#[inline(always)]
fn len_of<L>(word: *mut L) -> usize {
    if word.is_null() {
        0
    } else {
        1 << (word.addr() & 63)
    }
}

/// The lines a head word points to.
///
/// # Safety
/// The array is not freed during `'a`: the caller is pinned, or holds the
/// shard's lock (only lock holders retire arrays, and they collect only in
/// `finish`).
#[inline(always)]
unsafe fn lines<'a, L>(word: *mut L) -> Option<&'a [L]> {
    if word.is_null() {
        return None;
    }
    let len = len_of(word);
    // SAFETY: a non-null head came from `Array::word`: `len` initialised
    // lines, kept alive by the caller's contract.
    Some(unsafe { std::slice::from_raw_parts(word.map_addr(|a| a & !63), len) })
}

/// Something a writer unlinked, freed (or dropped, running user code) when
/// dropped itself: after the lock, once no reader can reach it.
pub(crate) enum Garbage<L: Line> {
    Array(#[allow(dead_code)] Array<L>),
    Owned(#[allow(dead_code)] L::Owned),
}

/// A shard's writer side: padded so that writers of neighbouring shards
/// never share a line.
struct Writer<L: Line> {
    state: Mutex<State<L>>,
    /// `State::live`, readable without the lock.
    len: AtomicUsize,
    /// 1 while the bin keeps garbage back for a pinned reader.
    kept: AtomicUsize,
}

struct State<L: Line> {
    live: usize,
    /// Lines with `OVERFLOW` set in the current array. (`u32`s, as a shard
    /// has at most 2^31 lines, so that a writer fits in 128 bytes.)
    overflowed: u32,
    /// `overflowed` right after the last rebuild: what the load alone
    /// causes. Only marks beyond it (left by removes) call for a rebuild.
    overflowed_at_rebuild: u32,
    /// Never shrink below this many lines.
    min_lines: u32,
    /// What was retired since the last collection, weighed (module docs).
    weight: usize,
    /// Whether an array was retired since the last collection.
    retired_array: bool,
    bin: Bin<Garbage<L>>,
}

/// The shards: heads for readers, writers behind padded mutexes.
pub(crate) struct LineTable<L: Line> {
    heads: Box<[AtomicPtr<L>]>,
    writers: Box<[CachePadded<Writer<L>>]>,
    /// `63 - log2(shards)`: a hash shifted right by one and then this is
    /// its shard (two shifts, so that one shard is not a shift by 64).
    shard_shift: u32,
    /// Shards holding garbage that a collection kept back for a pinned
    /// reader; while non-zero, operations help free it.
    pending: CachePadded<AtomicUsize>,
}

impl<L: Line> LineTable<L> {
    /// `shards` shards (rounded up to a power of two, at most 2^16) with
    /// room for `capacity` entries.
    pub(crate) fn new(shards: usize, capacity: usize) -> Self {
        let shards = shards.clamp(1, 1 << 16).next_power_of_two();
        let min_lines = lines_for::<L>(capacity.div_ceil(shards));
        let table = LineTable {
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
                            min_lines: min_lines as u32,
                            weight: 0,
                            retired_array: false,
                            bin: Bin::default(),
                        }),
                        len: AtomicUsize::new(0),
                        kept: AtomicUsize::new(0),
                    })
                })
                .collect(),
            shard_shift: 63 - shards.trailing_zeros(),
            pending: CachePadded::new(AtomicUsize::new(0)),
        };
        if min_lines > 0 {
            for head in table.heads.iter() {
                let array = Array::<L>::new(min_lines);
                head.store(array.word(), Ordering::Relaxed);
                std::mem::forget(array);
            }
        }
        table
    }

    pub(crate) fn shards(&self) -> usize {
        self.heads.len()
    }

    /// Identifies the table to the reentrancy check.
    #[inline(always)]
    pub(crate) fn id(&self) -> usize {
        self.heads.as_ptr() as usize
    }

    /// The number of entries (a sum over shards, each read at a different
    /// moment while writers run).
    pub(crate) fn len(&self) -> usize {
        self.writers
            .iter()
            .map(|w| w.len.load(Ordering::Relaxed))
            .sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.writers
            .iter()
            .all(|w| w.len.load(Ordering::Relaxed) == 0)
    }

    /// The shard of `hash`: its top bits.
    #[inline(always)]
    pub(crate) fn shard_of(&self, hash: u64) -> usize {
        (hash >> 1 >> self.shard_shift) as usize
    }

    pub(crate) fn lock(&self, index: usize) -> Locked<'_, L> {
        let writer = &self.writers[index];
        Locked {
            head: &self.heads[index],
            writer,
            pending: &self.pending,
            state: lock(&writer.state),
        }
    }

    /// Runs `visit` on the entries of `hash`'s probe until it returns
    /// `Some`. The guard keeps the array alive.
    #[inline(always)]
    pub(crate) fn search<R>(
        &self,
        _guard: &Guard,
        hash: u64,
        visit: impl FnMut(&L::Key, &L::Value) -> Option<R>,
    ) -> Option<R> {
        let head = &self.heads[self.shard_of(hash)];
        // SAFETY: pinned (`_guard`), so the array stays allocated.
        unsafe { lines(head.load(Ordering::Acquire)) }.and_then(|lines| search(lines, hash, visit))
    }

    /// Starts loading `hash`'s home line (for batched lookups).
    #[inline(always)]
    pub(crate) fn prefetch(&self, _guard: &Guard, hash: u64) {
        let head = &self.heads[self.shard_of(hash)];
        // SAFETY: pinned (`_guard`), so the array stays allocated.
        if let Some(lines) = unsafe { lines(head.load(Ordering::Acquire)) } {
            crate::prefetch::prefetch(&lines[hash as usize & (lines.len() - 1)]);
        }
    }

    /// Calls `f` on every entry of shard `index`, each seen whole (weakly
    /// consistent across lines).
    pub(crate) fn read_shard(
        &self,
        _guard: &Guard,
        index: usize,
        mut f: impl FnMut(L::Key, L::Value),
    ) {
        // SAFETY: pinned (`_guard`), so the array stays allocated.
        if let Some(lines) = unsafe { lines(self.heads[index].load(Ordering::Acquire)) } {
            for line in lines {
                line.read_each(&mut f);
            }
        }
    }

    /// After an operation: frees garbage kept back for readers, if any. One
    /// load of a line that changes rarely, so reads still write nothing
    /// shared.
    #[inline(always)]
    pub(crate) fn after_operation(&self) {
        if self.pending.load(Ordering::Relaxed) != 0 {
            self.help_reclaim();
        }
    }

    /// Frees garbage kept back for readers (see [`epoch::help_free`]). Only
    /// outside every table's scope, so the `Drop`s it runs may use any
    /// table.
    #[cold]
    #[inline(never)]
    fn help_reclaim(&self) {
        if !reentrancy::outside_every_scope() {
            return;
        }
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
                        })
                    })
                    .collect()
            },
            Locked::oldest_kept,
            Locked::finish_kept,
        );
        drop_garbage(garbage);
    }

    /// How many entries the shards hold before one of them grows: the sum
    /// of their slots under the maximum load (read from the heads, no lock).
    pub(crate) fn capacity(&self) -> usize {
        self.heads
            .iter()
            .map(|head| len_of(head.load(Ordering::Relaxed)) * L::SLOTS * MAX_LOAD.0 / MAX_LOAD.1)
            .sum()
    }

    /// Garbage retired and not yet freed, over every shard.
    pub(crate) fn retired(&self) -> usize {
        (0..self.shards())
            .map(|i| self.lock(i).state.bin.len())
            .sum()
    }
}

impl<L: Line> Drop for LineTable<L> {
    fn drop(&mut self) {
        let mut all = Vec::new();
        for (head, writer) in self.heads.iter_mut().zip(self.writers.iter_mut()) {
            let word =
                std::mem::replace(head, AtomicPtr::new(ptr::null_mut())).load(Ordering::Relaxed);
            if !word.is_null() {
                // SAFETY: published from an `Array`; `&mut self`: no reader.
                let array = unsafe { Array::from_word(word) };
                // SAFETY: no reader is left, and the array goes with them.
                unsafe { release_all(&array, &mut |owned| all.push(Garbage::Owned(owned))) };
                all.push(Garbage::Array(array));
            }
            all.extend(lock(&writer.state).bin.take_all());
        }
        drop_garbage(all);
    }
}

/// Hands what every entry of `array` owns to `out`.
///
/// # Safety
/// The array is unlinked (or no reader is left), and this is done once.
unsafe fn release_all<L: Line>(array: &Array<L>, out: &mut impl FnMut(L::Owned)) {
    for line in array.lines() {
        for slot in line.occupied() {
            // SAFETY: the caller's contract.
            if let Some(owned) = unsafe { L::release(line.key(slot), line.value(slot)) } {
                out(owned);
            }
        }
    }
}

/// Drops garbage after a shard's lock is released; if a `Drop` panics, the
/// rest is still dropped and the first panic then resumes.
pub(crate) fn drop_garbage<L: Line>(garbage: Vec<Garbage<L>>) {
    if !garbage.is_empty() {
        crate::unwind::each_then_resume(garbage, drop);
    }
}

/// The lines a shard needs to hold `live` entries under the maximum load.
fn lines_for<L: Line>(live: usize) -> usize {
    match live {
        0 => 0,
        n => n
            .checked_mul(MAX_LOAD.1)
            .map(|slots| slots.div_ceil(MAX_LOAD.0 * L::SLOTS))
            .and_then(usize::checked_next_power_of_two)
            .filter(|&lines| lines <= MAX_LINES)
            .expect("capacity overflow: a shard holds at most 2^31 lines (use more shards)"),
    }
}

/// What a [`Locked::sweep`] does with an entry.
pub(crate) enum Verdict<L: Line> {
    /// Replace it with an entry of an equal key.
    Replace(L::Key, L::Value),
    Remove,
}

/// Where a key lies in a locked shard's current array.
#[derive(Clone, Copy)]
pub(crate) struct Spot {
    line: usize,
    slot: usize,
}

/// A locked shard.
pub(crate) struct Locked<'a, L: Line> {
    head: &'a AtomicPtr<L>,
    writer: &'a Writer<L>,
    pending: &'a AtomicUsize,
    state: MutexGuard<'a, State<L>>,
}

impl<L: Line> Locked<'_, L> {
    /// The current array's lines.
    pub(crate) fn lines(&self) -> Option<&[L]> {
        // SAFETY: we hold the lock; only lock holders retire arrays, and
        // they collect only in `finish`, which consumes the guard.
        unsafe { lines(self.head.load(Ordering::Relaxed)) }
    }

    #[cfg(feature = "serde")]
    pub(crate) fn live(&self) -> usize {
        self.state.live
    }

    /// Where the key `eq` accepts lies on `hash`'s probe. Valid until the
    /// shard changes.
    #[inline]
    pub(crate) fn lookup(&self, hash: u64, mut eq: impl FnMut(&L::Key) -> bool) -> Option<Spot> {
        let lines = self.lines()?;
        let (mask, tag) = (lines.len() - 1, tag_of(hash));
        let mut at = hash as usize & mask;
        for _ in 0..lines.len() {
            let line = &lines[at];
            if let (Some(slot), _) = line.find_locked(tag, &mut eq) {
                return Some(Spot { line: at, slot });
            }
            if !line.overflowed() {
                break;
            }
            at = (at + 1) & mask;
        }
        None
    }

    fn line(&self, spot: Spot) -> &L {
        &self.lines().expect("a spot implies an array")[spot.line]
    }

    /// The key at `spot` (from [`Self::lookup`]).
    pub(crate) fn key(&self, spot: Spot) -> L::Key {
        self.line(spot).key(spot.slot)
    }

    /// The value at `spot`.
    pub(crate) fn value(&self, spot: Spot) -> L::Value {
        self.line(spot).value(spot.slot)
    }

    /// Inserts a key that [`Self::lookup`] just found absent. `rehome` gives
    /// an entry's hash (its low bits, for the home line) if the shard grows.
    pub(crate) fn insert_new(
        &mut self,
        hash: u64,
        key: &L::Key,
        value: &L::Value,
        rehome: impl Fn(&L::Key, &L::Value) -> u64,
    ) {
        self.reserve_one(rehome);
        let lines = self.lines().expect("reserved");
        let marked = place(lines, hash, tag_of(hash), key, value);
        self.state.overflowed += marked as u32;
        self.set_live(self.state.live + 1);
    }

    /// Frees `spot`, retiring what its entry owns; then shrinks the shard
    /// if that left it under 3/16 full.
    pub(crate) fn remove(&mut self, spot: Spot, rehome: impl Fn(&L::Key, &L::Value) -> u64) {
        let line: *const L = self.line(spot);
        // SAFETY: the array stays current while we hold the lock and until
        // `tidy` rebuilds, which is after the last use of `line`.
        self.remove_in_place(unsafe { &*line }, spot.slot);
        self.tidy(rehome);
    }

    /// A pass over the shard: asks `f` about each occupied slot (its line
    /// and slot) and does what it says. Stops at the first `Err`. Never
    /// rebuilds (call [`Self::tidy`] after).
    pub(crate) fn sweep<E>(
        &mut self,
        mut f: impl FnMut(&L, usize) -> Result<Verdict<L>, E>,
    ) -> Result<(), E> {
        // SAFETY: we hold the lock, and nothing below replaces the array
        // (changing or removing in place never rebuilds), so it stays
        // current and allocated for the whole pass, apart from `&self`.
        let Some(lines) = (unsafe { lines(self.head.load(Ordering::Relaxed)) }) else {
            return Ok(());
        };
        for line in lines {
            for slot in 0..L::SLOTS {
                if line.tag(slot) == 0 {
                    continue;
                }
                match f(line, slot)? {
                    Verdict::Replace(key, value) => self.replace_in_place(line, slot, &key, &value),
                    Verdict::Remove => self.remove_in_place(line, slot),
                }
            }
        }
        Ok(())
    }

    /// Frees `slot` of `line` (in the current array), retiring what its
    /// entry owns. Never rebuilds.
    fn remove_in_place(&mut self, line: &L, slot: usize) {
        let old = L::OWNS.then(|| (line.key(slot), line.value(slot)));
        line.remove(slot);
        self.release(old);
        self.set_live(self.state.live - 1);
    }

    /// Retires what an entry just unlinked owns.
    fn release(&mut self, old: Option<(L::Key, L::Value)>) {
        // SAFETY: the caller unlinked `old` just now and releases it once.
        if let Some(owned) = old.and_then(|(key, value)| unsafe { L::release(key, value) }) {
            self.retire(Garbage::Owned(owned));
        }
    }

    /// Replaces the entry at `spot` with one of an equal key, retiring what
    /// the old one owned.
    pub(crate) fn replace(&mut self, spot: Spot, key: &L::Key, value: &L::Value) {
        let line: *const L = self.line(spot);
        // SAFETY: as in `remove`; nothing here rebuilds.
        self.replace_in_place(unsafe { &*line }, spot.slot, key, value);
    }

    /// Replaces the entry in `slot` of `line` (in the current array).
    fn replace_in_place(&mut self, line: &L, slot: usize, key: &L::Key, value: &L::Value) {
        let old = L::OWNS.then(|| (line.key(slot), line.value(slot)));
        line.replace(slot, key, value);
        self.release(old);
    }

    /// Unlinks every entry and the array, leaving an empty array of the
    /// minimum size (or none).
    pub(crate) fn clear(&mut self) {
        let min = self.state.min_lines as usize;
        let fresh = (min > 0).then(|| Array::new(min));
        self.publish(fresh, 0, true);
        self.set_live(0);
    }

    /// Makes room for `additional` more entries without growing, growing
    /// now if needed.
    pub(crate) fn reserve(
        &mut self,
        additional: usize,
        rehome: impl Fn(&L::Key, &L::Value) -> u64,
    ) {
        let lines = self.lines().map_or(0, <[L]>::len);
        let want = self.state.live.saturating_add(additional);
        if want.saturating_mul(MAX_LOAD.1) > lines * L::SLOTS * MAX_LOAD.0 {
            let len = lines_for::<L>(want)
                .max(self.state.min_lines as usize)
                .max(lines);
            self.rebuild(len, rehome);
        }
    }

    /// Makes room for one more entry: grows (or rebuilds, if too many lines
    /// overflowed) first if needed.
    fn reserve_one(&mut self, rehome: impl Fn(&L::Key, &L::Value) -> u64) {
        let lines = self.lines().map_or(0, <[L]>::len);
        let slots = lines * L::SLOTS;
        if (self.state.live + 1) * MAX_LOAD.1 > slots * MAX_LOAD.0 {
            let len = lines_for::<L>(self.state.live + 1)
                .max(self.state.min_lines as usize)
                .max(2 * lines)
                .max(1);
            self.rebuild(len, rehome);
        } else if self.state.overflowed as usize
            > self.state.overflowed_at_rebuild as usize + lines / 8
        {
            self.rebuild(lines, rehome);
        }
    }

    /// Shrinks if the shard is under 3/16 full (to half its lines).
    pub(crate) fn tidy(&mut self, rehome: impl Fn(&L::Key, &L::Value) -> u64) {
        let lines = self.lines().map_or(0, <[L]>::len);
        if lines > (self.state.min_lines as usize).max(1)
            && self.state.live * 16 < lines * L::SLOTS * 3
        {
            self.rebuild(lines / 2, rehome);
        }
    }

    /// Moves every entry into a new array of `len` lines, publishes it, and
    /// retires the old one.
    fn rebuild(&mut self, len: usize, rehome: impl Fn(&L::Key, &L::Value) -> u64) {
        assert!(
            len <= MAX_LINES,
            "a shard holds at most 2^31 lines (use more shards)"
        );
        let fresh = Array::new(len);
        let mut overflowed = 0;
        for line in self.lines().unwrap_or(&[]) {
            for slot in line.occupied() {
                let (key, value) = (line.key(slot), line.value(slot));
                overflowed += place(
                    fresh.lines(),
                    rehome(&key, &value),
                    line.tag(slot),
                    &key,
                    &value,
                ) as u32;
            }
        }
        self.publish(Some(fresh), overflowed, false);
    }

    /// Makes `fresh` current and retires the old array (and, if `release`,
    /// what its entries own).
    fn publish(&mut self, fresh: Option<Array<L>>, overflowed: u32, release: bool) {
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
            let array = unsafe { Array::from_word(old) };
            if release {
                let mut owned = Vec::new();
                // SAFETY: unlinked just now, released once.
                unsafe { release_all(&array, &mut |o| owned.push(o)) };
                owned
                    .into_iter()
                    .for_each(|o| self.retire(Garbage::Owned(o)));
            }
            self.state.weight += array.len * L::SLOTS / 4;
            self.state.retired_array = true;
            self.state.bin.push(Garbage::Array(array));
        }
    }

    fn retire(&mut self, garbage: Garbage<L>) {
        self.state.weight += 1;
        self.state.bin.push(garbage);
    }

    fn set_live(&mut self, live: usize) {
        self.state.live = live;
        self.writer.len.store(live, Ordering::Relaxed);
    }

    /// Unlocks; collects first if this write retired an array or enough
    /// garbage waits. Returns what to drop after the lock is gone.
    #[inline]
    pub(crate) fn finish(self) -> Vec<Garbage<L>> {
        let batch = (self.state.live / 16).max(MIN_BATCH);
        if self.state.retired_array || self.state.weight >= batch {
            self.finish_now()
        } else {
            Vec::new()
        }
    }

    /// Unlocks, collecting whatever was retired, however little.
    pub(crate) fn finish_now(mut self) -> Vec<Garbage<L>> {
        self.state.weight = 0;
        self.state.retired_array = false;
        let garbage = self.state.bin.collect();
        self.note_kept();
        garbage
    }

    fn oldest_kept(&self) -> Option<u64> {
        self.state.bin.oldest_sealed()
    }

    fn finish_kept(mut self, oldest_pinned: u64) -> Vec<Garbage<L>> {
        let garbage = self.state.bin.free_up_to(oldest_pinned);
        self.note_kept();
        garbage
    }

    /// Updates `kept` and the table's `pending` count after a collection.
    fn note_kept(&mut self) {
        epoch::note_kept(&self.state.bin, &self.writer.kept, self.pending);
    }
}

/// Puts an absent entry in the first free slot of its probe from `hash`'s
/// home line, marking the full lines it passes; returns how many it marked.
/// The array has a free slot.
fn place<L: Line>(lines: &[L], hash: u64, tag: u8, key: &L::Key, value: &L::Value) -> usize {
    let mask = lines.len() - 1;
    let mut at = hash as usize & mask;
    let mut marked = 0;
    loop {
        let line = &lines[at];
        if let (_, Some(slot)) = line.find_locked(tag, |_| false) {
            line.insert(slot, tag, key, value);
            return marked;
        }
        if !line.overflowed() {
            line.set_overflow();
            marked += 1;
        }
        at = (at + 1) & mask;
    }
}

/// Runs `visit` on the entries of `hash`'s probe in `lines` until it
/// returns `Some`: the home line inline, the rest (rare) out of line.
#[inline(always)]
fn search<L: Line, R>(
    lines: &[L],
    hash: u64,
    mut visit: impl FnMut(&L::Key, &L::Value) -> Option<R>,
) -> Option<R> {
    let home = hash as usize & (lines.len() - 1);
    match lines[home].read(tag_of(hash), &mut visit) {
        Found::Hit(result) => Some(result),
        Found::Miss { overflow: false } => None,
        Found::Miss { overflow: true } => search_on(lines, home, tag_of(hash), visit),
    }
}

/// The probe past an overflowed home line.
#[cold]
#[inline(never)]
fn search_on<L: Line, R>(
    lines: &[L],
    home: usize,
    tag: u8,
    mut visit: impl FnMut(&L::Key, &L::Value) -> Option<R>,
) -> Option<R> {
    let mask = lines.len() - 1;
    let mut at = home;
    for _ in 1..lines.len() {
        at = (at + 1) & mask;
        match lines[at].read(tag, &mut visit) {
            Found::Hit(result) => return Some(result),
            Found::Miss { overflow: false } => return None,
            Found::Miss { overflow: true } => {}
        }
    }
    None
}
