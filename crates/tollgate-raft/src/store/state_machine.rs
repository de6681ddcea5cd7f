//! The state machine on sled, its read view, and its snapshot builder.

// openraft's StorageError is large; the trait methods return it anyway.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, Snapshot, StorageIOError};

use super::snapshot::{read_pairs, Pair, SnapshotWriter};
use super::value::{self, FieldNames};
use super::{
    any_error, LogGrowth, META_SM_GENERATION, META_SNAPSHOT_DATA, META_SNAPSHOT_LEN,
    META_SNAPSHOT_META, META_SNAPSHOT_PIECES, META_SNAPSHOT_SET, SM_TREE_PREFIX, TREE_META,
};
use crate::codec::{decode_stored, encode};
use crate::error::Error;
use crate::kv::{Batch, Db, Tree, Value};
use crate::logic::{
    ApplyContext, ReadError, ReadState, StateMachineLogic, Write, KEY_BYTES_MAX, VALUE_BYTES_MAX,
};
use crate::snapshot_data::{piece_key, remove_prefix, SnapshotData, StoredPieces, PIECE_BYTES};
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const SYS_LAST_APPLIED: &[u8] = b"\x00last_applied";
const SYS_MEMBERSHIP: &[u8] = b"\x00membership";
/// The form the data values are stored in: absent before [`value`]'s
/// binary form existed, [`VALUE_FORMAT`] once every value was rewritten.
const SYS_VALUE_FORMAT: &[u8] = b"\x00value_format";
const VALUE_FORMAT: &[u8] = b"1";
const DATA_PREFIX: u8 = 0x01;

fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(DATA_PREFIX);
    k.extend_from_slice(key);
    k
}

fn sm_tree_name(generation: u64) -> String {
    format!("{SM_TREE_PREFIX}{generation}")
}

#[derive(Clone)]
struct Generation {
    number: u64,
    tree: Tree,
    /// Applies to this generation not yet written into its tree.
    pending: Arc<RwLock<Pending>>,
}

impl Generation {
    fn new(number: u64, tree: Tree) -> Self {
        Generation {
            number,
            tree,
            pending: Arc::new(RwLock::new(Pending::default())),
        }
    }
}

/// Applies held in memory before they go into sled.
///
/// sled seals and writes out its I/O buffer twice at every `apply_batch`
/// (handing both writes to its I/O threads), which cost a commit ≈ 130 µs
/// on the leader and a quarter of a region's CPU when every apply was a
/// batch of its own. So an apply's effects land here, atomically for
/// readers (one write lock), and go into sled in one batch with
/// `last_applied` once [`PENDING_APPLIES_MAX`] applies or
/// [`PENDING_BYTES_MAX`] bytes have gathered, before a snapshot begins and
/// at a clean stop. Nothing here needs to be durable: the applied state was
/// never flushed on the write path; a node that stops uncleanly applies
/// again from the log what sled does not hold, and answers reads only once
/// it has caught up ([`crate::recovery`]).
#[derive(Default)]
struct Pending {
    /// The role's keys and their values (`None`: deleted).
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    last_applied: Option<LogId>,
    membership: Option<StoredMembership>,
    applies: usize,
    bytes: usize,
}

/// Applies gathered before they are written into sled.
pub const PENDING_APPLIES_MAX: usize = 64;
/// Bytes of applied writes (keys, values and the map's own, roughly)
/// gathered before they are written into sled.
///
/// Small on purpose: it keeps sled's batches near the size one large
/// apply made before applies gathered. At 1 MiB, a region loading
/// entitlements (entries of up to 256 KiB) wrote batches of about 1 MiB:
/// at 200,000 entitlements the process held 1,562 MiB resident instead of
/// 399, the disk 426 MiB instead of 256, a snapshot took 3.5 s instead of
/// 1.5 and a write during it waited 38 ms at p99 instead of 10
/// (`region_scale`). Those figures were taken while sled's own flusher
/// was off, which alone cost twice the memory (`super::SLED_FLUSH_EVERY_MS`);
/// with it on, 1 MiB still measured worse than 64 KiB: 256 MiB against
/// 190, and 28 ms at p99 against 5.2. Sixty-four small writes (a
/// one-client workload) still gather whole.
pub const PENDING_BYTES_MAX: usize = 64 << 10;

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // Its holders never leave it half-written: a panic elsewhere
    // (poisoning) is no reason to stop.
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The role's pairs under `prefix` from `start` on, in key order: `tree`'s
/// with `pending`'s over them; at most `limit`.
fn merged_range(
    tree: &Tree,
    pending: &RwLock<Pending>,
    names: &FieldNames,
    prefix: &[u8],
    start: &[u8],
    limit: usize,
) -> Result<Vec<Pair>, Error> {
    // What is pending in the range, copied first: a write-back that runs
    // meanwhile moves values into the tree unchanged.
    let pending: Vec<(Vec<u8>, Option<Vec<u8>>)> = read_lock(pending)
        .writes
        .range(start.to_vec()..)
        .take_while(|(key, _)| key.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut pending = pending.into_iter();
    let full_prefix = data_key(prefix);
    let mut stored = tree.range(data_key(start)..);
    let mut next_stored = || -> Result<Option<(Vec<u8>, Value)>, Error> {
        match stored.next().transpose()? {
            Some((k, v)) if k.starts_with(&full_prefix) => Ok(Some((k[1..].to_vec(), v))),
            _ => Ok(None),
        }
    };
    let mut out = Vec::new();
    let (mut pending_head, mut stored_head) = (pending.next(), next_stored()?);
    while out.len() < limit {
        // The smaller key next; on a tie the pending value, over the stored.
        let take_pending = match (&pending_head, &stored_head) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some((p, _)), Some((s, _))) => p <= s,
        };
        if take_pending {
            let Some((key, value)) = pending_head.take() else {
                break;
            };
            if stored_head.as_ref().is_some_and(|(s, _)| *s == key) {
                stored_head = next_stored()?;
            }
            pending_head = pending.next();
            if let Some(value) = value {
                out.push((key, value));
            }
        } else if let Some((key, stored)) = stored_head.take() {
            let value = read_value(&key, &stored, names)?;
            out.push((key, value));
            stored_head = next_stored()?;
        }
    }
    Ok(out)
}

