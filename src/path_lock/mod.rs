//! [`PathLock`]: hierarchical read/write locks on paths of string segments.
//!
//! # Model
//!
//! A request is a non-empty set of (mode, path) resources. Two requests
//! conflict iff some pair of their resources has one path a prefix of (or
//! equal to) the other and at least one `Write`. **Grant rule:** a request is
//! granted as soon as it conflicts neither with a held request nor with an
//! *earlier* waiting one, earlier meaning a smaller id. Ids come from one
//! counter, so they are strictly increasing in request order.
//!
//! # The lock tree
//!
//! Paths map onto multi-granularity locking: `Read(p)` takes IS on every
//! proper prefix of `p` and S on `p`, `Write(p)` IX and X; a request touching a
//! node twice takes the join (S ⊔ IX = SIX). Requests conflict exactly when,
//! on some node, their modes are incompatible. A node ([`node`]) has:
//!
//! | where                         | what                                                |
//! |-------------------------------|-----------------------------------------------------|
//! | `shared: AtomicU64`, bits 0..20 | count of S holders (SIX counts here and in IX)     |
//! | bit 20                        | X held                                              |
//! | bits 21..25                   | waiting flags: some queued request wants IS/IX/S/X  |
//! | `rows[t]: [AtomicU64; 2]`     | IS and IX counts added by thread row `t` (wrapping)  |
//!
//! The weak modes IS and IX are what every request takes on every ancestor,
//! so they are counted per thread row (one padded line each) on the nodes
//! within [`node::DISTRIBUTED_DEPTH`] of the root; deeper nodes have one row.
//! A weak acquire stores to its own row, fences, and checks the shared word
//! (X held, S held for IX, and conflicting waiting flags); a strong acquire
//! CASes the shared word, fences, and sums the rows. Of two fences one is
//! first in the SeqCst order, so of two conflicting acquirers one sees the
//! other and backs out (as in [`crate::raw_rwlock`]).
//!
//! A node exists in the tree's table while it is held, waited on or idle in
//! the bounded idle cache (swept when a creation finds 8192 nodes, or twice
//! as many as the last sweep left, whichever is more); the root is a field.
//! Sweeps run under the table's shard write locks, and every acquire and
//! release of a node runs under its shard read lock, so a node is only
//! removed when idle and never while a release that made it idle still
//! touches it.
//!
//! # Transitions
//!
//! * **Fast path (no global lock).** For each node of the request in order,
//!   take its mode (above) unless a conflicting mode is *held or flagged
//!   waiting*.
//!   On failure, undo and take the slow path (or fail a `try_lock`). When all
//!   nodes are in, take the id (`fetch_add`), then re-read every node's
//!   flags. A conflicting flag means a waiter appeared meanwhile: under the
//!   mutex, if a waiter with a smaller id conflicts, back out and queue with
//!   the id already taken; otherwise the request stands.
//! * **Slow path (the mutex).** Count the request in per node and mode, set
//!   the flags that became non-zero, *then* take the id (unless it has one),
//!   insert it into the queue and run a grant pass.
//! * **Grant pass (the mutex).** In id order, a waiter that conflicts with no
//!   earlier still-waiting one is granted if every node admits its mode
//!   against the *held* counts (CAS, rolled back if one refuses): its counts
//!   move from flags to held, it is marked granted and woken.
//! * **Release.** Take each node's counts back out, fence, and read its
//!   flags. If any node had a flag set, run a grant pass, so whatever became
//!   grantable is granted inside the release (hand-off: a newcomer then sees
//!   it held and cannot barge in).
//! * **Cancellation** (failed `try_lock`, timeout, dropped future): under the
//!   mutex, remove the waiter and its flags (or release it if it was granted
//!   meanwhile), then run a grant pass for whatever waited only behind it.
//!
//! # Why FIFO and hand-off hold (orderings)
//!
//! Every node access, the flag re-read and the id `fetch_add` are SeqCst
//! (and each acquire fences after its own update), so all of them fall in
//! one total order S. Let N be a fast-path request and W a waiter that
//! conflict; they meet at some node c with incompatible modes.
//! * If W's flag on c precedes N's check of c, N sees it: N queues.
//! * Otherwise N's count on c precedes W's flag. If W's id is smaller, then
//!   W's flag precedes W's id precedes N's id precedes N's re-read of c, so
//!   the re-read sees the flag and N backs out behind W. If N's id is
//!   smaller, then N's count precedes W's id precedes W's grant check, which
//!   sees N's count: W waits for N, which is earlier. Either way no request
//!   passes an earlier conflicting one.
//!
//! For hand-off, a waiter sets its flags before its grant check, and a
//! release takes its counts out, fences, then reads the flags: of the two,
//! one comes first, so either the waiter's check sees the counts gone or the
//! release sees the flag and runs a grant pass. The transient counts of a
//! fast-path attempt that backs out can make another attempt fail or wait
//! for that instant; a backed-out attempt that saw a flag runs a grant pass
//! too, so no waiter is stranded by one. The SeqCst accesses (which include
//! Release and Acquire) order the critical sections of conflicting requests.
//!
//! # Model checking
//!
//! `loom-tests/tests/path_lock.rs`: reader vs writer on parent/child, two
//! writers on siblings, a pending writer vs a new reader (FIFO), cancellation
//! racing a release, and hand-off to a waiting set.

