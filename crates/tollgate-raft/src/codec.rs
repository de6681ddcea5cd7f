//! Encoding of openraft's types for sled and the wire.
//!
//! JSON through serde_json: openraft 0.9 types are serde-enabled, JSON is
//! already a workspace dependency, and a stored value stays readable with
//! standard tools when debugging a data directory. Snapshot contents and
//! snapshot chunks are binary (see [`crate::store`]), so the bulky data does
//! not pay JSON's cost; so are stored log entries of any size
//! ([`encode_log_entry`]): LZ4-compressed JSON.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;

/// Encode a value.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    Ok(serde_json::to_vec(value)?)
}

/// Decode a value received from another process.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Decode a value read from sled; names the key on failure.
pub fn decode_stored<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Corrupt {
        key: key.to_string(),
        source,
    })
}

/// The length of `value`'s encoding, without building it.
pub fn encoded_len<T: Serialize>(value: &T) -> Result<usize, Error> {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value)?;
    Ok(counter.0)
}

/// The first byte of a stored log entry that is LZ4-compressed JSON
/// (`0x01 | u32 BE JSON length | LZ4 block`). A plain JSON entry (written
/// before entries were compressed, or too small to gain) starts with `{`.
pub const LOG_ENTRY_LZ4: u8 = 0x01;

/// Entries shorter than this stay plain JSON: compressing them gains little.
const LOG_ENTRY_COMPRESS_BYTES_MIN: usize = 128;

/// Encodes a log entry for the log store: its JSON, LZ4-compressed when
/// that is shorter; with the JSON's length, which the store bounds.
pub fn encode_log_entry<T: Serialize>(value: &T) -> Result<(Vec<u8>, usize), Error> {
    let json = serde_json::to_vec(value)?;
    let len = json.len();
    if len < LOG_ENTRY_COMPRESS_BYTES_MIN {
        return Ok((json, len));
    }
    let mut out = Vec::with_capacity(5 + lz4_flex::block::get_maximum_output_size(len));
    out.push(LOG_ENTRY_LZ4);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.resize(5 + lz4_flex::block::get_maximum_output_size(len), 0);
    let n = lz4_flex::block::compress_into(&json, &mut out[5..])
        .map_err(|e| Error::InvalidArgument(format!("compressing a log entry: {e}")))?;
    out.truncate(5 + n);
    if out.len() >= len {
        return Ok((json, len));
    }
    Ok((out, len))
}

/// Decodes a stored log entry of either form; `json_bytes_max` bounds the
/// JSON a compressed entry may claim, before anything is allocated for it.
pub fn decode_log_entry<T: DeserializeOwned>(
    key: &str,
    bytes: &[u8],
    json_bytes_max: usize,
) -> Result<T, Error> {
    let Some((&LOG_ENTRY_LZ4, rest)) = bytes.split_first() else {
        return decode_stored(key, bytes);
    };
    let corrupt = |reason: String| Error::InvalidArgument(format!("{key}: {reason}"));
    let (len, block) = rest
        .split_first_chunk::<4>()
        .ok_or_else(|| corrupt("a compressed entry without its length".into()))?;
    let len = u32::from_be_bytes(*len) as usize;
    if len > json_bytes_max {
        return Err(corrupt(format!(
            "a compressed entry of {len} bytes; at most {json_bytes_max}"
        )));
    }
    let mut json = vec![0; len];
    let n = lz4_flex::block::decompress_into(block, &mut json)
        .map_err(|e| corrupt(format!("a compressed entry does not decompress: {e}")))?;
    if n != len {
        return Err(corrupt(format!(
            "a compressed entry holds {n} bytes, not the {len} it says"
        )));
    }
    decode_stored(key, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_entries_compress_and_both_forms_read() {
        let big: Vec<String> = (0..200).map(|i| format!("record {i} of a batch")).collect();
        let (stored, json_len) = encode_log_entry(&big).unwrap();
        assert_eq!(stored[0], LOG_ENTRY_LZ4);
        assert!(
            stored.len() * 2 < json_len,
            "{} of {json_len}",
            stored.len()
        );
        assert_eq!(
            decode_log_entry::<Vec<String>>("e", &stored, 1 << 20).unwrap(),
            big
        );
        // Plain JSON: a small entry, and every entry written before.
        let (small, _) = encode_log_entry(&vec!["a".to_string()]).unwrap();
        assert_eq!(small, br#"["a"]"#);
        let legacy = serde_json::to_vec(&big).unwrap();
        assert_eq!(
            decode_log_entry::<Vec<String>>("e", &legacy, 1 << 20).unwrap(),
            big
        );
    }

    #[test]
    fn a_damaged_compressed_entry_is_an_error() {
        let big: Vec<u64> = (0..500).collect();
        let (stored, json_len) = encode_log_entry(&big).unwrap();
        // Claims more than allowed: refused before allocating.
        assert!(decode_log_entry::<Vec<u64>>("e", &stored, json_len - 1).is_err());
        for cut in [1, 3, 5, stored.len() / 2, stored.len() - 1] {
            assert!(
                decode_log_entry::<Vec<u64>>("e", &stored[..cut], 1 << 20).is_err(),
                "cut at {cut}"
            );
        }
        let mut wrong_len = stored.clone();
        wrong_len[4] ^= 1;
        assert!(decode_log_entry::<Vec<u64>>("e", &wrong_len, 1 << 20).is_err());
    }
}
