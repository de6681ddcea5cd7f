//! The `Watch` stream a region node serves to client-side caches: the
//! changes after a revision, for one account (plus the catalog) or all,
//! replayed from the changes the region keeps and then followed live; the
//! scope's current state first when those changes are no longer kept.
//!
//! Each watcher has a bounded buffer (`[limits] watch_buffer` messages).
//! A watcher that leaves it full for longer than `[limits]
//! request_timeout_ms` is dropped: its stream ends with RESOURCE_EXHAUSTED
//! `WATCHER_TOO_SLOW` (counted in `tollgate_requests_refused_total`), and
//! it resumes from the last revision it read, like after any disconnect.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tollgate_engine::{WatchEvent, WatchRequest};
use tollgate_model::{AccountId, ChangeRecord, Mutation};
use tollgate_origin::keys;
use tollgate_proto::check::v1 as pb;
use tollgate_raft::StateView;
use tollgate_region::ORIGIN_CONTACT;
use tollgate_server::served::{read_u64, scan_all};
use tonic::Status;

/// Most change records read (and sent) per message.
const RECORDS_PER_MESSAGE: usize = tollgate_region::RECORDS_PER_COMMAND_MAX;
/// The stable code of a watcher dropped for not reading.
pub const WATCHER_TOO_SLOW: &str = "WATCHER_TOO_SLOW";

/// A watcher's messages, as the client reads them: what the buffer holds,
/// unless the watcher was dropped for being too slow, which it then learns
/// first (what was buffered is gone with it).
pub(crate) struct WatchStream {
    messages: ReceiverStream<Result<pb::WatchResponse, Status>>,
    too_slow: Arc<AtomicBool>,
    buffer: usize,
    ended: bool,
}

impl tokio_stream::Stream for WatchStream {
    type Item = Result<pb::WatchResponse, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.ended {
            return Poll::Ready(None);
        }
        if self.too_slow.load(Ordering::Acquire) {
            self.ended = true;
            return Poll::Ready(Some(Err(too_slow_status(self.buffer))));
        }
        Pin::new(&mut self.messages).poll_next(cx)
    }
}

fn too_slow_status(buffer: usize) -> Status {
    tollgate_server::grpc::error_status(
        tonic::Code::ResourceExhausted,
        WATCHER_TOO_SLOW,
        format!(
            "this watcher did not read its stream fast enough ({buffer} messages waited too \
             long); watch again from the last revision it received"
        ),
    )
}

/// What a node needs to serve watchers.
pub(crate) struct Watches {
    pub view: StateView,
    /// Staleness in heartbeats is read from it.
    pub clock: tollgate_clock::Clock,
    /// The applied origin revision, updated as entries apply.
    pub applied: watch::Receiver<u64>,
    /// Sent when a watcher is idle this long.
    pub heartbeat: Duration,
    /// One permit per concurrent watcher.
    pub slots: Arc<Semaphore>,
    pub slots_max: usize,
    /// Set when the node stops: every stream ends.
    pub stop: watch::Receiver<bool>,
    /// Messages buffered per watcher.
    pub buffer: usize,
    /// A watcher whose buffer stays full this long is dropped.
    pub send_timeout: Duration,
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(e.to_string())
}

impl Watches {
    pub(crate) fn start(&self, request: WatchRequest) -> Result<WatchStream, Status> {
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "this node serves at most {} watchers; try another node",
                self.slots_max
            ))
        })?;
        let (tx, rx) = mpsc::channel(self.buffer.max(1));
        let too_slow = Arc::new(AtomicBool::new(false));
        let stream = Stream {
            view: self.view.clone(),
            clock: self.clock.clone(),
            applied: self.applied.clone(),
            heartbeat: self.heartbeat,
            stop: self.stop.clone(),
            tx,
            send_timeout: self.send_timeout,
            too_slow: too_slow.clone(),
            _permit: permit,
        };
        tokio::spawn(async move {
            let tx = stream.tx.clone();
            let send_timeout = stream.send_timeout;
            if let Err(status) = stream.run(request).await {
                tracing::warn!(%status, "A watch stream failed.");
                let _ = tx.send_timeout(Err(status), send_timeout).await;
            }
        });
        Ok(WatchStream {
            messages: ReceiverStream::new(rx),
            too_slow,
            buffer: self.buffer.max(1),
            ended: false,
        })
    }
}

