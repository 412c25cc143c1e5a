//! Epoch-based reclamation with a light reader barrier: what lets
//! [`crate::RouterTable`] readers take no lock, execute no atomic
//! read-modify-write and no StoreLoad fence, and write only their own line.
//!
//! # Protocol
//! A global epoch `E` (starting at 1) and one padded *row* per thread index,
//! in segments allocated as indices grow (so a pin never locks). A pin holds
//! its index (see `thread_index`), so no other thread writes its row while
//! it is pinned.
//!
//! | row value | meaning                                                   |
//! |-----------|-----------------------------------------------------------|
//! | `0`       | not pinned                                                |
//! | `e ≥ 1`   | pinned; the reader loaded `E == e` before its first read  |
//!
//! * **pin**: `e = E.load(Acquire)`; `row.store(e, Release)`; *light
//!   barrier*; then the reader loads pointers (Acquire) and dereferences
//!   them. A pin nested in another one on the same thread finds its row
//!   non-zero and does nothing.
//! * **unpin**: `row.store(0, Release)`.
//! * **retire**: a writer first unlinks an object (no pointer to it remains
//!   in the structure), then pushes it into a [`Bin`].
//! * **collect**: the bin *seals* what it holds with tag
//!   `t = E.fetch_add(1, SeqCst) + 1`, executes the *heavy barrier*, reads
//!   every row (Acquire) and takes the smallest non-zero value `m`. Every
//!   sealed batch with `t ≤ m` is freed; later batches wait for a later
//!   collect.
//!
//! # Why a batch with `t ≤ m` is unreachable
//! Take a reader that could still dereference an object of the batch. Its
//! row was either seen by the scan, or not:
//! * seen with value `e`: if `e ≥ t`, it loaded `E` from the `fetch_add`
//!   that sealed the batch or a later one (one release sequence), so that
//!   `fetch_add` and every unlink before it happen before its loads, which
//!   therefore never find the object. So `e < t`, hence `m < t`: the batch
//!   is kept. A value from a *later* pin is Release too, so it also carries
//!   the end of the reader's earlier pins;
//! * seen as `0` after an unpin: the unpin (Release) was read by the scan
//!   (Acquire), so the reader's loads happen before the free;
//! * not seen at all: this is a store-buffering (Dekker) pair: the reader
//!   stores its row and then loads a slot; the collector unlinked (before
//!   sealing) and then loads the row. The light and heavy barriers together
//!   forbid both loads from missing the other side's store, so the reader's
//!   slot load sees the unlink and never finds the object.
//!
//! # Barriers
//! On Linux the heavy barrier is `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)`,
//! which runs a full memory barrier on every CPU now running one of this
//! process's threads; the light barrier is then only a compiler fence (the
//! pairing liburcu, folly and `seize` use). Where membarrier is missing
//! (other systems, a seccomp filter already in place, miri, loom), or when
//! `SHARDLOCK_NO_MEMBARRIER=1` is set, both barriers are `fence(SeqCst)`,
//! decided once before the first pin.
//!
//! If membarrier is refused *after* it was registered (a seccomp filter
//! installed later), readers already pinned with only a compiler fence
//! would be unprotected. folly falls back to an `mprotect` trick there, whose
//! TLB-shootdown IPIs act as barriers on x86 but not on arm64 (which
//! invalidates TLBs by broadcast, with no IPI); we know of no fallback that
//! is correct everywhere, so the process stops at the first refusal with a
//! message that names the cause and `SHARDLOCK_NO_MEMBARRIER`
//! (`tests/membarrier_refused.rs`).
//!
//! loom checks the symmetric variant through the table models in
//! `loom-tests/tests/router_table.rs` (under loom every write that retires
//! something collects, and every later operation helps free what was kept);
//! the asymmetric one rests on the kernel's documented guarantee.
//!
//! A thread without an index (one that pins from a thread-local destructor
//! after giving its index back) pushes its epoch into a mutex-protected
//! list: the mutex orders it against the scan, which reads that list under
//! the same mutex.
//!
//! # Rows and their segments
//! Row `i` lives in segment `s` (the first inline, the rest allocated on
//! first use with a CAS, never freed while the collector lives). A reader
//! publishes its segment before its first row store, so a scan that does
//! not see the segment does not see the row either: the "not seen at all"
//! case above, which the barriers cover. A scan reads rows up to
//! `thread_index::high_water()`, which covers every index handed out.
//!
//! # Freeing later
//! [`oldest_pinned`] (heavy barrier, then scan) may also run after the
//! sealing, on any thread that holds the bin's owner lock: a batch sealed
//! before the barrier is judged exactly as in a collect. `RouterTable` uses
//! this to free what a collection kept back, without waiting for writes.
//!
//! The heavy barrier costs microseconds, so a bin collects only once its
//! owner has retired enough to amortize it (see `RouterTable`).

