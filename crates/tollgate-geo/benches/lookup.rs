//! Resolving one address into `GeoFacts` with the demo City and Anonymous IP
//! databases: the work a region node does per check that carries an IP.
//!
//! Run: `cargo bench -p tollgate-geo --bench lookup`

use std::hint::black_box;
use std::net::IpAddr;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate_geo::fixtures;

fn lookup(c: &mut Criterion) {
    let holder = fixtures::demo_databases().expect("demo databases");
    let mut group = c.benchmark_group("geo_resolve");
    for (name, address) in [
        ("ipv4", "198.51.100.200"),
        ("ipv6", "2001:db8:1:1::9"),
        ("ipv4_mapped", "::ffff:203.0.113.5"),
        ("ipv4_unknown", "10.1.2.3"),
    ] {
        let ip: IpAddr = address.parse().expect("bench address");
        // Resolve once outside the timing loop so a broken fixture fails
        // loudly instead of benchmarking an error path.
        let facts = holder.resolve(ip).expect("bench address resolves");
        assert!(facts.anonymous.is_some(), "{address}");
        group.bench_function(name, |b| b.iter(|| holder.resolve(black_box(ip))));
    }
    // The same IPv4 lookup without the Anonymous IP database, to show what
    // the second database costs.
    let location_only = tollgate_geo::GeoDatabases::from_databases(
        tollgate_geo::GeoDatabase::from_bytes(
            tollgate_geo::DatabaseKind::Location,
            fixtures::demo_city().expect("demo city"),
            "demo:city",
            tollgate_geo::FILE_SIZE_BYTES_MAX_DEFAULT,
        )
        .expect("demo city loads"),
        None,
    )
    .expect("location-only holder");
    let ip: IpAddr = "198.51.100.200".parse().expect("bench address");
    group.bench_function("ipv4_location_only", |b| {
        b.iter(|| location_only.resolve(black_box(ip)))
    });
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
