//! Locktopus protocol v1, without I/O: decoding a client's text frame, the
//! exact bytes of each reply, and the per-connection state machine. The
//! session task (`session.rs`) feeds it frames and lock outcomes; the fuzz
//! target feeds it arbitrary bytes.
//!
//! States: `ready` (may `lock`), `enqueued` (may `release`: the waiting
//! request is withdrawn), `acquired` (may `release`). Every other action, a
//! malformed frame, an empty resource list or a broken limit is a
//! [`ProtocolError`]: the server answers `communication error: <message>`
//! and closes with code 3000, as Locktopus does.
use std::fmt;

use serde::Deserialize;
use shardlock::{LockSet, Mode};

/// Bounds on what one request may ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_resources: usize,
    pub max_depth: usize,
    pub max_segment_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_resources: 64,
            max_depth: 32,
            max_segment_bytes: 256,
        }
    }
}

/// What kind of protocol error, for the metrics' label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    BadJson,
    UnknownAction,
    BadLockType,
    WrongState,
    EmptyLock,
    Limit,
    BinaryFrame,
    /// A frame the WebSocket layer refused (closed with 1002 or 1007).
    Frame,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::BadJson,
        ErrorKind::UnknownAction,
        ErrorKind::BadLockType,
        ErrorKind::WrongState,
        ErrorKind::EmptyLock,
        ErrorKind::Limit,
        ErrorKind::BinaryFrame,
        ErrorKind::Frame,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::BadJson => "bad_json",
            ErrorKind::UnknownAction => "unknown_action",
            ErrorKind::BadLockType => "bad_lock_type",
            ErrorKind::WrongState => "wrong_state",
            ErrorKind::EmptyLock => "empty_lock",
            ErrorKind::Limit => "limit",
            ErrorKind::BinaryFrame => "binary_frame",
            ErrorKind::Frame => "websocket_frame",
        }
    }
}

/// A protocol error: the connection is told and closed with code 3000.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProtocolError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ProtocolError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ProtocolError {
            kind,
            message: message.into(),
        }
    }

    /// The text frame sent before closing.
    pub fn frame(&self) -> String {
        format!("communication error: {}", self.message)
    }
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The close code that follows a protocol error (Locktopus's).
pub const PROTOCOL_ERROR_CLOSE: u16 = 3000;

#[derive(Deserialize)]
struct Request {
    action: serde_json::Value,
    #[serde(default)]
    resources: Option<Vec<Resource>>,
}

#[derive(Deserialize)]
struct Resource {
    #[serde(rename = "type")]
    kind: String,
    path: Vec<String>,
}

/// A decoded request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Lock(Vec<(Mode, Vec<String>)>),
    Release,
}

/// Decodes one text frame.
pub fn decode(text: &str, limits: &Limits) -> Result<Action, ProtocolError> {
    let request: Request = serde_json::from_str(text).map_err(|e| {
        ProtocolError::new(ErrorKind::BadJson, format!("cannot parse message: {e}"))
    })?;
    let action = match &request.action {
        serde_json::Value::String(s) => s.as_str(),
        other => {
            return Err(ProtocolError::new(
                ErrorKind::UnknownAction,
                format!("invalid action: {other}"),
            ))
        }
    };
    match action {
        "release" => Ok(Action::Release),
        "lock" => {
            let resources = request.resources.unwrap_or_default();
            if resources.is_empty() {
                return Err(ProtocolError::new(
                    ErrorKind::EmptyLock,
                    "a lock needs at least one resource",
                ));
            }
            if resources.len() > limits.max_resources {
                return Err(ProtocolError::new(
                    ErrorKind::Limit,
                    format!(
                        "too many resources: {} (limit {})",
                        resources.len(),
                        limits.max_resources
                    ),
                ));
            }
            resources
                .into_iter()
                .map(|r| {
                    let mode = match r.kind.to_ascii_lowercase().as_str() {
                        "r" | "read" => Mode::Read,
                        "w" | "write" => Mode::Write,
                        _ => {
                            return Err(ProtocolError::new(
                                ErrorKind::BadLockType,
                                format!("invalid lock type: {}", r.kind),
                            ))
                        }
                    };
                    if r.path.len() > limits.max_depth {
                        return Err(ProtocolError::new(
                            ErrorKind::Limit,
                            format!(
                                "path too deep: {} segments (limit {})",
                                r.path.len(),
                                limits.max_depth
                            ),
                        ));
                    }
                    if let Some(s) = r.path.iter().find(|s| s.len() > limits.max_segment_bytes) {
                        return Err(ProtocolError::new(
                            ErrorKind::Limit,
                            format!(
                                "path segment too long: {} bytes (limit {})",
                                s.len(),
                                limits.max_segment_bytes
                            ),
                        ));
                    }
                    Ok((mode, r.path))
                })
                .collect::<Result<_, _>>()
                .map(Action::Lock)
        }
        other => Err(ProtocolError::new(
            ErrorKind::UnknownAction,
            format!("invalid action: {other}"),
        )),
    }
}

