//! Resolving addresses into `GeoFacts`, and refusing databases that must
//! not be served.

mod common;

use common::{init_tracing, ip, location};
use tollgate_geo::fixtures::{self, FixturePlace};
use tollgate_geo::{
    DatabaseKind, GeoConfig, GeoDatabase, GeoDatabases, GeoError, ANONYMOUS_IP_DATABASE_TYPE,
    FILE_SIZE_BYTES_MAX_DEFAULT,
};
use tollgate_model::{AnonymousNetwork, GeoFacts};
use tracing::info;

const LIMIT: u64 = FILE_SIZE_BYTES_MAX_DEFAULT;

fn demo_location() -> GeoDatabase {
    GeoDatabase::from_bytes(
        DatabaseKind::Location,
        fixtures::demo_city().unwrap(),
        "demo",
        LIMIT,
    )
    .unwrap()
}

fn anon(
    vpn: bool,
    tor_exit_node: bool,
    public_proxy: bool,
    residential_proxy: bool,
    hosting_provider: bool,
) -> Option<AnonymousNetwork> {
    Some(AnonymousNetwork {
        vpn,
        tor_exit_node,
        public_proxy,
        residential_proxy,
        hosting_provider,
    })
}

fn check(holder: &GeoDatabases, address: &str, expected: GeoFacts) {
    let facts = holder
        .resolve(ip(address))
        .unwrap_or_else(|error| panic!("{address}: {error}"));
    assert_eq!(facts, expected, "{address}");
}

#[test]
fn demo_databases_resolve_ipv4_and_ipv6() {
    init_tracing();
    info!("Proving the demo City and Anonymous IP databases resolve IPv4 and IPv6 addresses to the expected facts.");
    let holder = fixtures::demo_databases().unwrap();
    let clean = anon(false, false, false, false, false);
    let with = |mut facts: GeoFacts, anonymous| {
        facts.anonymous = anonymous;
        facts
    };
    let rows = [
        ("192.0.2.1", with(location("DE", "EU", &["BE"]), clean)),
        (
            "192.0.2.70",
            with(
                location("DE", "EU", &["BE"]),
                anon(true, false, false, false, false),
            ),
        ),
        ("192.0.2.200", with(location("FR", "EU", &[]), clean)),
        ("198.51.100.7", with(location("US", "NA", &["CA"]), clean)),
        (
            "198.51.100.200",
            with(
                location("US", "NA", &["CA"]),
                anon(false, true, false, false, false),
            ),
        ),
        (
            "203.0.113.5",
            with(
                location("JP", "AS", &["13"]),
                anon(false, false, false, false, true),
            ),
        ),
        ("203.0.113.200", with(location("JP", "AS", &["13"]), clean)),
        ("2001:db8::1", with(location("DE", "EU", &["BE"]), clean)),
        ("2001:db8:1::1", with(location("US", "NA", &["CA"]), clean)),
        (
            "2001:db8:1:1::9",
            with(
                location("US", "NA", &["CA"]),
                anon(false, false, true, false, false),
            ),
        ),
        (
            "2001:db8:2:ffff::1",
            with(location("JP", "AS", &["13"]), clean),
        ),
        (
            "2001:db8:3::1",
            with(
                location("FR", "EU", &[]),
                anon(true, false, false, true, true),
            ),
        ),
    ];
    for (address, expected) in rows {
        check(&holder, address, expected);
    }

    info!(
        "Proving addresses outside the demo ranges have an unknown location and are known clean."
    );
    for address in [
        "10.0.0.1",
        "8.8.8.8",
        "2001:db8:4::1",
        "2a00::1",
        "::1",
        "0.0.0.0",
    ] {
        check(&holder, address, with(GeoFacts::unknown(), clean));
    }

    info!("Proving IPv4-mapped IPv6 addresses resolve like the IPv4 address.");
    for (mapped, plain) in [
        ("::ffff:192.0.2.70", "192.0.2.70"),
        ("::ffff:198.51.100.200", "198.51.100.200"),
        ("::ffff:203.0.113.200", "203.0.113.200"),
        ("::ffff:10.0.0.1", "10.0.0.1"),
    ] {
        assert_eq!(
            holder.resolve(ip(mapped)).unwrap(),
            holder.resolve(ip(plain)).unwrap(),
            "{mapped}"
        );
    }
}

#[test]
fn without_an_anonymous_database_anonymity_is_unknown() {
    init_tracing();
    info!("Proving a holder without an Anonymous IP database reports anonymous: None.");
    let holder = GeoDatabases::from_databases(demo_location(), None).unwrap();
    check(&holder, "192.0.2.70", location("DE", "EU", &["BE"]));
    check(&holder, "10.0.0.1", GeoFacts::unknown());
    assert!(holder.health().anonymous.is_none());
}

