//! A region's replicated state machine: what every node of a region applies
//! from its Raft log. Pure, like the origin's: the regional leader verifies
//! the origin's change records (see `tollgate-feed`) and proposes them;
//! [`RegionLogic`] writes their mutations under the same keys the origin
//! uses, so a region's data set and the origin's compare byte for byte.
//!
//! Region-local facts go through the same log, so every node agrees on
//! them: the origin revision applied, the origin's head as last seen, and
//! when the region last heard from the origin (staleness is computed from
//! it, not from any one node's view).

use serde::{Deserialize, Serialize};
use tollgate_model::{ChangeRecord, Mutation, UnixSeconds};
use tollgate_origin::keys;
use tollgate_raft::logic::ReadError;
use tollgate_raft::{Applied, ApplyContext, ReadState, StateMachineLogic, Write};

/// When the region last heard from the origin (Unix seconds).
pub const ORIGIN_CONTACT: &[u8] = b"region/origin-contact";
/// The origin's head revision as last seen.
pub const ORIGIN_HEAD: &[u8] = b"region/origin-head";
/// The entitlements of one account, for building its view:
/// `region/account-entitlement/<account>/<entitlement>` (empty values).
pub fn account_entitlement(
    account: &tollgate_model::AccountId,
    id: &tollgate_model::EntitlementId,
) -> Vec<u8> {
    format!("region/account-entitlement/{account}/{id}").into_bytes()
}

/// The prefix of [`account_entitlement`] keys of one account.
pub fn account_entitlements_prefix(account: &tollgate_model::AccountId) -> Vec<u8> {
    format!("region/account-entitlement/{account}/").into_bytes()
}

/// Most change records in one command (bounds the write batch).
pub const RECORDS_PER_COMMAND_MAX: usize = 512;

/// What a region's log carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionCommand {
    /// Change records the leader verified, in revision order. Records at
    /// or below the applied revision are skipped (a new leader may resend
    /// what its predecessor proposed); the rest must continue it without a
    /// gap.
    ApplyChanges {
        records: Vec<ChangeRecord>,
        heard_at: UnixSeconds,
    },
    /// The origin answered (a heartbeat or any message).
    OriginContact {
        head_revision: u64,
        heard_at: UnixSeconds,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionResponse {
    /// The origin revision applied after the command.
    Applied { revision: u64 },
    /// Nothing was written.
    Refused { reason: String },
}

/// The key and stored value of one mutation (`None`: delete). The same
/// bytes the origin stores for the object.
pub fn mutation_write(m: &Mutation) -> Write {
    fn put<T: Serialize>(key: Vec<u8>, value: &T) -> Write {
        Write::Put {
            key,
            value: serde_json::to_vec(value).expect("model values serialise"),
        }
    }
    match m {
        Mutation::PutProduct(p) => put(keys::product(&p.id), p),
        Mutation::PutFeature(f) => put(keys::feature(&f.id), f),
        Mutation::PutPlan(p) => put(keys::plan(&p.id), p),
        Mutation::PutAddon(a) => put(keys::addon(&a.id), a),
        Mutation::PutSku(s) => put(keys::sku(&s.id), s),
        Mutation::SetDefaultOfflinePolicy(p) => put(keys::DEFAULT_OFFLINE_POLICY.to_vec(), p),
        Mutation::PutAccount(a) => put(keys::account(&a.id), a),
        Mutation::PutSubject(s) => put(keys::subject(&s.account, &s.id), s),
        Mutation::DeleteSubject { account, subject } => Write::Delete {
            key: keys::subject(account, subject),
        },
        Mutation::PutEntitlement(e) => put(keys::entitlement(&e.id), e),
    }
}

fn read_u64(state: &dyn ReadState, key: &[u8]) -> Result<u64, ReadError> {
    match state.get(key)? {
        None => Ok(0),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            ReadError(format!(
                "stored value under {} does not decode: {e}",
                String::from_utf8_lossy(key)
            ))
        }),
    }
}

fn put_u64(key: &[u8], value: u64) -> Write {
    Write::Put {
        key: key.to_vec(),
        value: serde_json::to_vec(&value).expect("integers serialise"),
    }
}

/// Region-local facts advance monotonically: a new leader whose clock is
/// behind, or a late message, never moves them back.
fn contact_writes(
    state: &dyn ReadState,
    head: u64,
    heard_at: UnixSeconds,
) -> Result<Vec<Write>, ReadError> {
    let mut writes = Vec::new();
    let known_contact = read_u64(state, ORIGIN_CONTACT)? as i64;
    if heard_at.0 > known_contact {
        writes.push(put_u64(ORIGIN_CONTACT, heard_at.0 as u64));
    }
    if head > read_u64(state, ORIGIN_HEAD)? {
        writes.push(put_u64(ORIGIN_HEAD, head));
    }
    Ok(writes)
}

/// A region's state machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegionLogic;

impl StateMachineLogic for RegionLogic {
    type Command = RegionCommand;
    type Response = RegionResponse;

    fn apply(
        &self,
        _ctx: &ApplyContext,
        command: &RegionCommand,
        state: &dyn ReadState,
    ) -> Result<Applied<RegionResponse>, ReadError> {
        let applied = read_u64(state, keys::HEAD_REVISION)?;
        let refuse = |reason: String| Applied {
            writes: Vec::new(),
            response: RegionResponse::Refused { reason },
        };
        match command {
            RegionCommand::OriginContact {
                head_revision,
                heard_at,
            } => Ok(Applied {
                writes: contact_writes(state, *head_revision, *heard_at)?,
                response: RegionResponse::Applied { revision: applied },
            }),
            RegionCommand::ApplyChanges { records, heard_at } => {
                if records.len() > RECORDS_PER_COMMAND_MAX {
                    return Ok(refuse(format!(
                        "{} records in one command; at most {RECORDS_PER_COMMAND_MAX}",
                        records.len()
                    )));
                }
                let mut next = applied;
                let mut writes = Vec::new();
                for record in records.iter().filter(|r| r.revision > applied) {
                    if record.revision != next + 1 {
                        return Ok(refuse(format!(
                            "revision {} does not follow {next}: a gap",
                            record.revision
                        )));
                    }
                    for m in &record.mutations {
                        writes.push(mutation_write(m));
                        // Entitlements never change account, and are never
                        // deleted (revoked instead): the index only grows.
                        if let Mutation::PutEntitlement(e) = m {
                            writes.push(Write::Put {
                                key: account_entitlement(&e.account, &e.id),
                                value: Vec::new(),
                            });
                        }
                    }
                    next = record.revision;
                }
                if next > applied {
                    writes.push(put_u64(keys::HEAD_REVISION, next));
                }
                writes.extend(contact_writes(state, next, *heard_at)?);
                Ok(Applied {
                    writes,
                    response: RegionResponse::Applied { revision: next },
                })
            }
        }
    }
}
