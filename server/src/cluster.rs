//! Cluster mode: several instances share namespaces through etcd.
//!
//! Single-node mode needs none of this; it is on when `--etcd-endpoints`
//! is given.
//!
//! # Protocol
//!
//! Keys, under `--etcd-prefix` (`/shardlock` by default):
//!
//! | key | value | lease | written by |
//! |---|---|---|---|
//! | `members/<lease id>` | the instance's `--advertise-url` | its lease | the instance, once per lease |
//! | `owners/<namespace>` | the owner's `--advertise-url` | the owner's lease | the claim and its renewals |
//!
//! **Membership.** An instance grants itself a lease of `--lease-ttl`
//! seconds, writes its member key under it and keeps it alive
//! ([`lease`]). It counts the lease valid until `sent + ttl - margin`,
//! where `sent` is when it *sent* the keepalive that etcd answered: etcd
//! starts the TTL when it receives the keepalive, later than `sent`, so the
//! instance's view of its lease ends before etcd's does, by at least the
//! margin. While no lease is valid the instance is *fenced*: it grants
//! nothing, refuses new sessions (503) and `/healthz` says not ready.
//!
//! **Ownership.** A namespace is owned by the instance whose key
//! `owners/<namespace>` exists. A claim is one transaction: *if the key
//! was never created, put it under my lease*. etcd serialises
//! transactions, so at most one instance holds the key at a time, and the
//! key dies with its owner's lease. Who *should* claim a free namespace is
//! decided by rendezvous hashing over the member keys ([`rendezvous`]), so
//! namespaces spread over the members; the claim, not the hash, is the
//! truth. An instance asked for a namespace:
//!
//! * that it owns: serves it from memory, as a single node does;
//! * that another instance owns: forwards the connection there
//!   ([`forward`]);
//! * that nobody owns: claims it if the hash picks it (or the request was
//!   already forwarded once), else forwards to the instance the hash picks,
//!   which claims it. A forwarded request is never forwarded again, so a
//!   stale view costs a 503 and a retry, never a loop.
//!
//! An instance's identity is its advertised address. A claim under that
//! address but another lease (a run of the instance that died, or an
//! instance misconfigured with the same address) is never deleted, only
//! waited out, so a misconfiguration cannot make two owners.
//!
//! An owner gives a namespace up ([`Cluster::sweep`]) when it has had no
//! session and no abandoned lock for [`RELEASE_IDLE_AFTER`], deleting the key
//! only if it is still its own write (`mod_revision` compare), so etcd
//! holds keys for live namespaces only.
//!
//! **Fail closed.** Every grant checks that the namespace's claim belongs
//! to the current lease and that the lease is valid *now*
//! ([`Claim::may_grant`]). When the lease lapses (etcd unreachable, a
//! partition, quorum lost) the instance fences at the deadline above:
//! claims are revoked, sessions close with code [`FENCED_CLOSE`] (they
//! watch [`Cluster::fences`]), abandoned locks are released, and a
//! namespace claimed again later starts afresh (the registry replaces one
//! left under a void claim). Since the deadline
//! comes before etcd can expire the lease, and only then can another
//! instance claim, two owners never grant in one namespace at once. The
//! instance then asks for a new lease and revokes the old one, whose keys
//! etcd would otherwise revive if it renewed leases on a leader change.
//!
//! **Fencing ids.** An owner's ids are `term << TERM_SHIFT | n`, where the
//! term is the etcd revision at which it wrote its claim key and `n`
//! counts from 1. etcd revisions only grow, and a new owner can write the
//! key only after the old owner's key is gone, so its term is above every
//! term before it: within a namespace, every id granted after a failover
//! is greater than every id granted before it. A term has 2^24 ids; past
//! half of them the owner rewrites its key (a *renewal*, guarded by the
//! same `mod_revision` compare) and counts on from the new revision.
//! Ids stay below 2^53 (exact in JavaScript) while the etcd revision is
//! below 2^29.
//!
//! # Orderings
//!
//! The lease state sits behind a mutex, which orders everything that
//! matters: a fence clears the lease's validity *before* it revokes the
//! claims, so a grant that reads a stale `revoked == false` (a `Relaxed`
//! load) still finds the lease invalid under the mutex. `revoked` set
//! outside a fence (an idle release, a refused renewal) is followed by a
//! change of the `fences` watch, whose subscribers read it after the
//! watch's own synchronisation; an idle claim has no session to grant.
//! `revision` only grows (`fetch_max`), and a grant reading an older one
//! only sees an older term's floor, below every id of the new one.
//!
//! The integration tests in `server/tests/cluster/` check each rule on a
//! real three-member etcd cluster: failover, partition, quorum loss,
//! rolling restarts, and a soak with a ghost checker of fencing ids.
pub mod forward;
pub mod lease;
pub mod rendezvous;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use shardlock::Watch;

