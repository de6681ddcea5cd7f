//! On a region's leader: tell the origin how the region is (`ReportRegion`):
//! each member as the leader learns it from the member's own `Status` on the
//! Raft port (unreachable ones named with the error), and who holds the
//! region's floating seats. Sent on taking office, whenever the content
//! changes (clock readings and revisions aside:
//! `RegionReport::without_times`), and at least every `report_interval`
//! as a heartbeat, which carries the current revisions. Every node answers `Status` with its own facts
//! ([`member_facts`], set up by `node`).

use crate::ops::{OpsState, RegionStatus};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tollgate_engine::SeatLease;
use tollgate_model::region_report::{
    GeoDatabaseBuild, MemberFacts, MemberReport, MemberRole, RegionReport, SeatHolder, SeatHolders,
    REPORT_ERROR_LEN_MAX, REPORT_GEO_TEXT_LEN_MAX, REPORT_SEAT_ENTITLEMENTS_MAX,
    REPORT_SEAT_HOLDERS_MAX,
};
use tollgate_model::{Entitlement, EntitlementId, UnixSeconds};
use tollgate_proto::origin::v1 as pb;
use tollgate_proto::origin::v1::quota_client::QuotaClient;
use tollgate_raft::{Node, StateView};
use tollgate_region::RegionLogic;

/// How long the leader waits for one member's `Status`.
pub const MEMBER_STATUS_TIMEOUT: Duration = Duration::from_secs(1);
/// How often the leader looks for a change to report (at most; a shorter
/// `report_interval` looks that often).
const LOOK_INTERVAL_MAX: Duration = Duration::from_secs(1);
/// The prefix of the region's lease lists (`seats::leases_key`).
const LEASES_PREFIX: &str = "region/leases/";
/// Most lease lists read for one report: entitlements whose leases all
/// ran out are skipped, so a few more than are listed.
const LEASE_LISTS_READ_MAX: usize = 4 * REPORT_SEAT_ENTITLEMENTS_MAX;

/// What a failed round was: counted in `tollgate_region_reports_total`.
const REPORTS: &str = "tollgate_region_reports_total";

#[derive(Debug, Clone)]
pub struct ReporterConfig {
    pub region: String,
    pub transport: tollgate_tls::Transport,
    /// The origin's quota service (its changefeed endpoint).
    pub origin: String,
    /// A heartbeat at least this often.
    pub interval: Duration,
}

fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// What this node says of itself in `Status` (`role_status`): the origin
/// revision applied, origin contact and staleness, geo database builds.
pub(crate) fn member_facts(status: &RegionStatus) -> MemberFacts {
    let mut geo = Vec::new();
    if let Some(health) = &status.geo {
        for (slot, s) in [
            ("location", Some(&health.location)),
            ("anonymous", health.anonymous.as_ref()),
        ] {
            if let Some(s) = s {
                geo.push(GeoDatabaseBuild {
                    slot: slot.to_string(),
                    database_type: cut(&s.database_type, REPORT_GEO_TEXT_LEN_MAX),
                    build_epoch: s.build_epoch_seconds,
                });
            }
        }
    }
    MemberFacts {
        applied_revision: status.applied_revision,
        origin_head_revision: status.origin_head_revision,
        last_origin_contact: status.last_origin_contact.map(UnixSeconds),
        staleness_seconds: status.staleness_seconds,
        geo,
    }
}

/// The region's live floating-seat leases, by entitlement id then subject,
/// within the report's limits (`seats_truncated` past them).
fn seat_holders(view: &StateView, at: UnixSeconds) -> Result<(Vec<SeatHolders>, bool), String> {
    let lists = view
        .scan(LEASES_PREFIX.as_bytes(), None, LEASE_LISTS_READ_MAX + 1)
        .map_err(|e| format!("reading the seat leases: {e}"))?;
    let mut truncated = lists.len() > LEASE_LISTS_READ_MAX;
    let mut out = Vec::new();
    let mut holders_total = 0;
    for (key, bytes) in lists.into_iter().take(LEASE_LISTS_READ_MAX) {
        let name = String::from_utf8_lossy(&key);
        let entitlement = name
            .strip_prefix(LEASES_PREFIX)
            .and_then(|id| EntitlementId::new(id).ok())
            .ok_or_else(|| format!("{name} is not an entitlement's lease list"))?;
        let mut leases: Vec<SeatLease> = serde_json::from_slice(&bytes)
            .map_err(|e| format!("the leases of {entitlement} do not decode: {e}"))?;
        leases.retain(|l| l.expires_at > at);
        if leases.is_empty() {
            continue;
        }
        let ent_bytes = view
            .get(&tollgate_origin::keys::entitlement(&entitlement))
            .map_err(|e| format!("reading entitlement {entitlement}: {e}"))?
            .ok_or_else(|| format!("leases of entitlement {entitlement}, which is unknown here"))?;
        let ent: Entitlement = serde_json::from_slice(&ent_bytes)
            .map_err(|e| format!("entitlement {entitlement} does not decode: {e}"))?;
        leases.sort_by(|a, b| a.holder.cmp(&b.holder));
        let room = REPORT_SEAT_HOLDERS_MAX - holders_total;
        if out.len() == REPORT_SEAT_ENTITLEMENTS_MAX || room == 0 {
            truncated = true;
            break;
        }
        if leases.len() > room {
            truncated = true;
            leases.truncate(room);
        }
        holders_total += leases.len();
        out.push(SeatHolders {
            entitlement,
            account: ent.account,
            holders: leases
                .into_iter()
                .map(|l| SeatHolder {
                    subject: l.holder,
                    acquired_at: l.acquired_at,
                    expires_at: l.expires_at,
                })
                .collect(),
        });
    }
    Ok((out, truncated))
}

