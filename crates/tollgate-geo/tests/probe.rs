//! Geography never silently resolves nothing: a location database that
//! would answer "location unknown" for every caller (another vendor's
//! record layout, no coverage of the public Internet) is refused at load
//! and on reload, each case with its own message, while an empty metadata
//! description is no reason to refuse, and MaxMind's own test databases
//! still load.

mod common;

use common::{init_tracing, ip, replace_file, shared_geoip_dir};
use serde_json::{json, Value};
use tollgate_geo::fixtures::{self, FixturePlace};
use tollgate_geo::{
    DatabaseKind, GeoConfig, GeoDatabase, GeoDatabases, GeoError, SlotReload,
    FILE_SIZE_BYTES_MAX_DEFAULT, PROBE_ADDRESSES,
};
use tollgate_model::CountryCode;
use tracing::info;

const LIMIT: u64 = FILE_SIZE_BYTES_MAX_DEFAULT;
const BUILT: u64 = 1_700_000_000;

/// Networks around three probe addresses (8.8.8.8, 81.2.69.160,
/// 89.160.20.128) and a documentation range.
const NETWORKS: [&str; 4] = [
    "8.8.8.0/24",
    "81.2.69.0/24",
    "89.160.20.0/24",
    "192.0.2.0/24",
];

/// The same record on every network of [`NETWORKS`].
fn records(record: Value) -> Vec<(&'static str, Value)> {
    NETWORKS.iter().map(|n| (*n, record.clone())).collect()
}

