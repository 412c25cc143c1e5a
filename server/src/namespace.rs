//! Namespaces: one `PathLock` each, created on first use and dropped when
//! nothing refers to them (no session and no abandoned lock waiting out its
//! timeout).
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use shardlock::PathLock;

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
}

impl Namespace {
    /// The next lock id: a per-namespace counter from 1.
    pub fn next_id(&self) -> u64 {
        self.last_id.fetch_add(1, Relaxed) + 1
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

/// Every live namespace.
#[derive(Default)]
pub struct Registry {
    entries: Mutex<HashMap<String, Entry>>,
}

/// Too many sessions in one namespace.
#[derive(Debug)]
pub struct NamespaceFull;

impl Registry {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Joins (creating if needed) namespace `name` as a session.
    pub fn join(
        self: &Arc<Self>,
        name: &str,
        max_sessions: usize,
    ) -> Result<Member, NamespaceFull> {
        let mut entries = self.entries();
        let entry = entries.entry(name.to_owned()).or_insert_with(|| Entry {
            namespace: Arc::default(),
            sessions: 0,
            refs: 0,
        });
        if entry.sessions >= max_sessions {
            if entry.refs == 0 {
                entries.remove(name);
            }
            return Err(NamespaceFull);
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

    fn leave(&self, name: &str, session: bool) {
        let mut entries = self.entries();
        let entry = entries
            .get_mut(name)
            .expect("a member's namespace is registered");
        entry.refs -= 1;
        if session {
            entry.sessions -= 1;
        }
        if entry.refs == 0 {
            entries.remove(name);
        }
    }

    fn retain(&self, name: &str) {
        self.entries()
            .get_mut(name)
            .expect("a member's namespace is registered")
            .refs += 1;
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
        self.registry.retain(&self.name);
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
        self.registry.leave(&self.name, self.session);
    }
}
