//! `tollgate serve`: a real origin process from a config file, with
//! certificates made by `tollgate ctl certs`, its REST API over TLS (and
//! refused in clear), a clean exit on SIGTERM, refusals of bad configs and
//! bad certificates, and plaintext only on purpose.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use tollgate_testkit::wait_until_blocking;

fn tollgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tollgate"))
}

/// Runs `tollgate ctl certs <args>`, asserting success.
fn certs(args: &[&str]) {
    let out = tollgate()
        .args(["ctl", "certs"])
        .args(args)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "ctl certs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA in `<dir>/tls` and origin node `node`'s certificate, made the way
/// an operator makes them; the `[tls]` section naming them.
fn tls_section(dir: &std::path::Path, node: u64) -> String {
    let tls = dir.join("tls");
    let tls_dir = tls.to_str().unwrap();
    if !tls.join("ca.pem").exists() {
        certs(&["init", "--out-dir", tls_dir, "--trust-domain", "serve.test"]);
    }
    let name = format!("origin-node-{node}");
    certs(&[
        "issue",
        "--ca-dir",
        tls_dir,
        "--origin-node",
        &node.to_string(),
        "--name",
        &name,
    ]);
    format!(
        "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        tls.join("ca.pem").display(),
        tls.join(format!("{name}.pem")).display(),
        tls.join(format!("{name}.key")).display()
    )
}

fn write_config(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    write_config_with(dir, extra, &tls_section(dir, 1))
}

fn write_config_with(dir: &std::path::Path, extra: &str, tls: &str) -> std::path::PathBuf {
    let path = dir.join("origin.toml");
    std::fs::write(
        &path,
        format!(
            "role = \"origin\"\nnode_id = 1\ndata_dir = \"{}\"\n{extra}\n[listen]\nraft = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\nfeed = \"127.0.0.1:0\"\n[cluster]\nbootstrap = true\n{tls}",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// An HTTP client trusting `<dir>/tls/ca.pem`.
fn https_client(dir: &std::path::Path) -> reqwest::Client {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let transport = tollgate_tls::Transport::Tls(
        tollgate_tls::Tls::client(Some(dir.join("tls/ca.pem")), None, None, now).unwrap(),
    );
    let config = transport
        .client_config(&tollgate_tls::Expect::HostName, tollgate_tls::Alpn::Http1)
        .unwrap()
        .unwrap();
    reqwest::Client::builder()
        .use_preconfigured_tls((*config).clone())
        .build()
        .unwrap()
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

    assert!(http.starts_with("https://"), "{banner}");

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        // In clear, the REST port answers nothing.
        let plain = http.replace("https://", "http://");
        assert!(
            reqwest::Client::new()
                .get(format!("{plain}/healthz"))
                .send()
                .await
                .is_err(),
            "plain HTTP to the TLS port"
        );
        let client = https_client(dir.path());
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
    // The example names the certificate files where an operator keeps
    // them; here they come from the environment, as in a container.
    let tls = dir.path().join("tls");
    let out = tollgate()
        .args(["serve", "--check", "--config", example])
        .env("TOLLGATE_TLS_CA", tls.join("ca.pem"))
        .env("TOLLGATE_TLS_CERT", tls.join("origin-node-1.pem"))
        .env("TOLLGATE_TLS_KEY", tls.join("origin-node-1.key"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "the example config is valid: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tls_is_required_checked_and_plaintext_only_on_purpose() {
    let dir = tempfile::tempdir().unwrap();
    let check = |config: &std::path::Path| {
        tollgate()
            .args(["serve", "--check", "--config", config.to_str().unwrap()])
            .output()
            .unwrap()
    };
    // No [tls] at all: refused, naming the choice to make.
    let none = write_config_with(dir.path(), "", "");
    let out = check(&none);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("tls") && stderr.contains("insecure_plaintext"),
        "{stderr}"
    );
    // A certificate for another node: `serve --check` refuses what
    // `serve` would refuse.
    let other = tls_section(dir.path(), 2);
    let wrong = write_config_with(dir.path(), "", &other);
    let out = check(&wrong);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("origin/node/2"), "{stderr}");
    // A certificate file that is not one.
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let bad = write_config_with(
        dir.path(),
        "",
        &format!(
            "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.path().join("tls/ca.pem").display(),
            garbage.display(),
            dir.path().join("tls/origin-node-2.key").display()
        ),
    );
    let out = check(&bad);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("garbage.pem"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The right one: valid, and says who the node is.
    let good = write_config(dir.path(), "");
    let out = check(&good);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("spiffe://serve.test/origin/node/1"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Plaintext on purpose: valid, with a warning, and served in clear.
    let plain = write_config_with(dir.path(), "", "[tls]\ninsecure_plaintext = true\n");
    let out = check(&plain);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("insecure_plaintext"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = tollgate()
        .args(["serve", "--config", plain.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = lines.next().expect("a banner line").unwrap();
    let http = banner
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http="))
        .expect("the banner names the http address")
        .to_string();
    assert!(http.starts_with("http://"), "{banner}");
    // The token line comes once the node is up and handles signals.
    let token_line = lines.next().expect("the token line").unwrap();
    assert!(token_line.contains("admin.token"), "{token_line}");
    let token = std::fs::read_to_string(dir.path().join("data/admin.token")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (health, status) = runtime.block_on(async {
        let health = reqwest::get(format!("{http}/healthz"))
            .await
            .unwrap()
            .status();
        let status: serde_json::Value = reqwest::Client::new()
            .get(format!("{http}/v1/status"))
            .bearer_auth(token.trim())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (health, status)
    });
    assert_eq!(health, 200);
    assert_eq!(status["tls"]["mode"], "insecure_plaintext", "{status}");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_until_blocking("serve to exit", Duration::from_secs(20), || {
        child.try_wait().unwrap()
    })
    .unwrap();
    assert_eq!(status.code(), Some(0));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("WARN") && stderr.contains("insecure_plaintext"),
        "the start logs a warning: {stderr}"
    );
}
