//! shardlock-server's frame decoder and per-connection state machine, fed
//! arbitrary frames and grant events: nothing panics, every error is a
//! protocol error (the frame the server would send starts with
//! `communication error: ` and ends the connection), and every reply is one
//! of Locktopus's exact reply lines, for the lock the state machine holds.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shardlock_server::protocol::{Command, Limits, Session, State};

#[derive(Arbitrary, Debug)]
enum Event {
    /// A text frame (bytes, decoded lossily as the transport would refuse
    /// invalid UTF-8 before us).
    Text(Vec<u8>),
    /// A frame shaped like a request, to get past the JSON parser often.
    Lock {
        write: bool,
        path: Vec<String>,
        extra: u8,
    },
    Release,
    /// The namespace grants the waiting lock, if any.
    Grant,
    /// Whether a lock is granted at once when requested.
    Immediate(bool),
}

fn check_reply(line: &str, id: u64, action: &str, state: State) {
    assert_eq!(
        line,
        format!(
            "{{\"id\":\"{id}\",\"action\":\"{action}\",\"state\":\"{}\"}}\n",
            state.name()
        )
    );
    let parsed: serde_json::Value = serde_json::from_str(line).expect("a reply is JSON");
    assert_eq!(parsed["id"], id.to_string());
}

fuzz_target!(|events: Vec<Event>| {
    let limits = Limits {
        max_resources: 4,
        max_depth: 4,
        max_segment_bytes: 16,
    };
    let mut session = Session::default();
    let mut next = 0u64;
    let mut immediate = true;
    for event in events {
        let text = match event {
            Event::Text(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Event::Lock { write, path, extra } => {
                let kind = match extra % 5 {
                    0 => "r",
                    1 => "W",
                    2 => "bogus",
                    _ if write => "write",
                    _ => "read",
                };
                let resources = (0..=extra % 3)
                    .map(|_| serde_json::json!({ "type": kind, "path": path }))
                    .collect::<Vec<_>>();
                serde_json::json!({ "action": "lock", "resources": resources }).to_string()
            }
            Event::Release => r#"{"action":"release"}"#.to_owned(),
            Event::Grant => {
                if session.state() == State::Enqueued {
                    let id = session.id();
                    check_reply(&session.acquired(), id, "lock", State::Acquired);
                }
                continue;
            }
            Event::Immediate(now) => {
                immediate = now;
                continue;
            }
        };
        let before = session.state();
        match session.on_text(&text, &limits, || {
            next += 1;
            next
        }) {
            Err(e) => {
                assert!(e.frame().starts_with("communication error: "));
                assert!(!e.message.is_empty());
                assert_eq!(session.state(), before, "an error changes no state");
                return; // the connection is closed
            }
            Ok(Command::Lock { id, resources }) => {
                assert_eq!(before, State::Ready);
                assert_eq!(id, next);
                assert!(!resources.is_empty() && resources.len() <= limits.max_resources);
                assert!(resources.iter().all(|(_, p)| p.len() <= limits.max_depth
                    && p.iter().all(|s| s.len() <= limits.max_segment_bytes)));
                if immediate {
                    check_reply(&session.acquired(), id, "lock", State::Acquired);
                } else {
                    check_reply(&session.enqueued(), id, "lock", State::Enqueued);
                }
            }
            Ok(Command::Release { id, was }) => {
                assert_eq!(before, was);
                assert_ne!(was, State::Ready);
                check_reply(&session.released(), id, "release", State::Ready);
                assert_eq!(session.state(), State::Ready);
            }
        }
    }
});
