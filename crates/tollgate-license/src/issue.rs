//! Minting license tokens, at the origin or at a certified region.

use crate::certificate::RegionCertificate;
use crate::claims::{LicenseClaims, ISSUER_ORIGIN};
use crate::error::LicenseError;
use crate::footer::Footer;
use ed25519_dalek::SigningKey;
use std::fmt;
use tollgate_signing::{KeyId, KeyRing, Signed};

/// The implicit assertion of a device-bound token is this, then the device
/// fingerprint. The prefix separates it from any other use of implicit
/// assertions; the version lets the binding change without ambiguity.
pub const DEVICE_IMPLICIT_PREFIX: &[u8] = b"tollgate.device.v1\0";
pub use crate::limits::DEVICE_FINGERPRINT_BYTES_MAX;

/// The implicit assertion for `fingerprint`: [`DEVICE_IMPLICIT_PREFIX`]
/// followed by it.
pub(crate) fn device_implicit(fingerprint: &[u8]) -> Result<Vec<u8>, LicenseError> {
    if fingerprint.is_empty() || fingerprint.len() > DEVICE_FINGERPRINT_BYTES_MAX {
        return Err(LicenseError::DeviceFingerprintInvalid {
            len: fingerprint.len(),
        });
    }
    let mut implicit = Vec::with_capacity(DEVICE_IMPLICIT_PREFIX.len() + fingerprint.len());
    implicit.extend_from_slice(DEVICE_IMPLICIT_PREFIX);
    implicit.extend_from_slice(fingerprint);
    Ok(implicit)
}

/// Signs license tokens with one key: the origin's active key, or a region's
/// key with the origin's certificate for it.
pub struct Issuer {
    secret: SigningKey,
    kid: KeyId,
    /// For a region issuer: the certificate, parsed.
    certificate: Option<RegionCertificate>,
    /// The footer, the same for every token of this issuer.
    footer: Vec<u8>,
}

impl fmt::Debug for Issuer {
    // Never prints the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issuer")
            .field("kid", &self.kid)
            .field("region", &self.certificate.as_ref().map(|c| &c.region))
            .finish_non_exhaustive()
    }
}

impl Issuer {
    /// Issues with the ring's active key (a copy of it: after a rotation,
    /// build a new issuer).
    pub fn origin(ring: &KeyRing) -> Issuer {
        let (kid, secret) = ring.active_signing_key();
        Issuer {
            secret: secret.clone(),
            kid: kid.clone(),
            certificate: None,
            // A kid is 24 ASCII characters, so this cannot fail; an empty
            // footer would only make every token unverifiable.
            footer: Footer {
                kid: kid.clone(),
                cert: None,
            }
            .to_json()
            .unwrap_or_default(),
        }
    }

    /// Issues with a region's key, presenting `certificate` (the origin's
    /// [`certify`](crate::certify) of it) in every token.
    ///
    /// The certificate's signature is not checked here (a region trusts the
    /// certificate the origin handed it; run
    /// [`verify_certificate`](crate::verify_certificate) first if not), but
    /// its fields are, and it must certify `secret`'s public key and allow
    /// signing licenses.
    pub fn region(secret: SigningKey, certificate: Signed) -> Result<Issuer, LicenseError> {
        let (cert, key) = RegionCertificate::from_payload(&certificate.payload)?;
        if key != secret.verifying_key() {
            return Err(LicenseError::IssuerKeyMismatch);
        }
        if !cert.may_sign_licenses() {
            return Err(LicenseError::CertificateNotForLicenses {
                serial: cert.serial.clone(),
            });
        }
        let footer = Footer {
            kid: cert.kid.clone(),
            cert: Some(certificate),
        }
        .to_json()?;
        Ok(Issuer {
            secret,
            kid: cert.kid.clone(),
            certificate: Some(cert),
            footer,
        })
    }

    /// The id of the signing key (the footer's `kid`).
    pub fn kid(&self) -> &KeyId {
        &self.kid
    }

    /// The region certificate, for a region issuer.
    pub fn certificate(&self) -> Option<&RegionCertificate> {
        self.certificate.as_ref()
    }

    /// The `iss` this issuer's tokens must carry.
    pub fn issuer_name(&self) -> String {
        match &self.certificate {
            Some(cert) => cert.issuer(),
            None => ISSUER_ORIGIN.to_owned(),
        }
    }

    /// Signs `claims` into a token.
    ///
    /// `device_fingerprint` binds the token to a device and must be given
    /// exactly when `claims.device_bound` is true. A region issuer also
    /// refuses a token whose `iss` is not its own, whose `iat..exp` leaves
    /// its certificate's window, or whose `exp - iat` exceeds the
    /// certificate's `token_ttl_max_seconds`: verifiers would refuse it.
    pub fn issue(
        &self,
        claims: &LicenseClaims,
        device_fingerprint: Option<&[u8]>,
    ) -> Result<String, LicenseError> {
        let message = claims.to_json()?;
        let implicit = match (claims.device_bound, device_fingerprint) {
            (true, Some(fingerprint)) => device_implicit(fingerprint)?,
            (false, None) => Vec::new(),
            (device_bound, _) => {
                return Err(LicenseError::DeviceBindingInconsistent { device_bound })
            }
        };
        let expected = self.issuer_name();
        if claims.iss != expected {
            return Err(LicenseError::IssuerMismatch {
                iss: claims.iss.clone(),
                expected,
            });
        }
        if let Some(cert) = &self.certificate {
            cert.check_token_times(claims.iat, claims.exp)?;
        }
        Ok(tollgate_token::sign(
            &self.secret,
            &message,
            &self.footer,
            &implicit,
        )?)
    }
}
