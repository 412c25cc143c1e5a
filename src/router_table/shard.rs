//! The shards of a [`RouterTable`](crate::RouterTable): open-addressing
//! tables of pointers to immutable nodes, which readers probe with no lock
//! and writers change under a per-shard mutex.
//!
//! # Layout
//! A shard's *head* word points to its current [`Table`] (null: no slots
//! yet), a power-of-two array of slot words, 64-byte aligned so that the
//! head's low bits hold the size's log2: a probe's only dependent loads are
//! the head, a slot and a node. A slot is empty (null), a tombstone
//! ([`tomb`]), or a pointer to a [`Node`] `{hash, key, value}` that carries
//! 16 bits of the key's hash in its unused top bits, so a probe dereferences
//! only nodes whose tag matches. A node never changes once published:
//! `insert` over a key, `update` and `retain` publish a new node in the same
//! slot. Removal leaves a tombstone (shifting entries back would let a
//! concurrent probe miss a key); tombstones count against the 3/4 load
//! factor, so every table keeps an empty slot and every probe ends, and a
//! rebuild (grow, shrink or same size) drops them.
//!
//! # Protocol
//! Writers hold the shard's mutex, so they are the only ones to store into
//! its head and slots. Readers only load.
//! * A writer publishes a node or table by storing its pointer with
//!   `Release` after initialising it; a reader loads with `Acquire`, so it
//!   sees the contents whole. A rebuild fills the new table first and
//!   publishes it with one store of the head.
//! * A writer that unlinks a node (overwrites its slot) or a table (replaces
//!   the head) retires it into the shard's [`Bin`]; it is freed only after
//!   every reader pinned before the unlink has unpinned (see
//!   [`crate::epoch`]). Readers pin for the whole probe and the user's
//!   closure, so every pointer they hold stays valid.
//! * Each slot holds one node of a key at a time, and each store replaces one
//!   state with the next, so a probe that passes a slot sees it before or
//!   after a write, never in between: a lookup is linearizable at the load
//!   of the slot it ends on (or, on a table that was since replaced, at the
//!   moment it loaded that table's head, which was current then).
//!
//! loom checks a reader against a replace, a remove and a rebuild, each
//! followed by reclamation (`loom-tests/tests/router_table.rs`); values
//! there are loom cells that a premature free would race on.

use std::alloc::{self, Layout};
use std::ptr::{self, NonNull};

use crossbeam_utils::CachePadded;

use crate::epoch::{Bin, Guard};
use crate::sync::{lock, try_lock, AtomicPtr, AtomicUsize, Mutex, MutexGuard, Ordering};

/// A published entry; immutable until it is freed.
pub(crate) struct Node<K, V> {
    /// The low 32 bits of the key's hash: a table's index bits.
    hash: u32,
    pub(crate) key: K,
    pub(crate) value: V,
}

type Slot<K, V> = AtomicPtr<Node<K, V>>;

/// A table: a power-of-two number of slots, at least [`MIN_SLOTS`], in one
/// allocation aligned to [`TABLE_ALIGN`].
pub(crate) type Table<K, V> = [Slot<K, V>];

/// A table's alignment, which leaves the low 6 bits of its address free
/// for its size's log2 in the head word (so a probe needs no load to learn
/// the mask).
const TABLE_ALIGN: usize = 64;

fn table_layout<K, V>(len: usize) -> Layout {
    Layout::array::<Slot<K, V>>(len)
        .and_then(|layout| layout.align_to(TABLE_ALIGN))
        .expect("slot count is at most 2^31")
}

