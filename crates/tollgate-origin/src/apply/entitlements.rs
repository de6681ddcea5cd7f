//! Entitlements granted or changed directly (orders and access requests
//! create them too, and an approved request for more seats changes one,
//! through the checks and the change in the parent module).

use super::{change_entitlement, check_new_entitlement, Changed, Step, Tx};
use crate::command::EntitlementChange;
use tollgate_model::{Entitlement, EntitlementId};

pub(super) fn grant(tx: &mut Tx<'_>, ent: &Entitlement, revision: u64) -> Step<Changed> {
    check_new_entitlement(tx, ent)?;
    tx.put_entitlement(ent.clone(), revision)?;
    Ok(Changed {
        target: format!("entitlement/{}", ent.id),
        entitlements: vec![ent.id.clone()],
    })
}

pub(super) fn change(
    tx: &mut Tx<'_>,
    id: &EntitlementId,
    change: &EntitlementChange,
    revision: u64,
) -> Step<Changed> {
    change_entitlement(tx, id, change, revision)?;
    Ok(Changed {
        target: format!("entitlement/{id}"),
        entitlements: vec![id.clone()],
    })
}