/// A read-only view of the applied state, for serving reads on any node
/// (leader, follower or learner) while Raft applies and snapshots go on.
/// Cheap to clone.
#[derive(Clone)]
pub struct StateView {
    current: Arc<RwLock<Generation>>,
    names: Arc<FieldNames>,
}

impl StateView {
    fn tree(&self) -> Tree {
        read_lock(&self.current).tree.clone()
    }

    fn generation(&self) -> Generation {
        read_lock(&self.current).clone()
    }

    fn swap(&self, next: Generation) {
        *write_lock(&self.current) = next;
    }

    /// The value of the role's `key` in the applied state.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let g = self.generation();
        if let Some(value) = read_lock(&g.pending).writes.get(key) {
            return Ok(value.clone());
        }
        match g.tree.get(data_key(key))? {
            Some(stored) => Ok(Some(read_value(key, &stored, &self.names)?)),
            None => Ok(None),
        }
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Result<Option<LogId>, Error> {
        let g = self.generation();
        if let Some(applied) = read_lock(&g.pending).last_applied {
            return Ok(Some(applied));
        }
        read_sys::<Option<LogId>>(&g.tree, SYS_LAST_APPLIED).map(Option::flatten)
    }

    /// Up to `limit` pairs whose key starts with `prefix` and sorts after
    /// `after` (exclusive), in key order: paginated listing for readers.
    pub fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Pair>, Error> {
        let g = self.generation();
        let start = match after {
            Some(after) if after >= prefix => {
                // Just past `after`: the same bytes with a 0 appended.
                let mut k = after.to_vec();
                k.push(0);
                k
            }
            _ => prefix.to_vec(),
        };
        merged_range(&g.tree, &g.pending, &self.names, prefix, &start, limit)
    }

    /// Every key-value pair of the applied state, in key order. For tests
    /// and small states only.
    pub fn dump(&self) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, Error> {
        let g = self.generation();
        let pairs = merged_range(&g.tree, &g.pending, &self.names, b"", b"", usize::MAX)?;
        Ok(pairs.into_iter().collect())
    }
}

impl ReadState for StateView {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        StateView::get(self, key).map_err(|e| ReadError(e.to_string()))
    }
}

/// A stored data value as the role wrote it.
fn read_value(key: &[u8], stored: &[u8], names: &FieldNames) -> Result<Vec<u8>, Error> {
    value::decode(stored, names)
        .map(|v| v.into_owned())
        .map_err(|reason| {
            Error::InvalidArgument(format!(
                "stored value under {} does not decode: {reason}",
                String::from_utf8_lossy(key)
            ))
        })
}

fn read_sys<T: serde::de::DeserializeOwned>(tree: &Tree, key: &[u8]) -> Result<Option<T>, Error> {
    match tree.get(key)? {
        Some(v) => Ok(Some(decode_stored(&String::from_utf8_lossy(key), &v)?)),
        None => Ok(None),
    }
}

/// The state as it stands inside a batch being applied: the writes of the
/// batch's earlier commands over the applies still pending over the tree's
/// contents. Only the state-machine task writes `base.pending`, so it stays
/// still while a batch applies.
struct Overlay<'a> {
    base: &'a Generation,
    names: &'a FieldNames,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Overlay<'_> {
    /// Marks every key under `prefix` deleted: those in the tree, those
    /// pending and those written earlier in this batch.
    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<(), ReadError> {
        let mut keys: Vec<Vec<u8>> = self
            .pending
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, _)| key.clone())
            .collect();
        keys.extend(
            read_lock(&self.base.pending)
                .writes
                .range(prefix.to_vec()..)
                .take_while(|(key, _)| key.starts_with(prefix))
                .map(|(key, _)| key.clone()),
        );
        for key in keys {
            self.pending.insert(key, None);
        }
        for item in self.base.tree.scan_prefix(data_key(prefix)) {
            let (key, _) = item.map_err(|e| ReadError(e.to_string()))?;
            self.pending.insert(key[1..].to_vec(), None);
        }
        Ok(())
    }
}

impl ReadState for Overlay<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        if let Some(v) = read_lock(&self.base.pending).writes.get(key) {
            return Ok(v.clone());
        }
        match self
            .base
            .tree
            .get(data_key(key))
            .map_err(|e| ReadError(e.to_string()))?
        {
            Some(stored) => read_value(key, &stored, self.names)
                .map(Some)
                .map_err(|e| ReadError(e.to_string())),
            None => Ok(None),
        }
    }
}

/// The scratch tree an undo map moves to once it outgrows its memory.
const TREE_UNDO: &str = "snapshot.undo";

/// While a snapshot copies the state, the value each data key had when the
/// snapshot began, recorded by the first apply that writes the key
/// (`None`: it did not exist). The copy reads these instead of the live
/// values, so applies go on while it runs.
///
/// Bounded: past `memory_bytes_max` the entries go to a scratch tree,
/// which is never flushed on purpose (a crash ends the build anyway) and
/// is dropped when the build ends and at every start.
struct Undo {
    memory: HashMap<Vec<u8>, Option<Value>>,
    memory_bytes: usize,
    memory_bytes_max: usize,
    spill: Option<Tree>,
    spilled: usize,
}

