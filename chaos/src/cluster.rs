//! The nodes under test: real `tollgate serve` processes, one per network
//! namespace, configured by TOML files the harness writes into the run
//! directory. An origin (one node) and two regions (`eu`, `us`) of three.
//!
//! The harness reaches every node from the host over the bridge: the
//! origin's REST API with the admin token the origin writes at bootstrap,
//! region nodes' gRPC check and usage services, and their `/v1/status`.
//!
//! TLS is on everywhere, as in production: each run makes its own CA
//! ([`Pki`], in `<run dir>/tls/`) and gives every node a certificate with
//! its SPIFFE identity and the address it is reached at; the harness is an
//! operator of that CA and checks every node's certificate against the
//! address it dials.

use crate::history::{now_ms, Event, NodeChange, NodeState, Recorder};
use crate::net::{netns, Links, Net};
use crate::proxy::{self, LinkDelay, ProxyThread, Route};
use anyhow::{anyhow, bail, Context};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tollgate_testkit::wait_until;
use tollgate_tls::ca::{self, Request};
use tollgate_tls::{Alpn, Expect, Identity, Subject, Tls, Transport};

pub const ORIGIN: &str = "origin";
pub const RAFT_PORT: u16 = 7100;
pub const FEED_PORT: u16 = 7200;
pub const REST_PORT: u16 = 8080;
pub const GRPC_PORT: u16 = 7300;
pub const OPS_PORT: u16 = 7400;
/// Region nodes' Raft proxies (→ [`RAFT_PORT`] of the same node): what
/// members advertise, so the nemesis can slow every Raft message into a
/// node.
pub const RAFT_PROXY_PORT: u16 = 7101;
/// The origin's feed proxies, one per region (the first region's at this
/// port, the next at the next): each region follows the origin through its
/// own, so the nemesis can slow one region's link to the origin.
pub const FEED_PROXY_PORT_BASE: u16 = 7201;
/// Regions reconnect to the origin after this long without a message (the
/// origin's heartbeat is every 200 ms) ...
const ORIGIN_IDLE_TIMEOUT_MS: u64 = 2_000;
/// Region nodes snapshot every few hundred log entries and keep few behind
/// a snapshot (the defaults are 10,000 and 1,000), so within a run Raft
/// snapshots are built while applies go on and a killed or cut-off member
/// catches up by one.
const SNAPSHOT_LOGS_SINCE_LAST: u64 = 300;
const LOGS_KEPT_AFTER_SNAPSHOT: u64 = 20;
/// ... wait at most this long between attempts, and give one attempt this
/// long, so what a run measures after a heal is Tollgate catching up, not
/// the 5 s defaults and the kernel's SYN retries.
const RECONNECT_BACKOFF_MAX_MS: u64 = 1_000;
const CONNECT_TIMEOUT_MS: u64 = 2_500;
/// Every HTTP call the harness makes gives up after this long.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(3);
/// A status poll gives up sooner: it runs every few hundred milliseconds.
pub const STATUS_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a started origin has to write its keys and admin token.
const ORIGIN_START_DEADLINE: Duration = Duration::from_secs(90);
/// How long a SIGTERMed node has to exit before it is killed.
const STOP_DEADLINE: Duration = Duration::from_secs(10);
/// The trust domain of every run's CA.
pub const TRUST_DOMAIN: &str = "chaos.tollgate";
/// The harness's own identity (`spiffe://chaos.tollgate/operator/chaos`):
/// the client certificate it presents on every port.
pub const OPERATOR: &str = "chaos";
/// A run's certificates are valid from an hour before it starts (clock
/// steps) to a week after.
const CERT_BACKDATE_SECONDS: i64 = 3_600;
const CERT_VALID_SECONDS: i64 = 7 * 86_400;
/// How often nodes look for replaced TLS files.
const TLS_RELOAD_INTERVAL_MS: u64 = 5_000;

#[derive(Debug, Clone, PartialEq)]
pub struct NodeSpec {
    pub name: String,
    /// `None` for the origin.
    pub region: Option<String>,
    pub node_id: u64,
    pub ip: Ipv4Addr,
}

