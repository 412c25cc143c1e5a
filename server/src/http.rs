//! The HTTP side: routes, the WebSocket upgrade of `/v1`, auth, and the
//! accept loop (handshake timeout, graceful drain).
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper::server::conn::http1::Builder;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;
use tracing::Instrument;

use crate::cluster::forward::{self as cluster_forward, Refused};
use crate::cluster::{Owner, Route, FORWARDED_HEADER};
use crate::namespace::JoinError;
use crate::Shared;

/// The most namespace names `GET /` lists (the rest are counted).
const STATUS_NAMES_MAX: usize = 100;

/// The most bytes a session lets wait unsent for its peer (see the upgrade).
const WRITE_BUFFER_MAX: usize = 64 * 1024;

/// The routes. `/v1`, `/stats_v1` and `/metrics` need the token (when one
/// is configured); `/` and `/healthz` do not.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1", get(v1))
        .route("/stats_v1", get(stats_v1))
        .route("/metrics", get(metrics))
        .route_layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ))
        .route("/", get(status))
        .route("/healthz", get(healthz))
        .with_state(shared)
}

/// Refuses (401) a request without the configured token.
async fn require_token(
    State(shared): State<Arc<Shared>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let params: Params = Query::try_from_uri(request.uri()).unwrap_or(Query(HashMap::new()));
    if authorized(&shared, request.headers(), &params) {
        next.run(request).await
    } else {
        text(StatusCode::UNAUTHORIZED, "missing or wrong token")
    }
}

type Params = Query<HashMap<String, String>>;

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

/// Whether the request carries the configured token (always, if none is
/// configured). Compared in constant time.
fn authorized(shared: &Shared, headers: &HeaderMap, params: &HashMap<String, String>) -> bool {
    let Some(expected) = &shared.config.auth_token else {
        return true;
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    let given = bearer.or(params.get("token").map(String::as_str));
    given.is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes()))
}

/// The token of an `Authorization: Bearer <token>` value; the scheme is
/// case-insensitive (RFC 7235), and spaces around the token are ignored.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Equality whose time depends only on the lengths (`subtle`'s).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let mut body = format!(
        "shardlock-server {} (Locktopus protocol v1)\n\nAvailable API versions:\n/v1\te.g. ws://host:port/v1?namespace=default\n",
        env!("CARGO_PKG_VERSION")
    );
    if shared.config.auth_token.is_some() {
        body.push_str(&format!(
            "\nOpened namespaces: {}\n",
            shared.namespaces.len()
        ));
    } else if shared.namespaces.is_empty() {
        body.push_str("\nNo opened namespaces\n");
    } else {
        // Bounded: an unauthenticated page lists at most this many names.
        let all = shared.namespaces.all();
        body.push_str("\nOpened namespaces:\n");
        for (name, _) in all.iter().take(STATUS_NAMES_MAX) {
            body.push_str(name);
            body.push('\n');
        }
        if all.len() > STATUS_NAMES_MAX {
            body.push_str(&format!("... and {} more\n", all.len() - STATUS_NAMES_MAX));
        }
    }
    text(StatusCode::OK, body)
}