/// The `LockSet` of a lock's resources.
pub fn lock_set(resources: &[(Mode, Vec<String>)]) -> LockSet {
    resources
        .iter()
        .fold(LockSet::new(), |set, (mode, path)| set.with(*mode, path))
}

/// A reply frame, byte for byte as Locktopus writes it (Go's JSON encoder:
/// this field order, the id as a string, a trailing newline).
pub fn reply(id: u64, action: &str, state: State) -> String {
    format!(
        "{{\"id\":\"{id}\",\"action\":\"{action}\",\"state\":\"{}\"}}\n",
        state.name()
    )
}

/// A connection's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Ready,
    Enqueued,
    Acquired,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Enqueued => "enqueued",
            State::Acquired => "acquired",
        }
    }
}

/// What the session must do for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Request these resources under lock id `id`.
    Lock {
        id: u64,
        resources: Vec<(Mode, Vec<String>)>,
    },
    /// Withdraw the waiting request, or release the held one, of lock `id`.
    Release { id: u64, was: State },
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    state: State,
    /// The id of the current (or last) lock.
    id: u64,
}

impl Default for Session {
    fn default() -> Self {
        Session {
            state: State::Ready,
            id: 0,
        }
    }
}

impl Session {
    pub fn state(&self) -> State {
        self.state
    }

    /// The current lock's id (meaningful when not ready).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Handles one text frame; `next_id` allocates a lock id (only called
    /// for a valid lock). On `Err` the connection must be closed.
    pub fn on_text(
        &mut self,
        text: &str,
        limits: &Limits,
        next_id: impl FnOnce() -> u64,
    ) -> Result<Command, ProtocolError> {
        let action = decode(text, limits)?;
        match (action, self.state) {
            (Action::Lock(resources), State::Ready) => {
                self.id = next_id();
                // Enqueued until the session reports otherwise.
                self.state = State::Enqueued;
                Ok(Command::Lock {
                    id: self.id,
                    resources,
                })
            }
            (Action::Release, was @ (State::Enqueued | State::Acquired)) => {
                self.state = State::Ready;
                Ok(Command::Release { id: self.id, was })
            }
            (action, state) => Err(ProtocolError::new(
                ErrorKind::WrongState,
                format!(
                    "invalid action [{}] in state [{}]",
                    match action {
                        Action::Lock(_) => "lock",
                        Action::Release => "release",
                    },
                    state.name()
                ),
            )),
        }
    }

    /// The lock was granted (at once, or later): the frame to send.
    pub fn acquired(&mut self) -> String {
        debug_assert_eq!(self.state, State::Enqueued);
        self.state = State::Acquired;
        reply(self.id, "lock", State::Acquired)
    }

    /// The lock was queued: the frame to send.
    pub fn enqueued(&self) -> String {
        reply(self.id, "lock", State::Enqueued)
    }