/// What one entry costs in memory, roughly: the bytes and the map's own.
fn undo_entry_bytes(key: &[u8], old: &Option<Value>) -> usize {
    key.len() + old.as_ref().map_or(0, |v| v.len()) + 64
}

impl Undo {
    fn new(memory_bytes_max: usize) -> Self {
        Undo {
            memory: HashMap::new(),
            memory_bytes: 0,
            memory_bytes_max,
            spill: None,
            spilled: 0,
        }
    }

    fn len(&self) -> usize {
        self.memory.len() + self.spilled
    }

    /// The value `key` had when the snapshot began, if an apply has
    /// written it since.
    fn get(&self, key: &[u8]) -> Result<Option<Option<Value>>, Error> {
        if let Some(old) = self.memory.get(key) {
            return Ok(Some(old.clone()));
        }
        match &self.spill {
            Some(tree) => Ok(tree.get(key)?.map(|v| decode_undo(&v))),
            None => Ok(None),
        }
    }

    /// Records `key`'s value at the snapshot's point, unless recorded.
    fn record(&mut self, db: &Db, key: Vec<u8>, tree: &Tree) -> Result<(), Error> {
        if self.get(&key)?.is_some() {
            return Ok(());
        }
        let old = tree.get(&key)?;
        let bytes = undo_entry_bytes(&key, &old);
        if self.memory_bytes + bytes <= self.memory_bytes_max {
            self.memory_bytes += bytes;
            self.memory.insert(key, old);
            return Ok(());
        }
        let spill = match &self.spill {
            Some(spill) => spill,
            None => {
                tracing::info!(
                    entries = self.memory.len(),
                    bytes = self.memory_bytes,
                    "A snapshot's undo map reached its memory bound; the rest goes to disk."
                );
                self.spill.insert(db.open_tree(TREE_UNDO)?)
            }
        };
        let mut value = Vec::with_capacity(1 + old.as_ref().map_or(0, |v| v.len()));
        match old {
            Some(old) => {
                value.push(1);
                value.extend_from_slice(&old);
            }
            None => value.push(0),
        }
        spill.insert(&key, value)?;
        self.spilled += 1;
        Ok(())
    }

    /// Every entry, from memory then from disk.
    fn for_each(
        &self,
        mut visit: impl FnMut(&[u8], &Option<Value>) -> Result<(), Error>,
    ) -> Result<(), Error> {
        for (key, old) in &self.memory {
            visit(key, old)?;
        }
        if let Some(spill) = &self.spill {
            for item in spill.range::<&[u8], _>(..) {
                let (key, value) = item?;
                visit(&key, &decode_undo(&value))?;
            }
        }
        Ok(())
    }
}

fn decode_undo(value: &[u8]) -> Option<Value> {
    match value.split_first() {
        Some((1, old)) => Some(Value::from(old)),
        _ => None,
    }
}

/// Locks a mutex whose holders never leave its value half-written, so a
/// panic elsewhere (poisoning) is no reason to stop.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The state machine of one node.
pub struct SledStateMachine<L> {
    db: Db,
    meta: Tree,
    view: StateView,
    logic: Arc<L>,
    /// Held by a snapshot build from its start to its end, and by an
    /// install while it switches the current snapshot: a generation is
    /// never dropped under a copy, and one build runs at a time.
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
    /// `Some` while a snapshot build copies the state.
    undo: Arc<Mutex<Option<Undo>>>,
    /// The current snapshot's pieces, once anyone has asked for them.
    current_pieces: Arc<Mutex<Option<Arc<StoredPieces>>>>,
    /// The log's growth since the last snapshot (reset when one begins).
    growth: Arc<LogGrowth>,
    /// How much of a snapshot's undo map stays in memory.
    undo_memory_bytes_max: usize,
    /// Largest snapshot this node accepts from a leader.
    received_snapshot_bytes_max: u64,
    /// Held by an apply and by a write-back of pending applies: the clean
    /// stop's write-back runs outside the state-machine task.
    apply_lock: Arc<Mutex<()>>,
}

impl<L: StateMachineLogic> SledStateMachine<L> {
    pub(crate) fn open(
        durable: Db,
        logic: Arc<L>,
        growth: Arc<LogGrowth>,
        undo_memory_bytes_max: usize,
        received_snapshot_bytes_max: u64,
    ) -> Result<Self, Error> {
        let db = durable.clone();
        // A build the node was running when it stopped left its scratch.
        db.drop_tree(TREE_UNDO)?;
        let meta = db.open_tree(TREE_META)?;
        let number: u64 = read_sys(&meta, META_SM_GENERATION)?.unwrap_or(0);
        let current_name = sm_tree_name(number);
        // Trees of other generations are leftovers of an install that crashed
        // before its flip, or of an old generation not yet dropped.
        for name in db.tree_names()? {
            let is_sm = name.starts_with(SM_TREE_PREFIX.as_bytes());
            if is_sm && name != current_name.as_bytes() {
                tracing::info!(tree = %String::from_utf8_lossy(&name), "Dropping stale state-machine tree.");
                db.drop_tree(&name)?;
            }
        }
        let tree = db.open_tree(&current_name)?;
        let names = Arc::new(FieldNames::new(L::FIELD_NAMES));
        migrate_values(&tree, &names)?;
        let view = StateView {
            current: Arc::new(RwLock::new(Generation::new(number, tree))),
            names,
        };
        migrate_legacy_snapshot(&meta)?;
        let current = current_set(&meta)?;
        remove_stale_pieces(&meta, current.as_deref())?;
        durable.flush()?;
        Ok(SledStateMachine {
            db: durable,
            meta,
            view,
            logic,
            snapshot_lock: Arc::new(tokio::sync::Mutex::new(())),
            undo: Arc::new(Mutex::new(None)),
            current_pieces: Arc::new(Mutex::new(None)),
            growth,
            undo_memory_bytes_max,
            received_snapshot_bytes_max,
            apply_lock: Arc::new(Mutex::new(())),
        })
    }