/// One watcher.
struct Stream {
    view: StateView,
    clock: tollgate_clock::Clock,
    applied: watch::Receiver<u64>,
    heartbeat: Duration,
    stop: watch::Receiver<bool>,
    tx: mpsc::Sender<Result<pb::WatchResponse, Status>>,
    send_timeout: Duration,
    /// Set when the watcher is dropped for not reading.
    too_slow: Arc<AtomicBool>,
    _permit: OwnedSemaphorePermit,
}

/// The client went away, or the node is stopping, or the watcher was
/// dropped for not reading.
struct Gone;

impl Stream {
    async fn send(&self, event: WatchEvent) -> Result<(), Gone> {
        match self
            .tx
            .send_timeout(Ok(event.into()), self.send_timeout)
            .await
        {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Gone),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                // The client reads its stream too slowly: end it (the slot
                // and what this task holds go with it) rather than wait.
                self.too_slow.store(true, Ordering::Release);
                tollgate_server::limits::count_refusal("check", "watcher_too_slow");
                tracing::warn!(
                    buffer = self.tx.max_capacity(),
                    "Dropped a watcher that did not read its stream fast enough."
                );
                Err(Gone)
            }
        }
    }

    fn read(&self, key: &[u8]) -> Result<u64, Status> {
        read_u64(&self.view, key).map_err(internal)
    }

    async fn run(mut self, request: WatchRequest) -> Result<(), Status> {
        match self.serve(&request).await {
            Ok(Ok(())) | Ok(Err(Gone)) => Ok(()),
            Err(status) => Err(status),
        }
    }

    /// How far this node has applied, and how stale the region is.
    fn heartbeat_event(&self) -> Result<WatchEvent, Status> {
        let contact = self.read(ORIGIN_CONTACT)?;
        Ok(WatchEvent::Heartbeat {
            applied_revision: self.read(keys::HEAD_REVISION)?,
            staleness_seconds: (contact > 0)
                .then(|| self.clock.now().0.saturating_sub(contact as i64).max(0) as u64),
        })
    }

    /// `Ok(Err(Gone))` ends the stream quietly.
    async fn serve(&mut self, request: &WatchRequest) -> Result<Result<(), Gone>, Status> {
        let account = request.account.as_ref();
        let mut at = request.from_revision;
        // A heartbeat goes out once caught up, then at least every interval
        // even while changes flow: a client scoped to a quiet account in a
        // busy region still learns how fresh the region is.
        let mut next_heartbeat = tokio::time::Instant::now();
        loop {
            let head = self.read(keys::HEAD_REVISION)?;
            if at < self.read(tollgate_region::CHANGE_FLOOR)? {
                let parts = tollgate_region::snapshot_parts(scope_state(&self.view, account)?);
                let count = parts.len();
                for (index, mutations) in parts.into_iter().enumerate() {
                    let event = WatchEvent::State {
                        revision: head,
                        index: index as u32,
                        last: index + 1 == count,
                        mutations,
                    };
                    if let Err(gone) = self.send(event).await {
                        return Ok(Err(gone));
                    }
                }
                at = head;
            }
            while at < head {
                let records = changes_after(&self.view, at)?;
                if records.first().map(|r| r.revision) != Some(at + 1) {
                    if at >= self.read(tollgate_region::CHANGE_FLOOR)? {
                        return Err(Status::internal(format!(
                            "change record {} is missing below the applied revision {head}",
                            at + 1
                        )));
                    }
                    // Trimmed while we read: start over from the state.
                    break;
                }
                let through = records.last().map_or(at, |r| r.revision);
                let changes = records
                    .into_iter()
                    .filter_map(|record| in_scope(record, account))
                    .collect();
                let event = WatchEvent::Changes {
                    changes,
                    through_revision: through,
                };
                if let Err(gone) = self.send(event).await {
                    return Ok(Err(gone));
                }
                at = through;
                if tokio::time::Instant::now() >= next_heartbeat {
                    // Busy: a heartbeat between batches.
                    next_heartbeat = tokio::time::Instant::now() + self.heartbeat;
                    let event = self.heartbeat_event()?;
                    if let Err(gone) = self.send(event).await {
                        return Ok(Err(gone));
                    }
                }
            }
            if at < head {
                continue;
            }
            enum Wake {
                Applied,
                Idle,
                Gone,
            }
            let wake = {
                let (applied, stop, tx) = (&mut self.applied, &mut self.stop, &self.tx);
                tokio::select! {
                    changed = applied.wait_for(|applied| *applied > at) => {
                        if changed.is_ok() { Wake::Applied } else { Wake::Gone }
                    }
                    _ = tokio::time::sleep_until(next_heartbeat) => Wake::Idle,
                    _ = tx.closed() => Wake::Gone,
                    _ = stop.wait_for(|stop| *stop) => Wake::Gone,
                }
            };
            match wake {
                Wake::Applied => {}
                Wake::Gone => return Ok(Err(Gone)),
                Wake::Idle => {
                    next_heartbeat = tokio::time::Instant::now() + self.heartbeat;
                    let event = self.heartbeat_event()?;
                    if let Err(gone) = self.send(event).await {
                        return Ok(Err(gone));
                    }
                }
            }
        }
    }
}

