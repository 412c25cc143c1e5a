//! Regression tests for PathLock defects found in review (issue 6): leaks
//! on a full S count, panicking wakers, huge timeouts, and guards dropped
//! from thread-local destructors. Each failed on the code before its fix.

use std::cell::RefCell;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Wake, Waker};
use std::time::Duration;

use super::lock_set::Plan;
use super::node::MAX_SHARED_HOLDERS;
use super::tests::waker;
use super::{LockError, LockSet, Mode, OwnedPathGuard, PathLock, PathLockStats};
use crate::test_support::panic_message;

fn root() -> Vec<&'static str> {
    Vec::new()
}

/// Nothing is held or waiting, and no stray count or flag is left anywhere
/// on the path to `path`: a write of the whole tree and of `path` succeed.
fn assert_clean(lock: &PathLock, path: &[&str]) {
    assert_eq!(lock.stats(), PathLockStats::default());
    assert!(
        lock.try_write(path).is_some(),
        "a count or flag leaked on {path:?}"
    );
    assert!(
        lock.try_write(root()).is_some(),
        "a count or flag leaked on the root"
    );
}

/// Item 9: the read that finds a path's S count full panicked after taking
/// intention counts on the path's ancestors, which then leaked: the root
/// stayed locked against writers forever.
#[test]
fn a_read_that_finds_the_shared_count_full_undoes_its_ancestors() {
    let lock = PathLock::new();
    let plan = Plan::single(Mode::Read, ["a", "b"]);
    let (key, _) = plan.nodes().last().unwrap();
    lock.with_node(key, |node| node.set_shared_count(MAX_SHARED_HOLDERS));
    let msg = panic_message(catch_unwind(AssertUnwindSafe(|| lock.read(["a", "b"]))));
    assert!(msg.contains("already read one path"), "{msg}");
    lock.with_node(key, |node| node.set_shared_count(0));
    assert_clean(&lock, &["a", "b"]);
}

fn poll<F: Future>(future: &mut Pin<Box<F>>, waker: &Waker) -> Poll<F::Output> {
    future.as_mut().poll(&mut Context::from_waker(waker))
}

struct PanicOnWake;

impl Wake for PanicOnWake {
    fn wake(self: Arc<Self>) {
        panic!("wake panicked");
    }
}

/// A waker whose `clone` panics.
fn panic_on_clone() -> Waker {
    fn clone(_: *const ()) -> RawWaker {
        panic!("clone panicked")
    }
    fn noop(_: *const ()) {}
    static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, noop, noop, noop);
    // SAFETY: every function of the vtable ignores the (null) data pointer,
    // so the waker's contract holds trivially.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}

/// Item 10: a panicking `Waker::wake` used to stop the wake-ups of the
/// other waiters granted by the same release, stranding them.
#[test]
fn a_panicking_wake_does_not_strand_other_granted_waiters() {
    let lock = PathLock::new();
    let held = lock.write(["a"]);
    let bad = Waker::from(Arc::new(PanicOnWake));
    let (count, good) = waker();
    let mut first = Box::pin(lock.read_async(["a"]));
    let mut second = Box::pin(lock.read_async(["a", "b"]));
    assert!(poll(&mut first, &bad).is_pending());
    assert!(poll(&mut second, &good).is_pending());
    let msg = panic_message(catch_unwind(AssertUnwindSafe(|| drop(held))));
    assert!(msg.contains("wake panicked"), "{msg}");
    assert_eq!(
        count.0.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "never woken"
    );
    assert!(matches!(poll(&mut second, &good), Poll::Ready(_)));
    assert!(matches!(poll(&mut first, &good), Poll::Ready(_)));
    drop((first, second));
    assert_clean(&lock, &["a"]);
}

/// Item 10: a panicking `Waker::clone` on the slow path used to leave the
/// request's waiting flags and counts behind, so later requests on the path
/// were refused (try) or forced through the slow path.
#[test]
fn a_panicking_waker_clone_leaves_no_waiting_flags() {
    let lock = PathLock::new();
    let held = lock.write(["a"]);
    let mut queued = Box::pin(lock.read_async(["a", "b"]));
    assert!(catch_unwind(AssertUnwindSafe(|| poll(&mut queued, &panic_on_clone()))).is_err());
    drop(queued);
    // A queued request whose later poll panics in `clone` is withdrawn
    // cleanly (a future that panicked is not polled again).
    let (_, good) = waker();
    let mut later = Box::pin(lock.read_async(["a"]));
    assert!(poll(&mut later, &good).is_pending());
    assert!(catch_unwind(AssertUnwindSafe(|| poll(&mut later, &panic_on_clone()))).is_err());
    drop(later);
    assert_eq!(lock.stats().waiting, 0);
    drop(held);
    assert_clean(&lock, &["a"]);
}

/// Item 11: `Duration::MAX` overflowed the deadline and panicked.
#[test]
fn a_huge_timeout_means_no_deadline() {
    let lock = Arc::new(PathLock::new());
    let set = LockSet::new().write(["a"]);
    let guard = lock.lock_timeout(&set, Duration::MAX).expect("uncontended");
    let waiter = {
        let (lock, set) = (lock.clone(), set.clone());
        std::thread::spawn(move || lock.lock_timeout(&set, Duration::MAX).map(|g| g.id()))
    };
    std::thread::sleep(Duration::from_millis(20));
    let first = guard.id();
    drop(guard);
    assert!(waiter.join().unwrap().unwrap() > first);
}

/// Item 7 (documented, not detected): a thread blocking on a request that
/// conflicts with its own guard waits; the try and timeout forms return.
#[test]
fn a_conflicting_request_from_the_holder_returns_in_its_try_and_timeout_forms() {
    let lock = PathLock::new();
    let _held = lock.write(["a"]);
    let set = LockSet::new().read(["a", "b"]);
    assert_eq!(lock.try_lock(&set).err(), Some(LockError::WouldBlock));
    let timed = lock.lock_timeout(&set, Duration::from_millis(10));
    assert_eq!(timed.err(), Some(LockError::Timeout));
    assert_eq!(lock.stats().waiting, 0);
}

thread_local! {
    static PARKED: RefCell<Option<OwnedPathGuard>> = const { RefCell::new(None) };
}

/// Item 3: an owned guard parked in a thread-local is released from that
/// thread-local's destructor; the release used a destroyed thread-local and
/// aborted the process.
#[test]
fn an_owned_guard_in_a_thread_local_is_released_at_thread_exit() {
    let lock = Arc::new(PathLock::new());
    let set = LockSet::new().write(["jobs", "7"]).read(["config"]);
    {
        let lock = lock.clone();
        std::thread::spawn(move || {
            PARKED.with(|_| {}); // first: destroyed after the crate's own
            let guard = lock.lock_owned(&set).unwrap();
            PARKED.with(|p| *p.borrow_mut() = Some(guard));
        })
        .join()
        .unwrap();
    }
    assert_clean(&lock, &["jobs", "7"]);
}