/// A new empty table of `len` slots (a power of two, or 0 for none), as a
/// head word: its address with `log2(len)` in the low bits, or null.
fn new_table<K, V>(len: usize) -> *mut Slot<K, V> {
    if len == 0 {
        return ptr::null_mut();
    }
    debug_assert!(len.is_power_of_two());
    let layout = table_layout::<K, V>(len);
    // SAFETY: the layout has a non-zero size (len ≥ 1 slot of 8 bytes).
    let base = unsafe { alloc::alloc(layout) }.cast::<Slot<K, V>>();
    if base.is_null() {
        alloc::handle_alloc_error(layout);
    }
    for i in 0..len {
        // SAFETY: `i < len`, inside the allocation; each slot written once.
        unsafe { base.add(i).write(AtomicPtr::new(ptr::null_mut())) };
    }
    base.map_addr(|a| a | len.trailing_zeros() as usize)
}

/// The slots a head word points to (`None`: no table).
///
/// # Safety
/// `word` is null or came from [`new_table`], and that table is not freed
/// during `'a`.
#[inline(always)]
unsafe fn table<'a, K, V>(word: *mut Slot<K, V>) -> Option<&'a Table<K, V>> {
    if word.is_null() {
        return None;
    }
    let len = 1 << (word.addr() & (TABLE_ALIGN - 1));
    let base = word.map_addr(|a| a & !(TABLE_ALIGN - 1));
    // SAFETY: `new_table` initialised `len` slots at `base`; the caller
    // keeps them alive.
    Some(unsafe { std::slice::from_raw_parts(base, len) })
}

/// Frees a table (not its nodes).
///
/// # Safety
/// `word` came from [`new_table`], is not null, and no one uses the table
/// again.
unsafe fn free_table<K, V>(word: *mut Slot<K, V>) {
    // SAFETY: the caller's contract.
    let len = unsafe { table(word) }.expect("not null").len();
    let base = word.map_addr(|a| a & !(TABLE_ALIGN - 1));
    // SAFETY: `len` initialised slots at `base`, allocated with this layout.
    unsafe {
        ptr::drop_in_place(ptr::slice_from_raw_parts_mut(base, len));
        alloc::dealloc(base.cast(), table_layout::<K, V>(len));
    }
}

/// Whether slot words carry a hash tag in their top 16 bits (64-bit targets,
/// whose user-space addresses fit in 48 bits; checked at each allocation).
const TAGGED: bool = cfg!(target_pointer_width = "64");
const TAG_SHIFT: u32 = if TAGGED { 48 } else { 0 };
const ADDRESS_MASK: usize = if TAGGED {
    (1 << TAG_SHIFT) - 1
} else {
    usize::MAX
};

/// The tag bits of a node of `hash`: bits 32..48 of the hash, low bit set
/// so that no node's tag is 0 (a tombstone's).
#[inline]
fn tag(hash: u64) -> usize {
    if TAGGED {
        (((hash >> 32) as usize & 0xffff) | 1) << TAG_SHIFT
    } else {
        0
    }
}

/// The tombstone: an address no node has (1 is misaligned), tag 0.
#[inline]
fn tomb<K, V>() -> *mut Node<K, V> {
    ptr::without_provenance_mut(1)
}

#[inline]
fn untagged<K, V>(slot: *mut Node<K, V>) -> *mut Node<K, V> {
    slot.map_addr(|a| a & ADDRESS_MASK)
}

/// The node a slot word points to, unless the slot is empty or a tombstone.
#[inline]
fn live<K, V>(word: *mut Node<K, V>) -> Option<NonNull<Node<K, V>>> {
    if word == tomb() {
        None
    } else {
        NonNull::new(untagged(word))
    }
}

/// The smallest table (small under loom, so that models reach a rebuild).
const MIN_SLOTS: usize = if cfg!(loom) { 4 } else { 8 };

/// The fewest retired objects worth a heavy barrier (1 under loom, so that
/// models reach reclamation).
const MIN_BATCH: usize = if cfg!(loom) { 1 } else { 64 };