/// The retained change records after `revision`, in order (at most
/// [`RECORDS_PER_MESSAGE`]).
fn changes_after(view: &StateView, revision: u64) -> Result<Vec<ChangeRecord>, Status> {
    view.scan(
        tollgate_region::CHANGE_PREFIX.as_bytes(),
        Some(&tollgate_region::change(revision)),
        RECORDS_PER_MESSAGE,
    )
    .map_err(internal)?
    .into_iter()
    .map(|(_, bytes)| serde_json::from_slice(&bytes).map_err(internal))
    .collect()
}

/// The record with only the mutations in scope; `None` when none are (the
/// catalog is in every scope: every decision reads it).
/// Credentials are for region nodes: never in any scope.
fn in_scope(mut record: ChangeRecord, account: Option<&AccountId>) -> Option<ChangeRecord> {
    record.mutations.retain(|m| {
        m.is_for_replicas()
            && account.is_none_or(|account| m.account().is_none_or(|a| a == account))
    });
    (!record.mutations.is_empty()).then_some(record)
}

/// The scope's current state, as mutations that recreate it.
fn scope_state(view: &StateView, account: Option<&AccountId>) -> Result<Vec<Mutation>, Status> {
    match account {
        None => Ok(tollgate_server::served::served_dataset(view)
            .map_err(internal)?
            .to_mutations()),
        Some(account) => Ok(account_dataset(view, account)?.to_mutations()),
    }
}

/// One account's part of what a node serves: the catalog, the account, its
/// subjects and entitlements, its revoked licenses, and every revoked
/// region certificate.
pub(crate) fn account_dataset(
    view: &StateView,
    account: &AccountId,
) -> Result<tollgate_model::Dataset, Status> {
    let mut entries = scan_all(view, "catalog/").map_err(internal)?;
    if let Some(own) = crate::views::account_entries(view, account).map_err(|e| e.status())? {
        entries.extend(own);
    }
    entries.extend(scan_all(view, keys::REVOKED_CERTIFICATE_PREFIX).map_err(internal)?);
    let mut data = tollgate_origin::dataset_from_entries(entries).map_err(internal)?;
    // Revocations are keyed by token id (a verifier has only the token);
    // there are few, so one account's are found by reading them all.
    let revoked = scan_all(view, keys::REVOKED_LICENSE_PREFIX).map_err(internal)?;
    for r in tollgate_origin::dataset_from_entries(revoked)
        .map_err(internal)?
        .revoked_licenses
    {
        if &r.account == account {
            data.revoked_licenses.push(r);
        }
    }
    Ok(data)
}
