//! The ordered key-value storage under the log store and the state machine:
//! sled on disk, or [`MemDisk`], a disk in memory that a simulation (or a
//! test) can fail and crash on command.
//!
//! Both backends have sled's shape (named trees of ordered keys, atomic
//! batches, one durability point for everything: [`Db::flush`]), so the
//! store's code is one code path whichever is underneath.
//!
//! What [`MemDisk`] promises, and so what the code above may rely on:
//! - A write is visible to every reader at once (as in sled's memory).
//! - Only what a successful [`Db::flush`] covered survives
//!   [`MemDisk::crash`], plus, at the crash's choice, a prefix of the
//!   writes after it: sled writes its log in order, so what reaches the
//!   disk unflushed is a prefix. A batch survives whole or not at all.
//! - A failed flush makes nothing durable; the writes stay visible but
//!   unflushed, and a crash can lose them (as after a failed fsync).
//! - A failed write changes nothing.
//! - Handles on a disk that crashed fail every write and read nothing: the
//!   tasks of a node that "died" cannot touch its successor's disk.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};

/// Storage failed: sled's error, or an I/O error (a memory disk's injected
/// fault, a crashed disk, a storage task that died). Its own type, so that
/// this module depends on nothing else of the crate; it becomes
/// [`crate::Error`] with `?`.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    /// sled failed.
    #[error("{0}")]
    Sled(#[from] sled::Error),
    /// An I/O failure, injected or real.
    #[error("{0}")]
    Io(#[from] io::Error),
}

type Error = KvError;

/// A stored value. sled's own type, which the memory backend also uses, so
/// values pass between the two without a copy.
pub type Value = sled::IVec;

/// One atomic group of writes to one tree.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// Set `key` to `value`.
    pub fn insert(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.ops
            .push((key.as_ref().to_vec(), Some(value.as_ref().to_vec())));
    }

    /// Remove `key`.
    pub fn remove(&mut self, key: impl AsRef<[u8]>) {
        self.ops.push((key.as_ref().to_vec(), None));
    }

    fn into_sled(self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (key, value) in self.ops {
            match value {
                Some(value) => batch.insert(key, value),
                None => batch.remove(key),
            }
        }
        batch
    }
}

/// A handle on the storage of one node: sled with its data file, or a
/// [`MemDisk`]. Cheap to clone.
#[derive(Clone)]
pub struct Db {
    kind: DbKind,
}

#[derive(Clone)]
enum DbKind {
    Sled {
        db: sled::Db,
        /// sled's data file, fsynced after every flush (see
        /// [`super::open_sled`]).
        file: Arc<std::fs::File>,
    },
    Memory(MemDisk),
}

impl Db {
    pub(crate) fn sled(db: sled::Db, file: std::fs::File) -> Db {
        Db {
            kind: DbKind::Sled {
                db,
                file: Arc::new(file),
            },
        }
    }

    pub(crate) fn memory(disk: MemDisk) -> Db {
        Db {
            kind: DbKind::Memory(disk),
        }
    }

    /// The memory disk this storage is on, if it is.
    pub(crate) fn memory_disk(&self) -> Option<MemDisk> {
        match &self.kind {
            DbKind::Memory(disk) => Some(disk.clone()),
            DbKind::Sled { .. } => None,
        }
    }

    /// Whether the storage is in memory (then nothing blocks: flushes and
    /// copies run inline instead of on threads, which keeps a simulation
    /// deterministic).
    pub fn is_memory(&self) -> bool {
        matches!(self.kind, DbKind::Memory(_))
    }

    /// Open (or create) the tree `name`.
    pub fn open_tree(&self, name: impl AsRef<[u8]>) -> Result<Tree, Error> {
        match &self.kind {
            DbKind::Sled { db, .. } => Ok(Tree {
                kind: TreeKind::Sled(db.open_tree(name)?),
            }),
            DbKind::Memory(disk) => {
                let name = name.as_ref().to_vec();
                disk.lock().live_mut()?.entry(name.clone()).or_default();
                Ok(Tree {
                    kind: TreeKind::Memory {
                        disk: disk.clone(),
                        name,
                    },
                })
            }
        }
    }

    /// The names of every tree.
    pub fn tree_names(&self) -> Result<Vec<Vec<u8>>, Error> {
        match &self.kind {
            DbKind::Sled { db, .. } => {
                Ok(db.tree_names().into_iter().map(|n| n.to_vec()).collect())
            }
            DbKind::Memory(disk) => Ok(disk.lock().live()?.keys().cloned().collect()),
        }
    }

