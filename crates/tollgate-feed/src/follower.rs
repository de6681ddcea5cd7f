//! The region side: subscribe, verify, hand on.

use crate::snapshot::SnapshotChunkPayload;
use crate::{FeedError, BATCH_BYTES_MAX};
use std::time::Duration;
use tollgate_clock::Clock;
use tollgate_model::{ChangeRecord, Mutation, UnixSeconds};
use tollgate_proto::convert::{FeedMessage, Subscription};
use tollgate_proto::origin::v1 as pb;
use tollgate_proto::origin::v1::changefeed_client::ChangefeedClient;
use tollgate_signing::{PublicKeySet, Signed, CONTEXT_CHANGE_RECORD, CONTEXT_SNAPSHOT};
use tollgate_tls::{Allow, Expect, Transport};
use tonic::transport::Channel;
use tonic::Streaming;

/// Largest message accepted from the origin: a full batch plus framing.
const MESSAGE_BYTES_MAX: usize = BATCH_BYTES_MAX + 1024 * 1024;

#[derive(Debug, Clone)]
pub struct FollowerConfig {
    /// The origin node's gRPC address, e.g. `https://127.0.0.1:7000`.
    pub endpoint: String,
    /// How the link is carried: TLS, where the origin must prove it is an
    /// origin node of our trust domain, or plaintext.
    pub transport: Transport,
    /// The origin's public keys: only records signed by these are accepted.
    pub keys: PublicKeySet,
    /// Records per batch to ask for (0: the origin's default).
    pub max_batch_records: u32,
    /// Who we are, for the origin's logs.
    pub subscriber: String,
    pub connect_timeout: Duration,
    /// With no message (not even a heartbeat) for this long, the stream is
    /// considered dead.
    pub idle_timeout: Duration,
    /// Signatures are checked against keys valid at its time.
    pub clock: Clock,
}

/// What the follower hands on, verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FollowEvent {
    /// Consecutive records, each verified.
    Records(Vec<ChangeRecord>),
    /// Part of a snapshot of the whole state at `revision`. Stage the chunks
    /// and replace the state only at `last`: a snapshot cut short must leave
    /// the old state in place.
    SnapshotChunk {
        revision: u64,
        index: u32,
        last: bool,
        mutations: Vec<Mutation>,
    },
    /// The origin is alive; its head revision and clock.
    Heartbeat {
        head_revision: u64,
        origin_time: UnixSeconds,
    },
}

/// Counts records and snapshot chunks refused (signature, revision,
/// order, malformed).
pub const REFUSED_METRIC: &str = "tollgate_feed_refused_total";

/// A verified subscription to one origin node.
pub struct Follower {
    stream: Streaming<pb::SubscribeResponse>,
    /// The origin node followed, for errors that name it.
    endpoint: String,
    keys: PublicKeySet,
    idle_timeout: Duration,
    clock: Clock,
    /// The last revision handed on (records, or a completed snapshot).
    applied: u64,
    /// A snapshot in progress: its revision, next index, chunk count.
    snapshot: Option<(u64, u32, u32)>,
    /// Records that follow a refused one in the same batch are dropped; the
    /// refusal is reported on the next call.
    pending_error: Option<FeedError>,
}

async fn connect(
    endpoint: &str,
    transport: &Transport,
    timeout: Duration,
) -> Result<ChangefeedClient<Channel>, FeedError> {
    let unreachable = |reason: String| FeedError::Unreachable {
        endpoint: endpoint.to_string(),
        reason,
    };
    let endpoint = transport
        .endpoint(endpoint)
        .map_err(|e| unreachable(e.to_string()))?
        .connect_timeout(timeout);
    let channel = transport
        .connect(&endpoint, Expect::Peers(vec![Allow::OriginNodes]), "feed")
        .await
        .map_err(|e| unreachable(tollgate_tls::error_chain(&e)))?;
    Ok(ChangefeedClient::new(channel).max_decoding_message_size(MESSAGE_BYTES_MAX))
}

