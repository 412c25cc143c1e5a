//! [`Watch`]: a read-mostly value with change notification.
//!
//! # Protocol
//! The value lives in an [`arc_swap::ArcSwap`]; readers load it without a
//! lock. Notification rests on one word, `state`:
//!
//! | bits      | meaning                                                     |
//! |-----------|-------------------------------------------------------------|
//! | 0         | `WAITERS`: some subscriber has a waker registered           |
//! | 1         | `CLOSED`: the `Watch` was dropped                           |
//! | 2..64     | the version: the number of stores so far                    |
//!
//! * **store**: swap in a new entry `(version + 1, value)` by read-copy-update
//!   (a CAS on the current entry), then `state.fetch_add(VERSION, AcqRel)`.
//!   The word's version counts finished bumps; it catches up with the
//!   newest entry's version once every store has bumped.
//!   If the old state had `WAITERS`, lock the waker list, take every waker,
//!   clear `WAITERS` (under that lock), unlock, and wake them.
//! * **wait** (a subscriber that has seen version `v`): lock the waker list,
//!   put its waker in, `state.fetch_or(WAITERS, AcqRel)`, unlock. If the
//!   returned version exceeds `v` (or `CLOSED` is set), it does not sleep:
//!   it loads the current entry and marks *its* version seen, so it never
//!   returns one value twice, and a later store (whose bump exceeds that
//!   version) is never mistaken for seen.
//! * **drop** of the `Watch`: `fetch_or(CLOSED)`, then wake as a store does.
//!
//! # Orderings
//! Both sides are read-modify-writes of the one word, so they are totally
//! ordered: either the store's `fetch_add` comes later and reads `WAITERS`
//! (so it wakes the waiter), or the waiter's `fetch_or` comes later and reads
//! the new version (so it does not sleep). No wake-up is lost and no fence is
//! needed. `WAITERS` is only cleared under the list's lock, after taking the
//! list, so a waker registered after that finds the bit clear and sets it
//! again. A reader that reads a version (Acquire) sees at least the value
//! stored before it (the `fetch_add` is Release, after the swap). A store
//! with nobody waiting pays exactly its `fetch_add` for notification.
//!
//! loom checks this with `loom-tests/tests/watch.rs` (a store racing
//! `changed`, and a drop racing it). arc-swap is not loom-aware, so under
//! loom the value lives in a loom mutex instead: the protocol is the word.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use crate::sync::{lock, AtomicU64, Mutex, Ordering::AcqRel, Ordering::Acquire};

const WAITERS: u64 = 1;
const CLOSED: u64 = 2;
const VERSION: u64 = 4;

/// The [`Watch`] was dropped, and the subscriber has seen its last value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Closed;

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the watched value's owner is gone")
    }
}

impl std::error::Error for Closed {}

/// A value many threads read and any of them can wait to see change.
///
/// Reads take no lock: [`load`](Self::load) returns the current value as an
/// `Arc` (its reference count is the one shared write), and
/// [`borrow`](Self::borrow) lends it without even that. Writers replace the
/// value whole ([`store`](Self::store)) or by read-copy-update
/// ([`update`](Self::update)). A [`Subscriber`] waits for the next change,
/// asynchronously (with `Waker`s, on any runtime) or blocking. Like tokio's
/// `watch`, a subscriber sees the *latest* value, not every intermediate one.
///
/// ```
/// use shardlock::Watch;
///
/// let speed = Watch::new(40);
/// let mut dashboard = speed.subscribe();
/// speed.store(41);
/// assert_eq!(*dashboard.try_changed().unwrap().unwrap(), 41);
/// assert_eq!(dashboard.try_changed(), Ok(None)); // seen already
/// speed.update(|s| s + 1);
/// assert_eq!((*speed.load(), speed.version()), (42, 2));
/// ```
pub struct Watch<T> {
    shared: Arc<Shared<T>>,
}

struct Shared<T> {
    value: Value<T>,
    state: AtomicU64,
    /// Registered wakers by subscriber id: a subscriber that polls again
    /// replaces its own.
    wakers: Mutex<Wakers>,
}

#[derive(Default)]
struct Wakers {
    by_id: HashMap<u64, Waker>,
    next_id: u64,
}

/// A value with its version: the number of stores that led to it. Entries
/// replace each other by read-copy-update, so versions follow the order of
/// the swaps, and a subscriber marks exactly the version it returns as seen.
struct Entry<T> {
    version: u64,
    value: Arc<T>,
}

/// The value cell: `ArcSwap`, or under loom a loom mutex (see the module
/// docs).
#[cfg(not(loom))]
struct Value<T>(arc_swap::ArcSwap<Entry<T>>);

