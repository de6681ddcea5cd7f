//! Access requests: filed by a requester, approved (into an entitlement,
//! or, for more seats, into a higher seat count on the entitlement named)
//! or denied by an approver, or approved at once by the auto-approval rule
//! of the add-on or the single feature asked for (never for seats: only a
//! person approves what is billed). Every request is also kept in the
//! listing queues (`keys::access_request_queue`), its status entries moved
//! in the same batch that changes its status.

use super::{
    change_entitlement, check_grant, check_new_entitlement, check_target, invalid, reject,
    require_account, touched, Changed, Step, Stop, Tx,
};
use crate::command::{
    AccessRequest, AccessRequestSpec, AccessRequestStatus, AccessTarget, EntitlementChange,
    OriginCommand, RejectCode, QUEUE_BACKFILL_MAX, SEATS_MORE_MAX,
};
use crate::keys;
use std::collections::BTreeMap;
use tollgate_model::limits::SEATS_MAX;
use tollgate_model::{
    AccountId, Addon, AutoApprove, Entitlement, EntitlementId, EntitlementStatus, Feature,
    FeatureGrant, Grant, Seats, SkuTarget,
};

/// Longest access-request justification, in bytes.
pub const JUSTIFICATION_LEN_MAX: usize = 2048;

/// Who approved an automatically approved access request.
pub const AUTO_APPROVER: &str = "auto-approval";

pub(super) fn request_access(
    tx: &mut Tx<'_>,
    cmd: &OriginCommand,
    spec: &AccessRequestSpec,
    revision: u64,
) -> Step<Changed> {
    EntitlementId::new(spec.id.as_str()).map_err(invalid)?;
    if spec.justification.len() > JUSTIFICATION_LEN_MAX {
        return reject(
            RejectCode::Invalid,
            format!("justification must be at most {JUSTIFICATION_LEN_MAX} bytes"),
        );
    }
    if let Some(existing) = tx.get::<AccessRequest>(&keys::access_request(&spec.id))? {
        if &existing.spec == spec {
            return Err(Stop::Unchanged {
                revision: existing.revision,
                entitlements: Vec::new(),
                note: format!("access request {} was already filed", spec.id),
            });
        }
        return reject(
            RejectCode::Conflict,
            format!(
                "access request {} already exists with a different body",
                spec.id
            ),
        );
    }
    require_account(tx, &spec.account)?;
    if let Some(subject) = &spec.subject {
        if !tx.exists(&keys::subject(&spec.account, subject))? {
            return reject(
                RejectCode::NotFound,
                format!("unknown subject {subject} in account {}", spec.account),
            );
        }
    }
    match &spec.target {
        AccessTarget::Feature(f) => check_grant(tx, &Grant::Feature(FeatureGrant::new(f.clone())))?,
        AccessTarget::Addon(a) => check_target(tx, &SkuTarget::Addon(a.clone()))?,
        AccessTarget::Seats { entitlement, more } => {
            if spec.duration_seconds.is_some() {
                return reject(
                    RejectCode::Invalid,
                    "duration_seconds: more seats last as long as their entitlement; leave it out",
                );
            }
            seats_after(tx, &spec.account, entitlement, *more)?;
        }
    }
    let request = AccessRequest {
        spec: spec.clone(),
        status: AccessRequestStatus::Pending,
        requested_by: cmd.actor.clone(),
        requested_at: cmd.at,
        decided_by: None,
        decided_at: None,
        decision_reason: None,
        revision,
    };
    let rule: Option<AutoApprove> = match &spec.target {
        AccessTarget::Addon(a) => {
            tx.require::<Addon>(&keys::addon(a), &format!("add-on {a}"))?
                .auto_approve
        }
        AccessTarget::Feature(f) => {
            tx.require::<Feature>(&keys::feature(f), &format!("feature {f}"))?
                .auto_approve
        }
        // More seats cost money: a person always decides.
        AccessTarget::Seats { .. } => None,
    };
    let auto = rule.is_some_and(|rule| rule.admits(spec.duration_seconds, spec.subject.is_some()));
    // Filing a request changes nothing a region serves: its change record
    // has no mutations, and followers just advance their revision. An
    // auto-approved request grants its entitlement in the same revision.
    tx.put(keys::access_request(&spec.id), &request);
    queue(tx, &request, None);
    if auto {
        let mut approval = cmd.clone();
        approval.actor = AUTO_APPROVER.to_string();
        approval.reason = Some(match &spec.target {
            AccessTarget::Addon(_) => "the access package's auto-approval rule".into(),
            AccessTarget::Feature(_) => "the feature's auto-approval rule".into(),
            AccessTarget::Seats { .. } => {
                unreachable!("requests for seats are never auto-approved")
            }
        });
        return decide_access(tx, &approval, &spec.id, true, revision);
    }
    Ok(Changed {
        target: format!("access-request/{}", spec.id),
        entitlements: Vec::new(),
    })
}

