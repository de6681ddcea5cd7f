//! A region node's operations endpoints over HTTP: `/healthz` (liveness),
//! `/readyz` (readiness: 503 with the reasons until the node is ready) and
//! `/v1/status` (everything an operator asks first, as JSON).

use crate::follow::SyncStats;
use crate::meter::{Meter, MeterStats};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tollgate_geo::{GeoDatabases, GeoHealth, LocationCounts, LocationShare};
use tollgate_raft::Node;
use tollgate_region::{RegionLogic, ORIGIN_HEAD};
use tollgate_server::served::read_u64;

/// What the origin sync has done on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SyncCounts {
    pub refused: u64,
    pub snapshots_installed: u64,
    pub disconnects: u64,
}

/// A region node's state, for operators.
#[derive(Debug, Clone, Serialize)]
pub struct RegionStatus {
    pub node_id: u64,
    pub name: String,
    /// leader, follower, learner, candidate or shutdown.
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    /// The origin revision this node has applied.
    /// The node stopped uncleanly and has not yet caught up with the
    /// region's leader (`tollgate_raft::recovery`): it answers no check,
    /// and `applied_revision` is what its disk kept, possibly below what
    /// it answered before the stop.
    pub recovering: bool,
    pub applied_revision: u64,
    /// The origin's head as the region last heard it.
    pub origin_head_revision: u64,
    pub lag_revisions: u64,
    /// When the region last heard from the origin (Unix seconds).
    pub last_origin_contact: Option<i64>,
    pub staleness_seconds: Option<u64>,
    /// The geo databases in service: type, build date, size, last refusal.
    pub geo: Option<GeoHealth>,
    /// Checks since start that came with an IP address to resolve, and the
    /// share of them whose location came out unknown (no record, no
    /// database, a failed lookup). Checks without an address, or with a
    /// location from a trusted proxy, are not counted.
    pub geo_checks: LocationShare,
    pub sync: SyncCounts,
    /// This node's metering: what it consumed and has not seen applied,
    /// and the chunks it holds.
    pub metering: MeterStats,
    /// Accounts whose views this node holds in memory for checks (known
    /// and unknown ids; at most `account_views_cached_max`).
    pub account_views_cached: usize,
    /// TLS on this node's ports and links, or `insecure_plaintext`.
    pub tls: tollgate_tls::TlsStatus,
    pub ready: bool,
    /// Why the node is not ready (empty when ready).
    pub not_ready: Vec<String>,
}

/// What the endpoints read.
pub(crate) struct OpsState {
    pub meter: Arc<Meter>,
    pub node: Arc<Node<RegionLogic>>,
    pub name: String,
    /// The region's name, the `cluster` label of its gauges.
    pub region: String,
    pub geo: Option<Arc<GeoDatabases>>,
    pub locations: Arc<LocationCounts>,
    pub geo_required: bool,
    pub ready_lag_revisions_max: u64,
    pub stats: Arc<SyncStats>,
    pub views: Arc<crate::views::Views>,
    /// Set when shutdown begins: the node says it is not ready, so load
    /// balancers and the SDK's health checks move on while it drains.
    pub draining: std::sync::atomic::AtomicBool,
    pub clock: tollgate_clock::Clock,
}

impl OpsState {
    /// This node's Raft and origin-sync gauges, from its current status.
    pub(crate) fn record_gauges(&self) {
        tollgate_server::telemetry::record_raft(&self.region, &self.name, &self.node);
        let status = self.status();
        let labels = [
            ("cluster", self.region.clone()),
            ("node", self.name.clone()),
        ];
        metrics::gauge!("tollgate_region_applied_revision", &labels)
            .set(status.applied_revision as f64);
        metrics::gauge!("tollgate_region_origin_head_revision", &labels)
            .set(status.origin_head_revision as f64);
        metrics::gauge!("tollgate_region_lag_revisions", &labels).set(status.lag_revisions as f64);
        // Never heard from the origin: as stale as can be.
        metrics::gauge!("tollgate_region_staleness_seconds", &labels)
            .set(status.staleness_seconds.map_or(f64::INFINITY, |s| s as f64));
        metrics::gauge!("tollgate_region_ready", &labels).set(f64::from(u8::from(status.ready)));
        metrics::gauge!("tollgate_check_account_views", &labels)
            .set(status.account_views_cached as f64);
    }

