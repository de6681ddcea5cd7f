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

pub mod seats;
pub mod usage;

pub use seats::{SeatAction, SeatOutcome};
use serde::{Deserialize, Serialize};
use tollgate_model::{ChangeRecord, EntitlementId, Mutation, SubjectId, UnixSeconds};
use tollgate_origin::keys;
use tollgate_raft::logic::ReadError;
use tollgate_raft::{Applied, ApplyContext, ReadState, StateMachineLogic, Write};
pub use usage::{
    Counter, CounterState, Drawn, KeyOutcome, KeyVerdict, MeterLease, Recorded, UsageEntry,
};

/// When the region last heard from the origin (Unix seconds).
pub const ORIGIN_CONTACT: &[u8] = b"region/origin-contact";
/// The origin's head revision as last seen.
pub const ORIGIN_HEAD: &[u8] = b"region/origin-head";
/// The origin's public key set as the region last accepted it (JSON), after
/// a rotation the old keys endorsed; absent until the first rotation, when
/// the configured set applies.
pub const ORIGIN_KEYS: &[u8] = b"region/origin-keys";
/// Longest key set stored, in bytes (64 keys of about 200 bytes each).
pub const ORIGIN_KEYS_BYTES_MAX: usize = 64 * 1024;
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

/// The change records a region keeps for `Watch` (after a snapshot
/// install, only those applied since): `region/change/<revision>`.
pub const CHANGES_RETAINED: u64 = 10_000;
/// Records at or below this revision are no longer kept (a watcher that
/// asks for them gets the current state instead).
pub const CHANGE_FLOOR: &[u8] = b"region/change-floor";
/// The prefix of [`change`] keys.
pub const CHANGE_PREFIX: &str = "region/change/";

/// A retained change record.
pub fn change(revision: u64) -> Vec<u8> {
    format!("{CHANGE_PREFIX}{revision:020}").into_bytes()
}

/// A snapshot being staged: `{revision, parts}` (see [`SnapshotStaging`]).
const SNAPSHOT_STAGING: &[u8] = b"region/snapshot/meta";
const SNAPSHOT_PREFIX: &[u8] = b"region/snapshot/";
fn snapshot_part(seq: u32) -> Vec<u8> {
    format!("region/snapshot/part/{seq:010}").into_bytes()
}

/// The key prefixes holding the origin's data as a region serves it, and
/// the region's indexes of it: what a snapshot install replaces.
pub const ORIGIN_DATA_PREFIXES: [&[u8]; 8] = [
    b"catalog/",
    b"credential/",
    b"account/",
    b"subject/",
    b"entitlement/",
    b"revoked-license/",
    b"revoked-certificate/",
    b"region/account-entitlement/",
];

/// Largest serialised part of a snapshot in one command (a chunk from the
/// origin is split into parts of at most this size; each part is staged as
/// one stored value).
pub const SNAPSHOT_PART_BYTES_MAX: usize = 128 * 1024;

/// Splits a snapshot chunk's mutations into parts of at most
/// [`SNAPSHOT_PART_BYTES_MAX`] serialised bytes. A single mutation larger
/// than that (it cannot be: the origin stores each object in one value of
/// at most half that) still gets a part of its own, which apply refuses.
/// Always at least one part (an empty chunk gives an empty part), so every
/// chunk stages something and the parts count the chunks' contents.
pub fn snapshot_parts(mutations: Vec<Mutation>) -> Vec<Vec<Mutation>> {
    let mut parts: Vec<Vec<Mutation>> = Vec::new();
    let mut size = 0;
    for m in mutations {
        let len = serde_json::to_vec(&m).map(|b| b.len() + 1).unwrap_or(0);
        match parts.last_mut() {
            Some(part) if size + len <= SNAPSHOT_PART_BYTES_MAX => part.push(m),
            _ => {
                parts.push(vec![m]);
                size = 0;
            }
        }
        size += len;
    }
    if parts.is_empty() {
        parts.push(Vec::new());
    }
    parts
}

