//! The origin's key ring as replicated state of the origin cluster.
//!
//! Every origin node holds the same ring because the ring lives in the
//! origin's Raft log and state, not in a file per node: a rotation on any
//! node reaches every node, and is in the audit log like any other change.
//! Private keys are never stored in the clear there: each is sealed
//! (ChaCha20-Poly1305) with a [`SealKey`] that the operator gives every
//! origin node, as a file (a Kubernetes Secret, read-only, suits it). The
//! log, its snapshots and backups then carry only sealed secrets.
//!
//! The associated data of each seal binds the secret to its key id and
//! public key, so a sealed secret moved to another record does not open.

use crate::keyring::{b64, new_secret, RingEntry, RingKey};
use crate::{KeyId, KeyRing, KeyStatus, SigningError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::SigningKey;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;
use std::path::Path;
use tollgate_model::UnixSeconds;

/// Length of a seal key, in bytes (written as 64 hex digits).
pub const SEAL_KEY_LEN: usize = 32;
/// Largest seal key file read, in bytes.
const SEAL_KEY_FILE_LEN_MAX: u64 = 1024;
/// Length of a sealed secret: nonce, the 32-byte seed, the tag.
const SEALED_SECRET_LEN: usize = NONCE_LEN + 32 + 16;
const SEAL_CONTEXT: &str = "tollgate.signing-key.v1";

/// The key that seals the origin's private signing keys at rest.
#[derive(Clone)]
pub struct SealKey {
    key: [u8; SEAL_KEY_LEN],
    fingerprint: String,
}

impl fmt::Debug for SealKey {
    // Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealKey({})", self.fingerprint)
    }
}

impl SealKey {
    pub fn from_bytes(key: [u8; SEAL_KEY_LEN]) -> SealKey {
        let mut material = b"tollgate.seal-key.v1\0".to_vec();
        material.extend_from_slice(&key);
        let digest = crate::digest::sha256_hex(&material);
        SealKey {
            key,
            fingerprint: format!("seal-{}", &digest[..16]),
        }
    }

    /// A new random seal key.
    pub fn generate() -> Result<SealKey, SigningError> {
        let mut key = [0u8; SEAL_KEY_LEN];
        tollgate_clock::random::fill(&mut key).map_err(|e| SigningError::Random(e.to_string()))?;
        Ok(SealKey::from_bytes(key))
    }

    /// Names the key without revealing it: `seal-` and 16 hex digits of a
    /// hash of it. Stored beside every sealed secret, so a node given
    /// another seal key says so instead of failing to decrypt.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key as its file holds it: 64 lower-case hex digits and a newline.
    pub fn to_file_text(&self) -> String {
        let hex: String = self.key.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}\n")
    }

    /// Reads the seal key at `path`: 64 hex digits (surrounding white space
    /// is ignored, so `openssl rand -hex 32 > seal.key` makes one).
    pub fn load(path: &Path) -> Result<SealKey, SigningError> {
        let bad = |reason: String| SigningError::SealKey {
            path: path.display().to_string(),
            reason,
        };
        let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
        if meta.len() > SEAL_KEY_FILE_LEN_MAX {
            return Err(bad(format!(
                "{} bytes is more than the {SEAL_KEY_FILE_LEN_MAX} read",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let hex = text.trim();
        if hex.len() != 2 * SEAL_KEY_LEN || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "expected {} hex digits (for example from `openssl rand -hex {SEAL_KEY_LEN}`), found {} characters",
                2 * SEAL_KEY_LEN,
                hex.len()
            )));
        }
        let mut key = [0u8; SEAL_KEY_LEN];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte =
                u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| bad(e.to_string()))?;
        }
        Ok(SealKey::from_bytes(key))
    }

    /// Reads the seal key at `path`, or makes a new one there (owner-only)
    /// when the file does not exist; says which.
    pub fn load_or_create(path: &Path) -> Result<(SealKey, bool), SigningError> {
        match std::fs::metadata(path) {
            Ok(_) => Ok((SealKey::load(path)?, false)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SealKey::generate()?;
                let io = |e: std::io::Error| SigningError::SealKey {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                };
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(path).map_err(io)?;
                file.write_all(key.to_file_text().as_bytes()).map_err(io)?;
                file.sync_all().map_err(io)?;
                Ok((key, true))
            }
            Err(e) => Err(SigningError::SealKey {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }

    fn aead(&self) -> LessSafeKey {
        LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &self.key).expect("a 32-byte ChaCha20 key"),
        )
    }
}

/// One key of the replicated ring: public, with its secret sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedKey {
    pub kid: KeyId,
    pub created_at: UnixSeconds,
    pub status: KeyStatus,
    /// The 32-byte public key, base64url without padding.
    pub public_key: String,
    /// The fingerprint of the seal key that sealed the secret.
    pub seal: String,
    /// Nonce, then the sealed 32-byte seed with its tag.
    #[serde(with = "b64")]
    pub sealed_secret: Vec<u8>,
}

