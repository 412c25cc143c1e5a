//! A register machine: registers `A`–`Z` and numbered memory locations,
//! written by concurrent writers under `PathLock` sets and snapshotted by
//! readers, checked by replaying its log in fencing-id order.
//!
//! Instructions (values are `i64`; arithmetic wraps):
//!
//! | instruction  | effect             | locks                                   |
//! |--------------|--------------------|-----------------------------------------|
//! | `MOV A B`    | A = B              | Write `["reg","A"]`, Read `["reg","B"]` |
//! | `ADD A B`    | A = A + B          | the same                                |
//! | `SUB A B`    | A = A − B          | the same                                |
//! | `MUL A B`    | A = A × B          | the same                                |
//! | `DIV A B`    | A = A ÷ B (toward zero); **B = 0 leaves A unchanged** | the same |
//! | `SET A 5`    | A = 5              | Write `["reg","A"]`                     |
//! | `READ B 100` | B = `memory[100]`  | Write `["reg","B"]`, Read `["mem","100"]` |
//! | `WRITE B 100`| `memory[100]` = B  | Write `["mem","100"]`, Read `["reg","B"]` |
//!
//! Memory starts at 0 everywhere. A snapshot takes Read `["reg"]`, so it sees
//! every register at one instant.
//!
//! **The check.** Each executed instruction is logged with its request's
//! fencing id. Two instructions that conflict take conflicting locks, so
//! the later one has the larger id; instructions that do not conflict touch
//! disjoint state and commute. So replaying the log in id order on a
//! sequential machine must give exactly the final registers and memory.
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Mutex;

use rand::Rng;
use serde::{Deserialize, Serialize};
use shardlock::{LockSet, PathLock, RouterTable};

pub mod queue;

pub type Word = i64;
pub type Addr = u32;

/// A register, `A` (0) to `Z` (25).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reg(u8);

impl Reg {
    pub const COUNT: usize = 26;

    pub fn index(self) -> usize {
        usize::from(self.0)
    }

    pub fn name(self) -> char {
        char::from(b'A' + self.0)
    }

    pub fn all() -> impl Iterator<Item = Reg> {
        (0..Self::COUNT as u8).map(Reg)
    }
}

impl FromStr for Reg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.as_bytes() {
            [c @ b'A'..=b'Z'] => Ok(Reg(c - b'A')),
            [c @ b'a'..=b'z'] => Ok(Reg(c - b'a')),
            _ => Err(format!("{s:?} is not a register (A to Z)")),
        }
    }
}

/// One instruction; see the module docs for meanings and locks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instr {
    Mov(Reg, Reg),
    Add(Reg, Reg),
    Sub(Reg, Reg),
    Mul(Reg, Reg),
    Div(Reg, Reg),
    Set(Reg, Word),
    Read(Reg, Addr),
    Write(Reg, Addr),
}

impl FromStr for Instr {
    type Err = String;
    /// `"ADD A B"`, `"SET A -5"`, `"READ B 100"` (op names in any case).
    fn from_str(text: &str) -> Result<Self, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let [op, a, b] = words[..] else {
            return Err(format!("expected `OP X Y`, got {text:?}"));
        };
        let reg = |s: &str| s.parse::<Reg>();
        let addr = |s: &str| {
            s.parse::<Addr>()
                .map_err(|_| format!("{s:?} is not a memory address (0 to {})", Addr::MAX))
        };
        Ok(match op.to_ascii_uppercase().as_str() {
            "MOV" => Instr::Mov(reg(a)?, reg(b)?),
            "ADD" => Instr::Add(reg(a)?, reg(b)?),
            "SUB" => Instr::Sub(reg(a)?, reg(b)?),
            "MUL" => Instr::Mul(reg(a)?, reg(b)?),
            "DIV" => Instr::Div(reg(a)?, reg(b)?),
            "SET" => Instr::Set(
                reg(a)?,
                b.parse()
                    .map_err(|_| format!("{b:?} is not a 64-bit integer"))?,
            ),
            "READ" => Instr::Read(reg(a)?, addr(b)?),
            "WRITE" => Instr::Write(reg(a)?, addr(b)?),
            _ => return Err(format!("unknown instruction {op:?}")),
        })
    }
}

