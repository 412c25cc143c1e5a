//! The future behind every async lock form: a request whose place in line
//! is fixed at its first poll, and which withdraws itself if dropped early.

use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::lock_set::Plan;
use super::queue::{Status, Waiter};
use super::{Attempt, Held, LockError, PathLock};

/// A future for one request; withdraws it if dropped before completion.
pub(crate) struct LockFuture<L: Deref<Target = PathLock>> {
    pub(crate) lock: L,
    plan: Option<Plan>,
    /// The queue sequence number once queued.
    queued: Option<u64>,
}

impl<L: Deref<Target = PathLock>> LockFuture<L> {
    pub(crate) fn new(lock: L, plan: Plan) -> Self {
        LockFuture {
            lock,
            plan: Some(plan),
            queued: None,
        }
    }
}

impl<L: Deref<Target = PathLock> + Unpin> Future for LockFuture<L> {
    type Output = Result<Held, LockError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(id) = this.queued {
            // Cloned before locking: a waker's clone is user code.
            let mut fresh = Some(cx.waker().clone());
            let mut queue = this.lock.lock_queue();
            if let Some(held) = this.lock.take_granted(&mut queue, id) {
                drop(queue);
                this.queued = None;
                return Poll::Ready(Ok(held));
            }
            if let Some(Waiter {
                status: Status::Waiting { waker },
                ..
            }) = queue.waiters.get_mut(&id)
            {
                match waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    // The old one, now in `fresh`, is dropped after the
                    // queue is unlocked (it was declared first).
                    _ => std::mem::swap(waker, &mut fresh),
                }
            }
            return Poll::Pending;
        }
        let Some(plan) = this.plan.take() else {
            panic!("LockFuture polled after completion");
        };
        if plan.is_empty() {
            return Poll::Ready(Err(LockError::EmptySet));
        }
        match this.lock.attempt(plan, Some(cx.waker())) {
            Attempt::Held(held) => Poll::Ready(Ok(held)),
            Attempt::Queued(id, queue) => {
                drop(queue);
                this.queued = Some(id);
                Poll::Pending
            }
        }
    }
}

impl<L: Deref<Target = PathLock>> Drop for LockFuture<L> {
    fn drop(&mut self) {
        if let Some(id) = self.queued.take() {
            let mut queue = self.lock.lock_queue();
            self.lock.cancel(&mut queue, id);
        }
    }
}
