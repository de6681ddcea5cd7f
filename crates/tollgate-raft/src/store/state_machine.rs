//! The state machine on sled, its read view, and its snapshot builder.

// openraft's StorageError is large; the trait methods return it anyway.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, RaftSnapshotBuilder, Snapshot, StorageIOError};

use super::snapshot::{decode_snapshot, encode_pair, Pair, SNAPSHOT_MAGIC};
use super::{
    any_error, DurableDb, META_SM_GENERATION, META_SNAPSHOT_DATA, META_SNAPSHOT_META,
    SM_TREE_PREFIX, TREE_META,
};
use crate::codec::{decode_stored, encode};
use crate::error::Error;
use crate::logic::{
    ApplyContext, ReadError, ReadState, StateMachineLogic, Write, KEY_BYTES_MAX, VALUE_BYTES_MAX,
};
use crate::types::{Entry, LogId, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const SYS_LAST_APPLIED: &[u8] = b"\x00last_applied";
const SYS_MEMBERSHIP: &[u8] = b"\x00membership";
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
    tree: sled::Tree,
}

/// A read-only view of the applied state, for serving reads on any node
/// (leader, follower or learner) while Raft applies and snapshots go on.
/// Cheap to clone.
#[derive(Clone)]
pub struct StateView {
    current: Arc<RwLock<Generation>>,
}

impl StateView {
    fn tree(&self) -> sled::Tree {
        // A poisoned lock means a panic while swapping a Tree handle, which
        // cannot leave it half-written: keep reading.
        match self.current.read() {
            Ok(g) => g.tree.clone(),
            Err(poisoned) => poisoned.into_inner().tree.clone(),
        }
    }

    fn generation(&self) -> Generation {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn swap(&self, next: Generation) {
        match self.current.write() {
            Ok(mut g) => *g = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    /// The value of the role's `key` in the applied state.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.tree().get(data_key(key))?.map(|v| v.to_vec()))
    }

    /// The last applied log id.
    pub fn last_applied(&self) -> Result<Option<LogId>, Error> {
        read_sys(&self.tree(), SYS_LAST_APPLIED)
    }

    /// Up to `limit` pairs whose key starts with `prefix` and sorts after
    /// `after` (exclusive), in key order: paginated listing for readers.
    pub fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<Pair>, Error> {
        let tree = self.tree();
        let start = match after {
            Some(after) if after >= prefix => {
                // Just past `after`: the same bytes with a 0 appended.
                let mut k = data_key(after);
                k.push(0);
                k
            }
            _ => data_key(prefix),
        };
        let full_prefix = data_key(prefix);
        let mut out = Vec::new();
        for item in tree.range(start..) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            if !k.starts_with(&full_prefix) {
                break;
            }
            out.push((k[1..].to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// Every key-value pair of the applied state, in key order. For tests
    /// and small states only.
    pub fn dump(&self) -> Result<BTreeMap<Vec<u8>, Vec<u8>>, Error> {
        let mut out = BTreeMap::new();
        for item in self.tree().scan_prefix([DATA_PREFIX]) {
            let (k, v) = item?;
            out.insert(k[1..].to_vec(), v.to_vec());
        }
        Ok(out)
    }
}

impl ReadState for StateView {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        StateView::get(self, key).map_err(|e| ReadError(e.to_string()))
    }
}

fn read_sys<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    key: &[u8],
) -> Result<Option<T>, Error> {
    match tree.get(key)? {
        Some(v) => Ok(Some(decode_stored(&String::from_utf8_lossy(key), &v)?)),
        None => Ok(None),
    }
}

/// The state as it stands inside a batch being applied: the writes of the
/// batch's earlier commands over the tree's contents.
struct Overlay<'a> {
    base: &'a sled::Tree,
    pending: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Overlay<'_> {
    /// Marks every key under `prefix` deleted: those in the tree and those
    /// written earlier in this batch.
    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<(), ReadError> {
        let pending: Vec<Vec<u8>> = self
            .pending
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, _)| key.clone())
            .collect();
        for key in pending {
            self.pending.insert(key, None);
        }
        for item in self.base.scan_prefix(data_key(prefix)) {
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
        self.base
            .get(data_key(key))
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| ReadError(e.to_string()))
    }
}

/// The state machine of one node.
pub struct SledStateMachine<L> {
    db: DurableDb,
    meta: sled::Tree,
    view: StateView,
    logic: Arc<L>,
    /// Serialises saving the current snapshot between a builder (which runs
    /// in a task of its own) and an install.
    snapshot_lock: Arc<tokio::sync::Mutex<()>>,
}

