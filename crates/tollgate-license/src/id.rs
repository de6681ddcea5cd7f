//! 128-bit random identifiers: a token's `jti` and a certificate's serial.

use serde::{Deserialize, Serialize};
use std::fmt;

/// 128 random bits as 32 lower-case hex digits: a token id (`jti`) or a
/// certificate serial.
///
/// The crate draws no randomness (it is sans-IO): the caller draws 16 bytes
/// from the operating system and passes them to [`RandomId::from_bytes`].
/// One spelling per value (lower case only), so a revocation list keyed by
/// the string cannot be dodged by changing case.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RandomId(String);

/// A string that is not 32 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not 32 lower-case hex digits (128 bits)")]
pub struct InvalidRandomId;

impl RandomId {
    /// Length of the hex form.
    pub const HEX_LEN: usize = 32;

    /// The id of 16 bytes the caller drew from a cryptographic random source.
    pub fn from_bytes(bytes: [u8; 16]) -> RandomId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(Self::HEX_LEN);
        for b in bytes {
            text.push(char::from(HEX[usize::from(b >> 4)]));
            text.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
        RandomId(text)
    }

    /// Validates `text` (32 lower-case hex digits).
    pub fn parse(text: &str) -> Result<RandomId, InvalidRandomId> {
        let ok = text.len() == Self::HEX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(RandomId(text.to_owned()))
        } else {
            Err(InvalidRandomId)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RandomId {
    type Error = InvalidRandomId;
    fn try_from(text: String) -> Result<Self, InvalidRandomId> {
        RandomId::parse(&text)
    }
}

impl From<RandomId> for String {
    fn from(id: RandomId) -> String {
        id.0
    }
}

impl fmt::Display for RandomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RandomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RandomId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_only_lower_case_parses() {
        let id = RandomId::from_bytes([0xab; 16]);
        assert_eq!(id.as_str(), "ab".repeat(16));
        assert_eq!(RandomId::parse(id.as_str()), Ok(id));
        for bad in [
            "",
            "AB",
            &"AB".repeat(16),
            &"ab".repeat(17),
            &"g".repeat(32),
        ] {
            assert_eq!(RandomId::parse(bad), Err(InvalidRandomId), "{bad:?}");
        }
    }
}
