//! MaxMind's official test databases and the MaxMind readers' collections
//! of malformed files, from `shared/geoip/` (skipped, with a message, when
//! that directory is absent).

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use common::{init_tracing, ip, replace_file, shared_geoip_dir};
use serde_json::Value;
use tollgate_geo::{
    DatabaseKind, GeoConfig, GeoDatabase, GeoDatabases, GeoError, SlotReload,
    FILE_SIZE_BYTES_MAX_DEFAULT,
};
use tollgate_model::{AnonymousNetwork, Continent, CountryCode, SubdivisionCode};
use tracing::info;

const LIMIT: u64 = FILE_SIZE_BYTES_MAX_DEFAULT;

fn geoip_dir_or_skip(test: &str) -> Option<PathBuf> {
    let dir = shared_geoip_dir();
    if dir.is_none() {
        println!("SKIPPED {test}: shared/geoip not found (set TOLLGATE_SHARED_DIR to run it)");
    }
    dir
}

/// A network from a MaxMind JSON source, in IPv6 space (IPv4 networks sit
/// at `::a.b.c.d/96+n`, as they do in the database tree).
#[derive(Debug, Clone, Copy)]
struct Net {
    base: u128,
    prefix_len: u32,
}

impl Net {
    fn parse(text: &str) -> Net {
        let (addr, len) = text.split_once('/').expect("network has a prefix length");
        let len: u32 = len.parse().expect("prefix length");
        match addr.parse::<IpAddr>().expect("network address") {
            IpAddr::V4(v4) => Net {
                base: u128::from(u32::from(v4)),
                prefix_len: 96 + len,
            },
            IpAddr::V6(v6) => Net {
                base: u128::from(v6),
                prefix_len: len,
            },
        }
    }

    fn contains(&self, addr: u128) -> bool {
        let mask = if self.prefix_len == 0 {
            0
        } else {
            u128::MAX << (128 - self.prefix_len)
        };
        addr & mask == self.base & mask
    }

    /// The first address, as IPv6, and as IPv4 when it lies in the IPv4
    /// subtree: both forms must resolve.
    fn first_addresses(&self) -> Vec<IpAddr> {
        let mut out = vec![IpAddr::V6(Ipv6Addr::from(self.base))];
        if self.prefix_len >= 96 && self.base >> 32 == 0 {
            out.push(IpAddr::V4(Ipv4Addr::from(self.base as u32)));
        }
        out
    }
}

/// Entries of a MaxMind JSON source: `[{ "network": record }, ...]`.
fn json_entries(path: &Path) -> Vec<(Net, Value)> {
    let text = std::fs::read_to_string(path).expect("read JSON source");
    let entries: Vec<BTreeMap<String, Value>> =
        serde_json::from_str(&text).expect("parse JSON source");
    entries
        .into_iter()
        .flat_map(|entry| {
            entry
                .into_iter()
                .map(|(net, record)| (Net::parse(&net), record))
        })
        .collect()
}

/// The record that covers `addr` most specifically: later, narrower
/// networks override parts of earlier, wider ones.
fn record_for(entries: &[(Net, Value)], addr: u128) -> Option<&Value> {
    entries
        .iter()
        .filter(|(net, _)| net.contains(addr))
        .max_by_key(|(net, _)| net.prefix_len)
        .map(|(_, record)| record)
}

