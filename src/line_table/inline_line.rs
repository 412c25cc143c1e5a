//! [`InlineLine`]: the slot codec of an [`InlineTable`](crate::InlineTable):
//! one 64-byte bucket line with a header word and up to four `(key, value)`
//! entries stored inline, read optimistically (seqlock style) and written in
//! place under the shard's writer lock.
//!
//! # Layout
//! A bucket is one cache line: an 8-byte header, then 14 four-byte words.
//! An entry takes `ceil(size_of::<K>() / 4)` key words then
//! `ceil(size_of::<V>() / 4)` value words; a bucket holds
//! `min(14 / entry_words, 4)` entries (`SLOTS`): 4 for
//! `u64 → u32`, 3 for `u64 → u64` and 2 for `u64 → [u64; 2]`.
//!
//! | header bits | meaning                                                 |
//! |-------------|---------------------------------------------------------|
//! | 0           | odd: the writer is changing an entry in place            |
//! | 1           | `OVERFLOW`: an insert passed this bucket full, so a probe goes on to the next one |
//! | 2..32       | version counter                                          |
//! | 32..64      | one tag byte per slot: 0 empty, else `0x80 \| 7 bits of the hash` |
//!
//! # Protocol
//! One writer at a time per bucket (the shard's writer lock); readers hold
//! no lock and store nothing.
//! * **write in place** (a value, or a whole entry into a free slot): load
//!   the header `h`, store `h | 1` (odd, Relaxed), `fence(Release)`, store
//!   the words (Relaxed), then store the new header (the next version, even,
//!   with the new tags; Release).
//! * **header-only change** (a remove clears a tag, an insert elsewhere sets
//!   `OVERFLOW`): store the new header with the next version (Release). No
//!   entry word changes.
//! * **read**: `h1 = header.load(Acquire)`; retry while odd; for each slot
//!   whose tag matches, copy its words into a local `MaybeUninit` buffer
//!   (Relaxed atomic loads), `fence(Acquire)`, `h2 = header.load(Relaxed)`:
//!   the copy is valid iff `h1 == h2` (else start over), and only then are
//!   the bytes turned into a `K` and a `V` (a torn copy is never
//!   materialized, so keys with invalid bit patterns, such as enums, stay
//!   sound).
//!
//! # Why a validated copy is one that was written together
//! If the reader's copy read any word stored by a writer `W`, `W`'s
//! `fence(Release)` precedes that store and the reader's `fence(Acquire)`
//! follows its load, so `W`'s odd header store happens before the reader's
//! `h2` load: `h2` is `W`'s odd value or later, and differs from `h1` unless
//! `h1` itself came from `W`'s final store (`Acquire`), in which case every
//! store of `W` happens before the copy, and a later writer's stores would
//! again change `h2`. The counter has 30 bits: a reader would have to sleep
//! through 2^30 writes to one bucket between its two loads to be fooled.
//!
//! loom checks a reader against an in-place value write, a remove and a
//! resize (`loom-tests/tests/inline_table.rs`); the models fail if the
//! version check or the fences are removed.
//!
//! # Words
//! Keys and values may contain padding, which is uninitialised: copying it
//! through `AtomicU64` would be undefined behaviour. So the words are
//! [`atomic_maybe_uninit::AtomicMaybeUninit<u32>`], whose loads and stores
//! are plain `mov`s in inline assembly on every target it supports. miri
//! and loom cannot run assembly, so under them the words are `AtomicU32`,
//! and the tests that run there use keys and values without padding.

use std::marker::PhantomData;
use std::mem::{size_of, MaybeUninit};

use super::{Found, Line};

#[cfg(any(miri, loom))]
use crate::sync::AtomicU32;
use crate::sync::{fence, AtomicU64, Ordering};

/// Four-byte words after the header in one line.
pub(crate) const WORDS: usize = 14;
/// Slots a header has tags for.
pub(crate) const MAX_SLOTS: usize = 4;
/// Words one entry may take in a bucket of at least two.
const MAX_ENTRY_WORDS: usize = WORDS / 2;
const TAG_SHIFT: u32 = 32;
const ODD: u64 = 1;
pub(crate) const OVERFLOW: u64 = 1 << 1;
const COUNTER: u64 = 0xFFFF_FFFC;
const COUNTER_STEP: u64 = 4;
/// A header no live bucket has (odd, with every tag set): see `poison`.
#[cfg(loom)]
const POISON: u64 = u64::MAX;

#[cfg(not(any(miri, loom)))]
type Word = atomic_maybe_uninit::AtomicMaybeUninit<u32>;

/// `AtomicU32` with the `AtomicMaybeUninit` API, for miri and loom (see the
/// module docs: only padding-free types may be stored under them).
#[cfg(any(miri, loom))]
struct Word(AtomicU32);