impl fmt::Display for Instr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (op, a, b) = match *self {
            Instr::Mov(a, b) => ("MOV", a, b.name().to_string()),
            Instr::Add(a, b) => ("ADD", a, b.name().to_string()),
            Instr::Sub(a, b) => ("SUB", a, b.name().to_string()),
            Instr::Mul(a, b) => ("MUL", a, b.name().to_string()),
            Instr::Div(a, b) => ("DIV", a, b.name().to_string()),
            Instr::Set(a, n) => ("SET", a, n.to_string()),
            Instr::Read(a, m) => ("READ", a, m.to_string()),
            Instr::Write(a, m) => ("WRITE", a, m.to_string()),
        };
        write!(f, "{op} {} {b}", a.name())
    }
}

impl Serialize for Instr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Instr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// What an instruction wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Register(char),
    Memory(Addr),
}

/// Where an instruction's effects land: the concurrent [`Machine`] (under
/// its locks) and the sequential replay both implement it, so both run the
/// one [`Instr::apply`].
pub trait Cells {
    fn reg(&self, r: Reg) -> Word;
    fn set_reg(&self, r: Reg, v: Word);
    fn mem(&self, a: Addr) -> Word;
    fn set_mem(&self, a: Addr, v: Word);
}

impl Instr {
    /// The resources it locks (see the module docs).
    pub fn lock_set(self) -> LockSet {
        let reg = |r: Reg| ["reg".to_owned(), r.name().to_string()];
        let mem = |a: Addr| ["mem".to_owned(), a.to_string()];
        match self {
            Instr::Mov(a, b)
            | Instr::Add(a, b)
            | Instr::Sub(a, b)
            | Instr::Mul(a, b)
            | Instr::Div(a, b) => LockSet::new().write(reg(a)).read(reg(b)),
            Instr::Set(a, _) => LockSet::new().write(reg(a)),
            Instr::Read(a, m) => LockSet::new().write(reg(a)).read(mem(m)),
            Instr::Write(a, m) => LockSet::new().write(mem(m)).read(reg(a)),
        }
    }

    /// Runs it on `cells`; returns what it wrote and the value written.
    pub fn apply(self, cells: &impl Cells) -> (Target, Word) {
        let arith = |a: Reg, v: Word| {
            cells.set_reg(a, v);
            (Target::Register(a.name()), v)
        };
        match self {
            Instr::Mov(a, b) => arith(a, cells.reg(b)),
            Instr::Add(a, b) => arith(a, cells.reg(a).wrapping_add(cells.reg(b))),
            Instr::Sub(a, b) => arith(a, cells.reg(a).wrapping_sub(cells.reg(b))),
            Instr::Mul(a, b) => arith(a, cells.reg(a).wrapping_mul(cells.reg(b))),
            Instr::Div(a, b) => match cells.reg(b) {
                0 => (Target::Register(a.name()), cells.reg(a)), // unchanged
                d => arith(a, cells.reg(a).wrapping_div(d)),
            },
            Instr::Set(a, n) => arith(a, n),
            Instr::Read(a, m) => arith(a, cells.mem(m)),
            Instr::Write(a, m) => {
                let v = cells.reg(a);
                cells.set_mem(m, v);
                (Target::Memory(m), v)
            }
        }
    }

    /// A random instruction over registers `A..A+regs` and addresses
    /// `0..addrs` (few of each, for contention).
    pub fn random(rng: &mut impl Rng, regs: u8, addrs: Addr) -> Instr {
        let reg = |rng: &mut dyn rand::RngCore| Reg(rng.random_range(0..regs.clamp(1, 26)));
        let (a, b) = (reg(rng), reg(rng));
        let m = rng.random_range(0..addrs.max(1));
        match rng.random_range(0..8) {
            0 => Instr::Mov(a, b),
            1 => Instr::Add(a, b),
            2 => Instr::Sub(a, b),
            3 => Instr::Mul(a, b),
            4 => Instr::Div(a, b),
            5 => Instr::Set(a, rng.random_range(-100..100)),
            6 => Instr::Read(a, m),
            _ => Instr::Write(a, m),
        }
    }
}

