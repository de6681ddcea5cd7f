//! Fuzz targets for every decoder that reads bytes from the network or disk.
//!
//! Each target is one `pub fn <target>(data: &[u8])` holding the whole
//! target body, so the same code runs under libFuzzer (`fuzz/`, one thin
//! `fuzz_target!` per function) and under `cargo test` (`tests/replay.rs`
//! replays every checked-in corpus and regression file). A target panics
//! only when a property is broken: a decoder panicked, a verifier accepted
//! altered bytes, a canonical codec did not round-trip, a limit was not
//! honoured.
//!
//! Structured targets read their input with [`input::Input`] (a mode byte,
//! then length-prefixed fields) over `arbitrary::Unstructured`: the fuzzer
//! mutates the parts of a well-formed token, certificate or record, which is
//! then signed with a fixed key, so its mutations reach past framing and
//! signatures. `tests/corpus.rs` writes the seeds in the same format
//! ([`input::Output`]), with the same keys ([`fixtures`]).
//!
//! [`TARGETS`] lists every target; the replay test fails for one without a
//! corpus directory.

mod feed;
pub mod fixtures;
mod geo;
pub mod input;
mod license;
mod node;
mod proto;
mod raft;
mod signing;
mod token;

pub use feed::changefeed;
pub use geo::geo_database;
pub use license::{license_token, region_certificate};
pub use node::{http_check_body, node_config};
pub use proto::proto_requests;
pub use raft::{raft_log, raft_snapshot};
pub use signing::{key_set, sealed_keys};
pub use token::token;

/// A fuzz target: its name (the `fuzz/fuzz_targets/<name>.rs` binary and
/// the `fuzz/corpus/<name>/` directory) and its body.
pub type Target = (&'static str, fn(&[u8]));

/// Every target, in the order `fuzz/run.sh` runs them.
pub const TARGETS: &[Target] = &[
    ("token", token),
    ("license_token", license_token),
    ("region_certificate", region_certificate),
    ("key_set", key_set),
    ("sealed_keys", sealed_keys),
    ("proto_requests", proto_requests),
    ("changefeed", changefeed),
    ("raft_log", raft_log),
    ("raft_snapshot", raft_snapshot),
    ("geo_database", geo_database),
    ("node_config", node_config),
    ("http_check_body", http_check_body),
];
