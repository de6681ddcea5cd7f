//! A region node's operations endpoints: `/readyz` stays 503 with the
//! reasons until the node is a member, has heard from the origin and has a
//! geo database; `/v1/status` shows role, revisions and the geo database's
//! type and build date; `/healthz` answers throughout.

use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tollgate_geo::fixtures::{DEMO_BUILD_EPOCH_SECONDS, DEMO_CITY_DATABASE_TYPE};
use tollgate_node::{OriginConfig, RegionConfig, RegionListeners, RegionNode};
use tollgate_tests::{init_tracing, loopback, wait_until, TestOrigin};

const DEADLINE: Duration = Duration::from_secs(20);

async fn get(node: &RegionNode, path: &str) -> (StatusCode, Value) {
    let url = format!("http://{}{path}", node.http_addr().unwrap());
    let response = reqwest::get(url).await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn reasons(body: &Value) -> String {
    body["not_ready"].to_string()
}

async fn start(
    origin: &TestOrigin,
    dir: &std::path::Path,
    id: u64,
    geo: Option<Arc<tollgate_geo::GeoDatabases>>,
) -> RegionNode {
    let config = RegionConfig::new(
        id,
        dir.join(format!("region-{id}")),
        format!("http://{}", origin.node.feed_addr()),
        origin.node.public_keys(),
    );
    RegionNode::start(
        config,
        RegionListeners {
            raft: loopback().await,
            grpc: loopback().await,
            http: Some(loopback().await),
        },
        geo,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_membership_the_origin_and_geography() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let origin =
        TestOrigin::start(OriginConfig::new(1, dir.path().join("origin")), dir.path()).await;
    origin.seed(&["export"]).await;
    let geo = Arc::new(tollgate_geo::fixtures::demo_databases().unwrap());
    let node = start(&origin, dir.path(), 1, Some(geo)).await;

    let (code, body) = get(&node, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert!(reasons(&body).contains("not a member"), "{body}");
    assert!(
        reasons(&body).contains("never heard from the origin"),
        "{body}"
    );
    let (code, body) = get(&node, "/healthz").await;
    assert_eq!(code, StatusCode::OK, "alive even when not ready: {body}");

    node.raft()
        .initialize(&[(1, node.raft().addr().to_string())])
        .await
        .unwrap();
    let head = origin.node.head_revision();
    let body = wait_until("the node to become ready", DEADLINE, || async {
        let (code, body) = get(&node, "/readyz").await;
        (code == StatusCode::OK).then_some(body)
    })
    .await
    .unwrap();
    assert_eq!(body["ready"], true);

    let (code, status) = get(&node, "/v1/status").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(status["role"], "leader");
    assert_eq!(status["leader"], 1);
    assert!(
        status["applied_revision"].as_u64().unwrap() >= head,
        "{status}"
    );
    assert_eq!(status["lag_revisions"], 0, "{status}");
    assert!(
        status["staleness_seconds"].as_u64().unwrap() <= 5,
        "{status}"
    );
    let location = &status["geo"]["location"];
    assert_eq!(location["database_type"], DEMO_CITY_DATABASE_TYPE);
    assert_eq!(location["build_epoch_seconds"], DEMO_BUILD_EPOCH_SECONDS);
    assert_eq!(
        status["geo"]["anonymous"]["kind"], "anonymous_ip",
        "{status}"
    );

    // Without a geo database the node is never ready (checks from an IP
    // would all resolve to an unknown location).
    let bare = start(&origin, dir.path(), 2, None).await;
    bare.raft()
        .initialize(&[(2, bare.raft().addr().to_string())])
        .await
        .unwrap();
    wait_until("the bare node to catch up", DEADLINE, || async {
        (bare.applied_revision() >= head).then_some(())
    })
    .await
    .unwrap();
    let (code, body) = get(&bare, "/readyz").await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body["not_ready"],
        serde_json::json!(["no geo database is loaded"]),
        "only the geography is missing"
    );

    node.shutdown().await.unwrap();
    bare.shutdown().await.unwrap();
    origin.node.shutdown().await.unwrap();
}
