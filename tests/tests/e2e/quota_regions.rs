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
use tollgate_origin_node::OriginConfig;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_proto::usage::v1 as usage;
use tollgate_proto::usage::v1::usage_client::UsageClient;
use tollgate_region_node::RegionNode;
use tollgate_tests::{init_tracing, start_region, wait_until, CutProxy, TestOrigin};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(30);
const BOUND: u64 = 40;

async fn consume(node: &RegionNode, feature: &str) -> bool {
    let mut client = CheckServiceClient::new(tollgate_tests::channel(node.grpc_addr()).await);
    let d = client
        .check(pb::CheckRequest {
            explain: false,
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
    for (feature, cap) in [("exports", 100), ("imports", 60), ("clips", 20)] {
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
    let tune = |c: &mut tollgate_region_node::RegionConfig| {
        c.meter.chunk_idle = Duration::from_millis(200);
        c.quota_sync_interval = Duration::from_millis(200);
        c.slice_idle = Duration::from_millis(500);
        c.origin_idle_timeout = Duration::from_secs(1);
        c.reconnect_backoff_max = Duration::from_millis(200);
    };
    let mut nodes = start_region(
        3,
        &dir.path().join("eu"),
        &origin.node,
        tollgate_tests::https(proxy.addr()),
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
            origin.feed_url(),
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

    info!("A region that stops using a cap hands its unused slice back for the other.");
    let mut eu_clips = 0;
    for _ in 0..5 {
        eu_clips += u64::from(consume(&nodes[0], "clips").await);
    }
    assert_eq!(eu_clips, 5);
    let us_total = Arc::new(AtomicU64::new(0));
    wait_until("us to get the rest of the clips cap", DEADLINE, || {
        let (nodes, us_total) = (nodes.clone(), us_total.clone());
        async move {
            if consume(&nodes[3], "clips").await {
                us_total.fetch_add(1, Ordering::SeqCst);
            }
            (us_total.load(Ordering::SeqCst) >= 15).then_some(())
        }
    })
    .await
    .unwrap();
    assert!(!consume(&nodes[3], "clips").await, "20 in all");
    assert_eq!(us_total.load(Ordering::SeqCst), 15);

    let per_counter: u64 = ["exports", "imports", "clips"]
        .iter()
        .map(|f| {
            origin
                .node
                .quota(&counter(f))
                .unwrap()
                .map_or(0, |q| q.outstanding())
        })
        .sum();
    assert_eq!(
        origin.node.quota_outstanding_total(),
        per_counter,
        "the total outstanding (the gauge) is the sum over counters"
    );

    info!("The origin's usage report: per region, JSON and CSV; and what acme never used.");
    let report = origin
        .ok(
            Method::GET,
            "/v1/accounts/acme/usage?feature=exports",
            json!(null),
        )
        .await;
    let row = &report["items"][0];
    assert_eq!(row["consumed"], 100);
    assert_eq!(row["limit"], 100);
    let by_region = row["regions"]["eu"]["consumed"].as_u64().unwrap()
        + row["regions"]["us"]["consumed"].as_u64().unwrap();
    assert_eq!(by_region, 100, "{row}");
    let (status, csv) = origin.get_text("/v1/accounts/acme/usage?format=csv").await;
    assert!(status.is_success(), "{status} {csv}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "account,feature,period,region,limit,granted,released,consumed"
    );
    let csv_total: u64 = lines[1..]
        .iter()
        .filter(|l| l.split(',').nth(1) == Some("exports"))
        .map(|l| l.rsplit(',').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(csv_total, 100);
    let (status, _) = origin.get_text("/v1/accounts/acme/usage?format=xml").await;
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST);
    origin
        .ok(
            Method::PUT,
            "/v1/features/uploads",
            json!({"id": "uploads", "product": "studio", "name": "uploads",
                "kind": {"metered": {"unit": "uploads", "period": "day"}}}),
        )
        .await;
    origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "e-uploads", "account": "acme",
                "grant": {"feature": {"feature": "uploads"}}, "valid_from": 1_700_000_000}),
        )
        .await;
    let unused = origin
        .ok(Method::GET, "/v1/accounts/acme/usage/unused", json!(null))
        .await;
    assert_eq!(
        unused["items"],
        json!([{"feature": "uploads", "entitlements": ["e-uploads"]}]),
        "exports, imports and clips were used; uploads never"
    );

    info!("Three floating seats shared by both regions.");
    origin.seed(&["cad"]).await;
    origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "e-cad", "account": "acme",
                "grant": {"feature": {"feature": "cad"}}, "valid_from": 1_700_000_000,
                "seats": {"count": 3, "mode": {"floating": {"lease_ttl_seconds": 600}}}}),
        )
        .await;
    for user in ["ann", "bob", "cyd", "dan"] {
        origin
            .ok(
                Method::PUT,
                &format!("/v1/accounts/acme/subjects/{user}"),
                json!({"id": user, "account": "acme", "kind": "user"}),
            )
            .await;
    }
    let head = origin.node.head_revision();
    for node in nodes.iter() {
        wait_until("the seats to reach every node", DEADLINE, || async {
            (node.applied_revision() >= head).then_some(())
        })
        .await
        .unwrap();
    }
    let seat = |node: usize, user: &'static str, acquire: bool| {
        let nodes = nodes.clone();
        async move {
            let mut client =
                UsageClient::new(tollgate_tests::channel(nodes[node].grpc_addr()).await);
            let request = usage::SeatRequest {
                account_id: "acme".into(),
                subject_id: user.into(),
                feature_id: "cad".into(),
            };
            let r = if acquire {
                client.acquire_seat(request).await
            } else {
                client.release_seat(request).await
            };
            r.unwrap().into_inner().status()
        }
    };
    let held_everywhere = || {
        let q = origin
            .node
            .seats(&tollgate_model::EntitlementId::new("e-cad").unwrap())
            .unwrap()
            .unwrap_or_default();
        q.regions
            .values()
            .map(|r| r.granted - r.released)
            .sum::<u64>()
    };
    // Each region leases seats as it needs them; a racing acquire may
    // come back FULL while the lease is on its way, so retry.
    for (node, user) in [(0, "ann"), (1, "bob"), (3, "cyd")] {
        wait_until("a seat", DEADLINE, || async {
            (seat(node, user, true).await == usage::SeatStatus::Held).then_some(())
        })
        .await
        .unwrap();
        assert!(held_everywhere() <= 3);
    }
    assert_eq!(
        seat(3, "dan", true).await,
        usage::SeatStatus::Full,
        "three seats are held across both regions"
    );
    assert_eq!(seat(2, "dan", true).await, usage::SeatStatus::Full);
    assert_eq!(held_everywhere(), 3);
    info!("Bob lets go in eu: eu hands the seat back, and us can take it.");
    assert_eq!(seat(1, "bob", false).await, usage::SeatStatus::Released);
    wait_until("the seat to move from eu to us", DEADLINE, || async {
        (seat(3, "dan", true).await == usage::SeatStatus::Held).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(held_everywhere(), 3);

    let nodes = Arc::try_unwrap(nodes)
        .ok()
        .expect("no client holds the nodes");
    for node in nodes {
        node.shutdown().await.unwrap();
    }
    origin.node.shutdown().await.unwrap();
}

/// A region asks the origin's Quota service, as its own nodes would (its
/// certificate names it), with a cap far above the real one: it gets what
/// the origin's entitlements allow and no more. A counter the origin holds
/// no hard cap for is refused with a stable code and writes nothing; seat
/// leases are bounded by the origin's own seat count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_asking_with_an_inflated_cap_gets_only_the_origins_cap() {
    use tollgate_proto::origin::v1 as quota;
    use tollgate_proto::origin::v1::quota_client::QuotaClient;
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let mut origin_config = OriginConfig::new(1, dir.path().join("origin"));
    // The overshoot bound plays no part here.
    origin_config.quota_outstanding_max = u64::MAX;
    let origin = TestOrigin::start(origin_config, dir.path()).await;
    origin.seed(&["cad"]).await;
    for feature in ["exports", "imports"] {
        origin
            .ok(
                Method::PUT,
                &format!("/v1/features/{feature}"),
                json!({"id": feature, "product": "studio", "name": feature,
                    "kind": {"metered": {"unit": feature, "period": "month"}}}),
            )
            .await;
    }
    // exports: 100 hard plus a top-up pack of 20; imports: unlimited.
    for (id, feature, cap) in [
        (
            "e-exports",
            "exports",
            json!({"limit": 100, "enforcement": "hard"}),
        ),
        (
            "e-exports-pack",
            "exports",
            json!({"limit": 20, "enforcement": "hard", "additive": true}),
        ),
        ("e-imports", "imports", serde_json::Value::Null),
    ] {
        origin
            .ok(
                Method::POST,
                "/v1/entitlements",
                json!({"id": id, "account": "acme",
                    "grant": {"feature": {"feature": feature, "usage_cap": cap}},
                    "valid_from": 1_700_000_000}),
            )
            .await;
    }
    origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "e-cad", "account": "acme",
                "grant": {"feature": {"feature": "cad"}},
                "seats": {"count": 3, "mode": {"floating": {"lease_ttl_seconds": 60}}},
                "valid_from": 1_700_000_000}),
        )
        .await;
    let eu_node = tollgate_tests::pki::pki().client_as(tollgate_tls::Subject::RegionNode {
        region: "eu".into(),
        node: 1,
    });
    let mut client = QuotaClient::new(
        tollgate_tests::pki::channel_with(&eu_node, origin.node.feed_addr()).await,
    );
    let lease = |feature: &str, account: &str, limit: u64, want: u64| {
        let c = counter(feature);
        quota::LeaseRequest {
            region: "eu".into(),
            counter: Some(quota::Counter {
                account_id: account.into(),
                feature_id: c.feature.to_string(),
                period: c.period.to_string(),
            }),
            limit,
            want,
        }
    };
    let code_of = |status: &tonic::Status| {
        status
            .metadata()
            .get("tollgate-error-code")
            .map(|v| v.to_str().unwrap().to_string())
    };

    info!("Asking with a cap of a million gets the origin's 120 (100 + the pack of 20).");
    let granted = client
        .lease(lease("exports", "acme", 1_000_000, 1_000_000))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(granted.granted, 120, "{granted:?}");
    assert_eq!(granted.granted_total, 120);
    let state = origin.node.quota(&counter("exports")).unwrap().unwrap();
    assert_eq!(state.limit, 120, "the origin records its own cap");
    assert_eq!(state.allotted(), 120);

    info!("Nothing is left, whatever the region claims.");
    let head = origin.node.head_revision();
    let refused = client
        .lease(lease("exports", "acme", u64::MAX, 1))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::FailedPrecondition,
        "{refused:?}"
    );
    assert_eq!(
        origin.node.head_revision(),
        head,
        "a refused lease was recorded"
    );

    info!("An unlimited feature has no hard cap to lease, and an unknown account has none either.");
    for (feature, account, code, error_code) in [
        (
            "imports",
            "acme",
            tonic::Code::FailedPrecondition,
            "NO_HARD_CAP",
        ),
        (
            "exports",
            "nobody",
            tonic::Code::NotFound,
            "UNKNOWN_ACCOUNT",
        ),
        (
            "cad",
            "acme",
            tonic::Code::FailedPrecondition,
            "FEATURE_NOT_METERED",
        ),
    ] {
        let refused = client
            .lease(lease(feature, account, 1_000, 10))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code, "{feature}/{account}: {refused:?}");
        assert_eq!(
            code_of(&refused).as_deref(),
            Some(error_code),
            "{refused:?}"
        );
        assert_eq!(
            origin.node.head_revision(),
            head,
            "{feature}/{account}: recorded"
        );
    }
    assert!(origin.node.quota(&counter("imports")).unwrap().is_none());

    info!("A region asking for a thousand seats gets the entitlement's three.");
    let seats = client
        .lease_seats(quota::LeaseSeatsRequest {
            region: "eu".into(),
            entitlement_id: "e-cad".into(),
            want: 1_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seats.granted, 3, "{seats:?}");
    let none_left = client
        .lease_seats(quota::LeaseSeatsRequest {
            region: "eu".into(),
            entitlement_id: "e-cad".into(),
            want: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(none_left.code(), tonic::Code::FailedPrecondition);

    origin.node.shutdown().await.unwrap();
}