/// One member as the leader learns it from the member's `Status`.
async fn member(
    node: &Node<RegionLogic>,
    ops: &OpsState,
    id: u64,
    addr: String,
    role: MemberRole,
) -> MemberReport {
    let unreachable = |error: String| MemberReport {
        node_id: id,
        addr: addr.clone(),
        role,
        reachable: false,
        error: Some(cut(&error, REPORT_ERROR_LEN_MAX)),
        facts: None,
    };
    let facts = if id == node.id() {
        member_facts(&ops.status())
    } else {
        let status = match node.peer_status(id, &addr, MEMBER_STATUS_TIMEOUT).await {
            Ok(status) => status,
            Err(error) => return unreachable(error.to_string()),
        };
        match serde_json::from_slice::<MemberFacts>(&status.role_status) {
            Ok(facts) => facts,
            // It answered, but not as a region node of this version does.
            Err(error) => {
                return MemberReport {
                    error: Some(cut(
                        &format!("its status carries no region facts: {error}"),
                        REPORT_ERROR_LEN_MAX,
                    )),
                    reachable: true,
                    ..unreachable(String::new())
                }
            }
        }
    };
    MemberReport {
        node_id: id,
        addr,
        role,
        reachable: true,
        error: None,
        facts: Some(facts),
    }
}

/// The region's report as this node (the leader) sees it now.
async fn build(
    node: &Node<RegionLogic>,
    ops: &OpsState,
    region: &str,
) -> Result<RegionReport, String> {
    let metrics = node.metrics();
    let membership = metrics.membership_config.membership().clone();
    let leader = metrics.current_leader;
    let mut members = Vec::new();
    let voters: Vec<u64> = membership.voter_ids().collect();
    let learners: Vec<u64> = membership.learner_ids().collect();
    for (id, learner) in voters
        .into_iter()
        .map(|id| (id, false))
        .chain(learners.into_iter().map(|id| (id, true)))
    {
        let addr = membership
            .get_node(&id)
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        let role = match (Some(id) == leader, learner) {
            (true, _) => MemberRole::Leader,
            (false, false) => MemberRole::Follower,
            (false, true) => MemberRole::Learner,
        };
        members.push(member(node, ops, id, addr, role).await);
    }
    let (seats, seats_truncated) = seat_holders(&node.view(), ops.clock.now())?;
    let report = RegionReport {
        region: region.to_string(),
        node_id: node.id(),
        leader_id: leader.unwrap_or(0),
        term: metrics.current_term,
        members,
        seats,
        seats_truncated,
    };
    report
        .validate()
        .map_err(|e| format!("the report is out of bounds: {e}"))?;
    Ok(report)
}

/// Runs while `stop` is false; reports only while this node leads.
pub(crate) async fn run(
    node: Arc<Node<RegionLogic>>,
    ops: Arc<OpsState>,
    config: ReporterConfig,
    mut stop: watch::Receiver<bool>,
) {
    let look = config.interval.min(LOOK_INTERVAL_MAX);
    let channel = match crate::quota_agent::origin_channel(&config.transport, &config.origin) {
        Ok(channel) => channel,
        Err(error) => {
            tracing::error!(%error, origin = %config.origin, "The origin's address is invalid; the region reports nothing.");
            return;
        }
    };
    let mut client = QuotaClient::new(channel);
    // What the origin acknowledged last in this term of office (clock
    // readings cleared), and when.
    let mut sent: Option<(u64, RegionReport, Instant)> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(look) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let metrics = node.metrics();
        if metrics.current_leader != Some(node.id()) {
            sent = None;
            continue;
        }
        let report = match build(&node, &ops, &config.region).await {
            Ok(report) => report,
            Err(error) => {
                metrics::counter!(REPORTS, "outcome" => "unreadable").increment(1);
                tracing::warn!(%error, "Could not put the region's report together; retrying.");
                continue;
            }
        };
        let content = report.without_times();
        let due = match &sent {
            None => true,
            Some((term, last, at)) => {
                *term != report.term || *last != content || at.elapsed() >= config.interval
            }
        };
        if !due {
            continue;
        }
        match client
            .report_region(pb::RegionReportRequest::from(&report))
            .await
        {
            Ok(_) => {
                metrics::counter!(REPORTS, "outcome" => "sent").increment(1);
                tracing::debug!(region = %config.region, "Reported the region to the origin.");
                sent = Some((report.term, content, Instant::now()));
            }
            Err(status) => {
                metrics::counter!(REPORTS, "outcome" => "failed").increment(1);
                tracing::warn!(%status, "Reporting the region to the origin failed; retrying.");
            }
        }
    }
}
