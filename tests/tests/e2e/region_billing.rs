//! Billing is exactly once under a crash: applications consume a hard-capped
//! feature through the SDK over all three nodes of a region, each
//! consumption with its own idempotency key, retried (same key) until it is
//! answered; the region's leader crashes (abruptly: no drain, no flush) in
//! the middle of it. Afterwards the region's counter and the origin's
//! billing total both equal the number of ALLOW answers the applications
//! received, exactly, and the chunk the dead node held goes back to the
//! pool once the new leader finds it silent.

use reqwest::Method;
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tollgate_model::{AccountId, FeatureId, UsagePeriod};
use tollgate_origin_node::OriginConfig;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_region::usage::counter_state;
use tollgate_region::Counter;
use tollgate_tests::{https, init_tracing, pki, start_region, wait_until, TestOrigin};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(60);
/// Far above what the test consumes: every consumption should be allowed,
/// so the billed total is the whole story.
const CAP: u64 = 1_000_000;
const WORKERS: usize = 4;

fn counter() -> Counter {
    Counter {
        account: AccountId::new("acme").unwrap(),
        feature: FeatureId::new("exports").unwrap(),
        period: UsagePeriod::Lifetime.key_at(tollgate_tests::wall_clock_now()),
    }
}

/// An origin whose catalog has `features` and the metered feature
/// `exports`, granted to account `acme` with a hard cap of `limit`; and
/// its head revision.
async fn origin_with_capped_exports(
    dir: &std::path::Path,
    features: &[&str],
    limit: u64,
) -> (TestOrigin, u64) {
    let origin = TestOrigin::start(OriginConfig::new(1, dir.join("origin")), dir).await;
    origin.seed(features).await;
    origin
        .ok(
            Method::PUT,
            "/v1/features/exports",
            json!({"id": "exports", "product": "studio", "name": "exports",
                "kind": {"metered": {"unit": "export", "period": "lifetime"}}}),
        )
        .await;
    let head = origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "e-exports", "account": "acme",
                "grant": {"feature": {"feature": "exports",
                    "usage_cap": {"limit": limit, "enforcement": "hard"}}},
                "valid_from": 1_700_000_000}),
        )
        .await["revision"]
        .as_u64()
        .unwrap();
    (origin, head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billing_is_exactly_once_when_the_leader_crashes_mid_load() {
    init_tracing();
    let _heavy = tollgate_tests::heavy_test().await;
    let dir = tempfile::tempdir().unwrap();
    let (origin, head) = origin_with_capped_exports(dir.path(), &[], CAP).await;
    let region = start_region(3, dir.path(), &origin.node, origin.feed_url(), None, |c| {
        // A dead node's chunk is handed back after 2 s of silence here (a
        // minute by default); live nodes hand idle chunks back sooner.
        c.meter.lease = Duration::from_secs(2);
        c.meter.chunk_idle = Duration::from_millis(300);
    })
    .await;
    for node in &region {
        wait_until("the region to catch up", DEADLINE, || async {
            (node.applied_revision() >= head).then_some(())
        })
        .await
        .unwrap();
    }
    let client = tollgate_sdk::Client::builder()
        .endpoints(region.iter().map(|n| https(n.grpc_addr())))
        .ca_file(pki().ca_path())
        .credential(tollgate_tests::test_credential())
        .deadline(Duration::from_secs(3))
        .build()
        .unwrap();

    info!("{WORKERS} applications consume through the SDK, each key retried until answered.");
    let allowed: Arc<Mutex<HashSet<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (client, allowed, stop) = (client.clone(), allowed.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut retried = 0u64;
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let key = format!("w{w}-{i}");
                i += 1;
                let deadline = tokio::time::Instant::now() + DEADLINE;
                let checked = loop {
                    match client
                        .consume(
                            "acme".parse().unwrap(),
                            None,
                            "exports".parse().unwrap(),
                            1,
                            Some(key.clone()),
                        )
                        .await
                    {
                        Ok(checked) => break checked,
                        Err(error) => {
                            retried += 1;
                            assert!(
                                tokio::time::Instant::now() < deadline,
                                "{key} was never answered; last: {error}"
                            );
                        }
                    }
                };
                assert!(checked.decision.reason.is_allowed(), "{key}: {checked:?}");
                assert!(
                    allowed.lock().unwrap().insert(key.clone()),
                    "{key} answered twice"
                );
            }
            retried
        }));
    }
    let allowed_now = || allowed.lock().unwrap().len();
    wait_until("some consumption before the crash", DEADLINE, || async {
        (allowed_now() >= 200).then_some(())
    })
    .await
    .unwrap();

    let leader_id = region[0].raft().metrics().current_leader.unwrap();
    let mut survivors = Vec::new();
    let mut crashed = None;
    for node in region {
        if node.raft().id() == leader_id {
            crashed = Some(node);
        } else {
            survivors.push(node);
        }
    }
    let before = allowed_now();
    info!(
        leader_id,
        allowed = before,
        "The leader crashes in the middle of the load."
    );
    crashed.unwrap().crash().await;
    wait_until("consumption to go on after the crash", DEADLINE, || async {
        (allowed_now() >= before + 300).then_some(())
    })
    .await
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    let mut retries = 0;
    for w in workers {
        retries += w.await.unwrap();
    }
    let allowed = allowed_now() as u64;
    info!(allowed, retries, "Load stopped.");

    info!(
        "The region counted exactly the allowed consumptions, and the dead node's chunk came back."
    );
    let (consumed, reserved) = wait_until(
        "the region's counter to settle with nothing reserved",
        DEADLINE,
        || async {
            let state = counter_state(&survivors[0].raft().view(), &counter())
                .map_err(|e| e.to_string())?;
            if state.consumed == allowed && state.reserved == 0 {
                Ok((state.consumed, state.reserved))
            } else {
                Err(format!("{allowed} allowed; the region has {state:?}"))
            }
        },
    )
    .await
    .unwrap();
    assert_eq!((consumed, reserved), (allowed, 0));

    info!("The origin bills exactly the allowed consumptions.");
    let billed = wait_until("the origin's billing total", DEADLINE, || async {
        let (status, rows) = origin
            .rest(
                Method::GET,
                "/v1/accounts/acme/usage?feature=exports",
                json!(null),
            )
            .await;
        assert!(status.is_success(), "{status} {rows}");
        match rows["items"][0]["consumed"].as_u64() {
            Some(billed) if billed == allowed => Ok(billed),
            _ => Err(format!("{allowed} allowed; the origin reports {rows}")),
        }
    })
    .await
    .unwrap();
    assert_eq!(billed, allowed);
    for node in survivors {
        node.shutdown().await.unwrap();
    }
}

