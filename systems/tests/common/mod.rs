//! Starting a system's binary and talking to it, for the integration tests.
#![allow(dead_code)] // each test binary uses part of this

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running binary, killed if the test ends without stopping it.
pub struct Running {
    pub child: Child,
    /// Stdout lines after the first, as they come.
    pub lines: mpsc::Receiver<String>,
}

impl Running {
    /// Starts `bin` with `args`, waits (bounded) for a stdout line containing
    /// `ready`, and returns it with that line.
    pub fn start(bin: &str, args: &[&str], ready: &str) -> (Running, String) {
        let mut child = Command::new(bin)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the binary");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut running = Running { child, lines: rx };
        let first = running.wait_for(ready, Duration::from_secs(30));
        (running, first)
    }

    /// The next stdout line containing `needle` (panics after `timeout`).
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("no line containing {needle:?} within {timeout:?}"),
            }
        }
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit.
    pub fn terminate(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "exited with {status}");
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the process printed after what was consumed (after exit).
    pub fn rest(&mut self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `http://host:port` a "listening on" line names.
pub fn base_url(line: &str) -> String {
    let at = line.find("http://").expect("an address");
    line[at..].trim().to_owned()
}

/// Status and body of a request, error statuses included.
pub fn call(request: ureq::Request, body: Option<&str>) -> (u16, String) {
    let result = match body {
        Some(body) => request
            .set("Content-Type", "application/json")
            .send_string(body),
        None => request.call(),
    };
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = response.status();
    let mut text = String::new();
    response.into_reader().read_to_string(&mut text).unwrap();
    (status, text)
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build()
}
