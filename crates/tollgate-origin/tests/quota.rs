//! Leasing a global cap to regions: the regions together are never allotted
//! more than the cap, the outstanding units never pass the bound, usage
//! reports are cumulative (a retry changes nothing), and crossing 80 % and
//! 100 % is recorded as a `usage.threshold` event.

use proptest::prelude::*;
use tollgate_model::*;
use tollgate_origin::quota::{quota_key, QuotaState, QuotaSync};
use tollgate_origin::*;
use tollgate_raft::{ApplyContext, MemState};

const NOW: UnixSeconds = UnixSeconds(1_795_821_662);
const CTX: ApplyContext = ApplyContext {
    log_index: 0,
    term: 0,
    position_in_entry: 0,
};

fn counter() -> UsageCounter {
    UsageCounter {
        account: AccountId::new("acme").unwrap(),
        feature: FeatureId::new("exports").unwrap(),
        period: UsagePeriod::Month.key_at(NOW),
    }
}

fn run(state: &mut MemState, op: Op) -> OriginResponse {
    let cmd = OriginCommand {
        actor: "region".into(),
        at: NOW,
        reason: None,
        op,
    };
    state.apply(&OriginLogic, &CTX, &cmd).unwrap()
}

fn lease(state: &mut MemState, region: &str, limit: u64, want: u64, bound: u64) -> u64 {
    match run(
        state,
        Op::LeaseQuota {
            region: region.into(),
            counter: counter(),
            limit,
            want,
            outstanding_max: bound,
        },
    ) {
        OriginResponse::Leased { granted, .. } => granted,
        OriginResponse::Rejected(r) if r.code == RejectCode::Conflict => 0,
        other => panic!("{other:?}"),
    }
}

fn sync(state: &mut MemState, region: &str, consumed: u64, released: u64) -> OriginResponse {
    run(
        state,
        Op::SyncQuota {
            region: region.into(),
            entries: vec![QuotaSync {
                counter: counter(),
                consumed,
                released,
            }],
        },
    )
}

fn quota(state: &MemState) -> QuotaState {
    serde_json::from_slice(&state.data[&quota_key(&counter())]).unwrap()
}

proptest! {
    #[test]
    fn regions_are_never_allotted_more_than_the_cap_nor_the_bound(
        asks in prop::collection::vec((0usize..3, 1u64..40, 0u64..40), 1..40),
        limit in 1u64..200,
        bound in 1u64..100,
    ) {
        let regions = ["eu", "us", "ap"];
        let mut state = MemState::default();
        // Each region's consumption so far (it never spends beyond its lease).
        let mut spent = [0u64; 3];
        let mut held = [0u64; 3];
        for (r, want, spend) in asks {
            held[r] += lease(&mut state, regions[r], limit, want, bound);
            spent[r] = (spent[r] + spend).min(held[r]);
            sync(&mut state, regions[r], spent[r], 0);
            let q = quota(&state);
            prop_assert!(q.allotted() <= limit, "{:?}", q);
            prop_assert!(q.outstanding() <= bound, "{:?}", q);
            prop_assert_eq!(q.consumed(), spent.iter().sum::<u64>());
            let total: u64 = state
                .data
                .get(tollgate_origin::quota::OUTSTANDING_TOTAL)
                .map(|v| serde_json::from_slice(v).unwrap())
                .unwrap_or(0);
            prop_assert_eq!(total, q.outstanding(), "the running total matches");
        }
    }
}

