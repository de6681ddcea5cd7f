//! `tollgate.origin.v1` <-> signing types.

use super::{AtField, ConvertError};
use crate::origin::v1 as pb;
use tollgate_model::UnixSeconds;
use tollgate_signing::{KeyId, KeyStatus, PublicKey, PublicKeySet, Signed};

/// A signed change record on the wire, with its revision.
pub fn signed_record_to_proto(revision: u64, signed: Signed) -> pb::SignedRecord {
    pb::SignedRecord {
        revision,
        kid: signed.kid,
        payload: signed.payload,
        signature: signed.signature,
    }
}

/// The revision and the signed envelope of a wire record (not verified).
pub fn signed_record_from_proto(record: pb::SignedRecord) -> (u64, Signed) {
    (
        record.revision,
        Signed {
            kid: record.kid,
            payload: record.payload,
            signature: record.signature,
        },
    )
}

impl From<Signed> for pb::SnapshotChunk {
    fn from(s: Signed) -> Self {
        pb::SnapshotChunk {
            kid: s.kid,
            payload: s.payload,
            signature: s.signature,
        }
    }
}

impl From<pb::SnapshotChunk> for Signed {
    fn from(c: pb::SnapshotChunk) -> Self {
        Signed {
            kid: c.kid,
            payload: c.payload,
            signature: c.signature,
        }
    }
}

impl From<PublicKeySet> for pb::PublicKeySet {
    fn from(set: PublicKeySet) -> Self {
        use base64::Engine;
        pb::PublicKeySet {
            keys: set
                .keys
                .into_iter()
                .map(|k| {
                    let (status, overlap_until) = match k.status {
                        KeyStatus::Active => ("active", None),
                        KeyStatus::Overlap { until } => ("overlap", Some(until.0)),
                        KeyStatus::Retired => ("retired", None),
                    };
                    pb::PublicKey {
                        kid: k.kid.into(),
                        algorithm: k.algorithm,
                        public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .decode(k.public_key.as_bytes())
                            .unwrap_or_default(),
                        created_at: k.created_at.0,
                        status: status.into(),
                        overlap_until,
                    }
                })
                .collect(),
            // Only the origin's GetPublicKeys signs the set; it adds them.
            endorsements: Vec::new(),
        }
    }
}

impl TryFrom<pb::PublicKeySet> for PublicKeySet {
    type Error = ConvertError;

    fn try_from(set: pb::PublicKeySet) -> Result<Self, ConvertError> {
        use base64::Engine;
        if set.keys.len() > tollgate_signing::KEYS_MAX {
            return Err(ConvertError::out_of_range("keys", "too many keys"));
        }
        let keys = set
            .keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| {
                let field = |name: &str| format!("keys[{i}].{name}");
                let kid = KeyId::try_from(k.kid)
                    .map_err(|e| ConvertError::out_of_range(&field("kid"), e.to_string()))?;
                if k.algorithm != "Ed25519" {
                    return Err(ConvertError::out_of_range(
                        &field("algorithm"),
                        "must be Ed25519",
                    ));
                }
                if k.public_key.len() != 32 {
                    return Err(ConvertError::out_of_range(
                        &field("public_key"),
                        "must be 32 bytes",
                    ));
                }
                let status = match (k.status.as_str(), k.overlap_until) {
                    ("active", _) => KeyStatus::Active,
                    ("overlap", Some(until)) => KeyStatus::Overlap {
                        until: UnixSeconds(until),
                    },
                    ("retired", _) => KeyStatus::Retired,
                    _ => {
                        return Err(ConvertError::out_of_range(
                            &field("status"),
                            "must be active, overlap (with overlap_until) or retired",
                        ))
                    }
                };
                Ok(PublicKey {
                    kid,
                    algorithm: k.algorithm,
                    public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .encode(&k.public_key),
                    created_at: UnixSeconds(k.created_at),
                    status,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(PublicKeySet { keys })
    }
}

/// A counter from the wire; errors name the field.
pub fn usage_counter_from_proto(
    field: &str,
    c: Option<pb::Counter>,
) -> Result<tollgate_model::UsageCounter, ConvertError> {
    let c = c.ok_or_else(|| ConvertError::missing(field))?;
    Ok(tollgate_model::UsageCounter {
        account: tollgate_model::AccountId::new(c.account_id).at(&format!("{field}.account_id"))?,
        feature: tollgate_model::FeatureId::new(c.feature_id).at(&format!("{field}.feature_id"))?,
        period: c
            .period
            .parse()
            .map_err(|e: String| ConvertError::out_of_range(&format!("{field}.period"), e))?,
    })
}

impl From<&tollgate_model::UsageCounter> for pb::Counter {
    fn from(c: &tollgate_model::UsageCounter) -> Self {
        pb::Counter {
            account_id: c.account.to_string(),
            feature_id: c.feature.to_string(),
            period: c.period.to_string(),
        }
    }
}
