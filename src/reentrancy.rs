//! Detects calls into a table from inside one of its own closures.
//!
//! Each closure a [`crate::RouterTable`] runs while it holds a shard lock is
//! wrapped in a [`Scope`] that records (table, access) in a thread-local
//! stack. Every table operation first calls [`check`], so what a closure may
//! do is the same whatever shard its key falls in:
//!
//! * inside a `Shared` scope (`get_with`, `for_each`): reads of the same
//!   table work; writes panic;
//! * inside an `Exclusive` scope (`update`, `retain`, `remove_if`,
//!   `get_or_insert_with`): every call on the same table panics.
//!
//! Outside any scope, [`check`] is one thread-local load.

use std::cell::{Cell, RefCell};

use crate::sync::thread_locals;

/// What the closure in a scope was given.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Access {
    /// A shard read lock is held.
    Shared,
    /// A shard write lock is held.
    Exclusive,
}

thread_locals! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    static SCOPES: RefCell<Vec<(usize, Access)>> = const { RefCell::new(Vec::new()) };
}

/// Panics if this thread is inside a closure of table `table` that forbids
/// an operation of kind `write`.
#[inline]
pub(crate) fn check(table: usize, write: bool) {
    if DEPTH.with(Cell::get) != 0 {
        check_scopes(table, write);
    }
}

#[cold]
fn check_scopes(table: usize, write: bool) {
    let forbidden = SCOPES.with(|scopes| {
        scopes.borrow().iter().find_map(|&(id, access)| {
            (id == table && (write || access == Access::Exclusive)).then_some(access)
        })
    });
    match forbidden {
        Some(Access::Shared) => panic!(
            "shardlock: RouterTable written from inside its own get_with/for_each closure; \
             only reads of the same table are allowed there (a write would deadlock)"
        ),
        Some(Access::Exclusive) => panic!(
            "shardlock: RouterTable used from inside its own update/retain/remove_if/\
             get_or_insert_with closure, which holds a shard write lock (this would deadlock)"
        ),
        None => {}
    }
}

/// Marks a table closure as running on this thread until dropped.
pub(crate) struct Scope(());

impl Scope {
    #[inline]
    pub(crate) fn enter(table: usize, access: Access) -> Scope {
        SCOPES.with(|scopes| scopes.borrow_mut().push((table, access)));
        DEPTH.with(|depth| depth.set(depth.get() + 1));
        Scope(())
    }
}

impl Drop for Scope {
    #[inline]
    fn drop(&mut self) {
        DEPTH.with(|depth| depth.set(depth.get() - 1));
        SCOPES.with(|scopes| scopes.borrow_mut().pop());
    }
}