use lease::Lease;

/// Ids of one term: `term << TERM_SHIFT | n`.
pub const TERM_SHIFT: u32 = 24;
/// Past this many ids in a term, the owner renews its claim.
const RENEW_AT: u64 = 1 << (TERM_SHIFT - 1);
/// An owner gives up a namespace idle this long.
pub const RELEASE_IDLE_AFTER: Duration = Duration::from_secs(10);
/// The close code of sessions on a fenced instance (RFC 6455: service
/// restart; the client may reconnect and lock again).
pub const FENCED_CLOSE: u16 = 1012;
pub const FENCED_REASON: &str = "lost its cluster lease: locks dropped, lock again";
/// The header that marks a forwarded request (never forwarded again).
pub const FORWARDED_HEADER: &str = "x-shardlock-forwarded";
/// How many times a route is tried before giving up with a 503.
const ROUTE_ATTEMPTS: usize = 8;

/// The settings of cluster mode.
#[derive(Clone, Debug)]
pub struct Settings {
    pub endpoints: Vec<String>,
    /// `http://host:port` where the other instances reach this one.
    pub advertise: String,
    pub ttl: Duration,
    pub prefix: String,
    /// `--cluster-ca`: trusted when forwarding to `https://` instances.
    pub ca: Option<std::path::PathBuf>,
    /// `--etcd-ca`: trusted for `https://` etcd endpoints.
    pub etcd_ca: Option<std::path::PathBuf>,
    /// `--etcd-cert` and `--etcd-key`: a client certificate for etcd.
    pub etcd_identity: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// `--etcd-user` and `--etcd-password`.
    pub etcd_user: Option<(String, String)>,
}

impl Settings {
    /// How to reach etcd: timeouts, and TLS and credentials if given.
    fn connect_options(&self) -> Result<etcd_client::ConnectOptions, String> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(self.ttl / 2)
            // A member without a leader answers at once instead of hanging.
            .with_require_leader(true)
            .with_keep_alive(Duration::from_secs(1), self.ttl / 2);
        let https = self
            .endpoints
            .iter()
            .filter(|e| e.starts_with("https://"))
            .count();
        if https != 0 && https != self.endpoints.len() {
            return Err("etcd endpoints mix http:// and https://".into());
        }
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
        };
        if https > 0 {
            let ca = self
                .etcd_ca
                .as_deref()
                .ok_or("https:// etcd endpoints need --etcd-ca (the CA of etcd's certificates)")?;
            let mut tls = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
            if let Some((cert, key)) = &self.etcd_identity {
                tls = tls.identity(etcd_client::Identity::from_pem(read(cert)?, read(key)?));
            }
            options = options.with_tls(tls);
        } else if self.etcd_ca.is_some() || self.etcd_identity.is_some() {
            return Err("--etcd-ca and --etcd-cert are for https:// etcd endpoints".into());
        }
        if let Some((user, password)) = &self.etcd_user {
            options = options
                .with_user(user.as_str(), password.as_str())
                .with_auto_token_refresh(true);
        }
        Ok(options)
    }
}

/// What the cluster counts (exposed on `/metrics`).
#[derive(Default)]
pub struct Counters {
    pub ownership_changes: AtomicU64,
    pub etcd_errors: AtomicU64,
    pub forwarded_total: AtomicU64,
    pub forwarded_open: AtomicI64,
    pub leases_lost: AtomicU64,
}

/// One instance's view of the cluster.
pub struct Cluster {
    /// One client per endpoint; calls go to `endpoint`, which moves on to
    /// the next after any failure (a balanced channel kept picking a dead
    /// member, which fails fastest, for most calls).
    etcd: Vec<etcd_client::Client>,
    endpoint: std::sync::atomic::AtomicUsize,
    pub settings: Settings,
    lease: Arc<Lease>,
    /// Bumped whenever claims may have been voided (a fence, a refused
    /// renewal): sessions and abandoned locks watch it and look again.
    pub fences: Watch<u64>,
    claims: Mutex<HashMap<String, Arc<Claim>>>,
    pub counters: Counters,
    renewals: tokio::sync::mpsc::UnboundedSender<Arc<Claim>>,
    /// Set on shutdown: no new lease is asked for.
    leaving: AtomicBool,
    /// Idle claims whose release failed (tried again by the next sweep).
    unreleased: Mutex<Vec<Arc<Claim>>>,
    /// For forwarding to instances that serve TLS.
    pub tls: tokio_rustls::TlsConnector,
}

