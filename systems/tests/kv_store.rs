//! `kv-store`, started as a user would and driven over loopback HTTP.
mod common;

use common::{agent, base_url, call, Running};
use serde_json::{json, Value};

fn start(data: &std::path::Path) -> (Running, String) {
    let (server, line) = Running::start(
        env!("CARGO_BIN_EXE_kv-store"),
        &[
            "--port",
            "0",
            "--data",
            data.to_str().unwrap(),
            "--save-every",
            "1",
        ],
        "listening on",
    );
    (server, base_url(&line))
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[test]
fn original_requests_rest_forms_errors_and_persistence() {
    let dir = std::env::temp_dir().join(format!("kv-store-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("people.json");
    let _ = std::fs::remove_file(&data);
    let (mut server, url) = start(&data);
    let http = agent();

    // The original system's two requests, exactly.
    let (status, body) = call(
        http.put(&format!("{url}/person/update")),
        Some(r#"{"id":100,"name":"mob"}"#),
    );
    assert_eq!(
        (status, json_of(&body)),
        (200, json!({"id": 100, "name": "mob"}))
    );
    let (status, body) = call(
        http.get(&format!("{url}/person/get")),
        Some(r#"{"id":100}"#),
    );
    assert_eq!(
        (status, json_of(&body)),
        (200, json!({"id": 100, "name": "mob"}))
    );

    // RESTful forms.
    let (status, _) = call(
        http.put(&format!("{url}/person/7")),
        Some(r#"{"name":"ada"}"#),
    );
    assert_eq!(status, 201, "created");
    let (status, _) = call(
        http.put(&format!("{url}/person/7")),
        Some(r#"{"id":7,"name":"ada l"}"#),
    );
    assert_eq!(status, 200, "replaced");
    let (status, body) = call(http.get(&format!("{url}/person/7")), None);
    assert_eq!(
        (status, json_of(&body)),
        (200, json!({"id": 7, "name": "ada l"}))
    );
    let (status, body) = call(http.get(&format!("{url}/person")), None);
    assert_eq!(
        (status, json_of(&body)),
        (
            200,
            json!([{"id": 7, "name": "ada l"}, {"id": 100, "name": "mob"}])
        )
    );

    // Bad input: JSON errors with 400; unknown ids: 404.
    let bad = [
        (
            http.put(&format!("{url}/person/update")),
            Some(r#"{"id":1,"name":"#),
        ), // malformed
        (
            http.put(&format!("{url}/person/update")),
            Some(r#"{"id":1}"#),
        ), // missing field
        (
            http.put(&format!("{url}/person/update")),
            Some(r#"{"id":"x","name":"a"}"#),
        ), // wrong type
        (http.get(&format!("{url}/person/get")), Some(r#"{"id":-1}"#)), // not a u64
        (http.get(&format!("{url}/person/abc")), None),                 // bad path id
        (
            http.put(&format!("{url}/person/8")),
            Some(r#"{"id":9,"name":"x"}"#),
        ), // id mismatch
    ];
    for (request, body) in bad {
        let (status, text) = call(request, body);
        assert_eq!(status, 400, "{body:?}: {text}");
        assert!(json_of(&text)["error"].is_string(), "{text}");
    }
    let huge = format!(r#"{{"id":1,"name":"{}"}}"#, "x".repeat(100_000));
    let (status, text) = call(http.put(&format!("{url}/person/update")), Some(&huge));
    assert_eq!(status, 400, "body too large: {text}");
    assert!(json_of(&text)["error"].is_string());
    for (request, body) in [
        (http.get(&format!("{url}/person/get")), Some(r#"{"id":5}"#)),
        (http.get(&format!("{url}/person/5")), None),
        (http.delete(&format!("{url}/person/5")), None),
    ] {
        let (status, text) = call(request, body);
        assert_eq!(
            (status, json_of(&text)),
            (404, json!({"error": "no person with id 5"}))
        );
    }
    // Unknown routes and wrong methods: JSON errors too, as registers-server's.
    let (status, text) = call(http.get(&format!("{url}/nope")), None);
    assert_eq!(
        (status, json_of(&text)),
        (404, json!({"error": "no route for /nope"}))
    );
    let (status, text) = call(http.post(&format!("{url}/person/5")), Some("{}"));
    assert_eq!(
        (status, json_of(&text)),
        (405, json!({"error": "POST is not allowed on /person/5"}))
    );
    let (status, _) = call(http.delete(&format!("{url}/person/7")), None);
    assert_eq!(status, 200);
    let (status, _) = call(http.get(&format!("{url}/person/7")), None);
    assert_eq!(status, 404);

    // Graceful shutdown saves atomically; a restart loads the file.
    server.terminate();
    assert!(server.rest().iter().any(|l| l.contains("saved 1 people")));
    let saved: Value = json_of(&std::fs::read_to_string(&data).unwrap());
    assert_eq!(saved, json!([{"id": 100, "name": "mob"}]));
    assert!(
        !dir.join("people.json.tmp").exists(),
        "the temp file was renamed"
    );
    let (_server, url) = start(&data);
    let (status, body) = call(agent().get(&format!("{url}/person/100")), None);
    assert_eq!(
        (status, json_of(&body)),
        (200, json!({"id": 100, "name": "mob"}))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn periodic_saves_happen_while_running() {
    let dir = std::env::temp_dir().join(format!("kv-store-periodic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("people.json");
    let _ = std::fs::remove_file(&data);
    let (_server, url) = start(&data);
    let (status, _) = call(
        agent().put(&format!("{url}/person/3")),
        Some(r#"{"name":"c"}"#),
    );
    assert_eq!(status, 201);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(&data) {
            if json_of(&text) == json!([{"id": 3, "name": "c"}]) {
                break;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no periodic save");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_load_generator_compares_both_backends() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kv-load"))
        .args([
            "--seconds",
            "0.3",
            "--rounds",
            "1",
            "--connections",
            "4",
            "--keys",
            "50",
        ])
        .output()
        .expect("run kv-load");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    for backend in ["RouterTable r1:", "RwLock<HashMap> r1:"] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(backend))
            .expect(backend);
        assert!(line.contains(" 0 errors)"), "{line}");
    }
    assert!(stdout.contains("median: RouterTable"), "{stdout}");
}

/// Issue 18, item 1: a body over the limit was answered while the client was
/// still sending it, so the client's send could fail with a reset (`EPIPE`)
/// before it read the 400 (2 runs in 10 of the test above failed so). The
/// server now reads and discards such a body (up to a bound) first, so every
/// attempt gets the 400.
#[test]
fn every_oversized_body_gets_its_400_not_a_reset() {
    let dir = std::env::temp_dir().join(format!("kv-store-oversized-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_server, url) = start(&dir.join("people.json"));
    let http = agent();
    let huge = format!(r#"{{"id":1,"name":"{}"}}"#, "x".repeat(500_000));
    for attempt in 0..20 {
        let (status, text) = call(http.put(&format!("{url}/person/update")), Some(&huge));
        assert_eq!(status, 400, "attempt {attempt}: {text}");
        assert!(json_of(&text)["error"]
            .as_str()
            .unwrap()
            .contains("larger than the limit"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
