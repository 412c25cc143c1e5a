//! The slow path's state, guarded by the lock's one mutex: waiting requests
//! in id order, and which of them wait in each mode on each node (whose
//! empty ↔ non-empty changes set and clear the nodes' waiting flags). That
//! index lets a grant pass look only at the waiters a change can affect,
//! and decide "does an earlier waiter conflict?" per node, not per pair of
//! requests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::{Deref, DerefMut};
use std::task::Waker;
use std::time::Duration;

use crate::sync::{lock, Condvar, Mutex, MutexGuard};

use super::node::NodeMode;
use super::Nodes;

pub(crate) enum Status {
    /// Waiting; `waker` is the async waiter's (blocking ones use the condvar).
    Waiting { waker: Option<Waker> },
    /// Its modes were moved from waiting flags to held counts; its checks
    /// read stamps up to `floor`. The owner has not picked the guard up yet
    /// (which issues its id).
    Granted { floor: u64 },
}

pub(crate) struct Waiter {
    pub(crate) nodes: Nodes,
    /// The requesting thread's last fencing id when it queued: the grant's
    /// id exceeds it.
    pub(crate) floor: u64,
    pub(crate) status: Status,
}

#[derive(Default)]
pub(crate) struct Queue {
    /// By queue sequence number: the order of the grant rule.
    pub(crate) waiters: BTreeMap<u64, Waiter>,
    next_seq: u64,
    /// Per node (by address): the waiters (by sequence number) per
    /// component mode (IS, IX, S, X). A node with waiters is in use, so it
    /// is not unlinked and its address not reused.
    waiting_at: HashMap<usize, [BTreeSet<u64>; 4]>,
    /// Wakers of waiters granted under the current lock; woken once it is
    /// released (see [`QueueGuard`]).
    pub(crate) to_wake: Vec<Waker>,
    /// Wakers replaced or withdrawn under the current lock; dropped once it
    /// is released, since a waker's drop may run a task's destructor, which
    /// may lock this queue again (an `OwnedPathGuard` or a lock future).
    pub(crate) to_drop: Vec<Waker>,
}

/// The locked queue. On drop it releases the lock and only then wakes the
/// async waiters that were granted meanwhile, and drops the wakers replaced
/// or withdrawn: a waker may poll its future on the spot, and dropping one
/// may drop its task, either of which locks the queue again.
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
        if !self.to_wake.is_empty() || !self.to_drop.is_empty() {
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
            let unused = std::mem::take(&mut guard.to_drop);
            drop(guard);
            drop(unused);
            // Every one, even if one panics: a granted waiter that is never
            // woken would wait forever.
            crate::unwind::each_then_resume(wakers, Waker::wake);
        }
    }
}

impl Queue {
    /// The next queue sequence number.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    /// Records waiter `seq` as waiting on `nodes`; returns, per node, the
    /// waiting flags that just became set (to be set on the node).
    pub(crate) fn count_in(&mut self, nodes: &Nodes, seq: u64) -> Vec<u64> {
        nodes
            .iter()
            .map(|taken| {
                let sets = self.waiting_at.entry(taken.node().addr()).or_default();
                taken
                    .mode()
                    .component_indices()
                    .filter(|&c| {
                        sets[c].insert(seq);
                        sets[c].len() == 1
                    })
                    .map(NodeMode::flag_of)
                    .sum()
            })
            .collect()
    }

    /// Removes waiter `seq` from `nodes` and clears the flags no other
    /// waiter needs.
    pub(crate) fn count_out(&mut self, nodes: &Nodes, seq: u64) {
        for taken in nodes.iter() {
            let node = taken.node();
            let sets = self.waiting_at.get_mut(&node.addr()).expect("counted in");
            let cleared: u64 = taken
                .mode()
                .component_indices()
                .filter(|&c| {
                    sets[c].remove(&seq);
                    sets[c].is_empty()
                })
                .map(NodeMode::flag_of)
                .sum();
            if sets.iter().all(BTreeSet::is_empty) {
                self.waiting_at.remove(&node.addr());
            }
            if cleared != 0 {
                // SAFETY: the node carries this waiter's flags until this very
                // call, so it is in use and has not been unlinked.
                unsafe { node.get() }.clear_flags(cleared);
            }
        }
    }

    /// The waiters on `node` in a component that `mode` conflicts with.
    fn conflicting_at(&self, taken: &super::Taken) -> impl Iterator<Item = &BTreeSet<u64>> {
        let against = taken.mode().conflicting();
        self.waiting_at
            .get(&taken.node().addr())
            .into_iter()
            .flat_map(move |sets| {
                (0..4)
                    .filter(move |c| against & (1 << c) != 0)
                    .map(move |c| &sets[c])
            })
    }

    /// Whether a waiter before `seq` conflicts with a request of `nodes`.
    pub(crate) fn earlier_conflict(&self, nodes: &Nodes, seq: u64) -> bool {
        nodes.iter().any(|taken| {
            self.conflicting_at(taken)
                .any(|set| set.range(..seq).next().is_some())
        })
    }

    /// The waiters after `after` that conflict with a request of `nodes`:
    /// the only ones its release or withdrawal can let through.
    pub(crate) fn conflicting_waiters(&self, nodes: &[super::Taken], after: u64) -> BTreeSet<u64> {
        let mut found = BTreeSet::new();
        for taken in nodes {
            for set in self.conflicting_at(taken) {
                found.extend(set.range(after + 1..));
            }
        }
        found
    }

    pub(crate) fn waiting(&self) -> usize {
        self.waiters
            .values()
            .filter(|w| matches!(w.status, Status::Waiting { .. }))
            .count()
    }
}
