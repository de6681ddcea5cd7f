//! Kill the regional leader while the origin keeps writing: the followers
//! never stop answering, a new leader resumes the changefeed from the
//! applied revision, and nothing is skipped or applied twice (the region
//! ends up with exactly the origin's data).

use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use tollgate_origin_node::OriginConfig;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_region_node::RegionNode;
use tollgate_tests::{init_tracing, start_region, wait_until, TestOrigin};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn killing_the_regional_leader_loses_nothing_and_stops_no_answer() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let origin =
        TestOrigin::start(OriginConfig::new(1, dir.path().join("origin")), dir.path()).await;
    let token = origin.token.clone();
    let mut region: Vec<Option<RegionNode>> =
        start_region(3, dir.path(), &origin.node, origin.feed_url(), None, |_| {})
            .await
            .into_iter()
            .map(Some)
            .collect();
    let leader = wait_until("a regional leader", DEADLINE, || async {
        region[0].as_ref().unwrap().raft().metrics().current_leader
    })
    .await
    .unwrap();

    info!("Writing at the origin while the regional leader is killed.");
    let http = origin.http().clone();
    let base = origin.base();
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
    let head_at_kill = origin.node.head_revision();

    info!("Proving the followers keep answering throughout and converge on the origin.");
    let survivors: Vec<&RegionNode> = region.iter().flatten().collect();
    let mut answered = 0;
    while !writer.is_finished() {
        for node in &survivors {
            let mut client =
                CheckServiceClient::new(tollgate_tests::channel(node.grpc_addr()).await);
            let reply = client
                .check(pb::CheckRequest {
                    explain: false,
                    idempotency_key: None,
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
    let head = origin.node.head_revision();
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
            origin.node.served_dataset().unwrap(),
            "nothing skipped, nothing twice"
        );
    }
    for node in region.into_iter().flatten() {
        node.shutdown().await.unwrap();
    }
    origin.node.shutdown().await.unwrap();
}