#[test]
fn subdivisions_are_most_general_first_and_prefixed_with_the_country() {
    init_tracing();
    info!("Proving multi-level subdivisions keep MaxMind's order and become COUNTRY-CODE.");
    let bytes = fixtures::location_db(
        "GeoIP2-City",
        1,
        &[(
            "81.2.69.0/24",
            FixturePlace {
                country: "GB",
                continent: "EU",
                subdivisions: &["ENG", "WBK"],
                city: Some("Boxford"),
            },
        )],
    )
    .unwrap();
    let db = GeoDatabase::from_bytes(DatabaseKind::Location, bytes, "gb", LIMIT).unwrap();
    let holder = GeoDatabases::from_databases(db, None).unwrap();
    check(
        &holder,
        "81.2.69.160",
        location("GB", "EU", &["ENG", "WBK"]),
    );
}

#[test]
fn fixture_records_use_maxminds_layout() {
    init_tracing();
    info!("Proving the demo databases decode with maxminddb's own GeoIP2 record types.");
    let city_bytes = fixtures::demo_city().unwrap();
    let reader = maxminddb::Reader::from_source(city_bytes.as_slice()).unwrap();
    let city: maxminddb::geoip2::City = reader
        .lookup(ip("198.51.100.1"))
        .unwrap()
        .decode()
        .unwrap()
        .unwrap();
    assert_eq!(city.country.iso_code, Some("US"));
    assert_eq!(city.continent.code, Some("NA"));
    assert_eq!(
        city.subdivisions.first().and_then(|s| s.iso_code),
        Some("CA")
    );
    assert_eq!(city.city.names.english, Some("San Francisco"));

    let anon_bytes = fixtures::demo_anonymous_ip().unwrap();
    let reader = maxminddb::Reader::from_source(anon_bytes.as_slice()).unwrap();
    assert_eq!(reader.metadata().database_type, ANONYMOUS_IP_DATABASE_TYPE);
    let record: maxminddb::geoip2::AnonymousIp = reader
        .lookup(ip("198.51.100.200"))
        .unwrap()
        .decode()
        .unwrap()
        .unwrap();
    assert_eq!(record.is_tor_exit_node, Some(true));
    assert_eq!(record.is_anonymous, Some(true));
    assert_eq!(record.is_anonymous_vpn, None);
}

#[test]
fn databases_of_the_wrong_type_are_refused_for_the_slot() {
    init_tracing();
    info!("Proving each slot refuses a valid database of another type.");
    let cases = [
        (
            DatabaseKind::Location,
            fixtures::demo_anonymous_ip().unwrap(),
            "GeoIP2-Anonymous-IP",
        ),
        (
            DatabaseKind::AnonymousIp,
            fixtures::demo_city().unwrap(),
            "Tollgate-Demo-City",
        ),
        (
            DatabaseKind::Location,
            fixtures::location_db("GeoLite2-ASN", 1, fixtures::DEMO_LOCATIONS).unwrap(),
            "GeoLite2-ASN",
        ),
        (
            DatabaseKind::AnonymousIp,
            fixtures::anonymous_ip_db("GeoIP2-Anonymous-IP-Plus", 1, fixtures::DEMO_ANONYMOUS)
                .unwrap(),
            "GeoIP2-Anonymous-IP-Plus",
        ),
    ];
    for (kind, bytes, type_name) in cases {
        match GeoDatabase::from_bytes(kind, bytes, "wrong", LIMIT) {
            Err(GeoError::WrongType { found, .. }) => assert_eq!(found, type_name),
            other => panic!("{kind} slot took {type_name}: {other:?}"),
        }
    }
}

#[test]
fn truncated_databases_are_refused() {
    init_tracing();
    info!("Proving a good database cut at any of many points is refused at load.");
    for (kind, bytes) in [
        (DatabaseKind::Location, fixtures::demo_city().unwrap()),
        (
            DatabaseKind::AnonymousIp,
            fixtures::demo_anonymous_ip().unwrap(),
        ),
    ] {
        // Every cut point in the tail, where the metadata lives, and a
        // spread of points through the tree and data section.
        let len = bytes.len();
        let cuts = (0..len).step_by(7).chain(len.saturating_sub(300)..len);
        for cut in cuts {
            let result = GeoDatabase::from_bytes(kind, bytes[..cut].to_vec(), "cut", LIMIT);
            assert!(
                matches!(&result, Err(e) if e.is_load_error()),
                "{kind} database cut to {cut} of {len} bytes was accepted"
            );
        }
    }
}

#[test]
fn random_bytes_and_empty_files_are_refused() {
    init_tracing();
    info!("Proving random bytes, an empty file and a directory are refused without a panic.");
    let dir = tempfile::tempdir().unwrap();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for len in [0_usize, 3, 14, 64, 1000, 70_000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 24) as u8
            })
            .collect();
        let path = dir.path().join(format!("random-{len}.mmdb"));
        std::fs::write(&path, &bytes).unwrap();
        for kind in [DatabaseKind::Location, DatabaseKind::AnonymousIp] {
            let err = GeoDatabase::open(kind, &path, LIMIT).expect_err("random bytes");
            assert!(matches!(err, GeoError::Invalid { .. }), "{err}");
        }
    }
    let err =
        GeoDatabase::open(DatabaseKind::Location, dir.path(), LIMIT).expect_err("a directory");
    assert!(matches!(err, GeoError::Io { .. }), "{err}");
    let err = GeoDatabase::open(DatabaseKind::Location, &dir.path().join("missing"), LIMIT)
        .expect_err("missing");
    assert!(matches!(err, GeoError::Io { .. }), "{err}");
}

