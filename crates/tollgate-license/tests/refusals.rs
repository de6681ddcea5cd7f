//! Every bad input is refused with its own error variant. One table of named
//! rows per area (tampering, format, origin keys, region certificates,
//! claims, time, devices, issuing), each row a bad input and the error it
//! must be refused with; `check` runs every row and then fails naming each
//! row that was not refused as expected.

mod common;

use common::*;
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::json;
use tollgate_license::*;
use tollgate_signing::{
    KeyId, KeyRing, KeyStatus, PublicKey, PublicKeySet, Signed, CONTEXT_REGION_CERTIFICATE,
    CONTEXT_WEBHOOK,
};
use tollgate_token::{Malformed, TokenError};
use Expect::{Code, Is, IsFor};

// ---- The table runner ----

/// What a row's bad input came to: refused (or, wrongly, accepted).
type Outcome = Result<(), LicenseError>;

/// A named bad input and how it must be refused.
type Row = (&'static str, fn(&mut World) -> Outcome, Expect);

/// What each row starts from, made afresh for every row.
struct World {
    /// The verifier's origin ring; a row may rotate it.
    ring: KeyRing,
    /// The key `ring` started with (and signs with until a row rotates it).
    first_kid: KeyId,
    /// Another origin's ring, which the verifier does not trust.
    stranger: KeyRing,
}

impl World {
    fn new() -> World {
        let ring = ring();
        World {
            first_kid: ring.active_kid().clone(),
            ring,
            stranger: common::ring(),
        }
    }
}

/// How a row must be refused.
enum Expect {
    /// With exactly this error.
    Is(LicenseError),
    /// With exactly this error, which names a key of the row's world (keys
    /// are made at random, so only the world knows their ids).
    IsFor(fn(&World) -> LicenseError),
    /// With an error of this code, whatever its detail. Codes are one per
    /// variant (`every_error_has_its_own_stable_code`).
    Code(&'static str),
}

impl Expect {
    /// Why `got` is not what was expected, if it is not.
    fn mismatch(&self, world: &World, got: &Outcome) -> Option<String> {
        let (ok, expected) = match self {
            Is(error) => (got.as_ref().err() == Some(error), format!("{error:?}")),
            IsFor(error) => {
                let error = error(world);
                (got.as_ref().err() == Some(&error), format!("{error:?}"))
            }
            Code(code) => (
                got.as_ref().err().map(LicenseError::code) == Some(*code),
                format!("an error with code {code}"),
            ),
        };
        (!ok).then(|| format!("expected {expected}, got {got:?}"))
    }
}

/// Runs every row, each in a world of its own, then fails naming every row
/// that did not end as expected (a row that panics fails too), not only the
/// first.
fn check(rows: &[Row]) {
    tollgate_testkit::check_rows(
        rows,
        |(name, _, _)| name,
        |(_, run, expect)| {
            let mut world = World::new();
            let got = run(&mut world);
            expect.mismatch(&world, &got)
        },
    );
}

// ---- Inputs ----

/// The identity point: a valid encoding of a small-order (weak) key.
const IDENTITY: [u8; 32] = {
    let mut bytes = [0u8; 32];
    bytes[0] = 1;
    bytes
};

fn weak_kid() -> KeyId {
    KeyId::of(&VerifyingKey::from_bytes(&IDENTITY).unwrap())
}

/// The id of `region_key(seed)`.
fn region_kid(seed: u8) -> KeyId {
    KeyId::of(&region_key(seed).verifying_key())
}

/// The serial `region_certificate(_, _, serial)` gives a certificate.
fn serial(serial: u8) -> RandomId {
    RandomId::from_bytes([serial; 16])
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Verifies `token` now, for the fixture audience, on no device, with
/// nothing revoked.
fn verify(ring: &KeyRing, token: &str) -> Outcome {
    verifier(ring).verify(token, NOW, None, &()).map(drop)
}

/// Rotates the ring (a day's overlap) and retires the key it started with.
fn retire_first_key(w: &mut World) {
    w.ring.rotate(NOW, DAY).unwrap();
    w.ring.retire(&w.first_kid).unwrap();
}

/// `message`, signed by the ring's active key and labelled with its id.
fn origin_signed(ring: &KeyRing, message: &[u8]) -> String {
    let (kid, secret) = ring.active_signing_key();
    sign_raw(secret, message, &json!({"kid": kid.as_str()}))
}

/// Verifies the fixture origin claims signed by the ring's active key under
/// `footer`.
fn verify_with_footer(w: &World, footer: serde_json::Value) -> Outcome {
    let (_, secret) = w.ring.active_signing_key();
    let token = sign_raw(secret, &claims_json(&claims(ISSUER_ORIGIN)), &footer);
    verify(&w.ring, &token)
}

/// `Verifier::new` on the ring's public key set, tampered.
fn new_verifier_for(w: &World, tamper: impl FnOnce(&mut PublicKeySet)) -> Outcome {
    let mut keys = w.ring.public_set();
    tamper(&mut keys);
    Verifier::new(&keys, AUDIENCE).map(drop)
}

/// The fixture claims, issued by the fixture region.
fn region_claims() -> LicenseClaims {
    claims(&region_issuer(REGION))
}

/// `claims` signed by `key`, labelled `kid` and carrying `cert`, bypassing
/// the region issuer's checks.
fn region_signed(key: &SigningKey, claims: &LicenseClaims, kid: &KeyId, cert: &Signed) -> String {
    sign_raw(
        key,
        &claims_json(claims),
        &json!({"kid": kid.as_str(), "cert": cert}),
    )
}

/// `claims` issued by a region issuer holding `key` and `cert`.
fn region_issued(key: SigningKey, cert: Signed, claims: &LicenseClaims) -> String {
    Issuer::region(key, cert)
        .unwrap()
        .issue(claims, None)
        .unwrap()
}

/// A certificate for the weak identity key.
fn weak_certificate() -> RegionCertificate {
    let mut cert = region_certificate(&region_key(7), REGION, 5);
    cert.public_key = b64(&IDENTITY);
    cert.kid = weak_kid();
    cert
}

/// `cert` signed by the origin without `certify`'s checks.
fn signed_anyway(ring: &KeyRing, cert: &RegionCertificate) -> Signed {
    ring.sign(
        CONTEXT_REGION_CERTIFICATE,
        serde_json::to_vec(cert).unwrap(),
    )
}

/// The fixture origin claims as JSON with `edit` applied.
fn claims_value_with(edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let mut json: serde_json::Value =
        serde_json::from_slice(&claims_json(&claims(ISSUER_ORIGIN))).unwrap();
    edit(&mut json);
    serde_json::to_vec(&json).unwrap()
}

/// Origin claims with one entitlement more than a license may carry.
fn too_many_entitlements() -> LicenseClaims {
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
    claims
}

fn device_token(ring: &KeyRing) -> String {
    Issuer::origin(ring)
        .issue(&device_claims(ISSUER_ORIGIN), Some(DEVICE))
        .unwrap()
}

/// A device-bound token whose claims were edited to say it is not bound.
fn relabelled_unbound(ring: &KeyRing) -> String {
    let mut parts = split(&device_token(ring));
    let text = String::from_utf8(parts.message.clone()).unwrap();
    parts.message = text
        .replace("\"device_bound\":true", "\"device_bound\":false")
        .into_bytes();
    parts.join()
}

// ---- The tables ----

#[test]
fn tampering() {
    check(&[
        (
            "a flipped bit in the payload is a bad signature",
            |w| {
                let mut parts = split(&origin_token(&w.ring));
                // Inside the "aud" value, so the message stays valid JSON.
                let at = parts
                    .message
                    .windows(8)
                    .position(|x| x == b"\"studio\"")
                    .unwrap()
                    + 1;
                parts.message[at] ^= 0x01;
                verify(&w.ring, &parts.join())
            },
            Is(LicenseError::BadSignature),
        ),
        (
            "a flipped bit in the signature is a bad signature",
            |w| {
                let mut parts = split(&origin_token(&w.ring));
                parts.signature[10] ^= 0x80;
                verify(&w.ring, &parts.join())
            },
            Is(LicenseError::BadSignature),
        ),
        (
            "a truncated signature is a bad signature",
            |w| {
                let mut parts = split(&origin_token(&w.ring));
                parts.signature.pop();
                verify(&w.ring, &parts.join())
            },
            Is(LicenseError::BadSignature),
        ),
        (
            "a payload shorter than a signature is malformed",
            |w| {
                let footer = b64(format!("{{\"kid\":\"{}\"}}", w.ring.active_kid()).as_bytes());
                verify(&w.ring, &format!("v4.public.{}.{footer}", b64(&[0u8; 63])))
            },
            Is(LicenseError::Token(TokenError::Malformed(
                Malformed::PayloadTooShort { len: 63 },
            ))),
        ),
        (
            "a swapped footer is a bad signature",
            |w| {
                // Two keys of one ring; a token signed by the old key
                // re-labelled with the new key's id.
                let token = origin_token(&w.ring);
                let new = w.ring.rotate(NOW, HOUR).unwrap();
                let mut parts = split(&token);
                parts.footer = serde_json::to_vec(&json!({"kid": new.as_str()})).unwrap();
                verify(&w.ring, &parts.join())
            },
            Is(LicenseError::BadSignature),
        ),
    ]);
}

#[test]
fn format() {
    check(&[
        (
            "a v4.local token is refused by its header",
            |w| {
                let token = origin_token(&w.ring).replacen("v4.public.", "v4.local.", 1);
                verify(&w.ring, &token)
            },
            Code("token_wrong_header"),
        ),
        (
            "a v3.public token is refused by its header",
            |w| {
                let token = origin_token(&w.ring).replacen("v4.public.", "v3.public.", 1);
                verify(&w.ring, &token)
            },
            Code("token_wrong_header"),
        ),
        (
            "an empty token is refused",
            |w| verify(&w.ring, ""),
            Is(LicenseError::Token(TokenError::Empty)),
        ),
        (
            "a token without a footer is refused",
            |w| {
                let (_, secret) = w.ring.active_signing_key();
                let message = claims_json(&claims(ISSUER_ORIGIN));
                let token = tollgate_token::sign(secret, &message, b"", b"").unwrap();
                verify(&w.ring, &token)
            },
            Code("license_footer_invalid"),
        ),
        (
            "a footer whose kid is not a key id is refused",
            |w| verify_with_footer(w, json!({"kid": "origin-2026"})),
            Code("license_footer_invalid"),
        ),
        (
            "a footer with a field besides the kid is refused",
            |w| {
                let kid = w.ring.active_kid().as_str().to_owned();
                verify_with_footer(w, json!({"kid": kid, "extra": 1}))
            },
            Code("license_footer_invalid"),
        ),
        (
            "a footer that is not an object is refused",
            |w| verify_with_footer(w, json!(["kid"])),
            Code("license_footer_invalid"),
        ),
        (
            "an origin key id with a certificate is refused",
            |w| {
                let region = region(&w.ring);
                let kid = w.ring.active_kid().as_str().to_owned();
                verify_with_footer(w, json!({"kid": kid, "cert": region.signed}))
            },
            Code("license_footer_invalid"),
        ),
    ]);
}

#[test]
fn origin_keys() {
    check(&[
        (
            "an unknown key id is refused",
            |w| verify(&w.ring, &origin_token(&w.stranger)),
            IsFor(|w| LicenseError::UnknownKeyId(w.stranger.active_kid().clone())),
        ),
        (
            "a retired key is refused",
            |w| {
                let token = origin_token(&w.ring);
                retire_first_key(w);
                verify(&w.ring, &token)
            },
            IsFor(|w| LicenseError::RetiredKey(w.first_kid.clone())),
        ),
        (
            "a key whose overlap ended is refused",
            |w| {
                let token = origin_token(&w.ring);
                w.ring.rotate(NOW, 600).unwrap();
                verifier(&w.ring)
                    .verify(&token, at(601), None, &())
                    .map(drop)
            },
            IsFor(|w| LicenseError::KeyOverlapExpired {
                kid: w.first_kid.clone(),
                until: at(600),
            }),
        ),
        (
            "a weak key in the origin key set is refused by Verifier::new",
            |w| {
                new_verifier_for(w, |keys| {
                    keys.keys.push(PublicKey {
                        kid: weak_kid(),
                        algorithm: "Ed25519".into(),
                        public_key: b64(&IDENTITY),
                        created_at: NOW,
                        status: KeyStatus::Active,
                    })
                })
            },
            Is(LicenseError::WeakPublicKey {
                kid: weak_kid().to_string(),
            }),
        ),
        (
            "an origin key set with a key not 32 bytes long is refused by Verifier::new",
            |w| new_verifier_for(w, |keys| keys.keys[0].public_key = b64(&[9u8; 31])),
            Code("license_key_set_invalid"),
        ),
        (
            "an origin key set with a kid not its key's is refused by Verifier::new",
            |w| {
                new_verifier_for(w, |keys| {
                    keys.keys[0].kid =
                        KeyId::try_from("ed25519-0000000000000000".to_owned()).unwrap()
                })
            },
            Code("license_key_set_invalid"),
        ),
        (
            "an origin key set with another algorithm is refused by Verifier::new",
            |w| new_verifier_for(w, |keys| keys.keys[0].algorithm = "RS256".into()),
            Code("license_key_set_invalid"),
        ),
        (
            "an origin key set with a key twice is refused by Verifier::new",
            |w| {
                new_verifier_for(w, |keys| {
                    let first = keys.keys[0].clone();
                    keys.keys.push(first)
                })
            },
            Code("license_key_set_invalid"),
        ),
        (
            "an empty origin key set is refused by Verifier::new",
            |w| new_verifier_for(w, |keys| *keys = PublicKeySet { keys: vec![] }),
            Code("license_key_set_invalid"),
        ),
        (
            "an empty audience is refused by Verifier::new",
            |w| Verifier::new(&w.ring.public_set(), "").map(drop),
            Is(LicenseError::AudienceInvalid),
        ),
    ]);
}

#[test]
fn region_certificates() {
    check(&[
        (
            "a region token without its certificate is an unknown key",
            |w| {
                let region = region(&w.ring);
                let token = sign_raw(
                    &region.key,
                    &claims_json(&region_claims()),
                    &json!({"kid": region.cert.kid.as_str()}),
                );
                verify(&w.ring, &token)
            },
            Is(LicenseError::UnknownKeyId(region_kid(7))),
        ),
        (
            "another region's key presenting region a's certificate is a key mismatch",
            |w| {
                let a = region(&w.ring);
                let b_key = region_key(8);
                let b_kid = KeyId::of(&b_key.verifying_key());
                let token = region_signed(&b_key, &region_claims(), &b_kid, &a.signed);
                verify(&w.ring, &token)
            },
            Is(LicenseError::CertificateKeyMismatch {
                footer_kid: region_kid(8),
                certificate_kid: region_kid(7),
            }),
        ),
        (
            "another region's key claiming region a's key id is a bad signature",
            |w| {
                let a = region(&w.ring);
                let token = region_signed(&region_key(8), &region_claims(), &a.cert.kid, &a.signed);
                verify(&w.ring, &token)
            },
            Is(LicenseError::BadSignature),
        ),
        (
            "a certificate signed by a non-origin key is refused",
            |w| {
                let key = region_key(7);
                let cert = region_certificate(&key, REGION, 1);
                let signed = certify(&w.stranger, &cert).unwrap();
                verify(&w.ring, &region_issued(key, signed, &region_claims()))
            },
            Is(LicenseError::CertificateSignatureInvalid),
        ),
        (
            "a certificate with a forged origin signature is refused",
            |w| {
                let mut region = region(&w.ring);
                region.signed.signature[0] ^= 0x01;
                verify(&w.ring, &region.token())
            },
            Is(LicenseError::CertificateSignatureInvalid),
        ),
        (
            "a certificate signed for another context is refused",
            |w| {
                let key = region_key(7);
                let cert = region_certificate(&key, REGION, 1);
                let signed = w
                    .ring
                    .sign(CONTEXT_WEBHOOK, serde_json::to_vec(&cert).unwrap());
                verify(&w.ring, &region_issued(key, signed, &region_claims()))
            },
            Is(LicenseError::CertificateSignatureInvalid),
        ),
        (
            "a certificate signed by a retired origin key is refused",
            |w| {
                let token = region(&w.ring).token();
                retire_first_key(w);
                verify(&w.ring, &token)
            },
            IsFor(|w| LicenseError::RetiredKey(w.first_kid.clone())),
        ),
        (
            "an expired certificate is refused",
            |w| {
                let key = region_key(7);
                let mut cert = region_certificate(&key, REGION, 2);
                cert.not_before = at(-10 * DAY as i64);
                cert.not_after = at(-(DAY as i64));
                let mut claims = region_claims();
                claims.iat = at(-2 * DAY as i64);
                claims.nbf = claims.iat;
                claims.exp = claims.iat.plus_seconds(HOUR);
                let signed = certify(&w.ring, &cert).unwrap();
                verify(&w.ring, &region_issued(key, signed, &claims))
            },
            Is(LicenseError::CertificateExpired {
                serial: serial(2),
                not_after: at(-(DAY as i64)),
            }),
        ),
        (
            "a not yet valid certificate is refused",
            |w| {
                let key = region_key(7);
                let mut cert = region_certificate(&key, REGION, 3);
                cert.not_before = at(DAY as i64);
                cert.not_after = at(30 * DAY as i64);
                let mut claims = region_claims();
                claims.iat = at(DAY as i64);
                claims.nbf = claims.iat;
                claims.exp = claims.iat.plus_seconds(HOUR);
                let signed = certify(&w.ring, &cert).unwrap();
                verify(&w.ring, &region_issued(key, signed, &claims))
            },
            Is(LicenseError::CertificateNotYetValid {
                serial: serial(3),
                not_before: at(DAY as i64),
            }),
        ),
        (
            "a revoked certificate is refused",
            |w| {
                let region = region(&w.ring);
                let mut revoked = RevocationList::new();
                revoked.insert_certificate(region.cert.serial.as_str());
                verifier(&w.ring)
                    .verify(&region.token(), NOW, None, &revoked)
                    .map(drop)
            },
            Is(LicenseError::CertificateRevoked {
                serial: serial(0xce),
            }),
        ),
        (
            "a certificate not allowing licenses is refused",
            |w| {
                let key = region_key(7);
                let mut cert = region_certificate(&key, REGION, 4);
                cert.may_sign = vec!["usage-report".into()];
                let signed = certify(&w.ring, &cert).unwrap();
                let token = region_signed(&key, &region_claims(), &cert.kid, &signed);
                verify(&w.ring, &token)
            },
            Is(LicenseError::CertificateNotForLicenses { serial: serial(4) }),
        ),
        (
            "a weak region key in a certificate is refused by certify",
            |w| certify(&w.ring, &weak_certificate()).map(drop),
            Code("license_weak_public_key"),
        ),
        (
            "a weak region key the origin certified anyway is refused by verify_certificate",
            |w| {
                let signed = signed_anyway(&w.ring, &weak_certificate());
                verify_certificate(&w.ring.public_set(), &signed, NOW).map(drop)
            },
            Is(LicenseError::WeakPublicKey {
                kid: weak_kid().to_string(),
            }),
        ),
        (
            "a weak region key the origin certified anyway is refused by the verifier",
            |w| {
                let cert = weak_certificate();
                let signed = signed_anyway(&w.ring, &cert);
                let token = region_signed(&region_key(7), &region_claims(), &cert.kid, &signed);
                verify(&w.ring, &token)
            },
            Is(LicenseError::WeakPublicKey {
                kid: weak_kid().to_string(),
            }),
        ),
        (
            "a certificate whose kid does not match its key is refused",
            |w| {
                let mut cert = region_certificate(&region_key(7), REGION, 6);
                cert.kid = region_kid(8);
                let signed = signed_anyway(&w.ring, &cert);
                verify_certificate(&w.ring.public_set(), &signed, NOW).map(drop)
            },
            Code("license_certificate_invalid"),
        ),
        (
            "a region token living longer than its certificate allows is refused",
            |w| {
                let region = region(&w.ring);
                let mut claims = region_claims();
                claims.exp = claims.iat.plus_seconds(2 * DAY);
                let token = region_signed(&region.key, &claims, &region.cert.kid, &region.signed);
                verify(&w.ring, &token)
            },
            Is(LicenseError::TtlOverCertificateMax {
                ttl_seconds: 2 * DAY,
                max_seconds: DAY,
            }),
        ),
        (
            "a region token outliving its certificate is refused",
            |w| {
                let key = region_key(7);
                let mut cert = region_certificate(&key, REGION, 9);
                cert.not_after = NOW.plus_seconds(HOUR / 2);
                let signed = certify(&w.ring, &cert).unwrap();
                let token = region_signed(&key, &region_claims(), &cert.kid, &signed);
                verify(&w.ring, &token)
            },
            Is(LicenseError::OutsideCertificateValidity { serial: serial(9) }),
        ),
        (
            "a region token claiming to be the origin's is an issuer mismatch",
            |w| {
                let region = region(&w.ring);
                let claims = claims(ISSUER_ORIGIN);
                let token = region_signed(&region.key, &claims, &region.cert.kid, &region.signed);
                verify(&w.ring, &token)
            },
            Is(LicenseError::IssuerMismatch {
                iss: ISSUER_ORIGIN.into(),
                expected: region_issuer(REGION),
            }),
        ),
        (
            "a region token claiming another region is an issuer mismatch",
            |w| {
                let region = region(&w.ring);
                let claims = claims(&region_issuer("us-east"));
                let token = region_signed(&region.key, &claims, &region.cert.kid, &region.signed);
                verify(&w.ring, &token)
            },
            Code("license_issuer_mismatch"),
        ),
        (
            "an origin token claiming a region is an issuer mismatch",
            |w| {
                verify(
                    &w.ring,
                    &origin_signed(&w.ring, &claims_json(&region_claims())),
                )
            },
            Code("license_issuer_mismatch"),
        ),
    ]);
}

#[test]
fn bad_claims() {
    check(&[
        (
            "claims with a non-canonical time are invalid",
            |w| {
                let message = String::from_utf8(claims_json(&claims(ISSUER_ORIGIN)))
                    .unwrap()
                    .replace("\"2026-11-27T23:21:02Z\"", "\"2026-11-27T23:21:02+00:00\"");
                verify(&w.ring, &origin_signed(&w.ring, message.as_bytes()))
            },
            Code("license_claims_invalid"),
        ),
        (
            "claims with a unix time are invalid",
            |w| {
                let message = claims_value_with(|json| json["exp"] = json!(NOW.0 + 3600));
                verify(&w.ring, &origin_signed(&w.ring, &message))
            },
            Code("license_claims_invalid"),
        ),
        (
            "claims with too many entitlements are refused by the issuer",
            |w| {
                Issuer::origin(&w.ring)
                    .issue(&too_many_entitlements(), None)
                    .map(drop)
            },
            Code("license_claims_invalid"),
        ),
        (
            "claims with too many entitlements are refused by the verifier",
            |w| {
                let token = origin_signed(&w.ring, &claims_json(&too_many_entitlements()));
                verify(&w.ring, &token)
            },
            Code("license_claims_invalid"),
        ),
        (
            "claims with an unknown field are invalid",
            |w| {
                let message = claims_value_with(|json| json["admin"] = json!(true));
                verify(&w.ring, &origin_signed(&w.ring, &message))
            },
            Code("license_claims_invalid"),
        ),
        (
            "claims whose sub disagrees with the account are invalid",
            |w| {
                let mut claims = claims(ISSUER_ORIGIN);
                claims.sub = "globex".into();
                verify(&w.ring, &origin_signed(&w.ring, &claims_json(&claims)))
            },
            Code("license_claims_invalid"),
        ),
        (
            "claims that are not json are invalid",
            |w| verify(&w.ring, &origin_signed(&w.ring, b"\xff not json")),
            Code("license_claims_invalid"),
        ),
    ]);
}

#[test]
fn time_audience_and_revocation() {
    check(&[
        (
            "an expired token is refused",
            |w| {
                let exp = NOW.plus_seconds(HOUR);
                let now = exp.plus_seconds(DEFAULT_LEEWAY_SECONDS);
                verifier(&w.ring)
                    .verify(&origin_token(&w.ring), now, None, &())
                    .map(drop)
            },
            Is(LicenseError::Expired {
                exp: NOW.plus_seconds(HOUR),
            }),
        ),
        (
            "a not yet valid token is refused",
            |w| {
                let mut claims = claims(ISSUER_ORIGIN);
                claims.nbf = NOW.plus_seconds(HOUR / 2);
                let token = Issuer::origin(&w.ring).issue(&claims, None).unwrap();
                verify(&w.ring, &token)
            },
            Is(LicenseError::NotYetValid {
                nbf: NOW.plus_seconds(HOUR / 2),
            }),
        ),
        (
            "a token for another audience is refused",
            |w| {
                Verifier::new(&w.ring.public_set(), "other-product")
                    .unwrap()
                    .verify(&origin_token(&w.ring), NOW, None, &())
                    .map(drop)
            },
            Is(LicenseError::WrongAudience),
        ),
        (
            "a revoked token is refused",
            |w| {
                let mut revoked = RevocationList::new();
                revoked.insert_license(claims(ISSUER_ORIGIN).jti.as_str());
                verifier(&w.ring)
                    .verify(&origin_token(&w.ring), NOW, None, &revoked)
                    .map(drop)
            },
            Is(LicenseError::LicenseRevoked {
                jti: claims(ISSUER_ORIGIN).jti,
            }),
        ),
    ]);
}

#[test]
fn devices() {
    check(&[
        (
            "a device-bound token without a fingerprint is refused",
            |w| verify(&w.ring, &device_token(&w.ring)),
            Is(LicenseError::DeviceFingerprintRequired),
        ),
        (
            "a device-bound token on another device is a bad signature",
            |w| {
                verifier(&w.ring)
                    .verify(&device_token(&w.ring), NOW, Some(b"another-device"), &())
                    .map(drop)
            },
            Is(LicenseError::BadSignature),
        ),
        (
            "a device-bound token relabelled as unbound is a bad signature without a fingerprint",
            |w| verify(&w.ring, &relabelled_unbound(&w.ring)),
            Is(LicenseError::BadSignature),
        ),
        (
            "a device-bound token relabelled as unbound is a bad signature on its device",
            |w| {
                verifier(&w.ring)
                    .verify(&relabelled_unbound(&w.ring), NOW, Some(DEVICE), &())
                    .map(drop)
            },
            Is(LicenseError::BadSignature),
        ),
        (
            "an empty device fingerprint is refused",
            |w| {
                verifier(&w.ring)
                    .verify(&device_token(&w.ring), NOW, Some(b""), &())
                    .map(drop)
            },
            Is(LicenseError::DeviceFingerprintInvalid { len: 0 }),
        ),
    ]);
}

#[test]
fn issuing() {
    check(&[
        (
            "the issuer refuses a fingerprint for an unbound token",
            |w| {
                Issuer::origin(&w.ring)
                    .issue(&claims(ISSUER_ORIGIN), Some(DEVICE))
                    .map(drop)
            },
            Is(LicenseError::DeviceBindingInconsistent {
                device_bound: false,
            }),
        ),
        (
            "the issuer refuses a bound token without a fingerprint",
            |w| {
                Issuer::origin(&w.ring)
                    .issue(&device_claims(ISSUER_ORIGIN), None)
                    .map(drop)
            },
            Is(LicenseError::DeviceBindingInconsistent { device_bound: true }),
        ),
        (
            "the origin issuer refuses a region iss",
            |w| {
                Issuer::origin(&w.ring)
                    .issue(&region_claims(), None)
                    .map(drop)
            },
            Code("license_issuer_mismatch"),
        ),
        (
            "a region issuer refuses the origin's iss",
            |w| {
                region(&w.ring)
                    .issuer()
                    .issue(&claims(ISSUER_ORIGIN), None)
                    .map(drop)
            },
            Code("license_issuer_mismatch"),
        ),
        (
            "a region issuer refuses another region's iss",
            |w| {
                region(&w.ring)
                    .issuer()
                    .issue(&claims(&region_issuer("us-east")), None)
                    .map(drop)
            },
            Code("license_issuer_mismatch"),
        ),
        (
            "a region issuer refuses a ttl over its certificate max",
            |w| {
                let mut claims = region_claims();
                claims.exp = claims.iat.plus_seconds(DAY + 1);
                region(&w.ring).issuer().issue(&claims, None).map(drop)
            },
            Is(LicenseError::TtlOverCertificateMax {
                ttl_seconds: DAY + 1,
                max_seconds: DAY,
            }),
        ),
        (
            "a region issuer refuses a token outside its certificate window",
            |w| {
                let region = region(&w.ring);
                let mut claims = region_claims();
                claims.iat = region.cert.not_after;
                claims.nbf = claims.iat;
                claims.exp = claims.iat.plus_seconds(HOUR);
                region.issuer().issue(&claims, None).map(drop)
            },
            Code("license_outside_certificate_validity"),
        ),
        (
            "a region issuer refuses a certificate for another key",
            |w| Issuer::region(region_key(8), region(&w.ring).signed).map(drop),
            Is(LicenseError::IssuerKeyMismatch),
        ),
        (
            "a region issuer refuses a certificate not for licenses",
            |w| {
                let key = region_key(7);
                let mut cert = region_certificate(&key, REGION, 4);
                cert.may_sign = vec!["usage-report".into()];
                Issuer::region(key, certify(&w.ring, &cert).unwrap()).map(drop)
            },
            Code("license_certificate_not_for_licenses"),
        ),
        (
            "the issuer refuses claims with nbf after exp",
            |w| {
                let mut claims = claims(ISSUER_ORIGIN);
                claims.nbf = claims.exp;
                Issuer::origin(&w.ring).issue(&claims, None).map(drop)
            },
            Code("license_claims_invalid"),
        ),
        (
            "certify refuses an empty window",
            |w| {
                let mut cert = region_certificate(&region_key(7), REGION, 1);
                cert.not_after = cert.not_before;
                certify(&w.ring, &cert).map(drop)
            },
            Code("license_certificate_invalid"),
        ),
        (
            "certify refuses a bad region name",
            |w| {
                let cert = region_certificate(&region_key(7), "EU:West/1", 1);
                certify(&w.ring, &cert).map(drop)
            },
            Code("license_certificate_invalid"),
        ),
    ]);
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
