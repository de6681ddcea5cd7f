//! `tollgate dev`: a whole deployment in one process on loopback, with no
//! config: an origin seeded with the demo data, and two three-node regions
//! (eu, us) that follow it and answer checks with a demo geography, each
//! with a license key the origin certified. It prints its endpoints and
//! writes them to `<data-dir>/endpoints.json`. Ctrl-C stops it cleanly.

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
    name: &str,
    first_port: u16,
    geo: Arc<tollgate_geo::GeoDatabases>,
    issuer_token: &str,
) -> anyhow::Result<Vec<RegionNode>> {
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
        issuer_token_sha256: tollgate_signing::digest::sha256_hex(issuer_token.as_bytes()),
    };
    let mut nodes = Vec::new();
    for id in 1..=3u64 {
        let mut config = RegionConfig::new(
            id,
            root.join(format!("region-{name}-{id}")),
            format!("http://{}", origin.feed_addr()),
            origin.public_keys(),
        );
        config.name = format!("{name}-{id}");
        config.region = name.into();
        config.license_issuer = Some(license_issuer.clone());
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

    let origin = OriginNode::start(
        OriginConfig::new(1, root.join("origin")),
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

    // The token callers present to have a region issue licenses.
    let issuer_token = {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        random
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let geo =
        Arc::new(tollgate_geo::fixtures::demo_databases().context("building the demo geography")?);
    let mut regions = Vec::new();
    for (index, name) in REGIONS.iter().enumerate() {
        let first_port = match args.check_port {
            0 => 0,
            port => port + (index as u16) * 10,
        };
        let nodes =
            start_region(&origin, &root, name, first_port, geo.clone(), &issuer_token).await?;
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

    let http = format!("http://{}", origin.http_addr());
    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "tollgate".into());
    let eu = format!("http://{}", regions[0].1[0].grpc_addr());
    let us = format!("http://{}", regions[1].1[0].grpc_addr());
    let try_commands = vec![
        format!("{me} ctl check --endpoint {eu} --account acme --subject alice --feature export --ip 192.0.2.10"),
        format!("{me} ctl check --endpoint {us} --account acme --subject alice --feature export --ip 198.51.100.10"),
        format!("{me} ctl --origin {http} --api-key {token} license issue --account acme --audience studio"),
    ];
    let endpoints = serde_json::json!({
        "origin": {
            "rest": http,
            "feed": format!("http://{}", origin.feed_addr()),
            "metrics": format!("{http}/metrics"),
            "admin_api_key": token,
            "admin_api_key_file": token_path,
            "public_keys": format!("{http}/.well-known/tollgate-keys.json"),
        },
        "regions": regions.iter().map(|(name, nodes)| serde_json::json!({
            "name": name,
            "license_issuer_token": issuer_token,
            "nodes": nodes.iter().map(|n| {
                let status = n.http_addr().map(|a| format!("http://{a}")).unwrap_or_default();
                serde_json::json!({
                    "name": n.name(),
                    "check": format!("http://{}", n.grpc_addr()),
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
    println!("  origin feed     http://{}", origin.feed_addr());
    for (name, nodes) in &regions {
        for n in nodes {
            println!(
                "  region {name:<8} check http://{}   status http://{}/v1/status",
                n.grpc_addr(),
                n.http_addr().map(|a| a.to_string()).unwrap_or_default()
            );
        }
    }
    println!("  license issuer  region token {issuer_token} (license/v1 IssueLicense on a region's check port)");
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
