//! Storage on sled: the Raft log ([`LogStore`]) and the state machine
//! ([`SledStateMachine`]) share one `sled::Db`, so one flush makes both
//! durable. Both go through [`crate::kv`], which is sled, or, for simulations and
//! fault tests, a disk in memory ([`MemDisk`]) that fails writes and
//! fsyncs and crashes on command.
//!
//! Trees:
//! - `raft.log`: key = log index (big-endian u64), value = the entry: JSON,
//!   LZ4-compressed when that is shorter (`codec::encode_log_entry`; both
//!   forms read, so a log written before compression still replays).
//! - `raft.meta`: vote, committed log id, last purged log id, the state
//!   machine's current generation, and the current snapshot (meta + bytes).
//! - `sm.<generation>`: the state machine. Keys `0x00 ...` hold its own
//!   bookkeeping (last applied log id, last membership), keys `0x01 ++ k`
//!   hold the role's key `k`. Keeping both in one tree lets one
//!   `apply_batch` write a batch of entries' effects and `last_applied`
//!   atomically. A role's JSON values are kept in a compact binary form
//!   ([`value`]); every read gives back the JSON the role wrote. Installing a snapshot fills a fresh generation tree,
//!   flushes it, then flips `sm_generation` in `raft.meta`: a crash before
//!   the flip leaves the old state, after it the new one.

pub mod journal;
mod log_store;
mod snapshot;

mod state_machine;
pub mod value;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::kv::{DiskStats, Faults, MemDisk};
pub use crate::snapshot_data::SnapshotData;
pub use log_store::{FlushStats, LogReader, LogStore};
pub use snapshot::{
    decode_snapshot, encode_pair, encode_snapshot, read_pairs, Pair, SnapshotWriter,
    SNAPSHOT_MAGIC, SNAPSHOT_MAGIC_V1,
};
pub use state_machine::{
    SledStateMachine, SnapshotBuilder, StateView, PENDING_APPLIES_MAX, PENDING_BYTES_MAX,
};

use crate::error::Error;
use crate::kv::Db;
use crate::logic::StateMachineLogic;

pub(crate) const TREE_LOG: &str = "raft.log";
pub(crate) const TREE_META: &str = "raft.meta";
pub(crate) const SM_TREE_PREFIX: &str = "sm.";

pub(crate) const META_VOTE: &[u8] = b"vote";
pub(crate) const META_COMMITTED: &[u8] = b"committed";
/// Present (flushed) only between a clean stop and the next start: see
/// [`crate::recovery`].
pub(crate) const META_CLEAN_STOP: &[u8] = b"clean_stop";
pub(crate) const META_LAST_PURGED: &[u8] = b"last_purged";
pub(crate) const META_SM_GENERATION: &[u8] = b"sm_generation";
pub(crate) const META_SNAPSHOT_META: &[u8] = b"snapshot_meta";
/// Where snapshots were stored before they were stored by id (migrated on open).
pub(crate) const META_SNAPSHOT_DATA: &[u8] = b"snapshot_data";
/// The stored snapshot's length in bytes.
pub(crate) const META_SNAPSHOT_LEN: &[u8] = b"snapshot_len";
/// Stored snapshots' pieces: `snapshot_pieces/<set>/<u64 BE>`, where the
/// set is the id of a snapshot this node built, or `receiving-<n>` for one
/// it received.
pub(crate) const META_SNAPSHOT_PIECES: &[u8] = b"snapshot_pieces/";
/// The set holding the current snapshot's pieces (absent: its id).
pub(crate) const META_SNAPSHOT_SET: &[u8] = b"snapshot_set";

/// Default sled page-cache size: 64 MiB (sled's own default is 1 GiB).
pub const CACHE_CAPACITY_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// Where and how a node keeps its data.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// The node's data directory; created if missing.
    pub data_dir: PathBuf,
    /// sled's page cache, in bytes.
    pub cache_capacity_bytes: u64,
    /// How long to wait for the directory's lock when it is still held (a
    /// previous instance in this process that is still shutting down).
    pub lock_wait_ms_max: u64,
    /// Keep the data on this disk in memory instead of in `data_dir`: for
    /// simulations and fault tests only (nothing survives the process).
    pub memory: Option<MemDisk>,
    /// How much of a snapshot's undo map (the values applies replaced while
    /// the snapshot copies the state) stays in memory; the rest goes to a
    /// scratch tree on disk.
    pub undo_memory_bytes_max: usize,
    /// Largest snapshot this node accepts from its leader: a chunk that
    /// would take a received snapshot past it is refused, so a leader
    /// gone wrong cannot fill the disk with one.
    pub received_snapshot_bytes_max: u64,
}

