//! Encoding of openraft's types for sled and the wire.
//!
//! JSON through serde_json: openraft 0.9 types are serde-enabled, JSON is
//! already a workspace dependency, and a stored value stays readable with
//! standard tools when debugging a data directory. Snapshot contents and
//! snapshot chunks are binary (see [`crate::store`]), so the bulky data does
//! not pay JSON's cost.

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
