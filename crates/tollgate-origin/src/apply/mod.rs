//! The origin's apply function. Pure: it reads the state through
//! [`ReadState`], returns the writes to make, and never reads a clock.
//!
//! Every command either commits under the next revision (the object writes,
//! a [`ChangeRecord`] for the changefeed, an [`AuditRecord`] and the new
//! head revision, all in one batch) or writes nothing at all: refused
//! commands and replayed orders leave the state untouched.
//!
//! This module holds the transaction ([`Tx`]), the envelope check, the
//! reference checks more than one domain makes, and [`run`], which hands
//! each [`Op`] to one function of a domain module. Domain modules use items
//! of this module only, never each other, so the order of reading is: this
//! file, then any one domain.

mod access;
mod accounts;
mod api_keys;
mod catalog;
mod changefeed;
mod credentials;
mod entitlements;
mod licenses;
mod orders;
mod portal;
mod quota;
mod regions;
mod signing;
mod webhooks;

pub use access::AUTO_APPROVER;
pub use changefeed::COMPACT_RECORDS_MAX;
pub use orders::ORDER_FLOATING_LEASE_TTL_SECONDS;

use crate::command::*;
use crate::keys;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use tollgate_model::limits::ENTITLEMENTS_PER_ACCOUNT_MAX;
use tollgate_model::{
    AccountId, ChangeRecord, Entitlement, EntitlementId, EntitlementStatus, Grant, ModelError,
    Mutation, SeatMode, SkuTarget,
};
use tollgate_raft::logic::ReadError;
use tollgate_raft::{Applied, ApplyContext, ReadState, StateMachineLogic, Write};

/// The origin's state machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct OriginLogic;

/// Why applying stopped early.
enum Stop {
    Read(ReadError),
    Reject(Rejection),
    Unchanged {
        revision: u64,
        entitlements: Vec<EntitlementId>,
        note: String,
    },
}

impl From<ReadError> for Stop {
    fn from(e: ReadError) -> Self {
        Stop::Read(e)
    }
}

type Step<T> = Result<T, Stop>;

fn reject<T>(code: RejectCode, message: impl Into<String>) -> Step<T> {
    Err(Stop::Reject(Rejection {
        code,
        message: message.into(),
    }))
}

fn invalid(e: ModelError) -> Stop {
    Stop::Reject(Rejection {
        code: RejectCode::Invalid,
        message: e.to_string(),
    })
}

/// The writes of one command, with reads that see them.
struct Tx<'a> {
    state: &'a dyn ReadState,
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    writes: Vec<Write>,
    mutations: Vec<Mutation>,
    /// A quota lease's outcome: (granted, granted to the region in all).
    lease: Option<(u64, u64)>,
    /// The audit action, when it is not the op's own (a usage report that
    /// crossed a threshold is recorded as `usage.threshold`).
    action: Option<&'static str>,
}