#[cfg(not(loom))]
impl<T> Value<T> {
    fn new(value: T) -> Self {
        Value(arc_swap::ArcSwap::from_pointee(Entry {
            version: 0,
            value: Arc::new(value),
        }))
    }
    #[inline]
    fn load(&self) -> Arc<T> {
        self.0.load().value.clone()
    }
    #[inline]
    fn entry(&self) -> (u64, Arc<T>) {
        let entry = self.0.load();
        (entry.version, entry.value.clone())
    }
    #[inline]
    fn borrow(&self) -> Ref<T> {
        Ref(self.0.load())
    }
    /// Swaps in `f(current)`; returns the entry it replaced, for the caller
    /// to drop after notifying (its `Drop` may panic).
    fn update(&self, mut f: impl FnMut(&T) -> Arc<T>) -> Arc<Entry<T>> {
        self.0.rcu(|current| Entry {
            version: current.version + 1,
            value: f(&current.value),
        })
    }
    /// Swaps in `f(current)` if it is `Some`, retrying on a concurrent
    /// swap; returns the replaced entry, or `None` if `f` declined.
    fn update_if(&self, mut f: impl FnMut(&T) -> Option<Arc<T>>) -> Option<Arc<Entry<T>>> {
        let mut current = self.0.load_full();
        loop {
            let next = Arc::new(Entry {
                version: current.version + 1,
                value: f(&current.value)?,
            });
            let seen = self.0.compare_and_swap(&current, next);
            if Arc::ptr_eq(&seen, &current) {
                return Some(current);
            }
            current = arc_swap::Guard::into_inner(seen);
        }
    }
}

#[cfg(loom)]
struct Value<T>(Mutex<Arc<Entry<T>>>);

#[cfg(loom)]
impl<T> Value<T> {
    fn new(value: T) -> Self {
        Value(Mutex::new(Arc::new(Entry {
            version: 0,
            value: Arc::new(value),
        })))
    }
    fn load(&self) -> Arc<T> {
        lock(&self.0).value.clone()
    }
    fn entry(&self) -> (u64, Arc<T>) {
        let entry = lock(&self.0);
        (entry.version, entry.value.clone())
    }
    fn borrow(&self) -> Ref<T> {
        Ref(lock(&self.0).clone())
    }
    fn update(&self, mut f: impl FnMut(&T) -> Arc<T>) -> Arc<Entry<T>> {
        let mut entry = lock(&self.0);
        let next = Arc::new(Entry {
            version: entry.version + 1,
            value: f(&entry.value),
        });
        std::mem::replace(&mut *entry, next)
    }
    fn update_if(&self, mut f: impl FnMut(&T) -> Option<Arc<T>>) -> Option<Arc<Entry<T>>> {
        let mut entry = lock(&self.0);
        let next = Arc::new(Entry {
            version: entry.version + 1,
            value: f(&entry.value)?,
        });
        Some(std::mem::replace(&mut *entry, next))
    }
}

/// The value lent by [`Watch::borrow`]. Hold it briefly: while it lives, the
/// value it shows stays allocated even if replaced.
pub struct Ref<T>(
    #[cfg(not(loom))] arc_swap::Guard<Arc<Entry<T>>>,
    #[cfg(loom)] Arc<Entry<T>>,
);

impl<T> std::ops::Deref for Ref<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        &self.0.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Ref<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        T::fmt(self, f)
    }
}

impl<T> Watch<T> {
    /// A watch holding `value`, at version 0.
    pub fn new(value: T) -> Self {
        Watch {
            shared: Arc::new(Shared {
                value: Value::new(value),
                state: AtomicU64::new(0),
                wakers: Mutex::new(Wakers::default()),
            }),
        }
    }

    /// The current value. No lock; the returned `Arc`'s reference count is
    /// the only shared write.
    #[inline]
    pub fn load(&self) -> Arc<T> {
        self.shared.value.load()
    }

    /// The current value, lent without touching its reference count (arc-swap's
    /// guard). For short reads; use [`load`](Self::load) to keep it.
    #[inline]
    pub fn borrow(&self) -> Ref<T> {
        self.shared.value.borrow()
    }

    /// Replaces the value and notifies subscribers. The replaced value is
    /// dropped after the notification (if no reader still holds it), so a
    /// panicking `Drop` loses no notification.
    pub fn store(&self, value: T) {
        let value = Arc::new(value);
        let old = self.shared.value.update(|_| value.clone());
        self.shared.publish(VERSION);
        drop(old);
    }

    /// Replaces the value with `f(current)`, read-copy-update: if another
    /// store lands meanwhile, `f` runs again on the newer value. Notifies
    /// subscribers once.
    pub fn update(&self, mut f: impl FnMut(&T) -> T) {
        let old = self.shared.value.update(|current| Arc::new(f(current)));
        self.shared.publish(VERSION);
        drop(old);
    }

