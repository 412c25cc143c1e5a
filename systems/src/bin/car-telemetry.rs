//! `car-telemetry`: one owner task talks to a simulated car and publishes
//! readings through a `Watch`; a printer, a file logger and a speeder
//! consume them. Ctrl-C (or `--run-for`) stops every task cleanly.
//!
//! ```text
//! cargo run --release -p shardlock-systems --bin car-telemetry -- --run-for 12
//! ```
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use shardlock_systems::{shutdown, telemetry};

#[derive(Parser, Debug)]
#[command(about = "An owner/consumer telemetry fan-out on shardlock's Watch")]
struct Args {
    /// Stop after this many seconds (else on Ctrl-C or SIGTERM).
    #[arg(long)]
    run_for: Option<f64>,
    /// File the logger appends `<date>: <speed>, <location>` lines to
    /// (default: `car-telemetry.log` in the system's temporary directory,
    /// not the working directory).
    #[arg(long, default_value_os_t = std::env::temp_dir().join("car-telemetry.log"))]
    log: PathBuf,
    /// Milliseconds between polls of the car.
    #[arg(long, default_value_t = 500)]
    tick_ms: u64,
    /// Milliseconds between printed readings.
    #[arg(long, default_value_t = 2000)]
    print_every_ms: u64,
    /// Milliseconds between speed raises.
    #[arg(long, default_value_t = 5000)]
    raise_every_ms: u64,
    /// Starting speed, km/h.
    #[arg(long, default_value_t = 50)]
    speed: u32,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    shutdown::init_tracing();
    let args = Args::parse();
    let config = telemetry::Config {
        tick: Duration::from_millis(args.tick_ms.max(1)),
        print_every: Duration::from_millis(args.print_every_ms.max(1)),
        raise_every: Duration::from_millis(args.raise_every_ms.max(1)),
        log: args.log.clone(),
        initial_speed: args.speed,
    };
    println!("car-telemetry running; logging to {}", args.log.display());
    let stop = shutdown::signal(args.run_for.map(Duration::from_secs_f64));
    let summary = telemetry::run(config, stop).await?;
    println!(
        "car-telemetry stopped: {} readings logged, speed {} -> {} km/h",
        summary.logged, summary.first_speed, summary.last_speed
    );
    Ok(())
}
