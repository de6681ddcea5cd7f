//! One region node in a process of its own, for the tests that must stop
//! or kill a node the way an operating system does (SIGSTOP, SIGKILL),
//! which an in-process node cannot show: `sdk_hung_node` in the e2e suite.
//!
//! ```text
//! tollgate-test-region-node id=1 dir=<data dir> feed=https://127.0.0.1:<port> \
//!     keys=<origin public keys, JSON> ca=<ca.pem> cert=<node.pem> key=<node.key> \
//!     [region=region] [name=eu-1]
//! ```
//!
//! Binds 127.0.0.1:0 for its Raft, check and operations ports and prints
//! one line, `grpc=<addr> raft=<addr> http=<addr>`, on stdout (nothing
//! else goes there; logs go to stderr). Then reads commands from stdin:
//! `init <id>=<raft addr> ...` initialises the region with those members.
//! When stdin closes (the test ended, or died) the node shuts down and the
//! process exits, so a killed test leaves no node behind.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use tollgate_region_node::{RegionConfig, RegionListeners, RegionNode};
use tollgate_tls::{Subject, Tls, TlsFiles, Transport};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: BTreeMap<String, String> = std::env::args()
        .skip(1)
        .filter_map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    let arg = |name: &str| {
        args.get(name)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("missing argument {name}=..."))
    };
    let id: u64 = arg("id")?.parse()?;
    let region = args
        .get("region")
        .cloned()
        .unwrap_or_else(|| "region".into());
    let keys = serde_json::from_slice(&std::fs::read(arg("keys")?)?)?;
    let mut config = RegionConfig::new(id, PathBuf::from(arg("dir")?), arg("feed")?, keys);
    config.name = args
        .get("name")
        .cloned()
        .unwrap_or_else(|| format!("node-{id}"));
    config.region = region.clone();
    config.raft.transport = Transport::Tls(Tls::load(
        TlsFiles {
            ca: arg("ca")?.into(),
            cert: Some(arg("cert")?.into()),
            key: Some(arg("key")?.into()),
        },
        Some(Subject::RegionNode { region, node: id }),
        tollgate_tests::wall_clock_now().0,
    )?);

    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let bind = || async { tollgate_tls::net::bind(([127, 0, 0, 1], 0).into()) };
        let node = RegionNode::start(
            config,
            RegionListeners {
                raft: bind().await?.into(),
                grpc: bind().await?.into(),
                http: Some(bind().await?.into()),
            },
            None,
        )
        .await?;
        {
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "grpc={} raft={} http={}",
                node.grpc_addr(),
                node.raft().addr(),
                node.http_addr().expect("an operations port was given")
            )?;
            out.flush()?;
        }
        // Commands on stdin, read on a thread of their own.
        let (tx, mut commands) = tokio::sync::mpsc::channel::<String>(4);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.blocking_send(line).is_err() {
                    break;
                }
            }
        });
        while let Some(command) = commands.recv().await {
            let Some(members) = command.strip_prefix("init ") else {
                tracing::warn!(%command, "Unknown command.");
                continue;
            };
            let members: Vec<(u64, String)> = members
                .split_whitespace()
                .filter_map(|m| m.split_once('='))
                .filter_map(|(id, addr)| Some((id.parse().ok()?, addr.to_string())))
                .collect();
            node.raft().initialize(&members).await?;
            tracing::info!(members = members.len(), "Initialised the region.");
        }
        tracing::info!("Stdin closed: shutting down.");
        node.shutdown().await?;
        anyhow::Ok(())
    })
}
