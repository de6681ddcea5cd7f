//! `tollgate dev` and `tollgate check`: the README's run command starts a
//! whole deployment (an origin and two regions) with TLS on every port,
//! lists it in endpoints.json, the commands it prints work as printed, a
//! check against every node is answered over TLS (and refused in clear),
//! Ctrl-C stops it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use tollgate_testkit::wait_until_blocking;

fn tollgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

#[test]
fn dev_runs_an_origin_and_two_regions_and_answers_checks() {
    let data = tempfile::tempdir().unwrap();
    let mut child = tollgate_testkit::KillOnDrop(
        tollgate()
            .args(["dev", "--http-port", "0", "--check-port", "0", "--data-dir"])
            .arg(data.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut printed = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("Ctrl-C") {
            break;
        }
    }
    // What dev printed is also in endpoints.json.
    let listed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.path().join("endpoints.json")).unwrap())
            .unwrap();
    let token = listed["origin"]["admin_api_key"].as_str().unwrap();
    assert!(printed.contains(token), "the admin API key is printed");
    let ca = listed["tls"]["ca"]
        .as_str()
        .expect("dev runs with TLS")
        .to_string();
    assert!(printed.contains(&ca), "the CA path is printed");
    assert_eq!(listed["tls"]["insecure_plaintext"], false);
    // Every command dev prints works as printed: ours answer (a check
    // exits 0 allowed or 10 denied), curl fetches the key set over
    // verified TLS (where curl is installed; grpcurl rarely is).
    let commands = listed["try"].as_array().unwrap();
    assert!(commands.len() >= 5, "{commands:?}");
    for command in commands {
        let command = command.as_str().unwrap();
        let words: Vec<&str> = command.split_whitespace().collect();
        let program = words[0];
        if program == "grpcurl"
            || (program == "curl" && Command::new("curl").arg("--version").output().is_err())
        {
            continue;
        }
        let out = Command::new(program).args(&words[1..]).output().unwrap();
        assert!(
            matches!(out.status.code(), Some(0) | Some(10)),
            "{command}: {:?}\n{}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if program == "curl" {
            let keys: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(!keys["keys"].as_array().unwrap().is_empty(), "{keys}");
        }
    }
    let regions = listed["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 2, "two regions");
    let mut endpoints = Vec::new();
    for region in regions {
        let nodes = region["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 3, "three nodes in {region}");
        for node in nodes {
            let check = node["check"].as_str().unwrap().to_string();
            assert!(printed.contains(&check), "{check} is printed");
            assert!(check.starts_with("https://"), "{check}");
            endpoints.push((region["name"].as_str().unwrap().to_string(), check));
        }
    }
    // The operator's client against the demo: a check explained, and the
    // status of every node.
    // dev's application credential, from the file endpoints.json names.
    let credential_file = listed["origin"]["app_credential_file"].as_str().unwrap();
    let credential = std::fs::read_to_string(credential_file).unwrap();
    assert!(credential.starts_with("tgc_"), "{credential}");
    let ctl_check = tollgate()
        .args(["ctl", "--ca", &ca, "check", "--endpoint", &endpoints[3].1])
        .env("TOLLGATE_CREDENTIAL", credential.trim())
        .args([
            "--account",
            "acme",
            "--subject",
            "alice",
            "--feature",
            "export",
        ])
        .args(["--ip", "192.0.2.10", "--output", "json"])
        .output()
        .unwrap();
    assert_eq!(
        ctl_check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ctl_check.stderr)
    );
    let mut status = tollgate();
    status.args(["ctl", "--ca", &ca, "status", "--output", "json"]);
    for region in regions {
        for node in region["nodes"].as_array().unwrap() {
            let url = node["status"]
                .as_str()
                .unwrap()
                .trim_end_matches("/v1/status");
            status.args(["--node", url]);
        }
    }
    let status = status.output().unwrap();
    assert_eq!(
        status.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(6), "{rows}");

    for (region, endpoint) in &endpoints {
        let allowed = tollgate()
            .env("TOLLGATE_CA", &ca)
            .env("TOLLGATE_CREDENTIAL", credential.trim())
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
        assert!(v["answered_by"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{region}-")));
    }
    let blocked = tollgate()
        .env("TOLLGATE_CREDENTIAL", credential.trim())
        .env("TOLLGATE_CA", &ca)
        .args([
            "check",
            "--endpoint",
            &endpoints[4].1,
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
        .env("TOLLGATE_CREDENTIAL", credential.trim())
        .env("TOLLGATE_CA", &ca)
        .args([
            "check",
            "--endpoint",
            &endpoints[0].1,
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
    // The check port speaks only TLS: a plaintext client is refused, and
    // a client that does not trust the dev CA is told why.
    let plaintext = tollgate()
        .args([
            "check",
            "--endpoint",
            &endpoints[0].1.replace("https://", "http://"),
            "--account",
            "acme",
            "--feature",
            "export",
            "--timeout-ms",
            "3000",
        ])
        .output()
        .unwrap();
    assert_eq!(
        plaintext.status.code(),
        Some(1),
        "a plaintext check of a TLS port"
    );
    let untrusted = tollgate()
        .args([
            "check",
            "--endpoint",
            &endpoints[0].1,
            "--account",
            "acme",
            "--feature",
            "export",
        ])
        .output()
        .unwrap();
    assert_eq!(
        untrusted.status.code(),
        Some(1),
        "a client without the dev CA"
    );
    assert!(
        String::from_utf8_lossy(&untrusted.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&untrusted.stderr)
    );

    let bench = tollgate()
        .env("TOLLGATE_CREDENTIAL", credential.trim())
        .env("TOLLGATE_CA", &ca)
        .args([
            "bench",
            "check",
            "--endpoint",
            &endpoints[0].1,
            "--endpoint",
            &endpoints[2].1,
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

    // The README's example check, as load: acme's named seat is alice's.
    let named = tollgate()
        .env("TOLLGATE_CA", &ca)
        .env("TOLLGATE_CREDENTIAL", credential.trim())
        .args(["bench", "check", "--endpoint", &endpoints[0].1])
        .args([
            "--account",
            "acme",
            "--subject",
            "alice",
            "--feature",
            "export",
        ])
        .args(["--ip", "192.0.2.10", "--duration-seconds", "1"])
        .args([
            "--warmup-seconds",
            "0",
            "--concurrency",
            "2",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(
        named.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&named.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&named.stdout).unwrap();
    let reasons = v["reasons"].as_object().unwrap();
    assert!(
        reasons.keys().all(|r| r.ends_with("ALLOW")) && !reasons.is_empty(),
        "every check of alice allowed: {v}"
    );

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_until_blocking("dev to stop after Ctrl-C", Duration::from_secs(30), || {
        child.try_wait().unwrap()
    })
    .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        data.path().join("origin").is_dir(),
        "--data-dir keeps the data after a clean stop"
    );
}