    /// Remove the tree `name` and everything in it; whether it existed.
    pub fn drop_tree(&self, name: impl AsRef<[u8]>) -> Result<bool, Error> {
        match &self.kind {
            DbKind::Sled { db, .. } => Ok(db.drop_tree(name)?),
            DbKind::Memory(disk) => {
                let name = name.as_ref().to_vec();
                let mut state = disk.lock();
                state.check_write()?;
                let existed = state.live_mut()?.remove(&name).is_some();
                state.journal.push(JournalOp::DropTree(name));
                Ok(existed)
            }
        }
    }

    /// A number never returned before by this storage, across restarts.
    pub fn generate_id(&self) -> Result<u64, Error> {
        match &self.kind {
            DbKind::Sled { db, .. } => Ok(db.generate_id()?),
            DbKind::Memory(disk) => {
                let mut state = disk.lock();
                state.live()?;
                state.next_id += 1;
                Ok(state.next_id)
            }
        }
    }

    /// Make every write so far durable. Blocking on sled: sled's flush,
    /// then an fdatasync of its data file.
    pub fn flush(&self) -> Result<(), Error> {
        match &self.kind {
            DbKind::Sled { db, file } => {
                db.flush()?;
                file.sync_data()?;
                Ok(())
            }
            DbKind::Memory(disk) => disk.lock().flush(),
        }
    }

    /// [`Self::flush`] off the async runtime's threads (inline in memory).
    pub async fn flush_async(&self) -> Result<(), Error> {
        let this = self.clone();
        self.run_blocking(move || this.flush()).await
    }

    /// Run `work`, which blocks on storage: on a blocking thread for sled,
    /// inline for memory.
    pub async fn run_blocking<T: Send + 'static, E: From<KvError> + Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, E> + Send + 'static,
    ) -> Result<T, E> {
        if self.is_memory() {
            return work();
        }
        tokio::task::spawn_blocking(work).await.map_err(|e| {
            E::from(KvError::Io(io::Error::other(format!(
                "storage task failed: {e}"
            ))))
        })?
    }
}

/// One tree: ordered keys and their values.
#[derive(Clone)]
pub struct Tree {
    kind: TreeKind,
}

#[derive(Clone)]
enum TreeKind {
    Sled(sled::Tree),
    Memory { disk: MemDisk, name: Vec<u8> },
}

impl Tree {
    /// The value under `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Value>, Error> {
        match &self.kind {
            TreeKind::Sled(tree) => Ok(tree.get(key)?),
            TreeKind::Memory { disk, name } => {
                let state = disk.lock();
                Ok(state.tree(name)?.and_then(|t| t.get(key.as_ref()).cloned()))
            }
        }
    }

    /// Set `key` to `value`.
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<(), Error> {
        match &self.kind {
            TreeKind::Sled(tree) => {
                tree.insert(key.as_ref(), value.as_ref())?;
                Ok(())
            }
            TreeKind::Memory { .. } => {
                let mut batch = Batch::default();
                batch.insert(key, value);
                self.apply_batch(batch)
            }
        }
    }

    /// Remove `key`.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<(), Error> {
        match &self.kind {
            TreeKind::Sled(tree) => {
                tree.remove(key)?;
                Ok(())
            }
            TreeKind::Memory { .. } => {
                let mut batch = Batch::default();
                batch.remove(key);
                self.apply_batch(batch)
            }
        }
    }

    /// Make every write of `batch`, atomically.
    pub fn apply_batch(&self, batch: Batch) -> Result<(), Error> {
        match &self.kind {
            TreeKind::Sled(tree) => Ok(tree.apply_batch(batch.into_sled())?),
            TreeKind::Memory { disk, name } => disk.lock().apply(name, batch),
        }
    }

    /// The last key and its value.
    pub fn last(&self) -> Result<Option<(Value, Value)>, Error> {
        match &self.kind {
            TreeKind::Sled(tree) => Ok(tree.last()?),
            TreeKind::Memory { disk, name } => {
                let state = disk.lock();
                Ok(state.tree(name)?.and_then(|t| {
                    t.last_key_value()
                        .map(|(k, v)| (Value::from(k.as_slice()), v.clone()))
                }))
            }
        }
    }

    /// The number of keys. Walks the whole tree on sled.
    pub fn len(&self) -> Result<usize, Error> {
        match &self.kind {
            TreeKind::Sled(tree) => Ok(tree.len()),
            TreeKind::Memory { disk, name } => Ok(disk.lock().tree(name)?.map_or(0, |t| t.len())),
        }
    }

    /// Whether the tree holds no key.
    pub fn is_empty(&self) -> Result<bool, Error> {
        match &self.kind {
            TreeKind::Sled(tree) => Ok(tree.is_empty()),
            TreeKind::Memory { .. } => Ok(self.len()? == 0),
        }
    }

    /// The keys in `range`, in order, with their values. Lazy: a write
    /// made while iterating may or may not be seen, as in sled.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        let start = owned(range.start_bound());
        let end = owned(range.end_bound());
        match &self.kind {
            TreeKind::Sled(tree) => Iter {
                kind: IterKind::Sled(tree.range::<Vec<u8>, _>((start, end))),
            },
            TreeKind::Memory { disk, name } => Iter {
                kind: IterKind::Memory {
                    disk: disk.clone(),
                    name: name.clone(),
                    next: start,
                    end,
                },
            },
        }
    }

    /// The keys that start with `prefix`, in order, with their values.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Iter {
        let prefix = prefix.as_ref();
        match prefix_end(prefix) {
            Some(end) => self.range(prefix.to_vec()..end),
            None => self.range(prefix.to_vec()..),
        }
    }
}

