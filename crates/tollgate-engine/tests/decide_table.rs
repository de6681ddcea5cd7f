//! Table-driven tests of the decision engine: every reason code has rows,
//! and every precedence rule between reasons has a row.

mod common;

use common::*;
use tollgate_engine::{Decision, Reason, UpgradeHint, UpgradeTarget};
use tollgate_model::*;

/// Decides `scenario` and asserts the reason; returns the decision for the
/// row's further assertions.
fn check(row: &str, scenario: Scenario, expected: Reason) -> Decision {
    let decision = scenario.decide();
    assert_eq!(
        decision.reason,
        expected,
        "row {row:?}: expected {expected}, got {:?}\n{}",
        decision,
        decision.explain()
    );
    assert_eq!(decision.allowed(), expected.is_allowed(), "row {row:?}");
    decision
}

fn with(mut e: Entitlement, f: impl FnOnce(&mut Entitlement)) -> Entitlement {
    f(&mut e);
    e
}

fn t(offset_seconds: i64) -> UnixSeconds {
    UnixSeconds(NOW.0 + offset_seconds)
}

#[test]
fn allow_and_the_decision_details() {
    let d = check(
        "plan grants feature",
        Scenario::new(vec![ent("e1", plan("pro"))]),
        Reason::Allow,
    );
    assert_eq!(d.entitlement, Some(id("e1")));
    assert_eq!(d.revision, 42);
    assert_eq!(d.staleness_seconds, Some(0));
    assert_eq!(d.limit, None, "boolean features have no cap");
    assert_eq!(
        d.config.get("max_resolution").map(String::as_str),
        Some("4k"),
        "the plan's config overrides the feature default"
    );
    let d = check(
        "basic keeps the feature default",
        Scenario::new(vec![ent("e1", plan("basic"))]),
        Reason::Allow,
    );
    assert_eq!(
        d.config.get("max_resolution").map(String::as_str),
        Some("1080p")
    );
    check(
        "single-feature entitlement",
        Scenario::new(vec![ent("e1", Grant::Feature(plain("beta")))]).feature("beta"),
        Reason::Allow,
    );
    check(
        "add-on grants feature",
        Scenario::new(vec![ent("e1", addon("beta-access"))]).feature("beta"),
        Reason::Allow,
    );
    let d = check(
        "a trial allows and says so",
        Scenario::new(vec![with(ent("t1", plan("pro")), |e| e.trial = true)]),
        Reason::Allow,
    );
    assert!(d.trial && d.explain().contains("trial"));
    check(
        "no subject needed without roles or seats",
        Scenario::new(vec![ent("e1", plan("pro"))]).subject(None),
        Reason::Allow,
    );
}

#[test]
fn validity_window_grace_and_expiry() {
    let until = |until: i64, grace: u64| {
        with(ent("e1", plan("pro")), |e| {
            e.valid_until = Some(t(until));
            e.grace_period_seconds = grace;
        })
    };
    let d = check(
        "at valid_until",
        Scenario::new(vec![until(0, 100)]),
        Reason::Allow,
    );
    assert_eq!(d.valid_until, Some(NOW));
    check(
        "just past valid_until",
        Scenario::new(vec![until(-1, 100)]),
        Reason::InGrace,
    );
    check(
        "at the end of grace",
        Scenario::new(vec![until(-100, 100)]),
        Reason::InGrace,
    );
    let d = check(
        "past grace",
        Scenario::new(vec![until(-101, 100)]),
        Reason::Expired,
    );
    assert_eq!(d.entitlement, Some(id("e1")));
    check(
        "no grace",
        Scenario::new(vec![until(-1, 0)]),
        Reason::Expired,
    );
    check(
        "not yet valid",
        Scenario::new(vec![with(ent("e1", plan("pro")), |e| e.valid_from = t(10))]),
        Reason::NotYetValid,
    );
    check(
        "valid from exactly now",
        Scenario::new(vec![with(ent("e1", plan("pro")), |e| e.valid_from = NOW)]),
        Reason::Allow,
    );
}