    pub(crate) fn status(&self) -> RegionStatus {
        let view = self.node.view();
        let metrics = self.node.metrics();
        let read = |key: &[u8]| read_u64(&view, key).unwrap_or(0);
        // The revision and origin contact checks answer with (the views),
        // not sled's, which runs ahead of them while a refresh is under
        // way: a status must never report a revision that a check sent
        // after it would then answer below (the chaos checker's
        // revision_went_back caught exactly that after a heal).
        let applied = self.views.revision();
        let head = read(ORIGIN_HEAD).max(applied);
        let last_origin_contact = self.views.origin_contact().map(|c| c.0).filter(|c| *c > 0);
        let staleness_seconds =
            last_origin_contact.map(|c| self.clock.now().0.saturating_sub(c).max(0) as u64);
        let id = self.node.id();
        let membership = metrics.membership_config.membership();
        let joined = membership.nodes().any(|(n, _)| *n == id);
        let mut not_ready = Vec::new();
        if !joined {
            not_ready.push("not a member of the region's cluster".to_string());
        }
        if applied == 0 && last_origin_contact.is_none() {
            not_ready.push("has never heard from the origin".to_string());
        }
        if head - applied > self.ready_lag_revisions_max {
            not_ready.push(format!(
                "{} revisions behind the origin (at most {} when ready)",
                head - applied,
                self.ready_lag_revisions_max
            ));
        }
        let recovering = self.views.recovering();
        if recovering {
            not_ready.push(
                "stopped uncleanly and has not caught up with the region's leader".to_string(),
            );
        }
        if self.geo.is_none() && self.geo_required {
            not_ready.push("no geo database is loaded".to_string());
        }
        if self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            not_ready.push("shutting down".to_string());
        }
        let role = format!("{:?}", metrics.state).to_lowercase();
        RegionStatus {
            node_id: id,
            name: self.name.clone(),
            role,
            term: metrics.current_term,
            leader: metrics.current_leader,
            recovering,
            applied_revision: applied,
            origin_head_revision: head,
            lag_revisions: head - applied,
            last_origin_contact,
            staleness_seconds,
            geo: self.geo.as_ref().map(|g| g.health()),
            geo_checks: self.locations.share(),
            tls: self.node.transport().status(self.clock.now_secs()),
            sync: SyncCounts {
                refused: self.stats.refused.load(Ordering::Relaxed),
                snapshots_installed: self.stats.snapshots_installed.load(Ordering::Relaxed),
                disconnects: self.stats.disconnects.load(Ordering::Relaxed),
            },
            metering: self.meter.stats(),
            account_views_cached: self.views.cached_accounts(),
            ready: not_ready.is_empty(),
            not_ready,
        }
    }
}

pub(crate) fn router(state: Arc<OpsState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v1/status", get(status))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

/// Prometheus text: this process's registry, with this node's gauges
/// refreshed first.
async fn metrics_text(State(state): State<Arc<OpsState>>) -> impl IntoResponse {
    state.record_gauges();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        tollgate_server::telemetry::render(),
    )
}

/// The operations port's answer to a refused request: problem+json with a
/// stable code (`OVERLOADED`, `TIMEOUT`: 503; `RATE_LIMITED`: 429) and
/// `Retry-After`.
pub(crate) fn http_refusal(
    refused: tollgate_server::limits::Refused,
    _wire: tollgate_server::limits::Wire,
) -> axum::response::Response {
    tollgate_server::limits::problem_refusal(refused).map(axum::body::Body::new)
}

async fn healthz(State(state): State<Arc<OpsState>>) -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok", "node_id": state.node.id(), "name": state.name}))
}

async fn readyz(State(state): State<Arc<OpsState>>) -> impl IntoResponse {
    let status = state.status();
    let code = if status.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(serde_json::json!({"ready": status.ready, "not_ready": status.not_ready})),
    )
}

async fn status(State(state): State<Arc<OpsState>>) -> impl IntoResponse {
    Json(state.status())
}
