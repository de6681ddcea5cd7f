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

/// Every line of `text` that starts with `name` (a Prometheus series).
fn series<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_reflection_serve_off_the_shelf_tools() {
    use tollgate_proto::check::v1 as pb;
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let origin =
        TestOrigin::start(OriginConfig::new(1, dir.path().join("origin")), dir.path()).await;
    origin.seed(&["export"]).await;
    let node = start(&origin, dir.path(), 1, None).await;
    node.raft()
        .initialize(&[(1, node.raft().addr().to_string())])
        .await
        .unwrap();
    let head = origin.node.head_revision();
    wait_until("the node to catch up", DEADLINE, || async {
        (node.applied_revision() >= head).then_some(())
    })
    .await
    .unwrap();

    // One denied check, counted by its reason.
    let mut client = pb::check_service_client::CheckServiceClient::connect(format!(
        "http://{}",
        node.grpc_addr()
    ))
    .await
    .unwrap();
    let reply = client
        .check(pb::CheckRequest {
            account_id: "acme".into(),
            feature_id: "export".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.decision.unwrap().reason(), pb::Reason::NotEntitled);

    let text = reqwest::get(format!("http://{}/metrics", node.http_addr().unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let denied = series(&text, "tollgate_checks_total");
    assert!(
        denied.iter().any(|l| l.contains("reason=\"NOT_ENTITLED\"")),
        "{denied:?}"
    );
    assert!(!series(&text, "tollgate_check_duration_seconds_bucket").is_empty());
    for gauge in [
        "tollgate_raft_term",
        "tollgate_raft_is_leader",
        "tollgate_region_lag_revisions",
        "tollgate_region_staleness_seconds",
    ] {
        assert!(
            series(&text, gauge)
                .iter()
                .any(|l| l.contains("node=\"node-1\"")),
            "{gauge} for node-1 in:\n{text}"
        );
    }
    let (status, origin_text) = origin.get_text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert!(!series(&origin_text, "tollgate_origin_head_revision").is_empty());

    // The standard gRPC health service answers for each service.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", node.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in [
        "",
        "tollgate.check.v1.CheckService",
        "tollgate.license.v1.Licenses",
    ] {
        let answer = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            answer.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving,
            "{service:?}"
        );
    }
    let unknown = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // Server reflection lists the services, as grpcurl asks.
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list, got {answer:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in [
        "tollgate.check.v1.CheckService",
        "tollgate.usage.v1.Usage",
        "tollgate.license.v1.Licenses",
    ] {
        assert!(names.contains(&expected), "{names:?}");
    }

    node.shutdown().await.unwrap();
    origin.node.shutdown().await.unwrap();
}