#[test]
fn status_account_and_subject() {
    let status = |s| with(ent("e1", plan("pro")), |e| e.status = s);
    check(
        "suspended",
        Scenario::new(vec![status(EntitlementStatus::Suspended)]),
        Reason::Suspended,
    );
    check(
        "revoked",
        Scenario::new(vec![status(EntitlementStatus::Revoked)]),
        Reason::Revoked,
    );
    let mut s = Scenario::new(vec![ent("e1", plan("pro"))]);
    s.account.as_mut().unwrap().status = AccountStatus::Suspended;
    let d = check("account suspended", s, Reason::Suspended);
    assert_eq!(
        d.entitlement, None,
        "the account decided, not an entitlement"
    );
    let mut s = Scenario::new(vec![ent("e1", plan("pro"))]);
    s.account = None;
    check("unknown account", s, Reason::UnknownAccount);
    check(
        "unknown subject",
        Scenario::new(vec![ent("e1", plan("pro"))]).subject(Some("mallory")),
        Reason::UnknownSubject,
    );
}

#[test]
fn not_entitled_with_upgrade_hints() {
    let d = check(
        "basic lacks sso: the compatible add-on is suggested",
        Scenario::new(vec![ent("e1", plan("basic"))]).feature("sso"),
        Reason::NotEntitled,
    );
    assert_eq!(
        d.upgrade_hint,
        Some(UpgradeHint {
            target: UpgradeTarget::Addon(id("sso-addon")),
            limit: None
        })
    );
    let d = check(
        "pro lacks ai: the next plan up is suggested",
        Scenario::new(vec![ent("e1", plan("pro"))]).feature("ai"),
        Reason::NotEntitled,
    );
    assert_eq!(
        d.upgrade_hint.map(|h| h.target),
        Some(UpgradeTarget::Plan(id("enterprise")))
    );
    let d = check(
        "unknown feature: no hint",
        Scenario::new(vec![ent("e1", plan("pro"))]).feature("teleport"),
        Reason::NotEntitled,
    );
    assert_eq!(d.upgrade_hint, None);
    check(
        "no entitlements at all",
        Scenario::new(vec![]),
        Reason::NotEntitled,
    );
    check(
        "entitlement to an unknown plan grants nothing",
        Scenario::new(vec![ent("e1", plan("legacy"))]),
        Reason::NotEntitled,
    );
}

#[test]
fn roles_and_groups() {
    let admin_only = with(ent("e1", plan("pro")), |e| {
        e.required_role = Some(id("admin"))
    });
    check(
        "admin has the role",
        Scenario::new(vec![admin_only.clone()]),
        Reason::Allow,
    );
    check(
        "bob lacks it",
        Scenario::new(vec![admin_only.clone()]).subject(Some("bob")),
        Reason::RoleRequired,
    );
    check(
        "no subject",
        Scenario::new(vec![admin_only]).subject(None),
        Reason::RoleRequired,
    );
    let eng_only = with(ent("e1", plan("pro")), |e| {
        e.allowed_groups.insert(id("eng"));
    });
    check(
        "alice is in eng",
        Scenario::new(vec![eng_only.clone()]),
        Reason::Allow,
    );
    check(
        "bob is in sales",
        Scenario::new(vec![eng_only]).subject(Some("bob")),
        Reason::RoleRequired,
    );
}

