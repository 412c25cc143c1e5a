//! One node of the lock tree (see the protocol in [`super`]).
//!
//! The weak (intention) modes IS and IX, which every request takes on every
//! ancestor of its paths, are counted per thread row: a thread adds to its
//! own row with a plain store, so readers of different leaves under a common
//! ancestor never write a shared line. The strong modes S and X, and the
//! waiting flags, live in one shared word. A weak acquire stores to its row,
//! fences, and reads the shared word; a strong acquire CASes the shared word,
//! fences, and sums the rows. As in [`crate::raw_rwlock`], of two fences one
//! is first in the SeqCst order, so of two conflicting acquirers at least one
//! sees the other and backs out.

use crossbeam_utils::CachePadded;

use crate::sync::{
    fence, AtomicU64,
    Ordering::{Relaxed, Release, SeqCst},
};
use crate::thread_index;

/// The mode a request locks a path in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Shared: compatible with other reads of the path and its relatives.
    Read,
    /// Exclusive: conflicts with every lock on the path, its prefixes and
    /// its subtree.
    Write,
}

/// The multi-granularity modes one request holds on one node: a normalized
/// join of IS, IX, S and X (SIX is S + IX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NodeMode(u8);

const IS: u8 = 1;
const IX: u8 = 2;
const S: u8 = 4;
const X: u8 = 8;

// The shared word: S count, X bit, then one waiting flag per component.
const S_ONE: u64 = 1;
const S_MASK: u64 = (1 << 20) - 1;
const X_BIT: u64 = 1 << 20;
const WAIT_SHIFT: u32 = 21;

/// The most requests that may hold S on one node at once.
pub(crate) const MAX_SHARED_HOLDERS: u64 = S_MASK;

impl NodeMode {
    /// The mode on the resource's own node.
    pub(crate) fn target(mode: Mode) -> Self {
        NodeMode(if mode == Mode::Read { S } else { X })
    }

    /// The mode on each proper prefix of the resource's path.
    pub(crate) fn intention(mode: Mode) -> Self {
        NodeMode(if mode == Mode::Read { IS } else { IX })
    }

    /// The least mode covering both (S ⊔ IX = SIX, anything ⊔ X = X).
    pub(crate) fn join(self, other: Self) -> Self {
        let bits = self.0 | other.0;
        NodeMode(if bits & X != 0 {
            X
        } else if bits & (S | IX) != 0 {
            bits & !IS
        } else {
            bits
        })
    }

    fn has(self, component: u8) -> bool {
        self.0 & component != 0
    }

    /// The component modes it conflicts with (as IS/IX/S/X bits).
    fn conflicting(self) -> u8 {
        [(IS, X), (IX, S | X), (S, IX | X), (X, IS | IX | S | X)]
            .iter()
            .filter(|(c, _)| self.has(*c))
            .fold(0, |acc, (_, against)| acc | against)
    }

    /// Its strong part, as added to the shared word.
    fn strong_delta(self) -> u64 {
        (if self.has(S) { S_ONE } else { 0 }) + if self.has(X) { X_BIT } else { 0 }
    }

    /// Its waiting flags.
    #[cfg(test)]
    pub(crate) fn wait_flags(self) -> u64 {
        u64::from(self.0) << WAIT_SHIFT
    }

    /// The waiting flags of the components it conflicts with.
    fn wait_mask(self) -> u64 {
        u64::from(self.conflicting()) << WAIT_SHIFT
    }

    /// Its components as indices 0..4 (for per-mode waiter counts).
    pub(crate) fn component_indices(self) -> impl Iterator<Item = usize> {
        (0..4).filter(move |c| self.0 & (1 << c) != 0)
    }

    /// The waiting flag of component `c`.
    pub(crate) fn flag_of(c: usize) -> u64 {
        1 << (WAIT_SHIFT + c as u32)
    }
}

/// One thread row's IS and IX counts, wrapping: a guard may be released on
/// another thread than the one that took it, so only sums are meaningful.
type Row = CachePadded<[AtomicU64; 2]>;

/// A lock-tree node.
#[derive(Debug)]
pub(crate) struct Node {
    shared: CachePadded<AtomicU64>,
    /// Rows `0..rows` belong to one thread index each; the last is shared by
    /// the rest (updated with RMWs).
    rows: Box<[Row]>,
}

/// Nodes this deep or shallower (the root is 0) count intention modes per
/// thread (if the lock's budget of wide nodes allows); deeper ones, far more
/// numerous and far less shared, use one row.
pub(crate) const DISTRIBUTED_DEPTH: usize = 2;

