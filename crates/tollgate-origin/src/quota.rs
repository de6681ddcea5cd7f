//! Global usage caps split between regions. The origin leases each region
//! a slice of a hard-capped counter; a region consumes only within what it
//! holds, so the regions together never pass the cap the origin allotted
//! from. Regions report what they consumed and released as cumulative
//! totals (a retried report changes nothing), which are the billing totals.
//!
//! Units leased and not yet reported consumed are the *outstanding* units:
//! what the regions could still spend without asking, and so how far
//! consumption could exceed the cap if the cap were lowered now (or a
//! region's report were late). The origin never lets them pass the
//! configured bound, and shows them per counter.

use crate::keys;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tollgate_engine::AccountView;
use tollgate_model::{
    Account, AccountId, AccountStatus, CapEnforcement, Catalog, Entitlement, EntitlementId,
    EntitlementStatus, FeatureId, Grant, PeriodKey, UnixSeconds, UsageCounter,
};
use tollgate_raft::logic::ReadError;
use tollgate_raft::ReadState;

pub use tollgate_model::{valid_region_name, REGION_NAME_BYTES_MAX};
/// Most counters in one usage report.
pub const SYNC_ENTRIES_MAX: usize = 1024;
/// Usage thresholds (percent of the cap) that raise a `usage.threshold`
/// event, in ascending order.
pub const THRESHOLDS_PERCENT: [u8; 2] = [80, 100];

/// Units outstanding over every counter (the sum of each counter's
/// [`QuotaState::outstanding`]): what the regions together could still
/// spend without asking, kept in step by every lease and report.
pub const OUTSTANDING_TOTAL: &[u8] = b"meta/quota-outstanding";

/// `quota/<account>/<feature>/<period>`: a [`QuotaState`].
pub fn quota_key(counter: &UsageCounter) -> Vec<u8> {
    format!("quota/{counter}").into_bytes()
}

/// The prefix of one account's [`quota_key`]s.
pub fn account_quota_prefix(account: &tollgate_model::AccountId) -> String {
    format!("quota/{account}/")
}

/// Seconds in a UTC day: a usage day is `at / SECONDS_PER_DAY`.
const SECONDS_PER_DAY: i64 = 86_400;
/// The last day number a usage day key can hold: day keys are eight
/// zero-padded digits (so byte order is day order), which reaches the year
/// 275 000.
pub const USAGE_DAY_MAX: i64 = 99_999_999;

/// The UTC day number (days since 1970-01-01) of `at`, if a usage day key
/// can hold it: `None` before 1970 or past [`USAGE_DAY_MAX`].
pub fn usage_day_of(at: UnixSeconds) -> Option<u32> {
    let day = at.0.div_euclid(SECONDS_PER_DAY);
    // In range, so the cast is exact.
    (0..=USAGE_DAY_MAX).contains(&day).then_some(day as u32)
}

/// `usage-day/<account>/<feature>/`: the prefix of one feature's daily
/// usage history ([`usage_day_key`]); a range scan under it returns the
/// days in order.
pub fn usage_days_prefix(account: &AccountId, feature: &FeatureId) -> String {
    format!("usage-day/{account}/{feature}/")
}

/// `usage-day/<account>/`: every feature's daily history of one account,
/// by feature, then day.
pub fn account_usage_days_prefix(account: &AccountId) -> String {
    format!("usage-day/{account}/")
}

/// `usage-day/<account>/<feature>/<day, 8 digits>`: the units of the
/// feature the regions reported consumed on that UTC day (a number), all
/// periods and regions together. Written by `SyncQuota`: each report that
/// raises a region's cumulative total by `d` adds `d` to the day of the
/// command's own time, so a day holds what was *reported* that day (a
/// region's late report of yesterday's use counts today). Origin only.
pub fn usage_day_key(account: &AccountId, feature: &FeatureId, day: u32) -> Vec<u8> {
    format!("{}{day:08}", usage_days_prefix(account, feature)).into_bytes()
}

/// A usage day entry that does not decode: the key is not a day under the
/// prefix scanned, or the value is not a number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("usage day entry {key}: {problem}")]
pub struct BadUsageDay {
    pub key: String,
    pub problem: &'static str,
}

