//! Forwarding to a namespace's owner: a client's WebSocket, frame for
//! frame, and `stats_v1` and `metrics?namespace=` requests.
//!
//! The forwarder opens the owner's WebSocket *before* it accepts the
//! client's, so the owner's HTTP answer (400, 401, 503) reaches the client
//! as is. Then text and binary messages pass unchanged both ways, and so
//! do close frames (code 3000 after a protocol error included); pushed
//! `acquired` replies are relayed as they come. Pings are not relayed:
//! each hop keeps itself alive, and the forwarder checks the client with
//! the session's keepalive rule. A client that vanishes makes the forwarder
//! drop the owner's connection without a close frame, so the owner sees
//! what it would have seen from the client: its held lock waits out the
//! abandon timeout. An owner that vanishes closes the client with
//! [`OWNER_GONE_CLOSE`].
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame as UpClose, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self as ts, Message as Up};
use tokio_tungstenite::WebSocketStream;

use super::FORWARDED_HEADER;
use crate::http::text;
use crate::session::{End, Incoming, Peer};
use crate::Shared;

/// The close code when the owner's connection ends without a close frame.
pub const OWNER_GONE_CLOSE: u16 = 1012;
const OWNER_GONE_REASON: &str = "the namespace's owner went away: lock again";
/// The most bytes of an owner's HTTP answer relayed.
const ANSWER_MAX: usize = 1 << 20;

/// A byte stream to another instance: plain TCP, or TLS for an
/// `https://` one.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

pub type Upstream = WebSocketStream<Box<dyn Io>>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Whether an instance's URL is `https://`, and its `host:port`.
fn authority(url: &str) -> (bool, &str) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    (scheme == "https", rest.split('/').next().unwrap_or(rest))
}

/// Opens a stream to the instance at `url`.
async fn dial(shared: &Shared, url: &str) -> Result<Box<dyn Io>, BoxError> {
    let (tls, authority) = authority(url);
    let tcp = tokio::net::TcpStream::connect(authority).await?;
    tcp.set_nodelay(true)?;
    if !tls {
        return Ok(Box::new(tcp));
    }
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())?;
    let cluster = shared.cluster.as_ref().expect("forwarding is cluster mode");
    Ok(Box::new(cluster.tls.connect(name, tcp).await?))
}

/// An HTTP answer of the owner, relayed: status, content type and body.
fn relay(status: u16, content_type: Option<&HeaderValue>, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut response = (status, body).into_response();
    if let Some(ct) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, ct.clone());
    }
    response
}

fn unreachable(owner: &str, e: impl std::fmt::Display) -> Response {
    text(
        StatusCode::BAD_GATEWAY,
        format!("the namespace's owner {owner} is unreachable: {e}"),
    )
}

/// Why the owner's `/v1` could not be opened: its own HTTP answer, or it
/// could not be reached (each with the response for the client).
pub enum Refused {
    Answer(Response),
    Unreachable(Response),
}

impl Refused {
    pub fn into_response(self) -> Response {
        match self {
            Refused::Answer(r) | Refused::Unreachable(r) => r,
        }
    }
}

/// Opens the owner's `/v1` with the client's query.
pub async fn open(shared: &Shared, owner: &str, query: &str) -> Result<Upstream, Refused> {
    let unreachable =
        |owner: &str, e: &dyn std::fmt::Display| Refused::Unreachable(unreachable(owner, e));
    let (tls, authority) = authority(owner);
    let scheme = if tls { "wss" } else { "ws" };
    let url = format!("{scheme}://{authority}/v1?{query}");
    let mut request = url
        .as_str()
        .into_client_request()
        .map_err(|e| unreachable(owner, &e))?;
    mark(request.headers_mut(), shared);
    let config = WebSocketConfig::default()
        .max_message_size(Some(shared.config.max_message_bytes))
        .max_frame_size(Some(shared.config.max_message_bytes));
    let deadline = Duration::from_millis(shared.config.handshake_timeout.max(1));
    let connect = async {
        let stream = dial(shared, owner)
            .await
            .map_err(|e| unreachable(owner, &e))?;
        Ok(tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await)
    };
    match tokio::time::timeout(deadline, connect).await {
        Ok(Err(response)) => Err(response),
        Ok(Ok(Ok((upstream, _)))) => Ok(upstream),
        Ok(Ok(Err(ts::Error::Http(answer)))) => {
            let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
            let status = answer.status().as_u16();
            let mut body = answer.into_body().unwrap_or_default();
            body.truncate(ANSWER_MAX);
            Err(Refused::Answer(relay(status, content_type.as_ref(), body)))
        }
        Ok(Ok(Err(e))) => Err(unreachable(owner, &e)),
        Err(_) => Err(unreachable(owner, &"handshake timed out")),
    }
}

