use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::io::Write;
use std::path::Path;
use thiserror::Error;
use tollgate_model::UnixSeconds;

/// Context of the signature on a changefeed record.
pub const CONTEXT_CHANGE_RECORD: &str = "tollgate.change-record.v1";
/// Context of the signature on a full snapshot.
pub const CONTEXT_SNAPSHOT: &str = "tollgate.snapshot.v1";
/// Context of the signature on an outgoing webhook delivery.
pub const CONTEXT_WEBHOOK: &str = "tollgate.webhook.v1";
/// Context of the signature on a region certificate (a region's licence
/// signing key, certified by the origin).
pub const CONTEXT_REGION_CERTIFICATE: &str = "tollgate.region-certificate.v1";

/// Context of the signatures on the origin's public key set: each live key
/// endorses the set, so a verifier that trusts any one of them accepts a
/// rotated set without being reconfigured.
pub const CONTEXT_KEY_SET: &str = "tollgate.key-set.v1";

/// Most keys a ring keeps (active, overlapping and retired).
pub const KEYS_MAX: usize = 64;
/// Largest key ring file read, in bytes.
const RING_FILE_LEN_MAX: u64 = 1024 * 1024;

/// A key id: `ed25519-` and the first 8 bytes of the public key in hex.
/// Derived from the key, so it cannot disagree with it.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId(String);

impl KeyId {
    /// The key id of `key`.
    pub fn of(key: &VerifyingKey) -> KeyId {
        let hex: String = key.as_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        KeyId(format!("ed25519-{hex}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyId {
    type Error = SigningError;
    fn try_from(s: String) -> Result<Self, SigningError> {
        let ok = s.len() == 24
            && s.starts_with("ed25519-")
            && s[8..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if ok {
            Ok(KeyId(s))
        } else {
            Err(SigningError::BadKeyId(s.chars().take(64).collect()))
        }
    }
}

impl utoipa::PartialSchema for KeyId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .description(Some(
                "Key id: ed25519- and the first 8 bytes of the public key in hex.",
            ))
            .pattern(Some("^ed25519-[0-9a-f]{16}$"))
            .into()
    }
}

impl utoipa::ToSchema for KeyId {}

impl From<KeyId> for String {
    fn from(k: KeyId) -> String {
        k.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

/// Where a key is in its life.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Signs, and verifies.
    Active,
    /// Replaced by a newer key; still verifies until `until`.
    Overlap { until: UnixSeconds },
    /// Verifies nothing any more; listed so verifiers know it is gone on
    /// purpose.
    Retired,
}

#[derive(Debug, Error)]
pub enum SigningError {
    #[error("key id {0:?} is not of the form ed25519-<16 lower-case hex digits>")]
    BadKeyId(String),
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    #[error("key ring file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key ring file {path} is invalid: {reason}")]
    Invalid { path: String, reason: String },
    #[error("no key {0} in the ring")]
    UnknownKey(KeyId),
    #[error("key {0} is the active key; rotate before retiring it")]
    RetireActive(KeyId),
    #[error("the ring holds {KEYS_MAX} keys and none is retired; retire one before rotating")]
    Full,
    #[error("key {0} is already in the ring")]
    Duplicate(KeyId),
    #[error("seal key file {path}: {reason}")]
    SealKey { path: String, reason: String },
    #[error(
        "key {kid} is sealed with seal key {sealed_with}, and this node holds {ours}: every origin node must be given the same seal key file"
    )]
    WrongSealKey {
        kid: KeyId,
        sealed_with: String,
        ours: String,
    },
    #[error("key {0} does not unseal: its sealed secret was altered, or sealed for another key")]
    Unseal(KeyId),
    #[error("the replicated key ring is invalid: {0}")]
    InvalidRecords(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum VerifyError {
    #[error("signed with unknown key {0}")]
    UnknownKey(String),
    #[error("signed with retired key {0}")]
    RetiredKey(KeyId),
    #[error("signed with key {kid}, whose overlap window ended at {until}")]
    KeyExpired { kid: KeyId, until: UnixSeconds },
    #[error("the signature is not 64 bytes")]
    SignatureLength,
    #[error("the public key of {0} is malformed")]
    BadPublicKey(KeyId),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("no endorsement of the offered key set verifies under a trusted key")]
    NotEndorsed,
    #[error("the endorsed key set does not decode: {0}")]
    MalformedKeySet(String),
}

/// A payload with its key id and signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    pub kid: String,
    /// The exact bytes signed (besides the context). Verify, then decode.
    #[serde(with = "b64")]
    pub payload: Vec<u8>,
    #[serde(with = "b64")]
    pub signature: Vec<u8>,
}

pub(crate) mod b64 {
    use super::*;
    pub fn serialize<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(bytes))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        B64.decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// What is signed: the context, a NUL, then the payload.
fn message(context: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + 1 + payload.len());
    m.extend_from_slice(context.as_bytes());
    m.push(0);
    m.extend_from_slice(payload);
    m
}

