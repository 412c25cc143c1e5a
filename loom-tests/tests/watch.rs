//! loom models of `Watch`'s notification protocol (`src/watch.rs`): a
//! subscriber waiting in `changed` against a store and against the drop of
//! the `Watch`. A lost wake-up leaves the subscriber blocked forever, which
//! loom reports as a deadlock.
#![cfg(loom)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use loom::thread;
use shardlock::{Closed, Watch};

/// Polls `f` to completion, parking in between. Unlike `loom::future::
/// block_on`, it tolerates a stale waker of an earlier future unparking the
/// thread (a spurious wake, which `Watch` may cause and any waiter must
/// allow); a lost wake-up still parks forever, which loom reports.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(value) = f.as_mut().poll(&mut Context::from_waker(&waker)) {
            return value;
        }
        thread::park();
    }
}

#[test]
fn a_store_wakes_a_subscriber_waiting_in_changed() {
    loom::model(|| {
        let watch = Arc::new(Watch::new(0));
        let mut sub = watch.subscribe();
        let writer = {
            let watch = watch.clone();
            thread::spawn(move || watch.store(1))
        };
        let value = block_on(sub.changed()).expect("the watch lives");
        assert_eq!(*value, 1, "the latest value, never the old one");
        writer.join().unwrap();
        assert_eq!(sub.try_changed(), Ok(None));
    });
}

#[test]
fn two_stores_and_two_subscribers_end_on_the_final_value() {
    loom::model(|| {
        let watch = Arc::new(Watch::new(0));
        let (mut a, mut b) = (watch.subscribe(), watch.subscribe());
        let writer = {
            let watch = watch.clone();
            thread::spawn(move || {
                watch.store(1);
                watch.store(2);
            })
        };
        let reader = thread::spawn(move || while *block_on(b.changed()).unwrap() != 2 {});
        while *block_on(a.changed()).unwrap() != 2 {}
        writer.join().unwrap();
        reader.join().unwrap();
    });
}

#[test]
fn dropping_the_watch_wakes_a_subscriber_with_closed() {
    loom::model(|| {
        let watch = Watch::new(0);
        let mut sub = watch.subscribe();
        let owner = thread::spawn(move || drop(watch));
        assert_eq!(block_on(sub.changed()), Err(Closed));
        owner.join().unwrap();
    });
}
