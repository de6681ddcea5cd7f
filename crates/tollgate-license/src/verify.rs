//! Verifying license tokens.

use crate::certificate::{check_signed_certificate, RegionCertificate};
use crate::claims::{
    LicenseClaims, LicenseEntitlement, AUDIENCE_BYTES_MAX, ISSUER_ORIGIN, ISSUER_REGION_PREFIX,
};
use crate::error::LicenseError;
use crate::footer::Footer;
use crate::id::RandomId;
use crate::issue::device_implicit;
use crate::keys::OriginKey;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;
use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};
use tollgate_model::{FeatureId, UnixSeconds};
use tollgate_signing::{KeyId, PublicKeySet, Signed, KEYS_MAX};
use tollgate_token::TokenError;

/// Clock skew tolerated on `nbf`, `exp` and certificate windows by default.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 60;
/// The largest leeway [`Verifier::with_leeway`] sets; more is clamped. An
/// hour of skew is a broken clock, and leeway extends every token's life.
pub const LEEWAY_SECONDS_MAX: u64 = 3600;
/// Most verified region certificates a [`Verifier`] remembers.
pub const CERTIFICATE_CACHE_ENTRIES_MAX: usize = 16;

/// Which revoked token ids and certificate serials to refuse.
pub trait Revocations {
    /// Whether the token with this `jti` is revoked.
    fn license_revoked(&self, jti: &str) -> bool;
    /// Whether the region certificate with this serial is revoked.
    fn certificate_revoked(&self, serial: &str) -> bool;
}

/// Nothing is revoked.
impl Revocations for () {
    fn license_revoked(&self, _jti: &str) -> bool {
        false
    }
    fn certificate_revoked(&self, _serial: &str) -> bool {
        false
    }
}

impl<T: Revocations + ?Sized> Revocations for &T {
    fn license_revoked(&self, jti: &str) -> bool {
        (**self).license_revoked(jti)
    }
    fn certificate_revoked(&self, serial: &str) -> bool {
        (**self).certificate_revoked(serial)
    }
}

/// Revoked token ids and certificate serials, in memory. The caller bounds
/// it (entries can be dropped once the token or certificate has expired).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationList {
    licenses: HashSet<String>,
    certificates: HashSet<String>,
}

impl RevocationList {
    pub fn new() -> RevocationList {
        RevocationList::default()
    }

    /// Revokes the token with this `jti`; false if it already was.
    pub fn insert_license(&mut self, jti: impl Into<String>) -> bool {
        self.licenses.insert(jti.into())
    }

    /// Revokes the certificate with this serial; false if it already was.
    pub fn insert_certificate(&mut self, serial: impl Into<String>) -> bool {
        self.certificates.insert(serial.into())
    }
}

impl Revocations for RevocationList {
    fn license_revoked(&self, jti: &str) -> bool {
        self.licenses.contains(jti)
    }
    fn certificate_revoked(&self, serial: &str) -> bool {
        self.certificates.contains(serial)
    }
}

/// Which key signed a verified license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenseSigner {
    /// An origin key.
    Origin { kid: KeyId },
    /// A region key, certified by an origin key.
    Region {
        region: String,
        serial: RandomId,
        kid: KeyId,
        certified_by: KeyId,
    },
}

/// A license token that verified: its claims, the key id of its footer and
/// which key signed it. Only [`Verifier`] makes one, so holding a `License`
/// means the checks passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    claims: LicenseClaims,
    kid: KeyId,
    signer: LicenseSigner,
}

impl License {
    pub fn claims(&self) -> &LicenseClaims {
        &self.claims
    }

    /// The footer's key id (the key that signed the token).
    pub fn kid(&self) -> &KeyId {
        &self.kid
    }

    pub fn signer(&self) -> &LicenseSigner {
        &self.signer
    }

    pub fn into_claims(self) -> LicenseClaims {
        self.claims
    }

    /// An entitlement that lets the holder use `feature` at `now`, offline:
    /// the license itself is in force (`nbf <= now < exp`, exact, no
    /// leeway), and the entitlement is active (status active, `valid_from <=
    /// now < usable_until`) and grants the feature.
    ///
    /// Status, time and feature only. The geo rules, caps, seats and offline
    /// policy are in the entitlement for the caller (the engine decides
    /// those where it has the facts).
    pub fn allows(&self, feature: &FeatureId, now: UnixSeconds) -> Option<&LicenseEntitlement> {
        if now < self.claims.nbf || now >= self.claims.exp {
            return None;
        }
        self.claims
            .entitlements
            .iter()
            .find(|e| e.is_active_at(now) && e.feature(feature).is_some())
    }
}

