//! loom models of the reader-slot rwlock protocol (`src/raw_rwlock.rs`).
//! Run: `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p loom-tests --release`
#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use shardlock::ShardedRwLock;

/// Both halves are always written together; a reader that overlapped a
/// writer could see them differ (and loom would flag the cell race anyway).
fn consistent(lock: &ShardedRwLock<(u32, u32)>) -> u32 {
    let guard = lock.read();
    assert_eq!(guard.0, guard.1, "reader overlapped a writer");
    guard.0
}

fn bump(lock: &ShardedRwLock<(u32, u32)>) {
    let mut guard = lock.write();
    guard.0 += 1;
    guard.1 += 1;
}

#[test]
fn reader_vs_writer() {
    loom::model(|| {
        let lock = Arc::new(ShardedRwLock::new((0, 0)));
        let writer = {
            let lock = lock.clone();
            thread::spawn(move || bump(&lock))
        };
        let seen = consistent(&lock);
        assert!(seen <= 1);
        writer.join().unwrap();
        assert_eq!(consistent(&lock), 1);
    });
}

#[test]
fn writer_vs_writer() {
    loom::model(|| {
        let lock = Arc::new(ShardedRwLock::new((0, 0)));
        let other = {
            let lock = lock.clone();
            thread::spawn(move || bump(&lock))
        };
        bump(&lock);
        other.join().unwrap();
        assert_eq!(consistent(&lock), 2, "a write was lost");
    });
}

#[test]
fn writer_waits_behind_readers() {
    // Two readers (the second on loom's overflow row: 2 own rows, main
    // thread + 2 spawned) and one writer.
    loom::model(|| {
        let lock = Arc::new(ShardedRwLock::new((0, 0)));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let lock = lock.clone();
                thread::spawn(move || {
                    consistent(&lock);
                })
            })
            .collect();
        bump(&lock);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(consistent(&lock), 1);
    });
}

#[test]
fn try_write_fails_cleanly_and_wakes_sleeping_readers() {
    loom::model(|| {
        let lock = Arc::new(ShardedRwLock::new((0, 0)));
        let reader = {
            let lock = lock.clone();
            thread::spawn(move || consistent(&lock))
        };
        if let Some(mut guard) = lock.try_write() {
            guard.0 += 1;
            guard.1 += 1;
        }
        // Whatever happened, the reader finishes (no lost wake-up) ...
        let seen = reader.join().unwrap();
        assert!(seen <= 1);
        // ... and the lock is free again.
        assert!(lock.try_write().is_some());
    });
}
