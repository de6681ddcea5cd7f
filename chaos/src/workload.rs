//! The workload, and what it records.
//!
//! - **Writers** (several at once, each owning its own slots) grant
//!   entitlements at the origin, directly or through a CRM order for the
//!   slot's plan, then suspend, resume and revoke them (REST). One feature
//!   per *slot*, so every slot's decision follows from its last write:
//!   `ALLOW` after a grant, an order or a resume, `SUSPENDED` after a
//!   suspension, `REVOKED` after a revocation, `NOT_ENTITLED` before any.
//! - A **prober** per region sends each round's check to every node of the
//!   region at once (availability per round, revisions per node).
//! - An **SDK prober** per region checks through the SDK's client with
//!   every node of the region as an endpoint, as an application does
//!   (failover, hedging, keepalive): what an application sees.
//! - **Consumers** in both regions consume one unit of a hard-capped
//!   feature per check, each with its own idempotency key, retried on
//!   other nodes of the same region when the answer is lost; after the
//!   final heal, every key that never got an answer is retried until it
//!   does ([`resolve_consumptions`]), so each has a definite outcome to
//!   bill against ([`settled_billing`]).
//! - **Seat workers** in both regions acquire, hold and release floating
//!   seats of one entitlement that has fewer seats than workers.
//! - A **status poller** reads every region node's `/v1/status` (terms,
//!   leaders, applied revisions) and notices nodes that exited; a **usage
//!   sampler** reads the origin's usage row of the capped counter.

use crate::cluster::{Cluster, NodeSpec};
use crate::history::*;
use crate::rng::Rng;
use anyhow::Context;
use reqwest::Method;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_proto::usage::v1 as usage;
use tollgate_proto::usage::v1::usage_client::UsageClient;
use tollgate_sdk::{check_request, WithCredential};
use tollgate_tls::{Expect, Transport};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A gRPC call gives up after this long (a paused node never answers).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// Every entitlement is valid from this time on (long past).
const VALID_FROM: i64 = 1_700_000_000;
pub const CAP_ACCOUNT: &str = "metered";
pub const CAP_FEATURE: &str = "meter";
pub const SEAT_ACCOUNT: &str = "seated";
pub const SEAT_FEATURE: &str = "seat";
const SEAT_ENTITLEMENT: &str = "seats";

/// What the workload creates and how hard it pushes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Entitlement slots (one boolean feature each).
    pub slots: u32,
    /// Slots are spread over this many accounts.
    pub accounts: u32,
    /// The hard cap of `meter` (lifetime period: no rollover mid-run).
    pub cap: u64,
    pub seat_count: u32,
    pub lease_ttl_seconds: u32,
    pub seat_workers_per_region: u32,
    pub consumers_per_region: u32,
    /// Concurrent writers; writer `w` owns the slots `s` with
    /// `s % writers == w`.
    pub writers: u32,
    /// Each writer's pause between writes.
    pub write_interval: Duration,
    pub probe_interval: Duration,
    pub consume_interval: Duration,
    pub status_interval: Duration,
}

impl Plan {
    /// The default plan for a run of `duration_seconds`: the cap is sized
    /// so consumers reach it well before the end (both regions together
    /// were measured to be allowed about 7 units a second on a loaded
    /// two-core machine with debug builds).
    pub fn for_duration(duration_seconds: u64) -> Plan {
        Plan {
            slots: 16,
            accounts: 4,
            cap: (3 * duration_seconds).max(50),
            seat_count: 2,
            lease_ttl_seconds: 10,
            seat_workers_per_region: 3,
            consumers_per_region: 2,
            writers: 3,
            write_interval: Duration::from_millis(450),
            probe_interval: Duration::from_millis(100),
            consume_interval: Duration::from_millis(200),
            status_interval: Duration::from_millis(100),
        }
    }

    pub fn slot_account(&self, slot: u32) -> String {
        format!("a-{}", slot % self.accounts)
    }

    pub fn slot_feature(slot: u32) -> String {
        format!("f-{slot}")
    }

    pub fn slot_of_feature(&self, feature: &str) -> Option<u32> {
        feature
            .strip_prefix("f-")?
            .parse()
            .ok()
            .filter(|s| *s < self.slots)
    }

