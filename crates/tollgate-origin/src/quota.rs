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

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tollgate_model::UsageCounter;

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

    /// A threshold newly crossed by the consumed total, if any.
    pub fn crossed_threshold(&mut self) -> Option<u8> {
        if self.limit == 0 {
            return None;
        }
        let percent = (self.consumed().saturating_mul(100) / self.limit).min(255) as u8;
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
