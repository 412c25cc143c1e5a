//! [`PathLock`]: hierarchical read/write locks on paths of string segments.
//!
//! # Model
//!
//! A request is a non-empty set of (mode, path) resources. Two requests
//! conflict iff some pair of their resources has one path a prefix of (or
//! equal to) the other and at least one `Write`. **Grant rule:** a request is
//! granted as soon as it conflicts neither with a held request nor with an
//! *earlier* waiting one (see "Order" below for what earlier means).
//!
//! # The lock tree
//!
//! Paths map onto multi-granularity locking: `Read(p)` takes IS on every
//! proper prefix of `p` and S on `p`, `Write(p)` IX and X; a request touching a
//! node twice takes the join (S ⊔ IX = SIX). Requests conflict exactly when,
//! on some node, their modes are incompatible. A node ([`node`]) has:
//!
//! | where                           | what                                               |
//! |---------------------------------|----------------------------------------------------|
//! | `word: AtomicU64`, bits 0..20   | count of S holders (SIX counts here and in IX)     |
//! | bit 20                          | X held                                             |
//! | bits 21..25                     | waiting flags: some queued request wants IS/IX/S/X |
//! | bit 25                          | `DEAD`: a sweep is unlinking this idle node        |
//! | `stamp: AtomicU64`              | largest fencing id of a released S or X holder     |
//! | `rows[t]`                       | thread row `t`'s IS and IX counts (wrapping), and the largest id released through the row |
//! | `parent`, `children`            | the node one segment up (an `Arc`), and how many nodes name this one as parent |
//!
//! Nodes within [`node::DISTRIBUTED_DEPTH`] of the root have a row per
//! thread; deeper ones one row, updated with RMWs. The root's rows also hold
//! each thread's last fencing id and its granted and released counts (each
//! only grows; `stats().held` reads every granted count, then every
//! released one, so it never exceeds the number held at the instant between
//! and never wraps below zero), so a request writes no line another thread
//! writes unless it conflicts with it. A row is written only under a hold
//! on its index (`thread_index`'s lifetime rule).
//!
//! **The index.** Nodes live in a [`RouterTable`] keyed by the whole path
//! (each segment written `len:segment`), whose lookups take no lock and no
//! fence (its epoch read path). A request looks up only the *deepest* node
//! of each resource and reaches the ancestors through `parent` links, so a
//! depth-3 path costs one hash and one probe. A missing node is created
//! with its missing ancestors under the sweep guard's read lock.
//!
//! **Node lifetime.** A node stays in the table while it is held, waited on,
//! or has children; idle childless nodes are unlinked by a *sweep* (run by
//! a request, before it resolves its nodes, that finds 8192 nodes, or twice
//! what the last sweep left; never in the middle of a request's own
//! resolution, which would unlink the nodes it just created),
//! which holds the sweep guard's write lock: it marks a node `DEAD` with a
//! CAS from 0 (nothing held, no flags), fences, sums the rows and either
//! unlinks it or clears the mark. Unlinked nodes go to the table's epoch
//! bin. Every fast-path acquire and every release runs pinned, so a node it
//! found, or had just released, stays allocated until it unpins; a guard
//! keeps raw pointers to its nodes, which its own counts keep linked, so a
//! release does no lookup. A request that finds `DEAD` on any node backs
//! out and resolves its path again.
//!
//! # Transitions
//!
//! * **Fast path** (pinned, no lock): resolve the nodes; *take* each mode (a
//!   CAS of the word for S and X, refused at once if a conflicting mode is
//!   held, conflicting flags are set, or `DEAD`; a row store for IS and IX);
//!   **one `fence(SeqCst)`**; then *check* every node: the word for held
//!   conflicting strong modes, conflicting flags and `DEAD`, and, where the
//!   request takes S or X, the rows' sums. If all pass the request holds;
//!   otherwise it puts everything back, and on a conflict takes the slow
//!   path (or fails a `try_lock`), on `DEAD` starts over.
//! * **Slow path** (the queue mutex): resolve the nodes, count the request in
//!   per node and mode, and set the flags that became non-zero (under the
//!   sweep guard's read lock, so no node is unlinked meanwhile; flags then
//!   keep them linked); append the request with the next *queue sequence*
//!   number and run a grant pass.
//! * **Grant pass** (the mutex): in sequence order, a waiter that conflicts
//!   with no earlier still-waiting one is granted if its modes can be taken
//!   against what is *held* (take, fence, check, as above, ignoring flags):
//!   its counts move from flags to held, and it is marked granted and woken.
//! * **Release** (pinned): for each node publish the fencing id (the row's
//!   stamp for IS/IX, the word's stamp for S/X), take the counts out; **one
//!   fence**; read every word's flags. If any is set, run a grant pass, so
//!   what became grantable is granted inside the release (hand-off: a
//!   newcomer then sees it held and cannot barge in).
//! * **Cancellation** (failed `try_lock`, timeout, dropped future): under the
//!   mutex, remove the waiter and its flags (or release it if it was granted
//!   meanwhile), then run a grant pass for whatever waited only behind it.
//!
//! # Why one fence per request is enough (orderings)
//!
//! All node accesses that matter are SeqCst, or Release row stores followed
//! by the request's `fence(SeqCst)`. Two conflicting requests meet at some
//! node with incompatible modes; at least one of them writes the word
//! there (S or X). If both do, the word's CAS serializes them and the
//! second refuses. Otherwise one stores its row, the other CASes the word,
//! each then fences and reads the other's location: of two SeqCst fences one
//! is first, so the later request's read sees the earlier one's write and
//! it backs out. Batching all takes before the one fence changes nothing in
//! this argument: each take is still sequenced before the fence, and each
//! check after it. The same pair protects hand-off (a waiter's flag RMW and
//! its grant's fence vs a release's count store, fence and flag load) and
//! sweeps (the `DEAD` CAS and the sweep's fence vs an acquirer's row store,
//! fence and word load).
//!
//! # Order
//!
//! A fast-path request's place in line is its fence; a waiter's is its
//! flags. If a waiter W set a flag that conflicts with fast-path request N
//! before N's fence, N's check sees it and N queues behind W. Otherwise N's
//! fence precedes W's flag, hence W's grant fence, so W's check sees N's
//! counts and W waits for N, which was first. Waiters are granted in queue
//! sequence order, each only if no earlier waiter conflicts. No request
//! passes an earlier conflicting one.
//!
//! # Fencing ids
//!
//! Ids are unique within a lock, increase in the order one thread obtains
//! its requests, and exceed the id of every conflicting request granted
//! before. No global counter is involved:
//! * A request's id is `(floor >> B) + 1 << B | tag`, with `floor` the
//!   largest stamp its checks read (and its thread's last id), `B` enough
//!   bits for every tag, and `tag` the index + 1 of the root row of the
//!   thread that obtains it. Owned rows store their last id with a plain
//!   store; the shared overflow row CASes.
//! * A conflicting request Q granted earlier released before this one took
//!   the meeting node (they never hold at once). Q published its id before
//!   taking its counts out (Release); this request's check read those counts
//!   gone (SeqCst, so Acquire) and then the stamps: in the word's stamp if Q
//!   held S or X there, in Q's releasing thread's row if Q held IS or IX, in
//!   which case this request holds S or X there and reads every row.
//! * A waiter's grant records the floor its checks read (and the requesting
//!   thread's last id when it queued); its id is issued from that floor when
//!   a thread picks the grant up. Between the two it holds, so no
//!   conflicting request is granted meanwhile. So a thread's ids increase in
//!   the order it obtains its requests.
//! * A thread that gave its index back (it locks from a thread-local
//!   destructor after its exit hook) moves to the overflow row, whose last
//!   id can be below its own; its floor then also takes the largest last id
//!   of every root row, which covers its old row's.
//!
//! # What changed from the first protocol, and why
//!
//! The first protocol fenced once per node, looked every node up on lock and
//! again on unlock (a sweep was excluded by the table's shard locks), took a
//! global `fetch_add` for each id, and counted held requests with RMWs. Now:
//! one fence per request (the Dekker argument above holds per node whatever
//! the batching); sweeps mark `DEAD` and leave freeing to epochs, so guards
//! keep pointers; releases pair asymmetrically with waiters (a waiter, on the
//! slow path anyway, pays the heavy barrier); ids come from stamps, which
//! gives the weaker, documented guarantee above in exchange for no shared
//! write on the read path.
//!
//! # Model checking
//!
//! `loom-tests/tests/path_lock.rs`: reader vs writer on parent/child, two
//! writers on siblings, a pending writer vs a new reader (FIFO), cancellation
//! racing a release, hand-off to a waiting set, and a sweep unlinking a node
//! while another thread takes the same path again.

