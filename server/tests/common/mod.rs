//! Helpers shared by the server's integration tests: hand-made WebSocket
//! sessions for frames no client library would send, and the largest lock
//! message the default limits allow.
#![allow(dead_code)] // each test binary uses a part

use std::net::SocketAddr;
use std::time::Duration;

/// A WebSocket session on `/v1?namespace={ns}` opened by hand over plain
/// TCP, for frames that no client library would send.
pub fn raw_ws(addr: SocketAddr, ns: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = format!(
        "GET /v1?namespace={ns} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    // The 101 response ends with an empty line; read it byte by byte so no
    // frame after it is swallowed.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8];
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// The code of the close frame the server sends next (skipping other
/// frames), or `None` if the connection ends without one (bounded: 10 s).
pub fn next_close_code(stream: &mut std::net::TcpStream) -> Option<u16> {
    use std::io::Read;
    loop {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).ok()?;
        let len = match head[1] & 0x7f {
            126 => {
                let mut ext = [0u8; 2];
                stream.read_exact(&mut ext).ok()?;
                u64::from(u16::from_be_bytes(ext))
            }
            127 => {
                let mut ext = [0u8; 8];
                stream.read_exact(&mut ext).ok()?;
                u64::from_be_bytes(ext)
            }
            n => u64::from(n),
        };
        let mut payload = vec![0u8; len as usize];
        stream.read_exact(&mut payload).ok()?;
        if head[0] & 0x0f == 0x8 {
            return Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]));
        }
    }
}

/// Sends `text` as one masked text frame (mask key 0).
pub fn send_text(stream: &mut std::net::TcpStream, text: &str) {
    use std::io::Write;
    let len = text.len();
    let mut frame = vec![0x81];
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else {
        assert!(len < 1 << 16);
        frame.extend_from_slice(&[0x80 | 126, (len >> 8) as u8, len as u8]);
    }
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.extend_from_slice(text.as_bytes());
    stream.write_all(&frame).unwrap();
}

/// A lock message of `resources` disjoint write paths, each `depth`
/// segments long, with segments as long as fit in `max_message` bytes;
/// `tag` makes the paths distinct from other such messages'.
pub fn largest_lock(resources: usize, depth: usize, max_message: usize, tag: &str) -> String {
    let per_segment = max_message / (resources * depth) - 6;
    let resource = |r: usize| {
        let path: Vec<String> = (0..depth)
            .map(|d| {
                format!(
                    "\"{:0>width$}\"",
                    format!("{tag}{r}-{d}"),
                    width = per_segment
                )
            })
            .collect();
        format!(r#"{{"type":"write","path":[{}]}}"#, path.join(","))
    };
    let all: Vec<String> = (0..resources).map(resource).collect();
    let message = format!(r#"{{"action":"lock","resources":[{}]}}"#, all.join(","));
    assert!(message.len() <= max_message, "{}", message.len());
    message
}

/// A self-signed certificate for 127.0.0.1, written to PEM files, and a
/// client configuration that trusts it.
pub fn self_signed(name: &str) -> (String, String, std::sync::Arc<rustls::ClientConfig>) {
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let dir = std::env::temp_dir();
    let stem = format!("shardlock-{name}-{}", std::process::id());
    let cert = dir.join(format!("{stem}.cert.pem"));
    let key = dir.join(format!("{stem}.key.pem"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let path = |p: std::path::PathBuf| p.to_str().unwrap().to_owned();
    (path(cert), path(key), std::sync::Arc::new(client))
}