use std::collections::VecDeque;
use std::marker::PhantomData;

use crossbeam_utils::CachePadded;

use crate::sync::{fence, lock, thread_locals, AtomicPtr, AtomicU64, Mutex, Ordering};
use crate::thread_index;

struct Collector {
    epoch: CachePadded<AtomicU64>,
    rows: Rows,
    /// Epochs pinned by threads without an index (a multiset).
    overflow: Mutex<Vec<u64>>,
    /// Whether the heavy barrier is `membarrier`, so the light one may be a
    /// compiler fence. Fixed before the first pin.
    asymmetric: bool,
}

crate::sync::lazy_static! {
    static ref collector: Collector = Collector {
        epoch: CachePadded::new(AtomicU64::new(1)),
        rows: Rows::new(),
        overflow: Mutex::new(Vec::new()),
        asymmetric: membarrier::wanted() && membarrier::register(),
    };
}

type Row = CachePadded<AtomicU64>;

/// Rows in the first segment, which lives inline in the collector (so the
/// common pin needs no pointer load); segment `s` holds `FIRST << s`.
const FIRST: usize = if cfg!(loom) { 2 } else { 32 };
/// Enough segments for every index below `FIRST × (2^SEGMENTS − 1)`.
const SEGMENTS: usize = 32;

/// The first index of segment `s` (and, for `s = SEGMENTS`, one past the
/// last index with a row).
const fn segment_start(s: usize) -> usize {
    FIRST * ((1 << s) - 1)
}

/// One row per thread index, in segments that double in size: the first
/// inline, the others allocated on first use and never moved or freed
/// (until the collector is), so a row's address is stable and a pin never
/// takes a lock.
struct Rows {
    first: [Row; FIRST],
    /// Segment `s ≥ 1` (index 0 unused).
    more: [AtomicPtr<Row>; SEGMENTS],
}

impl Rows {
    fn new() -> Self {
        Rows {
            first: std::array::from_fn(|_| CachePadded::new(AtomicU64::new(0))),
            more: std::array::from_fn(|_| AtomicPtr::new(std::ptr::null_mut())),
        }
    }

    /// The segment of `index` and the index's offset in it.
    #[inline(always)]
    fn locate(index: usize) -> (usize, usize) {
        let segment = (index / FIRST + 1).ilog2() as usize;
        (segment, index - segment_start(segment))
    }

    /// The row of thread index `index`, allocating its segment if needed;
    /// `None` past the last segment (or for [`thread_index::NO_INDEX`]).
    #[inline(always)]
    fn get(&self, index: usize) -> Option<&Row> {
        match self.first.get(index) {
            Some(row) => Some(row),
            None => self.get_beyond_first(index),
        }
    }

    #[inline(never)]
    fn get_beyond_first(&self, index: usize) -> Option<&Row> {
        if index >= segment_start(SEGMENTS) {
            return None;
        }
        let (segment, offset) = Self::locate(index);
        let base = self.more[segment].load(Ordering::Acquire);
        let base = if base.is_null() {
            self.grow(segment)
        } else {
            base
        };
        // SAFETY: a non-null segment pointer came from `grow`: `FIRST <<
        // segment` initialised rows that live as long as `self`, and
        // `offset` is below that.
        Some(unsafe { &*base.add(offset) })
    }

