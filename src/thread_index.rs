//! Small, dense, reusable thread indices, and a unique thread identity.
//!
//! Each thread that touches a lock gets the lowest free index on first use.
//! Several structures keep a *row* per index that its owner writes with
//! plain stores: a lock's reader slots ([`crate::raw_rwlock`]), the epoch
//! rows ([`crate::epoch`]) and a `PathLock`'s per-thread counts and last
//! fencing ids. So an index may only pass to another thread once nothing can
//! store through it again.
//!
//! # The lifetime rule for per-index rows
//! Code that stores to a row of index `i` must *hold* `i` while it does:
//! take a [`Hold`] (or a read guard, or an epoch pin, which hold one) first,
//! and use the index the hold returns. A read guard always counts as a
//! holder; a [`Hold`], which never outlives the call that took it, counts
//! only once the thread is exiting (see [`Hold`] for why that suffices).
//! An index is given back only when its thread is exiting *and* no hold
//! remains, so:
//!
//! * no two threads ever store to one row at once, even when a thread-local
//!   destructor drops a read guard in the middle of a pin;
//! * a thread's index never changes while it holds it. Once given back, the
//!   thread gets [`NO_INDEX`] for good (and uses each structure's shared
//!   overflow row, with read-modify-writes). Whatever a structure keeps per
//!   *thread* across calls (a `PathLock`'s last fencing id) must allow for
//!   that one move from a row to the overflow row.
//!
//! Reentrancy scopes ([`crate::reentrancy`]) and write ownership
//! ([`thread_id`]) are keyed by thread-locals and by the never-reused id,
//! not by index, so the rule does not concern them.
//!
//! # Lifecycle of an index
//!
//! | state      | `index`        | meaning                                         |
//! |------------|----------------|-------------------------------------------------|
//! | fresh      | `UNASSIGNED`   | never used; the first [`current`] assigns one    |
//! | live       | `i`            | this thread's; holds count in `holds`            |
//! | exiting    | `i`            | thread-locals are being torn down, holds remain  |
//! | given back | [`NO_INDEX`]   | no hold under `i` remains; `i` is free again      |
//!
//! The thread-local state ([`Local`]) has no destructor, so it stays usable
//! while other thread-locals (which may hold guards) are destroyed. A second
//! thread-local, [`ExitHook`], exists only for its destructor: it marks the
//! thread exiting, and gives the index back at once if no hold is alive.
//! Otherwise the last hold gives it back when it ends ([`released`]). A
//! guard that is leaked keeps its index forever: a lost index, never a
//! shared one.
//!
//! `high_water()` bounds every index handed out so far. It only grows, and it
//! is published (SeqCst) before the new index is ever used, so a writer that
//! reads it after its own SeqCst fence sees every index whose slot store
//! precedes that fence in the SeqCst order.
//!
//! [`thread_id`] is a separate, never-reused identity (a 64-bit counter),
//! readable even during teardown; write-lock ownership is recorded with it.

use std::cell::Cell;

use crate::sync::{lock, thread_locals, AtomicUsize, Mutex, Ordering};

/// The index of a thread whose index is gone (it was given back during
/// teardown). Such a thread uses the shared overflow slot.
pub(crate) const NO_INDEX: usize = usize::MAX;

/// The index of a thread that has not asked for one yet.
const UNASSIGNED: usize = usize::MAX - 1;

struct Registry {
    /// Indices returned by exited threads, and the next fresh one.
    free: Mutex<(Vec<usize>, usize)>,
    high_water: AtomicUsize,
}

crate::sync::lazy_static! {
    static ref registry: Registry = Registry {
        free: Mutex::new((Vec::new(), 0)),
        high_water: AtomicUsize::new(0),
    };
}

fn take_index() -> usize {
    let reg = registry();
    let index = {
        let mut free = lock(&reg.free);
        match free.0.iter().copied().enumerate().min_by_key(|&(_, i)| i) {
            Some((pos, _)) => free.0.swap_remove(pos),
            None => {
                free.1 += 1;
                free.1 - 1
            }
        }
    };
    reg.high_water.fetch_max(index + 1, Ordering::SeqCst);
    index
}