/// The origin's public key set, as it serves it. Trust it only over a
/// channel you trust (TLS to a known origin), or compare it with a pinned
/// set.
pub async fn fetch_public_keys(
    endpoint: &str,
    transport: &Transport,
    timeout: Duration,
) -> Result<PublicKeySet, FeedError> {
    let mut client = connect(endpoint, transport, timeout).await?;
    let set = tokio::time::timeout(timeout, client.get_public_keys(pb::GetPublicKeysRequest {}))
        .await
        .map_err(|_| FeedError::Unreachable {
            endpoint: endpoint.to_string(),
            reason: "GetPublicKeys timed out".into(),
        })??
        .into_inner();
    PublicKeySet::try_from(set).map_err(|e| FeedError::Refused {
        revision: 0,
        reason: format!("the origin's key set is malformed: {e}"),
    })
}

/// The origin's key set as vouched for by a key `trusted` holds: how a
/// region learns of a rotation. Refused unless an endorsement verifies.
pub async fn fetch_endorsed_keys(
    endpoint: &str,
    transport: &Transport,
    trusted: &PublicKeySet,
    timeout: Duration,
    now: UnixSeconds,
) -> Result<PublicKeySet, FeedError> {
    let mut client = connect(endpoint, transport, timeout).await?;
    let set = tokio::time::timeout(timeout, client.get_public_keys(pb::GetPublicKeysRequest {}))
        .await
        .map_err(|_| FeedError::Unreachable {
            endpoint: endpoint.to_string(),
            reason: "GetPublicKeys timed out".into(),
        })??
        .into_inner();
    let endorsements: Vec<Signed> = set
        .endorsements
        .into_iter()
        .take(tollgate_signing::KEYS_MAX)
        .map(Signed::from)
        .collect();
    trusted
        .accept_endorsed(&endorsements, now)
        .map_err(|source| FeedError::Signature {
            revision: 0,
            source,
        })
}

/// Verifies one signed change record that should carry revision
/// `expected`: the wire revision, the signature (with `verify_strict`, by a
/// key of `keys` valid at `now`), and the revision inside the signed bytes.
pub fn verify_record(
    keys: &PublicKeySet,
    expected: u64,
    revision: u64,
    signed: &Signed,
    now: UnixSeconds,
) -> Result<ChangeRecord, FeedError> {
    if revision != expected {
        return Err(FeedError::Refused {
            revision,
            reason: format!("expected revision {expected} next"),
        });
    }
    keys.verify(CONTEXT_CHANGE_RECORD, signed, now)
        .map_err(|source| FeedError::Signature { revision, source })?;
    let record: ChangeRecord =
        serde_json::from_slice(&signed.payload).map_err(|e| FeedError::Refused {
            revision,
            reason: format!("the signed payload is not a change record: {e}"),
        })?;
    if record.revision != revision {
        return Err(FeedError::Refused {
            revision,
            reason: format!("the signed record says revision {}", record.revision),
        });
    }
    Ok(record)
}

impl Follower {
    /// Subscribes after `from_revision`, the last revision the caller has
    /// applied.
    pub async fn connect(
        config: &FollowerConfig,
        from_revision: u64,
    ) -> Result<Follower, FeedError> {
        let mut client =
            connect(&config.endpoint, &config.transport, config.connect_timeout).await?;
        let request = pb::SubscribeRequest::from(Subscription {
            from_revision,
            max_batch_records: config.max_batch_records,
            subscriber: config.subscriber.clone(),
        });
        let stream = tokio::time::timeout(config.connect_timeout, client.subscribe(request))
            .await
            .map_err(|_| FeedError::Unreachable {
                endpoint: config.endpoint.clone(),
                reason: "Subscribe timed out".into(),
            })??
            .into_inner();
        Ok(Follower {
            stream,
            endpoint: config.endpoint.clone(),
            keys: config.keys.clone(),
            idle_timeout: config.idle_timeout,
            clock: config.clock.clone(),
            applied: from_revision,
            snapshot: None,
            pending_error: None,
        })
    }