mod future;
mod guard;
mod lock_set;
mod node;
mod queue;

use std::fmt;
use std::future::Future;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

pub use guard::{OwnedPathGuard, PathGuard};
pub use lock_set::LockSet;
pub use node::Mode;

use crate::sync::{AtomicU64, AtomicUsize, Condvar, Mutex, Ordering::SeqCst};
use crate::{RouterTable, ShardedRwLock};
use future::LockFuture;
use lock_set::{depth, Plan};
use node::{Node, NodeMode, MAX_SHARED_HOLDERS};
use queue::{Queue, QueueGuard, Status, Waiter};

/// Nodes (idle ones included) the tree may have before a sweep removes the
/// idle ones. Deep nodes take ~200 bytes, so the idle cache stays under a
/// few MiB. Under loom, 1: every node creation sweeps, so the models also
/// explore sweeps racing acquires and releases.
const IDLE_NODES: usize = if cfg!(loom) { 1 } else { 8192 };

/// Nodes (besides the root) that may have one intention row per thread at
/// once; further shallow nodes get one shared row. A wide node's rows take
/// `(rows + 1) × 128` bytes, 8,320 on a 64-core host, so this bounds the
/// wide rows of one lock at about 2.1 MB there.
const WIDE_NODES: usize = 256;

/// Why a lock request was not granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockError {
    /// The [`LockSet`] had no resources.
    EmptySet,
    /// `try_lock`: a held or earlier waiting request conflicts.
    WouldBlock,
    /// `lock_timeout`: not granted in time (the request was withdrawn).
    Timeout,
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockError::EmptySet => "lock set is empty",
            LockError::WouldBlock => "lock would block",
            LockError::Timeout => "lock timed out",
        })
    }
}

impl std::error::Error for LockError {}

/// A snapshot of a [`PathLock`]'s state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathLockStats {
    /// Requests holding their locks.
    pub held: usize,
    /// Requests waiting in the queue.
    pub waiting: usize,
    /// Tree nodes held or waited on (the root and idle cached nodes are not
    /// counted).
    pub nodes: usize,
}

/// A pointer to a node that stays valid while its owner holds or waits on
/// it (the node is then not idle, so no sweep removes it), or to the root,
/// which lives as long as the lock. Releases do not go through it: a release
/// may be what makes the node idle (see `PathLock::release_nodes`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct NodePtr(NonNull<Node>);

// SAFETY: a `NodePtr` is only used to reach a `Node`, which is `Sync` (its
// state is atomic), from whichever thread holds the request.
unsafe impl Send for NodePtr {}
// SAFETY: as above.
unsafe impl Sync for NodePtr {}

impl NodePtr {
    fn new(node: &Node) -> Self {
        NodePtr(NonNull::from(node))
    }

    /// # Safety
    /// The node must be the root of a live lock, or one this request holds or
    /// waits on (its counts or flags are in the node's state).
    pub(crate) unsafe fn get(&self) -> &Node {
        // SAFETY: per the contract, the node has not been swept or freed.
        unsafe { self.0.as_ref() }
    }
}

/// A granted request: its id and the node modes it holds.
pub(crate) struct Held {
    id: u64,
    /// Kept for the node keys: releases look nodes up again (see `release_nodes`).
    plan: Plan,
    nodes: Vec<(NodePtr, NodeMode)>,
}

