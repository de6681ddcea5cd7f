//! Usage caps and floating seats inside one region of three nodes, all
//! real: checks with `consume` spread over every node never pass a hard
//! cap, and the region's counter equals the consumptions allowed, exactly;
//! a retried check (same idempotency key, another node) is counted once; a
//! soft cap allows and flags overage; concurrent seat acquisitions over all
//! nodes never exceed the seats, expired leases free them, and a leader
//! crash loses no lease.

use reqwest::Method;
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tollgate_model::{AccountId, FeatureId, UnixSeconds, UsagePeriod};
use tollgate_origin_node::OriginConfig;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_proto::usage::v1 as usage;
use tollgate_proto::usage::v1::usage_client::UsageClient;
use tollgate_region::usage::counter_state;
use tollgate_region::Counter;
use tollgate_region_node::RegionNode;
use tollgate_tests::{init_tracing, start_region, wait_until, TestOrigin};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(30);
const CAP: u64 = 50;

async fn consume(node: &RegionNode, feature: &str, key: Option<String>) -> pb::Decision {
    let mut client = CheckServiceClient::new(tollgate_tests::channel(node.grpc_addr()).await);
    client
        .check(pb::CheckRequest {
            explain: false,
            account_id: "acme".into(),
            subject_id: Some("alice".into()),
            feature_id: feature.into(),
            consume: 1,
            location: None,
            consistency: None,
            idempotency_key: key,
        })
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap()
}

