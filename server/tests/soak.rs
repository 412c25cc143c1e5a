//! A bounded soak: 64 clients on a small tree take random lock sets,
//! release them, and drop their connections abruptly while holding or
//! waiting, while attackers run beside them: a ping flood that never
//! reads, a client that locks the largest sets the limits allow (deep
//! paths filling a message) and releases them, and a client that leaves
//! long abandoned locks behind past their limit. A ghost checker on the
//! client side panics if two holders ever conflict; at the end nothing is
//! held or waiting, every session and namespace is gone, no abandoned lock
//! is left, and the lock trees take no memory.
use std::sync::{Arc, Mutex};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};

use rand::{Rng, SeedableRng};
use shardlock_client::{Client, Mode, State};
use shardlock_server::config::Config;

mod common;

type Resource = (Mode, Vec<&'static str>);

fn conflicts(a: &[Resource], b: &[Resource]) -> bool {
    a.iter().any(|(ma, pa)| {
        b.iter().any(|(mb, pb)| {
            let n = pa.len().min(pb.len());
            (*ma == Mode::Write || *mb == Mode::Write) && pa[..n] == pb[..n]
        })
    })
}

/// Who holds what, as the clients were told.
#[derive(Default)]
struct Ghost(Mutex<Vec<(usize, Vec<Resource>)>>);

impl Ghost {
    fn enter(&self, who: usize, set: &[Resource]) {
        let mut held = self.0.lock().unwrap();
        if let Some((other, theirs)) = held.iter().find(|(_, h)| conflicts(h, set)) {
            panic!("client {who} got {set:?} while client {other} holds {theirs:?}");
        }
        held.push((who, set.to_vec()));
    }

    fn leave(&self, who: usize) {
        self.0.lock().unwrap().retain(|(w, _)| *w != who);
    }
}

fn random_set(rng: &mut impl Rng) -> Vec<Resource> {
    const SEGMENTS: [&str; 2] = ["a", "b"];
    (0..rng.random_range(1..=3))
        .map(|_| {
            let depth = rng.random_range(0..=2);
            let path = (0..depth)
                .map(|_| SEGMENTS[rng.random_range(0..2)])
                .collect();
            let mode = if rng.random_bool(0.6) {
                Mode::Read
            } else {
                Mode::Write
            };
            (mode, path)
        })
        .collect()
}

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let url = format!("http://{addr}{path}");
    tokio::task::spawn_blocking(move || ureq::get(&url).call().unwrap().into_string().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_lock_release_and_vanish() {
    let config = <Config as clap::Parser>::parse_from([
        "shardlock-server",
        "--port",
        "0",
        "--keepalive-interval",
        "200",
        "--max-abandoned-locks-per-namespace",
        "8",
    ]);
    let (bound_tx, bound) = tokio::sync::oneshot::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(shardlock_server::run(
        config,
        async {
            let _ = stopped.await;
        },
        |a| {
            let _ = bound_tx.send(a);
        },
    ));
    let addr = bound.await.unwrap();
    let attacking = Arc::new(AtomicBool::new(true));
    let attackers = attack(addr, attacking.clone());
    let ghost = Arc::new(Ghost::default());
    let clients: Vec<_> = (0..64usize)
        .map(|who| {
            let ghost = ghost.clone();
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(who as u64);
                // Some sessions leave abandoned locks behind for a moment.
                let url = format!(
                    "ws://{addr}/v1?namespace=soak&abandon-timeout-ms={}",
                    if who % 4 == 0 { 30 } else { 0 }
                );
                let mut client = Client::connect(&url).await.unwrap();
                for _ in 0..25 {
                    let set = random_set(&mut rng);
                    let request: Vec<(Mode, &[&str])> =
                        set.iter().map(|(m, p)| (*m, p.as_slice())).collect();
                    let reply = client.lock(&request).await.unwrap();
                    if reply.state == State::Enqueued {
                        if rng.random_bool(0.1) {
                            client.abort(); // vanish while waiting
                            client = Client::connect(&url).await.unwrap();
                            continue;
                        }
                        tokio::time::timeout(Duration::from_secs(30), client.acquired())
                            .await
                            .expect("a grant never came: lost hand-off or deadlock")
                            .unwrap();
                    }
                    ghost.enter(who, &set);
                    tokio::task::yield_now().await;
                    ghost.leave(who);
                    if rng.random_bool(0.1) {
                        client.abort(); // vanish while holding
                        client = Client::connect(&url).await.unwrap();
                    } else {
                        client.release().await.unwrap();
                    }
                }
                client.close().await.unwrap();
            })
        })
        .collect();
    for c in clients {
        c.await.expect("a client failed");
    }
    attacking.store(false, Ordering::Relaxed);
    for a in attackers {
        a.await.expect("an attacker failed");
    }
    // Everything drains: abandoned locks time out, sessions end, the
    // namespace is dropped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = get(addr, "/metrics").await;
        let drained = [
            "shardlock_connections 0",
            "shardlock_namespaces 0",
            "shardlock_locks_held 0",
            "shardlock_locks_waiting 0",
            "shardlock_abandoned_locks_kept 0",
            "shardlock_lock_tree_bytes 0",
        ]
        .iter()
        .all(|line| metrics.lines().any(|l| l == *line));
        if drained {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "did not drain:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

/// The attackers, each looping until `attacking` turns false.
fn attack(
    addr: std::net::SocketAddr,
    attacking: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let flood = {
        let attacking = attacking.clone();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            // Masked 125-byte pings, never reading: cut off, then again.
            let mut frame = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
            frame.extend_from_slice(&[7u8; 125]);
            let batch = frame.repeat(1000);
            while attacking.load(Ordering::Relaxed) {
                let mut stream = common::raw_ws(addr, "soak");
                while attacking.load(Ordering::Relaxed) && stream.write_all(&batch).is_ok() {}
            }
        })
    };
    let largest = {
        let attacking = attacking.clone();
        tokio::spawn(async move {
            // Raw frames, so the client's state machine stays out. The
            // server may cut an attacker off (under this load a 200 ms
            // keepalive can find it slow); it then connects again.
            let url = format!("ws://{addr}/v1?namespace=soak&abandon-timeout-ms=0");
            let mut round = 0;
            while attacking.load(Ordering::Relaxed) {
                let Ok(mut client) = Client::connect(&url).await else {
                    continue;
                };
                while attacking.load(Ordering::Relaxed) {
                    let message =
                        common::largest_lock(64, 32, 64 * 1024, &format!("x{}", round % 3));
                    round += 1;
                    if client.send_raw(&message).await.is_err() {
                        break;
                    }
                    let Ok(shardlock_client::Frame::Text(reply)) = client.recv_raw().await else {
                        break;
                    };
                    if reply.contains("enqueued") {
                        match client.recv_raw().await {
                            Ok(shardlock_client::Frame::Text(t)) => {
                                assert!(t.contains("acquired"), "{t}")
                            }
                            _ => break,
                        }
                    }
                    if client.send_raw(r#"{"action":"release"}"#).await.is_err() {
                        break;
                    }
                    match client.recv_raw().await {
                        Ok(shardlock_client::Frame::Text(t)) => {
                            assert!(t.contains("release"), "{t}")
                        }
                        _ => break,
                    }
                }
            }
        })
    };
    let abandoner = tokio::spawn(async move {
        // Long abandoned locks on paths nobody else takes, past the limit
        // of 8 per namespace: the rest are released when they vanish.
        let url = format!("ws://{addr}/v1?namespace=soak&abandon-timeout-ms=100");
        let mut n = 0;
        while attacking.load(Ordering::Relaxed) {
            let mut client = Client::connect(&url).await.unwrap();
            let path = format!("abandoned-{n}");
            let reply = client
                .lock(&[(Mode::Write, &["z", path.as_str()])])
                .await
                .unwrap();
            if reply.state == State::Enqueued {
                client.acquired().await.unwrap();
            }
            client.abort();
            n += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    vec![flood, largest, abandoner]
}