impl RingEntry for SealedKey {
    fn kid(&self) -> &KeyId {
        &self.kid
    }
    fn status(&self) -> KeyStatus {
        self.status
    }
    fn set_status(&mut self, status: KeyStatus) {
        self.status = status;
    }
}

fn aad(kid: &KeyId, public_key: &str) -> Vec<u8> {
    format!("{SEAL_CONTEXT}\0{kid}\0{public_key}").into_bytes()
}

impl SealedKey {
    /// A new key, active, sealed with `seal`.
    pub fn generate(now: UnixSeconds, seal: &SealKey) -> Result<SealedKey, SigningError> {
        let secret = new_secret()?;
        SealedKey::seal(&secret, now, KeyStatus::Active, seal)
    }

    fn seal(
        secret: &SigningKey,
        created_at: UnixSeconds,
        status: KeyStatus,
        seal: &SealKey,
    ) -> Result<SealedKey, SigningError> {
        let kid = KeyId::of(&secret.verifying_key());
        let public_key = B64.encode(secret.verifying_key().as_bytes());
        let mut nonce = [0u8; NONCE_LEN];
        tollgate_clock::random::fill(&mut nonce)
            .map_err(|e| SigningError::Random(e.to_string()))?;
        let mut in_out = secret.to_bytes().to_vec();
        seal.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&kid, &public_key)),
                &mut in_out,
            )
            .map_err(|_| SigningError::Unseal(kid.clone()))?;
        let mut sealed_secret = nonce.to_vec();
        sealed_secret.extend_from_slice(&in_out);
        Ok(SealedKey {
            kid,
            created_at,
            status,
            public_key,
            seal: seal.fingerprint().to_string(),
            sealed_secret,
        })
    }

    /// Checks what can be checked without the seal key: the key id is the
    /// public key's, the public key is a valid Ed25519 point, and the
    /// sealed secret has the length of one. The origin's apply runs it on
    /// every key proposed.
    pub fn check(&self) -> Result<(), String> {
        let public: [u8; 32] = B64
            .decode(self.public_key.as_bytes())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                format!(
                    "the public key of {} is not 32 bytes of base64url",
                    self.kid
                )
            })?;
        let public = ed25519_dalek::VerifyingKey::from_bytes(&public)
            .map_err(|_| format!("the public key of {} is not an Ed25519 key", self.kid))?;
        if public.is_weak() {
            return Err(format!("the public key of {} is weak", self.kid));
        }
        if KeyId::of(&public) != self.kid {
            return Err(format!("key id {} is not its public key's", self.kid));
        }
        if self.sealed_secret.len() != SEALED_SECRET_LEN {
            return Err(format!(
                "the sealed secret of {} is {} bytes; {SEALED_SECRET_LEN} expected",
                self.kid,
                self.sealed_secret.len()
            ));
        }
        if !self.seal.starts_with("seal-") || self.seal.len() != 21 {
            return Err(format!(
                "the seal of {} is not a seal key fingerprint",
                self.kid
            ));
        }
        Ok(())
    }

    fn open(&self, seal: &SealKey) -> Result<SigningKey, SigningError> {
        if self.seal != seal.fingerprint() {
            return Err(SigningError::WrongSealKey {
                kid: self.kid.clone(),
                sealed_with: self.seal.clone(),
                ours: seal.fingerprint().to_string(),
            });
        }
        self.check().map_err(SigningError::InvalidRecords)?;
        let (nonce, sealed) = self.sealed_secret.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("checked length");
        let mut in_out = sealed.to_vec();
        let seed = seal
            .aead()
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&self.kid, &self.public_key)),
                &mut in_out,
            )
            .map_err(|_| SigningError::Unseal(self.kid.clone()))?;
        let seed: [u8; 32] = (&*seed)
            .try_into()
            .map_err(|_| SigningError::Unseal(self.kid.clone()))?;
        let secret = SigningKey::from_bytes(&seed);
        if KeyId::of(&secret.verifying_key()) != self.kid {
            return Err(SigningError::Unseal(self.kid.clone()));
        }
        Ok(secret)
    }
}

impl KeyRing {
    /// The ring's keys sealed with `seal`: how a ring kept in a file is
    /// imported into the replicated state.
    pub fn seal(&self, seal: &SealKey) -> Result<Vec<SealedKey>, SigningError> {
        self.keys
            .iter()
            .map(|k| SealedKey::seal(&k.secret, k.created_at, k.status, seal))
            .collect()
    }

    /// The ring `records` describe, their secrets opened with `seal`.
    pub fn unseal(records: &[SealedKey], seal: &SealKey) -> Result<KeyRing, SigningError> {
        let mut keys = Vec::with_capacity(records.len());
        for record in records {
            keys.push(RingKey {
                kid: record.kid.clone(),
                created_at: record.created_at,
                status: record.status,
                secret: record.open(seal)?,
            });
        }
        KeyRing::checked(keys).map_err(SigningError::InvalidRecords)
    }
}
