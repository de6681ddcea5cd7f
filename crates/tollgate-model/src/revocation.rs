//! Revocations of signed artefacts the origin handed out: license tokens and
//! region certificates. They replicate like any other change, so a region cut
//! off from the origin, and an SDK's local replica, refuse what was revoked
//! before the cut.

use crate::{AccountId, ModelError, UnixSeconds};
use serde::{Deserialize, Serialize};

/// Longest region name, in bytes.
pub const REGION_NAME_BYTES_MAX: usize = 64;

/// A region's name, as quota leases, certificates and token issuers use it:
/// 1..=64 bytes of `[a-z0-9-]`.
pub fn valid_region_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= REGION_NAME_BYTES_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Longest license audience (the product a token is for), in bytes.
pub const AUDIENCE_BYTES_MAX: usize = 256;

/// Length of a token id or a certificate serial: 128 bits in lower-case hex.
pub const REVOCATION_ID_LEN: usize = 32;

/// Checks that `id` is 32 lower-case hex digits, the form of a token id and
/// a certificate serial.
pub fn validate_revocation_id(field: &'static str, id: &str) -> Result<(), ModelError> {
    let ok = id.len() == REVOCATION_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ModelError::Invalid {
            field,
            reason: format!("must be {REVOCATION_ID_LEN} lower-case hex digits"),
        })
    }
}

/// A license token revoked before it expired.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedLicense {
    /// The token's `jti`.
    pub id: String,
    pub account: AccountId,
    /// The token's own expiry: after it the entry can be forgotten, since the
    /// token is refused as expired anyway.
    pub expires_at: UnixSeconds,
    pub revoked_at: UnixSeconds,
}

/// A region certificate revoked before it expired: tokens its key signed
/// are refused from then on.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokedCertificate {
    pub serial: String,
    pub region: String,
    /// The certificate's own end of validity.
    pub not_after: UnixSeconds,
    pub revoked_at: UnixSeconds,
}

impl RevokedLicense {
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_revocation_id("id", &self.id)
    }
}

impl RevokedCertificate {
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_revocation_id("serial", &self.serial)?;
        if !valid_region_name(&self.region) {
            return Err(ModelError::Invalid {
                field: "region",
                reason: "must be 1..=64 bytes of [a-z0-9-]".into(),
            });
        }
        Ok(())
    }
}
