//! Kill the regional leader while the origin keeps writing: the followers
//! never stop answering, a new leader resumes the changefeed from the
//! applied revision, and nothing is skipped or applied twice (the region
//! ends up with exactly the origin's data).

use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_node::{
    OriginConfig, OriginListeners, OriginNode, RegionConfig, RegionListeners, RegionNode,
};
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_tests::{init_tracing, wait_until};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(30);

async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

#[tokio::test]
async fn killing_the_regional_leader_loses_nothing_and_stops_no_answer() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let origin = OriginNode::start(
        OriginConfig::new(1, dir.path().join("origin")),
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

    let mut region = Vec::new();
    for id in 1..=3 {
        let mut config = RegionConfig::new(
            id,
            dir.path().join(format!("r{id}")),
            format!("http://{}", origin.feed_addr()),
            origin.public_keys(),
        );
        config.name = format!("eu-{id}");
        region.push(Some(
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
        ));
    }
    let members: Vec<_> = region
        .iter()
        .flatten()
        .map(|n| (n.raft().id(), n.raft().addr().to_string()))
        .collect();
    region[0]
        .as_ref()
        .unwrap()
        .raft()
        .initialize(&members)
        .await
        .unwrap();
    let leader = wait_until("a regional leader", DEADLINE, || async {
        region[0].as_ref().unwrap().raft().metrics().current_leader
    })
    .await
    .unwrap();

    info!("Writing at the origin while the regional leader is killed.");
    let http = reqwest::Client::new();
    let base = format!("http://{}", origin.http_addr());
    let writer = {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        tokio::spawn(async move {
            for i in 0..300 {
                let r = http
                    .request(Method::PUT, format!("{base}/v1/accounts/acct-{i}"))
                    .bearer_auth(&token)
                    .json(&json!({"id": format!("acct-{i}"), "name": "x"}))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
            }
        })
    };
    wait_until("the region to be following", DEADLINE, || async {
        region
            .iter()
            .flatten()
            .all(|n| n.applied_revision() >= 10)
            .then_some(())
    })
    .await
    .unwrap();
    let index = region
        .iter()
        .position(|n| n.as_ref().is_some_and(|n| n.raft().id() == leader))
        .unwrap();
    region[index].take().unwrap().crash().await;
    let head_at_kill = origin.head_revision();

    info!("Proving the followers keep answering throughout and converge on the origin.");
    let survivors: Vec<&RegionNode> = region.iter().flatten().collect();
    let mut answered = 0;
    while !writer.is_finished() {
        for node in &survivors {
            let mut client = CheckServiceClient::connect(format!("http://{}", node.grpc_addr()))
                .await
                .unwrap();
            let reply = client
                .check(pb::CheckRequest {
                    account_id: "acct-0".into(),
                    subject_id: None,
                    feature_id: "anything".into(),
                    consume: 0,
                    location: None,
                    consistency: None,
                })
                .await
                .expect("a follower answers while the leader is gone");
            assert!(reply.into_inner().decision.is_some());
            answered += 1;
        }
    }
    writer.await.unwrap();
    assert!(answered > 0);
    let head = origin.head_revision();
    assert!(
        head > head_at_kill,
        "the origin kept writing after the kill"
    );
    for node in &survivors {
        wait_until(
            "the survivors to reach the origin's head",
            DEADLINE,
            || async { (node.applied_revision() >= head).then_some(()) },
        )
        .await
        .unwrap();
        assert_eq!(
            node.served_dataset().unwrap(),
            origin.served_dataset().unwrap(),
            "nothing skipped, nothing twice"
        );
    }
    for node in region.into_iter().flatten() {
        node.shutdown().await.unwrap();
    }
    origin.shutdown().await.unwrap();
}
