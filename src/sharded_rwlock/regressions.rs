//! Regression tests for the lock defects found in review (issue 6): leaked
//! overflow guards, thread indices reused under live guards, and locking
//! from thread-local destructors. Each failed on the code before its fix.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::{ShardedReadGuard, ShardedRwLock, ShardedWriteGuard};
use crate::test_support::{at_thread_exit, leak, leak_box};
use crate::thread_index;

/// Runs `f` on a thread whose index is past every lock's own rows, so its
/// reads go through the shared overflow row. Threads are started until one
/// gets such an index; each that gets a lower one holds it meanwhile (other
/// tests' threads come and go in this process, so a fixed number of holders
/// is not enough: an index one of them frees may be handed out next).
fn on_an_overflow_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let rows = crate::raw_rwlock::default_rows();
    let f = Arc::new(std::sync::Mutex::new(Some(f)));
    let mut holders: Vec<(std::thread::JoinHandle<Option<T>>, mpsc::Sender<()>)> = Vec::new();
    loop {
        let (release, released) = mpsc::channel::<()>();
        let (told, tell) = mpsc::channel::<bool>();
        let f = f.clone();
        let handle = std::thread::spawn(move || {
            if thread_index::current() < rows {
                told.send(false).unwrap();
                let _ = released.recv(); // hold the low index until the end
                return None;
            }
            told.send(true).unwrap();
            let f = f.lock().unwrap().take().expect("runs once");
            Some(f())
        });
        if tell.recv().unwrap() {
            let result = handle.join();
            for (holder, release) in holders {
                drop(release);
                holder.join().unwrap();
            }
            match result {
                Ok(value) => return value.expect("ran f"),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        holders.push((handle, release));
    }
}

/// Item 1: an overflow thread's holds were keyed by the lock's address, so
/// a read guard leaked on a freed lock vouched for a new lock allocated at
/// the same address, and its `read` skipped the writer check.
#[test]
fn a_leaked_overflow_guard_does_not_vouch_for_a_new_lock_at_its_address() {
    on_an_overflow_thread(|| {
        let mut reused = None;
        for _ in 0..100 {
            let old = Box::new(ShardedRwLock::new(0u64));
            let address = &*old as *const ShardedRwLock<u64> as usize;
            std::mem::forget(old.read());
            drop(old);
            let new = Box::new(ShardedRwLock::new(0u64));
            if &*new as *const ShardedRwLock<u64> as usize == address {
                reused = Some(new);
                break;
            }
        }
        let Some(lock) = reused else {
            eprintln!("the allocator never reused the address: nothing to show");
            return;
        };
        let lock: &'static ShardedRwLock<u64> = leak_box(lock); // stays put
        let (held, release) = (mpsc::channel(), mpsc::channel::<()>());
        let writer = {
            std::thread::spawn(move || {
                let _w = lock.write();
                held.0.send(()).unwrap();
                release.1.recv().unwrap();
            })
        };
        held.1.recv().unwrap();
        assert!(
            lock.try_read().is_none(),
            "a reader entered beside the writer"
        );
        release.0.send(()).unwrap();
        writer.join().unwrap();
    });
}

thread_local! {
    // Thread-locals are destroyed in reverse order of first use. The tests
    // below use these *before* the thread first locks anything, so they
    // outlive the crate's own thread-local teardown.
    static READ_GUARD: RefCell<Option<ShardedReadGuard<'static, u64>>> = const { RefCell::new(None) };
    static WRITE_GUARD: RefCell<Option<ShardedWriteGuard<'static, u64>>> = const { RefCell::new(None) };
    static MY_INDEX: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Item 2: a thread's index was given back when its index thread-local
/// was destroyed, though a guard in another thread-local still counted in
/// its slot; a new thread then got the same index and stored to the same
/// slot with plain stores.
#[test]
fn an_index_is_not_reused_while_a_guard_taken_under_it_lives() {
    let lock = leak(ShardedRwLock::new(0u64));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        READ_GUARD.with(|_| {});
        at_thread_exit(move || {
            // The crate's thread-locals are torn down; the guard lives on.
            let newcomer = std::thread::spawn(thread_index::current).join().unwrap();
            tx.send((newcomer, MY_INDEX.get())).unwrap();
        });
        let guard = lock.read();
        MY_INDEX.set(thread_index::current());
        READ_GUARD.with(|g| *g.borrow_mut() = Some(guard));
    })
    .join()
    .unwrap();
    let (newcomer, exited) = rx.recv().unwrap();
    assert_ne!(
        newcomer, exited,
        "an index was handed out under a live guard"
    );
    assert!(lock.try_write().is_some(), "the guard was released at exit");
    // Once the guard is gone the index is free again.
    let later = std::thread::spawn(thread_index::current).join().unwrap();
    assert!(later < thread_index::high_water());
}

/// Item 2, second symptom: write ownership was recorded by thread index, so
/// a new thread that got an exiting writer's index was taken for the writer
/// and its `read` panicked with "this thread holds the write lock".
#[test]
#[cfg_attr(miri, ignore = "sleeps so the newcomer reads while the write is held")]
fn a_new_thread_is_not_taken_for_an_exiting_writer() {
    let lock = leak(ShardedRwLock::new(0u64));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        WRITE_GUARD.with(|_| {});
        at_thread_exit(move || {
            let newcomer = std::thread::spawn(move || {
                catch_unwind(AssertUnwindSafe(|| *lock.read()))
                    .map_err(|_| "the newcomer's read panicked")
            });
            std::thread::sleep(Duration::from_millis(100));
            WRITE_GUARD.with(|g| *g.borrow_mut() = None); // unlock
            tx.send(newcomer.join().unwrap()).unwrap();
        });
        drop(leak(ShardedRwLock::new(0u8)).read()); // takes a thread index
        let mut guard = lock.write();
        *guard = 7;
        WRITE_GUARD.with(|g| *g.borrow_mut() = Some(guard));
    })
    .join()
    .unwrap();
    assert_eq!(rx.recv().unwrap(), Ok(7));
}

/// Item 3: locking from a thread-local destructor. A write then a read of
/// the same lock must panic (the reentrancy check needs the thread's
/// identity, which used to be gone there), not hang.
#[test]
fn a_write_then_a_read_in_a_thread_local_destructor_panics() {
    let lock = leak(ShardedRwLock::new(0u64));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        at_thread_exit(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let _w = lock.write();
                let _r = lock.read();
            }));
            let plain = catch_unwind(AssertUnwindSafe(|| {
                let mut w = lock.write();
                *w += 1;
                drop(w);
                *lock.read()
            }));
            tx.send((outcome.is_err(), plain.ok())).unwrap();
        });
        // Lock now, so the crate's thread-locals exist and are destroyed
        // before the destructor above runs.
        drop(lock.read());
    });
    let (panicked, plain) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("a read after a write in a thread-local destructor hung");
    assert!(panicked, "a write then a read did not panic");
    assert_eq!(plain, Some(1), "plain locking from a destructor failed");
}
