//! The decision: a pure function of the check, the account's view, geo
//! facts, live usage and seat state, data freshness and `now`.

use crate::geo::{geo_verdict, GeoVerdict};
use crate::reason::Reason;
use crate::view::{AccountView, ResolvedGrant};
use serde::{Deserialize, Serialize};
use tollgate_model::{
    AccountId, AccountStatus, AddonId, AfterGrace, CapEnforcement, Catalog, ConfigValues,
    Entitlement, EntitlementId, EntitlementStatus, FeatureId, GeoFacts, PeriodKey, PlanId,
    SeatMode, Subject, SubjectId, UnixSeconds,
};

/// Most seat holders listed in a decision.
pub const SEAT_HOLDERS_LISTED_MAX: usize = 16;

/// What is being asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub account: AccountId,
    /// The user or device; needed by roles, groups and seats.
    pub subject: Option<SubjectId>,
    pub feature: FeatureId,
    /// Units of a metered feature this check would consume (0 = only check).
    /// Ignored for boolean features.
    pub consume: u64,
}

/// A lease on a floating seat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatLease {
    pub holder: SubjectId,
    pub expires_at: UnixSeconds,
    /// When the holder took the seat (renewals keep it); `None` for a
    /// lease recorded before this was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acquired_at: Option<UnixSeconds>,
}

/// Region-local state the decision reads: usage counters and seat leases.
/// Implemented over the replicated state on a node, over a local replica in
/// the SDK, and over plain values in tests.
pub trait LiveState {
    /// Units of `feature` the account has consumed in `period`.
    fn usage_consumed(&self, account: &AccountId, feature: &FeatureId, period: PeriodKey) -> u64;
    /// Leases (live or expired) on the floating seats of `entitlement`.
    fn floating_leases(&self, entitlement: &EntitlementId) -> &[SeatLease];
    /// Whether this node can grant no more of `feature`'s hard cap in
    /// `period` although the cap itself is not used up: the share of a cap
    /// split between regions that this region holds is gone, and the rest
    /// is held elsewhere. A consuming check is then USAGE_CAP_REACHED.
    /// Without shares (a replica, a test) it is never so.
    fn hard_cap_share_exhausted(
        &self,
        _account: &AccountId,
        _feature: &FeatureId,
        _period: PeriodKey,
    ) -> bool {
        false
    }
}

/// No usage recorded and no leases held.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLiveState;

impl LiveState for NoLiveState {
    fn usage_consumed(&self, _: &AccountId, _: &FeatureId, _: PeriodKey) -> u64 {
        0
    }
    fn floating_leases(&self, _: &EntitlementId) -> &[SeatLease] {
        &[]
    }
}

/// How current the data behind a decision is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freshness {
    /// The origin revision applied.
    pub applied_revision: u64,
    /// When the region last heard from the origin; `None` if never.
    pub last_origin_contact: Option<UnixSeconds>,
}

impl Freshness {
    /// Data that is current at `now` (the origin itself, or a test).
    pub fn current(applied_revision: u64, now: UnixSeconds) -> Self {
        Self {
            applied_revision,
            last_origin_contact: Some(now),
        }
    }
}

/// Everything a decision reads besides the check and the account.
pub struct Environment<'a> {
    pub catalog: &'a Catalog,
    pub live: &'a dyn LiveState,
    pub freshness: Freshness,
    pub now: UnixSeconds,
}

/// A plan or add-on the vendor sells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpgradeTarget {
    Plan(PlanId),
    Addon(AddonId),
}

/// What would change a NOT_ENTITLED or USAGE_CAP_REACHED answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpgradeHint {
    pub target: UpgradeTarget,
    /// The cap the feature would have; `None` means unlimited.
    pub limit: Option<u64>,
}

/// Seat occupancy of the deciding entitlement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatInfo {
    pub used: u32,
    pub total: u32,
    /// Who holds seats; listed (at most [`SEAT_HOLDERS_LISTED_MAX`]) only
    /// when the answer is SEAT_LIMIT.
    pub holders: Vec<SubjectId>,
}

