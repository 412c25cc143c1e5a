//! The reader-writer lock protocol behind [`ShardedRwLock`] and every shard
//! of [`RouterTable`].
//!
//! # Layout
//!
//! A lock is one [`RawRwLock`] (a `state` word, an `owner` word and a
//! mutex/condvar pair used only for parking) plus one *column* of a
//! [`ReaderSlots`] matrix. The matrix has one row per thread index (see
//! [`crate::thread_index`]) and one column per lock: a table of N shards
//! shares one N-column matrix, a `ShardedRwLock` owns a 1-column one. A row
//! is a whole number of cache lines, so each thread writes only lines no other
//! thread writes. Threads whose index is past the last row share one extra
//! *overflow* row, which they update with RMWs.
//!
//! # States
//!
//! `state` holds three bits and a count:
//!
//! | `WRITER` | `IN` | `PARKED` | nested count | meaning                                   |
//! |----------|------|----------|--------------|-------------------------------------------|
//! | 0        | 0    | 0        | 0            | no writer; readers enter with no RMW      |
//! | 1        | 0    | any      | any          | a writer is draining readers              |
//! | 1        | 1    | any      | 0            | a writer holds the lock                   |
//! | 0        | 0    | 1        | any          | transient: the writer left, waking sleepers |
//! | 0        | 0    | 0        | > 0          | a draining writer gave up (`try_write`)   |
//!
//! `PARKED` means someone sleeps on the condvar. A reader slot counts the
//! read guards its row's thread holds on this lock (the overflow slot: that
//! all overflow threads hold). The nested count (bits 3..) counts *nested*
//! readers that entered past a draining writer (below).
//!
//! # Transitions
//!
//! * Read (own row): `n = slot; slot = n + 1` (plain load and store). If
//!   `n > 0` the thread already holds a read, so no writer can be inside and
//!   it is done (reads are reentrant). Otherwise `fence(SeqCst)`, then load
//!   `state` (Acquire): no `WRITER` means it is in. Else it puts the slot back
//!   to 0, wakes the writer, sleeps until `WRITER` clears, and retries.
//! * Read unlock: `slot = n - 1` (Release). If that reached 0 and `WRITER` is
//!   set (a Relaxed load), wake the writer so it need not wait out a timeout.
//! * Write: CAS `WRITER` into `state` (Acquire), which also excludes other
//!   writers; `fence(SeqCst)`; wait until every slot in the column is 0
//!   (Acquire loads); then CAS `IN` into `state` while the nested count is 0
//!   (Acquire), waiting for nested readers to leave first. New readers now
//!   see `WRITER` and wait, so a stream of readers cannot starve a writer.
//! * Nested read: a [`RouterTable`] read issued while the same thread holds
//!   a read of another shard of the same table (a `get` inside `get_with`)
//!   must not wait behind a *draining* writer: that writer may wait for a
//!   reader that itself waits, nested, behind a writer draining our first
//!   shard, a cycle no thread can break. So when the plain entry fails, a
//!   nested reader CASes the nested count up while `WRITER` is set and `IN`
//!   is not, and leaves with a Release `fetch_sub`. It waits only for a
//!   writer that is `IN`, which waits for nothing.
//! * Write unlock: swap `state` to 0 (Release; the nested count is 0 while
//!   `IN`); a writer that gives up before `IN` clears only its own bits. If
//!   `PARKED` was set, take the mutex and `notify_all`.
//! * Sleep: under the mutex, set `PARKED` by CAS only while the awaited bit
//!   (`WRITER`, or `IN` for a nested reader) is set, then wait on the
//!   condvar. The unlock's RMW comes after that CAS in `state`'s modification
//!   order, so it sees `PARKED` and its notify, taken under the mutex, cannot
//!   fall between the check and the wait.
//!
//! # Orderings
//!
//! The one invariant: *a reader that passed its `WRITER` check and a writer
//! that passed its slot scan never overlap.* The reader's slot store and the
//! writer's `WRITER` CAS are each followed by a SeqCst fence. Of the two
//! fences, one comes first in the single SeqCst order. If the reader's comes
//! first, the writer's later loads see the slot store; if the writer's comes
//! first, the reader's load sees `WRITER`. Either way one of them waits
//! (the classic store-buffer argument). The data is then published by the
//! Release/Acquire pairs: write unlock -> reader's `state` load, and read
//! unlock -> writer's slot load. Nested readers and the writer's `IN` meet
//! in RMWs on the one `state` word, so they are totally ordered: a nested
//! reader either counted itself before the writer's `IN` CAS (which then
//! fails and waits for its Release `fetch_sub`) or saw `IN` and waits. The
//! writer also reads the thread-index high
//! water mark after its fence; a thread publishes it (SeqCst) before its
//! first slot store, so the scan cannot skip a row in use.
//!
//! The read unlock's wake-up check is a Relaxed load after a store, which x86
//! may reorder, so it can miss a writer that just started waiting. The writer
//! therefore waits with a timeout (10 µs doubling to 1 ms) as well; a missed
//! wake-up costs latency, never progress. The fast read path has one fence
//! and no RMW; the unlock has neither.
//!
//! # Reentrancy (never a silent deadlock)
//!
//! A thread that already holds a read may read again (see above). A thread
//! that holds a read and asks for the write lock, or holds the write lock and
//! asks for either, panics at once instead: the first is seen in its own slot
//! (or its list of overflow holds, keyed by a lock id that is never reused,
//! so a leaked guard of a freed lock cannot vouch for a new lock at the same
//! address), the second in `owner`, a thread identity that stays readable in
//! thread-local destructors (see [`crate::thread_index`]).
//!
//! # Model checking
//!
//! `loom-tests/tests/rwlock.rs`: reader vs writer, writer vs writer, a writer
//! waiting behind readers, and an overflow-row reader. Under loom there are 2
//! own rows, so a third thread takes the overflow path.
//! Nested reads were built for `RouterTable`'s lock-based shards; since its
//! reads became lock-free (`src/line_table/node_line.rs`) nothing passes
//! `nested = true`, so that path is unused and no longer model-checked
//! (`loom-tests/tests/router_table.rs` now models the lock-free reads).
//!
//! [`ShardedRwLock`]: crate::ShardedRwLock
//! [`RouterTable`]: crate::RouterTable

