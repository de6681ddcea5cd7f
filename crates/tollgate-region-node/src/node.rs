//! A region node: a member of a region's Raft group. Its leader follows
//! the origin's changefeed and proposes what it verified; every node
//! (leader, follower, learner) answers checks from its own applied state.

use crate::meter::{Meter, MeterConfig, Take};
use crate::ops::{OpsState, RegionStatus};
use crate::state::{now, stopped};
use crate::watch::Watches;
use crate::NodeError;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tollgate_engine::{
    decide, AccountView, CheckRequest, Decision, Environment, Freshness, LiveState, Location,
    SeatLease, WatchRequest,
};
use tollgate_feed::{FeedError, FollowEvent, Follower, FollowerConfig};
use tollgate_geo::GeoDatabases;
use tollgate_model::{
    Account, AccountId, Catalog, Entitlement, EntitlementId, FeatureId, GeoFacts, PeriodKey,
    SeatMode, Subject, UnixSeconds,
};
use tollgate_origin::keys;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::convert::{batch_from_proto, decision_to_proto};
use tollgate_raft::{Node, NodeConfig, NodeId, StateView};
use tollgate_region::{
    account_entitlements_prefix, Counter, RegionCommand, RegionLogic, RegionResponse,
    ORIGIN_CONTACT,
};
use tollgate_signing::PublicKeySet;
use tonic::{Request, Response, Status};

/// Most subjects or entitlements read for one account view.
const ACCOUNT_ITEMS_MAX: usize = tollgate_model::limits::ENTITLEMENTS_PER_ACCOUNT_MAX;
/// Most catalog entries read when the catalog is rebuilt.
const CATALOG_ENTRIES_MAX: usize = 100_000;

#[derive(Debug, Clone)]
pub struct RegionConfig {
    pub raft: NodeConfig,
    /// The name this node answers as (`answered_by`).
    pub name: String,
    /// The origin's changefeed endpoint, e.g. `http://origin:7200`.
    pub origin_feed: String,
    /// The origin's public keys: only records they verify are applied.
    pub origin_keys: PublicKeySet,
    /// Believe a location resolved by a proxy in the request.
    pub trust_proxy_location: bool,
    /// Longest wait for `at_least_revision`.
    pub revision_wait_max: Duration,
    /// Longest pause between reconnection attempts to the origin.
    pub reconnect_backoff_max: Duration,
    /// With no message from the origin for this long, reconnect.
    pub origin_idle_timeout: Duration,
    /// One attempt to connect and subscribe to the origin gives up after
    /// this long (a SYN into a partition is otherwise retried for minutes).
    pub origin_connect_timeout: Duration,
    /// A `Watch` stream with nothing to send sends a heartbeat this often.
    pub watch_heartbeat: Duration,
    /// Most `Watch` streams served at once.
    pub watchers_max: usize,
    /// Ready only with a geo database loaded.
    pub geo_required: bool,
    /// Ready only within this many revisions of the origin's head.
    pub ready_lag_revisions_max: u64,
    /// Usage reporting and chunk sizes.
    pub meter: MeterConfig,
    /// The region's name at the origin (quota leases and usage reports).
    pub region: String,
    /// How often the leader leases what nodes need from the origin.
    pub quota_lease_interval: Duration,
    /// How often the leader reports the region's usage to the origin.
    pub quota_sync_interval: Duration,
    /// Most units of a cap leased from the origin at once.
    pub slice_units_max: u64,
    /// A counter this region has not used for this long hands the unused
    /// part of its slice back to the origin, for other regions.
    pub slice_idle: Duration,
    /// How often the leader asks the origin for its key set, to learn of a
    /// retirement (a rotation is learnt at the first record the new key
    /// signs).
    pub origin_keys_refresh: Duration,
    /// The region's certified key, to issue license tokens while cut off
    /// from the origin. `None`: the node verifies tokens but issues none.
    pub license_issuer: Option<crate::RegionIssuerConfig>,
}

