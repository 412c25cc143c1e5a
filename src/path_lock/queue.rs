//! The slow path's state, guarded by the lock's one mutex: waiting requests
//! in id order, and how many of them wait in each mode on each node (whose
//! 0 ↔ non-zero changes set and clear the nodes' waiting flags).

use std::collections::{BTreeMap, HashMap};
use std::task::Waker;

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
