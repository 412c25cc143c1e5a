//! Helpers shared by the unit tests.

use std::any::Any;
use std::cell::RefCell;
use std::sync::{mpsc, Mutex};
use std::time::Duration;

/// The message of a panic that `result` must hold.
pub(crate) fn panic_message<T>(result: std::thread::Result<T>) -> String {
    let Err(payload) = result else {
        panic!("expected a panic")
    };
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Runs `f` on a thread and fails if it has not finished within a generous
/// bound: a liveness check (a deadlock never finishes), not a speed claim.
pub(crate) fn finishes<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || tx.send(f()).unwrap());
    rx.recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what}: deadlocked"))
}

/// Runs its closure from a thread-local destructor.
struct OnExit(RefCell<Option<Box<dyn FnOnce()>>>);

impl Drop for OnExit {
    fn drop(&mut self) {
        if let Some(f) = self.0.borrow_mut().take() {
            f();
        }
    }
}

thread_local! {
    static ON_EXIT: OnExit = const { OnExit(RefCell::new(None)) };
}

/// Runs `f` while this thread exits, from a thread-local destructor.
/// Thread-locals are destroyed in reverse order of first use: called before
/// the thread first locks anything, `f` runs after the crate's own
/// thread-local teardown.
pub(crate) fn at_thread_exit(f: impl FnOnce() + 'static) {
    ON_EXIT.with(|slot| *slot.0.borrow_mut() = Some(Box::new(f)));
}

/// Leaks `value` for a `'static` borrow (tests of thread exit need one).
/// The borrow is also kept in a static, so miri's leak check counts it as
/// reachable rather than lost.
pub(crate) fn leak<T: Send + Sync + 'static>(value: T) -> &'static T {
    leak_box(Box::new(value))
}

/// [`leak`] for a value already boxed (its address stays put).
pub(crate) fn leak_box<T: Send + Sync + 'static>(value: Box<T>) -> &'static T {
    static KEPT: Mutex<Vec<&'static (dyn Any + Send + Sync)>> = Mutex::new(Vec::new());
    let leaked: &'static T = Box::leak(value);
    KEPT.lock().unwrap_or_else(|p| p.into_inner()).push(leaked);
    leaked
}
