//! The guards of granted requests: dropping one releases its request.

use std::fmt;
use std::sync::Arc;

use super::{Held, PathLock};

/// A granted request on a borrowed [`PathLock`]; dropping it releases.
#[must_use = "the request is released as soon as the guard is dropped"]
pub struct PathGuard<'a> {
    pub(super) lock: &'a PathLock,
    pub(super) held: Held,
}

impl PathGuard<'_> {
    /// The request's fencing id: unique within its lock, greater than the id
    /// of every conflicting request granted before it, and greater than every
    /// id the obtaining thread got before (a queued request obtains its id
    /// when the thread picks up the grant: a blocking call's return, an
    /// async form's completing poll). Ids of requests that do not conflict
    /// are not ordered across threads: there is no global counter.
    pub fn id(&self) -> u64 {
        self.held.id
    }
}

impl Drop for PathGuard<'_> {
    fn drop(&mut self) {
        self.lock.release(&self.held);
    }
}

impl fmt::Debug for PathGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PathGuard")
            .field("id", &self.held.id)
            .finish()
    }
}

/// A granted request owning a handle to its [`PathLock`] (`'static`);
/// dropping it releases.
#[must_use = "the request is released as soon as the guard is dropped"]
pub struct OwnedPathGuard {
    pub(super) lock: Arc<PathLock>,
    pub(super) held: Held,
}

impl OwnedPathGuard {
    /// The request's fencing id; see [`PathGuard::id`].
    pub fn id(&self) -> u64 {
        self.held.id
    }
}

impl Drop for OwnedPathGuard {
    fn drop(&mut self) {
        self.lock.release(&self.held);
    }
}

impl fmt::Debug for OwnedPathGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPathGuard")
            .field("id", &self.held.id)
            .finish()
    }
}