    /// Replaces the value, notifies subscribers, and returns the value it
    /// replaced (tokio's `send_replace`).
    pub fn send_replace(&self, value: T) -> Arc<T> {
        let value = Arc::new(value);
        let old = self.shared.value.update(|_| value.clone());
        self.shared.publish(VERSION);
        old.value.clone()
    }

    /// Changes a copy of the value with `f`; if `f` returns `true`, stores
    /// it and notifies subscribers, else changes nothing and notifies no one
    /// (tokio's `send_if_modified`). Read-copy-update: if another store
    /// lands meanwhile, `f` runs again on a copy of the newer value. Returns
    /// whether it stored.
    pub fn send_if_modified(&self, mut f: impl FnMut(&mut T) -> bool) -> bool
    where
        T: Clone,
    {
        let old = self.shared.value.update_if(|current| {
            let mut copy = current.clone();
            f(&mut copy).then(|| Arc::new(copy))
        });
        let Some(old) = old else {
            return false;
        };
        self.shared.publish(VERSION);
        drop(old);
        true
    }

    /// How many [`Subscriber`]s exist now.
    pub fn receiver_count(&self) -> usize {
        Arc::strong_count(&self.shared) - 1
    }

    /// The number of stores and updates so far.
    pub fn version(&self) -> u64 {
        self.shared.state.load(Acquire) / VERSION
    }

    /// A subscriber that has seen the current value.
    pub fn subscribe(&self) -> Subscriber<T> {
        Subscriber {
            seen: self.shared.value.entry().0,
            id: self.shared.next_id(),
            shared: self.shared.clone(),
        }
    }
}

impl<T> Shared<T> {
    /// Adds `delta` (a version step, or `CLOSED`) and wakes every waiter if
    /// there were any.
    fn publish(&self, delta: u64) {
        let before = if delta == CLOSED {
            self.state.fetch_or(CLOSED, AcqRel)
        } else {
            self.state.fetch_add(delta, AcqRel)
        };
        if before & WAITERS != 0 {
            self.wake_all();
        }
    }

    #[cold]
    fn wake_all(&self) {
        let wakers: Vec<Waker> = {
            let mut list = lock(&self.wakers);
            let wakers = list.by_id.drain().map(|(_, w)| w).collect();
            self.state.fetch_and(!WAITERS, AcqRel);
            wakers
        };
        crate::unwind::each_then_resume(wakers, Waker::wake);
    }

    fn next_id(&self) -> u64 {
        let mut list = lock(&self.wakers);
        list.next_id += 1;
        list.next_id
    }
}

impl<T> Drop for Watch<T> {
    fn drop(&mut self) {
        self.shared.publish(CLOSED);
    }
}

impl<T: Default> Default for Watch<T> {
    fn default() -> Self {
        Watch::new(T::default())
    }
}

impl<T: fmt::Debug> fmt::Debug for Watch<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch")
            .field("value", &*self.borrow())
            .field("version", &self.version())
            .finish()
    }
}

/// Waits for a [`Watch`] to change; see [`Watch::subscribe`].
pub struct Subscriber<T> {
    shared: Arc<Shared<T>>,
    /// The last version this subscriber returned (or saw when created).
    seen: u64,
    /// Its key in the waker list.
    id: u64,
}

impl<T> Subscriber<T> {
    /// The current value, without marking it seen (tokio's `borrow`, kept
    /// as an `Arc`).
    pub fn load(&self) -> Arc<T> {
        self.shared.value.load()
    }

    /// The current value lent briefly, without marking it seen (see
    /// [`Watch::borrow`]).
    pub fn borrow(&self) -> Ref<T> {
        self.shared.value.borrow()
    }

    /// Whether the value changed since this subscriber last looked, without
    /// marking it seen; `Err(Closed)` if not and it never will.
    pub fn has_changed(&self) -> Result<bool, Closed> {
        let state = self.shared.state.load(Acquire);
        if state / VERSION > self.seen {
            return Ok(true);
        }
        if state & CLOSED != 0 {
            return Err(Closed);
        }
        Ok(false)
    }

    /// Marks the current value seen, so [`changed`](Self::changed) waits
    /// for the next store.
    pub fn mark_unchanged(&mut self) {
        self.seen = self.seen.max(self.shared.value.entry().0);
    }

    /// Resolves with the first value, the current one included, for which
    /// `predicate` holds, marking it seen; `Closed` if the `Watch` is gone
    /// before one does (tokio's `wait_for`).
    pub async fn wait_for(
        &mut self,
        mut predicate: impl FnMut(&T) -> bool,
    ) -> Result<Arc<T>, Closed>
    where
        T: Send + Sync,
    {
        let (version, value) = self.shared.value.entry();
        self.seen = self.seen.max(version);
        if predicate(&value) {
            return Ok(value);
        }
        loop {
            let value = self.changed().await?;
            if predicate(&value) {
                return Ok(value);
            }
        }
    }

