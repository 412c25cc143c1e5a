//! loom models of PathLock's node-state protocol (`src/path_lock/mod.rs`).
#![cfg(loom)]

use std::future::Future;
use std::task::{Context, Poll, Wake, Waker};

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use loom::thread;
use shardlock::{LockSet, PathLock};
use std::sync::Arc;

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

fn noop_waker() -> Waker {
    Waker::from(Arc::new(Noop))
}

/// `loom::model` with room for more branches than its default 1,000: every
/// node access now runs the sweep guard's and the node table's epoch
/// protocol, and the models' spin loops yield once per step of the other
/// thread, so a schedule takes more branches (none of them a livelock: each
/// model finishes in seconds with this bound).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.max_branches = builder.max_branches.max(20_000);
    builder.check(f);
}

fn spin_until(flag: &AtomicBool) {
    while !flag.load(SeqCst) {
        thread::yield_now();
    }
}

#[test]
fn reader_vs_writer_on_parent_and_child() {
    model(|| {
        let lock = Arc::new(PathLock::new());
        // Data "under" ["a"]: the writer of ["a", "b"] and the reader of
        // ["a"] must never touch it at once (loom checks the cell).
        let data = Arc::new(UnsafeCell::new(0u32));
        let writer = {
            let (lock, data) = (lock.clone(), data.clone());
            thread::spawn(move || {
                let _g = lock.write(["a", "b"]);
                data.with_mut(|d| unsafe { *d += 1 });
            })
        };
        {
            let _g = lock.read(["a"]);
            let seen = data.with(|d| unsafe { *d });
            assert!(seen <= 1);
        }
        writer.join().unwrap();
        assert_eq!(lock.stats().held, 0);
    });
}

#[test]
fn writers_on_siblings_both_proceed() {
    model(|| {
        let lock = Arc::new(PathLock::new());
        let (in_x, in_y) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let other = {
            let (lock, in_x, in_y) = (lock.clone(), in_x.clone(), in_y.clone());
            thread::spawn(move || {
                let _g = lock.write(["a", "y"]);
                in_y.store(true, SeqCst);
                spin_until(&in_x); // both held at once, or loom reports a deadlock
            })
        };
        let _g = lock.write(["a", "x"]);
        in_x.store(true, SeqCst);
        spin_until(&in_y);
        drop(_g);
        other.join().unwrap();
    });
}

#[test]
fn a_pending_writer_is_not_overtaken_by_a_new_reader() {
    model(|| {
        let lock = Arc::new(PathLock::new());
        let reader = lock.read(["a"]);
        let writer = {
            let lock = lock.clone();
            thread::spawn(move || drop(lock.write(["a"])))
        };
        while lock.stats().waiting == 0 {
            thread::yield_now();
        }
        assert!(
            lock.try_read(["a", "b"]).is_none(),
            "a reader overtook the waiting writer"
        );
        drop(reader);
        writer.join().unwrap();
        assert!(lock.try_write(["a"]).is_some());
    });
}

#[test]
fn cancelling_a_waiter_races_a_release() {
    model(|| {
        let lock = Arc::new(PathLock::new());
        let holder = lock.lock_owned(&LockSet::new().write(["a"])).unwrap();
        let mut waiter = Box::pin(lock.lock_owned_async(LockSet::new().read(["a"])));
        let waker = noop_waker();
        assert!(waiter
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        let releaser = thread::spawn(move || drop(holder));
        drop(waiter); // cancels, granted or not
        releaser.join().unwrap();
        let stats = lock.stats();
        assert_eq!((stats.held, stats.waiting, stats.nodes), (0, 0, 0));
        assert!(lock.try_write(["a"]).is_some());
    });
}

#[test]
fn release_hands_off_to_a_waiting_set() {
    model(|| {
        let lock = Arc::new(PathLock::new());
        let a = lock.lock_owned(&LockSet::new().write(["a"])).unwrap();
        let b = lock.lock_owned(&LockSet::new().write(["b"])).unwrap();
        let mut set = Box::pin(lock.lock_owned_async(LockSet::new().read(["a"]).read(["b"])));
        let waker = noop_waker();
        assert!(set
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_pending());
        let releaser = thread::spawn(move || {
            drop(a);
            drop(b);
        });
        releaser.join().unwrap();
        // Granted inside the releases: a newcomer writer cannot barge in.
        assert!(lock.try_write(["b"]).is_none());
        let Poll::Ready(guard) = set.as_mut().poll(&mut Context::from_waker(&waker)) else {
            panic!("not handed off")
        };
        drop(guard);
        assert!(lock.try_write(["b"]).is_some());
    });
}

/// Under loom every node creation sweeps. Here one thread's creation of
/// ["c"] sweeps the idle nodes of ["a", "b"] (marking them `DEAD` and
/// unlinking them) while the main thread takes ["a", "b"] again through
/// those very nodes; then the sweeping thread takes ["a", "b"] too, on
/// whatever nodes the path has by then. A request that kept a dead node
/// would exclude nothing, and both would be inside at once.
#[test]
fn a_sweep_unlinking_a_path_races_a_reacquire_of_it() {
    model(|| {
        let lock = Arc::new(PathLock::new());
        let inside = Arc::new(AtomicUsize::new(0));
        let enter = |inside: &AtomicUsize| {
            assert_eq!(inside.fetch_add(1, SeqCst), 0, "two writers of [a, b]");
            inside.fetch_sub(1, SeqCst);
        };
        drop(lock.write(["a", "b"])); // nodes a and a/b, now idle
        let sweeper = {
            let (lock, inside) = (lock.clone(), inside.clone());
            thread::spawn(move || {
                drop(lock.read(["c"])); // creates c, sweeping first
                let _g = lock.write(["a", "b"]);
                enter(&inside);
            })
        };
        {
            let _g = lock.write(["a", "b"]);
            enter(&inside);
        }
        sweeper.join().unwrap();
        let stats = lock.stats();
        assert_eq!((stats.held, stats.waiting, stats.nodes), (0, 0, 0));
        assert!(lock.try_write(["a"]).is_some());
    });
}

/// Issue 15, item 7: `stats().held` summed per-thread counts read at
/// different instants; a guard taken on one thread and released on another
/// while `stats` ran could make the sum wrap below zero (u64::MAX). It may
/// never exceed the one guard that exists.
#[test]
fn held_stays_within_the_live_guards_while_a_guard_moves_between_threads() {
    model(|| {
        let lock = Arc::new(PathLock::new());
        let stats = {
            let lock = lock.clone();
            thread::spawn(move || lock.stats().held)
        };
        let guard = lock.lock_owned(&LockSet::new().read(["a"])).expect("free");
        let releaser = thread::spawn(move || drop(guard));
        releaser.join().unwrap();
        let held = stats.join().unwrap();
        assert!(held <= 1, "held read {held} with one guard");
        assert_eq!(lock.stats().held, 0);
    });
}