    /// A read view of the applied state.
    pub fn view(&self) -> StateView {
        self.view.clone()
    }

    fn apply_entries<I>(&self, entries: I) -> Result<Vec<Vec<L::Response>>, StorageError>
    where
        I: IntoIterator<Item = Entry<L>>,
    {
        let _applying = lock(&self.apply_lock);
        let generation = self.view.generation();
        let mut overlay = Overlay {
            base: &generation,
            names: &self.view.names,
            pending: BTreeMap::new(),
        };
        let mut last_applied: Option<LogId> = None;
        let mut membership: Option<StoredMembership> = None;
        let mut responses = Vec::new();
        for entry in entries {
            let log_id = entry.log_id;
            // Entries arrive in log order, each after the last applied.
            debug_assert!(last_applied.is_none_or(|prev| prev.index + 1 == log_id.index));
            last_applied = Some(log_id);
            match entry.payload {
                EntryPayload::Blank => responses.push(Vec::new()),
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(log_id), m));
                    responses.push(Vec::new());
                }
                EntryPayload::Normal(commands) => {
                    let mut out = Vec::with_capacity(commands.len());
                    for (position, command) in commands.iter().enumerate() {
                        let ctx = ApplyContext {
                            log_index: log_id.index,
                            term: log_id.leader_id.term,
                            position_in_entry: position as u32,
                        };
                        let applied = self
                            .logic
                            .apply(&ctx, command, &overlay)
                            .map_err(|e| StorageIOError::apply(log_id, any_error(e)))?;
                        for write in applied.writes {
                            check_write(&write)
                                .map_err(|e| StorageIOError::apply(log_id, any_error(e)))?;
                            match write {
                                Write::Put { key, value } => {
                                    overlay.pending.insert(key, Some(value))
                                }
                                Write::Delete { key } => overlay.pending.insert(key, None),
                                Write::DeletePrefix { prefix } => {
                                    overlay
                                        .delete_prefix(&prefix)
                                        .map_err(|e| StorageIOError::apply(log_id, any_error(e)))?;
                                    None
                                }
                            };
                        }
                        out.push(applied.response);
                    }
                    responses.push(out);
                }
            }
        }
        let Some(last_applied) = last_applied else {
            return Ok(responses);
        };
        // Readers see the whole apply or none of it.
        let full = {
            let mut pending = write_lock(&generation.pending);
            for (key, value) in overlay.pending {
                pending.bytes += key.len() + value.as_ref().map_or(0, Vec::len) + 64;
                pending.writes.insert(key, value);
            }
            pending.last_applied = Some(last_applied);
            if membership.is_some() {
                pending.membership = membership;
            }
            pending.applies += 1;
            pending.applies >= PENDING_APPLIES_MAX || pending.bytes >= PENDING_BYTES_MAX
        };
        if full {
            self.write_back(&generation)
                .map_err(|e| StorageIOError::write_state_machine(any_error(e)))?;
        }
        Ok(responses)
    }

    /// Makes the snapshot whose pieces the builder wrote the current one;
    /// the builder holds the snapshot lock.
    async fn save_snapshot(&self, meta: &SnapshotMeta, len: u64) -> Result<(), Error> {
        let existing: Option<SnapshotMeta> = read_sys(&self.meta, META_SNAPSHOT_META)?;
        if existing
            .as_ref()
            .is_some_and(|e| e.last_log_id > meta.last_log_id)
        {
            // An install overtook this build; keep the newer snapshot.
            remove_pieces(&self.meta, &meta.snapshot_id)?;
            return Ok(());
        }
        let previous = current_set(&self.meta)?;
        // The pieces are durable before anything names them.
        self.db.flush_async().await?;
        let batch = snapshot_batch(None, meta, &meta.snapshot_id, len)?;
        self.meta.apply_batch(batch)?;
        self.db.flush_async().await?;
        self.switch_pieces(&meta.snapshot_id, previous.as_deref())?;
        Ok(())
    }
}

/// The key prefix of the pieces of snapshot set `set`.
fn pieces_prefix(set: &str) -> Vec<u8> {
    let mut k = META_SNAPSHOT_PIECES.to_vec();
    k.extend_from_slice(set.as_bytes());
    k.push(b'/');
    k
}

/// The set holding the current snapshot's pieces, if there is a snapshot.
fn current_set(meta: &Tree) -> Result<Option<String>, Error> {
    let Some(current) = read_sys::<SnapshotMeta>(meta, META_SNAPSHOT_META)? else {
        return Ok(None);
    };
    Ok(Some(
        read_sys::<String>(meta, META_SNAPSHOT_SET)?.unwrap_or(current.snapshot_id),
    ))
}

/// Writes a snapshot's bytes into the meta tree as pieces of a set, as
/// they come, so the whole snapshot is never in memory. Nothing names the
/// pieces until [`snapshot_batch`] does.
struct PieceWriter<'a> {
    tree: &'a Tree,
    prefix: Vec<u8>,
    pending: Vec<u8>,
    index: u64,
    len: u64,
}

impl<'a> PieceWriter<'a> {
    fn new(tree: &'a Tree, set: &str) -> Result<Self, Error> {
        // A leftover of an earlier attempt under the same set is garbage.
        remove_pieces(tree, set)?;
        Ok(PieceWriter {
            tree,
            prefix: pieces_prefix(set),
            pending: Vec::with_capacity(PIECE_BYTES),
            index: 0,
            len: 0,
        })
    }

