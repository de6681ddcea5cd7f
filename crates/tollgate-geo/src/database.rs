//! One MaxMind database, loaded from bytes and validated before anyone can
//! look anything up in it.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use maxminddb::Reader;
use serde::{Deserialize, Deserializer, Serialize};
use tollgate_model::{
    AnonymousNetwork, Continent, CountryCode, GeoFacts, ModelError, SubdivisionCode,
};

use crate::GeoError;

/// Default for the most bytes one database file may hold. The largest
/// MaxMind product (GeoIP2-City) is well under 200 MiB; 512 MiB leaves room
/// for growth and still bounds what a bad file can make us allocate.
pub const FILE_SIZE_BYTES_MAX_DEFAULT: u64 = 512 * 1024 * 1024;

/// Most subdivisions one record may list. MaxMind lists at most two
/// (e.g. `GB-ENG`, `GB-WBK`); more is a corrupt or hostile record.
pub const SUBDIVISIONS_LEN_MAX: usize = 8;

/// The database type of MaxMind's Anonymous IP database, the only type the
/// anonymous slot accepts.
pub const ANONYMOUS_IP_DATABASE_TYPE: &str = "GeoIP2-Anonymous-IP";

/// Which slot a database fills, and so which `database_type` it must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DatabaseKind {
    /// A GeoIP2/GeoLite2 City or Country database: country, continent and,
    /// for City, subdivisions.
    Location,
    /// MaxMind's Anonymous IP database: VPN, Tor, proxy and hosting flags.
    AnonymousIp,
}

impl DatabaseKind {
    /// What the slot expects, for error messages.
    pub fn expected(self) -> &'static str {
        match self {
            DatabaseKind::Location => {
                "a City or Country database (GeoIP2-City, GeoLite2-Country, ...)"
            }
            DatabaseKind::AnonymousIp => ANONYMOUS_IP_DATABASE_TYPE,
        }
    }

    /// Whether a database with this metadata `database_type` fits the slot.
    pub fn accepts(self, database_type: &str) -> bool {
        match self {
            DatabaseKind::Location => {
                database_type.contains("City") || database_type.contains("Country")
            }
            DatabaseKind::AnonymousIp => database_type == ANONYMOUS_IP_DATABASE_TYPE,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DatabaseKind::Location => "location",
            DatabaseKind::AnonymousIp => "anonymous_ip",
        }
    }
}

impl fmt::Display for DatabaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a loaded database says about itself, for health output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DatabaseInfo {
    pub kind: DatabaseKind,
    /// Metadata `database_type`, e.g. `GeoIP2-City`.
    pub database_type: String,
    /// Metadata `build_epoch`: when MaxMind built the file, Unix seconds.
    pub build_epoch_seconds: u64,
    /// 4 or 6.
    pub ip_version: u16,
    pub node_count: u32,
    pub size_bytes: u64,
    /// The file it came from, or a label for an in-memory database.
    pub origin: String,
}

/// A validated MaxMind database. Only [`GeoDatabase::from_bytes`] and
/// [`GeoDatabase::open`] make one, and both refuse a file of the wrong type,
/// a file `Reader::verify` rejects, and a file whose probe lookup fails.
pub struct GeoDatabase {
    // Owned bytes, never a memory map: a file truncated under a map turns a
    // lookup into SIGBUS, while owned bytes can only be wrong, not vanish.
    reader: Reader<Vec<u8>>,
    info: DatabaseInfo,
}

