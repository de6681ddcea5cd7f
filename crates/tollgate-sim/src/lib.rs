//! Deterministic simulation: real Tollgate nodes, one process, one thread,
//! one seed.
//!
//! Each node is a turmoil host running the real node code (openraft, the
//! tonic Raft transport, the write batcher, the log store and state
//! machine) on a memory disk ([`MemDisk`]); turmoil simulates the network
//! and the clock, and the seed drives everything that varies: turmoil's
//! message delays and the hosts' tokio schedulers, openraft's election
//! timeouts ([`tollgate_raft::runtime::seed_thread_rng`]), the workload and
//! the nemesis. The same seed therefore replays the same run, event for
//! event ([`Outcome::history`]); `tollgate-sim run --seed N` is the command
//! a failing seed prints.
//!
//! The nemesis partitions a node from everyone, slows links, cuts a node's
//! links to its peers one way (it hears them but is not heard, or the
//! reverse), holds them and then delivers what they held at once, kills a
//! node and restarts it on what its disk kept (a random part of what it
//! wrote since its last flush), and makes a disk refuse writes or fsyncs
//! until the node is power-cycled. After the fault window every fault heals and
//! the run checks that no acknowledged write was lost and that every node
//! holds the same state.
//!
//! Needs `--cfg tokio_unstable` (the workspace's `.cargo/config.toml` sets
//! it) for tokio's own randomness (which branch of a `select!` goes first)
//! to follow the seed.

mod http;
pub mod system;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tollgate_proto::cluster::v1 as pb;
use tollgate_proto::cluster::v1::cluster_admin_client::ClusterAdminClient;
use tollgate_raft::store::{Faults, MemDisk, StorageConfig};
use tollgate_raft::{Error, KvCommand, KvLogic, Node, NodeConfig, StateView};
use tollgate_tls::{Allow, Expect, Transport};
use tonic::transport::{Channel, Endpoint};

/// The port every simulated node serves Raft and cluster admin on.
const PORT: u16 = 7000;
/// How long the cluster has to heal and converge after the faults stop,
/// in simulated time.
const HEAL_SECONDS: u64 = 120;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Options {
    /// Everything that varies follows from it.
    pub seed: u64,
    /// Simulated seconds of workload under faults.
    pub fault_seconds: u64,
    /// Concurrent writers.
    pub writers: usize,
    /// Cluster members (3 or 5 make sense).
    pub nodes: usize,
}

/// How long each writer waits between two writes, in simulated time: a
/// write rate that keeps the nodes busy without spending the run's real
/// time on more writes than the faults need.
const WRITE_PAUSE: Duration = Duration::from_millis(100);
/// Every link's message latency, drawn between these, except while the
/// nemesis slows a node's links.
const LATENCY_MIN: Duration = Duration::from_millis(1);
const LATENCY_MAX: Duration = Duration::from_millis(5);
/// How far turmoil moves time in one step.
const TICK: Duration = Duration::from_millis(2);

impl Options {
    /// The defaults for `seed`: three nodes, four writers, 60 simulated
    /// seconds of faults.
    pub fn seed(seed: u64) -> Options {
        Options {
            seed,
            fault_seconds: 60,
            writers: 4,
            nodes: 3,
        }
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run -p tollgate-sim -- run --seed {} --fault-seconds {} --writers {} --nodes {}",
            self.seed, self.fault_seconds, self.writers, self.nodes
        )
    }
}

/// What a run saw.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Every event, in order, stamped with simulated milliseconds: the
    /// workload's writes and their answers, the nemesis' faults, the final
    /// check. Two runs of one seed give equal histories.
    pub history: Vec<String>,
    /// Broken invariants; empty when the run passed.
    pub violations: Vec<String>,
    /// Writes the cluster acknowledged.
    pub acknowledged: usize,
    /// Writes that failed or timed out (their outcome unknown).
    pub unacknowledged: usize,
    /// Faults the nemesis injected.
    pub faults: usize,
    /// Simulated time the run took.
    pub simulated: Duration,
}

