//! An origin node: a member of the origin's Raft group that serves the REST
//! API and the changefeed, and keeps the changefeed within its retention.

use crate::store::OriginState;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tollgate_api::licensing::{Actor, KeysLoad, OriginKeys};
use tollgate_api::AppState;
use tollgate_feed::{ChangeSource, FeedConfig, FeedService};
use tollgate_origin::{
    keys, Op, OriginCommand, OriginLogic, OriginResponse, Scope, COMPACT_RECORDS_MAX,
};
use tollgate_raft::{Node, NodeConfig, NodeId};
use tollgate_server::served::read_u64;
use tollgate_server::shutdown::{stopped, within};
use tollgate_server::{telemetry, NodeError};
use tollgate_signing::{KeyRing, SealKey, SharedRing};
use tollgate_tls::net::TcpListener;
use tollgate_tls::{Allow, ClientAuth, Transport};

#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// The Raft member: id, data directory, timings, limits.
    pub raft: NodeConfig,
    /// The key that seals the origin's private signing keys in its
    /// replicated state. Every node of one origin cluster must be given the
    /// same file (like a TLS CA); a missing file is created with a new key,
    /// which suits a one-node origin.
    pub seal_key_path: PathBuf,
    /// A key ring file as origins kept it before the ring was replicated:
    /// imported once, when the cluster has no keys yet and the file exists.
    /// Nothing writes it any more (it may be a read-only Secret).
    pub import_keys_path: PathBuf,
    pub feed: FeedConfig,
    /// Change records kept for followers to resume from; older ones are
    /// compacted and a follower that far behind gets a snapshot.
    pub retention_revisions: u64,
    /// How often the leader checks whether to compact.
    pub compaction_interval: Duration,
    /// Outgoing webhook delivery.
    pub webhooks: crate::WebhookConfig,
    /// The overshoot bound of every hard cap leased to regions: units
    /// leased and not yet reported consumed, all regions together.
    pub quota_outstanding_max: u64,
    /// How often the TLS files are checked for a replacement (the
    /// transport itself is `raft.transport`, used on every port).
    pub tls_reload_interval: Duration,
    /// The REST and changefeed ports' limits (`[limits]`): connections,
    /// idle and header timeouts, concurrency, request timeout, each API
    /// key's rate on REST.
    pub limits: tollgate_server::limits::Limits,
    /// The portal at `/portal` on the REST port (`[portal]`). Its cookies
    /// are `Secure` unless the node serves in clear.
    pub portal: tollgate_portal::PortalConfig,
    /// The wall clock every reading of the time on this node comes from
    /// (command stamps, key validity, heartbeats, webhooks): the system's,
    /// or a simulation's. It replaces `feed.clock`.
    pub clock: tollgate_clock::Clock,
}

impl OriginConfig {
    pub fn new(node_id: NodeId, data_dir: impl Into<PathBuf>) -> OriginConfig {
        let data_dir = data_dir.into();
        OriginConfig {
            seal_key_path: data_dir.join("origin-seal.key"),
            import_keys_path: data_dir.join("origin-keys.json"),
            raft: NodeConfig::new(node_id, data_dir),
            feed: FeedConfig::default(),
            retention_revisions: 100_000,
            compaction_interval: Duration::from_secs(30),
            webhooks: crate::WebhookConfig::default(),
            quota_outstanding_max: 1_000_000,
            tls_reload_interval: Duration::from_secs(5),
            limits: tollgate_server::limits::Limits::default(),
            portal: tollgate_portal::PortalConfig::default(),
            clock: tollgate_clock::Clock::system(),
        }
    }
}

/// The sockets an origin node serves, bound by the caller.
pub struct OriginListeners {
    /// Raft transport and cluster administration (gRPC, members only).
    pub raft: TcpListener,
    /// The REST API.
    pub http: TcpListener,
    /// The changefeed (gRPC).
    pub feed: TcpListener,
}

/// The origin node's Raft gauges and head revision.
fn record_origin_gauges(state: &OriginState, node: &str) {
    telemetry::record_raft("origin", node, &state.node);
    metrics::gauge!("tollgate_origin_head_revision", "node" => node.to_string())
        .set(state.head().unwrap_or(0) as f64);
}

