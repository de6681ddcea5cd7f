//! Answering checks from this node's applied state: the views at one
//! revision (`views`), the caller's geography, the live usage and seat state
//! of the asked feature only, the engine's decision, and metering when a
//! check consumes.

use crate::credentials::{Caller, Gate};
use crate::meter::{Meter, MeterConfig, MeterError, Take};
use crate::views::{Snapshot, Views};
use crate::watch::Watches;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tollgate_engine::{
    decide, AccountView, CheckRequest, Decision, Environment, Freshness, LiveState, Location,
    Reason, SeatLease,
};
use tollgate_geo::{GeoDatabases, LocationCounts};
use tollgate_model::{
    AccountId, EntitlementId, FeatureId, GeoFacts, PeriodKey, SeatMode, UsagePeriodTag, Verb,
};
use tollgate_raft::{Node, StateView};
use tollgate_region::{Counter, KeyVerdict, RegionLogic};
use tollgate_server::grpc::error_status;
use tonic::{Code, Status};

/// The longest `at_least_revision` wait any request gets, whatever its
/// deadline (`check.proto` states it).
pub const REVISION_WAIT_MAX: Duration = Duration::from_secs(30);

pub(crate) struct Checker {
    pub(crate) node: Arc<Node<RegionLogic>>,
    pub(crate) view: StateView,
    pub(crate) name: String,
    pub(crate) geo: Option<Arc<GeoDatabases>>,
    /// Checks with an address to resolve, and how many resolved to no
    /// location (`/v1/status` `geo_checks`).
    pub(crate) locations: Arc<LocationCounts>,
    pub(crate) trust_proxy: bool,
    /// The configured longest `at_least_revision` wait (at most
    /// [`REVISION_WAIT_MAX`]).
    pub(crate) wait_max: Duration,
    pub(crate) views: Arc<Views>,
    pub(crate) watches: Watches,
    pub(crate) meter: Arc<Meter>,
    pub(crate) meter_config: MeterConfig,
    /// Who may call, and how often.
    pub(crate) gate: Gate,
    /// Every reading of the time a check makes.
    pub(crate) clock: tollgate_clock::Clock,
}

impl Checker {
    /// Who is calling, from the request's credential (see `credentials`).
    pub(crate) fn caller<T>(&self, request: &tonic::Request<T>) -> Result<Caller, Status> {
        self.views.caller(&self.gate, request)
    }

    /// Waits until this node has applied `revision`, up to `budget` (the
    /// request's deadline, bounded by the configured maximum).
    pub(crate) async fn wait_for(
        &self,
        revision: u64,
        deadline: Option<Duration>,
    ) -> Result<(), Status> {
        let budget = wait_budget(self.wait_max, deadline);
        let mut applied = self.views.applied();
        let reached = tokio::time::timeout(budget, applied.wait_for(|r| *r >= revision))
            .await
            .is_ok_and(|r| r.is_ok());
        if reached {
            return Ok(());
        }
        let now_applied = *applied.borrow();
        Err(error_status(
            Code::DeadlineExceeded,
            "REVISION_NOT_APPLIED",
            format!("revision {revision} was not applied within {budget:?}; applied {now_applied}"),
        ))
    }

    fn geo_facts(&self, location: &Location) -> GeoFacts {
        match location {
            Location::Unknown => GeoFacts::unknown(),
            Location::Resolved(facts) if self.trust_proxy => facts.clone(),
            Location::Resolved(_) => GeoFacts::unknown(),
            Location::Ip(ip) => {
                let facts = match &self.geo {
                    Some(geo) => geo.resolve(*ip).unwrap_or_else(|error| {
                        tracing::warn!(%ip, %error, "Geo lookup failed; location unknown.");
                        GeoFacts::unknown()
                    }),
                    None => GeoFacts::unknown(),
                };
                self.locations.record(&facts);
                facts
            }
        }
    }

    /// The views of one account at the current revision.
    pub(crate) async fn account(
        &self,
        account: &AccountId,
    ) -> Result<(Snapshot, Option<Arc<AccountView>>), Status> {
        let (snapshot, mut views) = self.views.read(&[account]).await.map_err(|e| e.status())?;
        Ok((snapshot, views.pop().flatten()))
    }

