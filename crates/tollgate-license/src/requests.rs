//! What a license service is asked and what it answers, in this crate's
//! terms: the origin's and a region's `Licenses` gRPC services take and give
//! these, and `tollgate-proto` converts them to and from the wire.

use crate::{License, LicenseError};
use tollgate_model::{AccountId, SubjectId, UnixSeconds};

/// A request for a license token, whoever issues it (the origin, or a
/// region with a certified key). Only the ids are checked here; the issuer
/// checks the rest (audience, lifetime, fingerprint) against its own
/// bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueRequest {
    pub account: AccountId,
    /// For one subject (user or device) of the account; `None`: for the
    /// whole account.
    pub subject: Option<SubjectId>,
    /// The product the token is for: its `aud`.
    pub audience: String,
    /// How long the token is valid; `None`: the issuer's default.
    pub ttl_seconds: Option<u64>,
    /// Binds the token to one device; `None`: not bound.
    pub device_fingerprint: Option<String>,
}

/// An issued token and what its holder needs to know about it. The token
/// is shown once; the issuer keeps at most its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The token's `jti`.
    pub id: String,
    /// `v4.public.…`.
    pub token: String,
    /// The key that signed it.
    pub kid: String,
    /// `tollgate-origin` or `tollgate-region:<region>`.
    pub issuer: String,
    pub issued_at: UnixSeconds,
    pub not_before: UnixSeconds,
    pub expires_at: UnixSeconds,
    /// The origin revision the token's entitlements were read at.
    pub entitlements_revision: u64,
}

/// A token to verify, for one audience (and one device, if it is bound).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyRequest {
    pub token: String,
    pub audience: String,
    pub device_fingerprint: Option<String>,
}

/// What verifying a token found, checked against the revocations known as
/// of origin revision `revision`. A refusal is an answer, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub outcome: Result<License, LicenseError>,
    pub revision: u64,
}
