//! Hard usage caps and floating seats split between regions (see
//! [`crate::quota`]): leases, cumulative usage reports and seat releases.

use super::{reject, touched, Changed, Step, Tx};
use crate::command::RejectCode;
use crate::keys;
use crate::quota::{
    hard_cap, quota_key, seats_key, threshold_cap, usage_day_key, usage_day_of, valid_region_name,
    NoHardCap, QuotaState, QuotaSync, OUTSTANDING_TOTAL, SYNC_ENTRIES_MAX, THRESHOLDS_PERCENT,
};
use tollgate_model::{Entitlement, EntitlementId, SeatMode, Seats, UnixSeconds, UsageCounter};

/// Keeps [`OUTSTANDING_TOTAL`] in step with one counter going from
/// `before` to `after` outstanding units.
fn add_outstanding(tx: &mut Tx<'_>, before: u64, after: u64) -> Step<()> {
    let total: u64 = tx.get(OUTSTANDING_TOTAL)?.unwrap_or(0);
    let total = total.saturating_sub(before).saturating_add(after);
    tx.put(OUTSTANDING_TOTAL.to_vec(), &total);
    Ok(())
}

/// Adds `delta` units of `counter`'s feature to the daily history
/// ([`usage_day_key`]) on the UTC day of `at`, the command's own time (never
/// a clock: every node adds to the same day). A day no key can hold, or a
/// total past `u64::MAX`, refuses the whole report rather than record a
/// wrong figure.
fn add_usage_day(tx: &mut Tx<'_>, at: UnixSeconds, counter: &UsageCounter, delta: u64) -> Step<()> {
    let Some(day) = usage_day_of(at) else {
        return reject(
            RejectCode::Invalid,
            format!("usage reported at {at}, a day the usage history cannot hold"),
        );
    };
    let key = usage_day_key(&counter.account, &counter.feature, day);
    // Absent: nothing reported that day yet.
    let before: u64 = tx.get(&key)?.unwrap_or(0);
    let Some(after) = before.checked_add(delta) else {
        return reject(
            RejectCode::Invalid,
            format!(
                "the usage of {counter} on day {day} would pass {}",
                u64::MAX
            ),
        );
    };
    tx.put(key, &after);
    Ok(())
}

/// Leases up to `want` units of `counter` to `region`, out of the cap the
/// origin's own data gives at `at` ([`hard_cap`]): whatever cap the region
/// believes in is not an input. A counter with no hard cap at the origin
/// is refused (NOT_FOUND for an unknown account, INVALID for a period that
/// is not the feature's, CONFLICT otherwise), as is one with nothing left.
pub(super) fn lease_quota(
    tx: &mut Tx<'_>,
    at: UnixSeconds,
    region: &str,
    counter: &UsageCounter,
    want: u64,
    outstanding_max: u64,
) -> Step<Changed> {
    if !valid_region_name(region) {
        return reject(RejectCode::Invalid, "region: 1..=64 bytes of [a-z0-9-]");
    }
    // Nothing is written before this read, so the state alone is what the
    // transaction sees.
    debug_assert!(tx.writes.is_empty());
    let limit = match hard_cap(tx.state, counter, at)? {
        Ok(limit) => limit,
        Err(no) => {
            let code = match no {
                NoHardCap::UnknownAccount(_) => RejectCode::NotFound,
                NoHardCap::WrongPeriod { .. } => RejectCode::Invalid,
                NoHardCap::AccountSuspended(_)
                | NoHardCap::NotMetered(_)
                | NoHardCap::NoHardCap { .. } => RejectCode::Conflict,
            };
            return reject(code, format!("nothing to lease of {counter}: {no}"));
        }
    };
    let key = quota_key(counter);
    let mut quota: QuotaState = tx.get(&key)?.unwrap_or_default();
    let before = quota.outstanding();
    let granted = quota.lease(region, limit, want, outstanding_max);
    if granted == 0 {
        return reject(
            RejectCode::Conflict,
            format!(
                "nothing left to lease of {counter}: {} of {limit} allotted, {} outstanding",
                quota.allotted(),
                quota.outstanding()
            ),
        );
    }
    let total = quota.regions.get(region).map_or(0, |r| r.granted);
    add_outstanding(tx, before, quota.outstanding())?;
    tx.put(key, &quota);
    tx.lease = Some((granted, total));
    Ok(touched(format!("quota/{counter}/{region}")))
}

