//! Two threads on overlapping keys of an `InlineTable<u64, [u64; 2]>`. A
//! value is `[version, version ^ mix(key)]`, only ever changed by
//! incrementing the version under `update` (or created at version 0), so
//! every read must see both halves agree (no torn pair, no value of another
//! key) and, per key and thread, versions that never go back.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shardlock::InlineTable;

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Op {
    Create(u8),
    Bump(u8),
    Read(u8),
    ReadMany(u8, u8),
}

fn mix(key: u64) -> u64 {
    key.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

fn check(key: u64, value: Option<[u64; 2]>, last: &mut [u64; 32]) {
    if let Some([version, check]) = value {
        assert_eq!(check, version ^ mix(key), "torn or foreign value for {key}");
        let slot = &mut last[key as usize];
        assert!(
            version >= *slot,
            "version of {key} went back: {slot} then {version}"
        );
        *slot = version;
    }
}

fuzz_target!(|ops: (Vec<Op>, Vec<Op>)| {
    let table: InlineTable<u64, [u64; 2]> =
        InlineTable::with_shards(1, 0, ahash::RandomState::with_seeds(1, 2, 3, 4));
    std::thread::scope(|s| {
        // Joined explicitly: a scope's implicit join does not wait for the
        // threads' thread-local destructors, which LeakSanitizer would then
        // see as leaks.
        let handles = [ops.0, ops.1].map(|ops| {
            let table = &table;
            s.spawn(move || {
                let mut last = [0u64; 32];
                for op in ops {
                    match op {
                        Op::Create(k) => {
                            let key = u64::from(k % 32);
                            let v = table.get_or_insert_with(key, || [0, mix(key)]);
                            check(key, Some(v), &mut last);
                        }
                        Op::Bump(k) => {
                            let key = u64::from(k % 32);
                            let v = table.update(&key, |v| {
                                *v = [v[0] + 1, (v[0] + 1) ^ mix(key)];
                                *v
                            });
                            check(key, v, &mut last);
                        }
                        Op::Read(k) => {
                            let key = u64::from(k % 32);
                            check(key, table.get(&key), &mut last);
                        }
                        Op::ReadMany(a, b) => {
                            let (a, b) = (u64::from(a % 32), u64::from(b % 32));
                            let [va, vb] = table.get_many([&a, &b]);
                            check(a, va, &mut last);
                            check(b, vb, &mut last);
                        }
                    }
                }
            })
        });
        for handle in handles {
            handle.join().unwrap();
        }
    });
    for (key, [version, check]) in table.iter() {
        assert_eq!(check, version ^ mix(key));
    }
});
