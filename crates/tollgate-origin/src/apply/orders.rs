//! Orders from a CRM or billing system: new, change, renew and cancel, each
//! idempotent by order id. An order creates or changes one entitlement.

use super::{check_new_entitlement, invalid, reject, require_account, Changed, Step, Stop, Tx};
use crate::command::{Order, OrderKind, OrderRecord, RejectCode};
use crate::keys;
use std::collections::BTreeMap;
use tollgate_model::{
    Addon, Entitlement, EntitlementId, EntitlementStatus, Grant, Plan, ProductId, SeatMode, Seats,
    Sku, SkuQuantity, SkuTarget, UnixSeconds,
};

/// Lease time to live of floating seats created by orders.
pub const ORDER_FLOATING_LEASE_TTL_SECONDS: u32 = 300;

pub(super) fn place_order(tx: &mut Tx<'_>, order: &Order, revision: u64) -> Step<Changed> {
    if let Some(done) = tx.get::<OrderRecord>(&keys::order(&order.id))? {
        if &done.order == order {
            return Err(Stop::Unchanged {
                revision: done.revision,
                entitlements: done.entitlements,
                note: format!(
                    "order {} was already applied at revision {}",
                    order.id, done.revision
                ),
            });
        }
        return reject(
            RejectCode::Conflict,
            format!(
                "order {} was already applied at revision {} with a different body",
                order.id, done.revision
            ),
        );
    }
    if order.term_end.is_some_and(|end| end <= order.term_start) {
        return reject(RejectCode::Invalid, "term_end must be after term_start");
    }
    require_account(tx, &order.account)?;
    let sku: Sku = tx.require(&keys::sku(&order.sku), &format!("SKU {}", order.sku))?;
    if let Some(tier) = &order.tier {
        if sku.target != SkuTarget::Plan(tier.clone()) {
            return reject(
                RejectCode::Invalid,
                format!("SKU {} does not sell the tier (plan) {tier}", sku.id),
            );
        }
    }
    let seats = seats_for(&sku, order.quantity)?;

    let ent = match order.kind {
        OrderKind::New => {
            let id = EntitlementId::new(order.id.as_str()).map_err(invalid)?;
            let ent = Entitlement {
                id,
                account: order.account.clone(),
                grant: grant_of(&sku.target),
                valid_from: order.term_start,
                valid_until: order.term_end,
                grace_period_seconds: order.grace_period_seconds,
                seats,
                usage_cap_overrides: BTreeMap::new(),
                status: EntitlementStatus::Active,
                geo_rule: Default::default(),
                offline_policy: None,
                required_role: None,
                allowed_groups: Default::default(),
                source_order: Some(order.id.clone()),
                revision,
                trial: false,
            };
            check_new_entitlement(tx, &ent)?;
            ent
        }
        OrderKind::Change => {
            let mut ent = order_target(tx, order, &sku)?;
            if ent.status == EntitlementStatus::Revoked {
                return reject(
                    RejectCode::Conflict,
                    format!("entitlement {} is revoked", ent.id),
                );
            }
            // Named seats already assigned stay assigned; a downgrade below
            // them must be preceded by unassigning.
            let assigned = match ent.seats.as_ref().map(|s| &s.mode) {
                Some(SeatMode::Named { assigned }) => assigned.clone(),
                _ => Default::default(),
            };
            let seats = match seats {
                Some(Seats {
                    count,
                    mode: SeatMode::Named { .. },
                }) => {
                    if assigned.len() > count as usize {
                        return reject(
                            RejectCode::Conflict,
                            format!(
                                "{} seats are assigned; unassign {} before reducing to {count}",
                                assigned.len(),
                                assigned.len() - count as usize
                            ),
                        );
                    }
                    Some(Seats {
                        count,
                        mode: SeatMode::Named { assigned },
                    })
                }
                other => other,
            };
            ent.grant = grant_of(&sku.target);
            ent.seats = seats;
            if order.term_end.is_some() {
                ent.valid_until = order.term_end;
            }
            ent.source_order = Some(order.id.clone());
            ent
        }
        OrderKind::Renew => {
            let mut ent = order_target(tx, order, &sku)?;
            if ent.status == EntitlementStatus::Revoked {
                return reject(
                    RejectCode::Conflict,
                    format!("entitlement {} is revoked", ent.id),
                );
            }
            let Some(end) = order.term_end else {
                return reject(RejectCode::Invalid, "a renewal needs a term_end");
            };
            if ent.valid_until.is_none_or(|until| end <= until) {
                return reject(
                    RejectCode::Invalid,
                    format!("a renewal must move valid_until later than it is; {end} is not"),
                );
            }
            ent.valid_until = Some(end);
            ent.grace_period_seconds = order.grace_period_seconds.max(ent.grace_period_seconds);
            ent.source_order = Some(order.id.clone());
            ent
        }
        OrderKind::Cancel => {
            let mut ent = order_target(tx, order, &sku)?;
            match order.term_end {
                Some(end) => {
                    ent.valid_until = Some(ent.valid_until.map_or(end, |until| until.min(end)));
                    ent.grace_period_seconds = 0;
                    if ent.valid_until.is_some_and(|u| u <= ent.valid_from) {
                        ent.valid_until = Some(UnixSeconds(ent.valid_from.0 + 1));
                    }
                }
                None => ent.status = EntitlementStatus::Revoked,
            }
            ent.source_order = Some(order.id.clone());
            ent
        }
    };
    ent.validate().map_err(invalid)?;
    let id = ent.id.clone();
    tx.put_entitlement(ent, revision)?;
    tx.put(
        keys::order(&order.id),
        &OrderRecord {
            order: order.clone(),
            revision,
            entitlements: vec![id.clone()],
        },
    );
    Ok(Changed {
        target: format!("order/{}", order.id),
        entitlements: vec![id],
    })
}

