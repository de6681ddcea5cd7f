//! Why a token, a certificate or a key set was refused, or a token could not
//! be issued.

use crate::id::RandomId;
use tollgate_model::UnixSeconds;
use tollgate_signing::KeyId;
use tollgate_token::TokenError;

/// Longest text of a parse error kept in an error: parser messages can quote
/// attacker-controlled input, which must not flood a log line.
const REASON_CHARS_MAX: usize = 200;

/// Why a license token was refused, or could not be issued.
///
/// Each variant has a stable machine-readable code, [`LicenseError::code`],
/// for the API edge and for bounded metric labels; the `Display` text is for
/// humans and may change. Attacker-controlled text is never echoed beyond a
/// validated id or a truncated parser message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LicenseError {
    // ---- The token's format (tollgate-token) ----
    /// Not a well-formed `v4.public` token: empty, too long, another
    /// version or purpose, non-canonical encoding. The code is the token
    /// crate's (`token_*`).
    #[error("license token format: {0}")]
    Token(TokenError),
    /// The signature does not verify for this key, message, footer and
    /// implicit assertion (tampering, wrong key, or the wrong device).
    #[error("license signature does not verify")]
    BadSignature,
    /// The footer is missing, is not the footer JSON, or is inconsistent.
    #[error("license footer is invalid: {0}")]
    FooterInvalid(String),

    // ---- Keys ----
    /// The footer names no origin key and carries no certificate.
    #[error("license signed with unknown key {0}")]
    UnknownKeyId(KeyId),
    /// Signed (a token, or a certificate) with an origin key that is retired.
    #[error("signed with retired origin key {0}")]
    RetiredKey(KeyId),
    /// Signed with an origin key whose overlap window after a rotation ended.
    #[error("signed with origin key {kid}, whose overlap window ended at {until}")]
    KeyOverlapExpired { kid: KeyId, until: UnixSeconds },
    /// A public key (origin or region) is a small-order point: any signature
    /// would verify under it with some probability, so it is refused
    /// outright.
    #[error("public key {kid} is weak (a small-order point) and is refused")]
    WeakPublicKey { kid: String },
    /// The origin public key set cannot be used (malformed key, key id that
    /// does not match its key, duplicate, unsupported algorithm, empty).
    #[error("origin public key set is invalid: key {kid:?}: {reason}")]
    KeySetInvalid { kid: String, reason: String },
    /// The verifier's audience is empty or over [`tollgate_model::AUDIENCE_BYTES_MAX`].
    #[error(
        "the verifier's audience must be 1..={} bytes",
        tollgate_model::AUDIENCE_BYTES_MAX
    )]
    AudienceInvalid,

    // ---- Region certificates ----
    /// The certificate is not a valid certificate (bad JSON, bad field,
    /// public key that does not parse or does not match its key id, empty
    /// window).
    #[error("region certificate is invalid: {0}")]
    CertificateInvalid(String),
    /// The certificate is not signed by a known origin key.
    #[error("region certificate is not signed by a known origin key")]
    CertificateSignatureInvalid,
    #[error("region certificate {serial} expired at {not_after}")]
    CertificateExpired {
        serial: RandomId,
        not_after: UnixSeconds,
    },
    #[error("region certificate {serial} is not valid before {not_before}")]
    CertificateNotYetValid {
        serial: RandomId,
        not_before: UnixSeconds,
    },
    #[error("region certificate {serial} is revoked")]
    CertificateRevoked { serial: RandomId },
    /// The footer names one key and carries a certificate for another: a
    /// region presenting someone else's certificate.
    #[error("the footer names key {footer_kid} but its certificate is for key {certificate_kid}")]
    CertificateKeyMismatch {
        footer_kid: KeyId,
        certificate_kid: KeyId,
    },
    /// The certificate's `may_sign` does not include `license`.
    #[error("region certificate {serial} does not allow signing licenses")]
    CertificateNotForLicenses { serial: RandomId },
    /// The token's `iss` is not the signer's (`tollgate-origin` for origin
    /// keys, `tollgate-region:<region>` for a certified region key).
    #[error("token issuer is {iss:?} but it was signed by {expected:?}")]
    IssuerMismatch { iss: String, expected: String },
    /// A region token lives longer (`exp - iat`) than its certificate allows.
    #[error(
        "token lifetime of {ttl_seconds} s exceeds the certificate's maximum of {max_seconds} s"
    )]
    TtlOverCertificateMax { ttl_seconds: u64, max_seconds: u64 },
    /// A region token's `iat..exp` is not inside its certificate's window.
    #[error("token validity is outside the window of region certificate {serial}")]
    OutsideCertificateValidity { serial: RandomId },

    // ---- Claims ----
    /// The claims are not valid claims: bad JSON, unknown field, bad time
    /// string, too many entitlements, inconsistent fields.
    #[error("license claims are invalid: {0}")]
    ClaimsInvalid(String),
    #[error("license expired at {exp}")]
    Expired { exp: UnixSeconds },
    #[error("license is not valid before {nbf}")]
    NotYetValid { nbf: UnixSeconds },
    #[error("license is for another audience")]
    WrongAudience,
    #[error("license {jti} is revoked")]
    LicenseRevoked { jti: RandomId },

    // ---- Devices ----
    /// The token is bound to a device and the verifier gave no device
    /// fingerprint. Detected only after the signature failed, from the
    /// unverified claims: a diagnosis, never an acceptance.
    #[error("license is bound to a device; a device fingerprint is required")]
    DeviceFingerprintRequired,
    /// A device fingerprint is empty or over
    /// [`crate::limits::DEVICE_FINGERPRINT_BYTES_MAX`] bytes.
    #[error(
        "device fingerprint is {len} bytes; 1..={} expected",
        crate::limits::DEVICE_FINGERPRINT_BYTES_MAX
    )]
    DeviceFingerprintInvalid { len: usize },

    // ---- Issuing only ----
    /// `claims.device_bound` and the presence of a device fingerprint
    /// disagree.
    #[error("claims say device_bound = {device_bound}, which needs a device fingerprint exactly when true")]
    DeviceBindingInconsistent { device_bound: bool },
    /// A region issuer's signing key is not the key its certificate
    /// certifies.
    #[error("the signing key is not the key the region certificate certifies")]
    IssuerKeyMismatch,
}

