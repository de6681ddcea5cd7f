//! One check answered by the local replica: an account with 50
//! entitlements (one per feature), a subject, a resolved location, the
//! engine's `decide` behind the replica's lock-free snapshot. Target:
//! median <= 1 us.
//!
//! `cargo bench -p tollgate-sdk --bench local_check`

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use tollgate_model::Dataset;
use tollgate_sdk::{check_request, Location, Replica};

const ENTITLEMENTS: usize = 50;

fn dataset() -> Dataset {
    let features: serde_json::Map<String, serde_json::Value> = (0..ENTITLEMENTS)
        .map(|i| {
            let id = format!("feature-{i:02}");
            let value = serde_json::json!({"id": id, "product": "p", "name": id,
                "kind": "boolean", "config": {"tier": "gold"}});
            (id, value)
        })
        .collect();
    let entitlements: Vec<serde_json::Value> = (0..ENTITLEMENTS)
        .map(|i| {
            serde_json::json!({"id": format!("e-{i:02}"), "account": "acme",
                "grant": {"feature": {"feature": format!("feature-{i:02}")}},
                "valid_from": 0, "valid_until": 4_000_000_000_i64,
                "geo_rule": {"deny_countries": ["KP"]}})
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "catalog": {"products": {"p": {"id": "p", "name": "P"}}, "features": features},
        "accounts": [{"id": "acme", "name": "Acme"}],
        "subjects": [{"id": "alice", "account": "acme", "kind": "user"}],
        "entitlements": entitlements
    }))
    .expect("a valid data set")
}

fn bench(c: &mut Criterion) {
    let replica = Replica::from_dataset(dataset(), 42).expect("replica");
    let mut request = check_request(
        "acme".parse().unwrap(),
        Some("alice".parse().unwrap()),
        "feature-25".parse().unwrap(),
    );
    request.location = Location::Resolved(tollgate_sdk::GeoFacts {
        country: Some(tollgate_model::CountryCode::new("DE").unwrap()),
        ..Default::default()
    });
    let answer = replica.check(&request).expect("answered");
    assert!(answer.decision.allowed(), "{}", answer.decision.explain());

    c.bench_function("local_check_50_entitlements", |b| {
        b.iter(|| replica.check(black_box(&request)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
