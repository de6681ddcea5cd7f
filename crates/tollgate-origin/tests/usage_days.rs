//! The daily usage history: every `SyncQuota` that raises a region's
//! cumulative consumed total by `d` adds `d` to the UTC day of the
//! command's own time, under `usage-day/<account>/<feature>/<day>`, so the
//! days of a feature read back in order with one prefix scan and add up to
//! the billing totals.

use tollgate_model::*;
use tollgate_origin::quota::{
    decode_usage_day, usage_day_key, usage_day_of, usage_days_prefix, QuotaSync, USAGE_DAY_MAX,
};
use tollgate_origin::*;
use tollgate_raft::{ApplyContext, MemState};

/// 2026-11-27T23:21:02Z: 39 minutes before midnight.
const NOW: UnixSeconds = UnixSeconds(1_795_821_662);
const DAY: i64 = 86_400;
const CTX: ApplyContext = ApplyContext {
    log_index: 0,
    term: 0,
    position_in_entry: 0,
};

fn account() -> AccountId {
    AccountId::new("acme").unwrap()
}

fn feature(id: &str) -> FeatureId {
    FeatureId::new(id).unwrap()
}

fn counter(feature_id: &str, at: UnixSeconds) -> UsageCounter {
    UsageCounter {
        account: account(),
        feature: feature(feature_id),
        period: UsagePeriod::Month.key_at(at),
    }
}

fn sync_at(
    state: &mut MemState,
    at: UnixSeconds,
    region: &str,
    entries: Vec<QuotaSync>,
) -> OriginResponse {
    let cmd = OriginCommand {
        actor: "region".into(),
        at,
        reason: None,
        op: Op::SyncQuota {
            region: region.into(),
            entries,
        },
    };
    state.apply(&OriginLogic, &CTX, &cmd).unwrap()
}

/// A report of one counter: the region's cumulative consumed total.
fn report(state: &mut MemState, at: UnixSeconds, region: &str, consumed: u64) -> OriginResponse {
    sync_at(
        state,
        at,
        region,
        vec![QuotaSync {
            counter: counter("exports", at),
            consumed,
            released: 0,
        }],
    )
}

fn committed(answer: OriginResponse) {
    assert!(
        matches!(answer, OriginResponse::Committed { .. }),
        "{answer:?}"
    );
}

/// The feature's history as (day, consumed), in key order.
fn days(state: &MemState, feature_id: &str) -> Vec<(u32, u64)> {
    let prefix = usage_days_prefix(&account(), &feature(feature_id));
    state
        .data
        .range(prefix.as_bytes().to_vec()..)
        .take_while(|(k, _)| k.starts_with(prefix.as_bytes()))
        .map(|(k, v)| decode_usage_day(prefix.as_bytes(), k, v).unwrap())
        .collect()
}

fn day(at: UnixSeconds) -> u32 {
    usage_day_of(at).unwrap()
}

#[test]
fn deltas_of_several_syncs_land_on_the_day_of_each_command() {
    let mut state = MemState::default();
    let d0 = day(NOW);
    let tomorrow = UnixSeconds(NOW.0 + 3600); // past midnight
    let later = UnixSeconds(NOW.0 + 3 * DAY);

    committed(report(&mut state, NOW, "eu", 5));
    committed(report(&mut state, UnixSeconds(NOW.0 + 60), "eu", 12));
    assert_eq!(days(&state, "exports"), vec![(d0, 12)], "5 then 7 more");

    committed(report(&mut state, tomorrow, "eu", 20));
    committed(report(&mut state, later, "eu", 21));
    assert_eq!(
        days(&state, "exports"),
        vec![(d0, 12), (d0 + 1, 8), (d0 + 3, 1)],
        "each day holds what the totals rose by that day, days in order"
    );
    let sum: u64 = days(&state, "exports").iter().map(|(_, c)| c).sum();
    assert_eq!(sum, 21, "the days add up to the cumulative total");
}

