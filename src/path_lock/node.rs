//! One node of the lock tree: a packed atomic state of held intention-mode
//! counts and waiting flags (see the protocol in [`super`]).

use crate::sync::{AtomicU64, Ordering::SeqCst};

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

/// State layout: four 12-bit held counts, then four waiting flags.
const FIELD: u32 = 12;
const FIELD_MAX: u64 = (1 << FIELD) - 1;
const WAIT_SHIFT: u32 = 4 * FIELD;

/// The most requests that may hold one node in one mode at once.
pub(crate) const MAX_HOLDERS: u64 = FIELD_MAX;

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

    /// The component modes, as indices 0..4 (IS, IX, S, X).
    fn components(self) -> impl Iterator<Item = u32> {
        (0..4).filter(move |c| self.0 & (1 << c) != 0)
    }

    /// What it adds to a state's held counts.
    fn delta(self) -> u64 {
        self.components().map(|c| 1 << (c * FIELD)).sum()
    }

    /// The component modes (as bits IS=1, IX=2, S=4, X=8) it conflicts with.
    fn conflicting(self) -> u8 {
        self.components()
            .map(|c| match 1 << c {
                IS => X,
                IX => S | X,
                S => IX | X,
                _ => IS | IX | S | X,
            })
            .fold(0, |a, b| a | b)
    }

    /// The held counts of the modes it conflicts with.
    fn held_mask(self) -> u64 {
        (0..4)
            .filter(|c| self.conflicting() & (1 << c) != 0)
            .map(|c| FIELD_MAX << (c * FIELD))
            .sum()
    }

    /// The waiting flags of the modes it conflicts with.
    fn wait_mask(self) -> u64 {
        u64::from(self.conflicting()) << WAIT_SHIFT
    }

    /// Its own waiting flags.
    #[cfg(test)]
    pub(crate) fn wait_flags(self) -> u64 {
        u64::from(self.0) << WAIT_SHIFT
    }

    /// Its components as indices (for per-mode waiter counts).
    pub(crate) fn component_indices(self) -> impl Iterator<Item = usize> {
        self.components().map(|c| c as usize)
    }

    /// The waiting flag of component `c`.
    pub(crate) fn flag_of(c: usize) -> u64 {
        1 << (WAIT_SHIFT + c as u32)
    }
}

/// A lock-tree node.
#[derive(Debug, Default)]
pub(crate) struct Node {
    state: AtomicU64,
}

/// Adds `mode`'s counts to `state`.
///
/// # Panics
/// If a count would pass [`MAX_HOLDERS`].
fn add(state: u64, mode: NodeMode) -> u64 {
    for c in mode.components() {
        if (state >> (c * FIELD)) & FIELD_MAX == FIELD_MAX {
            panic!("shardlock: more than {MAX_HOLDERS} requests hold one path node in one mode");
        }
    }
    state + mode.delta()
}

impl Node {
    /// Takes `mode` if nothing held *or waiting* conflicts (the fast path).
    pub(crate) fn try_acquire(&self, mode: NodeMode) -> bool {
        self.acquire_unless(mode, mode.held_mask() | mode.wait_mask())
    }

    /// Takes `mode` if nothing *held* conflicts (a grant from the queue,
    /// which has already ruled out earlier waiters).
    pub(crate) fn try_grant(&self, mode: NodeMode) -> bool {
        self.acquire_unless(mode, mode.held_mask())
    }

    fn acquire_unless(&self, mode: NodeMode, blockers: u64) -> bool {
        let mut state = self.state.load(SeqCst);
        loop {
            if state & blockers != 0 {
                return false;
            }
            match self
                .state
                .compare_exchange_weak(state, add(state, mode), SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }

    /// Drops `mode`; returns whether any waiting flag was set, in which case
    /// the caller must run a grant pass (the hand-off).
    pub(crate) fn release(&self, mode: NodeMode) -> bool {
        let before = self.state.fetch_sub(mode.delta(), SeqCst);
        debug_assert!(
            mode.components()
                .all(|c| (before >> (c * FIELD)) & FIELD_MAX >= 1),
            "released a mode that was not held"
        );
        before >> WAIT_SHIFT != 0
    }

    /// Whether a request holding `mode` here conflicts with a waiting one.
    pub(crate) fn waiter_conflicts(&self, mode: NodeMode) -> bool {
        self.state.load(SeqCst) & mode.wait_mask() != 0
    }

    pub(crate) fn set_flags(&self, flags: u64) {
        self.state.fetch_or(flags, SeqCst);
    }

    pub(crate) fn clear_flags(&self, flags: u64) {
        self.state.fetch_and(!flags, SeqCst);
    }

    /// Nothing held or waiting.
    pub(crate) fn is_idle(&self) -> bool {
        self.state.load(SeqCst) == 0
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
                assert!(node.try_acquire(*h));
                assert_eq!(node.try_acquire(*r), want, "{r:?} vs held {h:?}");
                // Waiting flags block the same way on the fast path only.
                let node = Node::default();
                node.set_flags(h.wait_flags());
                assert_eq!(node.try_acquire(*r), want, "{r:?} vs waiting {h:?}");
                let node = Node::default();
                node.set_flags(h.wait_flags());
                assert!(node.try_grant(*r), "grants ignore waiting flags");
            }
        }
    }

    #[test]
    fn release_reports_waiters_and_restores_idle() {
        let node = Node::default();
        assert!(node.try_acquire(NodeMode(S)));
        assert!(!node.release(NodeMode(S)));
        assert!(node.is_idle());
        assert!(node.try_acquire(NodeMode(IS)));
        node.set_flags(NodeMode(X).wait_flags());
        assert!(node.release(NodeMode(IS)));
        node.clear_flags(NodeMode(X).wait_flags());
        assert!(node.is_idle());
    }
}
