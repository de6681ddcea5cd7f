//! A check as it arrives on the wire, through validation, the engine and
//! back onto the wire: the path every region node will run, without the
//! network. Proves the proto contract and the engine agree.

use prost::Message;
use tollgate_engine::{
    decide, AccountView, CheckRequest, Environment, Freshness, Location, NoLiveState,
};
use tollgate_model::{Dataset, GeoFacts, UnixSeconds};
use tollgate_proto::check::v1 as pb;
use tollgate_proto::convert::decision_to_proto;
use tollgate_tests::DEMO_DATA;

const NOW: UnixSeconds = UnixSeconds(1_795_821_662);

/// Decodes `bytes` as a CheckRequest, decides it against the demo data and
/// returns the encoded Decision, as a node would.
fn answer(dataset: &Dataset, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let wire = pb::CheckRequest::decode(bytes).map_err(|e| format!("malformed: {e}"))?;
    let request = CheckRequest::try_from(wire).map_err(|e| format!("invalid: {e}"))?;
    let geo = match request.location {
        Location::Resolved(facts) => facts,
        Location::Unknown => GeoFacts::unknown(),
        Location::Ip(_) => return Err("no geo database in this test".into()),
    };
    let view = dataset
        .accounts
        .iter()
        .find(|a| a.id == request.check.account)
        .map(|a| {
            let (subjects, entitlements) = dataset.of_account(&a.id);
            AccountView::build(
                a.clone(),
                subjects.cloned(),
                entitlements.cloned(),
                &dataset.catalog,
            )
        });
    let env = Environment {
        catalog: &dataset.catalog,
        live: &NoLiveState,
        freshness: Freshness::current(7, NOW),
        now: NOW,
    };
    let decision = decide(&request.check, view.as_ref(), &geo, &env);
    Ok(decision_to_proto(decision).encode_to_vec())
}

fn request(account: &str, subject: Option<&str>, feature: &str, continent: &str) -> Vec<u8> {
    pb::CheckRequest {
        explain: false,
        idempotency_key: None,
        account_id: account.into(),
        subject_id: subject.map(Into::into),
        feature_id: feature.into(),
        consume: 0,
        location: Some(pb::check_request::Location::Resolved(
            pb::ResolvedLocation {
                continent: continent.into(),
                ..Default::default()
            },
        )),
        consistency: None,
    }
    .encode_to_vec()
}

#[test]
fn checks_round_trip_through_the_wire_with_stable_reasons() {
    tollgate_tests::init_tracing();
    let dataset: Dataset = serde_json::from_str(DEMO_DATA).expect("demo data parses");
    dataset.validate().expect("demo data is valid");

    tracing::info!("Proving that allows and every kind of denial survive the wire.");
    let cases = [
        (
            request("acme", Some("alice"), "export", "EU"),
            pb::Reason::Allow,
        ),
        (
            request("acme", Some("alice"), "export", "NA"),
            pb::Reason::GeoBlocked,
        ),
        (
            request("acme", Some("carol"), "export", "EU"),
            pb::Reason::SeatLimit,
        ),
        (
            request("acme", Some("bob"), "beta-editor", "EU"),
            pb::Reason::RoleRequired,
        ),
        (
            request("acme", Some("zed"), "export", "EU"),
            pb::Reason::UnknownSubject,
        ),
        (
            request("acme", None, "ai-assist", "EU"),
            pb::Reason::NotEntitled,
        ),
        (
            request("nobody", None, "export", "EU"),
            pb::Reason::UnknownAccount,
        ),
        (
            request("umbrella", None, "export", "EU"),
            pb::Reason::Suspended,
        ),
        (request("globex", None, "export", "EU"), pb::Reason::Expired),
    ];
    for (bytes, expected) in cases {
        let reply = answer(&dataset, &bytes).expect("answered");
        let decision = pb::Decision::decode(reply.as_slice()).expect("a valid Decision");
        assert_eq!(decision.reason(), expected, "{}", decision.explanation);
        assert_eq!(decision.allowed, expected == pb::Reason::Allow);
        assert!(!decision.explanation.is_empty());
    }

    tracing::info!("Proving that a NOT_ENTITLED answer carries its upgrade hint on the wire.");
    let reply = answer(&dataset, &request("acme", None, "ai-assist", "EU")).unwrap();
    let decision = pb::Decision::decode(reply.as_slice()).unwrap();
    assert_eq!(
        decision.upgrade_hint.and_then(|h| h.target),
        Some(pb::upgrade_hint::Target::PlanId("enterprise".into()))
    );
}

#[test]
fn malformed_and_invalid_requests_are_refused_not_decided() {
    tollgate_tests::init_tracing();
    let dataset: Dataset = serde_json::from_str(DEMO_DATA).unwrap();

    tracing::info!("Proving that bytes which are not a CheckRequest are refused.");
    let err = answer(&dataset, &[0xff, 0xff, 0xff, 0xff]).unwrap_err();
    assert!(err.starts_with("malformed"), "{err}");
    let mut truncated = request("acme", Some("alice"), "export", "EU");
    truncated.truncate(truncated.len() - 3);
    assert!(answer(&dataset, &truncated)
        .unwrap_err()
        .starts_with("malformed"));

    tracing::info!("Proving that a well-formed but invalid request names the field.");
    let err = answer(
        &dataset,
        &request("acme", Some("alice"), "export", "Europe"),
    )
    .unwrap_err();
    assert!(err.contains("resolved.continent"), "{err}");
    let err = answer(&dataset, &request("", None, "export", "EU")).unwrap_err();
    assert!(err.contains("account_id"), "{err}");
}
