//! One hard cap, two regions consuming at once (eu: three nodes, us: one),
//! all real: the regions together never allow more than the cap, the
//! origin never has more outstanding than its bound, and the origin's
//! billing total equals the consumptions allowed, exactly. A region cut off
//! from the origin keeps enforcing the slice it holds; once healed, the
//! totals reconcile exactly.

use reqwest::Method;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate_model::{AccountId, FeatureId, UnixSeconds, UsageCounter, UsagePeriod};
use tollgate_node::{OriginConfig, RegionNode};
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_tests::{init_tracing, start_region, wait_until, CutProxy, TestOrigin};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(30);
const BOUND: u64 = 40;

async fn consume(node: &RegionNode, feature: &str) -> bool {
    let mut client = CheckServiceClient::connect(format!("http://{}", node.grpc_addr()))
        .await
        .unwrap();
    let d = client
        .check(pb::CheckRequest {
            account_id: "acme".into(),
            subject_id: None,
            feature_id: feature.into(),
            consume: 1,
            location: None,
            consistency: None,
            idempotency_key: None,
        })
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    if !d.allowed {
        assert_eq!(d.reason(), pb::Reason::UsageCapReached, "{}", d.explanation);
    }
    d.allowed
}

fn counter(feature: &str) -> UsageCounter {
    let now = UnixSeconds(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    );
    UsageCounter {
        account: AccountId::new("acme").unwrap(),
        feature: FeatureId::new(feature).unwrap(),
        period: UsagePeriod::Month.key_at(now),
    }
}

/// Consumes on the nodes at `which`, three clients each, `rounds` times
/// each; the number allowed.
async fn burst(
    nodes: &Arc<Vec<RegionNode>>,
    which: &[usize],
    feature: &'static str,
    rounds: u64,
) -> u64 {
    let allowed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for &i in which {
        for _ in 0..3 {
            let (nodes, allowed) = (nodes.clone(), allowed.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..rounds {
                    if consume(&nodes[i], feature).await {
                        allowed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    allowed.load(Ordering::SeqCst)
}

async fn wait_billed(origin: &TestOrigin, feature: &str, expected: u64) {
    let c = counter(feature);
    wait_until("the origin's billing total", DEADLINE, || async {
        let q = origin.node.quota(&c).unwrap()?;
        (q.consumed() == expected).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", origin.node.quota(&c)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_regions_share_one_cap_and_bill_exactly() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut origin_config = OriginConfig::new(1, dir.path().join("origin"));
    origin_config.feed.heartbeat_interval = Duration::from_millis(100);
    origin_config.quota_outstanding_max = BOUND;
    let origin = TestOrigin::start(origin_config, dir.path()).await;
    origin.seed(&[]).await;
    let mut head = 0;
    for (feature, cap) in [("exports", 100), ("imports", 60)] {
        origin
            .ok(
                Method::PUT,
                &format!("/v1/features/{feature}"),
                json!({"id": feature, "product": "studio", "name": feature,
                    "kind": {"metered": {"unit": feature, "period": "month"}}}),
            )
            .await;
        head = origin
            .ok(
                Method::POST,
                "/v1/entitlements",
                json!({"id": format!("e-{feature}"), "account": "acme",
                    "grant": {"feature": {"feature": feature,
                        "usage_cap": {"limit": cap, "enforcement": "hard"}}},
                    "valid_from": 1_700_000_000}),
            )
            .await["revision"]
            .as_u64()
            .unwrap();
    }
    let proxy = CutProxy::start(origin.node.feed_addr()).await.unwrap();
    let tune = |c: &mut tollgate_node::RegionConfig| {
        c.meter.chunk_idle = Duration::from_millis(200);
        c.quota_sync_interval = Duration::from_millis(200);
        c.origin_idle_timeout = Duration::from_secs(1);
        c.reconnect_backoff_max = Duration::from_millis(200);
    };
    let mut nodes = start_region(
        3,
        &dir.path().join("eu"),
        &origin.node,
        format!("http://{}", proxy.addr()),
        None,
        |c| {
            tune(c);
            c.region = "eu".into();
        },
    )
    .await;
    nodes.extend(
        start_region(
            1,
            &dir.path().join("us"),
            &origin.node,
            format!("http://{}", origin.node.feed_addr()),
            None,
            |c| {
                tune(c);
                c.region = "us".into();
            },
        )
        .await,
    );
    for node in &nodes {
        wait_until("both regions to catch up", DEADLINE, || async {
            (node.applied_revision() >= head).then_some(())
        })
        .await
        .unwrap();
    }
    let nodes = Arc::new(nodes);
    let (all, eu, us) = ([0, 1, 2, 3], [0, 1, 2], [3]);

    info!("Both regions consume one cap of 100 at once.");
    let allowed = burst(&nodes, &all, "exports", 15).await;
    assert!(allowed <= 100, "{allowed} allowed past a cap of 100");
    let c = counter("exports");
    let q = origin.node.quota(&c).unwrap().unwrap();
    assert!(
        q.outstanding() <= BOUND,
        "outstanding {} over the bound",
        q.outstanding()
    );
    assert!(q.allotted() <= 100, "{q:?}");
    assert_eq!(q.regions.len(), 2, "both regions leased: {q:?}");

    info!("Keep consuming everywhere until the whole cap is used; never a unit more.");
    let total = Arc::new(AtomicU64::new(allowed));
    wait_until("the whole cap to be consumed", DEADLINE, || {
        let (nodes, total) = (nodes.clone(), total.clone());
        async move {
            for node in nodes.iter() {
                if consume(node, "exports").await {
                    total.fetch_add(1, Ordering::SeqCst);
                }
            }
            (total.load(Ordering::SeqCst) >= 100).then_some(())
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; allowed {}", total.load(Ordering::SeqCst)));
    for node in nodes.iter() {
        assert!(!consume(node, "exports").await, "past the cap");
    }
    assert_eq!(total.load(Ordering::SeqCst), 100, "exactly the cap");
    wait_billed(&origin, "exports", 100).await;

    info!("Cut eu off after both hold slices of the imports cap (60).");
    let mut imports = burst(&nodes, &all, "imports", 2).await;
    wait_until("both regions to hold imports slices", DEADLINE, || async {
        let q = origin.node.quota(&counter("imports")).unwrap()?;
        (q.regions.len() == 2).then_some(())
    })
    .await
    .unwrap();
    proxy.cut();
    let eu_cut = burst(&nodes, &eu, "imports", 10).await;
    let eu_slice = {
        let q = origin.node.quota(&counter("imports")).unwrap().unwrap();
        q.regions["eu"].granted - q.regions["eu"].released
    };
    assert!(
        eu_cut <= eu_slice,
        "cut off, eu allowed {eu_cut} with a slice of {eu_slice}"
    );
    imports += eu_cut;
    imports += burst(&nodes, &us, "imports", 30).await;
    assert!(imports <= 60, "{imports} allowed past a cap of 60");

    info!("Healed: the totals reconcile exactly.");
    proxy.heal();
    wait_billed(&origin, "imports", imports).await;
    let q = origin.node.quota(&counter("imports")).unwrap().unwrap();
    assert!(q.allotted() <= 60, "{q:?}");

    let nodes = Arc::try_unwrap(nodes)
        .ok()
        .expect("no client holds the nodes");
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    origin.node.shutdown().await.unwrap();
}