#[test]
fn oversized_files_are_refused_with_a_clear_error() {
    init_tracing();
    info!("Proving a file over file_size_bytes_max is refused and the error names the limit.");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("city.mmdb");
    let bytes = fixtures::demo_city().unwrap();
    std::fs::write(&path, &bytes).unwrap();
    let limit = bytes.len() as u64 - 1;
    let config = GeoConfig::new(&path).with_file_size_bytes_max(limit);
    let err = GeoDatabases::open(&config).expect_err("over the limit");
    match &err {
        GeoError::TooLarge {
            size_bytes,
            size_bytes_max,
            ..
        } => {
            assert_eq!(*size_bytes, bytes.len() as u64);
            assert_eq!(*size_bytes_max, limit);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains("file_size_bytes_max"), "{err}");
    assert_eq!(err.reason(), "GEO_DB_TOO_LARGE");
    // Exactly at the limit is fine.
    let config = GeoConfig::new(&path).with_file_size_bytes_max(bytes.len() as u64);
    assert!(GeoDatabases::open(&config).is_ok());
}

#[test]
fn a_bad_record_fails_its_own_lookup_only() {
    init_tracing();
    info!("Proving a malformed or oversized record is an error for that address, not for the database.");
    let places = [
        (
            "192.0.2.0/24",
            FixturePlace {
                country: "DE",
                continent: "EU",
                subdivisions: &[],
                city: None,
            },
        ),
        // Lower-case country code: not ISO 3166-1 as MaxMind writes it.
        (
            "198.51.100.0/25",
            FixturePlace {
                country: "us",
                continent: "NA",
                subdivisions: &[],
                city: None,
            },
        ),
        // More subdivisions than any real record has.
        (
            "198.51.100.128/25",
            FixturePlace {
                country: "US",
                continent: "NA",
                subdivisions: &["A", "B", "C", "D", "E", "F", "G", "H", "I"],
                city: None,
            },
        ),
        // A continent code MaxMind does not use.
        (
            "203.0.113.0/24",
            FixturePlace {
                country: "JP",
                continent: "XX",
                subdivisions: &[],
                city: None,
            },
        ),
        fixtures::PROBE_ANCHOR,
    ];
    let bytes = fixtures::location_db("GeoIP2-City", 1, &places).unwrap();
    let db = GeoDatabase::from_bytes(DatabaseKind::Location, bytes, "bad-records", LIMIT).unwrap();
    let holder = GeoDatabases::from_databases(db, None).unwrap();
    check(&holder, "192.0.2.1", location("DE", "EU", &[]));
    for (address, field) in [
        ("198.51.100.1", "country.iso_code"),
        ("203.0.113.1", "continent.code"),
    ] {
        match holder.resolve(ip(address)) {
            Err(GeoError::BadRecord { field: f, .. }) => assert_eq!(f, field, "{address}"),
            other => panic!("{address}: expected BadRecord, got {other:?}"),
        }
    }
    match holder.resolve(ip("198.51.100.200")) {
        Err(error @ GeoError::Lookup { .. }) => {
            assert!(error.to_string().contains("subdivisions"), "{error}")
        }
        other => panic!("expected a Lookup error, got {other:?}"),
    }
    check(&holder, "192.0.2.2", location("DE", "EU", &[]));
}

#[test]
fn health_reports_type_build_date_and_path() {
    init_tracing();
    info!("Proving health output names each database's type, build epoch and file.");
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.mmdb");
    let anonymous = dir.path().join("anon.mmdb");
    std::fs::write(&city, fixtures::demo_city().unwrap()).unwrap();
    std::fs::write(&anonymous, fixtures::demo_anonymous_ip().unwrap()).unwrap();
    let holder = GeoDatabases::open(&GeoConfig::new(&city).with_anonymous(&anonymous)).unwrap();
    let health = holder.health();
    assert_eq!(
        health.location.database_type,
        fixtures::DEMO_CITY_DATABASE_TYPE
    );
    assert_eq!(
        health.location.build_epoch_seconds,
        fixtures::DEMO_BUILD_EPOCH_SECONDS
    );
    assert_eq!(health.location.path.as_deref(), Some(city.as_path()));
    assert_eq!(health.location.last_error, None);
    let anon_health = health.anonymous.expect("anonymous slot");
    assert_eq!(anon_health.database_type, ANONYMOUS_IP_DATABASE_TYPE);
    assert_eq!(anon_health.path.as_deref(), Some(anonymous.as_path()));
    assert_eq!((health.reloads_total, health.reload_failures_total), (0, 0));
}