fn place(country: &'static str, subdivisions: &'static [&'static str]) -> FixturePlace<'static> {
    FixturePlace {
        country,
        continent: "EU",
        subdivisions,
        city: None,
    }
}

/// A City database in MaxMind's layout: 192.0.2.0/24 in Sweden, and the
/// probe anchor.
fn good_city() -> Vec<u8> {
    fixtures::location_db(
        "GeoIP2-City",
        BUILT,
        &[
            ("192.0.2.0/24", place("SE", &["E"])),
            fixtures::PROBE_ANCHOR,
        ],
    )
    .unwrap()
}

/// A database that must be refused: what it is, its bytes, the reason
/// code, and what its message must say.
struct Refused {
    what: &'static str,
    bytes: Vec<u8>,
    reason: &'static str,
    says: &'static [&'static str],
}

fn refused_databases() -> Vec<Refused> {
    // A free country database whose records are flat, as published (its
    // own type name, no description), and with its type renamed to
    // contain "Country" (what slipped through before).
    let flat = records(json!({"country_code": "SE"}));
    vec![
        Refused {
            what: "a flat country_code layout, type renamed to contain Country",
            bytes: fixtures::records_db("CC0-Country", BUILT, None, &flat).unwrap(),
            reason: "GEO_DB_SCHEMA",
            says: &[
                "records have no country.iso_code",
                "found keys: country_code",
                "(in the records of 8.8.8.8",
            ],
        },
        Refused {
            what: "the same flat database as published: no description, its own type",
            bytes: fixtures::records_db("geo-whois-asn-country", BUILT, None, &flat).unwrap(),
            reason: "GEO_DB_WRONG_TYPE",
            says: &["database_type \"geo-whois-asn-country\"", "City or Country"],
        },
        Refused {
            what: "MaxMind's layout, covering no probe address",
            bytes: fixtures::location_db(
                "GeoIP2-City",
                BUILT,
                &[
                    ("192.0.2.0/24", place("SE", &["E"])),
                    ("2001:db8::/32", place("SE", &["E"])),
                ],
            )
            .unwrap(),
            reason: "GEO_DB_NO_COVERAGE",
            says: &[
                "no record for any of the 24 well-known public addresses",
                "8.8.8.8, 1.1.1.1",
                "resolves none of them",
            ],
        },
        Refused {
            what: "countries but no continents",
            bytes: fixtures::records_db(
                "GeoIP2-Country",
                BUILT,
                Some("no continents"),
                &records(json!({"country": {"iso_code": "SE"}, "traits": {}})),
            )
            .unwrap(),
            reason: "GEO_DB_SCHEMA",
            says: &[
                "records have no continent.code",
                "found keys: country, traits",
            ],
        },
        Refused {
            what: "a City database without subdivisions",
            bytes: fixtures::location_db(
                "GeoIP2-City",
                BUILT,
                &[("81.2.69.0/24", place("GB", &[]))],
            )
            .unwrap(),
            reason: "GEO_DB_SCHEMA",
            says: &["City database have no subdivisions[].iso_code"],
        },
        Refused {
            what: "country as a plain string",
            bytes: fixtures::records_db(
                "GeoIP2-Country",
                BUILT,
                Some("flat strings"),
                &records(json!({"country": "SE", "continent": "EU"})),
            )
            .unwrap(),
            reason: "GEO_DB_SCHEMA",
            says: &[
                "cannot be read in that layout",
                "found keys: continent, country",
            ],
        },
        Refused {
            what: "records that are not maps",
            bytes: fixtures::records_db(
                "GeoIP2-Country",
                BUILT,
                Some("strings"),
                &records(json!("SE")),
            )
            .unwrap(),
            reason: "GEO_DB_SCHEMA",
            says: &[
                "the record of 8.8.8.8 cannot be read in that layout",
                "found a string",
            ],
        },
        Refused {
            what: "malformed country codes everywhere",
            bytes: fixtures::records_db(
                "GeoIP2-Country",
                BUILT,
                Some("alpha-3"),
                &records(json!({"country": {"iso_code": "SWE"}, "continent": {"code": "EU"}})),
            )
            .unwrap(),
            reason: "GEO_DB_SCHEMA",
            says: &[
                "no record holds a valid ISO 3166-1 alpha-2 country.iso_code",
                "\"SWE\"",
            ],
        },
    ]
}

fn assert_says(what: &str, message: &str, says: &[&str]) {
    for fragment in says {
        assert!(
            message.contains(fragment),
            "{what}: the message does not say {fragment:?}: {message}"
        );
    }
    assert!(
        !message.contains("description - Expected"),
        "{what}: the misleading description message: {message}"
    );
}

#[test]
fn databases_that_would_resolve_nothing_are_refused_at_load_each_with_its_own_message() {
    init_tracing();
    let cases = refused_databases();
    let mut messages = std::collections::BTreeSet::new();
    for case in cases {
        info!(
            what = case.what,
            "Proving the database is refused at load, saying why."
        );
        let err = GeoDatabase::from_bytes(DatabaseKind::Location, case.bytes, "probe", LIMIT)
            .expect_err(case.what);
        assert_eq!(err.reason(), case.reason, "{}: {err}", case.what);
        let message = err.to_string();
        println!("{}: {message}", case.what);
        assert_says(case.what, &message, case.says);
        messages.insert(message);
    }
    assert_eq!(messages.len(), 8, "every case has its own message");
}

#[test]
fn the_same_databases_are_refused_on_reload_and_the_good_one_kept() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("GeoIP2-City.mmdb");
    std::fs::write(&path, good_city()).unwrap();
    let holder = GeoDatabases::open(&GeoConfig::new(&path)).unwrap();
    let sweden = Some(CountryCode::new("SE").unwrap());
    assert_eq!(holder.resolve(ip("192.0.2.1")).unwrap().country, sweden);
    for (n, case) in refused_databases().into_iter().enumerate() {
        info!(what = case.what, "Proving the database is refused on reload, recorded with its message, and the one in service kept.");
        replace_file(&path, &case.bytes);
        let report = holder.reload_if_changed();
        let SlotReload::Rejected(error) = &report.location else {
            panic!("{}: {report:?}", case.what);
        };
        assert_eq!(error.reason(), case.reason, "{}: {error}", case.what);
        assert_says(case.what, &error.to_string(), case.says);
        let health = holder.health();
        let last_error = health.location.last_error.expect("last error recorded");
        assert_eq!(last_error.reason, case.reason, "{}", case.what);
        assert_eq!(last_error.message, error.to_string(), "{}", case.what);
        assert_eq!(
            holder.reload_failures_total(),
            n as u64 + 1,
            "{}",
            case.what
        );
        assert_eq!(
            holder.resolve(ip("192.0.2.1")).unwrap().country,
            sweden,
            "{}",
            case.what
        );
    }

    info!("Proving a good file after the refused ones is taken again.");
    replace_file(&path, &good_city());
    let report = holder.reload_if_changed();
    assert!(
        matches!(report.location, SlotReload::Reloaded(_)),
        "{report:?}"
    );
    assert_eq!(holder.health().location.last_error, None);
}

#[test]
fn an_empty_description_is_no_reason_to_refuse() {
    init_tracing();
    info!("Proving a database in MaxMind's layout with an empty description loads and resolves.");
    let bytes = fixtures::location_db_without_description(
        "GeoIP2-City",
        BUILT,
        &[
            ("192.0.2.0/24", place("SE", &["E"])),
            fixtures::PROBE_ANCHOR,
        ],
    )
    .unwrap();
    let reader = maxminddb::Reader::from_source(bytes.as_slice()).unwrap();
    assert!(reader.metadata().description.is_empty());
    let verdict = reader
        .verify()
        .expect_err("maxminddb's verify() refuses it");
    assert!(verdict.to_string().contains("description"), "{verdict}");
    let db = GeoDatabase::from_bytes(DatabaseKind::Location, bytes.clone(), "undescribed", LIMIT)
        .unwrap();
    let holder = GeoDatabases::from_databases(db, None).unwrap();
    let facts = holder.resolve(ip("192.0.2.9")).unwrap();
    assert_eq!(facts.country, Some(CountryCode::new("SE").unwrap()));

    info!("Proving the integrity checks still run without a description: a corrupt file is refused as corrupt.");
    let mut corrupt = bytes.clone();
    // The 16 bytes between the search tree and the data must be zero.
    let separator = reader.metadata().node_count as usize * 24 / 4;
    corrupt[separator + 3] = 0x7f;
    let err = GeoDatabase::from_bytes(DatabaseKind::Location, corrupt, "corrupt", LIMIT)
        .expect_err("a corrupt separator");
    assert!(
        matches!(&err, GeoError::Invalid { source, .. } if source.to_string().contains("separator")),
        "{err}"
    );
    let half = bytes[..bytes.len() / 2].to_vec();
    let err = GeoDatabase::from_bytes(DatabaseKind::Location, half, "cut", LIMIT)
        .expect_err("half a file");
    assert_eq!(err.reason(), "GEO_DB_INVALID", "{err}");
}