use std::cell::{Cell, RefCell};
use std::marker::PhantomData;
use std::time::Duration;

use crossbeam_utils::{Backoff, CachePadded};

use crate::sync::{
    fence, lock, thread_locals, yield_now, AtomicU64, AtomicUsize, Condvar, Mutex, Ordering::*,
    HAS_TIME,
};
use crate::thread_index;

const WRITER: usize = 1;
const PARKED: usize = 2;
const IN: usize = 4;
const NESTED_ONE: usize = 8;
const NESTED_MASK: usize = !(NESTED_ONE - 1);

/// Slots per padded line: 128 bytes, crossbeam's `CachePadded` size on x86_64.
#[cfg(not(loom))]
const SLOTS_PER_LINE: usize = 16;
#[cfg(loom)]
const SLOTS_PER_LINE: usize = 2;

/// How many threads get a row of their own (also the row count of
/// [`crate::path_lock`]'s distributed intention counts).
pub(crate) fn default_rows() -> usize {
    if cfg!(loom) {
        return 2;
    }
    (2 * thread_index::cpus()).clamp(4, 64)
}

/// Per-thread reader counts for a set of locks (one column each).
pub(crate) struct ReaderSlots {
    lines: Box<[CachePadded<[AtomicUsize; SLOTS_PER_LINE]>]>,
    /// Rows owned by one thread each; row `rows` is the shared overflow row.
    rows: usize,
    lines_per_row: usize,
    columns: usize,
}

impl ReaderSlots {
    pub(crate) fn new(columns: usize) -> Self {
        let rows = default_rows();
        let lines_per_row = columns.div_ceil(SLOTS_PER_LINE).max(1);
        let lines = (0..(rows + 1) * lines_per_row)
            .map(|_| CachePadded::new(std::array::from_fn(|_| AtomicUsize::new(0))))
            .collect();
        ReaderSlots {
            lines,
            rows,
            lines_per_row,
            columns,
        }
    }

    pub(crate) fn columns(&self) -> usize {
        self.columns
    }

    #[inline]
    fn slot(&self, row: usize, column: usize) -> &AtomicUsize {
        &self.lines[row * self.lines_per_row + column / SLOTS_PER_LINE][column % SLOTS_PER_LINE]
    }

    /// The slot this thread reads through.
    #[inline]
    fn reader_slot(&self, me: usize, column: usize, lock: &RawRwLock) -> ReadSlot<'_> {
        if me < self.rows {
            ReadSlot::Own(self.slot(me, column))
        } else {
            ReadSlot::Overflow(self.slot(self.rows, column), lock.id)
        }
    }

    /// Whether every reader slot of `column` is 0.
    fn drained(&self, column: usize) -> bool {
        thread_index::rows_in_use(self.rows).all(|row| self.slot(row, column).load(Acquire) == 0)
    }
}