/// What one attempt to take a mode on a node came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The mode is held.
    pub(crate) taken: bool,
    /// A waiting flag was seen while backing out: the caller must run a
    /// grant pass.
    pub(crate) saw_waiters: bool,
    /// Not taken because the S count is full ([`MAX_SHARED_HOLDERS`]).
    pub(crate) full: bool,
}

impl Default for Node {
    fn default() -> Self {
        Node::new(true)
    }
}

impl Node {
    /// A node with one intention row per thread (`wide`) or a single one.
    pub(crate) fn new(wide: bool) -> Self {
        let rows = if wide {
            crate::raw_rwlock::default_rows() + 1
        } else {
            1
        };
        Node {
            shared: CachePadded::new(AtomicU64::new(0)),
            rows: (0..rows)
                .map(|_| CachePadded::new([AtomicU64::new(0), AtomicU64::new(0)]))
                .collect(),
        }
    }

    /// Whether it has a row per thread.
    pub(crate) fn is_wide(&self) -> bool {
        self.rows.len() > 1
    }

    /// Adds `delta` (wrapping) to this thread's IS (`0`) or IX (`1`) count.
    fn add_weak(&self, which: usize, delta: u64) {
        let me = thread_index::current();
        let own = self.rows.len() - 1;
        if me < own {
            // Only this thread writes its row: no RMW needed. Release, so a
            // releasing store follows the critical section; the SeqCst fence
            // every caller issues next orders it before the caller's loads
            // (a SeqCst store would be a locked `xchg` on x86).
            let slot = &self.rows[me][which];
            slot.store(slot.load(Relaxed).wrapping_add(delta), Release);
        } else {
            self.rows[own][which].fetch_add(delta, SeqCst);
        }
    }

    /// The summed IS and IX counts of every row in use.
    fn weak_sums(&self) -> [u64; 2] {
        let rows = thread_index::rows_in_use(self.rows.len() - 1).map(|r| &self.rows[r]);
        rows.fold([0, 0], |[is, ix], row| {
            [
                is.wrapping_add(row[0].load(SeqCst)),
                ix.wrapping_add(row[1].load(SeqCst)),
            ]
        })
    }

    fn add(&self, mode: NodeMode, sign: u64) {
        for (which, component) in [(0, IS), (1, IX)] {
            if mode.has(component) {
                self.add_weak(which, sign);
            }
        }
    }

    /// Takes `mode` unless something held, or (with `respect_waiters`)
    /// something waiting, conflicts, or the S count is full. On failure
    /// nothing is left behind except transient counts.
    fn acquire(&self, mode: NodeMode, respect_waiters: bool) -> Outcome {
        let refused = |full| Outcome {
            taken: false,
            saw_waiters: false,
            full,
        };
        let conflicting = mode.conflicting();
        let strong_blockers = (if conflicting & S != 0 { S_MASK } else { 0 })
            | if conflicting & X != 0 { X_BIT } else { 0 };
        let wait_blockers = if respect_waiters { mode.wait_mask() } else { 0 };
        let strong = mode.strong_delta();
        if strong != 0 {
            let mut state = self.shared.load(SeqCst);
            loop {
                if state & (strong_blockers | wait_blockers) != 0 {
                    return refused(false);
                }
                if mode.has(S) && state & S_MASK == S_MASK {
                    return refused(true);
                }
                match self
                    .shared
                    .compare_exchange_weak(state, state + strong, SeqCst, SeqCst)
                {
                    Ok(_) => break,
                    Err(now) => state = now,
                }
            }
        }
        self.add(mode, 1);
        fence(SeqCst);
        let shared = self.shared.load(SeqCst) - strong; // others' strong holds
        let weak_conflict =
            (mode.has(IS) || mode.has(IX)) && shared & (strong_blockers | wait_blockers) != 0;
        let strong_conflict = strong != 0 && {
            let [is, ix] = self.weak_sums();
            let ix = ix.wrapping_sub(u64::from(mode.has(IX))); // not our own SIX
            (conflicting & IS != 0 && is != 0) || (conflicting & IX != 0 && ix != 0)
        };
        if weak_conflict || strong_conflict {
            return Outcome {
                taken: false,
                saw_waiters: self.release(mode),
                full: false,
            };
        }
        Outcome {
            taken: true,
            saw_waiters: false,
            full: false,
        }
    }

    /// The fast path: takes `mode` if nothing held *or waiting* conflicts.
    pub(crate) fn try_acquire(&self, mode: NodeMode) -> Outcome {
        self.acquire(mode, true)
    }

