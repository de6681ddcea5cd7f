//! The origin side: `Subscribe` and `GetPublicKeys`.

use crate::snapshot::chunk;
use crate::{ChangeSource, FeedError, BATCH_BYTES_MAX, BATCH_RECORDS_MAX};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tollgate_clock::Clock;
use tollgate_proto::convert::{endorsed_key_set_to_proto, FeedMessage, Subscription};
use tollgate_proto::origin::v1 as pb;
use tollgate_proto::origin::v1::changefeed_server::Changefeed;
use tollgate_signing::{SharedRing, CONTEXT_CHANGE_RECORD, CONTEXT_SNAPSHOT};
use tonic::{Request, Response, Status};

/// Longest subscriber name, in bytes.
const SUBSCRIBER_LEN_MAX: usize = 128;

#[derive(Debug, Clone)]
pub struct FeedConfig {
    /// How often an idle stream carries a heartbeat.
    pub heartbeat_interval: Duration,
    /// Records per batch when the subscriber does not say.
    pub batch_records_default: usize,
    /// Messages buffered per subscriber before the stream waits for it: a
    /// slow subscriber slows only its own stream.
    pub channel_capacity: usize,
    /// The origin's time in heartbeats is read from it.
    pub clock: Clock,
}

impl Default for FeedConfig {
    fn default() -> Self {
        FeedConfig {
            heartbeat_interval: Duration::from_secs(1),
            batch_records_default: 256,
            channel_capacity: 8,
            clock: Clock::system(),
        }
    }
}

/// The changefeed service of an origin node.
pub struct FeedService<S> {
    source: Arc<S>,
    keys: SharedRing,
    config: FeedConfig,
    stop: Option<watch::Receiver<bool>>,
}

impl<S: ChangeSource> FeedService<S> {
    pub fn new(source: Arc<S>, keys: SharedRing, config: FeedConfig) -> Self {
        FeedService {
            source,
            keys,
            config,
            stop: None,
        }
    }

    /// Ends every stream with UNAVAILABLE when `stop` is set (the node is
    /// shutting down), so subscribers reconnect to another origin node at
    /// once instead of waiting for a heartbeat to go missing.
    pub fn with_stop(mut self, stop: watch::Receiver<bool>) -> Self {
        self.stop = Some(stop);
        self
    }

    pub fn into_server(self) -> pb::changefeed_server::ChangefeedServer<Self> {
        pb::changefeed_server::ChangefeedServer::new(self)
    }
}

