//! The snapshot format: the state machine's key-value pairs, binary.
//!
//! `TGS1` then, per pair, `u32 key length (BE) | key | u32 value length (BE)
//! | value`. The snapshot's Raft metadata (last log id, membership) travels
//! beside it in openraft's `SnapshotMeta`, not inside.

use crate::error::Error;
use crate::logic::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// The first four bytes of every snapshot.
pub const SNAPSHOT_MAGIC: &[u8; 4] = b"TGS1";

/// Append one pair to a snapshot being built.
pub fn encode_pair(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    // Keys and values were size-checked when they were written.
    debug_assert!(key.len() <= KEY_BYTES_MAX && value.len() <= VALUE_BYTES_MAX);
    out.extend_from_slice(&(key.len() as u32).to_be_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(value.len() as u32).to_be_bytes());
    out.extend_from_slice(value);
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], Error> {
    if data.len() < n {
        return Err(Error::InvalidArgument(format!(
            "snapshot truncated: wanted {n} bytes, {} left",
            data.len()
        )));
    }
    let (head, tail) = data.split_at(n);
    *data = tail;
    Ok(head)
}

fn take_len(data: &mut &[u8], max: usize) -> Result<usize, Error> {
    let raw = take(data, 4)?;
    let len = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize;
    if len > max {
        return Err(Error::InvalidArgument(format!(
            "snapshot item of {len} bytes exceeds {max}"
        )));
    }
    Ok(len)
}

/// One key-value pair of a snapshot.
pub type Pair = (Vec<u8>, Vec<u8>);

/// Decode a snapshot received from another node.
pub fn decode_snapshot(data: &[u8]) -> Result<Vec<Pair>, Error> {
    let mut pairs = Vec::new();
    for_each_pair(data, |key, value| {
        pairs.push((key.to_vec(), value.to_vec()));
        Ok(())
    })?;
    Ok(pairs)
}

/// Visit a snapshot's pairs in order without collecting them; stops at the
/// first error, the visitor's or the decoder's.
pub fn for_each_pair(
    mut data: &[u8],
    mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    if data.is_empty() {
        // A state machine with nothing in it.
        return Ok(());
    }
    let magic = take(&mut data, 4)?;
    if magic != SNAPSHOT_MAGIC {
        return Err(Error::InvalidArgument(
            "snapshot has a bad magic number".into(),
        ));
    }
    while !data.is_empty() {
        let klen = take_len(&mut data, KEY_BYTES_MAX)?;
        let key = take(&mut data, klen)?;
        let vlen = take_len(&mut data, VALUE_BYTES_MAX)?;
        let value = take(&mut data, vlen)?;
        visit(key, value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut out = SNAPSHOT_MAGIC.to_vec();
        encode_pair(&mut out, b"a", b"1");
        encode_pair(&mut out, b"bb", b"");
        let pairs = decode_snapshot(&out).unwrap();
        assert_eq!(
            pairs,
            vec![(b"a".to_vec(), b"1".to_vec()), (b"bb".to_vec(), Vec::new())]
        );
        for cut in 1..out.len() {
            // A cut on a pair boundary decodes to fewer pairs; any other cut
            // is an error, never a panic.
            if let Ok(fewer) = decode_snapshot(&out[..cut]) {
                assert!(fewer.len() < 2, "cut at {cut}");
            }
        }
        assert!(decode_snapshot(b"XXXX").is_err());
    }
}
