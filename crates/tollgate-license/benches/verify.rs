//! License verification against the raw signature check it is built on.
//!
//! Run with `cargo bench -p tollgate-license --bench verify`.
//!
//! - `ed25519_dalek_verify_strict`: `verify_strict` alone, over the PASETO
//!   pre-authentication encoding of one realistic token (five entitlements)
//!   and its signature: the floor.
//! - `license_verify_origin`: `Verifier::verify` of that token (format,
//!   footer, key, signature, claims, time, audience, revocation).
//! - `license_verify_region`: the same claims signed by a certified region
//!   key; `cached` is the steady state (certificate already verified by this
//!   verifier), `cold_certificate` a fresh verifier each time (certificate
//!   signature and region key decompression included).
//! - `license_verify_batch_64`: 64 distinct tokens (half origin, half
//!   region) through `verify_batch`; reported per token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use serde_json::json;
use std::hint::black_box;
use tollgate_license::*;
use tollgate_model::{AccountId, Catalog, Entitlement, UnixSeconds};
use tollgate_signing::KeyRing;

const NOW: UnixSeconds = UnixSeconds(1_795_821_662);
const AUDIENCE: &str = "studio";

fn catalog() -> Catalog {
    serde_json::from_value(json!({
        "products": {"studio": {"id": "studio", "name": "Studio"}},
        "features": {
            "export": {"id": "export", "product": "studio", "name": "Export",
                       "kind": {"metered": {"unit": "exports", "period": "month"}}},
            "render-4k": {"id": "render-4k", "product": "studio", "name": "4K", "kind": "boolean",
                          "geo_rule": {"deny_countries": ["KP"]}},
            "collab": {"id": "collab", "product": "studio", "name": "Collab", "kind": "boolean"},
            "ai-assist": {"id": "ai-assist", "product": "studio", "name": "AI", "kind": "boolean"},
            "plugins": {"id": "plugins", "product": "studio", "name": "Plugins", "kind": "boolean"},
            "cloud-sync": {"id": "cloud-sync", "product": "studio", "name": "Sync", "kind": "boolean"}
        },
        "plans": {"pro": {"id": "pro", "product": "studio", "name": "Pro", "tier": 2,
            "features": [{"feature": "export", "usage_cap": {"limit": 1000}},
                         {"feature": "render-4k"}, {"feature": "collab"}],
            "offline_policy": {"offline_grace_seconds": 172800, "after_grace": "allow"}}},
        "addons": {"ai": {"id": "ai", "product": "studio", "name": "AI pack",
            "features": [{"feature": "ai-assist", "usage_cap": {"limit": 50}}]}}
    }))
    .expect("bench catalog parses")
}

fn entitlements() -> Vec<Entitlement> {
    let now = NOW.0;
    serde_json::from_value(json!([
        {"id": "ent-pro", "account": "acme", "grant": {"plan": "pro"},
         "valid_from": now - 2_592_000, "valid_until": now + 28_944_000,
         "grace_period_seconds": 604_800,
         "seats": {"count": 25, "mode": {"floating": {"lease_ttl_seconds": 900}}},
         "usage_cap_overrides": {"export": {"limit": 5000, "enforcement": "soft"}}},
        {"id": "ent-ai", "account": "acme", "grant": {"addon": "ai"},
         "valid_from": now - 86_400, "valid_until": now + 1_123_200, "trial": true},
        {"id": "ent-plugins", "account": "acme", "grant": {"feature": {"feature": "plugins"}},
         "valid_from": now - 86_400},
        {"id": "ent-sync", "account": "acme", "grant": {"feature": {"feature": "cloud-sync"}},
         "valid_from": now - 2_592_000, "valid_until": now + 86_400},
        {"id": "ent-collab", "account": "acme", "grant": {"feature": {"feature": "collab"}},
         "valid_from": now - 2_592_000, "status": "suspended"}
    ]))
    .expect("bench entitlements parse")
}

fn claims(iss: &str, jti: u8) -> LicenseClaims {
    let catalog = catalog();
    let account = AccountId::new("acme").expect("valid account id");
    LicenseClaims {
        iss: iss.to_owned(),
        sub: LicenseClaims::subject_of(&account, None),
        aud: AUDIENCE.to_owned(),
        iat: NOW,
        nbf: NOW,
        exp: NOW.plus_seconds(3600),
        jti: RandomId::from_bytes([jti; 16]),
        account,
        subject: None,
        revision: 45,
        device_bound: false,
        entitlements: entitlements()
            .iter()
            .filter_map(|e| {
                LicenseEntitlement::resolve(e, &catalog, catalog.default_offline_policy)
            })
            .collect(),
    }
}

