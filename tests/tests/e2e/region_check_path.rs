//! The check path of a region node, from a client: a batch is answered at
//! one revision even while revisions land; a revision drops only the views
//! of the accounts it touched; unknown account ids cannot grow the view
//! cache past its bound; an `at_least_revision` wait ends at the request's
//! deadline with the node's own error; the explanation comes only when
//! asked.
//!
//! The region has no origin: records are proposed to its log directly, as
//! the leader proposes the origin's verified records.

use std::time::Duration;
use tollgate_model::*;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_region::{RegionCommand, RegionResponse};
use tollgate_region_node::{RegionConfig, RegionListeners, RegionNode};
use tollgate_tests::{feature_entitlement, init_tracing, loopback, wait_until, wall_clock_now};

const DEADLINE: Duration = Duration::from_secs(20);
/// Features in the catalog; revision `2k` grants account `a` feature k and
/// revision `2k + 1` grants account `b` the same feature.
const FEATURES: u64 = 40;

fn id<T: TryFrom<String, Error = ModelError>>(s: impl Into<String>) -> T {
    T::try_from(s.into()).unwrap()
}

fn feature(k: u64) -> FeatureId {
    id(format!("f-{k:02}"))
}

fn catalog_record(now: UnixSeconds) -> ChangeRecord {
    let mut mutations = vec![Mutation::PutProduct(Product {
        id: id("studio"),
        name: "Studio".into(),
    })];
    for k in 0..FEATURES {
        mutations.push(Mutation::PutFeature(Feature {
            id: feature(k),
            product: id("studio"),
            name: format!("Feature {k}"),
            kind: FeatureKind::Boolean,
            geo_rule: GeoRule::default(),
            offline_policy: None,
            config: ConfigValues::new(),
            auto_approve: None,
        }));
    }
    // The credential the tests' clients present.
    mutations.push(Mutation::PutCredential(
        tollgate_tests::app::test_credential_record(),
    ));
    for account in ["a", "b", "c"] {
        mutations.push(Mutation::PutAccount(Account {
            id: id(account),
            name: account.to_uppercase(),
            status: AccountStatus::Active,
        }));
    }
    ChangeRecord {
        revision: 1,
        committed_at: now,
        mutations,
    }
}

fn grant(now: UnixSeconds, revision: u64, account: &str, k: u64) -> ChangeRecord {
    ChangeRecord {
        revision,
        committed_at: now,
        mutations: vec![Mutation::PutEntitlement(feature_entitlement(
            &format!("ent-{account}-{k:02}"),
            account,
            feature(k).as_str(),
            now,
            revision,
        ))],
    }
}

async fn start(dir: &std::path::Path, configure: impl FnOnce(&mut RegionConfig)) -> RegionNode {
    let keys = tollgate_signing::KeyRing::generate(wall_clock_now())
        .unwrap()
        .public_set();
    let mut config = RegionConfig::new(1, dir, "https://127.0.0.1:9".into(), keys);
    config.raft.transport = tollgate_tests::pki().region_node(&config.region, 1);
    config.reconnect_backoff_max = Duration::from_secs(30);
    configure(&mut config);
    let node = RegionNode::start(
        config,
        RegionListeners {
            raft: loopback().await.into(),
            grpc: loopback().await.into(),
            http: None,
        },
        None,
    )
    .await
    .unwrap();
    node.raft()
        .initialize(&[(1, node.raft().addr().to_string())])
        .await
        .unwrap();
    node.raft()
        .wait_until(DEADLINE, "leader", |m| m.current_leader == Some(1))
        .await
        .unwrap();
    node
}

async fn propose(node: &RegionNode, records: Vec<ChangeRecord>) -> u64 {
    let last = records.last().map(|r| r.revision).unwrap();
    let outcome = node
        .raft()
        .write(RegionCommand::ApplyChanges {
            records,
            heard_at: wall_clock_now(),
        })
        .await
        .unwrap();
    assert_eq!(outcome.response, RegionResponse::Applied { revision: last });
    last
}

/// Waits until checks on `node` are answered at `revision` or later.
async fn wait_applied(node: &RegionNode, revision: u64) {
    wait_until(
        "the node's checks to reach the revision",
        DEADLINE,
        || async {
            let applied = node.applied_revision();
            if applied >= revision {
                Ok(())
            } else {
                Err(format!("applied {applied} of {revision}"))
            }
        },
    )
    .await
    .unwrap();
}

fn check(account: &str, k: u64) -> pb::CheckRequest {
    pb::CheckRequest {
        account_id: account.into(),
        feature_id: feature(k).into(),
        ..Default::default()
    }
}