/// This instance's ownership of one namespace, while it lasts.
pub struct Claim {
    name: String,
    lease: Arc<Lease>,
    /// The lease generation it was made under.
    generation: u64,
    /// Set when the instance fences (the claim is void from then on).
    revoked: AtomicBool,
    /// The revision of this instance's last write of the key.
    revision: AtomicI64,
    renewing: AtomicBool,
    renewals: tokio::sync::mpsc::UnboundedSender<Arc<Claim>>,
    /// When the namespace was last seen unused (see [`Cluster::sweep`]).
    idle_since: Mutex<Option<Instant>>,
}

/// The next change of [`Cluster::fences`] seen by `fences` (never, on a
/// single node, where there is no subscriber).
pub async fn next_fence(fences: &mut Option<shardlock::Subscriber<u64>>) {
    match fences {
        Some(fences) => {
            let _ = fences.changed().await;
        }
        None => std::future::pending().await,
    }
}

/// Where a request for a namespace goes.
#[derive(Clone)]
pub enum Route {
    /// Served here, under this claim.
    Local(Arc<Claim>),
    /// Forwarded to the instance at `url`: the owner if `claimed`, else
    /// the one the hash picks to claim it.
    Forward { url: String, claimed: bool },
    /// Nowhere now (503, with the reason).
    Unavailable(String),
}

/// Who owns a namespace, as etcd says (for `stats_v1`).
pub enum Owner {
    Me,
    Other(String),
    Nobody,
}

impl Claim {
    /// The smallest id of the current term (ids given are above it).
    pub fn floor(&self) -> u64 {
        (self.revision.load(Relaxed) as u64) << TERM_SHIFT
    }

    /// Whether this claim may grant a lock now: not revoked, and the lease
    /// it was made under is the current one and valid.
    pub fn may_grant(&self) -> bool {
        !self.revoked.load(Relaxed) && self.lease.valid(self.generation)
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Relaxed)
    }

    /// Called with each id given: renews the term once half of it is used.
    pub fn on_id(self: &Arc<Self>, id: u64) {
        if id - self.floor().min(id) >= RENEW_AT && !self.renewing.swap(true, Relaxed) {
            let _ = self.renewals.send(self.clone());
        }
    }

    /// Whether `id` lies within the current term or an earlier one (not
    /// past the term's end, which would reach into the next revision's).
    pub fn covers(&self, id: u64) -> bool {
        id >> TERM_SHIFT <= self.floor() >> TERM_SHIFT
    }
}

impl Cluster {
    /// Connects (lazily: etcd may be down) and starts keeping a lease.
    pub async fn start(settings: Settings) -> Result<Arc<Cluster>, String> {
        let tls = crate::tls::connector(settings.ca.as_deref()).map_err(|e| e.to_string())?;
        let options = settings.connect_options()?;
        // With credentials this authenticates, so etcd must be reachable;
        // without, the connection is made lazily.
        let mut etcd = Vec::new();
        let mut refused = None;
        for endpoint in &settings.endpoints {
            match etcd_client::Client::connect([endpoint], Some(options.clone())).await {
                Ok(client) => etcd.push(client),
                Err(e) => refused = Some(format!("etcd endpoint {endpoint}: {e}")),
            }
        }
        // Without credentials connecting is lazy and cannot fail here; with
        // them, an endpoint that is down now is skipped, and all refusing
        // (a wrong password, say) stops the start.
        if etcd.is_empty() {
            return Err(refused.unwrap_or_else(|| "no etcd endpoint".into()));
        }
        let (renewals, renew_rx) = tokio::sync::mpsc::unbounded_channel();
        let cluster = Arc::new(Cluster {
            etcd,
            endpoint: std::sync::atomic::AtomicUsize::new(0),
            lease: Arc::new(Lease::new(settings.ttl)),
            settings,
            fences: Watch::new(0),
            claims: Mutex::default(),
            counters: Counters::default(),
            renewals,
            leaving: AtomicBool::new(false),
            unreleased: Mutex::default(),
            tls,
        });
        tokio::spawn(lease::keep(cluster.clone()));
        tokio::spawn(renew(Arc::downgrade(&cluster), renew_rx));
        Ok(cluster)
    }

