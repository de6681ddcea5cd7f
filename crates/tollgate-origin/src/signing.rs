//! The origin's signing key ring as the origin's replicated state holds it
//! (under [`crate::keys::SIGNING_RING`]): every key's public half and
//! status, and its secret sealed with the operator's seal key. Every origin
//! node unseals the same ring, so a rotation made through any node signs
//! on all of them.

use serde::{Deserialize, Serialize};
use tollgate_signing::SealedKey;

/// The longest an old key may keep verifying after a rotation: 90 days.
pub const ROTATION_OVERLAP_MAX_SECONDS: u64 = 90 * 24 * 3600;

/// The ring and the revision that last changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningRing {
    pub revision: u64,
    pub keys: Vec<SealedKey>,
}

impl SigningRing {
    /// The fingerprint of the seal key every key of the ring is sealed with.
    pub fn seal(&self) -> Option<&str> {
        self.keys.first().map(|k| k.seal.as_str())
    }
}
