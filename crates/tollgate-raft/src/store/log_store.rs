//! The Raft log and vote on sled, with group commit.
//!
//! `append` writes the entries to sled's memory (readable at once, as
//! openraft requires) and hands their journal record and the completion
//! callback to one flusher thread per store. That thread takes everything
//! queued so far, writes the records into the log's journal
//! ([`super::journal`]) and makes them durable with one `fdatasync`, then
//! completes them all: appends that arrive while a sync runs share the next
//! one. sled itself is flushed only when the journal turns (when it is
//! full, and at every truncation and purge). A store in memory (simulations)
//! has a journal on its memory disk and does the flusher's work inline.
//!
//! How many appends are in flight: a follower's core (openraft 0.9.25)
//! awaits each append's callback before running its next command
//! (`RaftCore::append_to_log`), so it has one at a time, and its flush runs
//! inline, on the core's task, whenever nothing is queued for the thread
//! (the store knows it follows from the votes it saves). The leader's core,
//! as patched in `vendor/openraft`, submits an append and goes on
//! replicating; the flush reports back later. Its appends are bounded by
//! the write batcher in front of `client_write` ([`crate::node`]:
//! `writes_in_flight_max` proposals, each packing concurrent writes into
//! one entry) plus its blank and membership entries, and appends queued
//! while a flush runs share the next one.

// openraft's StorageError is large; the trait methods return it anyway.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io;
use std::marker::PhantomData;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader, StorageIOError};

use super::journal::{Entries, Journal, Record};
use super::{
    any_error, LogGrowth, META_CLEAN_STOP, META_COMMITTED, META_LAST_PURGED, META_VOTE,
    STORED_VALUE_BYTES_MAX, TREE_LOG, TREE_META,
};
use crate::codec::{decode_log_entry, decode_stored, encode, encode_log_entry};
use crate::error::Error;
use crate::kv::{Batch, Db, Tree};
use crate::logic::StateMachineLogic;
use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig};

/// Most callbacks completed by one flush; bounds the flusher's batch.
const FLUSH_BATCH_MAX: usize = 4096;

type FlushCallback = Box<dyn FnOnce(Result<(), io::Error>) + Send>;

/// Counters of the group commit, for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct FlushStats {
    /// `append` calls whose callback was queued.
    pub appends: AtomicU64,
    /// Journal syncs the flusher made (each covering every append queued
    /// since the one before).
    pub flushes: AtomicU64,
    /// Appends flushed inline, on the calling core's task (a follower's,
    /// with nothing queued for the thread), not by the thread.
    pub inline_appends: AtomicU64,
}

/// What the flusher thread is asked to do, in the order asked.
enum Job {
    /// Make an append durable: its record into the journal.
    Append { record: Record, done: FlushCallback },
    /// Flush sled and start the journal's next generation (after a
    /// truncation or a purge: see [`super::journal`]).
    Turn { done: FlushCallback },
}

struct Flusher {
    tx: Option<mpsc::Sender<Job>>,
    /// The worker: run by the thread for each batch it takes, or inline by
    /// the caller (a disk in memory always: nothing it does blocks, and no
    /// thread's timing varies; a follower's append when nothing is queued).
    worker: Arc<std::sync::Mutex<FlushWorker>>,
    /// Jobs sent to the thread and not yet run.
    queued: Arc<AtomicU64>,
    memory: bool,
    /// This node's id, and whether its stored vote is its own committed
    /// one (it leads): see [`LogStore::append`].
    node_id: AtomicU64,
    leading: std::sync::atomic::AtomicBool,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<FlushStats>,
}