impl NodeSpec {
    pub fn grpc_url(&self) -> String {
        format!("https://{}:{GRPC_PORT}", self.ip)
    }
    pub fn status_url(&self) -> String {
        format!("https://{}:{OPS_PORT}/v1/status", self.ip)
    }
    pub fn rest_url(&self) -> String {
        format!("https://{}:{REST_PORT}", self.ip)
    }
    /// Who this node's certificate says it is (and what the node checks
    /// its own certificate against: its role, id and `region`).
    pub fn subject(&self) -> Subject {
        match &self.region {
            None => Subject::OriginNode(self.node_id),
            Some(region) => Subject::RegionNode {
                region: region.clone(),
                node: self.node_id,
            },
        }
    }
    pub fn raft_addr(&self) -> String {
        format!("{}:{RAFT_PORT}", self.ip)
    }
    /// The Raft address members use: the node's proxy.
    pub fn raft_advertised(&self) -> String {
        format!("{}:{RAFT_PROXY_PORT}", self.ip)
    }
}

/// Which nodes exist and where.
#[derive(Debug, Clone)]
pub struct Topology {
    pub origin: NodeSpec,
    pub regions: BTreeMap<String, Vec<NodeSpec>>,
}

impl Topology {
    /// The origin at 10.77.0.10, `eu-1..3` at .21–.23, `us-1..3` at .31–.33.
    pub fn standard() -> Topology {
        let origin = NodeSpec {
            name: ORIGIN.into(),
            region: None,
            node_id: 1,
            ip: Ipv4Addr::new(10, 77, 0, 10),
        };
        let mut regions = BTreeMap::new();
        for (region, base) in [("eu", 20u8), ("us", 30u8)] {
            let nodes = (1..=3u8)
                .map(|i| NodeSpec {
                    name: format!("{region}-{i}"),
                    region: Some(region.into()),
                    node_id: u64::from(i),
                    ip: Ipv4Addr::new(10, 77, 0, base + i),
                })
                .collect();
            regions.insert(region.to_string(), nodes);
        }
        Topology { origin, regions }
    }

    pub fn all(&self) -> Vec<&NodeSpec> {
        std::iter::once(&self.origin)
            .chain(self.regions.values().flatten())
            .collect()
    }

    pub fn region_nodes(&self) -> Vec<&NodeSpec> {
        self.regions.values().flatten().collect()
    }

    pub fn node(&self, name: &str) -> Option<&NodeSpec> {
        self.all().into_iter().find(|n| n.name == name)
    }

    /// The port of `region`'s proxy to the origin's feed.
    pub fn feed_proxy_port(&self, region: &str) -> Option<u16> {
        let index = self.regions.keys().position(|r| r == region)?;
        Some(FEED_PROXY_PORT_BASE + index as u16)
    }
}