    /// Each slot's feature has a product of its own, with one plan (and
    /// the SKU selling it) that grants only that feature: orders for one
    /// slot never touch another's.
    pub fn slot_product(slot: u32) -> String {
        format!("p-{slot}")
    }

    pub fn slot_plan(slot: u32) -> String {
        format!("plan-{slot}")
    }

    pub fn slot_sku(slot: u32) -> String {
        format!("sku-{slot}")
    }

    pub fn slot_of_plan(&self, plan: &str) -> Option<u32> {
        plan.strip_prefix("plan-")?
            .parse()
            .ok()
            .filter(|s| *s < self.slots)
    }
}

/// Creates the catalog, accounts, the capped and the seat entitlement at
/// the origin; the head revision after.
pub async fn seed(cluster: &Cluster, plan: &Plan) -> anyhow::Result<u64> {
    let put = |path: String, body: serde_json::Value| async move {
        cluster.rest_ok(Method::PUT, &path, Some(body)).await
    };
    // What the workload presents on the regions' check ports, as any
    // application would.
    let credential = cluster
        .rest_ok(
            Method::POST,
            "/v1/credentials",
            Some(json!({"name": "chaos workload", "accounts": "*", "products": "*",
                "verbs": ["check", "watch", "watch_all", "report_usage", "seats", "issue_licenses"]})),
        )
        .await?;
    cluster.set_credential(
        credential["token"]
            .as_str()
            .context("the credential's token")?
            .to_string(),
    );
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
            // Unmetered: an order's entitlement has no seat limit, like a
            // direct grant (the default, named seats, would need a seat
            // assigned before a check allows).
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
    put(
        format!("/v1/features/{SEAT_FEATURE}"),
        json!({"id": SEAT_FEATURE, "product": "chaos", "name": SEAT_FEATURE, "kind": "boolean"}),
    )
    .await?;
    let mut accounts: Vec<String> = (0..plan.accounts).map(|a| format!("a-{a}")).collect();
    accounts.extend([CAP_ACCOUNT.to_string(), SEAT_ACCOUNT.to_string()]);
    for a in &accounts {
        put(format!("/v1/accounts/{a}"), json!({"id": a, "name": a})).await?;
    }
    for holder in seat_holders(cluster, plan).into_values().flatten() {
        put(
            format!("/v1/accounts/{SEAT_ACCOUNT}/subjects/{holder}"),
            json!({"id": holder, "account": SEAT_ACCOUNT, "kind": "user"}),
        )
        .await?;
    }
    cluster
        .rest_ok(
            Method::POST,
            "/v1/entitlements",
            Some(json!({"id": "cap", "account": CAP_ACCOUNT,
                "grant": {"feature": {"feature": CAP_FEATURE,
                    "usage_cap": {"limit": plan.cap, "enforcement": "hard"}}},
                "valid_from": VALID_FROM})),
        )
        .await?;
    let written = cluster
        .rest_ok(
            Method::POST,
            "/v1/entitlements",
            Some(json!({"id": SEAT_ENTITLEMENT, "account": SEAT_ACCOUNT,
                "grant": {"feature": {"feature": SEAT_FEATURE}}, "valid_from": VALID_FROM,
                "seats": {"count": plan.seat_count,
                    "mode": {"floating": {"lease_ttl_seconds": plan.lease_ttl_seconds}}}})),
        )
        .await?;
    written["revision"]
        .as_u64()
        .context("a write's answer has no revision")
}

/// Region → the users its seat workers acquire seats as.
fn seat_holders(cluster: &Cluster, plan: &Plan) -> BTreeMap<String, Vec<String>> {
    cluster
        .topology
        .regions
        .keys()
        .map(|r| {
            let holders = (0..plan.seat_workers_per_region)
                .map(|i| format!("{r}-u{i}"))
                .collect();
            (r.clone(), holders)
        })
        .collect()
}

/// One lazily connected channel per region node (tonic reconnects after a
/// restart by itself), over TLS: the node's certificate must chain to the
/// run's CA and name the IP dialled. The connect timeout covers the TLS
/// handshake too.
#[derive(Clone)]
pub struct Clients {
    channels: BTreeMap<String, AppChannel>,
}

/// A channel whose calls present the workload's application credential.
type AppChannel = InterceptedService<Channel, WithCredential>;

