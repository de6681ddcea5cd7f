//! The origin's apply function. Pure: it reads the state through
//! [`ReadState`], returns the writes to make, and never reads a clock.
//!
//! Every command either commits under the next revision (the object writes,
//! a [`ChangeRecord`] for the changefeed, an [`AuditRecord`] and the new
//! head revision, all in one batch) or writes nothing at all: refused
//! commands and replayed orders leave the state untouched.

use crate::command::*;
use crate::keys;
use crate::quota::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use tollgate_model::limits::ENTITLEMENTS_PER_ACCOUNT_MAX;
use tollgate_model::{
    AccountId, Addon, ChangeRecord, Entitlement, EntitlementId, EntitlementStatus, FeatureGrant,
    Grant, ModelError, Mutation, Plan, SeatMode, Seats, Sku, SkuQuantity, SkuTarget, UnixSeconds,
};
use tollgate_raft::logic::ReadError;
use tollgate_raft::{Applied, ApplyContext, ReadState, StateMachineLogic, Write};

/// Most change records one compaction drops (bounds the write batch).
pub const COMPACT_RECORDS_MAX: u64 = 10_000;

/// Lease time to live of floating seats created by orders.
pub const ORDER_FLOATING_LEASE_TTL_SECONDS: u32 = 300;

/// Longest access-request justification, in bytes.
pub const JUSTIFICATION_LEN_MAX: usize = 2048;

/// Who approved an automatically approved access request.
pub const AUTO_APPROVER: &str = "auto-approval";

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

