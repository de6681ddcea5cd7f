//! Conversions between the generated wire types and the model, one file per
//! message family. Wire -> model is `TryFrom` and validates everything (the
//! wire is outside input); model -> wire is `From` and cannot fail.

mod changefeed;
mod check;
mod cluster;
mod entitlement;
mod license;
mod quota;
mod region_report;
mod usage;

pub use changefeed::{
    endorsed_key_set_to_proto, signed_record_from_proto, signed_record_to_proto, FeedMessage,
    Subscription,
};
pub use check::{
    batch_from_proto, batch_to_proto, decision_to_proto, valid_idempotency_key, BatchAnswer,
    BatchItem, CheckAnswer, Explained,
};
pub use cluster::{
    append_entries_request, client_write_request, client_write_response, initial_members,
    initialize_request, install_snapshot_request, raft_response, raft_result_from_proto,
    read_local_response, remove_node_request, trigger_snapshot_response, vote_request, AddLearner,
    ChangeMembership, ClusterMember, Membership, NodeStatus, RaftRole, ROLE_STATUS_BYTES_MAX,
};
pub use quota::{
    sync_response, usage_counter_from_proto, CounterTotals, Leased, QuotaLease, QuotaReport,
    SeatLease, SeatRelease,
};
pub use usage::{SeatAnswer, SeatHolder, SeatState, UsageAnswer, UsageReport};

use thiserror::Error;
use tollgate_model::ModelError;

/// A wire message that does not make a valid model value. `field` is the
/// path of the offending field in the message, so the error can be returned
/// to the caller as is (gRPC INVALID_ARGUMENT).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConvertError {
    #[error("{field} is required")]
    Missing { field: String },
    #[error("{field}: {source}")]
    Invalid {
        field: String,
        #[source]
        source: ModelError,
    },
    #[error("{field}: {reason}")]
    OutOfRange { field: String, reason: String },
}

impl ConvertError {
    pub(crate) fn missing(field: &str) -> Self {
        ConvertError::Missing {
            field: field.to_string(),
        }
    }

    pub(crate) fn out_of_range(field: &str, reason: impl Into<String>) -> Self {
        ConvertError::OutOfRange {
            field: field.to_string(),
            reason: reason.into(),
        }
    }

    /// The same error, for a field of the message at `path` inside a
    /// larger one (`decision` and `reason` make `decision.reason`).
    pub(crate) fn within(self, path: &str) -> Self {
        let inside = |field: String| format!("{path}.{field}");
        match self {
            ConvertError::Missing { field } => ConvertError::Missing {
                field: inside(field),
            },
            ConvertError::Invalid { field, source } => ConvertError::Invalid {
                field: inside(field),
                source,
            },
            ConvertError::OutOfRange { field, reason } => ConvertError::OutOfRange {
                field: inside(field),
                reason,
            },
        }
    }

    /// The field path, for error details.
    pub fn field(&self) -> &str {
        match self {
            ConvertError::Missing { field }
            | ConvertError::Invalid { field, .. }
            | ConvertError::OutOfRange { field, .. } => field,
        }
    }
}

/// Adds the field path to a model error.
pub(crate) trait AtField<T> {
    fn at(self, field: &str) -> Result<T, ConvertError>;
}

impl<T> AtField<T> for Result<T, ModelError> {
    fn at(self, field: &str) -> Result<T, ConvertError> {
        self.map_err(|source| ConvertError::Invalid {
            field: field.to_string(),
            source,
        })
    }
}

/// Parses every string of a repeated field into a set of `T`, bounded.
pub(crate) fn parse_set<T: Ord>(
    field: &str,
    values: Vec<String>,
    max: usize,
    parse: impl Fn(&str) -> Result<T, ModelError>,
) -> Result<std::collections::BTreeSet<T>, ConvertError> {
    if values.len() > max {
        return Err(ConvertError::out_of_range(
            field,
            format!("holds {} entries, at most {max} are allowed", values.len()),
        ));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, v)| parse(v).at(&format!("{field}[{i}]")))
        .collect()
}