impl Clients {
    pub fn new(
        transport: &Transport,
        nodes: &[&NodeSpec],
        credential: Option<&str>,
    ) -> anyhow::Result<Clients> {
        let credential = match credential {
            None => WithCredential::none(),
            Some(token) => WithCredential::new(token)?,
        };
        let mut channels = BTreeMap::new();
        for n in nodes {
            let endpoint = transport
                .endpoint(&n.grpc_url())?
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(RPC_TIMEOUT);
            let channel = transport.lazy_channel(&endpoint, Expect::HostName, "chaos");
            channels.insert(
                n.name.clone(),
                InterceptedService::new(channel, credential.clone()),
            );
        }
        Ok(Clients { channels })
    }

    fn channel(&self, node: &str) -> AppChannel {
        self.channels[node].clone()
    }

    /// One check (no consumption): when it was sent, answered, and what.
    pub async fn check(
        &self,
        node: &str,
        account: &str,
        feature: &str,
    ) -> (Millis, Millis, Answer) {
        let mut client = CheckServiceClient::new(self.channel(node));
        let request = pb::CheckRequest {
            explain: false,
            account_id: account.into(),
            subject_id: None,
            feature_id: feature.into(),
            consume: 0,
            location: None,
            consistency: None,
            idempotency_key: None,
        };
        let start = now_ms();
        let result = tokio::time::timeout(RPC_TIMEOUT, client.check(request)).await;
        let end = now_ms();
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
        (start, end, answer)
    }

    async fn consume(&self, node: &str, key: &str) -> (Millis, Millis, ConsumeOutcome) {
        let mut client = CheckServiceClient::new(self.channel(node));
        let request = pb::CheckRequest {
            explain: false,
            account_id: CAP_ACCOUNT.into(),
            subject_id: None,
            feature_id: CAP_FEATURE.into(),
            consume: 1,
            location: None,
            consistency: None,
            idempotency_key: Some(key.into()),
        };
        let start = now_ms();
        let result = tokio::time::timeout(RPC_TIMEOUT, client.check(request)).await;
        let end = now_ms();
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
        (start, end, outcome)
    }

    async fn seat(&self, node: &str, holder: &str, op: SeatOp) -> (Millis, Millis, SeatOutcome) {
        let mut client = UsageClient::new(self.channel(node));
        let request = usage::SeatRequest {
            account_id: SEAT_ACCOUNT.into(),
            subject_id: holder.into(),
            feature_id: SEAT_FEATURE.into(),
        };
        let start = now_ms();
        let result = tokio::time::timeout(RPC_TIMEOUT, async {
            match op {
                SeatOp::Acquire => client.acquire_seat(request).await,
                SeatOp::Release => client.release_seat(request).await,
            }
        })
        .await;
        let end = now_ms();
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
        (start, end, outcome)
    }
}

fn status_text(status: &tonic::Status) -> String {
    let message: String = status.message().chars().take(200).collect();
    format!("{:?}: {message}", status.code())
}

/// `REASON_ALLOW` → `ALLOW`.
pub fn reason_name(reason: pb::Reason) -> String {
    reason
        .as_str_name()
        .trim_start_matches("REASON_")
        .to_string()
}

/// Sleeps `d`; true if `stop` turned true meanwhile.
async fn pause(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    stopped || *stop.borrow()
}

/// The running workload's tasks.
pub struct Workload {
    /// Writers, consumers, seat workers: stopped before the final heal.
    pub load: Vec<JoinHandle<()>>,
    /// Probers, the status poller, the usage sampler: stopped at the end.
    pub observers: Vec<JoinHandle<()>>,
}