async fn client(node: &RegionNode) -> CheckServiceClient<tollgate_tests::AppChannel> {
    CheckServiceClient::new(tollgate_tests::channel(node.grpc_addr()).await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_answered_at_one_revision_while_revisions_land() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |_| {}).await;
    let now = wall_clock_now();
    // The catalog record carries the clients' credential: the first batch
    // must not race the check path's view of it.
    let catalog = propose(&node, vec![catalog_record(now)]).await;
    wait_applied(&node, catalog).await;

    tracing::info!(
        "A writer grants a then b each feature, one revision each; batches ask for both."
    );
    let writer = async {
        for k in 0..FEATURES {
            propose(&node, vec![grant(now, 2 + 2 * k, "a", k)]).await;
            propose(&node, vec![grant(now, 3 + 2 * k, "b", k)]).await;
        }
    };
    let reader = async {
        let mut client = client(&node).await;
        let mut batches = 0;
        let mut moving = 0u32;
        let mut revisions = std::collections::BTreeSet::new();
        loop {
            let checks: Vec<pb::CheckRequest> = (0..FEATURES)
                .flat_map(|k| [check("a", k), check("b", k)])
                .collect();
            let reply = match client
                .batch_check(pb::BatchCheckRequest {
                    checks,
                    consistency: None,
                })
                .await
            {
                Ok(reply) => reply.into_inner(),
                // The node's documented answer when every revision it read
                // moved under it (writes landing back to back on a loaded
                // machine): UNAVAILABLE STATE_MOVING, "try again". Never a
                // mixed batch, which is what this test is about.
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && status
                            .metadata()
                            .get("tollgate-error-code")
                            .is_some_and(|c| c == "STATE_MOVING") =>
                {
                    moving += 1;
                    continue;
                }
                Err(status) => panic!("a batch failed: {status:?}"),
            };
            let r = reply.revision;
            for (i, result) in reply.results.iter().enumerate() {
                let (k, account) = (i as u64 / 2, if i % 2 == 0 { "a" } else { "b" });
                let granted_at = if account == "a" { 2 + 2 * k } else { 3 + 2 * k };
                let Some(pb::batch_check_result::Result::Decision(d)) = &result.result else {
                    panic!("item {i} was not decided: {result:?}");
                };
                assert_eq!(
                    d.allowed,
                    granted_at <= r,
                    "batch at revision {r}: {account} / feature {k} (granted at {granted_at}) \
                     answered {:?}: the batch mixed revisions",
                    d.reason()
                );
            }
            batches += 1;
            revisions.insert(r);
            if r > 2 * FEATURES {
                tracing::info!(moving, "Batches answered STATE_MOVING (retried).");
                return (batches, revisions.len());
            }
        }
    };
    let ((), (batches, distinct)) = tokio::join!(writer, reader);
    tracing::info!(
        batches,
        distinct,
        "Every batch was consistent with its revision."
    );
    assert!(
        distinct >= 2,
        "the batches saw revisions move ({distinct} distinct)"
    );
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_drops_only_the_views_it_touched_and_unknown_ids_are_bounded() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.account_views_cached_max = 10).await;
    let now = wall_clock_now();
    let mut revision = propose(&node, vec![catalog_record(now)]).await;
    revision = propose(&node, vec![grant(now, revision + 1, "a", 0)]).await;
    wait_applied(&node, revision).await;
    let mut client = client(&node).await;

    tracing::info!("Three accounts' views are built by their first checks.");
    for account in ["a", "b", "c"] {
        client.check(check(account, 0)).await.unwrap();
    }
    assert_eq!(node.status().account_views_cached, 3);

    tracing::info!("A revision touching b drops b's view only; the answer follows it.");
    revision = propose(&node, vec![grant(now, revision + 1, "b", 0)]).await;
    wait_applied(&node, revision).await;
    assert_eq!(node.status().account_views_cached, 2, "a and c are kept");
    let reply = client.check(check("b", 0)).await.unwrap().into_inner();
    assert_eq!(reply.revision, revision);
    assert_eq!(reply.decision.unwrap().reason(), pb::Reason::Allow);

    tracing::info!("A catalog change drops every view.");
    let mut catalog = catalog_record(now);
    catalog.revision = revision + 1;
    catalog.mutations.truncate(2);
    revision = propose(&node, vec![catalog]).await;
    wait_applied(&node, revision).await;
    assert_eq!(node.status().account_views_cached, 0);

    tracing::info!("Fifty unknown account ids: each answered, the cache stays within 10.");
    for n in 0..50 {
        let reply = client
            .check(check(&format!("nobody-{n}"), 0))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.decision.unwrap().reason(), pb::Reason::UnknownAccount);
    }
    let cached = node.status().account_views_cached;
    assert!(cached <= 10, "{cached} views cached, over the bound of 10");
    assert!(cached >= 1, "the latest views are cached");
    node.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_wait_ends_at_the_deadline_and_explanations_come_when_asked() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    // The node would wait 30 s; the request's deadline must end it sooner.
    let node = start(dir.path(), |c| {
        c.revision_wait_max = Duration::from_secs(30)
    })
    .await;
    let now = wall_clock_now();
    let mut revision = propose(&node, vec![catalog_record(now)]).await;
    revision = propose(&node, vec![grant(now, revision + 1, "a", 0)]).await;
    wait_applied(&node, revision).await;
    let mut client = client(&node).await;

    tracing::info!("A wait for a revision not coming, with a 300 ms deadline.");
    let mut request = tonic::Request::new(pb::CheckRequest {
        consistency: Some(pb::Consistency {
            requirement: Some(pb::consistency::Requirement::AtLeastRevision(
                revision + 100,
            )),
        }),
        ..check("a", 0)
    });
    request.set_timeout(Duration::from_millis(300));
    let refused = client.check(request).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::DeadlineExceeded, "{refused:?}");
    assert_eq!(
        refused
            .metadata()
            .get("tollgate-error-code")
            .and_then(|v| v.to_str().ok()),
        Some("REVISION_NOT_APPLIED"),
        "the node answered before the client's deadline: {refused:?}"
    );
    assert!(
        refused.message().contains(&format!("applied {revision}")),
        "{refused:?}"
    );

    tracing::info!("The explanation is filled only when asked for.");
    let plain = client.check(check("a", 0)).await.unwrap().into_inner();
    assert_eq!(plain.decision.unwrap().explanation, "");
    let explained = client
        .check(pb::CheckRequest {
            explain: true,
            ..check("a", 0)
        })
        .await
        .unwrap()
        .into_inner();
    let explanation = explained.decision.unwrap().explanation;
    assert!(explanation.contains("ent-a-00"), "{explanation:?}");
    node.shutdown().await.unwrap();
}
