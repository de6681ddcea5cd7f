//! The origin's signing keys: the first ring, rotation and retirement,
//! each an audited change of the replicated ring. The secrets arrive
//! sealed by the proposing node; apply checks everything it can without
//! the seal key, and that every key is sealed with one and the same seal
//! key, so no node can add a key the others cannot open.

use super::{reject, touched, Changed, Step, Stop, Tx};
use crate::command::{OriginCommand, RejectCode};
use crate::keys;
use crate::signing::{SigningRing, ROTATION_OVERLAP_MAX_SECONDS};
use tollgate_signing::{
    retire_entry, rotate_entries, KeyId, KeyStatus, SealedKey, SigningError, KEYS_MAX,
};

fn signing_rejection<T>(e: SigningError) -> Step<T> {
    let code = match e {
        SigningError::UnknownKey(_) => RejectCode::NotFound,
        SigningError::RetireActive(_) | SigningError::Full | SigningError::Duplicate(_) => {
            RejectCode::Conflict
        }
        _ => RejectCode::Invalid,
    };
    reject(code, e.to_string())
}

fn check_key(key: &SealedKey) -> Step<()> {
    match key.check() {
        Ok(()) => Ok(()),
        Err(reason) => reject(RejectCode::Invalid, reason),
    }
}

pub(super) fn init_signing_keys(
    tx: &mut Tx<'_>,
    proposed: &[SealedKey],
    revision: u64,
) -> Step<Changed> {
    if let Some(ring) = tx.get::<SigningRing>(keys::SIGNING_RING)? {
        return Err(Stop::Unchanged {
            revision: ring.revision,
            entitlements: Vec::new(),
            note: "the origin already has signing keys".into(),
        });
    }
    if proposed.is_empty() || proposed.len() > KEYS_MAX {
        return reject(
            RejectCode::Invalid,
            format!("a key ring holds 1..={KEYS_MAX} keys"),
        );
    }
    for (i, key) in proposed.iter().enumerate() {
        check_key(key)?;
        if key.seal != proposed[0].seal {
            return reject(
                RejectCode::Invalid,
                format!(
                    "key {} is sealed with {}, key {} with {}: one seal key seals a ring",
                    key.kid, key.seal, proposed[0].kid, proposed[0].seal
                ),
            );
        }
        if proposed[..i].iter().any(|k| k.kid == key.kid) {
            return reject(
                RejectCode::Invalid,
                format!("key {} appears twice", key.kid),
            );
        }
    }
    let active = proposed
        .iter()
        .filter(|k| k.status == KeyStatus::Active)
        .count();
    if active != 1 {
        return reject(
            RejectCode::Invalid,
            format!("a key ring has exactly one active key; this one has {active}"),
        );
    }
    let active = proposed
        .iter()
        .find(|k| k.status == KeyStatus::Active)
        .map(|k| k.kid.clone())
        .expect("counted above");
    tx.put(
        keys::SIGNING_RING.to_vec(),
        &SigningRing {
            revision,
            keys: proposed.to_vec(),
        },
    );
    Ok(touched(format!("signing-key/{active}")))
}

fn require_ring(tx: &Tx<'_>) -> Step<SigningRing> {
    match tx.get::<SigningRing>(keys::SIGNING_RING)? {
        Some(ring) => Ok(ring),
        None => reject(RejectCode::NotFound, "the origin has no signing keys yet"),
    }
}

pub(super) fn rotate_signing_key(
    tx: &mut Tx<'_>,
    cmd: &OriginCommand,
    key: &SealedKey,
    overlap_seconds: u64,
    revision: u64,
) -> Step<Changed> {
    if overlap_seconds > ROTATION_OVERLAP_MAX_SECONDS {
        return reject(
            RejectCode::Invalid,
            format!("overlap_seconds must be at most {ROTATION_OVERLAP_MAX_SECONDS} (90 days)"),
        );
    }
    check_key(key)?;
    let mut ring = require_ring(tx)?;
    if let Some(seal) = ring.seal() {
        if key.seal != seal {
            return reject(
                RejectCode::Conflict,
                format!(
                    "the new key is sealed with seal key {}, the ring's keys with {seal}: every origin node must hold the same seal key file",
                    key.seal
                ),
            );
        }
    }
    if let Err(e) = rotate_entries(&mut ring.keys, key.clone(), cmd.at, overlap_seconds) {
        return signing_rejection(e);
    }
    ring.revision = revision;
    tx.put(keys::SIGNING_RING.to_vec(), &ring);
    Ok(touched(format!("signing-key/{}", key.kid)))
}

pub(super) fn retire_signing_key(tx: &mut Tx<'_>, kid: &KeyId, revision: u64) -> Step<Changed> {
    let mut ring = require_ring(tx)?;
    if ring
        .keys
        .iter()
        .any(|k| &k.kid == kid && k.status == KeyStatus::Retired)
    {
        return Err(Stop::Unchanged {
            revision: ring.revision,
            entitlements: Vec::new(),
            note: format!("key {kid} is already retired"),
        });
    }
    if let Err(e) = retire_entry(&mut ring.keys, kid) {
        return signing_rejection(e);
    }
    ring.revision = revision;
    tx.put(keys::SIGNING_RING.to_vec(), &ring);
    Ok(touched(format!("signing-key/{kid}")))
}
