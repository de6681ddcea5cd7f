//! On a region's leader: lease slices of hard caps from the origin when the
//! region runs short, report the region's usage totals to the origin, and
//! hand back what is left of periods that are over. Every result goes
//! through the region's log, so a new leader carries on where the old one
//! stopped (the totals it reports are cumulative, so repeating a report is
//! harmless).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tollgate_model::EntitlementId;
use tollgate_proto::convert::{CounterTotals, QuotaLease, QuotaReport, SeatLease, SeatRelease};
use tollgate_proto::origin::v1 as pb;
use tollgate_proto::origin::v1::quota_client::QuotaClient;
use tollgate_raft::Node;
use tollgate_region::seats::{SeatSlice, SeatWanted, SEAT_SLICE_PREFIX, SEAT_WANTED_PREFIX};
use tollgate_region::usage::{
    parse_counter_key, CounterState, Wanted, COUNTER_PREFIX, WANTED_PREFIX,
};
use tollgate_region::{Counter, RegionCommand, RegionLogic};
use tollgate_server::served::scan_all;
use tollgate_tls::{Allow, Expect};

/// How the agent paces itself.
#[derive(Debug, Clone)]
pub struct QuotaAgentConfig {
    /// Stamps on leases and usage days.
    pub clock: tollgate_clock::Clock,
    /// The region's name at the origin.
    pub region: String,
    /// How the link to the origin is carried (the origin must prove it is
    /// an origin node).
    pub transport: tollgate_tls::Transport,
    /// The origin's quota service (its changefeed endpoint).
    pub origin: String,
    /// How often wanted counters are looked at.
    pub lease_interval: Duration,
    /// How often usage totals are reported.
    pub sync_interval: Duration,
    /// Most units leased at once.
    pub slice_units_max: u64,
    /// A counter unused this long hands its unused slice back.
    pub slice_idle: Duration,
}

/// What the agent could not read or decode, by kind: a round that cannot
/// read leases and reports nothing (checks that need more are denied), and
/// the next round tries again.
const AGENT_ERRORS: &str = "tollgate_quota_agent_errors_total";

/// The pairs under `prefix`; none when the read fails (logged, counted).
fn scanned(view: &tollgate_raft::StateView, prefix: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    match scan_all(view, prefix) {
        Ok(pairs) => pairs,
        Err(error) => {
            metrics::counter!(AGENT_ERRORS, "kind" => "read").increment(1);
            tracing::warn!(%error, prefix, "Reading the region's usage state failed; retrying next round.");
            Vec::new()
        }
    }
}

/// `bytes` under `key` decoded; `None` (logged, counted) when they are not
/// what the key holds.
fn decoded<T: serde::de::DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Option<T> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Some(value),
        Err(error) => {
            refused("value", key, &error.to_string());
            None
        }
    }
}

fn refused(what: &'static str, key: &[u8], error: &str) {
    metrics::counter!(AGENT_ERRORS, "kind" => "decode").increment(1);
    tracing::warn!(key = %String::from_utf8_lossy(key), what, error, "A stored quota record does not decode; skipped.");
}

