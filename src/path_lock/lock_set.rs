//! [`LockSet`], the public description of a request, and [`Plan`], what the
//! lock makes of it: the nodes it touches with their joined modes, and the
//! resources for the exact conflict test between requests.

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
        let mut plan = Plan::default();
        for (mode, path) in &self.resources {
            plan.add(*mode, path);
        }
        plan.finish()
    }
}

/// A request as the lock sees it: every node it touches with the join of its
/// modes there, and its resources for the exact conflict test. All keys are
/// spans of one buffer. A path's key writes each segment as `len:segment`,
/// so the key of a path prefix is exactly a string prefix of the key.
#[derive(Debug, Default)]
pub(crate) struct Plan {
    keys: String,
    /// (key span, mode), one per node, root (the empty key) included.
    nodes: Vec<(usize, usize, NodeMode)>,
    /// (mode, key span) of each resource.
    resources: Vec<(Mode, usize, usize)>,
}

impl Plan {
    /// The plan of a one-resource request.
    pub(crate) fn single(mode: Mode, path: impl IntoIterator<Item = impl AsRef<str>>) -> Plan {
        let path = path.into_iter();
        let depth = path.size_hint().0;
        let mut plan = Plan {
            keys: String::with_capacity(depth * 16),
            nodes: Vec::with_capacity(depth + 1),
            resources: Vec::with_capacity(1),
        };
        plan.add(mode, path);
        plan
    }

    fn add(&mut self, mode: Mode, path: impl IntoIterator<Item = impl AsRef<str>>) {
        let start = self.keys.len();
        for segment in path {
            self.nodes
                .push((start, self.keys.len(), NodeMode::intention(mode)));
            let segment = segment.as_ref();
            push_decimal(&mut self.keys, segment.len());
            self.keys.push(':');
            self.keys.push_str(segment);
        }
        self.nodes
            .push((start, self.keys.len(), NodeMode::target(mode)));
        self.resources.push((mode, start, self.keys.len()));
    }

    /// Joins the modes of nodes that several resources touch.
    ///
    /// Sort the resources by key: a node two resources share is a common
    /// prefix of their keys, hence of every key sorted between them, so each
    /// resource only needs merging with its sorted predecessor's chain of
    /// prefixes, down to their longest common prefix.
    fn finish(mut self) -> Plan {
        if self.resources.len() < 2 {
            return self;
        }
        let key = |&(_, s, e): &(Mode, usize, usize)| &self.keys[s..e];
        let mut order: Vec<usize> = (0..self.resources.len()).collect();
        order.sort_by(|&a, &b| key(&self.resources[a]).cmp(key(&self.resources[b])));
        // Each resource's nodes are a run of `self.nodes`: its root, then
        // one per segment.
        let mut runs = Vec::with_capacity(self.resources.len());
        let mut at = 0;
        for resource in &self.resources {
            let len = depth(key(resource)) + 1;
            runs.push(at..at + len);
            at += len;
        }
        let mut merged: Vec<(usize, usize, NodeMode)> = Vec::with_capacity(self.nodes.len());
        let mut chain: Vec<(usize, usize)> = Vec::new(); // (key length, index in `merged`)
        let mut previous = "";
        for &r in &order {
            let this = key(&self.resources[r]);
            let common = this
                .bytes()
                .zip(previous.bytes())
                .take_while(|(a, b)| a == b)
                .count();
            let mut next_chain = Vec::with_capacity(runs[r].len());
            for &(s, e, mode) in &self.nodes[runs[r].clone()] {
                let len = e - s;
                match chain
                    .iter()
                    .find(|&&(l, _)| l == len)
                    .filter(|_| len <= common)
                {
                    Some(&(_, i)) => {
                        merged[i].2 = merged[i].2.join(mode);
                        next_chain.push((len, i));
                    }
                    None => {
                        next_chain.push((len, merged.len()));
                        merged.push((s, e, mode));
                    }
                }
            }
            chain = next_chain;
            previous = this;
        }
        self.nodes = merged;
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    /// Every node touched: its key and the request's mode there.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = (&str, NodeMode)> + '_ {
        self.nodes.iter().map(|&(s, e, m)| (&self.keys[s..e], m))
    }

    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    fn resources(&self) -> impl Iterator<Item = (Mode, &str)> + '_ {
        self.resources
            .iter()
            .map(|&(m, s, e)| (m, &self.keys[s..e]))
    }

    /// Whether two requests conflict: a pair of resources where one path is
    /// a prefix of (or equal to) the other and one of them writes.
    pub(crate) fn conflicts(&self, other: &Plan) -> bool {
        self.resources().any(|(m1, p1)| {
            other.resources().any(|(m2, p2)| {
                (m1 == Mode::Write || m2 == Mode::Write)
                    && (p1.starts_with(p2) || p2.starts_with(p1))
            })
        })
    }
}

/// The number of segments a key encodes (`len:segment` each).
pub(crate) fn depth(mut key: &str) -> usize {
    let mut depth = 0;
    while let Some((len, rest)) = key.split_once(':') {
        let len: usize = len.parse().expect("keys are well formed");
        key = &rest[len..];
        depth += 1;
    }
    depth
}

fn push_decimal(out: &mut String, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend(digits[i..].iter().map(|&d| char::from(d)));
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
    fn sets_join_every_shared_node_exactly_once() {
        let p = plan(
            LockSet::new()
                .read(["a", "b", "c"])
                .write(["x"])
                .read(["a", "b"])
                .write(["a", "z"])
                .read(["a", "b", "c"]),
        );
        let mut keys: Vec<_> = p.nodes().map(|(k, _)| k.to_owned()).collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "a node appears twice");
        let mode = |k: &str| p.nodes().find(|(key, _)| *key == k).unwrap().1;
        assert_eq!(mode(""), NodeMode::intention(Mode::Write)); // IS ⊔ IX
        assert_eq!(mode("1:a"), NodeMode::intention(Mode::Write));
        assert_eq!(mode("1:a1:b"), NodeMode::target(Mode::Read));
        assert_eq!(mode("1:a1:b1:c"), NodeMode::target(Mode::Read));
        assert_eq!(mode("1:x"), NodeMode::target(Mode::Write));
        assert_eq!(n, 6);
    }

    #[test]
    fn a_root_resource_in_a_set_joins_too() {
        let p = plan(
            LockSet::new()
                .read(Vec::<String>::new())
                .write(["a"])
                .read(Vec::<String>::new()),
        );
        let modes: Vec<_> = p.nodes().collect();
        // The root: S (root reads) ⊔ IX (a's write) = SIX.
        let six = NodeMode::target(Mode::Read).join(NodeMode::intention(Mode::Write));
        assert_eq!(modes, [("", six), ("1:a", NodeMode::target(Mode::Write))]);
    }

    #[test]
    fn node_depth_is_read_off_the_key() {
        assert_eq!(depth(""), 0);
        assert_eq!(depth("4:user"), 1);
        assert_eq!(depth("3:a:b1:c"), 2, "segments may contain ':'");
    }

    #[test]
    fn long_segments_encode_their_length() {
        let p = plan(LockSet::new().read(["x".repeat(123)]));
        let (key, _) = p.nodes().last().unwrap();
        assert_eq!(key, format!("123:{}", "x".repeat(123)));
    }

    #[test]
    fn redundant_resources_join_per_node() {
        let p = plan(LockSet::new().write(["user"]).read(["user", "x"]));
        let modes: Vec<_> = p.nodes().collect();
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
