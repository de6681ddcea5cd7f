//! An origin and a three-node region, all real, on 127.0.0.1:0: the region's
//! leader follows the signed changefeed, and every regional node answers
//! checks from its own state, with geography, reading its own writes with
//! `at_least_revision`.

use reqwest::Method;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tollgate_origin_node::OriginConfig;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_tests::{init_tracing, start_region, wait_until, TestOrigin};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(20);

fn check(feature: &str, ip: &str, at_least: u64) -> pb::CheckRequest {
    pb::CheckRequest {
        explain: false,
        idempotency_key: None,
        account_id: "acme".into(),
        subject_id: Some("alice".into()),
        feature_id: feature.into(),
        consume: 0,
        location: Some(pb::check_request::Location::Ip(ip.into())),
        consistency: Some(pb::Consistency {
            requirement: Some(pb::consistency::Requirement::AtLeastRevision(at_least)),
        }),
    }
}

#[tokio::test]
async fn a_region_follows_the_origin_and_every_node_answers() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let origin =
        TestOrigin::start(OriginConfig::new(1, dir.path().join("origin")), dir.path()).await;
    origin.seed(&["export", "sso"]).await;

    info!("Starting a three-node region that trusts the origin's keys.");
    let geo = Arc::new(tollgate_geo::fixtures::demo_databases().unwrap());
    let region = start_region(
        3,
        dir.path(),
        &origin.node,
        origin.feed_url(),
        Some(geo),
        // The bound on a read-your-writes wait; generous for a loaded
        // machine (a revision never reached takes this long to refuse).
        |c| c.revision_wait_max = Duration::from_secs(5),
    )
    .await;
    let head = origin.node.head_revision();
    for node in &region {
        wait_until(
            "every node to catch up before the write",
            DEADLINE,
            || async { (node.applied_revision() >= head).then_some(()) },
        )
        .await
        .unwrap();
    }

    info!("Proving a grant at the origin is allowed on every regional node, read-your-writes.");
    let granted = origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "e1", "account": "acme",
                "grant": {"feature": {"feature": "export"}}, "valid_from": 1_700_000_000,
                "geo_rule": {"allow_countries": ["DE", "FR"]}}),
        )
        .await;
    let rev = granted["revision"].as_u64().unwrap();
    for node in &region {
        let mut client = CheckServiceClient::new(tollgate_tests::channel(node.grpc_addr()).await);
        let reply = client
            .check(check("export", "192.0.2.10", rev))
            .await
            .unwrap()
            .into_inner();
        let decision = reply.decision.unwrap();
        assert_eq!(
            decision.reason(),
            pb::Reason::Allow,
            "{}",
            decision.explanation
        );
        assert!(reply.revision >= rev);
        assert!(reply.answered_by.starts_with("eu-"));
        assert!(
            reply.staleness_seconds.is_some_and(|s| s < 60),
            "the region heard from the origin"
        );

        info!("Proving geography resolves the caller's IP on every node.");
        let reply = client
            .check(check("export", "198.51.100.10", rev))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.decision.unwrap().reason(), pb::Reason::GeoBlocked);
        let reply = client
            .check(check("sso", "192.0.2.10", rev))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.decision.unwrap().reason(), pb::Reason::NotEntitled);
    }

    info!("Proving a revocation at the origin is denied on every regional node.");
    let revoked = origin
        .ok(Method::POST, "/v1/entitlements/e1/revoke", json!(null))
        .await;
    let rev = revoked["revision"].as_u64().unwrap();
    for node in &region {
        let mut client = CheckServiceClient::new(tollgate_tests::channel(node.grpc_addr()).await);
        let reply = client
            .check(check("export", "192.0.2.10", rev))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.decision.unwrap().reason(), pb::Reason::Revoked);
    }

    info!("Proving every regional node applied the same revision, and bad requests are refused.");
    for node in &region {
        wait_until("every node at the origin's head", DEADLINE, || async {
            (node.applied_revision() >= origin.node.head_revision()).then_some(())
        })
        .await
        .unwrap();
    }
    let mut client = CheckServiceClient::new(tollgate_tests::channel(region[1].grpc_addr()).await);
    let status = client
        .check(check("export", "not-an-ip", 0))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("ip"), "{}", status.message());
    let status = client
        .check(check("export", "192.0.2.10", 1_000_000))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        tonic::Code::DeadlineExceeded,
        "a revision never reached times out"
    );

    for node in region {
        node.shutdown().await.unwrap();
    }
    origin.node.shutdown().await.unwrap();
}