impl Tx<'_> {
    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, ReadError> {
        let bytes = match self.overlay.get(key) {
            Some(value) => value.clone(),
            None => self.state.get(key)?,
        };
        bytes
            .map(|b| {
                serde_json::from_slice(&b).map_err(|e| {
                    ReadError(format!(
                        "stored value under {} does not decode: {e}",
                        String::from_utf8_lossy(key)
                    ))
                })
            })
            .transpose()
    }

    fn exists(&self, key: &[u8]) -> Result<bool, ReadError> {
        Ok(match self.overlay.get(key) {
            Some(value) => value.is_some(),
            None => self.state.get(key)?.is_some(),
        })
    }

    fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        // Serialising our own model types cannot fail.
        let value = serde_json::to_vec(value).expect("model values serialise");
        self.overlay.insert(key.clone(), Some(value.clone()));
        self.writes.push(Write::Put { key, value });
    }

    /// Writes an object that regions hold too, and records the mutation
    /// that carries it on the changefeed.
    fn publish<T: Serialize>(&mut self, key: Vec<u8>, value: &T, mutation: Mutation) {
        self.put(key, value);
        self.mutations.push(mutation);
    }

    fn delete(&mut self, key: Vec<u8>) {
        self.overlay.insert(key.clone(), None);
        self.writes.push(Write::Delete { key });
    }

    fn require<T: DeserializeOwned>(&self, key: &[u8], what: &str) -> Step<T> {
        match self.get(key)? {
            Some(value) => Ok(value),
            None => reject(RejectCode::NotFound, format!("unknown {what}")),
        }
    }

    /// Writes an entitlement stamped with `revision`, keeping the account's
    /// list of entitlements in step.
    fn put_entitlement(&mut self, mut ent: Entitlement, revision: u64) -> Step<()> {
        ent.revision = revision;
        let list_key = keys::account_entitlements(&ent.account);
        let mut ids: Vec<EntitlementId> = self.get(&list_key)?.unwrap_or_default();
        if !ids.contains(&ent.id) {
            if ids.len() >= ENTITLEMENTS_PER_ACCOUNT_MAX {
                return reject(
                    RejectCode::Invalid,
                    format!(
                        "account {} already holds {ENTITLEMENTS_PER_ACCOUNT_MAX} entitlements, the maximum",
                        ent.account
                    ),
                );
            }
            ids.push(ent.id.clone());
            self.put(list_key, &ids);
        }
        let key = keys::entitlement(&ent.id);
        self.publish(key, &ent, Mutation::PutEntitlement(ent.clone()));
        Ok(())
    }
}

/// The result of a command that changes state: what it touched.
struct Changed {
    target: String,
    entitlements: Vec<EntitlementId>,
}

/// A change to `target` that created or changed no entitlement.
fn touched(target: String) -> Changed {
    Changed {
        target,
        entitlements: Vec::new(),
    }
}

impl StateMachineLogic for OriginLogic {
    type Command = OriginCommand;
    type Response = OriginResponse;
    const FIELD_NAMES: &'static [&'static str] = tollgate_model::stored::STORED_FIELD_NAMES;

    fn apply(
        &self,
        _ctx: &ApplyContext,
        cmd: &OriginCommand,
        state: &dyn ReadState,
    ) -> Result<Applied<OriginResponse>, ReadError> {
        let mut tx = Tx {
            state,
            overlay: BTreeMap::new(),
            writes: Vec::new(),
            mutations: Vec::new(),
            lease: None,
            action: None,
        };
        let head: u64 = tx.get(keys::HEAD_REVISION)?.unwrap_or(0);
        let revision = head + 1;
        // Read before the command runs: a sign-out or a deleted user is
        // gone afterwards.
        let account = audit_account(&tx, &cmd.op)?;
        let outcome = check_envelope(cmd).and_then(|()| run(&mut tx, cmd, revision));
        let response = match outcome {
            Ok(changed) => {
                assert!(
                    !tx.writes.is_empty(),
                    "a committed command must write something: {}",
                    cmd.op.action()
                );
                let change = ChangeRecord {
                    revision,
                    committed_at: cmd.at,
                    mutations: std::mem::take(&mut tx.mutations),
                };
                tx.put(keys::change(revision), &change);
                // A region's report is telemetry a leader sends every few
                // seconds, not a change anyone made: the audit log would
                // be mostly reports. It keeps its revision and change
                // record; `region-status/<region>` holds the latest.
                if !matches!(cmd.op, Op::RecordRegionReport { .. }) {
                    tx.put(
                        keys::audit(revision),
                        &AuditRecord {
                            revision,
                            at: cmd.at,
                            actor: cmd.actor.clone(),
                            action: tx.action.unwrap_or(cmd.op.action()).to_string(),
                            target: changed.target,
                            reason: cmd.reason.clone(),
                        },
                    );
                }
                tx.put(keys::HEAD_REVISION.to_vec(), &revision);
                if let Some(account) = &account {
                    tx.put(keys::account_audit(account, revision), &revision);
                }
                match tx.lease {
                    Some((granted, granted_total)) => OriginResponse::Leased {
                        revision,
                        granted,
                        granted_total,
                    },
                    None => OriginResponse::Committed {
                        revision,
                        entitlements: changed.entitlements,
                    },
                }
            }
            Err(Stop::Read(e)) => return Err(e),
            Err(Stop::Reject(r)) => {
                tx.writes.clear();
                OriginResponse::Rejected(r)
            }
            Err(Stop::Unchanged {
                revision,
                entitlements,
                note,
            }) => {
                tx.writes.clear();
                OriginResponse::Unchanged {
                    revision,
                    entitlements,
                    note,
                }
            }
        };
        Ok(Applied {
            writes: tx.writes,
            response,
        })
    }
}