impl RegionConfig {
    pub fn new(
        node_id: NodeId,
        data_dir: impl Into<std::path::PathBuf>,
        origin_feed: String,
        origin_keys: PublicKeySet,
    ) -> Self {
        RegionConfig {
            raft: NodeConfig::new(node_id, data_dir),
            name: format!("node-{node_id}"),
            origin_feed,
            origin_keys,
            trust_proxy_location: false,
            revision_wait_max: Duration::from_secs(5),
            reconnect_backoff_max: Duration::from_secs(5),
            origin_idle_timeout: Duration::from_secs(10),
            origin_connect_timeout: Duration::from_secs(5),
            watch_heartbeat: Duration::from_secs(5),
            watchers_max: 1024,
            geo_required: true,
            ready_lag_revisions_max: 1000,
            meter: MeterConfig::default(),
            license_issuer: None,
            origin_keys_refresh: Duration::from_secs(60),
            region: "region".into(),
            quota_lease_interval: Duration::from_millis(50),
            quota_sync_interval: Duration::from_secs(1),
            slice_units_max: 10_000,
            slice_idle: Duration::from_secs(60),
        }
    }
}

pub struct RegionListeners {
    pub raft: TcpListener,
    /// The check service (gRPC).
    pub grpc: TcpListener,
    /// The operations endpoints (`/healthz`, `/readyz`, `/v1/status`).
    pub http: Option<TcpListener>,
}

fn read_u64(view: &StateView, key: &[u8]) -> u64 {
    crate::state::read_u64(view, key).unwrap_or(0)
}

/// Views rebuilt when the applied revision moves.
struct Cache {
    revision: u64,
    catalog: Arc<Catalog>,
    accounts: HashMap<AccountId, Option<Arc<AccountView>>>,
}

/// The revision, the catalog and the account's view (`None`: unknown).
type Views = (u64, Arc<Catalog>, Option<Arc<AccountView>>);

pub(crate) struct Checker {
    pub(crate) node: Arc<Node<RegionLogic>>,
    pub(crate) view: StateView,
    pub(crate) name: String,
    geo: Option<Arc<GeoDatabases>>,
    trust_proxy: bool,
    wait_max: Duration,
    applied: watch::Receiver<u64>,
    cache: Mutex<Cache>,
    watches: Watches,
    pub(crate) meter: Arc<Meter>,
    pub(crate) meter_config: MeterConfig,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl Checker {
    fn decode<T: serde::de::DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, Status> {
        serde_json::from_slice(bytes).map_err(internal)
    }

    fn catalog(&self) -> Result<Catalog, Status> {
        let entries = self
            .view
            .scan(b"catalog/", None, CATALOG_ENTRIES_MAX)
            .map_err(internal)?;
        Ok(tollgate_origin::dataset_from_entries(entries)
            .map_err(internal)?
            .catalog)
    }

    fn account_view(
        &self,
        catalog: &Catalog,
        id: &AccountId,
    ) -> Result<Option<AccountView>, Status> {
        let Some(bytes) = self.view.get(&keys::account(id)).map_err(internal)? else {
            return Ok(None);
        };
        let account: Account = self.decode(&bytes)?;
        let subjects: Vec<Subject> = self
            .view
            .scan(format!("subject/{id}/").as_bytes(), None, ACCOUNT_ITEMS_MAX)
            .map_err(internal)?
            .into_iter()
            .map(|(_, v)| self.decode(&v))
            .collect::<Result<_, _>>()?;
        let prefix = account_entitlements_prefix(id);
        let mut entitlements: Vec<Entitlement> = Vec::new();
        for (key, _) in self
            .view
            .scan(&prefix, None, ACCOUNT_ITEMS_MAX)
            .map_err(internal)?
        {
            let ent_id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            let ent_id = EntitlementId::new(ent_id).map_err(internal)?;
            if let Some(bytes) = self
                .view
                .get(&keys::entitlement(&ent_id))
                .map_err(internal)?
            {
                entitlements.push(self.decode(&bytes)?);
            }
        }
        Ok(Some(AccountView::build(
            account,
            subjects,
            entitlements,
            catalog,
        )))
    }

    /// The catalog and the account's view at the current revision. The
    /// state has no point-in-time read across keys, so the revision is read
    /// before and after the data: a view built while an entry applied could
    /// hold data newer than the revision it would be answered at, so it is
    /// rebuilt (and never cached). After `VIEW_ATTEMPTS_MAX` races in a row
    /// the earlier revision is answered: it understates, never overstates,
    /// how fresh the answer is.
    pub(crate) fn views(&self, id: &AccountId) -> Result<Views, Status> {
        const VIEW_ATTEMPTS_MAX: usize = 8;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let revision = read_u64(&self.view, keys::HEAD_REVISION);
            let cached_catalog = {
                let cache = self
                    .cache
                    .lock()
                    .map_err(|_| Status::internal("cache lock poisoned"))?;
                if cache.revision != revision {
                    None
                } else if let Some(found) = cache.accounts.get(id) {
                    return Ok((revision, cache.catalog.clone(), found.clone()));
                } else {
                    Some(cache.catalog.clone())
                }
            };
            let catalog = match cached_catalog {
                Some(catalog) => catalog,
                None => Arc::new(self.catalog()?),
            };
            let view = self.account_view(&catalog, id)?.map(Arc::new);
            let stable = read_u64(&self.view, keys::HEAD_REVISION) == revision;
            if stable {
                let mut cache = self
                    .cache
                    .lock()
                    .map_err(|_| Status::internal("cache lock poisoned"))?;
                // Revisions only grow: never replace a newer cache.
                if cache.revision == u64::MAX || cache.revision < revision {
                    *cache = Cache {
                        revision,
                        catalog: catalog.clone(),
                        accounts: HashMap::new(),
                    };
                }
                if cache.revision == revision {
                    cache.accounts.insert(id.clone(), view.clone());
                }
                return Ok((revision, catalog, view));
            }
            if attempt >= VIEW_ATTEMPTS_MAX {
                return Ok((revision, catalog, view));
            }
        }
    }

