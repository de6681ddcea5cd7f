//! Region reports (the latest per region, origin only) and seat releases
//! asked at the origin (published to every region).

use super::{invalid, reject, touched, Changed, Step, Tx};
use crate::command::{OriginCommand, RejectCode};
use crate::keys;
use crate::regions::{RegionStatusRecord, SeatReleased, REGIONS_MAX, REPORT_BYTES_MAX};
use tollgate_model::region_report::RegionReport;
use tollgate_model::{AccountId, Entitlement, EntitlementId, Mutation, SeatMode, SubjectId};

/// Stores `report` as its region's latest, stamped with the commit time.
/// Refused: a report past the model's bounds or [`REPORT_BYTES_MAX`], an
/// invalid region name, a new region past [`REGIONS_MAX`].
pub(super) fn record_region_report(
    tx: &mut Tx<'_>,
    cmd: &OriginCommand,
    report: &RegionReport,
    revision: u64,
) -> Step<Changed> {
    report.validate().map_err(invalid)?;
    let record = RegionStatusRecord {
        report: report.clone(),
        received_at: cmd.at,
        revision,
    };
    // Serialising a model value cannot fail.
    let bytes = serde_json::to_vec(&record).expect("model values serialise");
    if bytes.len() > REPORT_BYTES_MAX {
        return reject(
            RejectCode::Invalid,
            format!(
                "a region report of {} bytes; at most {REPORT_BYTES_MAX}",
                bytes.len()
            ),
        );
    }
    let mut regions: Vec<String> = tx.get(keys::REGION_INDEX)?.unwrap_or_default();
    if !regions.contains(&report.region) {
        if regions.len() >= REGIONS_MAX {
            return reject(
                RejectCode::Invalid,
                format!("the origin already keeps reports of {REGIONS_MAX} regions, the maximum"),
            );
        }
        regions.push(report.region.clone());
        regions.sort();
        tx.put(keys::REGION_INDEX.to_vec(), &regions);
    }
    tx.put(keys::region_status(&report.region), &record);
    Ok(touched(format!("region/{}", report.region)))
}

/// Frees `subject`'s floating seat of `entitlement` in every region. The
/// entitlement must be `account`'s (NOT_FOUND otherwise: a caller learns
/// nothing of another account's) and have floating seats. The subject
/// need not exist any more (a removed device may still hold a seat), nor
/// hold a lease anywhere: a region without one applies it as a no-op.
pub(super) fn release_seat_holder(
    tx: &mut Tx<'_>,
    cmd: &OriginCommand,
    account: &AccountId,
    entitlement: &EntitlementId,
    subject: &SubjectId,
    revision: u64,
) -> Step<Changed> {
    let not_found = || format!("unknown entitlement {entitlement} in account {account}");
    let ent: Entitlement = match tx.get(&keys::entitlement(entitlement))? {
        Some(ent) => ent,
        None => return reject(RejectCode::NotFound, not_found()),
    };
    if &ent.account != account {
        return reject(RejectCode::NotFound, not_found());
    }
    if !matches!(
        ent.seats.as_ref().map(|s| &s.mode),
        Some(SeatMode::Floating { .. })
    ) {
        return reject(
            RejectCode::Invalid,
            format!("entitlement {entitlement} has no floating seats"),
        );
    }
    tx.mutations.push(Mutation::ReleaseSeat {
        account: account.clone(),
        entitlement: entitlement.clone(),
        subject: subject.clone(),
    });
    // The release itself lives in the regions' state; the origin keeps
    // when each holder was last released (origin only).
    tx.put(
        keys::seat_release(entitlement, subject),
        &SeatReleased {
            at: cmd.at,
            revision,
        },
    );
    Ok(touched(format!("seat/{entitlement}/{subject}")))
}