impl<L: StateMachineLogic> SledStateMachine<L> {
    pub(crate) fn open(durable: DurableDb, logic: Arc<L>) -> Result<Self, Error> {
        let db = durable.db().clone();
        let meta = db.open_tree(TREE_META)?;
        let number: u64 = read_sys(&meta, META_SM_GENERATION)?.unwrap_or(0);
        let current_name = sm_tree_name(number);
        // Trees of other generations are leftovers of an install that crashed
        // before its flip, or of an old generation not yet dropped.
        for name in db.tree_names() {
            let is_sm = name.starts_with(SM_TREE_PREFIX.as_bytes());
            if is_sm && name.as_ref() != current_name.as_bytes() {
                tracing::info!(tree = %String::from_utf8_lossy(&name), "Dropping stale state-machine tree.");
                db.drop_tree(&name)?;
            }
        }
        let tree = db.open_tree(&current_name)?;
        let view = StateView {
            current: Arc::new(RwLock::new(Generation { number, tree })),
        };
        Ok(SledStateMachine {
            db: durable,
            meta,
            view,
            logic,
            snapshot_lock: Arc::new(tokio::sync::Mutex::new(())),
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
        let tree = self.view.tree();
        let mut overlay = Overlay {
            base: &tree,
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
        let mut batch = sled::Batch::default();
        for (key, value) in overlay.pending {
            match value {
                Some(value) => batch.insert(data_key(&key), value),
                None => batch.remove(data_key(&key)),
            }
        }
        let value = encode(&Some(last_applied))
            .map_err(|e| StorageIOError::write_state_machine(any_error(e)))?;
        batch.insert(SYS_LAST_APPLIED, value);
        if let Some(m) = membership {
            let value =
                encode(&m).map_err(|e| StorageIOError::write_state_machine(any_error(e)))?;
            batch.insert(SYS_MEMBERSHIP, value);
        }
        // One batch: the effects and `last_applied` land together or not at
        // all. Durability comes from the next log flush (same Db); until then
        // the log still holds these entries and a restart re-applies them.
        tree.apply_batch(batch)
            .map_err(|e| StorageIOError::write_state_machine(any_error(e)))?;
        Ok(responses)
    }

    async fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), Error> {
        let _guard = self.snapshot_lock.lock().await;
        let existing: Option<SnapshotMeta> = read_sys(&self.meta, META_SNAPSHOT_META)?;
        if existing.is_some_and(|e| e.last_log_id > meta.last_log_id) {
            // An install overtook this build; keep the newer snapshot.
            return Ok(());
        }
        let batch = snapshot_batch(&self.meta, None, meta, data)?;
        self.meta.apply_batch(batch)?;
        self.db.flush_async().await?;
        Ok(())
    }
}

/// The stored snapshot's bytes are kept in pieces of this size, so that no
/// sled value becomes an (unsynced) blob.
const SNAPSHOT_PIECE_BYTES: usize = 256 * 1024;

fn snapshot_piece_key(i: u32) -> Vec<u8> {
    let mut k = snapshot_piece_prefix();
    k.extend_from_slice(&i.to_be_bytes());
    k
}

fn snapshot_piece_prefix() -> Vec<u8> {
    let mut k = META_SNAPSHOT_DATA.to_vec();
    k.push(b'/');
    k
}

/// One batch that replaces the stored snapshot (meta and pieces), plus the
/// new state-machine generation when installing.
fn snapshot_batch(
    meta_tree: &sled::Tree,
    generation: Option<u64>,
    meta: &SnapshotMeta,
    data: &[u8],
) -> Result<sled::Batch, Error> {
    let mut batch = sled::Batch::default();
    for item in meta_tree.scan_prefix(snapshot_piece_prefix()) {
        let (k, _) = item?;
        batch.remove(k);
    }
    for (i, piece) in data.chunks(SNAPSHOT_PIECE_BYTES).enumerate() {
        batch.insert(snapshot_piece_key(i as u32), piece);
    }
    batch.insert(META_SNAPSHOT_META, encode(meta)?);
    if let Some(generation) = generation {
        batch.insert(META_SM_GENERATION, encode(&generation)?);
    }
    Ok(batch)
}

fn read_snapshot_data(meta_tree: &sled::Tree) -> Result<Vec<u8>, Error> {
    let mut data = Vec::new();
    for item in meta_tree.scan_prefix(snapshot_piece_prefix()) {
        let (_, piece) = item?;
        data.extend_from_slice(&piece);
    }
    Ok(data)
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

/// Builds a snapshot from a copy of the state taken on the state-machine
/// task (so it is consistent with one `last_applied`); encoding and saving
/// run in openraft's snapshot task while applies and reads go on.
pub struct SnapshotBuilder<L> {
    state: Result<(Option<LogId>, StoredMembership, Vec<u8>), Error>,
    sm: SledStateMachine<L>,
}

impl<L> SledStateMachine<L> {
    fn clone_handle(&self) -> Self {
        SledStateMachine {
            db: self.db.clone(),
            meta: self.meta.clone(),
            view: self.view.clone(),
            logic: self.logic.clone(),
            snapshot_lock: self.snapshot_lock.clone(),
        }
    }
}

fn copy_state(tree: &sled::Tree) -> Result<(Option<LogId>, StoredMembership, Vec<u8>), Error> {
    let last_applied: Option<Option<LogId>> = read_sys(tree, SYS_LAST_APPLIED)?;
    let membership: Option<StoredMembership> = read_sys(tree, SYS_MEMBERSHIP)?;
    let mut data = SNAPSHOT_MAGIC.to_vec();
    for item in tree.scan_prefix([DATA_PREFIX]) {
        let (k, v) = item?;
        encode_pair(&mut data, &k[1..], &v);
    }
    Ok((last_applied.flatten(), membership.unwrap_or_default(), data))
}

impl<L: StateMachineLogic> RaftSnapshotBuilder<TypeConfig<L>> for SnapshotBuilder<L> {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig<L>>, StorageError> {
        let (last_applied, membership, data) =
            match std::mem::replace(&mut self.state, Ok(Default::default())) {
                Ok(state) => state,
                Err(e) => return Err(StorageIOError::read_state_machine(any_error(e)).into()),
            };
        let sequence = self
            .sm
            .db
            .db()
            .generate_id()
            .map_err(|e| StorageIOError::write_snapshot(None, any_error(e)))?;
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, sequence),
            None => format!("0-0-{sequence}"),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        self.sm
            .save_snapshot(&meta, &data)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), any_error(e)))?;
        tracing::info!(snapshot_id = %meta.snapshot_id, bytes = data.len(), "Built snapshot.");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl<L: StateMachineLogic> RaftStateMachine<TypeConfig<L>> for SledStateMachine<L> {
    type SnapshotBuilder = SnapshotBuilder<L>;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
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
        // Runs on the state-machine task, so no apply interleaves with the
        // copy; reads go to sled directly and are not held up.
        let state = copy_state(&self.view.tree());
        SnapshotBuilder {
            state,
            sm: self.clone_handle(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let err = |e: Error| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(meta.signature()),
                any_error(e),
            ))
        };
        let pairs = decode_snapshot(&data).map_err(err)?;
        let old = self.view.generation();
        let next_number = old.number + 1;
        let next_name = sm_tree_name(next_number);
        // A leftover of a crashed install under the same name is garbage.
        let db = self.db.db().clone();
        db.drop_tree(&next_name).map_err(|e| err(e.into()))?;
        let tree = db.open_tree(&next_name).map_err(|e| err(e.into()))?;
        let mut batch = sled::Batch::default();
        for (k, v) in pairs {
            batch.insert(data_key(&k), v);
        }
        batch.insert(SYS_LAST_APPLIED, encode(&meta.last_log_id).map_err(err)?);
        batch.insert(SYS_MEMBERSHIP, encode(&meta.last_membership).map_err(err)?);
        tree.apply_batch(batch).map_err(|e| err(e.into()))?;
        self.db.flush_async().await.map_err(err)?;

        // The flip: one batch in the meta tree names the new generation and
        // records the snapshot; until it is flushed a restart sees the old
        // state.
        {
            let _guard = self.snapshot_lock.lock().await;
            let flip = snapshot_batch(&self.meta, Some(next_number), meta, &data).map_err(err)?;
            self.meta.apply_batch(flip).map_err(|e| err(e.into()))?;
            self.db.flush_async().await.map_err(err)?;
        }
        self.view.swap(Generation {
            number: next_number,
            tree,
        });
        drop(old.tree);
        db.drop_tree(sm_tree_name(old.number))
            .map_err(|e| err(e.into()))?;
        tracing::info!(snapshot_id = %meta.snapshot_id, last_log_id = ?meta.last_log_id, "Installed snapshot.");
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig<L>>>, StorageError> {
        let meta: Option<SnapshotMeta> = read_sys(&self.meta, META_SNAPSHOT_META)
            .map_err(|e| StorageIOError::read_snapshot(None, any_error(e)))?;
        let Some(meta) = meta else { return Ok(None) };
        let data = read_snapshot_data(&self.meta)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), any_error(e)))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
