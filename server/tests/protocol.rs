//! shardlock-server over loopback, driven by the Rust client and plain
//! HTTP: every state transition and error path, conflicts across
//! connections, hand-off, abandon timeouts, namespaces, stats, metrics,
//! auth, limits and graceful shutdown.
use std::net::SocketAddr;
use std::time::Duration;

use shardlock_client::{Client, Error, Frame, Mode, State};
use shardlock_server::config::Config;
use tokio::sync::oneshot;

mod common;
use common::{next_close_code, raw_ws, send_text};

/// A server on a free loopback port, stopped (and awaited) by `stop`.
struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    done: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(args: &[&str]) -> Server {
        let mut argv = vec!["shardlock-server", "--port", "0"];
        argv.extend_from_slice(args);
        let config = <Config as clap::Parser>::parse_from(argv);
        let (stop, stopped) = oneshot::channel::<()>();
        let (bound_tx, bound) = oneshot::channel();
        let done = tokio::spawn(async move {
            shardlock_server::run(
                config,
                async {
                    let _ = stopped.await;
                },
                |a| {
                    let _ = bound_tx.send(a);
                },
            )
            .await
            .unwrap();
        });
        Server {
            addr: bound.await.unwrap(),
            stop: Some(stop),
            done,
        }
    }

    fn url(&self, query: &str) -> String {
        format!("ws://{}/v1?{query}", self.addr)
    }

    async fn client(&self, query: &str) -> Client {
        Client::connect(&self.url(query)).await.expect("connect")
    }

    /// GET `path`: status and body (blocking client, off the runtime).
    async fn get(&self, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.addr);
        tokio::task::spawn_blocking(move || match ureq::get(&url).call() {
            Ok(r) => (r.status(), r.into_string().unwrap()),
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
            Err(e) => panic!("{e}"),
        })
        .await
        .unwrap()
    }

    async fn stats(&self, ns: &str) -> serde_json::Value {
        let (status, body) = self.get(&format!("/stats_v1?namespace={ns}")).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls `check` until it holds (bounded: 10 s).
    async fn until(&self, what: &str, mut check: impl AsyncFnMut(&Server) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !check(self).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(20), &mut self.done)
            .await
            .expect("the server stops within its drain bound")
            .unwrap();
    }
}

