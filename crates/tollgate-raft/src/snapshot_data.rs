//! A snapshot's bytes as openraft reads and writes them.
//!
//! A snapshot this node built, or installed, is stored in sled in pieces and
//! read piece by piece as it is streamed, so neither starting a node nor
//! sending a snapshot holds a whole snapshot in memory. A snapshot being
//! received is written into pieces as its chunks arrive (staged), and the
//! install reads it back from them; the pieces of a received snapshot that
//! is never installed are removed when it is dropped (or, after a crash,
//! at the next start).

use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::kv::{KvError, Tree, Value};

/// Stored snapshots are kept in pieces of this size, so that no sled value
/// becomes a blob.
pub(crate) const PIECE_BYTES: usize = 256 * 1024;

/// The key of piece `index` of the snapshot stored under `prefix`.
pub(crate) fn piece_key(prefix: &[u8], index: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Removes every key under `prefix`, one at a time.
pub(crate) fn remove_prefix(tree: &Tree, prefix: &[u8]) -> Result<(), KvError> {
    for item in tree.scan_prefix(prefix) {
        tree.remove(item?.0)?;
    }
    Ok(())
}

/// A stored snapshot's pieces, shared by the node and every reader (a
/// follower being sent it). A replaced snapshot is retired, and whoever
/// lets go of it last removes its pieces, so a snapshot is never removed
/// under a reader: openraft treats a failed snapshot read as fatal.
pub(crate) struct StoredPieces {
    tree: Tree,
    /// The pieces' keys are this prefix and the piece number.
    prefix: Vec<u8>,
    retired: AtomicBool,
}

impl StoredPieces {
    pub(crate) fn new(tree: Tree, prefix: Vec<u8>) -> Arc<Self> {
        Arc::new(StoredPieces {
            tree,
            prefix,
            retired: AtomicBool::new(false),
        })
    }

    /// Whether these are the pieces under `prefix`.
    pub(crate) fn is(&self, prefix: &[u8]) -> bool {
        self.prefix == prefix
    }

    /// Pieces being written for a snapshot being received: removed when
    /// the last handle goes, unless an install adopts them first.
    pub(crate) fn staging(tree: Tree, prefix: Vec<u8>) -> Arc<Self> {
        Arc::new(StoredPieces {
            tree,
            prefix,
            retired: AtomicBool::new(true),
        })
    }

    /// The pieces' key prefix.
    pub(crate) fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// A newer snapshot replaced this one: remove the pieces once nobody
    /// reads them.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }

    /// An install made these (staged) pieces the current snapshot's: keep them.
    pub(crate) fn adopt(&self) {
        self.retired.store(false, Ordering::SeqCst);
    }

    /// Writes `data` at byte `position` (at most the length written so far:
    /// no holes), piece by piece.
    fn write_at(&self, position: u64, mut data: &[u8]) -> io::Result<()> {
        let mut position = position;
        while !data.is_empty() {
            let index = position / PIECE_BYTES as u64;
            let offset = (position % PIECE_BYTES as u64) as usize;
            let n = (PIECE_BYTES - offset).min(data.len());
            let key = piece_key(&self.prefix, index);
            let mut piece = match self.tree.get(&key).map_err(io::Error::other)? {
                Some(piece) => piece.to_vec(),
                None => Vec::new(),
            };
            if piece.len() < offset {
                return Err(io::Error::other(format!(
                    "snapshot piece {index} holds {} bytes; a write at {offset} would leave a hole",
                    piece.len()
                )));
            }
            let end = offset + n;
            if piece.len() < end {
                piece.resize(end, 0);
            }
            piece[offset..end].copy_from_slice(&data[..n]);
            self.tree.insert(&key, piece).map_err(io::Error::other)?;
            data = &data[n..];
            position += n as u64;
        }
        Ok(())
    }
}

impl Drop for StoredPieces {
    fn drop(&mut self) {
        if !self.retired.load(Ordering::SeqCst) {
            return;
        }
        if let Err(error) = remove_prefix(&self.tree, &self.prefix) {
            // The next start removes pieces nothing names.
            tracing::warn!(%error, "Removing a replaced snapshot's pieces failed.");
        }
    }
}

enum Bytes {
    Memory(Vec<u8>),
    Stored {
        pieces: Arc<StoredPieces>,
        len: u64,
    },
    /// Being received: written into pieces as it comes.
    Staging {
        pieces: Arc<StoredPieces>,
        len: u64,
        /// Refused past this many bytes.
        max: u64,
    },
}

/// A snapshot's bytes: in memory, stored in sled and read lazily, or being
/// received into sled.
pub struct SnapshotData {
    bytes: Bytes,
    position: u64,
}

impl SnapshotData {
    /// Bytes held in memory (a snapshot being received, or built by hand).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        SnapshotData {
            bytes: Bytes::Memory(bytes),
            position: 0,
        }
    }

    /// A stored snapshot of `len` bytes.
    pub(crate) fn stored(pieces: Arc<StoredPieces>, len: u64) -> Self {
        SnapshotData {
            bytes: Bytes::Stored { pieces, len },
            position: 0,
        }
    }

    /// A snapshot to be received into `pieces` (made by
    /// [`StoredPieces::staging`]), of at most `max` bytes.
    pub(crate) fn staging(pieces: Arc<StoredPieces>, max: u64) -> Self {
        SnapshotData {
            bytes: Bytes::Staging {
                pieces,
                len: 0,
                max,
            },
            position: 0,
        }
    }

    /// The pieces a received snapshot was staged into, for an install to
    /// adopt (`None`: not staged).
    pub(crate) fn staged_pieces(&self) -> Option<&Arc<StoredPieces>> {
        match &self.bytes {
            Bytes::Staging { pieces, .. } => Some(pieces),
            _ => None,
        }
    }

    /// The snapshot's size in bytes.
    pub fn len(&self) -> u64 {
        match &self.bytes {
            Bytes::Memory(v) => v.len() as u64,
            Bytes::Stored { len, .. } | Bytes::Staging { len, .. } => *len,
        }
    }

    /// Whether the snapshot has no bytes (an empty state machine's).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every byte, in memory (tests, small snapshots).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        match &self.bytes {
            Bytes::Memory(v) => Ok(v.clone()),
            Bytes::Stored { pieces, len } | Bytes::Staging { pieces, len, .. } => {
                let mut out = Vec::with_capacity(*len as usize);
                for index in 0..len.div_ceil(PIECE_BYTES as u64) {
                    out.extend_from_slice(&piece(pieces, index)?);
                }
                if out.len() as u64 != *len {
                    return Err(io::Error::other(format!(
                        "stored snapshot holds {} bytes, not the {len} recorded",
                        out.len()
                    )));
                }
                Ok(out)
            }
        }
    }

    /// Reads the bytes from the start, one piece in memory at a time.
    pub fn reader(&self) -> SnapshotReader<'_> {
        SnapshotReader {
            data: self,
            position: 0,
        }
    }

    /// Copies up to `buf.len()` bytes from `position`; 0 at the end.
    fn read_at(&self, position: u64, buf: &mut [u8]) -> io::Result<usize> {
        if position >= self.len() || buf.is_empty() {
            return Ok(0);
        }
        match &self.bytes {
            Bytes::Memory(v) => {
                let from = &v[position as usize..];
                let n = from.len().min(buf.len());
                buf[..n].copy_from_slice(&from[..n]);
                Ok(n)
            }
            Bytes::Stored { pieces, .. } | Bytes::Staging { pieces, .. } => {
                let index = position / PIECE_BYTES as u64;
                let offset = (position % PIECE_BYTES as u64) as usize;
                let piece = piece(pieces, index)?;
                let Some(from) = piece.get(offset..).filter(|rest| !rest.is_empty()) else {
                    return Err(io::Error::other(format!(
                        "snapshot piece {index} is shorter than its place in the snapshot"
                    )));
                };
                let n = from.len().min(buf.len());
                buf[..n].copy_from_slice(&from[..n]);
                Ok(n)
            }
        }
    }
}

