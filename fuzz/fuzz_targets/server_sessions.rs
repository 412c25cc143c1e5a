//! Many sessions of shardlock-server's protocol against one namespace's
//! `PathLock`, through the server's own decoder and lock-set builder, in
//! arbitrary interleavings: requests, releases (which withdraw waiting
//! ones), connections that vanish, and polls of waiting requests. It
//! reaches the grant pass and a tiny idle-node cache. Checks: no two held
//! requests conflict (a ghost checker on paths), each reply matches its
//! session's state, and once every session is gone nothing is held or
//! waiting and the idle nodes stay within their bound.
#![no_main]
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shardlock::{LockError, Mode, OwnedPathGuard, PathLock, PathLockStats};
use shardlock_server::protocol::{lock_set, Command, Limits, Session, State};

const SESSIONS: usize = 4;
const IDLE_CACHE: usize = 2048;

#[derive(Arbitrary, Debug)]
enum Event {
    /// Session `session` asks for these (write?, path) resources; path
    /// bytes pick segments from a small alphabet, so requests overlap.
    Lock {
        session: u8,
        resources: Vec<(bool, Vec<u8>)>,
    },
    Release {
        session: u8,
    },
    /// The connection drops, whatever it holds or waits for.
    Vanish {
        session: u8,
    },
}

type Resources = Vec<(Mode, Vec<String>)>;
type Pending = Pin<Box<dyn Future<Output = Result<OwnedPathGuard, LockError>> + Send>>;

#[derive(Default)]
struct Slot {
    session: Session,
    pending: Option<(Pending, Resources)>,
    held: Option<(OwnedPathGuard, Resources)>,
}

fn conflicts(a: &Resources, b: &Resources) -> bool {
    a.iter().any(|(ma, pa)| {
        b.iter().any(|(mb, pb)| {
            let n = pa.len().min(pb.len());
            (*ma == Mode::Write || *mb == Mode::Write) && pa[..n] == pb[..n]
        })
    })
}

/// Records slot `me`'s grant, panicking if another holder conflicts.
fn grant(slots: &mut [Slot], me: usize, guard: OwnedPathGuard, resources: Resources) {
    for (other, slot) in slots.iter().enumerate() {
        if let Some((_, theirs)) = &slot.held {
            assert!(
                other == me || !conflicts(theirs, &resources),
                "session {me} got {resources:?} while session {other} holds {theirs:?}"
            );
        }
    }
    let id = slots[me].session.id();
    let line = slots[me].session.acquired();
    assert!(
        line.contains(&format!("\"id\":\"{id}\"")) && line.contains("acquired"),
        "{line}"
    );
    slots[me].held = Some((guard, resources));
}

/// Polls every waiting request once; grants those that are ready.
fn poll_waiting(slots: &mut [Slot]) {
    let mut cx = Context::from_waker(Waker::noop());
    for me in 0..slots.len() {
        let Some((future, _)) = &mut slots[me].pending else {
            continue;
        };
        if let Poll::Ready(result) = future.as_mut().poll(&mut cx) {
            let (_, resources) = slots[me].pending.take().expect("pending");
            grant(slots, me, result.expect("a lock has resources"), resources);
        }
    }
}

fuzz_target!(|events: Vec<Event>| {
    let limits = Limits {
        max_resources: 4,
        max_depth: 4,
        max_segment_bytes: 16,
    };
    let lock = Arc::new(PathLock::with_idle_cache(IDLE_CACHE));
    let mut slots: Vec<Slot> = (0..SESSIONS).map(|_| Slot::default()).collect();
    let mut next_id = 0u64;
    let mut cx = Context::from_waker(Waker::noop());
    let mut peak = 0;
    for event in events {
        match event {
            Event::Lock { session, resources } => {
                let me = usize::from(session) % SESSIONS;
                let resources: Vec<_> = resources
                    .into_iter()
                    .take(6)
                    .map(|(write, path)| {
                        let path: Vec<&str> = path.iter().take(5).map(|b| ["a", "b", "c"][usize::from(*b) % 3]).collect();
                        serde_json::json!({ "type": if write { "write" } else { "read" }, "path": path })
                    })
                    .collect();
                let text =
                    serde_json::json!({ "action": "lock", "resources": resources }).to_string();
                let command = slots[me].session.on_text(&text, &limits, || {
                    next_id += 1;
                    next_id
                });
                match command {
                    Ok(Command::Lock { resources, .. }) => {
                        let mut future: Pending =
                            Box::pin(lock.clone().lock_owned_async(lock_set(&resources)));
                        match future.as_mut().poll(&mut cx) {
                            Poll::Ready(guard) => {
                                grant(&mut slots, me, guard.expect("resources"), resources)
                            }
                            Poll::Pending => {
                                let line = slots[me].session.enqueued();
                                assert!(line.contains("enqueued"), "{line}");
                                slots[me].pending = Some((future, resources));
                            }
                        }
                    }
                    Ok(Command::Release { .. }) => unreachable!("a lock frame"),
                    // A protocol error (empty set, limits, lock while not
                    // ready) ends the connection, as the server does.
                    Err(_) => slots[me] = Slot::default(),
                }
            }
            Event::Release { session } => {
                let me = usize::from(session) % SESSIONS;
                match slots[me]
                    .session
                    .on_text(r#"{"action":"release"}"#, &limits, || 0)
                {
                    Ok(Command::Release { was, .. }) => {
                        assert_eq!(was == State::Enqueued, slots[me].pending.is_some());
                        assert_eq!(was == State::Acquired, slots[me].held.is_some());
                        slots[me].pending = None;
                        slots[me].held = None;
                        let line = slots[me].session.released();
                        assert!(line.contains("ready"), "{line}");
                    }
                    Ok(Command::Lock { .. }) => unreachable!("a release frame"),
                    Err(_) => slots[me] = Slot::default(),
                }
            }
            Event::Vanish { session } => slots[usize::from(session) % SESSIONS] = Slot::default(),
        }
        poll_waiting(&mut slots);
        peak = peak.max(lock.node_bytes());
    }
    drop(slots);
    assert_eq!(
        lock.stats(),
        PathLockStats::default(),
        "something is still held or waiting"
    );
    // Idle nodes stay within the cache's bound, or twice what was in use
    // at the last sweep (sweeps wait for the tree to double, so they stay
    // amortised).
    drop(lock.read(["d"]));
    let cached = lock.node_bytes();
    assert!(
        cached <= 2 * peak.max(IDLE_CACHE) + 4096,
        "{cached} bytes cached, peak {peak}"
    );
});
