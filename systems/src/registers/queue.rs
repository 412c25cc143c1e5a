//! The producer/consumer part: one producer adds random strings to a shared
//! `RouterTable` under increasing keys and publishes how many it has added
//! through a `Watch`; consumers scan the keys, and whoever `remove`s a key
//! takes its string. `remove` is atomic, so each string is taken exactly
//! once, and a consumer with nothing left to scan waits on the `Watch`.
use std::thread;
use std::time::Duration;

use rand::Rng;
use shardlock::{RouterTable, Watch};

/// A string of 4 to 10 lowercase letters.
pub fn random_string(rng: &mut impl Rng) -> String {
    let len = rng.random_range(4..=10);
    (0..len)
        .map(|_| char::from(rng.random_range(b'a'..=b'z')))
        .collect()
}

/// What a run produced and who took what.
#[derive(Debug)]
pub struct Outcome {
    pub produced: Vec<String>,
    /// (consumer's thread name, string), in the order taken per consumer.
    pub consumed: Vec<(String, String)>,
}

/// Runs one producer of `total` strings and `consumers` consumer threads
/// (named `consumer-1`, ...), printing each take with the taker's name.
pub fn run(total: u64, consumers: usize) -> Outcome {
    let items: RouterTable<u64, String> = RouterTable::new();
    let produced = Watch::new(0u64);
    let consumed = std::sync::Mutex::new(Vec::new());
    let made = thread::scope(|s| {
        for c in 1..=consumers {
            let (items, produced, consumed) = (&items, &produced, &consumed);
            thread::Builder::new()
                .name(format!("consumer-{c}"))
                .spawn_scoped(s, move || {
                    let me = thread::current().name().unwrap_or("consumer").to_owned();
                    let mut updates = produced.subscribe();
                    let mut next = 0;
                    while next < total {
                        if next < *produced.load() {
                            if let Some(item) = items.remove(&next) {
                                println!("{me} took {item:?}");
                                consumed.lock().unwrap().push((me.clone(), item));
                            }
                            next += 1;
                        } else {
                            // A short timeout only bounds the wait if the
                            // producer died; a store wakes it at once.
                            let _ = updates.wait_changed_timeout(Duration::from_millis(100));
                        }
                    }
                })
                .expect("spawn a consumer");
        }
        let mut rng = rand::rng();
        let mut made = Vec::new();
        for key in 0..total {
            let item = random_string(&mut rng);
            made.push(item.clone());
            items.insert(key, item);
            produced.store(key + 1);
        }
        made
    });
    Outcome {
        produced: made,
        consumed: consumed.into_inner().unwrap(),
    }
}
