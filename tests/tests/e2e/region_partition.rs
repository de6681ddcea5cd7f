//! The point of the product: a region cut off from the origin keeps
//! answering on every node, its staleness grows, the offline policy flips
//! short-grace deny entitlements to STALE_DATA while allow-after-grace ones
//! keep allowing, and once the cut heals a revocation made meanwhile applies
//! and the region's data equals the origin's.

use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use tollgate_origin_node::OriginConfig;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_region_node::RegionNode;
use tollgate_tests::{init_tracing, start_region, wait_until, CutProxy, TestOrigin};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(30);

async fn ask(node: &RegionNode, feature: &str) -> pb::CheckResponse {
    let mut client = CheckServiceClient::new(tollgate_tests::channel(node.grpc_addr()).await);
    client
        .check(pb::CheckRequest {
            explain: false,
            idempotency_key: None,
            account_id: "acme".into(),
            subject_id: None,
            feature_id: feature.into(),
            consume: 0,
            location: None,
            consistency: None,
        })
        .await
        .unwrap()
        .into_inner()
}

fn reason(r: &pb::CheckResponse) -> pb::Reason {
    r.decision.as_ref().unwrap().reason()
}

#[tokio::test]
async fn a_region_cut_off_keeps_answering_then_converges() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut origin_config = OriginConfig::new(1, dir.path().join("origin"));
    origin_config.feed.heartbeat_interval = Duration::from_millis(100);
    let origin = TestOrigin::start(origin_config, dir.path()).await;
    origin.seed(&["export", "ai"]).await;
    for (id, feature, after) in [("strict", "export", "deny"), ("lenient", "ai", "allow")] {
        origin
            .ok(
                Method::POST,
                "/v1/entitlements",
                json!({"id": id, "account": "acme",
                    "grant": {"feature": {"feature": feature}}, "valid_from": 1_700_000_000,
                    "offline_policy": {"offline_grace_seconds": 2, "after_grace": after}}),
            )
            .await;
    }

    let proxy = CutProxy::start(origin.node.feed_addr()).await.unwrap();
    let region = start_region(
        3,
        dir.path(),
        &origin.node,
        tollgate_tests::https(proxy.addr()),
        None,
        |c| {
            c.origin_idle_timeout = Duration::from_secs(1);
            c.reconnect_backoff_max = Duration::from_millis(200);
        },
    )
    .await;
    let head = origin.node.head_revision();
    for node in &region {
        wait_until("every regional node to catch up", DEADLINE, || async {
            (node.applied_revision() >= head).then_some(())
        })
        .await
        .unwrap();
        assert_eq!(reason(&ask(node, "export").await), pb::Reason::Allow);
        assert_eq!(reason(&ask(node, "ai").await), pb::Reason::Allow);
    }

    info!("Cutting the region off, and revoking at the origin during the cut.");
    proxy.cut();
    let revoked = origin
        .ok(Method::POST, "/v1/entitlements/lenient/revoke", json!(null))
        .await;
    let revoked_at = revoked["revision"].as_u64().unwrap();

    info!("Proving every node keeps answering, staleness grows, and the offline policy applies.");
    for node in &region {
        let stale = wait_until("the strict entitlement to go stale", DEADLINE, || async {
            let r = ask(node, "export").await;
            (reason(&r) == pb::Reason::StaleData).then_some(r)
        })
        .await
        .unwrap();
        assert!(
            stale.staleness_seconds.unwrap() > 2,
            "staleness grew: {:?}",
            stale.staleness_seconds
        );
        let lenient = ask(node, "ai").await;
        assert_eq!(
            reason(&lenient),
            pb::Reason::Allow,
            "allow-after-grace keeps allowing; the revocation has not arrived"
        );
        assert!(node.applied_revision() < revoked_at);
    }

    info!("Healing the cut: the revocation applies everywhere and the region equals the origin.");
    proxy.heal();
    for node in &region {
        wait_until("the revocation to reach every node", DEADLINE, || async {
            (node.applied_revision() >= revoked_at).then_some(())
        })
        .await
        .unwrap();
        assert_eq!(reason(&ask(node, "ai").await), pb::Reason::Revoked);
        let fresh = wait_until("the region to be fresh again", DEADLINE, || async {
            let r = ask(node, "export").await;
            (reason(&r) == pb::Reason::Allow).then_some(r)
        })
        .await
        .unwrap();
        assert!(fresh.staleness_seconds.unwrap() <= 2);
        assert_eq!(
            node.served_dataset().unwrap(),
            origin.node.served_dataset().unwrap(),
            "same data as the origin"
        );
    }
    for node in region {
        node.shutdown().await.unwrap();
    }
    origin.node.shutdown().await.unwrap();
}