#[derive(Clone)]
pub(crate) struct RingKey {
    pub(crate) kid: KeyId,
    pub(crate) created_at: UnixSeconds,
    pub(crate) status: KeyStatus,
    pub(crate) secret: SigningKey,
}

/// A key as a ring holds it: what rotation and retirement change, whether
/// its secret is at hand ([`KeyRing`]) or sealed ([`crate::SealedKey`]).
pub trait RingEntry {
    fn kid(&self) -> &KeyId;
    fn status(&self) -> KeyStatus;
    fn set_status(&mut self, status: KeyStatus);
}

impl RingEntry for RingKey {
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

/// Makes `new` the active key of `keys`: the active one verifies until
/// `now + overlap_seconds`. A full ring first drops its oldest retired key
/// (verifiers treat an unknown key as they treat a retired one).
pub fn rotate_entries<K: RingEntry>(
    keys: &mut Vec<K>,
    new: K,
    now: UnixSeconds,
    overlap_seconds: u64,
) -> Result<(), SigningError> {
    if keys.iter().any(|k| k.kid() == new.kid()) {
        return Err(SigningError::Duplicate(new.kid().clone()));
    }
    if keys.len() >= KEYS_MAX {
        let oldest_retired = keys
            .iter()
            .position(|k| k.status() == KeyStatus::Retired)
            .ok_or(SigningError::Full)?;
        keys.remove(oldest_retired);
    }
    for key in keys.iter_mut() {
        if key.status() == KeyStatus::Active {
            key.set_status(KeyStatus::Overlap {
                until: now.plus_seconds(overlap_seconds),
            });
        }
    }
    let mut new = new;
    new.set_status(KeyStatus::Active);
    keys.push(new);
    Ok(())
}

/// Retires `kid`, which must not be the active key, at once.
pub fn retire_entry<K: RingEntry>(keys: &mut [K], kid: &KeyId) -> Result<(), SigningError> {
    let key = keys
        .iter_mut()
        .find(|k| k.kid() == kid)
        .ok_or_else(|| SigningError::UnknownKey(kid.clone()))?;
    if key.status() == KeyStatus::Active {
        return Err(SigningError::RetireActive(kid.clone()));
    }
    key.set_status(KeyStatus::Retired);
    Ok(())
}

/// The origin's keys. Exactly one is active.
#[derive(Clone)]
pub struct KeyRing {
    pub(crate) keys: Vec<RingKey>,
}

impl fmt::Debug for KeyRing {
    // Never prints a secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, k.status)))
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    kid: KeyId,
    created_at: UnixSeconds,
    status: KeyStatus,
    #[serde(with = "b64")]
    secret: Vec<u8>,
}

pub(crate) fn new_secret() -> Result<SigningKey, SigningError> {
    let mut seed = [0u8; 32];
    tollgate_clock::random::fill(&mut seed).map_err(|e| SigningError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

impl KeyRing {
    /// A ring with one new active key.
    pub fn generate(now: UnixSeconds) -> Result<KeyRing, SigningError> {
        let secret = new_secret()?;
        Ok(KeyRing {
            keys: vec![RingKey {
                kid: KeyId::of(&secret.verifying_key()),
                created_at: now,
                status: KeyStatus::Active,
                secret,
            }],
        })
    }

    fn active(&self) -> &RingKey {
        let active: Vec<_> = self
            .keys
            .iter()
            .filter(|k| k.status == KeyStatus::Active)
            .collect();
        assert_eq!(active.len(), 1, "a key ring has exactly one active key");
        active[0]
    }

    /// The id of the key that signs.
    pub fn active_kid(&self) -> &KeyId {
        &self.active().kid
    }

    /// The key that signs, with its id, for signers that need the raw key
    /// (licence tokens are PASETO, not a [`Signed`] envelope).
    pub fn active_signing_key(&self) -> (&KeyId, &SigningKey) {
        let key = self.active();
        (&key.kid, &key.secret)
    }

    /// Signs `payload` under `context` with the active key.
    pub fn sign(&self, context: &str, payload: Vec<u8>) -> Signed {
        let key = self.active();
        let signature = key.secret.sign(&message(context, &payload));
        Signed {
            kid: key.kid.to_string(),
            payload,
            signature: signature.to_bytes().to_vec(),
        }
    }

    /// A new active key; the previous one verifies for `overlap_seconds`
    /// more, so verifiers that fetched the key set before the rotation keep
    /// working. Returns the new key's id.
    pub fn rotate(
        &mut self,
        now: UnixSeconds,
        overlap_seconds: u64,
    ) -> Result<KeyId, SigningError> {
        let secret = new_secret()?;
        let kid = KeyId::of(&secret.verifying_key());
        let new = RingKey {
            kid: kid.clone(),
            created_at: now,
            status: KeyStatus::Active,
            secret,
        };
        rotate_entries(&mut self.keys, new, now, overlap_seconds)?;
        Ok(kid)
    }

    /// Retires a key that is not active, at once.
    pub fn retire(&mut self, kid: &KeyId) -> Result<(), SigningError> {
        retire_entry(&mut self.keys, kid)
    }

    /// Retires every key whose overlap window has ended.
    pub fn retire_expired(&mut self, now: UnixSeconds) {
        for key in &mut self.keys {
            if let KeyStatus::Overlap { until } = key.status {
                if now > until {
                    key.status = KeyStatus::Retired;
                }
            }
        }
    }

    /// The public half, for verifiers.
    pub fn public_set(&self) -> PublicKeySet {
        PublicKeySet {
            keys: self
                .keys
                .iter()
                .map(|k| PublicKey {
                    kid: k.kid.clone(),
                    algorithm: "Ed25519".into(),
                    public_key: B64.encode(k.secret.verifying_key().as_bytes()),
                    created_at: k.created_at,
                    status: k.status,
                })
                .collect(),
        }
    }

    /// The public set, signed by every key that still verifies (the active
    /// one and those in their overlap window). A verifier that trusts any of
    /// them accepts the set with [`PublicKeySet::accept_endorsed`]: that is
    /// how a rotation reaches regions without reconfiguring them.
    pub fn endorsements(&self) -> Vec<Signed> {
        let payload = serde_json::to_vec(&self.public_set()).expect("a key set serialises");
        self.keys
            .iter()
            .filter(|k| k.status != KeyStatus::Retired)
            .map(|k| Signed {
                kid: k.kid.to_string(),
                payload: payload.clone(),
                signature: k
                    .secret
                    .sign(&message(CONTEXT_KEY_SET, &payload))
                    .to_bytes()
                    .to_vec(),
            })
            .collect()
    }

    /// Reads the ring at `path`, or creates one with a new key there.
    pub fn load_or_create(path: &Path, now: UnixSeconds) -> Result<KeyRing, SigningError> {
        match KeyRing::load(path)? {
            Some(ring) => Ok(ring),
            None => {
                let ring = KeyRing::generate(now)?;
                ring.save(path)?;
                Ok(ring)
            }
        }
    }

    /// Reads the ring at `path`; `None` if there is no file.
    pub fn load(path: &Path) -> Result<Option<KeyRing>, SigningError> {
        let shown = path.display().to_string();
        let io = |source| SigningError::Io {
            path: shown.clone(),
            source,
        };
        let invalid = |reason: String| SigningError::Invalid {
            path: shown.clone(),
            reason,
        };
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
            Ok(meta) if meta.len() > RING_FILE_LEN_MAX => {
                return Err(invalid(format!(
                    "{} bytes is more than the {RING_FILE_LEN_MAX} read",
                    meta.len()
                )))
            }
            Ok(_) => {}
        }
        let bytes = std::fs::read(path).map_err(io)?;
        let stored: Vec<StoredKey> =
            serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
        let mut keys = Vec::with_capacity(stored.len());
        for s in stored {
            let seed: [u8; 32] = s
                .secret
                .as_slice()
                .try_into()
                .map_err(|_| invalid(format!("the secret of {} is not 32 bytes", s.kid)))?;
            let secret = SigningKey::from_bytes(&seed);
            if KeyId::of(&secret.verifying_key()) != s.kid {
                return Err(invalid(format!("key {} does not match its secret", s.kid)));
            }
            keys.push(RingKey {
                kid: s.kid,
                created_at: s.created_at,
                status: s.status,
                secret,
            });
        }
        KeyRing::checked(keys).map(Some).map_err(invalid)
    }

    /// A ring of `keys`, which must hold 1..=[`KEYS_MAX`] keys, exactly one
    /// of them active.
    pub(crate) fn checked(keys: Vec<RingKey>) -> Result<KeyRing, String> {
        if keys.is_empty() || keys.len() > KEYS_MAX {
            return Err(format!(
                "holds {} keys; 1..={KEYS_MAX} expected",
                keys.len()
            ));
        }
        let active = keys
            .iter()
            .filter(|k| k.status == KeyStatus::Active)
            .count();
        if active != 1 {
            return Err(format!("holds {active} active keys; exactly 1 expected"));
        }
        Ok(KeyRing { keys })
    }

    /// Writes the ring to `path` atomically (temporary file, fsync, rename,
    /// fsync of the directory), readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<(), SigningError> {
        let io = |source| SigningError::Io {
            path: path.display().to_string(),
            source,
        };
        let stored: Vec<StoredKey> = self
            .keys
            .iter()
            .map(|k| StoredKey {
                kid: k.kid.clone(),
                created_at: k.created_at,
                status: k.status,
                secret: k.secret.to_bytes().to_vec(),
            })
            .collect();
        let bytes = serde_json::to_vec_pretty(&stored).expect("key ring serialises");
        let tmp = path.with_extension("tmp");
        {
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)?;
        if let Some(dir) = path.parent() {
            if let Ok(dir) = std::fs::File::open(dir) {
                dir.sync_all().map_err(io)?;
            }
        }
        Ok(())
    }
}

/// One public key, as verifiers see it.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKey {
    pub kid: KeyId,
    /// Always `Ed25519`.
    pub algorithm: String,
    /// The 32-byte public key, base64url without padding.
    pub public_key: String,
    pub created_at: UnixSeconds,
    pub status: KeyStatus,
}

