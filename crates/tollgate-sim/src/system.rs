//! The whole system in one simulation: a three-node origin, two regions
//! of three nodes, the meter and the seats, under the chaos harness's
//! workload and judged by its checker.
//!
//! Every node is the real one (`OriginNode`, `RegionNode`: REST, the
//! changefeed, the check port, the quota and seat paths, Raft) on a memory
//! disk, in a turmoil host with a clock of its own: the simulation's time
//! plus a skew the nemesis sets. The workload is the chaos harness's —
//! writers granting, suspending, resuming and revoking one feature per
//! slot at the origin (REST), probers checking every region node each
//! round, consumers of a hard-capped feature, seat workers, a status
//! poller and a usage sampler — recording the harness's own events with
//! the simulation's time; after the heal it resolves every consumption,
//! reads the settled bill and each node's final decisions, and
//! `tollgate_chaos::checker::check` judges the history: no lost
//! acknowledged write, revocations on every node after the heal, caps
//! within the reported bound, no seat held twice, exact billing, answers
//! consistent with their revision and regions available.
//!
//! The nemesis isolates a node, slows its links, cuts its links to its
//! peers one way or holds them and then delivers what they held at once,
//! kills it and restarts it on what its disk kept, fails its disk's writes
//! or fsyncs until it is power-cycled, skews its clock, and cuts a region
//! off from the origin.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tollgate_chaos::history::{
    Ack, Answer, Check, Consume, ConsumeOutcome, Event, Fault, Final, FinalNode, Meta, Millis,
    NodeChange, NodeState, Phase, Seat, SeatOp, SeatOutcome, Status, StatusOutcome, UsageSample,
    Write, WriteOp,
};
use tollgate_chaos::workload::{reason_name, Plan, CAP_ACCOUNT, CAP_FEATURE, SEAT_ACCOUNT};
use tollgate_clock::Clock;
use tollgate_origin_node::{OriginConfig, OriginListeners, OriginNode};
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_proto::usage::v1 as usage;
use tollgate_proto::usage::v1::usage_client::UsageClient;
use tollgate_raft::store::{Faults, MemDisk, StorageConfig};
use tollgate_region_node::{RegionConfig, RegionListeners, RegionNode};
use tollgate_sdk::WithCredential;
use tollgate_signing::PublicKeySet;
use tollgate_tls::{Expect, Transport};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::http::{self, HttpError};
use crate::{one_way_links, RANDOM_BYTES_STREAM};

/// Raft and cluster administration, on every node.
const RAFT: u16 = 7000;
/// The origin's changefeed and quota service; a region node's check port.
const GRPC: u16 = 7001;
/// The origin's REST API; a region node's operations port.
const HTTP: u16 = 8080;

const ORIGINS: usize = 3;
const REGIONS: [&str; 2] = ["eu", "us"];
const REGION_NODES: usize = 3;
/// The origin node each region follows (one changefeed endpoint each, as
/// configured in production).
const FOLLOWS: [usize; 2] = [0, 1];

/// A gRPC call gives up after this long.
const RPC_TIMEOUT: Duration = Duration::from_secs(2);
/// A REST or status call gives up after this long.
const HTTP_TIMEOUT: Duration = Duration::from_secs(3);
/// The origin's overshoot bound of the capped counter.
const OUTSTANDING_MAX: u64 = 20;
/// A node counts as up for availability only this long after a start.
const UP_GRACE_MS: u64 = 5_000;
/// Shorter unavailable windows are not reported.
const UNAVAILABLE_WINDOW_MS_MIN: u64 = 3_000;
/// Every entitlement is valid from this time on (long past).
const VALID_FROM: i64 = 1_700_000_000;
/// Setting the system up (elections, keys, the catalog, the regions
/// catching up) gives up after this much simulated time.
const SETUP_DEADLINE: Duration = Duration::from_secs(120);
/// After the heal: convergence, resolving consumptions, the bill.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(120);
const RESOLVE_DEADLINE: Duration = Duration::from_secs(60);
const BILLING_DEADLINE: Duration = Duration::from_secs(60);
const BILLING_STABLE_FOR: Duration = Duration::from_secs(3);
/// Every link's latency spread, except while the nemesis slows one.
const LATENCY_MIN: Duration = Duration::from_millis(1);
const LATENCY_MAX: Duration = Duration::from_millis(5);
const TICK: Duration = Duration::from_millis(2);

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SystemOptions {
    pub seed: u64,
    /// Simulated seconds of workload under faults.
    pub fault_seconds: u64,
}

impl SystemOptions {
    pub fn seed(seed: u64) -> SystemOptions {
        SystemOptions {
            seed,
            fault_seconds: 30,
        }
    }

    /// The command that replays this run.
    pub fn replay_command(&self) -> String {
        format!(
            "cargo run --release -p tollgate-sim -- system --seed {} --fault-seconds {}",
            self.seed, self.fault_seconds
        )
    }
}

/// What a run of the whole system saw.
#[derive(Debug, Clone)]
pub struct SystemOutcome {
    /// The chaos history's events, one JSON line each, in the order they
    /// were recorded: equal for two runs of one seed.
    pub history: Vec<String>,
    /// The checker's violations, and the run's own failures (a setup that
    /// never finished, a simulation error).
    pub violations: Vec<String>,
    /// The checker's statistics, as JSON.
    pub stats: Value,
    pub faults: usize,
    pub simulated: Duration,
}

