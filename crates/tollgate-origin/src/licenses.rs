//! What the origin remembers of the license tokens and region certificates
//! it signed. The signing itself happens at the origin node, outside the
//! state machine (it needs the private key and a clock); the log records
//! what was signed, so the audit trail, listings and revocations see it.

use serde::{Deserialize, Serialize};
use tollgate_model::{AccountId, SubjectId, UnixSeconds};

pub use tollgate_model::AUDIENCE_BYTES_MAX;

/// A license token the origin issued. The token itself is not kept: it is
/// the customer's to carry, and anyone holding it could use it.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseRecord {
    /// The token's `jti`: 32 lower-case hex digits.
    pub id: String,
    pub account: AccountId,
    #[serde(default)]
    pub subject: Option<SubjectId>,
    pub audience: String,
    pub issued_at: UnixSeconds,
    pub not_before: UnixSeconds,
    pub expires_at: UnixSeconds,
    /// The key that signed it.
    pub kid: String,
    pub device_bound: bool,
    /// The origin revision its entitlements were read at.
    pub entitlements_revision: u64,
    #[serde(default)]
    pub revoked_at: Option<UnixSeconds>,
}

/// A region key the origin certified.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRecord {
    /// 32 lower-case hex digits.
    pub serial: String,
    pub region: String,
    /// The region key's id and public key (base64url).
    pub kid: String,
    pub public_key: String,
    pub not_before: UnixSeconds,
    pub not_after: UnixSeconds,
    /// The signed certificate as JSON (a `tollgate_signing::Signed`), as the
    /// region presents it in its tokens' footers.
    pub certificate: String,
    #[serde(default)]
    pub revoked_at: Option<UnixSeconds>,
}