    fn claims(&self) -> MutexGuard<'_, HashMap<String, Arc<Claim>>> {
        self.claims.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}/{kind}/{name}", self.settings.prefix)
    }

    fn etcd(&self) -> etcd_client::Client {
        self.etcd[self.endpoint.load(Relaxed) % self.etcd.len()].clone()
    }

    /// Counts and logs a failed call, and sends the next calls to the next
    /// endpoint (the callers retry).
    fn etcd_error(&self, what: &str, e: &etcd_client::Error) {
        self.endpoint.fetch_add(1, Relaxed);
        self.counters.etcd_errors.fetch_add(1, Relaxed);
        tracing::warn!(error = %e, "etcd: {what} failed");
    }

    /// Whether the instance holds a valid lease now.
    pub fn ready(&self) -> bool {
        self.lease.current().is_some()
    }

    /// Ends this instance's membership (on shutdown): fences and revokes
    /// the lease, so that its namespaces move at once.
    pub async fn leave(&self) {
        self.leaving.store(true, Relaxed);
        lease::leave(self).await;
    }

    /// Namespaces owned now.
    pub fn owned(&self) -> usize {
        self.claims().len()
    }

    /// Where a request for `name` goes; `forwarded` if it was forwarded to
    /// this instance already.
    pub async fn route(&self, name: &str, forwarded: bool) -> Route {
        let mut last = String::from("no cluster lease");
        for attempt in 0..ROUTE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(20 << attempt.min(4))).await;
            }
            let Some((lease_id, generation)) = self.lease.current() else {
                return Route::Unavailable("no cluster lease: this instance is fenced".into());
            };
            if let Some(claim) = self.claims().get(name) {
                *claim.idle_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
                return Route::Local(claim.clone());
            }
            let key = self.key("owners", name);
            let owner = match self.etcd().get(key.as_str(), None).await {
                Ok(r) => r
                    .kvs()
                    .first()
                    .map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease())),
                Err(e) => {
                    self.etcd_error("reading a namespace's owner", &e);
                    last = format!("etcd unavailable: {e}");
                    continue;
                }
            };
            match owner {
                // Mine under this lease but not in the map: a release is in
                // flight. Wait for it.
                Some((_, lease)) if lease == lease_id => continue,
                // This address under another lease: an earlier run of this
                // instance that died (or an instance misconfigured with the
                // same address). Not deleted, which could make two owners:
                // it ends with that lease, within a TTL.
                Some((url, _)) if url == self.settings.advertise => {
                    last =
                        "namespace held under another lease of this address until it ends; retry"
                            .into();
                    continue;
                }
                Some((url, _)) if forwarded => {
                    last = format!("namespace moved to {url}; retry");
                    continue;
                }
                Some((url, _)) => return Route::Forward { url, claimed: true },
                None => {}
            }
            if !forwarded {
                match self.members().await {
                    Ok(members) => match rendezvous::winner(&members, name) {
                        Some(url) if *url != self.settings.advertise => {
                            return Route::Forward {
                                url: url.clone(),
                                claimed: false,
                            }
                        }
                        _ => {}
                    },
                    Err(e) => {
                        self.etcd_error("listing members", &e);
                        last = format!("etcd unavailable: {e}");
                        continue;
                    }
                }
            }
            match self.claim(name, &key, lease_id, generation).await {
                Ok(Some(claim)) => return Route::Local(claim),
                Ok(None) => {} // someone else was first: route again
                Err(e) => {
                    self.etcd_error("claiming a namespace", &e);
                    last = format!("etcd unavailable: {e}");
                }
            }
        }
        Route::Unavailable(last)
    }

    /// The advertised URLs of the live members.
    async fn members(&self) -> Result<Vec<String>, etcd_client::Error> {
        let prefix = self.key("members", "");
        let r = self
            .etcd()
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(r.kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned())
            .collect())
    }

    /// One claim transaction: `Some` if this instance now owns `name`.
    async fn claim(
        &self,
        name: &str,
        key: &str,
        lease_id: i64,
        generation: u64,
    ) -> Result<Option<Arc<Claim>>, etcd_client::Error> {
        let txn = Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                self.settings.advertise.as_str(),
                Some(PutOptions::new().with_lease(lease_id)),
            )]);
        let r = self.etcd().txn(txn).await?;
        if !r.succeeded() {
            return Ok(None);
        }
        let revision = r.header().map_or(0, |h| h.revision());
        let claim = Arc::new(Claim {
            name: name.to_owned(),
            lease: self.lease.clone(),
            generation,
            revoked: AtomicBool::new(false),
            revision: AtomicI64::new(revision),
            renewing: AtomicBool::new(false),
            renewals: self.renewals.clone(),
            idle_since: Mutex::new(None),
        });
        // A fence since the lease was read voids the claim at once (the key
        // dies with the old lease, or the next lease revokes it).
        if self.lease.generation() != generation {
            claim.revoked.store(true, Relaxed);
            return Ok(Some(claim));
        }
        self.claims().insert(name.to_owned(), claim.clone());
        self.counters.ownership_changes.fetch_add(1, Relaxed);
        tracing::info!(namespace = name, term = revision, "claimed namespace");
        Ok(Some(claim))
    }

    /// Who owns `name` now, without claiming it.
    pub async fn owner(&self, name: &str) -> Result<Owner, String> {
        if self.claims().contains_key(name) {
            return Ok(Owner::Me);
        }
        let r = self
            .etcd()
            .get(self.key("owners", name), None)
            .await
            .map_err(|e| {
                self.etcd_error("reading a namespace's owner", &e);
                format!("etcd unavailable: {e}")
            })?;
        Ok(match r.kvs().first() {
            None => Owner::Nobody,
            Some(kv) => {
                let url = String::from_utf8_lossy(kv.value()).into_owned();
                if url == self.settings.advertise {
                    Owner::Me
                } else {
                    Owner::Other(url)
                }
            }
        })
    }

    /// Gives up the namespaces that have been unused (no claim reference
    /// but the map's) for [`RELEASE_IDLE_AFTER`]; run periodically.
    pub async fn sweep(&self) {
        let now = Instant::now();
        let idle: Vec<Arc<Claim>> = {
            let mut claims = self.claims();
            let mut idle = Vec::new();
            claims.retain(|_, claim| {
                // Only the map refers to it, and routes clone it under the
                // map's lock: it cannot be picked up while we look.
                if Arc::strong_count(claim) > 1 {
                    return true;
                }
                let mut since = claim.idle_since.lock().unwrap_or_else(|p| p.into_inner());
                match *since {
                    None => *since = Some(now),
                    Some(t) if now - t >= RELEASE_IDLE_AFTER => {
                        idle.push(claim.clone());
                        return false;
                    }
                    Some(_) => {}
                }
                true
            });
            idle
        };
        // Releases that failed before are tried again (a route waits while
        // its key is this lease's and not in the map).
        let retried = std::mem::take(&mut *self.unreleased());
        for claim in idle.into_iter().chain(retried) {
            if claim.generation != self.lease.generation() {
                continue; // the key died with its lease
            }
            claim.revoked.store(true, Relaxed);
            let key = self.key("owners", &claim.name);
            let mine = claim.revision.load(Relaxed);
            let release = Txn::new()
                .when([Compare::mod_revision(key.as_str(), CompareOp::Equal, mine)])
                .and_then([TxnOp::delete(key.as_str(), None)]);
            match self.etcd().txn(release).await {
                Ok(_) => {
                    self.counters.ownership_changes.fetch_add(1, Relaxed);
                    tracing::debug!(namespace = claim.name, "released idle namespace");
                }
                Err(e) => {
                    self.etcd_error("releasing a namespace", &e);
                    self.unreleased().push(claim);
                }
            }
        }
    }

    fn unreleased(&self) -> MutexGuard<'_, Vec<Arc<Claim>>> {
        self.unreleased.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fences: voids every claim. The caller drops the namespaces.
    fn revoke_all(&self) -> usize {
        let claims = std::mem::take(&mut *self.claims());
        for claim in claims.values() {
            claim.revoked.store(true, Relaxed);
        }
        self.unreleased().clear();
        let lost = claims.len();
        self.counters
            .ownership_changes
            .fetch_add(lost as u64, Relaxed);
        lost
    }
}