fn check_envelope(cmd: &OriginCommand) -> Step<()> {
    if cmd.actor.is_empty() || cmd.actor.len() > ACTOR_LEN_MAX {
        return reject(
            RejectCode::Invalid,
            format!("actor must be 1..={ACTOR_LEN_MAX} bytes"),
        );
    }
    if cmd
        .reason
        .as_ref()
        .is_some_and(|r| r.len() > REASON_LEN_MAX)
    {
        return reject(
            RejectCode::Invalid,
            format!("reason must be at most {REASON_LEN_MAX} bytes"),
        );
    }
    Ok(())
}

/// Hands the command's op to the one function of its domain that applies it.
fn run(tx: &mut Tx<'_>, cmd: &OriginCommand, revision: u64) -> Step<Changed> {
    match &cmd.op {
        Op::PutProduct(p) => catalog::put_product(tx, p),
        Op::PutFeature(f) => catalog::put_feature(tx, f),
        Op::PutPlan(p) => catalog::put_plan(tx, p),
        Op::PutAddon(a) => catalog::put_addon(tx, a),
        Op::PutSku(s) => catalog::put_sku(tx, s),
        Op::SetDefaultOfflinePolicy(p) => catalog::set_default_offline_policy(tx, p),
        Op::PutAccount(a) => accounts::put_account(tx, a),
        Op::PutSubject(s) => accounts::put_subject(tx, s),
        Op::DeleteSubject { account, subject } => accounts::delete_subject(tx, account, subject),
        Op::Grant(ent) => entitlements::grant(tx, ent, revision),
        Op::ChangeEntitlement { id, change } => entitlements::change(tx, id, change, revision),
        Op::PlaceOrder(order) => orders::place_order(tx, order, revision),
        Op::IssueLicense(record) => licenses::issue_license(tx, record),
        Op::RevokeLicense {
            account,
            id,
            expires_at,
        } => licenses::revoke_license(tx, cmd, account, id, *expires_at),
        Op::CertifyRegion(record) => licenses::certify_region(tx, record),
        Op::RevokeCertificate { serial } => licenses::revoke_certificate(tx, cmd, serial),
        Op::RequestAccess(spec) => access::request_access(tx, cmd, spec, revision),
        Op::DecideAccess { id, approve } => access::decide_access(tx, cmd, id, *approve, revision),
        // API keys, webhooks and compaction never leave the origin: their
        // change records carry no mutation.
        Op::PutApiKey(key) => api_keys::put_api_key(tx, key),
        Op::RevokeApiKey { id } => api_keys::revoke_api_key(tx, id),
        Op::PutCredential(credential) => credentials::put_credential(tx, credential),
        Op::RevokeCredential { id } => credentials::revoke_credential(tx, cmd, id),
        Op::PutWebhook(spec) => webhooks::put_webhook(tx, cmd, spec, revision),
        Op::DeleteWebhook { id } => webhooks::delete_webhook(tx, id),
        Op::WebhookProgress {
            id,
            through,
            delivery,
        } => webhooks::webhook_progress(tx, id, *through, delivery.as_ref(), revision),
        Op::RedeliverWebhook { id, revision: of } => webhooks::redeliver_webhook(tx, id, *of),
        Op::WebhookRedelivered { id, delivery } => {
            webhooks::webhook_redelivered(tx, id, delivery, revision)
        }
        // The region's `limit` is not an input: the cap is the origin's own.
        Op::LeaseQuota {
            region,
            counter,
            limit: _,
            want,
            outstanding_max,
        } => quota::lease_quota(tx, cmd.at, region, counter, *want, *outstanding_max),
        Op::SyncQuota { region, entries } => quota::sync_quota(tx, cmd.at, region, entries),
        Op::LeaseSeats {
            region,
            entitlement,
            want,
        } => quota::lease_seats(tx, region, entitlement, *want),
        Op::ReleaseSeats {
            region,
            entitlement,
            released_total,
        } => quota::release_seats(tx, region, entitlement, *released_total),
        Op::CompactChanges { through } => changefeed::compact_changes(tx, *through, revision),
        // The signing keys never leave the origin (regions get the public
        // set, endorsed, on the changefeed).
        Op::InitSigningKeys { keys } => signing::init_signing_keys(tx, keys, revision),
        Op::RotateSigningKey {
            key,
            overlap_seconds,
        } => signing::rotate_signing_key(tx, cmd, key, *overlap_seconds, revision),
        Op::RetireSigningKey { kid } => signing::retire_signing_key(tx, kid, revision),
        Op::QueueAccessRequests { ids } => access::queue_existing(tx, ids),
        Op::RecordRegionReport(report) => regions::record_region_report(tx, cmd, report, revision),
        Op::ReleaseSeatHolder {
            account,
            entitlement,
            subject,
        } => regions::release_seat_holder(tx, cmd, account, entitlement, subject, revision),
        // Portal users and sessions never leave the origin.
        Op::PutPortalUser(user) => portal::put_user(tx, cmd, user),
        Op::CreatePortalUser(user) => portal::create_user(tx, cmd, user),
        Op::DeletePortalUser { id } => portal::delete_user(tx, id),
        Op::SetPortalPassword {
            user,
            password_hash,
            keep_session,
        } => portal::set_password(tx, user, password_hash, keep_session.as_deref()),
        Op::StartPortalSession(session) => portal::start_session(tx, cmd, session),
        Op::EndPortalSession { id } => portal::end_session(tx, id),
        Op::PortalSignInFailed {
            user,
            lock_after,
            lock_seconds,
        } => portal::sign_in_failed(tx, cmd, user, *lock_after, *lock_seconds),
    }
}

