//! License tokens checked offline: with the origin's public key set alone
//! (no server at all), and, when the application runs a [`Replica`], also
//! against the revocations the replica has received: a token or region
//! certificate the origin revoked is refused as soon as the revocation
//! reaches the replica, and the replica keeps refusing it while cut off.

use crate::{Replica, SdkError};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use tollgate_license::{License, LicenseError, Revocations, Verifier};
use tollgate_model::UnixSeconds;
use tollgate_signing::PublicKeySet;

/// Largest key set file read, in bytes.
const KEY_SET_FILE_BYTES_MAX: u64 = 1024 * 1024;

/// Verifies license tokens for one audience (product) with the origin's
/// public key set, without the network.
#[derive(Debug)]
pub struct OfflineVerifier {
    verifier: Verifier,
}

fn now() -> UnixSeconds {
    UnixSeconds(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0),
    )
}

impl OfflineVerifier {
    /// A verifier for tokens whose `aud` is `audience`, trusting `keys` (as
    /// the origin serves them at `/.well-known/tollgate-keys.json`).
    pub fn new(keys: &PublicKeySet, audience: &str) -> Result<OfflineVerifier, SdkError> {
        Verifier::new(keys, audience)
            .map(|verifier| OfflineVerifier { verifier })
            .map_err(|e| SdkError::Config(format!("the origin key set: {e}")))
    }

    /// Reads the key set from a JSON file shipped with the application.
    pub fn from_file(path: &Path, audience: &str) -> Result<OfflineVerifier, SdkError> {
        let shown = path.display();
        let len = std::fs::metadata(path)
            .map_err(|e| SdkError::Config(format!("{shown}: {e}")))?
            .len();
        if len > KEY_SET_FILE_BYTES_MAX {
            return Err(SdkError::Config(format!(
                "{shown}: {len} bytes is more than a key set ({KEY_SET_FILE_BYTES_MAX})"
            )));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| SdkError::Config(format!("{shown}: {e}")))?;
        let keys: PublicKeySet = serde_json::from_str(&text)
            .map_err(|e| SdkError::Config(format!("{shown}: not a key set: {e}")))?;
        OfflineVerifier::new(&keys, audience)
    }

    /// Verifies `token` now, knowing of no revocation. `device` is this
    /// device's fingerprint, for tokens bound to one.
    pub fn verify(&self, token: &str, device: Option<&[u8]>) -> Result<License, LicenseError> {
        self.verifier.verify(token, now(), device, &())
    }

    /// Verifies `token` now, refusing what `replica` knows to be revoked.
    pub fn verify_with_replica(
        &self,
        token: &str,
        device: Option<&[u8]>,
        replica: &Replica,
    ) -> Result<License, LicenseError> {
        self.verifier.verify(token, now(), device, replica)
    }

    /// The underlying verifier, for batches or a caller-supplied clock.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }
}

/// A replica refuses what the origin revoked, as of its revision. Region
/// certificates are global; a replica scoped to one account knows that
/// account's revoked tokens only.
impl Revocations for Replica {
    fn license_revoked(&self, jti: &str) -> bool {
        self.with_revocations(|data| data.revoked_licenses.iter().any(|r| r.id == jti))
    }
    fn certificate_revoked(&self, serial: &str) -> bool {
        self.with_revocations(|data| data.revoked_certificates.iter().any(|r| r.serial == serial))
    }
}
