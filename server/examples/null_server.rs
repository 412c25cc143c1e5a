//! A *null* v1 server, for measurement only: the same transport as
//! shardlock-server (tokio, axum's WebSocket, 4 KiB read buffers, no Nagle)
//! answering every `lock` with `acquired` and every `release` with `ready`,
//! with no lock, no parsing and no bookkeeping. What the load command
//! reaches against it is the ceiling of any server on this transport on
//! the machine at hand; `server/compat/compare.sh` runs it beside the two
//! real servers. It locks nothing: never use it as a lock server.
//!
//! ```text
//! cargo run --release -p shardlock-server --example null_server -- --port 9043
//! ```
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::routing::get;
use clap::Parser;

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value_t = 9043)]
    port: u16,
}

async fn session(mut socket: WebSocket, ids: Arc<AtomicU64>) {
    let mut id = 0;
    while let Some(Ok(Message::Text(text))) = socket.recv().await {
        let reply = if text.as_str().contains("\"lock\"") {
            id = ids.fetch_add(1, Relaxed) + 1;
            format!("{{\"id\":\"{id}\",\"action\":\"lock\",\"state\":\"acquired\"}}\n")
        } else {
            format!("{{\"id\":\"{id}\",\"action\":\"release\",\"state\":\"ready\"}}\n")
        };
        if socket.send(Message::Text(reply.into())).await.is_err() {
            break;
        }
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let app = axum::Router::new()
        .route(
            "/v1",
            get(
                |State(ids): State<Arc<AtomicU64>>, upgrade: WebSocketUpgrade| async move {
                    upgrade
                        .read_buffer_size(4096)
                        .write_buffer_size(0)
                        .on_upgrade(move |socket| session(socket, ids))
                },
            ),
        )
        .with_state(Arc::new(AtomicU64::new(0)));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    println!(
        "null v1 server (locks nothing) on ws://{}/v1",
        listener.local_addr()?
    );
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}