/// What the origin's `/v1/status` shows: who the node is, its Raft state,
/// the head revision and its TLS (mode, identity, seconds to expiry).
fn origin_status(
    state: &OriginState,
    keys: &OriginKeys,
    keys_error: &KeysError,
) -> serde_json::Value {
    let node = &state.node;
    let m = node.metrics();
    // leader, follower, learner, candidate or shutdown.
    let role = format!("{:?}", m.state).to_lowercase();
    let head = match state.head() {
        Ok(head) => serde_json::json!(head),
        Err(error) => serde_json::json!({ "error": error.to_string() }),
    };
    serde_json::json!({
        "node_id": m.id,
        "role": role,
        "term": m.current_term,
        "leader": m.current_leader,
        "head_revision": head,
        "ready": origin_ready(node, &keys.ring),
        "signing": match keys.ring.current() {
            Ok(ring) => serde_json::json!({
                "loaded": true,
                "active_kid": ring.active_kid(),
                "seal": keys.seal_fingerprint(),
            }),
            Err(e) => serde_json::json!({
                "loaded": false,
                "error": keys_error.lock().ok().and_then(|e| e.clone()).unwrap_or_else(|| e.to_string()),
                "seal": keys.seal_fingerprint(),
            }),
        },
        "tls": node.transport().status(state.clock.now_secs()),
    })
}

/// Largest request message on the changefeed port (a `SyncRequest` of
/// 1,024 counters, a license token to verify): bigger ones are refused
/// with RESOURCE_EXHAUSTED before they are decoded.
pub const FEED_PORT_REQUEST_BYTES_MAX: usize = 256 * 1024;

/// The rate limiter's key for a REST request, in the layer before any
/// route: none for a request presenting an API key (`Authorization:
/// Bearer tg_<id>.<secret>`), which the route's authorization counts by
/// the key's id once its secret is proven (`AppState::rate`, so naming
/// someone else's key id spends nothing of theirs); the caller's IP
/// address for any other request.
fn api_key_rate_key(
    extensions: &axum::http::Extensions,
    headers: &axum::http::HeaderMap,
) -> Option<String> {
    let presents_key = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|v| v.trim().strip_prefix(tollgate_api::auth::TOKEN_PREFIX))
        .and_then(|v| v.split_once('.'))
        .is_some_and(|(id, _)| !id.is_empty() && id.len() <= 64);
    if presents_key {
        None
    } else {
        tollgate_server::limits::peer_ip_key(extensions, headers).map(|ip| format!("ip:{ip}"))
    }
}

/// REST's answer to a refused request: problem+json with a stable code
/// (`OVERLOADED`, `TIMEOUT`: 503; `RATE_LIMITED`: 429) and `Retry-After`.
fn rest_refusal(
    refused: tollgate_server::limits::Refused,
    _wire: tollgate_server::limits::Wire,
) -> axum::response::Response {
    tollgate_server::limits::problem_refusal(refused).map(axum::body::Body::new)
}

/// Ready to serve: a member of the origin's cluster that knows its leader
/// and holds the cluster's signing keys (it signs every changefeed record).
fn origin_ready(node: &Node<OriginLogic>, keys: &SharedRing) -> bool {
    if keys.current().is_err() {
        return false;
    }
    let metrics = node.metrics();
    let member = metrics
        .membership_config
        .membership()
        .nodes()
        .any(|(id, _)| *id == node.id());
    member && metrics.current_leader.is_some()
}

/// A running origin node.
pub struct OriginNode {
    state: Arc<OriginState>,
    keys: SharedRing,
    app: AppState<OriginState>,
    http_addr: SocketAddr,
    feed_addr: SocketAddr,
    /// Shutdown, in order: `serve_stop` ends REST, the feed port and its
    /// changefeed streams; `stop` everything else; Raft last.
    serve_stop: watch::Sender<bool>,
    serve_tasks: Vec<JoinHandle<()>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    shutdown_deadline: Duration,
    /// Set when shutdown begins: the feed port's health says NOT_SERVING.
    draining: Arc<std::sync::atomic::AtomicBool>,
}

