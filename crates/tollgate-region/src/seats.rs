//! Floating seat leases, allocated through the region's log: two nodes of a
//! region can never hand out the same seat, and a leader change loses no
//! lease. Every command carries the proposer's clock (`at`), so expiry is
//! decided the same way on every node.

use serde::{Deserialize, Serialize};
use tollgate_engine::SeatLease;
use tollgate_model::{Entitlement, EntitlementId, SeatMode, SubjectId, UnixSeconds};
use tollgate_origin::keys;
use tollgate_raft::logic::ReadError;
use tollgate_raft::{ReadState, Write};

/// Most floating seats one region tracks for one entitlement (the leases
/// are stored as one value).
pub const FLOATING_SEATS_MAX: usize = 2_000;

/// `region/seat-slice/<entitlement>`: the region's share of the
/// entitlement's seats, leased from the origin ([`SeatSlice`]).
pub fn seat_slice_key(entitlement: &EntitlementId) -> Vec<u8> {
    format!("{SEAT_SLICE_PREFIX}{entitlement}").into_bytes()
}

/// The prefix of every [`seat_slice_key`].
pub const SEAT_SLICE_PREFIX: &str = "region/seat-slice/";

/// `region/seat-wanted/<entitlement>`: the leader's quota agent leases a
/// seat for the entitlement from the origin.
pub fn seat_wanted_key(entitlement: &EntitlementId) -> Vec<u8> {
    format!("{SEAT_WANTED_PREFIX}{entitlement}").into_bytes()
}

/// The prefix of every [`seat_wanted_key`].
pub const SEAT_WANTED_PREFIX: &str = "region/seat-wanted/";

/// Seats a region node found short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatWanted {
    pub entitlement: EntitlementId,
    pub want: u32,
}

/// The region's share of an entitlement's seats (cumulative totals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatSlice {
    pub granted: u64,
    pub released: u64,
}

impl SeatSlice {
    pub fn held(&self) -> u64 {
        self.granted.saturating_sub(self.released)
    }
}

/// The region's share of `entitlement`'s seats.
pub fn seat_slice(
    state: &dyn ReadState,
    entitlement: &EntitlementId,
) -> Result<SeatSlice, ReadError> {
    match state.get(&seat_slice_key(entitlement))? {
        None => Ok(SeatSlice::default()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ReadError(format!("seat slice of {entitlement} does not decode: {e}"))),
    }
}

fn put_slice(entitlement: &EntitlementId, slice: &SeatSlice) -> Write {
    Write::Put {
        key: seat_slice_key(entitlement),
        value: serde_json::to_vec(slice).expect("integers serialise"),
    }
}

/// The origin leased the region `granted_total` seats of `entitlement` in
/// all (cumulative: a repeated grant changes nothing).
pub fn seat_slice_granted(
    state: &dyn ReadState,
    entitlement: &EntitlementId,
    granted_total: u64,
) -> Result<Vec<Write>, ReadError> {
    let mut slice = seat_slice(state, entitlement)?;
    let mut writes = vec![Write::Delete {
        key: seat_wanted_key(entitlement),
    }];
    if granted_total > slice.granted {
        slice.granted = granted_total;
        writes.push(put_slice(entitlement, &slice));
    }
    Ok(writes)
}

/// Hands back the region's seats of `entitlement` that no live lease uses
/// at `at`; the number handed back.
pub fn release_seat_slice(
    state: &dyn ReadState,
    entitlement: &EntitlementId,
    at: UnixSeconds,
) -> Result<(Vec<Write>, u64), ReadError> {
    let mut slice = seat_slice(state, entitlement)?;
    let live = leases(state, entitlement)?
        .iter()
        .filter(|l| l.expires_at > at)
        .count() as u64;
    let unused = slice.held().saturating_sub(live);
    if unused == 0 {
        return Ok((Vec::new(), 0));
    }
    slice.released += unused;
    Ok((vec![put_slice(entitlement, &slice)], unused))
}

/// `region/leases/<entitlement>`: the leases of one entitlement's floating
/// seats (a JSON list of [`SeatLease`]).
pub fn leases_key(entitlement: &EntitlementId) -> Vec<u8> {
    format!("region/leases/{entitlement}").into_bytes()
}

/// The leases of `entitlement`, live or expired.
pub fn leases(
    state: &dyn ReadState,
    entitlement: &EntitlementId,
) -> Result<Vec<SeatLease>, ReadError> {
    match state.get(&leases_key(entitlement))? {
        None => Ok(Vec::new()),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| ReadError(format!("leases of {entitlement} do not decode: {e}"))),
    }
}

/// What a seat command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeatOutcome {
    /// The subject holds a seat until `expires_at`.
    Held {
        expires_at: UnixSeconds,
        used: u32,
        total: u32,
    },
    /// Every seat is held by someone else.
    Full { total: u32, holders: Vec<SubjectId> },
    /// The subject holds no live lease (renew after expiry: acquire again).
    NotHeld,
    /// The lease is gone.
    Released,
    /// The entitlement is unknown here or has no floating seats.
    NoFloatingSeats,
}

/// What a seat command asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeatAction {
    Acquire,
    Renew,
    Release,
}

/// The entitlement's floating seat count and lease lifetime.
fn floating_seats(
    state: &dyn ReadState,
    entitlement: &EntitlementId,
) -> Result<Option<(u32, u32)>, ReadError> {
    let Some(bytes) = state.get(&keys::entitlement(entitlement))? else {
        return Ok(None);
    };
    let ent: Entitlement = serde_json::from_slice(&bytes)
        .map_err(|e| ReadError(format!("entitlement {entitlement} does not decode: {e}")))?;
    Ok(ent.seats.and_then(|s| match s.mode {
        SeatMode::Floating { lease_ttl_seconds } => {
            Some((s.count.min(FLOATING_SEATS_MAX as u32), lease_ttl_seconds))
        }
        SeatMode::Named { .. } => None,
    }))
}

