//! MaxMind-format databases built in memory: the demo geography that
//! `tollgate dev` serves, and the databases tests and benchmarks use.
//!
//! Records use MaxMind's own layout (`country.iso_code`, `continent.code`,
//! `subdivisions[].iso_code`, `is_anonymous_vpn`, ...), with names and
//! geoname ids as real files have them, so the lookup code that reads them
//! is the code that reads GeoIP2 and GeoLite2 files.
//!
//! A location database is served only if it resolves at least one of
//! [`crate::PROBE_ADDRESSES`]; one built around documentation ranges
//! alone resolves none and is refused. [`PROBE_ANCHOR`] is a real network
//! of the probe set to add to such a fixture; the demo geography has it.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use mmdb_writer::ipnet::IpNet;
use mmdb_writer::Writer;
use serde::Serialize;
use tollgate_model::AnonymousNetwork;

use crate::database::{ANONYMOUS_IP_DATABASE_TYPE, FILE_SIZE_BYTES_MAX_DEFAULT};
use crate::{DatabaseKind, GeoDatabase, GeoDatabases, GeoError};

/// `database_type` of the demo location database. It contains "City", so
/// the location slot takes it like a GeoIP2-City file.
pub const DEMO_CITY_DATABASE_TYPE: &str = "Tollgate-Demo-City";

/// Build time written into the demo databases (2026-01-01T00:00:00Z), fixed
/// so the demo files are byte-for-byte reproducible.
pub const DEMO_BUILD_EPOCH_SECONDS: u64 = 1_767_225_600;

/// One place in a fixture location database, with MaxMind's codes:
/// subdivisions are the part after the hyphen (`CA` for `US-CA`), most
/// general first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixturePlace<'a> {
    pub country: &'a str,
    pub continent: &'a str,
    pub subdivisions: &'a [&'a str],
    /// `city.names.en`, if any.
    pub city: Option<&'a str>,
}

/// A real public network in [`crate::PROBE_ADDRESSES`] (81.2.69.160),
/// placed as MaxMind's own test databases place it: London, England. Add it
/// to a fixture whose other networks are documentation ranges, so that the
/// fixture resolves a probe address and loads like a database of the world.
pub const PROBE_ANCHOR: (&str, FixturePlace<'static>) = (
    "81.2.69.160/27",
    place("GB", "EU", &["ENG"], Some("London")),
);

/// The demo geography: documentation address ranges (RFC 5737, RFC 3849),
/// which no real caller has, mapped to a few places, and [`PROBE_ANCHOR`]
/// (a real network, in London), without which the database would be
/// refused for resolving none of the probe addresses.
pub const DEMO_LOCATIONS: &[(&str, FixturePlace<'static>)] = &[
    ("192.0.2.0/25", place("DE", "EU", &["BE"], Some("Berlin"))),
    ("192.0.2.128/25", place("FR", "EU", &[], None)),
    (
        "198.51.100.0/24",
        place("US", "NA", &["CA"], Some("San Francisco")),
    ),
    ("203.0.113.0/24", place("JP", "AS", &["13"], Some("Tokyo"))),
    ("2001:db8::/48", place("DE", "EU", &["BE"], Some("Berlin"))),
    (
        "2001:db8:1::/48",
        place("US", "NA", &["CA"], Some("San Francisco")),
    ),
    ("2001:db8:2::/48", place("JP", "AS", &["13"], Some("Tokyo"))),
    ("2001:db8:3::/48", place("FR", "EU", &[], None)),
    PROBE_ANCHOR,
];

/// The demo anonymous networks, inside the demo geography.
pub const DEMO_ANONYMOUS: &[(&str, AnonymousNetwork)] = &[
    ("192.0.2.64/26", flags(true, false, false, false, false)),
    ("198.51.100.128/25", flags(false, true, false, false, false)),
    ("203.0.113.0/25", flags(false, false, false, false, true)),
    ("2001:db8:1:1::/64", flags(false, false, true, false, false)),
    ("2001:db8:3::/48", flags(true, false, false, true, true)),
];

const fn place<'a>(
    country: &'a str,
    continent: &'a str,
    subdivisions: &'a [&'a str],
    city: Option<&'a str>,
) -> FixturePlace<'a> {
    FixturePlace {
        country,
        continent,
        subdivisions,
        city,
    }
}

