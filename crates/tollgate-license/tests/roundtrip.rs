//! Tokens that must verify: origin- and region-signed, device-bound, in
//! batches; and what a verified license says.

mod common;

use common::*;
use tollgate_license::*;
use tollgate_model::{AfterGrace, FeatureId, OfflinePolicy, UsageCap};

fn feature(id: &str) -> FeatureId {
    FeatureId::new(id).unwrap()
}

#[test]
fn origin_signed_token_round_trips() {
    let ring = ring();
    let token = origin_token(&ring);
    let license = verifier(&ring).verify(&token, NOW, None, &()).unwrap();
    assert_eq!(license.claims(), &claims(ISSUER_ORIGIN));
    assert_eq!(license.kid(), ring.active_kid());
    assert_eq!(
        license.signer(),
        &LicenseSigner::Origin {
            kid: ring.active_kid().clone()
        }
    );
}

#[test]
fn region_signed_token_round_trips() {
    let ring = ring();
    let region = region(&ring);
    let token = region.token();
    let license = verifier(&ring).verify(&token, NOW, None, &()).unwrap();
    assert_eq!(license.claims(), &claims(&region_issuer(REGION)));
    assert_eq!(license.kid(), &region.cert.kid);
    assert_eq!(
        license.signer(),
        &LicenseSigner::Region {
            region: REGION.into(),
            serial: region.cert.serial.clone(),
            kid: region.cert.kid.clone(),
            certified_by: ring.active_kid().clone(),
        }
    );
}

#[test]
fn a_cached_certificate_is_still_checked_for_time_and_revocation() {
    let ring = ring();
    let region = region(&ring);
    let token = region.token();
    let verifier = verifier(&ring);
    for _ in 0..3 {
        verifier.verify(&token, NOW, None, &()).unwrap();
    }
    let mut revoked = RevocationList::new();
    revoked.insert_certificate(region.cert.serial.as_str());
    assert!(matches!(
        verifier.verify(&token, NOW, None, &revoked),
        Err(LicenseError::CertificateRevoked { .. })
    ));
    let after = region
        .cert
        .not_after
        .plus_seconds(verifier.leeway_seconds());
    assert!(matches!(
        verifier.verify(&token, after, None, &()),
        Err(LicenseError::CertificateExpired { .. })
    ));
}

#[test]
fn device_bound_token_verifies_with_its_device() {
    let ring = ring();
    let token = Issuer::origin(&ring)
        .issue(&device_claims(ISSUER_ORIGIN), Some(DEVICE))
        .unwrap();
    let license = verifier(&ring)
        .verify(&token, NOW, Some(DEVICE), &())
        .unwrap();
    assert!(license.claims().device_bound);
    assert_eq!(license.claims().sub, "acme/laptop-7");
}

#[test]
fn device_bound_region_token_verifies_with_its_device() {
    let ring = ring();
    let region = region(&ring);
    let token = region
        .issuer()
        .issue(&device_claims(&region_issuer(REGION)), Some(DEVICE))
        .unwrap();
    verifier(&ring)
        .verify(&token, NOW, Some(DEVICE), &())
        .unwrap();
}

#[test]
fn unbound_token_verifies_on_a_device_that_gives_its_fingerprint() {
    let ring = ring();
    let token = origin_token(&ring);
    let license = verifier(&ring)
        .verify(&token, NOW, Some(DEVICE), &())
        .unwrap();
    assert!(!license.claims().device_bound);
}

#[test]
fn an_overlapping_key_still_verifies_after_rotation() {
    let mut ring = ring();
    let token = origin_token(&ring);
    ring.rotate(NOW, HOUR).unwrap();
    verifier(&ring).verify(&token, at(60), None, &()).unwrap();
}

#[test]
fn leeway_tolerates_clock_skew_on_both_ends() {
    let ring = ring();
    let token = origin_token(&ring);
    let verifier = verifier(&ring);
    verifier.verify(&token, at(-59), None, &()).unwrap();
    verifier
        .verify(&token, NOW.plus_seconds(HOUR + 59), None, &())
        .unwrap();
    let strict = common::verifier(&ring).with_leeway(0);
    assert!(strict.verify(&token, at(-1), None, &()).is_err());
    assert!(strict
        .verify(&token, NOW.plus_seconds(HOUR), None, &())
        .is_err());
}

#[test]
fn batch_verifies_each_token_in_order() {
    let ring = ring();
    let region = region(&ring);
    let good_origin = origin_token(&ring);
    let good_region = region.token();
    let other = origin_token(&common::ring());
    let mut tokens: Vec<&str> = vec![&good_origin, &good_region, "v4.local.xyz", &other];
    for _ in 0..60 {
        tokens.push(&good_region);
    }
    let results = verifier(&ring).verify_batch(&tokens, NOW, None, &());
    assert_eq!(results.len(), 64);
    assert!(results[0].is_ok());
    assert!(results[1].is_ok());
    assert!(matches!(results[2], Err(LicenseError::Token(_))));
    assert!(matches!(results[3], Err(LicenseError::UnknownKeyId(_))));
    assert!(results[4..].iter().all(Result::is_ok));
}