/// Default of [`StorageConfig::received_snapshot_bytes_max`]: 16 GiB (the
/// snapshot of a million entitlements is about 30 MiB).
pub const RECEIVED_SNAPSHOT_BYTES_MAX_DEFAULT: u64 = 16 * 1024 * 1024 * 1024;

/// Default of [`StorageConfig::undo_memory_bytes_max`]: 32 MiB.
pub const UNDO_MEMORY_BYTES_MAX_DEFAULT: usize = 32 * 1024 * 1024;

impl StorageConfig {
    /// Defaults for `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        StorageConfig {
            data_dir: data_dir.into(),
            cache_capacity_bytes: CACHE_CAPACITY_BYTES_DEFAULT,
            lock_wait_ms_max: 5_000,
            memory: None,
            undo_memory_bytes_max: UNDO_MEMORY_BYTES_MAX_DEFAULT,
            received_snapshot_bytes_max: RECEIVED_SNAPSHOT_BYTES_MAX_DEFAULT,
        }
    }

    /// Storage on `disk`, in memory (simulations and fault tests).
    pub fn in_memory(disk: MemDisk) -> Self {
        StorageConfig {
            memory: Some(disk),
            ..StorageConfig::new("<memory>")
        }
    }
}

/// sled's segment (and I/O buffer) size. sled writes any item larger than a
/// quarter segment to a file of its own ("blob") and never fsyncs those, so
/// the segment is sized for every item we store (log entries up to
/// `write_batch_bytes_max`, snapshot pieces, state values) to stay inline:
/// 4 MiB puts the blob threshold just under 1 MiB.
pub const SEGMENT_BYTES: usize = 4 * 1024 * 1024;

/// How often sled's own flusher writes out what it holds and cleans
/// segments (`open_sled` says why it runs).
pub const SLED_FLUSH_EVERY_MS: u64 = 1000;

/// Largest single value this crate writes to sled; keeps clear of the blob
/// threshold (a quarter of [`SEGMENT_BYTES`], minus headers).
pub const STORED_VALUE_BYTES_MAX: usize = SEGMENT_BYTES / 4 - 64 * 1024;

/// Opens a stopped node's data directory to read it (measurements and
/// diagnostics; a running node holds the lock). Writing through it
/// bypasses Raft.
pub fn open_db_for_inspection(data_dir: impl Into<std::path::PathBuf>) -> Result<sled::Db, Error> {
    Ok(open_sled(&StorageConfig::new(data_dir))?.0)
}

fn open_db(config: &StorageConfig) -> Result<Db, Error> {
    if let Some(disk) = &config.memory {
        if disk.is_crashed() {
            return Err(Error::InvalidArgument(
                "this memory disk crashed: open the one its crash returned".into(),
            ));
        }
        return Ok(Db::memory(disk.clone()));
    }
    let (db, file) = open_sled(config)?;
    Ok(Db::sled(db, file))
}