fn owned<K: AsRef<[u8]>>(bound: Bound<&K>) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The smallest key above every key that starts with `prefix` (none when
/// the prefix is all 0xff bytes, or empty).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// An iterator over a tree's keys and values, in key order.
pub struct Iter {
    kind: IterKind,
}

enum IterKind {
    Sled(sled::Iter),
    /// Finds each next key under the lock, after the last one returned, so
    /// it holds no lock between items.
    Memory {
        disk: MemDisk,
        name: Vec<u8>,
        next: Bound<Vec<u8>>,
        end: Bound<Vec<u8>>,
    },
}

impl Iterator for Iter {
    type Item = Result<(Value, Value), Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.kind {
            IterKind::Sled(iter) => iter.next().map(|item| item.map_err(Error::from)),
            IterKind::Memory {
                disk,
                name,
                next,
                end,
            } => {
                let state = disk.lock();
                let tree = match state.tree(name) {
                    Ok(Some(tree)) => tree,
                    Ok(None) => return None,
                    Err(e) => return Some(Err(e)),
                };
                if range_is_empty(next, end) {
                    return None;
                }
                let found = tree
                    .range::<Vec<u8>, _>((next.clone(), end.clone()))
                    .next()
                    .map(|(k, v)| (k.clone(), v.clone()));
                let (key, value) = found?;
                *next = Bound::Excluded(key.clone());
                Some(Ok((Value::from(key), value)))
            }
        }
    }
}

/// Whether no key lies between `start` and `end` (`BTreeMap::range`
/// panics on such bounds; sled answers nothing).
fn range_is_empty(start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e)) => s >= e,
        _ => false,
    }
}

type Trees = BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Value>>;

#[derive(Debug, Clone)]
enum JournalOp {
    Batch(Vec<u8>, Vec<(Vec<u8>, Option<Vec<u8>>)>),
    DropTree(Vec<u8>),
}

fn replay(trees: &mut Trees, op: &JournalOp) {
    match op {
        JournalOp::Batch(name, ops) => {
            let tree = trees.entry(name.clone()).or_default();
            for (key, value) in ops {
                match value {
                    Some(value) => {
                        tree.insert(key.clone(), Value::from(value.as_slice()));
                    }
                    None => {
                        tree.remove(key);
                    }
                }
            }
        }
        JournalOp::DropTree(name) => {
            trees.remove(name);
        }
    }
}

/// Faults a [`MemDisk`] injects until they are cleared.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Every write (insert, remove, batch, dropping a tree) fails.
    pub fail_writes: bool,
    /// Every flush fails, and makes nothing durable.
    pub fail_flushes: bool,
}

/// What a [`MemDisk`] has done, for tests and the simulation's log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskStats {
    /// Batches written (an insert or remove is a batch of one).
    pub writes: u64,
    /// Successful flushes.
    pub flushes: u64,
    /// Writes refused by an injected fault.
    pub failed_writes: u64,
    /// Flushes refused by an injected fault.
    pub failed_flushes: u64,
}