const fn flags(
    vpn: bool,
    tor_exit_node: bool,
    public_proxy: bool,
    residential_proxy: bool,
    hosting_provider: bool,
) -> AnonymousNetwork {
    AnonymousNetwork {
        vpn,
        tor_exit_node,
        public_proxy,
        residential_proxy,
        hosting_provider,
    }
}

/// The demo City database.
pub fn demo_city() -> Result<Vec<u8>, GeoError> {
    location_db(
        DEMO_CITY_DATABASE_TYPE,
        DEMO_BUILD_EPOCH_SECONDS,
        DEMO_LOCATIONS,
    )
}

/// The demo Anonymous IP database.
pub fn demo_anonymous_ip() -> Result<Vec<u8>, GeoError> {
    anonymous_ip_db(
        ANONYMOUS_IP_DATABASE_TYPE,
        DEMO_BUILD_EPOCH_SECONDS,
        DEMO_ANONYMOUS,
    )
}

/// Both demo databases, validated and ready to serve (no file behind them,
/// so reloads do nothing).
pub fn demo_databases() -> Result<GeoDatabases, GeoError> {
    let location = GeoDatabase::from_bytes(
        DatabaseKind::Location,
        demo_city()?,
        "demo:city",
        FILE_SIZE_BYTES_MAX_DEFAULT,
    )?;
    let anonymous = GeoDatabase::from_bytes(
        DatabaseKind::AnonymousIp,
        demo_anonymous_ip()?,
        "demo:anonymous-ip",
        FILE_SIZE_BYTES_MAX_DEFAULT,
    )?;
    GeoDatabases::from_databases(location, Some(anonymous))
}