/// Overflow holds kept inline, in a thread-local with no destructor (so
/// they stay usable in thread-local destructors).
const INLINE_HOLDS: usize = 16;

thread_locals! {
    /// Ids of locks this thread holds read guards on through the overflow
    /// row, one entry per guard (0: free entry). Only overflow threads
    /// touch it.
    static OVERFLOW_HOLDS: [Cell<u64>; INLINE_HOLDS] = const { [const { Cell::new(0) }; INLINE_HOLDS] };
    /// Holds beyond the inline ones (unavailable during teardown, where such
    /// a hold goes uncounted: reentrancy on it is then not detected).
    static SPILLED_HOLDS: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

fn add_hold(id: u64) {
    let placed = OVERFLOW_HOLDS
        .try_with(|holds| {
            holds
                .iter()
                .find(|h| h.get() == 0)
                .map(|h| h.set(id))
                .is_some()
        })
        .unwrap_or(false);
    if !placed {
        let _ = SPILLED_HOLDS.try_with(|spilled| spilled.borrow_mut().push(id));
    }
}

fn remove_hold(id: u64) {
    let removed = OVERFLOW_HOLDS
        .try_with(|holds| {
            holds
                .iter()
                .find(|h| h.get() == id)
                .map(|h| h.set(0))
                .is_some()
        })
        .unwrap_or(false);
    if !removed {
        let _ = SPILLED_HOLDS.try_with(|spilled| {
            let mut spilled = spilled.borrow_mut();
            if let Some(pos) = spilled.iter().rposition(|&h| h == id) {
                spilled.swap_remove(pos);
            }
        });
    }
}

fn overflow_holds(id: u64) -> bool {
    OVERFLOW_HOLDS
        .try_with(|holds| holds.iter().any(|h| h.get() == id))
        .unwrap_or(false)
        || SPILLED_HOLDS
            .try_with(|spilled| spilled.borrow().contains(&id))
            .unwrap_or(false)
}

/// Lock ids: never reused, never 0. Plain std atomic, not the shim: ids
/// are only compared for equality.
fn next_lock_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, Relaxed)
}

/// How a read is counted.
enum ReadSlot<'a> {
    /// This thread's own slot: plain loads and stores.
    Own(&'a AtomicUsize),
    /// The shared overflow slot (RMW), with the lock's id.
    Overflow(&'a AtomicUsize, u64),
    /// The nested count in `state` (see "Nested read").
    Nested,
}

impl ReadSlot<'_> {
    /// Counts one more read; returns whether this thread already held one.
    #[inline]
    fn increment(&self) -> bool {
        match *self {
            ReadSlot::Own(slot) => {
                let held = slot.load(Relaxed);
                slot.store(held + 1, Relaxed);
                held > 0
            }
            ReadSlot::Overflow(slot, id) => {
                let held = overflow_holds(id);
                add_hold(id);
                slot.fetch_add(1, Relaxed);
                held
            }
            ReadSlot::Nested => unreachable!("nested reads enter through the state word"),
        }
    }

    /// Counts one read less; returns whether this row now holds none.
    #[inline]
    fn decrement(&self) -> bool {
        match *self {
            ReadSlot::Own(slot) => {
                let held = slot.load(Relaxed);
                slot.store(held - 1, Release);
                held == 1
            }
            ReadSlot::Overflow(slot, id) => {
                remove_hold(id);
                slot.fetch_sub(1, Release) == 1
            }
            ReadSlot::Nested => unreachable!("nested reads leave through the state word"),
        }
    }
}

/// The lock word, the writer's identity and the parking place of one lock.
#[derive(Debug)]
pub(crate) struct RawRwLock {
    state: AtomicUsize,
    /// [`thread_index::thread_id`] of the writer holding the lock, or 0.
    owner: AtomicU64,
    /// Keys this lock in threads' overflow holds; never reused.
    id: u64,
    parking: Mutex<()>,
    wakeup: Condvar,
}

impl RawRwLock {
    pub(crate) fn new() -> Self {
        RawRwLock {
            state: AtomicUsize::new(0),
            owner: AtomicU64::new(0),
            id: next_lock_id(),
            parking: Mutex::new(()),
            wakeup: Condvar::new(),
        }
    }

