//! What the origin knows of each region: the latest report its leader sent
//! (`Op::RecordRegionReport`), kept under [`keys::region_status`] as a
//! [`RegionStatusRecord`], stamped with the commit time. Origin only: no
//! region ever receives it. Readers (the REST API's `GET /v1/regions`, the
//! customer portal) scan [`keys::REGION_STATUS_PREFIX`] and decode each
//! value with [`decode_region_statuses`]; at most [`REGIONS_MAX`] regions
//! are kept.

use crate::keys;
use serde::{Deserialize, Serialize};
pub use tollgate_model::region_report::{
    GeoDatabaseBuild, MemberFacts, MemberReport, MemberRole, RegionReport, SeatHolder, SeatHolders,
};
use tollgate_model::UnixSeconds;

/// Most regions whose reports the origin keeps: a report from a new region
/// past it is refused.
pub const REGIONS_MAX: usize = 64;

/// Largest report stored, in bytes of JSON (a full report of the model's
/// limits fits: 1,000 seat holders at ~150 bytes each, 32 members).
pub const REPORT_BYTES_MAX: usize = 512 * 1024;

/// A region's latest report as the origin stores it.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionStatusRecord {
    pub report: RegionReport,
    /// When the origin committed it (the command's `at`).
    pub received_at: UnixSeconds,
    /// The origin revision that recorded it.
    pub revision: u64,
}

/// The origin released a seat holder (`Op::ReleaseSeatHolder`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatReleased {
    pub at: UnixSeconds,
    pub revision: u64,
}

/// Every stored region status from a scan of
/// [`keys::REGION_STATUS_PREFIX`]; an entry that does not decode is an
/// error naming its key, never skipped.
pub fn decode_region_statuses(
    entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
) -> Result<Vec<RegionStatusRecord>, String> {
    entries
        .into_iter()
        .map(|(key, value)| {
            serde_json::from_slice(&value).map_err(|e| {
                format!(
                    "stored region status under {} does not decode: {e}",
                    String::from_utf8_lossy(&key)
                )
            })
        })
        .collect()
}

/// The key of `region`'s status (re-exported here for readers).
pub fn status_key(region: &str) -> Vec<u8> {
    keys::region_status(region)
}
