//! The token footer: which key signed, and for a region key, its
//! certificate.

use crate::error::LicenseError;
use serde::{Deserialize, Serialize};
use tollgate_signing::{KeyId, Signed};

/// `{"kid":"ed25519-…"}` or `{"kid":"ed25519-…","cert":{…}}`.
///
/// Read before verification (to pick the key), so parsed defensively: a
/// fixed shape (unknown fields refused, so no deep or wide JSON is walked),
/// inside a token that is at most 64 KiB. It is authenticated by the token's
/// signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Footer {
    pub kid: KeyId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<Signed>,
}

impl Footer {
    pub fn parse(bytes: &[u8]) -> Result<Footer, LicenseError> {
        if bytes.is_empty() {
            return Err(LicenseError::FooterInvalid(
                "missing: a license token carries its key id in the footer".into(),
            ));
        }
        serde_json::from_slice(bytes)
            .map_err(|e| LicenseError::FooterInvalid(LicenseError::reason(e)))
    }

    pub fn to_json(&self) -> Result<Vec<u8>, LicenseError> {
        serde_json::to_vec(self).map_err(|e| LicenseError::FooterInvalid(LicenseError::reason(e)))
    }
}