fn give_back(index: usize) {
    // loom tears thread-locals down after its statics, and every loom
    // execution starts with a fresh registry: nothing to give back.
    if !cfg!(loom) && index < UNASSIGNED {
        lock(&registry().free).0.push(index);
    }
}

/// Per-thread state. No field needs dropping, so it is never destroyed
/// before the thread's other thread-locals (see the module docs).
struct Local {
    index: Cell<usize>,
    /// Holds alive that were taken under `index` (read guards, pins,
    /// [`Hold`]s).
    holds: Cell<usize>,
    exiting: Cell<bool>,
    /// [`thread_id`], or 0 before first use.
    id: Cell<u64>,
    /// The epoch's cache of this thread's row (see [`cached_row`]).
    row: Cell<*const ()>,
}

impl Local {
    /// This thread's index, assigned on first use.
    #[inline(always)]
    fn index_or_assign(&self) -> usize {
        match self.index.get() {
            UNASSIGNED => assign(self),
            index => index,
        }
    }
}

/// Only its destructor matters: it runs when the thread exits.
struct ExitHook;

impl Drop for ExitHook {
    fn drop(&mut self) {
        let _ = LOCAL.try_with(|local| {
            local.exiting.set(true);
            local.row.set(std::ptr::null());
            if local.holds.get() == 0 {
                give_back(local.index.replace(NO_INDEX));
            }
        });
    }
}

thread_locals! {
    static LOCAL: Local = const {
        Local {
            index: Cell::new(UNASSIGNED),
            holds: Cell::new(0),
            exiting: Cell::new(false),
            id: Cell::new(0),
            row: Cell::new(std::ptr::null()),
        }
    };
    static EXIT_HOOK: ExitHook = const { ExitHook };
}

/// This thread's index, or [`NO_INDEX`] once it was given back in teardown.
#[inline]
pub(crate) fn current() -> usize {
    LOCAL
        .try_with(|local| local.index_or_assign())
        .unwrap_or(NO_INDEX)
}

#[cold]
fn assign(local: &Local) -> usize {
    // Registering the exit hook fails once teardown destroyed it: a thread
    // that first locks from a thread-local destructor gets no index.
    let index = if local.exiting.get() || EXIT_HOOK.try_with(|_| ()).is_err() {
        NO_INDEX
    } else {
        take_index()
    };
    local.index.set(index);
    index
}

/// Takes a hold on this thread's index and returns the index ([`NO_INDEX`]
/// once it was given back): until the matching [`released`], the index
/// stays this thread's (see the module docs).
#[inline]
pub(crate) fn taken() -> usize {
    LOCAL
        .try_with(|local| {
            local.holds.set(local.holds.get() + 1);
            local.index_or_assign()
        })
        .unwrap_or(NO_INDEX)
}

/// Ends a hold taken by [`taken`]; the last hold of an exiting thread gives
/// its index back.
#[inline]
pub(crate) fn released() {
    let _ = LOCAL.try_with(|local| {
        let left = local.holds.get() - 1;
        local.holds.set(left);
        if left == 0 && local.exiting.get() {
            give_back(local.index.replace(NO_INDEX));
        }
    });
}