#[cfg(any(miri, loom))]
impl Word {
    #[inline]
    fn load(&self, order: Ordering) -> MaybeUninit<u32> {
        MaybeUninit::new(self.0.load(order))
    }

    #[inline]
    fn store(&self, value: MaybeUninit<u32>, order: Ordering) {
        // SAFETY: under miri and loom only padding-free types are stored
        // (module docs), and every buffer starts zeroed, so every byte is
        // initialised.
        self.0.store(unsafe { value.assume_init() }, order);
    }
}

/// One cache line. All-zero bytes are a valid empty line (version 0, no
/// tags), so an array of them may come from `alloc_zeroed`.
#[repr(C, align(64))]
pub(crate) struct InlineLine<K, V> {
    header: AtomicU64,
    words: [Word; WORDS],
    _entries: PhantomData<fn() -> (K, V)>,
}

#[cfg(not(loom))]
const _: () = assert!(size_of::<InlineLine<u64, u64>>() == 64);

impl<K, V> InlineLine<K, V> {
    pub(crate) const KEY_WORDS: usize = size_of::<K>().div_ceil(4);
    pub(crate) const VALUE_WORDS: usize = size_of::<V>().div_ceil(4);
    const ENTRY_WORDS: usize = {
        let words = Self::KEY_WORDS + Self::VALUE_WORDS;
        if words == 0 {
            1
        } else {
            words
        }
    };
    /// Entries per line; an `InlineTable` needs at least 2.
    pub(crate) const FIT: usize = {
        let fit = WORDS / Self::ENTRY_WORDS;
        if fit < MAX_SLOTS {
            fit
        } else {
            MAX_SLOTS
        }
    };

    /// The first word of entry `slot`.
    #[inline(always)]
    fn base(slot: usize) -> usize {
        slot * Self::ENTRY_WORDS
    }

    /// [`Line::read`] after a first try met a writer: spins until a try
    /// validates.
    #[cold]
    #[inline(never)]
    fn read_contended<R>(&self, tag: u8, mut visit: impl FnMut(&K, &V) -> Option<R>) -> Found<R> {
        loop {
            std::hint::spin_loop(); // a writer is mid-change
            crate::sync::yield_now();
            if let Some(found) = self.try_read(tag, &mut visit) {
                return found;
            }
        }
    }

    /// One try of [`Line::read`]: `None` if a writer was met (an odd
    /// header, or a header that changed under the copy). Straight-line code
    /// (no retry loop here), so each word is loaded at a fixed offset from
    /// the line, with nothing hoisted or spilled.
    #[inline(always)]
    fn try_read<R>(
        &self,
        tag: u8,
        visit: &mut impl FnMut(&K, &V) -> Option<R>,
    ) -> Option<Found<R>> {
        let (kw, vw) = (Self::KEY_WORDS, Self::VALUE_WORDS);
        let h1 = self.header.load(Ordering::Acquire);
        if h1 & ODD != 0 {
            return None;
        }
        // Each matching slot is copied and validated on its own (there is
        // usually one), so the copy stays in registers.
        let mut tags = h1 >> TAG_SHIFT;
        for slot in 0..Self::FIT {
            let here = tags as u8;
            tags >>= 8;
            if here != tag {
                continue;
            }
            let base = Self::base(slot);
            let mut copy = [MaybeUninit::<u32>::uninit(); MAX_ENTRY_WORDS];
            for (w, copy) in copy[..kw + vw].iter_mut().enumerate() {
                *copy = self.words[base + w].load(Ordering::Relaxed);
            }
            fence(Ordering::Acquire);
            if self.header.load(Ordering::Relaxed) != h1 {
                return None;
            }
            // SAFETY: validated above: these words are one whole entry,
            // written together from a valid `K` and `V`.
            let key: K = unsafe { from_words(&copy[..kw]) };
            // SAFETY: as above.
            let value: V = unsafe { from_words(&copy[kw..kw + vw]) };
            if let Some(result) = visit(&key, &value) {
                return Some(Found::Hit(result));
            }
        }
        Some(Found::Miss {
            overflow: h1 & OVERFLOW != 0,
        })
    }

    /// The header, for the writer (which holds the lock, so it is stable).
    #[inline]
    fn header(&self) -> u64 {
        self.header.load(Ordering::Relaxed)
    }

    /// Stores `words` at `at`, inside an odd version, then publishes
    /// `header` (its version bits are replaced by the next even version).
    fn write_words(&self, at: usize, words: &[MaybeUninit<u32>], header: u64) {
        let old = self.header();
        debug_assert!(old & ODD == 0, "one writer at a time");
        self.header.store(old | ODD, Ordering::Relaxed);
        fence(Ordering::Release);
        for (i, word) in words.iter().enumerate() {
            self.words[at + i].store(*word, Ordering::Relaxed);
        }
        self.publish(old, header);
    }

