//! [`ShardedRwLock`]: a reader-writer lock for read-mostly data whose read
//! path writes only the reading thread's own cache line.
//!
//! The protocol lives in [`crate::raw_rwlock`]; this module pairs it with the
//! data ([`LockedCell`], also one shard of a [`crate::RouterTable`]) and
//! offers the safe, guard-based API.

use std::fmt;
use std::ops::{Deref, DerefMut};

use crate::raw_rwlock::{RawReadGuard, RawRwLock, RawWriteGuard, ReaderSlots};
use crate::sync::{ConstPtr, MutPtr, UnsafeCell};

/// A value behind a [`RawRwLock`]; its reader slots live in a shared
/// [`ReaderSlots`] column passed to each call.
pub(crate) struct LockedCell<T> {
    lock: RawRwLock,
    data: UnsafeCell<T>,
}

impl<T> LockedCell<T> {
    pub(crate) fn new(value: T) -> Self {
        LockedCell {
            lock: RawRwLock::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// A `nested` read waits only for a writer that holds the lock, not for
    /// one draining readers (see [`crate::raw_rwlock`]).
    ///
    /// # Safety
    /// This and the three methods below need the same `slots` and `column`
    /// on every call on this cell: a writer only waits for readers counted in
    /// that column, so a reader counted elsewhere could overlap it.
    #[inline]
    pub(crate) unsafe fn read<'a>(
        &'a self,
        slots: &'a ReaderSlots,
        column: usize,
        nested: bool,
    ) -> ShardedReadGuard<'a, T> {
        debug_assert!(column < slots.columns());
        ShardedReadGuard::new(self.lock.read(slots, column, nested), &self.data)
    }

    /// # Safety
    /// As for [`LockedCell::read`].
    #[inline]
    pub(crate) unsafe fn try_read<'a>(
        &'a self,
        slots: &'a ReaderSlots,
        column: usize,
    ) -> Option<ShardedReadGuard<'a, T>> {
        let raw = self.lock.try_read(slots, column)?;
        Some(ShardedReadGuard::new(raw, &self.data))
    }

    /// # Safety
    /// As for [`LockedCell::read`].
    #[inline]
    pub(crate) unsafe fn write<'a>(
        &'a self,
        slots: &'a ReaderSlots,
        column: usize,
    ) -> ShardedWriteGuard<'a, T> {
        ShardedWriteGuard::new(self.lock.write(slots, column), &self.data)
    }

    /// # Safety
    /// As for [`LockedCell::read`].
    #[inline]
    pub(crate) unsafe fn try_write<'a>(
        &'a self,
        slots: &'a ReaderSlots,
        column: usize,
    ) -> Option<ShardedWriteGuard<'a, T>> {
        let raw = self.lock.try_write(slots, column)?;
        Some(ShardedWriteGuard::new(raw, &self.data))
    }

    pub(crate) fn get_mut(&mut self) -> &mut T {
        crate::sync::cell_get_mut(&mut self.data)
    }

    pub(crate) fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

/// A reader-writer lock tuned for read-mostly data.
///
/// * A read lock and unlock write only a slot on the reading thread's own
///   cache line, with plain stores and one fence: no atomic read-modify-write,
///   and nothing other readers write. Reads therefore scale with cores, where
///   a single reader count (std, parking_lot) bounces one line between them.
/// * Writes are exclusive and pay for it: a writer scans one slot per thread
///   that has used the crate's locks. Use it where reads dominate.
/// * Writer-preferring: once a writer waits, new readers wait behind it, so a
///   stream of readers cannot starve a writer.
/// * Reads are reentrant: a thread holding a read guard may take another.
///   Taking the write lock while holding any guard on the same lock, or a read
///   while holding the write lock, panics at once instead of deadlocking.
/// * No poisoning: a panic while a guard is held drops the guard and so
///   releases the lock; the data stays as the panicking code left it.
///
/// The first `clamp(2 × cores, 4, 64)` concurrently live threads get slots of
/// their own; threads beyond that share one overflow slot, updated with RMWs.
/// Guards are not `Send` (like std's). Two locks taken in opposite orders by
/// two threads can deadlock, as with any locks (writer preference makes that
/// include read-read-write cycles); take them in one order.
///
/// # Protocol
/// A read stores `n + 1` to the thread's own slot, issues one SeqCst fence
/// and loads the state word; a writer CASes `WRITER` into the state word,
/// issues one SeqCst fence and waits until every slot is 0. Of the two
/// fences one comes first in the single SeqCst order, so of a reader and a
/// writer that overlap, at least one sees the other and waits. Thread slots
/// are handed out per live thread and only reused once no guard taken under
/// them is alive. The full write-up (states, transitions, orderings, loom
/// models) is at the top of `src/raw_rwlock.rs`.
///
/// Guards stay on their thread, and the lock shares `T` only if `T: Sync`:
///
/// ```compile_fail
/// let lock = shardlock::ShardedRwLock::new(1);
/// let guard = lock.read();
/// std::thread::scope(|s| { s.spawn(move || drop(guard)); }); // guards are not Send
/// ```
/// ```compile_fail
/// fn sync<T: Sync>() {}
/// sync::<shardlock::ShardedRwLock<std::cell::Cell<u8>>>();
/// ```
///
/// ```
/// use shardlock::ShardedRwLock;
///
/// let config = ShardedRwLock::new(vec![1, 2, 3]);
/// assert_eq!(config.read().len(), 3);
/// config.write().push(4);
/// assert_eq!(*config.read(), [1, 2, 3, 4]);
/// ```
pub struct ShardedRwLock<T> {
    slots: ReaderSlots,
    cell: LockedCell<T>,
}