impl OriginNode {
    pub async fn start(
        config: OriginConfig,
        listeners: OriginListeners,
    ) -> Result<OriginNode, NodeError> {
        if config.retention_revisions == 0 {
            return Err(NodeError::Other(
                "invalid config `retention_revisions`: must be at least 1".into(),
            ));
        }
        let io = |context: &str| {
            let context = context.to_string();
            move |source| NodeError::Io { context, source }
        };
        let http_addr = listeners.http.local_addr().map_err(io("http listener"))?;
        let feed_addr = listeners.feed.local_addr().map_err(io("feed listener"))?;
        if let Some(dir) = config.seal_key_path.parent() {
            std::fs::create_dir_all(dir).map_err(io("creating the seal key's directory"))?;
        }
        let (seal, created) = SealKey::load_or_create(&config.seal_key_path)?;
        if created {
            tracing::info!(path = %config.seal_key_path.display(), seal = seal.fingerprint(), "Created a seal key for the origin's signing keys; every node of this origin cluster must be given the same file.");
        }
        let import = KeyRing::load(&config.import_keys_path)?;
        let origin_keys = OriginKeys::new(seal);
        let keys = origin_keys.ring.clone();

        let node = Arc::new(Node::start(config.raft.clone(), OriginLogic, listeners.raft).await?);
        let view = node.view();
        let state = Arc::new(OriginState {
            heads: watch::channel(read_u64(&view, keys::HEAD_REVISION).unwrap_or(0)).0,
            node: node.clone(),
            view,
            clock: config.clock.clone(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let (serve_stop, serve_stop_rx) = watch::channel(false);
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut tasks = Vec::new();
        let mut serve_tasks = Vec::new();
        let transport = config.raft.transport.clone();
        if let Transport::Tls(tls) = &transport {
            tasks.push(
                tls.spawn_reloader(config.tls_reload_interval, stop_rx.clone(), {
                    let clock = config.clock.clone();
                    move || clock.now_secs()
                }),
            );
        }
        let tls_error = |e: tollgate_tls::TlsError| NodeError::Other(e.to_string());

        // Follow applied entries to wake changefeed streams.
        let mut metrics = node.raft().metrics();
        let watcher_state = state.clone();
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
                        if let Ok(head) = read_u64(&watcher_state.view, keys::HEAD_REVISION) {
                            watcher_state.heads.send_if_modified(|h| {
                                let moved = *h != head;
                                *h = head;
                                moved
                            });
                        }
                    }
                    _ = &mut stop => return,
                }
            }
        }));

        telemetry::install();
        // The signing keys: loaded from the replicated ring as it changes;
        // the leader gives a new cluster its first keys.
        let keys_error = KeysError::default();
        tasks.push(tokio::spawn(keys_loop(
            state.clone(),
            origin_keys.clone(),
            import,
            keys_error.clone(),
            stop_rx.clone(),
        )));

        // REST.
        let gauge_state = state.clone();
        let gauge_stop = stop_rx.clone();
        let node_name = format!("origin-{}", state.node.id());
        tasks.push(tokio::spawn(async move {
            let stop = stopped(gauge_stop);
            tokio::pin!(stop);
            let mut tick = tokio::time::interval(telemetry::GAUGE_INTERVAL);
            loop {
                tokio::select! {
                    _ = tick.tick() => record_origin_gauges(&gauge_state, &node_name),
                    _ = &mut stop => return,
                }
            }
        }));
        let metrics_state = state.clone();
        let app_state = AppState {
            store: state.clone(),
            keys: origin_keys.clone(),
            metrics: Some(Arc::new(move || {
                record_origin_gauges(
                    &metrics_state,
                    &format!("origin-{}", metrics_state.node.id()),
                );
                telemetry::render()
            })),
            status: Some({
                let state = state.clone();
                let keys = origin_keys.clone();
                let keys_error = keys_error.clone();
                Arc::new(move || origin_status(&state, &keys, &keys_error))
            }),
            rate: None,
            clock: config.clock.clone(),
        };
        // Every request bounded in time and number, and each caller's rate:
        // an API key's by its id once proven (in the routes'
        // authorization), anyone else's by IP address (in the layer).
        let mut rest_limits = config.limits.requests("rest", false).layer(rest_refusal);
        let mut app_state = app_state;
        if let Some(limiter) = config.limits.rate_limiter() {
            rest_limits = rest_limits.with_rate(limiter.clone(), api_key_rate_key);
            app_state.rate = Some(Arc::new(move |key_id: &str| {
                limiter.check(&format!("key:{key_id}")).map_err(|retry| {
                    tollgate_server::limits::count_refusal("rest", "rate_limited");
                    retry.seconds()
                })
            }));
        }
        let licenses = crate::license_service::OriginLicenses::new(app_state.clone());
        // The portal shares the REST port, its limits and its TLS.
        let mut portal = config.portal.clone();
        portal.secure_cookies = !matches!(transport, tollgate_tls::Transport::Plaintext);
        let app = tollgate_api::router(app_state.clone())
            .merge(tollgate_portal::router(app_state.clone(), portal))
            .layer(rest_limits);
        let http_stop = stopped(serve_stop_rx.clone());
        // Anyone may connect (API keys authorize); a client certificate, if
        // presented, must be one of ours.
        let rest_port = config.limits.port("rest");
        let http = tollgate_tls::listen_with(
            listeners.http,
            &transport,
            ClientAuth::optional(),
            rest_port.clone(),
            true,
            serve_stop_rx.clone(),
        )
        .map_err(tls_error)?;
        serve_tasks.push(tokio::spawn(tollgate_tls::http::serve_http(
            http, app, rest_port, http_stop,
        )));

        // Changefeed.
        // Its streams end when serving stops, so regions reconnect to
        // another origin node at once rather than after a timeout.
        let feed = FeedService::new(
            state.clone(),
            keys.clone(),
            FeedConfig {
                clock: config.clock.clone(),
                ..config.feed.clone()
            },
        )
        .with_stop(serve_stop_rx.clone());
        let quota = crate::quota_service::QuotaService {
            state: state.clone(),
            outstanding_max: config.quota_outstanding_max,
        };
        let feed_port = tollgate_server::grpc::GrpcPort::new("feed", &config.limits);
        let router = tollgate_server::grpc::server_for(&feed_port)
            .add_service(
                feed.into_server()
                    .max_decoding_message_size(FEED_PORT_REQUEST_BYTES_MAX),
            )
            .add_service(
                tollgate_proto::origin::v1::quota_server::QuotaServer::new(quota)
                    .max_decoding_message_size(FEED_PORT_REQUEST_BYTES_MAX),
            )
            .add_service(
                tollgate_proto::license::v1::licenses_server::LicensesServer::new(licenses)
                    .max_decoding_message_size(FEED_PORT_REQUEST_BYTES_MAX),
            );
        let (router, health) = tollgate_server::grpc::with_standard_services(
            router,
            &[
                "tollgate.origin.v1.Changefeed",
                "tollgate.origin.v1.Quota",
                "tollgate.license.v1.Licenses",
            ],
        )
        .await?;
        // Region nodes (and other origin nodes, and operators) only: the
        // changefeed carries every customer's entitlements.
        let feed_tls = transport
            .server(
                "feed",
                ClientAuth::required(vec![
                    Allow::RegionNodes,
                    Allow::OriginNodes,
                    Allow::Operators,
                ]),
                false,
            )
            .map_err(tls_error)?;
        serve_tasks.push(tollgate_server::grpc::serve_port(
            router,
            listeners.feed,
            feed_tls,
            &feed_port,
            serve_stop_rx,
            "the changefeed",
        ));
        // The changefeed port's health follows the node's readiness: a
        // member of the origin cluster that knows its leader.
        let health_state = state.clone();
        let health_draining = draining.clone();
        let health_keys = keys.clone();
        tasks.push(
            health.follow(telemetry::GAUGE_INTERVAL / 4, stop_rx.clone(), move || {
                !health_draining.load(std::sync::atomic::Ordering::Relaxed)
                    && origin_ready(&health_state.node, &health_keys)
            }),
        );

        // Webhooks.
        tasks.push(tokio::spawn(crate::webhooks::run(
            state.clone(),
            keys.clone(),
            config.webhooks.clone(),
            stop_rx.clone(),
        )));

        // Access requests filed before the listing queues existed.
        tasks.push(tokio::spawn(crate::queues::backfill(
            state.clone(),
            stop_rx.clone(),
        )));

        // Retention.
        tasks.push(tokio::spawn(compact_loop(
            state.clone(),
            config.retention_revisions,
            config.compaction_interval,
            stop_rx,
        )));

        tracing::info!(node_id = node.id(), %http_addr, %feed_addr, raft = node.addr(), "Origin node started.");
        Ok(OriginNode {
            state,
            keys,
            http_addr,
            feed_addr,
            serve_stop,
            serve_tasks,
            stop,
            tasks,
            shutdown_deadline: config.limits.shutdown_deadline,
            draining,
            app: app_state,
        })
    }

    /// Certifies `public_key` (base64url) as region `region`'s license
    /// signing key, as `POST /v1/regions/{region}/certificates` does, for
    /// in-process deployments (`tollgate dev`).
    pub async fn certify_region(
        &self,
        region: &str,
        request: tollgate_api::licensing::CertifyRegion,
    ) -> Result<tollgate_api::licensing::IssuedCertificate, NodeError> {
        let actor = tollgate_api::licensing::Actor {
            id: "local".into(),
            reason: Some("certified in-process".into()),
        };
        tollgate_api::licensing::certify_region(
            &self.app,
            &actor,
            region.to_string(),
            request,
            self.app.clock.now(),
        )
        .await
        .map_err(|p| NodeError::Other(format!("certifying region {region}: {}", p.detail)))
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn feed_addr(&self) -> SocketAddr {
        self.feed_addr
    }

    /// The Raft member underneath.
    pub fn raft(&self) -> &Node<OriginLogic> {
        &self.state.node
    }

    /// The origin's public keys, as this node holds them: an error until it
    /// has loaded the cluster's ring (see [`OriginNode::wait_for_keys`]).
    pub fn public_keys(&self) -> Result<tollgate_signing::PublicKeySet, NodeError> {
        self.keys
            .current()
            .map(|ring| ring.public_set())
            .map_err(|e| NodeError::Other(e.to_string()))
    }

    /// The origin's public keys, once this node has loaded the cluster's
    /// ring (which needs a leader): waits up to `wait` for it.
    pub async fn wait_for_keys(
        &self,
        wait: Duration,
    ) -> Result<tollgate_signing::PublicKeySet, NodeError> {
        let mut changes = self.keys.subscribe();
        let loaded = tokio::time::timeout(wait, changes.wait_for(Option::is_some)).await;
        match loaded {
            Ok(Ok(ring)) => Ok(ring
                .as_ref()
                .expect("waited for a ring")
                .public_set()),
            Ok(Err(_)) => Err(NodeError::Other("the node stopped".into())),
            Err(_) => Err(NodeError::Other(format!(
                "the origin's signing keys were not loaded within {} s: the cluster has no leader, or this node cannot open the ring (see /v1/status `signing` and the log)",
                wait.as_secs()
            ))),
        }
    }

    /// The ring this node signs with; it changes when a rotation or a
    /// retirement commits (`serve` keeps the public key file in step).
    pub fn key_ring(&self) -> SharedRing {
        self.keys.clone()
    }

    /// What regions serve, as this node holds it.
    pub fn served_dataset(&self) -> Result<tollgate_model::Dataset, NodeError> {
        tollgate_server::served::served_dataset(&self.state.view)
    }

    /// The origin's newest committed revision, as this node has applied it.
    pub fn head_revision(&self) -> u64 {
        self.state.head().unwrap_or(0)
    }

    /// A usage counter across regions: what each region leased, released
    /// and reported consumed.
    pub fn quota(
        &self,
        counter: &tollgate_model::UsageCounter,
    ) -> Result<Option<tollgate_origin::quota::QuotaState>, NodeError> {
        self.quota_state(&tollgate_origin::quota::quota_key(counter), || {
            format!("quota {counter}")
        })
    }

    /// Units leased to regions and not yet reported consumed, over every
    /// counter: what the regions together could still spend without
    /// asking (also the gauge `tollgate_quota_outstanding_units`).
    pub fn quota_outstanding_total(&self) -> u64 {
        read_u64(&self.state.view, tollgate_origin::quota::OUTSTANDING_TOTAL).unwrap_or(0)
    }

    /// A floating-seat entitlement's seats across regions: what each
    /// region leased and handed back.
    pub fn seats(
        &self,
        entitlement: &tollgate_model::EntitlementId,
    ) -> Result<Option<tollgate_origin::quota::QuotaState>, NodeError> {
        self.quota_state(&tollgate_origin::quota::seats_key(entitlement), || {
            format!("seats of {entitlement}")
        })
    }

    /// A quota or seat record as this node holds it.
    fn quota_state(
        &self,
        key: &[u8],
        what: impl FnOnce() -> String,
    ) -> Result<Option<tollgate_origin::quota::QuotaState>, NodeError> {
        match self
            .state
            .view
            .get(key)
            .map_err(|e| NodeError::Other(e.to_string()))?
        {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| NodeError::Other(format!("{} does not decode: {e}", what()))),
        }
    }

    /// Change records up to this revision were compacted away: a region
    /// behind it catches up from a snapshot.
    pub fn change_floor(&self) -> u64 {
        read_u64(&self.state.view, tollgate_origin::keys::CHANGE_FLOOR).unwrap_or(0)
    }

    /// On a fresh origin (no API key yet), creates an admin key, writes its
    /// token to `token_path` (owner-only) and returns it. Otherwise `None`:
    /// keys are never re-issued.
    pub async fn bootstrap_admin_key(
        &self,
        token_path: &Path,
    ) -> Result<Option<String>, NodeError> {
        let existing = self
            .state
            .view
            .scan(b"api-key/", None, 1)
            .map_err(NodeError::Raft)?;
        if !existing.is_empty() {
            return Ok(None);
        }
        let issued = tollgate_api::auth::issue_key(
            "bootstrap admin",
            [Scope::Admin].into(),
            self.state.clock.now(),
        )
        .map_err(|p| NodeError::Other(p.detail))?;
        let command = OriginCommand {
            actor: "bootstrap".into(),
            at: self.state.clock.now(),
            reason: Some("first start of the origin".into()),
            op: Op::PutApiKey(issued.record),
        };
        match self.state.node.write(command).await?.response {
            OriginResponse::Committed { .. } => {}
            other => {
                return Err(NodeError::Other(format!(
                    "bootstrap key refused: {other:?}"
                )))
            }
        }
        write_secret(token_path, &issued.token)?;
        tracing::info!(path = %token_path.display(), "Created the bootstrap admin API key.");
        Ok(Some(issued.token))
    }

    /// Stops serving, drains in-flight requests (bounded), and shuts Raft
    /// down, which flushes storage.
    ///
    /// In order, within `[limits] shutdown_deadline_ms` as a whole: the
    /// feed port's health says NOT_SERVING, REST and the feed port stop
    /// accepting and drain what is in flight (changefeed streams end at
    /// once with UNAVAILABLE, so regions reconnect to another origin node),
    /// then webhooks, compaction and the rest stop, and Raft last.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let started = std::time::Instant::now();
        let deadline = started + self.shutdown_deadline;
        tracing::info!(node_id = self.state.node.id(), deadline = ?self.shutdown_deadline, "Origin node shutting down.");
        self.draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // A send fails only when every receiver is gone: those tasks ended.
        let _ended = self.serve_stop.send(true);
        for task in self.serve_tasks {
            within(deadline, "draining REST and the changefeed", task).await;
        }
        let _ended = self.stop.send(true);
        for task in self.tasks {
            within(deadline, "stopping an origin task", task).await;
        }
        tracing::info!(elapsed = ?started.elapsed(), "Origin node stopped serving; stopping Raft.");
        let state = self.state;
        let node = state.node.clone();
        drop(state);
        match Arc::try_unwrap(node) {
            Ok(node) => node.shutdown().await?,
            // A request still holds the node: stop Raft through the shared
            // handle; its storage is released when the last holder goes.
            Err(node) => node
                .shutdown_raft()
                .await
                .map_err(|e| NodeError::Other(format!("raft shutdown: {e}")))?,
        }
        Ok(())
    }
}