/// Starts the workload. `load_stop` ends the writers, consumers and seat
/// workers; `observe_stop` the rest.
pub fn spawn(
    cluster: Arc<Cluster>,
    recorder: Arc<Recorder>,
    plan: Arc<Plan>,
    seed: u64,
    load_stop: watch::Receiver<bool>,
    observe_stop: watch::Receiver<bool>,
) -> anyhow::Result<Workload> {
    let clients = Clients::new(
        cluster.transport(),
        &cluster.topology.region_nodes(),
        cluster.credential(),
    )?;
    // The workload's randomness is seeded too, though thread timing makes a
    // run's history differ from a replay's.
    let mut rng = Rng::new(seed ^ 0x005E_ED0F_C4A0_5000);
    let mut load = Vec::new();
    let mut observers = Vec::new();
    for w in 0..plan.writers {
        load.push(tokio::spawn(writer(
            cluster.clone(),
            recorder.clone(),
            plan.clone(),
            w,
            rng.fork(1 + 1000 * u64::from(w)),
            load_stop.clone(),
        )));
    }
    let holders = seat_holders(&cluster, &plan);
    for (region, nodes) in &cluster.topology.regions {
        let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        let sdk = sdk_client(&cluster, &nodes.iter().collect::<Vec<_>>())?;
        observers.push(tokio::spawn(sdk_prober(
            sdk,
            recorder.clone(),
            plan.clone(),
            region.clone(),
            rng.fork(5),
            observe_stop.clone(),
        )));
        observers.push(tokio::spawn(prober(
            clients.clone(),
            recorder.clone(),
            plan.clone(),
            region.clone(),
            names.clone(),
            rng.fork(2),
            observe_stop.clone(),
        )));
        for i in 0..plan.consumers_per_region {
            load.push(tokio::spawn(consumer(
                clients.clone(),
                recorder.clone(),
                plan.clone(),
                region.clone(),
                names.clone(),
                i,
                rng.fork(3),
                load_stop.clone(),
            )));
        }
        for holder in &holders[region] {
            load.push(tokio::spawn(seat_worker(
                clients.clone(),
                recorder.clone(),
                region.clone(),
                names.clone(),
                holder.clone(),
                rng.fork(4),
                load_stop.clone(),
            )));
        }
    }
    observers.push(tokio::spawn(status_poller(
        cluster.clone(),
        recorder.clone(),
        plan.clone(),
        observe_stop.clone(),
    )));
    observers.push(tokio::spawn(usage_sampler(cluster, recorder, observe_stop)));
    Ok(Workload { load, observers })
}

#[derive(Debug, Clone, PartialEq)]
enum SlotState {
    Empty,
    Active(String),
    Suspended(String),
    Revoked,
    /// The last write's outcome is unknown.
    Unknown,
}