    fn write(&mut self, mut bytes: &[u8]) -> Result<(), Error> {
        self.len += bytes.len() as u64;
        while !bytes.is_empty() {
            let n = (PIECE_BYTES - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.pending.len() == PIECE_BYTES {
                self.emit()?;
            }
        }
        Ok(())
    }

    fn emit(&mut self) -> Result<(), Error> {
        self.tree.insert(
            piece_key(&self.prefix, self.index),
            std::mem::take(&mut self.pending),
        )?;
        self.index += 1;
        Ok(())
    }

    /// The snapshot's length in bytes.
    fn finish(mut self) -> Result<u64, Error> {
        if !self.pending.is_empty() {
            self.emit()?;
        }
        Ok(self.len)
    }
}

impl std::io::Write for PieceWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        PieceWriter::write(self, buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Removes the stored pieces of one set.
fn remove_pieces(tree: &Tree, set: &str) -> Result<(), Error> {
    Ok(remove_prefix(tree, &pieces_prefix(set))?)
}

/// Removes every stored piece but the current snapshot's: left by a build,
/// a receive or an install that a crash interrupted. The current
/// snapshot's own range is skipped, not read.
fn remove_stale_pieces(tree: &Tree, current: Option<&str>) -> Result<(), Error> {
    let mut all_end = META_SNAPSHOT_PIECES.to_vec();
    *all_end.last_mut().expect("a non-empty prefix") += 1;
    let ranges = match current.map(pieces_prefix) {
        Some(keep) => {
            // Just past every key that starts with `keep` ('/' + 1 = '0').
            let mut keep_end = keep.clone();
            *keep_end.last_mut().expect("a non-empty prefix") += 1;
            vec![(META_SNAPSHOT_PIECES.to_vec(), keep), (keep_end, all_end)]
        }
        None => vec![(META_SNAPSHOT_PIECES.to_vec(), all_end)],
    };
    for (from, to) in ranges {
        for item in tree.range(from..to) {
            let (k, _) = item?;
            tree.remove(k)?;
        }
    }
    Ok(())
}

/// Data directories written before snapshots were stored by id kept the
/// current snapshot's pieces under `snapshot_data/<u32>`: move them.
fn migrate_legacy_snapshot(tree: &Tree) -> Result<(), Error> {
    let mut legacy_prefix = META_SNAPSHOT_DATA.to_vec();
    legacy_prefix.push(b'/');
    let meta: Option<SnapshotMeta> = read_sys(tree, META_SNAPSHOT_META)?;
    let moving = match meta {
        Some(meta) if tree.get(META_SNAPSHOT_LEN)?.is_none() => Some(meta),
        _ => None,
    };
    let mut writer = match &moving {
        Some(meta) => Some(PieceWriter::new(tree, &meta.snapshot_id)?),
        None => None,
    };
    // One piece at a time: the old layout's pieces are in order.
    for item in tree.scan_prefix(&legacy_prefix) {
        let (key, piece) = item?;
        if let Some(writer) = writer.as_mut() {
            writer.write(&piece)?;
        }
        tree.remove(key)?;
    }
    if let (Some(meta), Some(writer)) = (moving, writer) {
        let len = writer.finish()?;
        tree.insert(META_SNAPSHOT_LEN, encode(&len)?)?;
        tracing::info!(snapshot_id = %meta.snapshot_id, bytes = len, "Moved the stored snapshot to the per-id layout.");
    }
    Ok(())
}

/// Fills a fresh generation tree from a snapshot, in bounded batches, and
/// records the snapshot's point in it.
fn fill_generation(
    tree: &Tree,
    snapshot: &SnapshotData,
    names: &FieldNames,
    last_log_id: Vec<u8>,
    membership: Vec<u8>,
) -> Result<(), Error> {
    const INSTALL_BATCH_PAIRS: usize = 4096;
    let mut batch = Batch::default();
    let mut batched = 0;
    // `read_pairs` refuses a key or value over the limits.
    read_pairs(snapshot.reader(), |k, v| {
        // Stored forms as they are; a snapshot from a node that stored
        // JSON holds JSON.
        batch.insert(data_key(k), value::migrate(v, names));
        batched += 1;
        if batched == INSTALL_BATCH_PAIRS {
            tree.apply_batch(std::mem::take(&mut batch))?;
            batched = 0;
        }
        Ok(())
    })?;
    batch.insert(SYS_LAST_APPLIED, last_log_id);
    batch.insert(SYS_MEMBERSHIP, membership);
    batch.insert(SYS_VALUE_FORMAT, VALUE_FORMAT);
    tree.apply_batch(batch)?;
    Ok(())
}

/// Rewrites, once, every value a node stored before values had a binary
/// form (see [`value`]); a state already rewritten is only checked for its
/// marker. What every read gives back does not change, and every node
/// rewrites the same bytes the same way.
fn migrate_values(tree: &Tree, names: &FieldNames) -> Result<(), Error> {
    if tree
        .get(SYS_VALUE_FORMAT)?
        .is_some_and(|f| f.as_ref() == VALUE_FORMAT)
    {
        return Ok(());
    }
    let started = std::time::Instant::now();
    const MIGRATE_BATCH_PAIRS: usize = 4096;
    let (mut batch, mut batched, mut rewritten) = (Batch::default(), 0, 0u64);
    for item in tree.scan_prefix([DATA_PREFIX]) {
        let (key, stored) = item?;
        // A rewrite a crash cut short left some values in the stored form
        // already: `migrate` keeps those.
        let encoded = value::migrate(&stored, names);
        if encoded.as_ref() != stored.as_ref() {
            batch.insert(&key, encoded);
            batched += 1;
            rewritten += 1;
        }
        if batched == MIGRATE_BATCH_PAIRS {
            tree.apply_batch(std::mem::take(&mut batch))?;
            batched = 0;
        }
    }
    batch.insert(SYS_VALUE_FORMAT, VALUE_FORMAT);
    tree.apply_batch(batch)?;
    if rewritten > 0 {
        tracing::info!(
            rewritten,
            took_ms = started.elapsed().as_millis() as u64,
            "Rewrote the stored values in their binary form."
        );
    }
    Ok(())
}

/// The set named by a pieces prefix (`snapshot_pieces/<set>/`).
fn set_of(prefix: &[u8]) -> Result<String, Error> {
    prefix
        .strip_prefix(META_SNAPSHOT_PIECES)
        .and_then(|rest| rest.strip_suffix(b"/"))
        .and_then(|set| std::str::from_utf8(set).ok())
        .map(str::to_string)
        .ok_or_else(|| Error::InvalidArgument("a staged snapshot outside the pieces".into()))
}

/// One batch that names the stored snapshot (its meta, the set holding its
/// pieces, its length), plus the new state-machine generation when
/// installing.
fn snapshot_batch(
    generation: Option<u64>,
    meta: &SnapshotMeta,
    set: &str,
    len: u64,
) -> Result<Batch, Error> {
    let mut batch = Batch::default();
    batch.insert(META_SNAPSHOT_META, encode(meta)?);
    batch.insert(META_SNAPSHOT_SET, encode(&set)?);
    batch.insert(META_SNAPSHOT_LEN, encode(&len)?);
    if let Some(generation) = generation {
        batch.insert(META_SM_GENERATION, encode(&generation)?);
    }
    Ok(batch)
}

fn check_write(write: &Write) -> Result<(), Error> {
    let key_len = write.key().len();
    if key_len > KEY_BYTES_MAX {
        return Err(Error::InvalidArgument(format!(
            "state machine wrote a key of {key_len} bytes (max {KEY_BYTES_MAX})"
        )));
    }
    if let Write::Put { value, .. } = write {
        if value.len() > VALUE_BYTES_MAX {
            return Err(Error::InvalidArgument(format!(
                "state machine wrote a value of {} bytes (max {VALUE_BYTES_MAX})",
                value.len()
            )));
        }
    }
    Ok(())
}

/// Builds a snapshot of the state as it stood when the builder was made
/// (on the state-machine task): the copy runs on a blocking thread while
/// applies go on, reading the values they replaced from the undo map.
pub struct SnapshotBuilder<L> {
    state: Result<(SnapshotMeta, Tree), Error>,
    sm: SledStateMachine<L>,
    /// Held until the build ends; `None` once it has.
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<L> Drop for SnapshotBuilder<L> {
    fn drop(&mut self) {
        if self.guard.is_some() {
            // Abandoned mid-build: applies stop recording.
            let undo = lock(&self.sm.undo).take();
            if undo.is_some_and(|undo| undo.spill.is_some()) {
                if let Err(error) = self.sm.db.drop_tree(TREE_UNDO) {
                    // The next start drops it.
                    tracing::warn!(%error, "Dropping an abandoned snapshot's undo tree failed.");
                }
            }
        }
    }
}

impl<L> SledStateMachine<L> {
    /// Writes the pending applies into sled (see [`Pending`]); for the
    /// clean stop, after Raft has stopped.
    pub(crate) fn write_back_pending(&self) -> Result<(), Error> {
        let _applying = lock(&self.apply_lock);
        self.write_back(&self.view.generation())
    }

    /// Writes `generation`'s pending applies into its tree, with the caller
    /// holding the apply lock: one batch, so the effects and
    /// `last_applied` land together or not at all. Durability comes from
    /// the next flush of the Db; until then the log still holds these
    /// entries and a restart applies them again.
    fn write_back(&self, generation: &Generation) -> Result<(), Error> {
        {
            let pending = read_lock(&generation.pending);
            let Some(last_applied) = pending.last_applied else {
                return Ok(());
            };
            self.record_undo(&generation.tree, pending.writes.keys())?;
            let mut batch = Batch::default();
            for (key, value) in &pending.writes {
                match value {
                    Some(value) => {
                        batch.insert(data_key(key), value::encode(value, &self.view.names))
                    }
                    None => batch.remove(data_key(key)),
                }
            }
            batch.insert(SYS_LAST_APPLIED, encode(&Some(last_applied))?);
            if let Some(m) = &pending.membership {
                batch.insert(SYS_MEMBERSHIP, encode(m)?);
            }
            generation.tree.apply_batch(batch)?;
        }
        // Readers between the batch and this find the same values in both.
        *write_lock(&generation.pending) = Pending::default();
        Ok(())
    }

    /// While a snapshot copies, keeps the value each key about to be
    /// written had when the snapshot began, before the write lands.
    fn record_undo<'k>(
        &self,
        tree: &Tree,
        keys: impl Iterator<Item = &'k Vec<u8>>,
    ) -> Result<(), Error> {
        let mut slot = lock(&self.undo);
        let Some(undo) = slot.as_mut() else {
            return Ok(());
        };
        for key in keys {
            undo.record(&self.db, data_key(key), tree)?;
        }
        Ok(())
    }

    pub(crate) fn clone_handle(&self) -> Self {
        SledStateMachine {
            db: self.db.clone(),
            meta: self.meta.clone(),
            view: self.view.clone(),
            logic: self.logic.clone(),
            snapshot_lock: self.snapshot_lock.clone(),
            undo: self.undo.clone(),
            current_pieces: self.current_pieces.clone(),
            growth: self.growth.clone(),
            undo_memory_bytes_max: self.undo_memory_bytes_max,
            received_snapshot_bytes_max: self.received_snapshot_bytes_max,
            apply_lock: self.apply_lock.clone(),
        }
    }

    /// A handle on the pieces of `set`: the shared one when they are the
    /// current snapshot's (the first ask after a start makes it), otherwise
    /// (a build an install overtook) one that is never retired.
    fn pieces_of(&self, set: &str) -> Arc<StoredPieces> {
        let prefix = pieces_prefix(set);
        let mut current = lock(&self.current_pieces);
        match current.as_ref() {
            Some(pieces) if pieces.is(&prefix) => pieces.clone(),
            Some(_) => StoredPieces::new(self.meta.clone(), prefix),
            None => current
                .insert(StoredPieces::new(self.meta.clone(), prefix))
                .clone(),
        }
    }

    /// The pieces of `set` are now the current snapshot's (its meta is
    /// durable); the previous snapshot's go once nobody reads them.
    fn switch_pieces(&self, set: &str, previous: Option<&str>) -> Result<(), Error> {
        let pieces = StoredPieces::new(self.meta.clone(), pieces_prefix(set));
        let old = lock(&self.current_pieces).replace(pieces);
        match (old, previous) {
            (Some(old), _) => old.retire(),
            // Nobody was handed the previous snapshot: remove it now.
            (None, Some(previous)) if previous != set => remove_pieces(&self.meta, previous)?,
            (None, _) => {}
        }
        Ok(())
    }

    /// Fixes the snapshot's point (its meta) and starts recording what
    /// applies replace. Runs on the state-machine task, so no apply
    /// interleaves.
    fn begin_snapshot(&self) -> Result<(SnapshotMeta, Tree), Error> {
        // The snapshot's point is the state with every apply in the tree:
        // later write-backs record what they replace in the undo map.
        self.write_back_pending()?;
        let tree = self.view.tree();
        let last_applied: Option<Option<LogId>> = read_sys(&tree, SYS_LAST_APPLIED)?;
        let last_applied = last_applied.flatten();
        let membership: Option<StoredMembership> = read_sys(&tree, SYS_MEMBERSHIP)?;
        let sequence = self.db.generate_id()?;
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, sequence),
            None => format!("0-0-{sequence}"),
        };
        *lock(&self.undo) = Some(Undo::new(self.undo_memory_bytes_max));
        self.growth.reset();
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership.unwrap_or_default(),
            snapshot_id,
        };
        Ok((meta, tree))
    }

    /// Copies the state as it stood at `begin_snapshot` into the snapshot's
    /// pieces; its length. A key is read live unless an apply has since
    /// written it, then from the undo map; at the end every recorded value
    /// is written once more, which brings in the keys deleted before the
    /// copy reached them. (So a key may appear twice, both times with its
    /// value at the snapshot's point.) Memory stays at one block plus the
    /// undo map's bound.
    fn copy_state(&self, tree: &Tree, snapshot_id: &str) -> Result<u64, Error> {
        let started = std::time::Instant::now();
        let pieces = PieceWriter::new(&self.meta, snapshot_id)?;
        let mut writer = SnapshotWriter::new(pieces).map_err(Error::Io)?;
        let emit = |writer: &mut SnapshotWriter<PieceWriter>, key: &[u8], value: &[u8]| {
            writer.pair(&key[1..], value).map_err(Error::Io)
        };
        for item in tree.scan_prefix([DATA_PREFIX]) {
            let (key, live) = item?;
            // Read the live value first, then look for an earlier value: an
            // apply records the old value before it writes the new one.
            let replaced = match lock(&self.undo).as_ref() {
                Some(undo) => undo.get(key.as_ref())?,
                None => None,
            };
            match replaced {
                None => emit(&mut writer, &key, &live)?,
                Some(Some(old)) => emit(&mut writer, &key, &old)?,
                Some(None) => {} // created after the snapshot's point
            }
        }
        let undo = lock(&self.undo).take();
        let replaced = undo.as_ref().map_or(0, Undo::len);
        if let Some(undo) = undo {
            undo.for_each(|key, old| match old {
                Some(old) => emit(&mut writer, key, old),
                None => Ok(()),
            })?;
            if undo.spill.is_some() {
                drop(undo);
                self.db.drop_tree(TREE_UNDO)?;
            }
        }
        let (pieces, _) = writer.finish().map_err(Error::Io)?;
        let len = pieces.finish()?;
        tracing::info!(
            snapshot_id,
            bytes = len,
            keys_written_meanwhile = replaced,
            took_ms = started.elapsed().as_millis() as u64,
            "Copied the state into a snapshot while applies went on."
        );
        Ok(len)
    }

    /// The current snapshot, read lazily from its pieces.
    fn current_snapshot(&self) -> Result<Option<Snapshot<TypeConfig<L>>>, Error>
    where
        L: StateMachineLogic,
    {
        let Some(meta) = read_sys::<SnapshotMeta>(&self.meta, META_SNAPSHOT_META)? else {
            return Ok(None);
        };
        let set = current_set(&self.meta)?.unwrap_or_else(|| meta.snapshot_id.clone());
        let len: u64 = read_sys(&self.meta, META_SNAPSHOT_LEN)?.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "snapshot {} has no recorded length",
                meta.snapshot_id
            ))
        })?;
        let data = SnapshotData::stored(self.pieces_of(&set), len);
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(data),
        }))
    }
}

