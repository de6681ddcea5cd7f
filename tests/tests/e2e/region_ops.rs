//! A region node's operations endpoints: `/readyz` stays 503 with the
//! reasons until the node is a member, has heard from the origin and has a
//! geo database; `/v1/status` shows role, revisions and the geo database's
//! type and build date; `/healthz` answers throughout.

use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tollgate_geo::fixtures::{DEMO_BUILD_EPOCH_SECONDS, DEMO_CITY_DATABASE_TYPE};
use tollgate_origin_node::OriginConfig;
use tollgate_region_node::{RegionConfig, RegionListeners, RegionNode};
use tollgate_tests::{https, init_tracing, loopback, pki, wait_until, TestOrigin};
use tollgate_tls::{Expect, Subject, Transport};
use tonic_health::pb::health_check_response::ServingStatus;

const DEADLINE: Duration = Duration::from_secs(20);

async fn get(node: &RegionNode, path: &str) -> (StatusCode, Value) {
    let url = format!("{}{path}", https(node.http_addr().unwrap()));
    let response = pki().http_client().get(url).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// A TLS channel to `addr` as `transport`, the server's name checked; a
/// failure to connect is an error, not a panic.
async fn connect(
    transport: &Transport,
    addr: std::net::SocketAddr,
) -> Result<tonic::transport::Channel, String> {
    let endpoint = transport
        .endpoint(&https(addr))
        .map_err(|e| e.to_string())?;
    transport
        .connect(&endpoint, Expect::HostName, "test")
        .await
        .map_err(|e| format!("connect: {e}"))
}

/// An operator's client identity: the Raft port admits only its own
/// cluster's members and operators.
fn operator() -> Transport {
    pki().client_as(Subject::Operator("e2e".into()))
}

/// What the standard gRPC health service on `addr` says of `service`,
/// asked as an application (no client certificate).
async fn grpc_health(addr: std::net::SocketAddr, service: &str) -> Result<ServingStatus, String> {
    grpc_health_as(&pki().client(), addr, service).await
}

/// What the standard gRPC health service on `addr` says of `service`,
/// asked over `transport`.
async fn grpc_health_as(
    transport: &Transport,
    addr: std::net::SocketAddr,
    service: &str,
) -> Result<ServingStatus, String> {
    let channel = connect(transport, addr).await?;
    let answer = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map_err(|status| format!("health check: {status}"))?
        .into_inner();
    Ok(answer.status())
}

/// Waits until every check-port service (and the server as a whole)
/// reports `expected`, saying what it last saw otherwise.
async fn wait_for_grpc_health(node: &RegionNode, expected: ServingStatus) {
    wait_until("the check port's gRPC health", DEADLINE, || async {
        for service in CHECK_PORT_SERVICES {
            let seen = grpc_health(node.grpc_addr(), service).await?;
            if seen != expected {
                return Err(format!("{service:?} is {seen:?}"));
            }
        }
        Ok(())
    })
    .await
    .unwrap();
}

const CHECK_PORT_SERVICES: [&str; 4] = [
    "",
    "tollgate.check.v1.CheckService",
    "tollgate.usage.v1.Usage",
    "tollgate.license.v1.Licenses",
];

fn reasons(body: &Value) -> String {
    body["not_ready"].to_string()
}

async fn start(
    origin: &TestOrigin,
    dir: &std::path::Path,
    id: u64,
    geo: Option<Arc<tollgate_geo::GeoDatabases>>,
) -> RegionNode {
    let mut config = RegionConfig::new(
        id,
        dir.join(format!("region-{id}")),
        origin.feed_url(),
        origin.node.public_keys().unwrap(),
    );
    config.raft.transport = pki().region_node(&config.region, id);
    RegionNode::start(
        config,
        RegionListeners {
            raft: loopback().await.into(),
            grpc: loopback().await.into(),
            http: Some(loopback().await.into()),
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
    tracing::info!("gRPC health agrees with /readyz: NOT_SERVING while not ready.");
    for service in CHECK_PORT_SERVICES {
        assert_eq!(
            grpc_health(node.grpc_addr(), service).await.unwrap(),
            ServingStatus::NotServing,
            "{service:?} before the node is ready"
        );
    }

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
    tracing::info!("Once ready, every service on the check port is SERVING.");
    wait_for_grpc_health(&node, ServingStatus::Serving).await;

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
    wait_for_grpc_health(&bare, ServingStatus::NotServing).await;

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
    let mut client = pb::check_service_client::CheckServiceClient::new(
        tollgate_tests::channel(node.grpc_addr()).await,
    );
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

    let text = pki()
        .http_client()
        .get(format!("{}/metrics", https(node.http_addr().unwrap())))
        .send()
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

    // The standard gRPC health service answers for each service: this node
    // has no geo database, so it is not ready and says so.
    let channel = tollgate_tests::channel(node.grpc_addr()).await;
    wait_for_grpc_health(&node, ServingStatus::NotServing).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
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

    tracing::info!("Reflection v1alpha, which older grpcurl and grpcio ask for, lists them too.");
    let alpha = reflection_v1alpha_services(&pki().client(), node.grpc_addr()).await;
    assert!(
        alpha.contains(&"tollgate.check.v1.CheckService".to_string()),
        "{alpha:?}"
    );

    tracing::info!("The Raft port serves health and reflection as well.");
    let raft_addr: std::net::SocketAddr = node.raft().addr().parse().unwrap();
    for service in [
        "",
        "tollgate.cluster.v1.RaftService",
        "tollgate.cluster.v1.ClusterAdmin",
    ] {
        assert_eq!(
            grpc_health_as(&operator(), raft_addr, service)
                .await
                .unwrap(),
            ServingStatus::Serving,
            "{service:?} on the Raft port"
        );
    }
    let raft_services = reflection_v1alpha_services(&operator(), raft_addr).await;
    assert!(
        raft_services.contains(&"tollgate.cluster.v1.ClusterAdmin".to_string()),
        "{raft_services:?}"
    );

    node.shutdown().await.unwrap();
    origin.node.shutdown().await.unwrap();
}

/// The services reflection `v1alpha` lists on `addr`, asked over
/// `transport`.
async fn reflection_v1alpha_services(
    transport: &Transport,
    addr: std::net::SocketAddr,
) -> Vec<String> {
    use tonic_reflection::pb::v1alpha::{
        server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        ServerReflectionRequest,
    };
    let channel = tollgate_tests::pki::channel_with(transport, addr).await;
    let mut client = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("expected a service list, got {answer:?}");
    };
    list.service.into_iter().map(|s| s.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_requests_are_refused_with_a_stable_code() {
    use tollgate_proto::check::v1 as pb;
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let origin =
        TestOrigin::start(OriginConfig::new(1, dir.path().join("origin")), dir.path()).await;
    let node = start(&origin, dir.path(), 1, None).await;
    // The caller is authenticated before its request is read: the region
    // needs the tests' credential first.
    node.raft()
        .initialize(&[(1, node.raft().addr().to_string())])
        .await
        .unwrap();
    let head = origin.node.head_revision();
    tollgate_tests::wait_until(
        "the region has the tests' credential",
        Duration::from_secs(30),
        || async {
            let applied = node.applied_revision();
            if applied >= head {
                Ok(())
            } else {
                Err(format!("applied {applied}, want {head}"))
            }
        },
    )
    .await
    .unwrap();
    let mut client = pb::check_service_client::CheckServiceClient::new(
        tollgate_tests::channel(node.grpc_addr()).await,
    );
    let code_of = |status: &tonic::Status| {
        status
            .metadata()
            .get("tollgate-error-code")
            .map(|v| v.to_str().unwrap().to_string())
    };

    tracing::info!("A check request over 64 KiB is refused before it is decoded.");
    let oversized = client
        .check(pb::CheckRequest {
            account_id: "a".repeat(65 * 1024),
            feature_id: "export".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        oversized.code(),
        tonic::Code::ResourceExhausted,
        "{oversized:?}"
    );
    assert_eq!(code_of(&oversized).as_deref(), Some("MESSAGE_TOO_LARGE"));

    tracing::info!("A malformed id is INVALID_ARGUMENT, naming the field, with the code.");
    let malformed = client
        .check(pb::CheckRequest {
            account_id: "not an id!".into(),
            feature_id: "export".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(malformed.code(), tonic::Code::InvalidArgument);
    assert!(malformed.message().contains("account_id"), "{malformed:?}");
    assert_eq!(code_of(&malformed).as_deref(), Some("INVALID_ARGUMENT"));

    tracing::info!("A batch over 64 KiB is refused the same way.");
    let big_batch = client
        .batch_check(pb::BatchCheckRequest {
            checks: (0..128)
                .map(|_| pb::CheckRequest {
                    account_id: "a".repeat(600),
                    feature_id: "export".into(),
                    ..Default::default()
                })
                .collect(),
            consistency: None,
        })
        .await
        .unwrap_err();
    assert_eq!(big_batch.code(), tonic::Code::ResourceExhausted);
    assert_eq!(code_of(&big_batch).as_deref(), Some("MESSAGE_TOO_LARGE"));

    node.shutdown().await.unwrap();
    origin.node.shutdown().await.unwrap();
}
