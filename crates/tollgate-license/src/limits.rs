//! Sizes a license's inputs may have (the model's limits cover the rest).

/// Longest device fingerprint, in bytes. A fingerprint is normally a hash
/// (32 bytes); the limit bounds what is hashed per check.
pub const DEVICE_FINGERPRINT_BYTES_MAX: usize = 256;