/// Renews claims whose term is half used: rewrites the key, guarded by
/// its last revision, and counts on from the new one.
async fn renew(
    cluster: std::sync::Weak<Cluster>,
    mut requests: tokio::sync::mpsc::UnboundedReceiver<Arc<Claim>>,
) {
    while let Some(claim) = requests.recv().await {
        let Some(cluster) = cluster.upgrade() else {
            return;
        };
        let Some((lease_id, generation)) = cluster.lease.current() else {
            continue;
        };
        if claim.is_revoked() || generation != claim.generation {
            continue;
        }
        let key = cluster.key("owners", &claim.name);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                claim.revision.load(Relaxed),
            )])
            .and_then([TxnOp::put(
                key.as_str(),
                cluster.settings.advertise.as_str(),
                Some(PutOptions::new().with_lease(lease_id)),
            )]);
        match cluster.etcd().txn(txn).await {
            Ok(r) if r.succeeded() => {
                let revision = r.header().map_or(0, |h| h.revision());
                claim.revision.fetch_max(revision, Relaxed);
                tracing::info!(namespace = claim.name, term = revision, "renewed term");
            }
            // The key is no longer this write: the claim is void (fail
            // closed; the owner's sessions close at their next grant).
            Ok(_) => {
                claim.revoked.store(true, Relaxed);
                let mut claims = cluster.claims();
                if claims
                    .get(&claim.name)
                    .is_some_and(|c| Arc::ptr_eq(c, &claim))
                {
                    claims.remove(&claim.name);
                }
                drop(claims);
                // Its sessions look again, find the claim void, and close.
                cluster.fences.update(|n| n + 1);
                tracing::warn!(namespace = claim.name, "term renewal refused: claim lost");
            }
            Err(e) => cluster.etcd_error("renewing a term", &e),
        }
        claim.renewing.store(false, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(revision: i64) -> (Arc<Claim>, tokio::sync::mpsc::UnboundedReceiver<Arc<Claim>>) {
        let (renewals, requests) = tokio::sync::mpsc::unbounded_channel();
        let claim = Arc::new(Claim {
            name: "ns".into(),
            lease: Arc::new(Lease::new(Duration::from_secs(5))),
            generation: 0,
            revoked: AtomicBool::new(false),
            revision: AtomicI64::new(revision),
            renewing: AtomicBool::new(false),
            renewals,
            idle_since: Mutex::new(None),
        });
        (claim, requests)
    }

    fn settings(endpoints: &[&str]) -> Settings {
        Settings {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            advertise: "http://127.0.0.1:9011".into(),
            ttl: Duration::from_secs(5),
            prefix: "/shardlock".into(),
            ca: None,
            etcd_ca: None,
            etcd_identity: None,
            etcd_user: None,
        }
    }

    #[test]
    fn etcd_tls_settings_are_checked_before_connecting() {
        let err = |s: &Settings| s.connect_options().err().unwrap();
        assert!(err(&settings(&["http://a:1", "https://b:1"])).contains("mix"));
        assert!(err(&settings(&["https://a:1"])).contains("--etcd-ca"));
        let mut plain_with_ca = settings(&["http://a:1"]);
        plain_with_ca.etcd_ca = Some("ca.pem".into());
        assert!(err(&plain_with_ca).contains("https://"));
        let mut missing = settings(&["https://a:1"]);
        missing.etcd_ca = Some("/nonexistent/ca.pem".into());
        assert!(err(&missing).contains("/nonexistent/ca.pem"));
        assert!(settings(&["http://a:1"]).connect_options().is_ok());
    }

    #[test]
    fn a_term_asks_for_renewal_once_half_used_and_ends_at_its_span() {
        let (c, mut requests) = claim(7);
        let floor = 7 << TERM_SHIFT;
        assert_eq!(c.floor(), floor);
        c.on_id(floor + 1);
        assert!(requests.try_recv().is_err(), "no renewal early in a term");
        c.on_id(floor + RENEW_AT);
        c.on_id(floor + RENEW_AT + 1);
        assert!(requests.try_recv().is_ok());
        assert!(
            requests.try_recv().is_err(),
            "one request while one is in flight"
        );
        assert!(c.covers(floor + (1 << TERM_SHIFT) - 1));
        assert!(!c.covers(floor + (1 << TERM_SHIFT)), "past the span");
        // Renewed at a later revision: the old term's ids are still covered
        // (they are below every new one), and the span moves on.
        c.revision.store(9, Relaxed);
        assert!(c.covers(floor + 5));
        assert!(c.covers((9 << TERM_SHIFT) + 1));
        assert!(!c.covers(10 << TERM_SHIFT));
    }
}
