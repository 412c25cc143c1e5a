//! One WebSocket connection: frames in, the protocol state machine, the
//! namespace's `PathLock`, replies and pushes out.
//!
//! Semantics beyond the wire format (each one a deliberate difference from
//! Locktopus where it differs; see the README):
//! * a `release` while enqueued withdraws the waiting request at once;
//! * a connection that ends while *waiting* withdraws at once;
//! * a connection that ends while *holding* (closed cleanly, dropped, or
//!   found dead by keepalive) keeps the lock for its abandon timeout, then
//!   releases it, as Locktopus does; a server shutdown releases at once.
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use shardlock::{LockError, OwnedPathGuard};

use crate::cluster::{next_fence, FENCED_CLOSE, FENCED_REASON};
use crate::namespace::Member;
use crate::protocol::{
    lock_set, Command, ErrorKind, ProtocolError, Session, State, PROTOCOL_ERROR_CLOSE,
};
use crate::Shared;

type Pending = Pin<Box<dyn Future<Output = Result<OwnedPathGuard, LockError>> + Send>>;

/// A request the connection holds or waits for, and what it counts.
struct Request {
    resources: u64,
    segments: u64,
    asked: Instant,
}

struct Held {
    guard: OwnedPathGuard,
    request: Request,
    since: Instant,
}

/// Why a session ended (logged with `--log-clients`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The peer sent a close frame.
    Closed,
    /// The connection ended without a close frame, or failed.
    Dropped,
    /// The peer answered no ping for two keepalive intervals.
    Dead,
    /// A write to the peer failed or took longer than two keepalive
    /// intervals (a peer that does not read).
    WriteFailed,
    /// A protocol error (reported to the peer, then closed).
    Protocol(ErrorKind),
    /// The server is shutting down.
    Shutdown,
    /// Cluster mode: this instance lost its lease (or the namespace's
    /// claim); it stopped granting and closed with code 1012.
    Fenced,
    /// Forwarded: the namespace's owner closed the connection.
    OwnerClosed,
    /// Forwarded: the owner's connection ended without a close frame.
    OwnerGone,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            End::Closed => f.write_str("closed by the peer"),
            End::Dropped => f.write_str("connection dropped"),
            End::Dead => f.write_str("keepalive timeout: the peer answered no ping"),
            End::WriteFailed => f.write_str("write failed or timed out: the peer does not read"),
            End::Protocol(kind) => write!(f, "protocol error ({})", kind.label()),
            End::Shutdown => f.write_str("server shutting down"),
            End::Fenced => f.write_str("cluster lease lost: fenced"),
            End::OwnerClosed => f.write_str("closed by the namespace's owner"),
            End::OwnerGone => f.write_str("the namespace's owner went away"),
        }
    }
}

