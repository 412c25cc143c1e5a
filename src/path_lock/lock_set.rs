//! [`LockSet`], the public description of a request, and [`Plan`], what the
//! lock makes of it: the nodes it touches with their joined modes, and the
//! resources for the exact conflict test between requests.

use std::fmt;
use std::sync::OnceLock;

use super::inline_vec::InlineVec;
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
#[derive(Clone, Default)]
pub struct LockSet {
    resources: Vec<(Mode, Vec<String>)>,
    /// What locking the set takes, planned on first use: a set built once
    /// and locked often is planned once.
    plan: OnceLock<Plan>,
}

impl PartialEq for LockSet {
    fn eq(&self, other: &Self) -> bool {
        self.resources == other.resources
    }
}

impl Eq for LockSet {}

impl fmt::Debug for LockSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockSet")
            .field("resources", &self.resources)
            .finish()
    }
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
        self.plan = OnceLock::new();
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

    pub(crate) fn plan(&self) -> &Plan {
        self.plan.get_or_init(|| {
            let mut plan = Plan::default();
            for (mode, path) in &self.resources {
                plan.add(*mode, path);
            }
            plan.finish()
        })
    }
}

/// A request as the lock sees it: every node it touches with the join of its
/// modes there, and its resources for the exact conflict test. All keys are
/// spans of one buffer. A path's key writes each segment as its length
/// (LEB128, one byte below 128) then its bytes, so the key of a path prefix
/// is exactly a byte prefix of the key, and no two paths share a key. The
/// buffers are inline up to a depth-8 path, so a one-path request of short
/// segments allocates nothing.
#[derive(Clone, Debug, Default)]
pub(crate) struct Plan {
    keys: InlineVec<u8, 64>,
    resources: InlineVec<Resource, 1>,
    /// A set's nodes, root (the empty key) included, each with the join of
    /// the set's modes there; a node's parent comes before it. Empty for
    /// one resource, whose nodes are its *chain*: the root, then one node per
    /// segment, node `i`'s parent being node `i - 1`.
    nodes: Vec<PlanNode>,
    /// The segments of the last resource added (of the one, for a chain).
    depth: u32,
}

/// A resource: its mode and key span.
#[derive(Clone, Copy, Debug)]
struct Resource {
    mode: Mode,
    start: u32,
    end: u32,
}

impl Default for Resource {
    fn default() -> Self {
        Resource {
            mode: Mode::Read,
            start: 0,
            end: 0,
        }
    }
}

/// Nodes a plan and a held request keep inline: a depth-8 path and the root.
pub(crate) const INLINE_NODES: usize = 9;

#[derive(Clone, Copy, Debug, Default)]
struct PlanNode {
    start: u32,
    end: u32,
    mode: NodeMode,
    /// The index of the node one segment up (`NO_PARENT` for the root).
    parent: u32,
}

const NO_PARENT: u32 = u32::MAX;

impl Plan {
    /// The plan of a one-resource request.
    #[inline(always)]
    pub(crate) fn single(mode: Mode, path: impl IntoIterator<Item = impl AsRef<str>>) -> Plan {
        let mut plan = Plan::default();
        plan.add(mode, path);
        plan
    }

    #[inline(always)]
    fn add(&mut self, mode: Mode, path: impl IntoIterator<Item = impl AsRef<str>>) {
        let start = self.keys.len();
        let mut depth = 0;
        for segment in path {
            let segment = segment.as_ref().as_bytes();
            push_length(&mut self.keys, segment.len());
            self.keys.extend_from_slice(segment);
            depth += 1;
        }
        assert!(
            u32::try_from(self.keys.len()).is_ok(),
            "shardlock: a lock request's paths exceed 4 GiB"
        );
        self.depth = depth;
        self.resources.push(Resource {
            mode,
            start: start as u32,
            end: self.keys.len() as u32,
        });
    }