/// One entry of a scan under [`usage_days_prefix`] as (day number,
/// units consumed that day).
pub fn decode_usage_day(
    prefix: &[u8],
    key: &[u8],
    value: &[u8],
) -> Result<(u32, u64), BadUsageDay> {
    let bad = |problem| BadUsageDay {
        key: String::from_utf8_lossy(key).into_owned(),
        problem,
    };
    let digits = key
        .strip_prefix(prefix)
        .ok_or_else(|| bad("not under the prefix scanned"))?;
    if digits.len() != 8 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad("the day is not eight digits"));
    }
    let day = std::str::from_utf8(digits)
        .map_err(|_| bad("the day is not eight digits"))?
        .parse::<u32>()
        .map_err(|_| bad("the day is not eight digits"))?;
    let consumed: u64 =
        serde_json::from_slice(value).map_err(|_| bad("the value is not a whole number"))?;
    Ok((day, consumed))
}

/// One region's share of a counter (cumulative totals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionShare {
    /// Units leased to the region.
    pub granted: u64,
    /// Units the region handed back.
    pub released: u64,
    /// Units the region reported consumed.
    pub consumed: u64,
}

impl RegionShare {
    /// Leased, not handed back, not reported consumed.
    pub fn outstanding(&self) -> u64 {
        self.granted
            .saturating_sub(self.released)
            .saturating_sub(self.consumed)
    }
}

/// A counter across regions, as the origin keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaState {
    /// The cap as last reported by a region that leased (0: unknown, e.g.
    /// a soft or unlimited feature only reported).
    pub limit: u64,
    pub regions: BTreeMap<String, RegionShare>,
    /// The highest threshold already announced.
    pub announced_percent: u8,
}

impl QuotaState {
    /// Units allotted to regions, consumed or not.
    pub fn allotted(&self) -> u64 {
        self.regions
            .values()
            .map(|r| r.granted.saturating_sub(r.released))
            .sum()
    }

    /// The billing total: units reported consumed, all regions.
    pub fn consumed(&self) -> u64 {
        self.regions.values().map(|r| r.consumed).sum()
    }

    /// The worst-case overshoot: units the regions may still spend
    /// without asking.
    pub fn outstanding(&self) -> u64 {
        self.regions.values().map(RegionShare::outstanding).sum()
    }

    /// How much to lease to `region`, which wants `want` more, never
    /// letting the allotted units pass the cap nor the outstanding units
    /// pass `outstanding_max`.
    pub fn lease(&mut self, region: &str, limit: u64, want: u64, outstanding_max: u64) -> u64 {
        self.limit = limit;
        let room = limit.saturating_sub(self.allotted());
        let bound = outstanding_max.saturating_sub(self.outstanding());
        let granted = want.min(room).min(bound);
        self.regions.entry(region.to_string()).or_default().granted += granted;
        granted
    }

    /// Takes a region's cumulative totals (never moving them back);
    /// whether anything changed.
    pub fn sync(&mut self, region: &str, consumed: u64, released: u64) -> bool {
        let share = self.regions.entry(region.to_string()).or_default();
        let before = *share;
        share.consumed = share.consumed.max(consumed);
        share.released = share.released.max(released).min(share.granted);
        *share != before
    }

    /// A threshold of `cap` newly crossed by the consumed total, if any.
    pub fn crossed_threshold(&mut self, cap: u64) -> Option<u8> {
        if cap == 0 {
            return None;
        }
        let percent = (self.consumed().saturating_mul(100) / cap).min(255) as u8;
        let crossed = THRESHOLDS_PERCENT
            .iter()
            .copied()
            .filter(|t| percent >= *t && *t > self.announced_percent)
            .max()?;
        self.announced_percent = crossed;
        Some(crossed)
    }
}

/// A region's cumulative totals for one counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaSync {
    pub counter: UsageCounter,
    pub consumed: u64,
    pub released: u64,
}

/// `seats/<entitlement>`: a [`QuotaState`] of a floating-seat entitlement's
/// seats split between regions (`consumed` unused: a seat is held, not
/// spent; a region's share is `granted - released`).
pub fn seats_key(entitlement: &tollgate_model::EntitlementId) -> Vec<u8> {
    format!("seats/{entitlement}").into_bytes()
}