/// The answer to a check. A denial is a decision, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub reason: Reason,
    /// The entitlement that decided, if one did.
    pub entitlement: Option<EntitlementId>,
    /// Cap of a metered feature in the current period; `None` = unlimited
    /// or not metered.
    pub limit: Option<u64>,
    /// Units left in the period after this check's consumption.
    pub remaining: Option<u64>,
    /// Allowed past a soft cap: bill as overage.
    pub overage: bool,
    pub valid_until: Option<UnixSeconds>,
    pub upgrade_hint: Option<UpgradeHint>,
    pub seats: Option<SeatInfo>,
    /// Configuration values of the winning grant.
    pub config: ConfigValues,
    /// The deciding entitlement is a trial.
    pub trial: bool,
    /// Seconds since the region last heard from the origin; `None` if never.
    pub staleness_seconds: Option<u64>,
    /// The origin revision the data was at.
    pub revision: u64,
    /// For an allowed (or cap-reached) check of a metered feature: which
    /// counter its consumption goes to, and the cap on it.
    pub metering: Option<Metering>,
}

/// How a metered feature is counted at the time of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metering {
    /// The counter: the feature's period at `now`.
    pub period: PeriodKey,
    /// The cap pooled over the account's grants; `None` = unlimited.
    pub limit: Option<u64>,
    /// Past the cap, deny (hard) rather than allow and flag overage (soft).
    pub hard: bool,
}

impl Decision {
    fn new(reason: Reason, env: &Environment<'_>) -> Self {
        Decision {
            reason,
            entitlement: None,
            limit: None,
            remaining: None,
            overage: false,
            valid_until: None,
            upgrade_hint: None,
            seats: None,
            config: ConfigValues::new(),
            trial: false,
            staleness_seconds: staleness_seconds(env),
            revision: env.freshness.applied_revision,
            metering: None,
        }
    }

    pub fn allowed(&self) -> bool {
        self.reason.is_allowed()
    }

    /// One line for a human; not stable (switch on `reason`).
    pub fn explain(&self) -> String {
        let ent = self
            .entitlement
            .as_ref()
            .map(|e| format!(" by entitlement {e}"))
            .unwrap_or_default();
        let mut text = match self.reason {
            Reason::Allow if self.trial => format!("Allowed{ent} (a trial)."),
            Reason::Allow => format!("Allowed{ent}."),
            Reason::InGrace => format!(
                "Allowed{ent} in its grace period (expired {}).",
                self.valid_until.map(|t| t.to_string()).unwrap_or_default()
            ),
            Reason::NotEntitled => "No entitlement of the account grants the feature.".into(),
            Reason::UnknownAccount => "The account is not known here.".into(),
            Reason::UnknownSubject => "The subject is not known in this account.".into(),
            Reason::NotYetValid => format!("Denied{ent}: not valid yet."),
            Reason::Expired => format!(
                "Denied{ent}: expired {} and past its grace period.",
                self.valid_until.map(|t| t.to_string()).unwrap_or_default()
            ),
            Reason::Suspended => format!("Denied{ent}: suspended."),
            Reason::Revoked => format!("Denied{ent}: revoked."),
            Reason::RoleRequired => {
                format!("Denied{ent}: the subject lacks the required role or group.")
            }
            Reason::GeoBlocked => {
                format!("Denied{ent}: the caller's location is outside the geo rules.")
            }
            Reason::AnonymousNetworkBlocked => {
                format!("Denied{ent}: the caller is on an anonymous network.")
            }
            Reason::SeatLimit => match &self.seats {
                Some(s) => format!(
                    "Denied{ent}: no seat for this subject ({} of {} in use).",
                    s.used, s.total
                ),
                None => format!("Denied{ent}: no seat for this subject."),
            },
            Reason::UsageCapReached => format!(
                "Denied{ent}: the usage cap of {} is reached.",
                self.limit.unwrap_or(0)
            ),
            Reason::StaleData => format!(
                "Denied{ent}: no word from the origin for {} s, longer than the offline grace.",
                self.staleness_seconds
                    .map_or("ever".to_string(), |s| s.to_string())
            ),
        };
        if self.overage {
            text.push_str(" Over the soft cap: billed as overage.");
        }
        if let Some(hint) = &self.upgrade_hint {
            let what = match &hint.target {
                UpgradeTarget::Plan(p) => format!("plan {p}"),
                UpgradeTarget::Addon(a) => format!("add-on {a}"),
            };
            match hint.limit {
                Some(limit) => {
                    text.push_str(&format!(" Upgrade: {what} raises the cap to {limit}."))
                }
                None if self.reason == Reason::UsageCapReached => {
                    text.push_str(&format!(" Upgrade: {what} removes the cap."))
                }
                None => text.push_str(&format!(" Upgrade: {what} grants it.")),
            }
        }
        text
    }
}