mod future;
mod guard;
mod inline_vec;
mod lock_set;
mod node;
mod queue;

use std::fmt;
use std::future::Future;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use guard::{OwnedPathGuard, PathGuard};
pub use lock_set::LockSet;
pub use node::Mode;

use crate::epoch;
use crate::sync::{fence, yield_now, AtomicUsize, Condvar, Mutex, Ordering::SeqCst};
use crate::thread_index;
use crate::{RouterTable, ShardedRwLock};
use future::LockFuture;
use inline_vec::InlineVec;
use lock_set::{segment_bytes, segment_ends, Plan, INLINE_NODES};
use node::{Node, NodeMode, Refusal, MAX_SHARED_HOLDERS};
use queue::{Queue, QueueGuard, Status, Waiter};

/// Nodes (idle ones included) the tree may have before a sweep removes the
/// idle ones. Deep nodes take ~200 bytes, so the idle cache stays under a
/// few MiB. Under loom, 1: every request sweeps first, so the models also
/// explore sweeps racing other threads' acquires and releases.
const IDLE_NODES: usize = if cfg!(loom) { 1 } else { 8192 };

/// What idle nodes may take, about (see [`Node::footprint`]), before a
/// sweep, unless set with [`PathLock::with_idle_cache`]: 4 MiB.
const IDLE_BYTES: usize = if cfg!(loom) { 1 } else { 4 << 20 };

