//! One MaxMind database, loaded from bytes and validated before anyone can
//! look anything up in it.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::net::IpAddr;
use std::path::Path;

use maxminddb::{MaxMindDbError, Reader};
use serde::{Deserialize, Serialize};
use tollgate_model::{AnonymousNetwork, GeoFacts};

use crate::probe::{verify_without_description, LocationProbe, PROBE_ADDRESSES};
use crate::record::{AnonymousRecord, Location, LocationRecord, RecordShape};
use crate::GeoError;

/// Default for the most bytes one database file may hold. The largest
/// MaxMind product (GeoIP2-City) is well under 200 MiB; 512 MiB leaves room
/// for growth and still bounds what a bad file can make us allocate.
pub const FILE_SIZE_BYTES_MAX_DEFAULT: u64 = 512 * 1024 * 1024;

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
        let invalid = |origin: &str, source| GeoError::Invalid {
            origin: origin.to_owned(),
            source,
        };
        // Checked on a reader that borrows the bytes, which the checks of a
        // file without a description read; the reader kept owns them.
        let checked =
            Reader::from_source(bytes.as_slice()).map_err(|source| invalid(&origin, source))?;
        // Integrity first, type second: a corrupt file is reported as
        // corrupt whatever it claims to be. verify() walks the whole tree
        // and data section, with work bounded by the file size, so
        // corruption is found now rather than by one unlucky lookup later.
        let metadata = checked.metadata();
        if metadata.description.is_empty() {
            // verify() would stop at the empty description, before the
            // tree and the data; see verify_without_description.
            verify_without_description(&checked, &bytes)
                .map_err(|source| invalid(&origin, source))?;
        } else {
            checked
                .verify()
                .map_err(|source| invalid(&origin, source))?;
        }
        // MaxMind's own readers treat a build time past what a timestamp
        // can hold as corrupt metadata; so do we.
        metadata
            .build_time()
            .map_err(|source| invalid(&origin, source))?;
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
        drop(checked);
        let reader = Reader::from_source(bytes).map_err(|source| invalid(&info.origin, source))?;
        let database = GeoDatabase { reader, info };
        match kind {
            DatabaseKind::Location => database.probe_location()?,
            DatabaseKind::AnonymousIp => database.probe_anonymous()?,
        }
        Ok(database)
    }

    /// Looks up [`PROBE_ADDRESSES`] through the same code path as real
    /// lookups and refuses a database whose records our schema cannot
    /// read, that resolves none of them, or whose records lack a field
    /// geo rules read (the rule is on [`PROBE_ADDRESSES`]): served, such a
    /// file would answer "location unknown" for every caller, and every
    /// geo rule would decide on that instead of on where callers are.
    fn probe_location(&self) -> Result<(), GeoError> {
        let mut probe = LocationProbe::default();
        for &ip in self.probe_addresses() {
            probe.looked_up(ip);
            let result = self
                .reader
                .lookup(ip)
                .map_err(|source| self.invalid(source))?;
            if !result.has_data() {
                continue;
            }
            // What the record is, for the messages only (a record that
            // cannot even be described goes undescribed): the decode below,
            // the one lookups do, gives the verdict.
            let shape = result.decode::<RecordShape>().ok().flatten();
            let record = match result.decode::<LocationRecord<'_>>() {
                Ok(Some(record)) => record,
                Ok(None) => continue,
                Err(source) => return Err(self.unreadable(ip, shape, source)),
            };
            let present = record.fields_present();
            let location = record
                .into_location(ip)
                .map(|location| location.country.is_some());
            probe.found(ip, present, shape, location);
        }
        probe.verdict(&self.info.origin, &self.info.database_type)
    }

    /// Decodes the records of the probe addresses through the same code
    /// path as real lookups, so a database whose records our schema cannot
    /// read is refused at load, not at the first check. An Anonymous IP
    /// database lists few addresses (a clean address has no record), so
    /// there is no coverage to ask of it.
    fn probe_anonymous(&self) -> Result<(), GeoError> {
        for &ip in self.probe_addresses() {
            match self.anonymous(ip) {
                Ok(_) => {}
                Err(GeoError::Lookup { source, .. }) => return Err(self.invalid(source)),
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    /// The probe addresses this database's IP version can hold.
    fn probe_addresses(&self) -> impl Iterator<Item = &'static IpAddr> + '_ {
        PROBE_ADDRESSES
            .iter()
            .filter(|ip| ip.is_ipv4() || self.info.ip_version == 6)
    }

    fn invalid(&self, source: MaxMindDbError) -> GeoError {
        GeoError::Invalid {
            origin: self.info.origin.clone(),
            source,
        }
    }

    /// A probe record that does not decode in MaxMind's layout: a schema
    /// problem when the decoder says the types differ (the file already
    /// passed verification), corruption otherwise.
    fn unreadable(
        &self,
        ip: IpAddr,
        shape: Option<RecordShape>,
        source: MaxMindDbError,
    ) -> GeoError {
        if !matches!(source, MaxMindDbError::Decoding { .. }) {
            return self.invalid(source);
        }
        let found = match shape {
            Some(RecordShape::Map(keys)) if !keys.is_empty() => {
                format!("; found keys: {}", keys.join(", "))
            }
            Some(RecordShape::Map(_)) => "; found an empty map".to_owned(),
            Some(RecordShape::Other(what)) => format!("; found {what}"),
            None => String::new(),
        };
        GeoError::Schema {
            origin: self.info.origin.clone(),
            problem: format!("the record of {ip} cannot be read in that layout: {source}{found}"),
        }
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
