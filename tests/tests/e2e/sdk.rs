//! The SDK against real nodes: an origin and a three-node region on
//! 127.0.0.1:0. The client fails over past a dead endpoint, gives up with
//! UNAVAILABLE when none is left, does not retry a bad request, counts a
//! consumption once however often it is retried, and drives seat leases;
//! a replica follows grants and revocations and decides exactly as the
//! nodes do, moves to another node when its node stops, and keeps
//! answering from its last state, ever staler, when no node is left.

use reqwest::Method;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_model::{
    AccountId, CountryCode, FeatureId, GeoFacts, SubjectId, UnixSeconds, UsagePeriod,
};
use tollgate_origin_node::OriginConfig;
use tollgate_region::usage::counter_state;
use tollgate_region::Counter;
use tollgate_region_node::RegionNode;
use tollgate_sdk::{
    check_request, CheckRequest, Client, Consistency, Location, Reason, Replica, SdkError,
    SeatStatus,
};
use tollgate_tests::{https, init_tracing, pki, start_region, wait_until, TestOrigin};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(30);
/// Every SDK call's deadline: generous, for a loaded CI machine.
const CALL_DEADLINE: Duration = Duration::from_secs(10);
/// Nodes send a watch heartbeat this often when idle.
const WATCH_HEARTBEAT: Duration = Duration::from_millis(100);

fn id<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse().unwrap()
}

fn uri(node: &RegionNode) -> String {
    https(node.grpc_addr())
}

/// An endpoint nothing listens on: bound, then closed.
async fn dead_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    https(listener.local_addr().unwrap())
}

fn client(endpoints: impl IntoIterator<Item = String>) -> Client {
    Client::builder()
        .endpoints(endpoints)
        .ca_file(pki().ca_path())
        .credential(tollgate_tests::test_credential())
        .deadline(CALL_DEADLINE)
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

/// A TCP proxy to `target` that counts the connections it accepts. It
/// relays the TLS bytes unchanged: the node's certificate names
/// 127.0.0.1, the host the client dials.
async fn counting_proxy(target: SocketAddr) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (https(addr), accepted)
}

/// An origin with product `studio`, features `export`, `sso`, `geo`,
/// `beta` (boolean), `cad` (one floating seat) and `renders` (metered,
/// soft cap), account `acme` (alice the admin, bob) and `globex`, and a
/// region of three nodes that has caught up. The head revision.
async fn deploy(dir: &std::path::Path) -> (TestOrigin, Vec<RegionNode>, u64) {
    let mut config = OriginConfig::new(1, dir.join("origin"));
    config.feed.heartbeat_interval = Duration::from_millis(100);
    let origin = TestOrigin::start(config, dir).await;
    origin.seed(&["export", "sso", "geo", "beta", "cad"]).await;
    origin
        .ok(
            Method::PUT,
            "/v1/features/renders",
            json!({"id": "renders", "product": "studio", "name": "renders",
                "kind": {"metered": {"unit": "renders", "period": "month"}}}),
        )
        .await;
    for (subject, roles) in [("alice", json!(["admin"])), ("bob", json!([]))] {
        origin
            .ok(
                Method::PUT,
                &format!("/v1/accounts/acme/subjects/{subject}"),
                json!({"id": subject, "account": "acme", "kind": "user", "roles": roles}),
            )
            .await;
    }
    origin
        .ok(
            Method::PUT,
            "/v1/accounts/globex",
            json!({"id": "globex", "name": "Globex"}),
        )
        .await;
    for (entitlement, account, extra) in [
        (
            "e-export",
            "acme",
            json!({"grant": {"feature": {"feature": "export"}}}),
        ),
        (
            "e-sso",
            "acme",
            json!({"grant": {"feature": {"feature": "sso"}}, "required_role": "admin"}),
        ),
        (
            "e-geo",
            "acme",
            json!({"grant": {"feature": {"feature": "geo"}},
                "geo_rule": {"deny_countries": ["KP"]}}),
        ),
        (
            "e-cad",
            "acme",
            json!({"grant": {"feature": {"feature": "cad"}},
                "seats": {"count": 1, "mode": {"floating": {"lease_ttl_seconds": 60}}}}),
        ),
        (
            "e-renders",
            "acme",
            json!({"grant": {"feature": {"feature": "renders",
                "usage_cap": {"limit": 1000, "enforcement": "soft"}}}}),
        ),
        (
            "e-globex",
            "globex",
            json!({"grant": {"feature": {"feature": "beta"}}}),
        ),
    ] {
        let mut body = extra;
        body["id"] = json!(entitlement);
        body["account"] = json!(account);
        body["valid_from"] = json!(1_700_000_000);
        origin.ok(Method::POST, "/v1/entitlements", body).await;
    }
    let head = origin.node.head_revision();
    let region = start_region(3, dir, &origin.node, origin.feed_url(), None, |c| {
        c.watch_heartbeat = WATCH_HEARTBEAT;
        c.trust_proxy_location = true;
    })
    .await;
    for node in &region {
        caught_up(node, head).await;
    }
    (origin, region, head)
}

