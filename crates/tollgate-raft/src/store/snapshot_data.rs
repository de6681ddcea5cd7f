//! A snapshot's bytes as openraft reads and writes them.
//!
//! A snapshot this node built, or installed, is stored in sled in pieces and
//! read piece by piece as it is streamed, so neither starting a node nor
//! sending a snapshot holds a whole snapshot in memory. A snapshot being
//! received is collected in memory until it is installed.

use std::io::{self, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// Stored snapshots are kept in pieces of this size, so that no sled value
/// becomes a blob.
pub(crate) const PIECE_BYTES: usize = 256 * 1024;

/// The key of piece `index` of the snapshot stored under `prefix`.
pub(crate) fn piece_key(prefix: &[u8], index: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&index.to_be_bytes());
    k
}

enum Bytes {
    Memory(Vec<u8>),
    Stored {
        tree: sled::Tree,
        /// The pieces' keys are this prefix and the piece number.
        prefix: Vec<u8>,
        len: u64,
    },
}

/// A snapshot's bytes: in memory, or stored in sled and read lazily.
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

    /// A stored snapshot of `len` bytes whose pieces live under `prefix`.
    pub(crate) fn stored(tree: sled::Tree, prefix: Vec<u8>, len: u64) -> Self {
        SnapshotData {
            bytes: Bytes::Stored { tree, prefix, len },
            position: 0,
        }
    }

    /// The snapshot's size in bytes.
    pub fn len(&self) -> u64 {
        match &self.bytes {
            Bytes::Memory(v) => v.len() as u64,
            Bytes::Stored { len, .. } => *len,
        }
    }

    /// Whether the snapshot has no bytes (an empty state machine's).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every byte, in memory (installing a received snapshot; tests).
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        match &self.bytes {
            Bytes::Memory(v) => Ok(v.clone()),
            Bytes::Stored { tree, prefix, len } => {
                let mut out = Vec::with_capacity(*len as usize);
                let pieces = len.div_ceil(PIECE_BYTES as u64);
                for index in 0..pieces {
                    out.extend_from_slice(&piece(tree, prefix, index)?);
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

    /// The bytes, taken out of memory without a copy when they are there.
    pub fn into_vec(self) -> io::Result<Vec<u8>> {
        match self.bytes {
            Bytes::Memory(v) => Ok(v),
            Bytes::Stored { .. } => self.to_vec(),
        }
    }
}

fn piece(tree: &sled::Tree, prefix: &[u8], index: u64) -> io::Result<sled::IVec> {
    match tree.get(piece_key(prefix, index)) {
        Ok(Some(piece)) => Ok(piece),
        Ok(None) => Err(io::Error::other(format!(
            "snapshot piece {index} is gone: a newer snapshot replaced this one while it was read"
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
        if position >= self.len() || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let n = match &self.bytes {
            Bytes::Memory(v) => {
                let from = &v[position as usize..];
                let n = from.len().min(buf.remaining());
                buf.put_slice(&from[..n]);
                n
            }
            Bytes::Stored { tree, prefix, .. } => {
                let index = position / PIECE_BYTES as u64;
                let offset = (position % PIECE_BYTES as u64) as usize;
                let piece = piece(tree, prefix, index)?;
                let Some(from) = piece.get(offset..).filter(|rest| !rest.is_empty()) else {
                    return Poll::Ready(Err(io::Error::other(format!(
                        "snapshot piece {index} is shorter than its place in the snapshot"
                    ))));
                };
                let n = from.len().min(buf.remaining());
                buf.put_slice(&from[..n]);
                n
            }
        };
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
        let position = self.position as usize;
        let Bytes::Memory(v) = &mut self.bytes else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a stored snapshot is read-only",
            )));
        };
        let end = position + data.len();
        if v.len() < end {
            v.resize(end, 0);
        }
        v[position..end].copy_from_slice(data);
        self.position = end as u64;
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
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    fn stored(bytes: &[u8]) -> (tempfile::TempDir, SnapshotData) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        for (i, chunk) in bytes.chunks(PIECE_BYTES).enumerate() {
            tree.insert(piece_key(b"p/", i as u64), chunk).unwrap();
        }
        (
            dir,
            SnapshotData::stored(tree, b"p/".to_vec(), bytes.len() as u64),
        )
    }

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn stored_bytes_read_back_across_pieces_from_any_offset() {
        let bytes = sample(PIECE_BYTES * 2 + 1000);
        let (_dir, mut data) = stored(&bytes);
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
    async fn a_replaced_snapshot_is_an_error_not_other_bytes() {
        let bytes = sample(PIECE_BYTES + 10);
        let (_dir, mut data) = stored(&bytes);
        if let Bytes::Stored { tree, prefix, .. } = &data.bytes {
            tree.remove(piece_key(prefix, 1)).unwrap();
        }
        let mut out = Vec::new();
        assert!(data.read_to_end(&mut out).await.is_err());
        assert!(data.to_vec().is_err());
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
