//! A check as a service receives it: the pure [`Check`] plus what the node
//! must resolve before deciding (where the caller is) and how fresh the
//! answer must be.

use crate::decide::Check;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use tollgate_model::{AccountId, ChangeRecord, GeoFacts, Mutation};

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
    /// With `consume`: a retry with the same key is not consumed again.
    pub idempotency_key: Option<String>,
}

/// What a `Watch` stream asks for: changes after `from_revision`, for one
/// account (plus the catalog) or all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    pub account: Option<AccountId>,
    pub from_revision: u64,
}

/// One message of a `Watch` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchEvent {
    /// Part of the scope's state at (or just after) `revision`, sent when
    /// the changes since the requested revision cannot be replayed.
    State {
        revision: u64,
        index: u32,
        last: bool,
        mutations: Vec<Mutation>,
    },
    /// Changes in revision order (each record holds only the scope's
    /// mutations); everything through `through_revision` has been sent.
    Changes {
        changes: Vec<ChangeRecord>,
        through_revision: u64,
    },
    /// The stream is alive; how far the node has applied.
    Heartbeat {
        applied_revision: u64,
        staleness_seconds: Option<u64>,
    },
}
