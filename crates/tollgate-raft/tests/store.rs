//! The sled state machine and snapshots, without Raft: atomic apply,
//! atomic snapshot install, recovery from a crash in the middle of one.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::ensure;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftSnapshotBuilder};
use tollgate_raft::store::SnapshotData;
use tollgate_raft::store::SEGMENT_BYTES;
use tollgate_raft::{
    open_storage, KvCommand, KvLogic, LogStore, SledStateMachine, StorageConfig, TypeConfig,
};

fn config(dir: &std::path::Path) -> StorageConfig {
    let mut c = StorageConfig::new(dir);
    c.cache_capacity_bytes = 4 * 1024 * 1024;
    c
}

fn open(dir: &std::path::Path) -> anyhow::Result<(LogStore<KvLogic>, SledStateMachine<KvLogic>)> {
    Ok(open_storage(&config(dir), Arc::new(KvLogic))?)
}

fn entry(index: u64, commands: Vec<KvCommand>) -> Entry<TypeConfig<KvLogic>> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(commands),
    }
}

fn put(k: &str, v: &str) -> KvCommand {
    KvCommand::Put {
        key: k.into(),
        value: v.into(),
    }
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Builds a snapshot of `sm` now.
async fn build(
    sm: &mut SledStateMachine<KvLogic>,
) -> anyhow::Result<openraft::Snapshot<TypeConfig<KvLogic>>> {
    let mut builder = sm.get_snapshot_builder().await;
    builder.build_snapshot().await.map_err(err)
}

/// `sm`'s current snapshot; an error saying `missing` when there is none.
async fn current(
    sm: &mut SledStateMachine<KvLogic>,
    missing: &str,
) -> anyhow::Result<openraft::Snapshot<TypeConfig<KvLogic>>> {
    sm.get_current_snapshot()
        .await
        .map_err(err)?
        .ok_or_else(|| anyhow::anyhow!("{missing}"))
}

#[tokio::test]
async fn apply_sees_earlier_commands_of_its_batch_and_survives_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let (_log, mut sm) = open(dir.path())?;
        let cas = KvCommand::CompareAndSwap {
            key: "a".into(),
            expected: Some("1".into()),
            new: "2".into(),
        };
        let responses = sm
            .apply([
                entry(1, vec![put("a", "1"), cas]),
                entry(2, vec![put("b", "x")]),
            ])
            .await
            .map_err(err)?;
        // The CAS saw the put made just before it, in the same entry.
        ensure!(
            responses.len() == 2 && responses[0][1].changed,
            "responses {responses:?}"
        );
        let (applied, _) = sm.applied_state().await.map_err(err)?;
        ensure!(applied.map(|l| l.index) == Some(2));
    }
    let (_log, mut sm) = open(dir.path())?;
    let (applied, _) = sm.applied_state().await.map_err(err)?;
    ensure!(
        applied.map(|l| l.index) == Some(2),
        "last_applied after reopen: {applied:?}"
    );
    let view = sm.view();
    ensure!(view.get(b"a")? == Some(b"2".to_vec()) && view.get(b"b")? == Some(b"x".to_vec()));
    Ok(())
}

#[tokio::test]
async fn delete_prefix_removes_stored_and_batched_keys_only_under_it() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_log, mut sm) = open(dir.path())?;
    sm.apply([entry(
        1,
        vec![put("a/1", "x"), put("a/2", "x"), put("b/1", "x")],
    )])
    .await
    .map_err(err)?;
    let delete = KvCommand::DeletePrefix {
        prefix: "a/".into(),
    };
    // In one entry: a key written before the delete goes with it; one
    // written after survives.
    sm.apply([entry(
        2,
        vec![put("a/3", "x"), delete, put("a/4", "y"), put("a", "z")],
    )])
    .await
    .map_err(err)?;
    let view = sm.view();
    let keys: Vec<Vec<u8>> = view
        .scan(b"", None, 100)?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    ensure!(
        keys == vec![b"a".to_vec(), b"a/4".to_vec(), b"b/1".to_vec()],
        "keys left: {:?}",
        keys.iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect::<Vec<_>>()
    );
    Ok(())
}

