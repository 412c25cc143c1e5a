use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use super::{Closed, Watch};

struct Flag(AtomicBool);
impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn flag_waker() -> (Arc<Flag>, Waker) {
    let flag = Arc::new(Flag(AtomicBool::new(false)));
    (flag.clone(), Waker::from(flag))
}

#[test]
fn loads_see_stores_and_versions_count_them() {
    let watch = Watch::new(String::from("a"));
    assert_eq!((watch.load().as_str(), watch.version()), ("a", 0));
    watch.store("b".into());
    watch.update(|s| format!("{s}c"));
    assert_eq!(*watch.load(), "bc");
    assert_eq!(*watch.borrow(), "bc");
    assert_eq!(watch.version(), 2);
    assert_eq!(format!("{watch:?}"), r#"Watch { value: "bc", version: 2 }"#);
    assert_eq!(*Watch::<u32>::default().load(), 0);
}

#[test]
fn a_pending_changed_is_woken_by_a_store_and_returns_the_latest() {
    let watch = Watch::new(1);
    let mut sub = watch.subscribe();
    let (flag, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    let mut changed = Box::pin(sub.changed());
    assert!(changed.as_mut().poll(&mut cx).is_pending());
    watch.store(2);
    watch.store(3); // intermediate versions may be skipped
    assert!(flag.0.load(Ordering::SeqCst), "the store woke the waiter");
    assert_eq!(changed.as_mut().poll(&mut cx), Poll::Ready(Ok(Arc::new(3))));
    drop(changed);
    assert_eq!(sub.try_changed(), Ok(None), "3 was seen");
}

#[test]
fn dropping_the_watch_closes_after_the_last_unseen_value() {
    let watch = Watch::new(1);
    let mut sub = watch.subscribe();
    let (flag, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    {
        let mut changed = Box::pin(sub.changed());
        assert!(changed.as_mut().poll(&mut cx).is_pending());
    }
    watch.store(2);
    drop(watch);
    assert_eq!(
        sub.try_changed(),
        Ok(Some(Arc::new(2))),
        "unseen value first"
    );
    assert_eq!(sub.try_changed(), Err(Closed));
    assert_eq!(sub.wait_changed(), Err(Closed));
    let mut changed = Box::pin(sub.changed());
    assert_eq!(changed.as_mut().poll(&mut cx), Poll::Ready(Err(Closed)));
    let _ = flag;
}

#[test]
fn blocking_waits_wake_on_a_store_from_another_thread_and_time_out() {
    let watch = Arc::new(Watch::new(0u64));
    let mut sub = watch.subscribe();
    assert_eq!(
        sub.wait_changed_timeout(Duration::from_millis(10)),
        Ok(None)
    );
    let writer = {
        let watch = watch.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            watch.store(7);
        })
    };
    assert_eq!(*sub.wait_changed().unwrap(), 7);
    writer.join().unwrap();
    let mut other = sub.clone();
    assert_eq!(
        other.try_changed(),
        Ok(None),
        "a clone has seen what its source saw"
    );
}

#[test]
fn dropped_futures_and_subscribers_leave_no_waker_behind() {
    let watch = Watch::new(0);
    let mut sub = watch.subscribe();
    let (_, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    for _ in 0..100 {
        let mut changed = Box::pin(sub.changed());
        assert!(changed.as_mut().poll(&mut cx).is_pending());
        assert!(changed.as_mut().poll(&mut cx).is_pending()); // re-poll: same slot
    }
    assert!(crate::sync::lock(&watch.shared.wakers).by_id.is_empty());
    // A slot registered (as a pending future's poll registers it) goes away
    // with its subscriber.
    assert!(sub.register(&waker).is_none(), "nothing new: registered");
    assert_eq!(crate::sync::lock(&watch.shared.wakers).by_id.len(), 1);
    drop(sub);
    assert!(crate::sync::lock(&watch.shared.wakers).by_id.is_empty());
}

#[test]
fn a_panicking_waker_does_not_stop_the_others() {
    struct Boom;
    impl Wake for Boom {
        fn wake(self: Arc<Self>) {
            panic!("waker panicked");
        }
    }
    let watch = Watch::new(0);
    let (mut a, mut b) = (watch.subscribe(), watch.subscribe());
    let boom = Waker::from(Arc::new(Boom));
    let (flag, ok) = flag_waker();
    let mut fa = Box::pin(a.changed());
    assert!(fa
        .as_mut()
        .poll(&mut Context::from_waker(&boom))
        .is_pending());
    let mut fb = Box::pin(b.changed());
    assert!(fb.as_mut().poll(&mut Context::from_waker(&ok)).is_pending());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| watch.store(1)));
    assert!(result.is_err(), "the waker's panic resumes");
    assert!(flag.0.load(Ordering::SeqCst), "the other waker still ran");
    assert_eq!(*watch.load(), 1);
}

#[test]
fn watch_and_subscriber_are_send_and_sync_for_shareable_contents() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Watch<String>>();
    shareable::<super::Subscriber<Vec<u8>>>();
    shareable::<super::Ref<u64>>();
}

