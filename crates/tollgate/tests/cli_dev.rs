//! `tollgate dev` and `tollgate ctl check`: the README's run command starts
//! a whole deployment (an origin and two regions) with TLS on every port,
//! on the ports `--base-port` lays out, lists it in endpoints.json, the
//! commands it prints exit as their comments say, a check against every
//! node is answered over TLS (and refused in clear), Ctrl-C stops it, and
//! a second start on the same data directory comes back with the same
//! ports and data, and no ERROR in the log. Ctrl-C while it starts stops
//! it at once; ports it cannot have are refused at once, by name.

mod common;

use common::{endpoints, error_lines, one_dev_at_a_time, tollgate, Dev};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// How long an orderly stop may take: every node within dev's shutdown
/// deadline (5 s, the nodes together), with room for a loaded machine.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `ctl check` of alice at acme exporting from `ip` at `endpoint`, as JSON.
fn check(data: &std::path::Path, endpoint: &str, ip: &str) -> Output {
    let credential = std::fs::read_to_string(data.join("app.credential")).unwrap();
    tollgate()
        .env("TOLLGATE_CREDENTIAL", credential.trim())
        .args(["ctl", "check", "--ca"])
        .arg(data.join("tls/ca.pem"))
        .args([
            "--endpoint",
            endpoint,
            "--account",
            "acme",
            "--subject",
            "alice",
        ])
        .args(["--feature", "export", "--ip", ip, "--output", "json"])
        .output()
        .unwrap()
}

