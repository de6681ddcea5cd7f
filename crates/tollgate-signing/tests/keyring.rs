//! Origin keys: signing and strict verification, tampering, contexts,
//! rotation with overlap, retirement, and persistence.

use tollgate_model::UnixSeconds;
use tollgate_signing::*;

const NOW: UnixSeconds = UnixSeconds(1_795_821_662);

#[test]
fn a_signature_verifies_and_any_flipped_bit_breaks_it() {
    let ring = KeyRing::generate(NOW).unwrap();
    let keys = ring.public_set();
    let signed = ring.sign(CONTEXT_CHANGE_RECORD, b"{\"revision\":7}".to_vec());
    assert_eq!(signed.kid, ring.active_kid().as_str());
    keys.verify(CONTEXT_CHANGE_RECORD, &signed, NOW).unwrap();

    for byte in 0..signed.payload.len() {
        for bit in 0..8 {
            let mut tampered = signed.clone();
            tampered.payload[byte] ^= 1 << bit;
            assert_eq!(
                keys.verify(CONTEXT_CHANGE_RECORD, &tampered, NOW),
                Err(VerifyError::BadSignature)
            );
        }
    }
    for byte in 0..64 {
        let mut tampered = signed.clone();
        tampered.signature[byte] ^= 0x01;
        assert!(
            keys.verify(CONTEXT_CHANGE_RECORD, &tampered, NOW).is_err(),
            "signature byte {byte}"
        );
    }
    let mut truncated = signed.clone();
    truncated.signature.pop();
    assert_eq!(
        keys.verify(CONTEXT_CHANGE_RECORD, &truncated, NOW),
        Err(VerifyError::SignatureLength)
    );
    assert_eq!(
        keys.verify(CONTEXT_SNAPSHOT, &signed, NOW),
        Err(VerifyError::BadSignature),
        "a signature for one context does not verify in another"
    );
    let mut unknown = signed.clone();
    unknown.kid = "ed25519-0000000000000000".into();
    assert!(matches!(
        keys.verify(CONTEXT_CHANGE_RECORD, &unknown, NOW),
        Err(VerifyError::UnknownKey(_))
    ));
    let other = KeyRing::generate(NOW).unwrap();
    let forged = other.sign(CONTEXT_CHANGE_RECORD, signed.payload.clone());
    assert!(
        keys.verify(CONTEXT_CHANGE_RECORD, &forged, NOW).is_err(),
        "another origin's key is unknown here"
    );
}

#[test]
fn rotation_keeps_the_old_key_for_the_overlap_then_retires_it() {
    let mut ring = KeyRing::generate(NOW).unwrap();
    let old_kid = ring.active_kid().clone();
    let old_signed = ring.sign(CONTEXT_CHANGE_RECORD, b"old".to_vec());
    let new_kid = ring.rotate(NOW, 3600).unwrap();
    assert_ne!(old_kid, new_kid);
    assert_eq!(ring.active_kid(), &new_kid);
    let new_signed = ring.sign(CONTEXT_CHANGE_RECORD, b"new".to_vec());
    assert_eq!(new_signed.kid, new_kid.as_str());

    let keys = ring.public_set();
    keys.verify(
        CONTEXT_CHANGE_RECORD,
        &old_signed,
        UnixSeconds(NOW.0 + 3600),
    )
    .expect("inside the overlap");
    assert!(matches!(
        keys.verify(
            CONTEXT_CHANGE_RECORD,
            &old_signed,
            UnixSeconds(NOW.0 + 3601)
        ),
        Err(VerifyError::KeyExpired { .. })
    ));
    keys.verify(
        CONTEXT_CHANGE_RECORD,
        &new_signed,
        UnixSeconds(NOW.0 + 10_000),
    )
    .unwrap();

    assert!(matches!(
        ring.retire(&new_kid),
        Err(SigningError::RetireActive(_))
    ));
    ring.retire(&old_kid).unwrap();
    assert!(matches!(
        ring.public_set()
            .verify(CONTEXT_CHANGE_RECORD, &old_signed, NOW),
        Err(VerifyError::RetiredKey(_))
    ));
    let mut ring2 = KeyRing::generate(NOW).unwrap();
    let first = ring2.active_kid().clone();
    ring2.rotate(NOW, 10).unwrap();
    ring2.retire_expired(UnixSeconds(NOW.0 + 11));
    let status = ring2
        .public_set()
        .keys
        .iter()
        .find(|k| k.kid == first)
        .unwrap()
        .status;
    assert_eq!(status, KeyStatus::Retired);
}

