//! One node of the lock tree (see the protocol in [`super`]).
//!
//! The weak (intention) modes IS and IX, which every request takes on every
//! ancestor of its paths, are counted per thread row: a thread adds to its
//! own row with a plain store, so readers of different leaves under a common
//! ancestor never write a shared line. The strong modes S and X, the waiting
//! flags and the `DEAD` bit live in one shared word. Taking a mode is split
//! in two so that a request fences once, not once per node: [`Node::take`]
//! writes (a CAS of the shared word for S and X, a row store for IS and IX),
//! then the caller fences, then [`Node::check`] reads what the others wrote.

use std::sync::Arc;

use super::lock_set::encode_length;

use crossbeam_utils::CachePadded;

use crate::sync::{
    AtomicU64, AtomicUsize,
    Ordering::{Relaxed, Release, SeqCst},
};

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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NodeMode(u8);

const IS: u8 = 1;
const IX: u8 = 2;
const S: u8 = 4;
const X: u8 = 8;

// The shared word: S count, X bit, one waiting flag per component, DEAD.
const S_ONE: u64 = 1;
const S_MASK: u64 = (1 << 20) - 1;
const X_BIT: u64 = 1 << 20;
const WAIT_SHIFT: u32 = 21;
const WAIT_MASK: u64 = 0b1111 << WAIT_SHIFT;
/// Set by a sweep on an idle node it is removing from the tree; never
/// cleared once the node is unlinked (a failed removal clears it at once).
const DEAD: u64 = 1 << 25;

/// What the hot paths need to know of a mode, precomputed per mode.
#[derive(Clone, Copy)]
struct ModeInfo {
    /// The components it conflicts with (as IS/IX/S/X bits).
    conflicting: u8,
    /// Its S and X part, as added to the shared word.
    strong_delta: u64,
    /// The shared-word bits of held strong modes it conflicts with.
    strong_blockers: u64,
    /// The waiting flags of the components it conflicts with.
    wait_mask: u64,
}

/// [`ModeInfo`] by mode bits.
const MODES: [ModeInfo; 16] = {
    let empty = ModeInfo {
        conflicting: 0,
        strong_delta: 0,
        strong_blockers: 0,
        wait_mask: 0,
    };
    let mut table = [empty; 16];
    let mut bits = 0;
    while bits < 16 {
        let mut against = 0;
        if bits & IS != 0 {
            against |= X;
        }
        if bits & IX != 0 {
            against |= S | X;
        }
        if bits & S != 0 {
            against |= IX | X;
        }
        if bits & X != 0 {
            against |= IS | IX | S | X;
        }
        table[bits as usize] = ModeInfo {
            conflicting: against,
            strong_delta: (if bits & S != 0 { S_ONE } else { 0 })
                + if bits & X != 0 { X_BIT } else { 0 },
            strong_blockers: (if against & S != 0 { S_MASK } else { 0 })
                | if against & X != 0 { X_BIT } else { 0 },
            wait_mask: (against as u64) << WAIT_SHIFT,
        };
        bits += 1;
    }
    table
};

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

    /// Its bits (IS = 1, IX = 2, S = 4, X = 8).
    #[inline]
    pub(crate) fn bits(self) -> u8 {
        self.0
    }

    /// The mode with `bits` (as from [`bits`](Self::bits)).
    #[inline]
    pub(crate) fn from_bits(bits: usize) -> Self {
        NodeMode(bits as u8)
    }

    #[inline]
    fn has(self, component: u8) -> bool {
        self.0 & component != 0
    }

    /// The component modes it conflicts with (as IS/IX/S/X bits).
    #[inline]
    pub(crate) fn conflicting(self) -> u8 {
        MODES[usize::from(self.0)].conflicting
    }

    /// Its strong part, as added to the shared word.
    #[inline]
    fn strong_delta(self) -> u64 {
        MODES[usize::from(self.0)].strong_delta
    }

    /// The shared-word bits of held strong modes it conflicts with.
    #[inline]
    fn strong_blockers(self) -> u64 {
        MODES[usize::from(self.0)].strong_blockers
    }

    /// Its waiting flags.
    #[cfg(test)]
    pub(crate) fn wait_flags(self) -> u64 {
        u64::from(self.0) << WAIT_SHIFT
    }

    /// The waiting flags of the components it conflicts with.
    #[inline]
    fn wait_mask(self) -> u64 {
        MODES[usize::from(self.0)].wait_mask
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

/// One thread row: its IS and IX counts (wrapping: a guard may be released
/// on another thread than the one that took it, so only sums mean anything),
/// and the largest fencing id released through it. On the root the row also
/// holds its thread's last issued id and how many requests were granted and
/// released through it (each only grows).
#[derive(Debug, Default)]
pub(crate) struct Row {
    is: AtomicU64,
    ix: AtomicU64,
    stamp: AtomicU64,
    pub(crate) last_id: AtomicU64,
    granted: AtomicU64,
    released: AtomicU64,
}

/// A row and whether the calling thread owns it (else it is the shared
/// overflow row, updated with RMWs).
pub(crate) struct RowRef<'a> {
    pub(crate) row: &'a Row,
    pub(crate) owned: bool,
    /// The row's index (the overflow row's is the number of owned rows).
    pub(crate) index: usize,
}