impl StateMachineLogic for OriginLogic {
    type Command = OriginCommand;
    type Response = OriginResponse;

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
                tx.put(keys::HEAD_REVISION.to_vec(), &revision);
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

/// Keeps [`OUTSTANDING_TOTAL`] in step with one counter going from
/// `before` to `after` outstanding units.
fn add_outstanding(tx: &mut Tx<'_>, before: u64, after: u64) -> Step<()> {
    let total: u64 = tx.get(OUTSTANDING_TOTAL)?.unwrap_or(0);
    let total = total.saturating_sub(before).saturating_add(after);
    tx.put(OUTSTANDING_TOTAL.to_vec(), &total);
    Ok(())
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

fn run(tx: &mut Tx<'_>, cmd: &OriginCommand, revision: u64) -> Step<Changed> {
    let touched = |target: String| Changed {
        target,
        entitlements: Vec::new(),
    };
    match &cmd.op {
        Op::PutProduct(p) => {
            p.validate().map_err(invalid)?;
            tx.publish(keys::product(&p.id), p, Mutation::PutProduct(p.clone()));
            Ok(touched(format!("product/{}", p.id)))
        }
        Op::PutFeature(f) => {
            f.validate().map_err(invalid)?;
            if !tx.exists(&keys::product(&f.product))? {
                return reject(
                    RejectCode::NotFound,
                    format!("unknown product {}", f.product),
                );
            }
            tx.publish(keys::feature(&f.id), f, Mutation::PutFeature(f.clone()));
            Ok(touched(format!("feature/{}", f.id)))
        }
        Op::PutPlan(p) => {
            p.validate().map_err(invalid)?;
            check_bundle(tx, &p.product, &p.features)?;
            tx.publish(keys::plan(&p.id), p, Mutation::PutPlan(p.clone()));
            Ok(touched(format!("plan/{}", p.id)))
        }
        Op::PutAddon(a) => {
            a.validate().map_err(invalid)?;
            check_bundle(tx, &a.product, &a.features)?;
            for plan in &a.compatible_plans {
                if !tx.exists(&keys::plan(plan))? {
                    return reject(
                        RejectCode::NotFound,
                        format!("unknown plan {plan} in compatible_plans"),
                    );
                }
            }
            tx.publish(keys::addon(&a.id), a, Mutation::PutAddon(a.clone()));
            Ok(touched(format!("addon/{}", a.id)))
        }
        Op::PutSku(s) => {
            s.validate().map_err(invalid)?;
            check_target(tx, &s.target)?;
            tx.publish(keys::sku(&s.id), s, Mutation::PutSku(s.clone()));
            Ok(touched(format!("sku/{}", s.id)))
        }
        Op::SetDefaultOfflinePolicy(p) => {
            tx.publish(
                keys::DEFAULT_OFFLINE_POLICY.to_vec(),
                p,
                Mutation::SetDefaultOfflinePolicy(*p),
            );
            Ok(touched("catalog/default_offline_policy".into()))
        }
        Op::PutAccount(a) => {
            a.validate().map_err(invalid)?;
            tx.publish(keys::account(&a.id), a, Mutation::PutAccount(a.clone()));
            Ok(touched(format!("account/{}", a.id)))
        }
        Op::PutSubject(s) => {
            s.validate().map_err(invalid)?;
            require_account(tx, &s.account)?;
            tx.publish(
                keys::subject(&s.account, &s.id),
                s,
                Mutation::PutSubject(s.clone()),
            );
            Ok(touched(format!("subject/{}/{}", s.account, s.id)))
        }
        Op::DeleteSubject { account, subject } => {
            let key = keys::subject(account, subject);
            if !tx.exists(&key)? {
                return reject(
                    RejectCode::NotFound,
                    format!("unknown subject {subject} in account {account}"),
                );
            }
            tx.delete(key);
            tx.mutations.push(Mutation::DeleteSubject {
                account: account.clone(),
                subject: subject.clone(),
            });
            Ok(touched(format!("subject/{account}/{subject}")))
        }
        Op::Grant(ent) => {
            check_new_entitlement(tx, ent)?;
            tx.put_entitlement(ent.clone(), revision)?;
            Ok(Changed {
                target: format!("entitlement/{}", ent.id),
                entitlements: vec![ent.id.clone()],
            })
        }
        Op::ChangeEntitlement { id, change } => {
            let current: Entitlement =
                tx.require(&keys::entitlement(id), &format!("entitlement {id}"))?;
            let next = change_entitlement(tx, current, change)?;
            tx.put_entitlement(next, revision)?;
            Ok(Changed {
                target: format!("entitlement/{id}"),
                entitlements: vec![id.clone()],
            })
        }
        Op::PlaceOrder(order) => place_order(tx, order, revision),
        Op::IssueLicense(record) => {
            tollgate_model::validate_revocation_id("id", &record.id).map_err(invalid)?;
            require_account(tx, &record.account)?;
            let sane = record.revoked_at.is_none()
                && !record.audience.is_empty()
                && record.audience.len() <= crate::licenses::AUDIENCE_BYTES_MAX
                && record.not_before < record.expires_at;
            if !sane {
                return reject(
                    RejectCode::Invalid,
                    "a license needs an audience of 1..=256 bytes, not_before before expires_at, and no revocation",
                );
            }
            let key = keys::license(&record.account, &record.id);
            if tx.exists(&key)? {
                return reject(
                    RejectCode::Conflict,
                    format!("license {} already exists", record.id),
                );
            }
            tx.put(key, record);
            Ok(touched(format!("license/{}/{}", record.account, record.id)))
        }
        Op::RevokeLicense {
            account,
            id,
            expires_at,
        } => {
            tollgate_model::validate_revocation_id("id", id).map_err(invalid)?;
            require_account(tx, account)?;
            let revoked_key = keys::revoked_license(id);
            if tx.exists(&revoked_key)? {
                return reject(
                    RejectCode::Conflict,
                    format!("license {id} is already revoked"),
                );
            }
            let key = keys::license(account, id);
            let expires_at = match tx.get::<crate::licenses::LicenseRecord>(&key)? {
                Some(mut record) => {
                    record.revoked_at = Some(cmd.at);
                    tx.put(key, &record);
                    record.expires_at
                }
                None => match expires_at {
                    Some(at) => *at,
                    None => {
                        return reject(
                            RejectCode::NotFound,
                            format!("no license {id} was issued by the origin for account {account}; to revoke a token a region issued, give its expires_at"),
                        )
                    }
                },
            };
            let revoked = tollgate_model::RevokedLicense {
                id: id.clone(),
                account: account.clone(),
                expires_at,
                revoked_at: cmd.at,
            };
            tx.publish(
                revoked_key,
                &revoked,
                Mutation::RevokeLicense(revoked.clone()),
            );
            Ok(touched(format!("license/{account}/{id}")))
        }
        Op::CertifyRegion(record) => {
            tollgate_model::validate_revocation_id("serial", &record.serial).map_err(invalid)?;
            let sane = !record.region.is_empty()
                && record.region.len() <= 64
                && record.not_before < record.not_after
                && record.revoked_at.is_none();
            if !sane {
                return reject(
                    RejectCode::Invalid,
                    "a certificate needs a region of 1..=64 bytes, not_before before not_after, and no revocation",
                );
            }
            let key = keys::certificate(&record.serial);
            if tx.exists(&key)? {
                return reject(
                    RejectCode::Conflict,
                    format!("certificate {} already exists", record.serial),
                );
            }
            tx.put(key, record);
            Ok(touched(format!("certificate/{}", record.serial)))
        }
        Op::RevokeCertificate { serial } => {
            let key = keys::certificate(serial);
            let mut record: crate::licenses::CertificateRecord =
                tx.require(&key, &format!("certificate {serial}"))?;
            if record.revoked_at.is_some() {
                return reject(
                    RejectCode::Conflict,
                    format!("certificate {serial} is already revoked"),
                );
            }
            record.revoked_at = Some(cmd.at);
            tx.put(key, &record);
            let revoked = tollgate_model::RevokedCertificate {
                serial: serial.clone(),
                region: record.region.clone(),
                not_after: record.not_after,
                revoked_at: cmd.at,
            };
            tx.publish(
                keys::revoked_certificate(serial),
                &revoked,
                Mutation::RevokeCertificate(revoked.clone()),
            );
            Ok(touched(format!("certificate/{serial}")))
        }
        Op::RequestAccess(spec) => request_access(tx, cmd, spec, revision),
        Op::DecideAccess { id, approve } => decide_access(tx, cmd, id, *approve, revision),
        // API keys, webhooks and compaction never leave the origin: their
        // change records carry no mutation.
        Op::PutApiKey(key) => {
            EntitlementId::new(key.id.as_str()).map_err(invalid)?;
            let hex_ok = key.secret_sha256.len() == 64
                && key
                    .secret_sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex_ok || key.name.len() > ACTOR_LEN_MAX || key.scopes.is_empty() {
                return reject(
                    RejectCode::Invalid,
                    "an API key needs a name of at most 128 bytes, a SHA-256 in lower-case hex and at least one scope",
                );
            }
            tx.put(keys::api_key(&key.id), key);
            Ok(touched(format!("api-key/{}", key.id)))
        }
        Op::RevokeApiKey { id } => {
            let mut key: ApiKeyRecord = tx.require(&keys::api_key(id), &format!("API key {id}"))?;
            if key.revoked {
                return reject(
                    RejectCode::Conflict,
                    format!("API key {id} is already revoked"),
                );
            }
            key.revoked = true;
            tx.put(keys::api_key(id), &key);
            Ok(touched(format!("api-key/{id}")))
        }
        Op::PutWebhook(spec) => put_webhook(tx, cmd, spec, revision),
        Op::DeleteWebhook { id } => {
            let _: WebhookRecord = tx.require(&keys::webhook(id), &format!("webhook {id}"))?;
            tx.delete(keys::webhook(id));
            let mut ids: Vec<String> = tx.get(keys::WEBHOOK_INDEX)?.unwrap_or_default();
            ids.retain(|x| x != id);
            tx.put(keys::WEBHOOK_INDEX.to_vec(), &ids);
            Ok(touched(format!("webhook/{id}")))
        }
        Op::WebhookProgress {
            id,
            through,
            delivery,
        } => {
            let mut record: WebhookRecord =
                tx.require(&keys::webhook(id), &format!("webhook {id}"))?;
            if *through <= record.processed_through {
                return reject(
                    RejectCode::Conflict,
                    format!("webhook {id} already processed revision {through}"),
                );
            }
            if *through >= revision {
                return reject(
                    RejectCode::Invalid,
                    format!("revision {through} is not committed yet"),
                );
            }
            record.processed_through = *through;
            tx.put(keys::webhook(id), &record);
            if let Some(d) = delivery {
                if d.last_error
                    .as_ref()
                    .is_some_and(|e| e.len() > REASON_LEN_MAX)
                {
                    return reject(RejectCode::Invalid, "last_error is too long");
                }
                tx.put(keys::webhook_delivery(id, d.revision), d);
            }
            Ok(touched(format!("webhook/{id}")))
        }
        Op::LeaseQuota {
            region,
            counter,
            limit,
            want,
            outstanding_max,
        } => {
            if !valid_region_name(region) {
                return reject(RejectCode::Invalid, "region: 1..=64 bytes of [a-z0-9-]");
            }
            let key = quota_key(counter);
            let mut quota: QuotaState = tx.get(&key)?.unwrap_or_default();
            let before = quota.outstanding();
            let granted = quota.lease(region, *limit, *want, *outstanding_max);
            if granted == 0 {
                return reject(
                    RejectCode::Conflict,
                    format!(
                        "nothing left to lease of {counter}: {} of {limit} allotted, {} outstanding",
                        quota.allotted(),
                        quota.outstanding()
                    ),
                );
            }
            let total = quota.regions.get(region).map_or(0, |r| r.granted);
            add_outstanding(tx, before, quota.outstanding())?;
            tx.put(key, &quota);
            tx.lease = Some((granted, total));
            Ok(touched(format!("quota/{counter}/{region}")))
        }
        Op::SyncQuota { region, entries } => {
            if !valid_region_name(region) {
                return reject(RejectCode::Invalid, "region: 1..=64 bytes of [a-z0-9-]");
            }
            if entries.len() > SYNC_ENTRIES_MAX {
                return reject(
                    RejectCode::Invalid,
                    format!("at most {SYNC_ENTRIES_MAX} counters per report"),
                );
            }
            let mut changed = Vec::new();
            for entry in entries {
                let key = quota_key(&entry.counter);
                let mut quota: QuotaState = tx.get(&key)?.unwrap_or_default();
                let before = quota.outstanding();
                if quota.sync(region, entry.consumed, entry.released) {
                    add_outstanding(tx, before, quota.outstanding())?;
                    if let Some(percent) = quota.crossed_threshold() {
                        tx.action = Some("usage.threshold");
                        changed.push(format!("usage/{}/{percent}", entry.counter));
                    }
                    tx.put(key, &quota);
                }
            }
            if tx.writes.is_empty() {
                return reject(RejectCode::Conflict, "nothing new in the report");
            }
            let target = match tx.action {
                // The audit record names what crossed (the first, if several).
                Some(_) => changed.into_iter().next().unwrap_or_default(),
                None => format!("quota/{region}"),
            };
            Ok(touched(target))
        }
        Op::LeaseSeats {
            region,
            entitlement,
            want,
        } => {
            if !valid_region_name(region) {
                return reject(RejectCode::Invalid, "region: 1..=64 bytes of [a-z0-9-]");
            }
            let ent: Entitlement = tx.require(
                &keys::entitlement(entitlement),
                &format!("entitlement {entitlement}"),
            )?;
            let count = match ent.seats {
                Some(Seats {
                    count,
                    mode: SeatMode::Floating { .. },
                }) => count,
                _ => {
                    return reject(
                        RejectCode::Invalid,
                        format!("entitlement {entitlement} has no floating seats"),
                    )
                }
            };
            let key = seats_key(entitlement);
            let mut seats: QuotaState = tx.get(&key)?.unwrap_or_default();
            let granted = seats.lease(region, u64::from(count), u64::from(*want), u64::MAX);
            if granted == 0 {
                return reject(
                    RejectCode::Conflict,
                    format!(
                        "all {count} seats of {entitlement} are held by regions ({:?})",
                        seats.regions
                    ),
                );
            }
            let total = seats.regions.get(region).map_or(0, |r| r.granted);
            tx.put(key, &seats);
            tx.lease = Some((granted, total));
            Ok(touched(format!("seats/{entitlement}/{region}")))
        }
        Op::ReleaseSeats {
            region,
            entitlement,
            released_total,
        } => {
            if !valid_region_name(region) {
                return reject(RejectCode::Invalid, "region: 1..=64 bytes of [a-z0-9-]");
            }
            let key = seats_key(entitlement);
            let mut seats: QuotaState = tx.get(&key)?.unwrap_or_default();
            if !seats.sync(region, 0, *released_total) {
                return reject(RejectCode::Conflict, "nothing new in the report");
            }
            tx.put(key, &seats);
            Ok(touched(format!("seats/{entitlement}/{region}")))
        }
        Op::CompactChanges { through } => {
            let floor: u64 = tx.get(keys::CHANGE_FLOOR)?.unwrap_or(0);
            if *through <= floor {
                return reject(
                    RejectCode::Conflict,
                    format!("change records through {floor} are already compacted"),
                );
            }
            if *through >= revision {
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
            for rev in floor + 1..=*through {
                tx.delete(keys::change(rev));
            }
            tx.put(keys::CHANGE_FLOOR.to_vec(), through);
            Ok(touched(format!("changefeed/{through}")))
        }
    }
}

fn put_webhook(
    tx: &mut Tx<'_>,
    cmd: &OriginCommand,
    spec: &WebhookSpec,
    revision: u64,
) -> Step<Changed> {
    EntitlementId::new(spec.id.as_str()).map_err(invalid)?;
    let url_ok = (spec.url.starts_with("http://") || spec.url.starts_with("https://"))
        && spec.url.len() <= WEBHOOK_URL_LEN_MAX
        && !spec.url.chars().any(char::is_whitespace);
    if !url_ok {
        return reject(
            RejectCode::Invalid,
            format!("url must be http:// or https://, without spaces, at most {WEBHOOK_URL_LEN_MAX} bytes"),
        );
    }
    if spec.events.is_empty() {
        return reject(RejectCode::Invalid, "a webhook needs at least one event");
    }
    let existing: Option<WebhookRecord> = tx.get(&keys::webhook(&spec.id))?;
    if existing.is_none() {
        let mut ids: Vec<String> = tx.get(keys::WEBHOOK_INDEX)?.unwrap_or_default();
        if ids.len() >= WEBHOOKS_MAX {
            return reject(
                RejectCode::Invalid,
                format!("at most {WEBHOOKS_MAX} webhooks"),
            );
        }
        ids.push(spec.id.clone());
        tx.put(keys::WEBHOOK_INDEX.to_vec(), &ids);
    }
    // A new webhook hears about what commits after it; a replaced one keeps
    // its place in the event stream.
    let record = WebhookRecord {
        spec: spec.clone(),
        created_at: existing.as_ref().map_or(cmd.at, |e| e.created_at),
        created_revision: existing.as_ref().map_or(revision, |e| e.created_revision),
        processed_through: existing.as_ref().map_or(revision, |e| e.processed_through),
    };
    tx.put(keys::webhook(&spec.id), &record);
    Ok(Changed {
        target: format!("webhook/{}", spec.id),
        entitlements: Vec::new(),
    })
}

fn require_account(tx: &Tx<'_>, account: &AccountId) -> Step<()> {
    if tx.exists(&keys::account(account))? {
        Ok(())
    } else {
        reject(RejectCode::NotFound, format!("unknown account {account}"))
    }
}

fn check_bundle(
    tx: &Tx<'_>,
    product: &tollgate_model::ProductId,
    grants: &[FeatureGrant],
) -> Step<()> {
    if !tx.exists(&keys::product(product))? {
        return reject(RejectCode::NotFound, format!("unknown product {product}"));
    }
    for grant in grants {
        let feature: tollgate_model::Feature = tx.require(
            &keys::feature(&grant.feature),
            &format!("feature {}", grant.feature),
        )?;
        if &feature.product != product {
            return reject(
                RejectCode::Invalid,
                format!(
                    "feature {} belongs to product {}, not {product}",
                    grant.feature, feature.product
                ),
            );
        }
    }
    Ok(())
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
fn product_of(tx: &Tx<'_>, target: &SkuTarget) -> Step<tollgate_model::ProductId> {
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

fn place_order(tx: &mut Tx<'_>, order: &Order, revision: u64) -> Step<Changed> {
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

fn request_access(
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
    let auto = match &spec.target {
        AccessTarget::Addon(a) => tx
            .require::<Addon>(&keys::addon(a), &format!("add-on {a}"))?
            .auto_approve
            .filter(|rule| {
                let duration_ok = match (rule.max_duration_seconds, spec.duration_seconds) {
                    (None, _) => true,
                    (Some(max), Some(d)) => d <= max,
                    (Some(_), None) => false,
                };
                duration_ok && (!rule.require_subject || spec.subject.is_some())
            }),
        AccessTarget::Feature(_) => None,
    };
    // Filing a request changes nothing a region serves: its change record
    // has no mutations, and followers just advance their revision. An
    // auto-approved request grants its entitlement in the same revision.
    tx.put(keys::access_request(&spec.id), &request);
    if auto.is_some() {
        let mut approval = cmd.clone();
        approval.actor = AUTO_APPROVER.to_string();
        approval.reason = Some("the access package's auto-approval rule".into());
        return decide_access(tx, &approval, &spec.id, true, revision);
    }
    Ok(Changed {
        target: format!("access-request/{}", spec.id),
        entitlements: Vec::new(),
    })
}

fn decide_access(
    tx: &mut Tx<'_>,
    cmd: &OriginCommand,
    id: &str,
    approve: bool,
    revision: u64,
) -> Step<Changed> {
    let mut request: AccessRequest =
        tx.require(&keys::access_request(id), &format!("access request {id}"))?;
    if request.status != AccessRequestStatus::Pending {
        return reject(
            RejectCode::Conflict,
            format!("access request {id} was already decided"),
        );
    }
    let mut entitlements = Vec::new();
    if approve {
        let spec = &request.spec;
        let ent_id = EntitlementId::new(spec.id.as_str()).map_err(invalid)?;
        let ent = Entitlement {
            id: ent_id.clone(),
            account: spec.account.clone(),
            grant: match &spec.target {
                AccessTarget::Feature(f) => Grant::Feature(FeatureGrant::new(f.clone())),
                AccessTarget::Addon(a) => Grant::Addon(a.clone()),
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
    Ok(Changed {
        target: format!("access-request/{id}"),
        entitlements,
    })
}