impl Outcome {
    /// Whether every invariant held.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

#[derive(Default)]
struct Shared {
    history: Mutex<Vec<String>>,
    disks: Mutex<BTreeMap<String, MemDisk>>,
    views: Mutex<BTreeMap<String, StateView>>,
    /// Acknowledged writes: key → log index.
    acked: Mutex<BTreeMap<String, u64>>,
    unacked: std::sync::atomic::AtomicUsize,
    violations: Mutex<Vec<String>>,
    initialized: AtomicBool,
    healed: AtomicBool,
    /// The workload is done (its final write is on every node, or it gave
    /// up saying why).
    done: AtomicBool,
}

/// Locks a mutex no holder leaves half-written (the simulation runs on one
/// thread; a panic ends the run anyway).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn log(&self, at: Duration, line: String) {
        lock(&self.history).push(format!("{:>9} {line}", at.as_millis()));
    }

    fn log_here(&self, line: String) {
        self.log(turmoil::sim_elapsed().unwrap_or_default(), line);
    }

    fn violation(&self, what: String) {
        self.log_here(format!("VIOLATION {what}"));
        lock(&self.violations).push(what);
    }
}

fn node_name(index: usize) -> String {
    format!("n{}", index + 1)
}

/// One node's software: start on the disk it has now, initialise the
/// cluster the first time node 1 starts, then serve until the host is
/// crashed.
async fn node_host(shared: Arc<Shared>, index: usize, nodes: usize) -> turmoil::Result {
    let name = node_name(index);
    let id = index as u64 + 1;
    let disk = lock(&shared.disks)
        .get(&name)
        .cloned()
        .ok_or("the node has no disk")?;
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    let mut config = NodeConfig::new(id, "<memory>");
    config.storage = StorageConfig::in_memory(disk);
    config.advertise_addr = Some(format!("{name}:{PORT}"));
    config.transport = Transport::Plaintext;
    // Snapshots often, a short log behind them and small chunks: a node
    // that comes back or falls behind is sent a snapshot in many pieces,
    // and builds, installs and purges happen under the faults too.
    config.snapshot_logs_since_last = 40;
    config.max_in_snapshot_log_to_keep = 5;
    config.snapshot_chunk_bytes_max = 2 * 1024;
    let node = Node::start(config, KvLogic, listener).await?;
    lock(&shared.views).insert(name.clone(), node.view());
    shared.log_here(format!("node {name} started"));
    if id == 1 && !shared.initialized.swap(true, Ordering::SeqCst) {
        let members: Vec<(u64, String)> = (0..nodes)
            .map(|i| (i as u64 + 1, format!("{}:{PORT}", node_name(i))))
            .collect();
        match node.initialize(&members).await {
            Ok(()) | Err(Error::AlreadyInitialized) => {}
            Err(e) => shared.violation(format!("initialising the cluster failed: {e}")),
        }
    }
    std::future::pending::<()>().await;
    Ok(())
}