impl LicenseError {
    /// A stable, machine-readable reason code, for clients to switch on and
    /// for metric labels (a bounded set).
    pub fn code(&self) -> &'static str {
        match self {
            LicenseError::Token(error) => error.code(),
            LicenseError::BadSignature => "license_bad_signature",
            LicenseError::FooterInvalid(_) => "license_footer_invalid",
            LicenseError::UnknownKeyId(_) => "license_unknown_key_id",
            LicenseError::RetiredKey(_) => "license_key_retired",
            LicenseError::KeyOverlapExpired { .. } => "license_key_overlap_expired",
            LicenseError::WeakPublicKey { .. } => "license_weak_public_key",
            LicenseError::KeySetInvalid { .. } => "license_key_set_invalid",
            LicenseError::AudienceInvalid => "license_audience_invalid",
            LicenseError::CertificateInvalid(_) => "license_certificate_invalid",
            LicenseError::CertificateSignatureInvalid => "license_certificate_signature_invalid",
            LicenseError::CertificateExpired { .. } => "license_certificate_expired",
            LicenseError::CertificateNotYetValid { .. } => "license_certificate_not_yet_valid",
            LicenseError::CertificateRevoked { .. } => "license_certificate_revoked",
            LicenseError::CertificateKeyMismatch { .. } => "license_certificate_key_mismatch",
            LicenseError::CertificateNotForLicenses { .. } => {
                "license_certificate_not_for_licenses"
            }
            LicenseError::IssuerMismatch { .. } => "license_issuer_mismatch",
            LicenseError::TtlOverCertificateMax { .. } => "license_ttl_over_certificate_max",
            LicenseError::OutsideCertificateValidity { .. } => {
                "license_outside_certificate_validity"
            }
            LicenseError::ClaimsInvalid(_) => "license_claims_invalid",
            LicenseError::Expired { .. } => "license_expired",
            LicenseError::NotYetValid { .. } => "license_not_yet_valid",
            LicenseError::WrongAudience => "license_wrong_audience",
            LicenseError::LicenseRevoked { .. } => "license_revoked",
            LicenseError::DeviceFingerprintRequired => "license_device_fingerprint_required",
            LicenseError::DeviceFingerprintInvalid { .. } => "license_device_fingerprint_invalid",
            LicenseError::DeviceBindingInconsistent { .. } => {
                "license_issue_device_binding_inconsistent"
            }
            LicenseError::IssuerKeyMismatch => "license_issue_key_mismatch",
        }
    }

    /// A parse error's text, truncated (see [`REASON_CHARS_MAX`]).
    pub(crate) fn reason(error: impl std::fmt::Display) -> String {
        error.to_string().chars().take(REASON_CHARS_MAX).collect()
    }
}

impl From<TokenError> for LicenseError {
    /// A bad signature is the license's own refusal (one code, whatever the
    /// layer); every other token error is a format error.
    fn from(error: TokenError) -> Self {
        match error {
            TokenError::BadSignature => LicenseError::BadSignature,
            other => LicenseError::Token(other),
        }
    }
}