    /// Answers every check of `requests` at one revision: each item is a
    /// decision, or the error that kept that item from being answered (its
    /// metering could not reach the region's log). An error for the whole
    /// call means the state could not be read.
    pub(crate) async fn answer(
        &self,
        caller: &Caller,
        requests: &[&CheckRequest],
    ) -> Result<(Snapshot, Vec<Result<Decision, Status>>), Status> {
        // An item for an account the credential does not cover is refused
        // before anything of that account is read.
        let allowed: Vec<Result<(), Status>> = requests
            .iter()
            .map(|r| {
                let verb = if r.check.consume > 0 {
                    Verb::ReportUsage
                } else {
                    Verb::Check
                };
                caller.account(verb, &r.check.account)
            })
            .collect();
        let mut accounts: Vec<&AccountId> = requests
            .iter()
            .zip(&allowed)
            .filter(|(_, ok)| ok.is_ok())
            .map(|(r, _)| &r.check.account)
            .collect();
        accounts.sort();
        accounts.dedup();
        let (snapshot, views) = self.views.read(&accounts).await.map_err(|e| e.status())?;
        let at = self.clock.now();
        // Together: a batch's consuming items wait for one usage report,
        // not one each; an item that fails fails alone.
        let answers =
            futures::future::join_all(requests.iter().zip(allowed).map(|(request, allowed)| {
                let (snapshot, accounts, views) = (&snapshot, &accounts, &views);
                async move {
                    allowed
                        .and_then(|()| caller.feature(&snapshot.catalog, &request.check.feature))?;
                    // `accounts` is sorted: at most 128 of them, found by halves.
                    let account = accounts
                        .binary_search(&&request.check.account)
                        .ok()
                        .and_then(|i| views[i].as_deref());
                    self.answer_one(request, snapshot, account, at).await
                }
            }))
            .await;
        Ok((snapshot, answers))
    }

    /// Decides one check and, when it is allowed and consumes, meters it:
    /// a hard cap out of this node's chunk (drawn through the log when
    /// short), anything else straight into the next usage report.
    async fn answer_one(
        &self,
        request: &CheckRequest,
        snapshot: &Snapshot,
        account: Option<&AccountView>,
        at: tollgate_model::UnixSeconds,
    ) -> Result<Decision, Status> {
        // Resolved once, for a re-decision after metering too.
        let geo = self.geo_facts(&request.location);
        let decide_with = |check: &tollgate_engine::Check, exhausted: Option<&Counter>| {
            let live = Live::load(&self.view, &self.meter, account, &check.feature, exhausted)?;
            let env = Environment {
                catalog: &snapshot.catalog,
                live: &live,
                freshness: Freshness {
                    applied_revision: snapshot.revision,
                    last_origin_contact: snapshot.origin_contact,
                },
                now: at,
            };
            let decision = decide(check, account, &geo, &env);
            // A usage counter that could not be read decides nothing.
            match live.error.into_inner() {
                Some(error) => Err(meter_status(error)),
                None => Ok(decision),
            }
        };
        let consume = request.check.consume;
        // A keyed consumption is answered by the log's verdict on its key,
        // ALLOW or DENY alike (see `usage` in tollgate-region): a retry whose
        // first attempt's report is still in flight elsewhere must not be
        // denied here while that report goes on to bill it.
        let key = request.idempotency_key.as_deref().filter(|_| consume > 0);
        let counter_of = |decision: &Decision| Counter {
            account: request.check.account.clone(),
            feature: request.check.feature.clone(),
            period: decision.metering.map_or(
                PeriodKey {
                    period: UsagePeriodTag::Lifetime,
                    index: 0,
                },
                |m| m.period,
            ),
        };
        let retried = |verdict: KeyVerdict, counter: Option<&Counter>| match verdict {
            // A retry of a counted check: answer, consume nothing.
            KeyVerdict::Counted => {
                let mut again = request.check.clone();
                again.consume = 0;
                decide_with(&again, None)
            }
            // A retry of a refused one: denied again, for the same reason.
            KeyVerdict::Refused(reason) => {
                let exhausted = counter.filter(|_| reason == Reason::UsageCapReached);
                let mut denied = decide_with(&request.check, exhausted)?;
                if denied.reason != reason {
                    denied.reason = reason;
                    denied.overage = false;
                    denied.remaining = None;
                }
                Ok(denied)
            }
        };
        if let Some(key) = key {
            if let Some(verdict) = self.meter.verdict(key).map_err(meter_status)? {
                return retried(verdict, None);
            }
        }
        // A denial of a keyed consumption is answered once the log holds it.
        let refuse = |denied: Decision| async {
            let Some(key) = key else {
                return Ok(denied);
            };
            match self
                .meter
                .refuse(counter_of(&denied), key.to_owned(), denied.reason)
                .await
                .map_err(meter_status)?
            {
                KeyVerdict::Refused(_) => Ok(denied),
                KeyVerdict::Counted => retried(KeyVerdict::Counted, None),
            }
        };
        let decision = decide_with(&request.check, None)?;
        if consume > 0 && !decision.reason.is_allowed() {
            return refuse(decision).await;
        }
        let Some(metering) = decision.metering.filter(|_| consume > 0) else {
            return Ok(decision);
        };
        let counter = counter_of(&decision);
        if self.meter.backed_up() {
            return Err(meter_status(MeterError::Backlog));
        }
        let from_chunk = match metering.limit {
            Some(limit) if metering.hard => {
                match self
                    .meter
                    .take(&counter, limit, consume)
                    .await
                    .map_err(meter_status)?
                {
                    Take::Taken => true,
                    // The region's share is gone: the engine says so.
                    Take::Exhausted => {
                        return refuse(decide_with(&request.check, Some(&counter))?).await
                    }
                }
            }
            _ => false,
        };
        // ALLOW only once the consumption is durable in the region's log.
        let verdict = self
            .meter
            .consume(
                counter,
                consume,
                request.idempotency_key.clone(),
                from_chunk,
            )
            .await
            .map_err(meter_status)?;
        match verdict {
            KeyVerdict::Counted => Ok(decision),
            // Refused first, elsewhere: nothing was counted.
            refused @ KeyVerdict::Refused(_) => retried(refused, Some(&counter_of(&decision))),
        }
    }
}

