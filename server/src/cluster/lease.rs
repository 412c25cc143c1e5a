//! The instance's etcd lease: granted, kept alive, and counted valid only
//! while etcd cannot have expired it (see the module docs of `cluster`).
//!
//! States: *fenced* (no valid lease; the start) and *leased* (generation
//! `g`, valid until a deadline). Granting a lease and registering the
//! member key goes fenced → leased with a new generation; every keepalive
//! answer moves the deadline to `sent + ttl - margin`; the deadline
//! passing, or etcd answering that the lease is gone, goes back to fenced.
//! Claims remember the generation they were made under, so a claim made
//! under an earlier lease never grants again, even after a new lease.
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper, PutOptions};
use tokio::time::Instant;

use super::Cluster;

pub struct Lease {
    ttl: Duration,
    state: Mutex<State>,
}

struct State {
    id: i64,
    generation: u64,
    /// `None` while fenced.
    valid_until: Option<Instant>,
}

impl Lease {
    pub fn new(ttl: Duration) -> Lease {
        Lease {
            ttl,
            state: Mutex::new(State {
                id: 0,
                generation: 0,
                valid_until: None,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What is kept off the end of etcd's TTL: a quarter, at most a second.
    fn margin(&self) -> Duration {
        (self.ttl / 4).min(Duration::from_secs(1))
    }

    /// Whether the lease of `generation` is the current one and valid now.
    pub fn valid(&self, generation: u64) -> bool {
        self.current().is_some_and(|(_, g)| g == generation)
    }

    pub fn generation(&self) -> u64 {
        self.state().generation
    }

    /// The lease id and generation, if valid now.
    pub fn current(&self) -> Option<(i64, u64)> {
        let s = self.state();
        let valid = s.valid_until.is_some_and(|t| Instant::now() < t);
        valid.then_some((s.id, s.generation))
    }

    fn deadline(&self) -> Option<Instant> {
        self.state().valid_until
    }

    /// etcd granted (or renewed) the lease for `ttl` seconds on a request
    /// sent at `sent`.
    fn extend(&self, sent: Instant, ttl_secs: i64) {
        let until = sent + Duration::from_secs(ttl_secs as u64) - self.margin();
        let mut s = self.state();
        if let Some(t) = &mut s.valid_until {
            *t = (*t).max(until);
        }
    }

    fn start(&self, id: i64, sent: Instant, ttl_secs: i64) {
        let mut s = self.state();
        s.id = id;
        s.generation += 1;
        s.valid_until = Some(sent + Duration::from_secs(ttl_secs as u64) - self.margin());
    }

    fn fence(&self) {
        self.state().valid_until = None;
    }
}

/// Keeps the instance leased, for ever: grant, register, keep alive; on
/// loss, fence and start over.
pub async fn keep(cluster: Arc<Cluster>) {
    let mut old: Option<i64> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        if cluster.leaving.load(Relaxed) {
            return;
        }
        let Some(id) = acquire(&cluster).await else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        backoff = Duration::from_millis(100);
        if let Some(old) = old.take() {
            // After quorum returns, etcd may have renewed the old lease
            // (and its claims): end it so its namespaces move at once.
            let mut etcd = cluster.etcd();
            tokio::spawn(async move {
                let _ = etcd.lease_revoke(old).await;
            });
        }
        hold(&cluster, id).await;
        if cluster.leaving.load(Relaxed) {
            return;
        }
        let claims = fence(&cluster);
        cluster.counters.leases_lost.fetch_add(1, Relaxed);
        tracing::error!(
            namespaces = claims,
            "cluster lease lost: fenced, every session closed; asking for a new lease"
        );
        old = Some(id);
    }
}

/// Grants a lease and registers the member key under it.
async fn acquire(cluster: &Cluster) -> Option<i64> {
    let ttl = cluster.settings.ttl.as_secs().max(1) as i64;
    let sent = Instant::now();
    let granted = match cluster.etcd().lease_grant(ttl, None).await {
        Ok(r) => r,
        Err(e) => {
            cluster.etcd_error("granting a lease", &e);
            return None;
        }
    };
    let id = granted.id();
    let member = cluster.key("members", &format!("{id:016x}"));
    let put = cluster
        .etcd()
        .put(
            member,
            cluster.settings.advertise.as_str(),
            Some(PutOptions::new().with_lease(id)),
        )
        .await;
    if let Err(e) = put {
        cluster.etcd_error("registering the member", &e);
        let _ = cluster.etcd().lease_revoke(id).await;
        return None;
    }
    cluster.lease.start(id, sent, granted.ttl());
    tracing::info!(
        lease = id,
        ttl = granted.ttl(),
        "cluster lease granted: serving"
    );
    Some(id)
}

/// Keeps lease `id` alive until it is lost (returns then).
async fn hold(cluster: &Cluster, id: i64) {
    let every = cluster.settings.ttl / 3;
    let mut stream: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut next = Instant::now() + every;
    loop {
        let Some(deadline) = cluster.lease.deadline() else {
            return;
        };
        tokio::time::sleep_until(next.min(deadline)).await;
        if Instant::now() >= deadline {
            tracing::warn!(
                lease = id,
                "cluster lease deadline passed without a keepalive"
            );
            return;
        }
        let sent = Instant::now();
        let answer = tokio::time::timeout_at(deadline, async {
            if stream.is_none() {
                stream = Some(cluster.etcd().lease_keep_alive(id).await?);
            }
            let (keeper, answers) = stream.as_mut().expect("just opened");
            keeper.keep_alive().await?;
            answers.message().await
        })
        .await;
        match answer {
            Err(_) => {
                tracing::warn!(
                    lease = id,
                    "cluster lease deadline passed without a keepalive"
                );
                return;
            }
            Ok(Ok(Some(r))) if r.ttl() > 0 => {
                cluster.lease.extend(sent, r.ttl());
                next = sent + every;
            }
            Ok(Ok(Some(_))) => {
                tracing::warn!(lease = id, "etcd says the cluster lease expired");
                return;
            }
            Ok(Ok(None)) => {
                stream = None;
                next = Instant::now() + Duration::from_millis(100);
            }
            Ok(Err(e)) => {
                cluster.etcd_error("keeping the lease alive", &e);
                stream = None;
                next = Instant::now() + Duration::from_millis(100);
            }
        }
    }
}

/// Stops granting at once: no valid lease, every claim revoked; sessions
/// see the fence count change and close. Returns the claims revoked.
fn fence(cluster: &Cluster) -> usize {
    cluster.lease.fence();
    let claims = cluster.revoke_all();
    cluster.fences.update(|n| n + 1);
    claims
}

/// Ends this instance's membership (on shutdown): fences and revokes the
/// lease, so that its namespaces move at once.
pub async fn leave(cluster: &Cluster) {
    let id = cluster.lease.state().id;
    let claims = fence(cluster);
    tracing::info!(namespaces = claims, "leaving the cluster: lease revoked");
    if id != 0 {
        let _ = tokio::time::timeout(Duration::from_secs(1), cluster.etcd().lease_revoke(id)).await;
    }
}