/// The origin's public keys: what a region or an SDK needs to verify.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeySet {
    pub keys: Vec<PublicKey>,
}

impl PublicKeySet {
    /// The key set one of `endorsements` vouches for, if it was signed by a
    /// key this set trusts at `now`. The set comes from the signed bytes,
    /// never from anything unsigned next to them.
    pub fn accept_endorsed(
        &self,
        endorsements: &[Signed],
        now: UnixSeconds,
    ) -> Result<PublicKeySet, VerifyError> {
        let endorsement = endorsements
            .iter()
            .find(|e| self.verify(CONTEXT_KEY_SET, e, now).is_ok())
            .ok_or(VerifyError::NotEndorsed)?;
        let set: PublicKeySet = serde_json::from_slice(&endorsement.payload)
            .map_err(|e| VerifyError::MalformedKeySet(e.to_string()))?;
        if set.keys.is_empty() || set.keys.len() > KEYS_MAX {
            return Err(VerifyError::MalformedKeySet(format!(
                "holds {} keys; 1..={KEYS_MAX} expected",
                set.keys.len()
            )));
        }
        Ok(set)
    }

    /// Verifies `signed` under `context` at `now`, with `verify_strict`.
    pub fn verify(
        &self,
        context: &str,
        signed: &Signed,
        now: UnixSeconds,
    ) -> Result<(), VerifyError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.kid.as_str() == signed.kid)
            .ok_or_else(|| VerifyError::UnknownKey(signed.kid.chars().take(64).collect()))?;
        match key.status {
            KeyStatus::Retired => return Err(VerifyError::RetiredKey(key.kid.clone())),
            KeyStatus::Overlap { until } if now > until => {
                return Err(VerifyError::KeyExpired {
                    kid: key.kid.clone(),
                    until,
                })
            }
            _ => {}
        }
        let public: [u8; 32] = B64
            .decode(key.public_key.as_bytes())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| VerifyError::BadPublicKey(key.kid.clone()))?;
        let public = VerifyingKey::from_bytes(&public)
            .map_err(|_| VerifyError::BadPublicKey(key.kid.clone()))?;
        let signature: [u8; 64] = signed
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| VerifyError::SignatureLength)?;
        public
            .verify_strict(
                &message(context, &signed.payload),
                &Signature::from_bytes(&signature),
            )
            .map_err(|_| VerifyError::BadSignature)
    }
}
