//! Every bad input is refused with its own error variant: one test each.

mod common;

use common::*;
use ed25519_dalek::VerifyingKey;
use serde_json::json;
use tollgate_license::*;
use tollgate_signing::{
    KeyId, KeyStatus, PublicKey, PublicKeySet, CONTEXT_REGION_CERTIFICATE, CONTEXT_WEBHOOK,
};
use tollgate_token::{Malformed, TokenError};

/// The identity point: a valid encoding of a small-order (weak) key.
const IDENTITY: [u8; 32] = {
    let mut bytes = [0u8; 32];
    bytes[0] = 1;
    bytes
};

fn verify(ring: &tollgate_signing::KeyRing, token: &str) -> Result<License, LicenseError> {
    verifier(ring).verify(token, NOW, None, &())
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

// ---- Tampering ----

#[test]
fn flipped_bit_in_payload_is_a_bad_signature() {
    let ring = ring();
    let mut parts = split(&origin_token(&ring));
    // Inside the "aud" value, so the message stays valid JSON.
    let at = parts
        .message
        .windows(8)
        .position(|w| w == b"\"studio\"")
        .unwrap()
        + 1;
    parts.message[at] ^= 0x01;
    assert_eq!(
        verify(&ring, &parts.join()),
        Err(LicenseError::BadSignature)
    );
}

#[test]
fn flipped_bit_in_signature_is_a_bad_signature() {
    let ring = ring();
    let mut parts = split(&origin_token(&ring));
    parts.signature[10] ^= 0x80;
    assert_eq!(
        verify(&ring, &parts.join()),
        Err(LicenseError::BadSignature)
    );
}

#[test]
fn truncated_signature_is_a_bad_signature() {
    let ring = ring();
    let mut parts = split(&origin_token(&ring));
    parts.signature.pop();
    assert_eq!(
        verify(&ring, &parts.join()),
        Err(LicenseError::BadSignature)
    );
}

#[test]
fn payload_shorter_than_a_signature_is_malformed() {
    let ring = ring();
    let footer = b64(format!("{{\"kid\":\"{}\"}}", ring.active_kid()).as_bytes());
    let token = format!("v4.public.{}.{footer}", b64(&[0u8; 63]));
    assert_eq!(
        verify(&ring, &token),
        Err(LicenseError::Token(TokenError::Malformed(
            Malformed::PayloadTooShort { len: 63 }
        )))
    );
}

#[test]
fn swapped_footer_is_a_bad_signature() {
    // Two keys of one ring; a token signed by the old key re-labelled with the
    // new key's id.
    let mut ring = ring();
    let token = origin_token(&ring);
    ring.rotate(NOW, HOUR).unwrap();
    let mut parts = split(&token);
    parts.footer = serde_json::to_vec(&json!({"kid": ring.active_kid().as_str()})).unwrap();
    assert_eq!(
        verify(&ring, &parts.join()),
        Err(LicenseError::BadSignature)
    );
}

// ---- Format ----

#[test]
fn v4_local_token_is_refused_by_header() {
    let ring = ring();
    let token = origin_token(&ring).replacen("v4.public.", "v4.local.", 1);
    assert!(matches!(
        verify(&ring, &token),
        Err(LicenseError::Token(TokenError::WrongHeader { .. }))
    ));
}

#[test]
fn v3_public_token_is_refused_by_header() {
    let ring = ring();
    let token = origin_token(&ring).replacen("v4.public.", "v3.public.", 1);
    assert!(matches!(
        verify(&ring, &token),
        Err(LicenseError::Token(TokenError::WrongHeader { .. }))
    ));
}

#[test]
fn empty_token_is_refused() {
    let ring = ring();
    assert_eq!(
        verify(&ring, ""),
        Err(LicenseError::Token(TokenError::Empty))
    );
}

#[test]
fn token_without_footer_is_refused() {
    let ring = ring();
    let (_, secret) = ring.active_signing_key();
    let token =
        tollgate_token::sign(secret, &claims_json(&claims(ISSUER_ORIGIN)), b"", b"").unwrap();
    assert!(matches!(
        verify(&ring, &token),
        Err(LicenseError::FooterInvalid(_))
    ));
}

#[test]
fn footer_that_is_not_the_footer_json_is_refused() {
    let ring = ring();
    let (_, secret) = ring.active_signing_key();
    let message = claims_json(&claims(ISSUER_ORIGIN));
    for footer in [
        json!({"kid": "origin-2026"}),
        json!({"kid": ring.active_kid().as_str(), "extra": 1}),
        json!(["kid"]),
    ] {
        let token = sign_raw(secret, &message, &footer);
        assert!(
            matches!(verify(&ring, &token), Err(LicenseError::FooterInvalid(_))),
            "{footer}"
        );
    }
}

#[test]
fn origin_key_id_with_a_certificate_is_refused() {
    let ring = ring();
    let region = region(&ring);
    let (_, secret) = ring.active_signing_key();
    let token = sign_raw(
        secret,
        &claims_json(&claims(ISSUER_ORIGIN)),
        &json!({"kid": ring.active_kid().as_str(), "cert": region.signed}),
    );
    assert!(matches!(
        verify(&ring, &token),
        Err(LicenseError::FooterInvalid(_))
    ));
}

// ---- Origin keys ----

#[test]
fn unknown_key_id_is_refused() {
    let ring = ring();
    let other = common::ring();
    assert_eq!(
        verify(&ring, &origin_token(&other)),
        Err(LicenseError::UnknownKeyId(other.active_kid().clone()))
    );
}

#[test]
fn retired_key_is_refused() {
    let mut ring = ring();
    let token = origin_token(&ring);
    let old = ring.active_kid().clone();
    ring.rotate(NOW, DAY).unwrap();
    ring.retire(&old).unwrap();
    assert_eq!(verify(&ring, &token), Err(LicenseError::RetiredKey(old)));
}

#[test]
fn key_whose_overlap_ended_is_refused() {
    let mut ring = ring();
    let token = origin_token(&ring);
    let old = ring.active_kid().clone();
    ring.rotate(NOW, 600).unwrap();
    assert_eq!(
        verifier(&ring).verify(&token, at(601), None, &()),
        Err(LicenseError::KeyOverlapExpired {
            kid: old,
            until: at(600)
        })
    );
}

#[test]
fn weak_key_in_the_origin_key_set_is_refused_by_verifier_new() {
    let ring = ring();
    let weak = VerifyingKey::from_bytes(&IDENTITY).unwrap();
    let mut keys = ring.public_set();
    keys.keys.push(PublicKey {
        kid: KeyId::of(&weak),
        algorithm: "Ed25519".into(),
        public_key: b64(&IDENTITY),
        created_at: NOW,
        status: KeyStatus::Active,
    });
    assert_eq!(
        Verifier::new(&keys, AUDIENCE).map(|_| ()),
        Err(LicenseError::WeakPublicKey {
            kid: KeyId::of(&weak).to_string()
        })
    );
}

#[test]
fn malformed_origin_key_set_is_refused_by_verifier_new() {
    let ring = ring();
    let good = ring.public_set();
    let mut cases: Vec<PublicKeySet> = Vec::new();
    let mut not_32_bytes = good.clone();
    not_32_bytes.keys[0].public_key = b64(&[9u8; 31]);
    cases.push(not_32_bytes);
    let mut wrong_kid = good.clone();
    wrong_kid.keys[0].kid = KeyId::try_from("ed25519-0000000000000000".to_owned()).unwrap();
    cases.push(wrong_kid);
    let mut other_algorithm = good.clone();
    other_algorithm.keys[0].algorithm = "RS256".into();
    cases.push(other_algorithm);
    let mut duplicate = good.clone();
    duplicate.keys.push(good.keys[0].clone());
    cases.push(duplicate);
    cases.push(PublicKeySet { keys: vec![] });
    for keys in cases {
        assert!(matches!(
            Verifier::new(&keys, AUDIENCE),
            Err(LicenseError::KeySetInvalid { .. })
        ));
    }
}

#[test]
fn empty_audience_is_refused_by_verifier_new() {
    let ring = ring();
    assert_eq!(
        Verifier::new(&ring.public_set(), "").map(|_| ()),
        Err(LicenseError::AudienceInvalid)
    );
}

// ---- Region certificates ----

#[test]
fn region_token_without_its_certificate_is_an_unknown_key() {
    let ring = ring();
    let region = region(&ring);
    let token = sign_raw(
        &region.key,
        &claims_json(&claims(&region_issuer(REGION))),
        &json!({"kid": region.cert.kid.as_str()}),
    );
    assert_eq!(
        verify(&ring, &token),
        Err(LicenseError::UnknownKeyId(region.cert.kid.clone()))
    );
}

#[test]
fn another_regions_key_presenting_region_a_certificate_is_a_key_mismatch() {
    let ring = ring();
    let a = region(&ring);
    let b_key = region_key(8);
    let b_kid = KeyId::of(&b_key.verifying_key());
    let token = sign_raw(
        &b_key,
        &claims_json(&claims(&region_issuer(REGION))),
        &json!({"kid": b_kid.as_str(), "cert": a.signed}),
    );
    assert_eq!(
        verify(&ring, &token),
        Err(LicenseError::CertificateKeyMismatch {
            footer_kid: b_kid,
            certificate_kid: a.cert.kid.clone()
        })
    );
}

#[test]
fn another_regions_key_claiming_region_a_key_id_is_a_bad_signature() {
    let ring = ring();
    let a = region(&ring);
    let token = sign_raw(
        &region_key(8),
        &claims_json(&claims(&region_issuer(REGION))),
        &json!({"kid": a.cert.kid.as_str(), "cert": a.signed}),
    );
    assert_eq!(verify(&ring, &token), Err(LicenseError::BadSignature));
}

#[test]
fn certificate_signed_by_a_non_origin_key_is_refused() {
    let ring = ring();
    let impostor = common::ring();
    let key = region_key(7);
    let cert = region_certificate(&key, REGION, 1);
    let signed = certify(&impostor, &cert).unwrap();
    let token = Issuer::region(key, signed)
        .unwrap()
        .issue(&claims(&region_issuer(REGION)), None)
        .unwrap();
    assert_eq!(
        verify(&ring, &token),
        Err(LicenseError::CertificateSignatureInvalid)
    );
}

#[test]
fn certificate_with_a_forged_origin_signature_is_refused() {
    let ring = ring();
    let mut region = region(&ring);
    region.signed.signature[0] ^= 0x01;
    let token = region.token();
    assert_eq!(
        verify(&ring, &token),
        Err(LicenseError::CertificateSignatureInvalid)
    );
}

#[test]
fn certificate_signed_for_another_context_is_refused() {
    let ring = ring();
    let key = region_key(7);
    let cert = region_certificate(&key, REGION, 1);
    let signed = ring.sign(CONTEXT_WEBHOOK, serde_json::to_vec(&cert).unwrap());
    let token = Issuer::region(key, signed)
        .unwrap()
        .issue(&claims(&region_issuer(REGION)), None)
        .unwrap();
    assert_eq!(
        verify(&ring, &token),
        Err(LicenseError::CertificateSignatureInvalid)
    );
}

#[test]
fn certificate_signed_by_a_retired_origin_key_is_refused() {
    let mut ring = ring();
    let region = region(&ring);
    let token = region.token();
    let old = ring.active_kid().clone();
    ring.rotate(NOW, DAY).unwrap();
    ring.retire(&old).unwrap();
    assert_eq!(verify(&ring, &token), Err(LicenseError::RetiredKey(old)));
}

#[test]
fn expired_certificate_is_refused() {
    let ring = ring();
    let key = region_key(7);
    let mut cert = region_certificate(&key, REGION, 2);
    cert.not_before = at(-10 * DAY as i64);
    cert.not_after = at(-(DAY as i64));
    let mut claims = claims(&region_issuer(REGION));
    claims.iat = at(-2 * DAY as i64);
    claims.nbf = claims.iat;
    claims.exp = claims.iat.plus_seconds(HOUR);
    let token = Issuer::region(key, certify(&ring, &cert).unwrap())
        .unwrap()
        .issue(&claims, None)
        .unwrap();
    assert_eq!(
        verify(&ring, &token),
        Err(LicenseError::CertificateExpired {
            serial: cert.serial.clone(),
            not_after: cert.not_after
        })
    );
}

#[test]
fn not_yet_valid_certificate_is_refused() {
    let ring = ring();
    let key = region_key(7);
    let mut cert = region_certificate(&key, REGION, 3);
    cert.not_before = at(DAY as i64);
    cert.not_after = at(30 * DAY as i64);
    let mut claims = claims(&region_issuer(REGION));
    claims.iat = at(DAY as i64);
    claims.nbf = claims.iat;
    claims.exp = claims.iat.plus_seconds(HOUR);
    let token = Issuer::region(key, certify(&ring, &cert).unwrap())
        .unwrap()
        .issue(&claims, None)
        .unwrap();
    assert_eq!(
        verify(&ring, &token),
        Err(LicenseError::CertificateNotYetValid {
            serial: cert.serial.clone(),
            not_before: cert.not_before
        })
    );
}

#[test]
fn revoked_certificate_is_refused() {
    let ring = ring();
    let region = region(&ring);
    let mut revoked = RevocationList::new();
    revoked.insert_certificate(region.cert.serial.as_str());
    assert_eq!(
        verifier(&ring).verify(&region.token(), NOW, None, &revoked),
        Err(LicenseError::CertificateRevoked {
            serial: region.cert.serial.clone()
        })
    );
}

#[test]
fn certificate_not_allowing_licenses_is_refused() {
    let ring = ring();
    let key = region_key(7);
    let mut cert = region_certificate(&key, REGION, 4);
    cert.may_sign = vec!["usage-report".into()];
    let signed = certify(&ring, &cert).unwrap();
    let token = sign_raw(
        &key,
        &claims_json(&claims(&region_issuer(REGION))),
        &json!({"kid": cert.kid.as_str(), "cert": signed}),
    );
    assert_eq!(
        verify(&ring, &token),
        Err(LicenseError::CertificateNotForLicenses {
            serial: cert.serial.clone()
        })
    );
}

#[test]
fn weak_region_key_in_a_certificate_is_refused() {
    let ring = ring();
    let weak = VerifyingKey::from_bytes(&IDENTITY).unwrap();
    let mut cert = region_certificate(&region_key(7), REGION, 5);
    cert.public_key = b64(&IDENTITY);
    cert.kid = KeyId::of(&weak);
    // certify refuses to sign it; an origin that signed it anyway is caught
    // by every verifier.
    assert!(matches!(
        certify(&ring, &cert),
        Err(LicenseError::WeakPublicKey { .. })
    ));
    let signed = ring.sign(
        CONTEXT_REGION_CERTIFICATE,
        serde_json::to_vec(&cert).unwrap(),
    );
    let expected = LicenseError::WeakPublicKey {
        kid: cert.kid.to_string(),
    };
    assert_eq!(
        verify_certificate(&ring.public_set(), &signed, NOW).map(|_| ()),
        Err(expected.clone())
    );
    let token = sign_raw(
        &region_key(7),
        &claims_json(&claims(&region_issuer(REGION))),
        &json!({"kid": cert.kid.as_str(), "cert": signed}),
    );
    assert_eq!(verify(&ring, &token), Err(expected));
}

#[test]
fn certificate_whose_kid_does_not_match_its_key_is_refused() {
    let ring = ring();
    let mut cert = region_certificate(&region_key(7), REGION, 6);
    cert.kid = KeyId::of(&region_key(8).verifying_key());
    let signed = ring.sign(
        CONTEXT_REGION_CERTIFICATE,
        serde_json::to_vec(&cert).unwrap(),
    );
    assert!(matches!(
        verify_certificate(&ring.public_set(), &signed, NOW),
        Err(LicenseError::CertificateInvalid(_))
    ));
}

#[test]
fn region_token_living_longer_than_its_certificate_allows_is_refused() {
    let ring = ring();
    let region = region(&ring);
    let mut claims = claims(&region_issuer(REGION));
    claims.exp = claims.iat.plus_seconds(2 * DAY);
    let token = sign_raw(
        &region.key,
        &claims_json(&claims),
        &json!({"kid": region.cert.kid.as_str(), "cert": region.signed}),
    );
    assert_eq!(
        verify(&ring, &token),
        Err(LicenseError::TtlOverCertificateMax {
            ttl_seconds: 2 * DAY,
            max_seconds: DAY
        })
    );
}

#[test]
fn region_token_outliving_its_certificate_is_refused() {
    let ring = ring();
    let key = region_key(7);
    let mut cert = region_certificate(&key, REGION, 9);
    cert.not_after = NOW.plus_seconds(HOUR / 2);
    let signed = certify(&ring, &cert).unwrap();
    let token = sign_raw(
        &key,
        &claims_json(&claims(&region_issuer(REGION))),
        &json!({"kid": cert.kid.as_str(), "cert": signed}),
    );
    assert_eq!(
        verify(&ring, &token),
        Err(LicenseError::OutsideCertificateValidity {
            serial: cert.serial.clone()
        })
    );
}

#[test]
fn region_token_claiming_to_be_the_origins_is_an_issuer_mismatch() {
    let ring = ring();
    let region = region(&ring);
    let token = sign_raw(
        &region.key,
        &claims_json(&claims(ISSUER_ORIGIN)),
        &json!({"kid": region.cert.kid.as_str(), "cert": region.signed}),
    );
    assert_eq!(
        verify(&ring, &token),
        Err(LicenseError::IssuerMismatch {
            iss: ISSUER_ORIGIN.into(),
            expected: region_issuer(REGION)
        })
    );
}

#[test]
fn region_token_claiming_another_region_is_an_issuer_mismatch() {
    let ring = ring();
    let region = region(&ring);
    let token = sign_raw(
        &region.key,
        &claims_json(&claims(&region_issuer("us-east"))),
        &json!({"kid": region.cert.kid.as_str(), "cert": region.signed}),
    );
    assert!(matches!(
        verify(&ring, &token),
        Err(LicenseError::IssuerMismatch { .. })
    ));
}

#[test]
fn origin_token_claiming_a_region_is_an_issuer_mismatch() {
    let ring = ring();
    let (kid, secret) = ring.active_signing_key();
    let token = sign_raw(
        secret,
        &claims_json(&claims(&region_issuer(REGION))),
        &json!({"kid": kid.as_str()}),
    );
    assert!(matches!(
        verify(&ring, &token),
        Err(LicenseError::IssuerMismatch { .. })
    ));
}

// ---- Claims ----

fn origin_signed(ring: &tollgate_signing::KeyRing, message: &[u8]) -> String {
    let (kid, secret) = ring.active_signing_key();
    sign_raw(secret, message, &json!({"kid": kid.as_str()}))
}

#[test]
fn claims_with_a_non_canonical_time_are_invalid() {
    let ring = ring();
    let message = String::from_utf8(claims_json(&claims(ISSUER_ORIGIN)))
        .unwrap()
        .replace("\"2026-11-27T23:21:02Z\"", "\"2026-11-27T23:21:02+00:00\"");
    assert!(matches!(
        verify(&ring, &origin_signed(&ring, message.as_bytes())),
        Err(LicenseError::ClaimsInvalid(_))
    ));
}

#[test]
fn claims_with_a_unix_time_are_invalid() {
    let ring = ring();
    let mut json: serde_json::Value =
        serde_json::from_slice(&claims_json(&claims(ISSUER_ORIGIN))).unwrap();
    json["exp"] = json!(NOW.0 + 3600);
    let message = serde_json::to_vec(&json).unwrap();
    assert!(matches!(
        verify(&ring, &origin_signed(&ring, &message)),
        Err(LicenseError::ClaimsInvalid(_))
    ));
}

#[test]
fn claims_with_too_many_entitlements_are_invalid() {
    let ring = ring();
    let mut claims = claims(ISSUER_ORIGIN);
    // As small as an entitlement gets, so that 257 of them still fit in the
    // 64 KiB token limit and the entitlement limit is what refuses them.
    let one: LicenseEntitlement = serde_json::from_value(json!({
        "id": "e", "grant": {"feature": "p"}, "features": [],
        "valid_from": 0, "status": "active",
        "offline_policy": {"offline_grace_seconds": 0, "after_grace": "deny"}
    }))
    .unwrap();
    claims.entitlements = vec![one; ENTITLEMENTS_PER_LICENSE_MAX + 1];
    assert!(matches!(
        Issuer::origin(&ring).issue(&claims, None),
        Err(LicenseError::ClaimsInvalid(_))
    ));
    let token = origin_signed(&ring, &claims_json(&claims));
    assert!(matches!(
        verify(&ring, &token),
        Err(LicenseError::ClaimsInvalid(_))
    ));
}

#[test]
fn claims_with_an_unknown_field_are_invalid() {
    let ring = ring();
    let mut json: serde_json::Value =
        serde_json::from_slice(&claims_json(&claims(ISSUER_ORIGIN))).unwrap();
    json["admin"] = json!(true);
    assert!(matches!(
        verify(
            &ring,
            &origin_signed(&ring, &serde_json::to_vec(&json).unwrap())
        ),
        Err(LicenseError::ClaimsInvalid(_))
    ));
}

#[test]
fn claims_whose_sub_disagrees_with_the_account_are_invalid() {
    let ring = ring();
    let mut claims = claims(ISSUER_ORIGIN);
    claims.sub = "globex".into();
    assert!(matches!(
        verify(&ring, &origin_signed(&ring, &claims_json(&claims))),
        Err(LicenseError::ClaimsInvalid(_))
    ));
}

#[test]
fn claims_that_are_not_json_are_invalid() {
    let ring = ring();
    assert!(matches!(
        verify(&ring, &origin_signed(&ring, b"\xff not json")),
        Err(LicenseError::ClaimsInvalid(_))
    ));
}

// ---- Time, audience, revocation ----

#[test]
fn expired_token_is_refused() {
    let ring = ring();
    let exp = NOW.plus_seconds(HOUR);
    assert_eq!(
        verifier(&ring).verify(
            &origin_token(&ring),
            exp.plus_seconds(DEFAULT_LEEWAY_SECONDS),
            None,
            &()
        ),
        Err(LicenseError::Expired { exp })
    );
}

#[test]
fn not_yet_valid_token_is_refused() {
    let ring = ring();
    let mut claims = claims(ISSUER_ORIGIN);
    claims.nbf = NOW.plus_seconds(HOUR / 2);
    let token = Issuer::origin(&ring).issue(&claims, None).unwrap();
    assert_eq!(
        verify(&ring, &token),
        Err(LicenseError::NotYetValid { nbf: claims.nbf })
    );
}

#[test]
fn token_for_another_audience_is_refused() {
    let ring = ring();
    let verifier = Verifier::new(&ring.public_set(), "other-product").unwrap();
    assert_eq!(
        verifier.verify(&origin_token(&ring), NOW, None, &()),
        Err(LicenseError::WrongAudience)
    );
}

#[test]
fn revoked_token_is_refused() {
    let ring = ring();
    let mut revoked = RevocationList::new();
    revoked.insert_license(claims(ISSUER_ORIGIN).jti.as_str());
    assert_eq!(
        verifier(&ring).verify(&origin_token(&ring), NOW, None, &revoked),
        Err(LicenseError::LicenseRevoked {
            jti: claims(ISSUER_ORIGIN).jti
        })
    );
}

// ---- Devices ----

fn device_token(ring: &tollgate_signing::KeyRing) -> String {
    Issuer::origin(ring)
        .issue(&device_claims(ISSUER_ORIGIN), Some(DEVICE))
        .unwrap()
}

#[test]
fn device_bound_token_without_a_fingerprint_is_refused() {
    let ring = ring();
    assert_eq!(
        verify(&ring, &device_token(&ring)),
        Err(LicenseError::DeviceFingerprintRequired)
    );
}

#[test]
fn device_bound_token_on_another_device_is_a_bad_signature() {
    let ring = ring();
    assert_eq!(
        verifier(&ring).verify(&device_token(&ring), NOW, Some(b"another-device"), &()),
        Err(LicenseError::BadSignature)
    );
}

#[test]
fn device_bound_token_relabelled_as_unbound_is_a_bad_signature() {
    let ring = ring();
    let mut parts = split(&device_token(&ring));
    let text = String::from_utf8(parts.message.clone()).unwrap();
    parts.message = text
        .replace("\"device_bound\":true", "\"device_bound\":false")
        .into_bytes();
    let token = parts.join();
    assert_eq!(verify(&ring, &token), Err(LicenseError::BadSignature));
    assert_eq!(
        verifier(&ring).verify(&token, NOW, Some(DEVICE), &()),
        Err(LicenseError::BadSignature)
    );
}

#[test]
fn empty_device_fingerprint_is_refused() {
    let ring = ring();
    assert_eq!(
        verifier(&ring).verify(&device_token(&ring), NOW, Some(b""), &()),
        Err(LicenseError::DeviceFingerprintInvalid { len: 0 })
    );
}

// ---- Issuing ----

#[test]
fn issuer_refuses_a_fingerprint_for_an_unbound_token() {
    let ring = ring();
    assert_eq!(
        Issuer::origin(&ring).issue(&claims(ISSUER_ORIGIN), Some(DEVICE)),
        Err(LicenseError::DeviceBindingInconsistent {
            device_bound: false
        })
    );
}

#[test]
fn issuer_refuses_a_bound_token_without_a_fingerprint() {
    let ring = ring();
    assert_eq!(
        Issuer::origin(&ring).issue(&device_claims(ISSUER_ORIGIN), None),
        Err(LicenseError::DeviceBindingInconsistent { device_bound: true })
    );
}

#[test]
fn origin_issuer_refuses_a_region_iss() {
    let ring = ring();
    assert!(matches!(
        Issuer::origin(&ring).issue(&claims(&region_issuer(REGION)), None),
        Err(LicenseError::IssuerMismatch { .. })
    ));
}

#[test]
fn region_issuer_refuses_another_iss() {
    let ring = ring();
    let region = region(&ring);
    for iss in [ISSUER_ORIGIN.to_owned(), region_issuer("us-east")] {
        assert!(matches!(
            region.issuer().issue(&claims(&iss), None),
            Err(LicenseError::IssuerMismatch { .. })
        ));
    }
}

#[test]
fn region_issuer_refuses_a_ttl_over_its_certificate_max() {
    let ring = ring();
    let mut claims = claims(&region_issuer(REGION));
    claims.exp = claims.iat.plus_seconds(DAY + 1);
    assert_eq!(
        region(&ring).issuer().issue(&claims, None),
        Err(LicenseError::TtlOverCertificateMax {
            ttl_seconds: DAY + 1,
            max_seconds: DAY
        })
    );
}

#[test]
fn region_issuer_refuses_a_token_outside_its_certificate_window() {
    let ring = ring();
    let region = region(&ring);
    let mut claims = claims(&region_issuer(REGION));
    claims.iat = region.cert.not_after;
    claims.nbf = claims.iat;
    claims.exp = claims.iat.plus_seconds(HOUR);
    assert!(matches!(
        region.issuer().issue(&claims, None),
        Err(LicenseError::OutsideCertificateValidity { .. })
    ));
}

#[test]
fn region_issuer_refuses_a_certificate_for_another_key() {
    let ring = ring();
    let a = region(&ring);
    assert_eq!(
        Issuer::region(region_key(8), a.signed).map(|_| ()),
        Err(LicenseError::IssuerKeyMismatch)
    );
}

#[test]
fn region_issuer_refuses_a_certificate_not_for_licenses() {
    let ring = ring();
    let key = region_key(7);
    let mut cert = region_certificate(&key, REGION, 4);
    cert.may_sign = vec!["usage-report".into()];
    assert!(matches!(
        Issuer::region(key, certify(&ring, &cert).unwrap()),
        Err(LicenseError::CertificateNotForLicenses { .. })
    ));
}

#[test]
fn issuer_refuses_claims_with_nbf_after_exp() {
    let ring = ring();
    let mut claims = claims(ISSUER_ORIGIN);
    claims.nbf = claims.exp;
    assert!(matches!(
        Issuer::origin(&ring).issue(&claims, None),
        Err(LicenseError::ClaimsInvalid(_))
    ));
}

#[test]
fn certify_refuses_an_empty_window_and_a_bad_region() {
    let ring = ring();
    let mut cert = region_certificate(&region_key(7), REGION, 1);
    cert.not_after = cert.not_before;
    assert!(matches!(
        certify(&ring, &cert),
        Err(LicenseError::CertificateInvalid(_))
    ));
    let cert = region_certificate(&region_key(7), "EU:West/1", 1);
    assert!(matches!(
        certify(&ring, &cert),
        Err(LicenseError::CertificateInvalid(_))
    ));
}

// ---- Codes ----

#[test]
fn every_error_has_its_own_stable_code() {
    let kid = KeyId::try_from("ed25519-0000000000000000".to_owned()).unwrap();
    let serial = RandomId::from_bytes([0; 16]);
    let errors = [
        LicenseError::Token(TokenError::Empty),
        LicenseError::BadSignature,
        LicenseError::FooterInvalid(String::new()),
        LicenseError::UnknownKeyId(kid.clone()),
        LicenseError::RetiredKey(kid.clone()),
        LicenseError::KeyOverlapExpired {
            kid: kid.clone(),
            until: NOW,
        },
        LicenseError::WeakPublicKey { kid: String::new() },
        LicenseError::KeySetInvalid {
            kid: String::new(),
            reason: String::new(),
        },
        LicenseError::AudienceInvalid,
        LicenseError::CertificateInvalid(String::new()),
        LicenseError::CertificateSignatureInvalid,
        LicenseError::CertificateExpired {
            serial: serial.clone(),
            not_after: NOW,
        },
        LicenseError::CertificateNotYetValid {
            serial: serial.clone(),
            not_before: NOW,
        },
        LicenseError::CertificateRevoked {
            serial: serial.clone(),
        },
        LicenseError::CertificateKeyMismatch {
            footer_kid: kid.clone(),
            certificate_kid: kid,
        },
        LicenseError::CertificateNotForLicenses {
            serial: serial.clone(),
        },
        LicenseError::IssuerMismatch {
            iss: String::new(),
            expected: String::new(),
        },
        LicenseError::TtlOverCertificateMax {
            ttl_seconds: 0,
            max_seconds: 0,
        },
        LicenseError::OutsideCertificateValidity {
            serial: serial.clone(),
        },
        LicenseError::ClaimsInvalid(String::new()),
        LicenseError::Expired { exp: NOW },
        LicenseError::NotYetValid { nbf: NOW },
        LicenseError::WrongAudience,
        LicenseError::LicenseRevoked { jti: serial },
        LicenseError::DeviceFingerprintRequired,
        LicenseError::DeviceFingerprintInvalid { len: 0 },
        LicenseError::DeviceBindingInconsistent { device_bound: true },
        LicenseError::IssuerKeyMismatch,
    ];
    let codes: std::collections::BTreeSet<&str> = errors.iter().map(LicenseError::code).collect();
    assert_eq!(codes.len(), errors.len(), "{codes:?}");
    assert!(codes
        .iter()
        .all(|c| c.starts_with("license_") || c.starts_with("token_")));
}
