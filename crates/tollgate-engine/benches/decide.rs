//! The decision for an account holding 50 entitlements with geo rules and a
//! metered cap, geo facts given. Target: median <= 1 us on a 2-core machine.
//!
//! `cargo bench -p tollgate-engine --bench decide`

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use tollgate_engine::{decide, AccountView, Environment, Freshness};
use tollgate_model::*;

/// A catalog with 60 extra boolean features, so that most of the account's
/// entitlements grant something other than the feature checked.
fn big_catalog() -> Catalog {
    let mut c = catalog();
    for i in 0..60 {
        let fid: FeatureId = id(&format!("f{i}"));
        c.features.insert(
            fid.clone(),
            Feature {
                id: fid,
                product: id("studio"),
                name: format!("feature {i}"),
                kind: FeatureKind::Boolean,
                geo_rule: GeoRule::default(),
                offline_policy: None,
                config: ConfigValues::new(),
                auto_approve: None,
            },
        );
    }
    c
}

fn geo_fenced(mut e: Entitlement, i: usize) -> Entitlement {
    for c in ["DE", "FR", "NL", "BE", "AT", "CH", "IT", "ES"] {
        e.geo_rule.allow_countries.insert(country(c));
    }
    for c in ["KP", "IR", "SY", "CU"] {
        e.geo_rule.deny_countries.insert(country(c));
    }
    e.geo_rule.block_anonymous = i.is_multiple_of(2);
    e.valid_until = Some(UnixSeconds(NOW.0 + 30 * DAY + i as i64));
    e.grace_period_seconds = 7 * DAY as u64;
    e
}

/// 50 entitlements: a plan, `render_grants - 1` render packs and the rest
/// single-feature grants of other features; every one geo-fenced.
fn entitlements(render_grants: usize) -> Vec<Entitlement> {
    (0..50)
        .map(|i| {
            let grant = if i == 0 {
                plan("pro")
            } else if i < render_grants {
                addon("render-pack")
            } else {
                Grant::Feature(plain(&format!("f{i}")))
            };
            geo_fenced(ent(&format!("e{i}"), grant), i)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let catalog = big_catalog();
    let mut group = c.benchmark_group("decide");
    for (name, render_grants) in [
        ("50_entitlements_5_grant_feature", 5),
        ("50_entitlements_all_grant_feature", 50),
    ] {
        let s = Scenario::new(entitlements(render_grants))
            .feature("render")
            .consume(1)
            .consumed("render", 700);
        let view = AccountView::build(account(), subjects(), s.entitlements.clone(), &catalog);
        let env = Environment {
            catalog: &catalog,
            live: &s.live,
            freshness: Freshness::current(42, NOW),
            now: NOW,
        };
        let d = decide(&s.check, Some(&view), &s.geo, &env);
        assert!(d.allowed(), "{}", d.explain());
        assert!(d.limit.is_some(), "the metered cap is evaluated");
        group.bench_function(name, |b| {
            b.iter(|| {
                decide(
                    black_box(&s.check),
                    Some(black_box(&view)),
                    black_box(&s.geo),
                    &env,
                )
            })
        });
    }
    let s = Scenario::new(entitlements(5));
    group.bench_function("build_view_50_entitlements", |b| {
        b.iter(|| {
            AccountView::build(
                account(),
                subjects(),
                black_box(s.entitlements.clone()),
                &catalog,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