/// A region certificate whose origin signature and fields were checked. Only
/// the time-dependent checks (origin key status, window) and revocation are
/// redone on each use.
struct VerifiedCertificate {
    signed: Signed,
    cert: RegionCertificate,
    key: VerifyingKey,
}

enum SelectedKey<'a> {
    Origin(&'a OriginKey),
    Region {
        certificate: Arc<VerifiedCertificate>,
        certified_by: &'a OriginKey,
    },
}

impl SelectedKey<'_> {
    fn key(&self) -> &VerifyingKey {
        match self {
            SelectedKey::Origin(origin) => &origin.key,
            SelectedKey::Region { certificate, .. } => &certificate.key,
        }
    }
}

/// Verifies license tokens for one audience against the origin's public
/// keys.
///
/// Built once per key set: every key is parsed (decompressed) and checked
/// here, not per token. Share it (`Arc<Verifier>`); it is `Send + Sync`.
///
/// **Certificate cache.** Verified region certificates are remembered in a
/// small bounded cache inside the verifier (at most
/// [`CERTIFICATE_CACHE_ENTRIES_MAX`], oldest evicted first), keyed by the
/// exact certificate envelope (key id, payload and signature compared in
/// full). Why there rather than per [`Verifier::verify_batch`] call: tokens
/// usually arrive one at a time, and each region token would otherwise pay
/// a second signature check and a key decompression for its certificate,
/// roughly doubling its cost; a region has one or two live certificates, so
/// 16 entries always hit. Why this is safe: only certificates that passed
/// the origin-signature and field checks enter, so forged certificates
/// cannot fill or poison it; what can change with time (the origin key's
/// status, the window) and revocation are checked on every use; and the
/// origin keys never change inside one verifier (a new key set is a new
/// verifier, with an empty cache).
pub struct Verifier {
    origin: Vec<OriginKey>,
    audience: String,
    leeway_seconds: u64,
    certificates: RwLock<VecDeque<Arc<VerifiedCertificate>>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached = self
            .certificates
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("Verifier")
            .field(
                "origin_kids",
                &self.origin.iter().map(|k| &k.kid).collect::<Vec<_>>(),
            )
            .field("audience", &self.audience)
            .field("leeway_seconds", &self.leeway_seconds)
            .field("cached_certificates", &cached)
            .finish()
    }
}

impl Verifier {
    /// A verifier of tokens for `audience` signed by (or certified by) the
    /// keys of `keys`.
    ///
    /// # Errors
    /// [`LicenseError::WeakPublicKey`] if any key is of small order;
    /// [`LicenseError::KeySetInvalid`] if the set is empty or over
    /// `KEYS_MAX`, or a key is malformed, not Ed25519, listed twice, or does
    /// not match its key id; [`LicenseError::AudienceInvalid`] for an empty
    /// or over-long audience. A key set with one bad key is refused whole:
    /// it is a broken publication, not something to work around.
    pub fn new(keys: &PublicKeySet, audience: impl Into<String>) -> Result<Verifier, LicenseError> {
        let audience = audience.into();
        if audience.is_empty() || audience.len() > AUDIENCE_BYTES_MAX {
            return Err(LicenseError::AudienceInvalid);
        }
        if keys.keys.is_empty() || keys.keys.len() > KEYS_MAX {
            return Err(LicenseError::KeySetInvalid {
                kid: String::new(),
                reason: format!("holds {} keys; 1..={KEYS_MAX} expected", keys.keys.len()),
            });
        }
        let mut origin: Vec<OriginKey> = Vec::with_capacity(keys.keys.len());
        for public in &keys.keys {
            let key = OriginKey::parse(public)?;
            if origin.iter().any(|k| k.kid == key.kid) {
                return Err(LicenseError::KeySetInvalid {
                    kid: key.kid.to_string(),
                    reason: "listed twice".into(),
                });
            }
            origin.push(key);
        }
        Ok(Verifier {
            origin,
            audience,
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
            certificates: RwLock::new(VecDeque::with_capacity(CERTIFICATE_CACHE_ENTRIES_MAX)),
        })
    }

    /// Tolerates `seconds` of clock skew on `nbf`, `exp` and certificate
    /// windows (default [`DEFAULT_LEEWAY_SECONDS`], at most
    /// [`LEEWAY_SECONDS_MAX`]).
    pub fn with_leeway(mut self, seconds: u64) -> Verifier {
        self.leeway_seconds = seconds.min(LEEWAY_SECONDS_MAX);
        self
    }

    pub fn audience(&self) -> &str {
        &self.audience
    }

