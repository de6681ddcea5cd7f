//! The snapshot format: the state machine's key-value pairs, binary and
//! compressed.
//!
//! `TGS2`, then blocks: `u32 stored length (BE) | u32 raw length (BE) |
//! the raw bytes compressed with LZ4 (block format)`. The raw bytes of a
//! block are whole pairs, each `u32 key length (BE) | key | u32 value
//! length (BE) | value`; a pair never straddles two blocks. Blocks hold
//! about [`BLOCK_RAW_BYTES`] raw bytes, so a reader needs one block in
//! memory, never the snapshot.
//!
//! `TGS1` (written before snapshots were compressed) is the magic followed
//! by the pairs themselves; it is still read, so a snapshot stored or sent
//! by an older node installs.
//!
//! The snapshot's Raft metadata (last log id, membership) travels beside it
//! in openraft's `SnapshotMeta`, not inside.

use std::io::{self, Read};

use crate::error::Error;
use crate::logic::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// The first four bytes of every snapshot written now.
pub const SNAPSHOT_MAGIC: &[u8; 4] = b"TGS2";
/// The first four bytes of an uncompressed snapshot (still read).
pub const SNAPSHOT_MAGIC_V1: &[u8; 4] = b"TGS1";

/// A block is cut once its raw bytes reach this size.
pub const BLOCK_RAW_BYTES: usize = 256 * 1024;
/// The most raw bytes a block may hold: a full block plus one pair of the
/// largest size.
pub const BLOCK_RAW_BYTES_MAX: usize = BLOCK_RAW_BYTES + 8 + KEY_BYTES_MAX + VALUE_BYTES_MAX;

/// The encoding of one pair (as a block's raw bytes hold it).
pub fn encode_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // Keys and values were size-checked when they were written.
    debug_assert!(key.len() <= KEY_BYTES_MAX && value.len() <= VALUE_BYTES_MAX);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

/// Writes a snapshot to `out` as pairs come, one block in memory.
pub struct SnapshotWriter<W: io::Write> {
    out: W,
    raw: Vec<u8>,
    /// Bytes written to `out`.
    written: u64,
}

impl<W: io::Write> SnapshotWriter<W> {
    /// Starts a snapshot (writes its magic).
    pub fn new(mut out: W) -> io::Result<Self> {
        out.write_all(SNAPSHOT_MAGIC)?;
        Ok(SnapshotWriter {
            out,
            raw: Vec::with_capacity(BLOCK_RAW_BYTES + 1024),
            written: SNAPSHOT_MAGIC.len() as u64,
        })
    }

    /// Adds one pair.
    pub fn pair(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        encode_pair(&mut self.raw, key, value);
        if self.raw.len() >= BLOCK_RAW_BYTES {
            self.block()?;
        }
        Ok(())
    }

    fn block(&mut self) -> io::Result<()> {
        if self.raw.is_empty() {
            return Ok(());
        }
        let stored = lz4_flex::block::compress(&self.raw);
        self.out.write_all(&(stored.len() as u32).to_be_bytes())?;
        self.out.write_all(&(self.raw.len() as u32).to_be_bytes())?;
        self.out.write_all(&stored)?;
        self.written += 8 + stored.len() as u64;
        self.raw.clear();
        Ok(())
    }

    /// Ends the snapshot; the sink and the snapshot's length in bytes.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.block()?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }
}