/// The customer account a committed command concerns, if one: its audit
/// record is then listed in that account's own trail
/// ([`keys::account_audit`]). Usage reports and leases are the regions'
/// bookkeeping, not the customer's history, and are left out.
fn audit_account(tx: &Tx<'_>, op: &Op) -> Result<Option<AccountId>, ReadError> {
    let of_entitlement = |id: &EntitlementId| -> Result<Option<AccountId>, ReadError> {
        Ok(tx
            .get::<Entitlement>(&keys::entitlement(id))?
            .map(|e| e.account))
    };
    Ok(match op {
        Op::PutAccount(a) => Some(a.id.clone()),
        Op::PutSubject(s) => Some(s.account.clone()),
        Op::DeleteSubject { account, .. } => Some(account.clone()),
        Op::Grant(e) => Some(e.account.clone()),
        Op::ChangeEntitlement { id, .. } => of_entitlement(id)?,
        Op::PlaceOrder(o) => Some(o.account.clone()),
        Op::RequestAccess(spec) => Some(spec.account.clone()),
        Op::DecideAccess { id, .. } => tx
            .get::<AccessRequest>(&keys::access_request(id))?
            .map(|r| r.spec.account),
        Op::IssueLicense(r) => Some(r.account.clone()),
        Op::RevokeLicense { account, .. } => Some(account.clone()),
        Op::PutPortalUser(u) | Op::CreatePortalUser(u) => u.account.clone(),
        // Committed only for an entitlement of this account.
        Op::ReleaseSeatHolder { account, .. } => Some(account.clone()),
        Op::SetPortalPassword { user, .. } | Op::PortalSignInFailed { user, .. } => tx
            .get::<crate::portal::PortalUser>(&keys::portal_user(user))?
            .and_then(|u| u.account),
        Op::StartPortalSession(s) => tx
            .get::<crate::portal::PortalUser>(&keys::portal_user(&s.user))?
            .and_then(|u| u.account),
        Op::DeletePortalUser { id } => tx
            .get::<crate::portal::PortalUser>(&keys::portal_user(id))?
            .and_then(|u| u.account),
        Op::EndPortalSession { id } => {
            match tx.get::<crate::portal::PortalSession>(&keys::portal_session(id))? {
                Some(s) => tx
                    .get::<crate::portal::PortalUser>(&keys::portal_user(&s.user))?
                    .and_then(|u| u.account),
                None => None,
            }
        }
        _ => None,
    })
}

