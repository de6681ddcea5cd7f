//! A region node: a member of a region's Raft group. Its leader follows
//! the origin's changefeed and proposes what it verified; every node
//! (leader, follower, learner) answers checks from its own applied state.

use crate::checker::Checker;
use crate::config::{RegionConfig, RegionListeners};
use crate::follow::{follow_origin, SyncStats};
use crate::meter::Meter;
use crate::ops::{OpsState, RegionStatus};
use crate::views::Views;
use crate::watch::Watches;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tollgate_geo::GeoDatabases;
use tollgate_proto::check::v1 as pb;
use tollgate_raft::{Node, StateView};
use tollgate_region::RegionLogic;
use tollgate_server::shutdown::{stopped, within};
use tollgate_server::{telemetry, NodeError};
use tollgate_tls::{ClientAuth, Transport};

/// Largest check or usage request message (`check.proto`, `usage.proto`):
/// a bigger one is refused with RESOURCE_EXHAUSTED before it is decoded.
pub const CHECK_PORT_REQUEST_BYTES_MAX: usize = 64 * 1024;
/// Largest license request message: a token of at most 64 KiB, plus its
/// audience and device fingerprint (`license.proto`).
pub const LICENSE_REQUEST_BYTES_MAX: usize = 68 * 1024;
/// How often the check port's health is brought in line with readiness.
const READINESS_INTERVAL: Duration = Duration::from_millis(250);