    /// The latest value if it changed since this subscriber last looked;
    /// `Ok(None)` if not; `Err(Closed)` if it did not and never will.
    pub fn try_changed(&mut self) -> Result<Option<Arc<T>>, Closed> {
        let state = self.shared.state.load(Acquire);
        self.outcome(state)
    }

    /// What `state` means for this subscriber, marking a change seen.
    fn outcome(&mut self, state: u64) -> Result<Option<Arc<T>>, Closed> {
        if state / VERSION > self.seen {
            // The entry read now is at least as new as the state's version
            // (the swap precedes the version's bump), and possibly newer.
            let (version, value) = self.shared.value.entry();
            self.seen = version;
            return Ok(Some(value));
        }
        if state & CLOSED != 0 {
            return Err(Closed);
        }
        Ok(None)
    }

    /// Resolves with the latest value once it changed since this subscriber
    /// last looked (at once if it has), or `Closed` once the `Watch` is gone
    /// with nothing unseen. Runtime-agnostic; dropping it unregisters.
    pub fn changed(&mut self) -> impl Future<Output = Result<Arc<T>, Closed>> + Send + '_
    where
        T: Send + Sync,
    {
        Changed { subscriber: self }
    }

    /// Blocks until [`changed`](Self::changed) would resolve.
    pub fn wait_changed(&mut self) -> Result<Arc<T>, Closed> {
        self.wait_until(None)
            .map(|value| value.expect("no deadline"))
    }

    /// [`wait_changed`](Self::wait_changed) for at most `timeout`:
    /// `Ok(None)` if nothing changed by then.
    pub fn wait_changed_timeout(&mut self, timeout: Duration) -> Result<Option<Arc<T>>, Closed> {
        self.wait_until(Instant::now().checked_add(timeout))
    }

    fn wait_until(&mut self, deadline: Option<Instant>) -> Result<Option<Arc<T>>, Closed> {
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        loop {
            if let Some(outcome) = self.register(&waker) {
                self.unregister();
                return outcome.map(Some);
            }
            match deadline {
                None => std::thread::park(),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.unregister();
                        return self.try_changed();
                    }
                    std::thread::park_timeout(left);
                }
            }
        }
    }

    /// The wait step: registers `waker`, then (`fetch_or`) reads the state.
    /// `Some` if there is something to return (and then the waker is taken
    /// back out before the list is unlocked), `None` if the caller should
    /// sleep.
    fn register(&mut self, waker: &Waker) -> Option<Result<Arc<T>, Closed>> {
        // Declared before the list's guard, so dropped after it: dropping a
        // waker may drop its task, whose `Subscriber` locks the list again.
        let (mut replaced, mut removed): (Option<Waker>, Option<Waker>) = (None, None);
        let state = {
            let mut list = lock(&self.shared.wakers);
            match list.by_id.get_mut(&self.id) {
                Some(w) if w.will_wake(waker) => {}
                Some(w) => replaced = Some(std::mem::replace(w, waker.clone())),
                None => {
                    list.by_id.insert(self.id, waker.clone());
                }
            }
            let state = self.shared.state.fetch_or(WAITERS, AcqRel);
            if state / VERSION > self.seen || state & CLOSED != 0 {
                removed = list.by_id.remove(&self.id);
            }
            state
        };
        drop((replaced, removed));
        match self.outcome(state) {
            Ok(Some(value)) => Some(Ok(value)),
            Ok(None) => None,
            Err(Closed) => Some(Err(Closed)),
        }
    }

    fn unregister(&self) {
        // The waker is dropped after the list is unlocked (see `register`).
        let waker = lock(&self.shared.wakers).by_id.remove(&self.id);
        drop(waker);
    }
}

impl<T> Clone for Subscriber<T> {
    /// Another subscriber that has seen what this one has.
    fn clone(&self) -> Self {
        Subscriber {
            shared: self.shared.clone(),
            seen: self.seen,
            id: self.shared.next_id(),
        }
    }
}

impl<T> Drop for Subscriber<T> {
    fn drop(&mut self) {
        self.unregister();
    }
}

impl<T> fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("seen", &self.seen)
            .finish_non_exhaustive()
    }
}

/// The future of [`Subscriber::changed`].
struct Changed<'a, T> {
    subscriber: &'a mut Subscriber<T>,
}

impl<T> Future for Changed<'_, T> {
    type Output = Result<Arc<T>, Closed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.subscriber.register(cx.waker()) {
            Some(outcome) => Poll::Ready(outcome),
            None => Poll::Pending,
        }
    }
}

impl<T> Drop for Changed<'_, T> {
    fn drop(&mut self) {
        self.subscriber.unregister();
    }
}

/// Wakes a thread blocked in `wait_changed`.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