impl RowRef<'_> {
    /// Adds `delta` (wrapping). An owned row takes a plain Release store: no
    /// one else writes it, and the caller fences (or a later Release store
    /// carries it) before anything depends on it.
    #[inline]
    fn add(&self, cell: &AtomicU64, delta: u64) {
        if self.owned {
            cell.store(cell.load(Relaxed).wrapping_add(delta), Release);
        } else {
            cell.fetch_add(delta, SeqCst);
        }
    }

    /// Raises `cell` to at least `value`.
    #[inline]
    fn raise(&self, cell: &AtomicU64, value: u64) {
        if self.owned {
            if cell.load(Relaxed) < value {
                cell.store(value, Release);
            }
        } else {
            cell.fetch_max(value, SeqCst);
        }
    }

    /// Counts a request granted (it now holds).
    pub(crate) fn count_granted(&self) {
        self.add(&self.row.granted, 1);
    }

    /// Counts a request released (or a grant withdrawn).
    pub(crate) fn count_released(&self) {
        self.add(&self.row.released, 1);
    }
}

/// Why a node refused a mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Refusal {
    /// Something held (or, on the fast path, waiting) conflicts.
    Conflict,
    /// The S count is full ([`MAX_SHARED_HOLDERS`]).
    Full,
    /// A sweep is removing the node: look the path up again.
    Dead,
}

/// Nodes this deep or shallower keep their whole path key (at most this
/// many segments); deeper ones only their own segment.
pub(crate) const FULL_KEY_DEPTH: usize = 4;

/// `rest` without the length `len` it must end with (as a key writes it).
#[inline(always)]
fn strip_length(rest: &[u8], len: usize) -> Option<&[u8]> {
    if len < 0x80 {
        // One byte: the common case.
        return match rest.split_last() {
            Some((&byte, rest)) if usize::from(byte) == len => Some(rest),
            _ => None,
        };
    }
    let (bytes, n) = encode_length(len);
    rest.strip_suffix(&bytes[..n])
}

/// A lock-tree node.
#[derive(Debug)]
pub(crate) struct Node {
    shared: CachePadded<Shared>,
    /// Rows `0..rows-1` belong to one thread index each; the last is shared
    /// by the rest (updated with RMWs).
    rows: Box<[CachePadded<Row>]>,
    /// `rows.len() - 1`: the overflow row's index.
    own: usize,
    /// The node of the path one segment shorter (`None` for the root). An
    /// `Arc`, so a node's ancestors outlive it.
    parent: Option<Arc<Node>>,
    /// Children in the tree's table. Changes only under the sweep guard
    /// (creations read-locked, sweeps write-locked), so it is exact in a
    /// sweep.
    children: AtomicUsize,
    /// Its depth (the root's is 0).
    depth: u32,
    /// Its whole path key if it is at most [`FULL_KEY_DEPTH`] deep, else
    /// its own segment only (with the ancestors', its path): so a path of
    /// depth d takes O(its length) bytes, not O(d²), and a lookup of a
    /// shallow path is one comparison.
    bytes: Box<[u8]>,
    /// The hash of its path's key, under which the tree's table files it.
    hash: u64,
}

