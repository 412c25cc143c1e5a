//! `registers`: writer threads run random instructions on the register
//! machine under `PathLock` sets while reader threads print snapshots; then
//! the log is replayed in fencing-id order and must give the final state.
//! Then one producer and two consumers hand 100 random strings over.
//!
//! ```text
//! cargo run --release -p shardlock-systems --bin registers
//! ```
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use clap::Parser;
use shardlock_systems::registers::{self, queue, Instr, Machine};

#[derive(Parser, Debug)]
#[command(about = "Reader/writer registers on shardlock's PathLock, checked by replay")]
struct Args {
    #[arg(long, default_value_t = 4)]
    writers: usize,
    #[arg(long, default_value_t = 2)]
    readers: usize,
    /// Instructions per writer.
    #[arg(long, default_value_t = 200)]
    instructions: usize,
    /// Registers in use (A onwards) and memory addresses (0 onwards): few,
    /// so instructions conflict.
    #[arg(long, default_value_t = 6)]
    registers: u8,
    #[arg(long, default_value_t = 8)]
    addresses: u32,
    /// Strings the producer hands to the consumers.
    #[arg(long, default_value_t = 100)]
    strings: u64,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let machine = Machine::new();
    let writing = AtomicBool::new(true);
    thread::scope(|s| {
        let writers: Vec<_> = (1..=args.writers)
            .map(|w| {
                let machine = &machine;
                s.spawn(move || {
                    let mut rng = rand::rng();
                    for _ in 0..args.instructions {
                        let instr = Instr::random(&mut rng, args.registers, args.addresses);
                        let e = machine.exec(instr);
                        println!(
                            "writer-{w} #{}: {} -> {:?} = {}",
                            e.id, e.instruction, e.target, e.value
                        );
                    }
                })
            })
            .collect();
        for r in 1..=args.readers {
            let (machine, writing) = (&machine, &writing);
            s.spawn(move || {
                while writing.load(Ordering::Relaxed) {
                    let snap = machine.snapshot();
                    println!("reader-{r} snapshot #{}: {snap}", snap.id);
                    thread::sleep(Duration::from_millis(2));
                }
            });
        }
        for w in writers {
            w.join().expect("a writer panicked");
        }
        writing.store(false, Ordering::Relaxed);
    });
    let log = machine.log();
    let (registers, memory) = (machine.snapshot().registers, machine.memory());
    let replay = registers::replay_check(&log, &registers, &memory);
    let outcome = queue::run(args.strings, 2);
    let mut made = outcome.produced.clone();
    let mut taken: Vec<String> = outcome.consumed.iter().map(|(_, s)| s.clone()).collect();
    made.sort();
    taken.sort();
    let exactly_once = made == taken;
    println!(
        "producer/consumer: {} produced, {} consumed, {}",
        outcome.produced.len(),
        outcome.consumed.len(),
        if exactly_once {
            "each exactly once"
        } else {
            "MISMATCH"
        }
    );
    // The verdicts last, after the hundreds of lines above.
    let ok = match replay {
        Ok(n) => {
            println!("replay check: OK ({n} instructions replayed in fencing-id order match the final state)");
            true
        }
        Err(e) => {
            println!("replay check: FAILED: {e}");
            false
        }
    };
    println!(
        "verdict: {}",
        if ok && exactly_once { "PASS" } else { "FAIL" }
    );
    if ok && exactly_once {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