#[tokio::test]
async fn snapshot_install_replaces_state_atomically_and_survives_reopen() -> anyhow::Result<()> {
    let source_dir = tempfile::tempdir()?;
    let target_dir = tempfile::tempdir()?;
    let snapshot = {
        let (_log, mut source) = open(source_dir.path())?;
        source
            .apply([
                entry(1, vec![put("a", "1"), put("b", "2")]),
                entry(2, vec![put("c", "3")]),
            ])
            .await
            .map_err(err)?;
        build(&mut source).await?
    };
    let expected: BTreeMap<Vec<u8>, Vec<u8>> = [("a", "1"), ("b", "2"), ("c", "3")]
        .iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect();
    {
        let (_log, mut target) = open(target_dir.path())?;
        target
            .apply([entry(1, vec![put("old", "gone")])])
            .await
            .map_err(err)?;
        let data = snapshot.snapshot.to_vec()?;
        target
            .install_snapshot(&snapshot.meta, Box::new(SnapshotData::from_bytes(data)))
            .await
            .map_err(err)?;
        ensure!(target.view().dump()? == expected, "state after install");
    }
    let (_log, mut target) = open(target_dir.path())?;
    ensure!(target.view().dump()? == expected, "state after reopen");
    let (applied, _) = target.applied_state().await.map_err(err)?;
    ensure!(applied == snapshot.meta.last_log_id);
    let current = current(&mut target, "no current snapshot after reopen").await?;
    ensure!(current.meta == snapshot.meta);
    ensure!(current.snapshot.to_vec()? == snapshot.snapshot.to_vec()?);
    Ok(())
}

/// Opens the node's sled directory directly. A Db dropped a moment ago may
/// still hold the directory's lock while its background thread stops, so
/// retry (an I/O error) for a bounded time, as the store itself does on
/// start; any other error ends the wait at once.
fn open_raw(path: &std::path::Path) -> anyhow::Result<sled::Db> {
    let opened = tollgate_testkit::wait_until_blocking(
        &format!("the lock on {}", path.display()),
        std::time::Duration::from_secs(5),
        || match sled::Config::new()
            .path(path)
            .segment_size(SEGMENT_BYTES)
            .open()
        {
            Err(sled::Error::Io(e)) => Err(e),
            other => Ok(other),
        },
    )?;
    Ok(opened?)
}

/// A stopped node in `dir` whose state is `a = 1`, with a snapshot of it.
async fn one_key_and_a_snapshot(dir: &std::path::Path) -> anyhow::Result<()> {
    let (_log, mut sm) = open(dir)?;
    sm.apply([entry(1, vec![put("a", "1")])])
        .await
        .map_err(err)?;
    build(&mut sm).await?;
    Ok(())
}

#[tokio::test]
async fn crash_before_the_install_flip_leaves_the_old_state() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Made durable as a log flush would.
    one_key_and_a_snapshot(dir.path()).await?;
    {
        // What an install leaves behind when the process dies after filling
        // the next generation but before flipping to it.
        let db = open_raw(dir.path())?;
        let next = db.open_tree("sm.1")?;
        next.insert(b"\x01a", b"from-the-half-installed-snapshot".as_slice())?;
        db.flush()?;
    }
    let (_log, sm) = open(dir.path())?;
    ensure!(
        sm.view().get(b"a")? == Some(b"1".to_vec()),
        "old state not intact"
    );
    drop(sm);
    drop(_log);
    let db = open_raw(dir.path())?;
    ensure!(
        !db.tree_names().iter().any(|n| n.as_ref() == b"sm.1"),
        "leftover generation not dropped"
    );
    Ok(())
}

/// A state several snapshot pieces (256 KiB each) large: the stored
/// snapshot is read back lazily after a reopen, byte for byte, and a node
/// that installs it ends with the same state.
#[tokio::test]
async fn a_multi_piece_snapshot_is_read_back_after_reopen_and_installs() -> anyhow::Result<()> {
    let source_dir = tempfile::tempdir()?;
    // Values that do not compress (the snapshot's blocks are LZ4).
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut value = || {
        (0..60_000)
            .map(|_| {
                seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                char::from(b"0123456789abcdef"[(seed >> 60) as usize])
            })
            .collect::<String>()
    };
    let (built, expected) = {
        let (_log, mut source) = open(source_dir.path())?;
        let commands = (0..20)
            .map(|i| put(&format!("k/{i:02}"), &value()))
            .collect();
        source.apply([entry(1, commands)]).await.map_err(err)?;
        let built = build(&mut source).await?;
        (built.snapshot.to_vec()?, source.view().dump()?)
    };
    ensure!(
        built.len() > 4 * 256 * 1024,
        "{} bytes: not several pieces",
        built.len()
    );
    let (_log, mut source) = open(source_dir.path())?;
    let reopened = current(&mut source, "no snapshot after reopen").await?;
    ensure!(reopened.snapshot.len() == built.len() as u64);
    ensure!(
        reopened.snapshot.to_vec()? == built,
        "bytes differ after reopen"
    );

    let target_dir = tempfile::tempdir()?;
    let (_tlog, mut target) = open(target_dir.path())?;
    target
        .install_snapshot(
            &reopened.meta,
            Box::new(SnapshotData::from_bytes(built.clone())),
        )
        .await
        .map_err(err)?;
    ensure!(target.view().dump()? == expected, "installed state differs");
    let installed = current(&mut target, "no snapshot after install").await?;
    ensure!(installed.snapshot.to_vec()? == built);
    Ok(())
}