#[test]
fn the_ring_persists_and_a_damaged_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("origin-keys.json");
    let mut ring = KeyRing::load_or_create(&path, NOW).unwrap();
    ring.rotate(NOW, 60).unwrap();
    ring.save(&path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "secrets are readable by the owner only");
    }
    let signed = ring.sign(CONTEXT_CHANGE_RECORD, b"x".to_vec());
    let reloaded = KeyRing::load_or_create(&path, NOW).unwrap();
    assert_eq!(reloaded.active_kid(), ring.active_kid());
    assert_eq!(reloaded.public_set(), ring.public_set());
    reloaded
        .public_set()
        .verify(CONTEXT_CHANGE_RECORD, &signed, NOW)
        .unwrap();

    let text = std::fs::read_to_string(&path).unwrap();
    let mut stored: serde_json::Value = serde_json::from_str(&text).unwrap();
    stored[0]["kid"] = "ed25519-ffffffffffffffff".into();
    std::fs::write(&path, stored.to_string()).unwrap();
    let err = KeyRing::load_or_create(&path, NOW).unwrap_err();
    assert!(
        err.to_string().contains("does not match its secret"),
        "{err}"
    );
    std::fs::write(&path, b"not json").unwrap();
    assert!(matches!(
        KeyRing::load_or_create(&path, NOW),
        Err(SigningError::Invalid { .. })
    ));
    std::fs::write(&path, b"[]").unwrap();
    assert!(KeyRing::load_or_create(&path, NOW)
        .unwrap_err()
        .to_string()
        .contains("holds 0 keys"));
}

#[test]
fn the_public_set_holds_no_secret_and_round_trips_as_json() {
    let ring = KeyRing::generate(NOW).unwrap();
    let set = ring.public_set();
    let json = serde_json::to_string(&set).unwrap();
    assert!(json.contains("Ed25519") && json.contains(ring.active_kid().as_str()));
    assert!(!json.contains("secret"));
    let back: PublicKeySet = serde_json::from_str(&json).unwrap();
    assert_eq!(back, set);
    let signed = ring.sign(CONTEXT_CHANGE_RECORD, vec![1, 2, 3]);
    let wire = serde_json::to_string(&signed).unwrap();
    let back: Signed = serde_json::from_str(&wire).unwrap();
    set.verify(CONTEXT_CHANGE_RECORD, &back, NOW).unwrap();
    assert!(
        format!("{ring:?}").contains("ed25519-"),
        "Debug shows key ids, never secrets"
    );
}

#[test]
fn a_rotated_set_is_accepted_only_through_a_trusted_keys_endorsement() {
    let now = UnixSeconds(1_800_000_000);
    let mut ring = KeyRing::generate(now).unwrap();
    let trusted = ring.public_set();
    let old = ring.active_kid().clone();
    ring.rotate(now, 3600).unwrap();
    let endorsed = ring.endorsements();
    assert_eq!(endorsed.len(), 2, "the new key and the overlapping old one");

    let accepted = trusted.accept_endorsed(&endorsed, now).unwrap();
    assert_eq!(accepted, ring.public_set());

    // Only the new key's endorsement: the old set does not know that key.
    let new_only: Vec<_> = endorsed
        .iter()
        .filter(|e| e.kid != old.as_str())
        .cloned()
        .collect();
    assert_eq!(
        trusted.accept_endorsed(&new_only, now),
        Err(VerifyError::NotEndorsed)
    );

    // A tampered set under a valid endorsement's signature.
    let mut tampered = endorsed.clone();
    for e in &mut tampered {
        e.payload.push(b' ');
    }
    assert_eq!(
        trusted.accept_endorsed(&tampered, now),
        Err(VerifyError::NotEndorsed)
    );

    // Once the old key is retired it endorses nothing, and a verifier that
    // trusts only it cannot follow any more.
    ring.retire(&old).unwrap();
    assert_eq!(ring.endorsements().len(), 1);
    assert_eq!(
        trusted.accept_endorsed(&ring.endorsements(), now),
        Err(VerifyError::NotEndorsed)
    );
    // One that followed the rotation accepts the retirement.
    assert_eq!(
        accepted.accept_endorsed(&ring.endorsements(), now).unwrap(),
        ring.public_set()
    );
}
