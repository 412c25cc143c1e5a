//! Detects calls into a table from code that table runs.
//!
//! Every stretch of a [`crate::RouterTable`] operation that runs user code
//! (the user's closures, and the `Clone` and `Eq` of its keys and values)
//! runs inside [`scoped`], which records (table, access) on this thread.
//! Every table operation first calls [`check`], so what such code may do is
//! the same whatever shard its key falls in:
//!
//! * inside a `Shared` scope (a read: `get`, `get_with`, `contains_key`,
//!   `for_each`, ...; no lock is held): reads of the same table work;
//!   writes panic;
//! * inside an `Exclusive` scope (a write lock is held): every call on the
//!   same table panics.
//!
//! The scopes form a linked list through the stack frames of [`scoped`],
//! headed by a thread-local `Cell` with no destructor, so this works the
//! same from a thread-local destructor during thread teardown. Outside any
//! scope, [`check`] is one thread-local load.

use std::cell::Cell;
use std::ptr;

use crate::sync::thread_locals;

/// What the code in a scope runs under.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Access {
    /// A read (or a snapshot): no shard lock that a read would need.
    Shared,
    /// A shard write lock is held.
    Exclusive,
}

/// One scope, living in the stack frame of [`scoped`].
struct Frame {
    table: usize,
    access: Access,
    outer: *const Frame,
}

thread_locals! {
    /// The innermost scope, or null.
    static INNERMOST: Cell<*const Frame> = const { Cell::new(ptr::null()) };
}

/// What [`check`] found.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Nesting {
    /// No scope of this table is open on this thread.
    Outside,
    /// Inside a `Shared` scope of this table (a read, which is allowed).
    NestedRead,
}

#[inline]
fn innermost() -> *const Frame {
    INNERMOST.try_with(Cell::get).unwrap_or(ptr::null())
}

/// Panics if this thread runs code under a lock of table `table` that
/// forbids an operation of kind `write`; otherwise says whether the
/// operation is nested in a read of the same table.
#[inline]
pub(crate) fn check(table: usize, write: bool) -> Nesting {
    let head = innermost();
    if head.is_null() {
        return Nesting::Outside;
    }
    check_frames(head, table, write)
}

#[cold]
fn check_frames(mut frame: *const Frame, table: usize, write: bool) -> Nesting {
    let mut nesting = Nesting::Outside;
    while !frame.is_null() {
        // SAFETY: every frame in the list lives in a `scoped` call that is
        // still running on this thread (it unlinks itself before returning,
        // also on unwind), so the pointer is valid.
        let f = unsafe { &*frame };
        if f.table == table {
            match (f.access, write) {
                (Access::Exclusive, _) => panic!(
                    "shardlock: a table (RouterTable or InlineTable) used from code it runs \
                     under a shard write lock (an update/retain/remove_if/get_or_insert_with \
                     closure, or a key or value's Eq/Clone/Hash during a write); this would \
                     deadlock"
                ),
                (Access::Shared, true) => panic!(
                    "shardlock: RouterTable written from code it runs during a read of it \
                     (a get_with/for_each closure, or a key or value's Clone/Eq during a \
                     read); only reads of the same table are allowed there"
                ),
                (Access::Shared, false) => nesting = Nesting::NestedRead,
            }
        }
        frame = f.outer;
    }
    nesting
}

/// Whether this thread runs no code of any table's scope (so code run now,
/// such as a `Drop`, may use every table freely).
#[inline]
pub(crate) fn outside_every_scope() -> bool {
    innermost().is_null()
}

/// Runs `f` as a scope of `table` with `access` (see the module docs).
#[inline]
pub(crate) fn scoped<R>(table: usize, access: Access, f: impl FnOnce() -> R) -> R {
    /// Unlinks the frame on return and on unwind.
    struct Unlink(*const Frame);
    impl Drop for Unlink {
        #[inline]
        fn drop(&mut self) {
            let _ = INNERMOST.try_with(|head| head.set(self.0));
        }
    }
    let outer = innermost();
    let frame = Frame {
        table,
        access,
        outer,
    };
    let _unlink = Unlink(outer);
    let _ = INNERMOST.try_with(|head| head.set(&frame));
    f()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_and_unwind() {
        assert_eq!(check(1, true), Nesting::Outside);
        scoped(1, Access::Shared, || {
            assert_eq!(check(1, false), Nesting::NestedRead);
            assert_eq!(check(2, true), Nesting::Outside);
            let caught = std::panic::catch_unwind(|| {
                scoped(2, Access::Exclusive, || panic!("inner"));
            });
            assert!(caught.is_err());
            // The panicking scope unlinked itself; the outer one remains.
            assert_eq!(check(2, true), Nesting::Outside);
            assert_eq!(check(1, false), Nesting::NestedRead);
            assert!(std::panic::catch_unwind(|| check(1, true)).is_err());
        });
        assert_eq!(check(1, true), Nesting::Outside);
    }
}