fn now() -> UnixSeconds {
    UnixSeconds(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
}

fn counter(feature: &str) -> Counter {
    Counter {
        account: AccountId::new("acme").unwrap(),
        feature: FeatureId::new(feature).unwrap(),
        period: UsagePeriod::Month.key_at(now()),
    }
}

/// The region's counter as `node` applied it, once every node reported.
async fn counted(node: &RegionNode, feature: &str, expected: u64) -> u64 {
    let view = node.raft().view();
    wait_until("the region's counter to settle", DEADLINE, || async {
        let c = counter_state(&view, &counter(feature)).unwrap();
        (c.consumed == expected).then_some(c.consumed)
    })
    .await
    .unwrap_or_else(|e| {
        let c = counter_state(&view, &counter(feature)).unwrap();
        panic!("{e}: counter is {c:?}, expected {expected} consumed")
    })
}

async fn seat(node: &RegionNode, subject: &str, acquire: bool) -> usage::SeatResponse {
    let client = UsageClient::new(tollgate_tests::channel(node.grpc_addr()).await);
    let request = usage::SeatRequest {
        account_id: "acme".into(),
        subject_id: subject.into(),
        feature_id: "cad".into(),
    };
    // UNAVAILABLE is the region's "try again" (no leader during an
    // election); a client retries it, so the test does too.
    wait_until("the region to record the seat", DEADLINE, || {
        let (mut client, request) = (client.clone(), request.clone());
        async move {
            let answer = if acquire {
                client.acquire_seat(request).await
            } else {
                client.release_seat(request).await
            };
            match answer {
                Ok(reply) => Some(reply.into_inner()),
                Err(status) if status.code() == tonic::Code::Unavailable => None,
                Err(status) => panic!("seat call failed: {status}"),
            }
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_and_seats_hold_across_every_node_of_a_region() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let origin =
        TestOrigin::start(OriginConfig::new(1, dir.path().join("origin")), dir.path()).await;
    origin.seed(&["cad"]).await;
    for (feature, limit, enforcement) in [("exports", CAP, "hard"), ("renders", 5, "soft")] {
        origin
            .ok(
                Method::PUT,
                &format!("/v1/features/{feature}"),
                json!({"id": feature, "product": "studio", "name": feature,
                    "kind": {"metered": {"unit": feature, "period": "month"}}}),
            )
            .await;
        origin
            .ok(
                Method::POST,
                "/v1/entitlements",
                json!({"id": format!("e-{feature}"), "account": "acme",
                    "grant": {"feature": {"feature": feature,
                        "usage_cap": {"limit": limit, "enforcement": enforcement}}},
                    "valid_from": 1_700_000_000}),
            )
            .await;
    }
    for subject in (0..10).map(|i| format!("user-{i}")) {
        origin
            .ok(
                Method::PUT,
                &format!("/v1/accounts/acme/subjects/{subject}"),
                json!({"id": subject, "account": "acme", "kind": "user"}),
            )
            .await;
    }
    let head = origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "e-cad", "account": "acme",
                "grant": {"feature": {"feature": "cad"}}, "valid_from": 1_700_000_000,
                // Long enough that no lease expires while the race and the
                // checks after it run on a loaded machine; short enough
                // that the test's last step sees one expire.
                "seats": {"count": 3, "mode": {"floating": {"lease_ttl_seconds": 8}}}}),
        )
        .await["revision"]
        .as_u64()
        .unwrap();

    let region = Arc::new(
        start_region(3, dir.path(), &origin.node, origin.feed_url(), None, |c| {
            c.meter.chunk_idle = Duration::from_millis(200)
        })
        .await,
    );
    for node in region.iter() {
        wait_until("the region to catch up", DEADLINE, || async {
            (node.applied_revision() >= head).then_some(())
        })
        .await
        .unwrap();
    }

    info!("A burst of 120 consumptions over all three nodes against a cap of {CAP}.");
    let allowed = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for worker in 0..12u64 {
        let (region, allowed) = (region.clone(), allowed.clone());
        clients.push(tokio::spawn(async move {
            for i in 0..10u64 {
                let node = &region[((worker + i) % 3) as usize];
                let key = format!("burst-{worker}-{i}");
                let d = consume(node, "exports", Some(key)).await;
                if d.allowed {
                    allowed.fetch_add(1, Ordering::SeqCst);
                } else {
                    assert_eq!(d.reason(), pb::Reason::UsageCapReached, "{}", d.explanation);
                }
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let burst = allowed.load(Ordering::SeqCst);
    assert!(burst <= CAP, "{burst} allowed past a cap of {CAP}");

    info!("Idle chunks go back; the rest of the cap is used up, and not a unit more.");
    let mut extra = 0;
    wait_until("the whole cap to be consumed", DEADLINE, || {
        let region = region.clone();
        let key = format!("late-{extra}");
        extra += 1;
        let allowed = allowed.clone();
        async move {
            for node in region.iter() {
                if consume(node, "exports", Some(format!("{key}-{}", node.raft().id())))
                    .await
                    .allowed
                {
                    allowed.fetch_add(1, Ordering::SeqCst);
                }
            }
            (allowed.load(Ordering::SeqCst) >= CAP).then_some(())
        }
    })
    .await
    .unwrap();
    assert_eq!(allowed.load(Ordering::SeqCst), CAP, "exactly the cap");
    for node in region.iter() {
        let d = consume(node, "exports", None).await;
        assert_eq!(d.reason(), pb::Reason::UsageCapReached);
        assert_eq!(d.remaining, Some(0));
        assert_eq!(d.limit, Some(CAP));
    }
    assert_eq!(
        counted(&region[0], "exports", CAP).await,
        CAP,
        "counted exactly"
    );
    for node in region.iter() {
        let status = wait_until("every node to see its usage applied", DEADLINE, || async {
            let status = node.status();
            (status.metering.unreported_units == 0).then_some(status)
        })
        .await
        .unwrap();
        assert!(status.metering.batches >= 1, "{:?}", status.metering);
    }

    info!("A retried check with the same key, on another node, is counted once.");
    let first = consume(&region[0], "renders", Some("retry-me".into())).await;
    assert!(first.allowed);
    counted(&region[1], "renders", 1).await;
    let retry = consume(&region[1], "renders", Some("retry-me".into())).await;
    assert!(retry.allowed, "the retry gets the same answer");
    info!("A soft cap allows past the limit and flags the overage.");
    // On one node: it knows the region's applied counter plus its own
    // consumption (another node's becomes visible when reported).
    let mut overage = false;
    for _ in 0..6 {
        let d = consume(&region[0], "renders", None).await;
        assert!(d.allowed, "a soft cap never denies");
        overage |= d.overage;
    }
    assert!(overage, "past the soft cap the decision says overage");
    assert_eq!(
        counted(&region[2], "renders", 7).await,
        7,
        "1 + 6: the retry counted once"
    );

    info!("Ten users race for three floating seats over all nodes.");
    let mut races = Vec::new();
    for i in 0..10usize {
        let region = region.clone();
        races.push(tokio::spawn(async move {
            let subject = format!("user-{i}");
            (subject.clone(), seat(&region[i % 3], &subject, true).await)
        }));
    }
    let mut holders = Vec::new();
    for race in races {
        let (subject, r) = race.await.unwrap();
        match r.status() {
            usage::SeatStatus::Held => holders.push(subject),
            usage::SeatStatus::Full => assert!(r.holders.len() <= 3, "{:?}", r.holders),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(holders.len() <= 3, "at most three seats: {holders:?}");
    // The region leases its seats from the origin as it needs them, so a
    // racer may come back FULL while a lease is on its way: top up.
    for i in 0..10usize {
        if holders.len() == 3 {
            break;
        }
        let subject = format!("user-{i}");
        if holders.contains(&subject) {
            continue;
        }
        if seat(&region[i % 3], &subject, true).await.status() == usage::SeatStatus::Held {
            holders.push(subject);
        }
    }
    let holders = wait_until("three seats held", DEADLINE, || {
        let (region, mut holders) = (region.clone(), holders.clone());
        async move {
            for i in 0..10usize {
                let subject = format!("user-{i}");
                if holders.len() < 3
                    && !holders.contains(&subject)
                    && seat(&region[i % 3], &subject, true).await.status()
                        == usage::SeatStatus::Held
                {
                    holders.push(subject);
                }
            }
            (holders.len() == 3).then_some(holders)
        }
    })
    .await
    .unwrap();
    let full = seat(&region[1], "user-outsider", true).await;
    assert_eq!(full.status(), usage::SeatStatus::Full);
    assert_eq!(full.holders.len(), 3, "exactly three seats handed out");

    info!("The regional leader crashes: the leases survive on the new leader.");
    let leader = region[0].raft().metrics().current_leader.unwrap();
    let region = Arc::try_unwrap(region).ok().unwrap();
    let (mut survivors, mut crashed) = (Vec::new(), None);
    for node in region {
        if node.raft().id() == leader {
            crashed = Some(node);
        } else {
            survivors.push(node);
        }
    }
    crashed.unwrap().crash().await;
    let new_leader = wait_until("a new leader", DEADLINE, || async {
        let m = survivors[0].raft().metrics();
        m.current_leader.filter(|l| *l != leader)
    })
    .await
    .unwrap();
    // The leases are in the log: every survivor holds the same three.
    let mut expected = holders.clone();
    expected.sort();
    for node in &survivors {
        let view = node.raft().view();
        let leases = tollgate_region::seats::leases(
            &view,
            &tollgate_model::EntitlementId::new("e-cad").unwrap(),
        )
        .unwrap();
        let mut held: Vec<String> = leases.iter().map(|l| l.holder.to_string()).collect();
        held.sort();
        assert_eq!(
            held,
            expected,
            "node {} after leader {leader} crashed (new leader {new_leader})",
            node.raft().id()
        );
    }

    info!("Leases that are not renewed expire and free their seats.");
    wait_until("an expired lease to free a seat", DEADLINE, || async {
        let r = seat(&survivors[1], "user-late", true).await;
        (r.status() == usage::SeatStatus::Held).then_some(())
    })
    .await
    .unwrap();
    let released = seat(&survivors[0], "user-late", false).await;
    assert_eq!(released.status(), usage::SeatStatus::Released);

    for node in survivors {
        node.shutdown().await.unwrap();
    }
    origin.node.shutdown().await.unwrap();
}