/// HTTP/2 pings on the link to the origin, tighter than the transport's
/// default: a connection that a partition left half-open (no reset ever
/// arrives) is given up after `ORIGIN_KEEPALIVE_INTERVAL +
/// ORIGIN_KEEPALIVE_TIMEOUT` and dialled anew (the whole-system simulation
/// found leases and reports stalled long after a heal).
const ORIGIN_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3);
const ORIGIN_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The lazily connected channel the quota agent and the reporter use to
/// reach the origin's quota service.
pub(crate) fn origin_channel(
    transport: &tollgate_tls::Transport,
    origin: &str,
) -> Result<tonic::transport::Channel, tollgate_tls::TlsError> {
    let endpoint = transport
        .endpoint(origin)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(ORIGIN_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(ORIGIN_KEEPALIVE_TIMEOUT);
    Ok(transport.lazy_channel(&endpoint, Expect::Peers(vec![Allow::OriginNodes]), "quota"))
}

/// Runs while `stop` is false; acts only while this node leads.
pub(crate) async fn run(
    node: Arc<Node<RegionLogic>>,
    config: QuotaAgentConfig,
    mut stop: watch::Receiver<bool>,
) {
    let view = node.view();
    let mut client: Option<QuotaClient<tonic::transport::Channel>> = None;
    // What the origin has acknowledged, per counter: (consumed, released).
    let mut synced: HashMap<Counter, (u64, u64)> = HashMap::new();
    let mut asked: HashMap<Counter, Instant> = HashMap::new();
    let mut asked_seats: HashMap<EntitlementId, Instant> = HashMap::new();
    // When each counter last moved: (consumed, reserved) and since when.
    let mut last_activity: HashMap<Counter, ((u64, u64), Instant)> = HashMap::new();
    // Seats handed back that the origin acknowledged, per entitlement.
    let mut reported_seats: HashMap<EntitlementId, u64> = HashMap::new();
    let mut last_sync = Instant::now();
    let mut was_leader = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.lease_interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let leading = node.metrics().current_leader == Some(node.id());
        if !leading {
            was_leader = false;
            continue;
        }
        if !was_leader {
            // A new term of office: report everything once.
            synced.clear();
            reported_seats.clear();
            was_leader = true;
        }
        if client.is_none() {
            match origin_channel(&config.transport, &config.origin) {
                Ok(channel) => client = Some(QuotaClient::new(channel)),
                Err(error) => {
                    tracing::error!(%error, origin = %config.origin, "The origin's address is invalid.");
                    return;
                }
            }
        }
        let Some(quota) = client.as_mut() else {
            continue;
        };

        // Lease what nodes asked for.
        let wanted = scanned(&view, WANTED_PREFIX);
        asked.retain(|_, at| at.elapsed() < config.lease_interval * 5);
        for (key, bytes) in wanted {
            let Some(wanted) = decoded::<Wanted>(&key, &bytes) else {
                continue;
            };
            if asked
                .get(&wanted.counter)
                .is_some_and(|at| at.elapsed() < config.lease_interval * 5)
            {
                continue;
            }
            asked.insert(wanted.counter.clone(), Instant::now());
            let want = wanted
                .want
                .max((wanted.limit / 8).min(config.slice_units_max))
                .max(1);
            // `limit` is informational: the origin leases out of its own cap.
            let request = pb::LeaseRequest::from(QuotaLease {
                region: config.region.clone(),
                counter: wanted.counter.clone(),
                limit: wanted.limit,
                want,
            });
            match quota.lease(request).await {
                Ok(reply) => {
                    let command = RegionCommand::SliceGranted {
                        counter: wanted.counter.clone(),
                        granted_total: reply.into_inner().granted_total,
                    };
                    if let Err(error) = node.write(command).await {
                        tracing::warn!(%error, "Recording a leased slice failed; it is asked again.");
                    }
                }
                // Nothing left, or no hard cap by the origin's data (this
                // region's may be behind).
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    tracing::debug!(counter = %wanted.counter, status = %status.message(), "The origin has nothing to lease.");
                }
                Err(status) => {
                    tracing::warn!(%status, "Leasing from the origin failed; retrying.");
                }
            }
        }

        // Lease seats where a region node found none free.
        let wanted_seats = scanned(&view, SEAT_WANTED_PREFIX);
        asked_seats.retain(|_, at| at.elapsed() < config.lease_interval * 5);
        for (key, bytes) in wanted_seats {
            let Some(SeatWanted { entitlement, want }) = decoded(&key, &bytes) else {
                continue;
            };
            if asked_seats
                .get(&entitlement)
                .is_some_and(|at| at.elapsed() < config.lease_interval * 5)
            {
                continue;
            }
            asked_seats.insert(entitlement.clone(), Instant::now());
            let request = pb::LeaseSeatsRequest::from(SeatLease {
                region: config.region.clone(),
                entitlement: entitlement.clone(),
                want,
            });
            match quota.lease_seats(request).await {
                Ok(reply) => {
                    let command = RegionCommand::SeatSliceGranted {
                        entitlement: entitlement.clone(),
                        granted_total: reply.into_inner().granted_total,
                    };
                    match node.write(command).await {
                        // Answered: the next shortage may ask at once.
                        Ok(_) => {
                            asked_seats.remove(&entitlement);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "Recording leased seats failed; they are asked again.");
                        }
                    }
                }
                Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                    tracing::debug!(%entitlement, "Every seat is held by some region.");
                }
                Err(status) => tracing::warn!(%status, "Leasing seats failed; retrying."),
            }
        }

        if last_sync.elapsed() < config.sync_interval {
            continue;
        }
        last_sync = Instant::now();

        // Seats no live lease uses go back to the origin, for other regions.
        let slices = scanned(&view, SEAT_SLICE_PREFIX);
        let mut held_slices = HashSet::new();
        for (key, bytes) in slices {
            let Some(slice) = decoded::<SeatSlice>(&key, &bytes) else {
                continue;
            };
            let Some(entitlement) = std::str::from_utf8(&key)
                .ok()
                .and_then(|k| k.strip_prefix(SEAT_SLICE_PREFIX))
                .and_then(|id| EntitlementId::new(id).ok())
            else {
                refused("key", &key, "not an entitlement's seat slice");
                continue;
            };
            held_slices.insert(entitlement.clone());
            let mut released = slice.released;
            if slice.held() > 0 {
                let command = RegionCommand::ReleaseSeatSlice {
                    entitlement: entitlement.clone(),
                    at: config.clock.now(),
                };
                if let Ok(outcome) = node.write(command).await {
                    if let tollgate_region::RegionResponse::Released { units } = outcome.response {
                        released += units;
                    }
                }
            }
            if reported_seats.get(&entitlement) != Some(&released) && released > 0 {
                let request = pb::ReleaseSeatsRequest::from(SeatRelease {
                    region: config.region.clone(),
                    entitlement: entitlement.clone(),
                    released_total: released,
                });
                match quota.release_seats(request).await {
                    Ok(_) => {
                        reported_seats.insert(entitlement, released);
                    }
                    Err(status) => tracing::warn!(%status, "Handing seats back failed; retrying."),
                }
            }
        }
        let counters = scanned(&view, COUNTER_PREFIX);
        // Only entitlements and counters the region still has are
        // remembered: these maps would otherwise grow with every period.
        reported_seats.retain(|entitlement, _| held_slices.contains(entitlement));
        let today = config.clock.now();
        let mut entries = Vec::new();
        let mut present = HashSet::new();
        for (key, bytes) in counters {
            let Some(state) = decoded::<CounterState>(&key, &bytes) else {
                continue;
            };
            let Some(counter) = parse_counter_key(&key) else {
                refused("key", &key, "not a usage counter");
                continue;
            };
            present.insert(counter.clone());
            // A period that is over, or a counter nobody has used for
            // `slice_idle`: hand back what nobody drew, for other regions.
            let activity = (state.consumed, state.reserved);
            let idle = match last_activity.get(&counter) {
                Some((seen, since)) if *seen == activity => since.elapsed() >= config.slice_idle,
                _ => {
                    last_activity.insert(counter.clone(), (activity, Instant::now()));
                    false
                }
            };
            let over = counter.period != counter.period.current(today);
            if (over || (idle && state.reserved == 0))
                && state.slice > state.released + state.consumed + state.reserved
            {
                let release = RegionCommand::ReleaseSlice {
                    counter: counter.clone(),
                };
                if let Err(error) = node.write(release).await {
                    metrics::counter!(AGENT_ERRORS, "kind" => "log").increment(1);
                    tracing::warn!(%error, %counter, "Handing an unused slice back failed; retrying.");
                }
            }
            let totals = (state.consumed, state.released);
            if synced.get(&counter) != Some(&totals) {
                entries.push((counter, totals));
            }
        }
        synced.retain(|counter, _| present.contains(counter));
        last_activity.retain(|counter, _| present.contains(counter));
        for batch in entries.chunks(tollgate_origin::quota::SYNC_ENTRIES_MAX) {
            let request = pb::SyncRequest::from(QuotaReport {
                region: config.region.clone(),
                entries: batch
                    .iter()
                    .map(|(counter, (consumed, released))| CounterTotals {
                        counter: counter.clone(),
                        consumed: *consumed,
                        released: *released,
                    })
                    .collect(),
            });
            match quota.sync(request).await {
                Ok(_) => {
                    for (counter, totals) in batch {
                        synced.insert(counter.clone(), *totals);
                    }
                }
                Err(status) => {
                    tracing::warn!(%status, "Reporting usage to the origin failed; retrying.");
                    break;
                }
            }
        }
    }
}
