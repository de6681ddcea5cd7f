//! `tollgate dev` and `tollgate check`: the README's run command starts a
//! whole deployment, a check against it is answered, Ctrl-C stops it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How often the test re-checks whether the process exited; it bounds how
/// late the exit is noticed, it synchronises nothing.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

fn tollgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

#[test]
fn dev_runs_an_origin_and_a_region_and_answers_checks() {
    let mut child = tollgate()
        .args(["dev", "--http-port", "0", "--check-port", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut endpoints = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.trim().strip_prefix("region check") {
            let endpoint = rest.split_whitespace().next().unwrap();
            endpoints.push(endpoint.to_string());
        }
        if line.contains("Ctrl-C") {
            break;
        }
    }
    assert_eq!(endpoints.len(), 3, "three region nodes are listed");
    for endpoint in &endpoints {
        let allowed = tollgate()
            .args([
                "check",
                "--endpoint",
                endpoint,
                "--account",
                "acme",
                "--subject",
                "alice",
            ])
            .args([
                "--feature",
                "export",
                "--ip",
                "192.0.2.10",
                "--output",
                "json",
            ])
            .output()
            .unwrap();
        assert_eq!(
            allowed.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&allowed.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&allowed.stdout).unwrap();
        assert_eq!(v["reason"], "ALLOW");
        assert!(v["answered_by"].as_str().unwrap().starts_with("eu-"));
    }
    let blocked = tollgate()
        .args([
            "check",
            "--endpoint",
            &endpoints[1],
            "--account",
            "acme",
            "--subject",
            "alice",
        ])
        .args(["--feature", "export", "--ip", "198.51.100.10"])
        .output()
        .unwrap();
    assert_eq!(blocked.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&blocked.stdout).starts_with("GEO_BLOCKED"));
    let invalid = tollgate()
        .args([
            "check",
            "--endpoint",
            &endpoints[0],
            "--account",
            "acme",
            "--feature",
            "export",
            "--ip",
            "nope",
        ])
        .output()
        .unwrap();
    assert_eq!(
        invalid.status.code(),
        Some(2),
        "an invalid request is invalid input"
    );

    let bench = tollgate()
        .args([
            "bench",
            "check",
            "--endpoint",
            &endpoints[0],
            "--endpoint",
            &endpoints[2],
        ])
        .args([
            "--duration-seconds",
            "1",
            "--warmup-seconds",
            "0",
            "--concurrency",
            "4",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        bench.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&bench.stdout).unwrap();
    assert!(v["checks"].as_u64().unwrap() > 0 && v["errors"] == 0, "{v}");
    assert!(v["p50_us"].as_u64().unwrap() <= v["p99_us"].as_u64().unwrap());

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "dev did not stop after Ctrl-C"
        );
        std::thread::sleep(POLL_INTERVAL);
    };
    assert_eq!(status.code(), Some(0));
}
