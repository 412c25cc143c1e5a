//! [`NodeLine`]: the slot codec of a [`RouterTable`](crate::RouterTable):
//! one 64-byte bucket line of a header word and seven pointers to
//! immutable nodes, so a miss reads one line and a hit one line and a node.
//!
//! # Layout
//! | word        | meaning                                                    |
//! |-------------|------------------------------------------------------------|
//! | header 0    | `OVERFLOW`: an insert passed this line full                |
//! | header 8..64 | one tag byte per slot: 0 free, else `0x80 \| 7 bits of the hash` |
//! | slots 1..8  | `AtomicPtr<Node>`: the slot's node, or null                 |
//!
//! A [`Node`] `{hash, key, value}` never changes once published; `insert`
//! over a key, `update` and `retain` store a new node in the same slot.
//!
//! So a lookup touches, besides the shard's head word (read-mostly, shared
//! by 8 shards a line), its home line and, only on a tag match, that node:
//! a miss reads one line (two if its home line overflowed), a hit one line
//! and a node. Tags are 7 bits of the hash, so a miss dereferences a node
//! for 1 slot in 128 of those it passes.
//!
//! # Protocol
//! The slot pointer is the truth; the header's tags are a filter that never
//! hides an occupied slot: a tag is set before its slot is filled and
//! cleared after it is emptied. One writer at a time (the shard's lock).
//! * **insert** into a free slot: store the header with the tag (Release),
//!   then the node pointer (Release, after the node is built).
//! * **replace**: store the new node's pointer (Release); the header stays.
//! * **remove**: store null (Release), then the header without the tag.
//! * **read**: `h = header.load(Acquire)`; for each slot tagged like the
//!   key, `p = slot.load(Acquire)`; skip null; else compare the node's key.
//!   No version check is needed: each slot is one atomic word, and a node is
//!   immutable, so whatever pointer a reader loads is a node that was in the
//!   slot at that moment, seen whole (its pointer was stored with Release
//!   after it was built).
//!
//! # Why this is linearizable
//! A hit is linearizable at the slot load: the node was in its slot then.
//! A key present in slot `s` throughout a read has its tag set in every
//! header the read can load (set before the fill, cleared after the
//! remove), so the read loads `s` and finds it (or a node that replaced it
//! with the same key); a key further down its probe has `OVERFLOW` set on
//! every line before it, set before the key was placed. So a miss means the
//! key was absent at some moment of the read, where it is linearized.
//!
//! # Why a node outlives its readers
//! A reader pins before it loads the head, so any pointer it loads was in a
//! slot after it pinned; a writer retires a node (through the shard's epoch
//! bin) only after it unlinked it, so after the reader pinned: it is freed
//! only once the reader unpins.
//!
//! loom checks readers against a replace, a remove and a rebuild, each
//! followed by reclamation (`loom-tests/tests/router_table.rs`); values
//! there are loom cells that a premature free would race on.

use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use super::{Found, Line};
use crate::sync::{AtomicPtr, AtomicU64, Ordering};

/// Slots per line: seven pointers after the header.
const SLOTS: usize = 7;
const OVERFLOW: u64 = 1;
const TAG_SHIFT: u32 = 8;
/// A header no live line has (every tag set): see `poison`.
#[cfg(loom)]
const POISON: u64 = u64::MAX;

/// A published entry; immutable until it is freed.
pub(crate) struct Node<K, V> {
    /// The low 32 bits of the key's hash: the home line when rebuilding.
    pub(crate) hash: u32,
    pub(crate) key: K,
    pub(crate) value: V,
}

/// A pointer to a node that is in a line (or was, while the holder is
/// pinned).
pub(crate) struct NodeRef<K, V>(NonNull<Node<K, V>>);

impl<K, V> Clone for NodeRef<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K, V> Copy for NodeRef<K, V> {}

