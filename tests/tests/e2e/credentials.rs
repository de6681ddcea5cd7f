//! Application credentials on a region's check port, tried from outside as
//! an attacker on the network would: every service refuses a call without
//! one, with a wrong or revoked one, or outside its scope, before anything
//! is read or recorded; a scoped credential does what it names; a
//! revocation made at the origin reaches every node; and no credential
//! ever travels to a client-side replica.

use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;
use tokio_stream::StreamExt;
use tollgate_origin_node::OriginConfig;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_proto::license::v1 as lic;
use tollgate_proto::license::v1::licenses_client::LicensesClient;
use tollgate_proto::usage::v1 as usage;
use tollgate_proto::usage::v1::usage_client::UsageClient;
use tollgate_region_node::RegionNode;
use tollgate_tests::pki::channel_with;
use tollgate_tests::{init_tracing, pki, start_region, wait_until, AppChannel, TestOrigin};
use tonic::service::interceptor::InterceptedService;
use tonic::Code;
use tracing::info;

const DEADLINE: Duration = Duration::from_secs(30);

async fn as_caller(node: &RegionNode, token: Option<&str>) -> AppChannel {
    InterceptedService::new(
        channel_with(&pki().client(), node.grpc_addr()).await,
        tollgate_tests::app::with_credential(token),
    )
}

fn check(account: &str, consume: u64) -> pb::CheckRequest {
    pb::CheckRequest {
        explain: false,
        account_id: account.into(),
        subject_id: Some("alice".into()),
        feature_id: "export".into(),
        consume,
        location: None,
        consistency: None,
        idempotency_key: (consume > 0).then(|| "k-1".to_string()),
    }
}

