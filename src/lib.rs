//! Read-mostly concurrency primitives for servers.
//!
//! * [`ShardedRwLock`]: a reader-writer lock whose read path writes only the
//!   reading thread's own cache line.
//! * [`RouterTable`]: a sharded concurrent hash map built on it, for maps
//!   such as socket address → peer, where reads vastly outnumber writes.
//! * [`InlineTable`]: a concurrent hash map of small `Copy` keys and values
//!   stored inline in cache lines: a lookup touches one line.
//! * [`PathLock`]: hierarchical read/write locks on paths of string segments
//!   (a lock covers its subtree), with atomic lock sets, exact FIFO fairness
//!   among conflicting requests, and blocking, try, timeout and async forms.
//! * [`Watch`]: a read-mostly value with change notification: lock-free
//!   reads, and subscribers that wait (async or blocking) for the latest
//!   value.
//!
//! Every atomic protocol is described at the top of its module and
//! model-checked with loom (see `loom-tests/`).
#![deny(
    missing_docs,
    unsafe_op_in_unsafe_fn,
    clippy::undocumented_unsafe_blocks
)]

mod epoch;
mod inline_table;
mod line_table;
mod path_lock;
mod prefetch;
mod raw_rwlock;
mod reentrancy;
mod router_table;
mod sharded_rwlock;
mod sync;
mod thread_index;
mod unwind;
mod watch;

#[cfg(all(test, not(loom)))]
mod test_support;

pub use inline_table::InlineTable;
pub use path_lock::{LockError, LockSet, Mode, OwnedPathGuard, PathGuard, PathLock, PathLockStats};
pub use router_table::{Compute, RouterTable};
pub use sharded_rwlock::{ShardedReadGuard, ShardedRwLock, ShardedWriteGuard};
pub use watch::{Closed, Ref, Subscriber, Watch};

/// The README's tour, compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