    async fn wait_for(&self, revision: u64) -> Result<(), Status> {
        let mut applied = self.applied.clone();
        let reached =
            tokio::time::timeout(self.wait_max, applied.wait_for(|r| *r >= revision)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            _ => Err(Status::deadline_exceeded(format!(
                "revision {revision} was not applied within {:?}; applied {}",
                self.wait_max,
                *self.applied.borrow()
            ))),
        }
    }

    fn geo_facts(&self, location: &Location) -> GeoFacts {
        match location {
            Location::Unknown => GeoFacts::unknown(),
            Location::Resolved(facts) if self.trust_proxy => facts.clone(),
            Location::Resolved(_) => GeoFacts::unknown(),
            Location::Ip(ip) => match &self.geo {
                Some(geo) => geo.resolve(*ip).unwrap_or_else(|error| {
                    tracing::warn!(%ip, %error, "Geo lookup failed; location unknown.");
                    GeoFacts::unknown()
                }),
                None => GeoFacts::unknown(),
            },
        }
    }

    /// Decides one check from this node's state, with its usage counters
    /// and seat leases; `saturated` makes that counter look used up (the
    /// region's share of the cap is gone).
    fn decide_engine(
        &self,
        request: &CheckRequest,
        saturated: Option<&Counter>,
    ) -> Result<(Decision, u64), Status> {
        let (revision, catalog, account) = self.views(&request.check.account)?;
        let contact = read_u64(&self.view, ORIGIN_CONTACT);
        let freshness = Freshness {
            applied_revision: revision,
            last_origin_contact: (contact > 0).then_some(UnixSeconds(contact as i64)),
        };
        let live = Live::load(&self.view, &self.meter, account.as_deref(), saturated)?;
        let env = Environment {
            catalog: &catalog,
            live: &live,
            freshness,
            now: now(),
        };
        let geo = self.geo_facts(&request.location);
        let decision = decide(&request.check, account.as_deref(), &geo, &env);
        Ok((decision, revision))
    }