    /// The release's frame.
    pub fn released(&self) -> String {
        reply(self.id, "release", State::Ready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lim() -> Limits {
        Limits::default()
    }

    #[test]
    fn replies_are_byte_for_byte_locktopus() {
        assert_eq!(
            reply(1, "lock", State::Acquired),
            "{\"id\":\"1\",\"action\":\"lock\",\"state\":\"acquired\"}\n"
        );
        assert_eq!(
            reply(42, "release", State::Ready),
            "{\"id\":\"42\",\"action\":\"release\",\"state\":\"ready\"}\n"
        );
    }

    #[test]
    fn requests_decode_as_locktopus_reads_them() {
        let text = r#"{"action":"lock","resources":[{"type":"write","path":["a","b"]},{"type":"R","path":[]}]}"#;
        assert_eq!(
            decode(text, &lim()),
            Ok(Action::Lock(vec![
                (Mode::Write, vec!["a".into(), "b".into()]),
                (Mode::Read, vec![])
            ]))
        );
        assert_eq!(
            decode(r#"{"action":"release","extra":1}"#, &lim()),
            Ok(Action::Release)
        );
        let kinds = [
            ("{", ErrorKind::BadJson),
            ("[]", ErrorKind::BadJson),
            (r#"{"action":"unlock"}"#, ErrorKind::UnknownAction),
            (r#"{"action":7}"#, ErrorKind::UnknownAction),
            (r#"{"action":"lock"}"#, ErrorKind::EmptyLock),
            (r#"{"action":"lock","resources":[]}"#, ErrorKind::EmptyLock),
            (
                r#"{"action":"lock","resources":[{"type":"x","path":[]}]}"#,
                ErrorKind::BadLockType,
            ),
            (
                r#"{"action":"lock","resources":[{"type":"read","path":"a"}]}"#,
                ErrorKind::BadJson,
            ),
        ];
        for (text, kind) in kinds {
            assert_eq!(decode(text, &lim()).unwrap_err().kind, kind, "{text}");
        }
    }

    #[test]
    fn limits_are_protocol_errors() {
        let limits = Limits {
            max_resources: 2,
            max_depth: 2,
            max_segment_bytes: 3,
        };
        let lock = |resources: &str| format!(r#"{{"action":"lock","resources":[{resources}]}}"#);
        let r = r#"{"type":"read","path":["a"]}"#;
        assert!(decode(&lock(&[r, r].join(",")), &limits).is_ok());
        for text in [
            lock(&[r, r, r].join(",")),
            lock(r#"{"type":"read","path":["a","b","c"]}"#),
            lock(r#"{"type":"read","path":["abcd"]}"#),
        ] {
            let e = decode(&text, &limits).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Limit, "{text}: {e}");
        }
    }

    #[test]
    fn the_state_machine_allows_what_locktopus_allows() {
        let mut s = Session::default();
        let lock = r#"{"action":"lock","resources":[{"type":"w","path":["x"]}]}"#;
        let release = r#"{"action":"release"}"#;
        let e = s.on_text(release, &lim(), || 1).unwrap_err();
        assert_eq!(
            e.frame(),
            "communication error: invalid action [release] in state [ready]"
        );
        let Command::Lock { id, .. } = s.on_text(lock, &lim(), || 7).unwrap() else {
            panic!()
        };
        assert_eq!((id, s.state()), (7, State::Enqueued));
        assert_eq!(s.enqueued(), reply(7, "lock", State::Enqueued));
        assert_eq!(s.acquired(), reply(7, "lock", State::Acquired));
        let e = s.on_text(lock, &lim(), || 8).unwrap_err();
        assert_eq!(e.message, "invalid action [lock] in state [acquired]");
        assert_eq!(
            s.on_text(release, &lim(), || 9),
            Ok(Command::Release {
                id: 7,
                was: State::Acquired
            })
        );
        assert_eq!(s.released(), reply(7, "release", State::Ready));
        // Release while enqueued.
        s.on_text(lock, &lim(), || 10).unwrap();
        assert_eq!(
            s.on_text(release, &lim(), || 11),
            Ok(Command::Release {
                id: 10,
                was: State::Enqueued
            })
        );
    }
}
