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
//! value), `inline-get` and `inline-insert` (the same on an `InlineTable`),
//! `std-get` (a bare `std::collections::HashMap` with ahash), `path-read` (a
//! depth-3 `PathLock` read, locked and released). A
//! third argument starts that many idle threads first, each of which has
//! read the table once (so it owns an epoch row that every collection
//! scans), and which stay alive, unpinned, until the end.

use std::hint::black_box;

use shardlock::{InlineTable, PathLock, RouterTable};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args.next().unwrap_or_else(|| "get".into());
    let count: u64 = args
        .next()
        .map_or(1_000_000, |n| n.parse().expect("a count"));
    let table: RouterTable<u64, u64> = (0..1000).map(|k| (k, k)).collect();
    let idle: usize = args
        .next()
        .map_or(0, |n| n.parse().expect("a thread count"));
    let lock = PathLock::new();
    drop(lock.read(["a", "b", "c"]));
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let stop_rx = std::sync::Arc::new(std::sync::Mutex::new(stop_rx));
    let started = std::sync::Arc::new(std::sync::Barrier::new(idle + 1));
    std::thread::scope(|s| {
        for _ in 0..idle {
            let (table, stop_rx, started) = (&table, stop_rx.clone(), started.clone());
            s.spawn(move || {
                black_box(table.get(&1));
                started.wait();
                let _ = stop_rx.lock().unwrap().recv();
            });
        }
        started.wait();
        run(&path, count, &table, &lock);
        drop(stop_tx);
    });
}

fn run(path: &str, count: u64, table: &RouterTable<u64, u64>, lock: &PathLock) {
    let inline: InlineTable<u64, u64> = (0..1000).map(|k| (k, k)).collect();
    let std: std::collections::HashMap<u64, u64, ahash::RandomState> =
        (0..1000).map(|k| (k, k)).collect();
    match path {
        "inline-get" => {
            for i in 0..count {
                black_box(inline.get(&black_box(i % 1000)));
            }
        }
        "inline-insert" => {
            for i in 0..count {
                black_box(inline.insert(black_box(i % 1000), i));
            }
        }
        "std-get" => {
            for i in 0..count {
                black_box(std.get(&black_box(i % 1000)));
            }
        }
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
