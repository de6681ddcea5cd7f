//! `tollgate serve`: a real origin process from a config file, its REST API
//! over HTTP, a clean exit on SIGTERM, and refusals of bad configs.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use tollgate_testkit::wait_until_blocking;

fn tollgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let path = dir.join("origin.toml");
    std::fs::write(
        &path,
        format!(
            "role = \"origin\"\nnode_id = 1\ndata_dir = \"{}\"\n{extra}\n[listen]\nraft = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nfeed = \"127.0.0.1:0\"\n[cluster]\nbootstrap = true\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn serve_runs_an_origin_from_a_config_file_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let mut child = tollgate()
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = lines.next().expect("a banner line").unwrap();
    let http = banner
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .expect("the banner names the http address")
        .to_string();
    let token_line = lines.next().expect("the token line").unwrap();
    assert!(token_line.contains("admin.token"), "{token_line}");
    let token = std::fs::read_to_string(dir.path().join("data/admin.token")).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let client = reqwest::Client::new();
        let health = client.get(format!("{http}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        let r = client
            .put(format!("{http}/v1/accounts/acme"))
            .bearer_auth(token.trim())
            .json(&serde_json::json!({"id": "acme", "name": "Acme"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    });

    // SIGTERM, then wait for a clean exit, bounded.
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_until_blocking(
        "serve to exit after SIGTERM",
        Duration::from_secs(20),
        || child.try_wait().unwrap(),
    )
    .unwrap();
    assert_eq!(status.code(), Some(0), "a clean shutdown exits 0");
}

#[test]
fn bad_configs_are_refused_before_anything_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, key) in [
        ("colour = \"blue\"", "colour"),
        (
            "[changefeed]\nretention_revisions = 0",
            "changefeed.retention_revisions",
        ),
        (
            "[storage]\ncache_capacity_bytes = 10",
            "storage.cache_capacity_bytes",
        ),
    ] {
        let config = write_config(dir.path(), extra);
        let out = tollgate()
            .args(["serve", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{extra}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "expected {key} in: {stderr}");
    }
    // A wrong type, a missing required value, a bad environment override,
    // and a port in use: each named, before (or instead of) serving.
    let wrong_type = write_config(dir.path(), "[changefeed]\nretention_revisions = \"many\"");
    let out = tollgate()
        .args(["serve", "--config", wrong_type.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("retention_revisions") && stderr.contains("invalid type"),
        "{stderr}"
    );
    let missing = dir.path().join("missing.toml");
    std::fs::write(
        &missing,
        "role = \"origin\"\nnode_id = 1\n[listen]\nraft = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    let out = tollgate()
        .args(["serve", "--config", missing.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("data_dir"), "{stderr}");
    let good = write_config(dir.path(), "");
    let out = tollgate()
        .args(["serve", "--check", "--config", good.to_str().unwrap()])
        .env("TOLLGATE_LISTEN_HTTP", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TOLLGATE_LISTEN_HTTP") && stderr.contains("http"),
        "the override is named: {stderr}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = tollgate()
        .args(["serve", "--config", good.to_str().unwrap()])
        .env("TOLLGATE_LISTEN_HTTP", format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("listen.http") && stderr.contains(&port.to_string()),
        "the port in use is named: {stderr}"
    );
    drop(taken);
    let zero_id = dir.path().join("zero.toml");
    std::fs::write(&zero_id, "role = \"origin\"\nnode_id = 0\ndata_dir = \"/tmp/x\"\n[listen]\nraft = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nfeed = \"127.0.0.1:0\"\n").unwrap();
    let out = tollgate()
        .args(["serve", "--config", zero_id.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("node_id"));
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/config/origin.example.toml"
    );
    let out = tollgate()
        .args(["serve", "--check", "--config", example])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the example config is valid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