/// A snapshot holds the state at the moment its builder was made, while
/// the applies that follow change, delete and create keys during the copy.
#[tokio::test]
async fn a_snapshot_holds_the_state_at_its_point_while_applies_go_on() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_log, mut sm) = open(dir.path())?;
    let before: Vec<KvCommand> = (0..200)
        .map(|i| put(&format!("k/{i:03}"), "before"))
        .collect();
    sm.apply([entry(1, before)]).await.map_err(err)?;
    let expected = sm.view().dump()?;
    let mut builder = sm.get_snapshot_builder().await;
    let mut after = Vec::new();
    for i in (0..200).step_by(3) {
        after.push(put(&format!("k/{i:03}"), "after"));
    }
    for i in (1..200).step_by(3) {
        after.push(KvCommand::Delete {
            key: format!("k/{i:03}"),
        });
    }
    after.push(put("k/new", "after"));
    sm.apply([entry(2, after)]).await.map_err(err)?;
    let built = builder.build_snapshot().await.map_err(err)?;
    ensure!(built.meta.last_log_id.map(|id| id.index) == Some(1));
    let mut state = BTreeMap::new();
    for (key, value) in tollgate_raft::store::decode_snapshot(&built.snapshot.to_vec()?)? {
        if let Some(earlier) = state.insert(key.clone(), value.clone()) {
            ensure!(earlier == value, "{key:?} twice with different values");
        }
    }
    ensure!(
        state == expected,
        "the snapshot is not the state at its point"
    );
    ensure!(sm.view().get(b"k/000")? == Some(b"after".to_vec()));
    ensure!(sm.view().get(b"k/001")?.is_none());

    // The next snapshot, with nothing applied during it, is the live state.
    let built = build(&mut sm).await?;
    let pairs = tollgate_raft::store::decode_snapshot(&built.snapshot.to_vec()?)?;
    ensure!(pairs.into_iter().collect::<BTreeMap<_, _>>() == sm.view().dump()?);
    Ok(())
}

/// A follower being sent a snapshot keeps reading it while the node builds
/// a newer one (openraft treats a failed snapshot read as fatal); the old
/// pieces go once it lets go, and a reopen finds only the newer ones.
#[tokio::test]
async fn a_snapshot_being_sent_outlives_a_newer_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let (_log, mut sm) = open(dir.path())?;
        sm.apply([entry(1, vec![put("a", "1")])])
            .await
            .map_err(err)?;
        let first = build(&mut sm).await?;
        let being_sent = current(&mut sm, "no snapshot").await?;
        sm.apply([entry(2, vec![put("b", "2")])])
            .await
            .map_err(err)?;
        let second = build(&mut sm).await?;
        ensure!(being_sent.meta == first.meta);
        ensure!(
            being_sent.snapshot.to_vec()? == first.snapshot.to_vec()?,
            "the older snapshot changed under its reader"
        );
        let current = sm.get_current_snapshot().await.map_err(err)?;
        ensure!(current.is_some_and(|c| c.meta == second.meta));
    }
    let db = open_raw(dir.path())?;
    let meta = db.open_tree("raft.meta")?;
    let ids: std::collections::BTreeSet<Vec<u8>> = meta
        .scan_prefix(b"snapshot_pieces/")
        .keys()
        .map(|k| k.map(|k| k[..k.len() - 8].to_vec()))
        .collect::<Result<_, _>>()?;
    ensure!(ids.len() == 1, "pieces of {} snapshots left", ids.len());
    Ok(())
}

/// A data directory from before snapshots were stored by id has its
/// snapshot moved on open; pieces nothing names (a build or install a
/// crash interrupted) are removed.
#[tokio::test]
async fn an_old_layout_snapshot_is_moved_and_stray_pieces_removed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bytes = {
        let (_log, mut sm) = open(dir.path())?;
        sm.apply([entry(1, vec![put("a", "1"), put("b", "2")])])
            .await
            .map_err(err)?;
        build(&mut sm).await?.snapshot.to_vec()?
    };
    {
        let db = open_raw(dir.path())?;
        let meta = db.open_tree("raft.meta")?;
        let pieces: Vec<_> = meta
            .scan_prefix(b"snapshot_pieces/")
            .keys()
            .collect::<Result<_, _>>()?;
        ensure!(!pieces.is_empty());
        for key in pieces {
            meta.remove(key)?;
        }
        meta.remove(b"snapshot_len")?;
        let (head, tail) = bytes.split_at(bytes.len() / 2);
        meta.insert(b"snapshot_data/\x00\x00\x00\x00", head)?;
        meta.insert(b"snapshot_data/\x00\x00\x00\x01", tail)?;
        // Ids that sort before and after the current one (`1-1-<n>`).
        for stray in ["0-0-0", "9-9-9"] {
            let mut key = format!("snapshot_pieces/{stray}/").into_bytes();
            key.extend_from_slice(&0u64.to_be_bytes());
            meta.insert(key, b"stray".as_slice())?;
        }
        db.flush()?;
    }
    {
        let (_log, mut sm) = open(dir.path())?;
        let current = current(&mut sm, "snapshot lost in the move").await?;
        ensure!(current.snapshot.to_vec()? == bytes, "moved bytes differ");
    }
    let db = open_raw(dir.path())?;
    let meta = db.open_tree("raft.meta")?;
    ensure!(
        meta.scan_prefix(b"snapshot_data/").next().is_none(),
        "old layout left"
    );
    for stray in ["0-0-0", "9-9-9"] {
        ensure!(
            meta.scan_prefix(format!("snapshot_pieces/{stray}/"))
                .next()
                .is_none(),
            "stray piece {stray} left"
        );
    }
    Ok(())
}