/// The first node of region `name`'s check endpoint, from endpoints.json.
fn first_check(listed: &serde_json::Value, name: &str) -> String {
    listed["regions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap()["nodes"][0]["check"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Audit records the demo seeding wrote (actor `dev-seed`).
fn seeded_records(data: &std::path::Path, listed: &serde_json::Value) -> usize {
    let out = tollgate()
        .args(["ctl", "--output", "json", "--ca"])
        .arg(data.join("tls/ca.pem"))
        .args(["--origin", listed["origin"]["rest"].as_str().unwrap()])
        .arg("--api-key-file")
        .arg(data.join("admin.token"))
        .args(["audit", "tail", "--limit", "500"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["actor"] == "dev-seed")
        .count()
}

#[test]
fn log_levels_are_read_through_colours() {
    let log = "\u{1b}[2m2026-01-01T00:00:00Z\u{1b}[0m \u{1b}[31mERROR\u{1b}[0m \u{1b}[2mopenraft\u{1b}[0m: boom\n\
               2026-01-01T00:00:00Z  WARN tollgate: fine\nStopping (SIGINT).\n";
    assert_eq!(
        error_lines(log),
        vec!["2026-01-01T00:00:00Z ERROR openraft: boom".to_string()]
    );
}

#[test]
fn dev_runs_an_origin_and_two_regions_and_answers_checks() {
    let _one = one_dev_at_a_time();
    let data = tempfile::tempdir().unwrap();
    let base = common::free_base_port();
    let mut dev = Dev::start(data.path(), &["--base-port", &base.to_string()]);
    dev.wait_ready();
    let printed = dev.stdout();
    // What dev printed is also in endpoints.json.
    let listed = endpoints(data.path());
    let token = listed["origin"]["admin_api_key"].as_str().unwrap();
    assert!(printed.contains(token), "the admin API key is printed");
    let ca = listed["tls"]["ca"]
        .as_str()
        .expect("dev runs with TLS")
        .to_string();
    assert!(printed.contains(&ca), "the CA path is printed");
    assert_eq!(listed["tls"]["insecure_plaintext"], false);
    // Every port where --base-port puts it (`dev --help`), recorded.
    assert_eq!(
        listed["origin"]["rest"],
        format!("https://127.0.0.1:{}", base + 20)
    );
    assert_eq!(
        listed["origin"]["raft"],
        format!("https://127.0.0.1:{}", base + 22)
    );
    assert_eq!(
        first_check(&listed, "us"),
        format!("https://127.0.0.1:{}", base + 10)
    );
    let recorded: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.path().join("ports.json")).unwrap()).unwrap();
    assert_eq!(recorded, listed["ports"]);
    assert_eq!(
        recorded["regions"][0]["raft"],
        serde_json::json!([base + 3, base + 4, base + 5])
    );
    assert_eq!(recorded["regions"][1]["status"][2], base + 18);

    // Every command dev prints exits as its comment says: ours answer
    // (a check 0 allowed or 10 denied), curl fetches the key set over
    // verified TLS (where curl is installed; grpcurl rarely is).
    let samples = listed["try"].as_array().unwrap();
    assert!(samples.len() >= 5, "{samples:?}");
    for sample in samples {
        let command = sample["command"].as_str().unwrap();
        let about = sample["about"].as_str().unwrap();
        let want = sample["exit"].as_i64().unwrap() as i32;
        assert!(
            printed.contains(&format!("# {about}")) && printed.contains(command),
            "{command} and its comment are printed"
        );
        if want != 0 {
            assert!(
                about.contains(&format!("exit {want}")),
                "{about} names exit {want}"
            );
        }
        let words: Vec<&str> = command.split_whitespace().collect();
        let program = words[0];
        if program == "grpcurl"
            || (program == "curl" && Command::new("curl").arg("--version").output().is_err())
        {
            continue;
        }
        let out = Command::new(program).args(&words[1..]).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(want),
            "{command}\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
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
    // dev's application credential, from the file endpoints.json names.
    let credential_file = listed["origin"]["app_credential_file"].as_str().unwrap();
    let credential = std::fs::read_to_string(credential_file).unwrap();
    assert!(credential.starts_with("tgc_"), "{credential}");
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
    assert_eq!(status.status.code(), Some(0), "{}", text(&status.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(6), "{rows}");

    for (region, endpoint) in &endpoints {
        let allowed = check(data.path(), endpoint, "192.0.2.10");
        assert_eq!(allowed.status.code(), Some(0), "{}", text(&allowed.stderr));
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
        .args(["ctl", "check", "--endpoint", &endpoints[4].1])
        .args(["--account", "acme", "--subject", "alice"])
        .args(["--feature", "export", "--ip", "198.51.100.10"])
        .output()
        .unwrap();
    assert_eq!(blocked.status.code(), Some(10));
    assert!(
        text(&blocked.stdout).starts_with("DENIED  GEO_BLOCKED"),
        "{}",
        text(&blocked.stdout)
    );
    // One check command: `tollgate check` is a hidden alias of `ctl check`
    // that prints the same thing (the seconds since the region heard from
    // the origin and the revision aside: both may tick between the two, as
    // every region leader reports to the origin every few seconds, and each
    // report is a committed revision).
    let same_check = |program: &[&str]| {
        let out = tollgate()
            .env("TOLLGATE_CREDENTIAL", credential.trim())
            .env("TOLLGATE_CA", &ca)
            .args(program)
            .args([
                "--endpoint",
                &endpoints[4].1,
                "--account",
                "acme",
                "--subject",
            ])
            .args(["alice", "--feature", "export", "--ip", "198.51.100.10"])
            .args(["--output", "json"])
            .output()
            .unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["staleness_seconds"] = serde_json::Value::Null;
        assert!(v["revision"].as_u64().is_some(), "{v}");
        v["revision"] = serde_json::Value::Null;
        (out.status.code(), v)
    };
    assert_eq!(same_check(&["check"]), same_check(&["ctl", "check"]));
    let help = tollgate().arg("--help").output().unwrap();
    assert!(
        !text(&help.stdout).contains("\n  check "),
        "the alias is hidden: {}",
        text(&help.stdout)
    );
    let invalid = tollgate()
        .env("TOLLGATE_CREDENTIAL", credential.trim())
        .env("TOLLGATE_CA", &ca)
        .args(["ctl", "check", "--endpoint", &endpoints[0].1])
        .args(["--account", "acme", "--feature", "export", "--ip", "nope"])
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
        .args(["ctl", "check", "--timeout-seconds", "3", "--endpoint"])
        .arg(endpoints[0].1.replace("https://", "http://"))
        .args(["--account", "acme", "--feature", "export"])
        .output()
        .unwrap();
    assert_eq!(
        plaintext.status.code(),
        Some(1),
        "a plaintext check of a TLS port"
    );
    let untrusted = tollgate()
        .args(["ctl", "check", "--endpoint", &endpoints[0].1])
        .args(["--account", "acme", "--feature", "export"])
        .output()
        .unwrap();
    assert_eq!(
        untrusted.status.code(),
        Some(1),
        "a client without the dev CA"
    );
    assert!(
        text(&untrusted.stderr).contains("certificate"),
        "{}",
        text(&untrusted.stderr)
    );

    let bench = tollgate()
        .env("TOLLGATE_CREDENTIAL", credential.trim())
        .env("TOLLGATE_CA", &ca)
        .args(["bench", "check", "--endpoint", &endpoints[0].1])
        .args(["--endpoint", &endpoints[2].1, "--duration-seconds", "1"])
        .args([
            "--warmup-seconds",
            "0",
            "--concurrency",
            "4",
            "--output",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(bench.status.code(), Some(0), "{}", text(&bench.stderr));
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
    assert_eq!(named.status.code(), Some(0), "{}", text(&named.stderr));
    let v: serde_json::Value = serde_json::from_slice(&named.stdout).unwrap();
    let reasons = v["reasons"].as_object().unwrap();
    assert!(
        reasons.keys().all(|r| r.ends_with("ALLOW")) && !reasons.is_empty(),
        "every check of alice allowed: {v}"
    );

    dev.signal("INT");
    let status = dev.wait_exit(STOP_DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", dev.stderr());
    assert!(
        data.path().join("origin").is_dir(),
        "--data-dir keeps the data after a clean stop"
    );
}

/// The newcomer: from the README to a running `tollgate dev`,
/// stopped and started again on the same data, meets no error and no
/// ERROR line; the second start keeps the ports, the keys and the data,
/// and seeds nothing again.
#[test]
fn dev_starts_again_on_its_data_with_the_same_ports_and_answers() {
    let _one = one_dev_at_a_time();
    let data = tempfile::tempdir().unwrap();
    let base = common::free_base_port();

    // First start: new data, ports from --base-port.
    let mut first = Dev::start(data.path(), &["--base-port", &base.to_string()]);
    first.wait_ready();
    let listed = endpoints(data.path());
    let eu = first_check(&listed, "eu");
    let before = check(data.path(), &eu, "192.0.2.10");
    assert_eq!(before.status.code(), Some(0), "{}", text(&before.stderr));
    let before: serde_json::Value = serde_json::from_slice(&before.stdout).unwrap();
    assert_eq!(before["reason"], "ALLOW", "{before}");
    let seeded = seeded_records(data.path(), &listed);
    assert!(seeded > 0, "the demo data was seeded");
    first.signal("INT");
    let status = first.wait_exit(STOP_DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", first.stderr());

    // Second start: no port flag; the recorded layout and the data.
    let mut second = Dev::start(data.path(), &[]);
    second.wait_ready();
    let again = endpoints(data.path());
    for key in ["ports", "origin"] {
        assert_eq!(again[key], listed[key], "{key} kept");
    }
    assert_eq!(first_check(&again, "eu"), eu);
    let after = check(data.path(), &eu, "192.0.2.10");
    assert_eq!(after.status.code(), Some(0), "{}", text(&after.stderr));
    let after: serde_json::Value = serde_json::from_slice(&after.stdout).unwrap();
    for field in ["allowed", "reason", "entitlement", "seats"] {
        assert_eq!(after[field], before[field], "{field}: {after} / {before}");
    }
    assert!(after["revision"].as_u64() >= before["revision"].as_u64());
    assert_eq!(
        seeded_records(data.path(), &again),
        seeded,
        "the demo data is seeded once"
    );
    second.signal("TERM");
    let status = second.wait_exit(STOP_DEADLINE);
    assert_eq!(status.code(), Some(0), "{}", second.stderr());

    let errors: Vec<String> = [("first start", &first), ("second start", &second)]
        .iter()
        .flat_map(|(run, dev)| {
            dev.error_lines()
                .into_iter()
                .map(move |l| format!("{run}: {l}"))
        })
        .collect();
    assert!(
        errors.is_empty(),
        "ERROR lines in the log:\n{}",
        errors.join("\n")
    );
}

/// Ctrl-C while dev starts (here: as soon as its ports are bound) stops
/// it at once, with the shell's code for SIGINT, and what it left starts
/// again.
#[test]
fn ctrl_c_while_dev_starts_stops_it_at_once() {
    let _one = one_dev_at_a_time();
    let data = tempfile::tempdir().unwrap();
    let base = common::free_base_port();
    let mut dev = Dev::start(data.path(), &["--base-port", &base.to_string()]);
    // ports.json is written once every port is bound, before any node
    // starts.
    tollgate_testkit::wait_until_blocking("dev to bind its ports", common::READY_DEADLINE, || {
        data.path()
            .join("ports.json")
            .exists()
            .then_some(())
            .ok_or_else(|| common::last_lines(&dev.stderr(), 2))
    })
    .unwrap();
    let asked = Instant::now();
    dev.signal("INT");
    let status = dev.wait_exit(STOP_DEADLINE);
    let took = asked.elapsed();
    assert!(
        !dev.stdout().contains("Ctrl-C stops everything."),
        "dev was ready before the signal landed; this test needs it still starting"
    );
    assert_eq!(status.code(), Some(130), "{}", dev.stderr());
    assert!(
        dev.stderr()
            .contains("Stopped by SIGINT before the deployment was ready."),
        "{}",
        dev.stderr()
    );
    // Bounded by the nodes' shutdown deadline (5 s), not a 30 s wait.
    assert!(took < Duration::from_secs(15), "stopping took {took:?}");

    let mut again = Dev::start(data.path(), &[]);
    again.wait_ready();
    let eu = first_check(&endpoints(data.path()), "eu");
    assert_eq!(
        eu,
        format!("https://127.0.0.1:{base}"),
        "the ports are the ones recorded"
    );
    let answer = check(data.path(), &eu, "192.0.2.10");
    assert_eq!(answer.status.code(), Some(0), "{}", text(&answer.stderr));
    again.signal("INT");
    assert_eq!(again.wait_exit(STOP_DEADLINE).code(), Some(0));
}

/// Ports the data was not made with, or that are taken, are refused at
/// once, naming the port and the flag; nothing waits for a timeout.
#[test]
fn ports_that_cannot_work_are_refused_at_once_by_name() {
    // Data recorded with base 7300 (written as dev writes it).
    let data = tempfile::tempdir().unwrap();
    let ports = serde_json::json!({
        "base": 7300,
        "origin": {"rest": 8080, "feed": 7321, "raft": 7322},
        "regions": [
            {"name": "eu", "check": [7300, 7301, 7302], "raft": [7303, 7304, 7305], "status": [7306, 7307, 7308]},
            {"name": "us", "check": [7310, 7311, 7312], "raft": [7313, 7314, 7315], "status": [7316, 7317, 7318]},
        ],
    });
    std::fs::write(data.path().join("ports.json"), ports.to_string()).unwrap();
    let asked = Instant::now();
    let moved = tollgate()
        .args(["dev", "--base-port", "20000", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    assert_eq!(moved.status.code(), Some(2), "{}", text(&moved.stderr));
    let error = text(&moved.stderr);
    for part in [
        "--base-port 20000",
        "created with --base-port 7300",
        "7303-7305 (eu), 7313-7315 (us), 7322 (origin)",
        "new --data-dir",
    ] {
        assert!(error.contains(part), "{part:?} in {error}");
    }
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "refused before anything started"
    );

    // A port of the layout taken by someone else.
    let base = common::free_base_port();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", base + 4)).unwrap();
    let fresh = tempfile::tempdir().unwrap();
    let busy = tollgate()
        .args(["dev", "--base-port", &base.to_string(), "--data-dir"])
        .arg(fresh.path())
        .output()
        .unwrap();
    assert_eq!(busy.status.code(), Some(1), "{}", text(&busy.stderr));
    let error = text(&busy.stderr);
    assert!(
        error.contains(&format!(
            "port {} (region eu node 2 Raft) is in use",
            base + 4
        )) && error.contains("--base-port"),
        "{error}"
    );
    assert!(
        !fresh.path().join("ports.json").exists(),
        "nothing recorded for a start that bound nothing"
    );
}
