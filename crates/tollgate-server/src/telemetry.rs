//! Prometheus metrics. One recorder per process (the `metrics` crate's
//! global), rendered at `/metrics` on every node's HTTP port: the origin's
//! REST port and a region node's operations port. Gauges carry the node's
//! cluster (`origin` or the region's name) and name as labels, so one
//! process running several nodes (`tollgate dev`) reports each.
//!
//! What an operator alerts on:
//! - `tollgate_region_staleness_seconds` (how long since the region heard
//!   from the origin) and `tollgate_region_lag_revisions`;
//! - `tollgate_feed_refused_total` (records that failed verification: an
//!   attack or a misconfigured key);
//! - `tollgate_raft_leader` = 0 (no leader), `tollgate_raft_term` climbing
//!   (elections);
//! - `tollgate_geo_reload_failures_total` (a replacement database refused);
//! - `tollgate_webhook_deliveries_total{outcome="failed"}`;
//! - `tollgate_checks_total` by reason, `tollgate_check_duration_seconds`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Check latency, from the request decoded to the decision made.
pub const CHECK_DURATION: &str = "tollgate_check_duration_seconds";
/// Checks answered, by reason code.
pub const CHECKS: &str = "tollgate_checks_total";

/// Buckets of the check latency histogram, in seconds: 10 µs to 1 s.
const CHECK_BUCKETS: [f64; 12] = [
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.1, 1.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Counters the operations guide (`deploy/OPERATIONS.md`) tells operators
/// to alert on that count rare events (a refused record, a failed reload,
/// a meter fault): registered at 0 when the recorder is installed, so each
/// is in `/metrics` from the first scrape, without labels until its first
/// event. An alert on its increase then has a series to watch, and an
/// alert naming a metric that does not exist is seen at once (the
/// `cli_docs` test holds every metric the docs name to `/metrics`).
/// Metrics a node sets at start, or that the first check records, need
/// no entry.
pub const COUNTERS_AT_ZERO: &[&str] = &[
    "tollgate_feed_refused_total",
    "tollgate_geo_reload_failures_total",
    "tollgate_meter_errors_total",
    "tollgate_meter_fenced_total",
    "tollgate_region_origin_key_rotations_total",
    "tollgate_requests_refused_total",
    "tollgate_tls_connections_refused_total",
    "tollgate_tls_handshakes_refused_total",
    "tollgate_tls_reloads_total",
    "tollgate_webhook_deliveries_total",
    "tollgate_check_port_refused_total",
    "tollgate_signing_key_load_failures_total",
    "tollgate_raft_peer_outages_total",
    "tollgate_raft_reconnects_total",
    "tollgate_portal_csp_reports_total",
    "tollgate_portal_sign_ins_total",
];

/// Installs the process's recorder (once); `None` when another recorder
/// was installed first (an embedding application's), which then receives
/// every metric instead.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(CHECK_DURATION.into()), &CHECK_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    for name in COUNTERS_AT_ZERO {
                        metrics::counter!(*name).increment(0);
                    }
                    for kind in tollgate_raft::quiet::FAILURE_KINDS {
                        metrics::counter!("tollgate_raft_rpc_failures_total", "kind" => kind)
                            .increment(0);
                    }
                    Some(handle)
                }
                Err(_) => {
                    tracing::warn!("Another metrics recorder is installed; /metrics stays empty.");
                    None
                }
            }
        })
        .as_ref()
}

/// The registry in the Prometheus text format.
pub fn render() -> String {
    match install() {
        Some(handle) => {
            handle.run_upkeep();
            handle.render()
        }
        None => String::new(),
    }
}

/// A Raft member's view of its cluster, as gauges.
pub fn record_raft<N: tollgate_raft::StateMachineLogic>(
    cluster: &str,
    node: &str,
    raft: &tollgate_raft::Node<N>,
) {
    let m = raft.metrics();
    let labels = [("cluster", cluster.to_string()), ("node", node.to_string())];
    metrics::gauge!("tollgate_raft_term", &labels).set(m.current_term as f64);
    metrics::gauge!("tollgate_raft_leader", &labels)
        .set(m.current_leader.map_or(0.0, |l| l as f64));
    metrics::gauge!("tollgate_raft_is_leader", &labels)
        .set(f64::from(u8::from(m.current_leader == Some(m.id))));
    metrics::gauge!("tollgate_raft_last_log_index", &labels)
        .set(m.last_log_index.unwrap_or(0) as f64);
    metrics::gauge!("tollgate_raft_applied_index", &labels)
        .set(m.last_applied.as_ref().map_or(0.0, |l| l.index as f64));
}

/// How often gauges are refreshed from a node's state.
pub const GAUGE_INTERVAL: Duration = Duration::from_secs(1);