#[tokio::test]
async fn scan_pages_through_a_prefix() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_log, mut sm) = open(dir.path())?;
    let commands = (0..10)
        .map(|i| put(&format!("p/{i}"), "v"))
        .chain([put("q/0", "v"), put("o/9", "v")])
        .collect();
    sm.apply([entry(1, commands)]).await.map_err(err)?;
    let view = sm.view();
    let first = view.scan(b"p/", None, 4)?;
    ensure!(
        first.len() == 4 && first[0].0 == b"p/0" && first[3].0 == b"p/3",
        "first page {first:?}"
    );
    let rest = view.scan(b"p/", Some(&first[3].0), 100)?;
    ensure!(
        rest.len() == 6 && rest.iter().all(|(k, _)| k.starts_with(b"p/")),
        "rest {rest:?}"
    );
    Ok(())
}

/// The keys of every stored snapshot piece in a node's meta tree, by set.
fn piece_sets(dir: &std::path::Path) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let db = open_raw(dir)?;
    let meta = db.open_tree("raft.meta")?;
    let mut sets = std::collections::BTreeSet::new();
    for item in meta.scan_prefix(b"snapshot_pieces/") {
        let (key, _) = item?;
        let rest = &key[b"snapshot_pieces/".len()..];
        let end = rest.iter().position(|b| *b == b'/').unwrap_or(rest.len());
        sets.insert(String::from_utf8_lossy(&rest[..end]).into_owned());
    }
    Ok(sets)
}

/// Writes `bytes` into a snapshot being received as openraft does, in
/// chunks at their offsets, sending one chunk twice (a retried chunk).
async fn receive(
    sm: &mut SledStateMachine<KvLogic>,
    bytes: &[u8],
) -> anyhow::Result<Box<SnapshotData>> {
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    let mut data = sm.begin_receiving_snapshot().await.map_err(err)?;
    let chunk = 100_000;
    let mut offset = 0;
    let mut resent = false;
    while offset < bytes.len() {
        let end = (offset + chunk).min(bytes.len());
        data.seek(std::io::SeekFrom::Start(offset as u64)).await?;
        data.write_all(&bytes[offset..end]).await?;
        if !resent && offset > 0 {
            resent = true;
            continue; // the same chunk again
        }
        offset = end;
    }
    data.flush().await?;
    Ok(data)
}

/// A received snapshot is staged into pieces as its chunks arrive (not held
/// in memory), installs from them, and they become the stored snapshot: no
/// second copy, nothing left over, and it survives a reopen.
#[tokio::test]
async fn a_received_snapshot_is_staged_on_disk_and_becomes_the_stored_one() -> anyhow::Result<()> {
    let source_dir = tempfile::tempdir()?;
    let (built, meta, expected) = {
        let (_log, mut source) = open(source_dir.path())?;
        let commands = (0..3000)
            .map(|i| put(&format!("k/{i:05}"), &format!("value {i} {}", i * 7919)))
            .collect();
        source.apply([entry(1, commands)]).await.map_err(err)?;
        let built = build(&mut source).await?;
        (built.snapshot.to_vec()?, built.meta, source.view().dump()?)
    };
    let target_dir = tempfile::tempdir()?;
    {
        let (_log, mut target) = open(target_dir.path())?;
        target
            .apply([entry(1, vec![put("old", "gone after the install")])])
            .await
            .map_err(err)?;
        let data = receive(&mut target, &built).await?;
        ensure!(data.to_vec()? == built, "staged bytes differ");
        target.install_snapshot(&meta, data).await.map_err(err)?;
        ensure!(target.view().dump()? == expected, "installed state differs");
        let installed = current(&mut target, "no snapshot after install").await?;
        ensure!(installed.snapshot.to_vec()? == built, "stored bytes differ");
    }
    let sets = piece_sets(target_dir.path())?;
    ensure!(
        sets.len() == 1 && sets.iter().all(|s| s.starts_with("receiving-")),
        "the staged pieces should be the stored snapshot, alone: {sets:?}"
    );
    let (_log, mut target) = open(target_dir.path())?;
    ensure!(
        target.view().dump()? == expected,
        "state differs after reopen"
    );
    let reopened = current(&mut target, "no snapshot after reopen").await?;
    ensure!(
        reopened.snapshot.to_vec()? == built,
        "bytes differ after reopen"
    );
    Ok(())
}