#[test]
fn geography() {
    let only_de = with(ent("e1", plan("pro")), |e| {
        e.geo_rule.allow_countries.insert(country("DE"));
    });
    check(
        "in the allow-list",
        Scenario::new(vec![only_de.clone()]),
        Reason::Allow,
    );
    check(
        "outside the allow-list",
        Scenario::new(vec![only_de.clone()]).located_in(Some("US"), Some(Continent::NorthAmerica)),
        Reason::GeoBlocked,
    );
    check(
        "unknown location fails an allow-list",
        Scenario::new(vec![only_de]).located_in(None, None),
        Reason::GeoBlocked,
    );
    let no_eu = with(ent("e1", plan("pro")), |e| {
        e.geo_rule.deny_continents.insert(Continent::Europe);
    });
    check(
        "denied continent",
        Scenario::new(vec![no_eu.clone()]),
        Reason::GeoBlocked,
    );
    check(
        "a known location outside a deny-list passes it",
        Scenario::new(vec![no_eu]).located_in(Some("US"), Some(Continent::NorthAmerica)),
        Reason::Allow,
    );
    let not_berlin = with(ent("e1", plan("pro")), |e| {
        e.geo_rule
            .deny_subdivisions
            .insert(SubdivisionCode::new("DE-BE").unwrap());
        e.geo_rule.allow_countries.insert(country("DE"));
    });
    check(
        "deny beats allow (subdivision)",
        Scenario::new(vec![not_berlin]),
        Reason::GeoBlocked,
    );
    let eu_or_california = with(ent("e1", plan("pro")), |e| {
        e.geo_rule.allow_continents.insert(Continent::Europe);
        e.geo_rule
            .allow_subdivisions
            .insert(SubdivisionCode::new("US-CA").unwrap());
    });
    let mut s =
        Scenario::new(vec![eu_or_california]).located_in(Some("US"), Some(Continent::NorthAmerica));
    s.geo.subdivisions = vec![SubdivisionCode::new("US-CA").unwrap()];
    check("allowed by subdivision", s, Reason::Allow);
    check(
        "feature's own rule applies to every plan",
        Scenario::new(vec![ent("e1", plan("enterprise"))])
            .feature("ai")
            .located_in(Some("KP"), Some(Continent::Asia)),
        Reason::GeoBlocked,
    );
    let mut catalog = catalog();
    catalog
        .plans
        .get_mut("pro")
        .unwrap()
        .geo_rule
        .deny_countries
        .insert(country("DE"));
    let d = Scenario::new(vec![ent("e1", plan("pro"))]).decide_with(&catalog);
    assert_eq!(d.reason, Reason::GeoBlocked, "the plan's rule applies");
}

#[test]
fn unknown_locations() {
    let unknown = |e: Entitlement| Scenario::new(vec![e]).located_in(None, None);
    let rule = |f: fn(&mut GeoRule), unknown_location: Option<UnknownLocation>| {
        with(ent("e1", plan("pro")), move |e| {
            f(&mut e.geo_rule);
            e.geo_rule.unknown_location = unknown_location;
        })
    };
    let deny_ru: fn(&mut GeoRule) = |r| {
        r.deny_countries.insert(country("RU"));
    };
    let deny_asia: fn(&mut GeoRule) = |r| {
        r.deny_continents.insert(Continent::Asia);
    };
    let allow_eu: fn(&mut GeoRule) = |r| {
        r.allow_continents.insert(Continent::Europe);
    };
    let allow_se: fn(&mut GeoRule) = |r| {
        r.allow_countries.insert(country("SE"));
    };
    let no_lists: fn(&mut GeoRule) = |_| {};
    let anonymous: fn(&mut GeoRule) = |r| r.block_anonymous = true;
    use UnknownLocation::{Allow, Deny};
    check(
        "deny-list, unknown location, default: denied (fail closed)",
        unknown(rule(deny_ru, None)),
        Reason::GeoBlocked,
    );
    check(
        "deny-list of continents, unknown location, default: denied",
        unknown(rule(deny_asia, None)),
        Reason::GeoBlocked,
    );
    check(
        "deny-list, unknown location, deny",
        unknown(rule(deny_ru, Some(Deny))),
        Reason::GeoBlocked,
    );
    check(
        "deny-list, unknown location, allow: passes",
        unknown(rule(deny_ru, Some(Allow))),
        Reason::Allow,
    );
    check(
        "deny-list, known location outside it, default: passes",
        Scenario::new(vec![rule(deny_ru, None)]),
        Reason::Allow,
    );
    check(
        "deny-list, known location inside it, allow: still denied",
        Scenario::new(vec![rule(deny_ru, Some(Allow))])
            .located_in(Some("RU"), Some(Continent::Europe)),
        Reason::GeoBlocked,
    );
    check(
        "allow-list, unknown location, default: denied",
        unknown(rule(allow_eu, None)),
        Reason::GeoBlocked,
    );
    check(
        "allow-list, unknown location, deny",
        unknown(rule(allow_se, Some(Deny))),
        Reason::GeoBlocked,
    );
    check(
        "allow-list, unknown location, allow: passes",
        unknown(rule(allow_se, Some(Allow))),
        Reason::Allow,
    );
    check(
        "allow-list, known location outside it, allow: still denied",
        Scenario::new(vec![rule(allow_se, Some(Allow))])
            .located_in(Some("US"), Some(Continent::NorthAmerica)),
        Reason::GeoBlocked,
    );
    check(
        "no lists, unknown location, default: location not looked at",
        unknown(rule(no_lists, None)),
        Reason::Allow,
    );
    check(
        "no lists, unknown location, deny: the location must be known",
        unknown(rule(no_lists, Some(Deny))),
        Reason::GeoBlocked,
    );
    check(
        "no lists, known location, deny: passes",
        Scenario::new(vec![rule(no_lists, Some(Deny))]),
        Reason::Allow,
    );
    check(
        "block_anonymous only, unknown location, default: passes",
        unknown(rule(anonymous, None)),
        Reason::Allow,
    );
    let mut vpn = unknown(rule(deny_ru, Some(Allow)));
    vpn.geo.anonymous = Some(AnonymousNetwork {
        vpn: true,
        ..Default::default()
    });
    vpn.entitlements[0].geo_rule.block_anonymous = true;
    check(
        "unknown location let through still meets block_anonymous",
        vpn,
        Reason::AnonymousNetworkBlocked,
    );
    let mut catalog = catalog();
    catalog
        .plans
        .get_mut("pro")
        .unwrap()
        .geo_rule
        .deny_countries
        .insert(country("RU"));
    let d = unknown(rule(no_lists, Some(Allow))).decide_with(&catalog);
    assert_eq!(
        d.reason,
        Reason::GeoBlocked,
        "rules stack: the plan's deny-list denies an unknown location \
         whatever the entitlement's own rule allows"
    );
    let d = Scenario::new(vec![ent("e1", plan("enterprise"))])
        .feature("ai")
        .located_in(None, None)
        .decide();
    assert_eq!(
        d.reason,
        Reason::GeoBlocked,
        "the feature's deny-list denies an unknown location on every plan"
    );
}

