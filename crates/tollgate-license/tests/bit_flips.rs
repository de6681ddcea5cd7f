//! No single flipped bit, anywhere in a token, ever verifies.
//!
//! Each check that reaches the signature costs about 15 ms in an unoptimised
//! build (curve arithmetic at opt-level 0), so the token is kept minimal and
//! the suite stays around half a minute.

mod common;

use common::*;
use tollgate_license::*;

#[test]
fn no_single_bit_flip_of_a_token_verifies() {
    let ring = ring();
    let verifier = verifier(&ring);
    let mut claims = claims(ISSUER_ORIGIN);
    claims.entitlements.clear();
    let token = Issuer::origin(&ring).issue(&claims, None).unwrap();
    verifier.verify(&token, NOW, None, &()).unwrap();

    let mut tried = 0;
    for index in 0..token.len() {
        for bit in 0..8 {
            let mut bytes = token.as_bytes().to_vec();
            bytes[index] ^= 1 << bit;
            // Bit 7 of an ASCII byte makes invalid UTF-8, which cannot be a
            // `&str` and so cannot reach the verifier.
            let Ok(flipped) = String::from_utf8(bytes) else {
                continue;
            };
            tried += 1;
            assert!(
                verifier.verify(&flipped, NOW, None, &()).is_err(),
                "flipping bit {bit} of byte {index} still verifies: {flipped}"
            );
        }
    }
    assert_eq!(tried, token.len() * 7, "every other flip was tried");
}

#[test]
fn no_single_bit_flip_of_the_device_fingerprint_verifies() {
    let ring = ring();
    let verifier = verifier(&ring);
    let mut claims = claims(ISSUER_ORIGIN);
    claims.entitlements.clear();
    claims.device_bound = true;
    let token = Issuer::origin(&ring).issue(&claims, Some(DEVICE)).unwrap();
    verifier.verify(&token, NOW, Some(DEVICE), &()).unwrap();
    for index in 0..DEVICE.len() {
        for bit in 0..8 {
            let mut device = DEVICE.to_vec();
            device[index] ^= 1 << bit;
            assert_eq!(
                verifier.verify(&token, NOW, Some(&device), &()),
                Err(LicenseError::BadSignature),
                "byte {index}, bit {bit}"
            );
        }
    }
}