fn staleness_seconds(env: &Environment<'_>) -> Option<u64> {
    env.freshness
        .last_origin_contact
        .map(|t| env.now.seconds_since(t))
}

/// Decides `check` for the account `view` (`None` when the account is not
/// known). See [`Reason`] for the order in which reasons are tested.
pub fn decide(
    check: &Check,
    view: Option<&AccountView>,
    geo: &GeoFacts,
    env: &Environment<'_>,
) -> Decision {
    let Some(view) = view else {
        return Decision::new(Reason::UnknownAccount, env);
    };
    assert_eq!(
        view.account.id, check.account,
        "caller passed the view of another account"
    );
    if view.account.status == AccountStatus::Suspended {
        return Decision::new(Reason::Suspended, env);
    }
    let subject = match &check.subject {
        Some(id) => match view.subjects.get(id.as_str()) {
            Some(subject) => Some(subject),
            None => return Decision::new(Reason::UnknownSubject, env),
        },
        None => None,
    };
    let grants = view.grants_for(check.feature.as_str());
    if grants.is_empty() {
        let mut d = Decision::new(Reason::NotEntitled, env);
        d.upgrade_hint = upgrade_hint(env.catalog, view, &check.feature, None);
        return d;
    }

    let staleness = staleness_seconds(env).unwrap_or(u64::MAX);
    // The most permissive denial so far, and the best allowing grant.
    let mut denial: Option<(Reason, &ResolvedGrant)> = None;
    let mut winner: Option<(&ResolvedGrant, bool)> = None;
    // Cap aggregation over the allowing grants.
    let mut unlimited = false;
    let mut base_cap: Option<&ResolvedGrant> = None;
    let mut additive_sum: u64 = 0;
    let mut soft = false;

    for grant in grants {
        let ent = &view.entitlements[grant.entitlement];
        match judge(grant, ent, subject, geo, env, staleness) {
            Err(reason) => {
                if denial.is_none_or(|(r, _)| reason.permissiveness() > r.permissiveness()) {
                    denial = Some((reason, grant));
                }
            }
            Ok(in_grace) => {
                let better = match winner {
                    None => true,
                    Some((w, w_grace)) => {
                        let w_ent = &view.entitlements[w.entitlement];
                        (!in_grace, ent.usable_until().map_or(i64::MAX, |t| t.0))
                            > (!w_grace, w_ent.usable_until().map_or(i64::MAX, |t| t.0))
                    }
                };
                if better {
                    winner = Some((grant, in_grace));
                }
                match grant.usage_cap {
                    None => unlimited = true,
                    Some(cap) => {
                        soft |= cap.enforcement == CapEnforcement::Soft;
                        if cap.additive {
                            additive_sum = additive_sum.saturating_add(cap.limit);
                        } else if base_cap
                            .is_none_or(|b| b.usage_cap.map_or(0, |c| c.limit) < cap.limit)
                        {
                            base_cap = Some(grant);
                        }
                    }
                }
            }
        }
    }

    let Some((winner, in_grace)) = winner else {
        let (reason, grant) = denial.expect("a feature with grants has a winner or a denial");
        let mut d = decision_from(reason, grant, view, env);
        if reason == Reason::SeatLimit {
            if let Some(seats) = d.seats.as_mut() {
                seats.holders = seat_holders(&view.entitlements[grant.entitlement], env);
            }
        }
        return d;
    };

    let reason = if in_grace {
        Reason::InGrace
    } else {
        Reason::Allow
    };
    let mut d = decision_from(reason, winner, view, env);
    let Some(period) = winner.period else {
        return d;
    };
    let period = period.key_at(env.now);
    if unlimited {
        d.metering = Some(Metering {
            period,
            limit: None,
            hard: false,
        });
        return d;
    }
    let limit = base_cap
        .and_then(|g| g.usage_cap)
        .map_or(0, |c| c.limit)
        .saturating_add(additive_sum);
    let metering = Metering {
        period,
        limit: Some(limit),
        hard: !soft,
    };
    d.metering = Some(metering);
    let consumed = env
        .live
        .usage_consumed(&check.account, &check.feature, period);
    let after = consumed.saturating_add(check.consume);
    let share_exhausted = !soft
        && check.consume > 0
        && env
            .live
            .hard_cap_share_exhausted(&check.account, &check.feature, period);
    d.limit = Some(limit);
    if after <= limit && !share_exhausted {
        d.remaining = Some(limit - after);
    } else if soft {
        d.remaining = Some(0);
        d.overage = true;
    } else {
        let decider = base_cap.unwrap_or(winner);
        let mut d = decision_from(Reason::UsageCapReached, decider, view, env);
        d.metering = Some(metering);
        d.limit = Some(limit);
        // With the region's share gone, nothing can be granted here now,
        // whatever the cap leaves elsewhere.
        d.remaining = Some(if share_exhausted {
            0
        } else {
            limit.saturating_sub(consumed)
        });
        d.upgrade_hint = upgrade_hint(env.catalog, view, &check.feature, Some(limit));
        return d;
    }
    d
}