impl Flusher {
    fn lock_worker(&self) -> std::sync::MutexGuard<'_, FlushWorker> {
        self.worker
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `job` inline (a memory disk, or `inline` when nothing is
    /// queued for the thread) or queues it for the thread; false when the
    /// thread is gone.
    fn submit(&self, job: Job, inline: bool) -> bool {
        if self.memory {
            self.lock_worker().run(vec![job]);
            return true;
        }
        if inline {
            let mut worker = self.lock_worker();
            // The thread holds the lock while it runs a batch and counts
            // its jobs down before letting go: none queued means every job
            // submitted before this one has completed, so this one's flush
            // never answers ahead of an earlier one.
            if self.queued.load(Ordering::Acquire) == 0 {
                worker.run(vec![job]);
                self.stats.inline_appends.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        match &self.tx {
            Some(tx) => {
                self.queued.fetch_add(1, Ordering::AcqRel);
                let sent = tx.send(job).is_ok();
                if !sent {
                    self.queued.fetch_sub(1, Ordering::AcqRel);
                }
                sent
            }
            None => false,
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        // Close the queue, then wait for the thread to finish its last flush
        // and let go of the Db: whoever reopens the directory next (a
        // restart in the same process) must find its lock released.
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The flusher thread's state: sled and the journal.
struct FlushWorker {
    db: Db,
    journal: Journal,
    /// Set by the first journal or flush failure: from then on what is on
    /// disk is unknown, so every later job fails with it (openraft stops
    /// on a storage error: fail closed).
    broken: Option<String>,
    stats: Arc<FlushStats>,
}

impl FlushWorker {
    fn run(&mut self, jobs: Vec<Job>) {
        let mut pending: Vec<FlushCallback> = Vec::new();
        for job in jobs {
            match job {
                Job::Append { record, done } => {
                    pending.push(done);
                    if let Err(error) = self.write(&record) {
                        self.fail(error, &mut pending);
                    }
                }
                Job::Turn { done } => {
                    pending.push(done);
                    let result = self.flush_and_turn();
                    self.complete(result, &mut pending);
                }
            }
        }
        if pending.is_empty() {
            return;
        }
        let result = match &self.broken {
            Some(broken) => Err(io::Error::other(broken.clone())),
            None => self.journal.sync(),
        };
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.complete(result, &mut pending);
    }

    /// Writes an append's record (not yet synced).
    fn write(&mut self, record: &Record) -> Result<(), io::Error> {
        if let Some(broken) = &self.broken {
            return Err(io::Error::other(broken.clone()));
        }
        if !self.journal.ever_fits(record.len()) {
            // Larger than the journal: durable in sled instead (its flush
            // covers every append queued before it too).
            return self.flush_and_turn();
        }
        if !self.journal.fits(record.len()) {
            self.flush_and_turn()?;
        }
        self.journal.write(record)
    }

    fn flush_and_turn(&mut self) -> Result<(), io::Error> {
        if let Some(broken) = &self.broken {
            return Err(io::Error::other(broken.clone()));
        }
        let result = self
            .db
            .flush()
            .map_err(|e| io::Error::other(e.to_string()))
            .and_then(|()| self.journal.turn());
        if let Err(error) = &result {
            self.broken = Some(format!("the log's flush failed: {error}"));
        }
        result
    }

    fn fail(&mut self, error: io::Error, pending: &mut Vec<FlushCallback>) {
        if self.broken.is_none() {
            self.broken = Some(format!("the log's journal failed: {error}"));
        }
        self.complete(Err(error), pending);
    }

    fn complete(&self, result: Result<(), io::Error>, pending: &mut Vec<FlushCallback>) {
        for done in pending.drain(..) {
            done(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

impl Flusher {
    fn spawn(db: Db, journal: Journal) -> Result<Flusher, Error> {
        let stats = Arc::new(FlushStats::default());
        let memory = db.is_memory();
        let worker = Arc::new(std::sync::Mutex::new(FlushWorker {
            db,
            journal,
            broken: None,
            stats: stats.clone(),
        }));
        let queued = Arc::new(AtomicU64::new(0));
        let mut flusher = Flusher {
            tx: None,
            worker: worker.clone(),
            queued: queued.clone(),
            memory,
            node_id: AtomicU64::new(0),
            leading: std::sync::atomic::AtomicBool::new(false),
            thread: None,
            stats,
        };
        if memory {
            return Ok(flusher);
        }
        let (tx, rx) = mpsc::channel::<Job>();
        // A thread, not a task: flush blocks, and openraft's test suite runs
        // each case on a runtime of its own.
        let thread = std::thread::Builder::new()
            .name("tollgate-raft-flush".into())
            .spawn(move || {
                // Ends when every sender (every LogStore clone) is gone.
                while let Ok(first) = rx.recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < FLUSH_BATCH_MAX {
                        match rx.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    let taken = jobs.len() as u64;
                    let mut worker = worker.lock().unwrap_or_else(|p| p.into_inner());
                    worker.run(jobs);
                    queued.fetch_sub(taken, Ordering::AcqRel);
                }
            })?;
        flusher.tx = Some(tx);
        flusher.thread = Some(thread);
        Ok(flusher)
    }
}

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Writes the journal's entries back into the log, in order; returns how
/// many. Entries at or below the last purge are skipped: the journal turns
/// after every purge, but a crash can come between, and the snapshot
/// covers them.
fn write_back(log: &Tree, meta: &Tree, entries: Entries) -> Result<usize, Error> {
    let purged = match meta.get(META_LAST_PURGED)? {
        Some(v) => Some(decode_stored::<LogId>("last_purged", &v)?.index),
        None => None,
    };
    let mut batch = Batch::default();
    let mut replayed = 0;
    for (index, value) in entries {
        if purged.is_some_and(|purged| index <= purged) {
            continue;
        }
        batch.insert(index_key(index), value);
        replayed += 1;
    }
    log.apply_batch(batch)?;
    Ok(replayed)
}

/// Reads log entries; cloned into each replication task.
pub struct LogReader<L> {
    log: Tree,
    _logic: PhantomData<fn() -> L>,
}

impl<L> Clone for LogReader<L> {
    fn clone(&self) -> Self {
        LogReader {
            log: self.log.clone(),
            _logic: PhantomData,
        }
    }
}

fn read_range<L: StateMachineLogic>(
    log: &Tree,
    range: impl RangeBounds<u64>,
) -> Result<Vec<Entry<L>>, StorageError> {
    let start = match range.start_bound() {
        Bound::Included(x) => *x,
        Bound::Excluded(x) => x.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(x) => x.checked_add(1),
        Bound::Excluded(x) => Some(*x),
        Bound::Unbounded => None,
    };
    if end.is_some_and(|end| end <= start) {
        return Ok(Vec::new());
    }
    let iter = match end {
        Some(end) => log.range(index_key(start)..index_key(end)),
        None => log.range(index_key(start)..),
    };
    let mut entries = Vec::new();
    for item in iter {
        let (_, value) = item.map_err(|e| StorageIOError::read_logs(any_error(e)))?;
        let entry: Entry<L> = decode_entry(&value)?;
        entries.push(entry);
    }
    Ok(entries)
}

/// A stored log entry, plain or compressed JSON.
fn decode_entry<L: StateMachineLogic>(value: &[u8]) -> Result<Entry<L>, StorageError> {
    decode_log_entry("raft.log entry", value, STORED_VALUE_BYTES_MAX)
        .map_err(|e| StorageIOError::read_logs(any_error(e)).into())
}

impl<L: StateMachineLogic> RaftLogReader<TypeConfig<L>> for LogReader<L> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<L>>, StorageError> {
        read_range::<L>(&self.log, range)
    }
}

/// The Raft log and vote of one node.
pub struct LogStore<L> {
    db: Db,
    log: Tree,
    meta: Tree,
    flusher: Arc<Flusher>,
    growth: Arc<LogGrowth>,
    _logic: PhantomData<fn() -> L>,
}

impl<L> Clone for LogStore<L> {
    fn clone(&self) -> Self {
        LogStore {
            db: self.db.clone(),
            log: self.log.clone(),
            meta: self.meta.clone(),
            flusher: self.flusher.clone(),
            growth: self.growth.clone(),
            _logic: PhantomData,
        }
    }
}

impl<L: StateMachineLogic> LogStore<L> {
    /// Opens the log in `db`, with its journal: on the memory disk for a
    /// store in memory, else in `data_dir` (made there if missing). What
    /// the journal holds is written back into the log, flushed, and the
    /// journal turned.
    pub(crate) fn open(
        db: Db,
        growth: Arc<LogGrowth>,
        data_dir: &std::path::Path,
    ) -> Result<Self, Error> {
        let log = db.open_tree(TREE_LOG)?;
        let meta = db.open_tree(TREE_META)?;
        let (mut journal, entries) = match db.memory_disk() {
            Some(disk) => Journal::open_memory(disk)?,
            None => Journal::open(data_dir)?,
        };
        let replayed = write_back(&log, &meta, entries)?;
        db.flush()?;
        journal.turn()?;
        if replayed > 0 {
            tracing::info!(entries = replayed, "Log entries replayed from the journal.");
        }
        let flusher = Arc::new(Flusher::spawn(db.clone(), journal)?);
        Ok(LogStore {
            db,
            log,
            meta,
            flusher,
            growth,
            _logic: PhantomData,
        })
    }

    /// How many bytes the log grew by since the last snapshot began.
    pub fn log_growth(&self) -> Arc<LogGrowth> {
        self.growth.clone()
    }

    /// Tells the store which node it belongs to, so that it knows when
    /// that node leads (from the votes it stores).
    pub(crate) fn set_node_id(&self, id: NodeId) {
        self.flusher.node_id.store(id, Ordering::Release);
    }

    /// The group-commit counters of this store.
    pub fn flush_stats(&self) -> Arc<FlushStats> {
        self.flusher.stats.clone()
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, Error> {
        match self.meta.get(key)? {
            Some(v) => Ok(Some(decode_stored(&String::from_utf8_lossy(key), &v)?)),
            None => Ok(None),
        }
    }

    fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        self.read_meta(META_LAST_PURGED)
            .map_err(|e| StorageIOError::read_logs(any_error(e)).into())
    }

    async fn flush(&self) -> Result<(), Error> {
        Ok(self.db.flush_async().await?)
    }

    /// Flushes sled and turns the journal, behind every append queued
    /// before.
    async fn turn_journal(&self) -> Result<(), io::Error> {
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let queued = self.flusher.submit(
            Job::Turn {
                done: Box::new(move |result| {
                    // The receiver is gone only if the caller was cancelled.
                    let _ = done_tx.send(result);
                }),
            },
            false,
        );
        if !queued {
            return Err(io::Error::other("log flusher thread is gone"));
        }
        done_rx
            .await
            .map_err(|_| io::Error::other("log flusher thread is gone"))?
    }

    /// At start: whether what this node applied before is all on disk, so
    /// that it may answer reads at once (see [`crate::recovery`]). True
    /// after a clean stop (whose marker this takes away, durably, so that
    /// a crash from here on is seen as one) and for a node that never
    /// voted (it never accepted an entry). Blocking on sled.
    pub fn take_clean_stop(&self) -> Result<bool, Error> {
        if self.meta.get(META_CLEAN_STOP)?.is_some() {
            self.meta.remove(META_CLEAN_STOP)?;
            self.db.flush()?;
            return Ok(true);
        }
        Ok(self.meta.get(META_VOTE)?.is_none())
    }

    /// At a clean stop, once Raft has stopped: everything on disk, then the
    /// marker that says so.
    pub async fn mark_clean_stop(&self) -> Result<(), Error> {
        self.flush().await?;
        self.meta.insert(META_CLEAN_STOP, [1u8])?;
        self.flush().await
    }
}

impl<L: StateMachineLogic> RaftLogReader<TypeConfig<L>> for LogStore<L> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<L>>, StorageError> {
        read_range::<L>(&self.log, range)
    }
}

impl<L: StateMachineLogic> RaftLogStorage<TypeConfig<L>> for LogStore<L> {
    type LogReader = LogReader<L>;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig<L>>, StorageError> {
        let last_purged_log_id = self.last_purged()?;
        let last = self
            .log
            .last()
            .map_err(|e| StorageIOError::read_logs(any_error(e)))?;
        let last_log_id = match last {
            Some((_, value)) => {
                let entry: Entry<L> = decode_entry(&value)?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        LogReader {
            log: self.log.clone(),
            _logic: PhantomData,
        }
    }

    async fn save_vote(&mut self, vote: &openraft::Vote<NodeId>) -> Result<(), StorageError> {
        let own = vote.is_committed()
            && vote.leader_id().voted_for() == Some(self.flusher.node_id.load(Ordering::Acquire));
        self.flusher.leading.store(own, Ordering::Release);
        let value = encode(vote).map_err(|e| StorageIOError::write_vote(any_error(e)))?;
        self.meta
            .insert(META_VOTE, value)
            .map_err(|e| StorageIOError::write_vote(any_error(e)))?;
        // The vote must be on disk before we answer the candidate.
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_vote(any_error(e)))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<openraft::Vote<NodeId>>, StorageError> {
        self.read_meta(META_VOTE)
            .map_err(|e| StorageIOError::read_vote(any_error(e)).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: it reaches the disk with the next append's flush (in
        // one sled flush with the state applied under it, never behind it).
        // A flush here was one fsync on every commit's path (≈ 0.3 ms of a
        // one-client commit on three nodes). What keeps a node that lost
        // what it applied from answering below a revision it answered
        // before is the rule in `crate::recovery`.
        let value = encode(&committed).map_err(|e| StorageIOError::write(any_error(e)))?;
        self.meta
            .insert(META_COMMITTED, value)
            .map_err(|e| StorageIOError::write(any_error(e)))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let stored: Option<Option<LogId>> = self
            .read_meta(META_COMMITTED)
            .map_err(|e| StorageIOError::read(any_error(e)))?;
        Ok(stored.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig<L>>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry<L>> + Send,
        I::IntoIter: Send,
    {
        let mut record = Record::default();
        let mut encoded = Vec::new();
        let mut bytes = 0;
        for entry in entries {
            let (value, json_len) =
                encode_log_entry(&entry).map_err(|e| StorageIOError::write_logs(any_error(e)))?;
            bytes += value.len() as u64;
            // Larger values would become sled blobs, which sled never fsyncs;
            // the write batcher's byte limit keeps entries well below this.
            // The bound is on the JSON, so that an entry that only fits
            // compressed is refused too (and reading one back allocates at
            // most this much).
            if json_len > STORED_VALUE_BYTES_MAX {
                return Err(StorageIOError::write_log_entry(
                    entry.log_id,
                    any_error(format!(
                        "entry of {json_len} bytes exceeds {STORED_VALUE_BYTES_MAX}"
                    )),
                )
                .into());
            }
            record.push(entry.log_id.index, &value);
            encoded.push((entry.log_id.index, value));
        }
        // Readable as soon as this returns (openraft's requirement); durable
        // once the flusher calls back. One insert each, not a batch: sled
        // seals and writes out its I/O buffer at every batch (a device write
        // on each append, competing with the journal's fdatasync); inserts
        // stay in its buffer until a turn flushes it. The journal makes them
        // durable and replays them whole, so a batch's atomicity is not
        // needed. Every entry is checked before the first is written.
        for (index, value) in encoded {
            self.log
                .insert(index_key(index), value)
                .map_err(|e| StorageIOError::write_logs(any_error(e)))?;
        }
        self.growth.add(bytes);
        self.flusher.stats.appends.fetch_add(1, Ordering::Relaxed);
        // A follower's core awaits this append's callback before its next
        // command, so handing the flush to the thread gains no company for
        // it and costs two thread hand-offs (≈ 4 % of a one-client commit):
        // it flushes here, on the core's task. The leader's core goes on
        // replicating meanwhile, so its flushes go to the thread.
        let inline = !self.flusher.leading.load(Ordering::Acquire);
        let queued = self.flusher.submit(
            Job::Append {
                record,
                done: Box::new(move |result| callback.log_io_completed(result)),
            },
            inline,
        );
        if !queued {
            return Err(StorageIOError::write_logs(any_error("log flusher thread is gone")).into());
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        for item in self.log.range(index_key(log_id.index)..) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(any_error(e)))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(any_error(e)))?;
        // No journal record from before this may replay over what is
        // appended after it.
        self.turn_journal()
            .await
            .map_err(|e| StorageIOError::write_logs(any_error(e)))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Entries are only purged once a snapshot covers them, and the state
        // machine they were applied to shares this Db but is not flushed on
        // apply: flush first so that what the log forgets is on disk in the
        // state machine.
        self.flush()
            .await
            .map_err(|e| StorageIOError::write_logs(any_error(e)))?;
        let value = encode(&log_id).map_err(|e| StorageIOError::write_logs(any_error(e)))?;
        self.meta
            .insert(META_LAST_PURGED, value)
            .map_err(|e| StorageIOError::write_logs(any_error(e)))?;
        let mut batch = Batch::default();
        for item in self.log.range(..=index_key(log_id.index)) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(any_error(e)))?;
            batch.remove(key);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(any_error(e)))?;
        self.turn_journal()
            .await
            .map_err(|e| StorageIOError::write_logs(any_error(e)))?;
        Ok(())
    }
}
