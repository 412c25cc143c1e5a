//! The slow path's state, guarded by the lock's one mutex: waiting requests
//! in id order, and how many of them wait in each mode on each node (whose
//! 0 ↔ non-zero changes set and clear the nodes' waiting flags).

use std::collections::{BTreeMap, HashMap};
use std::ops::{Deref, DerefMut};
use std::task::Waker;
use std::time::Duration;

use crate::sync::{lock, Condvar, Mutex, MutexGuard};

use super::lock_set::Plan;
use super::node::NodeMode;
use super::NodePtr;

pub(crate) enum Status {
    /// Waiting; `waker` is the async waiter's (blocking ones use the condvar).
    Waiting { waker: Option<Waker> },
    /// Its modes were moved from waiting flags to held counts; the owner has
    /// not picked the guard up yet.
    Granted,
}

pub(crate) struct Waiter {
    pub(crate) plan: Plan,
    pub(crate) nodes: Vec<(NodePtr, NodeMode)>,
    pub(crate) status: Status,
}

#[derive(Default)]
pub(crate) struct Queue {
    pub(crate) waiters: BTreeMap<u64, Waiter>,
    /// Per node key: waiters per component mode (IS, IX, S, X).
    pub(crate) counts: HashMap<String, [u32; 4]>,
    /// Wakers of waiters granted under the current lock; woken once it is
    /// released (see [`QueueGuard`]).
    pub(crate) to_wake: Vec<Waker>,
}

/// The locked queue. On drop it releases the lock and only then wakes the
/// async waiters that were granted meanwhile: a waker may poll its future
/// on the spot, which locks the queue again.
pub(crate) struct QueueGuard<'a>(Option<MutexGuard<'a, Queue>>);

impl<'a> QueueGuard<'a> {
    pub(crate) fn new(queue: &'a Mutex<Queue>) -> Self {
        QueueGuard(Some(lock(queue)))
    }

    /// Waits on `condvar` (up to `timeout`), after waking anyone pending.
    pub(crate) fn wait(
        mut self,
        queue: &'a Mutex<Queue>,
        condvar: &Condvar,
        timeout: Option<Duration>,
    ) -> Self {
        if !self.to_wake.is_empty() {
            drop(self); // wakes them; our own state is rechecked by the caller
            return QueueGuard::new(queue);
        }
        let guard = self.0.take().expect("held until drop");
        let guard = match timeout {
            None => condvar.wait(guard).unwrap_or_else(|p| p.into_inner()),
            Some(t) => {
                condvar
                    .wait_timeout(guard, t)
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
        };
        QueueGuard(Some(guard))
    }
}

impl Deref for QueueGuard<'_> {
    type Target = Queue;
    fn deref(&self) -> &Queue {
        self.0.as_ref().expect("held until drop")
    }
}

impl DerefMut for QueueGuard<'_> {
    fn deref_mut(&mut self) -> &mut Queue {
        self.0.as_mut().expect("held until drop")
    }
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        if let Some(mut guard) = self.0.take() {
            let wakers = std::mem::take(&mut guard.to_wake);
            drop(guard);
            // Every one, even if one panics: a granted waiter that is never
            // woken would wait forever.
            crate::unwind::each_then_resume(wakers, Waker::wake);
        }
    }
}

impl Queue {
    /// Counts `plan` as waiting; returns, per node, the waiting flags that
    /// just became set (to be set on the node).
    pub(crate) fn count_in(&mut self, plan: &Plan) -> Vec<u64> {
        plan.nodes()
            .map(|(key, mode)| {
                let counts = self.counts.entry(key.to_owned()).or_default();
                mode.component_indices()
                    .filter(|&c| {
                        counts[c] += 1;
                        counts[c] == 1
                    })
                    .map(NodeMode::flag_of)
                    .sum()
            })
            .collect()
    }

    /// Counts `waiter` out and clears the node flags no other waiter needs.
    pub(crate) fn count_out(&mut self, plan: &Plan, nodes: &[(NodePtr, NodeMode)]) {
        for ((key, mode), (node, _)) in plan.nodes().zip(nodes) {
            let counts = self.counts.get_mut(key).expect("counted in");
            let cleared: u64 = mode
                .component_indices()
                .filter(|&c| {
                    counts[c] -= 1;
                    counts[c] == 0
                })
                .map(NodeMode::flag_of)
                .sum();
            if counts.iter().all(|&n| n == 0) {
                self.counts.remove(key);
            }
            if cleared != 0 {
                // SAFETY: the node carries this waiter's flags until this very
                // call, so it is not idle and has not been swept.
                unsafe { node.get() }.clear_flags(cleared);
            }
        }
    }

    /// Whether a request waiting before `id` conflicts with `plan`.
    pub(crate) fn earlier_conflict(&self, id: u64, plan: &Plan) -> bool {
        self.waiters
            .range(..id)
            .any(|(_, w)| matches!(w.status, Status::Waiting { .. }) && w.plan.conflicts(plan))
    }

    pub(crate) fn waiting(&self) -> usize {
        self.waiters
            .values()
            .filter(|w| matches!(w.status, Status::Waiting { .. }))
            .count()
    }
}
