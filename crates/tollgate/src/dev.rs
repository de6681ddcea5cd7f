//! `tollgate dev`: a whole deployment in one process on loopback, with no
//! config: an origin seeded with the demo data, and two three-node regions
//! (eu, us) that follow it and answer checks with a demo geography, each
//! with a license key the origin certified. It prints its endpoints and
//! writes them to `<data-dir>/endpoints.json`. Ctrl-C stops it cleanly.
//!
//! Every port speaks TLS, as in production: a throwaway CA in
//! `<data-dir>/tls/` issues each node its certificate (and an operator
//! certificate for `tollgate ctl cluster`), and the printed commands carry
//! `--ca`. `--insecure-plaintext` runs without TLS, on purpose only.

use crate::exit;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_model::{Dataset, UnixSeconds};
use tollgate_origin::{Op, OriginCommand, OriginResponse};
use tollgate_origin_node::{OriginConfig, OriginListeners, OriginNode};
use tollgate_region_node::{RegionConfig, RegionListeners, RegionNode};

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Keep the data here (default: a temporary directory, removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Port of the origin's REST API (0: any free port).
    #[arg(long, default_value_t = 8080)]
    http_port: u16,
    /// Port of the first region node's check service; the others take the
    /// next ones (0: any free ports).
    #[arg(long, default_value_t = 7300)]
    check_port: u16,
    /// Serve without TLS (every port in clear, no caller checked). For
    /// tools that cannot speak TLS; never for anything real.
    #[arg(long)]
    insecure_plaintext: bool,
    /// Whether the regions' check ports demand an application credential
    /// (`off`: a call without one is served, a presented one still
    /// checked; for measuring what credentials cost, never for anything
    /// real).
    #[arg(long, value_enum, default_value_t = CheckCredentials::Required)]
    check_credentials: CheckCredentials,
}

/// `tollgate dev --check-credentials`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CheckCredentials {
    Required,
    Off,
}

/// The trust domain of `tollgate dev`'s throwaway CA.
const DEV_TRUST_DOMAIN: &str = "tollgate.dev";
/// How long `tollgate dev`'s certificates are valid; one expiring within a
/// day is issued again at start.
const DEV_CERT_DAYS: i64 = 30;

/// `tollgate dev`'s certificates: a CA kept in `<data-dir>/tls/` and one
/// certificate per node, valid for `localhost` and `127.0.0.1`.
struct DevPki {
    dir: PathBuf,
    ca: tollgate_tls::ca::Pem,
}

impl DevPki {
    /// The CA in `<root>/tls`, made on first use.
    fn open(root: &std::path::Path, now: i64) -> anyhow::Result<DevPki> {
        let dir = root.join("tls");
        let ca = match tollgate_tls::ca::read_ca(&dir, "ca") {
            Ok(ca) => ca,
            Err(_) => {
                let ca = tollgate_tls::ca::create_ca(
                    DEV_TRUST_DOMAIN,
                    now - 3600,
                    now + 10 * 365 * 86_400,
                )?;
                tollgate_tls::ca::write(&dir, "ca", &ca)?;
                ca
            }
        };
        Ok(DevPki { dir, ca })
    }

    fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `subject`'s certificate files, issued unless a valid one (for more
    /// than a day) is already there.
    fn files(
        &self,
        name: &str,
        subject: tollgate_tls::Subject,
        now: i64,
    ) -> anyhow::Result<tollgate_tls::TlsFiles> {
        let cert = self.dir.join(format!("{name}.pem"));
        let key = self.dir.join(format!("{name}.key"));
        let files = tollgate_tls::TlsFiles {
            ca: self.ca_path(),
            cert: Some(cert),
            key: Some(key),
        };
        let expect = match subject {
            tollgate_tls::Subject::Operator(_) | tollgate_tls::Subject::App(_) => None,
            ref node => Some(node.clone()),
        };
        let current = tollgate_tls::Tls::load(files.clone(), expect, now)
            .ok()
            .and_then(|tls| tls.expires_in(now).0);
        if current.is_some_and(|left| left > 86_400) {
            return Ok(files);
        }
        let identity = tollgate_tls::Identity::new(DEV_TRUST_DOMAIN, subject)?;
        let pem = tollgate_tls::ca::issue(
            &self.ca,
            &tollgate_tls::ca::Request {
                identity,
                dns: vec!["localhost".into()],
                ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
                not_before: now - 3600,
                not_after: now + DEV_CERT_DAYS * 86_400,
            },
        )?;
        tollgate_tls::ca::write(&self.dir, name, &pem)?;
        Ok(files)
    }