async fn caught_up(node: &RegionNode, revision: u64) {
    wait_until("a region node to catch up", DEADLINE, || async {
        (node.applied_revision() >= revision).then_some(())
    })
    .await
    .unwrap();
}

async fn shutdown(origin: TestOrigin, region: Vec<RegionNode>) {
    for node in region {
        node.shutdown().await.unwrap();
    }
    origin.node.shutdown().await.unwrap();
}

fn now() -> UnixSeconds {
    UnixSeconds(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64,
    )
}

/// The region's `renders` counter for acme as `node` applied it.
fn renders_counted(node: &RegionNode) -> u64 {
    let counter = Counter {
        account: id("acme"),
        feature: id("renders"),
        period: UsagePeriod::Month.key_at(now()),
    };
    counter_state(&node.raft().view(), &counter)
        .unwrap()
        .consumed
}

async fn wait_counted(node: &RegionNode, expected: u64) {
    wait_until(
        "the region's counter to reach its total",
        DEADLINE,
        || async { (renders_counted(node) >= expected).then_some(()) },
    )
    .await
    .unwrap();
    assert_eq!(renders_counted(node), expected, "counted exactly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_fails_over_refuses_bad_requests_and_counts_once() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (origin, region, _) = deploy(dir.path()).await;
    let (acme, alice, bob): (AccountId, SubjectId, SubjectId) =
        (id("acme"), id("alice"), id("bob"));

    info!("A dead first endpoint: the client moves on to the next and answers.");
    let dead = dead_endpoint().await;
    let nodes: Vec<String> = region.iter().map(uri).collect();
    let client = client(std::iter::once(dead.clone()).chain(nodes.iter().cloned()));
    let answer = client
        .check(check_request(
            acme.clone(),
            Some(alice.clone()),
            id("export"),
        ))
        .await
        .unwrap();
    assert_eq!(answer.decision.reason, Reason::Allow);
    assert_eq!(answer.endpoint, nodes[0]);
    assert_eq!(answer.answered_by, "eu-1");
    assert_eq!(client.preferred_endpoint(), nodes[0]);

    info!("Every endpoint dead: UNAVAILABLE, naming them, within the deadline.");
    let (dead_a, dead_b) = (dead_endpoint().await, dead_endpoint().await);
    let deadline = Duration::from_secs(1);
    let down = self::client([dead_a.clone(), dead_b.clone()]).with_deadline(deadline);
    let started = Instant::now();
    match down
        .check(check_request(acme.clone(), None, id("export")))
        .await
    {
        Err(SdkError::Unavailable { tried, .. }) => assert_eq!(tried, vec![dead_a, dead_b]),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    assert!(
        started.elapsed() < deadline + Duration::from_secs(2),
        "gave up after {:?}",
        started.elapsed()
    );

    info!("A bad request is refused by the first node and not retried on the next.");
    let (proxy, accepted) = counting_proxy(region[1].grpc_addr()).await;
    let pinned = self::client([nodes[0].clone(), proxy]);
    let mut bad = check_request(acme.clone(), Some(alice.clone()), id("renders"));
    bad.check.consume = 1;
    bad.idempotency_key = Some("not a key!".into());
    match pinned.check(bad).await {
        Err(SdkError::InvalidRequest(message)) => {
            assert!(message.contains("idempotency_key"), "{message}")
        }
        other => panic!("expected INVALID_REQUEST, got {other:?}"),
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        0,
        "the second node was never dialled"
    );
    match pinned
        .report_usage(&acme, &id("no-such-feature"), 1, None)
        .await
    {
        Err(SdkError::NotFound(message)) => assert!(message.contains("no-such-feature")),
        other => panic!("expected NOT_FOUND, got {other:?}"),
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 0);

    info!("A consumption sent three times with one key is counted once.");
    let first = client
        .consume(acme.clone(), Some(alice.clone()), id("renders"), 5, None)
        .await
        .unwrap();
    assert!(first.decision.allowed(), "{:?}", first.decision);
    let key = first.idempotency_key.clone().expect("a generated key");
    for node in &region {
        wait_counted(node, 5).await;
    }
    for (i, node) in nodes.iter().enumerate().skip(1) {
        let retry = self::client([node.clone()])
            .consume(
                acme.clone(),
                Some(alice.clone()),
                id("renders"),
                5,
                Some(key.clone()),
            )
            .await
            .unwrap();
        assert!(retry.decision.allowed(), "the retry gets the answer again");
        assert_eq!(retry.answered_by, format!("eu-{}", i + 1));
        // A fresh unit after the retry, on the same node: once it is
        // counted, anything the retry had counted would be too.
        self::client([node.clone()])
            .consume(acme.clone(), Some(alice.clone()), id("renders"), 1, None)
            .await
            .unwrap();
    }
    wait_counted(&region[0], 5 + 1 + 1).await;

    info!("Usage reported on its own: counted once per key.");
    let reported = client
        .report_usage(&acme, &id("renders"), 2, None)
        .await
        .unwrap();
    assert!(reported.counted);
    assert!(reported.period.starts_with("month-"), "{}", reported.period);
    let again = client
        .report_usage(&acme, &id("renders"), 2, Some(reported.idempotency_key))
        .await
        .unwrap();
    assert!(!again.counted, "the same key is not counted twice");
    wait_counted(&region[0], 5 + 1 + 1 + 2).await;

    info!("Seats: acquire, full for another subject, heartbeat, release.");
    let cad: FeatureId = id("cad");
    let held = wait_until("alice to take the only seat", DEADLINE, || async {
        let seat = client.acquire_seat(&acme, &alice, &cad).await.unwrap();
        (seat.status == SeatStatus::Held).then_some(seat)
    })
    .await
    .unwrap();
    assert_eq!(held.entitlement.as_ref().map(|e| e.as_str()), Some("e-cad"));
    assert_eq!((held.used, held.total), (1, 1));
    let expires = held.expires_at.expect("a held seat expires");
    let full = client.acquire_seat(&acme, &bob, &cad).await.unwrap();
    assert_eq!(full.status, SeatStatus::Full);
    assert_eq!(full.holders, vec![alice.clone()]);
    let renewed = client.heartbeat_seat(&acme, &alice, &cad).await.unwrap();
    assert_eq!(renewed.status, SeatStatus::Held);
    assert!(renewed.expires_at.unwrap() >= expires);
    let released = client.release_seat(&acme, &alice, &cad).await.unwrap();
    assert_eq!(released.status, SeatStatus::Released);
    let gone = client.heartbeat_seat(&acme, &alice, &cad).await.unwrap();
    assert_eq!(gone.status, SeatStatus::NotHeld);
    let bobs = client.acquire_seat(&acme, &bob, &cad).await.unwrap();
    assert_eq!(bobs.status, SeatStatus::Held, "the released seat is free");
    match client.acquire_seat(&acme, &alice, &id("export")).await {
        Err(SdkError::Refused { code, .. }) => assert_eq!(code, "FAILED_PRECONDITION"),
        other => panic!("a feature without floating seats: {other:?}"),
    }

    shutdown(origin, region).await;
}

/// The requests the replica and the nodes must agree on: known and unknown
/// subjects, granted, role-gated, geo-gated, metered and ungranted
/// features, from nowhere, from Germany and from North Korea.
fn requests(at: u64) -> Vec<CheckRequest> {
    let places = [
        Location::Unknown,
        Location::Resolved(GeoFacts {
            country: Some(CountryCode::new("DE").unwrap()),
            ..GeoFacts::default()
        }),
        Location::Resolved(GeoFacts {
            country: Some(CountryCode::new("KP").unwrap()),
            ..GeoFacts::default()
        }),
    ];
    let mut out = Vec::new();
    for subject in [Some("alice"), Some("bob"), Some("mallory"), None] {
        for feature in ["export", "sso", "geo", "beta", "renders", "cad", "nothing"] {
            for place in &places {
                let mut r = check_request(id("acme"), subject.map(id), id(feature));
                r.location = place.clone();
                r.consistency = Consistency::AtLeastRevision(at);
                out.push(r);
            }
        }
    }
    out
}

/// Asks every request of the region and of the replica; the local and
/// remote decisions must be equal (but for what is measured at answer
/// time). The reasons seen.
async fn agree(client: &Client, replica: &Replica, at: u64) -> Vec<Reason> {
    let mut reasons = Vec::new();
    for request in requests(at) {
        let remote = client.check(request.clone()).await.unwrap();
        let local = replica.check(&request).unwrap();
        assert_eq!(local.revision, remote.revision, "{request:?}");
        let (mut l, mut r) = (local.decision, remote.decision);
        for d in [&mut l, &mut r] {
            // Freshness is measured when answering, metering is not on
            // the wire.
            d.staleness_seconds = None;
            d.metering = None;
        }
        assert_eq!(l, r, "the replica and the region disagree on {request:?}");
        reasons.push(l.reason);
    }
    reasons
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_grants_and_revocations_and_decides_as_the_nodes_do() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (origin, region, head) = deploy(dir.path()).await;
    let client = client(region.iter().map(uri));
    let acme: AccountId = id("acme");

    info!("A replica of acme catches up and decides every request as the region does.");
    let replica = Replica::builder(&client)
        .scope(Some(acme.clone()))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .start()
        .unwrap();
    assert!(replica.wait_for_revision(head, DEADLINE).await.unwrap() >= head);
    wait_until("the replica to hear a heartbeat", DEADLINE, || async {
        replica.staleness().origin_seconds.filter(|s| *s < 60)
    })
    .await
    .unwrap();
    let reasons = agree(&client, &replica, head).await;
    for expected in [
        Reason::Allow,
        Reason::NotEntitled,
        Reason::UnknownSubject,
        Reason::RoleRequired,
        Reason::GeoBlocked,
    ] {
        assert!(reasons.contains(&expected), "no {expected} in {reasons:?}");
    }
    let renders = replica
        .check(&check_request(acme.clone(), None, id("renders")))
        .unwrap();
    assert!(renders.approximate, "a capped counter lives in the region");
    let served = origin.node.served_dataset().unwrap();
    let data = replica.dataset();
    assert_eq!(data.catalog, served.catalog, "the whole catalog");
    let acme_entitlements: Vec<_> = served
        .canonical()
        .entitlements
        .into_iter()
        .filter(|e| e.account == acme)
        .collect();
    assert_eq!(
        data.entitlements, acme_entitlements,
        "acme's and only acme's"
    );
    match replica.check(&check_request(id("globex"), None, id("beta"))) {
        Err(SdkError::NeedsRegion(message)) => assert!(message.contains("scope"), "{message}"),
        other => panic!("globex is outside the scope: {other:?}"),
    }

    info!("A grant at the origin reaches the replica.");
    let granted = origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "e-beta", "account": "acme",
                "grant": {"feature": {"feature": "beta"}}, "valid_from": 1_700_000_000}),
        )
        .await["revision"]
        .as_u64()
        .unwrap();
    replica.wait_for_revision(granted, DEADLINE).await.unwrap();
    let beta = check_request(acme.clone(), Some(id("bob")), id("beta"));
    assert_eq!(replica.check(&beta).unwrap().decision.reason, Reason::Allow);
    agree(&client, &replica, granted).await;

    info!("A revocation at the origin reaches the replica.");
    let revoked = origin
        .ok(
            Method::POST,
            "/v1/entitlements/e-export/revoke",
            json!(null),
        )
        .await["revision"]
        .as_u64()
        .unwrap();
    replica.wait_for_revision(revoked, DEADLINE).await.unwrap();
    let export = check_request(acme.clone(), Some(id("alice")), id("export"));
    let local = replica.check(&export).unwrap();
    assert_eq!(local.decision.reason, Reason::Revoked);
    assert_eq!(local.revision, revoked);
    let reasons = agree(&client, &replica, revoked).await;
    assert!(reasons.contains(&Reason::Revoked));

    drop(replica);
    shutdown(origin, region).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_moves_to_another_node_and_answers_alone_when_none_is_left() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (origin, mut region, head) = deploy(dir.path()).await;
    let nodes: Vec<String> = region.iter().map(uri).collect();
    let client = client(nodes.iter().cloned());
    let export = check_request(id("acme"), Some(id("alice")), id("export"));

    info!("A replica of every account follows the first node.");
    let replica = Replica::builder(&client)
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
        .idle_timeout(Duration::from_secs(2))
        .start()
        .unwrap();
    replica.wait_for_revision(head, DEADLINE).await.unwrap();
    assert_eq!(replica.endpoint().as_deref(), Some(nodes[0].as_str()));
    let globex = check_request(id("globex"), None, id("beta"));
    assert_eq!(
        replica.check(&globex).unwrap().decision.reason,
        Reason::Allow,
        "every account is here"
    );

    info!("Its node stops: the replica resumes on the next one and keeps following.");
    region.remove(0).shutdown().await.unwrap();
    wait_until("the replica to follow another node", DEADLINE, || async {
        replica.endpoint().filter(|e| *e != nodes[0]).map(|_| ())
    })
    .await
    .unwrap();
    let granted = origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "e-beta", "account": "acme",
                "grant": {"feature": {"feature": "beta"}}, "valid_from": 1_700_000_000}),
        )
        .await["revision"]
        .as_u64()
        .unwrap();
    replica.wait_for_revision(granted, DEADLINE).await.unwrap();
    let beta = check_request(id("acme"), Some(id("bob")), id("beta"));
    assert_eq!(replica.check(&beta).unwrap().decision.reason, Reason::Allow);
    let before = replica.check(&export).unwrap();
    assert_eq!(before.decision.reason, Reason::Allow);

    info!("Every node stops: the replica answers alone, from its last state, ever staler.");
    for node in region.drain(..) {
        node.shutdown().await.unwrap();
    }
    wait_until("the replica to lose its node", DEADLINE, || async {
        replica.endpoint().is_none().then_some(())
    })
    .await
    .unwrap();
    let alone = replica.check(&export).unwrap();
    assert_eq!(alone.decision.reason, Reason::Allow);
    assert_eq!(alone.revision, granted);
    let since = alone
        .staleness
        .since_region
        .expect("heard from a node before");
    let origin_seconds = alone.staleness.origin_seconds.expect("knows the contact");
    let later = wait_until("the staleness to grow", DEADLINE, || async {
        let answer = replica.check(&export).unwrap();
        let grown = answer.staleness.since_region.is_some_and(|s| s > since)
            && answer
                .staleness
                .origin_seconds
                .is_some_and(|s| s > origin_seconds);
        grown.then_some(answer)
    })
    .await
    .unwrap();
    assert_eq!(later.decision.reason, Reason::Allow);
    assert_eq!(later.revision, granted);
    assert!(later.decision.staleness_seconds > alone.decision.staleness_seconds);

    drop(replica);
    origin.node.shutdown().await.unwrap();
}
