//! A check as a service receives it: the pure [`Check`] plus what the node
//! must resolve before deciding (where the caller is) and how fresh the
//! answer must be.

use crate::decide::Check;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use tollgate_model::GeoFacts;

/// Most units one check may consume.
pub const CONSUME_MAX: u64 = 1_000_000_000;
/// Most checks in one batch.
pub const BATCH_CHECKS_MAX: usize = 128;
/// Most subdivisions a trusted proxy may report.
pub const SUBDIVISIONS_MAX: usize = 4;

/// Where the caller is, before the node resolves it to [`GeoFacts`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    Unknown,
    /// To be resolved with the node's MaxMind databases.
    Ip(IpAddr),
    /// Resolved by a trusted edge proxy; used only if the node trusts it.
    Resolved(GeoFacts),
}

/// How fresh an answer must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// Answer from local state at once.
    #[default]
    Local,
    /// Wait, within the request's deadline, until this origin revision is
    /// applied.
    AtLeastRevision(u64),
}

/// A validated check request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckRequest {
    pub check: Check,
    pub location: Location,
    pub consistency: Consistency,
}