/// Takes a region's cumulative totals; a counter whose billed total
/// crosses 80 % or 100 % of its cap (hard, or else soft: [`threshold_cap`]
/// by the origin's own data at `at`) is recorded as `usage.threshold`,
/// which webhooks deliver.
pub(super) fn sync_quota(
    tx: &mut Tx<'_>,
    at: UnixSeconds,
    region: &str,
    entries: &[QuotaSync],
) -> Step<Changed> {
    if !valid_region_name(region) {
        return reject(RejectCode::Invalid, "region: 1..=64 bytes of [a-z0-9-]");
    }
    if entries.len() > SYNC_ENTRIES_MAX {
        return reject(
            RejectCode::Invalid,
            format!("at most {SYNC_ENTRIES_MAX} counters per report"),
        );
    }
    let mut changed = Vec::new();
    for entry in entries {
        let key = quota_key(&entry.counter);
        let mut quota: QuotaState = tx.get(&key)?.unwrap_or_default();
        let before = quota.outstanding();
        // A region that never reported has consumed nothing.
        let consumed_before = quota.regions.get(region).map_or(0, |r| r.consumed);
        if quota.sync(region, entry.consumed, entry.released) {
            add_outstanding(tx, before, quota.outstanding())?;
            let consumed_after = quota.regions.get(region).map_or(0, |r| r.consumed);
            // `sync` never moves a total back.
            debug_assert!(consumed_after >= consumed_before);
            let delta = consumed_after.saturating_sub(consumed_before);
            if delta > 0 {
                add_usage_day(tx, at, &entry.counter, delta)?;
            }
            let all_announced = THRESHOLDS_PERCENT
                .iter()
                .all(|t| *t <= quota.announced_percent);
            // The cap a region leased under, else the origin's own (a soft
            // cap is never leased); none at all raises nothing.
            let cap = match quota.limit {
                _ if all_announced => None,
                0 => threshold_cap(tx.state, &entry.counter, at)?,
                limit => Some(limit),
            };
            if let Some(percent) = cap.and_then(|cap| quota.crossed_threshold(cap)) {
                tx.action = Some("usage.threshold");
                changed.push(format!("usage/{}/{percent}", entry.counter));
            }
            tx.put(key, &quota);
        }
    }
    if tx.writes.is_empty() {
        return reject(RejectCode::Conflict, "nothing new in the report");
    }
    let target = match tx.action {
        // The audit record names what crossed (the first, if several).
        Some(_) => changed.into_iter().next().unwrap_or_default(),
        None => format!("quota/{region}"),
    };
    Ok(touched(target))
}

pub(super) fn lease_seats(
    tx: &mut Tx<'_>,
    region: &str,
    entitlement: &EntitlementId,
    want: u32,
) -> Step<Changed> {
    if !valid_region_name(region) {
        return reject(RejectCode::Invalid, "region: 1..=64 bytes of [a-z0-9-]");
    }
    let ent: Entitlement = tx.require(
        &keys::entitlement(entitlement),
        &format!("entitlement {entitlement}"),
    )?;
    let count = match ent.seats {
        Some(Seats {
            count,
            mode: SeatMode::Floating { .. },
        }) => count,
        _ => {
            return reject(
                RejectCode::Invalid,
                format!("entitlement {entitlement} has no floating seats"),
            )
        }
    };
    let key = seats_key(entitlement);
    let mut seats: QuotaState = tx.get(&key)?.unwrap_or_default();
    let granted = seats.lease(region, u64::from(count), u64::from(want), u64::MAX);
    if granted == 0 {
        return reject(
            RejectCode::Conflict,
            format!(
                "all {count} seats of {entitlement} are held by regions ({:?})",
                seats.regions
            ),
        );
    }
    let total = seats.regions.get(region).map_or(0, |r| r.granted);
    tx.put(key, &seats);
    tx.lease = Some((granted, total));
    Ok(touched(format!("seats/{entitlement}/{region}")))
}

pub(super) fn release_seats(
    tx: &mut Tx<'_>,
    region: &str,
    entitlement: &EntitlementId,
    released_total: u64,
) -> Step<Changed> {
    if !valid_region_name(region) {
        return reject(RejectCode::Invalid, "region: 1..=64 bytes of [a-z0-9-]");
    }
    let key = seats_key(entitlement);
    let mut seats: QuotaState = tx.get(&key)?.unwrap_or_default();
    if !seats.sync(region, 0, released_total) {
        return reject(RejectCode::Conflict, "nothing new in the report");
    }
    tx.put(key, &seats);
    Ok(touched(format!("seats/{entitlement}/{region}")))
}