/// A receive that is never installed (the leader gave up, or sent a
/// malformed snapshot) leaves no pieces behind, and a malformed one changes
/// nothing the node serves.
#[tokio::test]
async fn an_abandoned_or_malformed_receive_leaves_nothing_behind() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (meta, good) = {
        let (_log, mut sm) = open(dir.path())?;
        sm.apply([entry(1, vec![put("a", "1")])])
            .await
            .map_err(err)?;
        let built = build(&mut sm).await?;
        (built.meta, built.snapshot.to_vec()?)
    };
    {
        let (_log, mut sm) = open(dir.path())?;
        let before = sm.view().dump()?;
        // Abandoned halfway.
        drop(receive(&mut sm, &[7u8; 300_000]).await?);
        // Malformed: a valid start, then bytes that are not a block.
        let mut bad = good.clone();
        bad.extend_from_slice(&[0xff; 64]);
        let data = receive(&mut sm, &bad).await?;
        let installed = sm.install_snapshot(&meta, data).await;
        ensure!(installed.is_err(), "a malformed snapshot installed");
        ensure!(
            sm.view().dump()? == before,
            "the refused install changed the state"
        );
        let stored = current(&mut sm, "the snapshot went").await?;
        ensure!(
            stored.snapshot.to_vec()? == good,
            "the stored snapshot changed"
        );
    }
    let sets = piece_sets(dir.path())?;
    ensure!(
        sets.len() == 1 && !sets.iter().any(|s| s.starts_with("receiving-")),
        "staged pieces left behind: {sets:?}"
    );
    Ok(())
}

/// A received snapshot has a size bound: the chunk that would take it past
/// `received_snapshot_bytes_max` is refused with an error that names the
/// bound, whatever offset it claims, and nothing it staged outlives it.
#[tokio::test]
async fn a_received_snapshot_past_its_bound_is_refused() -> anyhow::Result<()> {
    use tokio::io::{AsyncSeekExt, AsyncWriteExt};
    let dir = tempfile::tempdir()?;
    one_key_and_a_snapshot(dir.path()).await?;
    {
        let mut config = config(dir.path());
        config.received_snapshot_bytes_max = 250_000;
        let (_log, mut sm) = open_storage(&config, Arc::new(KvLogic))?;
        let mut data = sm.begin_receiving_snapshot().await.map_err(err)?;
        data.write_all(&[7u8; 200_000]).await?;
        let refused = data.write_all(&[7u8; 100_000]).await;
        let error = refused.err().map(|e| e.to_string()).unwrap_or_default();
        ensure!(
            error.contains("received_snapshot_bytes_max"),
            "a chunk past the bound: {error:?}"
        );
        // Up to the bound exactly is still taken.
        data.seek(std::io::SeekFrom::Start(200_000)).await?;
        data.write_all(&[7u8; 50_000]).await?;
        ensure!(data.len() == 250_000, "received {} bytes", data.len());
        drop(data);
    }
    let sets = piece_sets(dir.path())?;
    ensure!(
        !sets.iter().any(|s| s.starts_with("receiving-")),
        "staged pieces left behind: {sets:?}"
    );
    Ok(())
}

/// Pieces a crash left mid-receive are removed at the next start.
#[tokio::test]
async fn pieces_of_a_receive_cut_by_a_crash_are_removed_at_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    one_key_and_a_snapshot(dir.path()).await?;
    {
        // What a receive in progress has written when the process dies.
        let db = open_raw(dir.path())?;
        let meta = db.open_tree("raft.meta")?;
        for piece in 0..3u64 {
            let mut key = b"snapshot_pieces/receiving-99/".to_vec();
            key.extend_from_slice(&piece.to_be_bytes());
            meta.insert(key, vec![7u8; 1000])?;
        }
        db.flush()?;
    }
    ensure!(
        piece_sets(dir.path())?
            .iter()
            .any(|s| s.starts_with("receiving-")),
        "the test did not leave staged pieces"
    );
    drop(open(dir.path())?);
    let sets = piece_sets(dir.path())?;
    ensure!(
        !sets.iter().any(|s| s.starts_with("receiving-")),
        "staged pieces survived a start: {sets:?}"
    );
    Ok(())
}