/// A blocking reader over a snapshot's bytes (see [`SnapshotData::reader`]).
pub struct SnapshotReader<'a> {
    data: &'a SnapshotData,
    position: u64,
}

impl io::Read for SnapshotReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.data.read_at(self.position, buf)?;
        self.position += n as u64;
        Ok(n)
    }
}

fn piece(pieces: &StoredPieces, index: u64) -> io::Result<Value> {
    match pieces.tree.get(piece_key(&pieces.prefix, index)) {
        Ok(Some(piece)) => Ok(piece),
        Ok(None) => Err(io::Error::other(format!(
            "snapshot piece {index} is missing"
        ))),
        Err(e) => Err(io::Error::other(e)),
    }
}

impl AsyncRead for SnapshotData {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let position = self.position;
        let n = self.read_at(position, buf.initialize_unfilled())?;
        buf.advance(n);
        self.position += n as u64;
        Poll::Ready(Ok(()))
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(mut self: Pin<&mut Self>, to: SeekFrom) -> io::Result<()> {
        let (base, delta) = match to {
            SeekFrom::Start(n) => (n, 0),
            SeekFrom::End(d) => (self.len(), d),
            SeekFrom::Current(d) => (self.position, d),
        };
        self.position = base.checked_add_signed(delta).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the snapshot",
            )
        })?;
        Ok(())
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.position))
    }
}

