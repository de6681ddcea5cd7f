//! Leasing a global cap to regions: the regions together are never allotted
//! more than the cap, the outstanding units never pass the bound, usage
//! reports are cumulative (a retry changes nothing), and crossing 80 % and
//! 100 % is recorded as a `usage.threshold` event. The cap is the origin's
//! own, pooled from its entitlements and catalog as the engine pools it:
//! the `limit` a region sends is never trusted.

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

/// The region's `limit` is what it claims the cap is; the origin ignores it.
fn lease(state: &mut MemState, region: &str, limit: u64, want: u64, bound: u64) -> u64 {
    match lease_answer(state, region, counter(), limit, want, bound) {
        OriginResponse::Leased { granted, .. } => granted,
        OriginResponse::Rejected(r) if r.code == RejectCode::Conflict => 0,
        other => panic!("{other:?}"),
    }
}

fn lease_answer(
    state: &mut MemState,
    region: &str,
    counter: UsageCounter,
    limit: u64,
    want: u64,
    bound: u64,
) -> OriginResponse {
    run(
        state,
        Op::LeaseQuota {
            region: region.into(),
            counter,
            limit,
            want,
            outstanding_max: bound,
        },
    )
}

fn committed(answer: OriginResponse) {
    assert!(
        matches!(answer, OriginResponse::Committed { .. }),
        "{answer:?}"
    );
}

fn hard(limit: u64) -> Option<UsageCap> {
    Some(UsageCap {
        limit,
        enforcement: CapEnforcement::Hard,
        additive: false,
    })
}

fn top_up(limit: u64) -> Option<UsageCap> {
    Some(UsageCap {
        limit,
        enforcement: CapEnforcement::Hard,
        additive: true,
    })
}

fn soft(limit: u64) -> Option<UsageCap> {
    Some(UsageCap {
        limit,
        enforcement: CapEnforcement::Soft,
        additive: false,
    })
}

/// The catalog (a metered `exports` per month, a boolean `cad`) and the
/// account `acme`, without entitlements.
fn seed(state: &mut MemState) {
    committed(run(
        state,
        Op::PutProduct(Product {
            id: ProductId::new("studio").unwrap(),
            name: "Studio".into(),
        }),
    ));
    for (id, kind) in [
        (
            "exports",
            FeatureKind::Metered {
                unit: "export".into(),
                period: UsagePeriod::Month,
            },
        ),
        ("cad", FeatureKind::Boolean),
    ] {
        committed(run(
            state,
            Op::PutFeature(Feature {
                id: FeatureId::new(id).unwrap(),
                product: ProductId::new("studio").unwrap(),
                name: id.into(),
                kind,
                geo_rule: GeoRule::default(),
                offline_policy: None,
                config: ConfigValues::new(),
                auto_approve: None,
            }),
        ));
    }
    committed(run(
        state,
        Op::PutAccount(Account {
            id: AccountId::new("acme").unwrap(),
            name: "Acme".into(),
            status: AccountStatus::Active,
        }),
    ));
}

/// An active entitlement of `acme`, valid from the epoch, for ever.
fn entitlement(id: &str, grant: Grant) -> Entitlement {
    Entitlement {
        id: EntitlementId::new(id).unwrap(),
        account: AccountId::new("acme").unwrap(),
        grant,
        valid_from: UnixSeconds(0),
        valid_until: None,
        grace_period_seconds: 0,
        seats: None,
        usage_cap_overrides: Default::default(),
        status: EntitlementStatus::Active,
        geo_rule: GeoRule::default(),
        offline_policy: None,
        required_role: None,
        allowed_groups: Default::default(),
        source_order: None,
        revision: 0,
        trial: false,
    }
}

fn exports(cap: Option<UsageCap>) -> Grant {
    Grant::Feature(FeatureGrant {
        feature: FeatureId::new("exports").unwrap(),
        usage_cap: cap,
        config: ConfigValues::new(),
    })
}

