//! Side-by-side throughput of InlineTable, RouterTable and their peers on
//! bustle's workloads (the ones conc-map-bench uses), all in this one
//! process.
//!
//! ```text
//! cargo run --release --example compare [-- --rounds 3 --threads 1,2 --cap-log2 22 --workload NAME]
//! cargo run --release --example compare -- --help
//! ```
//!
//! The last rows give peak resident bytes per entry after inserting 2^cap-log2
//! u64 → u32 entries, each map in its own child process (`--workload memory`
//! prints only those).
//!
//! Prints Mop/s per map and the ratios of InlineTable and RouterTable to the
//! best peer in the same run (the median over rounds, rounds interleaved
//! across maps), and of RouterTable to papaya.
use std::sync::Arc;

use bustle::{Collection, CollectionHandle, Mix, Workload};
use shardlock::{InlineTable, RouterTable};

type Hasher = ahash::RandomState;

/// Generates a bustle adapter: `$ty` wrapped in an `Arc`, one handle per thread.
macro_rules! adapter {
    ($name:ident, $ty:ty, $new:expr, |$map:ident, $key:ident| {
        get: $get:expr, insert: $insert:expr, remove: $remove:expr, update: $update:expr $(,)?
    }) => {
        struct $name(Arc<$ty>);
        impl Collection for $name {
            type Handle = Self;
            fn with_capacity(capacity: usize) -> Self {
                let new: fn(usize) -> $ty = $new;
                $name(Arc::new(new(capacity)))
            }
            fn pin(&self) -> Self::Handle {
                $name(self.0.clone())
            }
        }
        impl CollectionHandle for $name {
            type Key = u64;
            fn get(&mut self, $key: &u64) -> bool {
                let $map = &*self.0;
                $get
            }
            fn insert(&mut self, $key: &u64) -> bool {
                let $map = &*self.0;
                $insert
            }
            fn remove(&mut self, $key: &u64) -> bool {
                let $map = &*self.0;
                $remove
            }
            fn update(&mut self, $key: &u64) -> bool {
                let $map = &*self.0;
                $update
            }
        }
    };
}

adapter!(Inline, InlineTable<u64, u32, Hasher>, |c| InlineTable::with_capacity_and_hasher(c, Hasher::new()), |m, k| {
    get: m.get(k).is_some(),
    insert: m.insert(*k, 0).is_none(),
    remove: m.remove(k).is_some(),
    update: m.update(k, |v| *v += 1).is_some(),
});

adapter!(Router, RouterTable<u64, u32, Hasher>, |c| RouterTable::with_capacity_and_hasher(c, Hasher::new()), |m, k| {
    get: m.contains_key(k),
    insert: m.insert(*k, 0).is_none(),
    remove: m.remove(k).is_some(),
    update: m.update(k, |v| *v += 1).is_some(),
});

adapter!(Dash, dashmap::DashMap<u64, u32, Hasher>, |c| dashmap::DashMap::with_capacity_and_hasher(c, Hasher::new()), |m, k| {
    get: m.get(k).is_some(),
    insert: m.insert(*k, 0).is_none(),
    remove: m.remove(k).is_some(),
    update: m.get_mut(k).map(|mut v| *v += 1).is_some(),
});

adapter!(Papaya, papaya::HashMap<u64, u32, Hasher>, |c| papaya::HashMap::with_capacity_and_hasher(c, Hasher::new()), |m, k| {
    get: m.pin().get(k).is_some(),
    insert: m.pin().insert(*k, 0).is_none(),
    remove: m.pin().remove(k).is_some(),
    update: m.pin().update(*k, |v| v + 1).is_some(),
});

adapter!(SccMap, scc::HashMap<u64, u32, Hasher>, |c| scc::HashMap::with_capacity_and_hasher(c, Hasher::new()), |m, k| {
    get: m.read_sync(k, |_, _| ()).is_some(),
    insert: m.insert_sync(*k, 0).is_ok(),
    remove: m.remove_sync(k).is_some(),
    update: m.update_sync(k, |_, v| *v += 1).is_some(),
});

adapter!(SccIndex, scc::HashIndex<u64, u32, Hasher>, |c| scc::HashIndex::with_capacity_and_hasher(c, Hasher::new()), |m, k| {
    get: m.peek_with(k, |_, _| ()).is_some(),
    insert: m.insert_sync(*k, 0).is_ok(),
    remove: m.remove_sync(k),
    update: m.get_sync(k).map(|mut e| { let v = *e.get() + 1; e.update(v) }).is_some(),
});

