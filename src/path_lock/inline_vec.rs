//! [`InlineVec`]: a vector of `Copy` items that stays on the stack up to `N`
//! items, so the requests of everyday depth allocate nothing.

/// Items `..len` live in `inline` while `len <= N`; past that, all of them
/// live in `heap` (which is empty, and unallocated, until then).
#[derive(Clone, Debug)]
pub(crate) struct InlineVec<T: Copy + Default, const N: usize> {
    len: usize,
    inline: [T; N],
    heap: Vec<T>,
}

impl<T: Copy + Default, const N: usize> Default for InlineVec<T, N> {
    #[inline]
    fn default() -> Self {
        InlineVec {
            len: 0,
            inline: [T::default(); N],
            heap: Vec::new(),
        }
    }
}

impl<T: Copy + Default, const N: usize> InlineVec<T, N> {
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Empties it, keeping any heap buffer.
    #[inline]
    pub(crate) fn clear(&mut self) {
        self.len = 0;
        self.heap.clear();
    }

    #[inline]
    pub(crate) fn push(&mut self, item: T) {
        if self.len < N {
            self.inline[self.len] = item;
        } else {
            self.spill();
            self.heap.push(item);
        }
        self.len += 1;
    }

    #[inline]
    pub(crate) fn extend_from_slice(&mut self, items: &[T]) {
        let end = self.len + items.len();
        if end <= N {
            self.inline[self.len..end].copy_from_slice(items);
        } else {
            self.spill();
            self.heap.extend_from_slice(items);
        }
        self.len = end;
    }

    /// Moves the inline items to the heap, once.
    #[cold]
    fn spill(&mut self) {
        if self.heap.is_empty() {
            self.heap.extend_from_slice(&self.inline[..self.len]);
        }
    }

    #[inline]
    pub(crate) fn as_slice(&self) -> &[T] {
        if self.len <= N {
            &self.inline[..self.len]
        } else {
            &self.heap
        }
    }

    #[inline]
    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        if self.len <= N {
            &mut self.inline[..self.len]
        } else {
            &mut self.heap
        }
    }
}

impl<T: Copy + Default, const N: usize> std::ops::Deref for InlineVec<T, N> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Copy + Default, const N: usize> std::ops::DerefMut for InlineVec<T, N> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        self.as_mut_slice()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::InlineVec;

    #[test]
    fn spills_past_n_and_keeps_order() {
        let mut v: InlineVec<u32, 3> = InlineVec::default();
        v.push(1);
        v.extend_from_slice(&[2, 3]);
        assert_eq!(&v[..], [1, 2, 3]);
        assert!(v.heap.is_empty(), "still inline");
        v.push(4);
        v.extend_from_slice(&[5, 6]);
        assert_eq!(&v[..], [1, 2, 3, 4, 5, 6]);
        v[0] = 9;
        assert_eq!(v.as_slice()[0], 9);
        let mut w: InlineVec<u8, 2> = InlineVec::default();
        w.extend_from_slice(b"abc");
        assert_eq!(&w[..], b"abc");
        assert_eq!(w.len(), 3);
    }
}