    /// Decides one check and, when it is allowed and consumes, meters it:
    /// a hard cap out of this node's chunk (drawn through the log when
    /// short), anything else straight into the next usage report.
    async fn answer(&self, request: &CheckRequest) -> Result<(Decision, u64), Status> {
        let consume = request.check.consume;
        if consume > 0 {
            if let Some(key) = &request.idempotency_key {
                if self.meter.seen(key) {
                    // A retry of a counted check: answer, consume nothing.
                    let mut again = request.clone();
                    again.check.consume = 0;
                    return self.decide_engine(&again, None);
                }
            }
        }
        let (decision, revision) = self.decide_engine(request, None)?;
        let Some(metering) = decision
            .metering
            .filter(|_| consume > 0 && decision.reason.is_allowed())
        else {
            return Ok((decision, revision));
        };
        let counter = Counter {
            account: request.check.account.clone(),
            feature: request.check.feature.clone(),
            period: metering.period,
        };
        if self.meter.backed_up() {
            return Err(Status::unavailable(
                "usage reports are not reaching the region's log; try another node",
            ));
        }
        let from_chunk = match metering.limit {
            Some(limit) if metering.hard => {
                match self
                    .meter
                    .take(&counter, limit, consume)
                    .await
                    .map_err(Status::unavailable)?
                {
                    Take::Taken => true,
                    Take::Exhausted => return self.decide_engine(request, Some(&counter)),
                }
            }
            _ => false,
        };
        self.meter.record(
            counter,
            consume,
            request.idempotency_key.clone(),
            from_chunk,
        );
        Ok((decision, revision))
    }
}

/// The usage and seat state a decision reads, loaded for one account.
struct Live<'a> {
    meter: &'a Meter,
    leases: HashMap<EntitlementId, Vec<SeatLease>>,
    saturated: Option<&'a Counter>,
}

impl<'a> Live<'a> {
    fn load(
        view: &StateView,
        meter: &'a Meter,
        account: Option<&AccountView>,
        saturated: Option<&'a Counter>,
    ) -> Result<Self, Status> {
        let mut leases = HashMap::new();
        for ent in account
            .map(|a| a.entitlements.as_slice())
            .unwrap_or_default()
        {
            if matches!(
                ent.seats.as_ref().map(|s| &s.mode),
                Some(SeatMode::Floating { .. })
            ) {
                let held = tollgate_region::seats::leases(view, &ent.id).map_err(internal)?;
                leases.insert(ent.id.clone(), held);
            }
        }
        Ok(Live {
            meter,
            leases,
            saturated,
        })
    }
}

impl LiveState for Live<'_> {
    fn usage_consumed(&self, account: &AccountId, feature: &FeatureId, period: PeriodKey) -> u64 {
        let counter = Counter {
            account: account.clone(),
            feature: feature.clone(),
            period,
        };
        if self.saturated == Some(&counter) {
            return u64::MAX / 2;
        }
        self.meter.consumed(&counter)
    }

    fn floating_leases(&self, entitlement: &EntitlementId) -> &[SeatLease] {
        self.leases.get(entitlement).map_or(&[], Vec::as_slice)
    }
}

/// Counts a decision by reason and records how long it took.
fn observe(decision: &Decision, started: std::time::Instant) {
    metrics::counter!(crate::telemetry::CHECKS, "reason" => decision.reason.code()).increment(1);
    metrics::histogram!(crate::telemetry::CHECK_DURATION).record(started.elapsed().as_secs_f64());
}

