//! The load generator for `kv-store`: N keep-alive connections, each looping
//! random requests (a given share of `GET /person/{id}`, the rest `PUT`),
//! counting requests per second and latency percentiles.
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::Rng;

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub connections: usize,
    pub duration: Duration,
    /// Ids `0..keys` are stored before the run and requested during it.
    pub keys: u64,
    /// Percent of requests that are GETs; the rest are PUTs.
    pub get_percent: u32,
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct LoadReport {
    pub requests: u64,
    /// Responses other than 200/201, and connection failures.
    pub errors: u64,
    pub per_second: f64,
    pub p50: Duration,
    pub p99: Duration,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> std::io::Result<Sender> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn send(
    sender: &mut Sender,
    method: Method,
    path: &str,
    body: Option<String>,
) -> Option<StatusCode> {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let request = request
        .body(Full::new(Bytes::from(body.unwrap_or_default())))
        .ok()?;
    sender.ready().await.ok()?;
    let response = sender.send_request(request).await.ok()?;
    let status = response.status();
    response.into_body().collect().await.ok()?;
    Some(status)
}

/// Stores ids `0..keys` at `addr`, then runs the load. The server must be a
/// `kv-store` (or `kv::router`) listening on `addr`.
pub async fn run(addr: SocketAddr, config: &LoadConfig) -> std::io::Result<LoadReport> {
    let mut sender = connect(addr).await?;
    for id in 0..config.keys {
        let body = format!(r#"{{"name":"person-{id}"}}"#);
        let status = send(
            &mut sender,
            Method::PUT,
            &format!("/person/{id}"),
            Some(body),
        )
        .await;
        if !matches!(status, Some(StatusCode::OK | StatusCode::CREATED)) {
            return Err(std::io::Error::other(format!(
                "populating failed: {status:?}"
            )));
        }
    }
    let start = Instant::now();
    let deadline = start + config.duration;
    let tasks: Vec<_> = (0..config.connections)
        .map(|_| {
            let config = config.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let Ok(mut sender) = connect(addr).await else {
                    return (latencies, 1);
                };
                let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_os_rng();
                while Instant::now() < deadline {
                    let id = rng.random_range(0..config.keys.max(1));
                    let began = Instant::now();
                    let status = if rng.random_range(0..100) < config.get_percent {
                        send(&mut sender, Method::GET, &format!("/person/{id}"), None).await
                    } else {
                        let body = format!(r#"{{"name":"renamed-{}"}}"#, rng.random::<u32>());
                        send(
                            &mut sender,
                            Method::PUT,
                            &format!("/person/{id}"),
                            Some(body),
                        )
                        .await
                    };
                    latencies.push(began.elapsed());
                    match status {
                        Some(StatusCode::OK | StatusCode::CREATED) => {}
                        Some(_) => errors += 1,
                        None => {
                            errors += 1;
                            match connect(addr).await {
                                Ok(s) => sender = s,
                                Err(_) => break,
                            }
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let (l, e) = task.await.map_err(std::io::Error::other)?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = start.elapsed();
    latencies.sort_unstable();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Ok(LoadReport {
        requests: latencies.len() as u64,
        errors,
        per_second: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    })
}
