//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses part of this

use std::sync::{Arc, Barrier};

/// Threads each test runs.
pub const THREADS: u64 = 4;

/// Runs `f(t)` on `THREADS` threads started together; panics if one does.
pub fn run_threads(f: impl Fn(u64) + Send + Sync + 'static) {
    let f = Arc::new(f);
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let (f, barrier) = (f.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                f(t)
            })
        })
        .collect();
    handles.into_iter().for_each(|h| h.join().unwrap());
}