adapter!(Leap, leapfrog::LeapMap<u64, u32, Hasher>, |c| leapfrog::LeapMap::with_capacity_and_hasher(c, Hasher::new()), |m, k| {
    get: m.get(k).is_some(),
    insert: m.insert(*k, 0).is_none(),
    remove: m.remove(k).is_some(),
    update: m.update(k, 1).is_some(),
});

/// Ours first ([`OURS`] of them), then the peers.
const MAPS: [&str; 7] = [
    "InlineTable",
    "RouterTable",
    "dashmap",
    "papaya",
    "scc HashMap",
    "scc HashIndex",
    "leapfrog",
];
const OURS: usize = 2;
const PAPAYA: usize = 3;

fn run_map(index: usize, workload: &Workload) -> f64 {
    let m = match index {
        0 => workload.run_silently::<Inline>(),
        1 => workload.run_silently::<Router>(),
        2 => workload.run_silently::<Dash>(),
        3 => workload.run_silently::<Papaya>(),
        4 => workload.run_silently::<SccMap>(),
        5 => workload.run_silently::<SccIndex>(),
        _ => workload.run_silently::<Leap>(),
    };
    m.throughput / 1e6
}

/// Fills map `index` with `n` u64 → u32 entries (the adapter's insert),
/// starting from capacity `capacity`, and returns the process's peak
/// resident bytes. Run in a child process per map, so peaks are separate.
fn fill_peak(index: usize, capacity: usize, n: u64) -> u64 {
    fn fill<C: Collection>(capacity: usize, n: u64) -> C
    where
        C::Handle: CollectionHandle<Key = u64>,
    {
        let map = C::with_capacity(capacity);
        let mut handle = map.pin();
        for i in 0..n {
            // A bijective mix: distinct, well-spread keys.
            let key = (i ^ 0x5555_5555).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            assert!(handle.insert(&key));
        }
        map
    }
    let map: Box<dyn std::any::Any> = match index {
        0 => Box::new(fill::<Inline>(capacity, n)),
        1 => Box::new(fill::<Router>(capacity, n)),
        2 => Box::new(fill::<Dash>(capacity, n)),
        3 => Box::new(fill::<Papaya>(capacity, n)),
        4 => Box::new(fill::<SccMap>(capacity, n)),
        5 => Box::new(fill::<SccIndex>(capacity, n)),
        _ => Box::new(fill::<Leap>(capacity, n)),
    };
    let peak = peak_resident_bytes();
    drop(map);
    peak
}

