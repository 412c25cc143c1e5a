//! Rendezvous (highest random weight) hashing: which member should claim
//! a free namespace. Every instance computes the same answer from the same
//! member list, and a member joining or leaving moves only the namespaces
//! it wins or held. The hash must agree across instances and versions, so
//! it is FNV-1a with a final mix, not the standard library's seeded one.

/// The member that should own `name`, if there are members.
pub fn winner<'a>(members: &'a [String], name: &str) -> Option<&'a String> {
    members
        .iter()
        .max_by_key(|url| (score(url, name), url.as_str()))
}

fn score(member: &str, name: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in member.bytes().chain([0]).chain(name.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finaliser: FNV's high bits alone mix poorly.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("http://127.0.0.1:{}", 9000 + i))
            .collect()
    }

    #[test]
    fn namespaces_spread_and_only_a_leaver_s_move() {
        let three = members(3);
        let mut counts = [0usize; 3];
        let names: Vec<String> = (0..3000).map(|i| format!("ns-{i}")).collect();
        for name in &names {
            let w = winner(&three, name).unwrap();
            counts[three.iter().position(|m| m == w).unwrap()] += 1;
        }
        for c in counts {
            assert!((800..1200).contains(&c), "uneven spread: {counts:?}");
        }
        // Member 2 leaves: only its namespaces move.
        let two = &three[..2];
        for name in &names {
            let before = winner(&three, name).unwrap();
            let after = winner(two, name).unwrap();
            if before != &three[2] {
                assert_eq!(before, after, "{name} moved although its owner stayed");
            }
        }
        assert_eq!(winner(&[], "x"), None);
    }
}