/// Serves one connection until it ends.
pub async fn serve(
    socket: WebSocket,
    member: Member,
    shared: Arc<Shared>,
    abandon: Duration,
) -> End {
    let keepalive = shared.config.keepalive();
    // A peer that takes no reply for two keepalive intervals is as dead as
    // one that answers no ping (its writes would otherwise block forever).
    let mut peer = Peer::new(socket, keepalive, shared.clone());
    let ns = member.namespace().clone();
    let limits = shared.config.limits();
    let mut session = Session::default();
    let mut pending: Option<(Pending, Request)> = None;
    let mut held: Option<Held> = None;
    let mut shutdown = shared.shutdown.subscribe();
    let mut fences = shared.cluster.as_ref().map(|c| c.fences.subscribe());
    let mut ping = tokio::time::interval(keepalive);
    ping.tick().await;
    let log_locks = shared.config.log_locks;
    // A session that starts under a claim already void closes at once;
    // later, a fence wakes the loop (and every grant checks again).
    if !ns.may_grant() {
        let _ = peer.close(FENCED_CLOSE, FENCED_REASON).await;
        return End::Fenced;
    }

    let end = loop {
        // A session that starts while the server is already stopping has
        // seen the flag's last change: check it, not just its changes.
        if *shared.shutdown.borrow() {
            let _ = peer.close(1001, "server shutting down").await;
            break End::Shutdown;
        }
        let granted = async {
            match &mut pending {
                Some((future, _)) => future.await,
                None => std::future::pending().await,
            }
        };
        // Biased: once the server stops, a session closes rather than
        // report a grant its neighbours' shutdown releases made possible.
        tokio::select! {
            biased;
            _ = shutdown.changed() => {
                let _ = peer.close(1001, "server shutting down").await;
                break End::Shutdown;
            }
            // A fence, or a claim voided otherwise: close if it is ours.
            () = next_fence(&mut fences) => {
                if !ns.may_grant() {
                    let _ = peer.close(FENCED_CLOSE, FENCED_REASON).await;
                    break End::Fenced;
                }
            }
            frame = peer.socket.recv() => {
                let text = match peer.incoming(frame).await {
                    Incoming::Message(Message::Text(text)) => text,
                    Incoming::Message(_) => {
                        let e = ProtocolError::new(ErrorKind::BinaryFrame, "binary frames are not supported");
                        peer.fail(e).await;
                        break End::Protocol(ErrorKind::BinaryFrame);
                    }
                    Incoming::Skip => continue,
                    Incoming::Close(_) => break End::Closed,
                    Incoming::End(end) => break end,
                };
                let command = session.on_text(text.as_str(), &limits, || ns.next_id());
                match command {
                    Err(e) => {
                        let kind = e.kind;
                        peer.fail(e).await;
                        break End::Protocol(kind);
                    }
                    Ok(Command::Lock { id, resources }) => {
                        let request = Request {
                            resources: resources.len() as u64,
                            segments: resources.iter().map(|(_, p)| p.len() as u64).sum(),
                            asked: Instant::now(),
                        };
                        if log_locks {
                            tracing::info!(id, resources = %resources_json(&resources), "lock");
                        }
                        let mut future: Pending = Box::pin(ns.lock.lock_owned_async(lock_set(&resources)));
                        // One poll fixes the request's place in line and
                        // tells whether it is granted at once.
                        let first = future.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                        match first {
                            Poll::Ready(guard) => {
                                let guard = guard.expect("a lock has resources");
                                if !ns.may_grant() {
                                    drop(guard);
                                    let _ = peer.close(FENCED_CLOSE, FENCED_REASON).await;
                                    break End::Fenced;
                                }
                                shared.metrics.lock_wait.observe(request.asked.elapsed());
                                count(&ns, &request, Where::Held);
                                held = Some(Held { guard, request, since: Instant::now() });
                                if peer.text(session.acquired()).await.is_err() {
                                    break End::WriteFailed;
                                }
                            }
                            Poll::Pending => {
                                count(&ns, &request, Where::Waiting);
                                pending = Some((future, request));
                                if peer.text(session.enqueued()).await.is_err() {
                                    break End::WriteFailed;
                                }
                            }
                        }
                    }
                    Ok(Command::Release { id, was }) => {
                        if log_locks {
                            tracing::info!(id, was = was.name(), "release");
                        }
                        release(&ns, &shared, pending.take().map(|(_, r)| r), held.take());
                        if peer.text(session.released()).await.is_err() {
                            break End::WriteFailed;
                        }
                    }
                }
            }
            guard = granted => {
                let (_, request) = pending.take().expect("granted means pending");
                let guard = guard.expect("a lock has resources");
                if !ns.may_grant() {
                    drop(guard);
                    uncount(&ns, &request, Where::Waiting);
                    let _ = peer.close(FENCED_CLOSE, FENCED_REASON).await;
                    break End::Fenced;
                }
                shared.metrics.lock_wait.observe(request.asked.elapsed());
                uncount(&ns, &request, Where::Waiting);
                count(&ns, &request, Where::Held);
                held = Some(Held { guard, request, since: Instant::now() });
                if peer.text(session.acquired()).await.is_err() {
                    break End::WriteFailed;
                }
            }
            _ = ping.tick() => {
                if let Err(end) = peer.ping().await {
                    break end;
                }
            }
        }
    };

    // A waiting request is withdrawn at once, whatever ended the session.
    if let Some((future, request)) = pending.take() {
        drop(future);
        uncount(&ns, &request, Where::Waiting);
    }
    let Some(held) = held else { return end };
    // A fenced instance keeps nothing: its locks are void.
    if matches!(end, End::Shutdown | End::Fenced)
        || abandon.is_zero()
        || *shared.shutdown.borrow()
        || !ns.may_grant()
    {
        release(&ns, &shared, None, Some(held));
        return end;
    }
    debug_assert_eq!(session.state(), State::Acquired);
    // Held while the connection ended: keep it for the abandon timeout, if
    // the abandoned-lock limits have room; else release it now.
    if !keep_abandoned(&ns, &shared) {
        shared.metrics.abandoned_refused.fetch_add(1, Relaxed);
        release(&ns, &shared, None, Some(held));
        return end;
    }
    shared.metrics.abandoned_locks.fetch_add(1, Relaxed);
    let keep = member.keep_for_lock();
    let mut stop = shared.shutdown.subscribe();
    let mut fences = shared.cluster.as_ref().map(|c| c.fences.subscribe());
    tokio::spawn(async move {
        let sleep = tokio::time::sleep(abandon);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => break,
                _ = stop.changed() => break,
                // A fence releases it at once; another change does not.
                () = next_fence(&mut fences) => if !keep.namespace().may_grant() { break },
            }
        }
        release(keep.namespace(), &shared, None, Some(held));
        keep.namespace().abandoned.fetch_sub(1, Relaxed);
        shared.metrics.abandoned_now.fetch_sub(1, Relaxed);
        drop(keep);
    });
    end
}

