//! Tollgate's geography layer: MaxMind databases in, [`GeoFacts`] out.
//!
//! - [`GeoDatabase`] is one MaxMind DB, read from bytes (never memory-mapped:
//!   a file truncated under a map is a SIGBUS), bounded in size, and
//!   validated before use: its `database_type` must fit its slot
//!   ([`DatabaseKind`]), `Reader::verify` must pass, and probe lookups must
//!   decode.
//! - [`GeoDatabases`] holds the location database (City or Country) and the
//!   optional Anonymous IP database of a node. Lookups are lock-free;
//!   [`GeoDatabases::reload_if_changed`] swaps in a changed file only after
//!   it validated, and keeps the old one otherwise. [`spawn_watcher`] polls.
//! - [`fixtures`] (feature `fixtures`, on by default) builds the demo
//!   geography and test databases in MaxMind's record layout.
//!
//! Architecture invariant: this crate resolves addresses and nothing else.
//! It never decides whether a check passes (that is the engine's pure
//! `decide`, which takes `GeoFacts` as a parameter), never downloads
//! databases, and never panics on the bytes of a file.
//!
//! [`GeoFacts`]: tollgate_model::GeoFacts

mod database;
mod error;
#[cfg(feature = "fixtures")]
pub mod fixtures;
mod holder;

pub use database::{
    read_file_bounded, DatabaseInfo, DatabaseKind, GeoDatabase, Location,
    ANONYMOUS_IP_DATABASE_TYPE, FILE_SIZE_BYTES_MAX_DEFAULT, SUBDIVISIONS_LEN_MAX,
};
pub use error::GeoError;
pub use holder::{
    spawn_watcher, GeoConfig, GeoDatabases, GeoHealth, GeoResolver, LoadFailure, ReloadReport,
    SlotHealth, SlotReload, WATCH_INTERVAL_MS_MIN,
};

// Holders are shared across tasks and errors travel through anyhow and
// tokio tasks; keep both thread-safe.
const _: fn() = || {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<GeoError>();
    assert_send_sync::<GeoDatabases>();
    assert_send_sync::<GeoResolver>();
};