    pub fn leeway_seconds(&self) -> u64 {
        self.leeway_seconds
    }

    /// Verifies `token` at `now`, in the order the crate docs give.
    ///
    /// `device_fingerprint` is this device's fingerprint, if it has one. A
    /// token bound to a device verifies only with that device's fingerprint
    /// ([`LicenseError::DeviceFingerprintRequired`] without one,
    /// [`LicenseError::BadSignature`] with another); a token not bound to a
    /// device verifies with or without one.
    pub fn verify(
        &self,
        token: &str,
        now: UnixSeconds,
        device_fingerprint: Option<&[u8]>,
        revoked: &impl Revocations,
    ) -> Result<License, LicenseError> {
        let implicit = device_fingerprint.map(device_implicit).transpose()?;

        // 1-2. Format, then the footer, unverified: it only picks a key.
        let footer = Footer::parse(&tollgate_token::footer_unverified(token)?)?;

        // 3. The key: an origin key, or a certified region key.
        let selected = self.select_key(&footer, now)?;

        // 4. The signature.
        let (message, device_bound) = check_signature(selected.key(), token, implicit.as_deref())?;

        // 5. The claims.
        let claims = LicenseClaims::from_json(&message)?;
        if claims.device_bound != device_bound {
            return Err(if claims.device_bound {
                // Signed without a device, yet claiming to be bound: only a
                // faulty issuer makes one (Issuer refuses to).
                LicenseError::DeviceFingerprintRequired
            } else {
                LicenseError::ClaimsInvalid(
                    "device_bound is false in a token bound to a device".into(),
                )
            });
        }

        // 6. The issuer must be the signer.
        let issuer_ok = match &selected {
            SelectedKey::Origin(_) => claims.iss == ISSUER_ORIGIN,
            SelectedKey::Region { certificate, .. } => {
                claims.iss.strip_prefix(ISSUER_REGION_PREFIX)
                    == Some(certificate.cert.region.as_str())
            }
        };
        if !issuer_ok {
            let expected = match &selected {
                SelectedKey::Origin(_) => ISSUER_ORIGIN.to_owned(),
                SelectedKey::Region { certificate, .. } => certificate.cert.issuer(),
            };
            return Err(LicenseError::IssuerMismatch {
                iss: claims.iss.clone(),
                expected,
            });
        }

        // 7. Time.
        if now.plus_seconds(self.leeway_seconds) < claims.nbf {
            return Err(LicenseError::NotYetValid { nbf: claims.nbf });
        }
        if now >= claims.exp.plus_seconds(self.leeway_seconds) {
            return Err(LicenseError::Expired { exp: claims.exp });
        }
        if let SelectedKey::Region { certificate, .. } = &selected {
            certificate.cert.check_token_times(claims.iat, claims.exp)?;
        }

        // 8. Audience.
        if claims.aud != self.audience {
            return Err(LicenseError::WrongAudience);
        }

        // 9. Revocation.
        if revoked.license_revoked(claims.jti.as_str()) {
            return Err(LicenseError::LicenseRevoked {
                jti: claims.jti.clone(),
            });
        }
        let signer = match selected {
            SelectedKey::Origin(origin) => LicenseSigner::Origin {
                kid: origin.kid.clone(),
            },
            SelectedKey::Region {
                certificate,
                certified_by,
            } => {
                let cert = &certificate.cert;
                if revoked.certificate_revoked(cert.serial.as_str()) {
                    return Err(LicenseError::CertificateRevoked {
                        serial: cert.serial.clone(),
                    });
                }
                LicenseSigner::Region {
                    region: cert.region.clone(),
                    serial: cert.serial.clone(),
                    kid: cert.kid.clone(),
                    certified_by: certified_by.kid.clone(),
                }
            }
        };
        Ok(License {
            claims,
            kid: footer.kid,
            signer,
        })
    }

    /// Verifies each of `tokens` as [`Verifier::verify`] does, in order.
    /// Certificates are verified once for the whole batch (and beyond) by
    /// the verifier's certificate cache; each token still costs one
    /// signature check, as it must. The batch is the caller's memory: bound
    /// it where it is received.
    pub fn verify_batch(
        &self,
        tokens: &[&str],
        now: UnixSeconds,
        device_fingerprint: Option<&[u8]>,
        revoked: &impl Revocations,
    ) -> Vec<Result<License, LicenseError>> {
        tokens
            .iter()
            .map(|token| self.verify(token, now, device_fingerprint, revoked))
            .collect()
    }

