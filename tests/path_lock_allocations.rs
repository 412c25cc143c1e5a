//! The uncontended fast path allocates nothing: a counting global allocator
//! counts this thread's allocations across steady-state lock+unlock cycles.
//! Counts are deterministic, so this is a test and not a benchmark.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use shardlock::{LockSet, PathLock};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// This thread's allocations during `f`.
fn allocations(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn steady_state_uncontended_locks_allocate_nothing() {
    let lock = PathLock::new();
    let path = ["tenant", "users", "alice"];
    let deep = ["a", "b", "c", "d", "e", "f", "g", "h"]; // 8 segments: still inline
                                                         // Seven nodes (the root, tenant, users, four leaves): a set's node list
                                                         // is inline up to nine nodes, like a depth-8 path's.
    let set = (0..4).fold(LockSet::new(), |s, i| {
        s.read(["tenant", "users", format!("u{i}").as_str()])
    });
    let warm = || {
        drop(lock.read(path));
        drop(lock.write(path));
        drop(lock.write(deep));
        drop(lock.try_read(path));
        drop(lock.lock(&set).unwrap());
    };
    warm(); // creates the nodes, the thread's index, the plan of `set`
    let reads = allocations(|| (0..1000).for_each(|_| drop(lock.read(path))));
    let writes = allocations(|| (0..1000).for_each(|_| drop(lock.write(path))));
    let deep_writes = allocations(|| (0..1000).for_each(|_| drop(lock.write(deep))));
    let tries = allocations(|| (0..1000).for_each(|_| drop(lock.try_read(path))));
    let sets = allocations(|| (0..1000).for_each(|_| drop(lock.lock(&set).unwrap())));
    assert_eq!(
        (reads, writes, deep_writes, tries, sets),
        (0, 0, 0, 0, 0),
        "allocations per 1000 (read, write, depth-8 write, try_read, set of 4)"
    );
    // The counter does count: the first lock of a new path creates nodes.
    assert!(allocations(|| drop(lock.read(["new", "path"]))) > 0);
}