fn status(e: FeedError) -> Status {
    match e {
        FeedError::AheadOfOrigin { .. } => Status::failed_precondition(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

fn sign(
    keys: &SharedRing,
    context: &str,
    payload: Vec<u8>,
) -> Result<tollgate_signing::Signed, Status> {
    let ring = keys
        .current()
        .map_err(|e| Status::unavailable(e.to_string()))?;
    Ok(ring.sign(context, payload))
}

type Tx = mpsc::Sender<Result<pb::SubscribeResponse, Status>>;

async fn send(tx: &Tx, message: FeedMessage) -> bool {
    tx.send(Ok(message.into())).await.is_ok()
}

/// Sends a signed snapshot; returns its revision, or `None` when the
/// subscriber went away.
async fn send_snapshot<S: ChangeSource>(
    source: &S,
    keys: &SharedRing,
    tx: &Tx,
) -> Result<Option<u64>, Status> {
    let (revision, mutations) = source.snapshot().map_err(status)?;
    let chunks = chunk(revision, mutations);
    tracing::info!(
        revision,
        chunks = chunks.len(),
        "Sending a changefeed snapshot."
    );
    let begin = FeedMessage::SnapshotBegin {
        revision,
        chunks: chunks.len() as u32,
    };
    if !send(tx, begin).await {
        return Ok(None);
    }
    for payload in chunks {
        let signed = sign(keys, CONTEXT_SNAPSHOT, payload)?;
        if !send(tx, FeedMessage::SnapshotChunk(signed)).await {
            return Ok(None);
        }
    }
    Ok(Some(revision))
}

async fn stream<S: ChangeSource>(
    source: Arc<S>,
    keys: SharedRing,
    config: FeedConfig,
    from_revision: u64,
    batch_records: usize,
    tx: Tx,
) -> Result<(), Status> {
    let mut heads = source.head_changes();
    let mut sent = from_revision;
    if sent < source.floor().map_err(status)? {
        match send_snapshot(&*source, &keys, &tx).await? {
            Some(revision) => sent = revision,
            None => return Ok(()),
        }
    }
    loop {
        let records = source.records(sent, batch_records).map_err(status)?;
        if let Some(first) = records.first() {
            if first.revision != sent + 1 {
                // Compaction overtook this subscriber: start over from a
                // snapshot rather than leave a gap.
                match send_snapshot(&*source, &keys, &tx).await? {
                    Some(revision) => {
                        sent = revision;
                        continue;
                    }
                    None => return Ok(()),
                }
            }
            let mut batch = Vec::with_capacity(records.len());
            let mut bytes = 0;
            for record in records {
                assert_eq!(record.revision, sent + 1, "change records are consecutive");
                let payload = serde_json::to_vec(&record).expect("model values serialise");
                if !batch.is_empty() && bytes + payload.len() > BATCH_BYTES_MAX {
                    break;
                }
                bytes += payload.len();
                let signed = sign(&keys, CONTEXT_CHANGE_RECORD, payload)?;
                batch.push((record.revision, signed));
                sent = record.revision;
            }
            if !send(&tx, FeedMessage::Records(batch)).await {
                return Ok(());
            }
            continue;
        }
        // Caught up: wait for a commit, or say we are alive.
        tokio::select! {
            changed = heads.changed() => {
                if changed.is_err() {
                    return Err(Status::unavailable("the origin is shutting down"));
                }
            }
            _ = tokio::time::sleep(config.heartbeat_interval) => {
                let heartbeat = FeedMessage::Heartbeat {
                    head_revision: source.head().map_err(status)?,
                    origin_time: config.clock.now(),
                };
                if !send(&tx, heartbeat).await {
                    return Ok(());
                }
            }
            _ = tx.closed() => return Ok(()),
        }
    }
}

#[tonic::async_trait]
impl<S: ChangeSource> Changefeed for FeedService<S> {
    type SubscribeStream = ReceiverStream<Result<pb::SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let req = Subscription::from(request.into_inner());
        let batch_records = match req.max_batch_records as usize {
            0 => self.config.batch_records_default,
            n if n <= BATCH_RECORDS_MAX => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "max_batch_records {n} exceeds {BATCH_RECORDS_MAX}"
                )))
            }
        };
        if req.subscriber.len() > SUBSCRIBER_LEN_MAX {
            return Err(Status::invalid_argument(format!(
                "subscriber exceeds {SUBSCRIBER_LEN_MAX} bytes"
            )));
        }
        let head = self.source.head().map_err(status)?;
        if req.from_revision > head {
            return Err(status(FeedError::AheadOfOrigin {
                requested: req.from_revision,
                head,
            }));
        }
        tracing::info!(
            subscriber = %req.subscriber,
            from_revision = req.from_revision,
            head,
            "Changefeed subscriber connected."
        );
        let (tx, rx) = mpsc::channel(self.config.channel_capacity.max(1));
        let (source, keys, config) = (self.source.clone(), self.keys.clone(), self.config.clone());
        let subscriber = req.subscriber;
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            let error_tx = tx.clone();
            let streamed = stream(source, keys, config, req.from_revision, batch_records, tx);
            let stopping = async {
                match stop.as_mut() {
                    // An error means the sender is gone: stopping too.
                    Some(stop) => drop(stop.wait_for(|s| *s).await),
                    None => std::future::pending().await,
                }
            };
            let ended = tokio::select! {
                ended = streamed => ended,
                () = stopping => Err(Status::unavailable(
                    "this origin node is shutting down; reconnect to another",
                )),
            };
            if let Err(status) = ended {
                tracing::warn!(%subscriber, error = %status.message(), "Changefeed stream ended with an error.");
                let _ = error_tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_public_keys(
        &self,
        _request: Request<pb::GetPublicKeysRequest>,
    ) -> Result<Response<pb::PublicKeySet>, Status> {
        let ring = self
            .keys
            .current()
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(endorsed_key_set_to_proto(
            ring.public_set(),
            ring.endorsements(),
        )))
    }
}