/// What one attempt to take a request came to.
pub(crate) enum Attempt<'q> {
    Held(Held),
    /// Queued with this id; the queue's guard is still held.
    Queued(u64, QueueGuard<'q>),
    WouldBlock,
}

/// Hierarchical read/write locks on paths, with atomic lock sets, exact FIFO
/// fairness among conflicting requests, and blocking, try, timeout and async
/// acquisition.
///
/// A lock on a path covers its subtree: `Write(["user"])` conflicts with
/// `Read(["user", "alice"])`; `Read` locks never conflict with each other;
/// writes to sibling paths proceed in parallel. The empty path is the whole
/// tree. See the module source for the protocol.
///
/// # Panics
/// Locking panics if 2^20 − 1 requests already hold `Read` on one of its
/// paths (the node's shared count is full), rather than corrupt the count;
/// the request first undoes what it took, so nothing leaks. A request that
/// is already queued waits for room instead.
///
/// # Deadlocks
/// A thread that holds a guard and then *blocks* on a request that
/// conflicts with it (holding `write(["a"])`, calling `read(["a", "b"])`)
/// waits forever, as with two `Mutex::lock` calls. The lock cannot tell
/// this apart from a legitimate wait: guards are `Send`, so the holder may
/// have handed its guard to another thread that will drop it. Where code
/// may re-enter, use [`try_lock`](Self::try_lock) or
/// [`lock_timeout`](Self::lock_timeout), which return instead of waiting.
///
/// # Protocol
/// A node per path prefix holds one shared word (S count, X bit, waiting
/// flags) and, near the root, one intention-count row per thread, so readers
/// under a common ancestor write no shared line. A request takes intention
/// modes on every ancestor and its own mode on each path, fencing once per
/// node; two conflicting requests each fence between their own write and
/// their read of the other's, so one of them sees the other and backs out.
/// Conflicting waiters queue under one mutex in id order and are granted by
/// hand-off on release. The full write-up, with the orderings, is at the top
/// of `src/path_lock/mod.rs`; loom models are in `loom-tests/`.
///
/// ```
/// use shardlock::{LockSet, PathLock};
///
/// let lock = PathLock::new();
/// let alice = lock.write(["user", "department/IT", "alice"]);
/// assert!(lock.try_read(["user", "department/IT", "bob"]).is_some()); // sibling
/// assert!(lock.try_read(["user"]).is_none()); // covers alice's subtree
/// drop(alice);
///
/// // ADD A B: write A and read B as one unit.
/// let add = lock.lock(&LockSet::new().write(["reg", "A"]).read(["reg", "B"])).unwrap();
/// assert!(lock.try_read(["reg"]).is_none());
/// drop(add);
/// assert!(lock.try_read(["reg"]).is_some());
/// ```
pub struct PathLock {
    root: CachePadded<Node>,
    nodes: RouterTable<Box<str>, Arc<Node>>,
    /// Excludes sweeps (write) from acquires and releases on nodes (read).
    /// `RouterTable` reads take no lock, so its shard locks cannot.
    sweep_guard: ShardedRwLock<()>,
    next_id: CachePadded<AtomicU64>,
    queue: Mutex<Queue>,
    /// Wakes blocking waiters after a grant pass granted one.
    granted: Condvar,
    held: HeldCount,
    /// Nodes in `nodes` (live and idle); changes only on creation and sweep.
    node_count: AtomicUsize,
    /// The node count at which the next creation sweeps first.
    sweep_at: AtomicUsize,
    /// Wide nodes in `nodes` (see [`WIDE_NODES`]).
    wide_nodes: AtomicUsize,
}