/// The undo map kept while a snapshot copies has a memory bound: past it
/// the replaced values go to a scratch tree, the snapshot is still the
/// state at its point, and the scratch tree is gone after the build.
#[tokio::test]
async fn an_undo_map_past_its_memory_bound_moves_to_disk_and_the_snapshot_holds(
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let mut config = config(dir.path());
        config.undo_memory_bytes_max = 2 * 1024;
        let (_log, mut sm) = open_storage(&config, Arc::new(KvLogic))?;
        let before: Vec<KvCommand> = (0..2000)
            .map(|i| put(&format!("k/{i:04}"), &format!("before {i}")))
            .collect();
        sm.apply([entry(1, before)]).await.map_err(err)?;
        let expected = sm.view().dump()?;
        let mut builder = sm.get_snapshot_builder().await;
        // Far more replaced values than 2 KiB hold: changes, deletions and
        // new keys, over several entries.
        for round in 0..4u64 {
            let mut after = Vec::new();
            for i in (round as usize..2000).step_by(3) {
                after.push(put(&format!("k/{i:04}"), &format!("after {round}")));
            }
            for i in (1..2000).step_by(7) {
                after.push(KvCommand::Delete {
                    key: format!("k/{i:04}"),
                });
            }
            after.push(put(&format!("k/new-{round}"), "after"));
            sm.apply([entry(2 + round, after)]).await.map_err(err)?;
        }
        let built = builder.build_snapshot().await.map_err(err)?;
        ensure!(built.meta.last_log_id.map(|id| id.index) == Some(1));
        let mut state = BTreeMap::new();
        for (key, value) in tollgate_raft::store::decode_snapshot(&built.snapshot.to_vec()?)? {
            if let Some(earlier) = state.insert(key.clone(), value.clone()) {
                ensure!(earlier == value, "{key:?} twice with different values");
            }
        }
        ensure!(
            state == expected,
            "the snapshot is not the state at its point"
        );
    }
    let db = open_raw(dir.path())?;
    ensure!(
        !db.tree_names()
            .iter()
            .any(|n| n.as_ref() == b"snapshot.undo"),
        "the undo tree outlived the build"
    );
    Ok(())
}

/// A data directory written before values had a binary form holds them as
/// JSON: they read unchanged, the first open rewrites them in the binary
/// form (reads still give the same bytes), and a snapshot carries them in
/// that form to a node that installs it.
#[tokio::test]
async fn json_values_of_an_older_node_are_rewritten_at_open_and_read_the_same() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let object =
        br#"{"id":"ent-1","status":"active","valid_until":null,"geo_rule":{"allow_countries":[]}}"#;
    let legacy: Vec<(&[u8], &[u8])> = vec![
        (b"entitlement/ent-1", object),
        (b"list", br#"[1,2,3]"#),
        (b"counter", b"42"),
        (b"index/a/b", b""),
        (b"spaced", br#"{"a": 1}"#),
    ];
    {
        let (_log, _sm) = open(dir.path())?;
    }
    {
        // What an older node left: JSON under the data keys, no marker.
        let db = open_raw(dir.path())?;
        let sm = db.open_tree("sm.0")?;
        sm.remove(b"\x00value_format")?;
        for (key, value) in &legacy {
            let mut k = vec![0x01];
            k.extend_from_slice(key);
            sm.insert(k, *value)?;
        }
        db.flush()?;
    }
    let expected: BTreeMap<Vec<u8>, Vec<u8>> = legacy
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    let (meta, bytes) = {
        let (_log, mut sm) = open(dir.path())?;
        ensure!(
            sm.view().dump()? == expected,
            "values read differently after the rewrite"
        );
        ensure!(sm.view().get(b"entitlement/ent-1")?.as_deref() == Some(object.as_slice()));
        let built = build(&mut sm).await?;
        (built.meta, built.snapshot.to_vec()?)
    };
    {
        let db = open_raw(dir.path())?;
        let sm = db.open_tree("sm.0")?;
        let stored = |key: &[u8]| -> anyhow::Result<Vec<u8>> {
            let mut k = vec![0x01];
            k.extend_from_slice(key);
            Ok(sm.get(k)?.map(|v| v.to_vec()).unwrap_or_default())
        };
        ensure!(
            stored(b"entitlement/ent-1")?[0] == tollgate_raft::store::value::BINARY
                && stored(b"list")?[0] == tollgate_raft::store::value::BINARY,
            "objects and arrays were not rewritten"
        );
        ensure!(stored(b"entitlement/ent-1")?.len() < object.len());
        ensure!(stored(b"counter")? == b"42" && stored(b"spaced")? == br#"{"a": 1}"#);
        ensure!(sm.get(b"\x00value_format")?.is_some(), "no marker");
    }
    let target_dir = tempfile::tempdir()?;
    let (_log, mut target) = open(target_dir.path())?;
    target
        .install_snapshot(&meta, Box::new(SnapshotData::from_bytes(bytes)))
        .await
        .map_err(err)?;
    ensure!(
        target.view().dump()? == expected,
        "the installed state reads differently"
    );
    Ok(())
}

/// The log's indexes and the term of each, read through the log store.
async fn log_terms(dir: &std::path::Path) -> anyhow::Result<Vec<(u64, u64)>> {
    use openraft::storage::RaftLogStorage;
    use openraft::RaftLogReader;
    let (mut log, _sm) = open(dir)?;
    let entries = log.try_get_log_entries(0..u64::MAX).await.map_err(err)?;
    let state = log.get_log_state().await.map_err(err)?;
    ensure!(
        state.last_log_id.map(|id| id.index) == entries.last().map(|e| e.log_id.index),
        "log state {state:?} disagrees with the entries read"
    );
    Ok(entries
        .iter()
        .map(|e| (e.log_id.index, e.log_id.leader_id.term))
        .collect())
}

fn entry_of_term(term: u64, index: u64) -> Entry<TypeConfig<KvLogic>> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
        payload: EntryPayload::Normal(vec![put(&format!("k{index}"), &format!("t{term}"))]),
    }
}