/// A run's PKI, in `<run dir>/tls/`: the CA (`ca.pem`, and its key
/// `ca.key`, so more certificates can be issued by hand to look at a
/// failed run), and for every node and for the harness a certificate and
/// its key (`<name>.pem`, `<name>.key`; the harness's is
/// `operator-chaos`).
///
/// A node's certificate names its SPIFFE identity (what other nodes
/// check: Raft members and the origin's feed, also through the harness's
/// TCP proxies, which forward TLS untouched) and the one address
/// everything reaches it at, its namespace's IP (what the harness checks:
/// every proxy listens on the IP of the node it fronts, so the IP SAN
/// covers the proxied ports too), plus its name as a DNS name.
#[derive(Debug, Clone)]
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Creates the CA and issues every node's certificate and the
    /// harness's. `now` in Unix seconds.
    pub fn create(dir: &Path, topology: &Topology, now: i64) -> anyhow::Result<Pki> {
        let (not_before, not_after) = (now - CERT_BACKDATE_SECONDS, now + CERT_VALID_SECONDS);
        let ca = ca::create_ca(TRUST_DOMAIN, not_before, not_after).context("creating the CA")?;
        ca::write(dir, "ca", &ca).context("writing the CA")?;
        let issue = |name: &str, subject: Subject, dns: Vec<String>, ips: Vec<std::net::IpAddr>| {
            let identity = Identity::new(TRUST_DOMAIN, subject)?;
            let pem = ca::issue(
                &ca,
                &Request {
                    identity,
                    dns,
                    ips,
                    not_before,
                    not_after,
                },
            )
            .with_context(|| format!("issuing {name}'s certificate"))?;
            ca::write(dir, name, &pem).with_context(|| format!("writing {name}'s certificate"))?;
            anyhow::Ok(())
        };
        for node in topology.all() {
            issue(
                &node.name,
                node.subject(),
                vec![node.name.clone()],
                vec![node.ip.into()],
            )?;
        }
        issue(
            &Self::operator_name(),
            Subject::Operator(OPERATOR.into()),
            Vec::new(),
            Vec::new(),
        )?;
        Ok(Pki {
            dir: dir.to_path_buf(),
        })
    }

    fn operator_name() -> String {
        format!("operator-{OPERATOR}")
    }

    /// The CA certificate every node and the harness trust.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `name`'s certificate (a node's name, or `operator-chaos`).
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }

    /// `name`'s private key.
    pub fn key(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.key"))
    }

    /// The `[tls]` section of `name`'s node.toml.
    pub fn node_section(&self, name: &str) -> String {
        format!(
            "[tls]\n\
             ca = {ca:?}\n\
             cert = {cert:?}\n\
             key = {key:?}\n\
             reload_interval_ms = {TLS_RELOAD_INTERVAL_MS}\n",
            ca = self.ca(),
            cert = self.cert(name),
            key = self.key(name),
        )
    }

    /// The harness's client side: trusts the run's CA, presents the
    /// operator certificate. `now` in Unix seconds.
    pub fn client(&self, now: i64) -> anyhow::Result<Transport> {
        let name = Self::operator_name();
        let tls = Tls::client(
            Some(self.ca()),
            Some(self.cert(&name)),
            Some(self.key(&name)),
            now,
        )
        .context("the harness's TLS client")?;
        Ok(Transport::Tls(tls))
    }
}

/// The harness's HTTP client over `transport`: every REST and status call
/// checks the node's certificate against the IP it dials, and presents the
/// harness's own. Each request gives up after `timeout`, the TLS handshake
/// included.
pub fn http_client(transport: &Transport, timeout: Duration) -> anyhow::Result<reqwest::Client> {
    let tls = transport
        .client_config(&Expect::HostName, Alpn::Http1)
        .context("the harness's TLS client")?
        .context("the harness's transport has no TLS")?;
    reqwest::Client::builder()
        .timeout(timeout)
        .use_preconfigured_tls((*tls).clone())
        .build()
        .context("an HTTP client")
}

/// The wall clock in Unix seconds.
fn now_secs() -> i64 {
    (now_ms() / 1000) as i64
}

/// What `/v1/status` on a region node says (the fields the harness reads).
#[derive(Debug, Clone, Deserialize)]
pub struct NodeStatus {
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub applied_revision: u64,
    pub origin_head_revision: u64,
    pub staleness_seconds: Option<u64>,
    /// Recovering from an unclean stop (a node of an older version does
    /// not say: it never is).
    #[serde(default)]
    pub recovering: bool,
    /// What the node metered and has not seen applied in the region's log.
    #[serde(default)]
    pub metering: Metering,
}

/// The part of a region node's `metering` status the harness reads.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Metering {
    /// Units consumed on this node and not yet seen applied.
    #[serde(default)]
    pub unreported_units: u64,
    /// Consumptions waiting for the node's next usage report.
    #[serde(default)]
    pub pending_entries: u64,
}

struct Proc {
    child: Option<Child>,
    state: NodeState,
    /// The harness asked it to exit (SIGTERM) and is waiting: its exit is
    /// not one "on its own", whoever notices it first.
    stopping: bool,
}

type Procs = Arc<Mutex<BTreeMap<String, Proc>>>;

fn lock(procs: &Procs) -> std::sync::MutexGuard<'_, BTreeMap<String, Proc>> {
    procs.lock().unwrap_or_else(|p| p.into_inner())
}

