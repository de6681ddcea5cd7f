//! Entitlements granted or changed directly (orders and access requests
//! create them too, through the checks in the parent module).

use super::{
    check_assigned, check_grant, check_new_entitlement, invalid, reject, Changed, Step, Tx,
};
use crate::command::{EntitlementChange, RejectCode};
use crate::keys;
use tollgate_model::{Entitlement, EntitlementId, EntitlementStatus};

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
    let current: Entitlement = tx.require(&keys::entitlement(id), &format!("entitlement {id}"))?;
    let next = change_entitlement(tx, current, change)?;
    tx.put_entitlement(next, revision)?;
    Ok(Changed {
        target: format!("entitlement/{id}"),
        entitlements: vec![id.clone()],
    })
}

fn change_entitlement(
    tx: &Tx<'_>,
    current: Entitlement,
    change: &EntitlementChange,
) -> Step<Entitlement> {
    let mut next = current.clone();
    match change {
        EntitlementChange::Replace(new) => {
            if new.id != current.id || new.account != current.account {
                return reject(
                    RejectCode::Invalid,
                    "a replacement keeps the entitlement's id and account",
                );
            }
            check_grant(tx, &new.grant)?;
            next = (**new).clone();
        }
        EntitlementChange::Extend { valid_until } => next.valid_until = *valid_until,
        EntitlementChange::SetSeats(seats) => next.seats = seats.clone(),
        EntitlementChange::Suspend | EntitlementChange::Resume | EntitlementChange::Revoke => {
            if current.status == EntitlementStatus::Revoked {
                return reject(
                    RejectCode::Conflict,
                    format!(
                        "entitlement {} is revoked; grant a new one instead",
                        current.id
                    ),
                );
            }
            next.status = match change {
                EntitlementChange::Suspend => EntitlementStatus::Suspended,
                EntitlementChange::Resume => EntitlementStatus::Active,
                _ => EntitlementStatus::Revoked,
            };
        }
    }
    next.validate().map_err(invalid)?;
    check_assigned(tx, &next)?;
    Ok(next)
}
