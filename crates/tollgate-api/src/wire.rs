//! JSON bodies the API answers that are not model types.

use serde::{Deserialize, Serialize};
use tollgate_model::EntitlementId;

/// What a write answers.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResult {
    /// The revision the change committed under (or, for a replay, the
    /// revision that first applied it). Pass it as `at_least_revision` to a
    /// region to read your own write.
    pub revision: u64,
    /// True when nothing changed because the request was already applied.
    pub unchanged: bool,
    /// The entitlements created or changed.
    pub entitlements: Vec<EntitlementId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}
