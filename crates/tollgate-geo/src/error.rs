//! The one error type of the geography layer.

use std::net::IpAddr;
use std::path::PathBuf;

use maxminddb::MaxMindDbError;
use tollgate_model::ModelError;

/// Everything that can go wrong loading a MaxMind database or resolving an
/// address with one. Loading errors (`Io`, `TooLarge`, `Invalid`,
/// `WrongType`, `NoCoverage`, `Schema`) reject a file; lookup errors
/// (`Lookup`, `BadRecord`) fail one lookup and leave the database in
/// service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeoError {
    /// The file could not be opened, inspected or read.
    #[error("could not read geo database {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The file is bigger than the configured limit. Checked before the
    /// whole file is read, so a runaway file cannot exhaust memory.
    #[error(
        "geo database {origin} is at least {size_bytes} bytes, over the limit of \
         {size_bytes_max} bytes (raise geo.file_size_bytes_max if the file is genuine)"
    )]
    TooLarge {
        origin: String,
        size_bytes: u64,
        size_bytes_max: u64,
    },

    /// The bytes are not a MaxMind DB the reader accepts: bad metadata, a
    /// broken search tree, an undecodable data section, a failed probe.
    #[error("geo database {origin} is not a valid MaxMind DB: {source}")]
    Invalid {
        origin: String,
        #[source]
        source: MaxMindDbError,
    },

    /// A valid MaxMind DB of the wrong kind for its slot, e.g. an ASN
    /// database where a City or Country one belongs.
    #[error("geo database {origin} has database_type {found:?}, expected {expected}")]
    WrongType {
        origin: String,
        expected: &'static str,
        found: String,
    },

    /// A valid location database that has no record for any address of the
    /// probe set (well-known public networks on every continent, and those
    /// MaxMind's own test databases list): an empty file, or one that is
    /// not a database of the public Internet's addresses. Served, it would
    /// resolve every caller to an unknown location.
    #[error(
        "geo database {origin} has no record for any of the {probed} well-known public \
         addresses it was probed with ({examples}): expected a database of the public \
         Internet's addresses, found one that resolves none of them"
    )]
    NoCoverage {
        origin: String,
        probed: usize,
        /// A few of the probe addresses, for the message.
        examples: String,
    },

    /// A valid location database whose records lack the fields geo rules
    /// read (`country.iso_code`, `continent.code`, and for a City database
    /// `subdivisions[].iso_code`), or cannot be read in MaxMind's City and
    /// Country layout: e.g. a flat `country_code`. Served, it would
    /// resolve every caller to an unknown location.
    #[error("geo database {origin} does not have MaxMind's City/Country record layout: {problem}")]
    Schema {
        origin: String,
        /// What was expected and what was found.
        problem: String,
    },

    /// The reader failed to find or decode the record of one address.
    #[error("geo lookup of {ip} failed: {source}")]
    Lookup {
        ip: IpAddr,
        #[source]
        source: MaxMindDbError,
    },

    /// The record of one address decoded but holds a code that is not a
    /// valid country, continent or subdivision code.
    #[error("geo record of {ip} has a malformed {field}: {source}")]
    BadRecord {
        ip: IpAddr,
        field: &'static str,
        #[source]
        source: ModelError,
    },

    /// The fixture writer failed (only with the `fixtures` feature).
    #[cfg(feature = "fixtures")]
    #[error("could not build fixture database: {source}")]
    Fixture {
        #[source]
        source: mmdb_writer::Error,
    },

    /// A fixture network that is not CIDR notation (only with `fixtures`).
    #[cfg(feature = "fixtures")]
    #[error("fixture network {network:?} is not CIDR notation: {source}")]
    FixtureNetwork {
        network: String,
        #[source]
        source: mmdb_writer::ipnet::AddrParseError,
    },
}

impl GeoError {
    /// A stable, machine-readable reason code for health output, logs and
    /// metric labels (a bounded set).
    pub fn reason(&self) -> &'static str {
        match self {
            GeoError::Io { .. } => "GEO_DB_IO",
            GeoError::TooLarge { .. } => "GEO_DB_TOO_LARGE",
            GeoError::Invalid { .. } => "GEO_DB_INVALID",
            GeoError::WrongType { .. } => "GEO_DB_WRONG_TYPE",
            GeoError::NoCoverage { .. } => "GEO_DB_NO_COVERAGE",
            GeoError::Schema { .. } => "GEO_DB_SCHEMA",
            GeoError::Lookup { .. } => "GEO_LOOKUP_FAILED",
            GeoError::BadRecord { .. } => "GEO_RECORD_MALFORMED",
            #[cfg(feature = "fixtures")]
            GeoError::Fixture { .. } | GeoError::FixtureNetwork { .. } => "GEO_FIXTURE",
        }
    }

    /// True for errors that reject a whole database file, false for errors
    /// of one lookup.
    pub fn is_load_error(&self) -> bool {
        !matches!(self, GeoError::Lookup { .. } | GeoError::BadRecord { .. })
    }
}
