//! Fixtures shared by the integration tests: an origin ring, a catalog, an
//! account's entitlements, claims, and a certified region.
//!
//! Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use ed25519_dalek::SigningKey;
use serde_json::json;
use tollgate_license::*;
use tollgate_model::{AccountId, Catalog, Entitlement, SubjectId, UnixSeconds};
use tollgate_signing::{KeyRing, Signed};

/// 2026-11-27T23:21:02Z.
pub const NOW: UnixSeconds = UnixSeconds(1_795_821_662);
pub const HOUR: u64 = 3600;
pub const DAY: u64 = 86_400;
pub const AUDIENCE: &str = "studio";
pub const REGION: &str = "eu-west";
pub const DEVICE: &[u8] = b"device-fingerprint-0123456789abcdef";

pub fn at(offset_seconds: i64) -> UnixSeconds {
    UnixSeconds(NOW.0 + offset_seconds)
}

pub fn ring() -> KeyRing {
    KeyRing::generate(NOW).expect("the OS random source works in tests")
}

pub fn verifier(ring: &KeyRing) -> Verifier {
    Verifier::new(&ring.public_set(), AUDIENCE).expect("a generated ring is a valid key set")
}

pub fn catalog() -> Catalog {
    serde_json::from_value(json!({
        "products": {"studio": {"id": "studio", "name": "Studio"}},
        "features": {
            "export": {"id": "export", "product": "studio", "name": "Export",
                       "kind": {"metered": {"unit": "exports", "period": "month"}}},
            "render-4k": {"id": "render-4k", "product": "studio", "name": "4K render",
                          "kind": "boolean",
                          "geo_rule": {"deny_countries": ["KP"]},
                          "offline_policy": {"offline_grace_seconds": 3600, "after_grace": "deny"}},
            "collab": {"id": "collab", "product": "studio", "name": "Collaboration", "kind": "boolean"},
            "ai-assist": {"id": "ai-assist", "product": "studio", "name": "AI assist",
                          "kind": {"metered": {"unit": "prompts", "period": "day"}}},
            "plugins": {"id": "plugins", "product": "studio", "name": "Plugins", "kind": "boolean"},
            "cloud-sync": {"id": "cloud-sync", "product": "studio", "name": "Cloud sync", "kind": "boolean"}
        },
        "plans": {"pro": {"id": "pro", "product": "studio", "name": "Pro", "tier": 2,
            "features": [
                {"feature": "export", "usage_cap": {"limit": 1000}},
                {"feature": "render-4k"},
                {"feature": "collab"}
            ],
            "geo_rule": {"allow_continents": ["EU", "NA"]},
            "offline_policy": {"offline_grace_seconds": 172800, "after_grace": "allow"}}},
        "addons": {"ai": {"id": "ai", "product": "studio", "name": "AI pack",
            "features": [{"feature": "ai-assist", "usage_cap": {"limit": 50, "enforcement": "soft"}}]}}
    }))
    .expect("the fixture catalog parses")
}

/// Five entitlements of `acme`: a plan (with a cap override and seats), an
/// add-on (trial), a direct feature, one expired a day ago with two days of
/// grace, and a suspended one.
pub fn entitlements() -> Vec<Entitlement> {
    let now = NOW.0;
    serde_json::from_value(json!([
        {"id": "ent-pro", "account": "acme", "grant": {"plan": "pro"},
         "valid_from": now - 30 * 86_400, "valid_until": now + 335 * 86_400,
         "grace_period_seconds": 7 * 86_400,
         "seats": {"count": 25, "mode": {"floating": {"lease_ttl_seconds": 900}}},
         "usage_cap_overrides": {"export": {"limit": 5000, "enforcement": "soft"}},
         "revision": 41},
        {"id": "ent-ai", "account": "acme", "grant": {"addon": "ai"},
         "valid_from": now - 86_400, "valid_until": now + 13 * 86_400, "trial": true,
         "geo_rule": {"deny_countries": ["RU"]}, "revision": 42},
        {"id": "ent-plugins", "account": "acme",
         "grant": {"feature": {"feature": "plugins", "config": {"max": "10"}}},
         "valid_from": now - 86_400, "revision": 43},
        {"id": "ent-sync", "account": "acme", "grant": {"feature": {"feature": "cloud-sync"}},
         "valid_from": now - 30 * 86_400, "valid_until": now - 86_400,
         "grace_period_seconds": 2 * 86_400, "revision": 44},
        {"id": "ent-old", "account": "acme", "grant": {"feature": {"feature": "collab"}},
         "valid_from": now - 30 * 86_400, "status": "suspended", "revision": 45}
    ]))
    .expect("the fixture entitlements parse")
}

