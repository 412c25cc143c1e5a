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
//! `state` holds two bits:
//!
//! | `WRITER` | `PARKED` | meaning                                              |
//! |----------|----------|------------------------------------------------------|
//! | 0        | 0        | no writer; readers enter with no RMW                 |
//! | 1        | 0        | a writer holds the lock or is draining readers        |
//! | 1        | 1        | as above, and someone sleeps on the condvar          |
//! | 0        | 1        | transient: the writer left, sleepers are being woken |
//!
//! A reader slot counts the read guards its row's thread holds on this lock
//! (the overflow slot: that all overflow threads hold).
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
//!   writers; `fence(SeqCst)`; then wait until every slot in the column is 0
//!   (Acquire loads). New readers now see `WRITER` and wait, so a stream of
//!   readers cannot starve a writer.
//! * Write unlock: swap `state` to 0 (Release); if `PARKED` was set, take
//!   the mutex and `notify_all`.
//! * Sleep: under the mutex, set `PARKED` by CAS only while `WRITER` is set,
//!   then wait on the condvar. The write unlock's swap comes after that CAS in
//!   `state`'s modification order, so it sees `PARKED` and its notify, taken
//!   under the mutex, cannot fall between the check and the wait.
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
//! unlock -> writer's slot load. The writer also reads the thread-index high
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
//! (or its list of overflow holds), the second in `owner`.
//!
//! # Model checking
//!
//! `loom-tests/tests/rwlock.rs`: reader vs writer, writer vs writer, a writer
//! waiting behind readers, and an overflow-row reader. Under loom there are 2
//! own rows, so a third thread takes the overflow path.
//!
//! [`ShardedRwLock`]: crate::ShardedRwLock
//! [`RouterTable`]: crate::RouterTable

use std::cell::RefCell;
use std::marker::PhantomData;
use std::time::Duration;

use crossbeam_utils::{Backoff, CachePadded};

use crate::sync::{
    fence, lock, thread_locals, yield_now, AtomicUsize, Condvar, Mutex, Ordering::*, HAS_TIME,
};
use crate::thread_index;

const WRITER: usize = 1;
const PARKED: usize = 2;

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
            ReadSlot::Overflow(self.slot(self.rows, column), lock.id())
        }
    }

    /// Whether every reader slot of `column` is 0.
    fn drained(&self, column: usize) -> bool {
        thread_index::rows_in_use(self.rows).all(|row| self.slot(row, column).load(Acquire) == 0)
    }
}

thread_locals! {
    /// Locks (by id) this thread holds read guards on through the overflow
    /// row, one entry per guard. Only overflow threads touch it.
    static OVERFLOW_HOLDS: RefCell<Vec<usize>> = RefCell::new(Vec::new());
}

/// The slot a read goes through.
enum ReadSlot<'a> {
    /// This thread's own slot: plain loads and stores.
    Own(&'a AtomicUsize),
    /// The shared overflow slot (RMW), with the lock's id.
    Overflow(&'a AtomicUsize, usize),
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
                // Ignore a torn-down thread-local: the hold just goes uncounted.
                let _ = OVERFLOW_HOLDS.try_with(|holds| holds.borrow_mut().push(id));
                slot.fetch_add(1, Relaxed);
                held
            }
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
                let _ = OVERFLOW_HOLDS.try_with(|holds| {
                    let mut holds = holds.borrow_mut();
                    if let Some(pos) = holds.iter().rposition(|&h| h == id) {
                        holds.swap_remove(pos);
                    }
                });
                slot.fetch_sub(1, Release) == 1
            }
        }
    }
}

fn overflow_holds(id: usize) -> bool {
    OVERFLOW_HOLDS
        .try_with(|holds| holds.borrow().contains(&id))
        .unwrap_or(false)
}

/// The lock word, the writer's identity and the parking place of one lock.
#[derive(Debug)]
pub(crate) struct RawRwLock {
    state: AtomicUsize,
    /// Thread index + 1 of the writer holding the lock, or 0.
    owner: AtomicUsize,
    parking: Mutex<()>,
    wakeup: Condvar,
}

impl RawRwLock {
    pub(crate) fn new() -> Self {
        RawRwLock {
            state: AtomicUsize::new(0),
            owner: AtomicUsize::new(0),
            parking: Mutex::new(()),
            wakeup: Condvar::new(),
        }
    }

