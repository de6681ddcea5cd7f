//! A region's leader reports its region to the origin (`ReportRegion`):
//! every member with its applied revision and geo databases, and who holds
//! the region's floating seats; `GET /v1/regions` shows it. A customer's
//! own key frees a seat from the origin (`POST .../seats/{subject}/release`):
//! the region drops the lease at once, another subject takes the seat, and
//! the next report no longer lists the holder. A region's certificate
//! reports for no other region, and a report past its bounds is refused.

use reqwest::Method;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tollgate_origin_node::OriginConfig;
use tollgate_proto::origin::v1 as quota;
use tollgate_proto::origin::v1::quota_client::QuotaClient;
use tollgate_proto::usage::v1 as usage;
use tollgate_proto::usage::v1::usage_client::UsageClient;
use tollgate_region_node::RegionNode;
use tollgate_tests::{heavy_test, init_tracing, start_region, wait_until, TestOrigin};
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(30);

/// `region`'s stored report, if the origin has one.
async fn region_status(origin: &TestOrigin, region: &str) -> Option<Value> {
    let page = origin.ok(Method::GET, "/v1/regions", json!(null)).await;
    page["items"]
        .as_array()
        .expect("a page of regions")
        .iter()
        .find(|r| r["report"]["region"] == region)
        .cloned()
}

/// The subjects the stored report lists as holding `entitlement`'s seats.
fn holders(status: &Value, entitlement: &str) -> Vec<String> {
    status["report"]["seats"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["entitlement"] == entitlement)
        .flat_map(|s| s["holders"].as_array().cloned().unwrap_or_default())
        .map(|h| h["subject"].as_str().unwrap_or_default().to_string())
        .collect()
}

async fn seat(node: &RegionNode, user: &str) -> usage::SeatStatus {
    let mut client = UsageClient::new(tollgate_tests::channel(node.grpc_addr()).await);
    client
        .acquire_seat(usage::SeatRequest {
            account_id: "acme".into(),
            subject_id: user.into(),
            feature_id: "cad".into(),
        })
        .await
        .expect("a seat answer")
        .into_inner()
        .status()
}

/// An account's key (read, accounts:write), as the customer portal holds.
async fn account_key(origin: &TestOrigin, account: &str) -> String {
    let issued = origin
        .ok(
            Method::POST,
            "/v1/api-keys",
            json!({"name": format!("{account} portal"),
                "scopes": ["read", "accounts:write"], "account": account}),
        )
        .await;
    issued["token"].as_str().expect("a token").to_string()
}