async fn writer(
    cluster: Arc<Cluster>,
    recorder: Arc<Recorder>,
    plan: Arc<Plan>,
    index: u32,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
) {
    let slots: Vec<u32> = (0..plan.slots)
        .filter(|s| s % plan.writers == index)
        .collect();
    if slots.is_empty() {
        return;
    }
    let mut state = vec![SlotState::Empty; plan.slots as usize];
    let mut generation = vec![0u32; plan.slots as usize];
    while !*stop.borrow() {
        let slot = *rng.pick(&slots);
        let s = slot as usize;
        let (op, id) = match &state[s] {
            SlotState::Active(id) if rng.chance(30) => (WriteOp::Suspend, id.clone()),
            SlotState::Active(id) => (WriteOp::Revoke, id.clone()),
            SlotState::Suspended(id) if rng.chance(50) => (WriteOp::Resume, id.clone()),
            SlotState::Suspended(id) => (WriteOp::Revoke, id.clone()),
            _ => {
                generation[s] += 1;
                let op = if rng.chance(50) {
                    WriteOp::Grant
                } else {
                    WriteOp::Order
                };
                (op, format!("s{slot}-{}", generation[s]))
            }
        };
        let start_ms = now_ms();
        let action = |verb: &str| format!("/v1/entitlements/{id}/{verb}");
        let result = match op {
            WriteOp::Grant => {
                cluster
                    .rest(
                        Method::POST,
                        "/v1/entitlements",
                        Some(json!({"id": id, "account": plan.slot_account(slot),
                            "grant": {"feature": {"feature": Plan::slot_feature(slot)}},
                            "valid_from": VALID_FROM})),
                    )
                    .await
            }
            WriteOp::Order => {
                cluster
                    .rest(
                        Method::POST,
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
                cluster
                    .rest(Method::POST, &action(verb), Some(serde_json::Value::Null))
                    .await
            }
        };
        let end_ms = now_ms();
        let outcome = write_outcome(result);
        state[s] = match (&outcome, op) {
            (Ack::Acked { .. }, WriteOp::Grant | WriteOp::Order | WriteOp::Resume) => {
                SlotState::Active(id.clone())
            }
            (Ack::Acked { .. }, WriteOp::Suspend) => SlotState::Suspended(id.clone()),
            (Ack::Acked { .. }, WriteOp::Revoke) => SlotState::Revoked,
            (Ack::Failed { .. }, _) => state[s].clone(),
            (Ack::Indeterminate { .. }, _) => SlotState::Unknown,
        };
        recorder.record(Event::Write(Write {
            start_ms,
            end_ms,
            slot,
            entitlement: id,
            op,
            outcome,
        }));
        if pause(&mut stop, plan.write_interval).await {
            break;
        }
    }
}

/// What a write's answer (or its absence) says about whether the origin
/// applied it.
///
/// Over TLS, "no connection" still means "never sent": reqwest's connector
/// does the TCP connect *and* the TLS handshake before a byte of the
/// request is written (no 0-RTT early data: rustls' default, and
/// tollgate-tls does not turn it on), and only a failure inside the
/// connector is `is_connect()` — a refused or unreachable port, or a
/// handshake that failed (the node died mid-handshake, a certificate the
/// harness refused). A handshake cut short by the request's overall
/// timeout is a timeout, not a connect error: of unknown outcome, as a
/// request to a paused node always was. Anything after the handshake (the
/// connection closed before an answer, an alert for the harness's own
/// certificate, which TLS 1.3 sends only after the client has finished)
/// may have reached the origin: of unknown outcome too.
pub fn write_outcome(
    result: Result<(reqwest::StatusCode, serde_json::Value), reqwest::Error>,
) -> Ack {
    match result {
        Ok((status, body)) if status.is_success() => match body["revision"].as_u64() {
            Some(revision) => Ack::Acked { revision },
            None => Ack::Indeterminate {
                error: format!("{status} without a revision: {body}"),
            },
        },
        Ok((status, body)) if status.is_client_error() => Ack::Failed {
            error: format!("{status} {}", body["code"]),
        },
        Ok((status, body)) => Ack::Indeterminate {
            error: format!("{status} {}", body["code"]),
        },
        // No connection: the request never reached the origin.
        Err(e) if e.is_connect() => Ack::Failed {
            error: format!("connect: {}", error_chain(&e)),
        },
        Err(e) => Ack::Indeterminate {
            error: error_chain(&e),
        },
    }
}

/// An error and its sources (reqwest's own text hides whether TCP or TLS
/// failed), at most 300 characters for the history.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    tollgate_tls::error_chain(error).chars().take(300).collect()
}

/// The SDK's client for `nodes` (one region), as an application builds
/// it: every node an endpoint, the run's CA, the workload's credential,
/// the SDK's defaults but for the deadline and connect timeout, which are
/// the per-node prober's.
pub fn sdk_client(cluster: &Cluster, nodes: &[&NodeSpec]) -> anyhow::Result<tollgate_sdk::Client> {
    let mut builder = tollgate_sdk::Client::builder()
        .endpoints(nodes.iter().map(|n| n.grpc_url()))
        .ca_file(cluster.ca_path())
        .deadline(RPC_TIMEOUT)
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(credential) = cluster.credential() {
        builder = builder.credential(credential);
    }
    Ok(builder.build()?)
}

/// One check through the SDK: when it was asked, when it ended, who
/// answered and what.
async fn sdk_check(
    client: &tollgate_sdk::Client,
    account: &str,
    feature: &str,
) -> (Millis, Millis, Option<String>, Answer) {
    let start = now_ms();
    let request = match (account.parse(), feature.parse()) {
        (Ok(account), Ok(feature)) => check_request(account, None, feature),
        _ => {
            let error = format!("{account}/{feature} are not valid ids");
            return (start, now_ms(), None, Answer::Error { error });
        }
    };
    let result = client.check(request).await;
    let end = now_ms();
    match result {
        Ok(answer) => (
            start,
            end,
            Some(answer.answered_by),
            Answer::Answered {
                revision: answer.revision,
                reason: answer.decision.reason.code().to_string(),
                allowed: answer.decision.reason.is_allowed(),
                staleness_seconds: answer.staleness_seconds,
            },
        ),
        Err(error) => (
            start,
            end,
            None,
            Answer::Error {
                error: format!("{}: {error}", error.code())
                    .chars()
                    .take(300)
                    .collect(),
            },
        ),
    }
}

