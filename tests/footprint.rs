//! Memory footprint of an empty `RouterTable` and of `PathLock` nodes,
//! measured with a counting global allocator and checked against the
//! formulas the docs give (which scale with the core count, so a 64-core
//! host's figures follow from these). One test per binary: the allocator
//! counts every thread's allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use shardlock::{PathLock, RouterTable};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::SeqCst);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::SeqCst);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap_bytes<T>(make: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.load(Ordering::SeqCst);
    let value = make();
    (value, (LIVE.load(Ordering::SeqCst) - before) as usize)
}

/// The fewest bytes that any of `n` calls of `make` kept allocated, with
/// every result held until the end: the PathLock node table itself may grow
/// during one of them.
fn smallest<T>(n: usize, mut make: impl FnMut(usize) -> T) -> usize {
    let (held, bytes): (Vec<T>, Vec<usize>) = (0..n).map(|i| heap_bytes(|| make(i))).unzip();
    drop(held);
    bytes.into_iter().min().unwrap()
}

#[test]
fn empty_table_and_node_footprints_follow_the_documented_formulas() {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    let rows = (2 * cores).clamp(4, 64);
    let shards = (16 * cores).next_power_of_two().clamp(16, 256);
    // Warm up thread-index, epoch and other one-off statics.
    drop(RouterTable::<u64, u64>::new());

    let (table, bytes) = heap_bytes(RouterTable::<u64, u64>::new);
    assert_eq!(table.shard_count(), shards);
    // An 8-byte head and a 128-byte writer line per shard.
    let documented = shards * (8 + 128);
    println!("empty RouterTable on {cores} cores: {bytes} bytes (documented {documented})");
    assert_eq!(
        bytes, documented,
        "an empty table's footprint drifted from the docs"
    );

    // A shallow node has one 128-byte intention row per thread row plus an
    // overflow row; a deep one has a single row.
    let lock = PathLock::new();
    let _warm = lock.read(["warm", "b"]);
    let shallow = smallest(4, |i| lock.read([format!("a{i}")]));
    let deep = smallest(4, |i| lock.read(["warm", "b", &format!("c{i}"), "d"]));
    let row = 128;
    println!("PathLock: a new shallow node took {shallow} bytes, two deep ones {deep}");
    let wide_rows = (rows + 1) * row;
    assert!(
        shallow >= wide_rows && shallow <= wide_rows + 1024,
        "shallow node: {shallow} bytes, expected {wide_rows} + a little"
    );
    assert!(deep <= 2 * (row + 1024), "deep nodes: {deep} bytes");

    // At most 256 wide nodes besides the root (6 so far): past that, new
    // shallow nodes get one row.
    let names: Vec<String> = (0..300).map(|i| format!("n{i}")).collect();
    let held: Vec<_> = names[..260]
        .iter()
        .map(|n| lock.read([n.as_str()]))
        .collect();
    let narrow = smallest(4, |i| lock.read([names[260 + i].as_str()]));
    println!("PathLock: a shallow node past the wide budget took {narrow} bytes");
    assert!(narrow <= row + 1024, "over budget: {narrow} bytes");
    drop(held);
}