/// Counts one more abandoned lock in `ns` and overall, unless either count
/// is at its limit (then counts nothing and says no).
fn keep_abandoned(ns: &crate::namespace::Namespace, shared: &Shared) -> bool {
    let below = |limit: usize| move |n: u64| (n < limit as u64).then_some(n + 1);
    let total = &shared.metrics.abandoned_now;
    if total
        .fetch_update(Relaxed, Relaxed, below(shared.config.max_abandoned_locks))
        .is_err()
    {
        return false;
    }
    let per_namespace = shared.config.max_abandoned_locks_per_namespace;
    if ns
        .abandoned
        .fetch_update(Relaxed, Relaxed, below(per_namespace))
        .is_err()
    {
        total.fetch_sub(1, Relaxed);
        return false;
    }
    true
}

/// A request's resources as the protocol writes them (a JSON array), for
/// the logs.
fn resources_json(resources: &[(shardlock::Mode, Vec<String>)]) -> String {
    let all: Vec<serde_json::Value> = resources
        .iter()
        .map(|(mode, path)| {
            let kind = if *mode == shardlock::Mode::Read {
                "read"
            } else {
                "write"
            };
            serde_json::json!({ "type": kind, "path": path })
        })
        .collect();
    serde_json::Value::Array(all).to_string()
}

/// Where a request is, for the namespace's counters.
#[derive(Clone, Copy)]
enum Where {
    Waiting,
    Held,
}

/// Counts a request's resources (as waiting or held) and its segments in.
fn count(ns: &crate::namespace::Namespace, r: &Request, place: Where) {
    match place {
        Where::Waiting => ns.resources_pending.fetch_add(r.resources, Relaxed),
        Where::Held => ns.resources_held.fetch_add(r.resources, Relaxed),
    };
    ns.segments_live.fetch_add(r.segments, Relaxed);
}

/// The inverse of [`count`].
fn uncount(ns: &crate::namespace::Namespace, r: &Request, place: Where) {
    match place {
        Where::Waiting => ns.resources_pending.fetch_sub(r.resources, Relaxed),
        Where::Held => ns.resources_held.fetch_sub(r.resources, Relaxed),
    };
    ns.segments_live.fetch_sub(r.segments, Relaxed);
}

/// Withdraws a waiting request (already dropped) and releases a held one.
fn release(
    ns: &crate::namespace::Namespace,
    shared: &Shared,
    waiting: Option<Request>,
    held: Option<Held>,
) {
    if let Some(request) = waiting {
        uncount(ns, &request, Where::Waiting);
    }
    if let Some(held) = held {
        shared.metrics.lock_hold.observe(held.since.elapsed());
        uncount(ns, &held.request, Where::Held);
        drop(held.guard);
    }
}

/// Whether a read failed on `--max-message-bytes` (the WebSocket layer's
/// limit, so that an oversized message is never buffered whole).
fn too_long(e: &axum::Error) -> bool {
    use tungstenite::error::{CapacityError, Error};
    matches!(
        std::error::Error::source(e).and_then(|inner| inner.downcast_ref::<Error>()),
        Some(Error::Capacity(CapacityError::MessageTooLong { .. }))
    )
}

/// The close code and reason for a frame the WebSocket layer refused
/// (RFC 6455, 7.4.1): 1007 for text that is not UTF-8, 1002 for any other
/// breach of the framing (an unmasked client frame, a reserved opcode or
/// bit, a control frame over 125 bytes or fragmented); `None` for a
/// connection that simply failed.
fn close_code(e: &axum::Error) -> Option<(u16, &'static str)> {
    use tungstenite::error::Error;
    match std::error::Error::source(e).and_then(|inner| inner.downcast_ref::<Error>())? {
        Error::Utf8(_) => Some((1007, "text frame is not UTF-8")),
        Error::Protocol(_) => Some((1002, "WebSocket protocol error")),
        _ => None,
    }
}