// SAFETY: the lock hands out `&T` to many threads at once (so `T: Sync`) and
// `&mut T` to one thread at a time, possibly not the creator (so `T: Send`).
unsafe impl<T: Send + Sync> Sync for ShardedRwLock<T> {}

impl<T> ShardedRwLock<T> {
    /// Creates an unlocked lock holding `value`.
    pub fn new(value: T) -> Self {
        ShardedRwLock {
            slots: ReaderSlots::new(1),
            cell: LockedCell::new(value),
        }
    }

    /// Locks for reading, waiting while a writer holds or waits for the lock.
    ///
    /// # Panics
    /// If this thread holds the write lock.
    #[inline]
    pub fn read(&self) -> ShardedReadGuard<'_, T> {
        // SAFETY: this lock always uses its own slots, column 0.
        unsafe { self.cell.read(&self.slots, 0, false) }
    }

    /// Locks for writing, waiting for readers and writers to leave.
    ///
    /// # Panics
    /// If this thread holds a read or the write lock on this lock.
    #[inline]
    pub fn write(&self) -> ShardedWriteGuard<'_, T> {
        // SAFETY: this lock always uses its own slots, column 0.
        unsafe { self.cell.write(&self.slots, 0) }
    }

    /// Locks for reading if no writer holds or waits for the lock.
    #[inline]
    pub fn try_read(&self) -> Option<ShardedReadGuard<'_, T>> {
        // SAFETY: this lock always uses its own slots, column 0.
        unsafe { self.cell.try_read(&self.slots, 0) }
    }

    /// Locks for writing if no reader or writer holds the lock (including
    /// this thread: it returns `None` rather than panicking).
    #[inline]
    pub fn try_write(&self) -> Option<ShardedWriteGuard<'_, T>> {
        // SAFETY: this lock always uses its own slots, column 0.
        unsafe { self.cell.try_write(&self.slots, 0) }
    }

    /// The value, through `&mut self`: no locking needed.
    pub fn get_mut(&mut self) -> &mut T {
        self.cell.get_mut()
    }

    /// Consumes the lock and returns the value.
    pub fn into_inner(self) -> T {
        self.cell.into_inner()
    }
}

impl<T: Default> Default for ShardedRwLock<T> {
    fn default() -> Self {
        ShardedRwLock::new(T::default())
    }
}

impl<T: fmt::Debug> fmt::Debug for ShardedRwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("ShardedRwLock");
        match self.try_read() {
            Some(guard) => d.field("data", &&*guard),
            None => d.field("data", &format_args!("<locked>")),
        };
        d.finish_non_exhaustive()
    }
}

impl<T> From<T> for ShardedRwLock<T> {
    fn from(value: T) -> Self {
        ShardedRwLock::new(value)
    }
}

/// Shared access to a [`ShardedRwLock`]'s data; dropping it unlocks.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ShardedReadGuard<'a, T> {
    // Declared before `raw`, so loom sees the access end before the unlock.
    data: ConstPtr<T>,
    raw: RawReadGuard<'a>,
}

// SAFETY: sharing the guard only shares `&T`, which needs `T: Sync`.
unsafe impl<T: Sync> Sync for ShardedReadGuard<'_, T> {}

impl<'a, T> ShardedReadGuard<'a, T> {
    #[inline]
    fn new(raw: RawReadGuard<'a>, data: &'a UnsafeCell<T>) -> Self {
        ShardedReadGuard {
            data: data.get(),
            raw,
        }
    }
}

impl<T> Deref for ShardedReadGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        let _held = &self.raw;
        // SAFETY: `raw` holds a read lock for the guard's whole life, so no
        // writer (the only source of `&mut T`) can run until it drops.
        unsafe { self.data.deref() }
    }
}

impl<T: fmt::Debug> fmt::Debug for ShardedReadGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// Exclusive access to a [`ShardedRwLock`]'s data; dropping it unlocks.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ShardedWriteGuard<'a, T> {
    // Declared before `raw`, so loom sees the access end before the unlock.
    data: MutPtr<T>,
    raw: RawWriteGuard<'a>,
}

// SAFETY: sharing the guard only shares `&T`, which needs `T: Sync`.
unsafe impl<T: Sync> Sync for ShardedWriteGuard<'_, T> {}

impl<'a, T> ShardedWriteGuard<'a, T> {
    #[inline]
    fn new(raw: RawWriteGuard<'a>, data: &'a UnsafeCell<T>) -> Self {
        ShardedWriteGuard {
            data: data.get_mut(),
            raw,
        }
    }
}

impl<T> Deref for ShardedWriteGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        let _held = &self.raw;
        // SAFETY: `raw` holds the write lock, so no other guard exists; the
        // `&T` borrows `self`, so no `&mut T` from this guard coexists.
        unsafe { self.data.deref() }
    }
}

impl<T> DerefMut for ShardedWriteGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        let _held = &self.raw;
        // SAFETY: `raw` holds the write lock and `&mut self` makes this the
        // only reference derived from the guard.
        unsafe { self.data.deref() }
    }
}

impl<T: fmt::Debug> fmt::Debug for ShardedWriteGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(all(test, not(loom)))]
mod tests;

#[cfg(all(test, not(loom)))]
mod regressions;