/// Slots to hold `live` entries at load ≤ 3/4 (0 for none).
///
/// # Panics
/// Past 2^31 slots (use more shards), or if the count overflows.
pub(crate) fn slots_for(live: usize) -> usize {
    let slots = match live {
        0 => 0,
        n => n
            .checked_add(n / 3 + 1)
            .and_then(usize::checked_next_power_of_two)
            .map_or(usize::MAX, |slots| slots.max(MIN_SLOTS)),
    };
    assert!(slots <= 1 << 31, "shardlock: shard capacity overflow");
    slots
}

/// A shard's head: the reader-visible pointer to its table.
pub(crate) type Head<K, V> = AtomicPtr<Slot<K, V>>;

/// Probes `table` for a node of `hash` that `accept` takes, slot by slot
/// from the home slot (linear probing), up to the first empty slot.
/// Returns the node's slot and node, or that empty slot; `on_tomb` sees each
/// tombstone passed, in order. Slot words carry tags, so only nodes whose
/// tag matches are dereferenced.
///
/// Invariant (kept by every insert and rebuild, which fill the first free
/// slot of this order): no empty slot lies between a key's home slot and
/// its node; removal leaves a tombstone, not an empty slot.
///
/// # Safety
/// Every node the table points to stays valid as long as the table borrow
/// (the caller is pinned, or holds the shard's lock).
#[inline(always)]
unsafe fn probe<K, V>(
    table: &Table<K, V>,
    hash: u64,
    order: Ordering,
    mut accept: impl FnMut(&K) -> bool,
    mut on_tomb: impl FnMut(usize),
) -> Result<(usize, &Node<K, V>), usize> {
    let (mask, want, low) = (table.len() - 1, tag(hash), hash as u32);
    let mut i = low as usize & mask;
    // A table always has an empty slot (load ≤ 3/4), so this ends.
    loop {
        let word = table[i].load(order);
        if word.is_null() {
            return Err(i);
        }
        if word.addr() & !ADDRESS_MASK == want && (TAGGED || word != tomb()) {
            // SAFETY: a tagged, non-tomb word points to a published node,
            // valid as long as `table` by the caller's contract.
            let node = unsafe { &*untagged(word) };
            if node.hash == low && accept(&node.key) {
                return Ok((i, node));
            }
        } else if word == tomb() {
            on_tomb(i);
        }
        i = (i + 1) & mask;
    }
}

/// Finds `hash`'s node whose key `eq` accepts, in the table `head` points
/// to now. The node stays valid while `_guard` lives.
#[inline]
pub(crate) fn find<'g, K, V>(
    head: &'g Head<K, V>,
    _guard: &'g Guard,
    hash: u64,
    eq: impl FnMut(&K) -> bool,
) -> Option<&'g Node<K, V>> {
    // SAFETY: tables and nodes are freed only after every reader pinned
    // before they were unlinked has unpinned, and `_guard` pins this thread
    // for 'g.
    unsafe {
        let table = table(head.load(Ordering::Acquire))?;
        probe(table, hash, Ordering::Acquire, eq, |_| {})
            .ok()
            .map(|(_, node)| node)
    }
}

/// Prefetches the home slot of `hash` in the table `head` points to now
/// (the first stage of a batched lookup).
#[inline(always)]
pub(crate) fn prefetch_slot<K, V>(head: &Head<K, V>, _guard: &Guard, hash: u64) {
    // SAFETY: as in `find`; only an address is computed.
    if let Some(table) = unsafe { table(head.load(Ordering::Acquire)) } {
        crate::prefetch::prefetch(&table[hash as u32 as usize & (table.len() - 1)]);
    }
}

/// Prefetches the node in `hash`'s home slot if its tag matches (the second
/// stage, once the slot is in the cache).
#[inline(always)]
pub(crate) fn prefetch_node<K, V>(head: &Head<K, V>, _guard: &Guard, hash: u64) {
    // SAFETY: as in `find`; the node pointer is only prefetched.
    if let Some(table) = unsafe { table(head.load(Ordering::Acquire)) } {
        let word = table[hash as u32 as usize & (table.len() - 1)].load(Ordering::Acquire);
        if word.addr() & !ADDRESS_MASK == tag(hash) && live(word).is_some() {
            crate::prefetch::prefetch(untagged(word));
        }
    }
}