/// Nodes (besides the root) that may have one intention row per thread at
/// once; further shallow nodes get one shared row. A wide node's rows take
/// `(rows + 1) × 128` bytes, 8,320 on a 64-core host, so this bounds the
/// wide rows of one lock at about 2.1 MB there.
const WIDE_NODES: usize = 256;

/// Whether `node` is the node of path key `key`, filed under `hash`.
#[inline]
fn is_node_of(node: &Node, hash: u64, key: &[u8]) -> bool {
    node.hash() == hash && node.is_path(key)
}

/// Which waiters a grant pass looks at.
enum Scope<'a> {
    /// Every waiter.
    All,
    /// Only the waiter just queued: nothing else changed.
    Only(u64),
    /// The waiters after `after` that conflict with a request of `nodes`
    /// that was just released or withdrawn (or whose transient counts a
    /// failed fast path took and put back): only they can have been
    /// waiting for it. One that waited behind a waiter it let through still
    /// conflicts with that one, now held.
    Near { nodes: &'a [Taken], after: u64 },
}

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

/// Panics once a lock has issued every fencing id (see `id_after`). The
/// caller has put back what it took.
#[cold]
fn ids_exhausted() -> ! {
    panic!("shardlock: this PathLock's fencing ids are exhausted")
}

/// A snapshot of a [`PathLock`]'s state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathLockStats {
    /// Requests holding their locks. Never below 0 nor above the number
    /// held at one moment during the call; exact when no request is granted
    /// or released meanwhile.
    pub held: usize,
    /// Requests waiting in the queue.
    pub waiting: usize,
    /// Tree nodes held or waited on (the root and idle cached nodes are not
    /// counted).
    pub nodes: usize,
}

/// A pointer to a node: the root, one its owner holds or waits on (then the
/// node is in use, so no sweep unlinks it), or one found while pinned.
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

    /// The node's address, which identifies it while it is in use.
    pub(crate) fn addr(&self) -> usize {
        self.0.as_ptr().addr()
    }

    /// # Safety
    /// For as long as the caller uses the reference, the node must be the
    /// root of a live lock; or one whose counts or flags its owner holds (a
    /// node in use is not unlinked); or one found, or in use, since the
    /// caller's current pin began (an unlinked node is freed only after every
    /// pin older than its unlinking ends).
    pub(crate) unsafe fn get<'a>(self) -> &'a Node {
        // SAFETY: per the contract, the node has not been freed.
        unsafe { self.0.as_ref() }
    }
}

/// A node and a request's mode on it, in one word: nodes are aligned to at
/// least 16 bytes, so the mode's four bits fit in the address's low bits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Taken(NonNull<Node>);

const MODE_BITS: usize = 0b1111;
const _: () = assert!(std::mem::align_of::<Node>() > MODE_BITS);

impl Taken {
    #[inline]
    fn new(node: NodePtr, mode: NodeMode) -> Self {
        Taken(node.0.map_addr(|addr| addr | usize::from(mode.bits())))
    }

    #[inline]
    pub(crate) fn node(self) -> NodePtr {
        let untagged = self.0.as_ptr().map_addr(|addr| addr & !MODE_BITS);
        NodePtr(NonNull::new(untagged).expect("a node's address is not below 16"))
    }

    #[inline]
    pub(crate) fn mode(self) -> NodeMode {
        NodeMode::from_bits(self.0.addr().get() & MODE_BITS)
    }
}

impl Default for Taken {
    /// A placeholder, never dereferenced: [`PathLock::resolve`] overwrites it.
    fn default() -> Self {
        Taken(NonNull::dangling())
    }
}

// SAFETY: as for `NodePtr`.
unsafe impl Send for Taken {}
// SAFETY: as for `NodePtr`.
unsafe impl Sync for Taken {}

/// The nodes of a request with its mode on each, inline up to a depth-8 path.
pub(crate) type Nodes = InlineVec<Taken, INLINE_NODES>;

/// A granted request: its fencing id and the node modes it holds.
#[derive(Default)]
pub(crate) struct Held {
    id: u64,
    nodes: Nodes,
}

