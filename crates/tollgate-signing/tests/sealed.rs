//! The replicated ring's sealed keys: what seals opens with the same seal
//! key only, an altered or moved secret never opens, the seal key file is
//! read strictly, and rotation and retirement act on sealed records as on
//! a ring.

use tollgate_model::UnixSeconds;
use tollgate_signing::*;

const NOW: UnixSeconds = UnixSeconds(1_795_821_662);

fn seal() -> SealKey {
    SealKey::generate().unwrap()
}

#[test]
fn a_sealed_ring_opens_with_its_seal_key_and_signs_as_the_ring_did() {
    let mut ring = KeyRing::generate(NOW).unwrap();
    ring.rotate(NOW, 3600).unwrap();
    let seal = seal();
    let sealed = ring.seal(&seal).unwrap();
    assert_eq!(sealed.len(), 2);
    for key in &sealed {
        key.check().unwrap();
        assert_eq!(key.seal, seal.fingerprint());
    }
    let text = serde_json::to_string(&sealed).unwrap();
    let opened = KeyRing::unseal(
        &serde_json::from_str::<Vec<SealedKey>>(&text).unwrap(),
        &seal,
    )
    .unwrap();
    assert_eq!(opened.public_set(), ring.public_set());
    let signed = opened.sign(CONTEXT_CHANGE_RECORD, b"x".to_vec());
    ring.public_set()
        .verify(CONTEXT_CHANGE_RECORD, &signed, NOW)
        .unwrap();
    // The seal hides the secret: its 32 bytes appear nowhere in the record.
    let (_, secret) = ring.active_signing_key();
    let secret_b64 = base64_url(&secret.to_bytes());
    assert!(!text.contains(&secret_b64));
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn another_seal_key_is_named_and_refused() {
    let ring = KeyRing::generate(NOW).unwrap();
    let ours = seal();
    let theirs = seal();
    let sealed = ring.seal(&ours).unwrap();
    match KeyRing::unseal(&sealed, &theirs) {
        Err(SigningError::WrongSealKey {
            kid,
            sealed_with,
            ours: node,
        }) => {
            assert_eq!(&kid, ring.active_kid());
            assert_eq!(sealed_with, ours.fingerprint());
            assert_eq!(node, theirs.fingerprint());
        }
        other => panic!("expected WrongSealKey, got {other:?}"),
    }
    // A record that claims our fingerprint but was sealed with another key
    // does not open either.
    let mut forged = ring.seal(&theirs).unwrap();
    forged[0].seal = ours.fingerprint().to_string();
    assert!(matches!(
        KeyRing::unseal(&forged, &ours),
        Err(SigningError::Unseal(_))
    ));
}

#[test]
fn an_altered_or_moved_secret_never_opens() {
    let seal = seal();
    let a = SealedKey::generate(NOW, &seal).unwrap();
    for i in 0..a.sealed_secret.len() {
        let mut tampered = a.clone();
        tampered.sealed_secret[i] ^= 0x01;
        assert!(
            matches!(
                KeyRing::unseal(&[tampered], &seal),
                Err(SigningError::Unseal(_))
            ),
            "byte {i}"
        );
    }
    // B's sealed secret under A's id and public key: the associated data
    // binds a secret to its key.
    let b = SealedKey::generate(NOW, &seal).unwrap();
    let mut moved = a.clone();
    moved.sealed_secret = b.sealed_secret.clone();
    assert!(matches!(
        KeyRing::unseal(&[moved], &seal),
        Err(SigningError::Unseal(_))
    ));
    // A public key that is not the id's is refused before any decryption.
    let mut swapped = a.clone();
    swapped.public_key = b.public_key.clone();
    assert!(swapped
        .check()
        .unwrap_err()
        .contains("is not its public key's"));
    let mut short = a.clone();
    short.sealed_secret.pop();
    assert!(short.check().unwrap_err().contains("bytes"));
}

#[test]
fn a_ring_needs_exactly_one_active_key() {
    let seal = seal();
    let mut a = SealedKey::generate(NOW, &seal).unwrap();
    let b = SealedKey::generate(NOW, &seal).unwrap();
    assert!(matches!(
        KeyRing::unseal(&[a.clone(), b], &seal),
        Err(SigningError::InvalidRecords(reason)) if reason.contains("2 active")
    ));
    a.status = KeyStatus::Retired;
    assert!(matches!(
        KeyRing::unseal(&[a], &seal),
        Err(SigningError::InvalidRecords(reason)) if reason.contains("0 active")
    ));
    assert!(matches!(
        KeyRing::unseal(&[], &seal),
        Err(SigningError::InvalidRecords(_))
    ));
}

#[test]
fn rotation_and_retirement_act_on_sealed_records() {
    let seal = seal();
    let mut keys = vec![SealedKey::generate(NOW, &seal).unwrap()];
    let first = keys[0].kid.clone();
    let second = SealedKey::generate(NOW, &seal).unwrap();
    rotate_entries(&mut keys, second.clone(), NOW, 60).unwrap();
    assert_eq!(
        keys[0].status,
        KeyStatus::Overlap {
            until: UnixSeconds(NOW.0 + 60)
        }
    );
    assert_eq!(keys[1].status, KeyStatus::Active);
    assert!(matches!(
        rotate_entries(&mut keys, second.clone(), NOW, 60),
        Err(SigningError::Duplicate(_))
    ));
    assert!(matches!(
        retire_entry(&mut keys, &second.kid),
        Err(SigningError::RetireActive(_))
    ));
    retire_entry(&mut keys, &first).unwrap();
    assert_eq!(keys[0].status, KeyStatus::Retired);
    KeyRing::unseal(&keys, &seal).unwrap();
}

#[test]
fn a_full_ring_drops_its_oldest_retired_key_and_never_a_live_one() {
    let mut ring = KeyRing::generate(NOW).unwrap();
    for _ in 1..KEYS_MAX {
        ring.rotate(NOW, 0).unwrap();
    }
    assert_eq!(ring.public_set().keys.len(), KEYS_MAX);
    // Nothing retired: no room.
    assert!(matches!(ring.rotate(NOW, 0), Err(SigningError::Full)));
    let oldest = ring.public_set().keys[0].kid.clone();
    let second = ring.public_set().keys[1].kid.clone();
    ring.retire(&second).unwrap();
    ring.retire(&oldest).unwrap();
    let newest = ring.rotate(NOW, 0).unwrap();
    let kids: Vec<_> = ring.public_set().keys.into_iter().map(|k| k.kid).collect();
    assert_eq!(kids.len(), KEYS_MAX);
    assert!(!kids.contains(&oldest), "the oldest retired key went");
    assert!(kids.contains(&second), "one key went, not two");
    assert_eq!(ring.active_kid(), &newest);
}

#[test]
fn the_seal_key_file_is_64_hex_digits_and_a_missing_one_is_made_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seal.key");
    let (made, created) = SealKey::load_or_create(&path).unwrap();
    assert!(created);
    let (again, created) = SealKey::load_or_create(&path).unwrap();
    assert!(!created);
    assert_eq!(made.fingerprint(), again.fingerprint());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // `openssl rand -hex 32` output, upper case and a trailing newline too.
    std::fs::write(&path, format!("  {}\n", "AB".repeat(32))).unwrap();
    let read = SealKey::load(&path).unwrap();
    assert_eq!(
        read.fingerprint(),
        SealKey::from_bytes([0xab; 32]).fingerprint()
    );
    assert!(
        !format!("{read:?}").contains("ab"),
        "Debug names the fingerprint only"
    );
    for bad in ["", "abc", &"zz".repeat(32), &"ab".repeat(33)] {
        std::fs::write(&path, bad).unwrap();
        match SealKey::load(&path) {
            Err(SigningError::SealKey {
                path: shown,
                reason,
            }) => {
                assert!(shown.ends_with("seal.key"));
                assert!(reason.contains("64 hex digits"), "{reason}");
            }
            other => panic!("{bad:?}: expected a seal key error, got {other:?}"),
        }
    }
    assert!(matches!(
        SealKey::load(&dir.path().join("absent.key")),
        Err(SigningError::SealKey { .. })
    ));
}
