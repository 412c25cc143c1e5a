//! `car-telemetry`, run for a few seconds as a user would.
use std::process::Command;

#[test]
fn runs_logs_every_reading_raises_speed_and_stops_cleanly() {
    let log = std::env::temp_dir().join(format!("car-telemetry-{}.log", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let out = Command::new(env!("CARGO_BIN_EXE_car-telemetry"))
        .args([
            "--run-for",
            "3",
            "--tick-ms",
            "50",
            "--print-every-ms",
            "500",
        ])
        .args(["--raise-every-ms", "400", "--speed", "50", "--log"])
        .arg(&log)
        .output()
        .expect("run car-telemetry");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{stdout}");
    let printed = stdout
        .lines()
        .filter(|l| l.starts_with("speed ") && l.contains(" km/h at "))
        .count();
    assert!(
        printed >= 3,
        "the printer printed {printed} times:\n{stdout}"
    );

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 10, "only {} log lines", lines.len());
    let mut speeds = Vec::new();
    for line in &lines {
        // <date>: <speed>, <location>
        let (date, rest) = line.split_once(": ").unwrap_or_else(|| panic!("{line}"));
        humantime::parse_rfc3339(date).unwrap_or_else(|e| panic!("{date}: {e}"));
        let (speed, location) = rest.split_once(", ").unwrap();
        speeds.push(speed.parse::<u32>().unwrap());
        assert!(
            location.ends_with(" E") && location.contains(" N "),
            "{location}"
        );
    }
    assert!(
        speeds.windows(2).all(|w| w[0] <= w[1]),
        "speed went down: {speeds:?}"
    );
    assert_eq!(speeds[0], 50);
    let last = *speeds.last().unwrap();
    assert!(last > 50, "speed never rose: {speeds:?}");
    let summary = stdout.lines().last().unwrap();
    assert_eq!(
        summary,
        format!(
            "car-telemetry stopped: {} readings logged, speed 50 -> {last} km/h",
            lines.len()
        )
    );
    let _ = std::fs::remove_file(&log);
}