/// A metering error as a check's answer: UNAVAILABLE (the caller may try
/// another node) with the error's own code.
pub(crate) fn meter_status(error: MeterError) -> Status {
    error_status(Code::Unavailable, error.code(), error.to_string())
}

/// How long an `at_least_revision` wait may take: the request's deadline
/// less a margin (so the node's own answer reaches the client before its
/// deadline does), within the configured maximum.
fn wait_budget(configured: Duration, deadline: Option<Duration>) -> Duration {
    let ceiling = configured.min(REVISION_WAIT_MAX);
    match deadline {
        None => ceiling,
        Some(deadline) => {
            // A tenth, at most 250 ms: room for the answer to reach the
            // client on a loaded machine (50 ms was not, on two cores).
            let margin = (deadline / 10).min(Duration::from_millis(250));
            deadline.saturating_sub(margin).min(ceiling)
        }
    }
}

/// The usage and seat state a decision reads: the node's counters, and the
/// seat leases of the floating-seat entitlements that grant the asked
/// feature (no other entitlement's leases are read).
struct Live<'a> {
    meter: &'a Meter,
    leases: HashMap<EntitlementId, Vec<SeatLease>>,
    exhausted: Option<&'a Counter>,
    /// The first usage read that failed: the decision is then thrown away
    /// for UNAVAILABLE (the engine's trait has no error to return).
    error: std::cell::RefCell<Option<MeterError>>,
}

impl<'a> Live<'a> {
    fn load(
        view: &StateView,
        meter: &'a Meter,
        account: Option<&AccountView>,
        feature: &FeatureId,
        exhausted: Option<&'a Counter>,
    ) -> Result<Self, Status> {
        let mut leases = HashMap::new();
        if let Some(account) = account {
            for grant in account.grants_for(feature.as_str()) {
                let ent = &account.entitlements[grant.entitlement];
                let floating = matches!(
                    ent.seats.as_ref().map(|s| &s.mode),
                    Some(SeatMode::Floating { .. })
                );
                if floating && !leases.contains_key(&ent.id) {
                    let held = tollgate_region::seats::leases(view, &ent.id).map_err(|e| {
                        error_status(Code::Unavailable, "STATE_UNREADABLE", e.to_string())
                    })?;
                    leases.insert(ent.id.clone(), held);
                }
            }
        }
        Ok(Live {
            meter,
            leases,
            exhausted,
            error: std::cell::RefCell::new(None),
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
        match self.meter.consumed(&counter) {
            Ok(consumed) => consumed,
            Err(error) => {
                // Read as everything used up, and the decision discarded.
                self.error.borrow_mut().get_or_insert(error);
                u64::MAX
            }
        }
    }

    fn floating_leases(&self, entitlement: &EntitlementId) -> &[SeatLease] {
        self.leases.get(entitlement).map_or(&[], Vec::as_slice)
    }

    fn hard_cap_share_exhausted(
        &self,
        account: &AccountId,
        feature: &FeatureId,
        period: PeriodKey,
    ) -> bool {
        self.exhausted
            .is_some_and(|c| &c.account == account && &c.feature == feature && c.period == period)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_revision_wait_follows_the_deadline_within_the_maximum() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let rows = [
            ("no deadline: the configured wait", s(5), None, s(5)),
            (
                "configured above the maximum",
                s(600),
                None,
                REVISION_WAIT_MAX,
            ),
            (
                "a short deadline, less a tenth",
                s(5),
                Some(ms(200)),
                ms(180),
            ),
            (
                "a long deadline, less 250 ms",
                s(30),
                Some(s(10)),
                s(10) - ms(250),
            ),
            (
                "a deadline past the configured wait",
                s(5),
                Some(s(20)),
                s(5),
            ),
            (
                "a deadline past the maximum",
                s(600),
                Some(s(120)),
                REVISION_WAIT_MAX,
            ),
            ("no time left", s(5), Some(Duration::ZERO), Duration::ZERO),
        ];
        for (row, configured, deadline, expected) in rows {
            assert_eq!(wait_budget(configured, deadline), expected, "{row}");
        }
    }
}
