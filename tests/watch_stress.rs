//! Stress: one writer stores increasing values while subscribers wait for
//! them, asynchronously (a parking `block_on`), blocking, with timeouts and
//! by polling. Every subscriber must see values only go forward and must end
//! on the final value; a lost wake-up would hang, so the run has a watchdog.
use std::future::Future;
use std::pin::pin;
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use shardlock::{Closed, Watch};

const FINAL: u64 = 50_000;

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
fn subscribers_see_values_go_forward_and_end_on_the_last() {
    let watch = Arc::new(Watch::new(0u64));
    let (done_tx, done_rx) = mpsc::channel();
    for kind in 0..4 {
        let mut sub = watch.subscribe();
        let done_tx = done_tx.clone();
        thread::spawn(move || {
            let (mut last, mut seen) = (0u64, 0u64);
            loop {
                let next = match kind {
                    0 => block_on(sub.changed()).map(Some),
                    1 => sub.wait_changed().map(Some),
                    2 => sub.wait_changed_timeout(Duration::from_micros(50)),
                    _ => {
                        thread::yield_now();
                        sub.try_changed()
                    }
                };
                match next {
                    Ok(Some(value)) => {
                        assert!(*value > last, "went back: {} after {last}", *value);
                        last = *value;
                        seen += 1;
                    }
                    Ok(None) => {}
                    Err(Closed) => break,
                }
            }
            done_tx.send((kind, last, seen)).unwrap();
        });
    }
    for v in 1..=FINAL {
        watch.store(v);
        if v % 1000 == 0 {
            thread::yield_now();
        }
    }
    assert_eq!(watch.version(), FINAL);
    drop(Arc::into_inner(watch).expect("subscribers hold the shared state, not the Watch"));
    for _ in 0..4 {
        let (kind, last, seen) = done_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("a subscriber hung: lost wake-up");
        assert_eq!(
            last, FINAL,
            "subscriber {kind} did not end on the final value"
        );
        assert!(seen >= 1);
    }
}
