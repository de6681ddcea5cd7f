//! Fixed keys and times the targets sign and verify with, the same in every
//! run, so a crashing input reproduces byte for byte.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use std::sync::OnceLock;
use tollgate_license::{certify, RandomId, RegionCertificate};
use tollgate_model::UnixSeconds;
use tollgate_signing::{KeyId, KeyRing, PublicKeySet, SealKey, Signed};

/// "Now" for every verification a target makes.
pub const NOW: UnixSeconds = UnixSeconds(1_800_000_000);
/// The audience license tokens are verified for.
pub const AUDIENCE: &str = "studio";
/// The region whose key the region certificate certifies.
pub const REGION: &str = "eu";
const ORIGIN_SEED: [u8; 32] = [7; 32];
const REGION_SEED: [u8; 32] = [9; 32];
const SEAL_KEY: [u8; 32] = [5; 32];

/// The origin's key ring: one active key from a fixed seed. `KeyRing` is
/// built only from random bytes or a file, so the file is written once.
pub fn origin_ring() -> &'static KeyRing {
    static RING: OnceLock<KeyRing> = OnceLock::new();
    RING.get_or_init(|| {
        let secret = SigningKey::from_bytes(&ORIGIN_SEED);
        let text = serde_json::json!([{
            "kid": KeyId::of(&secret.verifying_key()),
            "created_at": NOW.0 - 86_400,
            "status": "active",
            "secret": B64.encode(secret.to_bytes()),
        }])
        .to_string();
        let dir = std::env::temp_dir().join(format!("tollgate-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        let path = dir.join("ring.json");
        std::fs::write(&path, text).expect("write the fixture ring");
        let ring = KeyRing::load(&path)
            .expect("the fixture ring loads")
            .expect("the fixture ring exists");
        let _ = std::fs::remove_dir_all(&dir);
        ring
    })
}

/// The origin's public key set.
pub fn origin_keys() -> &'static PublicKeySet {
    static KEYS: OnceLock<PublicKeySet> = OnceLock::new();
    KEYS.get_or_init(|| origin_ring().public_set())
}

/// The origin's signing key (to sign what `KeyRing` would not).
pub fn origin_secret() -> &'static SigningKey {
    origin_ring().active_signing_key().1
}

/// A region's license signing key.
pub fn region_secret() -> SigningKey {
    SigningKey::from_bytes(&REGION_SEED)
}

/// The region key's certificate (valid a day before and 30 days after
/// [`NOW`], tokens of at most a day), signed by the origin.
pub fn region_certificate() -> &'static (RegionCertificate, Signed) {
    static CERT: OnceLock<(RegionCertificate, Signed)> = OnceLock::new();
    CERT.get_or_init(|| {
        let cert = RegionCertificate::new(
            RandomId::from_bytes([3; 16]),
            REGION,
            &region_secret().verifying_key(),
            UnixSeconds(NOW.0 - 86_400),
            UnixSeconds(NOW.0 + 30 * 86_400),
            86_400,
        );
        let signed = certify(origin_ring(), &cert).expect("the fixture certificate");
        (cert, signed)
    })
}

/// The seal key of the origin's replicated ring.
pub fn seal_key() -> SealKey {
    SealKey::from_bytes(SEAL_KEY)
}

/// The origin's ring sealed with [`seal_key`], as JSON records. Sealed
/// once per process: sealing draws a random nonce.
pub fn sealed_ring_json() -> &'static [u8] {
    static SEALED: OnceLock<Vec<u8>> = OnceLock::new();
    SEALED.get_or_init(|| {
        let sealed = origin_ring()
            .seal(&seal_key())
            .expect("the fixture ring seals");
        serde_json::to_vec(&sealed).expect("sealed records serialise")
    })
}

/// `bytes` altered as `op` says at `position` (wrapped) with `byte`:
/// 0 unchanged, 1 replace a byte, 2 truncate, 3 insert a byte, 4 remove a
/// byte. May return the same bytes (a replacement by the same byte).
pub fn mutate(bytes: &[u8], op: u8, position: u16, byte: u8) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let at = |len: usize| usize::from(position) % len.max(1);
    match op % 5 {
        1 if !out.is_empty() => {
            let i = at(out.len());
            out[i] = byte;
        }
        2 => out.truncate(at(bytes.len())),
        3 => out.insert(at(out.len() + 1), byte),
        4 if !out.is_empty() => {
            out.remove(at(out.len()));
        }
        _ => {}
    }
    out
}
