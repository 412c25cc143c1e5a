//! Namespaces: one `PathLock` each, created on first use and dropped when
//! nothing refers to them (no session and no abandoned lock waiting out its
//! timeout).
//!
//! Lock ids never repeat within a namespace for the life of the process,
//! although a namespace is dropped when idle (Locktopus keeps every
//! namespace forever): a dropped namespace's last id is remembered, and a
//! namespace created again under its name counts on from there. The memory
//! is bounded: names are remembered exactly up to [`REMEMBERED_BYTES`] of
//! names, and the oldest beyond that are folded into a fixed table of
//! high-water marks indexed by a hash of the name, which a new namespace
//! whose name hashes there also starts above. So ids stay unique and
//! increasing per name; a name never seen starts at 1 unless its hash meets
//! a forgotten name's.
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use shardlock::PathLock;

use crate::cluster::Claim;

/// One namespace's lock space and counters.
#[derive(Default)]
pub struct Namespace {
    pub lock: Arc<PathLock>,
    last_id: AtomicU64,
    /// Resources of waiting and of held requests, and path segments of both
    /// (for `stats_v1`).
    pub resources_pending: AtomicU64,
    pub resources_held: AtomicU64,
    pub segments_live: AtomicU64,
    /// Locks kept for their abandon timeout after their connection ended.
    pub abandoned: AtomicU64,
    /// Cluster mode: this instance's claim on the namespace, which gives
    /// the ids' term and says whether it may still grant.
    claim: Option<Arc<Claim>>,
}

/// How many bytes of dropped namespaces' names are remembered exactly.
pub const REMEMBERED_BYTES: usize = 4 << 20;
/// High-water marks for names no longer remembered exactly.
const HIGH_WATER_SLOTS: usize = 4096;

impl Namespace {
    /// A namespace whose first lock id is `last_id + 1` and whose tree
    /// keeps at most about `idle_cache` bytes of idle nodes.
    fn new(last_id: u64, idle_cache: usize, claim: Option<Arc<Claim>>) -> Namespace {
        let floor = claim.as_ref().map_or(0, |c| c.floor());
        Namespace {
            lock: Arc::new(PathLock::with_idle_cache(idle_cache)),
            last_id: AtomicU64::new(last_id.max(floor)),
            claim,
            ..Namespace::default()
        }
    }

    /// Whether a lock may be granted now (always, but in cluster mode: while
    /// this instance's claim and lease are valid, and the id is within its
    /// term).
    pub fn may_grant(&self) -> bool {
        self.claim
            .as_ref()
            .is_none_or(|c| c.may_grant() && c.covers(self.last_id.load(Relaxed)))
    }

    /// The `stats_v1` of a dropped namespace: idle, its last id kept.
    fn dropped_stats(last_id: u64) -> StatsV1 {
        StatsV1 {
            last_group_id: last_id,
            path_count: 1,
            ..StatsV1::default()
        }
    }

    /// The next lock id: a per-namespace counter from 1 (in cluster mode,
    /// from the claim's term: `term << TERM_SHIFT | n`).
    pub fn next_id(&self) -> u64 {
        let Some(claim) = &self.claim else {
            return self.last_id.fetch_add(1, Relaxed) + 1;
        };
        let floor = claim.floor();
        let step = |last: u64| last.max(floor) + 1;
        let last = self
            .last_id
            .fetch_update(Relaxed, Relaxed, |last| Some(step(last)))
            .unwrap_or_else(|last| last);
        let id = step(last);
        claim.on_id(id);
        id
    }

    /// Locktopus's `stats_v1` body. Fields it derives from its own data
    /// structures are mapped to the closest figure of ours (see the README).
    pub fn stats(&self) -> StatsV1 {
        let lock = self.lock.stats();
        let (pending, held) = (
            self.resources_pending.load(Relaxed),
            self.resources_held.load(Relaxed),
        );
        StatsV1 {
            last_group_id: self.last_id.load(Relaxed),
            groups_pending: lock.waiting as u64,
            groups_acquired: lock.held as u64,
            locks_pending: pending,
            locks_acquired: held,
            lockref_count: pending + held,
            tokens_total: self.segments_live.load(Relaxed),
            tokens_unique: lock.nodes as u64,
            path_count: lock.nodes as u64 + 1,
        }
    }
}

/// The JSON of `GET /stats_v1`, field for field as Locktopus writes it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StatsV1 {
    #[serde(rename = "LastGroupID")]
    pub last_group_id: u64,
    pub groups_pending: u64,
    pub groups_acquired: u64,
    pub locks_pending: u64,
    pub locks_acquired: u64,
    pub lockref_count: u64,
    pub tokens_total: u64,
    pub tokens_unique: u64,
    pub path_count: u64,
}