/// Opens sled in `config.data_dir`, with a handle on its data file.
///
/// sled 0.34's `flush` writes its I/O buffers with `sync_file_range`, which
/// neither flushes the drive's cache nor persists the file's size; only its
/// periodic flusher calls `fsync`. So every durability point is `flush`
/// followed by `fdatasync` on the data file ([`Db::flush`]).
///
/// The periodic flusher runs anyway, every [`SLED_FLUSH_EVERY_MS`], for what
/// else it does: it writes out what sled holds unflushed, and it is the
/// only caller of sled's segment cleaning. Our own flushes come only at the
/// journal's turns, snapshots, purges and votes, so without it sled kept
/// everything written between them in memory: a region loading 200,000
/// entitlements held 395 MiB resident instead of 190 MiB, and 3.5 GiB at a
/// million.
fn open_sled(config: &StorageConfig) -> Result<(sled::Db, std::fs::File), Error> {
    if config.cache_capacity_bytes < 1024 * 1024 {
        return Err(Error::InvalidConfig {
            key: "cache_capacity_bytes",
            reason: format!("{} is below the 1 MiB minimum", config.cache_capacity_bytes),
        });
    }
    std::fs::create_dir_all(&config.data_dir)?;
    let deadline = Instant::now() + Duration::from_millis(config.lock_wait_ms_max);
    loop {
        let opened = sled::Config::new()
            .path(&config.data_dir)
            .cache_capacity(config.cache_capacity_bytes)
            .mode(sled::Mode::LowSpace)
            .segment_size(SEGMENT_BYTES)
            // Durability never waits for it (see above); it bounds what
            // sled holds in memory between our flushes, and cleans segments.
            .flush_every_ms(Some(SLED_FLUSH_EVERY_MS))
            .open();
        match opened {
            Ok(db) => {
                // sled keeps everything in one file, `db`, in the directory.
                let file = std::fs::File::open(config.data_dir.join("db"))?;
                // The directory entries (the file itself, `conf`) must
                // survive too.
                std::fs::File::open(&config.data_dir)?.sync_all()?;
                return Ok((db, file));
            }
            // The lock is released once the previous instance's last handle
            // is dropped; wait for that, with a deadline.
            Err(sled::Error::Io(e)) if Instant::now() < deadline => {
                tracing::debug!(error = %e, dir = %config.data_dir.display(), "Data directory busy; retrying.");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The byte side of the snapshot policy (openraft 0.9's own policy counts
/// entries, and a few entries of 256 KiB weigh as much as thousands of
/// small ones): the bytes appended to the log since the last snapshot
/// began, or since the node started, and a signal once they reach a limit.
#[derive(Debug, Default)]
pub struct LogGrowth {
    bytes: AtomicU64,
    /// 0: no limit.
    limit: AtomicU64,
    reached: tokio::sync::Notify,
}

impl LogGrowth {
    /// Counts `n` bytes appended.
    pub(crate) fn add(&self, n: u64) {
        let total = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        let limit = self.limit.load(Ordering::Relaxed);
        if limit > 0 && total >= limit {
            self.reached.notify_one();
        }
    }

    /// A snapshot began: what it covers no longer counts.
    pub(crate) fn reset(&self) {
        self.bytes.store(0, Ordering::Relaxed);
    }

    /// The bytes appended since the last snapshot began (or the start).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Sets the limit (0: none).
    pub fn set_limit(&self, limit: u64) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Waits until the bytes reach the limit.
    pub async fn reached(&self) {
        loop {
            let notified = self.reached.notified();
            let limit = self.limit.load(Ordering::Relaxed);
            if limit > 0 && self.bytes() >= limit {
                return;
            }
            notified.await;
        }
    }
}

/// Open (or create) a node's storage: its log store and state machine.
pub fn open_storage<L: StateMachineLogic>(
    config: &StorageConfig,
    logic: Arc<L>,
) -> Result<(LogStore<L>, SledStateMachine<L>), Error> {
    let db = open_db(config)?;
    let growth = Arc::new(LogGrowth::default());
    let log_store = LogStore::open(db.clone(), growth.clone(), &config.data_dir)?;
    let state_machine = SledStateMachine::open(
        db,
        logic,
        growth,
        config.undo_memory_bytes_max,
        config.received_snapshot_bytes_max,
    )?;
    Ok((log_store, state_machine))
}

pub(crate) fn any_error(e: impl std::fmt::Display) -> openraft::AnyError {
    openraft::AnyError::error(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// sled's own flusher writes out a small write (far from filling an I/O
    /// buffer) with no flush of ours: what is written between our flushes
    /// does not stay in memory.
    #[test]
    fn sled_writes_out_what_it_holds_without_our_flush() {
        let dir = tempfile::tempdir().unwrap();
        let (db, _file) = open_sled(&StorageConfig::new(dir.path())).unwrap();
        let marker = b"unflushed-probe-7c41e0d2".repeat(8);
        db.open_tree("probe")
            .unwrap()
            .insert(b"k", marker.clone())
            .unwrap();
        let path = dir.path().join("db");
        tollgate_testkit::wait_until_blocking(
            "sled's own flusher to write the value out",
            Duration::from_secs(20),
            || {
                let bytes = std::fs::read(&path).map_err(|e| e.to_string())?;
                if bytes.windows(marker.len()).any(|w| w == marker) {
                    Ok(())
                } else {
                    Err(format!("sled's file, {} bytes, without it", bytes.len()))
                }
            },
        )
        .unwrap();
    }
}
