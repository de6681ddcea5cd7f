//! Region certificates: the origin vouching for a region's signing key.

use crate::claims::{region_issuer, valid_region_name};
use crate::error::LicenseError;
use crate::id::RandomId;
use crate::keys::{parse_public_key, OriginKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use tollgate_model::UnixSeconds;
use tollgate_signing::{KeyId, KeyRing, PublicKeySet, Signed, CONTEXT_REGION_CERTIFICATE};

/// What `may_sign` must contain for the key to sign license tokens.
pub const MAY_SIGN_LICENSE: &str = "license";
/// Most entries in `may_sign`.
pub const MAY_SIGN_ENTRIES_MAX: usize = 8;
/// Longest `may_sign` entry, in bytes.
const MAY_SIGN_ENTRY_BYTES_MAX: usize = 32;

/// The origin's statement that `public_key` is region `region`'s key, for
/// signing what `may_sign` lists, from `not_before` (inclusive) to
/// `not_after` (exclusive), tokens living at most `token_ttl_max_seconds`.
///
/// Travels as the JSON payload of a [`Signed`] envelope, signed by an origin
/// key under [`CONTEXT_REGION_CERTIFICATE`] ([`certify`]); verified with
/// [`verify_certificate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionCertificate {
    /// 128 random bits, for revocation.
    pub serial: RandomId,
    /// 1..=64 bytes of `[a-z0-9-]`.
    pub region: String,
    /// The region's Ed25519 public key, 32 bytes of unpadded base64url.
    pub public_key: String,
    /// The key id of `public_key`.
    pub kid: KeyId,
    pub not_before: UnixSeconds,
    pub not_after: UnixSeconds,
    /// What the key may sign, e.g. `["license"]`; at most
    /// [`MAY_SIGN_ENTRIES_MAX`] entries.
    pub may_sign: Vec<String>,
    /// The longest `exp - iat` of a token the key may sign.
    pub token_ttl_max_seconds: u64,
}

impl RegionCertificate {
    /// A certificate for `key` that may sign licenses; fills `public_key`
    /// and `kid` from the key so they cannot disagree.
    pub fn new(
        serial: RandomId,
        region: impl Into<String>,
        key: &VerifyingKey,
        not_before: UnixSeconds,
        not_after: UnixSeconds,
        token_ttl_max_seconds: u64,
    ) -> RegionCertificate {
        RegionCertificate {
            serial,
            region: region.into(),
            public_key: B64.encode(key.as_bytes()),
            kid: KeyId::of(key),
            not_before,
            not_after,
            may_sign: vec![MAY_SIGN_LICENSE.to_owned()],
            token_ttl_max_seconds,
        }
    }

    /// Whether `may_sign` includes [`MAY_SIGN_LICENSE`].
    pub fn may_sign_licenses(&self) -> bool {
        self.may_sign.iter().any(|s| s == MAY_SIGN_LICENSE)
    }

    /// The `iss` of the tokens this key signs: `tollgate-region:<region>`.
    pub fn issuer(&self) -> String {
        region_issuer(&self.region)
    }

    /// Checks the fields and returns the certified key: region name,
    /// `may_sign` bounds, a non-empty window, a public key that parses, is
    /// not weak and has the key id `kid`.
    pub fn check(&self) -> Result<VerifyingKey, LicenseError> {
        let invalid = |reason: &str| Err(LicenseError::CertificateInvalid(reason.to_owned()));
        if !valid_region_name(&self.region) {
            return invalid("region must be 1..=64 bytes of [a-z0-9-]");
        }
        if self.may_sign.len() > MAY_SIGN_ENTRIES_MAX
            || self
                .may_sign
                .iter()
                .any(|s| s.is_empty() || s.len() > MAY_SIGN_ENTRY_BYTES_MAX)
        {
            return invalid("may_sign must hold at most 8 entries of 1..=32 bytes");
        }
        if self.not_before >= self.not_after {
            return invalid("not_before must be before not_after");
        }
        let key = parse_public_key(&self.public_key)
            .map_err(|reason| LicenseError::CertificateInvalid(reason.to_owned()))?;
        if key.is_weak() {
            return Err(LicenseError::WeakPublicKey {
                kid: self.kid.to_string(),
            });
        }
        if KeyId::of(&key) != self.kid {
            return invalid("kid does not match public_key");
        }
        Ok(key)
    }