    /// Whether thread `me` holds the write lock.
    fn is_owner(&self, me: usize) -> bool {
        me != thread_index::NO_INDEX && self.owner.load(Relaxed) == me + 1
    }

    fn id(&self) -> usize {
        self as *const Self as usize
    }

    /// Acquires a read lock on `column`, waiting while a writer holds or
    /// waits for it.
    ///
    /// # Panics
    /// If this thread holds the write lock.
    #[inline]
    pub(crate) fn read<'a>(&'a self, slots: &'a ReaderSlots, column: usize) -> RawReadGuard<'a> {
        let me = thread_index::current();
        let slot = slots.reader_slot(me, column, self);
        if !self.enter(&slot) {
            self.read_contended(&slot, me);
        }
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
        if slot.decrement() && self.state.load(Relaxed) & WRITER != 0 {
            self.wake_all();
        }
    }

    #[cold]
    fn read_contended(&self, slot: &ReadSlot<'_>, me: usize) {
        loop {
            if self.is_owner(me) {
                panic!("shardlock: this thread holds the write lock; a read here would deadlock");
            }
            self.sleep_while_writer();
            if self.enter(slot) {
                return;
            }
        }
    }

    /// Acquires the write lock on `column`, waiting for readers to drain.
    ///
    /// # Panics
    /// If this thread holds a read or the write lock on it.
    #[inline]
    pub(crate) fn write<'a>(&'a self, slots: &'a ReaderSlots, column: usize) -> RawWriteGuard<'a> {
        let me = thread_index::current();
        if self
            .state
            .compare_exchange(0, WRITER, Acquire, Relaxed)
            .is_err()
        {
            self.write_contended(me);
        }
        // From here on a panic drops the guard, which releases `WRITER`.
        let guard = self.claimed(me);
        fence(SeqCst);
        if !slots.drained(column) {
            self.wait_for_readers(slots, column, me);
        }
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
        let guard = self.claimed(thread_index::current());
        fence(SeqCst);
        // On failure the guard's drop clears `WRITER` and wakes sleepers.
        slots.drained(column).then_some(guard)
    }

    fn claimed(&self, me: usize) -> RawWriteGuard<'_> {
        self.owner.store(me.wrapping_add(1), Relaxed);
        RawWriteGuard {
            lock: self,
            _not_send: PhantomData,
        }
    }

    #[cold]
    fn write_contended(&self, me: usize) {
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
            if self.is_owner(me) {
                panic!("shardlock: this thread already holds the write lock; locking it again would deadlock");
            }
            if HAS_TIME && !backoff.is_completed() {
                backoff.snooze();
            } else {
                self.sleep_while_writer();
            }
        }
    }

    #[cold]
    fn wait_for_readers(&self, slots: &ReaderSlots, column: usize, me: usize) {
        let held_by_me = match slots.reader_slot(me, column, self) {
            ReadSlot::Own(slot) => slot.load(Relaxed) != 0,
            ReadSlot::Overflow(_, id) => overflow_holds(id),
        };
        if held_by_me {
            panic!(
                "shardlock: this thread holds a read lock; taking the write lock would deadlock"
            );
        }
        let backoff = Backoff::new();
        let mut timeout = Duration::from_micros(10);
        while !slots.drained(column) {
            if HAS_TIME && !backoff.is_completed() {
                backoff.snooze();
                continue;
            }
            let parked = lock(&self.parking);
            if slots.drained(column) {
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

    /// Sleeps until `WRITER` is clear (returns at once if it already is).
    #[cold]
    fn sleep_while_writer(&self) {
        let mut parked = lock(&self.parking);
        loop {
            let state = self.state.load(Relaxed);
            if state & WRITER == 0 {
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
    fn new(lock: &'a RawRwLock, slot: ReadSlot<'a>) -> Self {
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
    }
}

/// A held write lock; dropping it unlocks.
pub(crate) struct RawWriteGuard<'a> {
    lock: &'a RawRwLock,
    _not_send: PhantomData<*const ()>,
}

impl Drop for RawWriteGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        self.lock.owner.store(0, Relaxed);
        if self.lock.state.swap(0, Release) & PARKED != 0 {
            self.lock.wake_all();
        }
    }
}
