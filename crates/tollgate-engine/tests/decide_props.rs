//! Property tests: invariants of the decision engine over random
//! entitlements, locations, usage and clocks.

mod common;

use common::*;
use proptest::prelude::*;
use tollgate_model::*;

const COUNTRIES: [&str; 5] = ["DE", "US", "FR", "KP", "JP"];
const FEATURES: [&str; 5] = ["export", "render", "sso", "ai", "beta"];

fn countries() -> impl Strategy<Value = std::collections::BTreeSet<CountryCode>> {
    proptest::sample::subsequence(COUNTRIES.to_vec(), 0..3)
        .prop_map(|cs| cs.into_iter().map(country).collect())
}

fn unknown_location() -> impl Strategy<Value = Option<UnknownLocation>> {
    proptest::option::of(prop_oneof![
        Just(UnknownLocation::Deny),
        Just(UnknownLocation::Allow),
    ])
}

fn geo_rule() -> impl Strategy<Value = GeoRule> {
    (countries(), countries(), any::<bool>(), unknown_location()).prop_map(
        |(allow, deny, block_anonymous, unknown_location)| GeoRule {
            allow_countries: allow,
            deny_countries: deny,
            block_anonymous,
            unknown_location,
            ..Default::default()
        },
    )
}

fn status() -> impl Strategy<Value = EntitlementStatus> {
    prop_oneof![
        4 => Just(EntitlementStatus::Active),
        1 => Just(EntitlementStatus::Suspended),
        1 => Just(EntitlementStatus::Revoked),
    ]
}

fn grant() -> impl Strategy<Value = Grant> {
    prop_oneof![
        prop::sample::select(vec!["basic", "pro", "enterprise", "legacy"]).prop_map(plan),
        prop::sample::select(vec!["render-pack", "sso-addon", "beta-access"]).prop_map(addon),
        prop::sample::select(FEATURES.to_vec()).prop_map(|f| Grant::Feature(plain(f))),
    ]
}