impl Drop for Node {
    /// Drops the chain of ancestors this node alone keeps alive iteratively:
    /// the default, recursive drop takes one stack frame per level, which a
    /// deep path (thousands of segments) overflows.
    fn drop(&mut self) {
        let mut parent = self.parent.take();
        while let Some(node) = parent {
            parent = match Arc::try_unwrap(node) {
                Ok(mut last_owner) => last_owner.parent.take(),
                Err(_shared) => None,
            };
        }
    }
}

#[derive(Debug, Default)]
struct Shared {
    word: AtomicU64,
    /// The largest fencing id of a request that held S or X here.
    stamp: AtomicU64,
}

/// Nodes this deep or shallower (the root is 0) count intention modes per
/// thread (if the lock's budget of wide nodes allows); deeper ones, far more
/// numerous and far less shared, use one row.
pub(crate) const DISTRIBUTED_DEPTH: usize = 2;

impl Node {
    /// A node with one intention row per thread (`wide`) or a single one.
    /// `key` is its path's key, `segment` the last segment's bytes.
    pub(crate) fn new(
        wide: bool,
        parent: Option<Arc<Node>>,
        key: &[u8],
        segment: &[u8],
        hash: u64,
    ) -> Self {
        let depth = parent.as_ref().map_or(0, |p| p.depth + 1);
        let rows = if wide {
            crate::raw_rwlock::default_rows() + 1
        } else {
            1
        };
        if let Some(parent) = &parent {
            parent.children.fetch_add(1, SeqCst);
        }
        Node {
            shared: CachePadded::default(),
            rows: (0..rows).map(|_| CachePadded::default()).collect(),
            own: rows - 1,
            parent,
            children: AtomicUsize::new(0),
            depth,
            bytes: if depth as usize <= FULL_KEY_DEPTH {
                key.into()
            } else {
                segment.into()
            },
            hash,
        }
    }

    /// The hash its path's key was filed under.
    #[inline]
    pub(crate) fn hash(&self) -> u64 {
        self.hash
    }

    /// Whether its path is the one path key `key` spells. A shallow node
    /// compares its whole key; a deep one checks from the end, with no
    /// parsing: a key is its parent's key, then the segment's length (see
    /// [`encode_length`]), then the segment, so `key` is this node's iff it
    /// ends with that length and segment and the rest is the parent's key.
    #[inline]
    pub(crate) fn is_path(&self, key: &[u8]) -> bool {
        let (mut node, mut key) = (self, key);
        loop {
            if node.depth as usize <= FULL_KEY_DEPTH {
                return *node.bytes == *key;
            }
            let segment = &*node.bytes;
            let Some(split) = key.len().checked_sub(segment.len()) else {
                return false;
            };
            let (rest, tail) = key.split_at(split);
            if tail != segment {
                return false;
            }
            let Some(rest) = strip_length(rest, segment.len()) else {
                return false;
            };
            let parent = node.parent.as_ref().expect("a deep node has a parent");
            (node, key) = (parent, rest);
        }
    }

    /// About what it takes in memory, with its table entry (for the cache
    /// bound).
    pub(crate) fn footprint(&self) -> usize {
        std::mem::size_of::<Node>()
            + self.rows.len() * std::mem::size_of::<CachePadded<Row>>()
            + self.bytes.len()
            + 64
    }

    /// Whether it has a row per thread.
    pub(crate) fn is_wide(&self) -> bool {
        self.rows.len() > 1
    }

    pub(crate) fn parent(&self) -> Option<&Arc<Node>> {
        self.parent.as_ref()
    }

