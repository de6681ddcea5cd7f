//! The origin's public key set (the SDK's key set file, the changefeed's
//! `GetPublicKeys` and endorsed rotations) and its sealed key ring (the
//! replicated `meta/signing-ring`).

use crate::fixtures::{
    mutate, origin_keys, origin_ring, seal_key, sealed_ring_json, AUDIENCE, NOW,
};
use crate::input::Input;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::VerifyingKey;
use prost::Message as _;
use tollgate_license::Verifier;
use tollgate_proto::origin::v1 as pb;
use tollgate_signing::{KeyId, KeyRing, PublicKeySet, SealedKey, CONTEXT_KEY_SET, KEYS_MAX};

/// Mode 0: any JSON as a key set file: it round-trips, and a verifier built
/// from it or refusing it never panics. Mode 1: any bytes as the protobuf
/// `PublicKeySet`; a set converted from it converts back to the same set.
/// Mode 2: a fuzzed payload endorsed by the trusted origin key: accepted
/// only as the set it encodes, with 1..=`KEYS_MAX` keys, and never once
/// altered.
pub fn key_set(data: &[u8]) {
    let mut input = Input::new(data);
    match input.u8() % 3 {
        0 => {
            let Ok(set) = serde_json::from_slice::<PublicKeySet>(input.rest()) else {
                return;
            };
            let encoded = serde_json::to_vec(&set).expect("a key set serialises");
            let again: PublicKeySet = serde_json::from_slice(&encoded).expect("and parses back");
            assert_eq!(again, set);
            let _ = Verifier::new(&set, AUDIENCE);
        }
        1 => {
            let Ok(message) = pb::PublicKeySet::decode(input.rest()) else {
                return;
            };
            let Ok(set) = PublicKeySet::try_from(message) else {
                return;
            };
            let again = PublicKeySet::try_from(pb::PublicKeySet::from(set.clone()))
                .expect("a converted key set converts back");
            assert_eq!(again, set);
        }
        _ => {
            let op = input.u8();
            let position = input.u16();
            let byte = input.u8();
            let payload = input.field();
            let signed = origin_ring().sign(CONTEXT_KEY_SET, payload.to_vec());
            let mut altered = signed.clone();
            altered.payload = mutate(&signed.payload, op, position, byte);
            let Ok(set) = origin_keys().accept_endorsed(&[altered.clone()], NOW) else {
                return;
            };
            assert_eq!(altered, signed, "an altered endorsement was accepted");
            assert!((1..=KEYS_MAX).contains(&set.keys.len()));
            let parsed: PublicKeySet =
                serde_json::from_slice(payload).expect("an accepted set parses");
            assert_eq!(parsed, set);
        }
    }
}

/// Mode 0: any JSON as the replicated ring's records, opened with the fixed
/// seal key: records round-trip, and a ring that opens holds exactly the
/// records' keys. Mode 1: the fixed ring sealed, one byte of one record's
/// JSON altered: what still opens is the same ring, never another secret.
pub fn sealed_keys(data: &[u8]) {
    let mut input = Input::new(data);
    let seal = seal_key();
    let records: Vec<SealedKey> = match input.u8() % 2 {
        0 => {
            let Ok(records) = serde_json::from_slice::<Vec<SealedKey>>(input.rest()) else {
                return;
            };
            let encoded = serde_json::to_vec(&records).expect("records serialise");
            let again: Vec<SealedKey> = serde_json::from_slice(&encoded).expect("and parse back");
            assert_eq!(again, records);
            records
        }
        _ => {
            let op = input.u8();
            let position = input.u16();
            let byte = input.u8();
            let altered = mutate(sealed_ring_json(), op, position, byte);
            let Ok(records) = serde_json::from_slice::<Vec<SealedKey>>(&altered) else {
                return;
            };
            if let Ok(ring) = KeyRing::unseal(&records, &seal) {
                // Times and statuses are not sealed; keys and secrets are.
                let keys = |ring: &KeyRing| -> Vec<(String, String)> {
                    let set = ring.public_set();
                    set.keys
                        .into_iter()
                        .map(|k| (k.kid.as_str().to_owned(), k.public_key))
                        .collect()
                };
                assert_eq!(
                    keys(&ring),
                    keys(origin_ring()),
                    "altered records opened as another ring"
                );
            }
            records
        }
    };
    for record in &records {
        let _ = record.check();
    }
    if let Ok(ring) = KeyRing::unseal(&records, &seal) {
        // Every opened secret is the key its record names.
        for key in ring.public_set().keys {
            let bytes = B64
                .decode(&key.public_key)
                .expect("a ring's public key is base64url");
            let bytes: [u8; 32] = bytes.try_into().expect("a ring's public key is 32 bytes");
            let public = VerifyingKey::from_bytes(&bytes).expect("a ring's public key is a point");
            assert_eq!(
                KeyId::of(&public),
                key.kid,
                "a record opened to another key"
            );
        }
        assert_eq!(ring.public_set().keys.len(), records.len());
    }
}