/// Checks a random slot through the SDK every probe interval (each check
/// waits for its answer, so a slow one delays the next).
async fn sdk_prober(
    client: tollgate_sdk::Client,
    recorder: Arc<Recorder>,
    plan: Arc<Plan>,
    region: String,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        let slot = rng.below(u64::from(plan.slots)) as u32;
        let (account, feature) = (plan.slot_account(slot), Plan::slot_feature(slot));
        let (start_ms, end_ms, node, outcome) = sdk_check(&client, &account, &feature).await;
        recorder.record(Event::SdkCheck(SdkCheck {
            start_ms,
            end_ms,
            region: region.clone(),
            node,
            slot,
            outcome,
        }));
        if pause(&mut stop, plan.probe_interval).await {
            break;
        }
    }
}

async fn prober(
    clients: Clients,
    recorder: Arc<Recorder>,
    plan: Arc<Plan>,
    region: String,
    nodes: Vec<String>,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
) {
    let mut round = 0;
    while !*stop.borrow() {
        round += 1;
        let slot = rng.below(u64::from(plan.slots)) as u32;
        let (account, feature) = (plan.slot_account(slot), Plan::slot_feature(slot));
        let answers =
            futures::future::join_all(nodes.iter().map(|n| clients.check(n, &account, &feature)))
                .await;
        for (node, (start_ms, end_ms, outcome)) in nodes.iter().zip(answers) {
            recorder.record(Event::Check(Check {
                start_ms,
                end_ms,
                region: region.clone(),
                node: node.clone(),
                round,
                slot,
                outcome,
            }));
        }
        if pause(&mut stop, plan.probe_interval).await {
            break;
        }
    }
}

/// Attempts at one consumption (the same key on different nodes).
const CONSUME_ATTEMPTS_MAX: usize = 3;

#[allow(clippy::too_many_arguments)]
async fn consumer(
    clients: Clients,
    recorder: Arc<Recorder>,
    plan: Arc<Plan>,
    region: String,
    nodes: Vec<String>,
    index: u32,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
) {
    let mut n = 0u64;
    while !*stop.borrow() {
        n += 1;
        let key = format!("{region}-c{index}-{n}");
        let first = rng.below(nodes.len() as u64) as usize;
        for attempt in 0..CONSUME_ATTEMPTS_MAX.min(nodes.len()) {
            let node = &nodes[(first + attempt) % nodes.len()];
            let (start_ms, end_ms, outcome) = clients.consume(node, &key).await;
            let lost = matches!(outcome, ConsumeOutcome::Error { .. });
            recorder.record(Event::Consume(Consume {
                start_ms,
                end_ms,
                region: region.clone(),
                node: node.clone(),
                key: key.clone(),
                outcome,
            }));
            if !lost {
                break;
            }
        }
        if pause(&mut stop, plan.consume_interval).await {
            break;
        }
    }
}

/// Attempts at one release (on different nodes).
const RELEASE_ATTEMPTS_MAX: usize = 3;

async fn seat_worker(
    clients: Clients,
    recorder: Arc<Recorder>,
    region: String,
    nodes: Vec<String>,
    holder: String,
    mut rng: Rng,
    mut stop: watch::Receiver<bool>,
) {
    let call = |node: String, op: SeatOp| {
        let (clients, recorder, region, holder) = (
            clients.clone(),
            recorder.clone(),
            region.clone(),
            holder.clone(),
        );
        async move {
            let (start_ms, end_ms, outcome) = clients.seat(&node, &holder, op).await;
            recorder.record(Event::Seat(Seat {
                start_ms,
                end_ms,
                region,
                node,
                holder,
                op,
                outcome: outcome.clone(),
            }));
            outcome
        }
    };
    while !*stop.borrow() {
        let node = rng.pick(&nodes).clone();
        let outcome = call(node, SeatOp::Acquire).await;
        if matches!(outcome, SeatOutcome::Held { .. }) {
            let held_ms = rng.range(300, 1_500);
            let stopping = pause(&mut stop, Duration::from_millis(held_ms)).await;
            let first = rng.below(nodes.len() as u64) as usize;
            for attempt in 0..RELEASE_ATTEMPTS_MAX.min(nodes.len()) {
                let node = nodes[(first + attempt) % nodes.len()].clone();
                if !matches!(call(node, SeatOp::Release).await, SeatOutcome::Error { .. }) {
                    break;
                }
            }
            if stopping {
                break;
            }
        }
        let wait = Duration::from_millis(rng.range(100, 500));
        if pause(&mut stop, wait).await {
            break;
        }
    }
}

