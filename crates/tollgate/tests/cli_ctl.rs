//! `tollgate ctl`: the real binary against a real in-process origin (seeded
//! with the demo data) and, where a command needs one, a region node with
//! the demo geography. Every shipped command runs here, with its error
//! paths and exit codes.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_model::{Dataset, UnixSeconds};
use tollgate_origin::{Op, OriginCommand, OriginResponse};
use tollgate_origin_node::{OriginConfig, OriginListeners, OriginNode};
use tollgate_region_node::{RegionConfig, RegionListeners, RegionNode};
use tollgate_testkit::wait_until_blocking;

/// The longest any awaited condition may take before the test fails.
const WAIT_MAX: Duration = Duration::from_secs(30);

const DEMO_DATA: &str = include_str!("../data/demo.json");

fn tollgate() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    // The developer's environment must not steer the commands under test.
    for var in [
        "TOLLGATE_ORIGIN",
        "TOLLGATE_API_KEY",
        "TOLLGATE_CHECK_ENDPOINT",
        "TOLLGATE_LOG",
        "TOLLGATE_CA",
        "TOLLGATE_CERT",
        "TOLLGATE_KEY",
    ] {
        command.env_remove(var);
    }
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The output, after checking the exit code (the message shows both streams).
#[track_caller]
fn expect(out: Output, code: i32) -> (String, String) {
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

#[track_caller]
fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// One refusal of `tollgate ctl`: the command line, and the exit code and
/// the stderr text it must answer with.
struct Refusal {
    name: &'static str,
    /// Everything after `tollgate ctl`.
    args: Vec<String>,
    code: i32,
    /// Text the stderr must hold, every piece of it; empty when the row
    /// asserts the exit code only.
    stderr: &'static [&'static str],
}