impl AsyncWrite for SnapshotData {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let position = self.position;
        let end = position + data.len() as u64;
        match &mut self.bytes {
            Bytes::Memory(v) => {
                let (position, end) = (position as usize, end as usize);
                if v.len() < end {
                    v.resize(end, 0);
                }
                v[position..end].copy_from_slice(data);
            }
            Bytes::Staging { pieces, len, max } => {
                if position > *len {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("a snapshot chunk at byte {position}, past the {len} received"),
                    )));
                }
                if end > *max {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!(
                            "a snapshot chunk ending at byte {end}, past the {max} bytes a received snapshot may hold (received_snapshot_bytes_max)"
                        ),
                    )));
                }
                pieces.write_at(position, data)?;
                *len = (*len).max(end);
            }
            Bytes::Stored { .. } => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "a stored snapshot is read-only",
                )))
            }
        }
        self.position = end;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{Db, MemDisk};
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    fn stored(bytes: &[u8]) -> (Db, Tree, Arc<StoredPieces>) {
        let db = Db::memory(MemDisk::new());
        let tree = db.open_tree("t").unwrap();
        for (i, chunk) in bytes.chunks(PIECE_BYTES).enumerate() {
            tree.insert(piece_key(b"p/", i as u64), chunk).unwrap();
        }
        let pieces = StoredPieces::new(tree.clone(), b"p/".to_vec());
        (db, tree, pieces)
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn stored_bytes_read_back_across_pieces_from_any_offset() {
        let bytes = sample(PIECE_BYTES * 2 + 1000);
        let (_dir, _tree, pieces) = stored(&bytes);
        let mut data = SnapshotData::stored(pieces, bytes.len() as u64);
        assert_eq!(
            data.seek(SeekFrom::End(0)).await.unwrap(),
            bytes.len() as u64
        );
        for offset in [0, 1, PIECE_BYTES - 1, PIECE_BYTES, PIECE_BYTES * 2 + 999] {
            data.seek(SeekFrom::Start(offset as u64)).await.unwrap();
            let mut out = Vec::new();
            data.read_to_end(&mut out).await.unwrap();
            assert_eq!(out, bytes[offset..], "from {offset}");
        }
        assert_eq!(data.to_vec().unwrap(), bytes);
        assert!(data.write_all(b"x").await.is_err(), "read-only");
    }

    #[tokio::test]
    async fn a_missing_piece_is_an_error_not_other_bytes() {
        let bytes = sample(PIECE_BYTES + 10);
        let (_dir, tree, pieces) = stored(&bytes);
        tree.remove(piece_key(b"p/", 1)).unwrap();
        let mut data = SnapshotData::stored(pieces, bytes.len() as u64);
        let mut out = Vec::new();
        assert!(data.read_to_end(&mut out).await.is_err());
        assert!(data.to_vec().is_err());
    }

    #[tokio::test]
    async fn retired_pieces_outlive_their_last_reader_only() {
        let bytes = sample(PIECE_BYTES + 10);
        let (_dir, tree, pieces) = stored(&bytes);
        let reader = SnapshotData::stored(pieces.clone(), bytes.len() as u64);
        pieces.retire();
        drop(pieces);
        assert_eq!(reader.to_vec().unwrap(), bytes, "still readable while read");
        drop(reader);
        assert!(
            tree.is_empty().unwrap(),
            "removed when the last reader let go"
        );

        let (_dir, tree, pieces) = stored(&bytes);
        drop(pieces);
        assert_eq!(tree.len().unwrap(), 2, "current pieces stay");
    }

    #[tokio::test]
    async fn memory_bytes_are_written_at_the_seek_position() {
        let mut data = SnapshotData::from_bytes(Vec::new());
        data.write_all(b"hello").await.unwrap();
        data.seek(SeekFrom::Start(3)).await.unwrap();
        data.write_all(b"p!").await.unwrap();
        assert_eq!(data.to_vec().unwrap(), b"help!");
        assert!(data.seek(SeekFrom::Current(-10)).await.is_err());
        data.seek(SeekFrom::Start(0)).await.unwrap();
        let mut out = String::new();
        data.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "help!");
    }
}