impl Default for PathLock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PathLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PathLock")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl PathLock {
    /// An empty lock tree.
    pub fn new() -> Self {
        PathLock {
            root: CachePadded::new(Node::default()),
            // loom replays schedules, so under loom the hash must not vary.
            nodes: RouterTable::with_hasher(if cfg!(loom) {
                ahash::RandomState::with_seeds(1, 2, 3, 4)
            } else {
                ahash::RandomState::new()
            }),
            sweep_guard: ShardedRwLock::new(()),
            next_id: CachePadded::new(AtomicU64::new(1)),
            queue: Mutex::new(Queue::default()),
            granted: Condvar::new(),
            held: HeldCount::new(),
            node_count: AtomicUsize::new(0),
            sweep_at: AtomicUsize::new(IDLE_NODES),
            wide_nodes: AtomicUsize::new(0),
        }
    }

    /// Locks `path` for reading, blocking until granted.
    pub fn read(&self, path: impl IntoIterator<Item = impl AsRef<str>>) -> PathGuard<'_> {
        self.lock_path(Mode::Read, path)
    }

    /// Locks `path` for writing, blocking until granted.
    pub fn write(&self, path: impl IntoIterator<Item = impl AsRef<str>>) -> PathGuard<'_> {
        self.lock_path(Mode::Write, path)
    }

    /// Locks `path` for reading if that can be granted at once.
    pub fn try_read(
        &self,
        path: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Option<PathGuard<'_>> {
        self.try_plan(Plan::single(Mode::Read, path)).ok()
    }

    /// Locks `path` for writing if that can be granted at once.
    pub fn try_write(
        &self,
        path: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Option<PathGuard<'_>> {
        self.try_plan(Plan::single(Mode::Write, path)).ok()
    }

    /// Locks `path` for reading; the request's place in line is fixed when
    /// the future is first polled.
    pub fn read_async(
        &self,
        path: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> impl Future<Output = PathGuard<'_>> + Send {
        self.lock_path_async(Mode::Read, path)
    }

    /// Locks `path` for writing; see [`read_async`](Self::read_async).
    pub fn write_async(
        &self,
        path: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> impl Future<Output = PathGuard<'_>> + Send {
        self.lock_path_async(Mode::Write, path)
    }

    fn lock_path(
        &self,
        mode: Mode,
        path: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> PathGuard<'_> {
        let held = self.lock_plan(Plan::single(mode, path), None);
        PathGuard {
            lock: self,
            held: held.expect("a one-path request with no deadline is granted"),
        }
    }

    fn lock_path_async(
        &self,
        mode: Mode,
        path: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> impl Future<Output = PathGuard<'_>> + Send {
        let future = LockFuture::new(self, Plan::single(mode, path));
        async move {
            let held = future.await.expect("a one-path request is never empty");
            PathGuard { lock: self, held }
        }
    }

    /// Locks every resource of `set` as one unit, blocking until granted.
    pub fn lock(&self, set: &LockSet) -> Result<PathGuard<'_>, LockError> {
        let held = self.lock_blocking(set, None)?;
        Ok(PathGuard { lock: self, held })
    }

    /// Locks `set` if it can be granted at once, else `WouldBlock` (and the
    /// request leaves no trace). Under concurrency it can also fail against
    /// the transient counts of another request's attempt that is itself
    /// backing out at that instant.
    pub fn try_lock(&self, set: &LockSet) -> Result<PathGuard<'_>, LockError> {
        self.try_plan(set.plan())
    }

    fn try_plan(&self, plan: Plan) -> Result<PathGuard<'_>, LockError> {
        if plan.is_empty() {
            return Err(LockError::EmptySet);
        }
        match self.attempt(plan, false, None) {
            Attempt::Held(held) => Ok(PathGuard { lock: self, held }),
            Attempt::Queued(..) => unreachable!("try_lock never queues"),
            Attempt::WouldBlock => Err(LockError::WouldBlock),
        }
    }

    /// Locks `set`, waiting at most `timeout`; on `Timeout` the request is
    /// withdrawn and leaves no trace. A timeout too large to represent as a
    /// deadline (`Duration::MAX`) means no deadline.
    pub fn lock_timeout(
        &self,
        set: &LockSet,
        timeout: Duration,
    ) -> Result<PathGuard<'_>, LockError> {
        let held = self.lock_blocking(set, Instant::now().checked_add(timeout))?;
        Ok(PathGuard { lock: self, held })
    }

    /// Locks `set` asynchronously; the place in line is fixed at the first
    /// poll, and dropping the future withdraws the request.
    pub fn lock_async<'a>(
        &'a self,
        set: &'a LockSet,
    ) -> impl Future<Output = Result<PathGuard<'a>, LockError>> + Send + 'a {
        let future = LockFuture::new(self, set.plan());
        async move {
            let held = future.await?;
            Ok(PathGuard { lock: self, held })
        }
    }

    /// [`lock`](Self::lock), returning a guard that owns a handle to the lock.
    pub fn lock_owned(self: &Arc<Self>, set: &LockSet) -> Result<OwnedPathGuard, LockError> {
        let held = self.lock_blocking(set, None)?;
        Ok(OwnedPathGuard {
            lock: self.clone(),
            held,
        })
    }

    /// [`lock_async`](Self::lock_async), owning the set and a handle to the
    /// lock, for servers that keep a lock across tasks.
    pub fn lock_owned_async(
        self: &Arc<Self>,
        set: LockSet,
    ) -> impl Future<Output = Result<OwnedPathGuard, LockError>> + Send + 'static {
        let future = LockFuture::new(self.clone(), set.plan());
        async move {
            let lock = future.lock.clone();
            let held = future.await?;
            Ok(OwnedPathGuard { lock, held })
        }
    }

    /// Counts of held and waiting requests and of live nodes.
    pub fn stats(&self) -> PathLockStats {
        let waiting = self.lock_queue().waiting();
        let mut nodes = 0;
        self.nodes
            .for_each(|_, node| nodes += usize::from(!node.is_idle()));
        PathLockStats {
            held: self.held.get(),
            waiting,
            nodes,
        }
    }

    fn lock_blocking(&self, set: &LockSet, deadline: Option<Instant>) -> Result<Held, LockError> {
        self.lock_plan(set.plan(), deadline)
    }

    fn lock_plan(&self, plan: Plan, deadline: Option<Instant>) -> Result<Held, LockError> {
        if plan.is_empty() {
            return Err(LockError::EmptySet);
        }
        let (id, mut queue) = match self.attempt(plan, true, None) {
            Attempt::Held(held) => return Ok(held),
            Attempt::Queued(id, queue) => (id, queue),
            Attempt::WouldBlock => unreachable!("blocking attempts queue"),
        };
        loop {
            if let Some(held) = take_granted(&mut queue, id) {
                return Ok(held);
            }
            let timeout = match deadline {
                None => None,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.cancel(&mut queue, id);
                        return Err(LockError::Timeout);
                    }
                    Some(left)
                }
            };
            queue = queue.wait(&self.queue, &self.granted, timeout);
        }
    }

    /// The fast path, then (if `enqueue`) the slow path; see the module docs.
    fn attempt(&self, plan: Plan, enqueue: bool, waker: Option<&std::task::Waker>) -> Attempt<'_> {
        let mut nodes = Vec::with_capacity(plan.node_count());
        let mut full = false;
        for (key, mode) in plan.nodes() {
            match self.acquire_fast(key, mode) {
                Ok(Some(node)) => nodes.push((node, mode)),
                Ok(None) => break,
                Err(Full) => {
                    full = true;
                    break;
                }
            }
        }
        if nodes.len() < plan.node_count() {
            if self.release_nodes(&plan, &nodes) {
                self.grant_pass(&mut self.lock_queue());
            }
            if full {
                panic!("shardlock: {MAX_SHARED_HOLDERS} requests already read one path");
            }
            return self.slow_path(plan, None, enqueue, waker);
        }
        let id = self.next_id.fetch_add(1, SeqCst);
        // SAFETY: this request holds every node in `nodes`.
        let flagged = nodes
            .iter()
            .any(|(n, m)| unsafe { n.get() }.waiter_conflicts(*m));
        if flagged {
            let queue = self.lock_queue();
            if queue.earlier_conflict(id, &plan) {
                self.release_nodes(&plan, &nodes);
                drop(queue);
                return self.slow_path(plan, Some(id), enqueue, waker);
            }
        }
        self.held.add(1);
        Attempt::Held(Held { id, plan, nodes })
    }

    fn slow_path(
        &self,
        plan: Plan,
        id: Option<u64>,
        enqueue: bool,
        waker: Option<&std::task::Waker>,
    ) -> Attempt<'_> {
        // Before any state changes: a panicking `Waker::clone` leaves nothing.
        let waker = waker.cloned();
        let mut queue = self.lock_queue();
        if !enqueue {
            // A failed try_lock: any transient counts it left are gone; let
            // waiters that saw them move.
            self.grant_pass(&mut queue);
            return Attempt::WouldBlock;
        }
        let flags = queue.count_in(&plan);
        let nodes = plan
            .nodes()
            .zip(flags)
            .map(|((key, mode), flags)| (self.flag_node(key, flags), mode))
            .collect();
        // Flags first, then the id: see "Why FIFO holds".
        let id = id.unwrap_or_else(|| self.next_id.fetch_add(1, SeqCst));
        queue.waiters.insert(
            id,
            Waiter {
                plan,
                nodes,
                status: Status::Waiting { waker },
            },
        );
        self.grant_pass(&mut queue);
        match take_granted(&mut queue, id) {
            Some(held) => Attempt::Held(held),
            None => Attempt::Queued(id, queue),
        }
    }

    /// Takes `mode` on the node at `key` if nothing held or waiting there
    /// conflicts; `None` if something does, `Full` if its S count is.
    fn acquire_fast(&self, key: &str, mode: NodeMode) -> Result<Option<NodePtr>, Full> {
        let (node, outcome) = self.with_node(key, |node| {
            let outcome = node.try_acquire(mode);
            (outcome.taken.then(|| NodePtr::new(node)), outcome)
        });
        if outcome.saw_waiters {
            // A failed attempt's transient counts may have turned a waiter
            // away: let the queue look again.
            self.grant_pass(&mut self.lock_queue());
        }
        if outcome.full {
            return Err(Full);
        }
        Ok(node)
    }

    /// Sets `flags` on the node at `key` and returns it. Called with the
    /// queue locked: with no new flags, another waiter's flags (which only
    /// change under that lock) keep the node from being swept.
    fn flag_node(&self, key: &str, flags: u64) -> NodePtr {
        self.with_node(key, |node| {
            node.set_flags(flags);
            NodePtr::new(node)
        })
    }

    /// Runs `f` on the node at `key` (the root for `""`), creating the node
    /// if absent. `f` runs under the node table's shard read lock, so no
    /// sweep removes the node meanwhile.
    fn with_node<R>(&self, key: &str, f: impl Fn(&Node) -> R) -> R {
        if key.is_empty() {
            return f(&self.root);
        }
        loop {
            let found = {
                let _no_sweep = self.sweep_guard.read();
                self.nodes.get_with(key, |node| f(node))
            };
            if let Some(result) = found {
                return result;
            }
            self.create_node(key);
        }
    }

    fn create_node(&self, key: &str) {
        // Sweep *before* inserting, so a sweep never removes the node its own
        // creator is about to take; and after a sweep, wait until the tree
        // doubles (or reaches the bound) before the next one, so sweeps stay
        // amortised even when most nodes are held. Both counters are only a
        // heuristic: a race costs an extra or a late sweep, nothing more.
        if self.node_count.load(SeqCst) >= self.sweep_at.load(SeqCst) {
            // The sweep guard excludes every acquire and release.
            let _sweeping = self.sweep_guard.write();
            self.nodes.retain(|_, node| {
                let idle = node.is_idle();
                if idle {
                    self.node_count.fetch_sub(1, SeqCst);
                    if node.is_wide() {
                        self.wide_nodes.fetch_sub(1, SeqCst);
                    }
                }
                !idle
            });
            let left = self.node_count.load(SeqCst);
            self.sweep_at.store(IDLE_NODES.max(2 * left), SeqCst);
        }
        self.nodes.get_or_insert_with(key.into(), || {
            self.node_count.fetch_add(1, SeqCst);
            let shallow = depth(key) <= node::DISTRIBUTED_DEPTH;
            let wide = shallow && self.wide_nodes.fetch_add(1, SeqCst) < WIDE_NODES;
            if shallow && !wide {
                self.wide_nodes.fetch_sub(1, SeqCst); // over budget: narrow
            }
            Arc::new(Node::new(wide))
        });
    }

    /// Releases the held modes of `plan`'s first `nodes.len()` nodes; returns
    /// whether any node had waiters.
    ///
    /// A release can leave a node idle, and a sweep may then free it at once;
    /// so each node (but the root) is released under its table shard's read
    /// lock, which sweeps exclude, as acquires are.
    fn release_nodes(&self, plan: &Plan, nodes: &[(NodePtr, NodeMode)]) -> bool {
        plan.nodes()
            .zip(nodes)
            .fold(false, |waiters, ((key, _), &(_, mode))| {
                let saw = if key.is_empty() {
                    self.root.release(mode)
                } else {
                    self.nodes
                        .get_with(key, |node| node.release(mode))
                        .expect("a held node is not idle, so not swept")
                };
                saw | waiters
            })
    }

    fn release(&self, held: &Held) {
        self.held.sub(1);
        if self.release_nodes(&held.plan, &held.nodes) {
            self.grant_pass(&mut self.lock_queue());
        }
    }

    fn lock_queue(&self) -> QueueGuard<'_> {
        QueueGuard::new(&self.queue)
    }

    /// Grants, in id order, every waiter that conflicts with no earlier
    /// waiter and with nothing held; wakes them.
    fn grant_pass(&self, queue: &mut Queue) {
        let ids: Vec<u64> = queue.waiters.keys().copied().collect();
        let mut blocked: Vec<u64> = Vec::new();
        let mut woke_blocking = false;
        for id in ids {
            let waiter = &queue.waiters[&id];
            if !matches!(waiter.status, Status::Waiting { .. }) {
                continue;
            }
            let behind = blocked
                .iter()
                .any(|b| queue.waiters[b].plan.conflicts(&waiter.plan));
            if behind || !self.try_grant(&waiter.nodes) {
                blocked.push(id);
                continue;
            }
            let mut waiter = queue.waiters.remove(&id).expect("present");
            queue.count_out(&waiter.plan, &waiter.nodes);
            match std::mem::replace(&mut waiter.status, Status::Granted) {
                Status::Waiting { waker: Some(waker) } => queue.to_wake.push(waker),
                _ => woke_blocking = true,
            }
            self.held.add(1);
            queue.waiters.insert(id, waiter);
        }
        if woke_blocking {
            self.granted.notify_all();
        }
    }

    /// Moves `nodes`' modes into the held counts, all or none.
    fn try_grant(&self, nodes: &[(NodePtr, NodeMode)]) -> bool {
        for (i, (node, mode)) in nodes.iter().enumerate() {
            // SAFETY: the waiter's flags keep its nodes alive (not idle).
            if !unsafe { node.get() }.try_grant(*mode) {
                for (node, mode) in &nodes[..i] {
                    // SAFETY: as above; the flags outlive this rollback.
                    unsafe { node.get() }.release(*mode);
                }
                return false;
            }
        }
        true
    }

    /// Withdraws request `id`, granted or not, and lets others move.
    fn cancel(&self, queue: &mut Queue, id: u64) {
        let Some(waiter) = queue.waiters.remove(&id) else {
            return;
        };
        match waiter.status {
            Status::Granted => {
                self.held.sub(1);
                self.release_nodes(&waiter.plan, &waiter.nodes);
            }
            Status::Waiting { .. } => queue.count_out(&waiter.plan, &waiter.nodes),
        }
        self.grant_pass(queue);
    }
}

