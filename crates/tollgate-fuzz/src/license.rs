//! License tokens and region certificates (`tollgate-license`; the SDK's
//! `OfflineVerifier` and the region and origin license services verify
//! through the same `Verifier`).

use crate::fixtures::{
    mutate, origin_keys, origin_ring, origin_secret, region_certificate as fixture_certificate,
    region_secret, AUDIENCE, NOW,
};
use crate::input::Input;
use tollgate_license::{
    verify_certificate, LicenseError, LicenseSigner, RegionCertificate, RevocationList, Verifier,
    DEVICE_IMPLICIT_PREFIX, ISSUER_ORIGIN,
};
use tollgate_model::UnixSeconds;
use tollgate_signing::{KeyId, Signed, CONTEXT_REGION_CERTIFICATE};

/// Fuzzed claims (the message), signed with the origin key (mode 0) or the
/// certified region key (mode 1) under a correct footer, optionally bound
/// to a device, then altered (or not) and verified at a fuzzed time near
/// [`NOW`]; mode 2 verifies any text. Properties: an altered token is never
/// accepted; an accepted one has valid claims, the right audience, issuer
/// and signer, is inside its validity window, is refused once its `jti`
/// (or its certificate) is revoked, and when bound to a device is refused
/// without the fingerprint.
pub fn license_token(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8() % 3;
    let op = input.u8();
    let position = input.u16();
    let byte = input.u8();
    let now = UnixSeconds(NOW.0 + i64::from(input.i32()));
    let device = input.field();
    let message = input.field();
    let verifier = verifier();
    let fingerprint = (!device.is_empty()).then_some(device);

    let (token, region) = match mode {
        0 => {
            let footer = serde_json::json!({ "kid": origin_ring().active_kid() });
            (sign(origin_secret(), message, &footer, fingerprint), false)
        }
        1 => {
            let (cert, signed) = fixture_certificate();
            let footer = serde_json::json!({ "kid": cert.kid, "cert": signed });
            (sign(&region_secret(), message, &footer, fingerprint), true)
        }
        _ => {
            let text = String::from_utf8_lossy(input.rest()).into_owned();
            let result = verifier.verify(&text, now, fingerprint, &());
            if let Err(error) = &result {
                assert!(!error.code().is_empty());
            }
            // Text accepted here is a token the fixed keys signed: the
            // structured modes hold it to every property.
            return;
        }
    };
    let Some(token) = token else { return };

    let altered = mutate(token.as_bytes(), op, position, byte);
    let altered = String::from_utf8_lossy(&altered).into_owned();
    let result = verifier.verify(&altered, now, fingerprint, &());
    let Ok(license) = result else { return };
    assert_eq!(altered, token, "an altered license token was accepted");

    let claims = license.claims();
    claims.validate().expect("accepted claims are valid");
    assert_eq!(claims.aud, AUDIENCE);
    let leeway = verifier.leeway_seconds();
    assert!(
        now.plus_seconds(leeway) >= claims.nbf,
        "accepted before nbf"
    );
    assert!(now < claims.exp.plus_seconds(leeway), "accepted after exp");
    match (license.signer(), region) {
        (LicenseSigner::Origin { .. }, false) => assert_eq!(claims.iss, ISSUER_ORIGIN),
        (LicenseSigner::Region { region, serial, .. }, true) => {
            assert_eq!(claims.iss, format!("tollgate-region:{region}"));
            let mut revoked = RevocationList::new();
            revoked.insert_certificate(serial.clone());
            assert!(matches!(
                verifier.verify(&token, now, fingerprint, &revoked),
                Err(LicenseError::CertificateRevoked { .. })
            ));
        }
        (signer, _) => panic!("accepted with the wrong signer {signer:?}"),
    }
    assert_eq!(claims.device_bound, fingerprint.is_some());
    if claims.device_bound {
        assert!(verifier.verify(&token, now, None, &()).is_err());
    }
    let mut revoked = RevocationList::new();
    revoked.insert_license(claims.jti.as_str().to_owned());
    assert!(matches!(
        verifier.verify(&token, now, fingerprint, &revoked),
        Err(LicenseError::LicenseRevoked { .. })
    ));
}

fn verifier() -> &'static Verifier {
    static VERIFIER: std::sync::OnceLock<Verifier> = std::sync::OnceLock::new();
    VERIFIER.get_or_init(|| Verifier::new(origin_keys(), AUDIENCE).expect("fixture verifier"))
}

/// Signs `message` as a token with `footer`; `None` when it is too long.
fn sign(
    secret: &ed25519_dalek::SigningKey,
    message: &[u8],
    footer: &serde_json::Value,
    fingerprint: Option<&[u8]>,
) -> Option<String> {
    let footer = serde_json::to_vec(footer).expect("a footer serialises");
    let implicit = match fingerprint {
        Some(fp) => [DEVICE_IMPLICIT_PREFIX, fp].concat(),
        None => Vec::new(),
    };
    tollgate_token::sign(secret, message, &footer, &implicit).ok()
}

/// Mode 0: a fuzzed certificate payload signed by the origin, altered (or
/// not) in its payload, signature or key id, verified at a fuzzed time;
/// mode 1: any JSON as a signed certificate. An altered certificate is
/// never accepted; an accepted one checks, is inside its window, and its
/// payload round-trips to the same certificate.
pub fn region_certificate(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.u8() % 2;
    let now = UnixSeconds(NOW.0 + i64::from(input.i32()));
    if mode == 1 {
        if let Ok(signed) = serde_json::from_slice::<Signed>(input.rest()) {
            let _ = verify_certificate(origin_keys(), &signed, now);
        }
        return;
    }
    let part = input.u8() % 3;
    let op = input.u8();
    let position = input.u16();
    let byte = input.u8();
    let payload = input.field();
    let original = origin_ring().sign(CONTEXT_REGION_CERTIFICATE, payload.to_vec());
    let mut signed = original.clone();
    match part {
        0 => signed.payload = mutate(&signed.payload, op, position, byte),
        1 => signed.signature = mutate(&signed.signature, op, position, byte),
        _ => {
            signed.kid = String::from_utf8_lossy(&mutate(signed.kid.as_bytes(), op, position, byte))
                .into_owned()
        }
    }
    let Ok((cert, key)) = verify_certificate(origin_keys(), &signed, now) else {
        return;
    };
    assert_eq!(signed, original, "an altered certificate was accepted");
    assert_eq!(cert.check().expect("an accepted certificate checks"), key);
    assert_eq!(cert.kid, KeyId::of(&key));
    assert!(cert.not_before <= now && now < cert.not_after);
    let encoded = serde_json::to_vec(&cert).expect("a certificate serialises");
    let again: RegionCertificate = serde_json::from_slice(&encoded).expect("and parses back");
    assert_eq!(again, cert);
}
