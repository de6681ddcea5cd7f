//! The origin's signing keys and what they sign.
//!
//! - [`KeyRing`]: the origin's Ed25519 keys, each with a key id; exactly one
//!   is active and signs; after a rotation the previous key keeps verifying
//!   for an overlap window, then retires. Persisted with
//!   [`KeyRing::load_or_create`] (atomic replace, owner-only permissions).
//! - [`PublicKeySet`]: what verifiers need, served at a well-known path; it
//!   holds no secret.
//! - [`Signed`]: a payload with the key id and signature. Every signature
//!   covers a context string as well as the payload, so a signature made for
//!   one purpose (a change record) cannot be replayed as another (a token).
//!   Verification uses `verify_strict`, which rejects malleable signatures
//!   and weak keys.
//! - [`SealedKey`] and [`SealKey`]: the ring as the origin cluster
//!   replicates it, each private key sealed with a key the operator
//!   provides; [`SharedRing`]: the ring one node signs with, swapped whole
//!   when the replicated ring changes.

pub mod digest;
mod keyring;
mod sealed;
mod shared;

pub use sealed::{SealKey, SealedKey, SEAL_KEY_LEN};
pub use shared::{RingNotLoaded, SharedRing};

pub use keyring::{
    retire_entry, rotate_entries, KeyId, KeyRing, KeyStatus, PublicKey, PublicKeySet, RingEntry,
    Signed, SigningError, VerifyError, CONTEXT_CHANGE_RECORD, CONTEXT_KEY_SET,
    CONTEXT_REGION_CERTIFICATE, CONTEXT_SNAPSHOT, CONTEXT_WEBHOOK, KEYS_MAX,
};
