//! `kv-store`: the HTTP key-value datastore of people.
//!
//! ```text
//! cargo run --release -p shardlock-systems --bin kv-store -- --port 8080
//! curl -X PUT localhost:8080/person/update -H 'Content-Type: application/json' -d '{"id":100,"name":"mob"}'
//! curl -X GET localhost:8080/person/get -H 'Content-Type: application/json' -d '{"id":100}'
//! ```
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shardlock_systems::{kv, shutdown};

#[derive(Parser, Debug)]
#[command(about = "An HTTP key-value datastore of people, on shardlock's RouterTable")]
struct Args {
    /// Address to bind; loopback by default (use 0.0.0.0 to expose it).
    #[arg(long, env = "KV_HOST", default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port to bind (0 picks a free one; the address is printed).
    #[arg(short, long, env = "KV_PORT", default_value_t = 8080)]
    port: u16,
    /// Load people from this file at start and save them to it atomically
    /// on shutdown and every --save-every seconds.
    #[arg(long, env = "KV_DATA")]
    data: Option<PathBuf>,
    /// Seconds between periodic saves (with --data).
    #[arg(long, default_value_t = 30)]
    save_every: u64,
    /// Storage backend (the RwLock one exists for comparison).
    #[arg(long, value_enum, default_value = "router-table")]
    backend: kv::Backend,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    shutdown::init_tracing();
    let args = Args::parse();
    let store = args.backend.store();
    if let Some(path) = &args.data {
        let n = kv::load_file(&*store, path)?;
        tracing::info!(people = n, path = %path.display(), "loaded");
    }
    let saver = args.data.clone().map(|path| {
        tokio::spawn(kv::save_periodically(
            store.clone(),
            path,
            Duration::from_secs(args.save_every.max(1)),
        ))
    });
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.host, args.port)).await?;
    println!("kv-store listening on http://{}", listener.local_addr()?);
    axum::serve(listener, kv::router(store.clone()))
        .with_graceful_shutdown(shutdown::signal(None))
        .await?;
    if let Some(saver) = saver {
        saver.abort();
    }
    if let Some(path) = &args.data {
        let n = kv::save(&*store, path)?;
        println!("kv-store saved {n} people to {}", path.display());
    }
    println!("kv-store stopped");
    Ok(())
}
