//! Geography end to end: MaxMind-format databases generated with
//! mmdb-writer (the demo geography: IPv4 and IPv6 documentation ranges with
//! countries, continents, subdivisions and anonymous networks) loaded by a
//! regional node, driving GEO_BLOCKED and ANONYMOUS_NETWORK_BLOCKED for
//! entitlements with country, continent, subdivision, anonymity and
//! unknown-location rules (an unknown location denied by default wherever a
//! rule lists places); a location claimed in the request is ignored unless
//! the node trusts its proxy; `/v1/status` counts the checks whose address
//! resolved to no location.

use reqwest::Method;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tollgate_origin_node::OriginConfig;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;
use tollgate_tests::{init_tracing, start_region, TestOrigin};

type Client = CheckServiceClient<tollgate_tests::AppChannel>;

async fn reason(
    client: &mut Client,
    feature: &str,
    location: pb::check_request::Location,
) -> pb::Reason {
    client
        .check(pb::CheckRequest {
            explain: false,
            idempotency_key: None,
            account_id: "acme".into(),
            subject_id: Some("alice".into()),
            feature_id: feature.into(),
            consume: 0,
            location: Some(location),
            consistency: None,
        })
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap()
        .reason()
}

fn ip(address: &str) -> pb::check_request::Location {
    pb::check_request::Location::Ip(address.into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_rules_hold_for_ipv4_and_ipv6_callers() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let origin =
        TestOrigin::start(OriginConfig::new(1, dir.path().join("origin")), dir.path()).await;
    let rules: [(&str, Value); 8] = [
        ("countries", json!({"allow_countries": ["DE", "FR"]})),
        ("continent", json!({"allow_continents": ["EU"]})),
        ("subdivision", json!({"deny_subdivisions": ["US-CA"]})),
        (
            "subdivision-open",
            json!({"deny_subdivisions": ["US-CA"], "unknown_location": "allow"}),
        ),
        (
            "countries-open",
            json!({"allow_countries": ["DE", "FR"], "unknown_location": "allow"}),
        ),
        ("anonymous", json!({"block_anonymous": true})),
        ("known", json!({"unknown_location": "deny"})),
        // The older spelling, as stored data from before unknown_location has it.
        ("known-old", json!({"deny_unknown_location": true})),
    ];
    let features: Vec<&str> = rules.iter().map(|(f, _)| *f).collect();
    origin.seed(&features).await;
    let mut last = 0;
    for (feature, rule) in &rules {
        last = origin
            .ok(
                Method::POST,
                "/v1/entitlements",
                json!({"id": format!("e-{feature}"), "account": "acme",
                    "grant": {"feature": {"feature": feature}}, "valid_from": 1_700_000_000,
                    "geo_rule": rule}),
            )
            .await["revision"]
            .as_u64()
            .unwrap();
    }
    let geo = Arc::new(tollgate_geo::fixtures::demo_databases().unwrap());
    let region = start_region(
        1,
        dir.path(),
        &origin.node,
        origin.feed_url(),
        Some(geo),
        |_| {},
    )
    .await;
    tollgate_tests::wait_until(
        "the region to catch up",
        Duration::from_secs(20),
        || async { (region[0].applied_revision() >= last).then_some(()) },
    )
    .await
    .unwrap();
    let mut client = CheckServiceClient::new(tollgate_tests::channel(region[0].grpc_addr()).await);

    use pb::Reason::{AnonymousNetworkBlocked as Anon, GeoBlocked as Blocked, *};
    // (feature, caller, expected): Berlin and Paris v4/v6, San Francisco,
    // Tokyo, a VPN in Berlin, a VPN + hosting provider in France (v6), and
    // an address no database knows.
    let cases = [
        ("countries", "192.0.2.10", Allow),
        ("countries", "2001:db8::1", Allow),
        ("countries", "2001:db8:3::1", Allow),
        ("countries", "198.51.100.10", Blocked),
        ("countries", "2001:db8:1::1", Blocked),
        ("continent", "192.0.2.200", Allow),
        ("continent", "203.0.113.200", Blocked),
        ("continent", "2001:db8:2::1", Blocked),
        ("subdivision", "198.51.100.10", Blocked),
        ("subdivision", "2001:db8:1::1", Blocked),
        ("subdivision", "203.0.113.200", Allow),
        ("anonymous", "192.0.2.10", Allow),
        ("anonymous", "192.0.2.70", Anon),
        ("anonymous", "198.51.100.200", Anon),
        ("anonymous", "2001:db8:1:1::9", Anon),
        ("anonymous", "2001:db8:3::1", Anon),
        ("known", "192.0.2.10", Allow),
        ("known", "10.1.2.3", Blocked),
        ("known", "2001:db8:ffff::1", Blocked),
        ("known-old", "192.0.2.10", Allow),
        ("known-old", "10.1.2.3", Blocked),
        // An unknown location is denied by default by any rule that lists
        // places, allow-list or deny-list (fail closed), and passes where
        // the rule says unknown_location = allow; a rule without lists
        // does not look at it.
        ("countries", "10.1.2.3", Blocked),
        ("subdivision", "10.1.2.3", Blocked),
        ("subdivision", "2001:db8:ffff::1", Blocked),
        ("subdivision-open", "10.1.2.3", Allow),
        ("subdivision-open", "198.51.100.10", Blocked),
        ("countries-open", "10.1.2.3", Allow),
        ("countries-open", "198.51.100.10", Blocked),
        ("anonymous", "10.1.2.3", Allow),
    ];
    for &(feature, caller, expected) in &cases {
        assert_eq!(
            reason(&mut client, feature, ip(caller)).await,
            expected,
            "{feature} from {caller}"
        );
    }

    // An untrusted claim of being in Germany is ignored: the location is
    // unknown, and unknown locations are refused where the rule says so.
    let claimed = pb::check_request::Location::Resolved(pb::ResolvedLocation {
        country: "DE".into(),
        continent: "EU".into(),
        subdivisions: vec![],
        anonymous_network: false,
    });
    assert_eq!(reason(&mut client, "known", claimed.clone()).await, Blocked);
    assert_eq!(reason(&mut client, "continent", claimed).await, Blocked);

    tracing::info!("Proving /v1/status counts the checks with an address and the share whose location came out unknown, and only those.");
    let unknown = cases
        .iter()
        .filter(|(_, caller, _)| caller.starts_with("10.") || caller.starts_with("2001:db8:ffff"))
        .count() as u64;
    let share = region[0].status().geo_checks;
    assert_eq!(
        (share.checks, share.unknown_location),
        (cases.len() as u64, unknown),
        "the two checks with a claimed location are not counted: {share:?}"
    );
    assert!(
        (share.unknown_share - unknown as f64 / cases.len() as f64).abs() < 1e-9,
        "{share:?}"
    );
    let metrics = tollgate_server::telemetry::render();
    assert!(
        metrics.contains(r#"tollgate_checks_geo_total{location="unknown"}"#)
            && metrics.contains(r#"tollgate_checks_geo_total{location="known"}"#),
        "{metrics}"
    );

    for node in region {
        node.shutdown().await.unwrap();
    }
    origin.node.shutdown().await.unwrap();
}
