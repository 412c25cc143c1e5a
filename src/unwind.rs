//! Running user code over many items when any of it may panic.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

/// Calls `f` on every item even if some calls panic, then resumes the first
/// panic (unless this thread is already unwinding, where a second panic
/// would abort). Used where stopping early would strand the rest: entries
/// never dropped, waiters never woken.
pub(crate) fn each_then_resume<T>(items: impl IntoIterator<Item = T>, mut f: impl FnMut(T)) {
    let mut first_panic = None;
    for item in items {
        if let Err(payload) = catch_unwind(AssertUnwindSafe(|| f(item))) {
            first_panic.get_or_insert(payload);
        }
    }
    if let Some(payload) = first_panic {
        if !std::thread::panicking() {
            resume_unwind(payload);
        }
    }
}