struct Entry {
    namespace: Arc<Namespace>,
    /// Sessions connected to it.
    sessions: usize,
    /// Sessions plus abandoned locks still held.
    refs: usize,
}

/// Every live namespace, and the last ids of dropped ones.
pub struct Registry {
    entries: Mutex<HashMap<String, Entry>>,
    dropped: Mutex<Dropped>,
    /// What each namespace's tree may keep in idle nodes.
    idle_cache: usize,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(IDLE_CACHE_DEFAULT)
    }
}

/// `PathLock`'s own default idle cache.
const IDLE_CACHE_DEFAULT: usize = 4 << 20;

/// The last ids of dropped namespaces (see the module docs).
struct Dropped {
    exact: HashMap<String, u64>,
    /// Names in the order they were dropped (a name dropped again may
    /// appear twice; eviction skips names no longer in `exact`).
    order: VecDeque<String>,
    bytes: usize,
    high_water: Box<[u64]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Dropped {
    fn default() -> Self {
        Dropped {
            exact: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            high_water: vec![0; HIGH_WATER_SLOTS].into_boxed_slice(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl Dropped {
    fn slot(&self, name: &str) -> usize {
        self.hasher.hash_one(name) as usize % HIGH_WATER_SLOTS
    }

    /// The last id `name` had, or a bound above it (0 for a name never
    /// seen, unless a forgotten name shares its slot).
    fn last_id(&self, name: &str) -> u64 {
        self.exact
            .get(name)
            .copied()
            .unwrap_or(0)
            .max(self.high_water[self.slot(name)])
    }

    /// The exact last id of `name`, if remembered.
    fn exact(&self, name: &str) -> Option<u64> {
        self.exact.get(name).copied()
    }

    /// Forgets `name` (its namespace is live again, counting on).
    fn revive(&mut self, name: &str) {
        if self.exact.remove(name).is_some() {
            self.bytes -= name.len();
        }
    }

    fn remember(&mut self, name: &str, last_id: u64) {
        if last_id == 0 {
            return; // no id was given out: nothing to keep above
        }
        if self.exact.insert(name.to_owned(), last_id).is_none() {
            self.bytes += name.len();
        }
        self.order.push_back(name.to_owned());
        // Every remembered name is in `order` at least once, so this ends
        // with `bytes` in bound.
        while self.bytes > REMEMBERED_BYTES {
            let oldest = self
                .order
                .pop_front()
                .expect("remembered names are in order");
            if let Some(id) = self.exact.remove(&oldest) {
                self.bytes -= oldest.len();
                let slot = self.slot(&oldest);
                self.high_water[slot] = self.high_water[slot].max(id);
            }
        }
        // Stale entries (names revived or evicted) go once they are half.
        if self.order.len() > 2 * self.exact.len() + 64 {
            let mut seen = std::collections::HashSet::new();
            let exact = &self.exact;
            self.order
                .retain(|n| exact.contains_key(n) && seen.insert(n.clone()));
        }
    }
}

/// Why a session could not join a namespace.
#[derive(Debug, PartialEq, Eq)]
pub enum JoinError {
    /// Too many sessions in it.
    Full,
    /// Cluster mode: the claim was revoked (the instance fenced).
    Fenced,
}

impl Registry {
    /// No namespaces yet; each tree will keep at most about `idle_cache`
    /// bytes of idle nodes.
    pub fn new(idle_cache: usize) -> Self {
        Registry {
            entries: Mutex::default(),
            dropped: Mutex::default(),
            idle_cache,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dropped(&self) -> std::sync::MutexGuard<'_, Dropped> {
        self.dropped.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `stats_v1` of namespace `name`: live, or dropped and remembered.
    pub fn stats(&self, name: &str) -> Option<StatsV1> {
        if let Some(ns) = self.get(name) {
            return Some(ns.stats());
        }
        self.dropped().exact(name).map(Namespace::dropped_stats)
    }

    /// Joins (creating if needed) namespace `name` as a session; in
    /// cluster mode, under `claim`.
    pub fn join(
        self: &Arc<Self>,
        name: &str,
        max_sessions: usize,
        claim: Option<&Arc<Claim>>,
    ) -> Result<Member, JoinError> {
        let mut entries = self.entries();
        // Checked under the registry's lock: a fence revokes claims first,
        // so a namespace made here under a revoked claim cannot appear.
        if claim.is_some_and(|c| c.is_revoked()) {
            return Err(JoinError::Fenced);
        }
        // A namespace left from an earlier claim (the instance fenced and
        // claimed it again) is replaced; its sessions are closing.
        let stale = entries
            .get(name)
            .is_some_and(|e| match (&e.namespace.claim, claim) {
                (Some(old), Some(new)) => !Arc::ptr_eq(old, new),
                (old, new) => old.is_some() != new.is_some(),
            });
        if stale {
            let gone = entries.remove(name).expect("just found");
            self.dropped()
                .remember(name, gone.namespace.last_id.load(Relaxed));
        }
        let entry = entries.entry(name.to_owned()).or_insert_with(|| {
            let mut dropped = self.dropped();
            let last_id = dropped.last_id(name);
            dropped.revive(name);
            Entry {
                namespace: Arc::new(Namespace::new(last_id, self.idle_cache, claim.cloned())),
                sessions: 0,
                refs: 0,
            }
        });
        if entry.sessions >= max_sessions {
            if entry.refs == 0 {
                let gone = entries.remove(name).expect("just found");
                self.dropped()
                    .remember(name, gone.namespace.last_id.load(Relaxed));
            }
            return Err(JoinError::Full);
        }
        entry.sessions += 1;
        entry.refs += 1;
        Ok(Member {
            registry: self.clone(),
            name: name.to_owned(),
            namespace: entry.namespace.clone(),
            session: true,
        })
    }

    pub fn get(&self, name: &str) -> Option<Arc<Namespace>> {
        self.entries().get(name).map(|e| e.namespace.clone())
    }

    /// Names and namespaces, sorted by name.
    pub fn all(&self) -> Vec<(String, Arc<Namespace>)> {
        let mut all: Vec<_> = self
            .entries()
            .iter()
            .map(|(n, e)| (n.clone(), e.namespace.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn leave(&self, name: &str, namespace: &Arc<Namespace>, session: bool) {
        let mut entries = self.entries();
        let Some(entry) = entries
            .get_mut(name)
            .filter(|e| Arc::ptr_eq(&e.namespace, namespace))
        else {
            return; // replaced (see `join`): nothing counts it any more
        };
        entry.refs -= 1;
        if session {
            entry.sessions -= 1;
        }
        if entry.refs == 0 {
            let gone = entries.remove(name).expect("just found");
            self.dropped()
                .remember(name, gone.namespace.last_id.load(Relaxed));
        }
    }

    /// Counts one more reference to `namespace`, if it is still the one
    /// registered under `name`.
    fn retain(&self, name: &str, namespace: &Arc<Namespace>) {
        if let Some(entry) = self
            .entries()
            .get_mut(name)
            .filter(|e| Arc::ptr_eq(&e.namespace, namespace))
        {
            entry.refs += 1;
        }
    }
}

/// A reference that keeps a namespace alive: a session's, or an abandoned
/// lock's (see [`Member::keep_for_lock`]).
pub struct Member {
    registry: Arc<Registry>,
    name: String,
    namespace: Arc<Namespace>,
    session: bool,
}

impl Member {
    pub fn namespace(&self) -> &Arc<Namespace> {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A reference for a lock that outlives its session.
    pub fn keep_for_lock(&self) -> Member {
        self.registry.retain(&self.name, &self.namespace);
        Member {
            registry: self.registry.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
            session: false,
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.registry
            .leave(&self.name, &self.namespace, self.session);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(registry: &Arc<Registry>, name: &str, n: usize) -> Vec<u64> {
        let member = registry.join(name, 10, None).unwrap();
        (0..n).map(|_| member.namespace().next_id()).collect()
    }

    #[test]
    fn ids_count_on_after_a_namespace_is_dropped_and_made_again() {
        let registry = Arc::new(Registry::default());
        assert_eq!(ids(&registry, "a", 3), [1, 2, 3]);
        assert_eq!(registry.len(), 0, "dropped once idle");
        assert_eq!(registry.stats("a").unwrap().last_group_id, 3);
        assert!(registry.stats("never").is_none());
        assert_eq!(ids(&registry, "a", 2), [4, 5]);
        assert_eq!(ids(&registry, "b", 1), [1]);
    }

    #[test]
    fn forgotten_names_still_never_repeat_an_id() {
        let registry = Arc::new(Registry::default());
        assert_eq!(ids(&registry, "first", 5), [1, 2, 3, 4, 5]);
        // Drop enough other long names that "first" is no longer
        // remembered exactly.
        let long = "x".repeat(64 << 10);
        for i in 0..(REMEMBERED_BYTES / long.len() + 2) {
            ids(&registry, &format!("{long}{i}"), 1);
        }
        assert!(registry.stats("first").is_none(), "forgotten exactly");
        assert!(registry.dropped().bytes <= REMEMBERED_BYTES);
        assert_eq!(ids(&registry, "first", 1), [6]);
    }
}