#[test]
fn a_report_that_raises_no_consumed_total_adds_nothing() {
    let mut state = MemState::default();
    committed(report(&mut state, NOW, "eu", 10));
    let before = days(&state, "exports");

    // Lower than stored: the total never moves back; nothing new at all.
    let answer = report(&mut state, NOW, "eu", 4);
    assert!(
        matches!(&answer, OriginResponse::Rejected(r) if r.code == RejectCode::Conflict),
        "{answer:?}"
    );
    // A retry of the same total.
    let answer = report(&mut state, UnixSeconds(NOW.0 + DAY), "eu", 10);
    assert!(matches!(answer, OriginResponse::Rejected(_)), "{answer:?}");
    assert_eq!(days(&state, "exports"), before);

    // One report raising the counter by 3, then naming it again lower:
    // only the 3 count.
    committed(report(&mut state, NOW, "us", 6));
    committed(sync_at(
        &mut state,
        NOW,
        "eu",
        vec![
            QuotaSync {
                counter: counter("exports", NOW),
                consumed: 13,
                released: 0,
            },
            QuotaSync {
                counter: UsageCounter {
                    account: account(),
                    feature: feature("exports"),
                    period: UsagePeriod::Month.key_at(NOW),
                },
                consumed: 1,
                released: 0,
            },
        ],
    ));
    assert_eq!(days(&state, "exports"), vec![(day(NOW), 10 + 6 + 3)]);
}

#[test]
fn regions_and_periods_add_up_on_one_day() {
    let mut state = MemState::default();
    let d0 = day(NOW);
    committed(report(&mut state, NOW, "eu", 30));
    committed(report(&mut state, NOW, "us", 12));
    committed(report(&mut state, NOW, "ap", 1));
    committed(report(&mut state, NOW, "eu", 31));
    assert_eq!(days(&state, "exports"), vec![(d0, 44)], "30 + 12 + 1 + 1");

    // One report carrying two periods of one feature (the month ending and
    // the next one) and another feature: each adds to its own feature's day.
    let next_month = UsageCounter {
        period: UsagePeriod::Month.key_at(UnixSeconds(NOW.0 + 10 * DAY)),
        ..counter("exports", NOW)
    };
    committed(sync_at(
        &mut state,
        NOW,
        "us",
        vec![
            QuotaSync {
                counter: counter("exports", NOW),
                consumed: 15,
                released: 0,
            },
            QuotaSync {
                counter: next_month,
                consumed: 2,
                released: 0,
            },
            QuotaSync {
                counter: counter("renders", NOW),
                consumed: 9,
                released: 0,
            },
        ],
    ));
    assert_eq!(days(&state, "exports"), vec![(d0, 44 + 3 + 2)]);
    assert_eq!(days(&state, "renders"), vec![(d0, 9)]);
}

#[test]
fn a_day_total_past_u64_is_refused_whole() {
    let mut state = MemState::default();
    committed(report(&mut state, NOW, "eu", u64::MAX - 1));
    let before = state.data.clone();
    let answer = report(&mut state, NOW, "us", 2);
    assert!(
        matches!(&answer, OriginResponse::Rejected(r) if r.code == RejectCode::Invalid),
        "{answer:?}"
    );
    assert_eq!(state.data, before, "nothing of the report is written");
}

#[test]
fn day_keys_sort_by_day_and_decode_strictly() {
    let (a, f) = (account(), feature("exports"));
    let prefix = usage_days_prefix(&a, &f);
    assert_eq!(
        usage_day_key(&a, &f, 20_419),
        b"usage-day/acme/exports/00020419".to_vec()
    );
    assert!(usage_day_key(&a, &f, 9) < usage_day_key(&a, &f, 10));
    assert_eq!(usage_day_of(UnixSeconds(-1)), None);
    assert_eq!(usage_day_of(UnixSeconds(0)), Some(0));
    assert_eq!(usage_day_of(UnixSeconds((USAGE_DAY_MAX + 1) * DAY)), None);
    assert_eq!(
        decode_usage_day(prefix.as_bytes(), &usage_day_key(&a, &f, 7), b"42"),
        Ok((7, 42))
    );
    for (key, value) in [
        (b"usage-day/acme/exports/0000007".to_vec(), &b"1"[..]),
        (b"usage-day/acme/exports/0000007x".to_vec(), b"1"),
        (b"usage-day/acme/other/00000007".to_vec(), b"1"),
        (usage_day_key(&a, &f, 7), b"-1"),
        (usage_day_key(&a, &f, 7), b"\"1\""),
    ] {
        assert!(
            decode_usage_day(prefix.as_bytes(), &key, value).is_err(),
            "{}",
            String::from_utf8_lossy(&key)
        );
    }
}