pub(super) fn decide_access(
    tx: &mut Tx<'_>,
    cmd: &OriginCommand,
    id: &str,
    approve: bool,
    revision: u64,
) -> Step<Changed> {
    let mut request: AccessRequest =
        tx.require(&keys::access_request(id), &format!("access request {id}"))?;
    let filed_as = request.status.clone();
    if request.status != AccessRequestStatus::Pending {
        return reject(
            RejectCode::Conflict,
            format!("access request {id} was already decided"),
        );
    }
    let mut entitlements = Vec::new();
    if let (true, AccessTarget::Seats { entitlement, more }) = (approve, &request.spec.target) {
        // Checked again: the entitlement may have changed since filing.
        let seats = seats_after(tx, &request.spec.account, entitlement, *more)?;
        change_entitlement(
            tx,
            entitlement,
            &EntitlementChange::SetSeats(Some(seats)),
            revision,
        )?;
        request.status = AccessRequestStatus::Approved {
            entitlement: entitlement.clone(),
        };
        entitlements.push(entitlement.clone());
    } else if approve {
        let spec = &request.spec;
        let ent_id = EntitlementId::new(spec.id.as_str()).map_err(invalid)?;
        let ent = Entitlement {
            id: ent_id.clone(),
            account: spec.account.clone(),
            grant: match &spec.target {
                AccessTarget::Feature(f) => Grant::Feature(FeatureGrant::new(f.clone())),
                AccessTarget::Addon(a) => Grant::Addon(a.clone()),
                AccessTarget::Seats { .. } => unreachable!("approved above"),
            },
            valid_from: cmd.at,
            valid_until: spec.duration_seconds.map(|d| cmd.at.plus_seconds(d.max(1))),
            grace_period_seconds: 0,
            seats: None,
            usage_cap_overrides: BTreeMap::new(),
            status: EntitlementStatus::Active,
            geo_rule: Default::default(),
            offline_policy: None,
            required_role: None,
            allowed_groups: Default::default(),
            source_order: None,
            revision,
            trial: false,
        };
        check_new_entitlement(tx, &ent)?;
        tx.put_entitlement(ent, revision)?;
        request.status = AccessRequestStatus::Approved {
            entitlement: ent_id.clone(),
        };
        entitlements.push(ent_id);
    } else {
        request.status = AccessRequestStatus::Denied;
    }
    request.decided_by = Some(cmd.actor.clone());
    request.decided_at = Some(cmd.at);
    request.decision_reason = cmd.reason.clone();
    request.revision = revision;
    tx.put(keys::access_request(id), &request);
    queue(tx, &request, Some(&filed_as));
    Ok(Changed {
        target: format!("access-request/{id}"),
        entitlements,
    })
}

/// The seats entitlement `id` has once `more` are added, if a request of
/// `account` may ask for them: the entitlement is the account's, active and
/// has seats (named or floating), and the result stays within `SEATS_MAX`.
/// Checked when the request is filed and again when it is approved.
fn seats_after(tx: &Tx<'_>, account: &AccountId, id: &EntitlementId, more: u32) -> Step<Seats> {
    if more == 0 || more > SEATS_MORE_MAX {
        return reject(
            RejectCode::Invalid,
            format!("more seats must be 1..={SEATS_MORE_MAX}, not {more}"),
        );
    }
    // Another account's entitlement is as unknown as a missing one.
    let unknown = format!("unknown entitlement {id} in account {account}");
    let ent = match tx.get::<Entitlement>(&keys::entitlement(id))? {
        Some(ent) if &ent.account == account => ent,
        _ => return reject(RejectCode::NotFound, unknown),
    };
    if ent.status != EntitlementStatus::Active {
        let status = match ent.status {
            EntitlementStatus::Suspended => "suspended",
            _ => "revoked",
        };
        return reject(
            RejectCode::Conflict,
            format!("entitlement {id} is {status}; only an active entitlement gets more seats"),
        );
    }
    let Some(mut seats) = ent.seats else {
        return reject(
            RejectCode::Invalid,
            format!("entitlement {id} has no seats (any subject may use it); there is nothing to add to"),
        );
    };
    match seats.count.checked_add(more) {
        Some(count) if count <= SEATS_MAX => seats.count = count,
        _ => {
            return reject(
                RejectCode::Invalid,
                format!(
                "entitlement {id} has {} seats; {more} more would pass the maximum of {SEATS_MAX}",
                seats.count
            ),
            )
        }
    }
    Ok(seats)
}

/// Queues access requests filed before the queues existed. Each must exist;
/// queueing one that is already queued writes the same entries again.
pub(super) fn queue_existing(tx: &mut Tx<'_>, ids: &[String]) -> Step<Changed> {
    if ids.is_empty() || ids.len() > QUEUE_BACKFILL_MAX {
        return reject(
            RejectCode::Invalid,
            format!("queue 1..={QUEUE_BACKFILL_MAX} access requests at a time"),
        );
    }
    for id in ids {
        let request: AccessRequest =
            tx.require(&keys::access_request(id), &format!("access request {id}"))?;
        queue(tx, &request, None);
    }
    Ok(touched(format!(
        "access-request-queue/{} requests",
        ids.len()
    )))
}

/// Puts `request` in the queues of its status, out of those of `previous`
/// (its status before this command; `None` for a new request). Every entry
/// of the new status is written, even the unchanged "all" ones, so a
/// request filed before the queues existed is queued once it is decided.
fn queue(tx: &mut Tx<'_>, request: &AccessRequest, previous: Option<&AccessRequestStatus>) {
    let spec = &request.spec;
    let entries = |status: &AccessRequestStatus| {
        keys::access_request_queue_entries(
            &spec.account,
            status.name(),
            request.requested_at,
            &spec.id,
        )
    };
    let now = entries(&request.status);
    if let Some(previous) = previous {
        for key in entries(previous) {
            if !now.contains(&key) {
                tx.delete(key);
            }
        }
    }
    for key in now {
        tx.put(key, &spec.id);
    }
}