    fn origin_key(&self, kid: &str) -> Option<&OriginKey> {
        self.origin.iter().find(|k| k.kid.as_str() == kid)
    }

    /// Step 3: the key the footer points at, checked as far as it can be
    /// before the signature.
    fn select_key(
        &self,
        footer: &Footer,
        now: UnixSeconds,
    ) -> Result<SelectedKey<'_>, LicenseError> {
        if let Some(origin) = self.origin_key(footer.kid.as_str()) {
            if footer.cert.is_some() {
                return Err(LicenseError::FooterInvalid(
                    "an origin key id with a region certificate".into(),
                ));
            }
            origin.check_usable(now)?;
            return Ok(SelectedKey::Origin(origin));
        }
        let Some(signed) = &footer.cert else {
            return Err(LicenseError::UnknownKeyId(footer.kid.clone()));
        };
        let certified_by = self
            .origin_key(&signed.kid)
            .ok_or(LicenseError::CertificateSignatureInvalid)?;
        certified_by.check_usable(now)?;
        let certificate = match self.cached_certificate(signed) {
            Some(certificate) => certificate,
            None => {
                let (cert, key) = check_signed_certificate(certified_by, signed)?;
                let certificate = Arc::new(VerifiedCertificate {
                    signed: signed.clone(),
                    cert,
                    key,
                });
                self.cache_certificate(Arc::clone(&certificate));
                certificate
            }
        };
        let cert = &certificate.cert;
        cert.check_window(now, self.leeway_seconds)?;
        if cert.kid != footer.kid {
            return Err(LicenseError::CertificateKeyMismatch {
                footer_kid: footer.kid.clone(),
                certificate_kid: cert.kid.clone(),
            });
        }
        if !cert.may_sign_licenses() {
            return Err(LicenseError::CertificateNotForLicenses {
                serial: cert.serial.clone(),
            });
        }
        Ok(SelectedKey::Region {
            certificate,
            certified_by,
        })
    }

    fn cached_certificate(&self, signed: &Signed) -> Option<Arc<VerifiedCertificate>> {
        // A poisoned lock only means a panic elsewhere while holding it; the
        // entries are immutable, so they are still sound.
        let cache = self
            .certificates
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        cache
            .iter()
            .find(|entry| entry.signed.signature == signed.signature && entry.signed == *signed)
            .cloned()
    }

    fn cache_certificate(&self, certificate: Arc<VerifiedCertificate>) {
        let mut cache = self
            .certificates
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if cache.iter().any(|entry| entry.signed == certificate.signed) {
            return; // another thread got there first
        }
        if cache.len() >= CERTIFICATE_CACHE_ENTRIES_MAX {
            cache.pop_front();
        }
        cache.push_back(certificate);
    }
}

/// Step 4: the signature, with this device's implicit assertion if given.
/// Returns the message and whether it was verified as bound to a device.
fn check_signature(
    key: &VerifyingKey,
    token: &str,
    implicit: Option<&[u8]>,
) -> Result<(Vec<u8>, bool), LicenseError> {
    match tollgate_token::verify(key, token, None, implicit.unwrap_or_default()) {
        Ok(verified) => return Ok((verified.message, implicit.is_some())),
        Err(TokenError::BadSignature) => {}
        Err(other) => return Err(other.into()),
    }
    // The signature failed. Only now is the unverified message looked at, to
    // tell the caller something more useful than "bad signature"; what it
    // says never makes a token acceptable.
    match (implicit, peek_device_bound(token)) {
        (None, Some(true)) => Err(LicenseError::DeviceFingerprintRequired),
        (Some(_), Some(false)) => {
            // This device gave its fingerprint, but the token says it is not
            // bound to a device, so it would have been signed with an empty
            // implicit assertion. Try that, once: the peek only chooses
            // whether to try, the signature decides. (A forgery claiming
            // device_bound false thus costs two checks, never more.)
            let verified = tollgate_token::verify(key, token, None, &[])?;
            Ok((verified.message, false))
        }
        _ => Err(LicenseError::BadSignature),
    }
}

/// `device_bound` from the **unverified** message, or `None` if it cannot be
/// read. Only for diagnosing a failed signature.
fn peek_device_bound(token: &str) -> Option<bool> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        device_bound: bool,
    }
    let body = token.strip_prefix(tollgate_token::HEADER)?;
    let payload = body.split('.').next()?;
    let payload = B64.decode(payload).ok()?;
    // The payload is the message, then the 64-byte signature.
    let message = payload.get(..payload.len().checked_sub(64)?)?;
    serde_json::from_slice::<Peek>(message)
        .ok()
        .map(|peek| peek.device_bound)
}
