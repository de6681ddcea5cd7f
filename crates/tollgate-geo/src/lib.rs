//! Tollgate's geography layer: MaxMind databases in, [`GeoFacts`] out.
//!
//! - [`GeoDatabase`] is one MaxMind DB, read from bytes (never memory-mapped:
//!   a file truncated under a map is a SIGBUS), bounded in size, and
//!   validated before use: `Reader::verify` must pass (its tree and data
//!   checks, for a file whose metadata has no description), its
//!   `database_type` must fit its slot ([`DatabaseKind`]), and probe lookups
//!   of well-known public addresses ([`PROBE_ADDRESSES`]) must decode and,
//!   in a location database, find the fields geo rules read: a database
//!   that would resolve every caller to "location unknown" is refused.
//! - [`GeoDatabases`] holds the location database (City or Country) and the
//!   optional Anonymous IP database of a node. Lookups are lock-free;
//!   [`GeoDatabases::reload_if_changed`] swaps in a changed file only after
//!   it validated, and keeps the old one otherwise. [`spawn_watcher`] polls.
//! - [`LocationCounts`] counts the addresses a node resolves for checks and
//!   how many came out unknown (`/v1/status`, `tollgate_checks_geo_total`).
//! - [`fixtures`] (feature `fixtures`, on by default) builds the demo
//!   geography and test databases in MaxMind's record layout.
//!
//! Architecture invariant: this crate resolves addresses and nothing else.
//! It never decides whether a check passes (that is the engine's pure
//! `decide`, which takes `GeoFacts` as a parameter), never downloads
//! databases, and never panics on the bytes of a file.
//!
//! [`GeoFacts`]: tollgate_model::GeoFacts

mod counts;
mod database;
mod error;
#[cfg(feature = "fixtures")]
pub mod fixtures;
mod holder;
mod probe;
mod record;

pub use counts::{LocationCounts, LocationShare, LOCATIONS_METRIC};
pub use database::{
    read_file_bounded, DatabaseInfo, DatabaseKind, GeoDatabase, ANONYMOUS_IP_DATABASE_TYPE,
    FILE_SIZE_BYTES_MAX_DEFAULT,
};
pub use error::GeoError;
pub use holder::{
    spawn_watcher, GeoConfig, GeoDatabases, GeoHealth, GeoResolver, LoadFailure, ReloadReport,
    SlotHealth, SlotReload, WATCH_INTERVAL_MS_MIN,
};
pub use probe::PROBE_ADDRESSES;
pub use record::{Location, SUBDIVISIONS_LEN_MAX};

// Holders are shared across tasks and errors travel through anyhow and
// tokio tasks; keep both thread-safe.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<GeoError>();
    assert_send_sync::<GeoDatabases>();
    assert_send_sync::<GeoResolver>();
};