/// Polls every region node's status, each node on its own loop: a paused
/// node's timeouts must not slow the polls of the others (elections are
/// timed from these samples).
async fn status_poller(
    cluster: Arc<Cluster>,
    recorder: Arc<Recorder>,
    plan: Arc<Plan>,
    stop: watch::Receiver<bool>,
) {
    let nodes: Vec<NodeSpec> = cluster
        .topology
        .region_nodes()
        .into_iter()
        .cloned()
        .collect();
    let reaper = {
        let (cluster, plan, mut stop) = (cluster.clone(), plan.clone(), stop.clone());
        async move {
            while !*stop.borrow() {
                cluster.reap_exits();
                if pause(&mut stop, plan.status_interval).await {
                    break;
                }
            }
        }
    };
    let pollers = nodes.into_iter().map(|n| {
        let (cluster, recorder, plan, mut stop) = (
            cluster.clone(),
            recorder.clone(),
            plan.clone(),
            stop.clone(),
        );
        async move {
            while !*stop.borrow() {
                let start_ms = now_ms();
                let result = cluster.status(&n).await;
                let end_ms = now_ms();
                let outcome = match result {
                    Ok(s) => StatusOutcome::Ok {
                        role: s.role,
                        term: s.term,
                        leader: s.leader,
                        applied_revision: s.applied_revision,
                        staleness_seconds: s.staleness_seconds,
                        recovering: s.recovering,
                    },
                    Err(error) => StatusOutcome::Error {
                        error: format!("{error:#}").chars().take(200).collect(),
                    },
                };
                recorder.record(Event::Status(Status {
                    start_ms,
                    end_ms,
                    region: n.region.clone().unwrap_or_default(),
                    node: n.name.clone(),
                    outcome,
                }));
                if pause(&mut stop, plan.status_interval).await {
                    break;
                }
            }
        }
    });
    futures::future::join(reaper, futures::future::join_all(pollers)).await;
}

/// The origin's usage row for the capped counter, if it has one yet.
pub async fn usage_row(cluster: &Cluster) -> anyhow::Result<Option<UsageSample>> {
    let body = cluster
        .rest_ok(
            Method::GET,
            &format!("/v1/accounts/{CAP_ACCOUNT}/usage?feature={CAP_FEATURE}"),
            None,
        )
        .await?;
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

async fn usage_sampler(
    cluster: Arc<Cluster>,
    recorder: Arc<Recorder>,
    mut stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        // The origin may be down (the nemesis): then there is no sample.
        if let Ok(Some(sample)) = usage_row(&cluster).await {
            recorder.record(Event::Usage(sample));
        }
        if pause(&mut stop, Duration::from_secs(1)).await {
            break;
        }
    }
}

/// Each try at every node of a region to answer a consumption left
/// without one gives up after this long in all.
pub const RESOLVE_DEADLINE: Duration = Duration::from_secs(60);
/// The billed total has settled once it has not moved for this long
/// (regions report their cumulative usage to the origin every second,
/// `quota_sync_interval`'s default), with nothing left unreported on any
/// region node.
const BILLING_STABLE_FOR: Duration = Duration::from_secs(3);
/// Waiting for the billed total to settle gives up after this long.
pub const BILLING_SETTLE_DEADLINE: Duration = Duration::from_secs(60);

