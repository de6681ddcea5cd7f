//! `Watch` on a regional follower: one account's changes (and the
//! catalog's), replayed from a revision and then followed live, with
//! heartbeats when idle; another account's changes are left out; a watcher
//! that asks for changes the node no longer keeps gets the state first; bad
//! requests and too many watchers are refused.

use reqwest::Method;
use serde_json::json;
use std::time::Duration;
use tollgate_engine::{WatchEvent, WatchRequest};
use tollgate_model::{AccountId, ChangeRecord, Dataset, EntitlementStatus, Mutation};
use tollgate_origin_node::OriginConfig;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_region_node::RegionNode;
use tollgate_tests::{init_tracing, start_region, wait_until, TestOrigin};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(20);

type Events = tonic::Streaming<pb::WatchResponse>;

async fn watch(
    node: &RegionNode,
    account: Option<&str>,
    from: u64,
) -> Result<Events, tonic::Status> {
    let mut client = CheckServiceClient::new(tollgate_tests::channel(node.grpc_addr()).await);
    let request = WatchRequest {
        account: account.map(|a| AccountId::new(a).unwrap()),
        from_revision: from,
    };
    client
        .watch(pb::WatchRequest::from(request))
        .await
        .map(|r| r.into_inner())
}

async fn next(events: &mut Events) -> WatchEvent {
    let message = tokio::time::timeout(DEADLINE, events.message())
        .await
        .expect("a watch event in time")
        .expect("the stream is healthy")
        .expect("the stream is open");
    WatchEvent::try_from(message).unwrap()
}

/// Reads change batches until `through` is reached; the records received.
async fn changes_through(events: &mut Events, through: u64) -> Vec<ChangeRecord> {
    let mut out = Vec::new();
    loop {
        match next(events).await {
            WatchEvent::Changes {
                changes,
                through_revision,
            } => {
                out.extend(changes);
                if through_revision >= through {
                    return out;
                }
            }
            WatchEvent::Heartbeat { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn accounts_touched(records: &[ChangeRecord]) -> Vec<String> {
    let mut accounts: Vec<String> = records
        .iter()
        .flat_map(|r| r.mutations.iter())
        .filter_map(|m| m.account().map(|a| a.to_string()))
        .collect();
    accounts.dedup();
    accounts
}

async fn grant(origin: &TestOrigin, id: &str, account: &str) -> u64 {
    origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": id, "account": account,
                "grant": {"feature": {"feature": "export"}}, "valid_from": 1_700_000_000}),
        )
        .await["revision"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_streams_one_accounts_changes_then_follows_live() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut origin_config = OriginConfig::new(1, dir.path().join("origin"));
    origin_config.feed.heartbeat_interval = Duration::from_millis(100);
    let origin = TestOrigin::start(origin_config, dir.path()).await;
    origin.seed(&["export"]).await;
    origin
        .ok(
            Method::PUT,
            "/v1/accounts/globex",
            json!({"id": "globex", "name": "Globex"}),
        )
        .await;
    grant(&origin, "e-acme", "acme").await;
    let head = grant(&origin, "e-globex", "globex").await;

    let region = start_region(3, dir.path(), &origin.node, origin.feed_url(), None, |c| {
        c.watch_heartbeat = Duration::from_millis(200);
        c.watchers_max = 2;
    })
    .await;
    for node in &region {
        wait_until("the region to catch up", DEADLINE, || async {
            (node.applied_revision() >= head).then_some(())
        })
        .await
        .unwrap();
    }
    let leader = region[0].raft().metrics().current_leader.unwrap();
    let follower = region.iter().find(|n| n.raft().id() != leader).unwrap();

    info!(
        "Replaying acme's history from 0 on a follower: the catalog and acme, nothing of globex."
    );
    let mut acme = watch(follower, Some("acme"), 0).await.unwrap();
    let replayed = changes_through(&mut acme, head).await;
    assert_eq!(accounts_touched(&replayed), vec!["acme".to_string()]);
    assert!(replayed
        .iter()
        .all(|r| r.revision <= head && !r.mutations.is_empty()));
    assert!(
        replayed.windows(2).all(|w| w[0].revision < w[1].revision),
        "in revision order"
    );
    let mut cache = Dataset::default();
    for m in replayed.into_iter().flat_map(|r| r.mutations) {
        cache.apply(m);
    }
    let origin_data = origin.node.served_dataset().unwrap();
    assert_eq!(cache.catalog, origin_data.catalog, "the whole catalog");
    assert_eq!(cache.entitlements.len(), 1);
    assert_eq!(cache.entitlements[0].id.as_str(), "e-acme");

    info!("Idle: heartbeats say how far the node has applied.");
    match next(&mut acme).await {
        WatchEvent::Heartbeat {
            applied_revision, ..
        } => assert_eq!(applied_revision, head),
        other => panic!("expected a heartbeat, got {other:?}"),
    }

    info!(
        "Live: globex's change moves the stream on without its content; acme's revocation arrives."
    );
    let globex_change = grant(&origin, "e-globex-2", "globex").await;
    let revoked = origin
        .ok(Method::POST, "/v1/entitlements/e-acme/revoke", json!(null))
        .await["revision"]
        .as_u64()
        .unwrap();
    assert!(revoked > globex_change);
    let live = changes_through(&mut acme, revoked).await;
    assert_eq!(live.len(), 1, "only acme's change: {live:?}");
    assert_eq!(live[0].revision, revoked);
    match &live[0].mutations[..] {
        [Mutation::PutEntitlement(e)] => {
            assert_eq!(e.id.as_str(), "e-acme");
            assert_eq!(e.status, EntitlementStatus::Revoked);
        }
        other => panic!("unexpected mutations {other:?}"),
    }

    info!("All accounts from a mid revision: exactly the records after it.");
    let mut all = watch(follower, None, head).await.unwrap();
    let after = changes_through(&mut all, revoked).await;
    assert_eq!(
        after.iter().map(|r| r.revision).collect::<Vec<_>>(),
        vec![globex_change, revoked]
    );

    info!("A third watcher is refused: this node serves two.");
    let refused = watch(follower, None, 0).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
    drop(all);
    wait_until("a slot to free up", DEADLINE, || async {
        watch(follower, None, revoked).await.ok()
    })
    .await
    .unwrap();

    info!("A malformed account id is refused.");
    let mut client = CheckServiceClient::new(tollgate_tests::channel(follower.grpc_addr()).await);
    let bad = client
        .watch(pb::WatchRequest {
            account_id: Some("not an id!".into()),
            from_revision: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("account_id"), "{}", bad.message());

    drop(acme);
    for node in region {
        node.shutdown().await.unwrap();
    }
    origin.node.shutdown().await.unwrap();
}