async fn post_as(origin: &TestOrigin, token: &str, path: &str) -> (reqwest::StatusCode, Value) {
    let resp = origin
        .http()
        .post(format!("{}{path}", origin.base()))
        .bearer_auth(token)
        .send()
        .await
        .expect("the origin answers HTTP");
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn code_of(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get("tollgate-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_reports_its_members_and_seat_holders_and_a_seat_is_freed_from_the_origin() {
    init_tracing();
    let _heavy = heavy_test().await;
    let dir = tempfile::tempdir().unwrap();
    let origin =
        TestOrigin::start(OriginConfig::new(1, dir.path().join("origin")), dir.path()).await;
    origin.seed(&["cad"]).await;
    origin
        .ok(
            Method::PUT,
            "/v1/accounts/acme/subjects/bob",
            json!({"id": "bob", "account": "acme", "kind": "user"}),
        )
        .await;
    origin
        .ok(
            Method::PUT,
            "/v1/accounts/globex",
            json!({"id": "globex", "name": "Globex"}),
        )
        .await;
    // One floating seat each: the second subject gets it only once the
    // first is freed.
    for (id, account) in [("e-cad", "acme"), ("e-globex-cad", "globex")] {
        origin
            .ok(
                Method::POST,
                "/v1/entitlements",
                json!({"id": id, "account": account,
                    "grant": {"feature": {"feature": "cad"}}, "valid_from": 1_700_000_000,
                    "seats": {"count": 1, "mode": {"floating": {"lease_ttl_seconds": 600}}}}),
            )
            .await;
    }
    let acme_key = account_key(&origin, "acme").await;
    let globex_key = account_key(&origin, "globex").await;

    let geo = Arc::new(tollgate_geo::fixtures::demo_databases().unwrap());
    let nodes = start_region(
        3,
        dir.path(),
        &origin.node,
        origin.feed_url(),
        Some(geo),
        |c| {
            c.region = "eu".into();
            c.report_interval = Some(Duration::from_millis(300));
        },
    )
    .await;

    info!("The leader's report reaches the origin: every member reachable, at the origin's head, with its geo database.");
    let head = origin.node.head_revision();
    let status = wait_until(
        "a report of eu with every member caught up",
        DEADLINE,
        || async {
            let status = region_status(&origin, "eu")
                .await
                .ok_or_else(|| "no report of eu yet".to_string())?;
            let members = status["report"]["members"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let caught_up = members.len() == 3
                && members.iter().all(|m| {
                    m["reachable"] == true
                        && m["facts"]["applied_revision"].as_u64() >= Some(head)
                        && m["facts"]["geo"][0]["build_epoch"].as_u64() > Some(0)
                });
            if caught_up {
                Ok(status)
            } else {
                Err(format!("{status}"))
            }
        },
    )
    .await
    .unwrap();
    let leader = status["report"]["leader_id"].as_u64().unwrap();
    assert!((1..=3).contains(&leader), "{status}");
    assert_eq!(status["report"]["node_id"].as_u64(), Some(leader));
    let roles: Vec<&str> = status["report"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(
        roles.iter().filter(|r| **r == "leader").count(),
        1,
        "{roles:?}"
    );
    assert!(status["received_at"].as_i64().unwrap() > 1_700_000_000);
    assert!(status["revision"].as_u64().unwrap() > head);

    info!("Alice takes the only seat; the next report lists her, with when she took it.");
    wait_until("alice's seat", DEADLINE, || async {
        (seat(&nodes[0], "alice").await == usage::SeatStatus::Held).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(seat(&nodes[1], "bob").await, usage::SeatStatus::Full);
    let status = wait_until("alice listed as a holder", DEADLINE, || async {
        let status = region_status(&origin, "eu").await?;
        (holders(&status, "e-cad") == ["alice"]).then_some(status)
    })
    .await
    .unwrap();
    let entry = &status["report"]["seats"][0];
    assert_eq!(entry["account"], "acme", "{status}");
    let held = &entry["holders"][0];
    assert!(
        held["acquired_at"].as_i64().unwrap() > 1_700_000_000
            && held["expires_at"].as_i64() > held["acquired_at"].as_i64(),
        "{held}"
    );

    info!("No account reaches another's seats: another account's entitlement is 404, another account's path 403.");
    let before = origin.node.head_revision();
    let (code, body) = post_as(
        &origin,
        &acme_key,
        "/v1/accounts/acme/entitlements/e-globex-cad/seats/alice/release",
    )
    .await;
    assert_eq!(code, reqwest::StatusCode::NOT_FOUND, "{body}");
    let (code, body) = post_as(
        &origin,
        &acme_key,
        "/v1/accounts/acme/entitlements/e-nothing/seats/alice/release",
    )
    .await;
    assert_eq!(code, reqwest::StatusCode::NOT_FOUND, "{body}");
    let (code, body) = post_as(
        &origin,
        &globex_key,
        "/v1/accounts/acme/entitlements/e-cad/seats/alice/release",
    )
    .await;
    assert_eq!(code, reqwest::StatusCode::FORBIDDEN, "{body}");
    // Region reports may commit meanwhile; none of these did.
    let audit = origin
        .ok(
            Method::GET,
            &format!("/v1/audit?after={before}&action=seat.release"),
            json!(null),
        )
        .await;
    assert_eq!(audit["items"], json!([]), "{audit}");

    info!("Acme's own key frees alice's seat: bob gets it, and the report lists bob, not alice.");
    let (code, body) = post_as(
        &origin,
        &acme_key,
        "/v1/accounts/acme/entitlements/e-cad/seats/alice/release",
    )
    .await;
    assert!(code.is_success(), "{code} {body}");
    let released = body["revision"].as_u64().unwrap();
    let audit = origin
        .ok(
            Method::GET,
            &format!("/v1/audit?after={}&action=seat.release", released - 1),
            json!(null),
        )
        .await;
    assert_eq!(audit["items"][0]["target"], "seat/e-cad/alice", "{audit}");
    wait_until("bob's seat", DEADLINE, || async {
        (seat(&nodes[2], "bob").await == usage::SeatStatus::Held).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(seat(&nodes[0], "alice").await, usage::SeatStatus::Full);
    wait_until("bob listed instead of alice", DEADLINE, || async {
        let status = region_status(&origin, "eu").await?;
        (holders(&status, "e-cad") == ["bob"]).then_some(())
    })
    .await
    .unwrap();

    info!("An eu node's certificate reports for no other region; a report past its bounds is refused.");
    let eu_node = tollgate_tests::pki::pki().client_as(tollgate_tls::Subject::RegionNode {
        region: "eu".into(),
        node: 1,
    });
    let mut client = QuotaClient::new(
        tollgate_tests::pki::channel_with(&eu_node, origin.node.feed_addr()).await,
    );
    let report = |region: &str, members: usize| quota::RegionReportRequest {
        region: region.into(),
        node_id: 1,
        leader_id: 1,
        term: 1,
        members: (0..members)
            .map(|n| quota::RegionMember {
                node_id: n as u64 + 1,
                addr: format!("127.0.0.1:{}", 7000 + n),
                role: quota::MemberRole::Follower as i32,
                reachable: false,
                error: "down".into(),
                ..Default::default()
            })
            .collect(),
        seats: vec![],
        seats_truncated: false,
    };
    let denied = client.report_region(report("us", 1)).await.unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied, "{denied:?}");
    assert_eq!(code_of(&denied).as_deref(), Some("CALLER_NOT_ALLOWED"));
    assert!(region_status(&origin, "us").await.is_none());
    let oversized = client.report_region(report("eu", 33)).await.unwrap_err();
    assert_eq!(
        oversized.code(),
        tonic::Code::InvalidArgument,
        "{oversized:?}"
    );
    let holders_max = quota::RegionReportRequest {
        seats: vec![quota::SeatHolders {
            entitlement_id: "e-cad".into(),
            account_id: "acme".into(),
            holders: (0..1_001)
                .map(|n| quota::SeatHolder {
                    subject_id: format!("u{n}"),
                    acquired_at: 1,
                    expires_at: 2,
                })
                .collect(),
        }],
        ..report("eu", 1)
    };
    let oversized = client.report_region(holders_max).await.unwrap_err();
    assert_eq!(
        oversized.code(),
        tonic::Code::InvalidArgument,
        "{oversized:?}"
    );

    for node in nodes {
        node.shutdown().await.unwrap();
    }
    origin.node.shutdown().await.unwrap();
}