#[test]
fn anonymous_networks() {
    let strict = with(ent("e1", plan("pro")), |e| {
        e.geo_rule.block_anonymous = true
    });
    let mut vpn = Scenario::new(vec![strict.clone()]);
    vpn.geo.anonymous = Some(AnonymousNetwork {
        vpn: true,
        ..Default::default()
    });
    check("vpn blocked", vpn.clone(), Reason::AnonymousNetworkBlocked);
    let mut clean = Scenario::new(vec![strict.clone()]);
    clean.geo.anonymous = Some(AnonymousNetwork::default());
    check("known clean", clean, Reason::Allow);
    check(
        "no anonymous data",
        Scenario::new(vec![strict]),
        Reason::Allow,
    );
    vpn.entitlements[0].geo_rule.block_anonymous = false;
    check("rule off", vpn, Reason::Allow);
}

#[test]
fn named_and_floating_seats() {
    let named = with(ent("e1", plan("pro")), |e| {
        e.seats = Some(Seats {
            count: 2,
            mode: SeatMode::Named {
                assigned: [id("alice")].into_iter().collect(),
            },
        })
    });
    let d = check(
        "assigned",
        Scenario::new(vec![named.clone()]),
        Reason::Allow,
    );
    assert_eq!(d.seats.map(|s| (s.used, s.total)), Some((1, 2)));
    let d = check(
        "not assigned",
        Scenario::new(vec![named.clone()]).subject(Some("bob")),
        Reason::SeatLimit,
    );
    assert_eq!(d.seats.unwrap().holders, vec![id::<SubjectId>("alice")]);
    check(
        "no subject",
        Scenario::new(vec![named]).subject(None),
        Reason::SeatLimit,
    );

    let floating = with(ent("f1", plan("pro")), |e| {
        e.seats = Some(Seats {
            count: 1,
            mode: SeatMode::Floating {
                lease_ttl_seconds: 300,
            },
        })
    });
    check(
        "free seat",
        Scenario::new(vec![floating.clone()]).subject(Some("bob")),
        Reason::Allow,
    );
    let taken = Scenario::new(vec![floating.clone()]).lease("f1", "alice", t(60));
    let d = check(
        "seat held by alice",
        taken.clone().subject(Some("bob")),
        Reason::SeatLimit,
    );
    assert_eq!(
        d.seats.unwrap(),
        tollgate_engine::SeatInfo {
            used: 1,
            total: 1,
            holders: vec![id("alice")]
        }
    );
    check("the holder may use it", taken, Reason::Allow);
    check(
        "an expired lease frees the seat",
        Scenario::new(vec![floating])
            .lease("f1", "alice", NOW)
            .subject(Some("bob")),
        Reason::Allow,
    );
}

