//! Runs one hot path many times on one thread, for instruction counts:
//!
//! ```sh
//! cargo build --release --example hot_paths
//! valgrind --tool=callgrind target/release/examples/hot_paths get 1000000
//! valgrind --tool=callgrind target/release/examples/hot_paths base 1000000
//! ```
//!
//! Subtract the `base` run (the same setup, no loop) and divide by the count.
//! Paths: `get` (a hit on a 1k-entry `RouterTable`), `insert` (replacing a
//! value), `path-read` (a depth-3 `PathLock` read, locked and released).

use std::hint::black_box;

use shardlock::{PathLock, RouterTable};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "get".into());
    let count: u64 = args
        .next()
        .map_or(1_000_000, |n| n.parse().expect("a count"));
    let table: RouterTable<u64, u64> = (0..1000).map(|k| (k, k)).collect();
    let lock = PathLock::new();
    drop(lock.read(["a", "b", "c"]));
    match path.as_str() {
        "base" => {}
        "get" => {
            for i in 0..count {
                black_box(table.get(&black_box(i % 1000)));
            }
        }
        "insert" => {
            for i in 0..count {
                black_box(table.insert(black_box(i % 1000), i));
            }
        }
        "path-read" => {
            for _ in 0..count {
                drop(black_box(lock.read(black_box(["a", "b", "c"]))));
            }
        }
        other => panic!("unknown path {other}: base, get, insert or path-read"),
    }
}
