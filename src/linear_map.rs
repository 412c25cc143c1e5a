//! [`LinearMap`]: the single-threaded map inside each [`RouterTable`] shard.
//!
//! Open addressing with linear probing over one array of
//! `Option<Bucket>`; each bucket stores the low 32 bits of its key's hash
//! (as a `NonZeroU32`, so `Option` costs no space: a `(u64, u32)` entry takes
//! 16 bytes). That buys three things:
//!
//! * beside the slots, a dense array of 1-byte tags (0 = empty, else 8 bits
//!   of the hash) is probed first, so a miss usually touches one line of a
//!   small, cache-friendly array and never the slots, and a hit reads one
//!   slot; both addresses can be prefetched *before* the shard lock is taken
//!   ([`LinearMap::home`]);
//! * growing and shrinking never call the user's hasher;
//! * deletion shifts the rest of the cluster back (no tombstones), so
//!   misses stay short however long the table churns.
//!
//! The load factor stays at or below 3/4. All of it is safe code.
//!
//! [`RouterTable`]: crate::RouterTable

use std::num::NonZeroU32;

struct Bucket<K, V> {
    hash: NonZeroU32,
    key: K,
    value: V,
}

/// The stored form of a hash: its low 32 bits (which index every table of
/// up to 2^32 slots), never 0 so that `Option<Bucket>` has a niche.
#[inline]
fn stored(hash: u64) -> NonZeroU32 {
    NonZeroU32::new(hash as u32).unwrap_or(NonZeroU32::MIN)
}

/// A slot's tag: bits 32..40 of the hash (independent of the index bits),
/// never 0, which marks an empty slot.
#[inline]
fn tag(hash: u64) -> u8 {
    ((hash >> 32) as u8).max(1)
}

/// The most slots one map may have: indices come from the stored 32 bits.
const MAX_SLOTS: usize = 1 << 31;

/// The slot count that holds `capacity` entries at load ≤ 3/4.
///
/// # Panics
/// Past [`MAX_SLOTS`] (a single shard of 2^31 slots; use more shards).
fn slots_for(capacity: usize) -> usize {
    let slots = match capacity {
        0 => 0,
        n => n
            .checked_add(n / 3 + 1)
            .and_then(usize::checked_next_power_of_two)
            .map_or(usize::MAX, |slots| slots.max(8)),
    };
    assert!(slots <= MAX_SLOTS, "shardlock: shard capacity overflow");
    slots
}

/// Invariant: `tags[i] != 0` exactly when `slots[i]` is `Some`, and then it
/// is the tag of that bucket's hash.
/// Where an absent key goes: the empty slot ending its probe sequence
/// (`None` while the map has no slots). Valid until the map next changes.
pub(crate) struct Vacant(Option<usize>);

pub(crate) struct LinearMap<K, V> {
    tags: Box<[u8]>,
    slots: Box<[Option<Bucket<K, V>>]>,
    len: usize,
}

