//! `tollgate serve` for a region node: a real process following an
//! in-process origin over mutual TLS (certificates from `tollgate ctl
//! certs`), answering `tollgate ctl check` over TLS, exiting 0 on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_origin_node::{OriginConfig, OriginListeners, OriginNode};
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

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn a_region_node_from_a_config_file_follows_the_origin_and_answers() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let tls_dir = tls.to_str().unwrap();
    certs(&[
        "init",
        "--out-dir",
        tls_dir,
        "--trust-domain",
        "region.test",
    ]);
    certs(&["issue", "--ca-dir", tls_dir, "--origin-node", "1"]);
    certs(&[
        "issue", "--ca-dir", tls_dir, "--region", "region", "--node", "1",
    ]);
    let mut origin_config = OriginConfig::new(1, dir.path().join("origin"));
    origin_config.raft.transport = tollgate_tls::Transport::Tls(
        tollgate_tls::Tls::load(
            tollgate_tls::TlsFiles {
                ca: tls.join("ca.pem"),
                cert: Some(tls.join("origin-node-1.pem")),
                key: Some(tls.join("origin-node-1.key")),
            },
            Some(tollgate_tls::Subject::OriginNode(1)),
            now(),
        )
        .unwrap(),
    );
    let (origin, token) = runtime.block_on(async {
        let bind = || TcpListener::bind("127.0.0.1:0");
        let origin = OriginNode::start(
            origin_config,
            OriginListeners {
                raft: bind().await.unwrap().into(),
                http: bind().await.unwrap().into(),
                feed: bind().await.unwrap().into(),
            },
        )
        .await
        .unwrap();
        origin
            .raft()
            .initialize(&[(1, origin.raft().addr().to_string())])
            .await
            .unwrap();
        origin
            .raft()
            .wait_until(Duration::from_secs(20), "leader", |m| {
                m.current_leader == Some(1)
            })
            .await
            .unwrap();
        origin.wait_for_keys(Duration::from_secs(20)).await.unwrap();
        let token = origin
            .bootstrap_admin_key(&dir.path().join("admin.token"))
            .await
            .unwrap()
            .unwrap();
        (origin, token)
    });
    let keys_path = dir.path().join("origin-keys.public.json");
    std::fs::write(
        &keys_path,
        serde_json::to_vec(&origin.public_keys().unwrap()).unwrap(),
    )
    .unwrap();
    let config = dir.path().join("region.toml");
    std::fs::write(
        &config,
        format!(
            "role = \"region\"\nnode_id = 1\nname = \"test-1\"\ndata_dir = \"{}\"\n[listen]\nraft = \"127.0.0.1:0\"\ngrpc = \"127.0.0.1:0\"\n[cluster]\nbootstrap = true\n[origin]\nfeed = \"https://{}\"\npublic_keys_path = \"{}\"\n[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
            dir.path().join("region").display(),
            origin.feed_addr(),
            keys_path.display(),
            tls.join("ca.pem").display(),
            tls.join("region-region-node-1.pem").display(),
            tls.join("region-region-node-1.key").display()
        ),
    )
    .unwrap();
    let mut child = tollgate_testkit::KillOnDrop(
        tollgate()
            .args(["serve", "--config", config.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let banner = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let grpc = banner
        .split_whitespace()
        .find_map(|w| w.strip_prefix("grpc="))
        .expect("the banner names the check endpoint")
        .to_string();

    assert!(grpc.starts_with("https://"), "{banner}");

    let (revision, credential) = runtime.block_on(async {
        let transport = tollgate_tls::Transport::Tls(
            tollgate_tls::Tls::client(Some(tls.join("ca.pem")), None, None, now()).unwrap(),
        );
        let config = transport
            .client_config(&tollgate_tls::Expect::HostName, tollgate_tls::Alpn::Http1)
            .unwrap()
            .unwrap();
        let http = reqwest::Client::builder()
            .use_preconfigured_tls((*config).clone())
            .build()
            .unwrap();
        let base = format!("https://{}", origin.http_addr());
        for (path, body) in [
            ("/v1/products/studio", serde_json::json!({"id": "studio", "name": "Studio"})),
            ("/v1/features/export", serde_json::json!({"id": "export", "product": "studio", "name": "Export", "kind": "boolean"})),
            ("/v1/accounts/acme", serde_json::json!({"id": "acme", "name": "Acme"})),
        ] {
            let r = http.put(format!("{base}{path}")).bearer_auth(&token).json(&body).send().await.unwrap();
            assert!(r.status().is_success());
        }
        let r: serde_json::Value = http
            .post(format!("{base}/v1/entitlements"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"id": "e1", "account": "acme", "grant": {"feature": {"feature": "export"}}, "valid_from": 1_700_000_000}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let credential: serde_json::Value = http
            .post(format!("{base}/v1/credentials"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": "cli", "accounts": ["acme"], "products": "*", "verbs": ["check"]}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            r["revision"].as_u64().unwrap().max(credential["revision"].as_u64().unwrap()),
            credential["token"].as_str().unwrap().to_string(),
        )
    });
    // The node authenticates a caller before it waits for a revision, so
    // until it applied the credential the check is refused: retried until
    // it answers.
    let out = wait_until_blocking(
        "the node to know the credential and answer",
        Duration::from_secs(30),
        || {
            let out = tollgate()
                .env("TOLLGATE_CREDENTIAL", &credential)
                .args([
                    "ctl",
                    "check",
                    "--ca",
                    tls.join("ca.pem").to_str().unwrap(),
                    "--endpoint",
                    &grpc,
                    "--account",
                    "acme",
                    "--feature",
                    "export",
                ])
                .args([
                    "--at-least-revision",
                    &revision.to_string(),
                    "--output",
                    "json",
                ])
                .output()
                .unwrap();
            if out.status.code() == Some(0) {
                Ok(out)
            } else {
                Err(format!(
                    "exit {:?}: {}",
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        },
    )
    .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["reason"], "ALLOW");
    assert_eq!(v["answered_by"], "test-1");

    // A revision not coming: the node answers at the client's deadline.
    let out = tollgate()
        .env("TOLLGATE_CREDENTIAL", &credential)
        .args([
            "ctl",
            "check",
            "--ca",
            tls.join("ca.pem").to_str().unwrap(),
            "--endpoint",
            &grpc,
            "--account",
            "acme",
            "--feature",
            "export",
        ])
        .args([
            "--at-least-revision",
            &(revision + 1_000).to_string(),
            "--timeout-seconds",
            "2",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("REVISION_NOT_APPLIED") && stderr.contains("was not applied"),
        "the node's own refusal, not the client's timeout: {stderr}"
    );

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
    assert_eq!(status.code(), Some(0));
    runtime.block_on(origin.shutdown()).unwrap();
}

#[test]
fn region_configs_are_checked_as_a_whole() {
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/config/region.example.toml"
    );
    // The example's certificate files, from the environment.
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let tls_dir = tls.to_str().unwrap();
    certs(&[
        "init",
        "--out-dir",
        tls_dir,
        "--trust-domain",
        "region.test",
    ]);
    certs(&[
        "issue", "--ca-dir", tls_dir, "--region", "region", "--node", "1", "--name", "node",
    ]);
    // The example's geo database, from the environment too: `serve
    // --check` loads it as `serve` would.
    let city = dir.path().join("GeoLite2-City.mmdb");
    std::fs::write(&city, tollgate_geo::fixtures::demo_city().unwrap()).unwrap();
    let out = tollgate()
        .args(["serve", "--check", "--config", example])
        .env("TOLLGATE_TLS_CA", tls.join("ca.pem"))
        .env("TOLLGATE_TLS_CERT", tls.join("node.pem"))
        .env("TOLLGATE_TLS_KEY", tls.join("node.key"))
        .env("TOLLGATE_GEO_LOCATION_PATH", &city)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("geo: Tollgate-Demo-City"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let path = dir.path().join("bad.toml");
    for (text, key) in [
        ("role = \"region\"\nnode_id = 1\ndata_dir = \"/tmp/x\"\n[listen]\nraft = \"127.0.0.1:0\"\ngrpc = \"127.0.0.1:0\"\n", "origin"),
        ("role = \"region\"\nnode_id = 1\ndata_dir = \"/tmp/x\"\n[listen]\nraft = \"127.0.0.1:0\"\n[origin]\nfeed = \"http://x:1\"\npublic_keys_path = \"k\"\n", "listen.grpc"),
        ("role = \"region\"\nnode_id = 1\ndata_dir = \"/tmp/x\"\n[listen]\nraft = \"127.0.0.1:0\"\ngrpc = \"127.0.0.1:0\"\n[origin]\nfeed = \"ftp://x\"\npublic_keys_path = \"k\"\n", "origin.feed"),
        ("role = \"origin\"\nnode_id = 1\ndata_dir = \"/tmp/x\"\n[listen]\nraft = \"127.0.0.1:0\"\nhttp = \"127.0.0.1:0\"\n", "listen.feed"),
        ("role = \"region\"\nnode_id = 1\ndata_dir = \"/tmp/x\"\n[listen]\nraft = \"127.0.0.1:0\"\ngrpc = \"127.0.0.1:0\"\n[origin]\nfeed = \"http://x:1\"\npublic_keys_path = \"k\"\n[checks]\ncredentials = \"sometimes\"\n", "credentials"),
        ("role = \"region\"\nnode_id = 1\ndata_dir = \"/tmp/x\"\n[listen]\nraft = \"127.0.0.1:0\"\ngrpc = \"127.0.0.1:0\"\n[origin]\nfeed = \"http://x:1\"\npublic_keys_path = \"k\"\n[raft]\nsnapshot_logs_since_last = 5\n", "raft.snapshot_logs_since_last"),
        ("role = \"region\"\nnode_id = 1\ndata_dir = \"/tmp/x\"\n[listen]\nraft = \"127.0.0.1:0\"\ngrpc = \"127.0.0.1:0\"\n[origin]\nfeed = \"http://x:1\"\npublic_keys_path = \"k\"\n[raft]\nsnapshot_log_bytes = 4096\n", "raft.snapshot_log_bytes"),
        ("role = \"region\"\nnode_id = 1\ndata_dir = \"/tmp/x\"\n[listen]\nraft = \"127.0.0.1:0\"\ngrpc = \"127.0.0.1:0\"\n[origin]\nfeed = \"http://x:1\"\npublic_keys_path = \"k\"\n[raft]\nreceived_snapshot_bytes = 0\n", "raft.received_snapshot_bytes"),
        ("role = \"region\"\nnode_id = 1\ndata_dir = \"/tmp/x\"\n[listen]\nraft = \"127.0.0.1:0\"\ngrpc = \"127.0.0.1:0\"\n[origin]\nfeed = \"http://x:1\"\npublic_keys_path = \"k\"\n[raft]\nheartbeat_interval_ms = 100\nelection_timeout_ms_min = 150\n", "raft.election_timeout_ms_min"),
    ] {
        // Each row is wrong in one key; TLS is not the point here.
        std::fs::write(&path, format!("{text}[tls]\ninsecure_plaintext = true\n")).unwrap();
        let out = tollgate().args(["serve", "--check", "--config", path.to_str().unwrap()]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(key), "expected {key}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// A region config naming `location_path`, with the origin's keys beside
/// it (only `serve` reads them).
fn region_config_with_geo(
    dir: &std::path::Path,
    location_path: &std::path::Path,
) -> std::path::PathBuf {
    let path = dir.join("geo-region.toml");
    std::fs::write(
        &path,
        format!(
            "role = \"region\"\nnode_id = 1\ndata_dir = \"{}\"\n[listen]\nraft = \"127.0.0.1:0\"\ngrpc = \"127.0.0.1:0\"\n[origin]\nfeed = \"http://127.0.0.1:1\"\npublic_keys_path = \"{}\"\n[geo]\nlocation_path = \"{}\"\n[tls]\ninsecure_plaintext = true\n",
            dir.join("region").display(),
            dir.join("origin-keys.public.json").display(),
            location_path.display(),
        ),
    )
    .unwrap();
    path
}

#[test]
fn serve_check_refuses_the_geo_databases_serve_would_refuse() {
    use tollgate_geo::fixtures::{self, FixturePlace};
    let dir = tempfile::tempdir().unwrap();
    let keys = tollgate_signing::KeyRing::generate(tollgate_model::UnixSeconds(now()))
        .unwrap()
        .public_set();
    std::fs::write(
        dir.path().join("origin-keys.public.json"),
        serde_json::to_vec(&keys).unwrap(),
    )
    .unwrap();
    let check = |config: &std::path::Path| {
        tollgate()
            .args(["serve", "--check", "--config", config.to_str().unwrap()])
            .output()
            .unwrap()
    };

    // A good database: valid, and the check says which database it loaded.
    let good = dir.path().join("good.mmdb");
    std::fs::write(&good, fixtures::demo_city().unwrap()).unwrap();
    let out = check(&region_config_with_geo(dir.path(), &good));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("valid") && stdout.contains("geo: Tollgate-Demo-City"),
        "{stdout}"
    );

    // Databases a region node refuses at start: another vendor's flat
    // layout with a type that passes for a Country database, one that
    // covers no public address, a file that is not a database, no file.
    let flat: Vec<(&str, serde_json::Value)> = ["8.8.8.0/24", "81.2.69.0/24"]
        .into_iter()
        .map(|n| (n, serde_json::json!({"country_code": "SE"})))
        .collect();
    let nowhere = FixturePlace {
        country: "SE",
        continent: "EU",
        subdivisions: &["E"],
        city: None,
    };
    // (file name, its bytes or no file, what the refusal must say)
    type Case = (&'static str, Option<Vec<u8>>, &'static [&'static str]);
    let cases: [Case; 4] = [
        (
            "flat",
            Some(fixtures::records_db("CC0-Country", 1_700_000_000, None, &flat).unwrap()),
            &[
                "records have no country.iso_code",
                "found keys: country_code",
            ],
        ),
        (
            "nowhere",
            Some(
                fixtures::location_db("GeoIP2-City", 1_700_000_000, &[("192.0.2.0/24", nowhere)])
                    .unwrap(),
            ),
            &["resolves none of them"],
        ),
        (
            "junk",
            Some(b"not a database".to_vec()),
            &["is not a valid MaxMind DB"],
        ),
        ("missing", None, &["could not read geo database"]),
    ];
    for (name, bytes, says) in cases {
        let path = dir.path().join(format!("{name}.mmdb"));
        if let Some(bytes) = bytes {
            std::fs::write(&path, bytes).unwrap();
        }
        let config = region_config_with_geo(dir.path(), &path);
        let out = check(&config);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(
            stderr.contains("geo: loading the databases"),
            "{name}: {stderr}"
        );
        for fragment in says {
            assert!(
                stderr.contains(fragment),
                "{name}: {fragment:?} in {stderr}"
            );
        }

        // `serve` refuses it too, before it binds a port, with the same
        // message.
        let out = tollgate()
            .args(["serve", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        let served = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{name}: {served}");
        let reason = |text: &str| {
            text.find("geo: loading the databases")
                .map(|at| text[at..].trim().to_owned())
        };
        assert_eq!(reason(&served), reason(&stderr), "{name}");
    }
}
