//! A usage counter belongs to its period: a cap used up in one UTC month
//! (or day) leaves the next one untouched, and the boundary is the first
//! second of the new period, not a moment later.

mod common;

use common::*;
use tollgate_engine::*;
use tollgate_model::*;

/// Usage per period: the cap is used up in exactly one period.
struct PerPeriod {
    used_up: PeriodKey,
    consumed: u64,
}

impl LiveState for PerPeriod {
    fn usage_consumed(&self, _: &AccountId, _: &FeatureId, period: PeriodKey) -> u64 {
        if period == self.used_up {
            self.consumed
        } else {
            0
        }
    }
    fn floating_leases(&self, _: &EntitlementId) -> &[SeatLease] {
        &[]
    }
}

#[test]
fn a_used_up_monthly_cap_is_fresh_at_the_first_second_of_the_next_month() {
    // 2026-11-30T23:59:59Z and 2026-12-01T00:00:00Z.
    let last_second = UnixSeconds(1_796_083_199);
    let next_month = UnixSeconds(last_second.0 + 1);
    let catalog = catalog();
    let scenario = Scenario::new(vec![ent("e-basic", plan("basic"))])
        .feature("render")
        .consume(1);
    let view = scenario.view(&catalog);
    let live = PerPeriod {
        used_up: UsagePeriod::Month.key_at(last_second),
        consumed: 100,
    };
    let decide_at = |now: UnixSeconds| {
        let env = Environment {
            catalog: &catalog,
            live: &live,
            freshness: Freshness::current(1, now),
            now,
        };
        decide(&scenario.check, view.as_ref(), &scenario.geo, &env)
    };
    let before = decide_at(last_second);
    assert_eq!(before.reason, Reason::UsageCapReached);
    assert_eq!(before.remaining, Some(0));
    let after = decide_at(next_month);
    assert_eq!(after.reason, Reason::Allow, "{:?}", after.reason);
    assert_eq!(after.remaining, Some(99), "the new month starts at 0");
    assert_ne!(
        after.metering.unwrap().period,
        before.metering.unwrap().period,
        "a new counter"
    );
}
