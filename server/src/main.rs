//! `shardlock-server`: `cargo run --release -p shardlock-server`.
use clap::Parser;
use shardlock_server::config::{Config, LogFormat};

async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: draining sessions");
}

fn main() {
    let config = Config::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let served = runtime
        .enable_all()
        .build()
        .and_then(|runtime| runtime.block_on(serve(config)));
    if let Err(e) = served {
        // Unusable TLS files, an address in use: one clear line.
        eprintln!("shardlock-server: {e}");
        std::process::exit(1);
    }
}

async fn serve(config: Config) -> std::io::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal, not in a log file or journal.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    let scheme = if config.tls_cert.is_some() {
        "wss"
    } else {
        "ws"
    };
    shardlock_server::run(config, stop_signal(), |addr| {
        println!("shardlock-server listening on {scheme}://{addr}/v1");
        tracing::info!(%addr, "listening");
    })
    .await?;
    println!("shardlock-server stopped");
    Ok(())
}
