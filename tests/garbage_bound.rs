//! RouterTable's garbage bound during a long churn, in a process of its own:
//! the epoch is process-global, so a thread of another test pinned for a
//! long time (a `for_each` over a big table) would hold this test's garbage
//! back and make the bound measure the other test.
use std::sync::Arc;

use shardlock::RouterTable;

mod common;

use common::run_threads;

/// Keys inserted before growth or shrinking stay visible throughout to a
/// reader, and retired memory stays bounded during a long churn.
#[test]
fn keys_stay_visible_across_growth_and_shrinking() {
    const STABLE: u64 = 100;
    let table = Arc::new(RouterTable::<u64, u64>::with_shards(
        4,
        0,
        Default::default(),
    ));
    for k in 0..STABLE {
        table.insert(k, k);
    }
    let rounds = if cfg!(debug_assertions) { 5 } else { 20 };
    let t2 = table.clone();
    run_threads(move |t| {
        if t == 0 {
            let mut retired = Vec::with_capacity(rounds as usize);
            for round in 0..rounds {
                // Grow to 20k entries, then shrink back.
                let base = 1_000_000 * (round + 1);
                for k in base..base + 20_000 {
                    t2.insert(k, k);
                }
                for k in base..base + 20_000 {
                    t2.remove(&k);
                }
                retired.push(t2.retired());
            }
            retired.sort_unstable();
            let (median, max) = (retired[retired.len() / 2], retired[retired.len() - 1]);
            // Typically a batch per shard awaiting a barrier plus one sealed
            // batch a reader still holds (see `# Memory`), about 2 x 4 x 312
            // here; a reader descheduled while pinned holds more back for a
            // while (a few rounds, on a loaded machine), so the bound is on
            // the median round. What must not happen is growth with the
            // churn: this retired 40,000 entries per round, 40,000 x rounds
            // in all.
            println!("retired at the end of a round: median {median}, most {max}");
            assert!(median < 20_000, "{median} retired at once (median round)");
        } else {
            for i in 0..200_000u64 {
                let k = i % STABLE;
                assert_eq!(t2.get(&k), Some(k), "a stable key vanished");
            }
        }
    });
}