/// A hold on this thread's index for the length of one call (a pin, a
/// `PathLock` operation): the index it returns stays this thread's until the
/// `Hold` is dropped. Not `Send`.
///
/// Counted in `holds` only if the thread is already exiting: before that,
/// nothing gives an index back except [`ExitHook`]'s destructor, which runs
/// during thread teardown, never nested in a call that is still running (a
/// call inside another thread-local's destructor ends before teardown moves
/// on). So the common case costs one thread-local access, like [`current`].
/// Read guards, which can outlive the call that took them (kept in a
/// thread-local), always count ([`taken`]).
#[must_use]
pub(crate) struct Hold {
    index: usize,
    counted: bool,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Hold {
    /// The held index ([`NO_INDEX`] if the thread has none any more).
    #[inline]
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// Ends the `Hold` without ending a counted hold: returns whether it
    /// was counted, in which case the caller must call [`released`] later.
    pub(crate) fn into_counted(self) -> bool {
        let counted = self.counted;
        std::mem::forget(self);
        counted
    }
}

/// Holds this thread's index until the returned [`Hold`] is dropped.
#[inline]
pub(crate) fn hold() -> Hold {
    LOCAL
        .try_with(|local| {
            let counted = local.exiting.get();
            if counted {
                local.holds.set(local.holds.get() + 1);
            }
            let index = local.index_or_assign();
            Hold {
                index,
                counted,
                _not_send: std::marker::PhantomData,
            }
        })
        .unwrap_or(Hold {
            index: NO_INDEX,
            counted: false,
            _not_send: std::marker::PhantomData,
        })
}

impl Drop for Hold {
    #[inline]
    fn drop(&mut self) {
        if self.counted {
            released();
        }
    }
}

/// A pointer a caller caches per thread for the thread's index (the epoch
/// keeps its row there): null until [`cache_row`], and null again from the
/// moment the thread starts exiting, when holds start to count. So a
/// non-null value may be used without a [`Hold`]: the index cannot be given
/// back before the thread exits.
#[inline(always)]
pub(crate) fn cached_row() -> *const () {
    LOCAL
        .try_with(|local| local.row.get())
        .unwrap_or(std::ptr::null())
}

/// Caches `row` for [`cached_row`], if the thread is not exiting and still
/// holds `index` (a thread without an index caches nothing).
pub(crate) fn cache_row(index: usize, row: *const ()) {
    let _ = LOCAL.try_with(|local| {
        if !local.exiting.get() && local.index.get() == index && index < UNASSIGNED {
            local.row.set(row);
        }
    });
}

/// A never-reused, non-zero identity of this thread, available even while
/// its thread-locals are torn down.
#[inline]
pub(crate) fn thread_id() -> u64 {
    // Plain std atomic, not the shim: ids are only compared for equality, so
    // loom has nothing to explore in how they are handed out.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    LOCAL
        .try_with(|local| match local.id.get() {
            0 => {
                let id = NEXT.fetch_add(1, Ordering::Relaxed);
                local.id.set(id);
                id
            }
            id => id,
        })
        .unwrap_or(u64::MAX) // only under loom, whose thread-locals do go away
}

/// The machine's available parallelism, read once (it reads cgroup files).
pub(crate) fn cpus() -> usize {
    static CPUS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(4, |n| n.get()))
}

/// The rows a lock with `own_rows` rows of its own must scan: those of
/// indices handed out so far, then its shared overflow row (`own_rows`).
pub(crate) fn rows_in_use(own_rows: usize) -> impl Iterator<Item = usize> {
    (0..high_water().min(own_rows)).chain(std::iter::once(own_rows))
}

/// One more than the largest index handed out so far.
#[inline]
pub(crate) fn high_water() -> usize {
    registry().high_water.load(Ordering::SeqCst)
}

/// Whether `index` is on the free list (given back and not reused yet).
#[cfg(all(test, not(loom)))]
pub(crate) fn is_free(index: usize) -> bool {
    lock(&registry().free).0.contains(&index)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn indices_are_unique_among_live_threads_and_reused() {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let me = current();
                    barrier.wait(); // all four alive at once
                    me
                })
            })
            .collect();
        let mut seen: Vec<usize> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), 4, "live threads shared an index");
        assert!(seen.iter().all(|&i| i < high_water()));
        // Exited threads gave their indices back: a new thread reuses one.
        let again = std::thread::spawn(current).join().unwrap();
        assert!(again < high_water());
    }

    #[test]
    fn thread_ids_are_unique_and_stable() {
        let mine = thread_id();
        assert_eq!(thread_id(), mine);
        let other = std::thread::spawn(thread_id).join().unwrap();
        assert_ne!(other, mine);
        assert_ne!(other, 0);
    }
}