/// Judges one grant on its own: `Ok(in_grace)` if it allows, else the first
/// failing reason in precedence order (see [`Reason`]). Usage caps are not
/// judged here: they are pooled across grants.
fn judge(
    grant: &ResolvedGrant,
    ent: &Entitlement,
    subject: Option<&Subject>,
    geo: &GeoFacts,
    env: &Environment<'_>,
    staleness_seconds: u64,
) -> Result<bool, Reason> {
    match ent.status {
        EntitlementStatus::Revoked => return Err(Reason::Revoked),
        EntitlementStatus::Suspended => return Err(Reason::Suspended),
        EntitlementStatus::Active => {}
    }
    if env.now < ent.valid_from {
        return Err(Reason::NotYetValid);
    }
    let in_grace = match ent.valid_until {
        Some(until) if env.now > until => {
            if ent.usable_until().is_some_and(|end| env.now > end) {
                return Err(Reason::Expired);
            }
            true
        }
        _ => false,
    };
    let policy = grant.offline_policy;
    if policy.after_grace == AfterGrace::Deny && staleness_seconds > policy.offline_grace_seconds {
        return Err(Reason::StaleData);
    }
    if let Some(role) = &ent.required_role {
        if !subject.is_some_and(|s| s.roles.contains(role)) {
            return Err(Reason::RoleRequired);
        }
    }
    if !ent.allowed_groups.is_empty()
        && !subject.is_some_and(|s| s.groups.iter().any(|g| ent.allowed_groups.contains(g)))
    {
        return Err(Reason::RoleRequired);
    }
    let mut anonymous = false;
    for rule in &grant.geo_rules {
        match geo_verdict(rule, geo) {
            GeoVerdict::Pass => {}
            GeoVerdict::Blocked => return Err(Reason::GeoBlocked),
            GeoVerdict::Anonymous => anonymous = true,
        }
    }
    if anonymous {
        return Err(Reason::AnonymousNetworkBlocked);
    }
    if let Some(seats) = &ent.seats {
        let has_seat = match &seats.mode {
            SeatMode::Named { assigned } => subject.is_some_and(|s| assigned.contains(&s.id)),
            SeatMode::Floating { .. } => {
                let leases = env.live.floating_leases(&ent.id);
                let holds = subject.is_some_and(|s| {
                    leases
                        .iter()
                        .any(|l| l.holder == s.id && l.expires_at > env.now)
                });
                holds || live_lease_count(leases, env.now) < seats.count as usize
            }
        };
        if !has_seat {
            return Err(Reason::SeatLimit);
        }
    }
    Ok(in_grace)
}

