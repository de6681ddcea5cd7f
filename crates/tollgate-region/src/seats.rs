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
    let mut current = leases(state, entitlement)?;
    // Expired leases free their seats.
    current.retain(|l| l.expires_at > at);
    let expires_at = UnixSeconds(at.0.saturating_add(i64::from(ttl_seconds)));
    let held = current.iter().position(|l| &l.holder == subject);
    let outcome = match (action, held) {
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
        (SeatAction::Acquire, None) if (current.len() as u32) < total => {
            current.push(SeatLease {
                holder: subject.clone(),
                expires_at,
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
    let writes = match outcome {
        SeatOutcome::NotHeld | SeatOutcome::NoFloatingSeats => Vec::new(),
        _ => vec![Write::Put {
            key: leases_key(entitlement),
            value: serde_json::to_vec(&current).expect("leases serialise"),
        }],
    };
    Ok((writes, outcome))
}