async fn v1(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Params,
    uri: axum::http::Uri,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let namespace = match params.get("namespace") {
        Some(ns) if !ns.is_empty() => ns.clone(),
        _ => {
            return text(
                StatusCode::BAD_REQUEST,
                "URL parameter 'namespace' is required",
            )
        }
    };
    let abandon = match params.get("abandon-timeout-ms") {
        None => shared.config.default_abandon(),
        Some(ms) => match ms.parse::<u64>() {
            Ok(ms) if ms > shared.config.max_abandon_timeout => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "URL parameter 'abandon-timeout-ms' is above this server's maximum ({} ms)",
                        shared.config.max_abandon_timeout
                    ),
                )
            }
            Ok(ms) => Duration::from_millis(ms),
            Err(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "URL parameter 'abandon-timeout-ms' should be integer value >= 0 representing broken connection timeout (in milliseconds)",
                )
            }
        },
    };
    if *shared.shutdown.borrow() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    // Count the session before upgrading, so the limit holds under races.
    let open = shared.metrics.connections.fetch_add(1, Relaxed);
    let session = SessionCount(shared.clone());
    if open as usize >= shared.config.max_connections {
        shared.metrics.rejected_connections.fetch_add(1, Relaxed);
        return text(StatusCode::SERVICE_UNAVAILABLE, "too many connections");
    }
    let claim = match &shared.cluster {
        None => None,
        Some(cluster) => {
            let mut forwarded = headers.contains_key(FORWARDED_HEADER);
            loop {
                match cluster.route(&namespace, forwarded).await {
                    Route::Local(claim) => break Some(claim),
                    Route::Forward { url, claimed } => {
                        let query = uri.query().unwrap_or_default();
                        match cluster_forward::open(&shared, &url, query).await {
                            Ok(upstream) => return forward(session, peer, &url, upstream, upgrade),
                            // The instance the hash picks is unreachable and
                            // nobody owns the namespace: claim it here.
                            Err(Refused::Unreachable(_)) if !claimed && !forwarded => {
                                forwarded = true;
                            }
                            Err(refused) => return refused.into_response(),
                        }
                    }
                    Route::Unavailable(why) => {
                        return text(StatusCode::SERVICE_UNAVAILABLE, format!("cluster: {why}"))
                    }
                }
            }
        }
    };
    let member = match shared.namespaces.join(
        &namespace,
        shared.config.max_connections_per_namespace,
        claim.as_ref(),
    ) {
        Ok(member) => member,
        Err(JoinError::Full) => {
            shared.metrics.rejected_connections.fetch_add(1, Relaxed);
            return text(StatusCode::SERVICE_UNAVAILABLE, "too many connections");
        }
        Err(JoinError::Fenced) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "cluster: no cluster lease: this instance is fenced",
            )
        }
    };
    let id = shared.metrics.connections_total.fetch_add(1, Relaxed) + 1;
    configure(upgrade, &shared)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "upgrade failed"))
        .on_upgrade(move |socket| {
            // Every log line of the session carries its id, peer and
            // namespace.
            let span = tracing::info_span!("session", id, %peer, namespace = member.name());
            let shared = session.0.clone();
            async move {
                let log = shared.config.log_clients;
                if log {
                    tracing::info!("session opened");
                }
                let end = crate::session::serve(socket, member, shared, abandon).await;
                if log {
                    tracing::info!(reason = %end, "session closed");
                }
                drop(session);
            }
            .instrument(span)
        })
}

/// The socket settings of every session, direct or forwarded.
fn configure(upgrade: WebSocketUpgrade, shared: &Shared) -> WebSocketUpgrade {
    // v1 frames are small: a small read buffer (tungstenite zeroes its
    // unused part on every read; the 128 KiB default cost a fifth of the
    // CPU under load).
    upgrade
        .read_buffer_size(4096)
        .write_buffer_size(0)
        // What may wait unsent for a peer that does not read: v1 replies
        // and control frames are small. Without a cap, every ping of a peer
        // that floods pings and never reads queued a pong (gigabytes); with
        // it, tungstenite keeps only the latest pong unsent.
        .max_write_buffer_size(WRITE_BUFFER_MAX)
        .max_message_size(shared.config.max_message_bytes)
        .max_frame_size(shared.config.max_message_bytes)
}

/// Cluster mode: relays the session to the namespace's owner (see
/// [`crate::cluster::forward`]).
fn forward(
    session: SessionCount,
    peer: SocketAddr,
    owner: &str,
    upstream: cluster_forward::Upstream,
    upgrade: WebSocketUpgrade,
) -> Response {
    let shared = session.0.clone();
    let cluster = shared.cluster.as_ref().expect("forwarding is cluster mode");
    cluster.counters.forwarded_total.fetch_add(1, Relaxed);
    let id = shared.metrics.connections_total.fetch_add(1, Relaxed) + 1;
    let span = tracing::info_span!("forwarded", id, %peer, owner);
    configure(upgrade, &shared)
        .on_failed_upgrade(|e| tracing::debug!(error = %e, "upgrade failed"))
        .on_upgrade(move |socket| {
            async move {
                let shared = session.0.clone();
                let cluster = shared.cluster.clone().expect("cluster mode");
                cluster.counters.forwarded_open.fetch_add(1, Relaxed);
                let end = cluster_forward::pump(socket, upstream, shared.clone()).await;
                if shared.config.log_clients {
                    tracing::info!(reason = %end, "forwarded session closed");
                }
                cluster.counters.forwarded_open.fetch_sub(1, Relaxed);
                drop(session);
            }
            .instrument(span)
        })
}

/// Decrements the open-session gauge when the session (or a failed
/// upgrade) ends.
struct SessionCount(Arc<Shared>);

impl Drop for SessionCount {
    fn drop(&mut self) {
        self.0.metrics.connections.fetch_sub(1, Relaxed);
        self.0.closed.notify_waiters();
    }
}

async fn stats_v1(
    State(shared): State<Arc<Shared>>,
    Query(params): Params,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let Some(name) = params.get("namespace").filter(|n| !n.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "URL parameter 'namespace' is required",
        );
    };
    if let Some(answer) = at_owner(&shared, name, &uri, &headers).await {
        return answer;
    }
    match shared.namespaces.stats(name) {
        None => text(StatusCode::NOT_FOUND, "Namespace not found"),
        Some(stats) => axum::Json(stats).into_response(),
    }
}