impl<K, V> LinearMap<K, V> {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        let n = slots_for(capacity);
        LinearMap {
            tags: vec![0; n].into_boxed_slice(),
            slots: (0..n).map(|_| None).collect(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many entries fit before the next growth.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len() / 4 * 3
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Where lookups start: the tag array's and slot array's addresses and
    /// the index mask. Only used to prefetch, so a stale copy is harmless.
    #[inline]
    pub(crate) fn home(&self) -> [usize; 3] {
        [
            self.tags.as_ptr() as usize,
            self.slots.as_ptr() as usize,
            self.mask(),
        ]
    }

    /// The byte offsets of `hash`'s home tag and home slot, given a mask
    /// from [`Self::home`].
    #[cfg_attr(any(loom, miri, not(target_arch = "x86_64")), allow(dead_code))]
    #[inline]
    pub(crate) fn home_offsets(hash: u64, mask: usize) -> (usize, usize) {
        let i = stored(hash).get() as usize & mask;
        (
            i,
            i.wrapping_mul(std::mem::size_of::<Option<Bucket<K, V>>>()),
        )
    }

    /// The slot holding a key that `eq` accepts (`Ok`), or where that key
    /// would go (`Err`): the empty slot that ends its probe sequence.
    #[inline]
    pub(crate) fn lookup(
        &self,
        hash: u64,
        mut eq: impl FnMut(&K) -> bool,
    ) -> Result<usize, Vacant> {
        let (full, tag) = (stored(hash), tag(hash));
        let mask = self.mask();
        let mut i = full.get() as usize & mask;
        // The load factor keeps at least one slot empty, so this ends.
        loop {
            match self.tags.get(i) {
                None => return Err(Vacant(None)), // no slots yet
                Some(0) => return Err(Vacant(Some(i))),
                Some(&t) if t == tag => match &self.slots[i] {
                    Some(b) if b.hash == full && eq(&b.key) => return Ok(i),
                    _ => {}
                },
                Some(_) => {}
            }
            i = (i + 1) & mask;
        }
    }

    /// The index of the entry whose key `eq` accepts.
    #[inline]
    pub(crate) fn find(&self, hash: u64, eq: impl FnMut(&K) -> bool) -> Option<usize> {
        self.lookup(hash, eq).ok()
    }

    /// The value at an index from [`Self::find`].
    #[inline]
    pub(crate) fn value(&self, index: usize) -> &V {
        &self.slots[index].as_ref().expect("index from find").value
    }

    /// The value at an index from [`Self::find`], mutably.
    #[inline]
    pub(crate) fn value_mut(&mut self, index: usize) -> &mut V {
        &mut self.slots[index].as_mut().expect("index from find").value
    }

    /// Inserts a key that [`Self::lookup`] just found absent, at the slot it
    /// returned (unless the map must grow first, which places it anew). The
    /// map must not have changed since that lookup.
    pub(crate) fn insert_vacant(&mut self, vacant: Vacant, hash: u64, key: K, value: V) {
        let bucket = Bucket {
            hash: stored(hash),
            key,
            value,
        };
        match vacant.0 {
            Some(i) if self.len < self.capacity() => {
                debug_assert!(self.tags[i] == 0, "a vacant slot from a stale lookup");
                self.tags[i] = tag(hash);
                self.slots[i] = Some(bucket);
            }
            _ => {
                self.resize(slots_for(self.len + 1).max(self.slots.len() * 2));
                self.place(tag(hash), bucket);
            }
        }
        self.len += 1;
    }

    /// Puts `bucket` in the first empty slot of its probe sequence.
    fn place(&mut self, tag: u8, bucket: Bucket<K, V>) {
        let mask = self.mask();
        let mut i = bucket.hash.get() as usize & mask;
        while self.tags[i] != 0 {
            i = (i + 1) & mask;
        }
        self.tags[i] = tag;
        self.slots[i] = Some(bucket);
    }

    /// Removes the entry at an index from [`Self::find`], shifting the rest
    /// of its cluster back so no probe sequence is broken.
    pub(crate) fn remove_at(&mut self, index: usize) -> (K, V) {
        let removed = self.slots[index].take().expect("index from find");
        self.tags[index] = 0;
        self.len -= 1;
        let mask = self.mask();
        let (mut hole, mut next) = (index, (index + 1) & mask);
        while let Some(bucket) = &self.slots[next] {
            // Move `next` into the hole unless its home lies cyclically in
            // (hole, next], where it would become unreachable.
            let home = bucket.hash.get() as usize & mask;
            if (next.wrapping_sub(home) & mask) >= (next.wrapping_sub(hole) & mask) {
                self.slots[hole] = self.slots[next].take();
                self.tags[hole] = std::mem::take(&mut self.tags[next]);
                hole = next;
            }
            next = (next + 1) & mask;
        }
        (removed.key, removed.value)
    }

    /// Keeps the entries `keep` approves, visiting each exactly once.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let n = self.slots.len();
        // Walk the ring once, starting after an empty slot. A removal's
        // back-shift stops at the first empty slot, so it never crosses the
        // start, and it only pulls entries from later (unvisited) slots of
        // the cluster into the one just visited: so revisit that slot.
        let Some(start) = self.slots.iter().position(Option::is_none) else {
            return;
        };
        let mut i = (start + 1) % n;
        for _ in 0..n {
            while let Some(b) = &mut self.slots[i] {
                if keep(&b.key, &mut b.value) {
                    break;
                }
                self.remove_at(i);
            }
            i = (i + 1) % n;
        }
    }

    /// Shrinks to the smallest size holding `max(len, capacity)` entries,
    /// if that is smaller than now.
    pub(crate) fn shrink_to(&mut self, capacity: usize) {
        let slots = slots_for(capacity.max(self.len));
        if slots < self.slots.len() {
            self.resize(slots);
        }
    }

    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, (0..slots).map(|_| None).collect());
        let old_tags = std::mem::replace(&mut self.tags, vec![0; slots].into_boxed_slice());
        for (tag, bucket) in old_tags.iter().zip(old.into_vec()) {
            if let Some(bucket) = bucket {
                self.place(*tag, bucket);
            }
        }
    }

    /// The entries, by value.
    pub(crate) fn into_entries(self) -> impl Iterator<Item = (K, V)> {
        self.slots
            .into_vec()
            .into_iter()
            .flatten()
            .map(|b| (b.key, b.value))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.slots.iter().flatten().map(|b| (&b.key, &b.value))
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
