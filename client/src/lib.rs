//! An async client for shardlock-server (and Locktopus): protocol v1 over a
//! WebSocket.
//!
//! ```no_run
//! # async fn demo() -> Result<(), shardlock_client::Error> {
//! use shardlock_client::{Client, Mode, State};
//!
//! let mut client = Client::connect("ws://127.0.0.1:9009/v1?namespace=jobs").await?;
//! let reply = client.lock(&[(Mode::Write, &["reports", "2026"])]).await?;
//! if reply.state == State::Enqueued {
//!     client.acquired().await?; // the server pushes it when granted
//! }
//! // ... the critical section ...
//! client.release().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Keeping the session, and learning that it is lost
//! A task of the client's own reads the connection all the time, so the
//! server's keepalive pings are answered whatever the caller is doing: a
//! lock may be held for hours between calls. If the connection ends anyway
//! (the server stops, the network fails, the server finds the peer dead),
//! the lock is lost: the server keeps it for the abandon timeout and then
//! grants it to the next waiter. [`Client::lost`] is a future that resolves
//! when that happens, so a holder can stop its critical section:
//!
//! ```no_run
//! # async fn demo(work: impl std::future::Future<Output = ()>) -> Result<(), shardlock_client::Error> {
//! # use shardlock_client::{Client, Mode};
//! let mut client = Client::connect("ws://127.0.0.1:9009/v1?namespace=jobs").await?;
//! client.lock(&[(Mode::Write, &["reports"])]).await?; // (acquired at once here)
//! tokio::select! {
//!     () = work => client.release().await.map(drop)?,
//!     ended = client.lost() => eprintln!("lock lost ({ended}): stop writing"),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A storage service that must never accept a write from a holder that lost
//! its lock should also check fencing ids (the lock's `id`, which grows
//! within a namespace): reject a write whose id is below the highest seen.
use std::fmt;

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The read buffer of a connection: v1 frames are small.
const READ_BUFFER: usize = 4096;

/// How a resource is locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Read,
    Write,
}

/// A connection's state, as the server reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ready,
    Enqueued,
    Acquired,
}

/// A reply or push from the server.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct Reply {
    /// The lock's id within its namespace (sent as a string).
    #[serde(deserialize_with = "id_from_string")]
    pub id: u64,
    pub action: String,
    pub state: State,
}

fn id_from_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