fn entitlement(n: usize) -> impl Strategy<Value = Entitlement> {
    (
        grant(),
        status(),
        -3 * DAY..DAY,
        proptest::option::of(-3 * DAY..3 * DAY),
        0u64..(2 * DAY as u64),
        geo_rule(),
        proptest::option::of(prop::sample::select(vec!["admin", "owner"])),
        proptest::option::of((1u32..3, any::<bool>())),
    )
        .prop_map(
            move |(grant, status, from, until, grace, geo_rule, role, seats)| {
                let mut e = ent(&format!("e{n}"), grant);
                e.status = status;
                e.valid_from = UnixSeconds(NOW.0 + from);
                e.valid_until = until
                    .map(|u| UnixSeconds(NOW.0 + u))
                    .filter(|u| *u > e.valid_from);
                e.grace_period_seconds = grace;
                e.geo_rule = geo_rule;
                e.required_role = role.map(id);
                e.seats = seats.map(|(count, floating)| Seats {
                    count,
                    mode: if floating {
                        SeatMode::Floating {
                            lease_ttl_seconds: 60,
                        }
                    } else {
                        SeatMode::Named {
                            assigned: [id("alice")].into_iter().collect(),
                        }
                    },
                });
                e
            },
        )
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(0usize..1, 0..6)
            .prop_flat_map(|v| (0..v.len()).map(entitlement).collect::<Vec<_>>()),
        prop::sample::select(FEATURES.to_vec()),
        proptest::option::of(prop::sample::select(vec![
            "alice", "bob", "laptop-1", "mallory",
        ])),
        proptest::option::of(prop::sample::select(COUNTRIES.to_vec())),
        proptest::option::of(any::<bool>()),
        0u64..200,
        0u64..1500,
        0i64..(5 * DAY),
    )
        .prop_map(
            |(ents, feature, subject, from, anon, consume, consumed, stale)| {
                let mut s = Scenario::new(ents)
                    .feature(feature)
                    .subject(subject)
                    .located_in(from, None)
                    .consume(consume)
                    .consumed("render", consumed)
                    .stale_for(stale)
                    .lease("e0", "bob", UnixSeconds(NOW.0 + 30));
                s.geo.anonymous = anon.map(|vpn| AnonymousNetwork {
                    vpn,
                    ..Default::default()
                });
                s
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn revoked_or_suspended_never_allows(mut s in scenario()) {
        for e in &mut s.entitlements {
            if e.status == EntitlementStatus::Active {
                e.status = EntitlementStatus::Revoked;
            }
        }
        prop_assert!(!s.decide().allowed());
    }

    #[test]
    fn an_allowing_entitlement_is_active_and_in_its_window(s in scenario()) {
        let d = s.decide();
        if d.allowed() {
            let e = s.entitlements.iter().find(|e| Some(&e.id) == d.entitlement.as_ref());
            let e = e.expect("an allow names its entitlement");
            prop_assert_eq!(e.status, EntitlementStatus::Active);
            prop_assert!(s.now >= e.valid_from);
            prop_assert!(e.usable_until().is_none_or(|end| s.now <= end));
        }
    }

    #[test]
    fn adding_a_denied_country_never_turns_a_deny_into_an_allow(
        s in scenario(),
        target in 0usize..6,
        denied in prop::sample::select(COUNTRIES.to_vec()),
    ) {
        let before = s.decide();
        let mut after_s = s.clone();
        if let Some(e) = after_s.entitlements.get_mut(target) {
            e.geo_rule.deny_countries.insert(country(denied));
        }
        let after = after_s.decide();
        prop_assert!(before.allowed() || !after.allowed(),
            "deny {:?} became {:?}", before.reason, after.reason);
    }

    #[test]
    fn letting_unknown_locations_through_never_turns_an_allow_into_a_deny(
        s in scenario(),
        target in 0usize..6,
    ) {
        let before = s.decide();
        let mut after_s = s.clone();
        if let Some(e) = after_s.entitlements.get_mut(target) {
            e.geo_rule.unknown_location = Some(UnknownLocation::Allow);
        }
        let after = after_s.decide();
        prop_assert!(!before.allowed() || after.allowed(),
            "allow {:?} became {:?}", before.reason, after.reason);
    }

    #[test]
    fn denying_unknown_locations_never_turns_a_deny_into_an_allow(
        s in scenario(),
        target in 0usize..6,
    ) {
        let before = s.decide();
        let mut after_s = s.clone();
        if let Some(e) = after_s.entitlements.get_mut(target) {
            e.geo_rule.unknown_location = Some(UnknownLocation::Deny);
        }
        let after = after_s.decide();
        prop_assert!(before.allowed() || !after.allowed(),
            "deny {:?} became {:?}", before.reason, after.reason);
    }

    #[test]
    fn an_unknown_location_passes_no_rule_that_names_places_by_default(
        mut s in scenario(),
    ) {
        s = s.located_in(None, None);
        for e in &mut s.entitlements {
            if e.geo_rule.unknown_location == Some(UnknownLocation::Allow) {
                e.geo_rule.unknown_location = None;
            }
            if !e.geo_rule.has_location_lists() {
                e.geo_rule.deny_countries.insert(country("KP"));
            }
        }
        // Every entitlement's own rule now names places and leaves the
        // unknown location to the default: none can allow.
        prop_assert!(!s.decide().allowed(), "{:?}", s.decide().reason);
    }

    #[test]
    fn past_valid_until_plus_grace_never_allows(mut s in scenario(), beyond in 1i64..(30 * DAY)) {
        for e in &mut s.entitlements {
            if e.valid_until.is_none() {
                e.valid_until = Some(UnixSeconds(e.valid_from.0 + DAY));
            }
        }
        let last_end = s.entitlements.iter().filter_map(|e| e.usable_until()).max();
        let now = UnixSeconds(last_end.unwrap_or(NOW).0 + beyond);
        let stale_for = s.now.seconds_since(s.freshness.last_origin_contact.unwrap());
        s.freshness.last_origin_contact = Some(UnixSeconds(now.0 - stale_for as i64));
        let s = s.at(now);
        prop_assert!(!s.decide().allowed());
    }

    #[test]
    fn consuming_more_never_turns_a_deny_into_an_allow(s in scenario(), extra in 1u64..1000) {
        let before = s.decide();
        let after = s.clone().consume(s.check.consume + extra).decide();
        prop_assert!(before.allowed() || !after.allowed());
    }

    #[test]
    fn deciding_is_deterministic(s in scenario()) {
        prop_assert_eq!(s.decide(), s.decide());
    }
}

/// The properties above are only worth something if random scenarios both
/// allow and deny; this keeps the generator honest.
#[test]
fn the_generator_produces_allows_and_denials() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = scenario();
    let mut reasons = std::collections::HashSet::new();
    for _ in 0..3000 {
        let s = strategy.new_tree(&mut runner).unwrap().current();
        reasons.insert(s.decide().reason);
    }
    for expected in tollgate_engine::Reason::ALL {
        if matches!(expected, tollgate_engine::Reason::UnknownAccount) {
            continue;
        }
        assert!(
            reasons.contains(&expected),
            "generator never produced {expected}: {reasons:?}"
        );
    }
}