/// The connection's socket, with every write bounded in time, and its
/// keepalive: a peer that answers no ping, or takes no write, for two
/// keepalive intervals is dead.
pub(crate) struct Peer {
    pub(crate) socket: WebSocket,
    keepalive: Duration,
    /// When the peer was last heard from (not counting its own pings).
    heard: Instant,
    shared: Arc<Shared>,
}

/// What a frame from the peer means, once its liveness is counted and
/// frame errors are answered (see [`Peer::incoming`]).
pub(crate) enum Incoming {
    /// A text or binary message.
    Message(Message),
    /// A control frame: nothing to do.
    Skip,
    /// The peer closed.
    Close(Option<CloseFrame>),
    /// The session is over (already answered where there was an answer).
    End(End),
}

/// A write failed, or the peer took nothing for the write timeout.
pub(crate) struct WriteFailed;

impl Peer {
    pub(crate) fn new(socket: WebSocket, keepalive: Duration, shared: Arc<Shared>) -> Peer {
        Peer {
            socket,
            keepalive,
            heard: Instant::now(),
            shared,
        }
    }

    /// Reads one frame's meaning: counts liveness, and answers a frame the
    /// WebSocket layer refused (a message over `--max-message-bytes` gets
    /// the protocol's error and code 3000; a breach of the framing, the
    /// close code RFC 6455 gives it).
    pub(crate) async fn incoming(
        &mut self,
        frame: Option<Result<Message, axum::Error>>,
    ) -> Incoming {
        // Liveness is an answer to our pings or a message; a ping of its
        // own says nothing (a peer that floods pings and never reads would
        // otherwise count as alive for good). Checked on every frame too,
        // since a flood keeps the reading busy.
        if !matches!(frame, Some(Ok(Message::Ping(_)))) {
            self.heard = Instant::now();
        } else if self.heard.elapsed() > self.keepalive * 2 {
            self.shared.metrics.dead_peers.fetch_add(1, Relaxed);
            return Incoming::End(End::Dead);
        }
        match frame {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => Incoming::Message(m),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => Incoming::Skip,
            Some(Ok(Message::Close(frame))) => Incoming::Close(frame),
            Some(Err(e)) if too_long(&e) => {
                let max = self.shared.config.max_message_bytes;
                let e = ProtocolError::new(
                    ErrorKind::Limit,
                    format!("message longer than {max} bytes"),
                );
                self.fail(e).await;
                Incoming::End(End::Protocol(ErrorKind::Limit))
            }
            Some(Err(e)) => match close_code(&e) {
                Some((code, reason)) => {
                    self.shared.metrics.protocol_error(ErrorKind::Frame);
                    let _ = self.close(code, reason).await;
                    Incoming::End(End::Protocol(ErrorKind::Frame))
                }
                None => Incoming::End(End::Dropped),
            },
            None => Incoming::End(End::Dropped),
        }
    }

    /// A keepalive tick: the peer is dead if unheard for two intervals;
    /// else it is pinged.
    pub(crate) async fn ping(&mut self) -> Result<(), End> {
        if self.heard.elapsed() > self.keepalive * 2 {
            self.shared.metrics.dead_peers.fetch_add(1, Relaxed);
            return Err(End::Dead);
        }
        self.send(Message::Ping(Default::default()))
            .await
            .map_err(|WriteFailed| End::WriteFailed)
    }

    pub(crate) async fn send(&mut self, message: Message) -> Result<(), WriteFailed> {
        match tokio::time::timeout(self.keepalive * 2, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(WriteFailed),
            Err(_) => {
                self.shared.metrics.dead_peers.fetch_add(1, Relaxed);
                Err(WriteFailed)
            }
        }
    }

    async fn text(&mut self, text: String) -> Result<(), WriteFailed> {
        self.send(Message::Text(text.into())).await
    }

    /// Reports a protocol error and closes with code 3000.
    pub(crate) async fn fail(&mut self, e: ProtocolError) {
        self.shared.metrics.protocol_error(e.kind);
        let _ = self.text(e.frame()).await;
        let _ = self.close(PROTOCOL_ERROR_CLOSE, "").await;
    }

    pub(crate) async fn close(
        &mut self,
        code: u16,
        reason: &'static str,
    ) -> Result<(), WriteFailed> {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        self.send(Message::Close(Some(frame))).await
    }
}