fn v6_space(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// Checks every network of a City or Country JSON source against the
/// database built from it; returns how many addresses were checked.
fn check_location_source(db_file: &str, json_file: &str, geoip: &Path) -> usize {
    let data = geoip.join("maxmind-test-data");
    let db = GeoDatabase::open(DatabaseKind::Location, &data.join(db_file), LIMIT).expect(db_file);
    let holder = GeoDatabases::from_databases(db, None).unwrap();
    let entries = json_entries(&data.join(json_file));
    let mut checked = 0;
    for (net, _) in &entries {
        for address in net.first_addresses() {
            let Some(record) = record_for(&entries, v6_space(address)) else {
                continue;
            };
            let Some(country) = record["country"]["iso_code"].as_str() else {
                continue;
            };
            let country = CountryCode::new(country).unwrap();
            let facts = holder
                .resolve(address)
                .unwrap_or_else(|error| panic!("{db_file} {address}: {error}"));
            assert_eq!(facts.country, Some(country), "{db_file} {address}");
            let continent = record["continent"]["code"]
                .as_str()
                .map(|c| Continent::from_code(c).unwrap());
            assert_eq!(facts.continent, continent, "{db_file} {address}");
            let subdivisions: Vec<SubdivisionCode> = record["subdivisions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["iso_code"].as_str())
                .map(|s| SubdivisionCode::from_parts(country, s).unwrap())
                .collect();
            assert_eq!(facts.subdivisions, subdivisions, "{db_file} {address}");
            assert_eq!(facts.anonymous, None, "{db_file} {address}");
            checked += 1;
        }
    }
    checked
}

#[test]
fn official_city_and_country_test_databases_resolve_their_json_sources() {
    init_tracing();
    let Some(geoip) =
        geoip_dir_or_skip("official_city_and_country_test_databases_resolve_their_json_sources")
    else {
        return;
    };
    info!("Proving GeoIP2-City-Test.mmdb resolves every network of its JSON source to its country, continent and subdivisions.");
    let checked = check_location_source("GeoIP2-City-Test.mmdb", "GeoIP2-City-Test.json", &geoip);
    assert!(checked > 100, "only {checked} City addresses checked");

    info!("Proving GeoLite2-Country-Test.mmdb resolves every network of its JSON source.");
    let checked = check_location_source(
        "GeoLite2-Country-Test.mmdb",
        "GeoLite2-Country-Test.json",
        &geoip,
    );
    assert!(checked > 100, "only {checked} Country addresses checked");

    info!("Proving a few well-known test addresses, including subdivisions most general first.");
    let data = geoip.join("maxmind-test-data");
    let db = GeoDatabase::open(
        DatabaseKind::Location,
        &data.join("GeoIP2-City-Test.mmdb"),
        LIMIT,
    )
    .unwrap();
    let holder = GeoDatabases::from_databases(db, None).unwrap();
    let facts = holder.resolve(ip("2.125.160.217")).unwrap();
    let subdivisions: Vec<&str> = facts.subdivisions.iter().map(|s| s.as_str()).collect();
    assert_eq!(facts.country.map(|c| c.to_string()).as_deref(), Some("GB"));
    assert_eq!(subdivisions, ["GB-ENG", "GB-WBK"]);
    assert_eq!(holder.resolve(ip("::ffff:2.125.160.217")).unwrap(), facts);
    assert!(!holder.resolve(ip("10.0.0.1")).unwrap().is_location_known());

    info!("Proving the other City and Country test databases load.");
    for file in ["GeoLite2-City-Test.mmdb", "GeoIP2-Country-Test.mmdb"] {
        GeoDatabase::open(DatabaseKind::Location, &data.join(file), LIMIT).expect(file);
    }
}

#[test]
fn official_anonymous_ip_test_database_resolves_its_json_source() {
    init_tracing();
    let Some(geoip) =
        geoip_dir_or_skip("official_anonymous_ip_test_database_resolves_its_json_source")
    else {
        return;
    };
    info!("Proving GeoIP2-Anonymous-IP-Test.mmdb gives every network of its JSON source the listed flags.");
    let data = geoip.join("maxmind-test-data");
    let location = GeoDatabase::open(
        DatabaseKind::Location,
        &data.join("GeoIP2-City-Test.mmdb"),
        LIMIT,
    )
    .unwrap();
    let anonymous = GeoDatabase::open(
        DatabaseKind::AnonymousIp,
        &data.join("GeoIP2-Anonymous-IP-Test.mmdb"),
        LIMIT,
    )
    .unwrap();
    let holder = GeoDatabases::from_databases(location, Some(anonymous)).unwrap();
    let entries = json_entries(&data.join("GeoIP2-Anonymous-IP-Test.json"));
    let mut checked = 0;
    for (net, _) in &entries {
        for address in net.first_addresses() {
            let record = record_for(&entries, v6_space(address)).expect("own network");
            let flag = |name: &str| record[name].as_bool().unwrap_or(false);
            let expected = AnonymousNetwork {
                vpn: flag("is_anonymous_vpn"),
                tor_exit_node: flag("is_tor_exit_node"),
                public_proxy: flag("is_public_proxy"),
                residential_proxy: flag("is_residential_proxy"),
                hosting_provider: flag("is_hosting_provider"),
            };
            let facts = holder
                .resolve(address)
                .unwrap_or_else(|error| panic!("{address}: {error}"));
            assert_eq!(facts.anonymous, Some(expected), "{address}");
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} anonymous addresses checked");
    info!("Proving an address the Anonymous IP database does not list is known clean.");
    assert_eq!(
        holder.resolve(ip("81.2.70.1")).unwrap().anonymous,
        Some(AnonymousNetwork::default())
    );
}

#[test]
fn official_databases_of_other_types_are_refused_for_the_slot() {
    init_tracing();
    let Some(geoip) =
        geoip_dir_or_skip("official_databases_of_other_types_are_refused_for_the_slot")
    else {
        return;
    };
    info!("Proving the ASN and Anonymous IP test databases are refused for the location slot, and City for the anonymous slot.");
    let data = geoip.join("maxmind-test-data");
    for (kind, file) in [
        (DatabaseKind::Location, "GeoLite2-ASN-Test.mmdb"),
        (DatabaseKind::Location, "GeoIP2-Anonymous-IP-Test.mmdb"),
        (DatabaseKind::AnonymousIp, "GeoIP2-City-Test.mmdb"),
        (DatabaseKind::AnonymousIp, "GeoLite2-Country-Test.mmdb"),
    ] {
        let err = GeoDatabase::open(kind, &data.join(file), LIMIT).expect_err(file);
        assert!(matches!(err, GeoError::WrongType { .. }), "{file}: {err}");
    }
}

/// Every malformed file: all of `maxmind-bad-data/` and the broken ones
/// among `maxmind-test-data/`.
fn bad_files(geoip: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(geoip.join("maxmind-bad-data"))
        .expect("maxmind-bad-data")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.extend(
        std::fs::read_dir(geoip.join("maxmind-test-data"))
            .expect("maxmind-test-data")
            .map(|entry| entry.expect("dir entry").path())
            .filter(|path| {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.ends_with(".mmdb")
                    && (name.contains("Broken")
                        || name.contains("Invalid")
                        || name.starts_with("MaxMind-DB-test-broken"))
            }),
    );
    files.sort();
    files
}

#[test]
fn every_malformed_file_is_refused_at_load() {
    init_tracing();
    let Some(geoip) = geoip_dir_or_skip("every_malformed_file_is_refused_at_load") else {
        return;
    };
    let files = bad_files(&geoip);
    assert!(
        files.len() >= 20,
        "expected the MaxMind bad-data collection, found {} files",
        files.len()
    );
    info!(
        count = files.len(),
        "Proving every malformed MaxMind file is refused by both slots without a panic."
    );
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        for kind in [DatabaseKind::Location, DatabaseKind::AnonymousIp] {
            match GeoDatabase::open(kind, path, LIMIT) {
                // Refused as corrupt, not merely as the wrong type: the
                // integrity checks run before the type check.
                Err(GeoError::Invalid { source, .. }) => {
                    println!("{kind:>12} {name}: refused as invalid: {source}");
                }
                Err(GeoError::WrongType { found, .. })
                    if SOUND_BUT_UNDESCRIBED.contains(&name) && found == "Test" =>
                {
                    println!("{kind:>12} {name}: sound, refused as of type {found:?}");
                }
                Err(other) => panic!("{kind} slot refused {name} for the wrong reason: {other}"),
                Ok(db) => panic!("{kind} slot accepted malformed {name}: {:?}", db.info()),
            }
        }
    }
}

/// Files of the bad-data collection whose only fault, by maxminddb's own
/// `Reader::verify`, is an empty metadata description (given one, verify()
/// accepts them: libmaxminddb keeps them for bugs of its own). An empty
/// description is no reason to refuse a file, so they pass the integrity
/// checks and are refused for their type, "Test".
const SOUND_BUT_UNDESCRIBED: [&str; 3] = [
    "libmaxminddb--libmaxminddb-corrupt-search-tree.mmdb",
    "libmaxminddb--libmaxminddb-empty-array-last-in-metadata.mmdb",
    "libmaxminddb--libmaxminddb-empty-map-last-in-metadata.mmdb",
];

#[test]
fn every_malformed_file_is_refused_on_reload_and_the_good_database_kept() {
    init_tracing();
    let Some(geoip) =
        geoip_dir_or_skip("every_malformed_file_is_refused_on_reload_and_the_good_database_kept")
    else {
        return;
    };
    let data = geoip.join("maxmind-test-data");
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("GeoIP2-City.mmdb");
    let anonymous = dir.path().join("GeoIP2-Anonymous-IP.mmdb");
    std::fs::copy(data.join("GeoIP2-City-Test.mmdb"), &city).unwrap();
    std::fs::copy(data.join("GeoIP2-Anonymous-IP-Test.mmdb"), &anonymous).unwrap();
    let holder = GeoDatabases::open(&GeoConfig::new(&city).with_anonymous(&anonymous)).unwrap();
    let before = holder.resolve(ip("81.2.69.160")).unwrap();
    assert_eq!(before.country.map(|c| c.to_string()).as_deref(), Some("GB"));
    assert!(before.anonymous.is_some_and(|a| a.is_anonymous()));

    let files = bad_files(&geoip);
    info!(count = files.len(), "Proving each malformed file put in place of either database is refused on reload and the good databases keep answering.");
    let mut failures = 0;
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let bytes = std::fs::read(path).unwrap();
        for target in [&city, &anonymous] {
            replace_file(target, &bytes);
            let report = holder.reload_if_changed();
            failures += 1;
            let slot = if target == &city {
                &report.location
            } else {
                report.anonymous.as_ref().unwrap()
            };
            assert!(
                matches!(slot, SlotReload::Rejected(_)),
                "{name}: {report:?}"
            );
            assert_eq!(report.reloaded_count(), 0, "{name}: {report:?}");
            assert_eq!(holder.resolve(ip("81.2.69.160")).unwrap(), before, "{name}");
            assert_eq!(holder.reload_failures_total(), failures, "{name}");
            // Put the good file back so the next round starts from it.
            let good = if target == &city {
                "GeoIP2-City-Test.mmdb"
            } else {
                "GeoIP2-Anonymous-IP-Test.mmdb"
            };
            replace_file(target, &std::fs::read(data.join(good)).unwrap());
            let report = holder.reload_if_changed();
            assert_eq!(report.rejected_count(), 0, "{name}: {report:?}");
        }
    }
    assert_eq!(holder.health().location.database_type, "GeoIP2-City");
    assert_eq!(
        holder.health().anonymous.unwrap().database_type,
        "GeoIP2-Anonymous-IP"
    );
}