    /// A grant from the queue (which has ruled out earlier waiters): takes
    /// `mode` if nothing *held* conflicts (and the S count has room).
    pub(crate) fn try_grant(&self, mode: NodeMode) -> bool {
        self.acquire(mode, false).taken
    }

    /// Drops `mode`; returns whether any waiting flag is set, in which case
    /// the caller must run a grant pass (the hand-off). The node may be idle
    /// afterwards, so the caller must keep sweeps out (see
    /// `PathLock::release_nodes`) until this returns.
    pub(crate) fn release(&self, mode: NodeMode) -> bool {
        self.add(mode, u64::MAX); // wrapping -1
        let strong = mode.strong_delta();
        if strong != 0 {
            let before = self.shared.fetch_sub(strong, SeqCst);
            debug_assert!(
                before & strong == strong || mode.has(S),
                "released an unheld mode"
            );
        }
        // Pairs with a waiter's flag-then-check: one of us sees the other.
        fence(SeqCst);
        self.shared.load(SeqCst) >> WAIT_SHIFT != 0
    }

    /// Whether a request holding `mode` here conflicts with a waiting one.
    pub(crate) fn waiter_conflicts(&self, mode: NodeMode) -> bool {
        self.shared.load(SeqCst) & mode.wait_mask() != 0
    }

    pub(crate) fn set_flags(&self, flags: u64) {
        self.shared.fetch_or(flags, SeqCst);
    }

    pub(crate) fn clear_flags(&self, flags: u64) {
        self.shared.fetch_and(!flags, SeqCst);
    }

    /// Sets the S count, as if `count` requests held S here.
    #[cfg(test)]
    pub(crate) fn set_shared_count(&self, count: u64) {
        let state = self.shared.load(SeqCst);
        self.shared.store((state & !S_MASK) | count, SeqCst);
    }

    /// Nothing held or waiting. Exact under the table's shard write lock
    /// (where sweeps call it), which excludes every acquire and release.
    pub(crate) fn is_idle(&self) -> bool {
        self.shared.load(SeqCst) == 0 && self.weak_sums() == [0, 0]
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn joins_follow_the_lattice() {
        let (is, ix) = (NodeMode(IS), NodeMode(IX));
        let (s, x) = (NodeMode(S), NodeMode(X));
        assert_eq!(s.join(ix), NodeMode(S | IX)); // SIX
        assert_eq!(is.join(s), s);
        assert_eq!(is.join(ix), ix);
        assert_eq!(ix.join(x), x);
        assert_eq!(s.join(s), s);
    }

    #[test]
    fn compatibility_matrix() {
        // Requested (row) against held (column): IS IX S SIX X.
        let modes = [IS, IX, S, S | IX, X].map(NodeMode);
        let ok = [
            [true, true, true, true, false],
            [true, true, false, false, false],
            [true, false, true, false, false],
            [true, false, false, false, false],
            [false, false, false, false, false],
        ];
        for (r, want) in modes.iter().zip(ok) {
            for (h, want) in modes.iter().zip(want) {
                let node = Node::default();
                assert!(node.try_acquire(*h).taken);
                assert_eq!(node.try_acquire(*r).taken, want, "{r:?} vs held {h:?}");
                // Waiting flags block the same way, on the fast path only.
                let node = Node::default();
                node.set_flags(h.wait_flags());
                assert_eq!(node.try_acquire(*r).taken, want, "{r:?} vs waiting {h:?}");
                let node = Node::default();
                node.set_flags(h.wait_flags());
                assert!(node.try_grant(*r), "grants ignore waiting flags");
            }
        }
    }

    #[test]
    fn failed_acquires_and_releases_restore_idle() {
        let node = Node::default();
        assert!(node.try_acquire(NodeMode(S | IX)).taken);
        assert!(!node.try_acquire(NodeMode(IX)).taken);
        assert!(!node.try_acquire(NodeMode(S)).taken);
        assert!(!node.release(NodeMode(S | IX)));
        assert!(node.is_idle());
        assert!(node.try_acquire(NodeMode(IS)).taken);
        node.set_flags(NodeMode(X).wait_flags());
        assert!(node.release(NodeMode(IS)), "a release reports waiters");
        node.clear_flags(NodeMode(X).wait_flags());
        assert!(node.is_idle());
    }

    #[test]
    fn a_hold_released_on_another_thread_balances() {
        let node = std::sync::Arc::new(Node::default());
        assert!(node.try_acquire(NodeMode(IS)).taken);
        let other = node.clone();
        std::thread::spawn(move || other.release(NodeMode(IS)))
            .join()
            .unwrap();
        assert!(node.is_idle());
        assert!(node.try_acquire(NodeMode(X)).taken);
    }
}
