//! `tollgate.origin.v1` Changefeed <-> signing types: the signed records,
//! snapshot chunks and key sets the origin streams to its regions, which
//! the region verifies after conversion (a converted message is well-formed,
//! not trusted).

use super::ConvertError;
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

impl From<Signed> for pb::KeySetEndorsement {
    fn from(s: Signed) -> Self {
        pb::KeySetEndorsement {
            kid: s.kid,
            payload: s.payload,
            signature: s.signature,
        }
    }
}

impl From<pb::KeySetEndorsement> for Signed {
    fn from(e: pb::KeySetEndorsement) -> Self {
        Signed {
            kid: e.kid,
            payload: e.payload,
            signature: e.signature,
        }
    }
}

/// The origin's public key set with the endorsements that vouch for it
/// (each a signature by a key a region may already trust), as
/// `GetPublicKeys` answers.
pub fn endorsed_key_set_to_proto(set: PublicKeySet, endorsements: Vec<Signed>) -> pb::PublicKeySet {
    pb::PublicKeySet {
        endorsements: endorsements.into_iter().map(Into::into).collect(),
        ..set.into()
    }
}

/// What a region asks the changefeed for. The origin bounds the values
/// (its batch and name limits are the feed's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Records after this revision: the last one the subscriber applied.
    pub from_revision: u64,
    /// Records per batch; 0: the origin's default.
    pub max_batch_records: u32,
    /// Who subscribes, for the origin's logs.
    pub subscriber: String,
}

impl From<Subscription> for pb::SubscribeRequest {
    fn from(s: Subscription) -> Self {
        pb::SubscribeRequest {
            from_revision: s.from_revision,
            max_batch_records: s.max_batch_records,
            subscriber: s.subscriber,
        }
    }
}

impl From<pb::SubscribeRequest> for Subscription {
    fn from(r: pb::SubscribeRequest) -> Self {
        Subscription {
            from_revision: r.from_revision,
            max_batch_records: r.max_batch_records,
            subscriber: r.subscriber,
        }
    }
}

/// One message of a changefeed stream as the origin signed it. Nothing in
/// it is verified: the region checks every signature and revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedMessage {
    /// Consecutive change records, each with its revision.
    Records(Vec<(u64, Signed)>),
    /// The origin is alive: its head revision and clock.
    Heartbeat {
        head_revision: u64,
        origin_time: UnixSeconds,
    },
    /// A snapshot of the whole state at `revision` follows, in `chunks`
    /// chunks.
    SnapshotBegin { revision: u64, chunks: u32 },
    /// One chunk of that snapshot.
    SnapshotChunk(Signed),
}

impl From<FeedMessage> for pb::SubscribeResponse {
    fn from(m: FeedMessage) -> Self {
        use pb::subscribe_response::Event;
        let event = match m {
            FeedMessage::Records(records) => Event::Records(pb::RecordBatch {
                records: records
                    .into_iter()
                    .map(|(revision, signed)| signed_record_to_proto(revision, signed))
                    .collect(),
            }),
            FeedMessage::Heartbeat {
                head_revision,
                origin_time,
            } => Event::Heartbeat(pb::Heartbeat {
                head_revision,
                origin_time: origin_time.0,
            }),
            FeedMessage::SnapshotBegin { revision, chunks } => {
                Event::SnapshotBegin(pb::SnapshotBegin { revision, chunks })
            }
            FeedMessage::SnapshotChunk(signed) => Event::SnapshotChunk(signed.into()),
        };
        pb::SubscribeResponse { event: Some(event) }
    }
}

impl TryFrom<pb::SubscribeResponse> for FeedMessage {
    type Error = ConvertError;

    fn try_from(r: pb::SubscribeResponse) -> Result<Self, ConvertError> {
        use pb::subscribe_response::Event;
        Ok(
            match r.event.ok_or_else(|| ConvertError::missing("event"))? {
                Event::Records(batch) => FeedMessage::Records(
                    batch
                        .records
                        .into_iter()
                        .map(signed_record_from_proto)
                        .collect(),
                ),
                Event::Heartbeat(h) => FeedMessage::Heartbeat {
                    head_revision: h.head_revision,
                    origin_time: UnixSeconds(h.origin_time),
                },
                Event::SnapshotBegin(b) => FeedMessage::SnapshotBegin {
                    revision: b.revision,
                    chunks: b.chunks,
                },
                Event::SnapshotChunk(c) => FeedMessage::SnapshotChunk(c.into()),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signed(n: u8) -> Signed {
        Signed {
            kid: format!("ed25519-{n}"),
            payload: vec![n; 3],
            signature: vec![n; 64],
        }
    }

    #[test]
    fn every_feed_message_survives_the_round_trip() {
        let messages = [
            FeedMessage::Records(vec![(7, signed(1)), (8, signed(2))]),
            FeedMessage::Heartbeat {
                head_revision: 9,
                origin_time: UnixSeconds(1_700_000_000),
            },
            FeedMessage::SnapshotBegin {
                revision: 9,
                chunks: 2,
            },
            FeedMessage::SnapshotChunk(signed(3)),
        ];
        for message in messages {
            let wire = pb::SubscribeResponse::from(message.clone());
            assert_eq!(FeedMessage::try_from(wire).unwrap(), message);
        }
    }

    #[test]
    fn a_message_without_an_event_is_refused() {
        let error = FeedMessage::try_from(pb::SubscribeResponse { event: None }).unwrap_err();
        assert_eq!(error.field(), "event");
    }

    #[test]
    fn a_subscription_and_endorsements_survive_the_round_trip() {
        let subscription = Subscription {
            from_revision: 3,
            max_batch_records: 64,
            subscriber: "eu-1".into(),
        };
        let wire = pb::SubscribeRequest::from(subscription.clone());
        assert_eq!(Subscription::from(wire), subscription);
        let set = endorsed_key_set_to_proto(PublicKeySet { keys: Vec::new() }, vec![signed(4)]);
        let back: Vec<Signed> = set.endorsements.into_iter().map(Signed::from).collect();
        assert_eq!(back, vec![signed(4)]);
    }
}
