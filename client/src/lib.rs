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
use std::fmt;

use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
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

/// One connection to one namespace.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    state: State,
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
        Ok(Client {
            ws,
            state: State::Ready,
        })
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
        self.ws.send(Message::Text(text.into())).await?;
        Ok(())
    }

    /// The next text frame or close (pings are answered and skipped).
    pub async fn recv_raw(&mut self) -> Result<Frame, Error> {
        loop {
            match self.ws.next().await {
                None => return Ok(Frame::Close(None)),
                Some(Err(
                    tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed,
                )) => return Ok(Frame::Close(None)),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(t))) => return Ok(Frame::Text(t.to_string())),
                Some(Ok(Message::Close(frame))) => {
                    return Ok(Frame::Close(frame.map(|f| u16::from(f.code))))
                }
                Some(Ok(_)) => {}
            }
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
        self.ws
            .close(Some(tungstenite::protocol::CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            }))
            .await?;
        // Read until the server's close (or the end).
        while let Some(Ok(_)) = self.ws.next().await {}
        Ok(())
    }

    /// Drops the connection without a close frame: an abrupt disconnect.
    pub fn abort(self) {
        drop(self.ws);
    }
}
