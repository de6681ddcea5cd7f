//! A region below the origin's retention floor catches up from the origin's
//! signed snapshot: a fresh region on a compacted origin, and a region cut
//! off for longer than the retention, whose stale state (including a subject
//! deleted meanwhile) the snapshot replaces. After each, every node serves
//! exactly the origin's data and answers from it.

use reqwest::Method;
use serde_json::json;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tollgate_engine::WatchEvent;
use tollgate_model::Dataset;
use tollgate_origin_node::OriginConfig;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_region_node::RegionNode;
use tollgate_tests::{init_tracing, start_region, wait_until, CutProxy, TestOrigin};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(30);

async fn ask(node: &RegionNode, subject: &str, feature: &str) -> pb::Reason {
    let mut client = CheckServiceClient::new(tollgate_tests::channel(node.grpc_addr()).await);
    client
        .check(pb::CheckRequest {
            explain: false,
            idempotency_key: None,
            account_id: "acme".into(),
            subject_id: Some(subject.into()),
            feature_id: feature.into(),
            consume: 0,
            location: None,
            consistency: None,
        })
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap()
        .reason()
}

/// Makes `count` origin writes that only move the revision on.
async fn churn(origin: &TestOrigin, count: usize) {
    for i in 0..count {
        origin
            .ok(
                Method::PUT,
                &format!("/v1/accounts/filler-{i}"),
                json!({"id": format!("filler-{i}"), "name": "Filler"}),
            )
            .await;
    }
}

async fn wait_compacted_past(origin: &TestOrigin, revision: u64) {
    wait_until("the origin to compact its changefeed", DEADLINE, || async {
        (origin.node.change_floor() > revision).then_some(())
    })
    .await
    .unwrap();
}

async fn wait_converged(region: &[RegionNode], origin: &TestOrigin) {
    let head = origin.node.head_revision();
    let expected = origin.node.served_dataset().unwrap();
    for node in region {
        wait_until(
            "every node to reach the origin's head",
            DEADLINE,
            || async { (node.applied_revision() >= head).then_some(()) },
        )
        .await
        .unwrap();
        assert!(
            node.served_dataset().unwrap() == expected,
            "node {} serves the origin's data",
            node.raft().id()
        );
    }
}

fn snapshots_installed(region: &[RegionNode]) -> u64 {
    region
        .iter()
        .map(|n| n.sync_stats().snapshots_installed.load(Ordering::Relaxed))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_below_the_retention_floor_installs_the_origins_snapshot() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut origin_config = OriginConfig::new(1, dir.path().join("origin"));
    origin_config.feed.heartbeat_interval = Duration::from_millis(100);
    origin_config.retention_revisions = 3;
    origin_config.compaction_interval = Duration::from_millis(50);
    let origin = TestOrigin::start(origin_config, dir.path()).await;
    origin.seed(&["export", "ai"]).await;
    origin
        .ok(
            Method::PUT,
            "/v1/accounts/acme/subjects/bob",
            json!({"id": "bob", "account": "acme", "kind": "user"}),
        )
        .await;
    origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "e-export", "account": "acme",
                "grant": {"feature": {"feature": "export"}}, "valid_from": 1_700_000_000}),
        )
        .await;
    churn(&origin, 5).await;
    wait_compacted_past(&origin, 1).await;

    info!("A fresh region on a compacted origin starts from a snapshot.");
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
    wait_converged(&region, &origin).await;
    assert_eq!(snapshots_installed(&region), 1, "exactly one snapshot");
    for node in &region {
        assert_eq!(ask(node, "bob", "export").await, pb::Reason::Allow);
    }

    info!("Cut off for longer than the retention: bob is deleted, export revoked, ai granted.");
    proxy.cut();
    let before = region[0].applied_revision();
    origin
        .ok(
            Method::DELETE,
            "/v1/accounts/acme/subjects/bob",
            json!(null),
        )
        .await;
    origin
        .ok(
            Method::POST,
            "/v1/entitlements/e-export/revoke",
            json!(null),
        )
        .await;
    origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "e-ai", "account": "acme",
                "grant": {"feature": {"feature": "ai"}}, "valid_from": 1_700_000_000}),
        )
        .await;
    churn(&origin, 5).await;
    wait_compacted_past(&origin, before + 1).await;
    for node in &region {
        assert_eq!(
            ask(node, "bob", "export").await,
            pb::Reason::Allow,
            "cut off: still the old state"
        );
    }

    info!("Healed: the snapshot replaces the stale state on every node.");
    proxy.heal();
    wait_converged(&region, &origin).await;
    assert_eq!(snapshots_installed(&region), 2, "a second snapshot");
    for node in &region {
        assert_eq!(ask(node, "bob", "ai").await, pb::Reason::UnknownSubject);
        assert_eq!(ask(node, "alice", "export").await, pb::Reason::Revoked);
        assert_eq!(ask(node, "alice", "ai").await, pb::Reason::Allow);
    }

    info!("A watcher from 0 now gets the state first (the node no longer keeps those changes).");
    let mut client = CheckServiceClient::new(tollgate_tests::channel(region[1].grpc_addr()).await);
    let mut events = client
        .watch(pb::WatchRequest {
            account_id: None,
            from_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut state = Dataset::default();
    let mut expected_index = 0;
    loop {
        let message = tokio::time::timeout(DEADLINE, events.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        match WatchEvent::try_from(message).unwrap() {
            WatchEvent::State {
                index,
                last,
                mutations,
                revision,
            } => {
                assert_eq!(index, expected_index);
                // Compaction commits revisions of its own meanwhile.
                assert!(revision > 0 && revision <= origin.node.head_revision());
                expected_index += 1;
                for m in mutations {
                    state.apply(m);
                }
                if last {
                    break;
                }
            }
            other => panic!("expected the state first, got {other:?}"),
        }
    }
    assert!(
        state.canonical() == origin.node.served_dataset().unwrap().canonical(),
        "the streamed state is the origin's"
    );
    drop(events);

    info!("After the snapshot, records follow as usual.");
    origin
        .ok(Method::POST, "/v1/entitlements/e-ai/revoke", json!(null))
        .await;
    wait_converged(&region, &origin).await;
    assert_eq!(snapshots_installed(&region), 2, "no further snapshot");
    for node in &region {
        assert_eq!(ask(node, "alice", "ai").await, pb::Reason::Revoked);
    }

    for node in region {
        node.shutdown().await.unwrap();
    }
    origin.node.shutdown().await.unwrap();
}