/// Removes log entries `from..` behind the store's back, as a power cut
/// that took sled's unflushed writes would.
fn lose_sled_log_from(dir: &std::path::Path, from: u64) -> anyhow::Result<()> {
    let db = open_raw(dir)?;
    let log = db.open_tree("raft.log")?;
    for item in log.range(from.to_be_bytes()..) {
        let (key, _) = item?;
        log.remove(key)?;
    }
    db.flush()?;
    Ok(())
}

#[tokio::test]
async fn appends_sled_lost_come_back_from_the_journal() -> anyhow::Result<()> {
    use openraft::storage::RaftLogStorageExt;
    let dir = tempfile::tempdir()?;
    {
        let (mut log, _sm) = open(dir.path())?;
        log.blocking_append((1..=5).map(|i| entry_of_term(1, i)))
            .await
            .map_err(err)?;
    }
    lose_sled_log_from(dir.path(), 3)?;
    let terms = log_terms(dir.path()).await?;
    ensure!(
        terms == (1..=5).map(|i| (i, 1)).collect::<Vec<_>>(),
        "after sled lost entries 3..=5 the log reads {terms:?}"
    );
    // The replay was flushed into sled and the journal turned: losing the
    // same again now loses them for good (nothing replays them twice).
    lose_sled_log_from(dir.path(), 4)?;
    let terms = log_terms(dir.path()).await?;
    ensure!(
        terms == (1..=3).map(|i| (i, 1)).collect::<Vec<_>>(),
        "a turned journal replayed old records: {terms:?}"
    );
    Ok(())
}

#[tokio::test]
async fn entries_a_truncation_removed_never_come_back_from_the_journal() -> anyhow::Result<()> {
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    let dir = tempfile::tempdir()?;
    {
        let (mut log, _sm) = open(dir.path())?;
        log.blocking_append((1..=5).map(|i| entry_of_term(1, i)))
            .await
            .map_err(err)?;
        // A new leader's log differs from index 4 on.
        log.truncate(LogId::new(CommittedLeaderId::new(1, 1), 4))
            .await
            .map_err(err)?;
        log.blocking_append([entry_of_term(2, 4)])
            .await
            .map_err(err)?;
    }
    // Whatever sled kept past index 4, the journal must give back the log
    // as it was written: 1..=3 of term 1, 4 of term 2, and no 5.
    lose_sled_log_from(dir.path(), 4)?;
    let terms = log_terms(dir.path()).await?;
    ensure!(
        terms == vec![(1, 1), (2, 1), (3, 1), (4, 2)],
        "after a truncation and a crash the log reads {terms:?}"
    );
    Ok(())
}