/// PASETO PAE (Common.md): piece count, then each piece's LE64 length and
/// bytes. Computed here, independently of tollgate-token, so the baseline is
/// exactly the bytes `verify_strict` sees.
fn pae(pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pieces.len() as u64).to_le_bytes());
    for piece in pieces {
        out.extend_from_slice(&(piece.len() as u64).to_le_bytes());
        out.extend_from_slice(piece);
    }
    out
}

/// The signed bytes and signature of a `v4.public` token with an empty
/// implicit assertion.
fn pre_auth(token: &str) -> (Vec<u8>, Signature) {
    let body = token.strip_prefix("v4.public.").expect("v4.public token");
    let (payload, footer) = body.split_once('.').expect("token has a footer");
    let payload = B64.decode(payload).expect("canonical payload");
    let footer = B64.decode(footer).expect("canonical footer");
    let (message, signature) = payload.split_at(payload.len() - 64);
    let signature = Signature::from_slice(signature).expect("64-byte signature");
    (pae(&[b"v4.public.", message, &footer, b""]), signature)
}

fn verify(c: &mut Criterion) {
    let ring = KeyRing::generate(NOW).expect("OS randomness");
    let keys = ring.public_set();
    let origin = Issuer::origin(&ring);

    let region_key = SigningKey::from_bytes(&[7; 32]);
    let cert = RegionCertificate::new(
        RandomId::from_bytes([0xce; 16]),
        "eu-west",
        &region_key.verifying_key(),
        UnixSeconds(NOW.0 - 86_400),
        NOW.plus_seconds(30 * 86_400),
        86_400,
    );
    let signed = certify(&ring, &cert).expect("valid certificate");
    let region = Issuer::region(region_key, signed).expect("region issuer");

    let origin_token = origin
        .issue(&claims(ISSUER_ORIGIN, 1), None)
        .expect("issues");
    let region_token = region
        .issue(&claims(&region_issuer("eu-west"), 2), None)
        .expect("issues");
    let verifier = Verifier::new(&keys, AUDIENCE).expect("valid key set");
    verifier
        .verify(&origin_token, NOW, None, &())
        .expect("origin token verifies");
    verifier
        .verify(&region_token, NOW, None, &())
        .expect("region token verifies");
    println!(
        "origin token: {} bytes; region token: {} bytes",
        origin_token.len(),
        region_token.len()
    );

    let (m2, signature) = pre_auth(&origin_token);
    let (_, origin_secret) = ring.active_signing_key();
    let origin_public: VerifyingKey = origin_secret.verifying_key();
    origin_public
        .verify_strict(&m2, &signature)
        .expect("baseline verifies");
    let mut group = c.benchmark_group("ed25519_dalek_verify_strict");
    group.bench_function(format!("pae_{}_bytes", m2.len()), |b| {
        b.iter(|| black_box(&origin_public).verify_strict(black_box(&m2), black_box(&signature)))
    });
    group.finish();

    let mut group = c.benchmark_group("license_verify_origin");
    group.bench_function("verify", |b| {
        b.iter(|| verifier.verify(black_box(&origin_token), NOW, None, &()))
    });
    group.finish();

    let mut group = c.benchmark_group("license_verify_region");
    group.bench_function("cached", |b| {
        b.iter(|| verifier.verify(black_box(&region_token), NOW, None, &()))
    });
    group.bench_function("cold_certificate", |b| {
        b.iter_batched(
            || Verifier::new(&keys, AUDIENCE).expect("valid key set"),
            |fresh| fresh.verify(black_box(&region_token), NOW, None, &()),
            BatchSize::SmallInput,
        )
    });
    group.finish();

    let tokens: Vec<String> = (0..64u8)
        .map(|i| {
            if i % 2 == 0 {
                origin.issue(&claims(ISSUER_ORIGIN, i), None)
            } else {
                region.issue(&claims(&region_issuer("eu-west"), i), None)
            }
            .expect("issues")
        })
        .collect();
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    assert!(verifier
        .verify_batch(&tokens, NOW, None, &())
        .iter()
        .all(Result::is_ok));
    let mut group = c.benchmark_group("license_verify_batch_64");
    group.throughput(Throughput::Elements(tokens.len() as u64));
    group.bench_function("verify_batch", |b| {
        b.iter(|| verifier.verify_batch(black_box(&tokens), NOW, None, &()))
    });
    group.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