    fn key_of(&self, start: u32, end: u32) -> &[u8] {
        &self.keys[start as usize..end as usize]
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
        let key = |r: &Resource| self.key_of(r.start, r.end);
        let mut order: Vec<usize> = (0..self.resources.len()).collect();
        order.sort_by(|&a, &b| key(&self.resources[a]).cmp(key(&self.resources[b])));
        // A resource's chain: its root, then one node per segment, as
        // (key length, mode).
        let chain_of = |r: Resource| -> Vec<(u32, NodeMode)> {
            let ends: Vec<usize> = std::iter::once(0).chain(segment_ends(key(&r))).collect();
            let depth = ends.len() - 1;
            ends.iter()
                .enumerate()
                .map(|(i, &len)| {
                    let mode = if i == depth {
                        NodeMode::target(r.mode)
                    } else {
                        NodeMode::intention(r.mode)
                    };
                    (len as u32, mode)
                })
                .collect()
        };
        let mut merged: Vec<PlanNode> = Vec::new();
        let mut chain: Vec<(u32, u32)> = Vec::new(); // (key length, index in `merged`)
        let mut previous: &[u8] = b"";
        for &r in &order {
            let this = key(&self.resources[r]);
            let common = this
                .iter()
                .zip(previous)
                .take_while(|(a, b)| a == b)
                .count() as u32;
            let resource = self.resources[r];
            let mut next_chain: Vec<(u32, u32)> = Vec::new();
            for (len, mode) in chain_of(resource) {
                match chain
                    .iter()
                    .find(|&&(l, _)| l == len)
                    .filter(|_| len <= common)
                {
                    Some(&(_, i)) => {
                        let joined = &mut merged[i as usize].mode;
                        *joined = joined.join(mode);
                        next_chain.push((len, i));
                    }
                    None => {
                        let parent = next_chain.last().map_or(NO_PARENT, |&(_, i)| i);
                        next_chain.push((len, merged.len() as u32));
                        merged.push(PlanNode {
                            start: resource.start,
                            end: resource.start + len,
                            mode,
                            parent,
                        });
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
    #[cfg(test)]
    pub(crate) fn nodes(&self) -> impl Iterator<Item = (&[u8], NodeMode)> + '_ {
        (0..self.node_count()).map(|i| (self.key(i), self.mode(i)))
    }

    /// Whether the plan is one resource, so its nodes are one chain: node
    /// `i`'s parent is node `i - 1`.
    #[inline]
    pub(crate) fn is_chain(&self) -> bool {
        self.resources.len() == 1
    }

    /// Node `i`'s key.
    #[inline(always)]
    pub(crate) fn key(&self, i: usize) -> &[u8] {
        if !self.is_chain() {
            let n = &self.nodes[i];
            return self.key_of(n.start, n.end);
        }
        let end = match i {
            0 => 0,
            i if i == self.depth as usize => self.keys.len(),
            i => segment_ends(&self.keys).nth(i - 1).expect("i ≤ depth"),
        };
        &self.keys[..end]
    }

    /// The request's mode on node `i`.
    #[inline]
    pub(crate) fn mode(&self, i: usize) -> NodeMode {
        if !self.is_chain() {
            return self.nodes[i].mode;
        }
        let mode = self.resources[0].mode;
        if i == self.depth as usize {
            NodeMode::target(mode)
        } else {
            NodeMode::intention(mode)
        }
    }

    /// The index of node `i`'s parent (`None` for the root).
    pub(crate) fn parent(&self, i: usize) -> Option<usize> {
        if self.is_chain() {
            return i.checked_sub(1);
        }
        let parent = self.nodes[i].parent;
        (parent != NO_PARENT).then_some(parent as usize)
    }

    #[inline]
    pub(crate) fn node_count(&self) -> usize {
        if self.is_chain() {
            self.depth as usize + 1
        } else {
            self.nodes.len()
        }
    }

    #[cfg(test)]
    fn resources(&self) -> impl Iterator<Item = (Mode, &[u8])> + '_ {
        self.resources
            .iter()
            .map(|r| (r.mode, self.key_of(r.start, r.end)))
    }

    /// Whether two requests conflict: a pair of resources where one path is
    /// a prefix of (or equal to) the other and one of them writes.
    /// (The grant rule decides conflicts per node, through the queue's
    /// index; this path-by-path form is the tests' reference.)
    #[cfg(test)]
    pub(crate) fn conflicts(&self, other: &Plan) -> bool {
        self.resources().any(|(m1, p1)| {
            other.resources().any(|(m2, p2)| {
                (m1 == Mode::Write || m2 == Mode::Write)
                    && (p1.starts_with(p2) || p2.starts_with(p1))
            })
        })
    }
}

/// The end of each segment of a key, in order: the keys of its prefixes.
pub(crate) fn segment_ends(key: &[u8]) -> impl Iterator<Item = usize> + '_ {
    segments(key).map(|(_, end)| end)
}

/// The bytes of each segment of a key, in order.
pub(crate) fn segment_bytes(key: &[u8]) -> impl Iterator<Item = &[u8]> + '_ {
    segments(key).map(|(start, end)| &key[start..end])
}

/// Where each segment's bytes start and end in a key (each is written as
/// its length, a base-128 varint, then its bytes).
fn segments(key: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut at = 0;
    std::iter::from_fn(move || {
        if at == key.len() {
            return None;
        }
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let byte = key[at];
            at += 1;
            len |= usize::from(byte & 0x7f) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let start = at;
        at += len;
        Some((start, at))
    })
}

/// The number of segments a key encodes.
#[cfg(test)]
fn depth(key: &[u8]) -> usize {
    segment_ends(key).count()
}

#[inline(always)]
fn push_length(out: &mut InlineVec<u8, 64>, n: usize) {
    write_length(n, |byte| out.push(byte));
}

/// A segment's length as a key writes it: base-128, low groups first, the
/// top bit set on every byte but the last. Returns the bytes and how many.
#[inline]
pub(crate) fn encode_length(n: usize) -> ([u8; 10], usize) {
    let (mut bytes, mut len) = ([0u8; 10], 0);
    write_length(n, |byte| {
        bytes[len] = byte;
        len += 1;
    });
    (bytes, len)
}

/// Writes `n` as [`encode_length`] describes, a byte at a time.
#[inline(always)]
fn write_length(mut n: usize, mut push: impl FnMut(u8)) {
    while n >= 0x80 {
        push(n as u8 | 0x80);
        n >>= 7;
    }
    push(n as u8);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn plan(set: LockSet) -> Plan {
        set.plan().clone()
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
        let mut keys: Vec<_> = p.nodes().map(|(k, _)| k.to_vec()).collect();
        let n = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), n, "a node appears twice");
        let mode = |k: &str| p.nodes().find(|(key, _)| *key == k.as_bytes()).unwrap().1;
        assert_eq!(mode(""), NodeMode::intention(Mode::Write)); // IS ⊔ IX
        assert_eq!(mode("\x01a"), NodeMode::intention(Mode::Write));
        assert_eq!(mode("\x01a\x01b"), NodeMode::target(Mode::Read));
        assert_eq!(mode("\x01a\x01b\x01c"), NodeMode::target(Mode::Read));
        assert_eq!(mode("\x01x"), NodeMode::target(Mode::Write));
        assert_eq!(n, 6);
        // Every node's parent is the node of its key minus the last segment.
        for i in 0..n {
            match p.parent(i) {
                None => assert_eq!(p.key(i), b""),
                Some(j) => {
                    assert!(j < i, "parents come first");
                    let key = p.key(i);
                    let up = segment_ends(key).last().map(|_| {
                        let ends: Vec<_> = segment_ends(key).collect();
                        ends.len().checked_sub(2).map_or(0, |k| ends[k])
                    });
                    assert_eq!(p.key(j), &key[..up.unwrap()]);
                }
            }
        }
    }

    #[test]
    fn a_root_resource_in_a_set_joins_too() {
        let p = plan(
            LockSet::new()
                .read(Vec::<String>::new())
                .write(["a"])
                .read(Vec::<String>::new()),
        );
        let modes: Vec<_> = p
            .nodes()
            .map(|(k, m)| (std::str::from_utf8(k).unwrap(), m))
            .collect();
        // The root: S (root reads) ⊔ IX (a's write) = SIX.
        let six = NodeMode::target(Mode::Read).join(NodeMode::intention(Mode::Write));
        assert_eq!(modes, [("", six), ("\x01a", NodeMode::target(Mode::Write))]);
    }

    #[test]
    fn node_depth_is_read_off_the_key() {
        assert_eq!(depth(b""), 0);
        assert_eq!(depth(b"\x04user"), 1);
        assert_eq!(depth(b"\x03a:b\x01c"), 2);
    }

    #[test]
    fn long_segments_encode_their_length() {
        let p = plan(LockSet::new().read(["x".repeat(300), "y".into()]));
        let (key, _) = p.nodes().last().unwrap();
        // 300 = 0b10_0101100: low seven bits with the continuation bit, then 2.
        let mut want = vec![0b1010_1100, 2];
        want.extend_from_slice("x".repeat(300).as_bytes());
        want.extend_from_slice(b"\x01y");
        assert_eq!(key, want);
        assert_eq!(segment_ends(key).collect::<Vec<_>>(), [302, 304]);
    }

    #[test]
    fn redundant_resources_join_per_node() {
        let p = plan(LockSet::new().write(["user"]).read(["user", "x"]));
        let modes: Vec<_> = p
            .nodes()
            .map(|(k, m)| (std::str::from_utf8(k).unwrap(), m))
            .collect();
        assert_eq!(
            modes,
            [
                ("", NodeMode::intention(Mode::Write)),
                ("\x04user", NodeMode::target(Mode::Write)),
                ("\x04user\x01x", NodeMode::target(Mode::Read)),
            ]
        );
    }
}
