//! A server's routing table: peers are added as connections are accepted,
//! looked up by socket address on every message, and removed on disconnect.
//!
//! ```text
//! cargo run --example router
//! ```
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;

use shardlock::RouterTable;

/// What the server knows about a connected peer. Cheap to clone: lookups
/// return clones, so no lock is ever held by the caller.
#[derive(Clone, Debug)]
struct Peer {
    name: String,
    messages: Arc<AtomicU64>,
}

fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let server_addr = listener.local_addr()?;
    let routes: Arc<RouterTable<SocketAddr, Peer>> = Arc::new(RouterTable::new());

    // Clients: each connects, sends a few lines, and hangs up.
    let clients: Vec<_> = (0..4)
        .map(|i| {
            thread::spawn(move || -> std::io::Result<()> {
                let mut stream = TcpStream::connect(server_addr)?;
                for n in 0..3 {
                    writeln!(stream, "hello {n} from client {i}")?;
                }
                Ok(())
            })
        })
        .collect();

    // The acceptor registers each peer, then hands the connection to a handler.
    let mut handlers = Vec::new();
    for (i, stream) in listener.incoming().take(4).enumerate() {
        let stream = stream?;
        let addr = stream.peer_addr()?;
        let peer = Peer {
            name: format!("peer-{i}"),
            messages: Arc::default(),
        };
        routes.insert(addr, peer);
        let routes = routes.clone();
        handlers.push(thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                // The hot path: find the sender by address.
                let peer = routes.get(&addr).expect("registered on accept");
                peer.messages.fetch_add(1, Ordering::Relaxed);
                println!("{} ({addr}): {line}", peer.name);
            }
            // Disconnected: drop the route, keeping what we knew.
            routes.remove(&addr).expect("still registered")
        }));
    }
    for client in clients {
        client.join().expect("client thread")?;
    }
    for handler in handlers {
        let peer = handler.join().expect("handler thread");
        assert_eq!(peer.messages.load(Ordering::Relaxed), 3);
    }
    assert!(routes.is_empty());
    println!("all peers routed and removed");
    Ok(())
}
