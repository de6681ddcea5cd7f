//! The changefeed's retention: compaction drops old change records and
//! moves the floor below which subscribers get a snapshot instead.

use super::{reject, touched, Changed, Step, Tx};
use crate::command::RejectCode;
use crate::keys;

/// Most change records one compaction drops (bounds the write batch).
pub const COMPACT_RECORDS_MAX: u64 = 10_000;

pub(super) fn compact_changes(tx: &mut Tx<'_>, through: u64, revision: u64) -> Step<Changed> {
    let floor: u64 = tx.get(keys::CHANGE_FLOOR)?.unwrap_or(0);
    if through <= floor {
        return reject(
            RejectCode::Conflict,
            format!("change records through {floor} are already compacted"),
        );
    }
    if through >= revision {
        return reject(
            RejectCode::Invalid,
            format!(
                "cannot compact through {through}: the head is {}",
                revision - 1
            ),
        );
    }
    if through - floor > COMPACT_RECORDS_MAX {
        return reject(
            RejectCode::Invalid,
            format!("compact at most {COMPACT_RECORDS_MAX} records per command"),
        );
    }
    for rev in floor + 1..=through {
        tx.delete(keys::change(rev));
    }
    tx.put(keys::CHANGE_FLOOR.to_vec(), &through);
    Ok(touched(format!("changefeed/{through}")))
}