#[derive(Serialize)]
struct Names {
    names: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct CountryRecord {
    geoname_id: u32,
    iso_code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    is_in_european_union: Option<bool>,
    names: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct ContinentRecord {
    code: String,
    geoname_id: u32,
    names: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct SubdivisionRecord {
    iso_code: String,
    names: BTreeMap<&'static str, String>,
}

#[derive(Serialize)]
struct CityRecord {
    #[serde(skip_serializing_if = "Option::is_none")]
    city: Option<Names>,
    continent: ContinentRecord,
    country: CountryRecord,
    registered_country: CountryRecord,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    subdivisions: Vec<SubdivisionRecord>,
}

#[derive(Serialize)]
struct AnonymousRecord {
    #[serde(skip_serializing_if = "is_false")]
    is_anonymous: bool,
    #[serde(skip_serializing_if = "is_false")]
    is_anonymous_vpn: bool,
    #[serde(skip_serializing_if = "is_false")]
    is_hosting_provider: bool,
    #[serde(skip_serializing_if = "is_false")]
    is_public_proxy: bool,
    #[serde(skip_serializing_if = "is_false")]
    is_residential_proxy: bool,
    #[serde(skip_serializing_if = "is_false")]
    is_tor_exit_node: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn en(name: impl Into<String>) -> BTreeMap<&'static str, String> {
    BTreeMap::from([("en", name.into())])
}

fn country_record(code: &str) -> CountryRecord {
    let (geoname_id, name, eu) = match code {
        "DE" => (2_921_044, "Germany", Some(true)),
        "FR" => (3_017_382, "France", Some(true)),
        "US" => (6_252_001, "United States", None),
        "JP" => (1_861_060, "Japan", None),
        "GB" => (2_635_167, "United Kingdom", None),
        other => (0, other, None),
    };
    CountryRecord {
        geoname_id,
        iso_code: code.to_owned(),
        is_in_european_union: eu,
        names: en(name),
    }
}

fn continent_record(code: &str) -> ContinentRecord {
    let (geoname_id, name) = match code {
        "AF" => (6_255_146, "Africa"),
        "AS" => (6_255_147, "Asia"),
        "EU" => (6_255_148, "Europe"),
        "NA" => (6_255_149, "North America"),
        "OC" => (6_255_151, "Oceania"),
        "SA" => (6_255_150, "South America"),
        "AN" => (6_255_152, "Antarctica"),
        other => (0, other),
    };
    ContinentRecord {
        code: code.to_owned(),
        geoname_id,
        names: en(name),
    }
}

/// `description: None` writes an empty description map, as writers other
/// than MaxMind's do.
fn writer(database_type: &str, build_epoch_seconds: u64, description: Option<&str>) -> Writer {
    let description: &[(&str, &str)] = match &description {
        Some(text) => &[("en", text)],
        None => &[],
    };
    Writer::builder(database_type)
        .description(description)
        .build_epoch(UNIX_EPOCH + Duration::from_secs(build_epoch_seconds))
        .build()
}

fn network(text: &str) -> Result<IpNet, GeoError> {
    text.parse::<IpNet>()
        .map_err(|source| GeoError::FixtureNetwork {
            network: text.to_owned(),
            source,
        })
}

/// A location database with MaxMind's City layout, holding exactly
/// `places` (add [`PROBE_ANCHOR`] for one that must load). `database_type`
/// is written as given, so tests can build one of the wrong type too.
pub fn location_db(
    database_type: &str,
    build_epoch_seconds: u64,
    places: &[(&str, FixturePlace<'_>)],
) -> Result<Vec<u8>, GeoError> {
    location_db_described(
        database_type,
        build_epoch_seconds,
        Some("Tollgate fixture location database"),
        places,
    )
}

/// [`location_db`] with an empty metadata description, as databases from
/// writers other than MaxMind's have.
pub fn location_db_without_description(
    database_type: &str,
    build_epoch_seconds: u64,
    places: &[(&str, FixturePlace<'_>)],
) -> Result<Vec<u8>, GeoError> {
    location_db_described(database_type, build_epoch_seconds, None, places)
}

fn location_db_described(
    database_type: &str,
    build_epoch_seconds: u64,
    description: Option<&str>,
    places: &[(&str, FixturePlace<'_>)],
) -> Result<Vec<u8>, GeoError> {
    let mut writer = writer(database_type, build_epoch_seconds, description);
    for (net, place) in places {
        let record = CityRecord {
            city: place.city.map(|name| Names { names: en(name) }),
            continent: continent_record(place.continent),
            country: country_record(place.country),
            registered_country: country_record(place.country),
            subdivisions: place
                .subdivisions
                .iter()
                .map(|code| SubdivisionRecord {
                    iso_code: (*code).to_owned(),
                    names: en(format!("{}-{}", place.country, code)),
                })
                .collect(),
        };
        writer
            .insert(network(net)?, &record)
            .map_err(|source| GeoError::Fixture { source })?;
    }
    writer
        .to_bytes()
        .map_err(|source| GeoError::Fixture { source })
}

/// An Anonymous IP database with MaxMind's layout: only true flags are
/// written, plus `is_anonymous` when any is.
pub fn anonymous_ip_db(
    database_type: &str,
    build_epoch_seconds: u64,
    networks: &[(&str, AnonymousNetwork)],
) -> Result<Vec<u8>, GeoError> {
    let mut writer = writer(
        database_type,
        build_epoch_seconds,
        Some("Tollgate fixture anonymous IP database"),
    );
    for (net, flags) in networks {
        let record = AnonymousRecord {
            is_anonymous: flags.is_anonymous(),
            is_anonymous_vpn: flags.vpn,
            is_hosting_provider: flags.hosting_provider,
            is_public_proxy: flags.public_proxy,
            is_residential_proxy: flags.residential_proxy,
            is_tor_exit_node: flags.tor_exit_node,
        };
        writer
            .insert(network(net)?, &record)
            .map_err(|source| GeoError::Fixture { source })?;
    }
    writer
        .to_bytes()
        .map_err(|source| GeoError::Fixture { source })
}

/// A MaxMind-format database of any records: another vendor's layout, a
/// broken one. `description: None` writes an empty description map.
pub fn records_db<T: Serialize>(
    database_type: &str,
    build_epoch_seconds: u64,
    description: Option<&str>,
    records: &[(&str, T)],
) -> Result<Vec<u8>, GeoError> {
    let mut writer = writer(database_type, build_epoch_seconds, description);
    for (net, record) in records {
        writer
            .insert(network(net)?, record)
            .map_err(|source| GeoError::Fixture { source })?;
    }
    writer
        .to_bytes()
        .map_err(|source| GeoError::Fixture { source })
}