fn write_secret(path: &Path, secret: &str) -> Result<(), NodeError> {
    use std::io::Write;
    let io = |source| NodeError::Io {
        context: format!("writing {}", path.display()),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io)?;
    file.write_all(secret.as_bytes()).map_err(io)?;
    file.write_all(b"\n").map_err(io)?;
    file.sync_all().map_err(io)
}

/// The last failure to load the signing keys, for `/v1/status`.
type KeysError = Arc<std::sync::Mutex<Option<String>>>;

/// How often a node looks for a changed signing key ring. The node that
/// commits a rotation loads it at once; the others within this.
const KEYS_POLL_INTERVAL: Duration = Duration::from_millis(250);
/// A failure to load the keys is logged once it has lasted this many polls
/// (2 s).
const KEYS_FAILURES_LOGGED_AFTER: u32 = 8;

/// Keeps this node's signing keys the cluster's: loads the replicated ring
/// whenever it changes, and, on the leader of a cluster that has none,
/// commits the first (`import`, a key file as origins kept it before, or a
/// new key). A ring this node cannot open is logged once per change, with
/// what to do, and counted; the node keeps signing with what it had.
async fn keys_loop(
    state: Arc<OriginState>,
    keys: OriginKeys,
    import: Option<KeyRing>,
    error: KeysError,
    stop: watch::Receiver<bool>,
) {
    let stop = stopped(stop);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(KEYS_POLL_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let actor = Actor {
        id: format!("origin-node-{}", state.node.id()),
        reason: Some(match import {
            Some(_) => "the origin's signing keys, imported from the key file".into(),
            None => "the origin's first signing key".into(),
        }),
    };
    // The last failure and how many times in a row it was seen.
    let mut failing: Option<(String, u32)> = None;
    // Listed in /metrics from the start, so an alert on it can be written
    // before it ever fires.
    metrics::counter!("tollgate_signing_key_load_failures_total").increment(0);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        let loaded = match keys.load(&*state) {
            Ok(KeysLoad::NotYet)
                if state.node.metrics().current_leader == Some(state.node.id()) =>
            {
                keys.initialize(&*state, &actor, import.as_ref(), state.clock.now())
                    .await
            }
            other => other,
        };
        match loaded {
            Ok(KeysLoad::Loaded {
                revision,
                active,
                keys: count,
            }) => {
                failing = None;
                if let Ok(mut error) = error.lock() {
                    *error = None;
                }
                tracing::info!(%active, keys = count, revision, "Loaded the origin's signing keys.");
            }
            Ok(KeysLoad::NotYet | KeysLoad::Unchanged) => failing = None,
            Err(problem) => {
                metrics::counter!("tollgate_signing_key_load_failures_total").increment(1);
                // A leader change under the first commit is the cluster's
                // business and passes: only a failure seen
                // KEYS_FAILURES_LOGGED_AFTER times in a row is logged, once.
                let seen = match failing.take() {
                    Some((detail, n)) if detail == problem.detail => n + 1,
                    _ => 1,
                };
                if let Ok(mut error) = error.lock() {
                    *error = Some(problem.detail.clone());
                }
                if seen == KEYS_FAILURES_LOGGED_AFTER {
                    tracing::error!(error = %problem.detail, "Cannot load the origin's signing keys; this node signs nothing new until it can.");
                }
                failing = Some((problem.detail, seen));
            }
        }
    }
}

/// On the leader, compacts change records older than the retention, a
/// bounded number at a time.
async fn compact_loop(
    state: Arc<OriginState>,
    retention: u64,
    interval: Duration,
    stop: watch::Receiver<bool>,
) {
    let stop = stopped(stop);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = &mut stop => return,
        }
        let node = &state.node;
        if node.metrics().current_leader != Some(node.id()) {
            continue;
        }
        let (Ok(head), Ok(floor)) = (state.head(), state.floor()) else {
            continue;
        };
        if head <= floor + retention {
            continue;
        }
        let through = (head - retention).min(floor + COMPACT_RECORDS_MAX);
        let command = OriginCommand {
            actor: "retention".into(),
            at: state.clock.now(),
            reason: Some(format!("keep the last {retention} change records")),
            op: Op::CompactChanges { through },
        };
        match node.write(command).await {
            Ok(outcome) => {
                tracing::info!(through, response = ?outcome.response, "Compacted the changefeed.")
            }
            Err(error) => tracing::warn!(%error, "Changefeed compaction failed; will retry."),
        }
    }
}