pub fn resolved() -> Vec<LicenseEntitlement> {
    let catalog = catalog();
    entitlements()
        .iter()
        .map(|e| {
            LicenseEntitlement::resolve(e, &catalog, catalog.default_offline_policy)
                .expect("every fixture grant is in the catalog")
        })
        .collect()
}

/// Claims for `acme`, issued by `iss`, valid for an hour from NOW, with the
/// five fixture entitlements.
pub fn claims(iss: &str) -> LicenseClaims {
    let account = AccountId::new("acme").unwrap();
    LicenseClaims {
        iss: iss.to_owned(),
        sub: LicenseClaims::subject_of(&account, None),
        aud: AUDIENCE.to_owned(),
        iat: NOW,
        nbf: NOW,
        exp: NOW.plus_seconds(HOUR),
        jti: RandomId::from_bytes([0x11; 16]),
        account,
        subject: None,
        revision: 45,
        device_bound: false,
        entitlements: resolved(),
    }
}

/// Claims for one subject, bound to a device.
pub fn device_claims(iss: &str) -> LicenseClaims {
    let mut claims = claims(iss);
    let subject = SubjectId::new("laptop-7").unwrap();
    claims.sub = LicenseClaims::subject_of(&claims.account, Some(&subject));
    claims.subject = Some(subject);
    claims.device_bound = true;
    claims
}

pub fn origin_token(ring: &KeyRing) -> String {
    Issuer::origin(ring)
        .issue(&claims(ISSUER_ORIGIN), None)
        .expect("fixture claims issue")
}

/// A region: its key, its certificate as the origin signed it, and the
/// certificate itself.
pub struct Region {
    pub key: SigningKey,
    pub cert: RegionCertificate,
    pub signed: Signed,
}

pub fn region_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A certificate for `key` in region `name`, valid from a day ago for 30
/// days, tokens up to a day.
pub fn region_certificate(key: &SigningKey, name: &str, serial: u8) -> RegionCertificate {
    RegionCertificate::new(
        RandomId::from_bytes([serial; 16]),
        name,
        &key.verifying_key(),
        at(-(DAY as i64)),
        NOW.plus_seconds(30 * DAY),
        DAY,
    )
}

pub fn region(ring: &KeyRing) -> Region {
    let key = region_key(7);
    let cert = region_certificate(&key, REGION, 0xce);
    let signed = certify(ring, &cert).expect("the fixture certificate is valid");
    Region { key, cert, signed }
}

impl Region {
    pub fn issuer(&self) -> Issuer {
        Issuer::region(self.key.clone(), self.signed.clone()).expect("fixture region issuer")
    }

    pub fn token(&self) -> String {
        self.issuer()
            .issue(&claims(&region_issuer(REGION)), None)
            .expect("fixture region claims issue")
    }
}

/// Signs anything, bypassing [`Issuer`]'s checks: how an attacker holding a
/// key (or a buggy issuer) would make a token.
pub fn sign_raw(key: &SigningKey, message: &[u8], footer: &serde_json::Value) -> String {
    let footer = serde_json::to_vec(footer).unwrap();
    tollgate_token::sign(key, message, &footer, b"").expect("fits the token size limit")
}

pub fn claims_json(claims: &LicenseClaims) -> Vec<u8> {
    serde_json::to_vec(claims).unwrap()
}

/// The parts of a `v4.public` token: message, signature, footer (decoded).
pub struct Parts {
    pub message: Vec<u8>,
    pub signature: Vec<u8>,
    pub footer: Vec<u8>,
}

pub fn split(token: &str) -> Parts {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine as _;
    let body = token.strip_prefix("v4.public.").unwrap();
    let (payload, footer) = body.split_once('.').unwrap_or((body, ""));
    let mut payload = B64.decode(payload).unwrap();
    let signature = payload.split_off(payload.len() - 64);
    Parts {
        message: payload,
        signature,
        footer: B64.decode(footer).unwrap(),
    }
}

impl Parts {
    /// Re-encodes the parts canonically (no new signature).
    pub fn join(&self) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        use base64::Engine as _;
        let mut payload = self.message.clone();
        payload.extend_from_slice(&self.signature);
        let mut token = format!("v4.public.{}", B64.encode(payload));
        if !self.footer.is_empty() {
            token.push('.');
            token.push_str(&B64.encode(&self.footer));
        }
        token
    }
}