/// Retries, with the same key on the nodes of the same region (keys are
/// the region's), every consumption that never got an answer, until each
/// has one (allowed or denied) or [`RESOLVE_DEADLINE`] passes; every try
/// is recorded. Called after the final heal, once the load has stopped.
/// The keys still without an answer.
pub async fn resolve_consumptions(
    cluster: &Cluster,
    recorder: &Recorder,
) -> anyhow::Result<Vec<String>> {
    // Key → its region, for keys with no answer among their attempts.
    let mut open: BTreeMap<String, String> = BTreeMap::new();
    let mut answered = std::collections::BTreeSet::new();
    for e in recorder.events() {
        if let Event::Consume(c) = e {
            if matches!(c.outcome, ConsumeOutcome::Error { .. }) {
                open.insert(c.key, c.region);
            } else {
                answered.insert(c.key);
            }
        }
    }
    open.retain(|key, _| !answered.contains(key));
    if open.is_empty() {
        return Ok(Vec::new());
    }
    tracing::info!(
        keys = open.len(),
        "Retrying the consumptions that never got an answer."
    );
    let clients = Clients::new(
        cluster.transport(),
        &cluster.topology.region_nodes(),
        cluster.credential(),
    )?;
    let started = std::time::Instant::now();
    let mut left = Vec::new();
    for (key, region) in open {
        let nodes: Vec<String> = cluster
            .topology
            .regions
            .get(&region)
            .map(|ns| ns.iter().map(|n| n.name.clone()).collect())
            .unwrap_or_default();
        // A key of a region the topology does not have stays unresolved
        // (it widens the billing check), never counts as answered.
        let mut done = false;
        let mut attempt = 0;
        while !done && !nodes.is_empty() && started.elapsed() < RESOLVE_DEADLINE {
            let node = &nodes[attempt % nodes.len()];
            attempt += 1;
            let (start_ms, end_ms, outcome) = clients.consume(node, &key).await;
            done = !matches!(outcome, ConsumeOutcome::Error { .. });
            recorder.record(Event::Consume(Consume {
                start_ms,
                end_ms,
                region: region.clone(),
                node: node.clone(),
                key: key.clone(),
                outcome,
            }));
            if !done && attempt % nodes.len() == 0 {
                // Every node failed once: a pause before the next round.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        if !done {
            left.push(key);
        }
    }
    Ok(left)
}

/// The origin's billed total for the capped counter once it has settled:
/// no region node has metered usage it has not reported to its region's
/// log, and the origin's total has not moved for [`BILLING_STABLE_FOR`]
/// (the regions' leaders report their cumulative usage every second).
/// The total last read, and whether it settled before
/// [`BILLING_SETTLE_DEADLINE`].
pub async fn settled_billing(cluster: &Cluster) -> (Option<u64>, bool) {
    // (the total, since when it has read so), kept across looks so a wait
    // that times out still has the last one.
    let seen: std::sync::Mutex<Option<(Option<u64>, std::time::Instant)>> =
        std::sync::Mutex::new(None);
    let settled = tollgate_testkit::wait_until_every(
        "the origin's billed total to settle",
        BILLING_SETTLE_DEADLINE,
        Duration::from_millis(250),
        || async {
            let nodes = cluster.topology.region_nodes();
            let statuses = futures::future::join_all(nodes.iter().map(|n| cluster.status(n))).await;
            let unreported: Vec<String> = nodes
                .iter()
                .zip(&statuses)
                .filter_map(|(node, status)| match status {
                    Ok(s)
                        if s.metering.unreported_units == 0 && s.metering.pending_entries == 0 =>
                    {
                        None
                    }
                    Ok(s) => Some(format!(
                        "{} has {} unit(s) in {} consumption(s) unreported",
                        node.name, s.metering.unreported_units, s.metering.pending_entries
                    )),
                    Err(error) => Some(format!("{}: {error}", node.name)),
                })
                .collect();
            let billed = match usage_row(cluster).await {
                Ok(row) => row.map(|u| u.consumed),
                Err(error) => return Err(format!("the origin's usage: {error:#}")),
            };
            let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
            let since = match *seen {
                Some((previous, since)) if previous == billed => since,
                _ => std::time::Instant::now(),
            };
            *seen = Some((billed, since));
            let stable = since.elapsed();
            if !unreported.is_empty() {
                return Err(format!("billed {billed:?}; {}", unreported.join(", ")));
            }
            if stable < BILLING_STABLE_FOR {
                return Err(format!("billed {billed:?}, unchanged for {stable:?}"));
            }
            Ok(())
        },
    )
    .await;
    if let Err(error) = &settled {
        tracing::warn!(%error, "The billed total did not settle.");
    }
    let billed = seen
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .and_then(|(billed, _)| billed);
    (billed, settled.is_ok())
}