    /// A node's transport: its certificate, loaded and checked.
    fn transport(
        &self,
        name: &str,
        subject: tollgate_tls::Subject,
        now: i64,
    ) -> anyhow::Result<tollgate_tls::Transport> {
        let files = self.files(name, subject.clone(), now)?;
        Ok(tollgate_tls::Transport::Tls(tollgate_tls::Tls::load(
            files,
            Some(subject),
            now,
        )?))
    }
}

/// The transport for node `name` (`subject`): TLS from the dev CA, or
/// plaintext with `--insecure-plaintext`.
fn node_transport(
    pki: Option<&DevPki>,
    name: &str,
    subject: tollgate_tls::Subject,
) -> anyhow::Result<tollgate_tls::Transport> {
    match pki {
        Some(pki) => pki.transport(name, subject, tollgate_server::clock::now_secs()),
        None => Ok(tollgate_tls::Transport::Plaintext),
    }
}

pub fn run(args: DevArgs) -> u8 {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: {error}");
            return exit::FAILURE;
        }
    };
    match runtime.block_on(dev(args)) {
        Ok(()) => exit::OK,
        Err(error) => {
            eprintln!("error: {error:#}");
            exit::FAILURE
        }
    }
}

async fn bind(port: u16, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| {
            format!("{what}: cannot bind 127.0.0.1:{port} (choose another port with the flags)")
        })
}

/// The demo's regions, each of three nodes.
const REGIONS: [&str; 2] = ["eu", "us"];