/// Calls `f` on every node of the table `head` points to now.
pub(crate) fn for_each<'g, K, V>(
    head: &'g Head<K, V>,
    _guard: &'g Guard,
    mut f: impl FnMut(&'g Node<K, V>),
) {
    // SAFETY: as in `find`.
    let Some(table) = (unsafe { table(head.load(Ordering::Acquire)) }) else {
        return;
    };
    for node in table
        .iter()
        .filter_map(|slot| live(slot.load(Ordering::Acquire)))
    {
        // SAFETY: as in `find`.
        f(unsafe { node.as_ref() });
    }
}

/// Something a writer unlinked, freed when dropped.
pub(crate) enum Retired<K, V> {
    Node(NonNull<Node<K, V>>),
    Table(NonNull<Slot<K, V>>),
}

impl<K, V> Drop for Retired<K, V> {
    fn drop(&mut self) {
        // SAFETY: nodes came from `Box::into_raw` and tables from
        // `new_table`; both were unlinked
        // before they were retired, and are retired (so freed) once; a
        // `Retired` is dropped only when no reader can reach it.
        unsafe {
            match *self {
                Retired::Node(node) => drop(Box::from_raw(node.as_ptr())),
                Retired::Table(table) => free_table(table.as_ptr()),
            }
        }
    }
}

// SAFETY: a `Retired` owns a `K` and a `V` (or a table of pointers to
// nodes it does not own), and is dropped on whichever thread collects it.
unsafe impl<K: Send, V: Send> Send for Retired<K, V> {}

/// A shard's writer-side state, behind its mutex.
pub(crate) struct State<K, V> {
    live: usize,
    tombs: usize,
    /// What was retired since the last collect, weighed by [`Locked::retire`].
    weight: usize,
    /// Never shrink below this many slots.
    min_slots: usize,
    bin: Bin<Retired<K, V>>,
}

/// A shard's writer side: padded so that writers of neighbouring shards
/// never share a line.
pub(crate) struct Writer<K, V> {
    state: Mutex<State<K, V>>,
    /// `live`, readable without the mutex (by `len`).
    len: AtomicUsize,
    /// 1 while the bin holds sealed batches that a collection kept back
    /// for a pinned reader (changed only under the mutex).
    kept: AtomicUsize,
}

impl<K, V> Writer<K, V> {
    pub(crate) fn new(min_slots: usize) -> CachePadded<Self> {
        CachePadded::new(Writer {
            state: Mutex::new(State {
                live: 0,
                tombs: 0,
                weight: 0,
                min_slots,
                bin: Bin::default(),
            }),
            len: AtomicUsize::new(0),
            kept: AtomicUsize::new(0),
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Locks the shard for writing. `pending` counts the table's shards
    /// whose `kept` is set.
    pub(crate) fn lock<'a>(
        &'a self,
        head: &'a Head<K, V>,
        pending: &'a AtomicUsize,
    ) -> Locked<'a, K, V> {
        self.locked(head, pending, lock(&self.state))
    }

    /// Locks the shard if it holds garbage kept back for readers and no
    /// one holds its lock now.
    pub(crate) fn try_lock_kept<'a>(
        &'a self,
        head: &'a Head<K, V>,
        pending: &'a AtomicUsize,
    ) -> Option<Locked<'a, K, V>> {
        if self.kept.load(Ordering::Relaxed) == 0 {
            return None;
        }
        Some(self.locked(head, pending, try_lock(&self.state)?))
    }

    fn locked<'a>(
        &'a self,
        head: &'a Head<K, V>,
        pending: &'a AtomicUsize,
        state: MutexGuard<'a, State<K, V>>,
    ) -> Locked<'a, K, V> {
        Locked {
            head,
            len: &self.len,
            kept: &self.kept,
            pending,
            state,
        }
    }

    /// Everything the shard owns (table, nodes, garbage), to be dropped.
    /// For the table's `Drop`: `&mut` proves that no reader remains.
    pub(crate) fn take_all(&mut self, head: &mut Head<K, V>) -> Vec<Retired<K, V>> {
        let table = std::mem::replace(head, AtomicPtr::new(ptr::null_mut()));
        let mut all = retire_all(table);
        all.extend(lock(&self.state).bin.take_all());
        all
    }
}