fn seats_for(sku: &Sku, quantity: u32) -> Step<Option<Seats>> {
    match sku.quantity {
        SkuQuantity::Unmetered if quantity == 1 => Ok(None),
        SkuQuantity::Unmetered => reject(
            RejectCode::Invalid,
            format!(
                "SKU {} is not sold per seat; quantity must be 1, got {quantity}",
                sku.id
            ),
        ),
        SkuQuantity::NamedSeats => Ok(Some(Seats {
            count: quantity,
            mode: SeatMode::Named {
                assigned: Default::default(),
            },
        })),
        SkuQuantity::FloatingSeats => Ok(Some(Seats {
            count: quantity,
            mode: SeatMode::Floating {
                lease_ttl_seconds: ORDER_FLOATING_LEASE_TTL_SECONDS,
            },
        })),
    }
}

fn grant_of(target: &SkuTarget) -> Grant {
    match target {
        SkuTarget::Plan(p) => Grant::Plan(p.clone()),
        SkuTarget::Addon(a) => Grant::Addon(a.clone()),
    }
}

/// The product an SKU's plan or add-on belongs to.
fn product_of(tx: &Tx<'_>, target: &SkuTarget) -> Step<ProductId> {
    Ok(match target {
        SkuTarget::Plan(p) => {
            tx.require::<Plan>(&keys::plan(p), &format!("plan {p}"))?
                .product
        }
        SkuTarget::Addon(a) => {
            tx.require::<Addon>(&keys::addon(a), &format!("add-on {a}"))?
                .product
        }
    })
}

/// The entitlement an order changes: the one it names, else the account's
/// live entitlement to a plan of the SKU's product.
fn order_target(tx: &Tx<'_>, order: &Order, sku: &Sku) -> Step<Entitlement> {
    if let Some(id) = &order.entitlement {
        let ent: Entitlement = tx.require(&keys::entitlement(id), &format!("entitlement {id}"))?;
        if ent.account != order.account {
            return reject(
                RejectCode::Invalid,
                format!(
                    "entitlement {id} belongs to account {}, not {}",
                    ent.account, order.account
                ),
            );
        }
        return Ok(ent);
    }
    let product = product_of(tx, &sku.target)?;
    let ids: Vec<EntitlementId> = tx
        .get(&keys::account_entitlements(&order.account))?
        .unwrap_or_default();
    let mut found = Vec::new();
    for id in ids {
        let Some(ent) = tx.get::<Entitlement>(&keys::entitlement(&id))? else {
            continue;
        };
        if ent.status == EntitlementStatus::Revoked {
            continue;
        }
        if let Grant::Plan(p) = &ent.grant {
            if let Some(plan) = tx.get::<Plan>(&keys::plan(p))? {
                if plan.product == product {
                    found.push(ent);
                }
            }
        }
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => reject(
            RejectCode::NotFound,
            format!(
                "account {} holds no plan of product {product} for this order to change",
                order.account
            ),
        ),
        n => reject(
            RejectCode::Conflict,
            format!(
                "account {} holds {n} plans of product {product}; name the entitlement in the order",
                order.account
            ),
        ),
    }
}