/// Marks a request as forwarded, with this instance's token.
fn mark(headers: &mut axum::http::HeaderMap, shared: &Shared) {
    headers.insert(FORWARDED_HEADER, HeaderValue::from_static("1"));
    if let Some(token) = &shared.config.auth_token {
        if let Ok(v) = HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert(header::AUTHORIZATION, v);
        }
    }
}

/// `GET path` (with its query) of the owner, relayed: `stats_v1` and a
/// namespace's metrics.
pub async fn get(shared: &Shared, owner: &str, path: &str) -> Response {
    match tokio::time::timeout(
        Duration::from_millis(shared.config.handshake_timeout.max(1)),
        fetch(shared, owner, path),
    )
    .await
    {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => unreachable(owner, e),
        Err(_) => unreachable(owner, "timed out"),
    }
}

async fn fetch(shared: &Shared, owner: &str, path: &str) -> Result<Response, BoxError> {
    let (_, authority) = authority(owner);
    let stream = dial(shared, owner).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut request = hyper::Request::get(path)
        .header(header::HOST, authority)
        .body(http_body_util::Empty::<bytes::Bytes>::new())?;
    mark(request.headers_mut(), shared);
    let answer = sender.send_request(request).await?;
    let (parts, body) = answer.into_parts();
    let body = http_body_util::Limited::new(body, ANSWER_MAX)
        .collect()
        .await?
        .to_bytes();
    Ok(relay(
        parts.status.as_u16(),
        parts.headers.get(header::CONTENT_TYPE),
        body.to_vec(),
    ))
}

fn up_close(frame: Option<CloseFrame>) -> Up {
    Up::Close(frame.map(|f| UpClose {
        code: CloseCode::from(f.code),
        reason: f.reason.as_str().into(),
    }))
}

/// Relays between the client and the owner until either ends.
pub async fn pump(client: WebSocket, mut upstream: Upstream, shared: Arc<Shared>) -> End {
    let keepalive = shared.config.keepalive();
    let mut peer = Peer::new(client, keepalive, shared.clone());
    let mut shutdown = shared.shutdown.subscribe();
    let mut ping = tokio::time::interval(keepalive);
    ping.tick().await;
    loop {
        if *shared.shutdown.borrow() {
            let _ = peer.close(1001, "server shutting down").await;
            let _ = upstream.close(None).await;
            return End::Shutdown;
        }
        tokio::select! {
            biased;
            _ = shutdown.changed() => continue,
            frame = peer.socket.recv() => {
                let message = match peer.incoming(frame).await {
                    Incoming::Message(Message::Text(t)) => Up::Text(t.as_str().into()),
                    Incoming::Message(Message::Binary(b)) => Up::Binary(b),
                    Incoming::Message(_) | Incoming::Skip => continue,
                    Incoming::Close(frame) => {
                        let _ = upstream.send(up_close(frame)).await;
                        return End::Closed;
                    }
                    // Dropped or dead: so is the owner's connection,
                    // unclosed, as the owner would have seen the client's.
                    Incoming::End(end @ (End::Dropped | End::Dead)) => return end,
                    Incoming::End(end) => {
                        let _ = upstream.close(None).await;
                        return end;
                    }
                };
                if upstream.send(message).await.is_err() {
                    let _ = peer.close(OWNER_GONE_CLOSE, OWNER_GONE_REASON).await;
                    return End::OwnerGone;
                }
            }
            message = upstream.next() => {
                let relayed = match message {
                    Some(Ok(Up::Text(t))) => Message::Text(t.as_str().into()),
                    Some(Ok(Up::Binary(b))) => Message::Binary(b),
                    Some(Ok(Up::Close(frame))) => {
                        let frame = frame.map(|f| CloseFrame { code: f.code.into(), reason: f.reason.as_str().into() });
                        let _ = peer.send(Message::Close(frame)).await;
                        return End::OwnerClosed;
                    }
                    Some(Ok(Up::Ping(_) | Up::Pong(_) | Up::Frame(_))) => continue,
                    Some(Err(_)) | None => {
                        let _ = peer.close(OWNER_GONE_CLOSE, OWNER_GONE_REASON).await;
                        return End::OwnerGone;
                    }
                };
                if peer.send(relayed).await.is_err() {
                    return End::WriteFailed;
                }
            }
            _ = ping.tick() => {
                if let Err(end) = peer.ping().await {
                    return end;
                }
            }
        }
    }
}