    /// Whether `now` is inside the window, give or take `leeway_seconds`.
    pub(crate) fn check_window(
        &self,
        now: UnixSeconds,
        leeway_seconds: u64,
    ) -> Result<(), LicenseError> {
        if now.plus_seconds(leeway_seconds) < self.not_before {
            return Err(LicenseError::CertificateNotYetValid {
                serial: self.serial.clone(),
                not_before: self.not_before,
            });
        }
        if now >= self.not_after.plus_seconds(leeway_seconds) {
            return Err(LicenseError::CertificateExpired {
                serial: self.serial.clone(),
                not_after: self.not_after,
            });
        }
        Ok(())
    }

    /// Whether a token issued at `iat` and expiring at `exp` fits: inside the
    /// window, and no longer than `token_ttl_max_seconds`.
    pub(crate) fn check_token_times(
        &self,
        iat: UnixSeconds,
        exp: UnixSeconds,
    ) -> Result<(), LicenseError> {
        if iat < self.not_before || exp > self.not_after {
            return Err(LicenseError::OutsideCertificateValidity {
                serial: self.serial.clone(),
            });
        }
        let ttl_seconds = exp.seconds_since(iat);
        if ttl_seconds > self.token_ttl_max_seconds {
            return Err(LicenseError::TtlOverCertificateMax {
                ttl_seconds,
                max_seconds: self.token_ttl_max_seconds,
            });
        }
        Ok(())
    }

    /// Parses a certificate payload (not its signature) and checks its
    /// fields.
    pub(crate) fn from_payload(
        payload: &[u8],
    ) -> Result<(RegionCertificate, VerifyingKey), LicenseError> {
        let cert: RegionCertificate = serde_json::from_slice(payload)
            .map_err(|e| LicenseError::CertificateInvalid(LicenseError::reason(e)))?;
        let key = cert.check()?;
        Ok((cert, key))
    }
}

/// Signs `cert` with the origin's active key. Refuses (rather than signs) a
/// certificate every verifier would refuse: bad region, empty window, weak
/// key, key id not matching the key.
pub fn certify(ring: &KeyRing, cert: &RegionCertificate) -> Result<Signed, LicenseError> {
    cert.check()?;
    let payload = serde_json::to_vec(cert)
        .map_err(|e| LicenseError::CertificateInvalid(LicenseError::reason(e)))?;
    Ok(ring.sign(CONTEXT_REGION_CERTIFICATE, payload))
}

/// Verifies a region certificate at `now` against the origin's public keys,
/// and returns it with the key it certifies.
///
/// Checks, in order: the signing origin key is known
/// ([`LicenseError::CertificateSignatureInvalid`] if not), not retired, not
/// past its overlap; the signature (`verify_strict`, context
/// [`CONTEXT_REGION_CERTIFICATE`]); the fields ([`RegionCertificate::check`]:
/// the certified key parses, is not weak, matches `kid`); the window, with
/// no leeway. It does not check `may_sign` (a caller verifying for licenses
/// checks [`RegionCertificate::may_sign_licenses`]) nor revocation.
pub fn verify_certificate(
    keys: &PublicKeySet,
    signed: &Signed,
    now: UnixSeconds,
) -> Result<(RegionCertificate, VerifyingKey), LicenseError> {
    let origin = keys
        .keys
        .iter()
        .find(|k| k.kid.as_str() == signed.kid)
        .ok_or(LicenseError::CertificateSignatureInvalid)?;
    let origin = OriginKey::parse(origin)?;
    origin.check_usable(now)?;
    let (cert, key) = check_signed_certificate(&origin, signed)?;
    cert.check_window(now, 0)?;
    Ok((cert, key))
}

/// The time-independent part of certificate verification: the origin's
/// signature and the fields. What the verifier caches.
pub(crate) fn check_signed_certificate(
    origin: &OriginKey,
    signed: &Signed,
) -> Result<(RegionCertificate, VerifyingKey), LicenseError> {
    if !origin.verify_signed(CONTEXT_REGION_CERTIFICATE, signed) {
        return Err(LicenseError::CertificateSignatureInvalid);
    }
    RegionCertificate::from_payload(&signed.payload)
}