#[test]
fn usage_caps() {
    let render = |s: Scenario| s.feature("render");
    let d = check(
        "under the cap",
        render(Scenario::new(vec![ent("e1", plan("basic"))]))
            .consumed("render", 90)
            .consume(10),
        Reason::Allow,
    );
    assert_eq!((d.limit, d.remaining), (Some(100), Some(0)));
    let d = check(
        "one over the cap",
        render(Scenario::new(vec![ent("e1", plan("basic"))]))
            .consumed("render", 90)
            .consume(11),
        Reason::UsageCapReached,
    );
    assert_eq!(
        (d.limit, d.remaining),
        (Some(100), Some(10)),
        "nothing was consumed"
    );
    assert_eq!(
        d.upgrade_hint,
        Some(UpgradeHint {
            target: UpgradeTarget::Addon(id("render-pack")),
            limit: Some(600)
        }),
        "the additive pack lifts 100 to 600"
    );
    let d = check(
        "with the pack, caps add up",
        render(Scenario::new(vec![
            ent("e1", plan("basic")),
            ent("e2", addon("render-pack")),
        ]))
        .consumed("render", 550),
        Reason::Allow,
    );
    assert_eq!((d.limit, d.remaining), (Some(600), Some(50)));
    check(
        "the larger of two plan caps applies",
        render(Scenario::new(vec![
            ent("e1", plan("basic")),
            ent("e2", plan("pro")),
        ]))
        .consumed("render", 500),
        Reason::Allow,
    );
    let d = check(
        "unlimited plan",
        render(Scenario::new(vec![ent("e1", plan("enterprise"))])).consumed("render", u64::MAX),
        Reason::Allow,
    );
    assert_eq!(d.limit, None);
    let override_cap = with(ent("e1", plan("basic")), |e| {
        e.usage_cap_overrides.insert(
            id("render"),
            UsageCap {
                limit: 5,
                enforcement: CapEnforcement::Soft,
                additive: false,
            },
        );
    });
    let d = check(
        "soft cap: allowed, flagged as overage",
        render(Scenario::new(vec![override_cap]))
            .consumed("render", 5)
            .consume(1),
        Reason::Allow,
    );
    assert!(d.overage);
    assert_eq!((d.limit, d.remaining), (Some(5), Some(0)));
    let d = check(
        "the region's share of a hard cap is gone: a consuming check is refused",
        render(Scenario::new(vec![ent("e1", plan("basic"))]))
            .consumed("render", 40)
            .consume(1)
            .share_exhausted("render"),
        Reason::UsageCapReached,
    );
    assert_eq!(
        (d.limit, d.remaining),
        (Some(100), Some(0)),
        "nothing more can be granted here"
    );
    assert_eq!(
        d.upgrade_hint.map(|h| h.target),
        Some(UpgradeTarget::Addon(id("render-pack")))
    );
    let d = check(
        "the region's share is gone: a check that consumes nothing still allows",
        render(Scenario::new(vec![ent("e1", plan("basic"))]))
            .consumed("render", 40)
            .share_exhausted("render"),
        Reason::Allow,
    );
    assert_eq!((d.limit, d.remaining), (Some(100), Some(60)));
    check(
        "a soft cap has no shares to run out of",
        render(Scenario::new(vec![with(ent("e1", plan("basic")), |e| {
            e.usage_cap_overrides.insert(
                id("render"),
                UsageCap {
                    limit: 5,
                    enforcement: CapEnforcement::Soft,
                    additive: false,
                },
            );
        })]))
        .consume(1)
        .share_exhausted("render"),
        Reason::Allow,
    );
    let d = check(
        "cap on pro: next plan up is unlimited",
        render(Scenario::new(vec![ent("e1", plan("pro"))]))
            .consumed("render", 1000)
            .consume(1),
        Reason::UsageCapReached,
    );
    assert_eq!(
        d.upgrade_hint.unwrap().target,
        UpgradeTarget::Addon(id("render-pack"))
    );
}

