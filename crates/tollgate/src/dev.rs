//! `tollgate dev`: a whole deployment in one process on loopback, with no
//! config: an origin seeded with the demo data, and two three-node regions
//! (eu, us) that follow it and answer checks with a demo geography, each
//! with a license key the origin certified. It prints its endpoints and
//! writes them to `<data-dir>/endpoints.json` once every region has caught
//! up with the origin. Ctrl-C (or SIGTERM) stops it cleanly, at any point.
//!
//! Every port speaks TLS, as in production: a throwaway CA in
//! `<data-dir>/tls/` issues each node its certificate (and an operator
//! certificate for `tollgate ctl cluster`), and the printed commands carry
//! `--ca`. `--insecure-plaintext` runs without TLS, on purpose only.
//!
//! Every port has a stable default from `--base-port` ([`ports`]), and a
//! data directory keeps the layout it was created with, so `tollgate dev
//! --data-dir D` starts again on D: the Raft clusters find their members
//! where their logs say they are, and the demo data is seeded once.

mod ports;

use crate::exit;
use anyhow::Context;
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tollgate_model::{Dataset, Mutation, UnixSeconds};
use tollgate_origin::{Op, OriginCommand, OriginResponse};
use tollgate_origin_node::{OriginConfig, OriginListeners, OriginNode};
use tollgate_region_node::{RegionConfig, RegionListeners, RegionNode};

/// `tollgate dev --help`, after the flags: the port layout and what a
/// restart keeps.
const DEV_HELP: &str = "\
Ports (all on 127.0.0.1), from --base-port B (default 7300):
  B+0..B+2    region eu, nodes 1-3: check service (gRPC)   7300-7302
  B+3..B+5    region eu, nodes 1-3: Raft                   7303-7305
  B+6..B+8    region eu, nodes 1-3: status and /metrics    7306-7308
  B+10..B+18  region us, the same                          7310-7318
  B+20        origin REST API and /metrics                 8080 without --base-port
  B+21        origin changefeed                            7321
  B+22        origin Raft                                  7322
--http-port and --check-port move the REST and check ports alone. --base-port 0
lets the system pick every port.

Restarting: <data-dir>/ports.json records the ports the data was created with,
and a start on that data uses them again. --http-port and --check-port may move
the REST and check ports; a different --base-port is refused at once (a Raft
cluster keeps its members' addresses in its log), so give a new --data-dir for
new ports. The demo data is seeded once, on the first start.

Exit codes: 0 stopped by Ctrl-C or SIGTERM once running; 1 a failure (e.g. a port
in use: the message names it and the flag that moves it); 2 flags that contradict
each other or the data; 130 (SIGINT) or 143 (SIGTERM) stopped while starting.";

#[derive(Debug, Args)]
#[command(after_help = DEV_HELP)]
pub struct DevArgs {
    /// Keep the data here, to start again on it later (default: a
    /// temporary directory, removed on exit).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The first of the 23 ports dev serves on (see the layout below;
    /// default 7300). 0: the system picks every port.
    #[arg(long, value_name = "PORT")]
    base_port: Option<u16>,
    /// The origin's REST API (default 8080, or B+20 with --base-port; 0:
    /// any free port).
    #[arg(long, value_name = "PORT")]
    http_port: Option<u16>,
    /// Region eu's check ports are this one and the next two, region us's
    /// this + 10 to + 12 (default: the base port; 0: any free ports).
    #[arg(long, value_name = "PORT")]
    check_port: Option<u16>,
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
        Some(pki) => pki.transport(name, subject, tollgate_clock::Clock::system().now_secs()),
        None => Ok(tollgate_tls::Transport::Plaintext),
    }
}

/// Flags that contradict each other or the data directory: exit 2, with a
/// message that says which flag to use.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// A signal that stops `dev`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopSignal {
    Interrupt,
    Terminate,
}

impl StopSignal {
    fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// The shell's convention, 128 + the signal's number.
    fn exit_code(self) -> u8 {
        match self {
            StopSignal::Interrupt => exit::INTERRUPTED,
            StopSignal::Terminate => exit::TERMINATED,
        }
    }
}

/// Stopped by a signal before the deployment was ready.
#[derive(Debug)]
struct Interrupted(StopSignal);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped by {} while starting", self.0.name())
    }
}

impl std::error::Error for Interrupted {}

/// SIGINT and SIGTERM, listened for from the first moment: a signal while
/// the deployment starts stops it too, in order.
struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn listen() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Signals {
                interrupt: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
                terminate: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// The next signal.
    async fn recv(&mut self) -> StopSignal {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = self.interrupt.recv() => StopSignal::Interrupt,
                Some(()) = self.terminate.recv() => StopSignal::Terminate,
                else => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            match tokio::signal::ctrl_c().await {
                Ok(()) => StopSignal::Interrupt,
                Err(_) => std::future::pending().await,
            }
        }
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
            if let Some(Interrupted(signal)) = error.downcast_ref::<Interrupted>() {
                eprintln!(
                    "Stopped by {} before the deployment was ready.",
                    signal.name()
                );
                return signal.exit_code();
            }
            eprintln!("error: {error:#}");
            if error.downcast_ref::<Refused>().is_some() {
                exit::INVALID_INPUT
            } else {
                exit::FAILURE
            }
        }
    }
}

/// The demo's regions, each of three nodes.
const REGIONS: [&str; 2] = ["eu", "us"];

