//! A sequential reference model of PathLock's grant rule, and a driver that
//! checks the real lock against it after every step.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use arbitrary::Arbitrary;
use shardlock::{LockSet, PathGuard, PathLock};

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    A,
    B,
    C,
}

#[derive(Arbitrary, Debug, Clone)]
pub struct Resource {
    pub write: bool,
    pub path: Vec<Seg>,
}

#[derive(Arbitrary, Debug, Clone)]
pub enum Step {
    /// `try_lock` a set.
    Try(Vec<Resource>),
    /// Create a `lock_async` future and poll it once.
    Async(Vec<Resource>),
    /// Drop the n-th live request (a guard releases, a future cancels).
    Drop(u8),
}

fn path(r: &Resource) -> Vec<&'static str> {
    r.path
        .iter()
        .take(3)
        .map(|s| match s {
            Seg::A => "a",
            Seg::B => "b",
            Seg::C => "c",
        })
        .collect()
}

fn conflicts(x: &[Resource], y: &[Resource]) -> bool {
    x.iter().any(|a| {
        y.iter().any(|b| {
            let (p, q) = (path(a), path(b));
            let n = p.len().min(q.len());
            (a.write || b.write) && p[..n] == q[..n]
        })
    })
}

fn set_of(resources: &[Resource]) -> LockSet {
    resources.iter().fold(LockSet::new(), |set, r| {
        if r.write {
            set.write(path(r))
        } else {
            set.read(path(r))
        }
    })
}

/// A request in the model: resources, and whether it is held.
struct ModelRequest {
    resources: Vec<Resource>,
    held: bool,
}

/// What the real lock has for a live request.
enum Real<'a> {
    /// Kept for its drop, which releases.
    Guard {
        _guard: PathGuard<'a>,
    },
    Pending(Pin<Box<dyn Future<Output = Result<PathGuard<'a>, shardlock::LockError>> + Send + 'a>>),
}

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// The model: live requests in request (id) order.
#[derive(Default)]
struct Model {
    requests: Vec<ModelRequest>,
}

impl Model {
    /// The grant rule, applied in request order until nothing changes.
    fn grant_pass(&mut self) {
        for i in 0..self.requests.len() {
            if self.requests[i].held {
                continue;
            }
            let r = &self.requests[i].resources;
            let blocked = self.requests[..i]
                .iter()
                .any(|e| conflicts(&e.resources, r))
                || self.requests[i + 1..]
                    .iter()
                    .any(|e| e.held && conflicts(&e.resources, r));
            if !blocked {
                self.requests[i].held = true;
            }
        }
    }
}

/// Runs `steps` against a fresh lock and the model; panics on any divergence.
pub fn run(steps: Vec<Step>) {
    // Sets must outlive the futures that borrow them: build them first.
    let sets: Vec<LockSet> = steps
        .iter()
        .filter_map(|step| match step {
            Step::Async(r) => Some(set_of(r)),
            _ => None,
        })
        .collect();
    let mut sets = sets.iter();
    let lock = PathLock::new();
    let waker = Waker::from(Arc::new(Noop));
    let mut model = Model::default();
    let mut real: Vec<(Real<'_>, u64)> = Vec::new(); // parallel to model.requests
    let mut last_id = 0;
    for step in steps {
        match step {
            Step::Try(resources) => {
                if resources.is_empty() {
                    assert!(lock.try_lock(&LockSet::new()).is_err());
                    continue;
                }
                let grantable = !model
                    .requests
                    .iter()
                    .any(|e| conflicts(&e.resources, &resources));
                match lock.try_lock(&set_of(&resources)) {
                    Ok(guard) => {
                        assert!(grantable, "try_lock granted against the rule");
                        assert!(guard.id() > last_id, "ids must increase");
                        last_id = guard.id();
                        real.push((Real::Guard { _guard: guard }, last_id));
                        model.requests.push(ModelRequest {
                            resources,
                            held: true,
                        });
                    }
                    Err(_) => assert!(!grantable, "try_lock refused a grantable request"),
                }
            }
            Step::Async(resources) => {
                let set = sets.next().expect("prepared");
                if resources.is_empty() {
                    continue;
                }
                let mut future: Pin<Box<dyn Future<Output = _> + Send + '_>> =
                    Box::pin(lock.lock_async(set));
                model.requests.push(ModelRequest {
                    resources,
                    held: false,
                });
                model.grant_pass();
                match future.as_mut().poll(&mut Context::from_waker(&waker)) {
                    Poll::Ready(guard) => {
                        let guard = guard.expect("non-empty");
                        assert!(guard.id() > last_id, "ids must increase");
                        last_id = guard.id();
                        real.push((Real::Guard { _guard: guard }, last_id));
                    }
                    Poll::Pending => real.push((Real::Pending(future), 0)),
                }
            }
            Step::Drop(n) => {
                if real.is_empty() {
                    continue;
                }
                let i = usize::from(n) % real.len();
                drop(real.remove(i));
                model.requests.remove(i);
                model.grant_pass();
            }
        }
        // Poll every pending future: exactly the model's held ones are ready.
        for (i, (entry, id)) in real.iter_mut().enumerate() {
            if let Real::Pending(future) = entry {
                if let Poll::Ready(guard) = future.as_mut().poll(&mut Context::from_waker(&waker)) {
                    let guard = guard.expect("non-empty");
                    // Above every id this thread obtained before, which
                    // includes every conflicting request granted earlier.
                    assert!(guard.id() > last_id, "ids must increase");
                    last_id = guard.id();
                    *id = guard.id();
                    *entry = Real::Guard { _guard: guard };
                }
            }
            let held = matches!(entry, Real::Guard { .. });
            assert_eq!(
                held, model.requests[i].held,
                "request {i}: lock and model disagree"
            );
        }
        let stats = lock.stats();
        let held = model.requests.iter().filter(|r| r.held).count();
        assert_eq!(
            (stats.held, stats.waiting),
            (held, model.requests.len() - held)
        );
        if model.requests.is_empty() {
            assert_eq!(stats.nodes, 0, "nodes left behind");
        }
    }
}