fn invalid(e: tollgate_proto::ConvertError) -> Status {
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl pb::check_service_server::CheckService for Checker {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let request = CheckRequest::try_from(request.into_inner()).map_err(invalid)?;
        if let tollgate_engine::Consistency::AtLeastRevision(rev) = request.consistency {
            self.wait_for(rev).await?;
        }
        let started = std::time::Instant::now();
        let (decision, revision) = self.answer(&request).await?;
        observe(&decision, started);
        Ok(Response::new(pb::CheckResponse {
            staleness_seconds: decision.staleness_seconds,
            decision: Some(decision_to_proto(decision)),
            revision,
            answered_by: self.name.clone(),
        }))
    }

    async fn batch_check(
        &self,
        request: Request<pb::BatchCheckRequest>,
    ) -> Result<Response<pb::BatchCheckResponse>, Status> {
        let (items, consistency) = batch_from_proto(request.into_inner()).map_err(invalid)?;
        if let tollgate_engine::Consistency::AtLeastRevision(rev) = consistency {
            self.wait_for(rev).await?;
        }
        let mut results = Vec::with_capacity(items.len());
        let (mut revision, mut staleness) = (read_u64(&self.view, keys::HEAD_REVISION), None);
        for item in items {
            let result = match item {
                Ok(request) => {
                    let started = std::time::Instant::now();
                    let (decision, rev) = self.answer(&request).await?;
                    observe(&decision, started);
                    revision = rev;
                    staleness = decision.staleness_seconds;
                    pb::batch_check_result::Result::Decision(decision_to_proto(decision))
                }
                Err(e) => pb::batch_check_result::Result::Error(pb::CheckError {
                    code: "INVALID_ARGUMENT".into(),
                    message: e.to_string(),
                }),
            };
            results.push(pb::BatchCheckResult {
                result: Some(result),
            });
        }
        Ok(Response::new(pb::BatchCheckResponse {
            results,
            revision,
            staleness_seconds: staleness,
            answered_by: self.name.clone(),
        }))
    }

    type WatchStream = crate::watch::WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = WatchRequest::try_from(request.into_inner()).map_err(invalid)?;
        Ok(Response::new(self.watches.start(request)?))
    }
}

