//! The sync shim: every atomic, cell, lock, thread-local and yield the crate
//! uses comes through here, so that each protocol can be model-checked.
//!
//! Normally these are the `std` types. Under `RUSTFLAGS="--cfg loom"` they are
//! loom's, and the `loom-tests` crate explores every interleaving of them.
//! The cell type follows loom's API (`get` / `get_mut` return tracked
//! pointers), and the std version is a zero-cost wrapper with the same shape.

#[cfg(not(loom))]
mod imp {
    #[allow(unused_imports)] // AtomicU32: only miri's InlineTable words use it
    pub(crate) use std::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize};
    pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};
    pub(crate) use std::thread::yield_now;

    /// `std::cell::UnsafeCell` with loom's pointer-returning API.
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T: ?Sized>(std::cell::UnsafeCell<T>);

    impl<T> UnsafeCell<T> {
        pub(crate) const fn new(value: T) -> Self {
            Self(std::cell::UnsafeCell::new(value))
        }

        pub(crate) fn into_inner(self) -> T {
            self.0.into_inner()
        }
    }

    /// `&mut` access to a cell through `&mut` to it.
    pub(crate) fn cell_get_mut<T>(cell: &mut UnsafeCell<T>) -> &mut T {
        cell.0.get_mut()
    }

    impl<T: ?Sized> UnsafeCell<T> {
        /// A pointer for shared access; see [`ConstPtr::deref`].
        #[inline(always)]
        pub(crate) fn get(&self) -> ConstPtr<T> {
            ConstPtr(self.0.get())
        }

        /// A pointer for exclusive access; see [`MutPtr::deref`].
        #[inline(always)]
        pub(crate) fn get_mut(&self) -> MutPtr<T> {
            MutPtr(self.0.get())
        }
    }

    /// A shared-access pointer into an [`UnsafeCell`].
    #[derive(Debug)]
    pub(crate) struct ConstPtr<T: ?Sized>(*const T);

    impl<T: ?Sized> ConstPtr<T> {
        /// # Safety
        /// No `&mut` to the value may exist while the returned reference lives,
        /// and the cell must outlive it.
        #[inline(always)]
        pub(crate) unsafe fn deref(&self) -> &T {
            // SAFETY: the caller upholds the aliasing and liveness contract above.
            unsafe { &*self.0 }
        }
    }

    /// An exclusive-access pointer into an [`UnsafeCell`].
    #[derive(Debug)]
    pub(crate) struct MutPtr<T: ?Sized>(*mut T);

    impl<T: ?Sized> MutPtr<T> {
        /// # Safety
        /// No other reference to the value may exist while the returned
        /// reference lives, and the cell must outlive it.
        #[allow(clippy::mut_from_ref)]
        #[inline(always)]
        pub(crate) unsafe fn deref(&self) -> &mut T {
            // SAFETY: the caller upholds the exclusivity and liveness contract above.
            unsafe { &mut *self.0 }
        }
    }

    /// Declares a thread-local (std's macro, or loom's under `cfg(loom)`).
    macro_rules! thread_locals {
        ($($tt:tt)*) => { std::thread_local!($($tt)*); };
    }
    pub(crate) use thread_locals;

    /// Declares a lazily initialised static (`OnceLock`, or loom's
    /// `lazy_static!` under `cfg(loom)`, which is fresh in every execution).
    macro_rules! lazy_static {
        (static ref $name:ident : $t:ty = $init:expr;) => {
            #[inline]
            fn $name() -> &'static $t {
                static CELL: std::sync::OnceLock<$t> = std::sync::OnceLock::new();
                CELL.get_or_init(|| $init)
            }
        };
    }
    pub(crate) use lazy_static;

    /// Whether waits may rely on a timeout to recover a missed wake-up.
    /// loom has no time, so under loom every such wait yields instead.
    pub(crate) const HAS_TIME: bool = true;
}

#[cfg(loom)]
mod imp {
    pub(crate) use loom::cell::{ConstPtr, MutPtr, UnsafeCell};
    pub(crate) use loom::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize};
    pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};
    pub(crate) use loom::thread::yield_now;

    /// loom's `thread_local!` takes no `const { }` initialisers: strip them.
    macro_rules! thread_locals {
        () => {};
        ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = const { $init:expr }; $($rest:tt)*) => {
            loom::thread_local!($(#[$attr])* $vis static $name: $t = $init;);
            thread_locals!($($rest)*);
        };
        ($(#[$attr:meta])* $vis:vis static $name:ident: $t:ty = $init:expr; $($rest:tt)*) => {
            loom::thread_local!($(#[$attr])* $vis static $name: $t = $init;);
            thread_locals!($($rest)*);
        };
    }
    pub(crate) use thread_locals;

    /// `&mut` access to a cell through `&mut` to it.
    pub(crate) fn cell_get_mut<T>(cell: &mut UnsafeCell<T>) -> &mut T {
        // SAFETY: `&mut cell` rules out every other access to the value.
        cell.with_mut(|ptr| unsafe { &mut *ptr })
    }

    macro_rules! lazy_static {
        (static ref $name:ident : $t:ty = $init:expr;) => {
            fn $name() -> &'static $t {
                loom::lazy_static! { static ref CELL: $t = $init; }
                &CELL
            }
        };
    }
    pub(crate) use lazy_static;

    pub(crate) const HAS_TIME: bool = false;
}

pub(crate) use imp::*;
pub(crate) use std::sync::atomic::Ordering;

/// Locks a shim mutex, ignoring poisoning: every mutex in this crate guards
/// `()` or state that is valid at every instruction boundary.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// [`lock`] if the mutex is free now; `None` if another thread holds it.
pub(crate) fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(poison)) => Some(poison.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}
