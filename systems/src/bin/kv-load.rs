//! `kv-load`: the load generator, against a running `kv-store` (`--url`), or
//! (`--compare`, the default) against both backends served in this process,
//! in interleaved rounds with the same generator, printing the ratio.
//!
//! ```text
//! cargo run --release -p shardlock-systems --bin kv-load
//! ```
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use shardlock_systems::kv::{self, load};

#[derive(Parser, Debug)]
#[command(about = "Load generator for kv-store: requests per second for a GET-heavy mix")]
struct Args {
    /// A running kv-store to load (host:port); without it, compare the two
    /// backends in this process.
    #[arg(long)]
    target: Option<SocketAddr>,
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    #[arg(long, default_value_t = 95)]
    get_percent: u32,
    /// Interleaved rounds per backend when comparing.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

async fn serve(backend: kv::Backend) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = kv::router(backend.store());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

fn print(name: &str, r: &load::LoadReport) {
    println!(
        "{name:>14}: {:>9.0} req/s  p50 {:>6.0} µs  p99 {:>6.0} µs  ({} requests, {} errors)",
        r.per_second,
        r.p50.as_secs_f64() * 1e6,
        r.p99.as_secs_f64() * 1e6,
        r.requests,
        r.errors
    );
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let config = load::LoadConfig {
        connections: args.connections,
        duration: Duration::from_secs_f64(args.seconds),
        keys: args.keys,
        get_percent: args.get_percent,
    };
    if let Some(target) = args.target {
        print("kv-store", &load::run(target, &config).await?);
        return Ok(());
    }
    println!(
        "{} connections, {} % GET / {} % PUT over {} keys, {} s per run, {} interleaved rounds",
        args.connections,
        args.get_percent,
        100 - args.get_percent,
        args.keys,
        args.seconds,
        args.rounds
    );
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        for (backend, name, out) in [
            (kv::Backend::RouterTable, "RouterTable", &mut ours),
            (kv::Backend::Rwlock, "RwLock<HashMap>", &mut theirs),
        ] {
            let report = load::run(serve(backend).await?, &config).await?;
            print(&format!("{name} r{}", round + 1), &report);
            out.push(report.per_second);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut ours), median(&mut theirs));
    println!(
        "median: RouterTable {a:.0} req/s, RwLock<HashMap> {b:.0} req/s, ratio {:.2}",
        a / b
    );
    Ok(())
}