/// A running region node.
pub struct RegionNode {
    node: Arc<Node<RegionLogic>>,
    view: StateView,
    stats: Arc<SyncStats>,
    ops: Arc<OpsState>,
    http_addr: Option<SocketAddr>,
    grpc_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RegionNode {
    pub async fn start(
        config: RegionConfig,
        listeners: RegionListeners,
        geo: Option<Arc<GeoDatabases>>,
    ) -> Result<RegionNode, NodeError> {
        let grpc_addr = listeners
            .grpc
            .local_addr()
            .map_err(|source| NodeError::Io {
                context: "grpc listener".into(),
                source,
            })?;
        let node = Arc::new(Node::start(config.raft.clone(), RegionLogic, listeners.raft).await?);
        let view = node.view();
        let (stop, stop_rx) = watch::channel(false);
        let (applied_tx, applied_rx) = watch::channel(read_u64(&view, keys::HEAD_REVISION));
        let mut tasks = Vec::new();

        // Wake revision waiters whenever an entry is applied.
        let mut metrics = node.raft().metrics();
        let watcher_view = view.clone();
        let watcher_stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let stop = stopped(watcher_stop);
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    changed = metrics.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        applied_tx.send_replace(read_u64(&watcher_view, keys::HEAD_REVISION));
                    }
                    _ = &mut stop => return,
                }
            }
        }));

        let stats = Arc::new(SyncStats::default());
        let meter = Arc::new(Meter::new(node.clone(), config.meter));
        tasks.push(tokio::spawn(meter.clone().run(stop_rx.clone())));
        let ops = Arc::new(OpsState {
            meter: meter.clone(),
            node: node.clone(),
            name: config.name.clone(),
            region: config.region.clone(),
            geo: geo.clone(),
            geo_required: config.geo_required,
            ready_lag_revisions_max: config.ready_lag_revisions_max,
            stats: stats.clone(),
        });
        crate::telemetry::install();
        let gauges = ops.clone();
        let gauge_stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let stop = stopped(gauge_stop);
            tokio::pin!(stop);
            let mut tick = tokio::time::interval(crate::telemetry::GAUGE_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => gauges.record_gauges(),
                    _ = &mut stop => return,
                }
            }
        }));
        let http_addr = match listeners.http {
            None => None,
            Some(listener) => {
                let addr = listener.local_addr().map_err(|source| NodeError::Io {
                    context: "http listener".into(),
                    source,
                })?;
                let app = crate::ops::router(ops.clone());
                let http_stop = stopped(stop_rx.clone());
                tasks.push(tokio::spawn(async move {
                    if let Err(error) = axum::serve(listener, app)
                        .with_graceful_shutdown(http_stop)
                        .await
                    {
                        tracing::error!(%error, "The operations server failed.");
                    }
                }));
                Some(addr)
            }
        };

        let licenses = crate::license_api::RegionLicenses::new(
            view.clone(),
            config.origin_keys.clone(),
            &config.region,
            config.license_issuer.clone(),
        )?;
        let checker = Arc::new(Checker {
            meter_config: config.meter,
            node: node.clone(),
            meter,
            view: view.clone(),
            name: config.name.clone(),
            geo,
            trust_proxy: config.trust_proxy_location,
            wait_max: config.revision_wait_max,
            watches: Watches {
                view: view.clone(),
                applied: applied_rx.clone(),
                heartbeat: config.watch_heartbeat,
                slots: Arc::new(tokio::sync::Semaphore::new(config.watchers_max)),
                slots_max: config.watchers_max,
                stop: stop_rx.clone(),
            },
            applied: applied_rx,
            cache: Mutex::new(Cache {
                revision: u64::MAX,
                catalog: Arc::new(Catalog::default()),
                accounts: HashMap::new(),
            }),
        });
        let router = tonic::transport::Server::builder()
            .add_service(pb::check_service_server::CheckServiceServer::from_arc(
                checker.clone(),
            ))
            .add_service(tollgate_proto::usage::v1::usage_server::UsageServer::new(
                crate::usage_api::UsageApi { checker },
            ))
            .add_service(
                tollgate_proto::license::v1::licenses_server::LicensesServer::new(licenses),
            );
        let router = crate::state::with_standard_services(
            router,
            &[
                "tollgate.check.v1.CheckService",
                "tollgate.usage.v1.Usage",
                "tollgate.license.v1.Licenses",
            ],
        )
        .await?;
        tasks.push(crate::state::serve_grpc(
            router,
            listeners.grpc,
            stop_rx.clone(),
            "the check service",
        ));

        tasks.push(tokio::spawn(crate::quota_agent::run(
            node.clone(),
            crate::quota_agent::QuotaAgentConfig {
                region: config.region.clone(),
                origin: config.origin_feed.clone(),
                lease_interval: config.quota_lease_interval,
                sync_interval: config.quota_sync_interval,
                slice_units_max: config.slice_units_max,
                slice_idle: config.slice_idle,
            },
            stop_rx.clone(),
        )));
        tasks.push(tokio::spawn(follow_origin(
            node.clone(),
            config.clone(),
            stats.clone(),
            stop_rx,
        )));
        tracing::info!(node_id = node.id(), %grpc_addr, name = %config.name, "Region node started.");
        Ok(RegionNode {
            node,
            view,
            stats,
            ops,
            http_addr,
            grpc_addr,
            stop,
            tasks,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The name this node answers as (`answered_by`).
    pub fn name(&self) -> &str {
        &self.ops.name
    }

    /// The operations endpoints, if this node serves them.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Role, revisions, lag, staleness, geo databases, readiness.
    pub fn status(&self) -> RegionStatus {
        self.ops.status()
    }

    pub fn raft(&self) -> &Node<RegionLogic> {
        &self.node
    }

    /// What this node's origin sync has done while it led.
    pub fn sync_stats(&self) -> &SyncStats {
        &self.stats
    }

    /// The origin revision this node has applied.
    pub fn applied_revision(&self) -> u64 {
        read_u64(&self.view, keys::HEAD_REVISION)
    }

    /// What this node serves, as a data set: compare it with the origin's
    /// (`OriginNode::served_dataset`) to prove a region converged.
    pub fn served_dataset(&self) -> Result<tollgate_model::Dataset, NodeError> {
        crate::state::served_dataset(&self.view)
    }

    /// Stops abruptly, as a killed process would: no draining, no flush
    /// beyond what Raft already made durable.
    pub async fn crash(self) {
        for task in &self.tasks {
            task.abort();
        }
        let _ = self.stop.send(true);
        match Arc::try_unwrap(self.node) {
            Ok(node) => node.crash().await,
            Err(node) => {
                let _ = node.raft().shutdown().await;
            }
        }
    }

    pub async fn shutdown(self) -> Result<(), NodeError> {
        let _ = self.stop.send(true);
        for task in self.tasks {
            if tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .is_err()
            {
                tracing::warn!("A region task did not stop in time.");
            }
        }
        match Arc::try_unwrap(self.node) {
            Ok(node) => node.shutdown().await?,
            Err(node) => node
                .raft()
                .shutdown()
                .await
                .map_err(|e| NodeError::Other(format!("raft shutdown: {e}")))?,
        }
        Ok(())
    }
}

/// What the origin sync has done on this node (as leader).
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Records or snapshot chunks refused (signature, order, malformed).
    pub refused: AtomicU64,
    /// Origin snapshots installed.
    pub snapshots_installed: AtomicU64,
    /// Connections to the origin that failed or ended.
    pub disconnects: AtomicU64,
}