impl<L: StateMachineLogic> RaftSnapshotBuilder<TypeConfig<L>> for SnapshotBuilder<L> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig<L>>, StorageError> {
        let (meta, tree) = match std::mem::replace(
            &mut self.state,
            Err(Error::InvalidArgument("snapshot already built".into())),
        ) {
            Ok(state) => state,
            Err(e) => return Err(StorageIOError::read_state_machine(any_error(e)).into()),
        };
        let failed =
            |e: Error| StorageIOError::write_snapshot(Some(meta.signature()), any_error(e));
        let sm = self.sm.clone_handle();
        let id = meta.snapshot_id.clone();
        let len = self
            .sm
            .db
            .run_blocking(move || sm.copy_state(&tree, &id))
            .await
            .map_err(failed)?;
        self.sm.save_snapshot(&meta, len).await.map_err(failed)?;
        self.guard = None;
        tracing::info!(snapshot_id = %meta.snapshot_id, bytes = len, "Built snapshot.");
        let data = SnapshotData::stored(self.sm.pieces_of(&meta.snapshot_id), len);
        Ok(Snapshot {
            meta,
            snapshot: Box::new(data),
        })
    }
}

impl<L: StateMachineLogic> RaftStateMachine<TypeConfig<L>> for SledStateMachine<L> {
    type SnapshotBuilder = SnapshotBuilder<L>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        self.write_back_pending()
            .map_err(|e| StorageIOError::write_state_machine(any_error(e)))?;
        let tree = self.view.tree();
        let last_applied: Option<Option<LogId>> = read_sys(&tree, SYS_LAST_APPLIED)
            .map_err(|e| StorageIOError::read_state_machine(any_error(e)))?;
        let membership: Option<StoredMembership> = read_sys(&tree, SYS_MEMBERSHIP)
            .map_err(|e| StorageIOError::read_state_machine(any_error(e)))?;
        Ok((last_applied.flatten(), membership.unwrap_or_default()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<L::Response>>, StorageError>
    where
        I: IntoIterator<Item = Entry<L>> + Send,
        I::IntoIter: Send,
    {
        self.apply_entries(entries)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        // On the state-machine task: the snapshot's point is this moment.
        // The lock waits out a build still running (openraft runs one at a
        // time) and keeps an install from dropping the copied generation.
        let guard = self.snapshot_lock.clone().lock_owned().await;
        let state = self.begin_snapshot();
        SnapshotBuilder {
            state,
            sm: self.clone_handle(),
            guard: Some(guard),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        // Staged into pieces of a set of its own as the chunks arrive: a
        // snapshot as large as the state is never held in memory.
        let set = self
            .db
            .generate_id()
            .map(|n| format!("receiving-{n}"))
            .map_err(|e| StorageIOError::write_snapshot(None, any_error(e)))?;
        remove_pieces(&self.meta, &set)
            .map_err(|e| StorageIOError::write_snapshot(None, any_error(e)))?;
        let pieces = StoredPieces::staging(self.meta.clone(), pieces_prefix(&set));
        Ok(Box::new(SnapshotData::staging(
            pieces,
            self.received_snapshot_bytes_max,
        )))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotData>,
    ) -> Result<(), StorageError> {
        let err = |e: Error| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(meta.signature()),
                any_error(e),
            ))
        };
        let old = self.view.generation();
        let next_number = old.number + 1;
        let next_name = sm_tree_name(next_number);
        // A leftover of a crashed install under the same name is garbage.
        let db = self.db.clone();
        db.drop_tree(&next_name).map_err(|e| err(e.into()))?;
        let tree = db.open_tree(&next_name).map_err(|e| err(e.into()))?;
        // The next generation is invisible until the flip, so it fills in
        // bounded batches, reading the snapshot one block at a time, on a
        // blocking thread. A malformed snapshot stops the fill and its tree
        // is dropped: nothing the node serves changed.
        let (snapshot, filled) = {
            let tree = tree.clone();
            let names = self.view.names.clone();
            let last_log_id = encode(&meta.last_log_id).map_err(err)?;
            let membership = encode(&meta.last_membership).map_err(err)?;
            self.db
                .run_blocking(move || {
                    let filled = fill_generation(&tree, &snapshot, &names, last_log_id, membership);
                    Ok::<_, Error>((snapshot, filled))
                })
                .await
                .map_err(err)?
        };
        if let Err(e) = filled {
            drop(tree);
            db.drop_tree(&next_name).map_err(|e| err(e.into()))?;
            return Err(err(e));
        }
        self.db.flush_async().await.map_err(|e| err(e.into()))?;

        // The flip: one batch in the meta tree names the new generation and
        // records the snapshot; until it is flushed a restart sees the old
        // state.
        {
            let _guard = self.snapshot_lock.lock().await;
            let (set, len) = match snapshot.staged_pieces() {
                // Received here: its pieces become the current snapshot's.
                Some(staged) => {
                    let set = set_of(staged.prefix()).map_err(err)?;
                    (set, snapshot.len())
                }
                // Handed over whole (tests, tools): stored under its id.
                None => {
                    let mut writer =
                        PieceWriter::new(&self.meta, &meta.snapshot_id).map_err(err)?;
                    std::io::copy(&mut snapshot.reader(), &mut writer)
                        .map_err(|e| err(e.into()))?;
                    (meta.snapshot_id.clone(), writer.finish().map_err(err)?)
                }
            };
            self.db.flush_async().await.map_err(|e| err(e.into()))?;
            let previous = current_set(&self.meta).map_err(err)?;
            let flip = snapshot_batch(Some(next_number), meta, &set, len).map_err(err)?;
            self.meta.apply_batch(flip).map_err(|e| err(e.into()))?;
            self.db.flush_async().await.map_err(|e| err(e.into()))?;
            if let Some(staged) = snapshot.staged_pieces() {
                staged.adopt();
            }
            drop(snapshot);
            self.switch_pieces(&set, previous.as_deref()).map_err(err)?;
        }
        // The old generation's pending applies go with it: the snapshot
        // replaces all they did.
        self.view.swap(Generation::new(next_number, tree));
        drop(old.tree);
        db.drop_tree(sm_tree_name(old.number))
            .map_err(|e| err(e.into()))?;
        tracing::info!(snapshot_id = %meta.snapshot_id, last_log_id = ?meta.last_log_id, "Installed snapshot.");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig<L>>>, StorageError> {
        self.current_snapshot()
            .map_err(|e| StorageIOError::read_snapshot(None, any_error(e)).into())
    }
}
