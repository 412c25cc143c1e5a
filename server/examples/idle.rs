//! Memory per idle connection: opens N WebSocket sessions to a running
//! shardlock-server (started separately, so its memory is its own) and
//! reports the server's resident memory before and after, from
//! `/proc/<pid>/status`.
//!
//! ```text
//! ulimit -n 65536
//! cargo run --release -p shardlock-server &           # note its pid
//! cargo run --release -p shardlock-server --example idle -- --pid <pid> --connections 10000
//! ```
use clap::Parser;
use shardlock_client::Client;

#[derive(Parser, Debug)]
struct Args {
    /// The server's process id.
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value = "ws://127.0.0.1:9009/v1")]
    url: String,
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
}

fn rss_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the server's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let before = rss_kib(args.pid);
    let mut clients = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let url = format!("{}?namespace=idle-{}", args.url, i % 100);
        clients.push(
            Client::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("connection {i}: {e}")),
        );
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let after = rss_kib(args.pid);
    let per = (after.saturating_sub(before) * 1024) as f64 / args.connections as f64;
    println!(
        "{} idle connections: server RSS {before} KiB -> {after} KiB, {per:.0} bytes per connection",
        args.connections
    );
    drop(clients);
}