impl fmt::Debug for GeoDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDatabase")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl GeoDatabase {
    /// Reads `path` (at most `size_bytes_max` bytes) and validates it for
    /// the `kind` slot.
    pub fn open(kind: DatabaseKind, path: &Path, size_bytes_max: u64) -> Result<Self, GeoError> {
        let bytes = read_file_bounded(path, size_bytes_max)?;
        Self::validate(kind, bytes, path.display().to_string(), size_bytes_max)
    }

    /// Validates in-memory bytes for the `kind` slot. `origin` names them in
    /// errors and health output.
    pub fn from_bytes(
        kind: DatabaseKind,
        bytes: Vec<u8>,
        origin: impl Into<String>,
        size_bytes_max: u64,
    ) -> Result<Self, GeoError> {
        Self::validate(kind, bytes, origin.into(), size_bytes_max)
    }

    fn validate(
        kind: DatabaseKind,
        bytes: Vec<u8>,
        origin: String,
        size_bytes_max: u64,
    ) -> Result<Self, GeoError> {
        let size_bytes = bytes.len() as u64;
        if size_bytes > size_bytes_max {
            return Err(GeoError::TooLarge {
                origin,
                size_bytes,
                size_bytes_max,
            });
        }
        let reader = match Reader::from_source(bytes) {
            Ok(reader) => reader,
            Err(source) => return Err(GeoError::Invalid { origin, source }),
        };
        // Integrity first, type second: a corrupt file is reported as
        // corrupt whatever it claims to be. verify() walks the whole tree
        // and data section, with work bounded by the file size, so
        // corruption is found now rather than by one unlucky lookup later.
        if let Err(source) = reader.verify() {
            return Err(GeoError::Invalid { origin, source });
        }
        let metadata = reader.metadata();
        // MaxMind's own readers treat a build time past what a timestamp
        // can hold as corrupt metadata; so do we.
        if let Err(source) = metadata.build_time() {
            return Err(GeoError::Invalid { origin, source });
        }
        if !kind.accepts(&metadata.database_type) {
            return Err(GeoError::WrongType {
                origin,
                expected: kind.expected(),
                found: metadata.database_type.chars().take(64).collect(),
            });
        }
        let info = DatabaseInfo {
            kind,
            database_type: metadata.database_type.clone(),
            build_epoch_seconds: metadata.build_epoch,
            ip_version: metadata.ip_version,
            node_count: metadata.node_count,
            size_bytes,
            origin,
        };
        let database = GeoDatabase { reader, info };
        database.probe()?;
        Ok(database)
    }

    /// Decodes the records of a few addresses through the same code path as
    /// real lookups, so a database whose records our schema cannot read is
    /// refused at load, not at the first check.
    fn probe(&self) -> Result<(), GeoError> {
        let mut probes = vec![
            IpAddr::V4(Ipv4Addr::new(1, 1, 1, 1)),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        ];
        if self.info.ip_version == 6 {
            probes.push(IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)));
        }
        for ip in probes {
            let outcome = match self.info.kind {
                DatabaseKind::Location => self.location(ip).map(drop),
                DatabaseKind::AnonymousIp => self.anonymous(ip).map(drop),
            };
            match outcome {
                Ok(()) => {}
                Err(GeoError::Lookup { source, .. }) => {
                    return Err(GeoError::Invalid {
                        origin: self.info.origin.clone(),
                        source,
                    })
                }
                // A malformed code in one record is that record's problem,
                // reported by its lookups; it does not make the file invalid.
                Err(GeoError::BadRecord { .. }) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    pub fn info(&self) -> &DatabaseInfo {
        &self.info
    }

    pub fn kind(&self) -> DatabaseKind {
        self.info.kind
    }

    /// The location of `ip`: `Ok(None)` when the database has no record
    /// for it. Meant for a [`DatabaseKind::Location`] database.
    pub fn location(&self, ip: IpAddr) -> Result<Option<Location>, GeoError> {
        let Some(record) = self.decode::<LocationRecord<'_>>(ip)? else {
            return Ok(None);
        };
        record.into_location(ip).map(Some)
    }

    /// The anonymous-network flags of `ip`: `Ok(None)` when the database
    /// has no record for it (a clean address). Meant for a
    /// [`DatabaseKind::AnonymousIp`] database.
    pub fn anonymous(&self, ip: IpAddr) -> Result<Option<AnonymousNetwork>, GeoError> {
        Ok(self
            .decode::<AnonymousRecord>(ip)?
            .map(AnonymousRecord::into_network))
    }

    fn decode<'a, T: Deserialize<'a>>(&'a self, ip: IpAddr) -> Result<Option<T>, GeoError> {
        let ip = canonical(ip);
        if ip.is_ipv6() && self.info.ip_version == 4 {
            // An IPv4-only database knows nothing about IPv6 addresses.
            return Ok(None);
        }
        let result = self
            .reader
            .lookup(ip)
            .map_err(|source| GeoError::Lookup { ip, source })?;
        result
            .decode::<T>()
            .map_err(|source| GeoError::Lookup { ip, source })
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:192.0.2.1`) are IPv4 callers seen
/// through a dual-stack socket; look them up as IPv4 so they resolve the
/// same in every database, aliased or not.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Reads a whole regular file, refusing one over `size_bytes_max` bytes
/// before reading it and even if it grows while being read.
pub fn read_file_bounded(path: &Path, size_bytes_max: u64) -> Result<Vec<u8>, GeoError> {
    let io_error = |source| GeoError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    let metadata = file.metadata().map_err(io_error)?;
    if !metadata.is_file() {
        // A FIFO or device would block or never end; a directory is a typo.
        return Err(io_error(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        )));
    }
    let origin = || path.display().to_string();
    if metadata.len() > size_bytes_max {
        return Err(GeoError::TooLarge {
            origin: origin(),
            size_bytes: metadata.len(),
            size_bytes_max,
        });
    }
    let capacity = usize::try_from(metadata.len()).unwrap_or(0);
    let mut bytes = Vec::with_capacity(capacity);
    file.take(size_bytes_max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > size_bytes_max {
        return Err(GeoError::TooLarge {
            origin: origin(),
            size_bytes: bytes.len() as u64,
            size_bytes_max,
        });
    }
    Ok(bytes)
}

/// Country, continent and subdivisions of one address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Location {
    pub country: Option<CountryCode>,
    pub continent: Option<Continent>,
    /// Most general first, each `COUNTRY-CODE`.
    pub subdivisions: Vec<SubdivisionCode>,
}

impl Location {
    pub(crate) fn apply_to(self, facts: &mut GeoFacts) {
        facts.country = self.country;
        facts.continent = self.continent;
        facts.subdivisions = self.subdivisions;
    }
}

// The slice of MaxMind's City/Country record layout that geo rules use.
// Field names are MaxMind's; everything else in the record is skipped.
#[derive(Deserialize)]
struct LocationRecord<'a> {
    #[serde(borrow, default)]
    country: Option<IsoCodeRecord<'a>>,
    #[serde(borrow, default)]
    continent: Option<ContinentRecord<'a>>,
    #[serde(borrow, default, deserialize_with = "bounded_subdivisions")]
    subdivisions: Vec<IsoCodeRecord<'a>>,
}

#[derive(Deserialize)]
struct IsoCodeRecord<'a> {
    #[serde(borrow, default)]
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct ContinentRecord<'a> {
    #[serde(borrow, default)]
    code: Option<&'a str>,
}

fn bounded_subdivisions<'de, D>(deserializer: D) -> Result<Vec<IsoCodeRecord<'de>>, D::Error>
where
    D: Deserializer<'de>,
{
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = Vec<IsoCodeRecord<'de>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "an array of at most {SUBDIVISIONS_LEN_MAX} subdivisions")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(item) = seq.next_element::<IsoCodeRecord<'de>>()? {
                if out.len() == SUBDIVISIONS_LEN_MAX {
                    return Err(serde::de::Error::custom(format!(
                        "more than {SUBDIVISIONS_LEN_MAX} subdivisions"
                    )));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_seq(Bounded)
}

impl LocationRecord<'_> {
    fn into_location(self, ip: IpAddr) -> Result<Location, GeoError> {
        let bad = |field, source| GeoError::BadRecord { ip, field, source };
        let country = match self.country.and_then(|c| c.iso_code) {
            Some(code) => Some(CountryCode::new(code).map_err(|e| bad("country.iso_code", e))?),
            None => None,
        };
        let continent = match self.continent.and_then(|c| c.code) {
            Some(code) => Some(Continent::from_code(code).map_err(|e| bad("continent.code", e))?),
            None => None,
        };
        let mut subdivisions = Vec::with_capacity(self.subdivisions.len());
        for local in self.subdivisions.iter().filter_map(|s| s.iso_code) {
            let Some(country) = country else {
                // A subdivision code means nothing without its country, and
                // dropping it silently could slip past a deny-list.
                return Err(bad(
                    "subdivisions",
                    ModelError::Invalid {
                        field: "subdivisions",
                        reason: "record lists subdivisions but no country".to_owned(),
                    },
                ));
            };
            subdivisions.push(
                SubdivisionCode::from_parts(country, local)
                    .map_err(|e| bad("subdivisions.iso_code", e))?,
            );
        }
        Ok(Location {
            country,
            continent,
            subdivisions,
        })
    }
}

// MaxMind's Anonymous IP record: only the flags that are true are present.
#[derive(Deserialize, Default)]
#[serde(default)]
struct AnonymousRecord {
    is_anonymous_vpn: bool,
    is_tor_exit_node: bool,
    is_public_proxy: bool,
    is_residential_proxy: bool,
    is_hosting_provider: bool,
}

impl AnonymousRecord {
    fn into_network(self) -> AnonymousNetwork {
        AnonymousNetwork {
            vpn: self.is_anonymous_vpn,
            tor_exit_node: self.is_tor_exit_node,
            public_proxy: self.is_public_proxy,
            residential_proxy: self.is_residential_proxy,
            hosting_provider: self.is_hosting_provider,
        }
    }
}

/// Builds [`GeoFacts`] from a location database and an optional anonymous
/// one. Shared by [`crate::GeoResolver`].
pub(crate) fn resolve_with(
    location: &GeoDatabase,
    anonymous: Option<&GeoDatabase>,
    ip: IpAddr,
) -> Result<GeoFacts, GeoError> {
    let mut facts = GeoFacts::unknown();
    if let Some(found) = location.location(ip)? {
        found.apply_to(&mut facts);
    }
    facts.anonymous = match anonymous {
        // No anonymous data loaded: unknown, not "clean".
        None => None,
        // Loaded but not listed: known clean.
        Some(db) => Some(db.anonymous(ip)?.unwrap_or_default()),
    };
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_slot_accepts_city_and_country_types_only() {
        for ok in [
            "GeoIP2-City",
            "GeoLite2-Country",
            "GeoIP2-Country",
            "Tollgate-Demo-City",
        ] {
            assert!(DatabaseKind::Location.accepts(ok), "{ok}");
        }
        for bad in ["GeoLite2-ASN", "GeoIP2-Anonymous-IP", "", "city"] {
            assert!(!DatabaseKind::Location.accepts(bad), "{bad}");
        }
        assert!(DatabaseKind::AnonymousIp.accepts("GeoIP2-Anonymous-IP"));
        assert!(!DatabaseKind::AnonymousIp.accepts("GeoIP2-City"));
    }

    #[test]
    fn ipv4_mapped_addresses_are_canonicalised() {
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(canonical(mapped), "192.0.2.1".parse::<IpAddr>().unwrap());
        let plain: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical(plain), plain);
    }

    #[test]
    fn random_bytes_are_refused_without_panic() {
        // A small deterministic generator: no rand dependency for one test.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for len in [0_usize, 1, 15, 16, 100, 4096] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let err = GeoDatabase::from_bytes(DatabaseKind::Location, bytes, "random", 1 << 20)
                .expect_err("random bytes must be refused");
            assert!(err.is_load_error(), "{err}");
        }
    }

    #[test]
    fn oversized_bytes_are_refused_before_parsing() {
        let err = GeoDatabase::from_bytes(DatabaseKind::Location, vec![0; 2048], "big", 1024)
            .expect_err("over the limit");
        assert!(
            matches!(
                err,
                GeoError::TooLarge {
                    size_bytes: 2048,
                    size_bytes_max: 1024,
                    ..
                }
            ),
            "{err}"
        );
    }
}