    /// Allocates segment `segment` (another thread may win the race).
    #[cold]
    fn grow(&self, segment: usize) -> *mut Row {
        let rows: Box<[Row]> = (0..FIRST << segment)
            .map(|_| CachePadded::new(AtomicU64::new(0)))
            .collect();
        let fresh = Box::into_raw(rows).cast::<Row>();
        match self.more[segment].compare_exchange(
            std::ptr::null_mut(),
            fresh,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => fresh,
            Err(winner) => {
                // SAFETY: `fresh` is ours alone: it lost the race and was
                // never shared.
                drop(unsafe { Box::from_raw(slice_of(fresh, segment)) });
                winner
            }
        }
    }

    /// The rows of indices `0..end` that exist (a missing segment has no
    /// pinned thread), each loaded with `Acquire`.
    fn load_up_to(&self, end: usize) -> impl Iterator<Item = u64> + '_ {
        let first = self.first[..end.min(FIRST)].iter();
        let more = (1..SEGMENTS)
            .take_while(move |&s| segment_start(s) < end)
            .flat_map(move |s| {
                let base = self.more[s].load(Ordering::Acquire);
                let start = segment_start(s);
                let len = if base.is_null() {
                    0
                } else {
                    (FIRST << s).min(end - start)
                };
                (0..len).map(move |offset| {
                    // SAFETY: as in `get_beyond_first`: a published segment
                    // of `FIRST << s` rows, and `offset` is below that.
                    unsafe { &*base.add(offset) }
                })
            });
        first
            .map(|row| &**row)
            .chain(more.map(|row| &**row))
            .map(|row| row.load(Ordering::Acquire))
    }
}

/// Segment `segment`'s rows at `base`, as the boxed slice they came from.
fn slice_of(base: *mut Row, segment: usize) -> *mut [Row] {
    std::ptr::slice_from_raw_parts_mut(base, FIRST << segment)
}

impl Drop for Rows {
    fn drop(&mut self) {
        for (s, segment) in self.more.iter_mut().enumerate() {
            let base = segment.load(Ordering::Relaxed);
            if !base.is_null() {
                // SAFETY: allocated by `grow` as a boxed slice of this
                // length; `&mut self` means no pin uses it any more.
                drop(unsafe { Box::from_raw(slice_of(base, s)) });
            }
        }
    }
}