/// `args` as owned strings, for a row that names its own origin and key
/// (or needs none).
fn args(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// Runs every row, then fails once, listing each row that answered other
/// than expected with what it expected and what it got.
#[track_caller]
fn expect_refusals(rows: &[Refusal]) {
    let mut failures = Vec::new();
    for row in rows {
        let out = tollgate().arg("ctl").args(&row.args).output().unwrap();
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        let missing: Vec<&str> = row
            .stderr
            .iter()
            .copied()
            .filter(|piece| !stderr.contains(piece))
            .collect();
        if out.status.code() != Some(row.code) || !missing.is_empty() {
            let code = out
                .status
                .code()
                .map_or("none (killed by a signal)".to_string(), |c| c.to_string());
            failures.push(format!(
                "{}: tollgate ctl {}\n  expected: exit {}, stderr holding {:?}\n  got:      exit {}, stderr missing {:?}\n  stdout: {}\n  stderr: {}",
                row.name,
                row.args.join(" "),
                row.code,
                row.stderr,
                code,
                missing,
                stdout.trim(),
                stderr.trim(),
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} refusals answered otherwise:\n\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n\n")
    );
}

/// An origin seeded with the demo data, and optionally region nodes, every
/// port over TLS from a CA of its own; `ctl` runs with `--ca` and an
/// operator's certificate, as an operator would.
struct Deployment {
    runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    origin: Option<OriginNode>,
    region: Vec<RegionNode>,
    token_path: PathBuf,
    /// An application credential for every account, product and verb.
    credential: String,
}

/// The deployment's trust domain.
const TRUST_DOMAIN: &str = "cli.tollgate";

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// The certificate files of `subject` under `dir/tls` (the CA made on
/// first use), for 127.0.0.1.
fn tls_files(dir: &std::path::Path, subject: tollgate_tls::Subject) -> tollgate_tls::TlsFiles {
    use tollgate_tls::ca;
    let tls = dir.join("tls");
    let now = now_secs();
    let ca_pem = ca::read_ca(&tls, "ca").unwrap_or_else(|_| {
        let pem = ca::create_ca(TRUST_DOMAIN, now - 3600, now + 86_400).unwrap();
        ca::write(&tls, "ca", &pem).unwrap();
        pem
    });
    let name = tollgate_tls::Identity::new(TRUST_DOMAIN, subject.clone())
        .unwrap()
        .to_string()
        .replace(['/', ':', '.'], "_");
    let pem = ca::issue(
        &ca_pem,
        &ca::Request {
            identity: tollgate_tls::Identity::new(TRUST_DOMAIN, subject).unwrap(),
            dns: vec!["localhost".into()],
            ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
            not_before: now - 3600,
            not_after: now + 86_400,
        },
    )
    .unwrap();
    let (cert, key) = ca::write(&tls, &name, &pem).unwrap();
    tollgate_tls::TlsFiles {
        ca: tls.join("ca.pem"),
        cert: Some(cert),
        key: Some(key),
    }
}

/// A node's transport: mutual TLS as `subject`.
fn node_tls(dir: &std::path::Path, subject: tollgate_tls::Subject) -> tollgate_tls::Transport {
    let files = tls_files(dir, subject.clone());
    tollgate_tls::Transport::Tls(tollgate_tls::Tls::load(files, Some(subject), now_secs()).unwrap())
}

impl Deployment {
    fn start() -> Deployment {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let token_path = dir.path().join("admin.token");
        let mut origin_config = OriginConfig::new(1, dir.path().join("origin"));
        origin_config.raft.transport = node_tls(dir.path(), tollgate_tls::Subject::OriginNode(1));
        // The operator's certificate, for `ctl`.
        tls_files(dir.path(), tollgate_tls::Subject::Operator("cli".into()));
        let origin = runtime.block_on(async {
            let origin = OriginNode::start(
                origin_config,
                OriginListeners {
                    raft: loopback().await.into(),
                    http: loopback().await.into(),
                    feed: loopback().await.into(),
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
                .wait_until(WAIT_MAX, "origin leader", |m| m.current_leader == Some(1))
                .await
                .unwrap();
            origin.wait_for_keys(WAIT_MAX).await.unwrap();
            origin
                .bootstrap_admin_key(&token_path)
                .await
                .unwrap()
                .expect("a fresh origin issues a key");
            let demo: Dataset = serde_json::from_str(DEMO_DATA).unwrap();
            for m in demo.to_mutations() {
                let command = OriginCommand {
                    actor: "test-seed".into(),
                    at: UnixSeconds(0),
                    reason: None,
                    op: Op::seed(m),
                };
                let outcome = origin.raft().write(command).await.unwrap().response;
                assert!(
                    !matches!(outcome, OriginResponse::Rejected(_)),
                    "{outcome:?}"
                );
            }
            // The application credential `ctl` presents on check ports.
            let (credential, record) = tollgate_api::app_credentials::issue_credential(
                tollgate_api::app_credentials::NewCredential::everything("cli tests"),
                UnixSeconds(0),
            )
            .unwrap();
            let command = OriginCommand {
                actor: "test-seed".into(),
                at: UnixSeconds(0),
                reason: None,
                op: Op::PutCredential(record),
            };
            let outcome = origin.raft().write(command).await.unwrap().response;
            assert!(
                !matches!(outcome, OriginResponse::Rejected(_)),
                "{outcome:?}"
            );
            (origin, credential)
        });
        let (origin, credential) = origin;
        Deployment {
            runtime,
            dir,
            origin: Some(origin),
            region: Vec::new(),
            token_path,
            credential,
        }
    }

    fn origin(&self) -> &OriginNode {
        self.origin.as_ref().expect("the origin runs")
    }

    fn origin_url(&self) -> String {
        format!("https://{}", self.origin().http_addr())
    }

    /// The CA bundle the deployment's certificates chain to.
    fn ca(&self) -> String {
        self.dir.path().join("tls/ca.pem").display().to_string()
    }

    /// The operator certificate and key `ctl` presents.
    fn operator(&self) -> (String, String) {
        let base = self
            .dir
            .path()
            .join("tls/spiffe___cli_tollgate_operator_cli");
        (
            format!("{}.pem", base.display()),
            format!("{}.key", base.display()),
        )
    }

    /// An HTTP client trusting the deployment's CA.
    fn http_client(&self) -> reqwest::Client {
        let transport = tollgate_tls::Transport::Tls(
            tollgate_tls::Tls::client(Some(self.ca().into()), None, None, now_secs()).unwrap(),
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

    /// Starts region node `id`; the first one initialises the region's
    /// cluster, later ones wait to be added.
    fn start_region_node(&mut self, id: u64) -> &RegionNode {
        let origin = self.origin();
        let mut config = RegionConfig::new(
            id,
            self.dir.path().join(format!("region-{id}")),
            format!("https://{}", origin.feed_addr()),
            origin.public_keys().unwrap(),
        );
        config.raft.transport = node_tls(
            self.dir.path(),
            tollgate_tls::Subject::RegionNode {
                region: "eu".into(),
                node: id,
            },
        );
        config.name = format!("eu-{id}");
        config.region = "eu".into();
        // So `ctl check --country` can be tested; `--ip` is resolved as ever.
        config.trust_proxy_location = true;
        let node = self.runtime.block_on(async {
            let geo = Arc::new(tollgate_geo::fixtures::demo_databases().unwrap());
            let node = RegionNode::start(
                config,
                RegionListeners {
                    raft: loopback().await.into(),
                    grpc: loopback().await.into(),
                    http: Some(loopback().await.into()),
                },
                Some(geo),
            )
            .await
            .unwrap();
            if id == 1 {
                node.raft()
                    .initialize(&[(1, node.raft().addr().to_string())])
                    .await
                    .unwrap();
            }
            node
        });
        self.region.push(node);
        if id == 1 {
            self.wait_region_caught_up();
        }
        self.region.last().unwrap()
    }

    fn head(&self) -> u64 {
        self.origin().head_revision()
    }

    fn wait_region_caught_up(&self) {
        let head = self.head();
        wait_until_blocking(
            "the region to catch up with the origin",
            WAIT_MAX,
            || match self.region[0].applied_revision() {
                applied if applied >= head => Ok(()),
                applied => Err(format!("applied revision {applied} of {head}")),
            },
        )
        .unwrap();
    }

    fn grpc(&self) -> String {
        format!("https://{}", self.region[0].grpc_addr())
    }

    fn region_http(&self) -> String {
        format!("https://{}", self.region[0].http_addr().unwrap())
    }

    /// `tollgate ctl <args> --origin <origin> --api-key-file <admin token>`.
    fn ctl(&self, args: &[&str]) -> Output {
        tollgate()
            .arg("ctl")
            .args(self.admin_args(args))
            .output()
            .unwrap()
    }

    /// `args` as [`Deployment::ctl`] runs them: at this origin, as the admin.
    fn admin_args(&self, args: &[&str]) -> Vec<String> {
        let mut full = self::args(args);
        full.extend(["--origin".to_string(), self.origin_url()]);
        full.push("--api-key-file".to_string());
        full.push(self.token_path.to_str().unwrap().to_string());
        let (cert, key) = self.operator();
        full.extend(["--ca".to_string(), self.ca()]);
        full.extend(["--cert".to_string(), cert, "--key".to_string(), key]);
        full.extend(["--credential".to_string(), self.credential.clone()]);
        full
    }

    fn write_file(&self, name: &str, contents: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_string()
    }

    /// An authenticated GET straight to the origin, bypassing `ctl`.
    fn origin_get(&self, path: &str) -> (u16, serde_json::Value) {
        let token = std::fs::read_to_string(&self.token_path).unwrap();
        let url = format!("{}{path}", self.origin_url());
        let http = self.http_client();
        self.runtime.block_on(async {
            let r = http
                .get(url)
                .bearer_auth(token.trim())
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json().await.unwrap_or(serde_json::Value::Null))
        })
    }

    fn origin_post(&self, path: &str, body: serde_json::Value) -> u16 {
        let token = std::fs::read_to_string(&self.token_path).unwrap();
        let url = format!("{}{path}", self.origin_url());
        let http = self.http_client();
        self.runtime.block_on(async {
            http.post(url)
                .bearer_auth(token.trim())
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    }

    fn stop(mut self) {
        let region = std::mem::take(&mut self.region);
        let origin = self.origin.take();
        self.runtime.block_on(async {
            for node in region {
                node.shutdown().await.unwrap();
            }
            if let Some(origin) = origin {
                origin.shutdown().await.unwrap();
            }
        });
    }
}

async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// An address nothing listens on.
fn dead_address() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("https://{addr}")
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

#[test]
fn status_and_check_explain_a_region() {
    init_tracing();
    let mut d = Deployment::start();
    d.start_region_node(1);
    let head = d.head();

    tracing::info!("status: one row per node, from its /v1/status, exit 0 when all answer");
    let (stdout, _) = expect(d.ctl(&["status", "--node", &d.region_http()]), 0);
    let header = stdout.lines().next().unwrap();
    for column in [
        "NODE",
        "ROLE",
        "TERM",
        "LEADER",
        "APPLIED",
        "LAG_REV",
        "LAG_S",
        "STALE_S",
        "GEO",
        "GEO_BUILD",
    ] {
        assert!(header.contains(column), "{stdout}");
    }
    let row = stdout.lines().nth(1).unwrap();
    assert!(row.contains("eu-1") && row.contains("leader"), "{stdout}");
    assert!(
        row.contains("Tollgate-Demo-City") && row.contains("2026-01-01"),
        "{stdout}"
    );
    let (stdout, _) = expect(
        d.ctl(&["status", "--node", &d.region_http(), "--output", "json"]),
        0,
    );
    let rows = json(&stdout);
    let status = &rows[0]["status"];
    // At least: the region's own report to the origin may have committed
    // a revision since.
    assert!(
        status["applied_revision"]
            .as_u64()
            .is_some_and(|a| a >= head),
        "{status}"
    );
    assert_eq!(status["lag_revisions"], 0);
    assert_eq!(rows[0]["lag_seconds"], 0);
    assert_eq!(
        status["geo"]["location"]["database_type"],
        "Tollgate-Demo-City"
    );

    tracing::info!("status: an unreachable node is a row saying so, and exit 1");
    let dead = dead_address();
    let (stdout, stderr) = expect(
        d.ctl(&["status", "--node", &d.region_http(), "--node", &dead]),
        1,
    );
    assert!(
        stdout.contains("UNREACHABLE") && stdout.contains(&dead),
        "{stdout}"
    );
    assert!(
        stdout.contains("eu-1"),
        "the reachable node is still shown: {stdout}"
    );
    assert!(stderr.contains("1 of 2 nodes unreachable"), "{stderr}");

    tracing::info!("check: allowed, explained, exit 0");
    let grpc = d.grpc();
    let (stdout, _) = expect(
        d.ctl(&[
            "check",
            "--endpoint",
            &grpc,
            "--account",
            "acme",
            "--subject",
            "alice",
            "--feature",
            "export",
            "--ip",
            "192.0.2.10",
        ]),
        0,
    );
    assert!(
        stdout.starts_with("ALLOWED  ALLOW  acme / alice / export"),
        "{stdout}"
    );
    assert!(
        stdout.contains("acme-pro") && stdout.contains("answered by") && stdout.contains("eu-1"),
        "{stdout}"
    );
    assert!(stdout.contains("max_resolution=4k"), "{stdout}");

    tracing::info!("check: denied with its reason code, exit 10");
    let (stdout, _) = expect(
        d.ctl(&[
            "check",
            "--endpoint",
            &grpc,
            "--account",
            "acme",
            "--subject",
            "alice",
            "--feature",
            "export",
            "--ip",
            "198.51.100.10",
            "--output",
            "json",
        ]),
        10,
    );
    let v = json(&stdout);
    assert_eq!(v["allowed"], false);
    assert_eq!(v["reason"], "GEO_BLOCKED");
    assert_eq!(v["entitlement"], "acme-pro");
    assert_eq!(v["answered_by"], "eu-1");
    assert!(v["staleness_seconds"].is_u64(), "{v}");

    tracing::info!("check: a denial names what the vendor sells that would change it");
    let (stdout, _) = expect(
        d.ctl(&[
            "check",
            "--endpoint",
            &grpc,
            "--account",
            "globex",
            "--subject",
            "hank",
            "--feature",
            "sso",
        ]),
        10,
    );
    assert!(
        stdout.starts_with("DENIED  NOT_ENTITLED  globex / hank / sso"),
        "{stdout}"
    );
    assert!(
        stdout.contains("upgrade hint  add-on sso-addon"),
        "{stdout}"
    );

    tracing::info!("check --consume: what remains of the cap");
    let (stdout, _) = expect(
        d.ctl(&[
            "check",
            "--endpoint",
            &grpc,
            "--account",
            "hooli",
            "--feature",
            "render",
            "--consume",
            "5",
            "--output",
            "json",
        ]),
        0,
    );
    let v = json(&stdout);
    assert_eq!(v["limit"], 1_000_000_000u64);
    assert_eq!(v["remaining"], 1_000_000_000u64 - 5);
    for _ in 0..2 {
        let (stdout, _) = expect(
            d.ctl(&[
                "check",
                "--endpoint",
                &grpc,
                "--account",
                "hooli",
                "--feature",
                "render",
                "--consume",
                "5",
                "--idempotency-key",
                "retry-1",
                "--output",
                "json",
            ]),
            0,
        );
        assert_eq!(
            json(&stdout)["remaining"],
            1_000_000_000u64 - 10,
            "a retry consumes once"
        );
    }

    tracing::info!("check --country: a location resolved by a trusted proxy");
    for (country, continent, code) in [("DE", "EU", 0), ("US", "NA", 10)] {
        expect(
            d.ctl(&[
                "check",
                "--endpoint",
                &grpc,
                "--account",
                "acme",
                "--subject",
                "alice",
                "--feature",
                "export",
                "--country",
                country,
                "--continent",
                continent,
            ]),
            code,
        );
    }

    tracing::info!("check --at-least-revision reads an origin write made with ctl");
    expect(
        d.ctl(&["accounts", "put", "acme", "--status", "suspended"]),
        0,
    );
    let revision = d.head().to_string();
    let (stdout, _) = expect(
        d.ctl(&[
            "check",
            "--endpoint",
            &grpc,
            "--account",
            "acme",
            "--subject",
            "alice",
            "--feature",
            "export",
            "--ip",
            "192.0.2.10",
            "--at-least-revision",
            &revision,
            "--output",
            "json",
        ]),
        10,
    );
    assert_eq!(json(&stdout)["reason"], "SUSPENDED");

    tracing::info!("refusals: bad input is exit 2, an unreachable node exit 1");
    expect_refusals(&[
        Refusal {
            name: "status of a node that is not a URL",
            args: d.admin_args(&["status", "--node", "127.0.0.1:1"]),
            code: 2,
            stderr: &["https://host:port"],
        },
        Refusal {
            name: "check with an invalid account id",
            args: d.admin_args(&[
                "check",
                "--endpoint",
                &grpc,
                "--account",
                "bad id!",
                "--feature",
                "export",
            ]),
            code: 2,
            stderr: &["error:"],
        },
        Refusal {
            name: "check at an unreachable node",
            args: d.admin_args(&[
                "check",
                "--endpoint",
                &dead,
                "--account",
                "acme",
                "--feature",
                "export",
                "--timeout-seconds",
                "2",
            ]),
            code: 1,
            stderr: &["UNREACHABLE"],
        },
    ]);
    d.stop();
}

#[test]
fn accounts_entitlements_orders_access_requests_and_audit() {
    init_tracing();
    let d = Deployment::start();

    tracing::info!("accounts list and get");
    let (stdout, _) = expect(d.ctl(&["accounts", "list"]), 0);
    assert!(stdout.lines().next().unwrap().starts_with("ID"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("acme ") && l.contains("Acme Corporation")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("umbrella") && l.contains("suspended")),
        "{stdout}"
    );
    let (stdout, _) = expect(
        d.ctl(&["accounts", "list", "--limit", "2", "--output", "json"]),
        0,
    );
    assert_eq!(json(&stdout).as_array().unwrap().len(), 2);
    let (stdout, _) = expect(d.ctl(&["accounts", "get", "globex"]), 0);
    assert!(stdout.contains("Globex"), "{stdout}");

    tracing::info!("accounts put creates, then changes only what is given");
    let (stdout, _) = expect(d.ctl(&["accounts", "put", "newco", "--name", "New Co"]), 0);
    assert!(
        stdout.contains("account newco: committed at revision"),
        "{stdout}"
    );
    expect(
        d.ctl(&[
            "accounts",
            "put",
            "newco",
            "--status",
            "suspended",
            "--reason",
            "unpaid",
        ]),
        0,
    );
    let (stdout, _) = expect(d.ctl(&["accounts", "get", "newco", "--output", "json"]), 0);
    let v = json(&stdout);
    assert_eq!(
        (v["name"].as_str(), v["status"].as_str()),
        (Some("New Co"), Some("suspended"))
    );

    tracing::info!("entitlements: list, grant from a file, get, and the lifecycle");
    let (stdout, _) = expect(d.ctl(&["entitlements", "list", "--account", "acme"]), 0);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("acme-pro") && l.contains("plan pro") && l.contains("2 named")),
        "{stdout}"
    );
    let grant = d.write_file(
        "grant.json",
        r#"{"id": "newco-export", "account": "newco", "grant": {"feature": {"feature": "export"}}, "valid_from": 1767225600}"#,
    );
    let (stdout, _) = expect(
        d.ctl(&[
            "entitlements",
            "grant",
            "--file",
            &grant,
            "--output",
            "json",
        ]),
        0,
    );
    assert_eq!(json(&stdout)["entitlements"][0], "newco-export");
    let (stdout, _) = expect(d.ctl(&["entitlements", "get", "newco-export"]), 0);
    assert_eq!(json(&stdout)["grant"]["feature"]["feature"], "export");
    for (action, status) in [
        ("suspend", "suspended"),
        ("resume", "active"),
        ("revoke", "revoked"),
    ] {
        let (stdout, _) = expect(d.ctl(&["entitlements", action, "newco-export"]), 0);
        assert!(stdout.contains("committed"), "{stdout}");
        assert_eq!(
            d.origin_get("/v1/entitlements/newco-export").1["status"],
            status
        );
    }

    tracing::info!("orders place: committed, then unchanged on replay");
    let order = r#"{"id": "ord-77", "account": "newco", "sku": "STU-STARTER", "kind": "new", "quantity": 3, "term_start": 1767225600}"#;
    let file = d.write_file("order.json", order);
    let (stdout, _) = expect(d.ctl(&["orders", "place", "--file", &file]), 0);
    assert!(stdout.contains("order ord-77: committed"), "{stdout}");
    let (stdout, _) = expect(d.ctl(&["orders", "place", "--file", &file]), 0);
    assert!(stdout.contains("order ord-77: unchanged"), "{stdout}");

    tracing::info!("access requests: get, approve with a reason, deny");
    for id in ["ar-1", "ar-2"] {
        let status = d.origin_post(
            "/v1/access-requests",
            serde_json::json!({"id": id, "account": "acme", "subject": "carol", "target": {"feature": "sso"}, "justification": "demo for a customer"}),
        );
        assert_eq!(status, 200);
    }
    let (stdout, _) = expect(d.ctl(&["access-requests", "get", "ar-1"]), 0);
    assert!(
        stdout.contains("pending") && stdout.contains("feature sso"),
        "{stdout}"
    );
    let (stdout, _) = expect(
        d.ctl(&[
            "access-requests",
            "approve",
            "ar-1",
            "--reason",
            "ok by the account owner",
        ]),
        0,
    );
    assert!(stdout.contains("access request ar-1 approved"), "{stdout}");
    let (stdout, _) = expect(
        d.ctl(&["access-requests", "get", "ar-1", "--output", "json"]),
        0,
    );
    assert!(json(&stdout)["status"]["approved"].is_object(), "{stdout}");
    expect(d.ctl(&["access-requests", "deny", "ar-2"]), 0);

    tracing::info!(
        "refusals: unknown ids are exit 3, a wrong or missing API key exit 5, bad input exit 2, \
         a conflict exit 4, an unreachable origin exit 1; each with the problem's code"
    );
    let bad_grant = d.write_file("bad-grant.json", r#"{"id": "x", "colour": "blue"}"#);
    let changed_order = d.write_file(
        "order2.json",
        &order.replace("\"quantity\": 3", "\"quantity\": 4"),
    );
    let origin = d.origin_url();
    let token_path = d.token_path.to_str().unwrap();
    expect_refusals(&[
        Refusal {
            name: "an unknown account",
            args: d.admin_args(&["accounts", "get", "nobody"]),
            code: 3,
            stderr: &["NOT_FOUND", "unknown account nobody"],
        },
        Refusal {
            name: "a wrong API key",
            args: args(&[
                "accounts",
                "list",
                "--origin",
                &origin,
                "--api-key",
                "tg_key-0000000000000000.wrong",
                "--ca",
                &d.ca(),
            ]),
            code: 5,
            stderr: &["UNAUTHENTICATED", "unknown or wrong API key"],
        },
        Refusal {
            name: "no API key",
            args: args(&["accounts", "list", "--origin", &origin]),
            code: 5,
            stderr: &["an API key is required"],
        },
        Refusal {
            name: "an unreachable origin",
            args: args(&[
                "accounts",
                "list",
                "--origin",
                &dead_address(),
                "--api-key-file",
                token_path,
            ]),
            code: 1,
            stderr: &["UNREACHABLE"],
        },
        Refusal {
            name: "a new account without a name",
            args: d.admin_args(&["accounts", "put", "other"]),
            code: 2,
            stderr: &["--name is required"],
        },
        Refusal {
            name: "a grant file that is not an entitlement",
            args: d.admin_args(&["entitlements", "grant", "--file", &bad_grant]),
            code: 2,
            stderr: &["INVALID_ARGUMENT"],
        },
        Refusal {
            name: "a grant file that does not exist",
            args: d.admin_args(&["entitlements", "grant", "--file", "/nonexistent.json"]),
            code: 2,
            stderr: &["/nonexistent.json"],
        },
        Refusal {
            name: "resuming a revoked entitlement",
            args: d.admin_args(&["entitlements", "resume", "newco-export"]),
            code: 4,
            stderr: &["CONFLICT", "revoked"],
        },
        Refusal {
            name: "suspending an unknown entitlement",
            args: d.admin_args(&["entitlements", "suspend", "no-such-entitlement"]),
            code: 3,
            stderr: &[],
        },
        Refusal {
            name: "an order replayed with a changed body",
            args: d.admin_args(&["orders", "place", "--file", &changed_order]),
            code: 4,
            stderr: &["CONFLICT"],
        },
        Refusal {
            name: "an access request decided twice",
            args: d.admin_args(&["access-requests", "approve", "ar-2"]),
            code: 4,
            stderr: &["already decided"],
        },
        Refusal {
            name: "an unknown access request",
            args: d.admin_args(&["access-requests", "get", "ar-404"]),
            code: 3,
            stderr: &[],
        },
    ]);
    tracing::info!("the refused order changed nothing");
    let (stdout, _) = expect(d.ctl(&["orders", "get", "ord-77"]), 0);
    assert_eq!(json(&stdout)["order"]["quantity"], 3);

    tracing::info!("audit tail: the newest records, oldest first, with who and why");
    let head = d.head();
    let (stdout, _) = expect(d.ctl(&["audit", "tail", "--limit", "3"]), 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "a header and three records: {stdout}");
    assert!(lines[3].starts_with(&head.to_string()), "{stdout}");
    assert!(
        stdout.contains("ar-2"),
        "the newest changes are the access requests: {stdout}"
    );
    let (stdout, _) = expect(
        d.ctl(&["audit", "tail", "--limit", "500", "--output", "json"]),
        0,
    );
    let records: Vec<serde_json::Value> = stdout.lines().map(json).collect();
    assert_eq!(records.last().unwrap()["revision"], head);
    assert!(
        records
            .iter()
            .any(|r| r["reason"] == "ok by the account owner"),
        "the --reason is in the audit log: {stdout}"
    );
    assert!(records.iter().any(|r| r["reason"] == "unpaid"), "{stdout}");

    tracing::info!("audit tail --follow prints a change as it commits");
    let mut child = tollgate()
        .args([
            "ctl",
            "audit",
            "tail",
            "--limit",
            "1",
            "--follow",
            "--poll-interval-ms",
            "20",
            "--output",
            "json",
        ])
        .args(["--origin", &d.origin_url(), "--ca", &d.ca()])
        .arg("--api-key-file")
        .arg(&d.token_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if lines_tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let first = lines_rx
        .recv_timeout(WAIT_MAX)
        .expect("the newest record first");
    assert_eq!(json(&first)["revision"], head);
    expect(
        d.ctl(&["accounts", "put", "followed", "--name", "Followed"]),
        0,
    );
    let next = lines_rx
        .recv_timeout(WAIT_MAX)
        .expect("the new record, followed");
    let next = json(&next);
    assert_eq!(next["revision"], head + 1);
    assert_eq!(next["target"], "account/followed");
    child.kill().unwrap();
    child.wait().unwrap();
    d.stop();
}

#[test]
fn access_requests_list_filters_pages_and_prints_json() {
    init_tracing();
    let d = Deployment::start();

    tracing::info!("five requests over two accounts, one of them approved");
    // Filed in id order, so oldest first (filing time, then id) is id order.
    for (id, account, feature) in [
        ("ar-l1", "acme", "sso"),
        ("ar-l2", "acme", "sso"),
        ("ar-l3", "acme", "render"),
        ("ar-l4", "globex", "export"),
        ("ar-l5", "globex", "export"),
    ] {
        let status = d.origin_post(
            "/v1/access-requests",
            serde_json::json!({"id": id, "account": account, "target": {"feature": feature},
                "justification": "queue test", "duration_seconds": 3600}),
        );
        assert_eq!(status, 200, "{id}");
    }
    expect(d.ctl(&["access-requests", "approve", "ar-l2"]), 0);
    let listed = |args: &[&str]| -> Vec<String> {
        let mut full = vec!["access-requests", "list", "--output", "json"];
        full.extend_from_slice(args);
        let (stdout, _) = expect(d.ctl(&full), 0);
        json(&stdout)
            .as_array()
            .unwrap_or_else(|| panic!("a JSON array: {stdout}"))
            .iter()
            .map(|r| r["spec"]["id"].as_str().unwrap().to_string())
            .collect()
    };

    tracing::info!("a table by default: every request, oldest first, with its status");
    let (stdout, stderr) = expect(d.ctl(&["access-requests", "list"]), 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATUS"),
        "{stdout}"
    );
    let rows: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(
        rows,
        ["ar-l1", "ar-l2", "ar-l3", "ar-l4", "ar-l5"],
        "{stdout}"
    );
    assert!(
        lines[2].contains("approved ar-l2") && lines[2].contains("feature sso"),
        "{stdout}"
    );
    assert!(
        lines[1].contains("pending") && lines[1].contains("acme"),
        "{stdout}"
    );
    assert!(
        !stderr.contains("--after"),
        "nothing more to page: {stderr}"
    );

    tracing::info!("filters: status, account, age");
    assert_eq!(
        listed(&["--status", "pending"]),
        ["ar-l1", "ar-l3", "ar-l4", "ar-l5"]
    );
    assert_eq!(listed(&["--account", "globex"]), ["ar-l4", "ar-l5"]);
    assert_eq!(
        listed(&["--account", "acme", "--status", "approved"]),
        ["ar-l2"]
    );
    assert!(listed(&["--older-than-seconds", "86400"]).is_empty());
    assert_eq!(
        listed(&["--newer-than-seconds", "86400", "--status", "approved"]),
        ["ar-l2"]
    );
    let yesterday = (now_secs() - 86_400).to_string();
    assert_eq!(listed(&["--created-after", &yesterday]).len(), 5);
    assert!(listed(&["--created-before", &yesterday]).is_empty());

    tracing::info!("--limit stops early and says how to go on; --after goes on");
    let (stdout, stderr) = expect(
        d.ctl(&[
            "access-requests",
            "list",
            "--status",
            "pending",
            "--limit",
            "3",
            "--output",
            "json",
        ]),
        0,
    );
    let first: Vec<String> = json(&stdout)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["spec"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(first, ["ar-l1", "ar-l3", "ar-l4"]);
    let cursor = stderr
        .split("--after ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("a cursor to go on from: {stderr}"))
        .to_string();
    assert_eq!(
        listed(&["--status", "pending", "--after", &cursor]),
        ["ar-l5"]
    );

    tracing::info!("an account's key lists its own account only, and is refused another's");
    let (stdout, _) = expect(
        d.ctl(&[
            "api-keys",
            "create",
            "--name",
            "globex portal",
            "--scope",
            "read",
            "--account",
            "globex",
            "--output",
            "json",
        ]),
        0,
    );
    let globex_token = json(&stdout)["token"].as_str().unwrap().to_string();
    let origin = d.origin_url();
    let ca = d.ca();
    let as_globex = |extra: &[&str]| {
        let mut full = args(&[
            "access-requests",
            "list",
            "--origin",
            &origin,
            "--api-key",
            &globex_token,
            "--ca",
            &ca,
        ]);
        full.extend(extra.iter().map(|a| a.to_string()));
        full
    };
    let out = tollgate()
        .arg("ctl")
        .args(as_globex(&["--output", "json"]))
        .output()
        .unwrap();
    let (stdout, _) = expect(out, 0);
    let page = json(&stdout);
    let accounts: Vec<&str> = page
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["spec"]["account"].as_str().unwrap())
        .collect();
    assert_eq!(accounts, ["globex", "globex"], "{stdout}");

    expect_refusals(&[
        Refusal {
            name: "another account with an account's key",
            args: as_globex(&["--account", "acme"]),
            code: 5,
            stderr: &["FORBIDDEN"],
        },
        Refusal {
            name: "an unknown status",
            args: d.admin_args(&["access-requests", "list", "--status", "open"]),
            code: 2,
            stderr: &["open"],
        },
        Refusal {
            name: "a zero limit",
            args: d.admin_args(&["access-requests", "list", "--limit", "0"]),
            code: 2,
            stderr: &["--limit"],
        },
        Refusal {
            name: "a cursor the origin never gave out",
            args: d.admin_args(&["access-requests", "list", "--after", "not-a-cursor"]),
            code: 2,
            stderr: &["INVALID_ARGUMENT", "cursor"],
        },
        Refusal {
            name: "an invalid account id",
            args: d.admin_args(&["access-requests", "list", "--account", "a b"]),
            code: 2,
            stderr: &["INVALID_ARGUMENT", "account"],
        },
    ]);
    d.stop();
}

#[test]
fn orders_import_reports_bad_lines_and_imports_exactly_the_good_ones() {
    init_tracing();
    let d = Deployment::start();
    expect(d.ctl(&["accounts", "put", "imp", "--name", "Importer"]), 0);

    tracing::info!("CSV: good rows imported, bad rows reported by line number with a code");
    let csv = [
        "id,account,sku,kind,quantity,term_start,term_end",
        "imp-1,imp,STU-STARTER,new,3,2026-01-01T00:00:00Z,",
        "imp-2,imp,STU-STARTER,new,three,1767225600,",
        "imp-3,acme,STU-RENDER-500,new,1,1767225600,1798761600",
        "",
        "imp-4,nobody,STU-PRO,new,1,1767225600,",
        "imp-5,imp,STU-PRO,new",
        "imp-6,imp,NO-SUCH-SKU,new,1,1767225600,",
        "\"imp-7\",\"imp\",STU-RENDER-500,new,1,1767225600,",
    ]
    .join("\n");
    let file = d.write_file("orders.csv", &csv);
    let (stdout, _) = expect(d.ctl(&["orders", "import", &file]), 1);
    assert!(
        stdout.contains("3 succeeded, 0 unchanged, 4 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 3: MALFORMED_LINE: quantity: \"three\" is not a whole number"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 6 (order imp-4): NOT_FOUND"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 7: MALFORMED_LINE: 4 fields, but the header names 7 columns"),
        "{stdout}"
    );
    assert!(stdout.contains("line 8 (order imp-6): "), "{stdout}");
    tracing::info!("the origin holds exactly the good orders");
    for (id, exists) in [
        ("imp-1", true),
        ("imp-2", false),
        ("imp-3", true),
        ("imp-4", false),
        ("imp-5", false),
        ("imp-6", false),
        ("imp-7", true),
    ] {
        let (status, _) = d.origin_get(&format!("/v1/orders/{id}"));
        assert_eq!(status == 200, exists, "order {id}: HTTP {status}");
    }

    tracing::info!("a re-run is idempotent: the good lines are unchanged");
    let (stdout, _) = expect(d.ctl(&["orders", "import", &file, "--output", "json"]), 1);
    let v = json(&stdout);
    assert_eq!(
        (
            v["succeeded"].as_u64(),
            v["unchanged"].as_u64(),
            v["failed"].as_u64()
        ),
        (Some(0), Some(3), Some(4))
    );
    let lines: Vec<u64> = v["failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [3, 6, 7, 8]);
    assert_eq!(v["failures"][1]["code"], "NOT_FOUND");

    tracing::info!("JSON Lines, with a malformed line; a clean file exits 0");
    let jsonl = [
        r#"{"id": "imp-10", "account": "imp", "sku": "STU-RENDER-500", "kind": "new", "quantity": 1, "term_start": 1767225600}"#,
        r#"{"id": "imp-11", "account": "imp""#,
        r#"{"id": "imp-12", "account": "imp", "sku": "STU-RENDER-500", "kind": "new", "quantity": 1, "term_start": 1767225600, "colour": "red"}"#,
    ]
    .join("\n");
    let file = d.write_file("orders.jsonl", &jsonl);
    let (stdout, _) = expect(d.ctl(&["orders", "import", &file, "--concurrency", "2"]), 1);
    assert!(
        stdout.contains("1 succeeded, 0 unchanged, 2 failed"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 2: MALFORMED_LINE: not JSON"),
        "{stdout}"
    );
    assert!(
        stdout.contains("line 3: MALFORMED_LINE: not an order: unknown field `colour`"),
        "{stdout}"
    );
    assert_eq!(d.origin_get("/v1/orders/imp-10").0, 200);
    let clean = d.write_file(
        "clean.ndjson",
        &jsonl.lines().next().unwrap().replace("imp-10", "imp-13"),
    );
    let (stdout, _) = expect(d.ctl(&["orders", "import", &clean]), 0);
    assert!(
        stdout.contains("1 succeeded, 0 unchanged, 0 failed"),
        "{stdout}"
    );

    tracing::info!("a file that cannot be imported at all is exit 2");
    let unknown = d.write_file("colour.csv", "id,account,colour\n");
    let no_format = d.write_file("orders.txt", "");
    expect_refusals(&[
        Refusal {
            name: "a CSV file with an unknown column",
            args: d.admin_args(&["orders", "import", &unknown]),
            code: 2,
            stderr: &["unknown column \"colour\""],
        },
        Refusal {
            name: "a file whose extension names no format",
            args: d.admin_args(&["orders", "import", &no_format]),
            code: 2,
            stderr: &["--format"],
        },
    ]);
    d.stop();
}

#[test]
fn license_tokens_are_issued_inspected_verified_and_revoked() {
    init_tracing();
    let mut d = Deployment::start();
    d.start_region_node(1);
    let keys = d.write_file(
        "origin-keys.public.json",
        &serde_json::to_string(&d.origin().public_keys().unwrap()).unwrap(),
    );

    tracing::info!("issue prints the token alone on stdout");
    let (stdout, stderr) = expect(
        d.ctl(&[
            "license",
            "issue",
            "--account",
            "acme",
            "--audience",
            "studio",
        ]),
        0,
    );
    let token = stdout.trim().to_string();
    assert!(token.starts_with("v4.public."), "{stdout}");
    assert!(stderr.contains("license "), "{stderr}");
    let token_file = d.write_file("license.token", &format!("{token}\n"));
    let (stdout, _) = expect(
        d.ctl(&[
            "license",
            "issue",
            "--account",
            "acme",
            "--subject",
            "alice",
            "--audience",
            "studio",
            "--device-fingerprint",
            "laptop-7",
            "--ttl-seconds",
            "3600",
            "--output",
            "json",
        ]),
        0,
    );
    let bound = json(&stdout);
    let bound_token = bound["token"].as_str().unwrap().to_string();

    tracing::info!("inspect decodes without verifying, and says so");
    let at_file = format!("@{token_file}");
    let (stdout, _) = expect(d.ctl(&["license", "inspect", &at_file]), 0);
    assert!(stdout.starts_with("UNVERIFIED"), "{stdout}");
    assert!(
        stdout.contains("acme")
            && stdout.contains("tollgate-origin")
            && stdout.contains("acme-pro"),
        "{stdout}"
    );
    let (stdout, _) = expect(
        d.ctl(&["license", "inspect", &bound_token, "--output", "json"]),
        0,
    );
    let v = json(&stdout);
    assert_eq!(v["verified"], false);
    assert_eq!(v["claims"]["sub"], "acme/alice");
    assert_eq!(v["claims"]["device_bound"], true);
    assert!(v["footer"]["kid"].as_str().unwrap().starts_with("ed25519-"));

    tracing::info!("verify offline with the key file and with the origin's URL: exit 0");
    let (stdout, _) = expect(
        d.ctl(&[
            "license",
            "verify",
            &at_file,
            "--keys",
            &keys,
            "--audience",
            "studio",
        ]),
        0,
    );
    assert!(
        stdout.starts_with("VALID") && stdout.contains("acme-pro"),
        "{stdout}"
    );
    assert!(stdout.contains("revocations are not checked"), "{stdout}");
    let (stdout, _) = expect(
        d.ctl(&[
            "license",
            "verify",
            &token,
            "--keys",
            &d.origin_url(),
            "--audience",
            "studio",
            "--output",
            "json",
        ]),
        0,
    );
    let v = json(&stdout);
    assert_eq!(v["valid"], true);
    assert_eq!(v["claims"]["account"], "acme");

    tracing::info!("verify refuses with the refusal's code: exit 10");
    for (args, code) in [
        (
            vec![token.as_str(), "--audience", "other"],
            "license_wrong_audience",
        ),
        (
            vec![bound_token.as_str(), "--audience", "studio"],
            "license_device_fingerprint_required",
        ),
        (
            vec![
                bound_token.as_str(),
                "--audience",
                "studio",
                "--device-fingerprint",
                "other",
            ],
            "license_bad_signature",
        ),
        (
            vec![token.as_str(), "--audience", "studio", "--at", "4102444800"],
            "license_expired",
        ),
    ] {
        let mut full = vec!["license", "verify", "--keys", keys.as_str()];
        full.extend(args);
        let (stdout, _) = expect(d.ctl(&full), 10);
        assert!(
            stdout.contains("REFUSED") && stdout.contains(code),
            "{code}: {stdout}"
        );
    }
    expect(
        d.ctl(&[
            "license",
            "verify",
            &bound_token,
            "--keys",
            &keys,
            "--audience",
            "studio",
            "--device-fingerprint",
            "laptop-7",
        ]),
        0,
    );

    tracing::info!("list, revoke; the region refuses the revoked token once it has the revocation");
    let jti = json(
        &expect(
            d.ctl(&["license", "inspect", &token, "--output", "json"]),
            0,
        )
        .0,
    )["claims"]["jti"]
        .as_str()
        .unwrap()
        .to_string();
    let (stdout, _) = expect(d.ctl(&["license", "list", "--account", "acme"]), 0);
    assert!(stdout.contains(&jti), "{stdout}");
    let grpc = d.grpc();
    expect(
        d.ctl(&[
            "license",
            "verify",
            &token,
            "--endpoint",
            &grpc,
            "--audience",
            "studio",
        ]),
        0,
    );
    let (stdout, _) = expect(
        d.ctl(&["license", "revoke", "--account", "acme", "--id", &jti]),
        0,
    );
    assert!(stdout.contains("revoked at revision"), "{stdout}");
    d.wait_region_caught_up();
    let (stdout, _) = expect(
        d.ctl(&[
            "license",
            "verify",
            &token,
            "--endpoint",
            &grpc,
            "--audience",
            "studio",
            "--output",
            "json",
        ]),
        10,
    );
    assert_eq!(json(&stdout)["code"], "license_revoked");
    let (stdout, _) = expect(
        d.ctl(&["license", "list", "--account", "acme", "--output", "json"]),
        0,
    );
    let records = json(&stdout);
    let record = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == jti.as_str())
        .unwrap();
    assert!(record["revoked_at"].is_i64(), "{record}");

    tracing::info!("keys: list, rotate with an overlap, retire");
    let (stdout, _) = expect(d.ctl(&["keys", "list", "--output", "json"]), 0);
    let old_kid = json(&stdout)["keys"][0]["kid"]
        .as_str()
        .unwrap()
        .to_string();
    let (stdout, _) = expect(d.ctl(&["keys", "rotate", "--overlap-seconds", "3600"]), 0);
    assert!(stdout.starts_with("active key: ed25519-"), "{stdout}");
    assert!(stdout.contains("overlap until"), "{stdout}");
    let (stdout, _) = expect(d.ctl(&["keys", "list", "--output", "json"]), 0);
    let set = json(&stdout);
    assert_eq!(set["keys"].as_array().unwrap().len(), 2);
    let new_kid = set["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .find(|k| *k != old_kid)
        .unwrap()
        .to_string();
    tracing::info!("a token of the old key still verifies against the rotated set (overlap)");
    expect(
        d.ctl(&[
            "license",
            "verify",
            &bound_token,
            "--keys",
            &d.origin_url(),
            "--audience",
            "studio",
            "--device-fingerprint",
            "laptop-7",
        ]),
        0,
    );

    tracing::info!(
        "refusals: unknown ids are exit 3, bad input exit 2, retiring the active key exit 4, \
         no API key exit 5"
    );
    let origin = d.origin_url();
    expect_refusals(&[
        Refusal {
            name: "a license for an unknown account",
            args: d.admin_args(&[
                "license",
                "issue",
                "--account",
                "nobody",
                "--audience",
                "studio",
            ]),
            code: 3,
            stderr: &[],
        },
        Refusal {
            name: "inspecting a token that is not v4.public",
            args: d.admin_args(&["license", "inspect", "v3.local.nothing"]),
            code: 2,
            stderr: &[],
        },
        Refusal {
            name: "verifying against a key file that does not exist",
            args: d.admin_args(&[
                "license",
                "verify",
                &token,
                "--keys",
                "/nonexistent",
                "--audience",
                "studio",
            ]),
            code: 2,
            stderr: &["/nonexistent"],
        },
        Refusal {
            name: "retiring the active key",
            args: d.admin_args(&["keys", "retire", &new_kid]),
            code: 4,
            stderr: &["CONFLICT"],
        },
        Refusal {
            name: "retiring an unknown key",
            args: d.admin_args(&["keys", "retire", "ed25519-0000000000000000"]),
            code: 3,
            stderr: &[],
        },
        Refusal {
            name: "rotating without an API key",
            args: args(&["keys", "rotate", "--origin", &origin]),
            code: 5,
            stderr: &["API key"],
        },
    ]);

    tracing::info!("retiring the old key: its tokens no longer verify");
    let (stdout, _) = expect(d.ctl(&["keys", "retire", &old_kid, "--output", "json"]), 0);
    assert_eq!(json(&stdout)["active_kid"], new_kid.as_str());
    let (stdout, _) = expect(
        d.ctl(&[
            "license",
            "verify",
            &bound_token,
            "--keys",
            &d.origin_url(),
            "--audience",
            "studio",
            "--device-fingerprint",
            "laptop-7",
        ]),
        10,
    );
    assert!(stdout.contains("license_key_retired"), "{stdout}");
    d.stop();
}

#[test]
fn geo_lookup_resolves_with_the_nodes_code() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.mmdb");
    let anonymous = dir.path().join("anonymous.mmdb");
    std::fs::write(&city, tollgate_geo::fixtures::demo_city().unwrap()).unwrap();
    std::fs::write(
        &anonymous,
        tollgate_geo::fixtures::demo_anonymous_ip().unwrap(),
    )
    .unwrap();
    let lookup = |args: &[&str]| {
        tollgate()
            .args(["ctl", "geo", "lookup", "--db", city.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };

    tracing::info!("a location, with the anonymous network unknown without its database");
    let (stdout, _) = expect(lookup(&["192.0.2.10"]), 0);
    assert!(
        stdout.contains("country") && stdout.contains("DE"),
        "{stdout}"
    );
    assert!(stdout.contains("EU") && stdout.contains("BE"), "{stdout}");
    assert!(
        stdout.contains("unknown (no anonymous IP database)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Tollgate-Demo-City, built 2026-01-01"),
        "{stdout}"
    );

    tracing::info!("with the anonymous IP database: which kind of network");
    let anon = ["--anonymous-db", anonymous.to_str().unwrap()];
    let (stdout, _) = expect(lookup(&[anon[0], anon[1], "192.0.2.70"]), 0);
    assert!(stdout.contains("yes: vpn"), "{stdout}");
    let (stdout, _) = expect(
        lookup(&[anon[0], anon[1], "2001:db8:1::1", "--output", "json"]),
        0,
    );
    let v = json(&stdout);
    assert_eq!(v["facts"]["country"], "US");
    assert_eq!(v["facts"]["anonymous"]["vpn"], false);
    let (stdout, _) = expect(lookup(&["10.1.2.3"]), 0);
    assert!(stdout.contains("unknown"), "{stdout}");

    tracing::info!("bad input is exit 2: not an IP, not a database, a database in the wrong slot");
    let junk = dir.path().join("junk.mmdb");
    std::fs::write(&junk, b"not a database").unwrap();
    let lookup_in = |db: &std::path::Path, address: &str| {
        args(&["geo", "lookup", "--db", db.to_str().unwrap(), address])
    };
    expect_refusals(&[
        Refusal {
            name: "an address that is not an IP",
            args: lookup_in(&city, "not-an-ip"),
            code: 2,
            stderr: &[],
        },
        Refusal {
            name: "the anonymous IP database as the City database",
            args: lookup_in(&anonymous, "192.0.2.10"),
            code: 2,
            stderr: &["GEO_DB_WRONG_TYPE"],
        },
        Refusal {
            name: "a file that is not a database",
            args: lookup_in(&junk, "192.0.2.10"),
            code: 2,
            stderr: &["GEO_DB_INVALID"],
        },
    ]);
}

#[test]
fn cluster_membership_changes_through_the_admin_service() {
    init_tracing();
    let mut d = Deployment::start();
    d.start_region_node(1);
    let leader = d.region[0].raft().addr().to_string();
    let second = d.start_region_node(2).raft().addr().to_string();

    tracing::info!("status: one voter, the leader");
    let (stdout, _) = expect(d.ctl(&["cluster", "status", "--endpoint", &leader]), 0);
    assert!(
        stdout.contains("leader") && stdout.contains(&leader) && stdout.contains("voter"),
        "{stdout}"
    );

    tracing::info!("add-learner, promote: two voters");
    let (stdout, _) = expect(
        d.ctl(&[
            "cluster",
            "add-learner",
            "--endpoint",
            &leader,
            "--node-id",
            "2",
            "--addr",
            &second,
            "--wait-caught-up",
        ]),
        0,
    );
    assert!(stdout.contains("node 2 added as a learner"), "{stdout}");
    let (stdout, _) = expect(
        d.ctl(&[
            "cluster",
            "promote",
            "--endpoint",
            &leader,
            "--node-id",
            "2",
        ]),
        0,
    );
    assert!(stdout.contains("node 2 promoted to voter"), "{stdout}");
    let (stdout, _) = expect(
        d.ctl(&[
            "cluster",
            "status",
            "--endpoint",
            &second,
            "--output",
            "json",
        ]),
        0,
    );
    let v = json(&stdout);
    assert_eq!(v["voters"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["leader_id"], 1);

    tracing::info!("refusals: a voter promoted again, an unknown node, an unreachable endpoint");
    expect_refusals(&[
        Refusal {
            name: "promoting a voter",
            args: d.admin_args(&[
                "cluster",
                "promote",
                "--endpoint",
                &leader,
                "--node-id",
                "2",
            ]),
            code: 4,
            stderr: &["already a voter"],
        },
        Refusal {
            name: "promoting an unknown node",
            args: d.admin_args(&[
                "cluster",
                "promote",
                "--endpoint",
                &leader,
                "--node-id",
                "9",
            ]),
            code: 3,
            stderr: &[],
        },
        Refusal {
            name: "the status of an unreachable endpoint",
            args: d.admin_args(&[
                "cluster",
                "status",
                "--endpoint",
                &dead_address(),
                "--timeout-seconds",
                "2",
            ]),
            code: 1,
            stderr: &[],
        },
    ]);

    tracing::info!("remove, sent to the follower, reaches the leader");
    let (stdout, stderr) = expect(
        d.ctl(&["cluster", "remove", "--endpoint", &second, "--node-id", "2"]),
        0,
    );
    assert!(stdout.contains("node 2 removed"), "{stdout}");
    assert!(stderr.contains("not the leader"), "{stderr}");
    let (stdout, _) = expect(
        d.ctl(&[
            "cluster",
            "status",
            "--endpoint",
            &leader,
            "--output",
            "json",
        ]),
        0,
    );
    assert_eq!(json(&stdout)["voters"].as_array().unwrap().len(), 1);
    d.stop();
}

#[test]
fn credentials_are_created_listed_used_at_a_region_and_revoked() {
    init_tracing();
    let mut d = Deployment::start();
    d.start_region_node(1);
    let grpc = d.grpc();
    let ca = d.ca();
    // The value after `key` in `print_fields` output.
    let field = |stdout: &str, key: &str| -> String {
        stdout
            .lines()
            .find_map(|line| {
                let (k, v) = line.split_once(char::is_whitespace)?;
                (k == key).then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {key} in:\n{stdout}"))
    };
    // `ctl check` at the region presenting `token` rather than the
    // deployment's credential.
    let check = |token: &str, account: &str| -> Output {
        tollgate()
            .args([
                "ctl",
                "check",
                "--endpoint",
                &grpc,
                "--account",
                account,
                "--subject",
                "alice",
                "--feature",
                "export",
                "--ip",
                "192.0.2.10",
                "--ca",
                &ca,
                "--credential",
                token,
            ])
            .output()
            .unwrap()
    };
    let wait_applied = |revision: u64| {
        wait_until_blocking(
            "the region to apply the credential's revision",
            WAIT_MAX,
            || match d.region[0].applied_revision() {
                applied if applied >= revision => Ok(()),
                applied => Err(format!("applied revision {applied} of {revision}")),
            },
        )
        .unwrap();
    };

    tracing::info!("create: the token is printed once, with how to present it and the revision");
    let (stdout, _) = expect(
        d.ctl(&[
            "credentials",
            "create",
            "--name",
            "acme checker",
            "--account",
            "acme",
            "--product",
            "studio",
            "--verb",
            "check",
        ]),
        0,
    );
    let token = field(&stdout, "token");
    let id = field(&stdout, "id");
    let revision: u64 = field(&stdout, "revision").parse().unwrap();
    assert!(token.starts_with(&format!("tgc_{id}.")), "{stdout}");
    let (_, secret) = token.split_once('.').unwrap();
    assert_eq!(field(&stdout, "accounts"), "acme", "{stdout}");
    assert_eq!(field(&stdout, "verbs"), "check", "{stdout}");
    for note in [
        "shown only once",
        "authorization: Bearer <token>",
        "TOLLGATE_CREDENTIAL",
        &format!("applied revision {revision}"),
    ] {
        assert!(stdout.contains(note), "{note}: {stdout}");
    }

    tracing::info!("list and show: the credential and its scope, never its secret");
    let (stdout, _) = expect(d.ctl(&["credentials", "list"]), 0);
    let row = stdout
        .lines()
        .find(|line| line.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} not listed:\n{stdout}"));
    for piece in ["acme checker", "acme", "studio", "check"] {
        assert!(row.contains(piece), "{piece}: {row}");
    }
    assert!(!stdout.contains(secret), "a secret listed:\n{stdout}");
    let (stdout, _) = expect(d.ctl(&["credentials", "list", "--output", "json"]), 0);
    assert!(!stdout.contains(secret), "a secret listed:\n{stdout}");
    let items = json(&stdout);
    let listed = items
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed:\n{stdout}"));
    assert_eq!(listed["accounts"], serde_json::json!(["acme"]));
    assert_eq!(listed["verbs"], serde_json::json!(["check"]));
    assert!(listed.get("token").is_none(), "{listed}");
    let (stdout, _) = expect(d.ctl(&["credentials", "show", &id, "--output", "json"]), 0);
    let shown = json(&stdout);
    assert_eq!(shown["products"], serde_json::json!(["studio"]));
    assert!(shown["revoked_at"].is_null(), "{shown}");

    tracing::info!("check: the region answers a check with the new credential, in its scope only");
    wait_applied(revision);
    let (stdout, _) = expect(check(&token, "acme"), 0);
    assert!(
        stdout.starts_with("ALLOWED  ALLOW  acme / alice / export"),
        "{stdout}"
    );
    let (_, stderr) = expect(check(&token, "globex"), 5);
    assert!(stderr.contains("CREDENTIAL_SCOPE"), "{stderr}");

    tracing::info!(
        "revoke: prints the revision; the region refuses the credential once it applied it"
    );
    let (stdout, _) = expect(d.ctl(&["credentials", "revoke", &id]), 0);
    let revoked: u64 = stdout
        .split_whitespace()
        .skip_while(|w| *w != "revision")
        .nth(1)
        .and_then(|r| r.trim_end_matches(';').parse().ok())
        .unwrap_or_else(|| panic!("no revision in: {stdout}"));
    assert!(revoked > revision, "{stdout}");
    wait_applied(revoked);
    let (_, stderr) = expect(check(&token, "acme"), 5);
    assert!(stderr.contains("CREDENTIAL_REVOKED"), "{stderr}");
    let (stdout, _) = expect(d.ctl(&["credentials", "show", &id, "--output", "json"]), 0);
    assert!(json(&stdout)["revoked_at"].is_i64(), "{stdout}");

    tracing::info!(
        "refusals: a credential covering nothing, an unknown verb, id or a second revoke"
    );
    expect_refusals(&[
        Refusal {
            name: "create naming no accounts",
            args: d.admin_args(&[
                "credentials",
                "create",
                "--name",
                "x",
                "--all-products",
                "--verb",
                "check",
            ]),
            code: 2,
            stderr: &["--account", "--all-accounts"],
        },
        Refusal {
            name: "create naming no products",
            args: d.admin_args(&[
                "credentials",
                "create",
                "--name",
                "x",
                "--account",
                "acme",
                "--verb",
                "check",
            ]),
            code: 2,
            stderr: &["--product", "--all-products"],
        },
        Refusal {
            name: "create with an unknown verb",
            args: d.admin_args(&[
                "credentials",
                "create",
                "--name",
                "x",
                "--all-accounts",
                "--all-products",
                "--verb",
                "admin",
            ]),
            code: 2,
            stderr: &["--verb", "watch_all"],
        },
        Refusal {
            name: "show an unknown credential",
            args: d.admin_args(&["credentials", "show", "cred-0000000000000000"]),
            code: 3,
            stderr: &["NOT_FOUND"],
        },
        Refusal {
            name: "revoke a revoked credential",
            args: d.admin_args(&["credentials", "revoke", &id]),
            code: 4,
            stderr: &["already revoked"],
        },
        Refusal {
            name: "list without an API key",
            args: args(&[
                "credentials",
                "list",
                "--origin",
                &d.origin_url(),
                "--ca",
                &ca,
            ]),
            code: 5,
            stderr: &["API key"],
        },
    ]);
    d.stop();
}

#[test]
fn portal_users_are_invited_listed_reinvited_and_removed() {
    init_tracing();
    let d = Deployment::start();
    let portal_get = |url: &str| -> (u16, String) {
        let http = d.http_client();
        d.runtime.block_on(async {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    let link = format!(
        "{}/portal/invite?user=ops%40example.com&token=",
        d.origin_url()
    );

    tracing::info!("the first vendor administrator: a URL the portal opens, and its expiry");
    let (stdout, _) = expect(
        d.ctl(&[
            "portal-users",
            "invite",
            "--email",
            "Ops@Example.com",
            "--role",
            "vendor_admin",
        ]),
        0,
    );
    let field = |stdout: &str, name: &str| -> String {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("a {name} line: {stdout}"))
            .trim()
            .to_string()
    };
    let first = field(&stdout, "invite url");
    assert!(first.starts_with(&link), "{stdout}");
    let expires = field(&stdout, "expires");
    assert!(
        expires.starts_with("20") && expires.ends_with('Z'),
        "RFC 3339: {stdout}"
    );
    let (status, page) = portal_get(&first);
    assert_eq!(status, 200, "the portal takes the link: {page}");
    assert!(page.contains("ops@example.com"), "{page}");

    tracing::info!("the same address again is a conflict (exit 4)");
    let (_, stderr) = expect(
        d.ctl(&[
            "portal-users",
            "invite",
            "--email",
            "ops@example.com",
            "--role",
            "vendor_support",
        ]),
        4,
    );
    assert!(stderr.contains("CONFLICT"), "{stderr}");

    tracing::info!("a customer role needs its account (exit 2); with it, a member of acme");
    expect(
        d.ctl(&[
            "portal-users",
            "invite",
            "--email",
            "mia@acme.example",
            "--role",
            "customer_member",
        ]),
        2,
    );
    let (stdout, _) = expect(
        d.ctl(&[
            "portal-users",
            "invite",
            "--email",
            "mia@acme.example",
            "--name",
            "Mia",
            "--role",
            "customer_member",
            "--account",
            "acme",
            "--portal-url",
            "https://portal.example.com/",
            "--output",
            "json",
        ]),
        0,
    );
    let mia = json(&stdout);
    assert!(
        mia["invite_url"]
            .as_str()
            .unwrap()
            .starts_with("https://portal.example.com/portal/invite?user=mia%40acme.example&token="),
        "{mia}"
    );

    tracing::info!("the list: a table by default, JSON on request, the account filter");
    let (stdout, _) = expect(d.ctl(&["portal-users", "list"]), 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATE"),
        "{stdout}"
    );
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[2].starts_with("ops@example.com") && lines[2].contains("invited"),
        "{stdout}"
    );
    let (stdout, _) = expect(
        d.ctl(&[
            "portal-users",
            "list",
            "--account",
            "acme",
            "--output",
            "json",
        ]),
        0,
    );
    let listed = json(&stdout);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], "mia@acme.example");
    assert_eq!(listed[0]["role"], "customer_member");

    tracing::info!("reinvite: a new link works, the old one no longer does");
    let (stdout, _) = expect(d.ctl(&["portal-users", "reinvite", "ops@example.com"]), 0);
    let second = field(&stdout, "invite url");
    assert!(second.starts_with(&link) && second != first, "{stdout}");
    assert_eq!(portal_get(&second).0, 200);
    assert_eq!(portal_get(&first).0, 404);
    expect(
        d.ctl(&["portal-users", "reinvite", "nobody@example.com"]),
        3,
    );

    tracing::info!("remove: done once, then not found (exit 3)");
    let (stdout, _) = expect(d.ctl(&["portal-users", "remove", "mia@acme.example"]), 0);
    assert!(
        stdout.contains("portal user mia@acme.example removed"),
        "{stdout}"
    );
    expect(d.ctl(&["portal-users", "remove", "mia@acme.example"]), 3);
    let (stdout, _) = expect(d.ctl(&["portal-users", "list", "--output", "json"]), 0);
    assert_eq!(json(&stdout).as_array().unwrap().len(), 1, "{stdout}");
    d.stop();
}

#[test]
fn help_documents_the_exit_codes() {
    let (stdout, _) = expect(tollgate().args(["ctl", "--help"]).output().unwrap(), 0);
    for line in [
        "Exit codes:",
        "3   not found",
        "4   conflict",
        "5   not authorised",
        "10  check denied",
    ] {
        assert!(stdout.contains(line), "{line}: {stdout}");
    }
    let (_, stderr) = expect(
        tollgate()
            .args(["ctl", "accounts", "get"])
            .output()
            .unwrap(),
        2,
    );
    assert!(stderr.contains("<ID>"), "{stderr}");
}

#[test]
fn snapshot_backup_and_restore_a_node() {
    init_tracing();
    let mut d = Deployment::start();
    let raft = d.origin().raft().addr().to_string();
    let head = d.origin().head_revision();
    let data = d.origin().served_dataset().unwrap();
    let keys = d.origin().public_keys().unwrap();
    // Backups need no origin: the node's files only.
    let local = |args: &[&str]| tollgate().arg("ctl").args(args).output().unwrap();
    let data_dir = d.dir.path().join("origin");

    tracing::info!("snapshot: covers everything applied");
    let (stdout, _) = expect(
        d.ctl(&[
            "cluster",
            "snapshot",
            "--endpoint",
            &raft,
            "--output",
            "json",
        ]),
        0,
    );
    assert!(json(&stdout)["snapshot_index"].as_u64().unwrap() > 0);
    let origin = d.origin.take().unwrap();

    tracing::info!("backup of a running node: refused");
    let backup = d.dir.path().join("backup");
    let (_, stderr) = expect(
        local(&[
            "cluster",
            "backup",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--out",
            backup.to_str().unwrap(),
        ]),
        4,
    );
    assert!(stderr.contains("NODE_RUNNING"), "{stderr}");
    assert!(!backup.exists(), "nothing written");

    tracing::info!("backup of the stopped node, restore into a new directory");
    d.runtime.block_on(origin.shutdown()).unwrap();
    expect(
        local(&[
            "cluster",
            "backup",
            "--data-dir",
            data_dir.to_str().unwrap(),
            "--out",
            backup.to_str().unwrap(),
        ]),
        0,
    );
    let restored = d.dir.path().join("restored");
    expect(
        local(&[
            "cluster",
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ]),
        0,
    );
    let (_, stderr) = expect(
        local(&[
            "cluster",
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--data-dir",
            restored.to_str().unwrap(),
        ]),
        4,
    );
    assert!(stderr.contains("NOT_EMPTY"), "{stderr}");

    tracing::info!("the restored node holds exactly what the original held");
    let again = d.runtime.block_on(async {
        // The seal key is not in the backup; the operator gives it back.
        let mut config = OriginConfig::new(1, &restored);
        config.seal_key_path = d.dir.path().join("origin").join("origin-seal.key");
        let node = OriginNode::start(
            config,
            OriginListeners {
                raft: loopback().await.into(),
                http: loopback().await.into(),
                feed: loopback().await.into(),
            },
        )
        .await
        .unwrap();
        node.raft()
            .wait_until(WAIT_MAX, "the restored node leads", |m| {
                m.current_leader == Some(1)
            })
            .await
            .unwrap();
        node
    });
    assert_eq!(again.head_revision(), head);
    assert_eq!(again.served_dataset().unwrap(), data);
    let restored_keys = d.runtime.block_on(again.wait_for_keys(WAIT_MAX)).unwrap();
    assert_eq!(
        restored_keys, keys,
        "the backup carries the sealed signing keys"
    );
    d.runtime.block_on(again.shutdown()).unwrap();

    tracing::info!("a corrupted backup is refused before anything is written");
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(backup.join("tollgate-backup.json")).unwrap())
            .unwrap();
    let first = manifest["files"][0]["path"].as_str().unwrap();
    let victim = backup.join("data").join(first);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes.push(0);
    std::fs::write(&victim, bytes).unwrap();
    let elsewhere = d.dir.path().join("elsewhere");
    let (_, stderr) = expect(
        local(&[
            "cluster",
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--data-dir",
            elsewhere.to_str().unwrap(),
        ]),
        1,
    );
    assert!(stderr.contains("CORRUPT_BACKUP"), "{stderr}");
    assert!(!elsewhere.exists(), "nothing written");
}

#[test]
fn new_seal_and_license_keys_are_written_once_owner_only_and_load() {
    let dir = tempfile::tempdir().unwrap();
    let seal = dir.path().join("seal.key");
    let run = |args: &[&str]| tollgate().arg("ctl").args(args).output().unwrap();
    let (stdout, _) = expect(
        run(&[
            "--output",
            "json",
            "keys",
            "new-seal-key",
            "--out",
            seal.to_str().unwrap(),
        ]),
        0,
    );
    let made = json(&stdout);
    let loaded = tollgate_signing::SealKey::load(&seal).unwrap();
    assert_eq!(made["key"]["seal"], loaded.fingerprint());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&seal).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let before = std::fs::read(&seal).unwrap();
    let (_, stderr) = expect(
        run(&["keys", "new-seal-key", "--out", seal.to_str().unwrap()]),
        2,
    );
    assert!(stderr.contains("never overwritten"), "{stderr}");
    assert_eq!(
        std::fs::read(&seal).unwrap(),
        before,
        "the first key is kept"
    );

    let license = dir.path().join("license-key.json");
    let (stdout, _) = expect(
        run(&[
            "--output",
            "json",
            "keys",
            "new-license-key",
            "--out",
            license.to_str().unwrap(),
        ]),
        0,
    );
    let made = json(&stdout);
    let ring = tollgate_signing::KeyRing::load(&license).unwrap().unwrap();
    assert_eq!(made["key"]["kid"], ring.active_kid().as_str());
    assert_eq!(
        made["key"]["public_key"],
        ring.public_set().keys[0].public_key
    );
}