/// `VmHWM` from `/proc/self/status` (Linux), in bytes.
fn peak_resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("Linux /proc");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Prints peak resident bytes per entry for each map, each filled in its own
/// child process, presized and grown from empty; the baseline (a child that
/// fills nothing) is subtracted.
fn memory_rows(cap_log2: u8) {
    let n = 1u64 << cap_log2;
    let child = |index: usize, capacity: usize, entries: u64| -> u64 {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--memory-child", &format!("{index},{capacity},{entries}")])
            .output()
            .expect("run a child");
        assert!(out.status.success(), "child failed: {out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let baseline = child(0, 0, 0);
    for (label, capacity) in [("presized", n as usize), ("grown", 0)] {
        let per_entry: Vec<f64> = (0..MAPS.len())
            .map(|i| {
                eprint!(
                    "\rmemory ({label}): {} ({}/{})...\x1b[K",
                    MAPS[i],
                    i + 1,
                    MAPS.len()
                );
                (child(i, capacity, n).saturating_sub(baseline)) as f64 / n as f64
            })
            .collect();
        eprint!("\r\x1b[K");
        let cells: Vec<String> = per_entry.iter().map(|b| format!("{b:.1}")).collect();
        let dash = per_entry[OURS];
        println!(
            "| memory, bytes/entry ({label}, 2^{cap_log2} entries) | - | {} | {:.2}× dashmap | {:.2}× dashmap | |",
            cells.join(" | "),
            per_entry[0] / dash,
            per_entry[1] / dash
        );
    }
}

fn workloads() -> Vec<(&'static str, Mix, f64)> {
    let mix = |read, insert, remove, update| Mix {
        read,
        insert,
        remove,
        update,
        upsert: 0,
    };
    vec![
        ("ReadHeavy", mix(98, 1, 1, 0), 0.75),
        ("read-only", mix(100, 0, 0, 0), 0.75),
        ("Exchange", mix(10, 40, 40, 10), 0.75),
        ("RapidGrow", mix(5, 80, 5, 10), 0.0),
    ]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The command line.
#[derive(clap::Parser)]
#[command(
    about = "InlineTable and RouterTable against dashmap, papaya, scc and leapfrog on bustle's \
             workloads, plus memory per entry; medians of interleaved rounds, in one process"
)]
struct Args {
    /// Interleaved rounds per workload (the median is printed; one round
    /// swings by 2× on a busy machine).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Thread counts to run each workload with.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    threads: Vec<usize>,
    /// Table capacity, as a power of two.
    #[arg(long, default_value_t = 22, value_parser = clap::value_parser!(u8).range(10..=30))]
    cap_log2: u8,
    /// Only this workload (any case), or only the memory rows.
    #[arg(long, ignore_case = true, value_parser = ["ReadHeavy", "read-only", "Exchange", "RapidGrow", "memory"])]
    workload: Option<String>,
    /// Internal: measure one map's memory in this child process.
    #[arg(long, hide = true)]
    memory_child: Option<String>,
}

fn main() {
    let args = <Args as clap::Parser>::parse();
    if let Some(spec) = args.memory_child {
        let [index, capacity, n]: [u64; 3] = spec
            .split(',')
            .map(|x| x.parse().expect("index,capacity,entries"))
            .collect::<Vec<_>>()
            .try_into()
            .expect("index,capacity,entries");
        println!("{}", fill_peak(index as usize, capacity as usize, n));
        return;
    }
    let (rounds, cap_log2, threads) = (args.rounds as usize, args.cap_log2, args.threads);
    // Names compare in any case; the table prints the canonical one.
    let only: Option<String> = args.workload.map(|w| w.to_ascii_lowercase());

    println!(
        "bustle workloads, u64 keys, u32 values, ahash, capacity 2^{cap_log2}, 1 operations multiple, \
         median of {rounds} round(s); Mop/s"
    );
    println!(
        "| workload | threads | {} | InlineTable ÷ best peer | RouterTable ÷ best peer | RouterTable ÷ papaya |",
        MAPS.join(" | ")
    );
    println!("|---|---|{}---|---|---|", "---|".repeat(MAPS.len()));
    let mut read_only = Vec::new();
    for (name, mix, prefill) in workloads() {
        if only
            .as_deref()
            .is_some_and(|w| w != name.to_ascii_lowercase())
        {
            continue;
        }
        for &t in &threads {
            let mut workload = Workload::new(t, mix);
            workload
                .initial_capacity_log2(cap_log2)
                .prefill_fraction(prefill)
                .operations(1.0);
            let mut samples = vec![Vec::new(); MAPS.len()];
            for round in 1..=rounds {
                eprint!("\r{name}, {t} thread(s): round {round}/{rounds}...");
                for (i, s) in samples.iter_mut().enumerate() {
                    s.push(run_map(i, &workload));
                }
            }
            eprint!("\r\x1b[K");
            let mops: Vec<f64> = samples.into_iter().map(median).collect();
            let best_peer = mops[OURS..].iter().copied().fold(f64::MIN, f64::max);
            let cells: Vec<String> = mops.iter().map(|m| format!("{m:.1}")).collect();
            println!(
                "| {name} | {t} | {} | {:.2}× | {:.2}× | {:.2}× |",
                cells.join(" | "),
                mops[0] / best_peer,
                mops[1] / best_peer,
                mops[1] / mops[PAPAYA]
            );
            if name == "read-only" {
                read_only.push((t, mops[0]));
            }
        }
    }
    if only.is_none() || only.as_deref() == Some("memory") {
        eprintln!("memory rows: each map filled in a child process (about a minute)");
        memory_rows(cap_log2);
    }
    if let (Some(&(1, one)), Some(&(2, two))) = (read_only.first(), read_only.get(1)) {
        println!(
            "\nInlineTable read-only scaling, 2 threads ÷ 1 thread: {:.2}",
            two / one
        );
    }
}