    /// The last revision handed on.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// The next verified event. After an error the follower is done:
    /// reconnect from [`Follower::applied`].
    ///
    /// A record or snapshot chunk that fails verification is logged at
    /// ERROR and counted in `tollgate_feed_refused_total`; the follower does
    /// not move past it (reconnect from the last good revision).
    pub async fn next(&mut self) -> Result<FollowEvent, FeedError> {
        let result = self.next_event().await;
        if let Err(error @ (FeedError::Refused { .. } | FeedError::Signature { .. })) = &result {
            metrics::counter!(REFUSED_METRIC).increment(1);
            tracing::error!(%error, applied = self.applied, "Refused what the origin sent; staying on the last good revision.");
        }
        result
    }

    async fn next_event(&mut self) -> Result<FollowEvent, FeedError> {
        if let Some(e) = self.pending_error.take() {
            return Err(e);
        }
        let message = tokio::time::timeout(self.idle_timeout, self.stream.message())
            .await
            .map_err(|_| FeedError::Unreachable {
                endpoint: self.endpoint.clone(),
                reason: format!("no message for {:?}", self.idle_timeout),
            })??
            .ok_or(FeedError::Ended)?;
        let message = FeedMessage::try_from(message).map_err(|e| FeedError::Refused {
            revision: self.applied + 1,
            reason: format!("a malformed message: {e}"),
        })?;
        match message {
            FeedMessage::Heartbeat {
                head_revision,
                origin_time,
            } => Ok(FollowEvent::Heartbeat {
                head_revision,
                origin_time,
            }),
            FeedMessage::Records(records) => self.records(records),
            FeedMessage::SnapshotBegin { revision, chunks } => {
                if chunks == 0 {
                    return Err(FeedError::Refused {
                        revision,
                        reason: "a snapshot with no chunks".into(),
                    });
                }
                self.snapshot = Some((revision, 0, chunks));
                Box::pin(self.next_event()).await
            }
            FeedMessage::SnapshotChunk(signed) => self.snapshot_chunk(signed),
        }
    }

    fn records(&mut self, records: Vec<(u64, Signed)>) -> Result<FollowEvent, FeedError> {
        if self.snapshot.is_some() {
            return Err(FeedError::Refused {
                revision: self.applied + 1,
                reason: "records arrived in the middle of a snapshot".into(),
            });
        }
        let mut verified = Vec::with_capacity(records.len());
        for (revision, signed) in records {
            match verify_record(
                &self.keys,
                self.applied + 1,
                revision,
                &signed,
                self.clock.now(),
            ) {
                Ok(record) => {
                    self.applied = record.revision;
                    verified.push(record);
                }
                Err(e) => {
                    if verified.is_empty() {
                        return Err(e);
                    }
                    self.pending_error = Some(e);
                    break;
                }
            }
        }
        Ok(FollowEvent::Records(verified))
    }

    fn snapshot_chunk(&mut self, signed: Signed) -> Result<FollowEvent, FeedError> {
        let Some((revision, index, chunks)) = self.snapshot else {
            return Err(FeedError::Refused {
                revision: self.applied + 1,
                reason: "a snapshot chunk without a snapshot".into(),
            });
        };
        let refused = |reason: String| FeedError::Refused { revision, reason };
        self.keys
            .verify(CONTEXT_SNAPSHOT, &signed, self.clock.now())
            .map_err(|source| FeedError::Signature { revision, source })?;
        let payload: SnapshotChunkPayload = serde_json::from_slice(&signed.payload)
            .map_err(|e| refused(format!("malformed snapshot chunk: {e}")))?;
        let last = index + 1 == chunks;
        if payload.revision != revision || payload.index != index || payload.last != last {
            return Err(refused(format!(
                "snapshot chunk out of order: got ({}, {}, last={}), expected ({revision}, {index}, last={last})",
                payload.revision, payload.index, payload.last
            )));
        }
        if last {
            self.snapshot = None;
            self.applied = revision;
        } else {
            self.snapshot = Some((revision, index + 1, chunks));
        }
        Ok(FollowEvent::SnapshotChunk {
            revision,
            index,
            last,
            mutations: payload.mutations,
        })
    }
}