struct DiskState {
    /// `None` once the disk crashed: its handles are dead.
    live: Option<Trees>,
    /// What the last successful flush made durable.
    durable: Trees,
    /// The writes since the last successful flush, in order.
    journal: Vec<JournalOp>,
    next_id: u64,
    faults: Faults,
    stats: DiskStats,
    /// The one plain file of the node's storage, its log journal
    /// (`store::journal`), once made.
    file: Option<MemFile>,
}

/// A file on a [`MemDisk`]: its bytes as written, what the last sync made
/// durable, and the writes since, in order.
#[derive(Clone)]
struct MemFile {
    live: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<(u64, Vec<u8>)>,
}

fn write_at(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let end = offset as usize + data.len();
    if bytes.len() < end {
        bytes.resize(end, 0);
    }
    bytes[offset as usize..end].copy_from_slice(data);
}

fn crashed() -> Error {
    KvError::Io(io::Error::other(
        "storage is gone: the node crashed (a handle on a crashed memory disk)",
    ))
}

impl DiskState {
    fn live(&self) -> Result<&Trees, Error> {
        self.live.as_ref().ok_or_else(crashed)
    }

    fn live_mut(&mut self) -> Result<&mut Trees, Error> {
        self.live.as_mut().ok_or_else(crashed)
    }

    fn tree(&self, name: &[u8]) -> Result<Option<&BTreeMap<Vec<u8>, Value>>, Error> {
        Ok(self.live()?.get(name))
    }

    fn check_write(&mut self) -> Result<(), Error> {
        self.live()?;
        if self.faults.fail_writes {
            self.stats.failed_writes += 1;
            return Err(KvError::Io(io::Error::other(
                "injected fault: the disk refused a write",
            )));
        }
        Ok(())
    }

    fn apply(&mut self, name: &[u8], batch: Batch) -> Result<(), Error> {
        self.check_write()?;
        let live = self.live_mut()?;
        let Some(_) = live.get(name) else {
            return Err(KvError::Io(io::Error::other(format!(
                "tree {} was dropped",
                String::from_utf8_lossy(name)
            ))));
        };
        let op = JournalOp::Batch(name.to_vec(), batch.ops);
        replay(live, &op);
        self.journal.push(op);
        self.stats.writes += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        self.live()?;
        if self.faults.fail_flushes {
            self.stats.failed_flushes += 1;
            return Err(KvError::Io(io::Error::other(
                "injected fault: fsync failed",
            )));
        }
        for op in self.journal.drain(..) {
            replay(&mut self.durable, &op);
        }
        self.stats.flushes += 1;
        Ok(())
    }
}

impl DiskState {
    fn file(&self) -> io::Result<&MemFile> {
        self.live().map_err(io::Error::other)?;
        self.file
            .as_ref()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no journal on this disk"))
    }
}

/// A node's disk, in memory: what its storage wrote, what a flush made
/// durable, and the faults to inject. Cloning shares the disk.
#[derive(Clone)]
pub struct MemDisk {
    state: Arc<Mutex<DiskState>>,
}

impl Default for MemDisk {
    fn default() -> Self {
        MemDisk::new()
    }
}

impl fmt::Debug for MemDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemDisk")
            .field("crashed", &state.live.is_none())
            .field("unflushed_writes", &state.journal.len())
            .field("faults", &state.faults)
            .field("stats", &state.stats)
            .finish()
    }
}

impl MemDisk {
    /// An empty disk.
    pub fn new() -> MemDisk {
        MemDisk {
            state: Arc::new(Mutex::new(DiskState {
                live: Some(Trees::new()),
                durable: Trees::new(),
                journal: Vec::new(),
                next_id: 0,
                faults: Faults::default(),
                stats: DiskStats::default(),
                file: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        // Every holder leaves the state whole (a write is replayed before
        // it is journaled), so a panic elsewhere is no reason to stop.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inject `faults` from now on (replacing the previous ones).
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = faults;
    }

    /// The faults being injected.
    pub fn faults(&self) -> Faults {
        self.lock().faults
    }

    /// What the disk has done so far.
    pub fn stats(&self) -> DiskStats {
        self.lock().stats
    }

    /// The journal file's length; `None` when it was never made.
    pub(crate) fn file_len(&self) -> io::Result<Option<u64>> {
        let state = self.lock();
        state.live().map_err(io::Error::other)?;
        Ok(state.file.as_ref().map(|f| f.live.len() as u64))
    }

    /// Makes the journal file, `len` zeros, durably (as the disk version's
    /// write, sync and rename).
    pub(crate) fn file_create(&self, len: u64) -> io::Result<()> {
        let mut state = self.lock();
        state.check_write().map_err(io::Error::other)?;
        let zeros = vec![0u8; len as usize];
        state.file = Some(MemFile {
            live: zeros.clone(),
            durable: zeros,
            unsynced: Vec::new(),
        });
        Ok(())
    }

    pub(crate) fn file_read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let state = self.lock();
        let file = state.file()?;
        let end = offset as usize + buf.len();
        if end > file.live.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end of the journal",
            ));
        }
        buf.copy_from_slice(&file.live[offset as usize..end]);
        Ok(())
    }