/// An executed instruction, as logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Executed {
    /// The fencing id of the lock it ran under.
    pub id: u64,
    pub instruction: Instr,
    pub target: Target,
    pub value: Word,
}

/// Every register at one instant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The fencing id of the snapshot's read lock.
    pub id: u64,
    pub registers: BTreeMap<char, Word>,
}

impl fmt::Display for Snapshot {
    /// The non-zero registers, `A=3 C=-1` (or `all zero`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set: Vec<String> = self
            .registers
            .iter()
            .filter(|(_, v)| **v != 0)
            .map(|(r, v)| format!("{r}={v}"))
            .collect();
        if set.is_empty() {
            f.write_str("all zero")
        } else {
            f.write_str(&set.join(" "))
        }
    }
}

/// The concurrent machine.
#[derive(Default)]
pub struct Machine {
    lock: PathLock,
    regs: [AtomicI64; Reg::COUNT],
    mem: RouterTable<Addr, Word>,
    log: Mutex<Vec<Executed>>,
}

/// Under the instruction's locks, so plain loads and stores suffice: the
/// lock orders conflicting accesses.
impl Cells for Machine {
    fn reg(&self, r: Reg) -> Word {
        self.regs[r.index()].load(Relaxed)
    }
    fn set_reg(&self, r: Reg, v: Word) {
        self.regs[r.index()].store(v, Relaxed);
    }
    fn mem(&self, a: Addr) -> Word {
        self.mem.get(&a).unwrap_or(0)
    }
    fn set_mem(&self, a: Addr, v: Word) {
        self.mem.insert(a, v);
    }
}