    /// The row of thread index `me`.
    #[inline]
    pub(crate) fn row(&self, me: usize) -> RowRef<'_> {
        let own = self.own;
        let index = me.min(own);
        RowRef {
            row: &self.rows[index],
            owned: index < own,
            index,
        }
    }

    /// The number of rows (the overflow row's index plus one).
    pub(crate) fn row_count(&self) -> usize {
        self.rows.len()
    }

    /// The summed IS and IX counts of every row in use, and the largest
    /// stamp among them. Each row's stamp is read after its counts.
    fn weak_sums(&self) -> [u64; 3] {
        if let [row] = &self.rows[..] {
            let (is, ix) = (row.is.load(SeqCst), row.ix.load(SeqCst));
            return [is, ix, row.stamp.load(SeqCst)];
        }
        let rows = crate::thread_index::rows_in_use(self.rows.len() - 1).map(|r| &self.rows[r]);
        rows.fold([0, 0, 0], |[is, ix, stamp], row| {
            let (i, x) = (row.is.load(SeqCst), row.ix.load(SeqCst));
            [
                is.wrapping_add(i),
                ix.wrapping_add(x),
                stamp.max(row.stamp.load(SeqCst)),
            ]
        })
    }

    /// How many requests hold now, as a lower bound: every row's granted
    /// count is read first, then every row's released count, so the
    /// difference never exceeds the number held at the moment between the
    /// two passes (a release follows its grant, and counts only grow), and
    /// it is clamped at 0. Exact when nothing is granted or released during
    /// the call. (A sum of per-row differences, read at different instants
    /// while a guard moves between threads, could wrap below zero.)
    pub(crate) fn held_now(&self) -> u64 {
        let rows = || crate::thread_index::rows_in_use(self.rows.len() - 1).map(|r| &self.rows[r]);
        let granted = rows().fold(0u64, |sum, row| sum.wrapping_add(row.granted.load(SeqCst)));
        let released = rows().fold(0u64, |sum, row| sum.wrapping_add(row.released.load(SeqCst)));
        granted.saturating_sub(released)
    }

    /// The largest last fencing id of any row (the root's).
    pub(crate) fn max_last_id(&self) -> u64 {
        self.rows
            .iter()
            .map(|row| row.last_id.load(SeqCst))
            .max()
            .unwrap_or(0)
    }

    /// The first half of taking `mode`: for S or X, CAS the shared word
    /// unless something held, waiting (`respect_waiters`) or `DEAD` there
    /// refuses it; then add IS or IX to the row of thread index `me`. On `Err` nothing was written.
    /// The caller fences after the last `take` of a request, then calls
    /// [`check`](Self::check).
    #[inline]
    pub(crate) fn take(
        &self,
        mode: NodeMode,
        me: usize,
        respect_waiters: bool,
    ) -> Result<(), Refusal> {
        let strong = mode.strong_delta();
        if strong != 0 {
            let blockers =
                mode.strong_blockers() | if respect_waiters { mode.wait_mask() } else { 0 };
            let mut state = self.shared.word.load(SeqCst);
            loop {
                if state & DEAD != 0 {
                    return Err(Refusal::Dead);
                }
                if state & blockers != 0 {
                    return Err(Refusal::Conflict);
                }
                if mode.has(S) && state & S_MASK == S_MASK {
                    return Err(Refusal::Full);
                }
                match self
                    .shared
                    .word
                    .compare_exchange_weak(state, state + strong, SeqCst, SeqCst)
                {
                    Ok(_) => break,
                    Err(now) => state = now,
                }
            }
        }
        if mode.has(IS | IX) {
            self.add_weak(mode, &self.row(me), 1);
        }
        Ok(())
    }

    #[inline]
    fn add_weak(&self, mode: NodeMode, row: &RowRef<'_>, delta: u64) {
        if mode.has(IS) {
            row.add(&row.row.is, delta);
        }
        if mode.has(IX) {
            row.add(&row.row.ix, delta);
        }
    }

    /// The second half, after the caller's fence: whether what others hold
    /// (or wait for, with `respect_waiters`) conflicts with `mode`, which
    /// this request has taken here. On `Ok`, the largest fencing id of a
    /// conflicting request that released this node, which this request's
    /// id must exceed.
    #[inline]
    pub(crate) fn check(&self, mode: NodeMode, respect_waiters: bool) -> Result<u64, Refusal> {
        let strong = mode.strong_delta();
        let others = self.shared.word.load(SeqCst) - strong; // not our own hold
        if others & DEAD != 0 {
            return Err(Refusal::Dead);
        }
        let waiting = if respect_waiters { mode.wait_mask() } else { 0 };
        if others & (mode.strong_blockers() | waiting) != 0 {
            return Err(Refusal::Conflict);
        }
        let mut stamp = self.shared.stamp.load(SeqCst);
        if strong != 0 {
            let [is, ix, weak_stamp] = self.weak_sums();
            let ix = ix.wrapping_sub(u64::from(mode.has(IX))); // not our own SIX
            let against = mode.conflicting();
            if (against & IS != 0 && is != 0) || (against & IX != 0 && ix != 0) {
                return Err(Refusal::Conflict);
            }
            stamp = stamp.max(weak_stamp);
        }
        Ok(stamp)
    }

    /// The first half of dropping `mode`: publishes `stamp` (the holder's
    /// fencing id; 0 when undoing a failed attempt) where later conflicting
    /// requests will read it, then takes the counts out. The node may be
    /// idle afterwards, so the caller must be pinned (a sweep may unlink it
    /// and only an epoch keeps it allocated). The caller then fences and
    /// calls [`has_waiters`](Self::has_waiters).
    #[inline]
    pub(crate) fn put_back(&self, mode: NodeMode, me: usize, stamp: u64) {
        if mode.has(IS | IX) {
            let row = self.row(me);
            if stamp != 0 {
                row.raise(&row.row.stamp, stamp);
            }
            self.add_weak(mode, &row, u64::MAX); // wrapping -1
        }
        let strong = mode.strong_delta();
        if strong != 0 {
            if stamp != 0 && self.shared.stamp.load(Relaxed) < stamp {
                if mode.has(X) {
                    // X is exclusive: no other holder writes the stamp now,
                    // and earlier ones' writes happen before our acquire.
                    self.shared.stamp.store(stamp, Release);
                } else {
                    self.shared.stamp.fetch_max(stamp, SeqCst);
                }
            }
            let before = self.shared.word.fetch_sub(strong, SeqCst);
            debug_assert!(
                before & strong == strong || mode.has(S),
                "released an unheld mode"
            );
        }
    }

    /// After a release's fence: whether any request waits here, in which
    /// case the caller must run a grant pass (the hand-off).
    #[inline]
    pub(crate) fn has_waiters(&self) -> bool {
        self.shared.word.load(SeqCst) & WAIT_MASK != 0
    }

    /// Sets waiting flags. The caller holds the sweep guard (so the node is
    /// not `DEAD`) and the queue.
    pub(crate) fn set_flags(&self, flags: u64) {
        let before = self.shared.word.fetch_or(flags, SeqCst);
        debug_assert!(before & DEAD == 0, "flagged a dead node");
    }

    pub(crate) fn clear_flags(&self, flags: u64) {
        self.shared.word.fetch_and(!flags, SeqCst);
    }

    /// Sets the S count, as if `count` requests held S here.
    #[cfg(test)]
    pub(crate) fn set_shared_count(&self, count: u64) {
        let state = self.shared.word.load(SeqCst);
        self.shared.word.store((state & !S_MASK) | count, SeqCst);
    }

    /// Whether a sweep has marked it (exact under the sweep guard).
    pub(crate) fn is_dead(&self) -> bool {
        self.shared.word.load(SeqCst) & DEAD != 0
    }

    /// Whether nodes in the table name it as parent (exact under the sweep
    /// guard).
    pub(crate) fn has_children(&self) -> bool {
        self.children.load(SeqCst) != 0
    }

    /// Nothing held or waiting here (a hint outside a sweep).
    pub(crate) fn is_idle(&self) -> bool {
        self.shared.word.load(SeqCst) & !DEAD == 0 && self.weak_sums()[..2] == [0, 0]
    }

    /// Marks an idle, childless node `DEAD` so a sweep can unlink it; `false`
    /// (and nothing changed) if it is in use. Called by a sweep, which holds
    /// the sweep guard for writing (so `children` is exact and no waiter
    /// sets flags).
    ///
    /// The CAS from 0 refuses S, X and flags. IS and IX are row stores, so
    /// this is the Dekker pair again: mark, fence, sum the rows; an acquirer
    /// adds to its row, fences, and checks the word for `DEAD`. One of the
    /// two sees the other: either the sweep backs out here, or the acquirer
    /// backs out and looks the path up again.
    pub(crate) fn try_kill(&self) -> bool {
        if self.children.load(SeqCst) != 0
            || self
                .shared
                .word
                .compare_exchange(0, DEAD, SeqCst, SeqCst)
                .is_err()
        {
            return false;
        }
        crate::sync::fence(SeqCst);
        if self.weak_sums()[..2] != [0, 0] {
            self.shared.word.fetch_and(!DEAD, SeqCst);
            return false;
        }
        if let Some(parent) = &self.parent {
            parent.children.fetch_sub(1, SeqCst);
        }
        true
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::{fence, Ordering::SeqCst};

    fn me() -> usize {
        crate::thread_index::current()
    }

    fn acquire(node: &Node, mode: NodeMode, respect_waiters: bool) -> bool {
        if node.take(mode, me(), respect_waiters).is_err() {
            return false;
        }
        fence(SeqCst);
        if node.check(mode, respect_waiters).is_ok() {
            return true;
        }
        node.put_back(mode, me(), 0);
        false
    }

    fn release(node: &Node, mode: NodeMode) -> bool {
        node.put_back(mode, me(), 7);
        fence(SeqCst);
        node.has_waiters()
    }

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
                let node = Node::new(true, None, &[], &[], 0);
                assert!(acquire(&node, *h, true));
                assert_eq!(acquire(&node, *r, true), want, "{r:?} vs held {h:?}");
                // Waiting flags block the same way, on the fast path only.
                let node = Node::new(true, None, &[], &[], 0);
                node.set_flags(h.wait_flags());
                assert_eq!(acquire(&node, *r, true), want, "{r:?} vs waiting {h:?}");
                let node = Node::new(false, None, &[], &[], 0);
                node.set_flags(h.wait_flags());
                assert!(acquire(&node, *r, false), "grants ignore waiting flags");
            }
        }
    }

    #[test]
    fn failed_acquires_and_releases_restore_idle() {
        let node = Node::new(true, None, &[], &[], 0);
        assert!(acquire(&node, NodeMode(S | IX), true));
        assert!(!acquire(&node, NodeMode(IX), true));
        assert!(!acquire(&node, NodeMode(S), true));
        assert!(!release(&node, NodeMode(S | IX)));
        assert!(node.is_idle());
        assert!(acquire(&node, NodeMode(IS), true));
        node.set_flags(NodeMode(X).wait_flags());
        assert!(release(&node, NodeMode(IS)), "a release reports waiters");
        node.clear_flags(NodeMode(X).wait_flags());
        assert!(node.is_idle());
    }

    #[test]
    fn releases_publish_the_stamp_conflicting_modes_read() {
        let node = Node::new(true, None, &[], &[], 0);
        assert!(acquire(&node, NodeMode(IS), true));
        release(&node, NodeMode(IS)); // stamp 7, in this thread's row
        assert_eq!(
            node.check(NodeMode(IS), true),
            Ok(0),
            "IS vs IS: no conflict"
        );
        node.take(NodeMode(X), me(), true).unwrap();
        assert_eq!(node.check(NodeMode(X), true), Ok(7), "X reads the rows");
        node.put_back(NodeMode(X), me(), 9);
        assert_eq!(node.check(NodeMode(IS), true), Ok(9), "IS reads the word");
    }

    #[test]
    fn a_hold_released_on_another_thread_balances() {
        let node = Arc::new(Node::new(true, None, &[], &[], 0));
        assert!(acquire(&node, NodeMode(IS), true));
        let other = node.clone();
        std::thread::spawn(move || release(&other, NodeMode(IS)))
            .join()
            .unwrap();
        assert!(node.is_idle());
        assert!(acquire(&node, NodeMode(X), true));
    }

    #[test]
    fn kills_refuse_nodes_in_use_and_parents_of_live_children() {
        let parent = Arc::new(Node::new(true, None, &[], &[], 0));
        let child = Node::new(false, Some(parent.clone()), b"\x01c", b"c", 1);
        assert!(!parent.try_kill(), "has a child");
        assert!(acquire(&child, NodeMode(IS), true));
        assert!(!child.try_kill(), "held");
        release(&child, NodeMode(IS));
        assert!(child.try_kill());
        assert_eq!(child.take(NodeMode(X), me(), true), Err(Refusal::Dead));
        child.take(NodeMode(IS), me(), true).unwrap();
        assert_eq!(child.check(NodeMode(IS), true), Err(Refusal::Dead));
        assert!(parent.try_kill(), "its only child is gone");
    }
}