impl<K, V> NodeRef<K, V> {
    /// A new node, owned by the line it is then inserted into.
    pub(crate) fn new(hash: u64, key: K, value: V) -> Self {
        let node = Box::new(Node {
            hash: hash as u32,
            key,
            value,
        });
        NodeRef(NonNull::from(Box::leak(node)))
    }

    /// The node.
    ///
    /// # Safety
    /// The caller loaded this pointer from a line while pinned and is still
    /// pinned during `'g`, or holds the shard's lock during `'g` (nodes are
    /// retired under it and freed after it is released).
    #[inline(always)]
    pub(crate) unsafe fn node<'g>(self) -> &'g Node<K, V> {
        // SAFETY: the caller's contract: not yet freed (see the module's
        // "Why a node outlives its readers").
        unsafe { self.0.as_ref() }
    }

    /// The node's address (for prefetching).
    #[inline(always)]
    pub(crate) fn as_ptr(self) -> *const Node<K, V> {
        self.0.as_ptr()
    }
}

/// A node a writer unlinked: freed (running `K`'s and `V`'s `Drop`) when
/// dropped.
pub(crate) struct NodeBox<K, V>(NonNull<Node<K, V>>);

impl<K, V> Drop for NodeBox<K, V> {
    fn drop(&mut self) {
        // SAFETY: it came from `Box::leak` in `NodeRef::new`, was unlinked,
        // and is released once (`Line::release`); it is dropped only once no
        // reader can reach it.
        drop(unsafe { Box::from_raw(self.0.as_ptr()) });
    }
}

// SAFETY: a `NodeBox` owns a `K` and a `V`, dropped on whichever thread
// collects it.
unsafe impl<K: Send, V: Send> Send for NodeBox<K, V> {}

/// One cache line of node pointers. All-zero bytes are a valid empty line.
#[repr(C, align(64))]
pub(crate) struct NodeLine<K, V> {
    header: AtomicU64,
    slots: [AtomicPtr<Node<K, V>>; SLOTS],
    _entries: PhantomData<fn() -> (K, V)>,
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<NodeLine<u64, u64>>() == 64);

#[inline(always)]
fn tag_at(header: u64, slot: usize) -> u8 {
    (header >> (TAG_SHIFT + 8 * slot as u32)) as u8
}

impl<K, V> NodeLine<K, V> {
    #[inline]
    fn header(&self) -> u64 {
        self.header.load(Ordering::Relaxed)
    }
}

impl<K, V> Line for NodeLine<K, V> {
    type Key = NodeRef<K, V>;
    type Value = ();
    type Owned = NodeBox<K, V>;
    const SLOTS: usize = SLOTS;
    const OWNS: bool = true;

    #[cfg(loom)]
    fn empty() -> Self {
        NodeLine {
            header: AtomicU64::new(0),
            slots: std::array::from_fn(|_| AtomicPtr::new(ptr::null_mut())),
            _entries: PhantomData,
        }
    }

    #[cfg(loom)]
    fn poison(&self) {
        self.header.store(POISON, Ordering::Relaxed);
    }

    #[inline(always)]
    fn read<R>(
        &self,
        tag: u8,
        mut visit: impl FnMut(&NodeRef<K, V>, &()) -> Option<R>,
    ) -> Found<R> {
        let header = self.header.load(Ordering::Acquire);
        #[cfg(loom)]
        assert_ne!(header, POISON, "a reader reached a freed line");
        // The tags shift down a byte a slot: a compare and a shift each.
        let mut tags = header >> TAG_SHIFT;
        for slot in 0..SLOTS {
            let here = tags as u8;
            tags >>= 8;
            if here != tag {
                continue;
            }
            let Some(node) = NonNull::new(self.slots[slot].load(Ordering::Acquire)) else {
                continue; // emptied since the header load
            };
            if let Some(result) = visit(&NodeRef(node), &()) {
                return Found::Hit(result);
            }
        }
        Found::Miss {
            overflow: header & OVERFLOW != 0,
        }
    }