/// Proposes one command; a refusal by the state machine is an error (the
/// feed is not advanced past it).
async fn propose(node: &Node<RegionLogic>, command: RegionCommand) -> Result<u64, FeedError> {
    let outcome = node
        .write(command)
        .await
        .map_err(|e| FeedError::Source(format!("proposing to the region failed: {e}")))?;
    match outcome.response {
        RegionResponse::Applied { revision } => Ok(revision),
        RegionResponse::Refused { reason } => Err(FeedError::Source(format!(
            "the region refused the command: {reason}"
        ))),
        other => Err(FeedError::Source(format!(
            "unexpected answer to an origin sync command: {other:?}"
        ))),
    }
}

/// On the leader: follow the origin from the applied revision and propose
/// what verifies; reconnect with backoff. Followers wait.
/// The origin keys the region trusts: the set it accepted at the last
/// rotation, or the configured one before any.
pub(crate) fn trusted_origin_keys(view: &StateView, configured: &PublicKeySet) -> PublicKeySet {
    match view.get(tollgate_region::ORIGIN_KEYS) {
        Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
            Ok(set) => set,
            Err(error) => {
                tracing::error!(%error, "The stored origin key set does not decode; using the configured one.");
                configured.clone()
            }
        },
        _ => configured.clone(),
    }
}

/// After a record signed by a key the region does not know: ask the origin
/// for its key set, accept it if a trusted key endorses it, and record it
/// through the region's log. True when a new set was accepted.
async fn learn_rotated_keys(
    node: &Node<RegionLogic>,
    config: &RegionConfig,
    trusted: &PublicKeySet,
) -> bool {
    let offered = match tollgate_feed::fetch_endorsed_keys(
        &config.origin_feed,
        trusted,
        Duration::from_secs(5),
    )
    .await
    {
        Ok(set) => set,
        Err(error) => {
            tracing::error!(%error, "The origin signs with a key this region does not trust, and no trusted key endorses its key set.");
            return false;
        }
    };
    if &offered == trusted {
        return false;
    }
    let keys_json = serde_json::to_string(&offered).expect("a key set serialises");
    match propose(node, RegionCommand::TrustOriginKeys { keys_json }).await {
        Ok(_) => {
            let kids: Vec<String> = offered.keys.iter().map(|k| k.kid.to_string()).collect();
            tracing::info!(
                ?kids,
                "Accepted the origin's rotated key set, endorsed by a trusted key."
            );
            metrics::counter!("tollgate_region_origin_key_rotations_total").increment(1);
            true
        }
        Err(error) => {
            tracing::warn!(%error, "Could not record the origin's rotated key set.");
            false
        }
    }
}

