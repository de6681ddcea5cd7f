//! License tokens end to end, on real nodes on 127.0.0.1:0: the origin
//! issues them (REST and gRPC) and anyone verifies them offline with its
//! public key set alone; a revocation at the origin reaches every regional
//! node, which then refuses the token; a region cut off from the origin
//! issues short-lived tokens with its own certified key, which the origin's
//! key set alone verifies, until the origin revokes its certificate; and a
//! key rotation at the origin reaches regions through the old key's
//! endorsement, with no reconfiguration, down to the old key's retirement.

use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::Duration;
use tollgate_license::{LicenseError, LicenseSigner, Verifier};
use tollgate_model::{FeatureId, UnixSeconds};
use tollgate_origin_node::OriginConfig;
use tollgate_proto::license::v1 as pb;
use tollgate_proto::license::v1::licenses_client::LicensesClient;
use tollgate_region_node::{RegionIssuerConfig, RegionNode};
use tollgate_signing::{KeyRing, PublicKeySet, Signed};
use tollgate_tests::{https, init_tracing, pki, start_region, wait_until, CutProxy, TestOrigin};
use tollgate_tls::Subject;
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(30);
const AUDIENCE: &str = "studio";

fn now() -> UnixSeconds {
    UnixSeconds(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
}

fn feature(id: &str) -> FeatureId {
    id.parse().unwrap()
}

/// The origin with product `studio`, features `export` and `ai`, account
/// `acme` (user `alice`), and an entitlement to `export` only.
async fn origin(dir: &std::path::Path) -> TestOrigin {
    let mut config = OriginConfig::new(1, dir.join("origin"));
    config.feed.heartbeat_interval = Duration::from_millis(100);
    let origin = TestOrigin::start(config, dir).await;
    origin.seed(&["export", "ai"]).await;
    origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "acme-export", "account": "acme",
                "grant": {"feature": {"feature": "export"}}, "valid_from": 1_700_000_000}),
        )
        .await;
    origin
}

async fn public_keys(origin: &TestOrigin) -> PublicKeySet {
    let (status, body) = origin.get_text("/v1/keys").await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_str(&body).unwrap()
}

async fn issue(origin: &TestOrigin, body: serde_json::Value) -> serde_json::Value {
    let (status, issued) = origin
        .rest(Method::POST, "/v1/accounts/acme/licenses", body)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    issued
}

/// A Licenses client at a region node, as an application connects.
async fn licenses(addr: std::net::SocketAddr) -> LicensesClient<tollgate_tests::AppChannel> {
    LicensesClient::new(tollgate_tests::channel(addr).await)
}

/// A Licenses client at the origin's changefeed port, which admits only
/// nodes and operators: an operator's certificate.
async fn origin_licenses(addr: std::net::SocketAddr) -> LicensesClient<tonic::transport::Channel> {
    let operator = pki().client_as(Subject::Operator("e2e".into()));
    LicensesClient::new(tollgate_tests::pki::channel_with(&operator, addr).await)
}