    /// Writes into the journal file (durable at the next sync; a fault that
    /// refuses writes refuses this too).
    pub(crate) fn file_write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        state.file()?;
        state.check_write().map_err(io::Error::other)?;
        let file = state.file.as_mut().expect("checked above");
        write_at(&mut file.live, offset, data);
        file.unsynced.push((offset, data.to_vec()));
        state.stats.writes += 1;
        Ok(())
    }

    /// `fdatasync` of the journal file (a fault that fails flushes fails
    /// this too, and makes nothing durable).
    pub(crate) fn file_sync(&self) -> io::Result<()> {
        let mut state = self.lock();
        state.file()?;
        if state.faults.fail_flushes {
            state.stats.failed_flushes += 1;
            return Err(io::Error::other("injected fault: fsync failed"));
        }
        let file = state.file.as_mut().expect("checked above");
        for (offset, data) in file.unsynced.drain(..) {
            write_at(&mut file.durable, offset, &data);
        }
        state.stats.flushes += 1;
        Ok(())
    }

    /// Writes made since the last successful flush.
    pub fn unflushed_writes(&self) -> usize {
        self.lock().journal.len()
    }

    /// Whether this disk has crashed (its handles are dead).
    pub fn is_crashed(&self) -> bool {
        self.lock().live.is_none()
    }

    /// The machine lost power: this disk's handles die, and the disk a
    /// restarted node finds is returned. It holds what was flushed, plus
    /// the first `unflushed_kept` writes made after the last flush (at most
    /// as many as there were: sled writes its log in order, so what reached
    /// the platter unflushed is a prefix), and of the journal file what was
    /// synced plus its first `unflushed_kept` writes after. Faults are
    /// cleared.
    pub fn crash(&self, unflushed_kept: usize) -> MemDisk {
        let mut state = self.lock();
        let mut durable = state.durable.clone();
        let kept = unflushed_kept.min(state.journal.len());
        for op in &state.journal[..kept] {
            replay(&mut durable, op);
        }
        let file = state.file.as_ref().map(|file| {
            let mut bytes = file.durable.clone();
            for (offset, data) in file.unsynced.iter().take(unflushed_kept) {
                write_at(&mut bytes, *offset, data);
            }
            MemFile {
                live: bytes.clone(),
                durable: bytes,
                unsynced: Vec::new(),
            }
        });
        state.live = None;
        let next_id = state.next_id;
        let stats = state.stats;
        drop(state);
        MemDisk {
            state: Arc::new(Mutex::new(DiskState {
                live: Some(durable.clone()),
                durable,
                journal: Vec::new(),
                // Ids stay unique across the crash.
                next_id,
                faults: Faults::default(),
                stats,
                file,
            })),
        }
    }

    /// Every durable key of every tree, for tests that compare what
    /// survives.
    pub fn durable_contents(&self) -> BTreeMap<Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>> {
        self.lock()
            .durable
            .iter()
            .map(|(name, tree)| {
                let tree = tree.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect();
                (name.clone(), tree)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk_and_tree() -> (MemDisk, Db, Tree) {
        let disk = MemDisk::new();
        let db = Db::memory(disk.clone());
        let tree = db.open_tree("t").unwrap();
        (disk, db, tree)
    }

    fn keys(iter: Iter) -> Vec<Vec<u8>> {
        iter.map(|item| item.unwrap().0.to_vec()).collect()
    }

    #[test]
    fn ranges_and_prefixes_follow_key_order() {
        let (_disk, _db, tree) = disk_and_tree();
        for key in [&b"a1"[..], b"a2", b"b", b"a\xff", b"\xff\xff"] {
            tree.insert(key, b"v").unwrap();
        }
        assert_eq!(
            keys(tree.scan_prefix(b"a")),
            vec![b"a1".to_vec(), b"a2".to_vec(), b"a\xff".to_vec()]
        );
        assert_eq!(keys(tree.scan_prefix(b"\xff")), vec![b"\xff\xff".to_vec()]);
        assert_eq!(keys(tree.range(b"a2".to_vec()..=b"b".to_vec())).len(), 3);
        assert_eq!(keys(tree.range::<Vec<u8>, _>(..)).len(), 5);
        assert!(keys(tree.range(b"b".to_vec()..b"a".to_vec())).is_empty());
        assert!(keys(tree.range(b"b".to_vec()..b"b".to_vec())).is_empty());
        assert_eq!(
            tree.last().unwrap().unwrap().0.to_vec(),
            b"\xff\xff".to_vec()
        );
    }

    /// A disk with one flushed key, then two unflushed writes: an insert,
    /// and a batch of an insert and a removal of the flushed key.
    fn flushed_then_two_writes() -> (MemDisk, Tree) {
        let (disk, db, tree) = disk_and_tree();
        tree.insert(b"flushed", b"1").unwrap();
        db.flush().unwrap();
        tree.insert(b"second", b"2").unwrap();
        let mut batch = Batch::default();
        batch.insert(b"third", b"3");
        batch.remove(b"flushed");
        tree.apply_batch(batch).unwrap();
        assert_eq!(disk.unflushed_writes(), 2);
        (disk, tree)
    }

    #[test]
    fn a_crash_keeps_what_was_flushed_and_a_prefix_of_the_rest() {
        let (disk, tree) = flushed_then_two_writes();
        let lost = disk.crash(0);
        assert!(disk.is_crashed());
        assert!(
            tree.insert(b"late", b"x").is_err(),
            "a dead handle writes nothing"
        );
        let t = Db::memory(lost).open_tree("t").unwrap();
        assert_eq!(keys(t.range::<Vec<u8>, _>(..)), vec![b"flushed".to_vec()]);

        // Keeping one unflushed write keeps the first, never part of the
        // batch after it.
        let (disk, _tree) = flushed_then_two_writes();
        let t = Db::memory(disk.crash(1)).open_tree("t").unwrap();
        assert_eq!(
            keys(t.range::<Vec<u8>, _>(..)),
            vec![b"flushed".to_vec(), b"second".to_vec()]
        );

        // Keeping both keeps the batch whole.
        let (disk, _tree) = flushed_then_two_writes();
        let t = Db::memory(disk.crash(2)).open_tree("t").unwrap();
        assert_eq!(
            keys(t.range::<Vec<u8>, _>(..)),
            vec![b"second".to_vec(), b"third".to_vec()]
        );
    }

    #[test]
    fn injected_faults_refuse_and_change_nothing_durable() {
        let (disk, db, tree) = disk_and_tree();
        tree.insert(b"a", b"1").unwrap();
        disk.set_faults(Faults {
            fail_writes: true,
            fail_flushes: false,
        });
        assert!(tree.insert(b"b", b"2").is_err());
        assert_eq!(
            tree.get(b"b").unwrap(),
            None,
            "a refused write changes nothing"
        );
        disk.set_faults(Faults {
            fail_writes: false,
            fail_flushes: true,
        });
        assert!(db.flush().is_err());
        assert_eq!(tree.get(b"a").unwrap().unwrap().to_vec(), b"1".to_vec());
        assert!(disk
            .durable_contents()
            .get(&b"t"[..])
            .is_none_or(|t| t.is_empty()));
        let stats = disk.stats();
        assert_eq!((stats.failed_writes, stats.failed_flushes), (1, 1));
        let t = Db::memory(disk.crash(0)).open_tree("t").unwrap();
        assert!(t.is_empty().unwrap(), "a failed flush made nothing durable");
    }

    #[test]
    fn dropped_trees_and_ids_survive_as_flushed() {
        let (disk, db, tree) = disk_and_tree();
        tree.insert(b"a", b"1").unwrap();
        let first = db.generate_id().unwrap();
        db.flush().unwrap();
        assert!(db.drop_tree("t").unwrap());
        assert!(
            tree.insert(b"b", b"2").is_err(),
            "writes to a dropped tree fail"
        );
        assert!(tree.get(b"a").unwrap().is_none());
        db.flush().unwrap();
        let restarted = Db::memory(disk.crash(0));
        assert!(restarted.tree_names().unwrap().is_empty());
        assert!(restarted.generate_id().unwrap() > first);
    }
}