impl SystemOutcome {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

fn origin_name(i: usize) -> String {
    format!("o{}", i + 1)
}

fn region_node_name(region: &str, i: usize) -> String {
    format!("{region}{}", i + 1)
}

fn region_nodes(region: &str) -> Vec<String> {
    (0..REGION_NODES)
        .map(|i| region_node_name(region, i))
        .collect()
}

fn all_region_nodes() -> Vec<(String, String)> {
    REGIONS
        .iter()
        .flat_map(|r| region_nodes(r).into_iter().map(|n| (r.to_string(), n)))
        .collect()
}

fn all_hosts() -> Vec<String> {
    (0..ORIGINS)
        .map(origin_name)
        .chain(all_region_nodes().into_iter().map(|(_, n)| n))
        .collect()
}

/// The simulation's time, in Unix milliseconds.
fn now_ms() -> Millis {
    turmoil::since_epoch()
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[derive(Default)]
struct World {
    dir: PathBuf,
    disks: Mutex<BTreeMap<String, MemDisk>>,
    /// Host → how far its clock is ahead of the simulation's (negative:
    /// behind), in milliseconds.
    skews: Arc<Mutex<BTreeMap<String, i64>>>,
    origin_keys: Mutex<Option<PublicKeySet>>,
    admin_token: Mutex<Option<String>>,
    /// Clusters initialised (their first node does it once).
    initialized: Mutex<BTreeSet<String>>,
    events: Mutex<Vec<Event>>,
    /// The run's own failures (not the checker's).
    failures: Mutex<Vec<String>>,
    /// Set by the workload once the system is seeded and caught up.
    ready: AtomicBool,
    healed: AtomicBool,
    done: AtomicBool,
}

impl World {
    fn record(&self, event: Event) {
        lock(&self.events).push(event);
    }

    fn fail(&self, what: String) {
        lock(&self.failures).push(what);
    }

    fn disk(&self, host: &str) -> Result<MemDisk, String> {
        lock(&self.disks)
            .get(host)
            .cloned()
            .ok_or_else(|| format!("{host} has no disk"))
    }

    /// A host's clock: the simulation's, skewed as the nemesis says.
    fn clock(&self, host: &str) -> Clock {
        let (skews, host) = (self.skews.clone(), host.to_string());
        Clock::from_fn(move || {
            let now = turmoil::since_epoch()?;
            let skew = lock(&skews).get(&host).copied().unwrap_or(0);
            match u64::try_from(skew) {
                Ok(ahead) => now.checked_add(Duration::from_millis(ahead)),
                Err(_) => now.checked_sub(Duration::from_millis(skew.unsigned_abs())),
            }
        })
    }

    /// Whether `cluster` still needs initialising (true once).
    fn first_start(&self, cluster: &str) -> bool {
        lock(&self.initialized).insert(cluster.to_string())
    }

    fn node_up(&self, at_ms: Millis, node: &str, cause: &str) {
        self.record(Event::Node(NodeChange {
            at_ms,
            node: node.to_string(),
            state: NodeState::Up,
            cause: cause.to_string(),
        }));
    }
}

async fn bind(port: u16) -> std::io::Result<turmoil::net::TcpListener> {
    turmoil::net::TcpListener::bind(("0.0.0.0", port)).await
}

/// An origin node: starts on its disk, initialises the cluster the first
/// time node 1 starts, publishes the origin's keys and the admin token.
async fn origin_host(world: Arc<World>, index: usize) -> turmoil::Result {
    let name = origin_name(index);
    let id = index as u64 + 1;
    let mut config = OriginConfig::new(id, world.dir.join(&name));
    config.seal_key_path = world.dir.join("origin-seal.key");
    config.raft.storage = StorageConfig::in_memory(world.disk(&name)?);
    config.raft.advertise_addr = Some(format!("{name}:{RAFT}"));
    config.raft.transport = Transport::Plaintext;
    config.clock = world.clock(&name);
    config.quota_outstanding_max = OUTSTANDING_MAX;
    let node = OriginNode::start(
        config,
        OriginListeners {
            raft: bind(RAFT).await?.into(),
            http: bind(HTTP).await?.into(),
            feed: bind(GRPC).await?.into(),
        },
    )
    .await?;
    if id == 1 && world.first_start("origin") {
        let members: Vec<(u64, String)> = (0..ORIGINS)
            .map(|i| (i as u64 + 1, format!("{}:{RAFT}", origin_name(i))))
            .collect();
        if let Err(error) = node.raft().initialize(&members).await {
            world.fail(format!("initialising the origin failed: {error}"));
        }
    }
    if lock(&world.origin_keys).is_none() {
        match node.wait_for_keys(SETUP_DEADLINE).await {
            Ok(keys) => {
                lock(&world.origin_keys).get_or_insert(keys);
            }
            Err(error) => world.fail(format!("{name}: {error}")),
        }
    }
    if id == 1 && lock(&world.admin_token).is_none() {
        let path = world.dir.join("admin.token");
        let deadline = tokio::time::Instant::now() + SETUP_DEADLINE;
        loop {
            match node.bootstrap_admin_key(&path).await {
                Ok(Some(token)) => {
                    *lock(&world.admin_token) = Some(token);
                    break;
                }
                Ok(None) => break,
                Err(error) if tokio::time::Instant::now() > deadline => {
                    world.fail(format!("the bootstrap admin key: {error}"));
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
    std::future::pending::<()>().await;
    Ok(())
}

/// A region node: waits for the origin's keys (an operator pins them in
/// the node's config), starts on its disk, initialises its region once.
async fn region_host(world: Arc<World>, region: usize, index: usize) -> turmoil::Result {
    let region_name = REGIONS[region];
    let name = region_node_name(region_name, index);
    let keys = loop {
        if let Some(keys) = lock(&world.origin_keys).clone() {
            break keys;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let id = index as u64 + 1;
    let origin = origin_name(FOLLOWS[region]);
    let mut config = RegionConfig::new(
        id,
        world.dir.join(&name),
        format!("http://{origin}:{GRPC}"),
        keys,
    );
    config.name = name.clone();
    config.region = region_name.to_string();
    config.raft.storage = StorageConfig::in_memory(world.disk(&name)?);
    config.raft.advertise_addr = Some(format!("{name}:{RAFT}"));
    config.raft.transport = Transport::Plaintext;
    config.clock = world.clock(&name);
    config.geo_required = false;
    config.check_threads = 1;
    let _node = RegionNode::start(
        config,
        RegionListeners {
            raft: bind(RAFT).await?.into(),
            grpc: bind(GRPC).await?.into(),
            http: Some(bind(HTTP).await?.into()),
        },
        None,
    )
    .await?;
    if id == 1 && world.first_start(region_name) {
        let members: Vec<(u64, String)> = (0..REGION_NODES)
            .map(|i| {
                (
                    i as u64 + 1,
                    format!("{}:{RAFT}", region_node_name(region_name, i)),
                )
            })
            .collect();
        if let Err(error) = _node.raft().initialize(&members).await {
            world.fail(format!("initialising region {region_name} failed: {error}"));
        }
    }
    std::future::pending::<()>().await;
    Ok(())
}

/// The origin's REST API as the admin, one origin node per call, moving
/// to the next after a failure.
#[derive(Clone)]
struct Rest {
    token: String,
    next: Arc<AtomicUsize>,
}

impl Rest {
    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), HttpError> {
        let host = origin_name(self.next.load(Ordering::SeqCst) % ORIGINS);
        let answer = http::call(
            &host,
            HTTP,
            method,
            path,
            Some(&self.token),
            body.as_ref(),
            HTTP_TIMEOUT,
        )
        .await;
        if !matches!(&answer, Ok((status, _)) if *status < 500) {
            self.next.fetch_add(1, Ordering::SeqCst);
        }
        answer
    }

    /// A call retried on every origin node until it succeeds or `deadline`
    /// passes; the last failure says why.
    async fn ok(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        deadline: Duration,
    ) -> Result<Value, String> {
        let until = tokio::time::Instant::now() + deadline;
        loop {
            let last = match self.call(method, path, body.clone()).await {
                Ok((status, value)) if (200..300).contains(&status) => return Ok(value),
                Ok((status, value)) if (400..500).contains(&status) => {
                    return Err(format!("{method} {path}: {status} {value}"))
                }
                Ok((status, value)) => format!("{status} {value}"),
                Err(error) => error.to_string(),
            };
            if tokio::time::Instant::now() > until {
                return Err(format!("{method} {path}: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// What a write's answer says about whether the origin applied it (the
/// chaos harness's rule: a refusal or no connection is certain, anything
/// after the request may have been sent is not).
fn write_outcome(answer: Result<(u16, Value), HttpError>) -> Ack {
    match answer {
        Ok((status, body)) if (200..300).contains(&status) => match body["revision"].as_u64() {
            Some(revision) => Ack::Acked { revision },
            None => Ack::Indeterminate {
                error: format!("{status} without a revision: {body}"),
            },
        },
        Ok((status, body)) if (400..500).contains(&status) => Ack::Failed {
            error: format!("{status} {}", body["code"]),
        },
        Ok((status, body)) => Ack::Indeterminate {
            error: format!("{status} {}", body["code"]),
        },
        Err(HttpError::Connect(error)) => Ack::Failed {
            error: format!("connect: {error}"),
        },
        Err(HttpError::Lost(error)) => Ack::Indeterminate { error },
    }
}

type AppChannel = InterceptedService<Channel, WithCredential>;

/// One lazily connected channel per region node, presenting the
/// workload's application credential.
#[derive(Clone)]
struct Clients {
    channels: BTreeMap<String, AppChannel>,
}

impl Clients {
    fn new(credential: &str) -> Result<Clients, String> {
        let credential = WithCredential::new(credential).map_err(|e| e.to_string())?;
        let mut channels = BTreeMap::new();
        for (_, node) in all_region_nodes() {
            let endpoint = Endpoint::from_shared(format!("http://{node}:{GRPC}"))
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_millis(500))
                .timeout(RPC_TIMEOUT)
                // As the SDK does: a connection a partition left half-open
                // is given up, not waited on call after call.
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(1))
                .keep_alive_while_idle(true);
            let channel = endpoint.connect_with_connector_lazy(
                Transport::Plaintext.connector(Expect::HostName, "sim"),
            );
            channels.insert(node, InterceptedService::new(channel, credential.clone()));
        }
        Ok(Clients { channels })
    }

    fn channel(&self, node: &str) -> AppChannel {
        self.channels[node].clone()
    }

    async fn check(&self, node: &str, account: &str, feature: &str) -> (Millis, Millis, Answer) {
        let request = pb::CheckRequest {
            account_id: account.into(),
            feature_id: feature.into(),
            ..Default::default()
        };
        let start = now_ms();
        let result = tokio::time::timeout(
            RPC_TIMEOUT,
            CheckServiceClient::new(self.channel(node)).check(request),
        )
        .await;
        let answer = match result {
            Err(_) => Answer::Error {
                error: "timed out".into(),
            },
            Ok(Err(status)) => Answer::Error {
                error: status_text(&status),
            },
            Ok(Ok(response)) => {
                let r = response.into_inner();
                match r.decision {
                    Some(d) => Answer::Answered {
                        revision: r.revision,
                        reason: reason_name(d.reason()),
                        allowed: d.allowed,
                        staleness_seconds: r.staleness_seconds,
                    },
                    None => Answer::Error {
                        error: "an answer without a decision".into(),
                    },
                }
            }
        };
        (start, now_ms(), answer)
    }

    async fn consume(&self, node: &str, key: &str) -> (Millis, Millis, ConsumeOutcome) {
        let request = pb::CheckRequest {
            account_id: CAP_ACCOUNT.into(),
            feature_id: CAP_FEATURE.into(),
            consume: 1,
            idempotency_key: Some(key.into()),
            ..Default::default()
        };
        let start = now_ms();
        let result = tokio::time::timeout(
            RPC_TIMEOUT,
            CheckServiceClient::new(self.channel(node)).check(request),
        )
        .await;
        let outcome = match result {
            Err(_) => ConsumeOutcome::Error {
                error: "timed out".into(),
            },
            Ok(Err(status)) => ConsumeOutcome::Error {
                error: status_text(&status),
            },
            Ok(Ok(response)) => {
                let r = response.into_inner();
                match r.decision {
                    Some(d) if d.allowed => ConsumeOutcome::Allowed {
                        revision: r.revision,
                    },
                    Some(d) => ConsumeOutcome::Denied {
                        reason: reason_name(d.reason()),
                    },
                    None => ConsumeOutcome::Error {
                        error: "an answer without a decision".into(),
                    },
                }
            }
        };
        (start, now_ms(), outcome)
    }

    async fn seat(&self, node: &str, holder: &str, op: SeatOp) -> (Millis, Millis, SeatOutcome) {
        let mut client = UsageClient::new(self.channel(node));
        let request = usage::SeatRequest {
            account_id: SEAT_ACCOUNT.into(),
            subject_id: holder.into(),
            feature_id: tollgate_chaos::workload::SEAT_FEATURE.into(),
        };
        let start = now_ms();
        let result = tokio::time::timeout(RPC_TIMEOUT, async {
            match op {
                SeatOp::Acquire => client.acquire_seat(request).await,
                SeatOp::Release => client.release_seat(request).await,
            }
        })
        .await;
        let outcome = match result {
            Err(_) => SeatOutcome::Error {
                error: "timed out".into(),
            },
            Ok(Err(status)) => SeatOutcome::Error {
                error: status_text(&status),
            },
            Ok(Ok(response)) => {
                let r = response.into_inner();
                match r.status() {
                    usage::SeatStatus::Held => SeatOutcome::Held {
                        expires_at_s: r.expires_at,
                    },
                    usage::SeatStatus::Full => SeatOutcome::Full,
                    usage::SeatStatus::NotHeld => SeatOutcome::NotHeld,
                    usage::SeatStatus::Released => SeatOutcome::Released,
                    usage::SeatStatus::Unspecified => SeatOutcome::Error {
                        error: "SEAT_STATUS_UNSPECIFIED".into(),
                    },
                }
            }
        };
        (start, now_ms(), outcome)
    }
}

fn status_text(status: &tonic::Status) -> String {
    let message: String = status.message().chars().take(200).collect();
    format!("{:?}: {message}", status.code())
}

/// A region node's `/v1/status`.
async fn node_status(node: &str) -> Result<Value, String> {
    match http::call(node, HTTP, "GET", "/v1/status", None, None, HTTP_TIMEOUT).await {
        Ok((200, value)) => Ok(value),
        Ok((status, value)) => Err(format!("{status} {value}")),
        Err(error) => Err(error.to_string()),
    }
}

fn plan(fault_seconds: u64) -> Plan {
    Plan {
        slots: 8,
        accounts: 4,
        cap: (2 * fault_seconds).max(30),
        seat_count: 2,
        lease_ttl_seconds: 10,
        seat_workers_per_region: 3,
        consumers_per_region: 2,
        writers: 2,
        write_interval: Duration::from_millis(450),
        probe_interval: Duration::from_millis(200),
        consume_interval: Duration::from_millis(300),
        status_interval: Duration::from_millis(500),
    }
}

fn seat_holders(region: &str, plan: &Plan) -> Vec<String> {
    (0..plan.seat_workers_per_region)
        .map(|i| format!("{region}-u{i}"))
        .collect()
}

/// The catalog, accounts, the capped and the seat entitlement, and the
/// workload's credential, as the chaos harness seeds them; the head
/// revision after, and the credential's token.
async fn seed(rest: &Rest, plan: &Plan) -> Result<(u64, String), String> {
    let put = |path: String, body: Value| async move {
        rest.ok("PUT", &path, Some(body), SETUP_DEADLINE).await
    };
    let credential = rest
        .ok(
            "POST",
            "/v1/credentials",
            Some(
                json!({"name": "simulated workload", "accounts": "*", "products": "*",
                "verbs": ["check", "watch", "watch_all", "report_usage", "seats"]}),
            ),
            SETUP_DEADLINE,
        )
        .await?;
    let token = credential["token"]
        .as_str()
        .ok_or("the credential has no token")?
        .to_string();
    put(
        "/v1/products/chaos".into(),
        json!({"id": "chaos", "name": "Chaos"}),
    )
    .await?;
    for slot in 0..plan.slots {
        let (f, product, p, sku) = (
            Plan::slot_feature(slot),
            Plan::slot_product(slot),
            Plan::slot_plan(slot),
            Plan::slot_sku(slot),
        );
        put(
            format!("/v1/products/{product}"),
            json!({"id": product, "name": product}),
        )
        .await?;
        put(
            format!("/v1/features/{f}"),
            json!({"id": f, "product": product, "name": f, "kind": "boolean"}),
        )
        .await?;
        put(
            format!("/v1/plans/{p}"),
            json!({"id": p, "product": product, "name": p, "tier": 1,
                "features": [{"feature": f}]}),
        )
        .await?;
        put(
            format!("/v1/skus/{sku}"),
            json!({"id": sku, "name": sku, "target": {"plan": p}, "quantity": "unmetered"}),
        )
        .await?;
    }
    put(
        format!("/v1/features/{CAP_FEATURE}"),
        json!({"id": CAP_FEATURE, "product": "chaos", "name": CAP_FEATURE,
            "kind": {"metered": {"unit": "units", "period": "lifetime"}}}),
    )
    .await?;
    let seat_feature = tollgate_chaos::workload::SEAT_FEATURE;
    put(
        format!("/v1/features/{seat_feature}"),
        json!({"id": seat_feature, "product": "chaos", "name": seat_feature, "kind": "boolean"}),
    )
    .await?;
    let mut accounts: Vec<String> = (0..plan.accounts).map(|a| format!("a-{a}")).collect();
    accounts.extend([CAP_ACCOUNT.to_string(), SEAT_ACCOUNT.to_string()]);
    for a in &accounts {
        put(format!("/v1/accounts/{a}"), json!({"id": a, "name": a})).await?;
    }
    for region in REGIONS {
        for holder in seat_holders(region, plan) {
            put(
                format!("/v1/accounts/{SEAT_ACCOUNT}/subjects/{holder}"),
                json!({"id": holder, "account": SEAT_ACCOUNT, "kind": "user"}),
            )
            .await?;
        }
    }
    rest.ok(
        "POST",
        "/v1/entitlements",
        Some(json!({"id": "cap", "account": CAP_ACCOUNT,
            "grant": {"feature": {"feature": CAP_FEATURE,
                "usage_cap": {"limit": plan.cap, "enforcement": "hard"}}},
            "valid_from": VALID_FROM})),
        SETUP_DEADLINE,
    )
    .await?;
    let written = rest
        .ok(
            "POST",
            "/v1/entitlements",
            Some(json!({"id": "seats", "account": SEAT_ACCOUNT,
                "grant": {"feature": {"feature": seat_feature}}, "valid_from": VALID_FROM,
                "seats": {"count": plan.seat_count,
                    "mode": {"floating": {"lease_ttl_seconds": plan.lease_ttl_seconds}}}})),
            SETUP_DEADLINE,
        )
        .await?;
    let head = written["revision"]
        .as_u64()
        .ok_or_else(|| format!("a write's answer has no revision: {written}"))?;
    Ok((head, token))
}

/// Waits until every region node has applied `at_least`; the nodes still
/// behind when `deadline` passed, if any.
async fn wait_applied(at_least: u64, deadline: Duration) -> Result<(), String> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let mut behind = Vec::new();
        for (_, node) in all_region_nodes() {
            match node_status(&node).await {
                Ok(s) if s["applied_revision"].as_u64().unwrap_or(0) >= at_least => {}
                Ok(s) => behind.push(format!("{node} at {}", s["applied_revision"])),
                Err(error) => behind.push(format!("{node}: {error}")),
            }
        }
        if behind.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() > until {
            return Err(format!(
                "not every region node applied revision {at_least} within {deadline:?}; behind: {}",
                behind.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The origin's usage row of the capped counter.
async fn usage_row(rest: &Rest) -> Result<Option<UsageSample>, String> {
    let path = format!("/v1/accounts/{CAP_ACCOUNT}/usage?feature={CAP_FEATURE}");
    let body = match rest.call("GET", &path, None).await {
        Ok((200, body)) => body,
        Ok((status, body)) => return Err(format!("{status} {body}")),
        Err(error) => return Err(error.to_string()),
    };
    let Some(row) = body["items"].as_array().and_then(|items| items.first()) else {
        return Ok(None);
    };
    let field = |k: &str| row[k].as_u64().unwrap_or(0);
    Ok(Some(UsageSample {
        at_ms: now_ms(),
        limit: field("limit"),
        consumed: field("consumed"),
        allotted: field("allotted"),
        outstanding: field("outstanding"),
    }))
}

/// The workload's shared parts.
struct Load {
    world: Arc<World>,
    clients: Clients,
    rest: Rest,
    plan: Plan,
    /// Ends the writers, consumers and seat workers.
    load_stop: AtomicBool,
    /// Ends the probers, the status poller and the usage sampler.
    observe_stop: AtomicBool,
}

impl Load {
    /// Sleeps `d`; true if `stop` was set.
    async fn pause(stop: &AtomicBool, d: Duration) -> bool {
        tokio::time::sleep(d).await;
        stop.load(Ordering::SeqCst)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum SlotState {
    Empty,
    Active(String),
    Suspended(String),
    Revoked,
    Unknown,
}

async fn writer(load: Arc<Load>, index: u32, mut rng: StdRng) {
    let plan = &load.plan;
    let slots: Vec<u32> = (0..plan.slots)
        .filter(|s| s % plan.writers == index)
        .collect();
    let mut state = vec![SlotState::Empty; plan.slots as usize];
    let mut generation = vec![0u32; plan.slots as usize];
    while !load.load_stop.load(Ordering::SeqCst) && !slots.is_empty() {
        let slot = slots[rng.gen_range(0..slots.len())];
        let s = slot as usize;
        let (op, id) = match &state[s] {
            SlotState::Active(id) if rng.gen_bool(0.3) => (WriteOp::Suspend, id.clone()),
            SlotState::Active(id) => (WriteOp::Revoke, id.clone()),
            SlotState::Suspended(id) if rng.gen_bool(0.5) => (WriteOp::Resume, id.clone()),
            SlotState::Suspended(id) => (WriteOp::Revoke, id.clone()),
            _ => {
                generation[s] += 1;
                let op = if rng.gen_bool(0.5) {
                    WriteOp::Grant
                } else {
                    WriteOp::Order
                };
                (op, format!("s{slot}-{}", generation[s]))
            }
        };
        let start_ms = now_ms();
        let answer = match op {
            WriteOp::Grant => {
                load.rest
                    .call(
                        "POST",
                        "/v1/entitlements",
                        Some(json!({"id": id, "account": plan.slot_account(slot),
                            "grant": {"feature": {"feature": Plan::slot_feature(slot)}},
                            "valid_from": VALID_FROM})),
                    )
                    .await
            }
            WriteOp::Order => {
                load.rest
                    .call(
                        "POST",
                        "/v1/orders",
                        Some(json!({"id": id, "account": plan.slot_account(slot),
                            "sku": Plan::slot_sku(slot), "kind": "new", "quantity": 1,
                            "term_start": VALID_FROM})),
                    )
                    .await
            }
            WriteOp::Suspend | WriteOp::Resume | WriteOp::Revoke => {
                let verb = match op {
                    WriteOp::Suspend => "suspend",
                    WriteOp::Resume => "resume",
                    _ => "revoke",
                };
                load.rest
                    .call(
                        "POST",
                        &format!("/v1/entitlements/{id}/{verb}"),
                        Some(Value::Null),
                    )
                    .await
            }
        };
        let outcome = write_outcome(answer);
        state[s] = match (&outcome, op) {
            (Ack::Acked { .. }, WriteOp::Grant | WriteOp::Order | WriteOp::Resume) => {
                SlotState::Active(id.clone())
            }
            (Ack::Acked { .. }, WriteOp::Suspend) => SlotState::Suspended(id.clone()),
            (Ack::Acked { .. }, WriteOp::Revoke) => SlotState::Revoked,
            (Ack::Failed { .. }, _) => state[s].clone(),
            (Ack::Indeterminate { .. }, _) => SlotState::Unknown,
        };
        load.world.record(Event::Write(Write {
            start_ms,
            end_ms: now_ms(),
            slot,
            entitlement: id,
            op,
            outcome,
        }));
        if Load::pause(&load.load_stop, plan.write_interval).await {
            break;
        }
    }
}

async fn prober(load: Arc<Load>, region: &'static str, mut rng: StdRng) {
    let nodes = region_nodes(region);
    let mut round = 0;
    while !load.observe_stop.load(Ordering::SeqCst) {
        round += 1;
        let slot = rng.gen_range(0..load.plan.slots);
        let (account, feature) = (load.plan.slot_account(slot), Plan::slot_feature(slot));
        let answers = futures::future::join_all(
            nodes
                .iter()
                .map(|n| load.clients.check(n, &account, &feature)),
        )
        .await;
        for (node, (start_ms, end_ms, outcome)) in nodes.iter().zip(answers) {
            load.world.record(Event::Check(Check {
                start_ms,
                end_ms,
                region: region.to_string(),
                node: node.clone(),
                round,
                slot,
                outcome,
            }));
        }
        if Load::pause(&load.observe_stop, load.plan.probe_interval).await {
            break;
        }
    }
}

/// Attempts at one consumption or one release, on different nodes.
const ATTEMPTS_MAX: usize = 3;

async fn consumer(load: Arc<Load>, region: &'static str, index: u32, mut rng: StdRng) {
    let nodes = region_nodes(region);
    let mut n = 0u64;
    while !load.load_stop.load(Ordering::SeqCst) {
        n += 1;
        let key = format!("{region}-c{index}-{n}");
        let first = rng.gen_range(0..nodes.len());
        for attempt in 0..ATTEMPTS_MAX.min(nodes.len()) {
            let node = &nodes[(first + attempt) % nodes.len()];
            let (start_ms, end_ms, outcome) = load.clients.consume(node, &key).await;
            let lost = matches!(outcome, ConsumeOutcome::Error { .. });
            load.world.record(Event::Consume(Consume {
                start_ms,
                end_ms,
                region: region.to_string(),
                node: node.clone(),
                key: key.clone(),
                outcome,
            }));
            if !lost {
                break;
            }
        }
        if Load::pause(&load.load_stop, load.plan.consume_interval).await {
            break;
        }
    }
}

async fn seat_worker(load: Arc<Load>, region: &'static str, holder: String, mut rng: StdRng) {
    let nodes = region_nodes(region);
    let call = |node: String, op: SeatOp| {
        let (load, holder) = (load.clone(), holder.clone());
        async move {
            let (start_ms, end_ms, outcome) = load.clients.seat(&node, &holder, op).await;
            load.world.record(Event::Seat(Seat {
                start_ms,
                end_ms,
                region: region.to_string(),
                node,
                holder,
                op,
                outcome: outcome.clone(),
            }));
            outcome
        }
    };
    while !load.load_stop.load(Ordering::SeqCst) {
        let node = nodes[rng.gen_range(0..nodes.len())].clone();
        if matches!(call(node, SeatOp::Acquire).await, SeatOutcome::Held { .. }) {
            let held = Duration::from_millis(rng.gen_range(300..1_500));
            let stopping = Load::pause(&load.load_stop, held).await;
            let first = rng.gen_range(0..nodes.len());
            for attempt in 0..ATTEMPTS_MAX.min(nodes.len()) {
                let node = nodes[(first + attempt) % nodes.len()].clone();
                if !matches!(call(node, SeatOp::Release).await, SeatOutcome::Error { .. }) {
                    break;
                }
            }
            if stopping {
                break;
            }
        }
        let wait = Duration::from_millis(rng.gen_range(100..500));
        if Load::pause(&load.load_stop, wait).await {
            break;
        }
    }
}

async fn status_poller(load: Arc<Load>, region: String, node: String) {
    while !load.observe_stop.load(Ordering::SeqCst) {
        let start_ms = now_ms();
        let outcome = match node_status(&node).await {
            Ok(s) => StatusOutcome::Ok {
                role: s["role"].as_str().unwrap_or_default().to_string(),
                term: s["term"].as_u64().unwrap_or(0),
                leader: s["leader"].as_u64(),
                applied_revision: s["applied_revision"].as_u64().unwrap_or(0),
                staleness_seconds: s["staleness_seconds"].as_u64(),
                recovering: s["recovering"].as_bool().unwrap_or(false),
            },
            Err(error) => StatusOutcome::Error {
                error: error.chars().take(200).collect(),
            },
        };
        load.world.record(Event::Status(Status {
            start_ms,
            end_ms: now_ms(),
            region: region.clone(),
            node: node.clone(),
            outcome,
        }));
        if Load::pause(&load.observe_stop, load.plan.status_interval).await {
            break;
        }
    }
}

async fn usage_sampler(load: Arc<Load>) {
    while !load.observe_stop.load(Ordering::SeqCst) {
        if let Ok(Some(sample)) = usage_row(&load.rest).await {
            load.world.record(Event::Usage(sample));
        }
        if Load::pause(&load.observe_stop, Duration::from_secs(1)).await {
            break;
        }
    }
}

/// Retries every consumption that never got an answer until each has one
/// or the deadline passes.
async fn resolve_consumptions(load: &Load) {
    let mut open: BTreeMap<String, String> = BTreeMap::new();
    let mut answered = BTreeSet::new();
    for e in lock(&load.world.events).iter() {
        if let Event::Consume(c) = e {
            if matches!(c.outcome, ConsumeOutcome::Error { .. }) {
                open.insert(c.key.clone(), c.region.clone());
            } else {
                answered.insert(c.key.clone());
            }
        }
    }
    open.retain(|key, _| !answered.contains(key));
    let until = tokio::time::Instant::now() + RESOLVE_DEADLINE;
    for (key, region) in open {
        let nodes = region_nodes(&region);
        let mut attempt = 0;
        while tokio::time::Instant::now() < until {
            let node = &nodes[attempt % nodes.len()];
            attempt += 1;
            let (start_ms, end_ms, outcome) = load.clients.consume(node, &key).await;
            let done = !matches!(outcome, ConsumeOutcome::Error { .. });
            load.world.record(Event::Consume(Consume {
                start_ms,
                end_ms,
                region: region.clone(),
                node: node.clone(),
                key: key.clone(),
                outcome,
            }));
            if done {
                break;
            }
            if attempt % nodes.len() == 0 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// The billed total once nothing is left unreported on any region node
/// and it has not moved for a while; whether it settled.
async fn settled_billing(load: &Load) -> (Option<u64>, bool) {
    let until = tokio::time::Instant::now() + BILLING_DEADLINE;
    let mut seen: Option<(Option<u64>, tokio::time::Instant)> = None;
    loop {
        let mut unreported = false;
        for (_, node) in all_region_nodes() {
            match node_status(&node).await {
                Ok(s)
                    if s["metering"]["unreported_units"].as_u64() == Some(0)
                        && s["metering"]["pending_entries"].as_u64() == Some(0) => {}
                _ => unreported = true,
            }
        }
        if let Ok(row) = usage_row(&load.rest).await {
            let billed = row.map(|u| u.consumed);
            seen = match seen {
                Some((previous, since)) if previous == billed => Some((previous, since)),
                _ => Some((billed, tokio::time::Instant::now())),
            };
        }
        if let Some((billed, since)) = seen {
            if !unreported && since.elapsed() >= BILLING_STABLE_FOR {
                return (billed, true);
            }
        }
        if tokio::time::Instant::now() > until {
            return (seen.and_then(|(billed, _)| billed), false);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The origin's entitlements and what they imply per slot, and what every
/// region node answers for every slot.
async fn final_state(
    load: &Load,
    converged: bool,
    origin_head: u64,
    (billed, billing_settled): (Option<u64>, bool),
) -> Result<Final, String> {
    let plan = &load.plan;
    let mut origin_entitlements = BTreeMap::new();
    let mut by_slot: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for a in 0..plan.accounts {
        let body = load
            .rest
            .ok(
                "GET",
                &format!("/v1/accounts/a-{a}/entitlements"),
                None,
                CONVERGE_DEADLINE,
            )
            .await?;
        for e in body["items"].as_array().into_iter().flatten() {
            let id = e["id"].as_str().unwrap_or_default().to_string();
            let status = e["status"].as_str().unwrap_or("active").to_string();
            let slot = e["grant"]["feature"]["feature"]
                .as_str()
                .and_then(|f| plan.slot_of_feature(f))
                .or_else(|| {
                    e["grant"]["plan"]
                        .as_str()
                        .and_then(|p| plan.slot_of_plan(p))
                });
            if let Some(slot) = slot {
                by_slot.entry(slot).or_default().push(status.clone());
            }
            origin_entitlements.insert(id, status);
        }
    }
    let truth: BTreeMap<u32, String> = (0..plan.slots)
        .map(|slot| {
            let statuses = by_slot.get(&slot).cloned().unwrap_or_default();
            let decision = if statuses.iter().any(|s| s == "active") {
                "ALLOW"
            } else if statuses.iter().any(|s| s == "suspended") {
                "SUSPENDED"
            } else if statuses.iter().any(|s| s == "revoked") {
                "REVOKED"
            } else {
                "NOT_ENTITLED"
            };
            (slot, decision.to_string())
        })
        .collect();
    let mut nodes = Vec::new();
    for (region, node) in all_region_nodes() {
        let applied_revision = node_status(&node)
            .await
            .ok()
            .and_then(|s| s["applied_revision"].as_u64());
        let mut decisions = BTreeMap::new();
        for slot in 0..plan.slots {
            let (account, feature) = (plan.slot_account(slot), Plan::slot_feature(slot));
            let mut last = String::new();
            for _ in 0..5 {
                match load.clients.check(&node, &account, &feature).await.2 {
                    Answer::Answered { reason, .. } => {
                        last = reason;
                        break;
                    }
                    Answer::Error { error } => {
                        last = format!("ERROR: {error}");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
            decisions.insert(slot, last);
        }
        nodes.push(FinalNode {
            region,
            node,
            applied_revision,
            decisions,
        });
    }
    Ok(Final {
        at_ms: now_ms(),
        converged,
        origin_head,
        origin_entitlements,
        truth,
        nodes,
        billed,
        billing_settled: Some(billing_settled),
    })
}

/// How long after the heal every region has to have reported to the
/// origin again (reports are due every 15 s, and on any change).
const REPORT_DEADLINE: Duration = Duration::from_secs(20);

/// Waits until the origin has recorded a report of every region above
/// revision `after`.
async fn wait_reports(rest: &Rest, after: u64) -> Result<(), String> {
    let until = tokio::time::Instant::now() + REPORT_DEADLINE;
    loop {
        let mut last: BTreeMap<String, u64> = REGIONS.iter().map(|r| (r.to_string(), 0)).collect();
        if let Ok((200, body)) = rest.call("GET", "/v1/regions", None).await {
            for item in body["items"].as_array().into_iter().flatten() {
                if let (Some(region), Some(revision)) =
                    (item["report"]["region"].as_str(), item["revision"].as_u64())
                {
                    last.insert(region.to_string(), revision);
                }
            }
        }
        if last.values().all(|r| *r > after) {
            return Ok(());
        }
        if tokio::time::Instant::now() > until {
            return Err(format!(
                "not every region reported to the origin within {REPORT_DEADLINE:?} of the heal (head then {after}); last reports at: {last:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The origin's head revision, as its leader reports it.
async fn origin_head(rest: &Rest) -> Result<u64, String> {
    let status = rest
        .ok("GET", "/v1/status", None, Duration::from_secs(10))
        .await?;
    status["head_revision"]
        .as_u64()
        .ok_or_else(|| format!("no head revision in {status}"))
}

/// The client host: seeds the system, runs the load until the heal, then
/// converges, resolves, reads the final state.
async fn workload(world: Arc<World>, options: SystemOptions) -> turmoil::Result {
    let plan = plan(options.fault_seconds);
    let started = tokio::time::Instant::now();
    let token = loop {
        if let Some(token) = lock(&world.admin_token).clone() {
            break token;
        }
        if started.elapsed() > SETUP_DEADLINE {
            world.fail("the origin never issued its admin key".into());
            world.done.store(true, Ordering::SeqCst);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let rest = Rest {
        token,
        next: Arc::new(AtomicUsize::new(0)),
    };
    let (head, credential) = match seed(&rest, &plan).await {
        Ok(seeded) => seeded,
        Err(error) => {
            world.fail(format!("seeding the origin: {error}"));
            world.done.store(true, Ordering::SeqCst);
            return Ok(());
        }
    };
    if let Err(error) = wait_applied(head, SETUP_DEADLINE).await {
        world.fail(format!("after seeding: {error}"));
        world.done.store(true, Ordering::SeqCst);
        return Ok(());
    }
    world.record(Event::Meta(Meta {
        scenario: "simulation".into(),
        seed: options.seed,
        duration_seconds: options.fault_seconds,
        regions: REGIONS
            .iter()
            .map(|r| (r.to_string(), region_nodes(r)))
            .collect(),
        slots: plan.slots,
        cap: plan.cap,
        outstanding_max: OUTSTANDING_MAX,
        seat_count: u64::from(plan.seat_count),
        up_grace_ms: UP_GRACE_MS,
        unavailable_window_ms_min: UNAVAILABLE_WINDOW_MS_MIN,
        sdk_checks_must_answer: false,
    }));
    let clients = Clients::new(&credential)?;
    let load = Arc::new(Load {
        world: world.clone(),
        clients,
        rest: rest.clone(),
        plan,
        load_stop: AtomicBool::new(false),
        observe_stop: AtomicBool::new(false),
    });
    let mut rng = StdRng::seed_from_u64(options.seed ^ 0x10ad);
    let mut load_tasks = Vec::new();
    let mut observers = Vec::new();
    for w in 0..load.plan.writers {
        load_tasks.push(tokio::spawn(writer(
            load.clone(),
            w,
            StdRng::seed_from_u64(rng.gen()),
        )));
    }
    for region in REGIONS {
        observers.push(tokio::spawn(prober(
            load.clone(),
            region,
            StdRng::seed_from_u64(rng.gen()),
        )));
        for c in 0..load.plan.consumers_per_region {
            load_tasks.push(tokio::spawn(consumer(
                load.clone(),
                region,
                c,
                StdRng::seed_from_u64(rng.gen()),
            )));
        }
        for holder in seat_holders(region, &load.plan) {
            load_tasks.push(tokio::spawn(seat_worker(
                load.clone(),
                region,
                holder,
                StdRng::seed_from_u64(rng.gen()),
            )));
        }
    }
    for (region, node) in all_region_nodes() {
        observers.push(tokio::spawn(status_poller(load.clone(), region, node)));
    }
    observers.push(tokio::spawn(usage_sampler(load.clone())));
    world.ready.store(true, Ordering::SeqCst);

    while !world.healed.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    load.load_stop.store(true, Ordering::SeqCst);
    for task in load_tasks {
        task.await?;
    }
    let last_acked = lock(&world.events)
        .iter()
        .filter_map(|e| match e {
            Event::Write(w) => match w.outcome {
                Ack::Acked { revision } => Some(revision),
                _ => None,
            },
            _ => None,
        })
        .max()
        .unwrap_or(head);
    let heal_head = match origin_head(&rest).await {
        Ok(head) => head,
        Err(error) => {
            world.fail(format!("the origin's head after the heal: {error}"));
            0
        }
    };
    let converge_from = tokio::time::Instant::now();
    let mut origin_head_seen = 0;
    let mut converged = false;
    while converge_from.elapsed() < CONVERGE_DEADLINE {
        if let Ok(h) = origin_head(&rest).await {
            origin_head_seen = h;
        }
        if origin_head_seen >= last_acked
            && wait_applied(origin_head_seen, Duration::ZERO).await.is_ok()
        {
            converged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Every region's leader reports to the origin again after the heal
    // (the link a partition left half-open is given up and dialled anew).
    if let Err(error) = wait_reports(&rest, heal_head).await {
        world.fail(error);
    }
    resolve_consumptions(&load).await;
    let billing = settled_billing(&load).await;
    match final_state(&load, converged, origin_head_seen, billing).await {
        Ok(fin) => world.record(Event::Final(fin)),
        Err(error) => world.fail(format!("reading the final state: {error}")),
    }
    load.observe_stop.store(true, Ordering::SeqCst);
    for task in observers {
        task.await?;
    }
    world.done.store(true, Ordering::SeqCst);
    Ok(())
}

/// A fault in progress.
#[derive(Debug, Clone)]
enum Kind {
    Isolate(String),
    Kill(String),
    Disk(String),
    Slow(String),
    Skew(String),
    /// A node's links to the rest of its cluster carry nothing one way: it
    /// hears its peers but they do not hear it (`deaf: false`), or the
    /// other way round.
    OneWay {
        host: String,
        deaf: bool,
    },
    /// A node's links to the rest of its cluster hold every message, and
    /// deliver them all at once when released: a stall, then a burst.
    Hold(String),
    /// A region cut off from every origin node.
    Cut(&'static str),
}

impl Kind {
    /// The hosts it touches.
    fn hosts(&self) -> Vec<String> {
        match self {
            Kind::Isolate(h)
            | Kind::Kill(h)
            | Kind::Disk(h)
            | Kind::Slow(h)
            | Kind::Skew(h)
            | Kind::OneWay { host: h, .. }
            | Kind::Hold(h) => vec![h.clone()],
            Kind::Cut(region) => region_nodes(region),
        }
    }
}

/// The cluster a host belongs to: `o`, or a region's name.
fn cluster_of(host: &str) -> &str {
    host.trim_end_matches(|c: char| c.is_ascii_digit())
}

/// The other members of `host`'s cluster. Faults on these links alone never
/// meet another cluster's fault (one fault per cluster at a time), so one
/// fault's undoing never undoes another's.
fn cluster_peers(host: &str) -> Vec<String> {
    all_hosts()
        .into_iter()
        .filter(|other| other != host && cluster_of(other) == cluster_of(host))
        .collect()
}

struct Nemesis {
    rng: StdRng,
    active: Vec<(Duration, u32, Kind)>,
    next_at: Duration,
    steps: u32,
}

impl Nemesis {
    fn record(world: &World, step: u32, phase: Phase, description: String, kind: &Kind) {
        let cut_from_origin = match kind {
            Kind::Cut(region) => vec![region.to_string()],
            _ => Vec::new(),
        };
        world.record(Event::Fault(Fault {
            at_ms: now_of_sim(),
            step,
            phase,
            description,
            cut_from_origin,
        }));
    }

    /// Kills `host` now: its disk keeps what it flushed and a random part
    /// of what it wrote since.
    fn power_off(&mut self, sim: &mut turmoil::Sim<'_>, world: &World, host: &str) -> usize {
        let mut disks = lock(&world.disks);
        let Some(disk) = disks.get(host).cloned() else {
            return 0;
        };
        let unflushed = disk.unflushed_writes();
        let kept = match self.rng.gen_range(0..4) {
            0 => 0,
            1 => unflushed,
            _ => self.rng.gen_range(0..=unflushed),
        };
        disks.insert(host.to_string(), disk.crash(kept));
        drop(disks);
        sim.crash(host);
        world.record(Event::Node(NodeChange {
            at_ms: now_of_sim(),
            node: host.to_string(),
            state: NodeState::Down,
            cause: format!("power off, kept {kept} of {unflushed} unflushed writes"),
        }));
        kept
    }

    fn restart(sim: &mut turmoil::Sim<'_>, world: &World, host: &str) {
        sim.bounce(host);
        world.node_up(now_of_sim(), host, "restarted");
    }

    fn undo(&mut self, sim: &mut turmoil::Sim<'_>, world: &World, step: u32, kind: Kind) {
        let description = match &kind {
            Kind::Isolate(h) => {
                for other in all_hosts().iter().chain([&"client".to_string()]) {
                    if other != h {
                        sim.repair(h.as_str(), other.as_str());
                    }
                }
                format!("heal {h}")
            }
            Kind::Kill(h) => {
                Self::restart(sim, world, h);
                format!("restart {h}")
            }
            Kind::Disk(h) => {
                let kept = self.power_off(sim, world, h);
                Self::restart(sim, world, h);
                format!("power-cycle {h} onto a mended disk, kept {kept}")
            }
            Kind::Slow(h) => {
                for other in all_hosts().iter().chain([&"client".to_string()]) {
                    if other != h {
                        sim.set_link_latency(h.as_str(), other.as_str(), LATENCY_MIN);
                        sim.set_link_max_message_latency(h.as_str(), other.as_str(), LATENCY_MAX);
                    }
                }
                format!("fast {h}")
            }
            Kind::Skew(h) => {
                lock(&world.skews).remove(h);
                format!("clock of {h} back in step")
            }
            Kind::OneWay { host, deaf } => {
                for (from, to) in one_way_links(host, cluster_peers(host), *deaf) {
                    sim.repair_oneway(from.as_str(), to.as_str());
                }
                match deaf {
                    true => format!("{host} hears its peers again"),
                    false => format!("{host}'s peers hear it again"),
                }
            }
            Kind::Hold(h) => {
                for peer in cluster_peers(h) {
                    sim.release(h.as_str(), peer.as_str());
                }
                format!("release the links of {h} to its peers")
            }
            Kind::Cut(region) => {
                for node in region_nodes(region) {
                    for o in 0..ORIGINS {
                        sim.repair(node.as_str(), origin_name(o).as_str());
                    }
                }
                format!("region {region} reconnected to the origin")
            }
        };
        Self::record(world, step, Phase::Stop, description, &kind);
    }

    fn tick(&mut self, sim: &mut turmoil::Sim<'_>, world: &World, now: Duration) {
        let mut i = 0;
        while i < self.active.len() {
            if self.active[i].0 > now {
                i += 1;
                continue;
            }
            let (_, step, kind) = self.active.remove(i);
            self.undo(sim, world, step, kind);
        }
        if now < self.next_at {
            return;
        }
        self.next_at = now + Duration::from_millis(self.rng.gen_range(500..4_000));
        if self.active.len() >= 2 {
            return;
        }
        let hosts = all_hosts();
        let host = hosts[self.rng.gen_range(0..hosts.len())].clone();
        let kind = match self.rng.gen_range(0..8) {
            0 => Kind::Isolate(host),
            1 => Kind::Kill(host),
            2 => Kind::Disk(host),
            3 => Kind::Slow(host),
            4 => Kind::Skew(host),
            5 => Kind::OneWay {
                host,
                deaf: self.rng.gen_bool(0.5),
            },
            6 => Kind::Hold(host),
            _ => Kind::Cut(REGIONS[self.rng.gen_range(0..REGIONS.len())]),
        };
        // One fault per cluster at a time, and never two on one host: a
        // region keeps two nodes that answer, the origin a quorum.
        let busy: BTreeSet<String> = self
            .active
            .iter()
            .flat_map(|(_, _, k)| k.hosts())
            .map(|h| cluster_of(&h).to_string())
            .collect();
        if kind.hosts().iter().any(|h| busy.contains(cluster_of(h))) {
            return;
        }
        let until = now + Duration::from_millis(self.rng.gen_range(500..6_000));
        self.steps += 1;
        let step = self.steps;
        let description = match &kind {
            Kind::Isolate(h) => {
                for other in all_hosts().iter().chain([&"client".to_string()]) {
                    if other != h {
                        sim.partition(h.as_str(), other.as_str());
                    }
                }
                format!("isolate {h}")
            }
            Kind::Kill(h) => {
                let kept = self.power_off(sim, world, h);
                format!("kill {h}, kept {kept}")
            }
            Kind::Disk(h) => {
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
                if let Some(disk) = lock(&world.disks).get(h) {
                    disk.set_faults(faults);
                }
                format!("disk of {h}: {faults:?}")
            }
            Kind::Slow(h) => {
                let latency = Duration::from_millis(self.rng.gen_range(20..400));
                for other in all_hosts().iter().chain([&"client".to_string()]) {
                    if other != h {
                        sim.set_link_latency(h.as_str(), other.as_str(), latency);
                    }
                }
                format!("slow {h} by {}ms", latency.as_millis())
            }
            Kind::Skew(h) => {
                // Region nodes stamp seat leases with their clock, which the
                // checker reads against the clients' with a 1 s margin: a
                // region node's skew stays under it. An origin node's may
                // be far larger.
                let bound = if h.starts_with('o') { 30_000 } else { 800 };
                let skew = self.rng.gen_range(-bound..=bound);
                lock(&world.skews).insert(h.clone(), skew);
                format!("skew the clock of {h} by {skew}ms")
            }
            Kind::OneWay { host, deaf } => {
                for (from, to) in one_way_links(host, cluster_peers(host), *deaf) {
                    sim.partition_oneway(from.as_str(), to.as_str());
                }
                match deaf {
                    true => format!("{host} cannot hear its peers"),
                    false => format!("{host}'s peers cannot hear it"),
                }
            }
            Kind::Hold(h) => {
                for peer in cluster_peers(h) {
                    sim.hold(h.as_str(), peer.as_str());
                }
                format!("hold the links of {h} to its peers")
            }
            Kind::Cut(region) => {
                for node in region_nodes(region) {
                    for o in 0..ORIGINS {
                        sim.partition(node.as_str(), origin_name(o).as_str());
                    }
                }
                format!("cut region {region} off from the origin")
            }
        };
        Self::record(world, step, Phase::Start, description, &kind);
        self.active.push((until, step, kind));
    }

    fn heal(&mut self, sim: &mut turmoil::Sim<'_>, world: &World) {
        for (_, step, kind) in std::mem::take(&mut self.active) {
            self.undo(sim, world, step, kind);
        }
        self.next_at = Duration::MAX;
    }
}

/// The simulation's time outside any host (the nemesis runs between
/// steps).
fn now_of_sim() -> Millis {
    NOW.with(|n| *n.borrow())
}

thread_local! {
    /// Set before each nemesis tick: the epoch plus the elapsed time.
    static NOW: std::cell::RefCell<Millis> = const { std::cell::RefCell::new(0) };
}

/// The simulation's epoch: fixed, so no run reads the machine's clock.
const EPOCH_SECS: u64 = 1_800_000_000;

/// Runs the whole system for one seed.
pub fn run_system(options: &SystemOptions) -> SystemOutcome {
    tollgate_raft::runtime::seed_thread_rng(Some(options.seed));
    // The nodes' random bytes (key ids, tokens, keys): from the seed too,
    // on a stream of their own.
    tollgate_clock::random::seed_thread(Some(options.seed ^ RANDOM_BYTES_STREAM));
    let outcome = run_seeded(options);
    tollgate_clock::random::seed_thread(None);
    tollgate_raft::runtime::seed_thread_rng(None);
    outcome
}

fn run_seeded(options: &SystemOptions) -> SystemOutcome {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => {
            return SystemOutcome {
                history: Vec::new(),
                violations: vec![format!("no temporary directory: {error}")],
                stats: Value::Null,
                faults: 0,
                simulated: Duration::ZERO,
            }
        }
    };
    let world = Arc::new(World {
        dir: dir.path().to_path_buf(),
        ..World::default()
    });
    let fault_window = Duration::from_secs(options.fault_seconds);
    let mut sim = turmoil::Builder::new()
        .rng_seed(options.seed)
        .epoch(UNIX_EPOCH + Duration::from_secs(EPOCH_SECS))
        .tick_duration(TICK)
        .min_message_latency(LATENCY_MIN)
        .max_message_latency(LATENCY_MAX)
        .simulation_duration(
            SETUP_DEADLINE
                + fault_window
                + CONVERGE_DEADLINE
                + RESOLVE_DEADLINE
                + BILLING_DEADLINE
                + Duration::from_secs(120),
        )
        .build();
    for host in all_hosts() {
        lock(&world.disks).insert(host.clone(), MemDisk::new());
    }
    for index in 0..ORIGINS {
        let world = world.clone();
        sim.host(origin_name(index), move || {
            let world = world.clone();
            async move {
                let name = origin_name(index);
                if world.first_start(&format!("host {name}")) {
                    world.node_up(now_ms(), &name, "started");
                }
                origin_host(world, index).await
            }
        });
    }
    for (r, region) in REGIONS.iter().enumerate() {
        for index in 0..REGION_NODES {
            let world = world.clone();
            sim.host(region_node_name(region, index), move || {
                let world = world.clone();
                async move {
                    let name = region_node_name(REGIONS[r], index);
                    if world.first_start(&format!("host {name}")) {
                        world.node_up(now_ms(), &name, "started");
                    }
                    region_host(world, r, index).await
                }
            });
        }
    }
    sim.client("client", workload(world.clone(), options.clone()));

    let mut nemesis = Nemesis {
        rng: StdRng::seed_from_u64(options.seed.rotate_left(23) ^ 0x5eed_5eed),
        active: Vec::new(),
        next_at: Duration::ZERO,
        steps: 0,
    };
    let mut faults_from: Option<Duration> = None;
    loop {
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => {
                world.fail(format!("the simulation failed: {error}"));
                break;
            }
        }
        let now = sim.elapsed();
        NOW.with(|n| *n.borrow_mut() = (Duration::from_secs(EPOCH_SECS) + now).as_millis() as u64);
        if world.done.load(Ordering::SeqCst) {
            break;
        }
        if !world.ready.load(Ordering::SeqCst) {
            continue;
        }
        let from = *faults_from.get_or_insert(now);
        if now < from + fault_window {
            nemesis.tick(&mut sim, &world, now);
        } else if !world.healed.load(Ordering::SeqCst) {
            nemesis.heal(&mut sim, &world);
            world.healed.store(true, Ordering::SeqCst);
        }
    }
    let simulated = sim.elapsed();
    drop(sim);
    let events = lock(&world.events).clone();
    let report = tollgate_chaos::checker::check(&events);
    let mut violations: Vec<String> = lock(&world.failures).clone();
    if !world.done.load(Ordering::SeqCst) {
        violations.push("the workload never finished".into());
    }
    violations.extend(
        report
            .violations
            .iter()
            .map(|v| format!("{}: {}", v.invariant, v.detail)),
    );
    let history = events
        .iter()
        .map(|e| {
            serde_json::to_string(e).unwrap_or_else(|error| format!("unserialisable: {error}"))
        })
        .collect();
    SystemOutcome {
        history,
        violations,
        stats: serde_json::to_value(&report.stats).unwrap_or(Value::Null),
        faults: nemesis.steps as usize,
        simulated,
    }
}