/// A node's S count is full (see [`MAX_SHARED_HOLDERS`]).
struct Full;

/// Removes and returns request `id` if it has been granted.
pub(crate) fn take_granted(queue: &mut Queue, id: u64) -> Option<Held> {
    if !matches!(queue.waiters.get(&id)?.status, Status::Granted) {
        return None;
    }
    let waiter = queue.waiters.remove(&id).expect("present");
    Some(Held {
        id,
        plan: waiter.plan,
        nodes: waiter.nodes,
    })
}

/// The number of held requests, as per-thread-slot counters so that taking
/// and releasing locks on different threads write different lines.
struct HeldCount(Box<[CachePadded<AtomicUsize>]>);

impl HeldCount {
    fn new() -> Self {
        HeldCount(
            (0..16)
                .map(|_| CachePadded::new(AtomicUsize::new(0)))
                .collect(),
        )
    }

    fn slot(&self) -> &AtomicUsize {
        &self.0[crate::thread_index::current() % self.0.len()]
    }

    fn add(&self, n: usize) {
        self.slot().fetch_add(n, SeqCst);
    }

    fn sub(&self, n: usize) {
        self.slot().fetch_sub(n, SeqCst);
    }

    fn get(&self) -> usize {
        self.0
            .iter()
            .fold(0usize, |sum, n| sum.wrapping_add(n.load(SeqCst)))
    }
}

#[cfg(all(test, not(loom)))]
mod regressions;
#[cfg(all(test, not(loom)))]
mod tests;