/// What one attempt to take a request came to.
pub(crate) enum Attempt<'q> {
    Held(Held),
    /// Queued with this sequence number; the queue's guard is still held.
    Queued(u64, QueueGuard<'q>),
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
    root: Arc<Node>,
    /// Every node but the root, filed under the hash of its path's key and
    /// found by comparing that path with its chain of segments (no key is
    /// stored: see [`Node::is_path`]).
    nodes: RouterTable<(), Arc<Node>>,
    /// Read by creations and by waiters setting flags, written by sweeps, so
    /// a sweep sees exact child counts and never unlinks a node being
    /// flagged. The fast path and releases never touch it.
    sweep_guard: ShardedRwLock<()>,
    queue: Mutex<Queue>,
    /// Wakes blocking waiters after a grant pass granted one.
    granted: Condvar,
    /// Bits of a fencing id that hold its tag (see "Fencing ids").
    tag_bits: u32,
    /// Nodes in `nodes` (live and idle), and about their bytes
    /// ([`Node::footprint`]); change only on creation and sweep.
    node_count: AtomicUsize,
    node_bytes: AtomicUsize,
    /// The node count and bytes at which the next request sweeps first.
    sweep_at: AtomicUsize,
    sweep_at_bytes: AtomicUsize,
    /// The least `sweep_at_bytes`: what idle nodes may take.
    idle_bytes: usize,
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
        let root = Arc::new(Node::new(true, None, &[], &[], 0));
        // Tags 0 (the queue) ..= the root's row count (the overflow row).
        let tag_bits = (root.row_count() + 1).next_power_of_two().trailing_zeros();
        PathLock {
            root,
            // loom replays schedules, so under loom the hash must not vary.
            nodes: RouterTable::with_hasher(if cfg!(loom) {
                ahash::RandomState::with_seeds(1, 2, 3, 4)
            } else {
                ahash::RandomState::new()
            }),
            sweep_guard: ShardedRwLock::new(()),
            queue: Mutex::new(Queue::default()),
            granted: Condvar::new(),
            tag_bits,
            node_count: AtomicUsize::new(0),
            node_bytes: AtomicUsize::new(0),
            sweep_at: AtomicUsize::new(IDLE_NODES),
            sweep_at_bytes: AtomicUsize::new(IDLE_BYTES),
            idle_bytes: IDLE_BYTES,
            wide_nodes: AtomicUsize::new(0),
        }
    }

    /// An empty lock tree whose cache of idle nodes (released paths kept
    /// for reuse) is bounded by `bytes` (default 4 MiB, and at most 8,192
    /// nodes): a request sweeps idle nodes away first once the tree's nodes
    /// take `bytes`, or twice what the last sweep left in use, whichever is
    /// more (so sweeps stay amortised when most nodes are held). A node
    /// takes about 470 bytes plus its segment; a smaller cache costs more
    /// node creations when paths come back. A server with one tree per
    /// client namespace bounds its memory with this.
    pub fn with_idle_cache(bytes: usize) -> Self {
        let mut lock = Self::new();
        lock.idle_bytes = bytes;
        lock.sweep_at_bytes.store(bytes, SeqCst);
        lock
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
        self.try_plan(&Plan::single(Mode::Read, path)).ok()
    }

    /// Locks `path` for writing if that can be granted at once.
    pub fn try_write(
        &self,
        path: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> Option<PathGuard<'_>> {
        self.try_plan(&Plan::single(Mode::Write, path)).ok()
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
        let plan = Plan::single(mode, path);
        let mut held = Held::default();
        if !self.fast_path(&plan, &mut held) {
            held = self
                .lock_slow(plan, None)
                .expect("a one-path request with no deadline is granted");
        }
        PathGuard { lock: self, held }
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

    fn try_plan(&self, plan: &Plan) -> Result<PathGuard<'_>, LockError> {
        if plan.is_empty() {
            return Err(LockError::EmptySet);
        }
        let mut held = Held::default();
        if self.fast_path(plan, &mut held) {
            return Ok(PathGuard { lock: self, held });
        }
        // Any transient counts the attempt left are gone: let waiters that
        // saw them move.
        self.grant_pass(&mut self.lock_queue(), Scope::All);
        Err(LockError::WouldBlock)
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
        let future = LockFuture::new(self, set.plan().clone());
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
        let future = LockFuture::new(self.clone(), set.plan().clone());
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
            held: self.root.held_now() as usize,
            waiting,
            nodes,
        }
    }

    /// About the bytes of every tree node but the root, idle cached ones
    /// included (those are bounded by [`with_idle_cache`](Self::with_idle_cache)).
    pub fn node_bytes(&self) -> usize {
        self.node_bytes.load(SeqCst)
    }

    fn lock_blocking(&self, set: &LockSet, deadline: Option<Instant>) -> Result<Held, LockError> {
        self.lock_plan(set.plan(), deadline)
    }

    #[inline]
    fn lock_plan(&self, plan: &Plan, deadline: Option<Instant>) -> Result<Held, LockError> {
        if plan.is_empty() {
            return Err(LockError::EmptySet);
        }
        let mut held = Held::default();
        if self.fast_path(plan, &mut held) {
            return Ok(held);
        }
        self.lock_slow(plan.clone(), deadline)
    }

    /// Queues `plan` (or takes it, if it became free) and waits for it.
    #[cold]
    #[inline(never)]
    fn lock_slow(&self, plan: Plan, deadline: Option<Instant>) -> Result<Held, LockError> {
        let (seq, mut queue) = match self.slow_path(plan, None) {
            Attempt::Held(held) => return Ok(held),
            Attempt::Queued(seq, queue) => (seq, queue),
        };
        loop {
            if let Some(held) = self.take_granted(&mut queue, seq) {
                return Ok(held);
            }
            let timeout = match deadline {
                None => None,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        self.cancel(&mut queue, seq);
                        return Err(LockError::Timeout);
                    }
                    Some(left)
                }
            };
            queue = queue.wait(&self.queue, &self.granted, timeout);
        }
    }

    /// The fast path, then the slow path; see the module docs.
    #[inline]
    fn attempt(&self, plan: Plan, waker: Option<&std::task::Waker>) -> Attempt<'_> {
        let mut held = Held::default();
        if self.fast_path(&plan, &mut held) {
            return Attempt::Held(held);
        }
        self.slow_path(plan, waker)
    }

    /// Takes `plan` into `held` (which must be empty) if nothing held or
    /// waiting conflicts; `false` if something does (and nothing is left
    /// behind). `held` is filled in place: moving a freshly written node
    /// list costs store-forwarding stalls.
    #[inline]
    fn fast_path(&self, plan: &Plan, held: &mut Held) -> bool {
        self.sweep_if_due();
        let hold = thread_index::hold(); // see `thread_index`
        let me = hold.index();
        loop {
            let pin = epoch::pin();
            self.resolve(plan, &pin, &mut held.nodes);
            let refusal = match self.acquire_all(&held.nodes, me, true) {
                Ok(floor) => {
                    let Some(id) = self.issue_id(me, floor) else {
                        self.put_back_all(&held.nodes, me, 0);
                        held.nodes.clear();
                        ids_exhausted();
                    };
                    drop(pin);
                    held.id = id;
                    self.root.row(me).count_granted();
                    return true;
                }
                Err((refusal, saw_waiters, taken)) => {
                    drop(pin);
                    if saw_waiters {
                        // Our transient counts (on the first `taken` nodes)
                        // may have turned a waiter away.
                        let nodes = &held.nodes[..taken];
                        self.grant_pass(&mut self.lock_queue(), Scope::Near { nodes, after: 0 });
                    }
                    held.nodes.clear();
                    refusal
                }
            };
            match refusal {
                Refusal::Dead => yield_now(), // a sweep is unlinking a node
                Refusal::Full => {
                    panic!("shardlock: {MAX_SHARED_HOLDERS} requests already read one path")
                }
                Refusal::Conflict => return false,
            }
        }
    }

    #[cold]
    #[inline(never)]
    fn slow_path(&self, plan: Plan, waker: Option<&std::task::Waker>) -> Attempt<'_> {
        // Before any state changes: a panicking `Waker::clone` leaves nothing.
        let waker = waker.cloned();
        let mut queue = self.lock_queue();
        let seq = queue.next_seq();
        let nodes = loop {
            let pin = epoch::pin();
            let mut nodes = Nodes::default();
            self.resolve(&plan, &pin, &mut nodes);
            // No sweep runs while we hold this, so nodes that are not dead
            // now stay linked until their flags are set, and after.
            let _no_sweep = self.sweep_guard.read();
            if nodes.iter().any(|taken| {
                // SAFETY: found under the pin, which is still held.
                unsafe { taken.node().get() }.is_dead()
            }) {
                drop(_no_sweep);
                yield_now();
                continue;
            }
            for (taken, flags) in nodes.iter().zip(queue.count_in(&nodes, seq)) {
                if flags != 0 {
                    // SAFETY: as above.
                    unsafe { taken.node().get() }.set_flags(flags);
                }
            }
            break nodes;
        };
        // Pairs with a release's counts, light barrier, flags (and with a
        // fast path's fence): our grant checks below, and every later one,
        // see the counts of a holder that did not see our flags.
        epoch::heavy_barrier();
        let hold = thread_index::hold(); // see `thread_index`
        let me = hold.index();
        let floor = self.root.row(me).row.last_id.load(SeqCst);
        queue.waiters.insert(
            seq,
            Waiter {
                nodes,
                floor,
                status: Status::Waiting { waker },
            },
        );
        // Only the new waiter can have become grantable: it comes after
        // every other one, and nothing was released.
        self.grant_pass(&mut queue, Scope::Only(seq));
        match self.take_granted(&mut queue, seq) {
            Some(held) => Attempt::Held(held),
            None => Attempt::Queued(seq, queue),
        }
    }

    /// The node of every plan node, in plan order. The deepest node of each
    /// resource is looked up (or created); its ancestors are reached through
    /// parent links. The caller must be pinned, and must treat the nodes as
    /// unchecked: a sweep may be unlinking any of them, which taking and
    /// checking a mode on it detects (`DEAD`).
    #[inline]
    fn resolve(&self, plan: &Plan, pin: &epoch::Guard, nodes: &mut Nodes) {
        let n = plan.node_count();
        debug_assert!(plan.key(0).is_empty(), "node 0 is the root");
        debug_assert_eq!(nodes.len(), 0);
        let root = NodePtr::new(&self.root);
        for i in 0..n {
            nodes.push(Taken::new(root, plan.mode(i)));
        }
        let parent_of = |node: NodePtr| {
            // SAFETY: found under the caller's pin.
            let parent = unsafe { node.get() }.parent();
            NodePtr::new(parent.expect("only the root has no parent"))
        };
        if plan.is_chain() {
            // One lookup, then up the parent links to the root (node 0).
            let mut node = self.find_or_create(plan.key(n - 1), pin);
            for i in (1..n).rev() {
                nodes[i] = Taken::new(node, plan.mode(i));
                node = parent_of(node);
            }
            debug_assert!(
                n == 1 || node.addr() == root.addr(),
                "a chain ends at the root"
            );
            return;
        }
        // Children come after their parents, so walking backwards meets each
        // deepest node before its ancestors.
        let mut done: InlineVec<bool, 16> = InlineVec::default();
        for _ in 0..n {
            done.push(false);
        }
        for i in (1..n).rev() {
            if done[i] {
                continue;
            }
            let (mut node, mut j) = (self.find_or_create(plan.key(i), pin), i);
            loop {
                nodes[j] = Taken::new(node, plan.mode(j));
                done[j] = true;
                match plan.parent(j) {
                    Some(p) if p != 0 && !done[p] => {
                        node = parent_of(node);
                        j = p;
                    }
                    _ => break,
                }
            }
        }
    }

    /// The node at `key` (the root for the empty key), created with its
    /// missing ancestors if absent. Pinned: see [`resolve`](Self::resolve).
    #[inline]
    fn find_or_create(&self, key: &[u8], pin: &epoch::Guard) -> NodePtr {
        if key.is_empty() {
            return NodePtr::new(&self.root);
        }
        let hash = self.hash_of(key);
        loop {
            let found = self
                .nodes
                .find_hashed(hash, pin, |(), node| is_node_of(node, hash, key));
            if let Some(node) = found {
                return NodePtr::new(node);
            }
            self.create_node(key);
        }
    }

    /// Sweeps if the tree reached its bound. A request calls this before
    /// it resolves its nodes, never in the middle: a sweep there would
    /// unlink the idle nodes it had just created for itself, and a request
    /// needing more new nodes than the bound would start over for ever.
    /// After a sweep the tree must double (or reach the bound) before the
    /// next one, so sweeps stay amortised even when most nodes are held.
    /// Both counters are only a heuristic: a race costs an extra or a late
    /// sweep, nothing more.
    #[inline]
    fn sweep_if_due(&self) {
        if self.node_count.load(SeqCst) >= self.sweep_at.load(SeqCst)
            || self.node_bytes.load(SeqCst) >= self.sweep_at_bytes.load(SeqCst)
        {
            self.sweep();
        }
    }

    fn create_node(&self, key: &[u8]) {
        // Under the read lock no sweep runs, so every node in the table is
        // linked and not dead, and parents gain children safely.
        let _no_sweep = self.sweep_guard.read();
        let mut parent = self.root.clone();
        for (depth, end) in segment_ends(key).enumerate() {
            let prefix = &key[..end];
            let hash = self.hash_of(prefix);
            let is_prefix = |_: &(), node: &Arc<Node>| is_node_of(node, hash, prefix);
            parent = self.nodes.get_or_insert_hashed(hash, is_prefix, || {
                let shallow = depth < node::DISTRIBUTED_DEPTH;
                let wide = shallow && self.wide_nodes.fetch_add(1, SeqCst) < WIDE_NODES;
                if shallow && !wide {
                    self.wide_nodes.fetch_sub(1, SeqCst); // over budget: narrow
                }
                let segment = segment_bytes(prefix).last().expect("a segment ends here");
                let node = Node::new(wide, Some(parent.clone()), prefix, segment, hash);
                self.node_count.fetch_add(1, SeqCst);
                self.node_bytes.fetch_add(node.footprint(), SeqCst);
                ((), Arc::new(node))
            });
        }
    }

    /// The hash a node of path key `key` is filed under.
    #[inline]
    fn hash_of(&self, key: &[u8]) -> u64 {
        self.nodes.hasher().hash_one(key)
    }

    /// Runs `f` on the node at `key`, created if absent.
    #[cfg(test)]
    fn with_node<R>(&self, key: &[u8], f: impl FnOnce(&Node) -> R) -> R {
        let pin = epoch::pin();
        let node = self.find_or_create(key, &pin);
        // SAFETY: found under `_pin`.
        f(unsafe { node.get() })
    }

    /// Unlinks every idle node without children, deepest first (a pass
    /// frees the parents the previous one left childless).
    fn sweep(&self) {
        let _sweeping = self.sweep_guard.write();
        loop {
            let mut idle: Vec<Arc<Node>> = Vec::new();
            self.nodes.for_each(|(), node| {
                if node.is_idle() && !node.has_children() {
                    idle.push(node.clone());
                }
            });
            let mut unlinked = 0;
            for target in &idle {
                let removed = self.nodes.remove_hashed_if(
                    target.hash(),
                    |(), node| Arc::ptr_eq(node, target),
                    |node| node.try_kill(),
                );
                if let Some(node) = removed {
                    unlinked += 1;
                    self.node_count.fetch_sub(1, SeqCst);
                    self.node_bytes.fetch_sub(node.footprint(), SeqCst);
                    if node.is_wide() {
                        self.wide_nodes.fetch_sub(1, SeqCst);
                    }
                }
            }
            if unlinked == 0 {
                break;
            }
        }
        let (left, left_bytes) = (self.node_count.load(SeqCst), self.node_bytes.load(SeqCst));
        self.sweep_at.store(IDLE_NODES.max(2 * left), SeqCst);
        self.sweep_at_bytes
            .store(self.idle_bytes.max(2 * left_bytes), SeqCst);
    }

    /// Takes every mode of `nodes` (see the module docs): takes, one fence,
    /// checks. On success the largest stamp read, which the request's id
    /// must exceed. On failure everything is put back, and the refusal comes
    /// with whether a node had waiters (then the caller runs a grant pass) and
    /// how many nodes had been taken (and were put back).
    ///
    /// The nodes must stay allocated throughout: the caller is pinned, or
    /// holds their waiting flags.
    fn acquire_all(
        &self,
        nodes: &[Taken],
        me: usize,
        respect_waiters: bool,
    ) -> Result<u64, (Refusal, bool, usize)> {
        for (done, taken) in nodes.iter().enumerate() {
            // SAFETY: per this function's contract.
            let node = unsafe { taken.node().get() };
            if let Err(refusal) = node.take(taken.mode(), me, respect_waiters) {
                return Err((refusal, self.put_back_all(&nodes[..done], me, 0), done));
            }
        }
        fence(SeqCst);
        let mut floor = 0;
        let mut refused = None;
        for taken in nodes {
            // SAFETY: per this function's contract.
            match unsafe { taken.node().get() }.check(taken.mode(), respect_waiters) {
                Ok(stamp) => floor = floor.max(stamp),
                Err(refusal) => refused = refused.max(Some(refusal)),
            }
        }
        match refused {
            None => Ok(floor),
            Some(refusal) => Err((refusal, self.put_back_all(nodes, me, 0), nodes.len())),
        }
    }

    /// Takes the modes of `nodes` out, publishing `stamp` (0: none), then
    /// fences and returns whether any node has waiters. The caller must be
    /// pinned (a node may become idle and be unlinked at once) or hold the
    /// nodes' waiting flags.
    fn put_back_all(&self, nodes: &[Taken], me: usize, stamp: u64) -> bool {
        if nodes.is_empty() {
            return false;
        }
        for taken in nodes {
            // SAFETY: per this function's contract.
            unsafe { taken.node().get() }.put_back(taken.mode(), me, stamp);
        }
        // Pairs with a waiter's flags, heavy barrier, check (`slow_path`):
        // either its check sees our counts gone or we see its flags.
        epoch::light_barrier();
        nodes.iter().any(|taken| {
            // SAFETY: as above.
            unsafe { taken.node().get() }.has_waiters()
        })
    }

    /// The fencing id of a request granted on thread index `me` after its
    /// checks read stamps up to `floor` (see "Fencing ids"); `None` once the
    /// ids are exhausted.
    fn issue_id(&self, me: usize, floor: u64) -> Option<u64> {
        // A thread that gave its index back (in thread-local teardown) moves
        // from its own row to the overflow row, whose last id may be lower
        // than its own: its ids so far went through a row whose last id only
        // grows, so exceed every row's.
        let floor = if me == thread_index::NO_INDEX {
            floor.max(self.root.max_last_id())
        } else {
            floor
        };
        let row = self.root.row(me);
        let tag = row.index as u64 + 1;
        let last = &row.row.last_id;
        if row.owned {
            let id = self.id_after(floor.max(last.load(SeqCst)), tag)?;
            last.store(id, SeqCst);
            return Some(id);
        }
        let mut seen = last.load(SeqCst);
        loop {
            let id = self.id_after(floor.max(seen), tag)?;
            match last.compare_exchange_weak(seen, id, SeqCst, SeqCst) {
                Ok(_) => return Some(id),
                Err(now) => seen = now,
            }
        }
    }

    /// The smallest id with `tag` above `floor`'s sequence part, if the
    /// sequence has room: over 2^56 of them, more than four years of a
    /// billion requests a second.
    fn id_after(&self, floor: u64, tag: u64) -> Option<u64> {
        let sequence = (floor >> self.tag_bits) + 1;
        (sequence < 1 << (64 - self.tag_bits)).then_some((sequence << self.tag_bits) | tag)
    }

    fn release(&self, held: &Held) {
        let hold = thread_index::hold(); // see `thread_index`
        let me = hold.index();
        self.root.row(me).count_released();
        let waiters = {
            let _pin = epoch::pin();
            self.put_back_all(&held.nodes, me, held.id)
        };
        if waiters {
            let nodes = &held.nodes;
            self.grant_pass(&mut self.lock_queue(), Scope::Near { nodes, after: 0 });
        }
    }

    fn lock_queue(&self) -> QueueGuard<'_> {
        QueueGuard::new(&self.queue)
    }

    /// Removes and returns request `seq` if it has been granted, issuing its
    /// fencing id now, on the thread that picks it up: above its grant's
    /// floor and this thread's last id. No conflicting request can be granted
    /// between the grant and now, since this one holds.
    pub(crate) fn take_granted(&self, queue: &mut Queue, seq: u64) -> Option<Held> {
        let Status::Granted { floor } = queue.waiters.get(&seq)?.status else {
            return None;
        };
        let hold = thread_index::hold(); // see `thread_index`
        let me = hold.index();
        let Some(id) = self.issue_id(me, floor) else {
            let waiter = &queue.waiters[&seq];
            let _pin = epoch::pin();
            self.put_back_all(&waiter.nodes, me, 0);
            // Withdraw it, or `Drop` of the future would release it again.
            queue.waiters.remove(&seq);
            self.root.row(me).count_released();
            ids_exhausted();
        };
        let waiter = queue.waiters.remove(&seq).expect("present");
        Some(Held {
            id,
            nodes: waiter.nodes,
        })
    }

    /// Grants, in sequence order, every waiter in `scope` that conflicts
    /// with no earlier waiter and with nothing held; wakes them. A waiter
    /// outside the scope cannot have become grantable (see [`Scope`]).
    /// Each check costs the waiter's node count (the queue indexes waiters
    /// by node and mode), not a comparison with every earlier waiter.
    fn grant_pass(&self, queue: &mut Queue, scope: Scope<'_>) {
        let seqs: Vec<u64> = match scope {
            Scope::All => queue.waiters.keys().copied().collect(),
            Scope::Only(seq) => vec![seq],
            Scope::Near { nodes, after } => queue
                .conflicting_waiters(nodes, after)
                .into_iter()
                .collect(),
        };
        if seqs.is_empty() {
            return;
        }
        let hold = thread_index::hold(); // see `thread_index`
        let me = hold.index();
        let mut woke_blocking = false;
        for seq in seqs {
            let Some(waiter) = queue.waiters.get(&seq) else {
                continue;
            };
            if !matches!(waiter.status, Status::Waiting { .. })
                || queue.earlier_conflict(&waiter.nodes, seq)
            {
                continue;
            }
            // The waiter's flags keep its nodes linked and allocated.
            let Ok(floor) = self.acquire_all(&waiter.nodes, me, false) else {
                continue;
            };
            let floor = floor.max(waiter.floor);
            let mut waiter = queue.waiters.remove(&seq).expect("present");
            queue.count_out(&waiter.nodes, seq);
            match std::mem::replace(&mut waiter.status, Status::Granted { floor }) {
                Status::Waiting { waker: Some(waker) } => queue.to_wake.push(waker),
                _ => woke_blocking = true,
            }
            self.root.row(me).count_granted();
            queue.waiters.insert(seq, waiter);
        }
        if woke_blocking {
            self.granted.notify_all();
        }
    }

    /// Withdraws request `seq`, granted or not, and lets others move.
    fn cancel(&self, queue: &mut Queue, seq: u64) {
        let Some(waiter) = queue.waiters.remove(&seq) else {
            return;
        };
        let was_granted = matches!(waiter.status, Status::Granted { .. });
        match waiter.status {
            Status::Granted { floor } => {
                // Granted but never picked up: no id was issued; its floor
                // is a stamp every later conflicting request exceeds anyway.
                let hold = thread_index::hold(); // see `thread_index`
                let me = hold.index();
                self.root.row(me).count_released();
                let _pin = epoch::pin();
                self.put_back_all(&waiter.nodes, me, floor);
            }
            Status::Waiting { waker } => {
                queue.count_out(&waiter.nodes, seq);
                // Dropped once the queue is unlocked (see `Queue::to_drop`).
                queue.to_drop.extend(waker);
            }
        }
        // A grant never picked up held; a waiter could only block later ones.
        let after = if was_granted { 0 } else { seq };
        let nodes = &waiter.nodes;
        self.grant_pass(queue, Scope::Near { nodes, after });
    }
}

#[cfg(all(test, not(loom)))]
mod regressions;
#[cfg(all(test, not(loom)))]
mod regressions_issue15;
#[cfg(all(test, not(loom)))]
mod tests;
