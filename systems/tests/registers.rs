//! `registers` and `registers-server`, started as a user would.
mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;

use common::{agent, base_url, call, Running};
use shardlock_systems::registers::{replay_check, Executed, Instr, Snapshot};

#[test]
fn the_local_machine_replays_and_hands_every_string_over_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_registers"))
        .args(["--writers", "4", "--readers", "2", "--instructions", "300"])
        .output()
        .expect("run registers");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("replay check: OK (1200 instructions"),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l.starts_with("reader-1 snapshot #")));
    assert!(stdout.lines().any(|l| l.starts_with("writer-4 #")));
    // The producer/consumer part: 100 strings of 4-10 letters, each printed
    // once by the consumer thread that took it.
    let taken: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("consumer-1 took ") || l.starts_with("consumer-2 took "))
        .collect();
    assert_eq!(taken.len(), 100);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for line in &taken {
        let item = line.split('"').nth(1).unwrap();
        assert!((4..=10).contains(&item.len()) && item.bytes().all(|b| b.is_ascii_lowercase()));
        *counts.entry(item).or_default() += 1;
    }
    assert!(stdout.contains("producer/consumer: 100 produced, 100 consumed, each exactly once"));
}

#[test]
fn the_server_serves_concurrent_clients_and_its_log_replays() {
    let (mut server, line) = Running::start(
        env!("CARGO_BIN_EXE_registers-server"),
        &["--port", "0"],
        "listening on",
    );
    let url = base_url(&line);
    let http = agent();

    // Malformed instructions: 400 with a JSON error.
    for (body, json) in [
        ("JMP A B", false),
        ("ADD A", false),
        ("SET A 1.5", false),
        (r#"{"instruction": "ADD A 7"}"#, true),
        (r#"{"op": "ADD"}"#, true),
        ("{not json", true),
    ] {
        let request = http.post(&format!("{url}/exec"));
        let request = if json {
            request.set("Content-Type", "application/json")
        } else {
            request
        };
        let response = request.send_string(body);
        let (status, text) = match response {
            Err(ureq::Error::Status(s, r)) => (s, r.into_string().unwrap()),
            other => panic!("{body:?}: expected 400, got {other:?}"),
        };
        assert_eq!(status, 400, "{body:?}");
        assert!(text.contains("\"error\""), "{text}");
    }
    let (status, _) = call(http.get(&format!("{url}/memory/x")), None);
    assert_eq!(status, 400);
    // Unknown routes and wrong methods: JSON errors, as kv-store's.
    for (request, want) in [
        (
            http.get(&format!("{url}/nope")),
            (404, "no route for /nope"),
        ),
        (
            http.get(&format!("{url}/exec")),
            (405, "GET is not allowed on /exec"),
        ),
    ] {
        let (status, text) = call(request, None);
        let json: serde_json::Value = serde_json::from_str(&text).expect(&text);
        assert_eq!((status, json["error"].as_str().unwrap()), want);
    }

    // Concurrent clients, text and JSON forms.
    std::thread::scope(|s| {
        for c in 0..8u64 {
            let url = url.clone();
            s.spawn(move || {
                let http = agent();
                let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(c);
                for i in 0..40 {
                    let instr = Instr::random(&mut rng, 5, 6);
                    let response = if i % 2 == 0 {
                        http.post(&format!("{url}/exec"))
                            .send_string(&instr.to_string())
                    } else {
                        http.post(&format!("{url}/exec"))
                            .send_json(serde_json::json!({ "instruction": instr.to_string() }))
                    };
                    let executed: Executed = response.unwrap().into_json().unwrap();
                    assert_eq!(executed.instruction, instr);
                }
            });
        }
    });

    let log: Vec<Executed> = http
        .get(&format!("{url}/log"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    assert_eq!(log.len(), 320);
    let snapshot: Snapshot = http
        .get(&format!("{url}/registers"))
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let mut memory = BTreeMap::new();
    for addr in 0..6u32 {
        let v: serde_json::Value = http
            .get(&format!("{url}/memory/{addr}"))
            .call()
            .unwrap()
            .into_json()
            .unwrap();
        assert_eq!(v["address"], addr);
        let value = v["value"].as_i64().unwrap();
        if value != 0 {
            memory.insert(addr, value);
        }
    }
    assert_eq!(replay_check(&log, &snapshot.registers, &memory), Ok(320));
    // The event log is printed.
    server.wait_for("exec #", std::time::Duration::from_secs(10));
    server.terminate();
}