/// Kills every node process and tears the network down when dropped: on
/// success, on error, on panic and when Ctrl-C drops the run.
pub struct Guard {
    procs: Procs,
    proxies: Vec<ProxyThread>,
    net: Option<Net>,
}

impl Guard {
    /// Stops everything now (same as dropping it).
    pub fn teardown(&mut self) {
        for (name, proc) in lock(&self.procs).iter_mut() {
            if let Some(mut child) = proc.child.take() {
                // SIGKILL ends stopped processes too.
                if let Err(error) = child.kill() {
                    eprintln!("chaos: killing {name}: {error}");
                }
                let _ = child.wait();
            }
            proc.state = NodeState::Down;
        }
        // Their threads hold sockets in the namespaces: stop them first.
        self.proxies.clear();
        if let Some(mut net) = self.net.take() {
            net.teardown();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.teardown();
    }
}

pub struct Settings {
    pub binary: PathBuf,
    pub run_dir: PathBuf,
    /// The origin's `[quota] outstanding_max`.
    pub outstanding_max: u64,
}

/// The running system, shared by the workload and the nemesis.
pub struct Cluster {
    pub topology: Topology,
    pub links: Links,
    /// What each region node's Raft proxy adds to messages into it.
    raft_delays: BTreeMap<String, LinkDelay>,
    /// What each region's proxy to the origin adds, both ways.
    origin_delays: BTreeMap<String, LinkDelay>,
    binary: PathBuf,
    run_dir: PathBuf,
    procs: Procs,
    recorder: Arc<Recorder>,
    pki: Pki,
    /// The harness's TLS: gRPC channels to the nodes are built from it.
    transport: Transport,
    http: reqwest::Client,
    token: Mutex<String>,
    /// The application credential the workload presents on check ports,
    /// made at the origin when the workload seeds it.
    credential: std::sync::OnceLock<String>,
}

impl Cluster {
    /// The workload's application credential, once seeded.
    pub fn credential(&self) -> Option<&str> {
        self.credential.get().map(String::as_str)
    }

    /// Keeps the workload's application credential (once).
    pub fn set_credential(&self, token: String) {
        // Seeded once per run: a second seed keeps the first credential,
        // which stays valid.
        if self.credential.set(token).is_err() {
            tracing::debug!("The workload's credential was already set.");
        }
    }

    /// Creates the network and writes every node's config; starts nothing.
    pub fn create(
        topology: Topology,
        settings: &Settings,
        recorder: Arc<Recorder>,
    ) -> anyhow::Result<(Arc<Cluster>, Guard)> {
        anyhow::ensure!(
            settings.binary.is_file(),
            "the tollgate binary {} does not exist (build it, or pass --binary)",
            settings.binary.display()
        );
        let binary = std::fs::canonicalize(&settings.binary)?;
        let pki = Pki::create(&settings.run_dir.join("tls"), &topology, now_secs())?;
        let transport = pki.client(now_secs())?;
        let http = http_client(&transport, HTTP_TIMEOUT)?;
        let nodes: Vec<(String, Ipv4Addr)> = topology
            .all()
            .iter()
            .map(|n| (n.name.clone(), n.ip))
            .collect();
        let net = Net::create(&nodes)?;
        let procs: Procs = Arc::new(Mutex::new(BTreeMap::new()));
        let mut guard = Guard {
            procs: procs.clone(),
            proxies: Vec::new(),
            net: Some(net),
        };
        let links = guard.net.as_ref().map(Net::links).expect("just created");
        let (raft_delays, origin_delays) = start_proxies(&topology, &mut guard.proxies)?;
        let cluster = Cluster {
            topology,
            links,
            raft_delays,
            origin_delays,
            binary,
            run_dir: settings.run_dir.clone(),
            procs,
            recorder,
            pki,
            transport,
            http,
            token: Mutex::new(String::new()),
            credential: std::sync::OnceLock::new(),
        };
        cluster.write_configs(settings.outstanding_max)?;
        Ok((Arc::new(cluster), guard))
    }