/// Why the origin has no hard cap to split for a counter: a lease of it is
/// refused, whatever the region believes the cap to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoHardCap {
    #[error("unknown account {0}")]
    UnknownAccount(AccountId),
    #[error("account {0} is suspended")]
    AccountSuspended(AccountId),
    #[error("feature {0} is not a metered feature of the catalog")]
    NotMetered(FeatureId),
    #[error(
        "period {asked} is not the period of feature {feature} now ({current}) nor next to it"
    )]
    WrongPeriod {
        feature: FeatureId,
        asked: PeriodKey,
        current: PeriodKey,
    },
    #[error("no entitlement of account {account} usable now grants {feature} with a hard cap")]
    NoHardCap {
        account: AccountId,
        feature: FeatureId,
    },
}

impl NoHardCap {
    /// The stable code a refusal carries on the wire.
    pub fn code(&self) -> &'static str {
        match self {
            NoHardCap::UnknownAccount(_) => "UNKNOWN_ACCOUNT",
            NoHardCap::AccountSuspended(_) => "ACCOUNT_SUSPENDED",
            NoHardCap::NotMetered(_) => "FEATURE_NOT_METERED",
            NoHardCap::WrongPeriod { .. } => "WRONG_PERIOD",
            NoHardCap::NoHardCap { .. } => "NO_HARD_CAP",
        }
    }
}

fn read<T: DeserializeOwned>(state: &dyn ReadState, key: &[u8]) -> Result<Option<T>, ReadError> {
    state
        .get(key)?
        .map(|bytes| {
            serde_json::from_slice(&bytes).map_err(|e| {
                ReadError(format!(
                    "stored value under {} does not decode: {e}",
                    String::from_utf8_lossy(key)
                ))
            })
        })
        .transpose()
}

/// The hard cap of `counter` by the origin's own data at `at`: what the
/// origin splits between regions, never the figure a region sends.
///
/// The origin sees no subject and no location, so it takes the largest cap
/// a consuming check could pool (see the engine's `decide`): over the
/// account's entitlements usable at `at` (active, valid, or in grace) that
/// grant the feature with a hard cap, the largest non-additive cap plus
/// every additive one (top-up packs). Unlimited and soft-capped grants add
/// nothing: a check one of them allows is not hard-capped and never leases,
/// while a check they do not allow (a role, a region, a seat) is capped by
/// the hard grants alone. Roles, geography and seats are not judged, so the
/// result is never below the cap any check of the account sees, and never
/// above what the origin's grants add up to.
///
/// The counter's period must be the feature's kind of period and the one
/// containing `at` or next to it (a region's clock, or a lease asked just
/// before a period ended).
pub fn hard_cap(
    state: &dyn ReadState,
    counter: &UsageCounter,
    at: UnixSeconds,
) -> Result<Result<u64, NoHardCap>, ReadError> {
    let view = match metered_view(state, counter, at)? {
        Ok(view) => view,
        Err(no) => return Ok(Err(no)),
    };
    // Unlimited or soft grants add nothing: see above.
    match pooled_cap(&view, &counter.feature, at, CapEnforcement::Hard) {
        Some(cap) => Ok(Ok(cap)),
        None => Ok(Err(NoHardCap::NoHardCap {
            account: counter.account.clone(),
            feature: counter.feature.clone(),
        })),
    }
}

/// A counter's caps by the origin's own data at `at`, from one read of the
/// account: the hard cap ([`hard_cap`]) and, when there is none, the soft
/// cap pooled the same way. `(None, None)`: not capped (unlimited,
/// unknown, suspended, not metered). For pages that show both.
pub fn caps(
    state: &dyn ReadState,
    counter: &UsageCounter,
    at: UnixSeconds,
) -> Result<(Option<u64>, Option<u64>), ReadError> {
    let Ok(view) = metered_view(state, counter, at)? else {
        return Ok((None, None));
    };
    let hard = pooled_cap(&view, &counter.feature, at, CapEnforcement::Hard);
    let soft = match hard {
        Some(_) => None,
        None => pooled_cap(&view, &counter.feature, at, CapEnforcement::Soft),
    };
    Ok((hard, soft))
}