    /// Whether this thread holds the write lock.
    fn is_owner(&self) -> bool {
        self.owner.load(Relaxed) == thread_index::thread_id()
    }

    /// Acquires a read lock on `column`, waiting while a writer holds or
    /// waits for it. A `nested` read (see the module docs) waits only while
    /// a writer holds it.
    ///
    /// # Panics
    /// If this thread holds the write lock.
    #[inline]
    pub(crate) fn read<'a>(
        &'a self,
        slots: &'a ReaderSlots,
        column: usize,
        nested: bool,
    ) -> RawReadGuard<'a> {
        let slot = slots.reader_slot(thread_index::current(), column, self);
        if self.enter(&slot) {
            return RawReadGuard::new(self, slot);
        }
        let slot = self.read_contended(slot, nested);
        RawReadGuard::new(self, slot)
    }

    /// Acquires a read lock if no writer holds or waits for it.
    #[inline]
    pub(crate) fn try_read<'a>(
        &'a self,
        slots: &'a ReaderSlots,
        column: usize,
    ) -> Option<RawReadGuard<'a>> {
        let slot = slots.reader_slot(thread_index::current(), column, self);
        self.enter(&slot).then(|| RawReadGuard::new(self, slot))
    }

    /// One attempt to enter as a reader; on failure the slot is restored.
    #[inline]
    fn enter(&self, slot: &ReadSlot<'_>) -> bool {
        if slot.increment() {
            return true; // reentrant: this thread already keeps writers out
        }
        fence(SeqCst);
        if self.state.load(Acquire) & WRITER == 0 {
            return true;
        }
        self.leave(slot);
        false
    }

    #[inline]
    fn leave(&self, slot: &ReadSlot<'_>) {
        let last = match slot {
            ReadSlot::Nested => {
                let before = self.state.fetch_sub(NESTED_ONE, Release);
                before & NESTED_MASK == NESTED_ONE
            }
            _ => slot.decrement(),
        };
        if last && self.state.load(Relaxed) & WRITER != 0 {
            self.wake_all();
        }
    }

    #[cold]
    fn read_contended<'a>(&'a self, slot: ReadSlot<'a>, nested: bool) -> ReadSlot<'a> {
        loop {
            if self.is_owner() {
                panic!("shardlock: this thread holds the write lock; a read here would deadlock");
            }
            if nested && self.enter_nested() {
                return ReadSlot::Nested;
            }
            self.sleep_while(if nested { IN } else { WRITER });
            if self.enter(&slot) {
                return slot;
            }
        }
    }

    /// Counts a nested reader in while a writer drains but is not `IN`.
    fn enter_nested(&self) -> bool {
        let mut state = self.state.load(Relaxed);
        while state & (WRITER | IN) == WRITER {
            match self
                .state
                .compare_exchange_weak(state, state + NESTED_ONE, Acquire, Relaxed)
            {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
        false
    }

    /// Acquires the write lock on `column`, waiting for readers to drain.
    ///
    /// # Panics
    /// If this thread holds a read or the write lock on it.
    #[inline]
    pub(crate) fn write<'a>(&'a self, slots: &'a ReaderSlots, column: usize) -> RawWriteGuard<'a> {
        if self
            .state
            .compare_exchange(0, WRITER, Acquire, Relaxed)
            .is_err()
        {
            self.write_contended();
        }
        // From here on a panic drops the guard, which releases `WRITER`.
        let mut guard = self.claimed();
        fence(SeqCst);
        if !(slots.drained(column) && self.admit()) {
            self.wait_for_readers(slots, column);
        }
        guard.admitted = true;
        guard
    }

    /// Acquires the write lock if no reader or writer holds it.
    pub(crate) fn try_write<'a>(
        &'a self,
        slots: &'a ReaderSlots,
        column: usize,
    ) -> Option<RawWriteGuard<'a>> {
        let state = self.state.load(Relaxed);
        if state & WRITER != 0
            || self
                .state
                .compare_exchange(state, state | WRITER, Acquire, Relaxed)
                .is_err()
        {
            return None;
        }
        let mut guard = self.claimed();
        fence(SeqCst);
        // On failure the guard's drop clears `WRITER` and wakes sleepers.
        guard.admitted = slots.drained(column) && self.admit();
        guard.admitted.then_some(guard)
    }

    fn claimed(&self) -> RawWriteGuard<'_> {
        self.owner.store(thread_index::thread_id(), Relaxed);
        RawWriteGuard {
            lock: self,
            admitted: false,
            _not_send: PhantomData,
        }
    }

    /// Sets `IN` unless nested readers are in; the writer then holds the lock.
    #[inline]
    fn admit(&self) -> bool {
        let mut state = self.state.load(Relaxed);
        while state & NESTED_MASK == 0 {
            match self
                .state
                .compare_exchange_weak(state, state | IN, Acquire, Relaxed)
            {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
        false
    }

    #[cold]
    fn write_contended(&self) {
        let backoff = Backoff::new();
        loop {
            let state = self.state.load(Relaxed);
            if state & WRITER == 0 {
                if self
                    .state
                    .compare_exchange_weak(state, state | WRITER, Acquire, Relaxed)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            if self.is_owner() {
                panic!("shardlock: this thread already holds the write lock; locking it again would deadlock");
            }
            if HAS_TIME && !backoff.is_completed() {
                backoff.snooze();
            } else {
                self.sleep_while(WRITER);
            }
        }
    }

    #[cold]
    fn wait_for_readers(&self, slots: &ReaderSlots, column: usize) {
        let held_by_me = match slots.reader_slot(thread_index::current(), column, self) {
            ReadSlot::Own(slot) => slot.load(Relaxed) != 0,
            ReadSlot::Overflow(_, id) => overflow_holds(id),
            ReadSlot::Nested => false,
        };
        if held_by_me {
            panic!(
                "shardlock: this thread holds a read lock; taking the write lock would deadlock"
            );
        }
        let backoff = Backoff::new();
        let mut timeout = Duration::from_micros(10);
        let ready = || slots.drained(column) && self.admit();
        while !ready() {
            if HAS_TIME && !backoff.is_completed() {
                backoff.snooze();
                continue;
            }
            let parked = lock(&self.parking);
            if ready() {
                return;
            }
            if HAS_TIME {
                // A reader's unlock usually wakes us; the timeout covers the
                // rare wake-up it misses (see the module docs).
                drop(self.wakeup.wait_timeout(parked, timeout));
                timeout = (timeout * 2).min(Duration::from_millis(1));
            } else {
                drop(parked);
                yield_now();
            }
        }
    }

    /// Sleeps until `bit` (`WRITER` or `IN`) of the state is clear (returns
    /// at once if it already is).
    #[cold]
    fn sleep_while(&self, bit: usize) {
        let mut parked = lock(&self.parking);
        loop {
            let state = self.state.load(Relaxed);
            if state & bit == 0 {
                return;
            }
            if state & PARKED == 0
                && self
                    .state
                    .compare_exchange(state, state | PARKED, Relaxed, Relaxed)
                    .is_err()
            {
                continue;
            }
            parked = self
                .wakeup
                .wait(parked)
                .unwrap_or_else(|poison| poison.into_inner());
        }
    }

    #[cold]
    fn wake_all(&self) {
        let _parked = lock(&self.parking);
        self.wakeup.notify_all();
    }
}

/// A held read lock; dropping it unlocks. Not `Send`: the slot it counts in
/// belongs to the thread that took it.
pub(crate) struct RawReadGuard<'a> {
    lock: &'a RawRwLock,
    slot: ReadSlot<'a>,
    _not_send: PhantomData<*const ()>,
}

impl<'a> RawReadGuard<'a> {
    #[inline]
    fn new(lock: &'a RawRwLock, slot: ReadSlot<'a>) -> Self {
        // The thread's index must not pass to another thread while this
        // guard can still store to its row (see `thread_index`).
        let _ = thread_index::taken();
        RawReadGuard {
            lock,
            slot,
            _not_send: PhantomData,
        }
    }
}

impl Drop for RawReadGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.leave(&self.slot);
        thread_index::released();
    }
}

/// A held write lock (or, until `admitted`, a claim on it); dropping it
/// unlocks.
pub(crate) struct RawWriteGuard<'a> {
    lock: &'a RawRwLock,
    /// `IN` is set: no nested reader is counted in `state`.
    admitted: bool,
    _not_send: PhantomData<*const ()>,
}

impl Drop for RawWriteGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.owner.store(0, Relaxed);
        let before = if self.admitted {
            self.lock.state.swap(0, Release)
        } else {
            // Gave up while draining: nested readers may still be in.
            self.lock.state.fetch_and(!(WRITER | IN | PARKED), Release)
        };
        if before & PARKED != 0 {
            self.lock.wake_all();
        }
    }
}
