//! `tollgate eval` end to end: the real binary, its output and exit codes.

use std::process::{Command, Output};

fn tollgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .output()
        .expect("the tollgate binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// 2026-11-27T23:21:02Z, so the demo data's dates give fixed answers.
const NOW: &str = "1795821662";

#[test]
fn demo_data_allows_and_denies_with_meaningful_exit_codes() {
    let o = tollgate(&[
        "eval",
        "--now",
        NOW,
        "--account",
        "acme",
        "--subject",
        "alice",
        "--feature",
        "export",
        "--continent",
        "EU",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("ALLOW"), "{}", stdout(&o));
    assert!(stdout(&o).contains("max_resolution=4k"), "{}", stdout(&o));

    let o = tollgate(&[
        "eval",
        "--now",
        NOW,
        "--account",
        "acme",
        "--subject",
        "alice",
        "--feature",
        "export",
        "--continent",
        "NA",
    ]);
    assert_eq!(o.status.code(), Some(10), "a denial exits 10");
    assert!(stdout(&o).starts_with("GEO_BLOCKED"), "{}", stdout(&o));

    let globex_in_grace = "1767312000"; // 2026-01-02: one day after valid_until, inside 30 days of grace
    let o = tollgate(&[
        "eval",
        "--now",
        globex_in_grace,
        "--account",
        "globex",
        "--feature",
        "export",
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).starts_with("IN_GRACE"), "{}", stdout(&o));
}

#[test]
fn json_output_carries_the_whole_decision() {
    let o = tollgate(&[
        "eval",
        "--now",
        NOW,
        "--account",
        "acme",
        "--subject",
        "alice",
        "--feature",
        "render",
        "--continent",
        "EU",
        "--consumed",
        "1499",
        "--consume",
        "2",
        "--output",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(10), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("valid JSON");
    assert_eq!(v["reason"], "USAGE_CAP_REACHED");
    assert_eq!(v["allowed"], false);
    assert_eq!(v["limit"], 1500, "pro's 1000 plus the additive pack's 500");
    assert_eq!(v["remaining"], 1);
    assert_eq!(v["upgrade_hint"]["target"]["addon"], "render-pack");
    assert!(v["explanation"].as_str().unwrap().contains("1500"));
}

#[test]
fn floating_seats_and_staleness_flags() {
    let holders: Vec<String> = (1..=5)
        .map(|i| format!("--seat-held-by=user-{i}"))
        .collect();
    let mut args = vec![
        "eval",
        "--now",
        NOW,
        "--account",
        "initech",
        "--subject",
        "peter",
        "--feature",
        "export",
    ];
    args.extend(holders.iter().map(String::as_str));
    let o = tollgate(&args);
    assert_eq!(o.status.code(), Some(10));
    assert!(stdout(&o).starts_with("SEAT_LIMIT"), "{}", stdout(&o));

    let o = tollgate(&[
        "eval",
        "--now",
        NOW,
        "--account",
        "acme",
        "--subject",
        "alice",
        "--feature",
        "export",
        "--continent",
        "EU",
        "--stale-seconds",
        "300000",
    ]);
    assert!(stdout(&o).starts_with("STALE_DATA"), "{}", stdout(&o));
    let o = tollgate(&[
        "eval",
        "--now",
        NOW,
        "--account",
        "initech",
        "--subject",
        "peter",
        "--feature",
        "export",
        "--stale-seconds",
        "300000",
    ]);
    assert!(
        stdout(&o).starts_with("ALLOW"),
        "initech's policy keeps allowing: {}",
        stdout(&o)
    );
}

#[test]
fn bad_input_is_refused_with_the_culprit_named() {
    let o = tollgate(&[
        "eval",
        "--account",
        "no such account!",
        "--feature",
        "export",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--account"), "{}", stderr(&o));

    let o = tollgate(&[
        "eval",
        "--account",
        "acme",
        "--feature",
        "export",
        "--country",
        "Germany",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--country") && stderr(&o).contains("alpha-2"),
        "{}",
        stderr(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    let malformed = dir.path().join("malformed.json");
    std::fs::write(&malformed, "{\"accounts\": [").unwrap();
    let o = tollgate(&[
        "eval",
        "--data",
        malformed.to_str().unwrap(),
        "--account",
        "acme",
        "--feature",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("not a valid data set"),
        "{}",
        stderr(&o)
    );

    let dangling = dir.path().join("dangling.json");
    std::fs::write(
        &dangling,
        r#"{"accounts":[{"id":"acme","name":"Acme"}],
            "entitlements":[{"id":"bad-1","account":"acme","grant":{"plan":"ghost"},"valid_from":0}]}"#,
    )
    .unwrap();
    let o = tollgate(&[
        "eval",
        "--data",
        dangling.to_str().unwrap(),
        "--account",
        "acme",
        "--feature",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("entitlements bad-1") && stderr(&o).contains("unknown plan"),
        "{}",
        stderr(&o)
    );

    let o = tollgate(&[
        "eval",
        "--data",
        "/nonexistent/data.json",
        "--account",
        "acme",
        "--feature",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/nonexistent/data.json"),
        "{}",
        stderr(&o)
    );
}