/// What went wrong.
#[derive(Debug)]
pub enum Error {
    /// The WebSocket failed (connection refused, HTTP error status, I/O).
    WebSocket(tungstenite::Error),
    /// The server reported a protocol error (`communication error: ...`).
    Protocol(String),
    /// The server closed the connection, with this close code if any.
    Closed(Option<u16>),
    /// The server sent something that is not a v1 reply.
    Unexpected(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::WebSocket(e) => write!(f, "websocket: {e}"),
            Error::Protocol(m) => write!(f, "server: {m}"),
            Error::Closed(code) => write!(f, "closed by the server (code {code:?})"),
            Error::Unexpected(m) => write!(f, "unexpected frame: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<tungstenite::Error> for Error {
    fn from(e: tungstenite::Error) -> Self {
        Error::WebSocket(e)
    }
}

/// A frame as received, for tests that look at the raw protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Close(Option<u16>),
}

/// How to connect, beyond the URL.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// The TLS configuration for `wss://` (a private CA, client
    /// certificates). `None`: rustls with the webpki roots.
    #[cfg(feature = "tls")]
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Why a connection ended (see [`Client::lost`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// The close code the server sent, if it sent one.
    pub code: Option<u16>,
    /// What ended it.
    pub reason: String,
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "{} (close code {code})", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

/// One connection to one namespace.
pub struct Client {
    sink: SplitSink<Socket, Message>,
    /// Frames the reader task received, in order, then how it ended.
    inbox: mpsc::UnboundedReceiver<Result<Frame, Error>>,
    /// Set once, when the connection ends.
    ended: watch::Receiver<Option<Ended>>,
    reader: tokio::task::JoinHandle<()>,
    state: State,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Reads the connection until it ends: text and close frames go to the
/// inbox; pings are answered by the WebSocket layer as it reads (it sends
/// the pong before its next read), whatever the caller is doing.
async fn read_all(
    mut stream: SplitStream<Socket>,
    inbox: mpsc::UnboundedSender<Result<Frame, Error>>,
    ended: watch::Sender<Option<Ended>>,
) {
    let end = loop {
        let frame = match stream.next().await {
            None
            | Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed)) => {
                Frame::Close(None)
            }
            Some(Err(e)) => {
                let end = Ended {
                    code: None,
                    reason: format!("connection failed: {e}"),
                };
                let _ = inbox.send(Err(e.into()));
                break end;
            }
            Some(Ok(Message::Text(t))) => Frame::Text(t.to_string()),
            Some(Ok(Message::Close(frame))) => Frame::Close(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
        };
        let closed = match &frame {
            Frame::Close(code) => Some(Ended {
                code: *code,
                reason: "closed by the server".into(),
            }),
            Frame::Text(_) => None,
        };
        let _ = inbox.send(Ok(frame));
        if let Some(end) = closed {
            break end;
        }
    };
    ended.send_replace(Some(end));
}

impl Client {
    /// Connects to `url` (`ws://host:port/v1?namespace=NS[&abandon-timeout-ms=MS]`).
    pub async fn connect(url: &str) -> Result<Client, Error> {
        Self::connect_with_token(url, None).await
    }

    /// Connects presenting `token` as `Authorization: Bearer <token>`.
    pub async fn connect_with_token(url: &str, token: Option<&str>) -> Result<Client, Error> {
        #[allow(clippy::needless_update)] // `tls` is a field only with that feature
        let options = Options {
            token: token.map(str::to_owned),
            ..Options::default()
        };
        Self::connect_with(url, &options).await
    }

    /// Connects to `url` (`ws://` or, with the `tls` feature, `wss://`)
    /// with `options`.
    pub async fn connect_with(url: &str, options: &Options) -> Result<Client, Error> {
        let mut request = url.into_client_request()?;
        if let Some(token) = &options.token {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Error::Unexpected("token is not a valid header value".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        // Small frames: a small read buffer (tungstenite zeroes the unused
        // part on every read), and no Nagle delay.
        let config =
            tungstenite::protocol::WebSocketConfig::default().read_buffer_size(READ_BUFFER);
        #[cfg(feature = "tls")]
        let (ws, _) = {
            let connector = options
                .tls
                .clone()
                .map(tokio_tungstenite::Connector::Rustls);
            tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, connector)
                .await?
        };
        // Without TLS support only `ws://` connects (a `wss://` URL fails).
        #[cfg(not(feature = "tls"))]
        let (ws, _) =
            tokio_tungstenite::connect_async_with_config(request, Some(config), true).await?;
        let (sink, stream) = ws.split();
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let (ended_tx, ended) = watch::channel(None);
        let reader = tokio::spawn(read_all(stream, inbox_tx, ended_tx));
        Ok(Client {
            sink,
            inbox,
            ended,
            reader,
            state: State::Ready,
        })
    }

    /// Resolves when the connection ends, saying why: from then on a held
    /// lock is lost (see the crate docs). Does not borrow the client, so it
    /// can run beside a critical section (`tokio::select!`).
    pub fn lost(&self) -> impl std::future::Future<Output = Ended> + Send + 'static {
        let mut ended = self.ended.clone();
        async move {
            loop {
                if let Some(end) = ended.borrow_and_update().clone() {
                    return end;
                }
                if ended.changed().await.is_err() {
                    return Ended {
                        code: None,
                        reason: "the client was dropped".into(),
                    };
                }
            }
        }
    }

    /// The state as of the last reply.
    pub fn state(&self) -> State {
        self.state
    }

    /// Asks for `resources` as one lock: `Acquired` at once, or `Enqueued`
    /// (then wait with [`acquired`](Self::acquired)).
    pub async fn lock<P: AsRef<str>>(
        &mut self,
        resources: &[(Mode, &[P])],
    ) -> Result<Reply, Error> {
        let resources: Vec<serde_json::Value> = resources
            .iter()
            .map(|(mode, path)| {
                let kind = if *mode == Mode::Read { "read" } else { "write" };
                let path: Vec<&str> = path.iter().map(AsRef::as_ref).collect();
                serde_json::json!({ "type": kind, "path": path })
            })
            .collect();
        let request = serde_json::json!({ "action": "lock", "resources": resources });
        self.send_raw(&request.to_string()).await?;
        self.reply().await
    }

    /// Waits for the pushed `acquired` of an enqueued lock (at once if
    /// already acquired).
    pub async fn acquired(&mut self) -> Result<Reply, Error> {
        loop {
            if self.state != State::Enqueued {
                return Err(Error::Unexpected(format!(
                    "not enqueued but {:?}",
                    self.state
                )));
            }
            let reply = self.reply().await?;
            if reply.state == State::Acquired {
                return Ok(reply);
            }
        }
    }

    /// Releases the lock (or withdraws the waiting request).
    pub async fn release(&mut self) -> Result<Reply, Error> {
        self.send_raw(r#"{"action":"release"}"#).await?;
        loop {
            // An `acquired` push may cross our release on the wire.
            let reply = self.reply().await?;
            if reply.action == "release" {
                return Ok(reply);
            }
        }
    }

    /// Sends a text frame as is.
    pub async fn send_raw(&mut self, text: &str) -> Result<(), Error> {
        self.sink.send(Message::Text(text.into())).await?;
        Ok(())
    }

    /// The next text frame or close (pings are answered by the client's
    /// reader task and never seen here).
    pub async fn recv_raw(&mut self) -> Result<Frame, Error> {
        match self.inbox.recv().await {
            Some(frame) => frame,
            None => Ok(Frame::Close(None)), // the reader ended after a close
        }
    }

    async fn reply(&mut self) -> Result<Reply, Error> {
        match self.recv_raw().await? {
            Frame::Text(text) => {
                if let Some(message) = text.strip_prefix("communication error: ") {
                    return Err(Error::Protocol(message.to_owned()));
                }
                let reply: Reply =
                    serde_json::from_str(&text).map_err(|_| Error::Unexpected(text.clone()))?;
                self.state = reply.state;
                Ok(reply)
            }
            Frame::Close(code) => Err(Error::Closed(code)),
        }
    }

    /// Closes the connection cleanly (a held lock is then kept for the
    /// abandon timeout, as the protocol says).
    pub async fn close(mut self) -> Result<(), Error> {
        self.sink
            .send(Message::Close(Some(tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            })))
            .await?;
        // Read until the server's close (or the end).
        while let Some(Ok(Frame::Text(_))) = self.inbox.recv().await {}
        Ok(())
    }

    /// Drops the connection without a close frame: an abrupt disconnect.
    pub fn abort(self) {
        drop(self); // stops the reader task, which drops the socket
    }
}