#[test]
fn metadata_without_a_description_key_is_refused_by_the_reader_itself() {
    init_tracing();
    info!("Proving (and documenting) that maxminddb 0.32 cannot open a file whose metadata lacks the description key, and says so.");
    let bytes =
        fixtures::location_db_without_description("GeoIP2-City", BUILT, &[fixtures::PROBE_ANCHOR])
            .unwrap();
    // Rename the metadata key (an 11-byte string: control byte 0x4b), so
    // the map has no `description` at all.
    let key = b"\x4bdescription";
    let at = bytes
        .windows(key.len())
        .rposition(|w| w == key)
        .expect("metadata has a description key");
    let mut renamed = bytes;
    renamed[at + 1] = b'x';
    let err = GeoDatabase::from_bytes(DatabaseKind::Location, renamed, "no-key", LIMIT)
        .expect_err("Reader::from_source needs the key");
    assert_eq!(err.reason(), "GEO_DB_INVALID");
    assert!(err.to_string().contains("description"), "{err}");
}

#[test]
fn a_small_database_in_maxminds_layout_passes_with_one_probe_address() {
    init_tracing();
    info!("Proving a database that resolves one probe address with every field loads, as Country and as City.");
    let anchor = [fixtures::PROBE_ANCHOR];
    for database_type in ["GeoIP2-Country", "GeoIP2-City"] {
        let bytes = fixtures::location_db(database_type, BUILT, &anchor).unwrap();
        GeoDatabase::from_bytes(DatabaseKind::Location, bytes, database_type, LIMIT)
            .unwrap_or_else(|e| panic!("{database_type}: {e}"));
    }
    info!("Proving a Country database needs no subdivisions.");
    let bytes = fixtures::location_db(
        "GeoIP2-Country",
        BUILT,
        &[("81.2.69.0/24", place("GB", &[]))],
    )
    .unwrap();
    GeoDatabase::from_bytes(DatabaseKind::Location, bytes, "country", LIMIT).unwrap();
    assert!(PROBE_ADDRESSES.contains(&ip("81.2.69.160")));
}

#[test]
fn maxminds_official_test_databases_pass_the_probe() {
    init_tracing();
    let Some(geoip) = shared_geoip_dir() else {
        println!("SKIPPED maxminds_official_test_databases_pass_the_probe: shared/geoip not found (set TOLLGATE_SHARED_DIR to run it)");
        return;
    };
    let data = geoip.join("maxmind-test-data");
    info!(
        "Proving MaxMind's City and Country test databases load through the holder, probe and all."
    );
    for file in [
        "GeoIP2-City-Test.mmdb",
        "GeoLite2-City-Test.mmdb",
        "GeoIP2-Country-Test.mmdb",
        "GeoLite2-Country-Test.mmdb",
    ] {
        let holder = GeoDatabases::open(&GeoConfig::new(data.join(file)))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let london = holder.resolve(ip("81.2.69.160")).unwrap();
        assert_eq!(
            london.country.map(|c| c.to_string()).as_deref(),
            Some("GB"),
            "{file}"
        );
    }

    info!("Proving the probe addresses taken from MaxMind's test data are in it, so the rule holds for those files by construction.");
    let holder = GeoDatabases::open(&GeoConfig::new(data.join("GeoIP2-City-Test.mmdb"))).unwrap();
    let from_test_data = [
        "81.2.69.160",
        "2.125.160.216",
        "89.160.20.128",
        "216.160.83.56",
        "175.16.199.1",
        "67.43.156.1",
        "202.196.224.1",
        "2001:218::1",
        "2001:220::1",
    ];
    for address in from_test_data {
        assert!(PROBE_ADDRESSES.contains(&ip(address)), "{address}");
        let facts = holder.resolve(ip(address)).unwrap();
        assert!(facts.country.is_some(), "{address}: {facts:?}");
    }
}