    /// Stores `header` (its tags and `OVERFLOW`) with the version after
    /// `old`'s, even.
    fn publish(&self, old: u64, header: u64) {
        let version = (old & COUNTER).wrapping_add(COUNTER_STEP) & COUNTER;
        self.header
            .store((header & !(COUNTER | ODD)) | version, Ordering::Release);
    }

    /// `count` words from `at`, for the writer (no concurrent write).
    #[inline(always)]
    fn words_at(&self, at: usize, count: usize) -> [MaybeUninit<u32>; WORDS] {
        let mut words = [MaybeUninit::uninit(); WORDS];
        for (word, atomic) in words[..count].iter_mut().zip(&self.words[at..]) {
            *word = atomic.load(Ordering::Relaxed);
        }
        words
    }
}

impl<K: Copy, V: Copy> Line for InlineLine<K, V> {
    type Key = K;
    type Value = V;
    type Owned = std::convert::Infallible;
    const SLOTS: usize = Self::FIT;
    const OWNS: bool = false;

    #[cfg(loom)]
    fn empty() -> Self {
        InlineLine {
            header: AtomicU64::new(0),
            words: std::array::from_fn(|_| Word(AtomicU32::new(0))),
            _entries: PhantomData,
        }
    }

    #[cfg(loom)]
    fn poison(&self) {
        self.header.store(POISON, Ordering::Relaxed);
    }

    /// Optimistically reads the entries tagged `tag`.
    #[inline(always)]
    fn read<R>(&self, tag: u8, mut visit: impl FnMut(&K, &V) -> Option<R>) -> Found<R> {
        match self.try_read(tag, &mut visit) {
            Some(found) => found,
            None => self.read_contended(tag, visit),
        }
    }