// The reference checks below are made by more than one domain (orders and
// access requests create entitlements; licenses, subjects and orders name
// accounts), so they live here rather than in one domain that the others
// would then import.

fn require_account(tx: &Tx<'_>, account: &AccountId) -> Step<()> {
    if tx.exists(&keys::account(account))? {
        Ok(())
    } else {
        reject(RejectCode::NotFound, format!("unknown account {account}"))
    }
}

fn check_target(tx: &Tx<'_>, target: &SkuTarget) -> Step<()> {
    let (key, what) = match target {
        SkuTarget::Plan(p) => (keys::plan(p), format!("plan {p}")),
        SkuTarget::Addon(a) => (keys::addon(a), format!("add-on {a}")),
    };
    if tx.exists(&key)? {
        Ok(())
    } else {
        reject(RejectCode::NotFound, format!("unknown {what}"))
    }
}

fn check_grant(tx: &Tx<'_>, grant: &Grant) -> Step<()> {
    match grant {
        Grant::Plan(p) => check_target(tx, &SkuTarget::Plan(p.clone())),
        Grant::Addon(a) => check_target(tx, &SkuTarget::Addon(a.clone())),
        Grant::Feature(f) => {
            if tx.exists(&keys::feature(&f.feature))? {
                Ok(())
            } else {
                reject(
                    RejectCode::NotFound,
                    format!("unknown feature {}", f.feature),
                )
            }
        }
    }
}

/// Named seats may only be assigned to subjects of the account.
fn check_assigned(tx: &Tx<'_>, ent: &Entitlement) -> Step<()> {
    if let Some(SeatMode::Named { assigned }) = ent.seats.as_ref().map(|s| &s.mode) {
        for subject in assigned {
            if !tx.exists(&keys::subject(&ent.account, subject))? {
                return reject(
                    RejectCode::NotFound,
                    format!(
                        "unknown subject {subject} in account {} (named seat)",
                        ent.account
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Changes entitlement `id` and writes it stamped with `revision`, its
/// mutation on this revision's change record: what `ChangeEntitlement`
/// does, and an approved request for more seats.
fn change_entitlement(
    tx: &mut Tx<'_>,
    id: &EntitlementId,
    change: &EntitlementChange,
    revision: u64,
) -> Step<()> {
    let current: Entitlement = tx.require(&keys::entitlement(id), &format!("entitlement {id}"))?;
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
    tx.put_entitlement(next, revision)
}

fn check_new_entitlement(tx: &Tx<'_>, ent: &Entitlement) -> Step<()> {
    ent.validate().map_err(invalid)?;
    require_account(tx, &ent.account)?;
    check_grant(tx, &ent.grant)?;
    check_assigned(tx, ent)?;
    if tx.exists(&keys::entitlement(&ent.id))? {
        return reject(
            RejectCode::Conflict,
            format!("entitlement {} already exists", ent.id),
        );
    }
    Ok(())
}
