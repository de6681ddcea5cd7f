//! Origin public keys, parsed once.

use crate::error::LicenseError;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use tollgate_model::UnixSeconds;
use tollgate_signing::{KeyId, KeyStatus, PublicKey, Signed};

/// An origin public key, decompressed (which costs about as much as a tenth
/// of a signature check, so it is done once, not per token).
#[derive(Debug, Clone)]
pub(crate) struct OriginKey {
    pub kid: KeyId,
    pub status: KeyStatus,
    pub key: VerifyingKey,
}

impl OriginKey {
    /// Parses one key of a [`tollgate_signing::PublicKeySet`]: Ed25519,
    /// 32 bytes of base64url, a curve point, not of small order, and the key
    /// id it claims.
    pub fn parse(public: &PublicKey) -> Result<OriginKey, LicenseError> {
        let invalid = |reason: &str| LicenseError::KeySetInvalid {
            kid: public.kid.to_string(),
            reason: reason.to_owned(),
        };
        if public.algorithm != "Ed25519" {
            return Err(invalid("algorithm is not Ed25519"));
        }
        let key = parse_public_key(&public.public_key).map_err(invalid)?;
        if key.is_weak() {
            return Err(LicenseError::WeakPublicKey {
                kid: public.kid.to_string(),
            });
        }
        if KeyId::of(&key) != public.kid {
            return Err(invalid("the key id does not match the public key"));
        }
        Ok(OriginKey {
            kid: public.kid.clone(),
            status: public.status,
            key,
        })
    }

    /// Whether the key may still vouch for something at `now`: not retired,
    /// and if overlapping, not past its overlap (the same rule as
    /// `PublicKeySet::verify`).
    pub fn check_usable(&self, now: UnixSeconds) -> Result<(), LicenseError> {
        match self.status {
            KeyStatus::Active => Ok(()),
            KeyStatus::Overlap { until } if now > until => Err(LicenseError::KeyOverlapExpired {
                kid: self.kid.clone(),
                until,
            }),
            KeyStatus::Overlap { .. } => Ok(()),
            KeyStatus::Retired => Err(LicenseError::RetiredKey(self.kid.clone())),
        }
    }

    /// Verifies a [`Signed`] envelope made by `KeyRing::sign(context, ..)`:
    /// the signature covers the context, a NUL, then the payload (the
    /// envelope format of `tollgate-signing`).
    pub fn verify_signed(&self, context: &str, signed: &Signed) -> bool {
        let Ok(signature) = <[u8; 64]>::try_from(signed.signature.as_slice()) else {
            return false;
        };
        let mut message = Vec::with_capacity(context.len() + 1 + signed.payload.len());
        message.extend_from_slice(context.as_bytes());
        message.push(0);
        message.extend_from_slice(&signed.payload);
        self.key
            .verify_strict(&message, &Signature::from_bytes(&signature))
            .is_ok()
    }
}

/// 32 bytes of unpadded base64url that decompress to a curve point. Says why
/// not, for the caller's error.
pub(crate) fn parse_public_key(text: &str) -> Result<VerifyingKey, &'static str> {
    let bytes: [u8; 32] = B64
        .decode(text.as_bytes())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or("public key is not 32 bytes of unpadded base64url")?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "public key is not an Ed25519 curve point")
}