/// How long the regions may take to catch up with the origin at start.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the origin may take to load its signing keys once it leads.
const KEYS_WAIT: Duration = Duration::from_secs(30);
/// Each node's `[limits] shutdown_deadline_ms` in the demo: Ctrl-C stops
/// everything within about this long (the nodes stop together), however
/// much is in flight.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Every listener of one `tollgate dev`, bound before any node starts, and
/// the layout as bound (the ports the system picked for 0).
struct Bound {
    origin: OriginListeners,
    /// Per region, node 1 first.
    regions: Vec<Vec<RegionListeners>>,
    layout: ports::Layout,
}

/// Binds every port of `layout` on 127.0.0.1, failing at the first one
/// in use with a message naming it and what to do.
async fn bind_all(
    layout: &ports::Layout,
    from: ports::Origin,
    root: &Path,
) -> anyhow::Result<Bound> {
    let mut bound = Vec::new();
    for port in layout.uses() {
        let listener =
            tollgate_tls::net::bind(std::net::SocketAddr::from(([127, 0, 0, 1], port.port)))
                .map_err(|error| bind_error(&port, from, root, error))?;
        bound.push(listener);
    }
    let mut listeners = bound.into_iter();
    let mut next = || {
        listeners
            .next()
            .expect("one listener per port of the layout")
    };
    let origin = OriginListeners {
        http: next().into(),
        feed: next().into(),
        raft: next().into(),
    };
    let mut regions = Vec::new();
    for _ in &layout.regions {
        let check: Vec<_> = (0..ports::REGION_NODES).map(|_| next()).collect();
        let raft: Vec<_> = (0..ports::REGION_NODES).map(|_| next()).collect();
        let status: Vec<_> = (0..ports::REGION_NODES).map(|_| next()).collect();
        regions.push(
            check
                .into_iter()
                .zip(raft)
                .zip(status)
                .map(|((grpc, raft), http)| RegionListeners {
                    raft: raft.into(),
                    grpc: grpc.into(),
                    http: Some(http.into()),
                })
                .collect::<Vec<_>>(),
        );
    }
    let port = |l: &tollgate_tls::net::TcpListener| {
        l.local_addr().map(|a| a.port()).context("a bound port")
    };
    let mut concrete = layout.clone();
    concrete.origin = ports::OriginPorts {
        rest: port(&origin.http)?,
        feed: port(&origin.feed)?,
        raft: port(&origin.raft)?,
    };
    for (ports, listeners) in concrete.regions.iter_mut().zip(&regions) {
        for (node, l) in listeners.iter().enumerate() {
            ports.check[node] = port(&l.grpc)?;
            ports.raft[node] = port(&l.raft)?;
            ports.status[node] = match &l.http {
                Some(http) => port(http)?,
                None => 0,
            };
        }
    }
    Ok(Bound {
        origin,
        regions,
        layout: concrete,
    })
}

/// Why `port` could not be bound, and what to do about it.
fn bind_error(
    port: &ports::Use,
    from: ports::Origin,
    root: &Path,
    error: std::io::Error,
) -> anyhow::Error {
    let at = format!("port {} ({})", port.port, port.what);
    if error.kind() != std::io::ErrorKind::AddrInUse {
        return anyhow::anyhow!("cannot listen on 127.0.0.1:{}, {at}: {error}", port.port);
    }
    let record = root.join(ports::FILE);
    let advice = match (from, port.role) {
        (ports::Origin::Flags, role) => match role.own_flag() {
            Some(flag) => {
                format!("choose another with {flag} (or move every port with --base-port)")
            }
            None => format!(
                "choose free ports with --base-port (dev takes {} from it; 0 lets the system pick)",
                ports::SPAN
            ),
        },
        (ports::Origin::Recorded, role) if role.is_raft() => format!(
            "this data's Raft clusters were created with it ({}), and Raft ports cannot move under \
             existing data: stop what holds it (another tollgate dev on this data?), or start on a \
             new --data-dir",
            record.display()
        ),
        (ports::Origin::Recorded, role) if role.own_flag().is_some() => format!(
            "choose another with {} (the layout this data keeps is in {})",
            role.flag(),
            record.display()
        ),
        (ports::Origin::Recorded, _) => format!(
            "this data keeps the ports it was created with ({}): stop what holds it (another \
             tollgate dev on this data?), or start on a new --data-dir",
            record.display()
        ),
    };
    anyhow::anyhow!("{at} is in use: {advice}")
}

/// Region Raft ports an earlier `tollgate dev`, which picked them at
/// random and kept no `ports.json`, listed in `endpoints.json`: a data
/// directory it made starts again on them.
fn legacy_raft_ports(root: &Path) -> Option<Vec<[u16; ports::REGION_NODES]>> {
    let listed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("endpoints.json")).ok()?).ok()?;
    REGIONS
        .iter()
        .map(|name| {
            let region = listed["regions"]
                .as_array()?
                .iter()
                .find(|r| r["name"] == *name)?;
            let ports: Vec<u16> = region["nodes"]
                .as_array()?
                .iter()
                .map(|n| n["raft"].as_str()?.rsplit(':').next()?.parse().ok())
                .collect::<Option<_>>()?;
            ports.try_into().ok()
        })
        .collect()
}