/// A running region node.
pub struct RegionNode {
    node: Arc<Node<RegionLogic>>,
    view: StateView,
    stats: Arc<SyncStats>,
    ops: Arc<OpsState>,
    http_addr: Option<SocketAddr>,
    grpc_addr: SocketAddr,
    /// Shutdown, in order: `serve_stop` ends the check port and its
    /// streams, `meter_stop` the meter (after its final report), `stop`
    /// everything else; Raft last.
    serve_stop: watch::Sender<bool>,
    serve_task: JoinHandle<()>,
    meter_stop: watch::Sender<bool>,
    meter_task: JoinHandle<()>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    shutdown_deadline: Duration,
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
        let transport = config.raft.transport.clone();
        let tls_error = |e: tollgate_tls::TlsError| NodeError::Other(e.to_string());
        // Anyone may connect to the check and operations ports (the next
        // layer authorizes callers); a client certificate, if presented,
        // must be one of ours.
        // HTTP/1.1 too: the HTTP/JSON routes serve clients without HTTP/2.
        let check_tls = transport
            .server("check", ClientAuth::optional(), true)
            .map_err(tls_error)?;
        let node = Arc::new(Node::start(config.raft.clone(), RegionLogic, listeners.raft).await?);
        let view = node.view();
        let (stop, stop_rx) = watch::channel(false);
        let (serve_stop, serve_stop_rx) = watch::channel(false);
        let (meter_stop, meter_stop_rx) = watch::channel(false);
        // What checks read, kept current by one task: after every applied
        // entry it moves the views forward and wakes revision waiters.
        let views = Arc::new(
            Views::open(view.clone(), config.account_views_cached_max)
                .map_err(|e| NodeError::Other(format!("reading the applied state: {e}")))?
                .gated_by(node.serving()),
        );
        let applied_rx = views.applied();
        let mut tasks = Vec::new();
        if let Transport::Tls(tls) = &transport {
            tasks.push(
                tls.spawn_reloader(config.tls_reload_interval, stop_rx.clone(), {
                    let clock = config.clock.clone();
                    move || clock.now_secs()
                }),
            );
        }
        let mut metrics = node.raft().metrics();
        let refresher = views.clone();
        let watcher_stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let stop = stopped(watcher_stop);
            tokio::pin!(stop);
            // Raft's metrics change on heartbeats and elections too; only a
            // newly applied entry can change what checks read.
            let mut applied_index = None;
            loop {
                tokio::select! {
                    changed = metrics.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        let index = metrics.borrow_and_update().last_applied.map(|l| l.index);
                        if index == applied_index {
                            continue;
                        }
                        applied_index = index;
                        let views = refresher.clone();
                        // Sled reads (and, when the catalog changed, its
                        // rebuild) stay off the runtime's workers.
                        let covers = index.unwrap_or(0);
                        match tollgate_tls::net::spawn_blocking(move || views.refresh_at(covers)).await {
                            Ok(Ok(())) => {}
                            Ok(Err(error)) => {
                                // Try again at the next change of any kind.
                                applied_index = None;
                                tracing::error!(%error, "Could not bring the check views up to the applied state.");
                            }
                            Err(error) => {
                                applied_index = None;
                                tracing::error!(%error, "The check views' refresh panicked.");
                            }
                        }
                    }
                    _ = &mut stop => return,
                }
            }
        }));

        let stats = Arc::new(SyncStats::default());
        let meter = Arc::new(Meter::new(node.clone(), config.meter, config.clock.clone()));
        let meter_task = tokio::spawn(meter.clone().run(meter_stop_rx));
        // Before any metric handle is taken (the location counts keep theirs).
        telemetry::install();
        let locations = Arc::new(tollgate_geo::LocationCounts::default());
        let ops = Arc::new(OpsState {
            meter: meter.clone(),
            node: node.clone(),
            name: config.name.clone(),
            region: config.region.clone(),
            geo: geo.clone(),
            locations: locations.clone(),
            geo_required: config.geo_required,
            ready_lag_revisions_max: config.ready_lag_revisions_max,
            stats: stats.clone(),
            views: views.clone(),
            draining: std::sync::atomic::AtomicBool::new(false),
            clock: config.clock.clone(),
        });
        // Every node's Raft `Status` carries its own facts, for the
        // leader's region report (weakly held: the node holds this).
        let facts = Arc::downgrade(&ops);
        node.set_role_status(move || match facts.upgrade() {
            Some(ops) => serde_json::to_vec(&crate::report::member_facts(&ops.status()))
                .expect("plain values serialise"),
            None => Vec::new(),
        });
        let gauges = ops.clone();
        let gauge_stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let stop = stopped(gauge_stop);
            tokio::pin!(stop);
            let mut tick = tokio::time::interval(telemetry::GAUGE_INTERVAL);
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
                // Bounded like every port: a flood of idle connections must
                // not make /healthz time out (a liveness probe would then
                // restart a healthy node).
                let app = crate::ops::router(ops.clone()).layer(
                    config
                        .limits
                        .requests("ops", false)
                        .layer(crate::ops::http_refusal),
                );
                let http_stop = stopped(stop_rx.clone());
                let port = config.limits.port("ops");
                let incoming = tollgate_tls::listen_with(
                    listener,
                    &transport,
                    ClientAuth::optional(),
                    port.clone(),
                    true,
                    stop_rx.clone(),
                )
                .map_err(tls_error)?;
                tasks.push(tokio::spawn(tollgate_tls::http::serve_http(
                    incoming, app, port, http_stop,
                )));
                Some(addr)
            }
        };

        if config.credentials == crate::credentials::CredentialMode::Off {
            tracing::warn!(
                "Application credentials are off ([checks] credentials = \"off\"): \
                 anyone who reaches the check port may check, watch, report usage and take seats."
            );
        }
        // Each caller's rate is limited by its credential (by its IP address
        // on a node with credentials off, for a call without one), once the
        // credential is verified: a caller cannot spend another's budget.
        let gate = crate::credentials::Gate {
            mode: config.credentials,
            rate: config.limits.rate_limiter(),
        };
        let licenses = crate::license_service::RegionLicenses::new(
            view.clone(),
            views.clone(),
            gate.clone(),
            config.origin_keys.clone(),
            &config.region,
            config.license_issuer.clone(),
            config.clock.clone(),
        )?;
        let checker = Arc::new(Checker {
            meter_config: config.meter,
            node: node.clone(),
            meter,
            view: view.clone(),
            name: config.name.clone(),
            geo,
            locations,
            trust_proxy: config.trust_proxy_location,
            wait_max: config.revision_wait_max,
            watches: Watches {
                view: view.clone(),
                clock: config.clock.clone(),
                applied: applied_rx.clone(),
                heartbeat: config.watch_heartbeat,
                slots: Arc::new(tokio::sync::Semaphore::new(config.watchers_max)),
                slots_max: config.watchers_max,
                stop: serve_stop_rx.clone(),
                buffer: config.limits.watch_buffer,
                send_timeout: config.limits.request_timeout,
            },
            views,
            gate,
            clock: config.clock.clone(),
        });
        let check_port = tollgate_server::grpc::GrpcPort::new("check", &config.limits);
        let router = tollgate_server::grpc::server_for(&check_port)
            .accept_http1(true)
            .add_routes(tonic::service::Routes::from(crate::http_api::router(
                checker.clone(),
            )))
            .add_service(
                pb::check_service_server::CheckServiceServer::from_arc(checker.clone())
                    .max_decoding_message_size(CHECK_PORT_REQUEST_BYTES_MAX),
            )
            .add_service(
                tollgate_proto::usage::v1::usage_server::UsageServer::new(
                    crate::usage_service::UsageService { checker },
                )
                .max_decoding_message_size(CHECK_PORT_REQUEST_BYTES_MAX),
            )
            .add_service(
                tollgate_proto::license::v1::licenses_server::LicensesServer::new(licenses)
                    .max_decoding_message_size(LICENSE_REQUEST_BYTES_MAX),
            );
        let (router, health) = tollgate_server::grpc::with_standard_services(
            router,
            &[
                "tollgate.check.v1.CheckService",
                "tollgate.usage.v1.Usage",
                "tollgate.license.v1.Licenses",
            ],
        )
        .await?;
        let serve_task = tollgate_server::grpc::serve_on_threads(
            router,
            listeners.grpc,
            check_tls,
            &check_port,
            config.check_threads,
            serve_stop_rx,
            "the check service",
        )?;
        // The check port's health follows the node's readiness (`/readyz`):
        // NOT_SERVING until it is a member, has heard from the origin, is
        // within the lag bound, has caught up after an unclean stop and has
        // its geo database.
        let readiness = ops.clone();
        tasks.push(health.follow(READINESS_INTERVAL, stop_rx.clone(), move || {
            readiness.status().ready
        }));

        tasks.push(tokio::spawn(crate::quota_agent::run(
            node.clone(),
            crate::quota_agent::QuotaAgentConfig {
                region: config.region.clone(),
                origin: config.origin_feed.clone(),
                transport: config.raft.transport.clone(),
                lease_interval: config.quota_lease_interval,
                sync_interval: config.quota_sync_interval,
                slice_units_max: config.slice_units_max,
                slice_idle: config.slice_idle,
                clock: config.clock.clone(),
            },
            stop_rx.clone(),
        )));
        if let Some(interval) = config.report_interval {
            tasks.push(tokio::spawn(crate::report::run(
                node.clone(),
                ops.clone(),
                crate::report::ReporterConfig {
                    region: config.region.clone(),
                    origin: config.origin_feed.clone(),
                    transport: config.raft.transport.clone(),
                    interval,
                },
                stop_rx.clone(),
            )));
        }
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
            serve_stop,
            serve_task,
            meter_stop,
            meter_task,
            stop,
            tasks,
            shutdown_deadline: config.limits.shutdown_deadline,
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

    /// The meter's fault switches: tests fail its reads and writes on
    /// command to prove an error there is an UNAVAILABLE answer that loses
    /// and doubles nothing.
    pub fn meter_faults(&self) -> Arc<crate::meter::MeterFaults> {
        self.ops.meter.faults()
    }

    /// What this node's origin sync has done while it led.
    pub fn sync_stats(&self) -> &SyncStats {
        &self.stats
    }

    /// The origin revision this node has applied, as its checks see it:
    /// a check asked after this returns is answered at this revision or a
    /// later one.
    pub fn applied_revision(&self) -> u64 {
        self.ops.views.revision()
    }

    /// What this node serves, as a data set: compare it with the origin's
    /// (`OriginNode::served_dataset`) to prove a region converged.
    pub fn served_dataset(&self) -> Result<tollgate_model::Dataset, NodeError> {
        tollgate_server::served::served_dataset(&self.view)
    }

    /// Stops abruptly, as a killed process would: no draining, no flush
    /// beyond what Raft already made durable.
    pub async fn crash(self) {
        for task in self
            .tasks
            .iter()
            .chain([&self.serve_task, &self.meter_task])
        {
            task.abort();
        }
        self.stop.send_replace(true);
        self.serve_stop.send_replace(true);
        match Arc::try_unwrap(self.node) {
            Ok(node) => node.crash().await,
            Err(node) => {
                let _ = node.raft().shutdown().await;
            }
        }
    }

    /// Stops in order, within `[limits] shutdown_deadline_ms` as a whole:
    /// says it is not ready, stops accepting checks and drains those in
    /// flight (Watch streams end, so watchers reconnect elsewhere), makes
    /// the meter report what they consumed and hand its chunks back, stops
    /// following the origin and the rest, and stops Raft last. A phase
    /// that overruns is logged and the next one starts.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let started = std::time::Instant::now();
        let deadline = started + self.shutdown_deadline;
        tracing::info!(node_id = self.node.id(), deadline = ?self.shutdown_deadline, "Region node shutting down.");
        self.ops
            .draining
            .store(true, std::sync::atomic::Ordering::Relaxed);
        // Each send fails only when every receiver is gone: that phase's
        // tasks already ended.
        let _ended = self.serve_stop.send(true);
        within(deadline, "draining the check port", self.serve_task).await;
        let _ended = self.meter_stop.send(true);
        within(deadline, "the meter's final report", self.meter_task).await;
        let _ended = self.stop.send(true);
        for task in self.tasks {
            within(deadline, "stopping a region task", task).await;
        }
        tracing::info!(elapsed = ?started.elapsed(), "Region node stopped serving; stopping Raft.");
        match Arc::try_unwrap(self.node) {
            Ok(node) => node.shutdown().await?,
            Err(node) => node
                .shutdown_raft()
                .await
                .map_err(|e| NodeError::Other(format!("raft shutdown: {e}")))?,
        }
        Ok(())
    }
}