impl Collector {
    #[inline(always)]
    fn light_barrier(&self) {
        if self.asymmetric {
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }

    fn heavy_barrier(&self) {
        if self.asymmetric {
            membarrier::heavy();
        } else {
            fence(Ordering::SeqCst);
        }
    }

    /// The smallest epoch pinned now, or `u64::MAX`.
    fn min_pinned(&self) -> u64 {
        let rows = self.rows.load_up_to(thread_index::high_water());
        let overflow = lock(&self.overflow).iter().copied().min();
        rows.filter(|&e| e != 0)
            .chain(overflow)
            .min()
            .unwrap_or(u64::MAX)
    }
}

/// The cheap side of an asymmetric Dekker pair: a compiler fence when the
/// other side runs [`heavy_barrier`] through membarrier, else
/// `fence(SeqCst)`. Of a thread that stores then light-barriers then loads,
/// and one that stores then heavy-barriers then loads, at least one load
/// sees the other thread's store. Also used by `PathLock` releases.
#[inline(always)]
pub(crate) fn light_barrier() {
    collector().light_barrier();
}

/// The expensive side (microseconds with membarrier): see [`light_barrier`].
pub(crate) fn heavy_barrier() {
    collector().heavy_barrier();
}

/// Keeps everything retired before [`pin`] alive until it is dropped. Not
/// `Send`: it clears its own thread's row.
#[must_use]
pub(crate) struct Guard(Pin, PhantomData<*const ()>);

enum Pin {
    /// The outermost pin of a thread with an index, through its row. If
    /// `counted`, the pin took a counted hold on the index (an exiting
    /// thread: see `thread_index::Hold`), released after the row is
    /// cleared, so no other thread gets the row meanwhile.
    Row {
        row: &'static AtomicU64,
        counted: bool,
    },
    /// Inside another pin of this thread: nothing to undo.
    Nested,
    Overflow(u64),
}

/// Pins this thread: objects retired from now on are not freed until the
/// guard is dropped, and objects retired before are not freed while the
/// thread can still reach them. Reentrant.
#[inline(always)]
pub(crate) fn pin() -> Guard {
    // The fast path: the row cached for this live thread (see
    // `thread_index::cached_row`), which needs no hold.
    let cached = thread_index::cached_row().cast::<AtomicU64>();
    if !cached.is_null() {
        // SAFETY: a cached row is one of the collector's rows, which live
        // as long as the collector (the whole program, or a loom execution,
        // which also resets thread-locals).
        let row: &'static AtomicU64 = unsafe { &*cached };
        if row.load(Ordering::Relaxed) != 0 {
            return Guard(Pin::Nested, PhantomData);
        }
        let c = collector();
        row.store(c.epoch.load(Ordering::Acquire), Ordering::Release);
        c.light_barrier();
        return Guard(
            Pin::Row {
                row,
                counted: false,
            },
            PhantomData,
        );
    }
    pin_slow()
}

/// The first pin of a thread, or a pin during thread teardown: holds the
/// index for the guard's life, and caches the row if the thread is live.
#[cold]
#[inline(never)]
fn pin_slow() -> Guard {
    let c = collector();
    // Held until the guard is dropped: a thread-local destructor that drops
    // the thread's last read guard inside this pin cannot give the index
    // (and so this row) to another thread.
    let hold = thread_index::hold();
    match c.rows.get(hold.index()) {
        Some(row) => {
            thread_index::cache_row(hold.index(), (&**row as *const AtomicU64).cast());
            if row.load(Ordering::Relaxed) != 0 {
                return Guard(Pin::Nested, PhantomData);
            }
            let epoch = c.epoch.load(Ordering::Acquire);
            row.store(epoch, Ordering::Release);
            c.light_barrier();
            Guard(
                Pin::Row {
                    row,
                    counted: hold.into_counted(),
                },
                PhantomData,
            )
        }
        None => pin_overflow(c),
    }
}

#[cold]
fn pin_overflow(c: &Collector) -> Guard {
    let mut pinned = lock(&c.overflow);
    let epoch = c.epoch.load(Ordering::Acquire);
    pinned.push(epoch);
    Guard(Pin::Overflow(epoch), PhantomData)
}

impl Drop for Guard {
    #[inline(always)]
    fn drop(&mut self) {
        match self.0 {
            Pin::Row { row, counted } => {
                row.store(0, Ordering::Release);
                if counted {
                    thread_index::released();
                }
            }
            Pin::Nested => {}
            Pin::Overflow(epoch) => unpin_overflow(epoch),
        }
    }
}

#[cold]
fn unpin_overflow(epoch: u64) {
    let mut pinned = lock(&collector().overflow);
    let at = pinned.iter().position(|&e| e == epoch);
    pinned.swap_remove(at.expect("an overflow pin is listed"));
}

/// Objects one owner retired, freed (dropped) once no reader can reach them.
/// The owner serializes its calls (a shard's writer lock).
pub(crate) struct Bin<T> {
    fresh: Vec<T>,
    sealed: VecDeque<(u64, Vec<T>)>,
    len: usize,
}

impl<T> Default for Bin<T> {
    fn default() -> Self {
        Bin {
            fresh: Vec::new(),
            sealed: VecDeque::new(),
            len: 0,
        }
    }
}

impl<T> Bin<T> {
    /// Retires `item`, which the caller has already unlinked: no reader that
    /// pins from now on can find it.
    pub(crate) fn push(&mut self, item: T) {
        self.fresh.push(item);
        self.len += 1;
    }