/// Starts region `name`'s three nodes (check ports from `first_port`, or
/// any with 0), with a license key the origin certified, and initialises it.
async fn start_region(
    origin: &OriginNode,
    root: &std::path::Path,
    pki: Option<&DevPki>,
    name: &str,
    first_port: u16,
    geo: Arc<tollgate_geo::GeoDatabases>,
    credentials: tollgate_region_node::CredentialMode,
) -> anyhow::Result<Vec<RegionNode>> {
    let scheme = if pki.is_some() { "https" } else { "http" };
    let region_key = tollgate_signing::KeyRing::load_or_create(
        &root.join(format!("region-{name}-license-key.json")),
        UnixSeconds(0),
    )?
    .active_signing_key()
    .1
    .clone();
    let certificate = origin
        .certify_region(
            name,
            tollgate_api::licensing::CertifyRegion {
                public_key: base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    region_key.verifying_key().as_bytes(),
                ),
                valid_seconds: None,
                token_ttl_max_seconds: None,
            },
        )
        .await?
        .certificate;
    let license_issuer = tollgate_region_node::RegionIssuerConfig {
        signing_key: region_key,
        certificate,
    };
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let mut config = RegionConfig::new(
            id,
            root.join(format!("region-{name}-{id}")),
            format!("{scheme}://{}", origin.feed_addr()),
            origin.public_keys(),
        );
        config.raft.transport = node_transport(
            pki,
            &format!("region-{name}-node-{id}"),
            tollgate_tls::Subject::RegionNode {
                region: name.into(),
                node: id,
            },
        )?;
        config.name = format!("{name}-{id}");
        config.region = name.into();
        config.license_issuer = Some(license_issuer.clone());
        config.credentials = credentials;
        // No per-caller rate limit in the demo: `tollgate bench check`
        // against it measures the node, not the limit.
        config.limits.rate_per_second = 0;
        let port = if first_port == 0 {
            0
        } else {
            first_port + id as u16 - 1
        };
        nodes.push(
            RegionNode::start(
                config,
                RegionListeners {
                    raft: bind(0, "region raft").await?,
                    grpc: bind(port, "region check").await?,
                    http: Some(bind(0, "region status").await?),
                },
                Some(geo.clone()),
            )
            .await
            .with_context(|| format!("starting region {name}'s node {id}"))?,
        );
    }
    let members: Vec<_> = nodes
        .iter()
        .map(|n| (n.raft().id(), n.raft().addr().to_string()))
        .collect();
    match nodes[0].raft().initialize(&members).await {
        Ok(()) | Err(tollgate_raft::Error::AlreadyInitialized) => {}
        Err(e) => return Err(e).with_context(|| format!("initialising region {name}")),
    }
    Ok(nodes)
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let temp = match &args.data_dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().context("creating a temporary data directory")?),
    };
    let root = args.data_dir.clone().unwrap_or_else(|| {
        temp.as_ref()
            .expect("a temporary directory")
            .path()
            .to_path_buf()
    });

    let pki = if args.insecure_plaintext {
        tracing::warn!(
            "--insecure-plaintext: every port serves without TLS and without checking callers."
        );
        None
    } else {
        Some(DevPki::open(&root, tollgate_server::clock::now_secs())?)
    };
    let scheme = if pki.is_some() { "https" } else { "http" };
    let mut origin_config = OriginConfig::new(1, root.join("origin"));
    origin_config.raft.transport = node_transport(
        pki.as_ref(),
        "origin-node-1",
        tollgate_tls::Subject::OriginNode(1),
    )?;
    let origin = OriginNode::start(
        origin_config,
        OriginListeners {
            raft: bind(0, "origin raft").await?,
            http: bind(args.http_port, "origin http").await?,
            feed: bind(0, "origin feed").await?,
        },
    )
    .await
    .context("starting the origin")?;
    match origin
        .raft()
        .initialize(&[(1, origin.raft().addr().to_string())])
        .await
    {
        Ok(()) | Err(tollgate_raft::Error::AlreadyInitialized) => {}
        Err(e) => return Err(e).context("initialising the origin"),
    }
    origin
        .raft()
        .wait_until(Duration::from_secs(30), "origin leader", |m| {
            m.current_leader == Some(1)
        })
        .await?;
    let token_path = root.join("admin.token");
    let token = match origin.bootstrap_admin_key(&token_path).await? {
        Some(token) => {
            let demo: Dataset =
                serde_json::from_str(crate::eval::DEMO_DATA).context("the demo data")?;
            for m in demo.to_mutations() {
                let command = OriginCommand {
                    actor: "dev-seed".into(),
                    at: UnixSeconds(0),
                    reason: Some("tollgate dev demo data".into()),
                    op: Op::seed(m),
                };
                match origin.raft().write(command).await?.response {
                    OriginResponse::Rejected(r) => {
                        anyhow::bail!("seeding the demo data: {}", r.message)
                    }
                    _ => continue,
                }
            }
            token
        }
        None => std::fs::read_to_string(&token_path)
            .with_context(|| format!("reading {}", token_path.display()))?
            .trim()
            .to_string(),
    };

    // The application credential the demo's clients present on the regions'
    // check ports (every account, product and verb), made once with the
    // data and kept beside the admin key.
    let credential_path = root.join("app.credential");
    let credential = if credential_path.exists() {
        std::fs::read_to_string(&credential_path)
            .with_context(|| format!("reading {}", credential_path.display()))?
            .trim()
            .to_string()
    } else {
        let (credential, record) = tollgate_api::app_credentials::issue_credential(
            tollgate_api::app_credentials::NewCredential::everything("tollgate dev"),
            tollgate_server::clock::now(),
        )
        .map_err(|p| anyhow::anyhow!("a credential for the demo: {}", p.detail))?;
        let command = OriginCommand {
            actor: "dev-seed".into(),
            at: tollgate_server::clock::now(),
            reason: Some("tollgate dev application credential".into()),
            op: Op::PutCredential(record),
        };
        if let OriginResponse::Rejected(r) = origin.raft().write(command).await?.response {
            anyhow::bail!("creating the demo's credential: {}", r.message);
        }
        write_secret(&credential_path, &credential)?;
        credential
    };
    let geo =
        Arc::new(tollgate_geo::fixtures::demo_databases().context("building the demo geography")?);
    let credentials = match args.check_credentials {
        CheckCredentials::Required => tollgate_region_node::CredentialMode::Required,
        CheckCredentials::Off => tollgate_region_node::CredentialMode::Off,
    };
    let mut regions = Vec::new();
    for (index, name) in REGIONS.iter().enumerate() {
        let first_port = match args.check_port {
            0 => 0,
            port => port + (index as u16) * 10,
        };
        let nodes = start_region(
            &origin,
            &root,
            pki.as_ref(),
            name,
            first_port,
            geo.clone(),
            credentials,
        )
        .await?;
        regions.push((*name, nodes));
    }
    let head = origin.head_revision();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while regions
        .iter()
        .flat_map(|(_, nodes)| nodes)
        .any(|n| n.applied_revision() < head)
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the regions did not catch up with the origin in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let http = format!("{scheme}://{}", origin.http_addr());
    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "tollgate".into());
    let eu = format!("{scheme}://{}", regions[0].1[0].grpc_addr());
    let us = format!("{scheme}://{}", regions[1].1[0].grpc_addr());
    // With TLS, every command names the dev CA; cluster admin on a Raft
    // port also wants the operator certificate.
    let (ca_flag, operator_flags, ca_path) = match &pki {
        Some(pki) => {
            let operator = pki.files(
                "operator-dev",
                tollgate_tls::Subject::Operator("dev".into()),
                tollgate_server::clock::now_secs(),
            )?;
            let ca = pki.ca_path();
            (
                format!(" --ca {}", ca.display()),
                format!(
                    " --cert {} --key {}",
                    operator.cert.unwrap_or_default().display(),
                    operator.key.unwrap_or_default().display()
                ),
                Some(ca),
            )
        }
        None => (String::new(), String::new(), None),
    };
    let mut try_commands = vec![
        format!("{me} ctl{ca_flag} --credential {credential} check --endpoint {eu} --account acme --subject alice --feature export --ip 192.0.2.10"),
        format!("{me} ctl{ca_flag} --credential {credential} check --endpoint {us} --account acme --subject alice --feature export --ip 198.51.100.10"),
        format!("{me} ctl{ca_flag} --origin {http} --api-key {token} license issue --account acme --audience studio"),
        format!(
            "{me} ctl{ca_flag}{operator_flags} cluster status --endpoint {scheme}://{}",
            regions[0].1[0].raft().addr()
        ),
    ];
    if let Some(ca) = &ca_path {
        try_commands.push(format!(
            "curl --cacert {} {http}/.well-known/tollgate-keys.json",
            ca.display()
        ));
        try_commands.push(format!(
            "grpcurl -cacert {} {} list",
            ca.display(),
            regions[0].1[0].grpc_addr()
        ));
    }
    let endpoints = serde_json::json!({
        "tls": {
            "ca": ca_path,
            "insecure_plaintext": pki.is_none(),
        },
        "origin": {
            "rest": http,
            "feed": format!("{scheme}://{}", origin.feed_addr()),
            "metrics": format!("{http}/metrics"),
            "admin_api_key": token,
            "admin_api_key_file": token_path,
            "app_credential_file": credential_path,
            "public_keys": format!("{http}/.well-known/tollgate-keys.json"),
        },
        "regions": regions.iter().map(|(name, nodes)| serde_json::json!({
            "name": name,
            "nodes": nodes.iter().map(|n| {
                let status = n.http_addr().map(|a| format!("{scheme}://{a}")).unwrap_or_default();
                serde_json::json!({
                    "name": n.name(),
                    "check": format!("{scheme}://{}", n.grpc_addr()),
                    "raft": format!("{scheme}://{}", n.raft().addr()),
                    "status": format!("{status}/v1/status"),
                    "metrics": format!("{status}/metrics"),
                })
            }).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "data_dir": root,
        "try": try_commands,
    });
    let endpoints_path = root.join("endpoints.json");
    std::fs::write(
        &endpoints_path,
        serde_json::to_vec_pretty(&endpoints).context("the endpoints")?,
    )
    .with_context(|| format!("writing {}", endpoints_path.display()))?;

    println!(
        "tollgate dev: an origin and two three-node regions (eu, us) on loopback, with demo data"
    );
    println!("  origin REST     {http}   metrics {http}/metrics");
    println!(
        "  admin API key   {token}   (also in {})",
        token_path.display()
    );
    println!("  origin feed     {scheme}://{}", origin.feed_addr());
    for (name, nodes) in &regions {
        for n in nodes {
            println!(
                "  region {name:<8} check {scheme}://{}   status {scheme}://{}/v1/status",
                n.grpc_addr(),
                n.http_addr().map(|a| a.to_string()).unwrap_or_default()
            );
        }
    }
    match &ca_path {
        Some(ca) => println!(
            "  TLS CA          {}   (every port speaks TLS; give clients this CA)",
            ca.display()
        ),
        None => println!("  TLS             OFF (--insecure-plaintext): every port is in clear"),
    }
    println!(
        "  app credential  {credential}   (also in {}; TOLLGATE_CREDENTIAL for check, bench and ctl)",
        credential_path.display()
    );
    println!(
        "  data directory  {}{}",
        root.display(),
        if temp.is_some() {
            " (removed on exit)"
        } else {
            ""
        }
    );
    println!(
        "  endpoints       {} (the same, as JSON)",
        endpoints_path.display()
    );
    println!();
    println!("Try:");
    for command in endpoints["try"].as_array().into_iter().flatten() {
        println!("  {}", command.as_str().unwrap_or_default());
    }
    println!("Ctrl-C stops everything.");

    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    eprintln!("Stopping.");
    for n in regions.into_iter().flat_map(|(_, nodes)| nodes) {
        n.shutdown().await?;
    }
    origin.shutdown().await?;
    drop(temp);
    Ok(())
}

/// Writes a secret readable by its owner only, durably.
fn write_secret(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(secret.as_bytes())
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}