fn invalid(message: String) -> Error {
    Error::InvalidArgument(message)
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` at a clean end (no byte
/// read), an error on an end in the middle.
fn read_exact_or_end(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<bool, Error> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => {
                return Err(invalid(format!(
                    "snapshot truncated in {what}: {filled} of {} bytes",
                    buf.len()
                )))
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(invalid(format!("snapshot unreadable: {e}"))),
        }
    }
    Ok(true)
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &str) -> Result<(), Error> {
    if read_exact_or_end(r, buf, what)? || buf.is_empty() {
        Ok(())
    } else {
        Err(invalid(format!(
            "snapshot truncated: {what} of {} bytes missing",
            buf.len()
        )))
    }
}

fn read_len(r: &mut impl Read, max: usize, what: &str) -> Result<Option<usize>, Error> {
    let mut raw = [0u8; 4];
    if !read_exact_or_end(r, &mut raw, what)? {
        return Ok(None);
    }
    let len = u32::from_be_bytes(raw) as usize;
    if len > max {
        return Err(invalid(format!(
            "snapshot {what} of {len} bytes exceeds {max}"
        )));
    }
    Ok(Some(len))
}

/// Visits the pairs of one block's raw bytes.
fn visit_raw(
    mut raw: &[u8],
    visit: &mut impl FnMut(&[u8], &[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    while !raw.is_empty() {
        let Some(klen) = read_len(&mut raw, KEY_BYTES_MAX, "key")? else {
            break;
        };
        let (key, rest) = split(raw, klen, "key")?;
        raw = rest;
        let vlen = read_len(&mut raw, VALUE_BYTES_MAX, "value")?
            .ok_or_else(|| invalid("snapshot truncated: a key without its value".into()))?;
        let (value, rest) = split(raw, vlen, "value")?;
        raw = rest;
        visit(key, value)?;
    }
    Ok(())
}

fn split<'a>(data: &'a [u8], n: usize, what: &str) -> Result<(&'a [u8], &'a [u8]), Error> {
    if data.len() < n {
        return Err(invalid(format!(
            "snapshot truncated: {what} of {n} bytes, {} left",
            data.len()
        )));
    }
    Ok(data.split_at(n))
}

/// Visits a snapshot's pairs in order, reading it from `r` one block at a
/// time; stops at the first error, the visitor's or the decoder's. Reads
/// both formats; an empty input is an empty state machine's snapshot.
pub fn read_pairs(
    mut r: impl Read,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut magic = [0u8; 4];
    if !read_exact_or_end(&mut r, &mut magic, "the magic number")? {
        return Ok(());
    }
    if &magic == SNAPSHOT_MAGIC_V1 {
        return read_pairs_v1(r, visit);
    }
    if &magic != SNAPSHOT_MAGIC {
        return Err(invalid("snapshot has a bad magic number".into()));
    }
    let stored_max = lz4_flex::block::get_maximum_output_size(BLOCK_RAW_BYTES_MAX);
    let mut stored = Vec::new();
    let mut raw = Vec::new();
    while let Some(stored_len) = read_len(&mut r, stored_max, "block")? {
        let raw_len = read_len(&mut r, BLOCK_RAW_BYTES_MAX, "block")?
            .ok_or_else(|| invalid("snapshot truncated in a block header".into()))?;
        stored.resize(stored_len, 0);
        read_exact(&mut r, &mut stored, "a block")?;
        raw.resize(raw_len, 0);
        let n = lz4_flex::block::decompress_into(&stored, &mut raw)
            .map_err(|e| invalid(format!("snapshot block does not decompress: {e}")))?;
        if n != raw_len {
            return Err(invalid(format!(
                "snapshot block holds {n} bytes, not the {raw_len} its header says"
            )));
        }
        visit_raw(&raw, &mut visit)?;
    }
    Ok(())
}

fn read_pairs_v1(
    mut r: impl Read,
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut key = Vec::new();
    let mut value = Vec::new();
    while let Some(klen) = read_len(&mut r, KEY_BYTES_MAX, "key")? {
        key.resize(klen, 0);
        read_exact(&mut r, &mut key, "a key")?;
        let vlen = read_len(&mut r, VALUE_BYTES_MAX, "value")?
            .ok_or_else(|| invalid("snapshot truncated: a key without its value".into()))?;
        value.resize(vlen, 0);
        read_exact(&mut r, &mut value, "a value")?;
        visit(&key, &value)?;
    }
    Ok(())
}

/// One key-value pair of a snapshot.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Encodes pairs as a snapshot (in memory: tests and small states).
pub fn encode_snapshot<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut writer = SnapshotWriter::new(Vec::new()).expect("writing to memory");
    for (key, value) in pairs {
        writer.pair(key, value).expect("writing to memory");
    }
    writer.finish().expect("writing to memory").0
}

/// Decodes a snapshot held in memory.
pub fn decode_snapshot(data: &[u8]) -> Result<Vec<Pair>, Error> {
    let mut pairs = Vec::new();
    read_pairs(data, |key, value| {
        pairs.push((key.to_vec(), value.to_vec()));
        Ok(())
    })?;
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Pair> {
        (0..3000u32)
            .map(|i| {
                (
                    format!("entitlement/ent-{i:06}").into_bytes(),
                    format!("{{\"id\":\"ent-{i:06}\",\"status\":\"active\",\"n\":{i}}}")
                        .repeat(1 + (i as usize % 7))
                        .into_bytes(),
                )
            })
            .collect()
    }

    fn encode(pairs: &[Pair]) -> Vec<u8> {
        encode_snapshot(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())))
    }

    #[test]
    fn pairs_round_trip_across_blocks_and_shrink() {
        let pairs = sample();
        let encoded = encode(&pairs);
        let raw: usize = pairs.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        assert!(raw > 2 * BLOCK_RAW_BYTES, "several blocks: {raw} raw bytes");
        assert!(
            encoded.len() * 3 < raw,
            "compressed to {} of {raw} bytes",
            encoded.len()
        );
        assert_eq!(decode_snapshot(&encoded).unwrap(), pairs);
        assert_eq!(decode_snapshot(&encode(&[])).unwrap(), Vec::<Pair>::new());
        assert_eq!(decode_snapshot(&[]).unwrap(), Vec::<Pair>::new());
    }

    #[test]
    fn a_largest_pair_fits_in_a_block() {
        let pairs = vec![
            (vec![1u8; 10], vec![2u8; BLOCK_RAW_BYTES - 100]),
            (vec![3u8; KEY_BYTES_MAX], vec![4u8; VALUE_BYTES_MAX]),
        ];
        assert_eq!(decode_snapshot(&encode(&pairs)).unwrap(), pairs);
    }

    /// A block written by hand from the LZ4 block format's definition (one
    /// sequence of literals only) reads: the format is LZ4's, not one
    /// library's.
    #[test]
    fn a_block_of_plain_lz4_literals_reads() {
        let mut raw = Vec::new();
        encode_pair(&mut raw, b"entitlement/ent-1", br#"{"id":"ent-1"}"#);
        let mut block = vec![0xF0, (raw.len() - 15) as u8];
        block.extend_from_slice(&raw);
        let mut snapshot = SNAPSHOT_MAGIC.to_vec();
        snapshot.extend_from_slice(&(block.len() as u32).to_be_bytes());
        snapshot.extend_from_slice(&(raw.len() as u32).to_be_bytes());
        snapshot.extend_from_slice(&block);
        assert_eq!(
            decode_snapshot(&snapshot).unwrap(),
            vec![(b"entitlement/ent-1".to_vec(), br#"{"id":"ent-1"}"#.to_vec())]
        );
    }

    #[test]
    fn an_uncompressed_snapshot_still_reads() {
        let mut v1 = SNAPSHOT_MAGIC_V1.to_vec();
        encode_pair(&mut v1, b"a", b"1");
        encode_pair(&mut v1, b"bb", b"");
        assert_eq!(
            decode_snapshot(&v1).unwrap(),
            vec![(b"a".to_vec(), b"1".to_vec()), (b"bb".to_vec(), Vec::new())]
        );
        for cut in 5..v1.len() {
            if let Ok(fewer) = decode_snapshot(&v1[..cut]) {
                assert!(fewer.len() < 2, "cut at {cut}");
            }
        }
    }

    #[test]
    fn truncation_and_tampering_are_errors_never_other_pairs() {
        let pairs = sample();
        let encoded = encode(&pairs);
        for cut in (1..encoded.len()).step_by(997) {
            if let Ok(fewer) = decode_snapshot(&encoded[..cut]) {
                assert_eq!(fewer, pairs[..fewer.len()], "cut at {cut}");
                assert!(fewer.len() < pairs.len());
            }
        }
        assert!(decode_snapshot(b"XXXX").is_err());
        // A raw length larger than any block may hold is refused before
        // anything is allocated for it.
        let mut huge = SNAPSHOT_MAGIC.to_vec();
        huge.extend_from_slice(&16u32.to_be_bytes());
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 16]);
        assert!(decode_snapshot(&huge).is_err());
        // A changed byte is never read back as the snapshot that was
        // written (LZ4 blocks carry no checksum: sled's pages and the
        // members' TLS protect the bytes; this is about decoding safely).
        for at in [12, encoded.len() / 2, encoded.len() - 3] {
            let mut bad = encoded.clone();
            bad[at] ^= 0x5a;
            if let Ok(decoded) = decode_snapshot(&bad) {
                assert_ne!(decoded, pairs, "flipping byte {at} went unnoticed");
            }
        }
    }
}