    /// Objects retired and not yet handed back by [`Self::collect`].
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Objects retired since the last [`Self::collect`].
    #[cfg(test)]
    pub(crate) fn fresh(&self) -> usize {
        self.fresh.len()
    }

    /// Everything the bin holds, whether or not readers could reach it: only
    /// for an owner that knows no reader remains (it is being dropped).
    pub(crate) fn take_all(&mut self) -> Vec<T> {
        self.len = 0;
        let mut all = std::mem::take(&mut self.fresh);
        all.extend(self.sealed.drain(..).flat_map(|(_, batch)| batch));
        all
    }

    /// Seals what was retired so far, and hands back every object that no
    /// reader can reach any more, for the caller to drop (outside its lock).
    /// Costs a heavy barrier.
    pub(crate) fn collect(&mut self) -> Vec<T> {
        let c = collector();
        if !self.fresh.is_empty() {
            let tag = c.epoch.fetch_add(1, Ordering::SeqCst) + 1;
            self.sealed
                .push_back((tag, std::mem::take(&mut self.fresh)));
        }
        if self.sealed.is_empty() {
            return Vec::new();
        }
        self.free_up_to(oldest_pinned())
    }

    /// The tag of the oldest batch sealed and not yet handed back.
    pub(crate) fn oldest_sealed(&self) -> Option<u64> {
        self.sealed.front().map(|&(tag, _)| tag)
    }