async fn verify_at(node: &RegionNode, token: &str, device: &str) -> pb::VerifyLicenseResponse {
    licenses(node.grpc_addr())
        .await
        .verify_license(pb::VerifyLicenseRequest {
            token: token.into(),
            audience: AUDIENCE.into(),
            device_fingerprint: device.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn caught_up(region: &[RegionNode], revision: u64) {
    for node in region {
        wait_until(
            "the region to apply the origin's write",
            DEADLINE,
            || async { (node.applied_revision() >= revision).then_some(()) },
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn origin_licenses_verify_offline_and_revocations_reach_every_region_node() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let origin = origin(dir.path()).await;
    let region = start_region(3, dir.path(), &origin.node, origin.feed_url(), None, |_| {}).await;

    info!("Issuing over REST and verifying offline with the public key set alone.");
    let issued = issue(&origin, json!({"audience": AUDIENCE, "ttl_seconds": 3600})).await;
    let token = issued["token"].as_str().unwrap().to_string();
    let id = issued["id"].as_str().unwrap().to_string();
    let keys = public_keys(&origin).await;
    let verifier = Verifier::new(&keys, AUDIENCE).unwrap();
    let license = verifier.verify(&token, now(), None, &()).unwrap();
    assert_eq!(license.claims().account.as_str(), "acme");
    assert_eq!(license.claims().jti.as_str(), id);
    assert!(matches!(license.signer(), LicenseSigner::Origin { .. }));
    assert!(license.allows(&feature("export"), now()).is_some());
    assert!(
        license.allows(&feature("ai"), now()).is_none(),
        "the token carries only what the account holds"
    );
    assert!(matches!(
        Verifier::new(&keys, "another-product")
            .unwrap()
            .verify(&token, now(), None, &()),
        Err(LicenseError::WrongAudience)
    ));

    info!("A device-bound token verifies only on its device.");
    let bound = issue(
        &origin,
        json!({"audience": AUDIENCE, "subject": "alice", "device_fingerprint": "laptop-1"}),
    )
    .await;
    let bound = bound["token"].as_str().unwrap();
    let license = verifier
        .verify(bound, now(), Some(b"laptop-1"), &())
        .unwrap();
    assert_eq!(license.claims().subject.as_ref().unwrap().as_str(), "alice");
    assert!(matches!(
        verifier.verify(bound, now(), Some(b"laptop-2"), &()),
        Err(LicenseError::BadSignature)
    ));
    assert!(matches!(
        verifier.verify(bound, now(), None, &()),
        Err(LicenseError::DeviceFingerprintRequired)
    ));

    info!("Bad requests are refused with a clear error and record nothing.");
    for (body, status) in [
        (json!({"audience": ""}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"audience": AUDIENCE, "ttl_seconds": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"audience": AUDIENCE, "subject": "nobody"}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"audience": AUDIENCE, "unknown": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
    ] {
        let (got, problem) = origin
            .rest(Method::POST, "/v1/accounts/acme/licenses", body.clone())
            .await;
        assert_eq!(got, status, "{body}: {problem}");
    }
    let (status, _) = origin
        .rest(
            Method::POST,
            "/v1/accounts/nobody/licenses",
            json!({"audience": AUDIENCE}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let listed = origin
        .ok(Method::GET, "/v1/accounts/acme/licenses", json!(null))
        .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);

    info!("Issuing over gRPC at the origin needs an API key.");
    let mut grpc = origin_licenses(origin.node.feed_addr()).await;
    let request = pb::IssueLicenseRequest {
        account_id: "acme".into(),
        audience: AUDIENCE.into(),
        ttl_seconds: 600,
        ..Default::default()
    };
    let refused = grpc.issue_license(request.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let mut authorised = tonic::Request::new(request);
    authorised.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", origin.token).parse().unwrap(),
    );
    let over_grpc = grpc.issue_license(authorised).await.unwrap().into_inner();
    assert_eq!(over_grpc.issuer, "tollgate-origin");
    verifier.verify(&over_grpc.token, now(), None, &()).unwrap();

    info!("An application's replica learns of revocations, and so does its offline verifier.");
    let client = tollgate_sdk::Client::builder()
        .endpoints(region.iter().map(|n| https(n.grpc_addr())))
        .ca_file(pki().ca_path())
        .credential(tollgate_tests::test_credential())
        .build()
        .unwrap();
    let replica = tollgate_sdk::Replica::start(&client, Some("acme".parse().unwrap())).unwrap();
    let offline = tollgate_sdk::OfflineVerifier::new(&keys, AUDIENCE).unwrap();
    offline.verify_with_replica(&token, None, &replica).unwrap();

    info!("Every regional node verifies the token, then refuses it once revoked.");
    // Each node answers from what it has applied: the tests' credential
    // included (committed when the origin started).
    caught_up(&region, origin.node.head_revision()).await;
    for node in &region {
        let answer = verify_at(node, &token, "").await;
        assert!(answer.valid, "{answer:?}");
    }
    let revoked = origin
        .ok(
            Method::POST,
            &format!("/v1/accounts/acme/licenses/{id}/revoke"),
            json!(null),
        )
        .await;
    let revoked_at = revoked["revision"].as_u64().unwrap();
    caught_up(&region, revoked_at).await;
    replica
        .wait_for_revision(revoked_at, DEADLINE)
        .await
        .unwrap();
    assert!(matches!(
        offline.verify_with_replica(&token, None, &replica),
        Err(LicenseError::LicenseRevoked { .. })
    ));
    offline
        .verify(&token, None)
        .expect("without a replica, nothing is known revoked");
    for node in &region {
        let answer = verify_at(node, &token, "").await;
        assert!(!answer.valid);
        assert_eq!(answer.error_code, "license_revoked");
        assert!(verify_at(node, &over_grpc.token, "").await.valid);
    }
    let (status, _) = origin
        .rest(
            Method::POST,
            &format!("/v1/accounts/acme/licenses/{id}/revoke"),
            json!(null),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "a second revocation");
    let (status, _) = origin
        .rest(
            Method::POST,
            "/v1/accounts/acme/licenses/0123456789abcdef0123456789abcdef/revoke",
            json!(null),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an unknown id needs its expiry"
    );
    let listed = origin
        .ok(Method::GET, "/v1/accounts/acme/licenses", json!(null))
        .await;
    let record = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert!(record["revoked_at"].is_i64(), "{record}");

    for node in region {
        node.shutdown().await.unwrap();
    }
    origin.node.shutdown().await.unwrap();
}

/// A region key and the origin's certificate for it.
async fn certified_region_key(origin: &TestOrigin, region: &str) -> (KeyRing, Signed, String) {
    use base64::Engine as _;
    let ring = KeyRing::generate(now()).unwrap();
    let public = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(ring.active_signing_key().1.verifying_key().as_bytes());
    let (status, cert) = origin
        .rest(
            Method::POST,
            &format!("/v1/regions/{region}/certificates"),
            json!({"public_key": public, "token_ttl_max_seconds": 600}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{cert}");
    let serial = cert["serial"].as_str().unwrap().to_string();
    let signed: Signed = serde_json::from_value(cert["certificate"].clone()).unwrap();
    (ring, signed, serial)
}

#[tokio::test]
async fn a_cut_off_region_issues_tokens_that_the_origin_key_alone_verifies() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let origin = origin(dir.path()).await;

    info!("Certifying the region's key; a weak key is refused.");
    let (region_key, certificate, serial) = certified_region_key(&origin, "eu").await;
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let (status, problem) = origin
        .rest(
            Method::POST,
            "/v1/regions/eu/certificates",
            json!({"public_key": base64::Engine::encode(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD, identity)}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");

    let proxy = CutProxy::start(origin.node.feed_addr()).await.unwrap();
    let issuer = RegionIssuerConfig {
        signing_key: region_key.active_signing_key().1.clone(),
        certificate,
    };
    let region = start_region(
        3,
        dir.path(),
        &origin.node,
        https(proxy.addr()),
        None,
        |c| {
            c.region = "eu".into();
            c.license_issuer = Some(issuer.clone());
            c.origin_idle_timeout = Duration::from_secs(1);
            c.reconnect_backoff_max = Duration::from_millis(200);
        },
    )
    .await;
    caught_up(&region, origin.node.head_revision()).await;

    info!("Cutting the region off; it still issues tokens.");
    proxy.cut();
    // Without the tests' credential: each call below says what it presents.
    let mut client = LicensesClient::new(
        tollgate_tests::pki::channel_with(&tollgate_tests::pki().client(), region[1].grpc_addr())
            .await,
    );
    let request = pb::IssueLicenseRequest {
        account_id: "acme".into(),
        subject_id: "alice".into(),
        audience: AUDIENCE.into(),
        ..Default::default()
    };
    let refused = client.issue_license(request.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);
    let authorised = |r: pb::IssueLicenseRequest, token: &str| {
        let mut r = tonic::Request::new(r);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    };
    let wrong = client
        .issue_license(authorised(request.clone(), "tgc_cred-guess.guess"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), tonic::Code::Unauthenticated);
    let too_long = client
        .issue_license(authorised(
            pb::IssueLicenseRequest {
                ttl_seconds: 601,
                ..request.clone()
            },
            tollgate_tests::test_credential(),
        ))
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), tonic::Code::InvalidArgument);
    let issued = client
        .issue_license(authorised(request, tollgate_tests::test_credential()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(issued.issuer, "tollgate-region:eu");
    assert!(issued.expires_at - issued.issued_at <= 600);

    info!("The origin's public key set alone verifies the region's token.");
    let keys = origin.node.public_keys().unwrap();
    let verifier = Verifier::new(&keys, AUDIENCE).unwrap();
    let license = verifier.verify(&issued.token, now(), None, &()).unwrap();
    match license.signer() {
        LicenseSigner::Region {
            region, serial: s, ..
        } => {
            assert_eq!(region, "eu");
            assert_eq!(s.as_str(), serial);
        }
        other => panic!("signed by {other:?}"),
    }
    assert!(license.allows(&feature("export"), now()).is_some());

    info!("Revoking the certificate during the cut; after the heal every node refuses its tokens.");
    let revoked = origin
        .ok(
            Method::POST,
            &format!("/v1/certificates/{serial}/revoke"),
            json!(null),
        )
        .await;
    assert!(verify_at(&region[0], &issued.token, "").await.valid);
    proxy.heal();
    caught_up(&region, revoked["revision"].as_u64().unwrap()).await;
    for node in &region {
        let answer = verify_at(node, &issued.token, "").await;
        assert!(!answer.valid);
        assert_eq!(answer.error_code, "license_certificate_revoked");
    }
    let certificates = origin
        .ok(Method::GET, "/v1/certificates", json!(null))
        .await;
    assert!(certificates["items"][0]["revoked_at"].is_i64());

    for node in region {
        node.shutdown().await.unwrap();
    }
    origin.node.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_key_rotation_reaches_regions_through_the_old_keys_endorsement() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let origin = origin(dir.path()).await;
    let region = start_region(3, dir.path(), &origin.node, origin.feed_url(), None, |c| {
        c.origin_keys_refresh = Duration::from_millis(200)
    })
    .await;
    let before = issue(&origin, json!({"audience": AUDIENCE})).await;
    let old_kid = before["kid"].as_str().unwrap().to_string();
    let old_token = before["token"].as_str().unwrap().to_string();

    info!("Rotating: the region keeps following records the new key signs.");
    let rotated = origin
        .ok(
            Method::POST,
            "/v1/keys/rotate",
            json!({"overlap_seconds": 3600}),
        )
        .await;
    let new_kid = rotated["active_kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, old_kid);
    let granted = origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "acme-ai", "account": "acme",
                "grant": {"feature": {"feature": "ai"}}, "valid_from": 1_700_000_000}),
        )
        .await;
    caught_up(&region, granted["revision"].as_u64().unwrap()).await;
    let after = issue(&origin, json!({"audience": AUDIENCE})).await;
    assert_eq!(after["kid"].as_str().unwrap(), new_kid);
    let new_token = after["token"].as_str().unwrap().to_string();
    for node in &region {
        assert!(verify_at(node, &old_token, "").await.valid, "overlap");
        assert!(verify_at(node, &new_token, "").await.valid);
    }

    info!("Retiring the old key: regions learn it and refuse what it signed.");
    origin
        .ok(
            Method::POST,
            &format!("/v1/keys/{old_kid}/retire"),
            json!(null),
        )
        .await;
    for node in &region {
        let answer = wait_until(
            "the region to learn of the retirement",
            DEADLINE,
            || async {
                let answer = verify_at(node, &old_token, "").await;
                (!answer.valid).then_some(answer)
            },
        )
        .await
        .unwrap();
        assert_eq!(answer.error_code, "license_key_retired");
        assert!(verify_at(node, &new_token, "").await.valid);
    }
    let (status, _) = origin
        .rest(
            Method::POST,
            &format!("/v1/keys/{new_kid}/retire"),
            json!(null),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "the active key cannot be retired"
    );

    for node in region {
        node.shutdown().await.unwrap();
    }
    origin.node.shutdown().await.unwrap();
}