/// Cluster mode: the owner's answer to a request about namespace `name`
/// (same path and query), unless this instance owns it, nobody does, or
/// the request was forwarded already (`None`: answer here).
async fn at_owner(
    shared: &Shared,
    name: &str,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
) -> Option<Response> {
    let cluster = shared.cluster.as_ref()?;
    if headers.contains_key(FORWARDED_HEADER) {
        return None;
    }
    match cluster.owner(name).await {
        Ok(Owner::Other(url)) => {
            let path = uri.path_and_query().map_or("/", |p| p.as_str());
            Some(cluster_forward::get(shared, &url, path).await)
        }
        Ok(Owner::Me | Owner::Nobody) => None,
        Err(why) => Some(text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cluster: {why}"),
        )),
    }
}

/// This instance's metrics; with `?namespace=NS`, also that namespace's
/// gauges, from its owner in cluster mode.
async fn metrics(
    State(shared): State<Arc<Shared>>,
    Query(params): Params,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    let namespace = params.get("namespace").filter(|n| !n.is_empty());
    if let Some(name) = namespace {
        if let Some(answer) = at_owner(&shared, name, &uri, &headers).await {
            return answer;
        }
    }
    let scoped = namespace.map(|name| (name.as_str(), shared.namespaces.stats(name)));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared
            .metrics
            .render(&shared.namespaces, shared.cluster.as_deref(), scoped),
    )
        .into_response()
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    if *shared.shutdown.borrow() {
        text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
    } else if shared.cluster.as_ref().is_some_and(|c| !c.ready()) {
        text(StatusCode::SERVICE_UNAVAILABLE, "no cluster lease\n")
    } else {
        text(StatusCode::OK, "ok\n")
    }
}

/// Counts a connection in its HTTP phase (from accept to its upgrade or
/// close), for the drain.
struct HttpOpen(Arc<Shared>);

impl HttpOpen {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.http_open.fetch_add(1, Relaxed);
        HttpOpen(shared.clone())
    }
}

impl Drop for HttpOpen {
    fn drop(&mut self) {
        self.0.http_open.fetch_sub(1, Relaxed);
        self.0.closed.notify_waiters();
    }
}

/// Serves one connection (plain or TLS) until it closes or upgrades; on
/// shutdown, finishes the request in flight and closes.
async fn serve_connection<S>(
    io: S,
    peer: SocketAddr,
    app: Router,
    builder: &Builder,
    shared: &Shared,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // The peer's address, for the handlers (`ConnectInfo`).
    let app = app.map_request(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let service = TowerToHyperService::new(app);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut shutdown = shared.shutdown.subscribe();
    if !*shared.shutdown.borrow() {
        tokio::select! {
            _ = connection.as_mut() => return,
            _ = shutdown.changed() => {}
        }
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// Accepts connections on `listener` (through `tls` when given) until `stop` resolves; then stops
/// accepting, tells every session to close (code 1001) and waits for them
/// up to the drain timeout.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    stop: impl Future<Output = ()>,
) {
    let app = router(shared.clone());
    // HTTP/1.1 only (WebSocket upgrades): hyper's own connection, whose
    // header timeout runs from the first byte awaited (hyper-util's `auto`
    // builder first waits, unbounded, for bytes to tell h1 from h2).
    let mut builder = Builder::new();
    let handshake = Duration::from_millis(shared.config.handshake_timeout.max(1));
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(handshake);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    // A connection that died in the backlog: the next one.
                    Err(e) if is_connection_error(&e) => continue,
                    // Out of file descriptors (or memory): back off instead
                    // of spinning on the error while sessions close.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (app, builder, tls) = (app.clone(), builder.clone(), tls.clone());
                let open = HttpOpen::new(&shared);
                tokio::spawn(async move {
                    let shared = &open.0;
                    match tls {
                        None => serve_connection(stream, peer, app, &builder, shared).await,
                        // The TLS handshake gets the same bound as the
                        // request headers.
                        Some(tls) => match tokio::time::timeout(handshake, tls.accept(stream)).await {
                            Ok(Ok(stream)) => serve_connection(stream, peer, app, &builder, shared).await,
                            Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        },
                    }
                });
            }
            () = &mut stop => break,
        }
    }
    drop(listener);
    shared.shutdown.store(true);
    let open = || shared.metrics.connections.load(Relaxed) + shared.http_open.load(Relaxed) as i64;
    let _ = tokio::time::timeout(Duration::from_millis(shared.config.drain_timeout), async {
        while open() > 0 {
            let closed = shared.closed.notified();
            if open() == 0 {
                break;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), closed).await;
        }
    })
    .await;
}
