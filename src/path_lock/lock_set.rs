//! [`LockSet`], the public description of a request, and [`Plan`], what the
//! lock makes of it: the nodes it touches with their joined modes, and the
//! resources for the exact conflict test between requests.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::node::{Mode, NodeMode};

/// A set of (mode, path) resources, locked as one unit.
///
/// Redundant resources are allowed (`write(["user"])` with
/// `read(["user", "x"])`): the request takes the join of its modes.
///
/// ```
/// use shardlock::{LockSet, Mode};
/// let set = LockSet::new()
///     .write(["reg", "A"])
///     .read(["reg", "B"])
///     .with(Mode::Read, ["config"]);
/// assert_eq!(set.len(), 3);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LockSet {
    resources: Vec<(Mode, Vec<String>)>,
}

impl LockSet {
    /// An empty set (locking it fails with `LockError::EmptySet`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `path` for reading.
    #[must_use]
    pub fn read(self, path: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        self.with(Mode::Read, path)
    }

    /// Adds `path` for writing.
    #[must_use]
    pub fn write(self, path: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        self.with(Mode::Write, path)
    }

    /// Adds `path` in `mode`.
    #[must_use]
    pub fn with(mut self, mode: Mode, path: impl IntoIterator<Item = impl AsRef<str>>) -> Self {
        let path = path.into_iter().map(|s| s.as_ref().to_owned()).collect();
        self.resources.push((mode, path));
        self
    }

    /// The number of resources.
    pub fn len(&self) -> usize {
        self.resources.len()
    }

    /// Whether the set has no resources.
    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    pub(crate) fn plan(&self) -> Plan {
        let mut nodes: BTreeMap<String, NodeMode> = BTreeMap::new();
        let mut resources = Vec::with_capacity(self.resources.len());
        for (mode, path) in &self.resources {
            // Each segment is written as `len:segment`, so the encoding of a
            // path prefix is exactly a string prefix of the encoding.
            let mut key = String::new();
            for segment in path {
                join(&mut nodes, &key, NodeMode::intention(*mode));
                let _ = write!(key, "{}:{}", segment.len(), segment);
            }
            join(&mut nodes, &key, NodeMode::target(*mode));
            resources.push((*mode, key));
        }
        Plan {
            nodes: nodes.into_iter().collect(),
            resources,
        }
    }
}

fn join(nodes: &mut BTreeMap<String, NodeMode>, key: &str, mode: NodeMode) {
    nodes
        .entry(key.to_owned())
        .and_modify(|m| *m = m.join(mode))
        .or_insert(mode);
}

/// A request as the lock sees it.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Every node touched (root = `""`), with the join of its modes there.
    pub(crate) nodes: Vec<(String, NodeMode)>,
    /// (mode, encoded path) of each resource.
    pub(crate) resources: Vec<(Mode, String)>,
}

impl Plan {
    /// Whether two requests conflict: a pair of resources where one path is
    /// a prefix of (or equal to) the other and one of them writes.
    pub(crate) fn conflicts(&self, other: &Plan) -> bool {
        self.resources.iter().any(|(m1, p1)| {
            other.resources.iter().any(|(m2, p2)| {
                (*m1 == Mode::Write || *m2 == Mode::Write)
                    && (p1.starts_with(p2.as_str()) || p2.starts_with(p1.as_str()))
            })
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn plan(set: LockSet) -> Plan {
        set.plan()
    }

    #[test]
    fn encoding_keeps_prefixes_and_separates_lookalikes() {
        let a = plan(LockSet::new().write(["ab"]));
        let b = plan(LockSet::new().read(["a", "b"]));
        assert!(!a.conflicts(&b), "[ab] is not a prefix of [a, b]");
        let c = plan(LockSet::new().read(["department/IT", "x"]));
        let d = plan(LockSet::new().write(["department/IT"]));
        assert!(c.conflicts(&d));
        let root = plan(LockSet::new().read(Vec::<String>::new()));
        assert!(root.conflicts(&d));
        assert!(!root.conflicts(&c), "reads never conflict");
    }

    #[test]
    fn redundant_resources_join_per_node() {
        let p = plan(LockSet::new().write(["user"]).read(["user", "x"]));
        let modes: Vec<_> = p.nodes.iter().map(|(k, m)| (k.as_str(), *m)).collect();
        assert_eq!(
            modes,
            [
                ("", NodeMode::intention(Mode::Write)),
                ("4:user", NodeMode::target(Mode::Write)),
                ("4:user1:x", NodeMode::target(Mode::Read)),
            ]
        );
    }
}
