//! A region node that stopped uncleanly may come back with less applied
//! than it had answered from (the commit index and the applied state are
//! not flushed on the write path): it answers no caller until it has
//! caught up with its region's leader (UNAVAILABLE, `NODE_RECOVERING`), so
//! an application's SDK moves on to another node. A node stopped cleanly
//! answers at once, even alone in a region without a quorum.

use std::time::Duration;
use tollgate_origin_node::OriginConfig;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_region_node::{RegionListeners, RegionNode};
use tollgate_tests::{
    init_tracing, loopback, pki, region_config, start_region, wait_until, TestOrigin,
};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(30);

fn check() -> pb::CheckRequest {
    pb::CheckRequest {
        explain: false,
        idempotency_key: None,
        account_id: "acme".into(),
        subject_id: None,
        feature_id: "export".into(),
        consume: 0,
        location: None,
        consistency: None,
    }
}

/// One check at `node`, from the network: whether allowed and why, or the
/// gRPC code and stable error code it was refused with.
async fn check_at(node: &RegionNode) -> Result<(bool, i32), (tonic::Code, String)> {
    let mut client = CheckServiceClient::new(tollgate_tests::channel(node.grpc_addr()).await);
    match client.check(check()).await {
        Ok(reply) => reply
            .into_inner()
            .decision
            .map(|d| (d.allowed, d.reason))
            .ok_or((tonic::Code::Ok, "no decision".into())),
        Err(status) => Err((
            status.code(),
            status
                .metadata()
                .get("tollgate-error-code")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
        )),
    }
}

/// Starts region node `id` again on its data directory and Raft address,
/// configured as `start_region` configured it.
async fn restart(
    id: u64,
    dir: &std::path::Path,
    origin: &TestOrigin,
    raft_addr: &str,
) -> RegionNode {
    let mut config = region_config(id, dir, &origin.node, origin.feed_url());
    config.raft.transport = pki().region_node(&config.region, id);
    // A crashed node's listener closes as its accept task ends.
    let raft = wait_until(&format!("rebinding {raft_addr}"), DEADLINE, || async {
        tokio::net::TcpListener::bind(raft_addr)
            .await
            .map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    RegionNode::start(
        config,
        RegionListeners {
            raft: raft.into(),
            grpc: loopback().await.into(),
            http: None,
        },
        None,
    )
    .await
    .expect("the region node starts again")
}

#[tokio::test]
async fn a_crashed_region_node_answers_nobody_until_a_leader_caught_it_up() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let origin =
        TestOrigin::start(OriginConfig::new(1, dir.path().join("origin")), dir.path()).await;
    origin.seed(&["export"]).await;
    let region = start_region(3, dir.path(), &origin.node, origin.feed_url(), None, |_| {}).await;
    let head = origin.node.head_revision();
    for node in &region {
        wait_until(
            "the region to reach the origin's head",
            DEADLINE,
            || async {
                let applied = node.applied_revision();
                (applied >= head)
                    .then_some(())
                    .ok_or(format!("applied {applied} of {head}"))
            },
        )
        .await
        .unwrap();
    }
    let answered = check_at(&region[0])
        .await
        .expect("a running region answers");
    let raft_addrs: Vec<String> = region.iter().map(|n| n.raft().addr().to_string()).collect();

    info!("Every node stops cleanly; node 1 comes back alone, without a quorum.");
    for node in region {
        node.shutdown().await.unwrap();
    }
    let node1 = restart(1, dir.path(), &origin, &raft_addrs[0]).await;
    assert_eq!(
        check_at(&node1).await,
        Ok(answered),
        "a node stopped cleanly answers at once, alone"
    );

    info!("Node 1 crashes and comes back alone: it answers nobody.");
    node1.crash().await;
    let node1 = restart(1, dir.path(), &origin, &raft_addrs[0]).await;
    assert_eq!(
        check_at(&node1).await,
        Err((tonic::Code::Unavailable, "NODE_RECOVERING".to_string())),
        "a crashed node with no leader to catch up with"
    );
    let status = node1.status();
    assert!(
        status.recovering && !status.ready,
        "its status says it is recovering: {status:?}"
    );

    info!("Node 2 comes back: a leader is elected, and node 1 answers again.");
    let node2 = restart(2, dir.path(), &origin, &raft_addrs[1]).await;
    let again = wait_until("node 1 to answer again", DEADLINE, || async {
        check_at(&node1).await.map_err(|e| format!("{e:?}"))
    })
    .await
    .unwrap();
    assert_eq!(again, answered);
    assert!(node1.applied_revision() >= head);
    assert!(
        !node1.status().recovering,
        "caught up, it no longer says so"
    );
    node1.shutdown().await.unwrap();
    node2.shutdown().await.unwrap();
    origin.node.shutdown().await.unwrap();
}
