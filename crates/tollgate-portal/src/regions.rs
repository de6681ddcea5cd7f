//! What the regions last reported to the origin: their nodes (for the
//! vendor's regions page) and their floating-seat holders (for the
//! customer's seats page).

use crate::auth::read_json;
use crate::web::PageError;
use std::collections::BTreeMap;
use tollgate_api::OriginStore;
use tollgate_model::UnixSeconds;
use tollgate_origin::keys;
use tollgate_origin::regions::{
    decode_region_statuses, RegionStatusRecord, SeatReleased, REGIONS_MAX,
};

/// Every region's latest report, by region name.
pub(crate) fn statuses<S: OriginStore>(store: &S) -> Result<Vec<RegionStatusRecord>, PageError> {
    let entries = store.scan(keys::REGION_STATUS_PREFIX.as_bytes(), None, REGIONS_MAX)?;
    decode_region_statuses(entries).map_err(PageError::Internal)
}

/// A seat holder as a page shows it.
pub(crate) struct HeldSeat {
    pub subject: String,
    pub since: Option<UnixSeconds>,
    pub expires_at: UnixSeconds,
    /// The origin released it after the region's report: it is going.
    pub releasing: bool,
}

/// The live floating-seat holders of `account`, by entitlement id, each
/// with the region that holds it. `at` is now: a holder whose seat expires
/// by then is left out.
pub(crate) fn seat_holders<S: OriginStore>(
    store: &S,
    account: &tollgate_model::AccountId,
    at: UnixSeconds,
) -> Result<BTreeMap<String, Vec<(String, HeldSeat)>>, PageError> {
    let mut out: BTreeMap<String, Vec<(String, HeldSeat)>> = BTreeMap::new();
    for status in statuses(store)? {
        for seats in status.report.seats.iter().filter(|s| &s.account == account) {
            for holder in seats.holders.iter().filter(|h| h.expires_at > at) {
                let released: Option<SeatReleased> = read_json(
                    store,
                    &keys::seat_release(&seats.entitlement, &holder.subject),
                )?;
                out.entry(seats.entitlement.to_string()).or_default().push((
                    status.report.region.clone(),
                    HeldSeat {
                        subject: holder.subject.to_string(),
                        since: holder.acquired_at,
                        expires_at: holder.expires_at,
                        releasing: released.is_some_and(|r| r.revision > status.revision),
                    },
                ));
            }
        }
    }
    Ok(out)
}