/// Applies one seat command for `subject` at `at`; a lease (acquired or
/// renewed) lasts the entitlement's `lease_ttl_seconds` from `at`.
pub fn seat_command(
    state: &dyn ReadState,
    action: SeatAction,
    entitlement: &EntitlementId,
    subject: &SubjectId,
    at: UnixSeconds,
) -> Result<(Vec<Write>, SeatOutcome), ReadError> {
    let Some((total, ttl_seconds)) = floating_seats(state, entitlement)? else {
        return Ok((Vec::new(), SeatOutcome::NoFloatingSeats));
    };
    // The region hands out only the seats the origin leased it.
    let capacity = seat_slice(state, entitlement)?.held().min(u64::from(total)) as u32;
    let mut current = leases(state, entitlement)?;
    // Expired leases free their seats.
    current.retain(|l| l.expires_at > at);
    let expires_at = UnixSeconds(at.0.saturating_add(i64::from(ttl_seconds)));
    let held = current.iter().position(|l| &l.holder == subject);
    let outcome = match (action, held) {
        // A release asked for before this lease was taken is not about it:
        // a request its caller gave up on, retried elsewhere and followed
        // with a new acquire, can still reach the log after that acquire
        // (a write forwarded over a link that held it). Applied, it would
        // free a seat its holder is using, and the region would hand the
        // seat back to the origin for another region to lease (the
        // simulation's seed 316). The lease runs on; the caller, if it
        // still waits, holds nothing it asked about.
        (SeatAction::Release, Some(i)) if released_before(&current[i], at) => {
            return Ok((Vec::new(), SeatOutcome::Released));
        }
        (SeatAction::Release, Some(i)) => {
            current.remove(i);
            SeatOutcome::Released
        }
        (SeatAction::Release, None) => SeatOutcome::Released,
        (SeatAction::Renew, None) => SeatOutcome::NotHeld,
        (SeatAction::Acquire | SeatAction::Renew, Some(i)) => {
            current[i].expires_at = current[i].expires_at.max(expires_at);
            SeatOutcome::Held {
                expires_at: current[i].expires_at,
                used: current.len() as u32,
                total,
            }
        }
        (SeatAction::Acquire, None) if (current.len() as u32) < capacity => {
            current.push(SeatLease {
                holder: subject.clone(),
                expires_at,
                acquired_at: Some(at),
            });
            SeatOutcome::Held {
                expires_at,
                used: current.len() as u32,
                total,
            }
        }
        (SeatAction::Acquire, None) => SeatOutcome::Full {
            total,
            holders: current
                .iter()
                .take(tollgate_engine::SEAT_HOLDERS_LISTED_MAX)
                .map(|l| l.holder.clone())
                .collect(),
        },
    };
    let mut writes = match outcome {
        SeatOutcome::NotHeld | SeatOutcome::NoFloatingSeats => Vec::new(),
        _ => vec![Write::Put {
            key: leases_key(entitlement),
            value: serde_json::to_vec(&current).expect("leases serialise"),
        }],
    };
    if matches!(outcome, SeatOutcome::Full { .. }) && capacity < total {
        // Short of the entitlement's seats: lease more from the origin (a
        // quarter of what is missing at a time, at least one).
        let wanted = SeatWanted {
            entitlement: entitlement.clone(),
            want: ((total - capacity) / 4).max(1),
        };
        writes.push(Write::Put {
            key: seat_wanted_key(entitlement),
            value: serde_json::to_vec(&wanted).expect("ids serialise"),
        });
    }
    Ok((writes, outcome))
}

/// Whether a release stamped `at` (its proposer's clock) was asked for
/// before `lease` was taken (its acquirer's clock, in whole seconds: a
/// release in the same second as the acquire applies). A lease recorded
/// before acquisitions were stamped has nothing to compare and is released.
fn released_before(lease: &SeatLease, at: UnixSeconds) -> bool {
    lease.acquired_at.is_some_and(|acquired| at < acquired)
}

/// Seat releases the origin published (`Mutation::ReleaseSeat`), gathered
/// over one command's change records: each entitlement's leases are read
/// once and written once, so two releases of one entitlement in a command
/// both hold.
#[derive(Debug, Default)]
pub struct Releases {
    /// Per entitlement: its leases after the releases, and whether any
    /// lease was dropped.
    leases: std::collections::BTreeMap<EntitlementId, (Vec<SeatLease>, bool)>,
}

impl Releases {
    /// Drops `subject`'s lease of `entitlement`; none held (an unknown
    /// subject, an entitlement without seats here): nothing changes.
    pub fn release(
        &mut self,
        state: &dyn ReadState,
        entitlement: &EntitlementId,
        subject: &SubjectId,
    ) -> Result<(), ReadError> {
        let entry = match self.leases.entry(entitlement.clone()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert((leases(state, entitlement)?, false))
            }
        };
        let before = entry.0.len();
        entry.0.retain(|l| &l.holder != subject);
        entry.1 |= entry.0.len() != before;
        Ok(())
    }

    /// The writes of every entitlement whose leases changed.
    pub fn writes(self) -> Vec<Write> {
        self.leases
            .into_iter()
            .filter(|(_, (_, changed))| *changed)
            .map(|(entitlement, (current, _))| Write::Put {
                key: leases_key(&entitlement),
                value: serde_json::to_vec(&current).expect("leases serialise"),
            })
            .collect()
    }
}