    /// Hands back every sealed batch with a tag up to `oldest_pinned`, which
    /// [`oldest_pinned`] returned *after* every one of them was sealed (the
    /// caller holds the owner's lock across both).
    pub(crate) fn free_up_to(&mut self, oldest_pinned: u64) -> Vec<T> {
        let mut free = Vec::new();
        while let Some((tag, _)) = self.sealed.front() {
            if *tag > oldest_pinned {
                break;
            }
            let (_, batch) = self.sealed.pop_front().expect("front exists");
            free.extend(batch);
        }
        self.len -= free.len();
        free
    }
}

/// Executes the heavy barrier, then returns the smallest epoch pinned now
/// (`u64::MAX` if none): a batch sealed before the call with a tag up to it
/// is unreachable (see the protocol).
pub(crate) fn oldest_pinned() -> u64 {
    let c = collector();
    c.heavy_barrier();
    c.min_pinned()
}

/// [`oldest_pinned`] without the barrier: a hint only (a pin not yet
/// visible may be missed), to skip a barrier that could free nothing.
pub(crate) fn oldest_pinned_hint() -> u64 {
    collector().min_pinned()
}

/// Records after a collection whether `bin` keeps batches back for pinned
/// readers: `kept` (its owner's flag, 0 or 1, changed only under the owner's
/// lock) follows it, and `pending` (the table's count of such owners) with
/// it, so that operations know to call [`help_free`].
pub(crate) fn note_kept<T>(
    bin: &Bin<T>,
    kept: &crate::sync::AtomicUsize,
    pending: &crate::sync::AtomicUsize,
) {
    let now = usize::from(bin.oldest_sealed().is_some());
    if kept.load(Ordering::Relaxed) != now {
        kept.store(now, Ordering::Relaxed);
        if now == 1 {
            pending.fetch_add(1, Ordering::Relaxed);
        } else {
            pending.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// How often (in one thread's operations on tables that keep garbage) a
/// thread tries to free it: the bound the tables document.
pub(crate) const HELP_EVERY: u32 = if cfg!(loom) { 1 } else { 64 };

thread_locals! {
    /// Operations left before this thread next helps free kept garbage.
    static HELP_COUNTDOWN: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Frees garbage that owners' collections kept back for pinned readers,
/// once [`HELP_EVERY`] of this thread's calls have passed since its last
/// try. `lock_kept` locks the owners that keep some (skipping any locked
/// now); `oldest_kept` gives one's oldest batch; `finish` unlocks one,
/// freeing what an [`oldest_pinned`] result allows. The heavy barrier runs
/// only when no reader seems pinned before the oldest batch, and after every
/// lock is taken (so after every batch it judges was sealed). Returns what
/// to drop, after the locks are gone.
pub(crate) fn help_free<L, T>(
    lock_kept: impl FnOnce() -> Vec<L>,
    oldest_kept: impl Fn(&L) -> Option<u64>,
    mut finish: impl FnMut(L, u64) -> Vec<T>,
) -> Vec<T> {
    let due = HELP_COUNTDOWN
        .try_with(|left| match left.get() {
            0 => {
                left.set(HELP_EVERY - 1);
                true
            }
            n => {
                left.set(n - 1);
                false
            }
        })
        .unwrap_or(false);
    if !due {
        return Vec::new();
    }
    let locked = lock_kept();
    let Some(oldest) = locked.iter().filter_map(&oldest_kept).min() else {
        return Vec::new();
    };
    if oldest_pinned_hint() < oldest {
        return Vec::new(); // a reader that may see it is still pinned
    }
    let pinned = oldest_pinned();
    locked
        .into_iter()
        .flat_map(|owner| finish(owner, pinned))
        .collect()
}

/// `membarrier(2)` on Linux; elsewhere (and under miri and loom) absent.
mod membarrier {
    #[cfg(all(target_os = "linux", not(miri), not(loom)))]
    mod imp {
        const QUERY: libc::c_int = 0;
        const PRIVATE_EXPEDITED: libc::c_int = 1 << 3;
        const REGISTER_PRIVATE_EXPEDITED: libc::c_int = 1 << 4;

        fn call(cmd: libc::c_int) -> libc::c_long {
            // SAFETY: membarrier takes two integer arguments and touches no
            // memory of ours; an unknown command just fails with EINVAL.
            unsafe {
                libc::syscall(
                    libc::SYS_membarrier,
                    cmd,
                    0 as libc::c_uint,
                    0 as libc::c_int,
                )
            }
        }

        pub(crate) fn register() -> bool {
            let supported = call(QUERY);
            supported > 0
                && supported & libc::c_long::from(PRIVATE_EXPEDITED) != 0
                && call(REGISTER_PRIVATE_EXPEDITED) == 0
        }

        pub(crate) fn heavy() {
            // Registered before any reader pinned with a light barrier, so
            // only a seccomp filter (or similar) installed since can make it
            // fail. Readers pinned with a compiler fence alone are then
            // unprotected, and no other barrier is known to be correct on
            // every architecture, so stop, saying why and how to avoid it.
            if call(PRIVATE_EXPEDITED) != 0 {
                refused(std::io::Error::last_os_error());
            }
        }

        #[cold]
        fn refused(error: std::io::Error) -> ! {
            eprintln!(
                "shardlock: membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) was refused \
                 ({error}) after it was registered, probably by a seccomp filter \
                 installed since; lock-free readers could be unprotected, so the \
                 process stops. Allow membarrier(2), or set {}=1 before the \
                 first lock to use fences instead.",
                super::OPT_OUT
            );
            std::process::abort();
        }
    }

    #[cfg(not(all(target_os = "linux", not(miri), not(loom))))]
    mod imp {
        pub(crate) fn register() -> bool {
            false
        }

        pub(crate) fn heavy() {
            unreachable!("membarrier is never registered here");
        }
    }

    pub(crate) use imp::{heavy, register};

    /// The environment variable that turns membarrier off (`1`): both
    /// barriers are then `fence(SeqCst)`. For processes that will forbid
    /// the system call later (a seccomp sandbox).
    pub(crate) const OPT_OUT: &str = "SHARDLOCK_NO_MEMBARRIER";

    /// Whether to try membarrier at all (see [`OPT_OUT`]).
    pub(crate) fn wanted() -> bool {
        !cfg!(loom) && std::env::var_os(OPT_OUT).is_none_or(|v| v != "1")
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;

    /// Counts its drops.
    struct Tracked(Arc<AtomicUsize>);

    /// Collects until the bin is empty. Other tests in this process pin
    /// briefly, so this may take a few rounds.
    fn drain(bin: &mut Bin<Tracked>) {
        while bin.len() > 0 {
            drop(bin.collect());
            std::thread::yield_now();
        }
    }

    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_collect_with_no_reader_pinned_frees_everything() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut bin = Bin::default();
        for _ in 0..3 {
            bin.push(Tracked(drops.clone()));
        }
        assert_eq!((bin.len(), bin.fresh()), (3, 3));
        drain(&mut bin);
        assert_eq!(drops.load(Ordering::SeqCst), 3);
        assert_eq!(bin.fresh(), 0);
    }

    #[test]
    fn a_pinned_reader_holds_back_what_was_retired_before_it_unpins() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut bin = Bin::default();
        std::thread::scope(|s| {
            // Another thread pins; this thread retires and collects.
            let (pinned_tx, pinned_rx) = std::sync::mpsc::channel();
            let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
            s.spawn(move || {
                let guard = pin();
                pinned_tx.send(()).unwrap();
                done_rx.recv().unwrap();
                drop(guard);
            });
            pinned_rx.recv().unwrap();
            bin.push(Tracked(drops.clone()));
            drop(bin.collect());
            assert_eq!(
                drops.load(Ordering::SeqCst),
                0,
                "freed under a pinned reader"
            );
            assert_eq!(bin.len(), 1);
            done_tx.send(()).unwrap();
        });
        drain(&mut bin);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
        drop(bin);
    }

    #[test]
    fn pins_nest_and_only_the_outermost_unpins() {
        let outer = pin();
        let inner = pin();
        assert!(matches!(inner.0, Pin::Nested | Pin::Overflow(_)));
        assert!(matches!(outer.0, Pin::Row { .. }));
        drop(inner);
        // Still pinned: something retired now waits for `outer`.
        let drops = Arc::new(AtomicUsize::new(0));
        let mut bin = Bin::default();
        bin.push(Tracked(drops.clone()));
        assert!(bin.collect().is_empty(), "freed under this thread's pin");
        drop(outer);
        drain(&mut bin);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    /// Issue 15, item 9: threads past `clamp(4 × cores, 8, 256)` rows pinned
    /// through one global mutex (8 rows on 2 cores). Now every thread with
    /// an index gets a row of its own, however many are alive.
    #[test]
    #[cfg_attr(miri, ignore = "many threads")]
    fn every_live_thread_pins_in_a_row_of_its_own() {
        let threads = 100;
        let barrier = std::sync::Barrier::new(threads);
        let rows: Vec<usize> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let guard = pin();
                        barrier.wait(); // all pinned at once
                        let row = match guard.0 {
                            Pin::Row { row, .. } => Ok(row as *const AtomicU64 as usize),
                            Pin::Nested => Err("a first pin was taken for a nested one"),
                            Pin::Overflow(_) => Err("pinned through the overflow mutex"),
                        };
                        barrier.wait(); // no row is reused while compared
                        row
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap().unwrap())
                .collect()
        });
        let mut distinct = rows.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), threads, "two live threads shared a row");
    }

    #[test]
    fn row_segments_cover_every_index_once() {
        let mut expected = (0, 0);
        for index in 0..FIRST * 100 {
            let (segment, offset) = Rows::locate(index);
            if segment != expected.0 {
                assert_eq!((segment, offset), (expected.0 + 1, 0), "index {index}");
                assert_eq!(
                    expected.1,
                    FIRST << expected.0,
                    "segment {} size",
                    expected.0
                );
                expected = (segment, 0);
            }
            assert_eq!(offset, expected.1, "index {index}");
            expected.1 += 1;
        }
    }

    #[test]
    fn dropping_a_bin_drops_what_it_holds() {
        let drops = Arc::new(AtomicUsize::new(0));
        let mut bin = Bin::default();
        bin.push(Tracked(drops.clone()));
        let _pinned = pin();
        assert!(bin.collect().is_empty());
        bin.push(Tracked(drops.clone()));
        drop(bin);
        assert_eq!(drops.load(Ordering::SeqCst), 2);
    }
}