#[test]
fn reports_are_cumulative_and_thresholds_are_announced_once() {
    let mut state = MemState::default();
    assert_eq!(lease(&mut state, "eu", 100, 60, 1000), 60);
    assert_eq!(
        lease(&mut state, "us", 100, 60, 1000),
        40,
        "only what is left"
    );
    assert_eq!(lease(&mut state, "us", 100, 1, 1000), 0, "nothing left");
    assert!(matches!(
        sync(&mut state, "eu", 50, 0),
        OriginResponse::Committed { .. }
    ));
    // A retried report: nothing new, nothing written.
    let before = state.clone();
    assert!(matches!(
        sync(&mut state, "eu", 50, 0),
        OriginResponse::Rejected(_)
    ));
    assert!(
        matches!(sync(&mut state, "eu", 40, 0), OriginResponse::Rejected(_)),
        "never backwards"
    );
    assert_eq!(state, before);
    let audit_actions = |state: &MemState| -> Vec<String> {
        state
            .data
            .iter()
            .filter(|(k, _)| k.starts_with(b"audit/"))
            .map(|(_, v)| serde_json::from_slice::<AuditRecord>(v).unwrap().action)
            .collect()
    };
    // 50 + 35 = 85 %: the 80 % threshold, once.
    sync(&mut state, "us", 35, 0);
    sync(&mut state, "us", 36, 0);
    let thresholds = |state: &MemState| {
        audit_actions(state)
            .iter()
            .filter(|a| *a == "usage.threshold")
            .count()
    };
    assert_eq!(thresholds(&state), 1);
    sync(&mut state, "us", 40, 0);
    sync(&mut state, "eu", 60, 0);
    assert_eq!(thresholds(&state), 2, "and 100 %, once");
    let q = quota(&state);
    assert_eq!(q.consumed(), 100);
    assert_eq!(q.outstanding(), 0);
    // A raised cap leaves room for more.
    assert_eq!(
        lease(&mut state, "ap", 120, 50, 1000),
        20,
        "the cap was raised to 120"
    );
    assert_eq!(
        WebhookEvent::of_action("usage.threshold"),
        Some(WebhookEvent::UsageThreshold)
    );
}

#[test]
fn regions_together_never_hold_more_seats_than_the_entitlement_has() {
    let mut state = MemState::default();
    run(
        &mut state,
        Op::PutProduct(Product {
            id: ProductId::new("studio").unwrap(),
            name: "Studio".into(),
        }),
    );
    run(
        &mut state,
        Op::PutFeature(Feature {
            id: FeatureId::new("cad").unwrap(),
            product: ProductId::new("studio").unwrap(),
            name: "CAD".into(),
            kind: FeatureKind::Boolean,
            geo_rule: GeoRule::default(),
            offline_policy: None,
            config: ConfigValues::new(),
        }),
    );
    run(
        &mut state,
        Op::PutAccount(Account {
            id: AccountId::new("acme").unwrap(),
            name: "Acme".into(),
            status: AccountStatus::Active,
        }),
    );
    let granted = run(
        &mut state,
        Op::Grant(Entitlement {
            id: EntitlementId::new("e-cad").unwrap(),
            account: AccountId::new("acme").unwrap(),
            grant: Grant::Feature(FeatureGrant::new(FeatureId::new("cad").unwrap())),
            valid_from: UnixSeconds(0),
            valid_until: None,
            grace_period_seconds: 0,
            seats: Some(Seats {
                count: 3,
                mode: SeatMode::Floating {
                    lease_ttl_seconds: 60,
                },
            }),
            usage_cap_overrides: Default::default(),
            status: EntitlementStatus::Active,
            geo_rule: GeoRule::default(),
            offline_policy: None,
            required_role: None,
            allowed_groups: Default::default(),
            source_order: None,
            revision: 0,
            trial: false,
        }),
    );
    assert!(
        matches!(granted, OriginResponse::Committed { .. }),
        "{granted:?}"
    );
    let seats = |state: &mut MemState, region: &str, want: u32| match run(
        state,
        Op::LeaseSeats {
            region: region.into(),
            entitlement: EntitlementId::new("e-cad").unwrap(),
            want,
        },
    ) {
        OriginResponse::Leased { granted, .. } => granted,
        OriginResponse::Rejected(r) if r.code == RejectCode::Conflict => 0,
        other => panic!("{other:?}"),
    };
    assert_eq!(seats(&mut state, "eu", 2), 2);
    assert_eq!(seats(&mut state, "us", 2), 1, "one left");
    assert_eq!(seats(&mut state, "ap", 1), 0, "none left");
    // eu hands one back (cumulative: a retry changes nothing); ap gets it.
    let release = |state: &mut MemState, total: u64| {
        run(
            state,
            Op::ReleaseSeats {
                region: "eu".into(),
                entitlement: EntitlementId::new("e-cad").unwrap(),
                released_total: total,
            },
        )
    };
    assert!(matches!(
        release(&mut state, 1),
        OriginResponse::Committed { .. }
    ));
    assert!(matches!(
        release(&mut state, 1),
        OriginResponse::Rejected(_)
    ));
    assert_eq!(seats(&mut state, "ap", 1), 1);
    assert_eq!(seats(&mut state, "us", 1), 0);
    let unknown = run(
        &mut state,
        Op::LeaseSeats {
            region: "eu".into(),
            entitlement: EntitlementId::new("nope").unwrap(),
            want: 1,
        },
    );
    assert!(matches!(unknown, OriginResponse::Rejected(ref r) if r.code == RejectCode::NotFound));
}