fn live_lease_count(leases: &[SeatLease], now: UnixSeconds) -> usize {
    leases.iter().filter(|l| l.expires_at > now).count()
}

fn decision_from(
    reason: Reason,
    grant: &ResolvedGrant,
    view: &AccountView,
    env: &Environment<'_>,
) -> Decision {
    let ent = &view.entitlements[grant.entitlement];
    let mut d = Decision::new(reason, env);
    d.entitlement = Some(ent.id.clone());
    d.valid_until = ent.valid_until;
    d.trial = ent.trial;
    if reason.is_allowed() {
        d.config = grant.config.clone();
    }
    d.seats = ent.seats.as_ref().map(|seats| SeatInfo {
        used: match &seats.mode {
            SeatMode::Named { assigned } => assigned.len() as u32,
            SeatMode::Floating { .. } => {
                live_lease_count(env.live.floating_leases(&ent.id), env.now) as u32
            }
        },
        total: seats.count,
        holders: Vec::new(),
    });
    d
}

fn seat_holders(ent: &Entitlement, env: &Environment<'_>) -> Vec<SubjectId> {
    match ent.seats.as_ref().map(|s| &s.mode) {
        Some(SeatMode::Named { assigned }) => assigned
            .iter()
            .take(SEAT_HOLDERS_LISTED_MAX)
            .cloned()
            .collect(),
        Some(SeatMode::Floating { .. }) => env
            .live
            .floating_leases(&ent.id)
            .iter()
            .filter(|l| l.expires_at > env.now)
            .take(SEAT_HOLDERS_LISTED_MAX)
            .map(|l| l.holder.clone())
            .collect(),
        None => Vec::new(),
    }
}

/// What the vendor sells that would grant `feature` (when `current_limit` is
/// `None`, the account lacks it) or lift its cap above `current_limit`.
/// Add-ons compatible with a plan the account holds come first (the smallest
/// that helps), then the lowest-tier plan above the account's that helps.
fn upgrade_hint(
    catalog: &Catalog,
    view: &AccountView,
    feature: &FeatureId,
    current_limit: Option<u64>,
) -> Option<UpgradeHint> {
    let held: Vec<&PlanId> = view.plans_held().collect();
    // The limit a grant would give, if it helps.
    let helps = |cap: Option<tollgate_model::UsageCap>| -> Option<Option<u64>> {
        match (current_limit, cap) {
            (None, cap) => Some(cap.map(|c| c.limit)),
            (Some(_), None) => Some(None),
            (Some(cur), Some(c)) if c.additive => Some(Some(cur.saturating_add(c.limit))),
            (Some(cur), Some(c)) if c.limit > cur => Some(Some(c.limit)),
            _ => None,
        }
    };
    // `None` (unlimited) sorts after every finite limit.
    let order = |limit: Option<u64>| limit.unwrap_or(u64::MAX);

    let addon = catalog
        .addons
        .values()
        .filter(|a| {
            a.compatible_plans.is_empty() || held.iter().any(|p| a.compatible_plans.contains(*p))
        })
        .filter_map(|a| {
            let grant = a.features.iter().find(|g| &g.feature == feature)?;
            Some((helps(grant.usage_cap)?, &a.id))
        })
        .min_by_key(|(limit, _)| order(*limit));
    if let Some((limit, id)) = addon {
        return Some(UpgradeHint {
            target: UpgradeTarget::Addon(id.clone()),
            limit,
        });
    }

    let current_tier = view
        .plans_held()
        .filter_map(|p| catalog.plans.get(p).map(|plan| plan.tier))
        .max();
    catalog
        .plans
        .values()
        .filter(|p| current_tier.is_none_or(|t| p.tier > t))
        .filter_map(|p| {
            let grant = p.features.iter().find(|g| &g.feature == feature)?;
            Some((p.tier, helps(grant.usage_cap)?, &p.id))
        })
        .min_by_key(|(tier, limit, _)| (*tier, order(*limit)))
        .map(|(_, limit, id)| UpgradeHint {
            target: UpgradeTarget::Plan(id.clone()),
            limit,
        })
}
