//! The load command: N connections each loop `lock(write ["r", k])` →
//! acquired → `release` → ready, with k random in 0..1000, and report
//! lock+release cycles per second with p50 and p99 latency. `--read-percent
//! 95` makes 95 % of the locks reads. Against `--url` (shardlock-server or
//! Locktopus), or a shardlock-server started in this process.
//!
//! ```text
//! cargo run --release -p shardlock-server --example load -- --connections 1,16
//! cargo run --release -p shardlock-server --example load -- --url ws://127.0.0.1:9009/v1
//! ```
use std::time::{Duration, Instant};

use clap::Parser;
use rand::Rng;
use shardlock_client::{Client, Mode, State};

#[derive(Parser, Debug)]
struct Args {
    /// `ws://host:port/v1` of a running server; without it, one is started
    /// in this process.
    #[arg(long)]
    url: Option<String>,
    /// Connection counts to run, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    connections: Vec<usize>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Percent of locks that are reads.
    #[arg(long, default_value_t = 0)]
    read_percent: u32,
    /// Distinct resources (["r", "0"] .. ["r", keys-1]).
    #[arg(long, default_value_t = 1000)]
    keys: u32,
    /// Also hold one lock (on ["long"], in the measured namespace) for the
    /// whole of each measurement.
    #[arg(long)]
    long_held: bool,
    /// The namespace measured (default: `load-<connections>`).
    #[arg(long)]
    namespace: Option<String>,
}

struct Run {
    cycles: u64,
    per_second: f64,
    p50: Duration,
    p99: Duration,
}

async fn measure(url: &str, connections: usize, args: &Args) -> Run {
    let namespace = (args.namespace.clone()).unwrap_or_else(|| format!("load-{connections}"));
    let url = format!("{url}?namespace={namespace}&abandon-timeout-ms=0");
    // The long-held lock lives in the measured namespace, beside the others.
    let _long = if args.long_held {
        let mut c = Client::connect(&url).await.expect("connect");
        c.lock(&[(Mode::Write, &["long"])]).await.expect("lock");
        Some(c)
    } else {
        None
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (url, keys, read_percent) = (url.clone(), args.keys, args.read_percent);
            tokio::spawn(async move {
                let mut client = Client::connect(&url).await.expect("connect");
                let mut rng = rand::rngs::StdRng::from_os_rng();
                let mut latencies = Vec::new();
                while Instant::now() < deadline {
                    let key = rng.random_range(0..keys).to_string();
                    let mode = if rng.random_range(0..100) < read_percent {
                        Mode::Read
                    } else {
                        Mode::Write
                    };
                    let began = Instant::now();
                    let reply = client
                        .lock(&[(mode, &["r", key.as_str()])])
                        .await
                        .expect("lock");
                    if reply.state == State::Enqueued {
                        client.acquired().await.expect("acquired");
                    }
                    client.release().await.expect("release");
                    latencies.push(began.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("a connection task"));
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Run {
        cycles: latencies.len() as u64,
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.5),
        p99: at(0.99),
    }
}

use rand::SeedableRng;

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let url = match &args.url {
        Some(url) => url.clone(),
        None => {
            let config = <shardlock_server::Config as Parser>::parse_from([
                "shardlock-server",
                "--port",
                "0",
            ]);
            let (tx, rx) = tokio::sync::oneshot::channel();
            tokio::spawn(shardlock_server::run(
                config,
                std::future::pending(),
                move |a| {
                    let _ = tx.send(a);
                },
            ));
            format!("ws://{}/v1", rx.await.expect("the server binds"))
        }
    };
    println!(
        "{url}: lock+release cycles, {} % reads over {} keys, {} s each{}",
        args.read_percent,
        args.keys,
        args.seconds,
        if args.long_held {
            ", one lock held throughout"
        } else {
            ""
        }
    );
    for &n in &args.connections {
        let run = measure(&url, n, &args).await;
        println!(
            "{n:>4} connections: {:>9.0} cycles/s  p50 {:>7.0} µs  p99 {:>7.0} µs  ({} cycles)",
            run.per_second,
            run.p50.as_secs_f64() * 1e6,
            run.p99.as_secs_f64() * 1e6,
            run.cycles
        );
    }
}