/// `acme` holds `exports` with a hard cap of `limit`, and nothing else.
fn seeded_with_cap(limit: u64) -> MemState {
    let mut state = MemState::default();
    seed(&mut state);
    committed(run(
        &mut state,
        Op::Grant(entitlement("e-exports", exports(hard(limit)))),
    ));
    state
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
        let mut state = seeded_with_cap(limit);
        // Each region's consumption so far (it never spends beyond its lease).
        let mut spent = [0u64; 3];
        let mut held = [0u64; 3];
        for (r, want, spend) in asks {
            // Every region claims a cap ten times the real one.
            held[r] += lease(&mut state, regions[r], limit * 10, want, bound);
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
    let mut state = seeded_with_cap(100);
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
    // A cap raised at the origin (a top-up pack of 20) leaves room for
    // more; the region's figure plays no part.
    committed(run(
        &mut state,
        Op::Grant(entitlement("e-top-up", exports(top_up(20)))),
    ));
    assert_eq!(
        lease(&mut state, "ap", 100, 50, 1000),
        20,
        "the cap was raised to 120"
    );
    assert_eq!(
        WebhookEvent::of_action("usage.threshold"),
        Some(WebhookEvent::UsageThreshold)
    );
}

/// A soft cap is never leased (checks past it are allowed and billed as
/// overage), but crossing 80 % and 100 % of it is announced all the same,
/// measured against the origin's own cap; an unlimited feature announces
/// nothing.
#[test]
fn soft_caps_raise_thresholds_from_the_origins_own_cap() {
    let thresholds = |state: &MemState| -> Vec<String> {
        state
            .data
            .iter()
            .filter(|(k, _)| k.starts_with(b"audit/"))
            .map(|(_, v)| serde_json::from_slice::<AuditRecord>(v).unwrap())
            .filter(|a| a.action == "usage.threshold")
            .map(|a| a.target)
            .collect()
    };
    let mut state = MemState::default();
    seed(&mut state);
    committed(run(
        &mut state,
        Op::Grant(entitlement("e-exports", exports(soft(50)))),
    ));
    committed(sync(&mut state, "eu", 39, 0));
    assert!(thresholds(&state).is_empty(), "78 % crosses nothing");
    committed(sync(&mut state, "eu", 40, 0));
    committed(sync(&mut state, "us", 12, 0));
    let c = counter();
    assert_eq!(
        thresholds(&state),
        vec![format!("usage/{c}/80"), format!("usage/{c}/100")],
        "80 % and then 104 %: each once"
    );
    committed(sync(&mut state, "us", 30, 0));
    assert_eq!(thresholds(&state).len(), 2, "past 100 %: nothing more");

    let mut unlimited = MemState::default();
    seed(&mut unlimited);
    committed(run(
        &mut unlimited,
        Op::Grant(entitlement("e-exports", exports(None))),
    ));
    committed(sync(&mut unlimited, "eu", 1_000_000, 0));
    assert!(thresholds(&unlimited).is_empty());
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
            auto_approve: None,
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
    // The seat count is the entitlement's: a region asking for far more
    // gets the count (the request carries no count to trust).
    let mut greedy = state.clone();
    assert_eq!(seats(&mut greedy, "eu", u32::MAX), 3);
    assert_eq!(seats(&mut greedy, "us", 1), 0);
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

/// A region asking with an inflated cap gets only what the origin's own
/// grants pool to, as the engine pools them: the largest non-additive hard
/// cap (an entitlement's override beats its plan's) plus every additive
/// one, counting only entitlements usable now (in grace included).
#[test]
fn an_inflated_limit_gets_only_what_the_origin_data_allows() {
    let mut state = MemState::default();
    seed(&mut state);
    committed(run(
        &mut state,
        Op::PutPlan(Plan {
            id: PlanId::new("pro").unwrap(),
            product: ProductId::new("studio").unwrap(),
            name: "Pro".into(),
            tier: 2,
            features: vec![FeatureGrant {
                feature: FeatureId::new("exports").unwrap(),
                usage_cap: hard(100),
                config: ConfigValues::new(),
            }],
            included_seats: None,
            geo_rule: GeoRule::default(),
            offline_policy: None,
        }),
    ));
    committed(run(
        &mut state,
        Op::PutAddon(Addon {
            id: AddonId::new("pack").unwrap(),
            product: ProductId::new("studio").unwrap(),
            name: "Export pack".into(),
            features: vec![FeatureGrant {
                feature: FeatureId::new("exports").unwrap(),
                usage_cap: top_up(50),
                config: ConfigValues::new(),
            }],
            compatible_plans: Default::default(),
            geo_rule: GeoRule::default(),
            offline_policy: None,
            auto_approve: None,
        }),
    ));
    let mut pro = entitlement("e-pro", Grant::Plan(PlanId::new("pro").unwrap()));
    pro.usage_cap_overrides
        .insert(FeatureId::new("exports").unwrap(), hard(120).unwrap());
    let mut revoked = entitlement("e-revoked", exports(hard(1000)));
    revoked.status = EntitlementStatus::Revoked;
    let mut expired = entitlement("e-expired", exports(hard(1000)));
    expired.valid_from = UnixSeconds(NOW.0 - 7200);
    expired.valid_until = Some(UnixSeconds(NOW.0 - 3600));
    let mut future = entitlement("e-future", exports(hard(1000)));
    future.valid_from = UnixSeconds(NOW.0 + 3600);
    let mut in_grace = entitlement("e-grace", exports(top_up(10)));
    in_grace.valid_from = UnixSeconds(NOW.0 - 7200);
    in_grace.valid_until = Some(UnixSeconds(NOW.0 - 60));
    in_grace.grace_period_seconds = 3600;
    for ent in [
        pro,
        entitlement("e-pack", Grant::Addon(AddonId::new("pack").unwrap())),
        revoked,
        expired,
        future,
        in_grace,
        // A soft cap lets its own checks go past it: they never lease.
        entitlement("e-soft", exports(soft(5000))),
    ] {
        committed(run(&mut state, Op::Grant(ent)));
    }

    // 120 (the override) + 50 (the pack) + 10 (in grace): 180, whatever is
    // asked.
    assert_eq!(lease(&mut state, "eu", u64::MAX, 1_000_000, u64::MAX), 180);
    assert_eq!(quota(&state).limit, 180, "the origin's cap is recorded");
    assert_eq!(quota(&state).allotted(), 180);
    assert_eq!(
        lease(&mut state, "us", 1_000_000, 1, u64::MAX),
        0,
        "nothing left"
    );
    // A region claiming a smaller cap is not held to it either.
    let mut state = seeded_with_cap(100);
    assert_eq!(lease(&mut state, "eu", 10, 60, u64::MAX), 60);
}

/// A counter the origin holds no hard cap for is refused, whatever limit
/// the region sends, and nothing is written.
#[test]
fn a_lease_without_a_hard_cap_at_the_origin_is_refused() {
    let mut state = MemState::default();
    seed(&mut state);
    committed(run(
        &mut state,
        Op::Grant(entitlement("e-unlimited", exports(None))),
    ));
    committed(run(
        &mut state,
        Op::Grant(entitlement(
            "e-cad",
            Grant::Feature(FeatureGrant::new(FeatureId::new("cad").unwrap())),
        )),
    ));
    let month = UsagePeriod::Month.key_at(NOW);
    let counter_of = |account: &str, feature: &str, period: PeriodKey| UsageCounter {
        account: AccountId::new(account).unwrap(),
        feature: FeatureId::new(feature).unwrap(),
        period,
    };
    let far = PeriodKey {
        index: month.index + 5,
        ..month
    };
    let rows = [
        (
            "unknown account",
            counter_of("nobody", "exports", month),
            RejectCode::NotFound,
            "unknown account nobody",
        ),
        (
            "only an unlimited grant",
            counter_of("acme", "exports", month),
            RejectCode::Conflict,
            "grants exports with a hard cap",
        ),
        (
            "a boolean feature",
            counter_of("acme", "cad", month),
            RejectCode::Conflict,
            "not a metered feature",
        ),
        (
            "a feature the catalog does not have",
            counter_of("acme", "nope", month),
            RejectCode::Conflict,
            "not a metered feature",
        ),
        (
            "a day counter of a monthly feature",
            counter_of("acme", "exports", UsagePeriod::Day.key_at(NOW)),
            RejectCode::Invalid,
            "is not the period",
        ),
        (
            "a month five months ahead",
            counter_of("acme", "exports", far),
            RejectCode::Invalid,
            "is not the period",
        ),
    ];
    let before = state.clone();
    for (what, counter, code, message) in rows {
        match lease_answer(&mut state, "eu", counter, 1_000_000, 10, u64::MAX) {
            OriginResponse::Rejected(r) => {
                assert_eq!(r.code, code, "{what}: {}", r.message);
                assert!(r.message.contains(message), "{what}: {}", r.message);
            }
            other => panic!("{what}: {other:?}"),
        }
        assert_eq!(state, before, "{what}: nothing written");
    }

    // A suspended account leases nothing, even with a hard cap granted.
    let mut state = seeded_with_cap(100);
    committed(run(
        &mut state,
        Op::PutAccount(Account {
            id: AccountId::new("acme").unwrap(),
            name: "Acme".into(),
            status: AccountStatus::Suspended,
        }),
    ));
    let before = state.clone();
    match lease_answer(&mut state, "eu", counter(), 100, 10, u64::MAX) {
        OriginResponse::Rejected(r) => {
            assert_eq!(r.code, RejectCode::Conflict);
            assert!(r.message.contains("suspended"), "{}", r.message);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state, before);
}