fn error_code(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("tollgate-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_string()
}

fn check_request(feature: &str, consume: u64, key: Option<&str>) -> pb::CheckRequest {
    pb::CheckRequest {
        explain: false,
        account_id: "acme".into(),
        subject_id: Some("alice".into()),
        feature_id: feature.into(),
        consume,
        location: None,
        consistency: None,
        idempotency_key: key.map(str::to_string),
    }
}

/// Storage errors in the meter, injected at its boundary with the region's
/// state and log: a consuming check answers UNAVAILABLE with the reason,
/// the rest of a batch is answered, nothing is counted twice, and a retry
/// of the same key once the storage is back is counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meter_storage_error_is_unavailable_and_loses_or_doubles_nothing() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let (origin, _) = origin_with_capped_exports(dir.path(), &["cad"], 100).await;
    origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "e-cad", "account": "acme", "grant": {"feature": {"feature": "cad"}},
                "valid_from": 1_700_000_000}),
        )
        .await;
    let head = origin.ok(Method::GET, "/v1/status", json!(null)).await["head_revision"]
        .as_u64()
        .unwrap();
    let region = start_region(1, dir.path(), &origin.node, origin.feed_url(), None, |c| {
        c.meter.durable_wait = Duration::from_millis(500);
    })
    .await;
    let node = &region[0];
    wait_until("the region to catch up", DEADLINE, || async {
        (node.applied_revision() >= head).then_some(())
    })
    .await
    .unwrap();
    let mut client = CheckServiceClient::new(tollgate_tests::channel(node.grpc_addr()).await);
    let consumed = || {
        counter_state(&node.raft().view(), &counter())
            .unwrap()
            .consumed
    };
    // The meter starts (a new incarnation) once the node leads.
    wait_until("a first consumption", DEADLINE, || {
        let mut client = client.clone();
        async move {
            client
                .check(check_request("exports", 1, Some("first")))
                .await
                .map(|r| r.into_inner().decision.map(|d| d.allowed))
                .map_err(|s| format!("{} {}", error_code(&s), s.message()))
        }
    })
    .await
    .unwrap();
    assert_eq!(consumed(), 1);
    let faults = node.meter_faults();

    info!(
        "Reads fail: the consuming check is UNAVAILABLE, the boolean one in its batch is answered."
    );
    faults.fail_reads.store(true, Ordering::SeqCst);
    let status = client
        .check(check_request("exports", 1, Some("k-read")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(error_code(&status), "STATE_UNREADABLE", "{status:?}");
    let batch = client
        .batch_check(pb::BatchCheckRequest {
            checks: vec![
                check_request("cad", 0, None),
                check_request("exports", 1, Some("k-batch")),
            ],
            consistency: None,
        })
        .await
        .unwrap()
        .into_inner();
    let results: Vec<_> = batch.results.iter().map(|r| r.result.clone()).collect();
    assert!(
        matches!(&results[0], Some(pb::batch_check_result::Result::Decision(d)) if d.allowed),
        "{results:?}"
    );
    assert!(
        matches!(&results[1], Some(pb::batch_check_result::Result::Error(e)) if e.code == "STATE_UNREADABLE"),
        "{results:?}"
    );
    faults.fail_reads.store(false, Ordering::SeqCst);
    assert_eq!(consumed(), 1, "nothing counted while reads failed");

    info!("Writes fail: the consumption is not durable, so not ALLOW; the same key later counts once.");
    faults.fail_writes.store(true, Ordering::SeqCst);
    let status = client
        .check(check_request("exports", 1, Some("k-write")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert!(
        ["USAGE_UNAVAILABLE", "METER_NOT_READY"].contains(&error_code(&status).as_str()),
        "{status:?}"
    );
    faults.fail_writes.store(false, Ordering::SeqCst);
    for key in ["k-write", "k-write", "k-read", "k-batch"] {
        let decision = wait_until("the retry to be answered", DEADLINE, || {
            let mut client = client.clone();
            async move {
                client
                    .check(check_request("exports", 1, Some(key)))
                    .await
                    .map_err(|s| format!("{} {}", error_code(&s), s.message()))
                    .and_then(|r| r.into_inner().decision.ok_or("no decision".to_string()))
            }
        })
        .await
        .unwrap();
        assert!(decision.allowed, "{key}: {decision:?}");
    }
    wait_until("the counter to settle", DEADLINE, || async {
        match consumed() {
            4 => Ok(()),
            n => Err(format!("{n} consumed")),
        }
    })
    .await
    .unwrap();
    assert_eq!(
        consumed(),
        4,
        "first, k-write (once, though retried after its report went through), k-read, k-batch"
    );
    for node in region {
        node.shutdown().await.unwrap();
    }
}

/// A retry denied on another node while the first attempt's report is still
/// in flight is never billed behind the caller's back. Node A takes the
/// last unit of a hard cap for key `k` but cannot write its report (its
/// log writes fail), so the caller hears UNAVAILABLE and retries on node
/// B, where the cap is spent: B denies, and records the refusal in the log
/// before it answers. When A's report finally goes through, `k` is
/// already decided: it counts nothing, and every node answers a further
/// retry of `k` with the same denial. Without the refusal the bill was one
/// over the ALLOW answers (simulation seed 206).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_denied_elsewhere_is_never_billed_by_the_first_attempt() {
    init_tracing();
    const LIMIT: u64 = 32;
    let dir = tempfile::tempdir().unwrap();
    let (origin, head) = origin_with_capped_exports(dir.path(), &[], LIMIT).await;
    let region = start_region(3, dir.path(), &origin.node, origin.feed_url(), None, |c| {
        c.meter.durable_wait = Duration::from_millis(500);
        // A's last unit stays in its chunk until A's report goes through.
        c.meter.chunk_idle = Duration::from_secs(600);
    })
    .await;
    wait_until("the region to catch up", DEADLINE, || async {
        let behind: Vec<_> = region
            .iter()
            .filter(|n| n.applied_revision() < head)
            .map(|n| (n.name().to_string(), n.applied_revision()))
            .collect();
        if behind.is_empty() {
            Ok(())
        } else {
            Err(format!("behind {head}: {behind:?}"))
        }
    })
    .await
    .unwrap();
    let (a, b) = (&region[0], &region[1]);
    let client_a = CheckServiceClient::new(tollgate_tests::channel(a.grpc_addr()).await);
    let client_b = CheckServiceClient::new(tollgate_tests::channel(b.grpc_addr()).await);
    let check = |client: &CheckServiceClient<_>, key: String| {
        let mut client = client.clone();
        async move {
            client
                .check(check_request("exports", 1, Some(&key)))
                .await
                .map_err(|s| format!("{} {}", error_code(&s), s.message()))
                .and_then(|r| r.into_inner().decision.ok_or("no decision".to_string()))
        }
    };
    let mut allowed: HashSet<String> = HashSet::new();

    info!("A consumes one unit and so holds a chunk with one more in it.");
    let first = wait_until("A's meter to start", DEADLINE, || {
        check(&client_a, "a-0".into())
    })
    .await
    .unwrap();
    assert!(first.allowed, "{first:?}");
    allowed.insert("a-0".into());

    info!("B spends the rest of the cap.");
    let mut n = 0;
    loop {
        let key = format!("b-{n}");
        n += 1;
        let decision = wait_until("B to answer", DEADLINE, || check(&client_b, key.clone()))
            .await
            .unwrap();
        if !decision.allowed {
            assert_eq!(
                decision.reason,
                pb::Reason::UsageCapReached as i32,
                "{decision:?}"
            );
            break;
        }
        allowed.insert(key);
        assert!(
            n <= LIMIT as usize,
            "B was allowed {n} units of a cap of {LIMIT}"
        );
    }

    info!("A takes its last unit for `k` but cannot report it: the caller hears UNAVAILABLE.");
    let faults = a.meter_faults();
    faults.fail_writes.store(true, Ordering::SeqCst);
    let lost = check(&client_a, "k".into()).await.unwrap_err();
    assert!(lost.starts_with("USAGE_UNAVAILABLE"), "{lost}");
    assert!(
        a.status().metering.pending_entries > 0,
        "A's report is in flight"
    );

    info!("The retry on B is denied, and the refusal is in the log before the answer.");
    let retry = check(&client_b, "k".into()).await.unwrap();
    assert!(!retry.allowed, "{retry:?}");
    assert_eq!(
        retry.reason,
        pb::Reason::UsageCapReached as i32,
        "{retry:?}"
    );

    info!("A's report goes through at last; `k` stays unbilled.");
    faults.fail_writes.store(false, Ordering::SeqCst);
    wait_until("A's report to be taken", DEADLINE, || async {
        match a.status().metering.pending_entries {
            0 => Ok(()),
            n => Err(format!("{n} pending on A")),
        }
    })
    .await
    .unwrap();
    let billed = allowed.len() as u64;
    for node in &region {
        wait_until("every node to apply the bill", DEADLINE, || async {
            let c = counter_state(&node.raft().view(), &counter()).map_err(|e| e.to_string())?;
            if c.consumed == billed {
                Ok(())
            } else {
                Err(format!(
                    "{} has {} consumed; {billed} keys were answered ALLOW",
                    node.name(),
                    c.consumed
                ))
            }
        })
        .await
        .unwrap();
    }
    for (name, client) in [("A", &client_a), ("B", &client_b)] {
        let again = check(client, "k".into()).await.unwrap();
        assert!(!again.allowed, "{name}: {again:?}");
        assert_eq!(again.reason, pb::Reason::UsageCapReached as i32, "{name}");
    }
    let counted = counter_state(&a.raft().view(), &counter())
        .unwrap()
        .consumed;
    assert_eq!(counted, billed, "billed exactly the keys answered ALLOW");
    for node in region {
        node.shutdown().await.unwrap();
    }
}