const W: Mode = Mode::Write;
const R: Mode = Mode::Read;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_are_byte_exact_and_enqueued_locks_are_pushed_acquired() {
    let server = Server::start(&[]).await;
    let mut a = server.client("namespace=ns").await;
    a.send_raw(r#"{"action":"lock","resources":[{"type":"write","path":["a"]}]}"#)
        .await
        .unwrap();
    assert_eq!(
        a.recv_raw().await.unwrap(),
        Frame::Text("{\"id\":\"1\",\"action\":\"lock\",\"state\":\"acquired\"}\n".into())
    );
    // A read under a's subtree conflicts: enqueued, then pushed acquired.
    let mut b = server.client("namespace=ns").await;
    let reply = b.lock(&[(R, &["a", "b"])]).await.unwrap();
    assert_eq!((reply.id, reply.state), (2, State::Enqueued));
    // A sibling does not conflict.
    let mut c = server.client("namespace=ns").await;
    assert_eq!(c.lock(&[(W, &["z"])]).await.unwrap().state, State::Acquired);
    a.send_raw(r#"{"action":"release"}"#).await.unwrap();
    assert_eq!(
        a.recv_raw().await.unwrap(),
        Frame::Text("{\"id\":\"1\",\"action\":\"release\",\"state\":\"ready\"}\n".into())
    );
    assert_eq!(
        b.recv_raw().await.unwrap(),
        Frame::Text("{\"id\":\"2\",\"action\":\"lock\",\"state\":\"acquired\"}\n".into())
    );
    // After a release, lock again.
    assert_eq!(a.lock(&[(W, &["q"])]).await.unwrap().id, 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_off_is_fifo_and_a_release_while_enqueued_withdraws_at_once() {
    let server = Server::start(&[]).await;
    let mut holder = server.client("namespace=f").await;
    holder.lock(&[(W, &["x"])]).await.unwrap();
    let mut first = server.client("namespace=f").await;
    let mut quitter = server.client("namespace=f").await;
    let mut second = server.client("namespace=f").await;
    assert_eq!(
        first.lock(&[(W, &["x"])]).await.unwrap().state,
        State::Enqueued
    );
    assert_eq!(
        quitter.lock(&[(W, &["x"])]).await.unwrap().state,
        State::Enqueued
    );
    assert_eq!(
        second.lock(&[(R, &["x", "y"])]).await.unwrap().state,
        State::Enqueued
    );
    // The quitter withdraws: it never gets the lock, nor blocks anyone.
    let reply = quitter.release().await.unwrap();
    assert_eq!((reply.id, reply.state), (3, State::Ready));
    assert_eq!(server.stats("f").await["GroupsPending"], 2);
    holder.release().await.unwrap();
    assert_eq!(first.acquired().await.unwrap().id, 2);
    first.release().await.unwrap();
    assert_eq!(second.acquired().await.unwrap().id, 4);
    second.release().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_errors_answer_communication_error_and_close_3000() {
    let server = Server::start(&[
        "--max-resources",
        "2",
        "--max-path-depth",
        "2",
        "--max-segment-bytes",
        "4",
    ])
    .await;
    let lock_a = r#"{"action":"lock","resources":[{"type":"write","path":["a"]}]}"#;
    let cases: &[(&[&str], &str)] = &[
        (&["{"], "cannot parse message"),
        (&[r#"{"action":"unlock"}"#], "invalid action: unlock"),
        (
            &[r#"{"action":"lock","resources":[{"type":"x","path":[]}]}"#],
            "invalid lock type: x",
        ),
        (
            &[r#"{"action":"release"}"#],
            "invalid action [release] in state [ready]",
        ),
        (
            &[lock_a, lock_a],
            "invalid action [lock] in state [acquired]",
        ),
        (
            &[r#"{"action":"lock","resources":[]}"#],
            "a lock needs at least one resource",
        ),
        (
            &[
                r#"{"action":"lock","resources":[{"type":"r","path":["a"]},{"type":"r","path":["b"]},{"type":"r","path":["c"]}]}"#,
            ],
            "too many resources",
        ),
        (
            &[r#"{"action":"lock","resources":[{"type":"r","path":["a","b","c"]}]}"#],
            "path too deep",
        ),
        (
            &[r#"{"action":"lock","resources":[{"type":"r","path":["abcde"]}]}"#],
            "path segment too long",
        ),
    ];
    for (i, (frames, message)) in cases.iter().enumerate() {
        let mut c = server
            .client(&format!("namespace=e{i}&abandon-timeout-ms=0"))
            .await;
        let mut last = None;
        for frame in *frames {
            c.send_raw(frame).await.unwrap();
            last = Some(c.recv_raw().await.unwrap());
        }
        match last.unwrap() {
            Frame::Text(t) => assert!(
                t.starts_with("communication error: ") && t.contains(message),
                "{frames:?}: {t}"
            ),
            other => panic!("{frames:?}: {other:?}"),
        }
        assert_eq!(
            c.recv_raw().await.unwrap(),
            Frame::Close(Some(3000)),
            "{frames:?}"
        );
    }
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("shardlock_protocol_errors_total{kind=\"wrong_state\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("shardlock_protocol_errors_total{kind=\"limit\"} 3"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_for_bad_connection_parameters() {
    let server = Server::start(&[]).await;
    for query in [
        "",
        "namespace=",
        "namespace=a&abandon-timeout-ms=-1",
        "namespace=a&abandon-timeout-ms=x",
    ] {
        match Client::connect(&server.url(query)).await {
            Err(Error::WebSocket(tokio_tungstenite_error)) => {
                let text = tokio_tungstenite_error.to_string();
                assert!(text.contains("400"), "{query}: {text}");
            }
            Err(e) => panic!("{query}: {e}"),
            Ok(_) => panic!("{query}: connected"),
        }
    }
    let (status, body) = server.get("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("/v1"), "{body}");
    assert_eq!(server.get("/healthz").await, (200, "ok\n".into()));
    assert_eq!(server.get("/stats_v1?namespace=none").await.0, 404);
    assert_eq!(server.get("/stats_v1").await.0, 400);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_or_dropped_holder_keeps_its_lock_for_the_abandon_timeout() {
    let server = Server::start(&[]).await;
    for abrupt in [false, true] {
        let ns = if abrupt { "drop" } else { "close" };
        // abandon-timeout-ms=0: released as soon as the connection ends.
        let mut quick = server
            .client(&format!("namespace={ns}&abandon-timeout-ms=0"))
            .await;
        quick.lock(&[(W, &["k"])]).await.unwrap();
        let mut waiter = server.client(&format!("namespace={ns}")).await;
        assert_eq!(
            waiter.lock(&[(W, &["k"])]).await.unwrap().state,
            State::Enqueued
        );
        if abrupt {
            quick.abort()
        } else {
            quick.close().await.unwrap()
        }
        waiter.acquired().await.unwrap();
        waiter.release().await.unwrap();
        // A long timeout: the lock outlives the connection...
        let mut slow = server
            .client(&format!("namespace={ns}&abandon-timeout-ms=600000"))
            .await;
        slow.lock(&[(W, &["k"])]).await.unwrap();
        if abrupt {
            slow.abort()
        } else {
            slow.close().await.unwrap()
        }
        let mut blocked = server.client(&format!("namespace={ns}")).await;
        assert_eq!(
            blocked.lock(&[(W, &["k"])]).await.unwrap().state,
            State::Enqueued
        );
        server
            .until("the slow session to end", async |s| {
                let (_, m) = s.get("/metrics").await;
                m.contains(&format!(
                    "shardlock_abandoned_locks_total {}",
                    if abrupt { 2 } else { 1 }
                ))
            })
            .await;
        let stats = server.stats(ns).await;
        assert_eq!(
            (
                stats["GroupsAcquired"].as_u64(),
                stats["GroupsPending"].as_u64()
            ),
            (Some(1), Some(1))
        );
        blocked.release().await.unwrap(); // withdraws; the abandoned lock stays
    }
    // A shutdown releases abandoned locks at once.
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_disconnects_is_withdrawn_at_once_and_namespaces_are_isolated() {
    let server = Server::start(&[]).await;
    let mut holder = server.client("namespace=w").await;
    holder.lock(&[(W, &[] as &[&str])]).await.unwrap(); // the whole namespace
    let mut waiter = server.client("namespace=w").await;
    assert_eq!(
        waiter.lock(&[(R, &["a"])]).await.unwrap().state,
        State::Enqueued
    );
    waiter.abort();
    server
        .until("the waiter to be withdrawn", async |s| {
            s.stats("w").await["GroupsPending"] == 0
        })
        .await;
    // Another namespace is another lock space.
    let mut other = server.client("namespace=w2").await;
    assert_eq!(
        other.lock(&[(W, &[] as &[&str])]).await.unwrap().state,
        State::Acquired
    );
    let stats = server.stats("w").await;
    assert_eq!(stats["GroupsAcquired"], 1);
    assert_eq!(stats["LocksAcquired"], 1);
    assert_eq!(stats["LastGroupID"], 2);
    holder.release().await.unwrap();
    other.release().await.unwrap();
    drop((holder, other));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_tokens_connection_limits_and_metrics() {
    let server = Server::start(&["--auth-token", "s3cret", "--max-connections", "2"]).await;
    assert!(
        Client::connect(&server.url("namespace=a")).await.is_err(),
        "no token"
    );
    assert!(
        Client::connect_with_token(&server.url("namespace=a"), Some("wrong"))
            .await
            .is_err()
    );
    let _one = Client::connect_with_token(&server.url("namespace=a"), Some("s3cret"))
        .await
        .unwrap();
    let _two = Client::connect(&server.url("namespace=a&token=s3cret"))
        .await
        .unwrap();
    match Client::connect(&server.url("namespace=a&token=s3cret")).await {
        Err(Error::WebSocket(e)) => assert!(e.to_string().contains("503"), "{e}"),
        other => panic!("a third connection: {:?}", other.map(|_| ())),
    }
    assert_eq!(server.get("/metrics").await.0, 401);
    assert_eq!(server.get("/stats_v1?namespace=a").await.0, 401);
    let (status, metrics) = server.get("/metrics?token=s3cret").await;
    assert_eq!(status, 200);
    for line in [
        "shardlock_connections 2",
        "shardlock_namespaces 1",
        "shardlock_connections_rejected_total 1",
        "shardlock_sessions_accepted_total 2",
        &format!(
            "shardlock_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }
    assert!(metrics.contains("# TYPE shardlock_lock_wait_seconds histogram"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_sessions_with_1001_and_releases_their_locks() {
    let server = Server::start(&[]).await;
    let mut holder = server.client("namespace=s&abandon-timeout-ms=600000").await;
    holder.lock(&[(W, &["a"])]).await.unwrap();
    let mut waiter = server.client("namespace=s").await;
    waiter.lock(&[(W, &["a"])]).await.unwrap();
    let closing = tokio::spawn(async move { (holder.recv_raw().await, waiter.recv_raw().await) });
    server.stop().await;
    let (a, b) = closing.await.unwrap();
    assert_eq!(a.unwrap(), Frame::Close(Some(1001)));
    assert_eq!(b.unwrap(), Frame::Close(Some(1001)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_wss_and_bounds_the_tls_handshake() {
    let (cert, key, trusted) = common::self_signed("tls");
    let args = ["--tls-cert", &cert, "--tls-key", &key];
    let server = Server::start(&[&args[..], &["--handshake-timeout", "300"]].concat()).await;
    let wss = format!("wss://{}/v1?namespace=t", server.addr);
    let options = shardlock_client::Options {
        tls: Some(trusted),
        ..Default::default()
    };
    let mut a = Client::connect_with(&wss, &options).await.expect("wss");
    let mut b = Client::connect_with(&wss, &options).await.expect("wss");
    assert_eq!(a.lock(&[(W, &["x"])]).await.unwrap().state, State::Acquired);
    assert_eq!(b.lock(&[(W, &["x"])]).await.unwrap().state, State::Enqueued);
    a.release().await.unwrap();
    assert_eq!(b.acquired().await.unwrap().state, State::Acquired);
    b.release().await.unwrap();
    // An untrusted certificate and a plain-text client are refused.
    let untrusted = Client::connect(&wss).await;
    assert!(
        matches!(untrusted, Err(Error::WebSocket(_))),
        "webpki roots"
    );
    let plain_url = server.url("namespace=t");
    let plain = tokio::time::timeout(Duration::from_secs(10), Client::connect(&plain_url));
    assert!(plain.await.expect("refused, not hung").is_err());
    // A peer that never starts its TLS handshake is cut off.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::io::AsyncReadExt::read(&mut silent, &mut buf);
    let read = tokio::time::timeout(Duration::from_secs(10), read).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "closed: {read:?}");
    drop((a, b));
    server.stop().await;
    for file in [cert, key] {
        let _ = std::fs::remove_file(file);
    }
}

#[test]
fn unusable_tls_files_fail_the_start_with_the_file_named() {
    let (cert, _key, _) = common::self_signed("badkey");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let config = <Config as clap::Parser>::parse_from([
        "shardlock-server",
        "--port",
        "0",
        "--tls-cert",
        &cert,
        "--tls-key",
        &cert,
    ]);
    let err = runtime
        .block_on(shardlock_server::run(config, async {}, |_| {}))
        .expect_err("a certificate is not a key");
    assert!(err.to_string().contains(&cert), "{err}");
    let _ = std::fs::remove_file(&cert);
    let _ = std::fs::remove_file(_key);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_size_namespace_handshake_and_keepalive_limits() {
    let server = Server::start(&[
        "--max-message-bytes",
        "200",
        "--max-connections-per-namespace",
        "2",
        "--handshake-timeout",
        "300",
        "--keepalive-interval",
        "100",
    ])
    .await;
    // An oversized message is a protocol error, not a silent drop.
    let mut big = server.client("namespace=big").await;
    let path = "x".repeat(150);
    let frame =
        format!(r#"{{"action":"lock","resources":[{{"type":"w","path":["{path}","{path}"]}}]}}"#);
    big.send_raw(&frame).await.unwrap();
    match big.recv_raw().await.unwrap() {
        Frame::Text(t) => assert_eq!(t, "communication error: message longer than 200 bytes"),
        other => panic!("{other:?}"),
    }
    assert_eq!(big.recv_raw().await.unwrap(), Frame::Close(Some(3000)));
    // Two sessions per namespace; a third is refused there, not elsewhere.
    let _one = server.client("namespace=full").await;
    let _two = server.client("namespace=full").await;
    match Client::connect(&server.url("namespace=full")).await {
        Err(Error::WebSocket(e)) => assert!(e.to_string().contains("503"), "{e}"),
        other => panic!("a third session: {:?}", other.map(|_| ())),
    }
    let _elsewhere = server.client("namespace=other").await;
    // A peer that never sends its request headers is cut off.
    let mut silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::io::AsyncReadExt::read(&mut silent, &mut buf);
    let read = tokio::time::timeout(Duration::from_secs(10), read).await;
    assert!(matches!(read, Ok(Ok(_)) | Ok(Err(_))), "cut off: {read:?}");
    // A holder that stops answering pings (it never reads) is found dead,
    // and its lock (abandon timeout 0) goes to the next in line.
    let addr = server.addr;
    let mute = tokio::task::spawn_blocking(move || {
        let mut mute = raw_ws(addr, "ka&abandon-timeout-ms=0");
        send_text(
            &mut mute,
            r#"{"action":"lock","resources":[{"type":"write","path":["job"]}]}"#,
        );
        mute
    })
    .await
    .unwrap();
    server
        .until("the mute peer to hold", async |s| {
            s.stats("ka").await["GroupsAcquired"] == 1
        })
        .await;
    let mut next = server.client("namespace=ka").await;
    assert_eq!(
        next.lock(&[(W, &["job"])]).await.unwrap().state,
        State::Enqueued
    );
    let granted = tokio::time::timeout(Duration::from_secs(10), next.acquired()).await;
    assert_eq!(
        granted
            .expect("granted once the mute peer is dead")
            .unwrap()
            .state,
        State::Acquired
    );
    let (_, metrics) = server.get("/metrics").await;
    // The idle sessions above stopped reading too, so they count as well.
    assert!(
        metrics.contains("shardlock_dead_peers_total ")
            && !metrics.contains("shardlock_dead_peers_total 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("shardlock_protocol_errors_total{kind=\"limit\"} 1"),
        "{metrics}"
    );
    drop(mute);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_floods_and_never_reads_is_cut_off_and_its_lock_released() {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let server = Server::start(&["--keepalive-interval", "100"]).await;
    // A small receive buffer, never read: the server's replies back up
    // until its writes block.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let url = server.url("namespace=flood&abandon-timeout-ms=0");
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await.unwrap();
    let flood = tokio::spawn(async move {
        let lock = r#"{"action":"lock","resources":[{"type":"write","path":["f"]}]}"#;
        let release = r#"{"action":"release"}"#;
        // Ends when the server cuts the connection (or after 2M frames).
        for i in 0..2_000_000u32 {
            let frame = if i % 2 == 0 { lock } else { release };
            if ws.send(Message::text(frame)).await.is_err() {
                return i;
            }
        }
        u32::MAX
    });
    // Filling the buffers takes a few seconds; then the session is cut off.
    let sent = tokio::time::timeout(Duration::from_secs(60), flood)
        .await
        .expect("the flood ends once the server cuts it off")
        .unwrap();
    assert!(
        sent < u32::MAX,
        "the server kept reading a peer that never read"
    );
    server
        .until("the stuck session to be cut off", async |s| {
            let (_, metrics) = s.get("/metrics").await;
            metrics.contains("\nshardlock_connections 0\n")
        })
        .await;
    // Whatever it held is released (abandon timeout 0).
    let mut next = server.client("namespace=flood").await;
    let reply = next.lock(&[(W, &["f"])]).await.unwrap();
    if reply.state == State::Enqueued {
        let granted = tokio::time::timeout(Duration::from_secs(10), next.acquired()).await;
        assert_eq!(granted.expect("granted").unwrap().state, State::Acquired);
    }
    server.stop().await;
}

/// Issue 17, item 1: a peer that floods pings and never reads made the
/// server queue one pong per ping (no cap on the write buffer: +2.1 GiB in
/// 10 s), and since every frame counted as a sign of life and the flood kept
/// the session's read branch busy, the keepalive check never ran: the peer
/// was never cut off. Now unsent data is capped, a ping is no sign of life,
/// and the check runs on every frame. The flood is raw ping frames written
/// from a thread of its own in one stream (at most 512 MiB), so the server's
/// socket always has a frame ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_floods_pings_and_never_reads_is_cut_off() {
    use std::io::Write;
    let server = Server::start(&["--keepalive-interval", "100"]).await;
    let addr = server.addr;
    let flood = std::thread::spawn(move || {
        let mut stream = raw_ws(addr, "pings");
        // A masked ping with the largest control payload (125 bytes), mask 0.
        let mut frame = vec![0x89, 0x80 | 125, 0, 0, 0, 0];
        frame.extend_from_slice(&[7u8; 125]);
        let batch: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(frame.len() * 4000)
            .collect();
        let mut sent = 0usize;
        while sent < 512 << 20 {
            if stream.write_all(&batch).is_err() {
                return sent;
            }
            sent += batch.len();
        }
        usize::MAX
    });
    let sent = tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    assert!(
        sent < usize::MAX,
        "a ping flood of 512 MiB kept its session alive"
    );
    server
        .until("the flooding session to be cut off", async |s| {
            let (_, metrics) = s.get("/metrics").await;
            metrics.contains("\nshardlock_connections 0\n")
        })
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_the_websocket_layer_refuses_get_a_close_code() {
    let server = Server::start(&[]).await;
    let addr = server.addr;
    let mut oversized_ping = vec![0x89, 0x80 | 126, 0, 126, 0, 0, 0, 0];
    oversized_ping.extend_from_slice(&[1u8; 126]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("an unmasked text frame", vec![0x81, 0x02, b'h', b'i'], 1002),
        ("a reserved opcode", vec![0x83, 0x80, 0, 0, 0, 0], 1002),
        (
            "text that is not UTF-8",
            vec![0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe],
            1007,
        ),
        ("a ping over 125 bytes", oversized_ping, 1002),
    ];
    let seen = tokio::task::spawn_blocking(move || {
        cases
            .into_iter()
            .map(|(what, frame, want)| {
                use std::io::Write;
                let mut stream = raw_ws(addr, "frames");
                stream.write_all(&frame).unwrap();
                (what, next_close_code(&mut stream), want)
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (what, got, want) in seen {
        assert_eq!(got, Some(want), "{what}");
    }
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(r#"shardlock_protocol_errors_total{kind="websocket_frame"} 4"#),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_scheme_is_case_insensitive() {
    let server = Server::start(&["--auth-token", "s3cret"]).await;
    let url = format!("http://{}/metrics", server.addr);
    let statuses = tokio::task::spawn_blocking(move || {
        [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER  s3cret",
            "Basic s3cret",
            "bearer wrong",
        ]
        .map(
            |value| match ureq::get(&url).set("Authorization", value).call() {
                Ok(r) => r.status(),
                Err(ureq::Error::Status(s, _)) => s,
                Err(e) => panic!("{e}"),
            },
        )
    })
    .await
    .unwrap();
    assert_eq!(statuses, [200, 200, 200, 401, 401]);
    server.stop().await;
}

#[test]
fn an_empty_auth_token_from_the_environment_stops_the_start() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_shardlock-server"))
        .args(["--port", "0"])
        .env("LOCKTOPUS_AUTH_TOKEN", "")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the server started with an empty token");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("token is empty"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_never_repeat_in_a_namespace_that_was_dropped_and_made_again() {
    let server = Server::start(&[]).await;
    let mut first = Vec::new();
    for _ in 0..2 {
        let mut a = server.client("namespace=again").await;
        first.push(a.lock(&[(W, &["x"])]).await.unwrap().id);
        a.release().await.unwrap();
        a.close().await.unwrap();
        // Idle now: the namespace is dropped, and its stats stay.
        server
            .until("the idle namespace to be dropped", async |s| {
                let (_, body) = s.get("/").await;
                !body.contains("again")
            })
            .await;
        let stats = server.stats("again").await;
        assert_eq!(stats["LastGroupID"], *first.last().unwrap(), "{stats}");
        assert_eq!(stats["GroupsAcquired"], 0, "{stats}");
    }
    assert_eq!(
        first,
        [1, 2],
        "the second namespace counts on from the first"
    );
    assert_eq!(server.get("/stats_v1?namespace=never").await.0, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_locks_are_bounded_in_time_and_number() {
    let server = Server::start(&[
        "--max-abandon-timeout",
        "60000",
        "--max-abandoned-locks",
        "3",
        "--max-abandoned-locks-per-namespace",
        "2",
        "--max-connections",
        "2",
    ])
    .await;
    match Client::connect(&server.url("namespace=a&abandon-timeout-ms=60001")).await {
        Err(Error::WebSocket(e)) => assert!(e.to_string().contains("400"), "{e}"),
        other => panic!("a timeout over the maximum: {:?}", other.map(|_| ())),
    }
    // One client at a time (at most 2 connections), each leaving a lock.
    let abandon = async |ns: &str, path: &str| {
        let mut c = server
            .client(&format!("namespace={ns}&abandon-timeout-ms=60000"))
            .await;
        assert_eq!(
            c.lock(&[(W, &[path])]).await.unwrap().state,
            State::Acquired
        );
        c.abort();
        server
            .until("the session to end", async |s| {
                let (_, m) = s.get("/metrics").await;
                m.contains("\nshardlock_connections 0\n")
            })
            .await;
    };
    abandon("a", "1").await;
    abandon("a", "2").await;
    abandon("a", "3").await; // over the namespace's 2: released at once
    abandon("b", "1").await;
    abandon("c", "1").await; // over the 3 overall: released at once
    let (_, metrics) = server.get("/metrics").await;
    for line in [
        "\nshardlock_abandoned_locks_kept 3\n",
        "\nshardlock_abandoned_locks_refused_total 2\n",
        "\nshardlock_abandoned_locks_total 3\n",
    ] {
        assert!(metrics.contains(line), "{line:?}: {metrics}");
    }
    let mut probe = server.client("namespace=a").await;
    assert_eq!(
        probe.lock(&[(W, &["3"])]).await.unwrap().state,
        State::Acquired
    );
    probe.release().await.unwrap();
    assert_eq!(
        probe.lock(&[(W, &["2"])]).await.unwrap().state,
        State::Enqueued
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_lists_a_bounded_number_of_namespaces() {
    let server = Server::start(&[]).await;
    let mut clients = Vec::new();
    for i in 0..105 {
        clients.push(server.client(&format!("namespace=n{i:03}")).await);
    }
    let (status, body) = server.get("/").await;
    assert_eq!(status, 200);
    assert_eq!(
        body.lines().filter(|l| l.starts_with('n')).count(),
        100,
        "{body}"
    );
    assert!(body.contains("... and 5 more"), "{body}");
    drop(clients);
    server.stop().await;
}

/// The worst a connection can make the server keep in lock-tree nodes: one
/// lock of the most resources, each as deep as allowed, in one message of
/// the largest size. Read from the server's own accounting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_largest_lock_costs_a_bounded_multiple_of_its_message() {
    let server = Server::start(&[]).await;
    let max_message = 64 * 1024;
    let message = common::largest_lock(64, 32, max_message, "r");
    let tree_bytes = async |server: &Server| {
        let (_, metrics) = server.get("/metrics").await;
        let line = metrics
            .lines()
            .find(|l| l.starts_with("shardlock_lock_tree_bytes "))
            .expect("the gauge");
        line.split(' ').nth(1).unwrap().parse::<usize>().unwrap()
    };
    let mut a = server.client("namespace=big").await;
    a.send_raw(&message).await.unwrap();
    assert!(matches!(a.recv_raw().await.unwrap(), Frame::Text(t) if t.contains("acquired")));
    let held = tree_bytes(&server).await;
    println!(
        "one largest lock: {held} bytes of nodes for a {} byte message ({:.1}×)",
        message.len(),
        held as f64 / message.len() as f64
    );
    assert!(
        held <= 24 * max_message,
        "{held} bytes held for one message"
    );
    // Released, the nodes stay only as the idle cache (4 messages' worth),
    // which the next request sweeps down to.
    a.release().await.unwrap();
    a.lock(&[(W, &["x"])]).await.unwrap();
    let idle = tree_bytes(&server).await;
    println!("after release and one more lock: {idle} bytes");
    assert!(idle <= 4 * max_message + 4096, "{idle} bytes cached");
    server.stop().await;
}

/// Issue 18: the client answered pings only during a call, so a lock held
/// across several keepalive intervals without calls was lost (the session
/// found dead, the lock abandoned and then granted to a waiter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_across_keepalive_intervals_without_calls_is_kept() {
    let server = Server::start(&["--keepalive-interval", "50"]).await;
    let mut holder = server.client("namespace=long&abandon-timeout-ms=0").await;
    holder.lock(&[(W, &["job"])]).await.unwrap();
    let mut waiter = server.client("namespace=long").await;
    assert_eq!(
        waiter.lock(&[(W, &["job"])]).await.unwrap().state,
        State::Enqueued
    );
    // Ten keepalive intervals with no call on the holder; the waiter keeps
    // reading (and would see a grant).
    let early = tokio::time::timeout(Duration::from_millis(500), waiter.acquired()).await;
    assert!(
        early.is_err(),
        "the waiter got the lock while its holder held it"
    );
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("\nshardlock_dead_peers_total 0\n"),
        "{metrics}"
    );
    holder.release().await.unwrap();
    assert_eq!(waiter.acquired().await.unwrap().state, State::Acquired);
    server.stop().await;
}

/// A holder learns that its session ended (here the server stops) through
/// `Client::lost`, without calling anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_learns_that_its_session_is_lost() {
    let server = Server::start(&[]).await;
    let mut holder = server.client("namespace=lost").await;
    holder.lock(&[(W, &["job"])]).await.unwrap();
    let lost = holder.lost();
    let still = tokio::time::timeout(Duration::from_millis(100), holder.lost()).await;
    assert!(still.is_err(), "lost while the session lives");
    server.stop().await;
    let ended = tokio::time::timeout(Duration::from_secs(10), lost)
        .await
        .expect("lost() resolves when the session ends");
    assert_eq!(ended.code, Some(1001), "{ended}");
}
