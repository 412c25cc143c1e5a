//! Differential: PathLock against a sequential model of the grant rule, with
//! try_lock, lock_async futures (polled with a no-op waker), releases and
//! cancellations, compared after every step.
#![no_main]
use libfuzzer_sys::fuzz_target;
use shardlock_fuzz::grant_model::{run, Step};

fuzz_target!(|steps: Vec<Step>| run(steps));