/// The snapshot being staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct SnapshotStaging {
    revision: u64,
    parts: u32,
}

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
    /// The leader accepted a rotated origin key set (endorsed by a key the
    /// region trusted): every node verifies with it from now on, restarts
    /// included. The JSON of a `PublicKeySet`, stored as it is.
    TrustOriginKeys { keys_json: String },
    /// The origin answered (a heartbeat or any message).
    OriginContact {
        head_revision: u64,
        heard_at: UnixSeconds,
    },
    /// Part `seq` of a verified origin snapshot at `revision`, staged until
    /// [`RegionCommand::SnapshotCommit`]. Part 0 starts over (a snapshot
    /// cut short by a leader change or a broken stream is dropped); every
    /// other part must follow the previous one of the same revision.
    SnapshotPart {
        revision: u64,
        seq: u32,
        mutations: Vec<Mutation>,
    },
    /// Replace the origin data with the staged snapshot (exactly `parts`
    /// parts of `revision`), in one batch: a node serves either the old
    /// state or the new one, never a mix.
    SnapshotCommit {
        revision: u64,
        parts: u32,
        heard_at: UnixSeconds,
    },
    /// Node `node`'s meter starts at `at`: a new incarnation fences what
    /// its previous life still had in flight (see [`usage::meter_start`]).
    MeterStart { node: u64, at: UnixSeconds },
    /// The leader fences node `node`'s meter, if still in `incarnation` and
    /// silent for `silent_seconds` at `at` (see [`usage::fence_meter`]).
    FenceMeter {
        node: u64,
        incarnation: u64,
        at: UnixSeconds,
        silent_seconds: i64,
    },
    /// Node `node` (meter `incarnation`) draws up to `want` units of a
    /// hard-capped counter whose cap it read as `limit`, at `at` (see
    /// [`usage`]).
    DrawChunk {
        node: u64,
        #[serde(default)]
        incarnation: u64,
        counter: Counter,
        limit: u64,
        want: u64,
        #[serde(default)]
        at: UnixSeconds,
    },
    /// Node `node`'s chunk (meter `incarnation`) gives back `units` (the
    /// ones its holder stopped counting on); proposed by the node itself or
    /// by the leader for a fenced node.
    ReleaseChunk {
        node: u64,
        #[serde(default)]
        incarnation: u64,
        counter: Counter,
        units: u64,
        #[serde(default)]
        at: UnixSeconds,
    },
    /// The origin leased the region `granted_total` units of a counter in
    /// all (see [`usage::slice_granted`]).
    SliceGranted {
        counter: Counter,
        granted_total: u64,
    },
    /// Hand back the unused part of the region's slice (see
    /// [`usage::release_slice`]).
    ReleaseSlice { counter: Counter },
    /// Node `node` (meter `incarnation`) reports what it consumed, as of
    /// `at`, in its report number `batch` (strictly increasing per
    /// incarnation; a repeat is skipped).
    RecordUsage {
        node: u64,
        #[serde(default)]
        incarnation: u64,
        batch: u64,
        at: UnixSeconds,
        entries: Vec<UsageEntry>,
    },
    /// The origin leased the region `granted_total` seats of the
    /// entitlement in all.
    SeatSliceGranted {
        entitlement: EntitlementId,
        granted_total: u64,
    },
    /// Hand back the region's seats of the entitlement that no live lease
    /// uses at `at`.
    ReleaseSeatSlice {
        entitlement: EntitlementId,
        at: UnixSeconds,
    },
    /// Acquire, renew or release a floating seat, as of the proposer's
    /// clock `at` (see [`seats`]).
    Seat {
        action: SeatAction,
        entitlement: EntitlementId,
        subject: SubjectId,
        at: UnixSeconds,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RegionResponse {
    /// The origin revision applied after the command.
    Applied { revision: u64 },
    /// Nothing was written.
    Refused { reason: String },
    /// What a chunk draw granted.
    Drawn(Drawn),
    /// What a usage report counted.
    Recorded(Recorded),
    /// What a seat command did.
    Seat(SeatOutcome),
    /// Units of a slice handed back.
    Released { units: u64 },
    /// A meter's lease after `MeterStart` or `FenceMeter` (`None`: the
    /// fence was not due, nothing written).
    Meter(Option<MeterLease>),
    /// A draw, release or report made under a meter incarnation that is
    /// not the node's current one: nothing was written.
    Fenced { incarnation: u64 },
}

/// The key and stored value of one mutation (`None`: delete). The same
/// bytes the origin stores for the object. `None` for a mutation of the
/// region's own state, not an origin object (a seat release: see
/// [`seats::Releases`]).
pub fn mutation_write(m: &Mutation) -> Option<Write> {
    fn put<T: Serialize>(key: Vec<u8>, value: &T) -> Write {
        Write::Put {
            key,
            value: serde_json::to_vec(value).expect("model values serialise"),
        }
    }
    Some(match m {
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
        Mutation::RevokeLicense(r) => put(keys::revoked_license(&r.id), r),
        Mutation::RevokeCertificate(r) => put(keys::revoked_certificate(&r.serial), r),
        Mutation::PutCredential(c) => put(keys::credential(&c.id), c),
        Mutation::ReleaseSeat { .. } => return None,
    })
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

/// The writes that apply one mutation, with the region's index.
fn apply_mutation(m: &Mutation, writes: &mut Vec<Write>) {
    writes.extend(mutation_write(m));
    // Entitlements never change account, and are never deleted (revoked
    // instead): the index only grows.
    if let Mutation::PutEntitlement(e) = m {
        writes.push(Write::Put {
            key: account_entitlement(&e.account, &e.id),
            value: Vec::new(),
        });
    }
}

fn read_staging(state: &dyn ReadState) -> Result<Option<SnapshotStaging>, ReadError> {
    state
        .get(SNAPSHOT_STAGING)?
        .map(|bytes| {
            serde_json::from_slice(&bytes)
                .map_err(|e| ReadError(format!("snapshot staging does not decode: {e}")))
        })
        .transpose()
}

fn stage_part(
    state: &dyn ReadState,
    applied: u64,
    revision: u64,
    seq: u32,
    mutations: &[Mutation],
) -> Result<Result<Vec<Write>, String>, ReadError> {
    if revision <= applied {
        return Ok(Err(format!(
            "a snapshot at revision {revision} is not ahead of the applied revision {applied}"
        )));
    }
    let value = serde_json::to_vec(mutations).expect("model values serialise");
    if value.len() > tollgate_raft::logic::VALUE_BYTES_MAX {
        return Ok(Err(format!(
            "snapshot part of {} bytes; at most {}",
            value.len(),
            tollgate_raft::logic::VALUE_BYTES_MAX
        )));
    }
    let mut writes = Vec::new();
    if seq == 0 {
        writes.push(Write::DeletePrefix {
            prefix: SNAPSHOT_PREFIX.to_vec(),
        });
    } else {
        let expected = Some(SnapshotStaging {
            revision,
            parts: seq,
        });
        let staged = read_staging(state)?;
        if staged != expected {
            return Ok(Err(format!(
                "snapshot part {seq} of revision {revision} does not follow what is staged ({staged:?})"
            )));
        }
    }
    writes.push(Write::Put {
        key: snapshot_part(seq),
        value,
    });
    writes.push(Write::Put {
        key: SNAPSHOT_STAGING.to_vec(),
        value: serde_json::to_vec(&SnapshotStaging {
            revision,
            parts: seq + 1,
        })
        .expect("integers serialise"),
    });
    Ok(Ok(writes))
}

fn commit_snapshot(
    state: &dyn ReadState,
    applied: u64,
    revision: u64,
    parts: u32,
) -> Result<Result<Vec<Write>, String>, ReadError> {
    if revision <= applied {
        return Ok(Err(format!(
            "a snapshot at revision {revision} is not ahead of the applied revision {applied}"
        )));
    }
    let staged = read_staging(state)?;
    if staged != Some(SnapshotStaging { revision, parts }) {
        return Ok(Err(format!(
            "commit of {parts} parts at revision {revision} does not match what is staged ({staged:?})"
        )));
    }
    let mut writes: Vec<Write> = ORIGIN_DATA_PREFIXES
        .iter()
        .chain([CHANGE_PREFIX.as_bytes(), SNAPSHOT_PREFIX].iter())
        .map(|prefix| Write::DeletePrefix {
            prefix: prefix.to_vec(),
        })
        .collect();
    for seq in 0..parts {
        let key = snapshot_part(seq);
        let bytes = state
            .get(&key)?
            .ok_or_else(|| ReadError(format!("staged snapshot part {seq} is missing")))?;
        let mutations: Vec<Mutation> = serde_json::from_slice(&bytes)
            .map_err(|e| ReadError(format!("staged snapshot part {seq} does not decode: {e}")))?;
        for m in &mutations {
            apply_mutation(m, &mut writes);
        }
    }
    writes.push(put_u64(keys::HEAD_REVISION, revision));
    writes.push(put_u64(CHANGE_FLOOR, revision));
    Ok(Ok(writes))
}

/// A region's state machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct RegionLogic;

impl StateMachineLogic for RegionLogic {
    type Command = RegionCommand;
    type Response = RegionResponse;
    const FIELD_NAMES: &'static [&'static str] = tollgate_model::stored::STORED_FIELD_NAMES;

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
        let fenced = |incarnation: u64| Applied {
            writes: Vec::new(),
            response: RegionResponse::Fenced { incarnation },
        };
        match command {
            RegionCommand::TrustOriginKeys { keys_json } => {
                if keys_json.is_empty() || keys_json.len() > ORIGIN_KEYS_BYTES_MAX {
                    return Ok(refuse(format!(
                        "a key set of {} bytes; 1..={ORIGIN_KEYS_BYTES_MAX} expected",
                        keys_json.len()
                    )));
                }
                Ok(Applied {
                    writes: vec![Write::Put {
                        key: ORIGIN_KEYS.to_vec(),
                        value: keys_json.clone().into_bytes(),
                    }],
                    response: RegionResponse::Applied { revision: applied },
                })
            }
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
                let mut releases = seats::Releases::default();
                for record in records.iter().filter(|r| r.revision > applied) {
                    if record.revision != next + 1 {
                        return Ok(refuse(format!(
                            "revision {} does not follow {next}: a gap",
                            record.revision
                        )));
                    }
                    for m in &record.mutations {
                        match m {
                            Mutation::ReleaseSeat {
                                entitlement,
                                subject,
                                ..
                            } => releases.release(state, entitlement, subject)?,
                            m => apply_mutation(m, &mut writes),
                        }
                    }
                    writes.push(Write::Put {
                        key: change(record.revision),
                        value: serde_json::to_vec(record).expect("model values serialise"),
                    });
                    next = record.revision;
                }
                writes.extend(releases.writes());
                if next > applied {
                    writes.push(put_u64(keys::HEAD_REVISION, next));
                    // Keep the newest CHANGES_RETAINED records.
                    let floor = read_u64(state, CHANGE_FLOOR)?;
                    let new_floor = next.saturating_sub(CHANGES_RETAINED).max(floor);
                    for revision in floor + 1..=new_floor {
                        writes.push(Write::Delete {
                            key: change(revision),
                        });
                    }
                    if new_floor > floor {
                        writes.push(put_u64(CHANGE_FLOOR, new_floor));
                    }
                }
                writes.extend(contact_writes(state, next, *heard_at)?);
                Ok(Applied {
                    writes,
                    response: RegionResponse::Applied { revision: next },
                })
            }
            RegionCommand::SnapshotPart {
                revision,
                seq,
                mutations,
            } => Ok(
                match stage_part(state, applied, *revision, *seq, mutations)? {
                    Ok(writes) => Applied {
                        writes,
                        response: RegionResponse::Applied { revision: applied },
                    },
                    Err(reason) => refuse(reason),
                },
            ),
            RegionCommand::SnapshotCommit {
                revision,
                parts,
                heard_at,
            } => Ok(match commit_snapshot(state, applied, *revision, *parts)? {
                Ok(mut writes) => {
                    writes.extend(contact_writes(state, *revision, *heard_at)?);
                    Applied {
                        writes,
                        response: RegionResponse::Applied {
                            revision: *revision,
                        },
                    }
                }
                Err(reason) => refuse(reason),
            }),
            RegionCommand::MeterStart { node, at } => {
                let (writes, lease) = usage::meter_start(state, *node, *at)?;
                Ok(Applied {
                    writes,
                    response: RegionResponse::Meter(Some(lease)),
                })
            }
            RegionCommand::FenceMeter {
                node,
                incarnation,
                at,
                silent_seconds,
            } => {
                let (writes, lease) =
                    usage::fence_meter(state, *node, *incarnation, *at, *silent_seconds)?;
                Ok(Applied {
                    writes,
                    response: RegionResponse::Meter(lease),
                })
            }
            RegionCommand::DrawChunk {
                node,
                incarnation,
                counter,
                limit,
                want,
                at,
            } => {
                if let Some(current) = usage::fenced(state, *node, *incarnation)? {
                    return Ok(fenced(current));
                }
                let (writes, drawn) = usage::draw_chunk(state, *node, counter, *limit, *want, *at)?;
                Ok(Applied {
                    writes,
                    response: RegionResponse::Drawn(drawn),
                })
            }
            RegionCommand::ReleaseChunk {
                node,
                incarnation,
                counter,
                units,
                at,
            } => {
                if let Some(current) = usage::fenced(state, *node, *incarnation)? {
                    return Ok(fenced(current));
                }
                Ok(Applied {
                    writes: usage::release_chunk(state, *node, counter, *units, *at)?,
                    response: RegionResponse::Applied { revision: applied },
                })
            }
            RegionCommand::SliceGranted {
                counter,
                granted_total,
            } => Ok(Applied {
                writes: usage::slice_granted(state, counter, *granted_total)?,
                response: RegionResponse::Applied { revision: applied },
            }),
            RegionCommand::ReleaseSlice { counter } => {
                let (writes, released) = usage::release_slice(state, counter)?;
                Ok(Applied {
                    writes,
                    response: RegionResponse::Released { units: released },
                })
            }
            RegionCommand::RecordUsage {
                node,
                incarnation,
                batch,
                at,
                entries,
            } => {
                if let Some(current) = usage::fenced(state, *node, *incarnation)? {
                    return Ok(fenced(current));
                }
                if entries.len() > usage::USAGE_ENTRIES_PER_COMMAND_MAX {
                    return Ok(refuse(format!(
                        "{} usage entries in one command; at most {}",
                        entries.len(),
                        usage::USAGE_ENTRIES_PER_COMMAND_MAX
                    )));
                }
                if let Some(bad) = entries.iter().find(|e| {
                    e.refused
                        .is_some_and(|r| r.is_allowed() || e.idempotency_key.is_none())
                }) {
                    return Ok(refuse(format!(
                        "a usage refusal must carry an idempotency key and a denying reason: {bad:?}"
                    )));
                }
                let (writes, recorded) = usage::record_usage(state, *node, *batch, *at, entries)?;
                Ok(Applied {
                    writes,
                    response: RegionResponse::Recorded(recorded),
                })
            }
            RegionCommand::SeatSliceGranted {
                entitlement,
                granted_total,
            } => Ok(Applied {
                writes: seats::seat_slice_granted(state, entitlement, *granted_total)?,
                response: RegionResponse::Applied { revision: applied },
            }),
            RegionCommand::ReleaseSeatSlice { entitlement, at } => {
                let (writes, units) = seats::release_seat_slice(state, entitlement, *at)?;
                Ok(Applied {
                    writes,
                    response: RegionResponse::Released { units },
                })
            }
            RegionCommand::Seat {
                action,
                entitlement,
                subject,
                at,
            } => {
                let (writes, outcome) =
                    seats::seat_command(state, *action, entitlement, subject, *at)?;
                Ok(Applied {
                    writes,
                    response: RegionResponse::Seat(outcome),
                })
            }
        }
    }
}