    fn node_dir(&self, name: &str) -> PathBuf {
        self.run_dir.join("nodes").join(name)
    }

    fn data_dir(&self, name: &str) -> PathBuf {
        self.node_dir(name).join("data")
    }

    /// Each node's output (appended across restarts).
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.run_dir.join("logs").join(format!("{name}.log"))
    }

    fn public_keys_path(&self) -> PathBuf {
        self.run_dir.join("origin-keys.public.json")
    }

    /// The harness's TLS (the run's CA, the operator certificate), for
    /// gRPC channels to the nodes.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The run's CA certificate, which every node's certificate chains to
    /// (for the SDK's client, which reads it from a file as applications
    /// do).
    pub fn ca_path(&self) -> PathBuf {
        self.pki.ca()
    }

    fn write_configs(&self, outstanding_max: u64) -> anyhow::Result<()> {
        std::fs::create_dir_all(self.run_dir.join("logs"))?;
        let o = &self.topology.origin;
        let text = format!(
            "# Written by tollgate-chaos.\n\
             role = \"origin\"\n\
             node_id = {id}\n\
             data_dir = {data:?}\n\n\
             [listen]\n\
             raft = \"{ip}:{RAFT_PORT}\"\n\
             http = \"{ip}:{REST_PORT}\"\n\
             feed = \"{ip}:{FEED_PORT}\"\n\n\
             [cluster]\n\
             bootstrap = true\n\n\
             [changefeed]\n\
             heartbeat_interval_ms = 200\n\n\
             [quota]\n\
             outstanding_max = {outstanding_max}\n\n\
             {tls}",
            id = o.node_id,
            data = self.data_dir(&o.name),
            ip = o.ip,
            tls = self.pki.node_section(&o.name),
        );
        self.write_config(&o.name, &text)?;
        for nodes in self.topology.regions.values() {
            let members = nodes
                .iter()
                .map(|n| {
                    format!(
                        "{{ id = {}, raft = \"{}\" }}",
                        n.node_id,
                        n.raft_advertised()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            for n in nodes {
                let bootstrap = n.node_id == 1;
                let text = format!(
                    "# Written by tollgate-chaos.\n\
                     role = \"region\"\n\
                     node_id = {id}\n\
                     name = \"{name}\"\n\
                     region = \"{region}\"\n\
                     data_dir = {data:?}\n\n\
                     [listen]\n\
                     raft = \"{ip}:{RAFT_PORT}\"\n\
                     grpc = \"{ip}:{GRPC_PORT}\"\n\
                     http = \"{ip}:{OPS_PORT}\"\n\n\
                     [advertise]\n\
                     raft = \"{ip}:{RAFT_PROXY_PORT}\"\n\n\
                     [cluster]\n\
                     bootstrap = {bootstrap}\n\
                     {members_line}\n\n\
                     [raft]\n\
                     snapshot_logs_since_last = {SNAPSHOT_LOGS_SINCE_LAST}\n\
                     logs_kept_after_snapshot = {LOGS_KEPT_AFTER_SNAPSHOT}\n\n\
                     [origin]\n\
                     feed = \"https://{origin_ip}:{feed_port}\"\n\
                     public_keys_path = {keys:?}\n\
                     idle_timeout_ms = {ORIGIN_IDLE_TIMEOUT_MS}\n\
                     reconnect_backoff_max_ms = {RECONNECT_BACKOFF_MAX_MS}\n\
                     connect_timeout_ms = {CONNECT_TIMEOUT_MS}\n\n\
                     {tls}",
                    id = n.node_id,
                    name = n.name,
                    region = n.region.as_deref().unwrap_or("region"),
                    data = self.data_dir(&n.name),
                    ip = n.ip,
                    members_line = if bootstrap {
                        format!("members = [{members}]")
                    } else {
                        String::new()
                    },
                    origin_ip = o.ip,
                    feed_port = self
                        .topology
                        .feed_proxy_port(n.region.as_deref().unwrap_or_default())
                        .context("a region node's region")?,
                    keys = self.public_keys_path(),
                    tls = self.pki.node_section(&n.name),
                );
                self.write_config(&n.name, &text)?;
            }
        }
        Ok(())
    }

    fn write_config(&self, name: &str, text: &str) -> anyhow::Result<()> {
        let dir = self.node_dir(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("node.toml"), text)
            .with_context(|| format!("writing {name}'s config"))
    }

    fn record_node(&self, name: &str, state: NodeState, cause: &str) {
        self.recorder.record(Event::Node(NodeChange {
            at_ms: now_ms(),
            node: name.into(),
            state,
            cause: cause.into(),
        }));
    }

    /// Starts `name` from its config and data directory (a restart keeps
    /// the data).
    pub fn start(&self, name: &str, cause: &str) -> anyhow::Result<()> {
        let mut procs = lock(&self.procs);
        if let Some(p) = procs.get(name) {
            if p.child.is_some() {
                bail!("{name} is already running");
            }
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(name))?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &netns(name)])
            .arg(&self.binary)
            .args(["--log", "info", "serve", "--config"])
            .arg(self.node_dir(name).join("node.toml"));
        // The harness's own environment must not reconfigure the nodes.
        for (key, _) in std::env::vars() {
            if key.starts_with("TOLLGATE_") {
                cmd.env_remove(key);
            }
        }
        cmd.env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // `ip netns exec` execs the binary: the child's pid is the node's.
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        procs.insert(
            name.into(),
            Proc {
                child: Some(child),
                state: NodeState::Up,
                stopping: false,
            },
        );
        drop(procs);
        self.record_node(name, NodeState::Up, cause);
        Ok(())
    }

    /// SIGKILLs `name` (kill -9) and reaps it.
    pub fn kill(&self, name: &str, cause: &str) -> anyhow::Result<()> {
        let mut procs = lock(&self.procs);
        let proc = procs
            .get_mut(name)
            .with_context(|| format!("{name} was never started"))?;
        let mut child = proc
            .child
            .take()
            .with_context(|| format!("{name} is not running"))?;
        child.kill().with_context(|| format!("killing {name}"))?;
        let _ = child.wait();
        proc.state = NodeState::Down;
        proc.stopping = false;
        drop(procs);
        self.record_node(name, NodeState::Down, cause);
        Ok(())
    }

    /// SIGTERMs `name` and waits (bounded) for a clean exit, then SIGKILLs.
    pub async fn stop(&self, name: &str, cause: &str) -> anyhow::Result<()> {
        let pid = self
            .pid(name)
            .with_context(|| format!("{name} is not running"))?;
        let set_stopping = |on: bool| {
            if let Some(p) = lock(&self.procs).get_mut(name) {
                p.stopping = on;
            }
        };
        // Before the signal: the status poller's reaper may see the exit
        // before this loop does.
        set_stopping(true);
        let paused = self.state(name) == Some(NodeState::Paused);
        let signalled = (if paused {
            crate::net::signal(pid, libc::SIGCONT)
        } else {
            Ok(())
        })
        .and_then(|()| crate::net::signal(pid, libc::SIGTERM));
        if let Err(error) = signalled {
            set_stopping(false);
            return Err(error);
        }
        let exited = wait_until(&format!("{name} to exit on SIGTERM"), STOP_DEADLINE, || {
            let mut procs = lock(&self.procs);
            let proc = procs.get_mut(name).expect("has a pid");
            let exited = match proc.child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(_))) | None => {
                    proc.child = None;
                    proc.state = NodeState::Down;
                    proc.stopping = false;
                    Some(())
                }
                _ => None,
            };
            std::future::ready(exited)
        })
        .await;
        match exited {
            Ok(()) => {
                self.record_node(name, NodeState::Down, cause);
                Ok(())
            }
            Err(_) => self.kill(name, &format!("{cause} (did not exit on SIGTERM)")),
        }
    }

    /// SIGSTOPs `name`.
    pub fn pause(&self, name: &str, cause: &str) -> anyhow::Result<()> {
        self.signal(name, libc::SIGSTOP, NodeState::Paused, cause)
    }

    /// SIGCONTs `name`.
    pub fn resume(&self, name: &str, cause: &str) -> anyhow::Result<()> {
        self.signal(name, libc::SIGCONT, NodeState::Up, cause)
    }

    fn signal(
        &self,
        name: &str,
        signal: libc::c_int,
        to: NodeState,
        cause: &str,
    ) -> anyhow::Result<()> {
        let pid = self
            .pid(name)
            .with_context(|| format!("{name} is not running"))?;
        crate::net::signal(pid, signal)?;
        if let Some(p) = lock(&self.procs).get_mut(name) {
            p.state = to;
        }
        self.record_node(name, to, cause);
        Ok(())
    }

    fn pid(&self, name: &str) -> Option<u32> {
        lock(&self.procs)
            .get(name)
            .and_then(|p| p.child.as_ref())
            .map(Child::id)
    }

    pub fn state(&self, name: &str) -> Option<NodeState> {
        lock(&self.procs).get(name).map(|p| p.state)
    }

    /// Records (once) every node that exited without being asked to.
    pub fn reap_exits(&self) {
        let mut exited = Vec::new();
        for (name, proc) in lock(&self.procs).iter_mut() {
            if proc.stopping {
                // `stop` reaps it and records why.
                continue;
            }
            if let Some(child) = proc.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    proc.child = None;
                    proc.state = NodeState::Down;
                    exited.push((name.clone(), status.to_string()));
                }
            }
        }
        for (name, status) in exited {
            tracing::error!(node = %name, %status, "A node exited on its own.");
            self.record_node(&name, NodeState::Exited, &status);
        }
    }

    /// Nodes not running (killed, or exited) and nodes paused.
    pub fn not_up(&self) -> (Vec<String>, Vec<String>) {
        let procs = lock(&self.procs);
        let mut down = Vec::new();
        let mut paused = Vec::new();
        for spec in self.topology.all() {
            match procs.get(&spec.name).map(|p| p.state) {
                Some(NodeState::Up) => {}
                Some(NodeState::Paused) => paused.push(spec.name.clone()),
                _ => down.push(spec.name.clone()),
            }
        }
        (down, paused)
    }

    /// Starts the origin, waits for its key set and admin token, then
    /// starts every region node.
    pub async fn start_all(&self) -> anyhow::Result<()> {
        let origin = self.topology.origin.clone();
        self.start(&origin.name, "started")?;
        let data = self.data_dir(&origin.name);
        let (keys, token) = (
            data.join("origin-keys.public.json"),
            data.join("admin.token"),
        );
        let log = self.log_path(&origin.name);
        let started = Instant::now();
        // `Ok` ends the wait: the files are there, or the origin exited
        // (the inner error); `Err` says which file is still missing.
        wait_until(
            &format!(
                "the origin to write {} and {} (its log: {})",
                keys.display(),
                token.display(),
                log.display()
            ),
            ORIGIN_START_DEADLINE,
            || {
                let missing: Vec<String> = [&keys, &token]
                    .into_iter()
                    .filter(|file| !file.is_file())
                    .map(|file| format!("no {}", file.display()))
                    .collect();
                let seen = if missing.is_empty() {
                    Ok(Ok(()))
                } else {
                    self.reap_exits();
                    if self.state(&origin.name) != Some(NodeState::Up) {
                        Ok(Err(anyhow!(
                            "the origin exited during start-up; see {}",
                            log.display()
                        )))
                    } else {
                        Err(missing.join(", "))
                    }
                };
                std::future::ready(seen)
            },
        )
        .await??;
        // The token file may be written a moment after it is created.
        let token_text = wait_for_content(
            &token,
            ORIGIN_START_DEADLINE.saturating_sub(started.elapsed()),
        )
        .await?;
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = token_text.trim().to_string();
        std::fs::copy(&keys, self.public_keys_path())?;
        for node in self.topology.region_nodes() {
            self.start(&node.name, "started")?;
        }
        Ok(())
    }

    /// The origin's REST API as the admin: status and JSON body.
    pub async fn rest(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(reqwest::StatusCode, serde_json::Value), reqwest::Error> {
        let token = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.topology.origin.rest_url()))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        ))
    }

    /// Like [`Cluster::rest`], failing unless the answer is a success.
    pub async fn rest_ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let (status, value) = self
            .rest(method, path, body)
            .await
            .with_context(|| path.to_string())?;
        anyhow::ensure!(status.is_success(), "{path}: {status} {value}");
        Ok(value)
    }

    /// The origin's head revision, from its `/metrics`.
    pub async fn origin_head(&self) -> anyhow::Result<u64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.topology.origin.rest_url()))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        text.lines()
            .find(|l| l.starts_with("tollgate_origin_head_revision"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .context("no tollgate_origin_head_revision in the origin's /metrics")
    }

    /// A region node's `/v1/status`.
    pub async fn status(&self, node: &NodeSpec) -> anyhow::Result<NodeStatus> {
        Ok(self
            .http
            .get(node.status_url())
            .timeout(STATUS_TIMEOUT)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// The region's leader as its nodes report it (the highest term wins).
    pub async fn leader(&self, region: &str) -> Option<String> {
        let nodes = self.topology.regions.get(region)?;
        let answers =
            futures::future::join_all(nodes.iter().map(|n| async move { self.status(n).await }))
                .await;
        let (_, leader) = answers
            .into_iter()
            .flatten()
            .filter_map(|s| s.leader.map(|l| (s.term, l)))
            .max()?;
        nodes
            .iter()
            .find(|n| n.node_id == leader)
            .map(|n| n.name.clone())
    }

    /// The delay of every Raft message into `node` (a region node).
    pub fn raft_delay(&self, node: &str) -> Option<&LinkDelay> {
        self.raft_delays.get(node)
    }

    /// The delay of `region`'s link to the origin, both ways.
    pub fn origin_delay(&self, region: &str) -> Option<&LinkDelay> {
        self.origin_delays.get(region)
    }

    /// Takes every added delay away.
    pub fn clear_delays(&self) {
        for d in self.raft_delays.values().chain(self.origin_delays.values()) {
            d.clear();
        }
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Removes the nodes' data directories (kept on failure, for a look).
    pub fn remove_data(&self) {
        let _ = std::fs::remove_dir_all(self.run_dir.join("nodes"));
    }
}

type Delays = BTreeMap<String, LinkDelay>;

/// Starts the Raft proxy of every region node (in its namespace) and the
/// origin's feed proxy for every region (in the origin's); returns their
/// delay handles, by node and by region.
fn start_proxies(
    topology: &Topology,
    threads: &mut Vec<ProxyThread>,
) -> anyhow::Result<(Delays, Delays)> {
    let mut raft = BTreeMap::new();
    for node in topology.region_nodes() {
        let delay = LinkDelay::default();
        threads.push(proxy::spawn(
            Some(&netns(&node.name)),
            vec![Route {
                listen: (node.ip, RAFT_PROXY_PORT).into(),
                target: (node.ip, RAFT_PORT).into(),
                delay: delay.clone(),
            }],
        )?);
        raft.insert(node.name.clone(), delay);
    }
    let origin = &topology.origin;
    let mut feeds = BTreeMap::new();
    let mut routes = Vec::new();
    for region in topology.regions.keys() {
        let delay = LinkDelay::default();
        routes.push(Route {
            listen: (
                origin.ip,
                topology.feed_proxy_port(region).expect("a region"),
            )
                .into(),
            target: (origin.ip, FEED_PORT).into(),
            delay: delay.clone(),
        });
        feeds.insert(region.clone(), delay);
    }
    threads.push(proxy::spawn(Some(&netns(&origin.name)), routes)?);
    Ok((raft, feeds))
}

async fn wait_for_content(path: &Path, deadline: Duration) -> anyhow::Result<String> {
    wait_until(
        &format!("{} to hold something", path.display()),
        deadline,
        || {
            std::future::ready(match std::fs::read_to_string(path) {
                Ok(text) if !text.trim().is_empty() => Ok(text),
                Ok(_) => Err("an empty file".to_string()),
                Err(error) => Err(error.to_string()),
            })
        },
    )
    .await
}
