//! A full in-process check as a region node answers it from a warm cache:
//! resolve the caller's IP with MaxMind (demo City + Anonymous IP
//! databases), then decide against the account's view. Target: median
//! <= 2 us.
//!
//! `cargo bench -p tollgate-tests --bench check_path`

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::net::IpAddr;
use tollgate_engine::{decide, AccountView, Check, Environment, Freshness, NoLiveState};
use tollgate_model::{Dataset, UnixSeconds};

fn bench(c: &mut Criterion) {
    let geo = tollgate_geo::fixtures::demo_databases().expect("demo geography");
    let data: Dataset = serde_json::from_str(tollgate_tests::DEMO_DATA).expect("demo data");
    let now = UnixSeconds(1_795_821_662);
    let acme = data
        .accounts
        .iter()
        .find(|a| a.id.as_str() == "acme")
        .unwrap()
        .clone();
    let (subjects, entitlements) = data.of_account(&acme.id);
    let view = AccountView::build(
        acme.clone(),
        subjects.cloned(),
        entitlements.cloned(),
        &data.catalog,
    );
    let env = Environment {
        catalog: &data.catalog,
        live: &NoLiveState,
        freshness: Freshness::current(42, now),
        now,
    };
    let check = Check {
        account: acme.id.clone(),
        subject: Some("alice".parse().unwrap()),
        feature: "export".parse().unwrap(),
        consume: 0,
    };
    let mut group = c.benchmark_group("check_path");
    for (name, ip) in [("ipv4", "192.0.2.10"), ("ipv6", "2001:db8::10")] {
        let ip: IpAddr = ip.parse().unwrap();
        let facts = geo.resolve(ip).unwrap();
        let d = decide(&check, Some(&view), &facts, &env);
        assert!(d.allowed(), "{}", d.explain());
        group.bench_function(name, |b| {
            b.iter(|| {
                let facts = geo.resolve(black_box(ip)).unwrap();
                decide(black_box(&check), Some(&view), &facts, &env)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
