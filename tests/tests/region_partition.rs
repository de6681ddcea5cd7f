//! The point of the product: a region cut off from the origin keeps
//! answering on every node, its staleness grows, the offline policy flips
//! short-grace deny entitlements to STALE_DATA while allow-after-grace ones
//! keep allowing, and once the cut heals a revocation made meanwhile applies
//! and the region's data equals the origin's.

use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_node::{
    OriginConfig, OriginListeners, OriginNode, RegionConfig, RegionListeners, RegionNode,
};
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_tests::{init_tracing, wait_until, CutProxy};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(30);

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

async fn ask(node: &RegionNode, feature: &str) -> pb::CheckResponse {
    let mut client = CheckServiceClient::connect(format!("http://{}", node.grpc_addr()))
        .await
        .unwrap();
    client
        .check(pb::CheckRequest {
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
    let origin = OriginNode::start(
        origin_config,
        OriginListeners {
            raft: bind().await,
            http: bind().await,
            feed: bind().await,
        },
    )
    .await
    .unwrap();
    origin
        .raft()
        .initialize(&[(1, origin.raft().addr().to_string())])
        .await
        .unwrap();
    origin
        .raft()
        .wait_until(DEADLINE, "origin leader", |m| m.current_leader == Some(1))
        .await
        .unwrap();
    let token = origin
        .bootstrap_admin_key(&dir.path().join("admin.token"))
        .await
        .unwrap()
        .unwrap();
    let http = reqwest::Client::new();
    let rest = |method: Method, path: &str, body: Value| {
        http.request(method, format!("http://{}{path}", origin.http_addr()))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    for (path, body) in [
        (
            "/v1/products/studio",
            json!({"id": "studio", "name": "Studio"}),
        ),
        (
            "/v1/features/export",
            json!({"id": "export", "product": "studio", "name": "Export", "kind": "boolean"}),
        ),
        (
            "/v1/features/ai",
            json!({"id": "ai", "product": "studio", "name": "AI", "kind": "boolean"}),
        ),
        ("/v1/accounts/acme", json!({"id": "acme", "name": "Acme"})),
    ] {
        assert!(rest(Method::PUT, path, body)
            .await
            .unwrap()
            .status()
            .is_success());
    }
    for (id, feature, after) in [("strict", "export", "deny"), ("lenient", "ai", "allow")] {
        let r = rest(
            Method::POST,
            "/v1/entitlements",
            json!({"id": id, "account": "acme",
            "grant": {"feature": {"feature": feature}}, "valid_from": 1_700_000_000,
            "offline_policy": {"offline_grace_seconds": 2, "after_grace": after}}),
        )
        .await
        .unwrap();
        assert!(r.status().is_success());
    }

    let proxy = CutProxy::start(origin.feed_addr()).await.unwrap();
    let mut region = Vec::new();
    for id in 1..=3 {
        let mut config = RegionConfig::new(
            id,
            dir.path().join(format!("r{id}")),
            format!("http://{}", proxy.addr()),
            origin.public_keys(),
        );
        config.name = format!("eu-{id}");
        config.origin_idle_timeout = Duration::from_secs(1);
        config.reconnect_backoff_max = Duration::from_millis(200);
        region.push(
            RegionNode::start(
                config,
                RegionListeners {
                    raft: bind().await,
                    grpc: bind().await,
                },
                None,
            )
            .await
            .unwrap(),
        );
    }
    let members: Vec<_> = region
        .iter()
        .map(|n| (n.raft().id(), n.raft().addr().to_string()))
        .collect();
    region[0].raft().initialize(&members).await.unwrap();
    let head = origin.head_revision();
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
    let revoked: Value = rest(Method::POST, "/v1/entitlements/lenient/revoke", json!(null))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
            origin.served_dataset().unwrap(),
            "same data as the origin"
        );
    }
    for node in region {
        node.shutdown().await.unwrap();
    }
    origin.shutdown().await.unwrap();
}