fn error_code(status: &tonic::Status) -> String {
    status
        .metadata()
        .get("tollgate-error-code")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Every call the check port serves, as `token` makes it: the gRPC code and
/// stable error code of each, `None` when it was answered.
async fn every_call(
    node: &RegionNode,
    token: Option<&str>,
) -> Vec<(&'static str, Option<(Code, String)>)> {
    let channel = as_caller(node, token).await;
    let mut checks = CheckServiceClient::new(channel.clone());
    let mut usage = UsageClient::new(channel.clone());
    let mut licenses = LicensesClient::new(channel);
    let outcome = |r: Result<(), tonic::Status>| r.err().map(|s| (s.code(), error_code(&s)));
    let seat = || usage::SeatRequest {
        account_id: "acme".into(),
        subject_id: "alice".into(),
        feature_id: "export".into(),
    };
    vec![
        (
            "check",
            outcome(checks.check(check("acme", 0)).await.map(drop)),
        ),
        (
            "check other account",
            outcome(checks.check(check("globex", 0)).await.map(drop)),
        ),
        (
            "consuming check",
            outcome(checks.check(check("acme", 1)).await.map(drop)),
        ),
        (
            "batch check",
            outcome(
                checks
                    .batch_check(pb::BatchCheckRequest {
                        checks: vec![check("acme", 0)],
                        consistency: None,
                    })
                    .await
                    .map(drop),
            ),
        ),
        (
            "watch all",
            outcome(
                checks
                    .watch(pb::WatchRequest {
                        account_id: None,
                        from_revision: 0,
                    })
                    .await
                    .map(drop),
            ),
        ),
        (
            "watch acme",
            outcome(
                checks
                    .watch(pb::WatchRequest {
                        account_id: Some("acme".into()),
                        from_revision: 0,
                    })
                    .await
                    .map(drop),
            ),
        ),
        (
            "report usage",
            outcome(
                usage
                    .report_usage(usage::ReportUsageRequest {
                        account_id: "acme".into(),
                        feature_id: "export".into(),
                        units: 1_000_000,
                        idempotency_key: "inflate-1".into(),
                    })
                    .await
                    .map(drop),
            ),
        ),
        (
            "acquire seat",
            outcome(usage.acquire_seat(seat()).await.map(drop)),
        ),
        (
            "release seat",
            outcome(usage.release_seat(seat()).await.map(drop)),
        ),
        (
            "issue license",
            outcome(
                licenses
                    .issue_license(lic::IssueLicenseRequest {
                        account_id: "acme".into(),
                        audience: "studio".into(),
                        ..Default::default()
                    })
                    .await
                    .map(drop),
            ),
        ),
        (
            "verify license",
            outcome(
                licenses
                    .verify_license(lic::VerifyLicenseRequest {
                        token: "v4.public.x".into(),
                        ..Default::default()
                    })
                    .await
                    .map(drop),
            ),
        ),
    ]
}

/// Nothing was metered or recorded on `node`, and its revision stayed.
fn untouched(node: &RegionNode, revision: u64) {
    let metering = node.status().metering;
    assert_eq!(
        (
            metering.unreported_units,
            metering.pending_entries,
            metering.batches
        ),
        (0, 0, 0),
        "a refused call metered something"
    );
    assert_eq!(
        node.applied_revision(),
        revision,
        "a refused call moved the revision"
    );
}

async fn caught_up(region: &[RegionNode], revision: u64) {
    wait_until(
        "every region node applied the revision",
        DEADLINE,
        || async {
            let applied: Vec<u64> = region.iter().map(|n| n.applied_revision()).collect();
            if applied.iter().all(|a| *a >= revision) {
                Ok(())
            } else {
                Err(format!("applied {applied:?}, want {revision}"))
            }
        },
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_check_port_serves_only_credentials_and_only_within_their_scope() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let origin =
        TestOrigin::start(OriginConfig::new(1, dir.path().join("origin")), dir.path()).await;
    origin.seed(&["export"]).await;
    origin
        .ok(
            Method::POST,
            "/v1/entitlements",
            json!({"id": "e1", "account": "acme", "grant": {"feature": {"feature": "export"}},
                   "valid_from": 1_700_000_000}),
        )
        .await;
    let scoped: Value = origin
        .ok(
            Method::POST,
            "/v1/credentials",
            json!({"name": "acme checks", "accounts": ["acme"], "products": ["studio"],
                   "verbs": ["check"]}),
        )
        .await;
    let scoped_token = scoped["token"].as_str().unwrap().to_string();
    let scoped_id = scoped["credential"]["id"].as_str().unwrap().to_string();
    assert!(scoped_token.starts_with(&format!("tgc_{scoped_id}.")));
    assert!(
        scoped["credential"].get("secret_sha256").is_none(),
        "{scoped}"
    );

    let region = start_region(3, dir.path(), &origin.node, origin.feed_url(), None, |_| {}).await;
    let head = origin.node.head_revision();
    caught_up(&region, head).await;
    let node = &region[1];

    info!("Without a credential, with a wrong one or a malformed one, every call is refused.");
    let wrong = format!("tgc_{scoped_id}.not-the-secret");
    for (token, code, error) in [
        (None, Code::Unauthenticated, "CREDENTIAL_REQUIRED"),
        (
            Some(wrong.as_str()),
            Code::Unauthenticated,
            "CREDENTIAL_INVALID",
        ),
        (
            Some("tgc_cred-nobody.x"),
            Code::Unauthenticated,
            "CREDENTIAL_INVALID",
        ),
        (
            Some("tg_key-admin.x"),
            Code::Unauthenticated,
            "CREDENTIAL_INVALID",
        ),
    ] {
        for (call, outcome) in every_call(node, token).await {
            assert_eq!(
                outcome,
                Some((code, error.to_string())),
                "{call} with {token:?}"
            );
        }
    }
    untouched(node, head);

    info!("A credential for checks of acme's studio features checks that, and nothing else.");
    for (call, outcome) in every_call(node, Some(&scoped_token)).await {
        match call {
            "check" | "batch check" => assert_eq!(outcome, None, "{call}"),
            // Verifying a license is a check: the call is let through (and
            // then fails on its made-up token, not on the caller).
            "verify license" => assert!(
                !matches!(
                    outcome,
                    Some((Code::Unauthenticated | Code::PermissionDenied, _))
                ),
                "{call}: {outcome:?}"
            ),
            _ => assert_eq!(
                outcome,
                Some((Code::PermissionDenied, "CREDENTIAL_SCOPE".to_string())),
                "{call}"
            ),
        }
    }
    untouched(node, head);

    info!("A batch answers the items in scope and refuses the others, item by item.");
    let mut checks = CheckServiceClient::new(as_caller(node, Some(&scoped_token)).await);
    let batch = checks
        .batch_check(pb::BatchCheckRequest {
            checks: vec![check("acme", 0), check("globex", 0)],
            consistency: None,
        })
        .await
        .unwrap()
        .into_inner();
    let codes: Vec<String> = batch
        .results
        .iter()
        .map(|r| match &r.result {
            Some(pb::batch_check_result::Result::Decision(d)) => format!("{:?}", d.reason()),
            Some(pb::batch_check_result::Result::Error(e)) => e.code.clone(),
            None => "none".into(),
        })
        .collect();
    assert_eq!(codes, ["Allow", "CREDENTIAL_SCOPE"]);

    info!("The tests' own credential (every scope) watches everything; no credential travels.");
    let mut all = CheckServiceClient::new(tollgate_tests::channel(node.grpc_addr()).await);
    let mut stream = all
        .watch(pb::WatchRequest {
            account_id: None,
            from_revision: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut seen = String::new();
    loop {
        let message = tokio::time::timeout(DEADLINE, stream.next())
            .await
            .expect("the watch answers")
            .expect("the stream stays open")
            .unwrap();
        let heartbeat = matches!(message.event, Some(pb::watch_response::Event::Heartbeat(_)));
        let event = tollgate_engine::WatchEvent::try_from(message).unwrap();
        seen.push_str(&serde_json::to_string(&event).unwrap());
        if heartbeat {
            break;
        }
    }
    assert!(seen.contains("acme"), "the stream carries the data");
    assert!(
        !seen.contains("secret_sha256") && !seen.contains(&scoped_id),
        "a credential reached a watcher"
    );

    info!("Revoking the credential at the origin reaches every node of the region.");
    let revoked = origin
        .ok(
            Method::POST,
            &format!("/v1/credentials/{scoped_id}/revoke"),
            json!(null),
        )
        .await;
    caught_up(&region, revoked["revision"].as_u64().unwrap()).await;
    for n in &region {
        let refused = CheckServiceClient::new(as_caller(n, Some(&scoped_token)).await)
            .check(check("acme", 0))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{}", n.name());
        assert_eq!(error_code(&refused), "CREDENTIAL_REVOKED", "{}", n.name());
    }
    let listed = origin.ok(Method::GET, "/v1/credentials", Value::Null).await;
    let ours = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == scoped_id.as_str())
        .unwrap();
    assert!(ours["revoked_at"].is_number(), "{ours}");
    assert!(ours.get("secret_sha256").is_none(), "{ours}");

    info!("The audit log names the key that made and revoked the credential.");
    let audit = origin
        .ok(
            Method::GET,
            "/v1/audit?action=credential.revoke",
            Value::Null,
        )
        .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 1, "{audit}");
}
