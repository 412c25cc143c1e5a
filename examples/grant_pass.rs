//! What one enqueue and one withdrawal cost on a `PathLock` whose queue
//! already holds many waiters (the grant pass's scaling):
//!
//! ```sh
//! cargo run --release --example grant_pass [-- WAITERS RESOURCES ROUNDS]
//! ```
//!
//! One request holds `Write ["hold"]`. `WAITERS` requests (1,000 by
//! default) of `RESOURCES` resources (64) wait behind it, in two shapes:
//! *disjoint* (waiter `i` writes `["hold", "w{i}", "r{j}"]`: each waits only
//! for the holder) and *overlapping* (every waiter writes the same
//! `["hold", "shared", "r{j}"]`: each also waits for every earlier one).
//! Then one more such request is enqueued (a future polled once) and
//! withdrawn (dropped), `ROUNDS` times; the medians per operation are
//! printed, in microseconds.

use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use shardlock::{LockSet, PathLock};

fn set(prefix: &str, resources: usize) -> LockSet {
    (0..resources).fold(LockSet::new(), |set, j| {
        set.write(["hold".to_string(), prefix.to_string(), format!("r{j}")])
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut next = |default: usize| {
        args.next()
            .map_or(default, |a| a.parse().expect("a number"))
    };
    let (waiters, resources, rounds) = (next(1000), next(64), next(200));
    let mut cx = Context::from_waker(Waker::noop());
    println!(
        "{waiters} waiters of {resources} resources; medians of {rounds} rounds, µs per operation"
    );
    println!("| shape | enqueue | withdraw |\n|---|---|---|");
    for shape in ["disjoint", "overlapping"] {
        let lock = PathLock::new();
        let _holder = lock.write(["hold"]);
        let prefix = |i: usize| match shape {
            "disjoint" => format!("w{i}"),
            _ => "shared".to_string(),
        };
        let sets: Vec<LockSet> = (0..waiters).map(|i| set(&prefix(i), resources)).collect();
        let mut queued = Vec::new();
        for s in &sets {
            let mut future = Box::pin(lock.lock_async(s));
            assert!(
                future.as_mut().poll(&mut cx).is_pending(),
                "waits behind the holder"
            );
            queued.push(future);
        }
        // The new request's nodes exist already (the last waiter's shape),
        // so node creation is not what is timed.
        let extra = set(&prefix(waiters.saturating_sub(1)), resources);
        let (mut enqueue, mut withdraw) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let start = Instant::now();
            let mut future = Box::pin(lock.lock_async(&extra));
            let polled = future.as_mut().poll(&mut cx);
            enqueue.push(start.elapsed().as_secs_f64() * 1e6);
            assert!(matches!(polled, Poll::Pending));
            let start = Instant::now();
            drop(future);
            withdraw.push(start.elapsed().as_secs_f64() * 1e6);
        }
        println!(
            "| {shape} | {:.1} | {:.1} |",
            median(enqueue),
            median(withdraw)
        );
        drop(queued);
    }
}