fn channel(name: &str) -> Result<Channel, String> {
    let endpoint = Endpoint::from_shared(format!("http://{name}:{PORT}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_millis(500));
    let connector = Transport::Plaintext.connector(Expect::Peers(vec![Allow::OriginNodes]), "sim");
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// One write through `channel`, within a second.
async fn write(channel: &Channel, key: &str) -> Result<u64, String> {
    let command = KvCommand::Put {
        key: key.to_string(),
        value: "1".into(),
    };
    let mut request = tonic::Request::new(pb::ClientWriteRequest {
        command: serde_json::to_vec(&command).map_err(|e| e.to_string())?,
        forward_hops: 0,
    });
    request.set_timeout(Duration::from_secs(1));
    let answer = tokio::time::timeout(
        Duration::from_secs(1),
        ClusterAdminClient::new(channel.clone()).client_write(request),
    )
    .await;
    match answer {
        Ok(Ok(reply)) => Ok(reply.into_inner().log_index),
        Ok(Err(status)) => Err(format!("{:?}", status.code())),
        Err(_) => Err("timeout".into()),
    }
}

/// The workload: `writers` writers each writing fresh keys to a node,
/// moving to the next node after a failure, until the faults heal; then
/// one last write, and a wait until every node has applied it.
async fn workload(shared: Arc<Shared>, options: Options) -> turmoil::Result {
    let channels: Vec<Channel> = (0..options.nodes)
        .map(|i| channel(&node_name(i)))
        .collect::<Result<_, _>>()?;
    let mut writers = Vec::new();
    for w in 0..options.writers {
        let shared = shared.clone();
        let channels = channels.clone();
        writers.push(tokio::spawn(async move {
            let mut target = w % channels.len();
            let mut i = 0u64;
            while !shared.healed.load(Ordering::SeqCst) {
                let key = format!("w{w}-{i}");
                i += 1;
                match write(&channels[target], &key).await {
                    Ok(index) => {
                        shared
                            .log_here(format!("write {key} via n{} ok index={index}", target + 1));
                        lock(&shared.acked).insert(key, index);
                    }
                    Err(why) => {
                        shared.log_here(format!("write {key} via n{} failed {why}", target + 1));
                        shared.unacked.fetch_add(1, Ordering::SeqCst);
                        target = (target + 1) % channels.len();
                    }
                }
                tokio::time::sleep(WRITE_PAUSE).await;
            }
        }));
    }
    for writer in writers {
        writer.await?;
    }

    // After the heal: one write every node must come to apply.
    let started = tokio::time::Instant::now();
    let deadline = Duration::from_secs(HEAL_SECONDS / 2);
    let mut target = 0;
    let mut last_error = String::new();
    let end_index = loop {
        match write(&channels[target], "end").await {
            Ok(index) => break Some(index),
            Err(why) => last_error = why,
        }
        target = (target + 1) % channels.len();
        if started.elapsed() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let Some(end_index) = end_index else {
        shared.violation(format!(
            "no write was acknowledged within {deadline:?} of the heal; the last answer: {last_error}"
        ));
        shared.done.store(true, Ordering::SeqCst);
        return Ok(());
    };
    shared.log_here(format!("write end ok index={end_index}"));
    loop {
        let applied: BTreeMap<String, Option<u64>> = lock(&shared.views)
            .iter()
            .map(|(name, view)| {
                let index = view.last_applied().ok().flatten().map(|l| l.index);
                (name.clone(), index)
            })
            .collect();
        if applied.len() == options.nodes
            && applied.values().all(|i| i.is_some_and(|i| i >= end_index))
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(HEAL_SECONDS) {
            shared.violation(format!(
                "the nodes did not all apply index {end_index} after the heal; last seen: {applied:?}"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shared.done.store(true, Ordering::SeqCst);
    Ok(())
}

/// A fault in progress, undone at `until`.
#[derive(Debug)]
enum Fault {
    Isolated(String),
    Down(String),
    Disk(String),
    Slow(String),
    /// Its links to its peers carry nothing one way: it hears them but is
    /// not heard (`deaf: false`), or the reverse.
    OneWay {
        name: String,
        deaf: bool,
    },
    /// Its links to its peers hold every message until released, then
    /// deliver them all at once.
    Held(String),
}

impl Fault {
    fn node(&self) -> &str {
        match self {
            Fault::Isolated(n)
            | Fault::Down(n)
            | Fault::Disk(n)
            | Fault::Slow(n)
            | Fault::OneWay { name: n, .. }
            | Fault::Held(n) => n,
        }
    }

    /// Cuts or holds links (turmoil keeps one state a link, so a one-way
    /// cut or a hold never shares the network with another such fault: its
    /// undoing would undo the other's on a link both touch).
    fn is_exclusive_link_fault(&self) -> bool {
        matches!(self, Fault::OneWay { .. } | Fault::Held(_))
    }

    fn touches_links(&self) -> bool {
        matches!(
            self,
            Fault::Isolated(_) | Fault::Slow(_) | Fault::OneWay { .. } | Fault::Held(_)
        )
    }
}

struct Nemesis {
    rng: StdRng,
    active: Vec<(Duration, Fault)>,
    next_at: Duration,
    injected: usize,
}

impl Nemesis {
    fn others(name: &str, nodes: usize) -> Vec<String> {
        Self::peers(name, nodes)
            .into_iter()
            .chain(std::iter::once("client".to_string()))
            .collect()
    }

    /// The other members.
    fn peers(name: &str, nodes: usize) -> Vec<String> {
        (0..nodes).map(node_name).filter(|n| n != name).collect()
    }

    /// Kill `name` now: its disk keeps what it flushed and a random part
    /// of what it wrote since.
    fn power_off(&mut self, sim: &mut turmoil::Sim<'_>, shared: &Shared, name: &str) -> usize {
        let mut disks = lock(&shared.disks);
        let Some(disk) = disks.get(name).cloned() else {
            return 0;
        };
        let unflushed = disk.unflushed_writes();
        let kept = match self.rng.gen_range(0..4) {
            0 => 0,
            1 => unflushed,
            _ => self.rng.gen_range(0..=unflushed),
        };
        disks.insert(name.to_string(), disk.crash(kept));
        drop(disks);
        sim.crash(name);
        kept
    }

    fn tick(&mut self, sim: &mut turmoil::Sim<'_>, shared: &Shared, nodes: usize, now: Duration) {
        // Undo what is due.
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].0 > now {
                i += 1;
                continue;
            }
            let (_, fault) = self.active.remove(i);
            match fault {
                Fault::Isolated(name) => {
                    for other in Self::others(&name, nodes) {
                        sim.repair(name.as_str(), other.as_str());
                    }
                    shared.log(now, format!("nemesis heal {name}"));
                }
                Fault::Down(name) => {
                    sim.bounce(name.as_str());
                    shared.log(now, format!("nemesis restart {name}"));
                }
                Fault::Disk(name) => {
                    // A node whose disk failed stopped its Raft core; the
                    // operator power-cycles it onto a mended disk.
                    let kept = self.power_off(sim, shared, &name);
                    sim.bounce(name.as_str());
                    shared.log(now, format!("nemesis power-cycle {name} kept={kept}"));
                }
                Fault::Slow(name) => {
                    // Back to the links' usual spread (set_link_latency
                    // fixes both ends; the maximum is raised after).
                    for other in Self::others(&name, nodes) {
                        sim.set_link_latency(name.as_str(), other.as_str(), LATENCY_MIN);
                        sim.set_link_max_message_latency(
                            name.as_str(),
                            other.as_str(),
                            LATENCY_MAX,
                        );
                    }
                    shared.log(now, format!("nemesis fast {name}"));
                }
                Fault::OneWay { name, deaf } => {
                    for (from, to) in one_way_links(&name, Self::peers(&name, nodes), deaf) {
                        sim.repair_oneway(from.as_str(), to.as_str());
                    }
                    shared.log(now, format!("nemesis two-way {name}"));
                }
                Fault::Held(name) => {
                    for peer in Self::peers(&name, nodes) {
                        sim.release(name.as_str(), peer.as_str());
                    }
                    shared.log(now, format!("nemesis release {name}"));
                }
            }
        }
        if now < self.next_at {
            return;
        }
        self.next_at = now + Duration::from_millis(self.rng.gen_range(200..3_000));
        // At most two faults at once, on different nodes.
        if self.active.len() >= 2 {
            return;
        }
        let name = node_name(self.rng.gen_range(0..nodes));
        if self.active.iter().any(|(_, f)| f.node() == name) {
            return;
        }
        let until = now + Duration::from_millis(self.rng.gen_range(300..5_000));
        let kind = self.rng.gen_range(0..6);
        // A one-way cut or a hold only while no other fault is on the
        // links, and no other while one is.
        let links_busy = |exclusive: bool| {
            self.active
                .iter()
                .any(|(_, f)| f.is_exclusive_link_fault() || (exclusive && f.touches_links()))
        };
        if ((kind == 0 || kind == 3) && links_busy(false)) || (kind >= 4 && links_busy(true)) {
            return;
        }
        let fault = match kind {
            0 => {
                for other in Self::others(&name, nodes) {
                    sim.partition(name.as_str(), other.as_str());
                }
                shared.log(now, format!("nemesis isolate {name}"));
                Fault::Isolated(name)
            }
            1 => {
                let kept = self.power_off(sim, shared, &name);
                shared.log(now, format!("nemesis kill {name} kept={kept}"));
                Fault::Down(name)
            }
            2 => {
                let faults = match self.rng.gen_bool(0.5) {
                    true => Faults {
                        fail_flushes: true,
                        ..Faults::default()
                    },
                    false => Faults {
                        fail_writes: true,
                        ..Faults::default()
                    },
                };
                if let Some(disk) = lock(&shared.disks).get(&name) {
                    disk.set_faults(faults);
                }
                shared.log(now, format!("nemesis disk {name} {faults:?}"));
                Fault::Disk(name)
            }
            3 => {
                let latency = Duration::from_millis(self.rng.gen_range(20..400));
                for other in Self::others(&name, nodes) {
                    sim.set_link_latency(name.as_str(), other.as_str(), latency);
                }
                shared.log(
                    now,
                    format!("nemesis slow {name} {}ms", latency.as_millis()),
                );
                Fault::Slow(name)
            }
            4 => {
                let deaf = self.rng.gen_bool(0.5);
                for (from, to) in one_way_links(&name, Self::peers(&name, nodes), deaf) {
                    sim.partition_oneway(from.as_str(), to.as_str());
                }
                let what = if deaf { "deaf" } else { "mute" };
                shared.log(now, format!("nemesis {what} {name}"));
                Fault::OneWay { name, deaf }
            }
            _ => {
                for peer in Self::peers(&name, nodes) {
                    sim.hold(name.as_str(), peer.as_str());
                }
                shared.log(now, format!("nemesis hold {name}"));
                Fault::Held(name)
            }
        };
        self.injected += 1;
        self.active.push((until, fault));
    }

    /// Undo every fault at once.
    fn heal(&mut self, sim: &mut turmoil::Sim<'_>, shared: &Shared, nodes: usize, now: Duration) {
        for (until, _) in self.active.iter_mut() {
            *until = now;
        }
        self.next_at = Duration::MAX;
        self.tick(sim, shared, nodes, now);
    }
}

/// The links a one-way cut between `host` and `peers` silences, as (from,
/// to): those into it when it is `deaf`, those out of it otherwise.
pub(crate) fn one_way_links(host: &str, peers: Vec<String>, deaf: bool) -> Vec<(String, String)> {
    peers
        .into_iter()
        .map(|peer| match deaf {
            true => (peer, host.to_string()),
            false => (host.to_string(), peer),
        })
        .collect()
}

/// Mixed into a seed for the stream of random bytes the nodes draw
/// (`tollgate_clock::random`), apart from openraft's election timeouts.
pub(crate) const RANDOM_BYTES_STREAM: u64 = 0x5eed_b17e_5eed_b17e;

/// Run one seed.
pub fn run(options: &Options) -> Outcome {
    tollgate_raft::runtime::seed_thread_rng(Some(options.seed));
    // The nodes' random bytes (key ids, tokens, keys): from the seed too,
    // on a stream of their own.
    tollgate_clock::random::seed_thread(Some(options.seed ^ RANDOM_BYTES_STREAM));
    let outcome = run_seeded(options);
    tollgate_clock::random::seed_thread(None);
    tollgate_raft::runtime::seed_thread_rng(None);
    outcome
}

fn run_seeded(options: &Options) -> Outcome {
    let shared = Arc::new(Shared::default());
    let fault_window = Duration::from_secs(options.fault_seconds);
    let mut sim = turmoil::Builder::new()
        .rng_seed(options.seed)
        // A fixed epoch: the simulation never reads the machine's clock.
        .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .tick_duration(TICK)
        .min_message_latency(LATENCY_MIN)
        .max_message_latency(LATENCY_MAX)
        .simulation_duration(fault_window + Duration::from_secs(HEAL_SECONDS + 60))
        .build();
    for index in 0..options.nodes {
        lock(&shared.disks).insert(node_name(index), MemDisk::new());
        let shared = shared.clone();
        let nodes = options.nodes;
        sim.host(node_name(index), move || {
            node_host(shared.clone(), index, nodes)
        });
    }
    sim.client("client", workload(shared.clone(), options.clone()));

    let mut nemesis = Nemesis {
        rng: StdRng::seed_from_u64(options.seed.rotate_left(17) ^ 0x5eed),
        active: Vec::new(),
        next_at: Duration::from_secs(2),
        injected: 0,
    };
    loop {
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => {
                shared.log(sim.elapsed(), format!("simulation failed: {error}"));
                lock(&shared.violations).push(format!("the simulation failed: {error}"));
                break;
            }
        }
        let now = sim.elapsed();
        if now < fault_window {
            nemesis.tick(&mut sim, &shared, options.nodes, now);
        } else if !shared.healed.swap(true, Ordering::SeqCst) {
            nemesis.heal(&mut sim, &shared, options.nodes, now);
            shared.log(now, "nemesis healed everything".into());
        }
    }
    let simulated = sim.elapsed();
    drop(sim);
    check(&shared, options);
    let history = lock(&shared.history).clone();
    let violations = lock(&shared.violations).clone();
    let acknowledged = lock(&shared.acked).len();
    let unacknowledged = shared.unacked.load(Ordering::SeqCst);
    Outcome {
        history,
        violations,
        acknowledged,
        unacknowledged,
        faults: nemesis.injected,
        simulated,
    }
}

/// The invariants: every acknowledged write is on every node, and every
/// node holds the same state.
fn check(shared: &Shared, options: &Options) {
    let views = lock(&shared.views).clone();
    if views.len() != options.nodes {
        lock(&shared.violations).push(format!(
            "only {} of {} nodes ever started",
            views.len(),
            options.nodes
        ));
        return;
    }
    let mut states = BTreeMap::new();
    for (name, view) in &views {
        match view.dump() {
            Ok(state) => {
                states.insert(name.clone(), state);
            }
            Err(e) => {
                lock(&shared.violations).push(format!("node {name}'s state is unreadable: {e}"))
            }
        }
    }
    let acked = lock(&shared.acked).clone();
    for (name, state) in &states {
        let lost: Vec<&String> = acked
            .keys()
            .filter(|key| state.get(key.as_bytes()).map(Vec::as_slice) != Some(b"1"))
            .collect();
        if !lost.is_empty() {
            lock(&shared.violations).push(format!(
                "node {name} lacks {} acknowledged writes, e.g. {:?} (acknowledged at index {:?})",
                lost.len(),
                lost[0],
                acked.get(lost[0])
            ));
        }
    }
    let mut distinct: Vec<&BTreeMap<Vec<u8>, Vec<u8>>> = states.values().collect();
    distinct.dedup();
    if distinct.len() > 1 {
        let sizes: BTreeMap<&String, usize> = states.iter().map(|(n, s)| (n, s.len())).collect();
        lock(&shared.violations).push(format!(
            "the nodes' states differ; keys per node: {sizes:?}"
        ));
    }
    if !shared.done.load(Ordering::SeqCst) && lock(&shared.violations).is_empty() {
        lock(&shared.violations).push("the workload never finished".into());
    }
}