/// The account's view of `counter`'s feature, with only what resolving its
/// grants needs; or why the counter has no cap at all.
fn metered_view(
    state: &dyn ReadState,
    counter: &UsageCounter,
    at: UnixSeconds,
) -> Result<Result<AccountView, NoHardCap>, ReadError> {
    let account_id = &counter.account;
    let feature_id = &counter.feature;
    let Some(account) = read::<Account>(state, &keys::account(account_id))? else {
        return Ok(Err(NoHardCap::UnknownAccount(account_id.clone())));
    };
    if account.status == AccountStatus::Suspended {
        return Ok(Err(NoHardCap::AccountSuspended(account_id.clone())));
    }
    let Some(feature) = read::<tollgate_model::Feature>(state, &keys::feature(feature_id))? else {
        return Ok(Err(NoHardCap::NotMetered(feature_id.clone())));
    };
    let Some(period) = feature.period() else {
        return Ok(Err(NoHardCap::NotMetered(feature_id.clone())));
    };
    let current = period.key_at(at);
    if counter.period.period != current.period || counter.period.index.abs_diff(current.index) > 1 {
        return Ok(Err(NoHardCap::WrongPeriod {
            feature: feature_id.clone(),
            asked: counter.period,
            current,
        }));
    }

    // Only what resolving this feature's grants needs: the feature, and the
    // plans and add-ons the account's entitlements name.
    let mut catalog = Catalog::default();
    catalog.features.insert(feature_id.clone(), feature);
    let ids: Vec<EntitlementId> =
        read(state, &keys::account_entitlements(account_id))?.unwrap_or_default();
    let mut entitlements = Vec::with_capacity(ids.len());
    for id in &ids {
        let Some(ent) = read::<Entitlement>(state, &keys::entitlement(id))? else {
            continue;
        };
        match &ent.grant {
            Grant::Plan(plan) if !catalog.plans.contains_key(plan) => {
                if let Some(p) = read(state, &keys::plan(plan))? {
                    catalog.plans.insert(plan.clone(), p);
                }
            }
            Grant::Addon(addon) if !catalog.addons.contains_key(addon) => {
                if let Some(a) = read(state, &keys::addon(addon))? {
                    catalog.addons.insert(addon.clone(), a);
                }
            }
            _ => {}
        }
        entitlements.push(ent);
    }
    Ok(Ok(AccountView::build(account, [], entitlements, &catalog)))
}

/// The cap `usage.threshold` events are measured against: the hard cap
/// when there is one ([`hard_cap`]), else the soft cap pooled the same way
/// (the largest non-additive soft cap plus every additive one); `None` for
/// a counter with no cap at all (unlimited, unknown, suspended, not
/// metered), which raises no thresholds.
pub fn threshold_cap(
    state: &dyn ReadState,
    counter: &UsageCounter,
    at: UnixSeconds,
) -> Result<Option<u64>, ReadError> {
    let Ok(view) = metered_view(state, counter, at)? else {
        return Ok(None);
    };
    Ok(
        pooled_cap(&view, &counter.feature, at, CapEnforcement::Hard)
            .or_else(|| pooled_cap(&view, &counter.feature, at, CapEnforcement::Soft)),
    )
}

/// Over the grants of `feature` usable at `at` with a cap enforced as
/// `enforcement`: the largest non-additive cap plus every additive one
/// (top-up packs alone are a cap too: the engine pools them over a base of
/// 0); `None` when no such grant exists.
fn pooled_cap(
    view: &AccountView,
    feature: &FeatureId,
    at: UnixSeconds,
    enforcement: CapEnforcement,
) -> Option<u64> {
    let mut any = false;
    let mut base: u64 = 0;
    let mut additive: u64 = 0;
    for grant in view.grants_for(feature.as_str()) {
        if !usable_at(&view.entitlements[grant.entitlement], at) {
            continue;
        }
        match grant.usage_cap {
            Some(cap) if cap.enforcement == enforcement => {
                any = true;
                if cap.additive {
                    additive = additive.saturating_add(cap.limit);
                } else {
                    base = base.max(cap.limit);
                }
            }
            _ => {}
        }
    }
    any.then(|| base.saturating_add(additive))
}

/// Whether an entitlement could allow anything at `at`, as the engine
/// judges its own facts: active, started, and not past its grace.
fn usable_at(ent: &Entitlement, at: UnixSeconds) -> bool {
    ent.status == EntitlementStatus::Active
        && at >= ent.valid_from
        && ent.usable_until().is_none_or(|end| at <= end)
}