#[test]
fn offline_policy_and_stale_data() {
    let three_days = 3 * DAY;
    check(
        "within the default grace",
        Scenario::new(vec![ent("e1", plan("pro"))]).stale_for(three_days),
        Reason::Allow,
    );
    let d = check(
        "past the default grace",
        Scenario::new(vec![ent("e1", plan("pro"))]).stale_for(three_days + 1),
        Reason::StaleData,
    );
    assert_eq!(d.staleness_seconds, Some(three_days as u64 + 1));
    let mut never = Scenario::new(vec![ent("e1", plan("pro"))]);
    never.freshness.last_origin_contact = None;
    let d = check("never heard from the origin", never, Reason::StaleData);
    assert_eq!(d.staleness_seconds, None);
    let keep = with(ent("e1", plan("pro")), |e| {
        e.offline_policy = Some(OfflinePolicy {
            offline_grace_seconds: 60,
            after_grace: AfterGrace::Allow,
        })
    });
    check(
        "policy keeps allowing",
        Scenario::new(vec![keep]).stale_for(30 * DAY),
        Reason::Allow,
    );
    let short = with(ent("e1", plan("pro")), |e| {
        e.offline_policy = Some(OfflinePolicy {
            offline_grace_seconds: 60,
            after_grace: AfterGrace::Deny,
        })
    });
    check(
        "short grace",
        Scenario::new(vec![short.clone()]).stale_for(61),
        Reason::StaleData,
    );
    let mut catalog = catalog();
    catalog.features.get_mut("export").unwrap().offline_policy = Some(OfflinePolicy {
        offline_grace_seconds: 10,
        after_grace: AfterGrace::Deny,
    });
    let lenient = with(ent("e1", plan("pro")), |e| {
        e.offline_policy = Some(OfflinePolicy {
            offline_grace_seconds: 30 * DAY as u64,
            after_grace: AfterGrace::Allow,
        })
    });
    let d = Scenario::new(vec![lenient])
        .stale_for(11)
        .decide_with(&catalog);
    assert_eq!(
        d.reason,
        Reason::StaleData,
        "the feature's stricter policy wins"
    );
}

#[test]
fn precedence_within_one_entitlement() {
    // Each row breaks two rules at once; the more severe reason must win.
    let everything_wrong = |e: &mut Entitlement| {
        e.geo_rule.deny_countries.insert(country("DE"));
        e.required_role = Some(id("owner"));
    };
    check(
        "revoked beats geo and role",
        Scenario::new(vec![with(ent("e1", plan("pro")), |e| {
            everything_wrong(e);
            e.status = EntitlementStatus::Revoked;
        })]),
        Reason::Revoked,
    );
    check(
        "revoked beats suspended-style expiry",
        Scenario::new(vec![with(ent("e1", plan("pro")), |e| {
            e.status = EntitlementStatus::Revoked;
            e.valid_until = Some(t(-10 * DAY));
        })]),
        Reason::Revoked,
    );
    check(
        "suspended beats not yet valid",
        Scenario::new(vec![with(ent("e1", plan("pro")), |e| {
            e.status = EntitlementStatus::Suspended;
            e.valid_from = t(10);
        })]),
        Reason::Suspended,
    );
    check(
        "expired beats stale",
        Scenario::new(vec![with(ent("e1", plan("pro")), |e| {
            e.valid_until = Some(t(-DAY))
        })])
        .stale_for(30 * DAY),
        Reason::Expired,
    );
    check(
        "stale beats role",
        Scenario::new(vec![with(ent("e1", plan("pro")), everything_wrong)]).stale_for(30 * DAY),
        Reason::StaleData,
    );
    check(
        "role beats geo",
        Scenario::new(vec![with(ent("e1", plan("pro")), everything_wrong)]),
        Reason::RoleRequired,
    );
    let mut geo_and_anon = Scenario::new(vec![with(ent("e1", plan("pro")), |e| {
        e.geo_rule.deny_countries.insert(country("DE"));
        e.geo_rule.block_anonymous = true;
    })]);
    geo_and_anon.geo.anonymous = Some(AnonymousNetwork {
        tor_exit_node: true,
        ..Default::default()
    });
    check(
        "geo beats anonymous",
        geo_and_anon.clone(),
        Reason::GeoBlocked,
    );
    let mut anon_and_seat = geo_and_anon;
    anon_and_seat.entitlements[0]
        .geo_rule
        .deny_countries
        .clear();
    anon_and_seat.entitlements[0].seats = Some(Seats {
        count: 1,
        mode: SeatMode::Named {
            assigned: Default::default(),
        },
    });
    check(
        "anonymous beats seats",
        anon_and_seat,
        Reason::AnonymousNetworkBlocked,
    );
    let seat_and_cap = Scenario::new(vec![with(ent("e1", plan("basic")), |e| {
        e.seats = Some(Seats {
            count: 1,
            mode: SeatMode::Named {
                assigned: Default::default(),
            },
        })
    })])
    .feature("render")
    .consumed("render", 100)
    .consume(1);
    check("seats beat the cap", seat_and_cap, Reason::SeatLimit);
    let geo_and_cap = Scenario::new(vec![with(ent("e1", plan("basic")), |e| {
        e.geo_rule.deny_countries.insert(country("DE"));
    })])
    .feature("render")
    .consumed("render", 100)
    .consume(1);
    check("geo beats the cap", geo_and_cap, Reason::GeoBlocked);
    check(
        "in grace and over the cap: the cap",
        Scenario::new(vec![with(ent("e1", plan("basic")), |e| {
            e.valid_until = Some(t(-1));
            e.grace_period_seconds = 60;
        })])
        .feature("render")
        .consumed("render", 100)
        .consume(1),
        Reason::UsageCapReached,
    );
}

