//! `registers-server`: the register machine over HTTP.
//!
//! * `POST /exec`: an instruction as text (`ADD A B`) or JSON
//!   (`{"instruction": "ADD A B"}`); returns what it did, with its fencing id.
//! * `GET /registers`: a consistent snapshot of every register.
//! * `GET /memory/{addr}`: one memory location.
//! * `GET /log`: every executed instruction with its fencing id (for replay).
//!
//! Malformed instructions get 400 with a JSON error. Each execution is
//! printed to stdout as an event.
//!
//! ```text
//! cargo run --release -p shardlock-systems --bin registers-server -- --port 8081
//! curl -X POST localhost:8081/exec -d 'SET A 5'
//! ```
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use serde::Deserialize;
use shardlock_systems::http_errors;
use shardlock_systems::registers::{Addr, Instr, Machine};
use shardlock_systems::shutdown;

#[derive(Parser, Debug)]
#[command(about = "The register machine over HTTP")]
struct Args {
    /// Address to bind; loopback by default.
    #[arg(long, env = "REGISTERS_HOST", default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Port (0 picks a free one; the address is printed).
    #[arg(short, long, env = "REGISTERS_PORT", default_value_t = 8081)]
    port: u16,
}

/// Errors, turned into JSON responses in one place.
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        http_errors::json_error(StatusCode::BAD_REQUEST, self.0)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecJson {
    instruction: String,
}

type Shared = State<Arc<Machine>>;

async fn exec(
    State(machine): Shared,
    headers: HeaderMap,
    body: String,
) -> Result<Response, BadRequest> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let text = if json {
        serde_json::from_str::<ExecJson>(&body)
            .map_err(|e| BadRequest(format!("expected {{\"instruction\": \"OP X Y\"}}: {e}")))?
            .instruction
    } else {
        body
    };
    let instr: Instr = text.trim().parse().map_err(BadRequest)?;
    let executed = machine.exec_async(instr).await;
    println!(
        "exec #{}: {} -> {:?} = {}",
        executed.id, executed.instruction, executed.target, executed.value
    );
    Ok(Json(executed).into_response())
}

async fn registers(State(machine): Shared) -> Response {
    Json(machine.snapshot_async().await).into_response()
}

async fn memory(State(machine): Shared, Path(addr): Path<String>) -> Result<Response, BadRequest> {
    let addr: Addr = addr
        .parse()
        .map_err(|_| BadRequest(format!("{addr:?} is not a memory address")))?;
    let value = machine.memory_async(addr).await;
    Ok(Json(serde_json::json!({ "address": addr, "value": value })).into_response())
}

async fn log(State(machine): Shared) -> Response {
    Json(machine.log()).into_response()
}

fn app(machine: Arc<Machine>) -> Router {
    Router::new()
        .route("/exec", post(exec))
        .route("/registers", get(registers))
        .route("/memory/{addr}", get(memory))
        .route("/log", get(log))
        .fallback(http_errors::no_route)
        .method_not_allowed_fallback(http_errors::wrong_method)
        .layer(axum::extract::DefaultBodyLimit::max(4096))
        .with_state(machine)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    shutdown::init_tracing();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.host, args.port)).await?;
    println!(
        "registers-server listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app(Arc::new(Machine::new())))
        .with_graceful_shutdown(shutdown::signal(None))
        .await?;
    println!("registers-server stopped");
    Ok(())
}
