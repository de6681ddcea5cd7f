//! What the client answers: a check, a batch, a usage report, a seat.

use crate::error::SdkError;
use tollgate_engine::Decision;
use tollgate_model::{EntitlementId, SubjectId, UnixSeconds};

/// The answer to a remote check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The node's decision; `metering` is not sent over the wire (`None`).
    pub decision: Decision,
    /// The origin revision the node had applied.
    pub revision: u64,
    /// Seconds since the region last heard from the origin; `None` if never.
    pub staleness_seconds: Option<u64>,
    /// The node's name (`answered_by`).
    pub answered_by: String,
    /// The endpoint the answer came from.
    pub endpoint: String,
    /// The idempotency key sent (given, or generated for a check that
    /// consumes): pass it again to retry the same consumption later.
    pub idempotency_key: Option<String>,
}

/// The answers to a batch, in request order, at one revision.
#[derive(Debug)]
pub struct BatchChecked {
    /// A decision per check, or why the node could not evaluate that one.
    pub results: Vec<Result<Decision, SdkError>>,
    pub revision: u64,
    pub staleness_seconds: Option<u64>,
    pub answered_by: String,
    pub endpoint: String,
}

/// The answer to a usage report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReported {
    /// False when the key had already been counted.
    pub counted: bool,
    /// The feature's period counter the units went to, e.g. `month-24322`.
    pub period: String,
    /// The key sent (given or generated).
    pub idempotency_key: String,
    /// The endpoint the answer came from.
    pub endpoint: String,
}

/// Where a seat lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SeatStatus {
    /// The subject holds a seat until `expires_at`.
    Held,
    /// Every seat is taken; `holders` says by whom. Not an error.
    Full,
    /// No live lease to renew (it expired): acquire again.
    NotHeld,
    Released,
}

/// The answer to a seat request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seat {
    pub status: SeatStatus,
    /// The entitlement whose seat it is.
    pub entitlement: Option<EntitlementId>,
    /// When the lease runs out, for `Held`: heartbeat before then.
    pub expires_at: Option<UnixSeconds>,
    pub used: u32,
    pub total: u32,
    /// For `Full`: who holds the seats (at most 16).
    pub holders: Vec<SubjectId>,
    pub answered_by: String,
    pub endpoint: String,
}
