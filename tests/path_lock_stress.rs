//! Stress: random lock sets on a small tree from several threads, mixing
//! blocking, timeout, try and async acquisition, with a ghost checker that
//! panics on any conflicting overlap or fencing id out of order, and a
//! watchdog against deadlock.
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::pin;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};
use std::time::Duration;

use shardlock::{LockSet, PathLock};

type Resource = (bool, Vec<&'static str>); // (write, path)

/// The resources currently held, by holder; panics on a conflicting overlap.
/// It also checks the fencing ids: unique, and above the id of every
/// conflicting request released before (a holder leaves the ghost before it
/// releases, so a later conflicting grant enters after that leave).
#[derive(Default)]
struct Ghost(Mutex<GhostState>);

#[derive(Default)]
struct GhostState {
    held: Vec<(u64, Vec<Resource>)>,
    /// Per path, the largest id released reading and writing it.
    released: HashMap<Vec<&'static str>, (u64, u64)>,
    ids: HashSet<u64>,
}

fn conflicts(a: &[Resource], b: &[Resource]) -> bool {
    a.iter().any(|(wa, pa)| {
        b.iter().any(|(wb, pb)| {
            let n = pa.len().min(pb.len());
            (*wa || *wb) && pa[..n] == pb[..n]
        })
    })
}

impl Ghost {
    fn enter(&self, id: u64, set: &[Resource]) {
        let mut ghost = self.0.lock().unwrap();
        if let Some((other, _)) = ghost.held.iter().find(|(_, h)| conflicts(h, set)) {
            panic!("request {id} {set:?} granted while conflicting request {other} holds");
        }
        assert!(ghost.ids.insert(id), "fencing id {id} issued twice");
        for (write, path) in set {
            for (other, &(read_id, write_id)) in &ghost.released {
                let n = path.len().min(other.len());
                if path[..n] != other[..n] {
                    continue; // neither is a prefix of the other
                }
                let before = if *write {
                    read_id.max(write_id)
                } else {
                    write_id
                };
                assert!(
                    id > before,
                    "request {id} {set:?} follows conflicting request {before} on {other:?}"
                );
            }
        }
        ghost.held.push((id, set.to_vec()));
    }

    fn leave(&self, id: u64) {
        let mut ghost = self.0.lock().unwrap();
        let at = ghost.held.iter().position(|(h, _)| *h == id).expect("held");
        let (_, set) = ghost.held.swap_remove(at);
        for (write, path) in set {
            let ids = ghost.released.entry(path).or_default();
            let slot = if write { &mut ids.1 } else { &mut ids.0 };
            *slot = (*slot).max(id);
        }
    }
}

struct ThreadWaker(Thread);
impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(thread::current())));
    loop {
        if let Poll::Ready(v) = future.as_mut().poll(&mut Context::from_waker(&waker)) {
            return v;
        }
        thread::park();
    }
}

/// A tiny xorshift, so each thread's sequence is reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn set(&mut self) -> Vec<Resource> {
        const SEGS: [&str; 3] = ["a", "b", "c"];
        (0..1 + self.next(3))
            .map(|_| {
                let depth = self.next(3) as usize;
                let path = (0..depth).map(|_| SEGS[self.next(3) as usize]).collect();
                (self.next(4) == 0, path) // one write in four
            })
            .collect()
    }
}

fn lock_set(set: &[Resource]) -> LockSet {
    set.iter().fold(LockSet::new(), |s, (w, p)| {
        if *w {
            s.write(p.clone())
        } else {
            s.read(p.clone())
        }
    })
}

#[test]
fn random_sets_never_overlap_and_never_deadlock() {
    const THREADS: u64 = 4;
    const ROUNDS: usize = 20_000;
    let lock = Arc::new(PathLock::new());
    let ghost = Arc::new(Ghost::default());
    let (done_tx, done_rx) = mpsc::channel();
    for t in 0..THREADS {
        let (lock, ghost, done_tx) = (lock.clone(), ghost.clone(), done_tx.clone());
        thread::spawn(move || {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (t + 1));
            let mut granted = 0;
            let mut last_id = 0;
            for _ in 0..ROUNDS {
                let set = rng.set();
                let request = lock_set(&set);
                let guard = match rng.next(4) {
                    0 => Some(lock.lock(&request).unwrap()),
                    1 => lock.try_lock(&request).ok(),
                    2 => lock.lock_timeout(&request, Duration::from_micros(200)).ok(),
                    _ => Some(block_on(lock.lock_async(&request)).unwrap()),
                };
                if let Some(guard) = guard {
                    assert!(guard.id() > last_id, "a thread's ids went backwards");
                    last_id = guard.id();
                    ghost.enter(guard.id(), &set);
                    if rng.next(8) == 0 {
                        thread::yield_now();
                    }
                    ghost.leave(guard.id());
                    drop(guard);
                    granted += 1;
                }
            }
            done_tx.send(granted).unwrap();
        });
    }
    let mut granted = 0;
    for _ in 0..THREADS {
        granted += done_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("a thread did not finish: deadlock or lost wake-up");
    }
    assert!(granted > 0);
    let stats = lock.stats();
    assert_eq!(
        (stats.held, stats.waiting, stats.nodes),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[test]
fn sweeps_run_beside_locks_and_releases() {
    // Far more distinct paths than the idle cache holds, so sweeps run while
    // other threads acquire and release nodes.
    let lock = Arc::new(PathLock::new());
    let handles: Vec<_> = (0..3u64)
        .map(|t| {
            let lock = lock.clone();
            thread::spawn(move || {
                let mut rng = Rng(0xDEAD_BEEF ^ (t + 1));
                for _ in 0..30_000 {
                    let leaf = rng.next(40_000).to_string();
                    let group = (rng.next(8)).to_string();
                    let guard = if rng.next(10) == 0 {
                        lock.write(["tenant", group.as_str(), leaf.as_str()])
                    } else {
                        lock.read(["tenant", group.as_str(), leaf.as_str()])
                    };
                    drop(guard);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let stats = lock.stats();
    assert_eq!(
        (stats.held, stats.waiting, stats.nodes),
        (0, 0, 0),
        "{stats:?}"
    );
}