#[test]
fn verify_certificate_returns_the_certificate_and_its_key() {
    let ring = ring();
    let region = region(&ring);
    let (cert, key) = verify_certificate(&ring.public_set(), &region.signed, NOW).unwrap();
    assert_eq!(cert, region.cert);
    assert_eq!(key, region.key.verifying_key());
}

#[test]
fn claims_carry_rfc3339_times_and_resolved_entitlements() {
    let ring = ring();
    let parts = split(&origin_token(&ring));
    let json: serde_json::Value = serde_json::from_slice(&parts.message).unwrap();
    assert_eq!(json["iat"], "2026-11-27T23:21:02Z");
    assert_eq!(json["nbf"], "2026-11-27T23:21:02Z");
    assert_eq!(json["exp"], "2026-11-28T00:21:02Z");
    assert_eq!(json["jti"], "11".repeat(16));
    assert_eq!(json["sub"], "acme");
    assert_eq!(json["entitlements"].as_array().unwrap().len(), 5);
    let footer: serde_json::Value = serde_json::from_slice(&parts.footer).unwrap();
    assert_eq!(
        footer,
        serde_json::json!({"kid": ring.active_kid().as_str()})
    );
}

#[test]
fn resolve_applies_overrides_rules_and_offline_policies() {
    let resolved = resolved();
    let pro = &resolved[0];
    assert_eq!(pro.features.len(), 3);
    let export = pro.feature(&feature("export")).unwrap();
    assert_eq!(
        export.usage_cap.map(|c: UsageCap| c.limit),
        Some(5000),
        "the entitlement's override beats the plan's cap"
    );
    // The plan's geo rule travels with the entitlement; the entitlement's own
    // is unrestricted and left out.
    assert_eq!(pro.geo_rules.len(), 1);
    let plan_offline = OfflinePolicy {
        offline_grace_seconds: 2 * DAY,
        after_grace: AfterGrace::Allow,
    };
    assert_eq!(pro.offline_policy, plan_offline);
    let render = pro.feature(&feature("render-4k")).unwrap();
    assert!(render.geo_rule.is_some());
    assert_eq!(
        pro.offline_policy_for(&feature("render-4k")),
        Some(OfflinePolicy {
            offline_grace_seconds: HOUR,
            after_grace: AfterGrace::Deny,
        }),
        "the feature's stricter policy wins for that feature"
    );
    assert_eq!(
        pro.offline_policy_for(&feature("collab")),
        Some(plan_offline)
    );
    assert_eq!(
        pro.seats,
        Some(LicenseSeats {
            count: 25,
            mode: LicenseSeatMode::Floating {
                lease_ttl_seconds: 900
            }
        })
    );

    let ai = &resolved[1];
    assert!(ai.trial);
    assert_eq!(ai.features[0].usage_cap.map(|c| c.limit), Some(50));
    assert_eq!(
        ai.offline_policy,
        OfflinePolicy::default(),
        "catalog default"
    );
    assert_eq!(ai.geo_rules.len(), 1, "the entitlement's own deny-list");

    let plugins = &resolved[2];
    assert_eq!(plugins.grant, LicenseGrant::Feature(feature("plugins")));
    assert_eq!(
        plugins.features[0].config.get("max").map(String::as_str),
        Some("10"),
        "the grant's configuration travels with the feature"
    );

    let mut unknown = entitlements()[0].clone();
    unknown.grant = tollgate_model::Grant::Plan("enterprise".parse().unwrap());
    assert_eq!(
        LicenseEntitlement::resolve(&unknown, &catalog(), OfflinePolicy::default()),
        None
    );
}

#[test]
fn allows_checks_status_time_and_feature() {
    let ring = ring();
    let license = verifier(&ring)
        .verify(&origin_token(&ring), NOW, None, &())
        .unwrap();
    let allowed = |f: &str, now| license.allows(&feature(f), now).map(|e| e.id.as_str());
    assert_eq!(allowed("export", NOW), Some("ent-pro"));
    assert_eq!(allowed("ai-assist", NOW), Some("ent-ai"));
    assert_eq!(allowed("plugins", NOW), Some("ent-plugins"));
    assert_eq!(allowed("cloud-sync", NOW), Some("ent-sync"), "in its grace");
    assert_eq!(allowed("nonexistent", NOW), None);
    // collab: the plan grants it; the suspended direct grant does not count.
    assert_eq!(allowed("collab", NOW), Some("ent-pro"));
    assert_eq!(allowed("export", at(-1)), None, "before the license's nbf");
    assert_eq!(
        allowed("export", NOW.plus_seconds(HOUR)),
        None,
        "from the license's exp"
    );
    // Grace of ent-sync ends a day from now, after the license; check the
    // entitlement directly.
    let sync = &license.claims().entitlements[3];
    assert!(sync.is_active_at(NOW.plus_seconds(DAY - 1)));
    assert!(!sync.is_active_at(NOW.plus_seconds(DAY)));
    let suspended = &license.claims().entitlements[4];
    assert!(!suspended.is_active_at(NOW));
}

#[test]
fn verifier_and_license_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Verifier>();
    assert_send_sync::<License>();
    assert_send_sync::<Issuer>();
    assert_send_sync::<LicenseError>();
}