#[tokio::test]
async fn entries_a_purge_removed_are_not_replayed() -> anyhow::Result<()> {
    use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
    let dir = tempfile::tempdir()?;
    {
        let (mut log, _sm) = open(dir.path())?;
        log.blocking_append((1..=5).map(|i| entry_of_term(1, i)))
            .await
            .map_err(err)?;
        log.purge(LogId::new(CommittedLeaderId::new(1, 1), 3))
            .await
            .map_err(err)?;
        log.blocking_append([entry_of_term(1, 6)])
            .await
            .map_err(err)?;
    }
    // The purge flushed sled (4 and 5 are there for good); 6 was appended
    // after it, into the journal only.
    lose_sled_log_from(dir.path(), 6)?;
    let terms = log_terms(dir.path()).await?;
    ensure!(
        terms == vec![(4, 1), (5, 1), (6, 1)],
        "after a purge to 3 and a crash the log reads {terms:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_damaged_journal_stops_the_node_from_opening() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    drop(open(dir.path())?);
    let path = dir.path().join(tollgate_raft::store::journal::FILE_NAME);
    let mut bytes = std::fs::read(&path)?;
    bytes[..1024].fill(0xa5);
    std::fs::write(&path, &bytes)?;
    let error = match open(dir.path()) {
        Ok(_) => anyhow::bail!("a journal with no valid header was opened"),
        Err(error) => error.to_string(),
    };
    ensure!(error.contains("neither header is valid"), "{error}");
    Ok(())
}

fn delete(k: &str) -> KvCommand {
    KvCommand::Delete { key: k.into() }
}

fn keys_of(pairs: &[(Vec<u8>, Vec<u8>)]) -> Vec<String> {
    pairs
        .iter()
        .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
        .collect()
}

#[tokio::test]
async fn applies_wait_in_memory_until_enough_gather_and_readers_see_them_meanwhile(
) -> anyhow::Result<()> {
    use tollgate_raft::store::PENDING_APPLIES_MAX;
    let dir = tempfile::tempdir()?;
    let last = PENDING_APPLIES_MAX as u64;
    {
        let (_log, mut sm) = open(dir.path())?;
        let view = sm.view();
        for i in 1..last {
            sm.apply([entry(i, vec![put(&format!("k{i:03}"), "v")])])
                .await
                .map_err(err)?;
        }
        sm.apply([entry(last, vec![delete("k001")])])
            .await
            .map_err(err)?;
        // Readers see every apply at once, whether or not it is in sled yet.
        ensure!(view.last_applied()?.map(|l| l.index) == Some(last));
        ensure!(view.get(b"k001")?.is_none() && view.get(b"k002")? == Some(b"v".to_vec()));
        ensure!(view.dump()?.len() == last as usize - 2);
        sm.apply([entry(last + 1, vec![put("after", "v")])])
            .await
            .map_err(err)?;
        // Dropped without a write-back: a crash, as far as the applies
        // still in memory go.
    }
    let (_log, sm) = open(dir.path())?;
    let view = sm.view();
    // The first PENDING_APPLIES_MAX applies went into sled together, the
    // one after them had not yet.
    ensure!(
        view.last_applied()?.map(|l| l.index) == Some(last),
        "last_applied in sled: {:?}",
        view.last_applied()?
    );
    ensure!(view.get(b"k002")? == Some(b"v".to_vec()) && view.get(b"k001")?.is_none());
    ensure!(
        view.get(b"after")?.is_none(),
        "an apply still in memory reached sled"
    );
    Ok(())
}

#[tokio::test]
async fn a_scan_merges_pending_applies_over_the_stored_state() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_log, mut sm) = open(dir.path())?;
    let stored = (0..6).map(|i| put(&format!("p/{i}"), "old")).collect();
    sm.apply([entry(1, stored)]).await.map_err(err)?;
    // Asking for the applied state writes the pending applies back.
    sm.applied_state().await.map_err(err)?;
    sm.apply([entry(
        2,
        vec![
            put("p/2", "new"),
            delete("p/3"),
            put("p/25", "new"),
            put("p/9", "new"),
            put("q/0", "new"),
        ],
    )])
    .await
    .map_err(err)?;
    let view = sm.view();
    let all = view.scan(b"p/", None, 100)?;
    ensure!(
        keys_of(&all) == ["p/0", "p/1", "p/2", "p/25", "p/4", "p/5", "p/9"],
        "merged scan {:?}",
        keys_of(&all)
    );
    let value_of = |key: &str| {
        all.iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    ensure!(value_of("p/2").as_deref() == Some("new") && value_of("p/1").as_deref() == Some("old"));
    // Pages, each starting past the last key of the one before.
    let mut paged = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = view.scan(b"p/", after.as_deref(), 2)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        paged.extend(page);
    }
    ensure!(paged == all, "paged {:?}", keys_of(&paged));
    // A delete of a whole prefix sees stored and pending keys alike.
    sm.apply([entry(
        3,
        vec![KvCommand::DeletePrefix {
            prefix: "p/".into(),
        }],
    )])
    .await
    .map_err(err)?;
    ensure!(view.scan(b"p/", None, 100)?.is_empty());
    ensure!(keys_of(&view.scan(b"", None, 100)?) == ["q/0"]);
    Ok(())
}

#[tokio::test]
async fn a_snapshot_holds_the_applies_still_in_memory() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_log, mut sm) = open(dir.path())?;
    for i in 1..=3 {
        sm.apply([entry(i, vec![put(&format!("k{i}"), "v")])])
            .await
            .map_err(err)?;
    }
    let snapshot = build(&mut sm).await?;
    ensure!(
        snapshot.meta.last_log_id.map(|l| l.index) == Some(3),
        "snapshot point {:?}",
        snapshot.meta.last_log_id
    );
    let other = tempfile::tempdir()?;
    let (_log2, mut fresh) = open(other.path())?;
    fresh
        .install_snapshot(&snapshot.meta, snapshot.snapshot)
        .await
        .map_err(err)?;
    let keys: Vec<Vec<u8>> = fresh.view().dump()?.into_keys().collect();
    ensure!(
        keys == [b"k1".to_vec(), b"k2".to_vec(), b"k3".to_vec()],
        "installed {keys:?}"
    );
    Ok(())
}
