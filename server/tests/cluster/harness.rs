//! A real cluster on loopback for the tests: etcd members and
//! shardlock-server instances as child processes, killed on drop.
#![allow(dead_code)] // not every test uses every helper

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Whether the tests may skip for want of an `etcd` binary: not where
/// `SHARDLOCK_REQUIRE_ETCD` is set (CI sets it).
pub fn etcd_or_skip() -> bool {
    let found = Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var_os("SHARDLOCK_REQUIRE_ETCD").is_none(),
            "etcd not found (apt-get install etcd-server)"
        );
        eprintln!("SKIPPED: no etcd binary (apt-get install etcd-server to run the cluster tests)");
    }
    found
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `ok` every 50 ms for up to `limit`; whether it became true.
pub fn wait_until(limit: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ok()
}

pub fn http_get(url: &str) -> Option<(u16, String)> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(3))
        .build();
    match agent.get(url).call() {
        Ok(r) => Some((r.status(), r.into_string().unwrap_or_default())),
        Err(ureq::Error::Status(code, r)) => Some((code, r.into_string().unwrap_or_default())),
        Err(_) => None,
    }
}

fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status();
}

static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

pub struct Etcd {
    dir: PathBuf,
    members: Vec<Member>,
}

impl Etcd {
    pub fn start(n: usize) -> Etcd {
        let dir = std::env::temp_dir().join(format!(
            "shardlock-cluster-test-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let members = (0..n)
            .map(|i| Member {
                name: format!("e{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let mut etcd = Etcd { dir, members };
        for i in 0..n {
            etcd.spawn(i);
        }
        for i in 0..n {
            assert!(
                wait_until(Duration::from_secs(20), || etcd.healthy(i)),
                "etcd member {i} did not become healthy"
            );
        }
        etcd
    }

    fn spawn(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let log = std::fs::File::create(self.dir.join(format!("{}.log", m.name))).unwrap();
        let child = Command::new("etcd")
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(self.dir.join(&m.name))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "shardlock-test"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("etcd starts");
        self.members[i].child = Some(child);
    }

    pub fn healthy(&self, i: usize) -> bool {
        let url = format!("http://127.0.0.1:{}/health", self.members[i].client);
        http_get(&url).is_some_and(|(code, body)| code == 200 && body.contains("true"))
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client)
    }

    pub fn endpoints(&self) -> String {
        let all: Vec<String> = (0..self.members.len()).map(|i| self.endpoint(i)).collect();
        all.join(",")
    }

    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a killed member again on its data (it rejoins).
    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    /// Freezes a member (SIGSTOP): to its clients, a partition.
    pub fn freeze(&self, i: usize) {
        signal(self.members[i].child.as_ref().unwrap(), "-STOP");
    }

    pub fn thaw(&self, i: usize) {
        signal(self.members[i].child.as_ref().unwrap(), "-CONT");
    }

    /// The `--advertise-url` of the owner of `namespace`, as etcd says.
    pub async fn owner(&self, namespace: &str) -> Option<String> {
        let endpoints: Vec<String> = self.endpoints().split(',').map(String::from).collect();
        let options = etcd_client::ConnectOptions::new().with_timeout(Duration::from_secs(2));
        let mut etcd = etcd_client::Client::connect(endpoints, Some(options))
            .await
            .ok()?;
        let r = etcd
            .get(format!("/shardlock/owners/{namespace}"), None)
            .await
            .ok()?;
        r.kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            if let Some(child) = &self.members[i].child {
                signal(child, "-CONT");
            }
            self.kill(i);
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("cluster logs kept in {}", self.dir.display());
        }
    }
}

pub struct Instance {
    pub port: u16,
    endpoints: String,
    ttl: u64,
    extra: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl Instance {
    pub fn start(dir: &std::path::Path, endpoints: &str, ttl: u64, extra: &[&str]) -> Instance {
        let port = free_port();
        let mut instance = Instance {
            port,
            endpoints: endpoints.to_owned(),
            ttl,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            log: dir.join(format!("server-{port}.log")),
        };
        instance.spawn();
        instance
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_shardlock-server"))
            .args(["--port", &self.port.to_string()])
            .args(["--etcd-endpoints", &self.endpoints])
            .args(["--advertise-url", &self.http()])
            .args(["--lease-ttl", &self.ttl.to_string()])
            .args(&self.extra)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("shardlock-server starts");
        self.child = Some(child);
    }

    fn tls(&self) -> bool {
        self.extra.iter().any(|a| a == "--tls-cert")
    }

    pub fn http(&self) -> String {
        let scheme = if self.tls() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn ws(&self, namespace: &str) -> String {
        let scheme = if self.tls() { "wss" } else { "ws" };
        format!(
            "{scheme}://127.0.0.1:{}/v1?namespace={namespace}",
            self.port
        )
    }

    /// `/healthz` says ready (for a TLS instance, which the plain HTTP
    /// client here cannot ask: its log says it holds its lease).
    pub fn ready(&self) -> bool {
        if self.tls() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            return log.contains("cluster lease granted");
        }
        http_get(&format!("{}/healthz", self.http())).is_some_and(|(code, _)| code == 200)
    }

    pub fn alive(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL: no drain, no lease revoked.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: a graceful stop.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "-TERM");
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A metric's value from `/metrics` (the first sample of that name).
    pub fn metric(&self, name: &str) -> Option<f64> {
        let token = self
            .extra
            .iter()
            .position(|a| a == "--auth-token")
            .map(|i| format!("?token={}", self.extra[i + 1]))
            .unwrap_or_default();
        let (_, body) = http_get(&format!("{}/metrics{token}", self.http()))?;
        body.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three etcd members and `n` instances.
pub struct Cluster {
    pub etcd: Etcd,
    pub instances: Vec<Instance>,
}

impl Cluster {
    pub fn start(n: usize, ttl: u64, extra: &[&str]) -> Cluster {
        let etcd = Etcd::start(3);
        let endpoints = etcd.endpoints();
        let instances = (0..n)
            .map(|_| Instance::start(&etcd.dir, &endpoints, ttl, extra))
            .collect();
        let cluster = Cluster { etcd, instances };
        cluster.wait_ready();
        cluster
    }

    pub fn wait_ready(&self) {
        for (i, instance) in self.instances.iter().enumerate() {
            if instance.alive() {
                assert!(
                    wait_until(Duration::from_secs(20), || instance.ready()),
                    "instance {i} did not become ready; log: {}",
                    instance.log.display()
                );
            }
        }
    }

    /// The index of the instance that owns `namespace`.
    pub async fn owner(&self, namespace: &str) -> Option<usize> {
        let url = self.etcd.owner(namespace).await?;
        self.instances.iter().position(|i| i.http() == url)
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.etcd.dir
    }
}