/// The table behind `head` and all its nodes, as garbage.
fn retire_all<K, V>(head: Head<K, V>) -> Vec<Retired<K, V>> {
    let word = head.load(Ordering::Relaxed);
    // SAFETY: the caller unlinked this table; it stays valid until retired.
    let Some(slots) = (unsafe { table(word) }) else {
        return Vec::new();
    };
    let mut all: Vec<_> = slots
        .iter()
        .filter_map(|slot| live(slot.load(Ordering::Relaxed)))
        .map(Retired::Node)
        .collect();
    all.push(Retired::Table(NonNull::new(word).expect("not null")));
    all
}

/// Where an absent key goes: the first tombstone or the empty slot that
/// ended its probe (`None`: no table yet). Valid until the shard changes.
pub(crate) struct Vacant(Option<usize>);

/// A locked shard.
pub(crate) struct Locked<'a, K, V> {
    head: &'a Head<K, V>,
    len: &'a AtomicUsize,
    kept: &'a AtomicUsize,
    pending: &'a AtomicUsize,
    state: MutexGuard<'a, State<K, V>>,
}

impl<K, V> Locked<'_, K, V> {
    fn table(&self) -> Option<&Table<K, V>> {
        // SAFETY: only writers, which hold this lock, replace or retire the
        // table, and a retired table is not freed while we hold the lock
        // (collection happens in `finish`, after which `self` is gone).
        unsafe { table(self.head.load(Ordering::Relaxed)) }
    }

    /// The current table's slot count.
    #[cfg(test)]
    pub(crate) fn slots(&self) -> usize {
        self.table().map_or(0, |t| t.len())
    }

    #[cfg(feature = "serde")]
    pub(crate) fn live(&self) -> usize {
        self.state.live
    }

    /// The slot of the node whose key `eq` accepts, or where that key goes.
    pub(crate) fn lookup(&self, hash: u64, eq: impl FnMut(&K) -> bool) -> Result<usize, Vacant> {
        let Some(table) = self.table() else {
            return Err(Vacant(None));
        };
        let mut first_tomb = None;
        // SAFETY: only this lock's holder unlinks nodes.
        match unsafe {
            probe(table, hash, Ordering::Relaxed, eq, |i| {
                first_tomb.get_or_insert(i);
            })
        } {
            Ok((i, _)) => Ok(i),
            Err(empty) => Err(Vacant(Some(first_tomb.unwrap_or(empty)))),
        }
    }

    /// The node at a slot from [`Self::lookup`].
    pub(crate) fn node(&self, index: usize) -> &Node<K, V> {
        let table = self.table().expect("a slot implies a table");
        let node = live(table[index].load(Ordering::Relaxed)).expect("a slot from lookup");
        // SAFETY: a live slot's node is freed only after it is unlinked,
        // retired and collected, none of which happens while we hold `&self`.
        unsafe { node.as_ref() }
    }

    /// Inserts a key that [`Self::lookup`] just found absent, with no change
    /// to the shard since.
    pub(crate) fn insert_vacant(&mut self, vacant: Vacant, hash: u64, key: K, value: V) {
        let node = new_node(hash as u32, tag(hash), key, value);
        let slots = self.table().map_or(0, |t| t.len());
        let fits = (self.state.live + self.state.tombs + 1) * 4 <= slots * 3;
        let reuses_tomb = vacant.0.is_some_and(|i| self.is_tomb(i));
        match vacant.0 {
            Some(i) if reuses_tomb || fits => {
                if reuses_tomb {
                    self.state.tombs -= 1;
                }
                self.table().expect("a slot implies a table")[i].store(node, Ordering::Release);
            }
            _ => {
                // Room for a third more than `live` (tombstones are dropped),
                // so the next rebuild is a fifth of the slots away.
                let live = self.state.live + 1;
                self.rebuild(slots_for(live + live / 3).max(self.state.min_slots));
                let table = self.table().expect("just built");
                table[free_slot(table, hash)].store(node, Ordering::Release);
            }
        }
        self.set_live(self.state.live + 1);
    }

    fn is_tomb(&self, index: usize) -> bool {
        self.table()
            .is_some_and(|t| t[index].load(Ordering::Relaxed) == tomb())
    }

    /// Publishes a new node for the key at `index` (`key` must equal it) and
    /// retires the old one, which stays readable (through the returned
    /// reference) until this guard is finished.
    pub(crate) fn replace(&mut self, index: usize, key: K, value: V) -> &Node<K, V> {
        let old = self.table().expect("a slot implies a table")[index].load(Ordering::Relaxed);
        // SAFETY: a live node, as in `node`.
        let low = unsafe { (*untagged(old)).hash };
        let node = new_node(low, old.addr() & !ADDRESS_MASK, key, value);
        self.unlink(index, node)
    }

    /// Leaves a tombstone at `index` and retires its node, which stays
    /// readable (through the returned reference) until this guard is
    /// finished.
    pub(crate) fn remove(&mut self, index: usize) -> &Node<K, V> {
        self.state.tombs += 1;
        self.set_live(self.state.live - 1);
        self.unlink(index, tomb())
    }

    fn unlink(&mut self, index: usize, with: *mut Node<K, V>) -> &Node<K, V> {
        let table = self.table().expect("a slot implies a table");
        let old = table[index].load(Ordering::Relaxed);
        table[index].store(with, Ordering::Release);
        let old = NonNull::new(untagged(old)).expect("a slot from lookup");
        self.retire(Retired::Node(old));
        // SAFETY: retired, so freed only by a later `collect` in `finish`.
        unsafe { old.as_ref() }
    }

    /// The slots of every live node, for a pass over the shard.
    pub(crate) fn occupied(&self) -> Vec<usize> {
        let Some(table) = self.table() else {
            return Vec::new();
        };
        (0..table.len())
            .filter(|&i| live(table[i].load(Ordering::Relaxed)).is_some())
            .collect()
    }

    /// Shrinks a shard that fell below a quarter full, to half full, never
    /// below its minimum; rebuilds one whose tombstones crowd it.
    pub(crate) fn tidy(&mut self) {
        let slots = self.table().map_or(0, |t| t.len());
        let live = self.state.live;
        if slots > self.state.min_slots.max(64) && live * 4 < slots / 4 * 3 {
            self.rebuild(slots_for(live * 2).max(self.state.min_slots));
        }
    }

    /// Unlinks every node and the table, leaving an empty table of the
    /// minimum size.
    pub(crate) fn clear(&mut self) {
        let fresh = new_table(self.state.min_slots);
        let old = self.head.swap(fresh, Ordering::AcqRel);
        for retired in retire_all(AtomicPtr::new(old)) {
            self.retire(retired);
        }
        self.state.tombs = 0;
        self.set_live(0);
    }

    /// Moves every node into a new table of `slots` slots, published with one
    /// store, and retires the old table.
    fn rebuild(&mut self, slots: usize) {
        let fresh = new_table::<K, V>(slots);
        // SAFETY: not yet published: only this thread can see it.
        if let Some(new) = unsafe { table(fresh) } {
            for i in self.occupied() {
                let slot = self.table().expect("occupied")[i].load(Ordering::Relaxed);
                // SAFETY: a live node, as in `node`.
                let hash = unsafe { (*untagged(slot)).hash };
                new[free_slot(new, u64::from(hash))].store(slot, Ordering::Relaxed);
            }
        }
        let old = self.head.swap(fresh, Ordering::AcqRel);
        if let Some(old) = NonNull::new(old) {
            self.retire(Retired::Table(old));
        }
        self.state.tombs = 0;
    }

    fn set_live(&mut self, live: usize) {
        self.state.live = live;
        self.len.store(live, Ordering::Relaxed);
    }

    /// Unlocks the shard, handing back whatever garbage no reader can reach
    /// any more, once enough has been retired to pay for a heavy barrier.
    /// The caller drops it (running user `Drop`s) after the lock is gone.
    pub(crate) fn finish(self) -> Vec<Retired<K, V>> {
        let batch = (self.state.live / 16).max(MIN_BATCH);
        if self.state.weight >= batch {
            self.finish_now_after(|_| {})
        } else {
            Vec::new()
        }
    }

    /// Retires `item`, weighing a table by its memory (a quarter of its
    /// slots, about its bytes in nodes' terms), so that outgrown tables are
    /// freed as promptly as removed entries.
    fn retire(&mut self, item: Retired<K, V>) {
        self.state.weight += match &item {
            Retired::Node(_) => 1,
            Retired::Table(word) => (1 << (word.as_ptr().addr() & (TABLE_ALIGN - 1))) / 4,
        };
        self.state.bin.push(item);
    }

    /// Runs `f`, then unlocks like [`Self::finish`] but collects whatever
    /// was retired, however little.
    pub(crate) fn finish_now_after(mut self, f: impl FnOnce(&mut Self)) -> Vec<Retired<K, V>> {
        f(&mut self);
        self.state.weight = 0;
        let garbage = self.state.bin.collect();
        self.note_kept();
        garbage
    }

    /// The oldest batch this shard keeps back for readers.
    pub(crate) fn oldest_kept(&self) -> Option<u64> {
        self.state.bin.oldest_sealed()
    }

    /// Unlocks, handing back the kept batches that `oldest_pinned` (from
    /// [`crate::epoch::oldest_pinned`], called while this lock was held)
    /// lets go.
    pub(crate) fn finish_kept(mut self, oldest_pinned: u64) -> Vec<Retired<K, V>> {
        let garbage = self.state.bin.free_up_to(oldest_pinned);
        self.note_kept();
        garbage
    }

    /// Updates `kept` and the table's `pending` count after a collection.
    fn note_kept(&mut self) {
        crate::epoch::note_kept(&self.state.bin, self.kept, self.pending);
    }

    /// Objects retired but not yet freed.
    pub(crate) fn retired(&self) -> usize {
        self.state.bin.len()
    }
}

/// The first empty slot of `hash`'s probe, in a table being built (no
/// tombstones, and no node of the same key).
fn free_slot<K, V>(table: &Table<K, V>, hash: u64) -> usize {
    // SAFETY: the caller holds the shard's lock; `accept` takes no node.
    match unsafe { probe(table, hash, Ordering::Relaxed, |_| false, |_| {}) } {
        Ok(_) => unreachable!("accept takes nothing"),
        Err(empty) => empty,
    }
}

/// A new node for a key whose hash has low bits `low` and tag bits `tag`,
/// tagged for its slot.
///
/// # Panics
/// If the allocator returns an address above 2^48 on a 64-bit target (no
/// supported OS does for ordinary allocations).
fn new_node<K, V>(low: u32, tag: usize, key: K, value: V) -> *mut Node<K, V> {
    let node = Box::into_raw(Box::new(Node {
        hash: low,
        key,
        value,
    }));
    if node.addr() & !ADDRESS_MASK != 0 {
        // SAFETY: just allocated, never shared.
        drop(unsafe { Box::from_raw(node) });
        panic!("shardlock: a node allocated above 2^48, which slot tags need");
    }
    node.map_addr(|a| a | tag)
}