impl Machine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `instr` under its locks (blocking) and logs it.
    pub fn exec(&self, instr: Instr) -> Executed {
        let guard = self.lock.lock(&instr.lock_set()).expect("never empty");
        self.run(guard.id(), instr)
    }

    /// [`exec`](Self::exec) for async callers: waits for the locks without
    /// blocking the thread.
    pub async fn exec_async(&self, instr: Instr) -> Executed {
        let set = instr.lock_set();
        let guard = self.lock.lock_async(&set).await.expect("never empty");
        self.run(guard.id(), instr)
    }

    fn run(&self, id: u64, instruction: Instr) -> Executed {
        let (target, value) = instruction.apply(self);
        let executed = Executed {
            id,
            instruction,
            target,
            value,
        };
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(executed);
        executed
    }

    fn snapshot_under(&self, id: u64) -> Snapshot {
        Snapshot {
            id,
            registers: Reg::all().map(|r| (r.name(), self.reg(r))).collect(),
        }
    }

    /// Every register at one instant (under Read `["reg"]`).
    pub fn snapshot(&self) -> Snapshot {
        let guard = self.lock.read(["reg"]);
        self.snapshot_under(guard.id())
    }

    pub async fn snapshot_async(&self) -> Snapshot {
        let guard = self.lock.read_async(["reg"]).await;
        self.snapshot_under(guard.id())
    }

    /// Memory at `addr` (under Read `["mem", addr]`).
    pub async fn memory_async(&self, addr: Addr) -> Word {
        let _guard = self
            .lock
            .read_async(["mem".to_owned(), addr.to_string()])
            .await;
        self.mem(addr)
    }

    /// Every non-zero memory location.
    pub fn memory(&self) -> BTreeMap<Addr, Word> {
        let _guard = self.lock.read(["mem"]);
        let mut all = BTreeMap::new();
        self.mem.for_each(|a, v| {
            if *v != 0 {
                all.insert(*a, *v);
            }
        });
        all
    }

    /// The log so far.
    pub fn log(&self) -> Vec<Executed> {
        self.log.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A plain sequential machine, for replays.
#[derive(Default)]
pub struct Sequential {
    regs: [Cell<Word>; Reg::COUNT],
    mem: RefCell<BTreeMap<Addr, Word>>,
}

impl Cells for Sequential {
    fn reg(&self, r: Reg) -> Word {
        self.regs[r.index()].get()
    }
    fn set_reg(&self, r: Reg, v: Word) {
        self.regs[r.index()].set(v);
    }
    fn mem(&self, a: Addr) -> Word {
        self.mem.borrow().get(&a).copied().unwrap_or(0)
    }
    fn set_mem(&self, a: Addr, v: Word) {
        self.mem.borrow_mut().insert(a, v);
    }
}

/// Replays `log` in id order on a fresh sequential machine and compares it
/// with the final `registers` and (non-zero) `memory`; `Err` describes the
/// first difference. Also checks that every logged write is what the replay
/// computed at that point and that ids are unique.
pub fn replay_check(
    log: &[Executed],
    registers: &BTreeMap<char, Word>,
    memory: &BTreeMap<Addr, Word>,
) -> Result<usize, String> {
    let mut ordered = log.to_vec();
    ordered.sort_by_key(|e| e.id);
    if let Some(w) = ordered.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(format!("fencing id {} used twice", w[0].id));
    }
    let machine = Sequential::default();
    for e in &ordered {
        let (target, value) = e.instruction.apply(&machine);
        if (target, value) != (e.target, e.value) {
            return Err(format!(
                "#{} {}: logged {:?} = {}, replay computed {:?} = {}",
                e.id, e.instruction, e.target, e.value, target, value
            ));
        }
    }
    for r in Reg::all() {
        let (want, got) = (
            machine.reg(r),
            registers.get(&r.name()).copied().unwrap_or(0),
        );
        if want != got {
            return Err(format!(
                "register {}: replay {want}, machine {got}",
                r.name()
            ));
        }
    }
    let replayed: BTreeMap<Addr, Word> = machine
        .mem
        .borrow()
        .iter()
        .filter(|(_, v)| **v != 0)
        .map(|(a, v)| (*a, *v))
        .collect();
    if &replayed != memory {
        return Err(format!("memory: replay {replayed:?}, machine {memory:?}"));
    }
    Ok(ordered.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_parse_print_and_mean_what_the_docs_say() {
        for text in [
            "MOV A B",
            "ADD Z A",
            "SUB C C",
            "MUL A B",
            "DIV A B",
            "SET A -5",
            "READ B 100",
            "WRITE B 100",
        ] {
            assert_eq!(text.parse::<Instr>().unwrap().to_string(), text);
        }
        assert_eq!("add a b".parse::<Instr>().unwrap().to_string(), "ADD A B");
        for bad in [
            "",
            "ADD A",
            "ADD A B C",
            "JMP A B",
            "ADD A 1",
            "SET A x",
            "READ A -1",
            "MOV AA B",
        ] {
            assert!(bad.parse::<Instr>().is_err(), "{bad:?} parsed");
        }
        let m = Sequential::default();
        let run = |text: &str| text.parse::<Instr>().unwrap().apply(&m);
        run("SET A 7");
        run("SET B 2");
        assert_eq!(run("DIV A B"), (Target::Register('A'), 3));
        assert_eq!(run("DIV A C"), (Target::Register('A'), 3), "÷ 0 leaves A");
        assert_eq!(run("WRITE A 9"), (Target::Memory(9), 3));
        assert_eq!(run("READ C 9"), (Target::Register('C'), 3));
        assert_eq!(run("MUL C B"), (Target::Register('C'), 6));
        assert_eq!(run("SUB C A"), (Target::Register('C'), 3));
        assert_eq!(run("MOV D C"), (Target::Register('D'), 3));
        run(&format!("SET E {}", i64::MIN));
        run("SET F -1");
        assert_eq!(
            run("DIV E F"),
            (Target::Register('E'), i64::MIN),
            "wraps, no panic"
        );
    }

    #[test]
    fn a_replay_catches_a_wrong_order() {
        let m = Machine::new();
        let a = m.exec("SET A 1".parse().unwrap());
        let b = m.exec("ADD A A".parse().unwrap());
        let (regs, mem) = (m.snapshot().registers, m.memory());
        assert_eq!(replay_check(&m.log(), &regs, &mem), Ok(2));
        let swapped = [Executed { id: b.id, ..a }, Executed { id: a.id, ..b }];
        assert!(replay_check(&swapped, &regs, &mem).is_err());
    }
}