    fn read_each(&self, mut f: impl FnMut(NodeRef<K, V>, ())) {
        let header = self.header.load(Ordering::Acquire);
        #[cfg(loom)]
        assert_ne!(header, POISON, "a reader reached a freed line");
        for slot in (0..SLOTS).filter(|&slot| tag_at(header, slot) != 0) {
            if let Some(node) = NonNull::new(self.slots[slot].load(Ordering::Acquire)) {
                f(NodeRef(node), ());
            }
        }
    }

    #[inline]
    fn tag(&self, slot: usize) -> u8 {
        tag_at(self.header(), slot)
    }

    #[inline]
    fn key(&self, slot: usize) -> NodeRef<K, V> {
        NodeRef(NonNull::new(self.slots[slot].load(Ordering::Relaxed)).expect("an occupied slot"))
    }

    #[inline]
    fn value(&self, _: usize) {}

    fn overflowed(&self) -> bool {
        self.header() & OVERFLOW != 0
    }

    fn insert(&self, slot: usize, tag: u8, key: &NodeRef<K, V>, _: &()) {
        let header = self.header();
        debug_assert_eq!(tag_at(header, slot), 0, "slot is free");
        let tagged = header | u64::from(tag) << (TAG_SHIFT + 8 * slot as u32);
        self.header.store(tagged, Ordering::Release);
        self.slots[slot].store(key.0.as_ptr(), Ordering::Release);
    }

    fn replace(&self, slot: usize, key: &NodeRef<K, V>, _: &()) {
        self.slots[slot].store(key.0.as_ptr(), Ordering::Release);
    }

    fn remove(&self, slot: usize) {
        self.slots[slot].store(ptr::null_mut(), Ordering::Release);
        let header = self.header();
        let cleared = header & !(0xFF << (TAG_SHIFT + 8 * slot as u32));
        self.header.store(cleared, Ordering::Release);
    }

    fn set_overflow(&self) {
        let header = self.header();
        if header & OVERFLOW == 0 {
            self.header.store(header | OVERFLOW, Ordering::Release);
        }
    }

    unsafe fn release(key: NodeRef<K, V>, _: ()) -> Option<NodeBox<K, V>> {
        Some(NodeBox(key.0))
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn nodes_round_trip_and_tags_filter() {
        // SAFETY: all-zero bytes are an empty line.
        let line: Box<NodeLine<u64, u32>> = Box::new(unsafe { std::mem::zeroed() });
        let hit = |tag, key: u64| match line.read(tag, |r, _| {
            // SAFETY: the line owns its nodes until the end of the test.
            let node = unsafe { r.node() };
            (node.key == key).then_some(node.value)
        }) {
            Found::Hit(v) => Some(v),
            Found::Miss { .. } => None,
        };
        line.insert(6, 0x81, &NodeRef::new(1, 7, 70), &());
        line.insert(0, 0x82, &NodeRef::new(2, 8, 80), &());
        assert_eq!(
            (hit(0x81, 7), hit(0x82, 8), hit(0x81, 8)),
            (Some(70), Some(80), None)
        );
        let old = line.key(6);
        line.replace(6, &NodeRef::new(1, 7, 71), &());
        assert_eq!(hit(0x81, 7), Some(71));
        // SAFETY: unlinked above; released once.
        drop(unsafe { NodeLine::release(old, ()) });
        assert_eq!(line.find_locked(0x99, |_| true), (None, Some(1)));
        let mut seen = Vec::new();
        // SAFETY: as above.
        line.read_each(|r, ()| seen.push(unsafe { r.node() }.key));
        assert_eq!(seen, [8, 7]);
        for slot in [0, 6] {
            let node = line.key(slot);
            line.remove(slot);
            // SAFETY: unlinked just now; released once.
            drop(unsafe { NodeLine::release(node, ()) });
        }
        assert_eq!((hit(0x81, 7), line.occupied().count()), (None, 0));
        line.set_overflow();
        assert!(matches!(
            line.read(0x81, |_, _| None::<()>),
            Found::Miss { overflow: true }
        ));
    }
}