#[test]
fn precedence_across_entitlements_and_account_level() {
    let revoked = with(ent("old", plan("pro")), |e| {
        e.status = EntitlementStatus::Revoked
    });
    let d = check(
        "any allow beats a denial",
        Scenario::new(vec![revoked.clone(), ent("new", plan("basic"))]),
        Reason::Allow,
    );
    assert_eq!(d.entitlement, Some(id("new")));
    let geo = with(ent("geo", plan("pro")), |e| {
        e.geo_rule.deny_countries.insert(country("DE"));
    });
    let d = check(
        "the most permissive denial is reported",
        Scenario::new(vec![revoked.clone(), geo]),
        Reason::GeoBlocked,
    );
    assert_eq!(d.entitlement, Some(id("geo")));
    let grace = with(ent("grace", plan("pro")), |e| {
        e.valid_until = Some(t(-1));
        e.grace_period_seconds = 100;
    });
    let d = check(
        "allow beats in-grace",
        Scenario::new(vec![grace.clone(), ent("fresh", plan("basic"))]),
        Reason::Allow,
    );
    assert_eq!(d.entitlement, Some(id("fresh")));
    let later = with(ent("later", plan("basic")), |e| {
        e.valid_until = Some(t(10 * DAY))
    });
    let sooner = with(ent("sooner", plan("pro")), |e| e.valid_until = Some(t(DAY)));
    let d = check(
        "the longest-lived allowing entitlement decides",
        Scenario::new(vec![sooner, later]),
        Reason::Allow,
    );
    assert_eq!(d.entitlement, Some(id("later")));
    check(
        "in grace beats revoked",
        Scenario::new(vec![revoked.clone(), grace]),
        Reason::InGrace,
    );
    let mut s = Scenario::new(vec![ent("e1", plan("pro"))])
        .subject(Some("mallory"))
        .feature("teleport");
    check(
        "unknown subject beats not entitled",
        s.clone(),
        Reason::UnknownSubject,
    );
    s.account.as_mut().unwrap().status = AccountStatus::Suspended;
    check(
        "suspended account beats unknown subject",
        s.clone(),
        Reason::Suspended,
    );
    s.account = None;
    check(
        "unknown account beats everything",
        s,
        Reason::UnknownAccount,
    );
}

#[test]
fn explanations_mention_what_matters() {
    let d = Scenario::new(vec![ent("e1", plan("basic"))])
        .feature("render")
        .consumed("render", 100)
        .consume(1)
        .decide();
    let text = d.explain();
    assert!(
        text.contains("cap of 100") && text.contains("render-pack"),
        "{text}"
    );
}