    /// A validated copy of every entry (a consistent snapshot of the line):
    /// every word is copied, then the header checked once, so nothing is
    /// seen twice.
    fn read_each(&self, mut f: impl FnMut(K, V)) {
        let (kw, vw) = (Self::KEY_WORDS, Self::VALUE_WORDS);
        loop {
            let h1 = self.header.load(Ordering::Acquire);
            if h1 & ODD != 0 {
                std::hint::spin_loop();
                crate::sync::yield_now();
                continue;
            }
            let copy: [MaybeUninit<u32>; WORDS] =
                std::array::from_fn(|w| self.words[w].load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if self.header.load(Ordering::Relaxed) != h1 {
                continue;
            }
            for slot in (0..Self::FIT).filter(|&slot| tag_at(h1, slot) != 0) {
                let base = Self::base(slot);
                // SAFETY: validated above, as in `try_read`.
                let key: K = unsafe { from_words(&copy[base..base + kw]) };
                // SAFETY: as above.
                let value: V = unsafe { from_words(&copy[base + kw..base + kw + vw]) };
                f(key, value);
            }
            return;
        }
    }

    #[inline]
    fn tag(&self, slot: usize) -> u8 {
        tag_at(self.header(), slot)
    }

    #[inline]
    fn key(&self, slot: usize) -> K {
        let words = self.words_at(Self::base(slot), Self::KEY_WORDS);
        // SAFETY: only this thread writes the line (it holds the lock), and
        // an occupied slot holds a whole key.
        unsafe { from_words(&words[..Self::KEY_WORDS]) }
    }

    #[inline]
    fn value(&self, slot: usize) -> V {
        let words = self.words_at(Self::base(slot) + Self::KEY_WORDS, Self::VALUE_WORDS);
        // SAFETY: as in `key`.
        unsafe { from_words(&words[..Self::VALUE_WORDS]) }
    }

    fn overflowed(&self) -> bool {
        self.header() & OVERFLOW != 0
    }

    fn insert(&self, slot: usize, tag: u8, key: &K, value: &V) {
        let (kw, vw) = (Self::KEY_WORDS, Self::VALUE_WORDS);
        let mut words = to_words(key);
        words[kw..kw + vw].copy_from_slice(&to_words(value)[..vw]);
        let header = self.header();
        debug_assert_eq!(tag_at(header, slot), 0, "slot is free");
        let tagged = header | u64::from(tag) << (TAG_SHIFT + 8 * slot as u32);
        self.write_words(Self::base(slot), &words[..kw + vw], tagged);
    }

    /// Writes the value only: the key is equal, and keys are `Copy`.
    fn replace(&self, slot: usize, _key: &K, value: &V) {
        let base = Self::base(slot) + Self::KEY_WORDS;
        let words = to_words(value);
        self.write_words(base, &words[..Self::VALUE_WORDS], self.header());
    }

    /// Clears the tag (the words stay; no reader decodes an untagged slot).
    fn remove(&self, slot: usize) {
        let header = self.header();
        let cleared = header & !(0xFF << (TAG_SHIFT + 8 * slot as u32));
        self.publish(header, cleared);
    }

    fn set_overflow(&self) {
        let header = self.header();
        if header & OVERFLOW == 0 {
            self.publish(header, header | OVERFLOW);
        }
    }

    unsafe fn release(_: K, _: V) -> Option<Self::Owned> {
        None
    }
}

#[inline(always)]
fn tag_at(header: u64, slot: usize) -> u8 {
    (header >> (TAG_SHIFT + 8 * slot as u32)) as u8
}

/// `MaybeUninit` words holding `value`'s bytes (the rest zero).
#[inline(always)]
fn to_words<T>(value: &T) -> [MaybeUninit<u32>; WORDS] {
    let mut words = [MaybeUninit::new(0u32); WORDS];
    debug_assert!(size_of::<T>() <= WORDS * 4);
    // SAFETY: `words` has room for `size_of::<T>()` bytes (a line with at
    // least one slot fits an entry in 14 words); `MaybeUninit` accepts any
    // bytes, padding included; the two do not overlap.
    unsafe {
        std::ptr::copy_nonoverlapping(
            (value as *const T).cast::<u8>(),
            words.as_mut_ptr().cast::<u8>(),
            size_of::<T>(),
        );
    }
    words
}

/// The `T` whose bytes `words` hold.
///
/// # Safety
/// The first `size_of::<T>()` bytes of `words` are the bytes of a valid `T`
/// (copied whole from one, not torn by a concurrent write).
#[inline(always)]
unsafe fn from_words<T>(words: &[MaybeUninit<u32>]) -> T {
    debug_assert!(size_of::<T>() <= words.len() * 4);
    // SAFETY: the caller's contract; `read_unaligned` because `T` may be
    // more aligned than 4.
    unsafe { std::ptr::read_unaligned(words.as_ptr().cast::<T>()) }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn empty<K, V>() -> Box<InlineLine<K, V>> {
        // SAFETY: all-zero bytes are an empty line (see `InlineLine`).
        Box::new(unsafe { std::mem::zeroed() })
    }

    fn hit<K: Copy + PartialEq, V: Copy>(line: &InlineLine<K, V>, tag: u8, key: K) -> Option<V> {
        match line.read(tag, |k, v| (*k == key).then_some(*v)) {
            Found::Hit(v) => Some(v),
            Found::Miss { .. } => None,
        }
    }

    #[test]
    fn entries_round_trip_and_tags_filter() {
        let line = empty::<u64, u32>();
        assert_eq!(InlineLine::<u64, u32>::FIT, 4);
        assert_eq!(InlineLine::<u64, u64>::FIT, 3);
        assert_eq!(InlineLine::<u64, [u64; 2]>::FIT, 2);
        assert_eq!(InlineLine::<[u64; 2], [u64; 2]>::FIT, 1);
        line.insert(1, 0x81, &7, &70);
        line.insert(0, 0x82, &8, &80);
        assert_eq!(
            (
                hit(&line, 0x81, 7),
                hit(&line, 0x82, 8),
                hit(&line, 0x81, 8)
            ),
            (Some(70), Some(80), None)
        );
        line.replace(1, &7, &71);
        assert_eq!(hit(&line, 0x81, 7), Some(71));
        assert_eq!(line.find_locked(0x81, |k| *k == 7).0, Some(1));
        assert_eq!(line.find_locked(0x99, |_| true), (None, Some(2)));
        line.remove(1);
        assert_eq!(hit(&line, 0x81, 7), None);
        assert_eq!(line.occupied().collect::<Vec<_>>(), [0]);
        assert!(!line.overflowed());
        line.set_overflow();
        assert!(matches!(
            line.read(0x81, |_, _| None::<()>),
            Found::Miss { overflow: true }
        ));
        assert_eq!(line.header() & ODD, 0, "even after every write");
    }

    #[test]
    #[cfg_attr(miri, ignore = "padding: under miri the words are AtomicU32")]
    fn wide_and_oddly_sized_entries_round_trip() {
        let line = empty::<[u64; 2], (u32, u16, u8)>();
        let key = [1u64, 2];
        let value = (3u32, 4u16, 5u8);
        line.insert(0, 0x90, &key, &value);
        line.insert(1, 0x90, &[9, 9], &(6, 7, 8));
        assert_eq!(hit(&line, 0x90, key), Some(value));
        assert_eq!(line.key(1), [9, 9]);
        assert_eq!(line.value(1), (6, 7, 8));
        let mut all = Vec::new();
        line.read_each(|k, v| all.push((k, v)));
        assert_eq!(all, [(key, value), ([9, 9], (6, 7, 8))]);
    }
}