async fn follow_origin(
    node: Arc<Node<RegionLogic>>,
    config: RegionConfig,
    stats: Arc<SyncStats>,
    mut stop: watch::Receiver<bool>,
) {
    let view = node.view();
    let initial_backoff = Duration::from_millis(50);
    let mut backoff = initial_backoff;
    loop {
        if *stop.borrow() {
            return;
        }
        if node.metrics().current_leader != Some(node.id()) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                _ = stop.changed() => return,
            }
        }
        let from = read_u64(&view, keys::HEAD_REVISION);
        let trusted = trusted_origin_keys(&view, &config.origin_keys);
        let follower_config = FollowerConfig {
            endpoint: config.origin_feed.clone(),
            keys: trusted.clone(),
            max_batch_records: tollgate_region::RECORDS_PER_COMMAND_MAX as u32,
            subscriber: format!("region node {}", config.name),
            connect_timeout: config.origin_connect_timeout,
            idle_timeout: config.origin_idle_timeout,
        };
        let result = async {
            let mut follower = Follower::connect(&follower_config, from).await?;
            backoff = initial_backoff;
            let mut keys_checked = tokio::time::Instant::now();
            // Parts of the snapshot being installed, proposed so far.
            let mut snapshot_parts = 0u32;
            loop {
                if node.metrics().current_leader != Some(node.id()) {
                    return Ok(());
                }
                if keys_checked.elapsed() >= config.origin_keys_refresh {
                    keys_checked = tokio::time::Instant::now();
                    if learn_rotated_keys(&node, &config, &trusted).await {
                        // Follow again under the new set.
                        return Ok(());
                    }
                }
                let command = match follower.next().await? {
                    FollowEvent::Records(records) => RegionCommand::ApplyChanges {
                        records,
                        heard_at: now(),
                    },
                    FollowEvent::Heartbeat { head_revision, .. } => RegionCommand::OriginContact {
                        head_revision,
                        heard_at: now(),
                    },
                    FollowEvent::SnapshotChunk {
                        revision,
                        index,
                        last,
                        mutations,
                    } => {
                        if index == 0 {
                            tracing::info!(revision, "Installing the origin's snapshot: this region is below the origin's retention floor.");
                            snapshot_parts = 0;
                        }
                        for part in tollgate_region::snapshot_parts(mutations) {
                            let command = RegionCommand::SnapshotPart {
                                revision,
                                seq: snapshot_parts,
                                mutations: part,
                            };
                            propose(&node, command).await?;
                            snapshot_parts += 1;
                        }
                        if !last {
                            continue;
                        }
                        RegionCommand::SnapshotCommit {
                            revision,
                            parts: snapshot_parts,
                            heard_at: now(),
                        }
                    }
                };
                let commit = match &command {
                    RegionCommand::SnapshotCommit {
                        revision, parts, ..
                    } => Some((*revision, *parts)),
                    _ => None,
                };
                propose(&node, command).await?;
                if let Some((revision, parts)) = commit {
                    stats.snapshots_installed.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("tollgate_region_snapshots_installed_total").increment(1);
                    tracing::info!(revision, parts, "Installed the origin's snapshot.");
                }
            }
        };
        tokio::select! {
            outcome = result => {
                if let Err(error) = outcome {
                    stats.disconnects.fetch_add(1, Ordering::Relaxed);
                    if let FeedError::Signature {
                        source: tollgate_signing::VerifyError::UnknownKey(_),
                        ..
                    } = &error
                    {
                        if learn_rotated_keys(&node, &config, &trusted).await {
                            backoff = initial_backoff;
                            continue;
                        }
                    }
                    if matches!(error, FeedError::Refused { .. } | FeedError::Signature { .. }) {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::warn!(%error, origin = %config.origin_feed, "Following the origin failed; reconnecting.");
                }
            }
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(config.reconnect_backoff_max);
    }
}