/// The nodes started so far, stopped in order on the way out.
#[derive(Default)]
struct Running {
    origin: Option<OriginNode>,
    regions: Vec<(&'static str, Vec<RegionNode>)>,
}

impl Running {
    /// Stops every region node (together: each within its shutdown
    /// deadline), then the origin.
    async fn shutdown(self) -> anyhow::Result<()> {
        let mut stopping = tokio::task::JoinSet::new();
        for (name, nodes) in self.regions {
            for node in nodes {
                stopping.spawn(async move {
                    let node_name = node.name().to_string();
                    node.shutdown()
                        .await
                        .with_context(|| format!("stopping region {name}'s node {node_name}"))
                });
            }
        }
        let mut first_error = None;
        while let Some(stopped) = stopping.join_next().await {
            let error = match stopped {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => error,
                Err(error) => anyhow::anyhow!("a region node's shutdown failed: {error}"),
            };
            tracing::warn!(error = %format!("{error:#}"), "A region node did not stop cleanly.");
            first_error.get_or_insert(error);
        }
        if let Some(origin) = self.origin {
            origin.shutdown().await.context("stopping the origin")?;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stops region nodes that never served (their Raft ports did not
    /// match their logs, so they could not elect a leader, and a graceful
    /// stop would wait its whole deadline for one) at once, then the origin
    /// in order.
    async fn abandon(self) -> anyhow::Result<()> {
        for node in self.regions.into_iter().flat_map(|(_, nodes)| nodes) {
            node.crash().await;
        }
        match self.origin {
            Some(origin) => origin.shutdown().await.context("stopping the origin"),
            None => Ok(()),
        }
    }

    /// [`Running::shutdown`]; a second signal meanwhile ends the process
    /// at once.
    async fn stop(self, signals: &mut Signals) -> anyhow::Result<()> {
        tokio::select! {
            stopped = self.shutdown() => stopped,
            signal = signals.recv() => {
                eprintln!("{} again: exiting without waiting for the nodes to stop.", signal.name());
                std::process::exit(i32::from(signal.exit_code()));
            }
        }
    }
}

/// What a Raft member's log says its cluster's members are (id and
/// address), or `None` for a member never initialised or that has not
/// received its cluster's membership yet.
async fn stored_members<L: tollgate_raft::StateMachineLogic>(
    node: &tollgate_raft::Node<L>,
) -> anyhow::Result<Option<BTreeMap<u64, String>>> {
    let raft = node.raft();
    if !raft
        .is_initialized()
        .await
        .context("reading the Raft state")?
    {
        return Ok(None);
    }
    let members = raft
        .with_raft_state(|state| {
            state
                .membership_state
                .effective()
                .nodes()
                .map(|(id, node)| (*id, node.addr.clone()))
                .collect::<BTreeMap<_, _>>()
        })
        .await
        .context("reading the Raft membership")?;
    // A member that has heard from a peer (a vote) before its cluster's
    // membership reached it counts as initialised, yet names no one.
    Ok((!members.is_empty()).then_some(members))
}

/// `1=127.0.0.1:7303, 2=...`.
fn members_text(members: &BTreeMap<u64, String>) -> String {
    members
        .iter()
        .map(|(id, addr)| format!("{id}={addr}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Starts region `name`'s three nodes on `listeners`, with a license key
/// the origin certified, into `nodes`, and initialises the region on
/// first start; on a restart, checks that the region's log names its
/// members where they now listen.
#[allow(clippy::too_many_arguments)]
async fn start_region(
    origin: &OriginNode,
    root: &Path,
    pki: Option<&DevPki>,
    name: &str,
    listeners: Vec<RegionListeners>,
    geo: Arc<tollgate_geo::GeoDatabases>,
    credentials: tollgate_region_node::CredentialMode,
    nodes: &mut Vec<RegionNode>,
) -> anyhow::Result<()> {
    let scheme = if pki.is_some() { "https" } else { "http" };
    let region_key = tollgate_signing::KeyRing::load_or_create(
        &root.join(format!("region-{name}-license-key.json")),
        UnixSeconds(0),
    )?
    .active_signing_key()
    .1
    .clone();
    // The origin's keys, once its replicated ring is loaded (it leads).
    let origin_keys = origin
        .wait_for_keys(KEYS_WAIT)
        .await
        .context("the origin's public keys")?;
    let license_issuer = tollgate_region_node::RegionIssuerConfig {
        certificate: region_certificate(
            origin,
            &origin_keys,
            root,
            name,
            region_key.verifying_key().to_bytes(),
        )
        .await?,
        signing_key: region_key,
    };
    let mut starting = tokio::task::JoinSet::new();
    for (id, listeners) in (1u64..).zip(listeners) {
        let mut config = RegionConfig::new(
            id,
            root.join(format!("region-{name}-{id}")),
            format!("{scheme}://{}", origin.feed_addr()),
            origin_keys.clone(),
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
        config.limits.shutdown_deadline = SHUTDOWN_DEADLINE;
        let geo = geo.clone();
        let name = name.to_string();
        starting.spawn(async move {
            let started = RegionNode::start(config, listeners, Some(geo))
                .await
                .with_context(|| format!("starting region {name}'s node {id}"));
            (id, started)
        });
    }
    // Together, so that no member waits long for a peer that is not
    // serving yet (each would count it a failed Raft call).
    let mut started = Vec::new();
    while let Some(joined) = starting.join_next().await {
        started.push(joined.context("a region node's start failed")?);
    }
    started.sort_by_key(|(id, _)| *id);
    let mut first_error = None;
    for (_, node) in started {
        match node {
            Ok(node) => nodes.push(node),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    if let Some(error) = first_error {
        return Err(error);
    }
    let members: BTreeMap<u64, String> = nodes
        .iter()
        .map(|n| (n.raft().id(), n.raft().addr().to_string()))
        .collect();
    let mut initialized = false;
    for node in nodes.iter() {
        let Some(stored) = stored_members(node.raft()).await? else {
            continue;
        };
        initialized = true;
        if stored != members {
            return Err(Refused(format!(
                "region {name}'s Raft log names its members at {}, but they now listen at {}: the data in {} \
                 was made with other Raft ports (by an older tollgate dev, which picked them at random, \
                 or with {} edited or removed), and Raft ports cannot move under existing data. Start on \
                 a new --data-dir.",
                members_text(&stored),
                members_text(&members),
                root.display(),
                ports::FILE
            ))
            .into());
        }
    }
    if !initialized {
        let members: Vec<_> = members.into_iter().collect();
        match nodes[0].raft().initialize(&members).await {
            Ok(()) | Err(tollgate_raft::Error::AlreadyInitialized) => {}
            Err(e) => return Err(e).with_context(|| format!("initialising region {name}")),
        }
    }
    Ok(())
}

/// The origin's certificate of region `name`'s license key, kept in
/// `<root>/region-<name>-license-certificate.json` and used again while it
/// verifies, certifies this key (`public_key`), is not revoked and has more than a day
/// left; otherwise the origin certifies the key anew.
async fn region_certificate(
    origin: &OriginNode,
    origin_keys: &tollgate_signing::PublicKeySet,
    root: &Path,
    name: &str,
    public_key: [u8; 32],
) -> anyhow::Result<tollgate_signing::Signed> {
    let path = root.join(format!("region-{name}-license-certificate.json"));
    let now = tollgate_clock::Clock::system().now();
    let kept = std::fs::read(&path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<tollgate_signing::Signed>(&bytes).ok());
    if let Some(signed) = kept {
        // Kept only if it verifies, is this key's, lasts another day and is
        // certainly not revoked: a failed read of the revocation issues a
        // new certificate rather than trusting the old one.
        let usable = tollgate_license::verify_certificate(origin_keys, &signed, now).is_ok_and(
            |(cert, certified)| {
                let revocation =
                    tollgate_origin::keys::revoked_certificate(&cert.serial.to_string());
                certified.to_bytes() == public_key
                    && cert.region == name
                    && cert.not_after.0 > now.0 + 86_400
                    && matches!(origin.raft().view().get(&revocation), Ok(None))
            },
        );
        if usable {
            return Ok(signed);
        }
    }
    let certificate = origin
        .certify_region(
            name,
            tollgate_api::licensing::CertifyRegion {
                public_key: base64::Engine::encode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    public_key,
                ),
                valid_seconds: None,
                token_ttl_max_seconds: None,
            },
        )
        .await?
        .certificate;
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&certificate).context("a region certificate")?,
    )
    .with_context(|| format!("writing {}", path.display()))?;
    Ok(certificate)
}

/// The demo data's mutations that `held` lacks, by id: all of them on a
/// fresh origin, none once seeded, the rest after a start that stopped
/// half-way through seeding. What is there is never written again (a
/// grant of an existing entitlement would be refused).
fn demo_missing(demo: &Dataset, held: &Dataset) -> Vec<Mutation> {
    let c = &held.catalog;
    demo.to_mutations()
        .into_iter()
        .filter(|m| match m {
            Mutation::PutProduct(p) => !c.products.contains_key(&p.id),
            Mutation::PutFeature(f) => !c.features.contains_key(&f.id),
            Mutation::PutPlan(p) => !c.plans.contains_key(&p.id),
            Mutation::PutAddon(a) => !c.addons.contains_key(&a.id),
            Mutation::PutSku(s) => !c.skus.contains_key(&s.id),
            Mutation::SetDefaultOfflinePolicy(p) => c.default_offline_policy != *p,
            Mutation::PutAccount(a) => !held.accounts.iter().any(|x| x.id == a.id),
            Mutation::PutSubject(s) => !held
                .subjects
                .iter()
                .any(|x| x.account == s.account && x.id == s.id),
            Mutation::DeleteSubject { .. } => false,
            Mutation::PutEntitlement(e) => !held.entitlements.iter().any(|x| x.id == e.id),
            Mutation::RevokeLicense(r) => !held.revoked_licenses.iter().any(|x| x.id == r.id),
            Mutation::RevokeCertificate(r) => !held
                .revoked_certificates
                .iter()
                .any(|x| x.serial == r.serial),
            Mutation::PutCredential(_) => true,
            Mutation::ReleaseSeat { .. } => false,
        })
        .collect()
}

/// Seeds the demo data, once: `<root>/demo-seeded` marks it done, and a
/// start after one that stopped while seeding writes only what is missing.
async fn seed_demo(origin: &OriginNode, root: &Path) -> anyhow::Result<()> {
    let marker = root.join("demo-seeded");
    if marker.exists() {
        return Ok(());
    }
    let demo: Dataset = serde_json::from_str(crate::eval::DEMO_DATA).context("the demo data")?;
    let held = origin
        .served_dataset()
        .context("reading the origin's data")?;
    let missing = demo_missing(&demo, &held);
    tracing::info!(
        mutations = missing.len(),
        "Seeding the demo data the origin lacks."
    );
    for m in missing {
        let command = OriginCommand {
            actor: "dev-seed".into(),
            at: UnixSeconds(0),
            reason: Some("tollgate dev demo data".into()),
            op: Op::seed(m),
        };
        if let OriginResponse::Rejected(r) = origin.raft().write(command).await?.response {
            anyhow::bail!("seeding the demo data: {}", r.message);
        }
    }
    std::fs::write(
        &marker,
        "The demo data was seeded into this origin; tollgate dev does not seed it again.\n",
    )
    .with_context(|| format!("writing {}", marker.display()))
}

/// A demo portal user `dev` prints.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PortalSignIn {
    /// Who they are: `customer` or `vendor`.
    who: String,
    email: String,
    password: String,
}

/// The demo's portal users, made once with random passwords and kept in
/// `<root>/portal-sign-ins.json` (readable by its owner only): a customer
/// administrator of acme and a vendor administrator.
async fn portal_sign_ins(origin: &OriginNode, root: &Path) -> anyhow::Result<Vec<PortalSignIn>> {
    use tollgate_origin::portal::{PortalRole, PortalUser};
    let path = root.join("portal-sign-ins.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            return serde_json::from_slice(&bytes)
                .with_context(|| format!("reading {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    }
    let users = [
        (
            "customer",
            "admin@acme.example",
            "Alice Admin (acme)",
            PortalRole::CustomerAdmin,
            Some("acme"),
        ),
        (
            "vendor",
            "admin@vendor.example",
            "Vera Vendor",
            PortalRole::VendorAdmin,
            None,
        ),
    ];
    let mut sign_ins = Vec::new();
    for (who, email, name, role, account) in users {
        let mut random = [0u8; 12];
        tollgate_clock::random::fill(&mut random)
            .map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let password: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let hash = {
            let password = password.clone();
            tokio::task::spawn_blocking(move || tollgate_portal::hash_password(&password))
                .await
                .context("hashing a demo password")??
        };
        let user = PortalUser {
            id: email.to_string(),
            name: name.to_string(),
            role,
            account: account
                .map(|a| tollgate_model::AccountId::try_from(a.to_string()))
                .transpose()
                .map_err(|e| anyhow::anyhow!("demo account: {e}"))?,
            password_hash: Some(hash),
            oidc_subject: None,
            invite: None,
            failed_sign_ins: 0,
            locked_until: None,
            disabled: false,
            created_at: tollgate_clock::Clock::system().now(),
            sessions: Vec::new(),
        };
        // A user left by a start that stopped before the file was written
        // is replaced with a new password (PutPortalUser keeps a stored
        // hash, so delete it first).
        let stored = tollgate_raft::ReadState::get(
            &origin.raft().view(),
            &tollgate_origin::keys::portal_user(email),
        )
        .map_err(|e| anyhow::anyhow!("reading the origin's portal users: {}", e.0))?;
        if stored.is_some() {
            write_command(
                origin,
                Op::DeletePortalUser {
                    id: email.to_string(),
                },
            )
            .await?;
        }
        write_command(origin, Op::CreatePortalUser(user)).await?;
        sign_ins.push(PortalSignIn {
            who: who.to_string(),
            email: email.to_string(),
            password,
        });
    }
    write_secret(&path, &serde_json::to_string_pretty(&sign_ins)?)?;
    Ok(sign_ins)
}

async fn write_command(origin: &OriginNode, op: Op) -> anyhow::Result<()> {
    let command = OriginCommand {
        actor: "dev-seed".into(),
        at: tollgate_clock::Clock::system().now(),
        reason: Some("tollgate dev portal users".into()),
        op,
    };
    if let OriginResponse::Rejected(r) = origin.raft().write(command).await?.response {
        anyhow::bail!("seeding the demo's portal users: {}", r.message);
    }
    Ok(())
}

/// The admin API key's token: the one in `token_path`; on a new origin
/// the bootstrap key, written there. A start stopped after the origin
/// committed its key but before the file was written leaves keys and no
/// file: then a new admin key, since no secret is ever shown again.
async fn admin_token(origin: &OriginNode, token_path: &Path) -> anyhow::Result<String> {
    match std::fs::read_to_string(token_path) {
        Ok(token) => return Ok(token.trim().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", token_path.display())),
    }
    if let Some(token) = origin.bootstrap_admin_key(token_path).await? {
        return Ok(token);
    }
    let issued = tollgate_api::auth::issue_key(
        "tollgate dev admin",
        [tollgate_origin::Scope::Admin].into(),
        tollgate_clock::Clock::system().now(),
    )
    .map_err(|p| anyhow::anyhow!("an admin key for the demo: {}", p.detail))?;
    let command = OriginCommand {
        actor: "dev-bootstrap".into(),
        at: tollgate_clock::Clock::system().now(),
        reason: Some(format!("{} was lost", token_path.display())),
        op: Op::PutApiKey(issued.record),
    };
    if let OriginResponse::Rejected(r) = origin.raft().write(command).await?.response {
        anyhow::bail!("creating the demo's admin key: {}", r.message);
    }
    write_secret(token_path, &issued.token)?;
    tracing::warn!(path = %token_path.display(), "The admin key's file was missing; made a new admin key.");
    Ok(issued.token)
}

/// What `start` made that the banner and endpoints.json show.
struct Ready {
    portal: Vec<PortalSignIn>,
    token: String,
    token_path: PathBuf,
    credential: String,
    credential_path: PathBuf,
}

/// Starts the origin and the regions on `bound`, into `running` (so that
/// a signal meanwhile stops what started), and waits until every region
/// has caught up with the origin.
async fn start(
    args: &DevArgs,
    root: &Path,
    pki: Option<&DevPki>,
    bound: Bound,
    running: &mut Running,
) -> anyhow::Result<Ready> {
    let Bound {
        origin: origin_listeners,
        regions: region_listeners,
        ..
    } = bound;
    let mut origin_config = OriginConfig::new(1, root.join("origin"));
    origin_config.raft.transport =
        node_transport(pki, "origin-node-1", tollgate_tls::Subject::OriginNode(1))?;
    origin_config.limits.shutdown_deadline = SHUTDOWN_DEADLINE;
    let origin = running.origin.insert(
        OriginNode::start(origin_config, origin_listeners)
            .await
            .context("starting the origin")?,
    );
    match stored_members(origin.raft()).await? {
        None => match origin
            .raft()
            .initialize(&[(1, origin.raft().addr().to_string())])
            .await
        {
            Ok(()) | Err(tollgate_raft::Error::AlreadyInitialized) => {}
            Err(e) => return Err(e).context("initialising the origin"),
        },
        // A cluster of one reaches no one: the address its log gives
        // itself does not matter.
        Some(members) if members.keys().eq([&1]) => {}
        Some(members) => {
            return Err(Refused(format!(
                "the origin's Raft log in {} names members {}: not an origin tollgate dev made; start on a new --data-dir",
                root.display(),
                members_text(&members)
            ))
            .into())
        }
    }
    // Leading, and with its whole log applied: what it holds is what the
    // data directory holds, so seeding sees what is already there.
    origin
        .raft()
        .wait_until(
            Duration::from_secs(30),
            "the origin to lead and apply its log",
            |m| {
                m.current_leader == Some(1)
                    && m.last_applied.as_ref().map(|l| l.index) >= m.last_log_index
            },
        )
        .await?;
    let token_path = root.join("admin.token");
    let token = admin_token(origin, &token_path).await?;
    seed_demo(origin, root).await?;
    let portal = portal_sign_ins(origin, root).await?;

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
            tollgate_clock::Clock::system().now(),
        )
        .map_err(|p| anyhow::anyhow!("a credential for the demo: {}", p.detail))?;
        let command = OriginCommand {
            actor: "dev-seed".into(),
            at: tollgate_clock::Clock::system().now(),
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
    let origin = running.origin.as_ref().expect("the origin started");
    for (name, listeners) in REGIONS.iter().zip(region_listeners) {
        running.regions.push((name, Vec::new()));
        let (_, nodes) = running.regions.last_mut().expect("just pushed");
        start_region(
            origin,
            root,
            pki,
            name,
            listeners,
            geo.clone(),
            credentials,
            nodes,
        )
        .await?;
    }

    let head = origin.head_revision();
    let deadline = tokio::time::Instant::now() + CATCH_UP_TIMEOUT;
    loop {
        let behind: Vec<String> = running
            .regions
            .iter()
            .flat_map(|(_, nodes)| nodes)
            .filter(|n| n.applied_revision() < head)
            .map(|n| format!("{} at {}", n.name(), n.applied_revision()))
            .collect();
        if behind.is_empty() {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the regions did not catch up with the origin's revision {head} in {} s: {}",
            CATCH_UP_TIMEOUT.as_secs(),
            behind.join(", ")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Ready {
        portal,
        token,
        token_path,
        credential,
        credential_path,
    })
}

async fn dev(args: DevArgs) -> anyhow::Result<()> {
    let mut signals = Signals::listen()?;
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
    std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;

    // Where every node listens: what the data was created with, or what
    // the flags say for new data; refused before anything is bound.
    let requested = ports::Requested {
        base: args.base_port,
        http: args.http_port,
        check: args.check_port,
    };
    let recorded = ports::read(&root).map_err(Refused)?;
    let legacy = match recorded {
        None => legacy_raft_ports(&root),
        Some(_) => None,
    };
    let (mut layout, from) = ports::resolve(
        requested,
        recorded.as_ref(),
        &REGIONS,
        &root.display().to_string(),
    )
    .map_err(Refused)?;
    if let Some(legacy) = legacy {
        tracing::info!(
            "Keeping the region Raft ports an earlier tollgate dev listed in endpoints.json."
        );
        for (ports, raft) in layout.regions.iter_mut().zip(legacy) {
            ports.raft = raft;
        }
    }
    let pki = if args.insecure_plaintext {
        tracing::warn!(
            "--insecure-plaintext: every port serves without TLS and without checking callers."
        );
        None
    } else {
        Some(DevPki::open(
            &root,
            tollgate_clock::Clock::system().now_secs(),
        )?)
    };
    let bound = bind_all(&layout, from, &root).await?;
    // endpoints.json says the deployment is ready (scripts wait for it):
    // the previous run's goes now (once this one has its ports: not while
    // another dev serves this data), and the new one comes once every region
    // has caught up.
    let endpoints_path = root.join("endpoints.json");
    match std::fs::remove_file(&endpoints_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", endpoints_path.display())),
    }

    let layout = bound.layout.clone();
    ports::write(&root, &layout)
        .with_context(|| format!("writing {}", root.join(ports::FILE).display()))?;

    let mut running = Running::default();
    let started = tokio::select! {
        ready = start(&args, &root, pki.as_ref(), bound, &mut running) => ready,
        signal = signals.recv() => Err(Interrupted(signal).into()),
    };
    let ready = match started {
        Ok(ready) => ready,
        Err(error) => {
            if let Some(Interrupted(signal)) = error.downcast_ref::<Interrupted>() {
                eprintln!("{}: stopping what started.", signal.name());
            }
            let stopped = if error.downcast_ref::<Refused>().is_some() {
                running.abandon().await
            } else {
                running.stop(&mut signals).await
            };
            if let Err(stop_error) = stopped {
                tracing::warn!(error = %format!("{stop_error:#}"), "Stopping after a failed start.");
            }
            return Err(error);
        }
    };

    let samples = announce(
        &args,
        &root,
        pki.as_ref(),
        &running,
        &ready,
        &layout,
        temp.is_some(),
    )?;
    let endpoints = endpoints_json(pki.as_ref(), &running, &ready, &layout, &root, &samples);
    let tmp = root.join("endpoints.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(&endpoints).context("the endpoints")?,
    )
    .and_then(|()| std::fs::rename(&tmp, &endpoints_path))
    .with_context(|| format!("writing {}", endpoints_path.display()))?;
    // The banner's last line comes once endpoints.json is in place, so a
    // script that waits for either finds both.
    println!("Ctrl-C stops everything.");

    let signal = signals.recv().await;
    eprintln!(
        "Stopping ({}): in flight work drains for up to {} s; another signal exits at once.",
        signal.name(),
        SHUTDOWN_DEADLINE.as_secs()
    );
    running.stop(&mut signals).await?;
    drop(temp);
    Ok(())
}

/// A command `dev` suggests, what it shows and the exit code it gives.
struct Sample {
    about: String,
    command: String,
    exit: u8,
}

fn scheme(pki: Option<&DevPki>) -> &'static str {
    if pki.is_some() {
        "https"
    } else {
        "http"
    }
}

/// The commands to try against this deployment.
fn samples(pki: Option<&DevPki>, running: &Running, ready: &Ready) -> anyhow::Result<Vec<Sample>> {
    let scheme = scheme(pki);
    let origin = running.origin.as_ref().expect("the origin runs");
    let http = format!("{scheme}://{}", origin.http_addr());
    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "tollgate".into());
    let eu = &running.regions[0].1[0];
    let us = &running.regions[1].1[0];
    // With TLS, every command names the dev CA; cluster admin on a Raft
    // port also wants the operator certificate.
    let (ca_flag, operator_flags) = match pki {
        Some(pki) => {
            let operator = pki.files(
                "operator-dev",
                tollgate_tls::Subject::Operator("dev".into()),
                tollgate_clock::Clock::system().now_secs(),
            )?;
            (
                format!(" --ca {}", pki.ca_path().display()),
                format!(
                    " --cert {} --key {}",
                    operator.cert.unwrap_or_default().display(),
                    operator.key.unwrap_or_default().display()
                ),
            )
        }
        None => (String::new(), String::new()),
    };
    let credential = &ready.credential;
    let token = &ready.token;
    let mut samples = vec![
        Sample {
            about: "region eu checks alice, at acme, from Germany (192.0.2.10): ALLOW, exit 0".into(),
            command: format!(
                "{me} ctl check{ca_flag} --credential {credential} --endpoint {scheme}://{} --account acme --subject alice --feature export --ip 192.0.2.10",
                eu.grpc_addr()
            ),
            exit: exit::OK,
        },
        Sample {
            about: "region us, the same check from the United States (198.51.100.10): acme's plan \
                    is for Europe only, so DENIED, GEO_BLOCKED, exit 10 (a denial is an answer, not \
                    a failure)"
                .into(),
            command: format!(
                "{me} ctl check{ca_flag} --credential {credential} --endpoint {scheme}://{} --account acme --subject alice --feature export --ip 198.51.100.10",
                us.grpc_addr()
            ),
            exit: exit::DENIED,
        },
        Sample {
            about: "a license token for acme, signed by the origin: exit 0".into(),
            command: format!(
                "{me} ctl{ca_flag} --origin {http} --api-key {token} license issue --account acme --audience studio"
            ),
            exit: exit::OK,
        },
        Sample {
            about: "region eu's Raft cluster, with the operator certificate: exit 0".into(),
            command: format!(
                "{me} ctl{ca_flag}{operator_flags} cluster status --endpoint {scheme}://{}",
                eu.raft().addr()
            ),
            exit: exit::OK,
        },
    ];
    if let Some(pki) = pki {
        samples.push(Sample {
            about: "the origin's public key set, which verifies its tokens offline".into(),
            command: format!(
                "curl --cacert {} {http}/.well-known/tollgate-keys.json",
                pki.ca_path().display()
            ),
            exit: 0,
        });
        samples.push(Sample {
            about: "the services a region node offers, by gRPC reflection".into(),
            command: format!(
                "grpcurl -cacert {} {} list",
                pki.ca_path().display(),
                eu.grpc_addr()
            ),
            exit: 0,
        });
    }
    Ok(samples)
}

/// Prints what runs where, and the commands to try; returns those.
fn announce(
    args: &DevArgs,
    root: &Path,
    pki: Option<&DevPki>,
    running: &Running,
    ready: &Ready,
    layout: &ports::Layout,
    temporary: bool,
) -> anyhow::Result<Vec<Sample>> {
    let scheme = scheme(pki);
    let origin = running.origin.as_ref().expect("the origin runs");
    let http = format!("{scheme}://{}", origin.http_addr());
    let samples = samples(pki, running, ready)?;
    println!(
        "tollgate dev: an origin and two three-node regions (eu, us) on loopback, with demo data"
    );
    println!("  origin REST     {http}   metrics {http}/metrics");
    println!(
        "  admin API key   {}   (also in {})",
        ready.token,
        ready.token_path.display()
    );
    println!("  portal          {http}/portal/");
    for sign_in in &ready.portal {
        println!(
            "    sign in as the {:<9} {} / {}",
            sign_in.who, sign_in.email, sign_in.password
        );
    }
    println!("  origin feed     {scheme}://{}", origin.feed_addr());
    for (name, nodes) in &running.regions {
        for n in nodes {
            println!(
                "  region {name:<8} check {scheme}://{}   status {scheme}://{}/v1/status",
                n.grpc_addr(),
                n.http_addr().map(|a| a.to_string()).unwrap_or_default()
            );
        }
    }
    println!(
        "  Raft ports      {}   (kept with the data: {})",
        layout.raft_ports(),
        root.join(ports::FILE).display()
    );
    match pki {
        Some(pki) => println!(
            "  TLS CA          {}   (every port speaks TLS; give clients this CA)",
            pki.ca_path().display()
        ),
        None => println!("  TLS             OFF (--insecure-plaintext): every port is in clear"),
    }
    println!(
        "  app credential  {}   (also in {}; TOLLGATE_CREDENTIAL for ctl check, bench and ctl)",
        ready.credential,
        ready.credential_path.display()
    );
    println!(
        "  data directory  {}{}",
        root.display(),
        if temporary {
            " (removed on exit)"
        } else {
            "   (start again on it: tollgate dev --data-dir <it>)"
        }
    );
    println!(
        "  endpoints       {} (the same, as JSON)",
        root.join("endpoints.json").display()
    );
    if args.insecure_plaintext {
        println!("  (--insecure-plaintext: nothing here is protected)");
    }
    println!();
    println!("Try (exit codes: 0 allowed or done, 10 denied, 1 failure, 2 invalid input):");
    for sample in &samples {
        println!("  # {}", sample.about);
        println!("  {}", sample.command);
    }
    Ok(samples)
}

/// `<data-dir>/endpoints.json`: what [`announce`] printed, for scripts.
fn endpoints_json(
    pki: Option<&DevPki>,
    running: &Running,
    ready: &Ready,
    layout: &ports::Layout,
    root: &Path,
    samples: &[Sample],
) -> serde_json::Value {
    let scheme = scheme(pki);
    let origin = running.origin.as_ref().expect("the origin runs");
    let http = format!("{scheme}://{}", origin.http_addr());
    serde_json::json!({
        "tls": {
            "ca": pki.map(DevPki::ca_path),
            "insecure_plaintext": pki.is_none(),
        },
        "origin": {
            "rest": http,
            "feed": format!("{scheme}://{}", origin.feed_addr()),
            "raft": format!("{scheme}://{}", origin.raft().addr()),
            "metrics": format!("{http}/metrics"),
            "admin_api_key": ready.token,
            "admin_api_key_file": ready.token_path,
            "app_credential_file": ready.credential_path,
            "public_keys": format!("{http}/.well-known/tollgate-keys.json"),
        },
        "portal": {
            "url": format!("{http}/portal/"),
            "sign_ins": ready.portal,
            "sign_ins_file": root.join("portal-sign-ins.json"),
        },
        "regions": running.regions.iter().map(|(name, nodes)| serde_json::json!({
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
        "ports": layout,
        "ports_file": root.join(ports::FILE),
        "data_dir": root,
        "try": samples.iter().map(|s| serde_json::json!({
            "about": s.about,
            "command": s.command,
            "exit": s.exit,
        })).collect::<Vec<_>>(),
    })
}

/// Writes a secret readable by its owner only, durably.
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Dataset {
        serde_json::from_str(crate::eval::DEMO_DATA).unwrap()
    }

    #[test]
    fn the_demo_is_seeded_whole_once_and_only_what_is_missing_after() {
        let demo = demo();
        // A new origin lacks everything but a default it already has.
        let everything = demo
            .to_mutations()
            .into_iter()
            .filter(|m| {
                !matches!(m, Mutation::SetDefaultOfflinePolicy(p)
                    if *p == Dataset::default().catalog.default_offline_policy)
            })
            .count();
        assert_eq!(demo_missing(&demo, &Dataset::default()).len(), everything);
        assert!(demo_missing(&demo, &demo).is_empty());
        let mut half = demo.clone();
        let dropped = half.entitlements.split_off(half.entitlements.len() / 2);
        let missing = demo_missing(&demo, &half);
        assert_eq!(missing.len(), dropped.len());
        assert!(missing.iter().all(
            |m| matches!(m, Mutation::PutEntitlement(e) if dropped.iter().any(|d| d.id == e.id))
        ));
    }

    #[test]
    fn the_flags_and_help_are_consistent() {
        let command = DevArgs::augment_args(clap::Command::new("dev"));
        command.clone().debug_assert();
        let help = command.clone().render_long_help().to_string();
        for part in ["--base-port", "B+22", "ports.json", "130 (SIGINT)"] {
            assert!(help.contains(part), "{part:?} in {help}");
        }
    }
}