/// Issue 15, item 3: `Subscriber::changed` replaced its waker (and took it
/// back out) under the waker list's mutex. A waker that is the last handle
/// to a task owning a `Subscriber` then dropped it there, and the
/// subscriber's unregistering locked the list again: a silent deadlock.
#[test]
fn a_replaced_waker_is_dropped_after_the_waker_list_is_unlocked() {
    struct SubscriberOwner(#[allow(dead_code)] std::sync::Mutex<Option<super::Subscriber<u32>>>);
    impl Wake for SubscriberOwner {
        fn wake(self: Arc<Self>) {}
    }
    crate::test_support::finishes("re-poll changed with a new waker", || {
        let watch = Watch::new(0u32);
        let mut sub = watch.subscribe();
        let owner = Waker::from(Arc::new(SubscriberOwner(std::sync::Mutex::new(Some(
            watch.subscribe(),
        )))));
        let mut changed = Box::pin(sub.changed());
        assert!(changed
            .as_mut()
            .poll(&mut Context::from_waker(&owner))
            .is_pending());
        drop(owner); // the list's clone is the last handle now
        let (_, other) = flag_waker();
        let mut cx = Context::from_waker(&other);
        assert!(changed.as_mut().poll(&mut cx).is_pending());
        watch.store(1);
        assert!(matches!(changed.as_mut().poll(&mut cx), Poll::Ready(Ok(v)) if *v == 1));
    });
}

/// Issue 15, item 6: when the replaced value's `Drop` panicked, `store` and
/// `update` published the new value but notified no one, and `version()`
/// stayed one behind for good.
#[test]
fn a_panicking_drop_of_the_old_value_loses_no_notification() {
    struct Bomb(bool);
    impl Drop for Bomb {
        fn drop(&mut self) {
            if self.0 {
                panic!("bomb");
            }
        }
    }
    let watch = Watch::new(Bomb(true));
    let mut sub = watch.subscribe();
    let stored = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        watch.store(Bomb(true));
    }));
    assert!(stored.is_err(), "the bomb did not go off");
    assert_eq!(watch.version(), 1);
    assert!(
        sub.try_changed().unwrap().is_some(),
        "the store was not notified"
    );
    let updated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        watch.update(|_| Bomb(false));
    }));
    assert!(updated.is_err(), "the second bomb did not go off");
    assert_eq!(watch.version(), 2);
    assert!(
        sub.try_changed().unwrap().is_some(),
        "the update was not notified"
    );
}

/// The calls a tokio `watch` user reaches for first (issue 18 item 4).
#[test]
fn tokio_style_calls_read_without_consuming_and_send_conditionally() {
    let watch = Watch::new(vec![1]);
    let mut sub = watch.subscribe();
    assert_eq!(watch.receiver_count(), 1);
    let other = sub.clone();
    assert_eq!(watch.receiver_count(), 2);
    drop(other);
    // load, borrow and has_changed consume nothing.
    let old = watch.send_replace(vec![2]);
    assert_eq!(*old, [1]);
    assert_eq!((&*sub.load(), &*sub.borrow()), (&vec![2], &vec![2]));
    assert_eq!(sub.has_changed(), Ok(true));
    assert_eq!(sub.has_changed(), Ok(true), "still unseen");
    sub.mark_unchanged();
    assert_eq!(
        (sub.has_changed(), sub.try_changed()),
        (Ok(false), Ok(None))
    );
    // send_if_modified stores and notifies only when `f` says so.
    assert!(!watch.send_if_modified(|v| {
        v.push(9); // a change that is not kept
        false
    }));
    assert_eq!((watch.version(), sub.has_changed()), (1, Ok(false)));
    assert_eq!(*watch.load(), [2]);
    assert!(watch.send_if_modified(|v| {
        v.push(3);
        true
    }));
    assert_eq!(
        (watch.version(), &*sub.try_changed().unwrap().unwrap()),
        (2, &vec![2, 3])
    );
    drop(watch);
    assert_eq!(sub.has_changed(), Err(Closed));
}

#[test]
fn wait_for_checks_the_current_value_then_each_change() {
    let watch = Watch::new(0);
    let mut sub = watch.subscribe();
    let (flag, waker) = flag_waker();
    let mut cx = Context::from_waker(&waker);
    // The current value satisfies it: ready at once.
    let mut now = Box::pin(sub.wait_for(|v| *v == 0));
    assert_eq!(now.as_mut().poll(&mut cx), Poll::Ready(Ok(Arc::new(0))));
    drop(now);
    let mut later = Box::pin(sub.wait_for(|v| *v >= 2));
    assert!(later.as_mut().poll(&mut cx).is_pending());
    watch.store(1);
    assert!(flag.0.swap(false, Ordering::SeqCst));
    assert!(
        later.as_mut().poll(&mut cx).is_pending(),
        "1 does not satisfy it"
    );
    watch.store(2);
    assert_eq!(later.as_mut().poll(&mut cx), Poll::Ready(Ok(Arc::new(2))));
    drop(later);
    let mut never = Box::pin(sub.wait_for(|v| *v > 5));
    assert!(never.as_mut().poll(&mut cx).is_pending());
    drop(watch);
    assert_eq!(never.as_mut().poll(&mut cx), Poll::Ready(Err(Closed)));
}
