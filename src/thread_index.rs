//! Small, dense, reusable thread indices.
//!
//! Each thread that touches a lock gets the lowest free index on first use and
//! returns it when the thread exits, so a process with T live threads uses
//! indices `0..T`. A lock gives the first few indices a reader slot of their
//! own, which the owner writes with plain stores (see [`crate::raw_rwlock`]).
//!
//! `high_water()` bounds every index handed out so far. It only grows, and it
//! is published (SeqCst) before the new index is ever used, so a writer that
//! reads it after its own SeqCst fence sees every index whose slot store
//! precedes that fence in the SeqCst order.

use crate::sync::{lock, thread_locals, AtomicUsize, Mutex, Ordering};

/// The index of a thread whose index is gone (its thread-local was already
/// destroyed). Such a thread uses the shared overflow slot.
pub(crate) const NO_INDEX: usize = usize::MAX;

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

struct Slot(usize);

impl Slot {
    fn acquire() -> Slot {
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
        Slot(index)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // loom tears thread-locals down after its statics, and every loom
        // execution starts with a fresh registry: nothing to give back.
        if !cfg!(loom) {
            lock(&registry().free).0.push(self.0);
        }
    }
}

thread_locals! {
    static CURRENT: Slot = Slot::acquire();
}

/// This thread's index, or [`NO_INDEX`] during thread teardown.
#[inline]
pub(crate) fn current() -> usize {
    CURRENT.try_with(|slot| slot.0).unwrap_or(NO_INDEX)
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
}
