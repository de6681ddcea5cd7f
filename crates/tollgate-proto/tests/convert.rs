//! Wire <-> model conversions: round trips keep every field, and bad input
//! is refused with an error naming the field.

use std::collections::{BTreeMap, BTreeSet};
use tollgate_engine::{CheckRequest, Consistency, Location, BATCH_CHECKS_MAX};
use tollgate_model::*;
use tollgate_proto::check::v1 as check_pb;
use tollgate_proto::convert::batch_from_proto;
use tollgate_proto::entitlement::v1 as ent_pb;
use tollgate_proto::ConvertError;

fn full_entitlement() -> Entitlement {
    let mut geo = GeoRule::default();
    geo.allow_countries.insert(CountryCode::new("DE").unwrap());
    geo.deny_continents.insert(Continent::Asia);
    geo.deny_subdivisions
        .insert(SubdivisionCode::new("US-CA").unwrap());
    geo.block_anonymous = true;
    let mut grant = FeatureGrant::new(FeatureId::new("render").unwrap());
    grant.usage_cap = Some(UsageCap {
        limit: 500,
        enforcement: CapEnforcement::Soft,
        additive: true,
    });
    grant
        .config
        .insert(ConfigKey::new("quality").unwrap(), "high".into());
    Entitlement {
        id: EntitlementId::new("e-1").unwrap(),
        account: AccountId::new("acme").unwrap(),
        grant: Grant::Feature(grant),
        valid_from: UnixSeconds(1_700_000_000),
        valid_until: Some(UnixSeconds(1_800_000_000)),
        grace_period_seconds: 3600,
        seats: Some(Seats {
            count: 3,
            mode: SeatMode::Named {
                assigned: [SubjectId::new("alice").unwrap()].into_iter().collect(),
            },
        }),
        usage_cap_overrides: BTreeMap::from([(
            FeatureId::new("export").unwrap(),
            UsageCap {
                limit: 7,
                enforcement: CapEnforcement::Hard,
                additive: false,
            },
        )]),
        status: EntitlementStatus::Suspended,
        geo_rule: geo,
        offline_policy: Some(OfflinePolicy {
            offline_grace_seconds: 60,
            after_grace: AfterGrace::Allow,
        }),
        required_role: Some(RoleName::new("admin").unwrap()),
        allowed_groups: BTreeSet::from([GroupName::new("eng").unwrap()]),
        source_order: Some(OrderId::new("ord-9").unwrap()),
        revision: 77,
        trial: true,
    }
}

#[test]
fn entitlement_round_trips_through_the_wire() {
    let ours = full_entitlement();
    let wire: ent_pb::Entitlement = ours.clone().into();
    let bytes = prost::Message::encode_to_vec(&wire);
    let decoded: ent_pb::Entitlement = prost::Message::decode(bytes.as_slice()).unwrap();
    assert_eq!(Entitlement::try_from(decoded).unwrap(), ours);

    let mut floating = ours.clone();
    floating.grant = Grant::Plan(PlanId::new("pro").unwrap());
    floating.seats = Some(Seats {
        count: 10,
        mode: SeatMode::Floating {
            lease_ttl_seconds: 300,
        },
    });
    floating.status = EntitlementStatus::Revoked;
    let wire: ent_pb::Entitlement = floating.clone().into();
    assert_eq!(Entitlement::try_from(wire).unwrap(), floating);
}

#[test]
#[allow(deprecated)] // deny_unknown_location: still read, and what is proved here
fn unknown_location_round_trips_and_the_older_field_still_reads() {
    for chosen in [
        None,
        Some(UnknownLocation::Deny),
        Some(UnknownLocation::Allow),
    ] {
        let mut ours = full_entitlement();
        ours.geo_rule.unknown_location = chosen;
        let wire: ent_pb::Entitlement = ours.clone().into();
        let rule = wire.geo_rule.as_ref().unwrap();
        assert_eq!(
            rule.deny_unknown_location,
            chosen == Some(UnknownLocation::Deny),
            "an explicit DENY keeps the older spelling for older readers"
        );
        let bytes = prost::Message::encode_to_vec(&wire);
        let decoded: ent_pb::Entitlement = prost::Message::decode(bytes.as_slice()).unwrap();
        assert_eq!(Entitlement::try_from(decoded).unwrap(), ours, "{chosen:?}");
    }
    let mut old: ent_pb::Entitlement = full_entitlement().into();
    let rule = old.geo_rule.as_mut().unwrap();
    rule.unknown_location = ent_pb::UnknownLocation::Unspecified as i32;
    rule.deny_unknown_location = true;
    assert_eq!(
        Entitlement::try_from(old)
            .unwrap()
            .geo_rule
            .unknown_location,
        Some(UnknownLocation::Deny),
        "a message from before unknown_location reads as DENY"
    );
}

fn refused(mutate: impl FnOnce(&mut ent_pb::Entitlement)) -> ConvertError {
    let mut wire: ent_pb::Entitlement = full_entitlement().into();
    mutate(&mut wire);
    Entitlement::try_from(wire).expect_err("must be refused")
}

#[test]
fn bad_entitlements_are_refused_naming_the_field() {
    let cases: Vec<(&str, ConvertError)> = vec![
        (
            "entitlement_id",
            refused(|e| e.entitlement_id = "has space".into()),
        ),
        ("account_id", refused(|e| e.account_id = String::new())),
        ("grant", refused(|e| e.grant = None)),
        ("status", refused(|e| e.status = 0)),
        ("status", refused(|e| e.status = 99)),
        (
            "geo_rule.allow_countries[0]",
            refused(|e| e.geo_rule.as_mut().unwrap().allow_countries = vec!["germany".into()]),
        ),
        (
            "geo_rule.deny_continents",
            refused(|e| e.geo_rule.as_mut().unwrap().deny_continents = vec!["EU".into(); 8]),
        ),
        (
            "geo_rule.unknown_location",
            refused(|e| e.geo_rule.as_mut().unwrap().unknown_location = 7),
        ),
        (
            "geo_rule.unknown_location",
            refused(|e| {
                let rule = e.geo_rule.as_mut().unwrap();
                rule.unknown_location = ent_pb::UnknownLocation::Allow as i32;
                #[allow(deprecated)]
                {
                    rule.deny_unknown_location = true;
                }
            }),
        ),
        (
            "offline_policy.after_grace",
            refused(|e| e.offline_policy.as_mut().unwrap().after_grace = 0),
        ),
        (
            "seats.mode",
            refused(|e| e.seats.as_mut().unwrap().mode = None),
        ),
        (
            "valid_until",
            refused(|e| e.valid_until = Some(e.valid_from - 1)),
        ),
        (
            "required_role",
            refused(|e| e.required_role = Some("x".repeat(200))),
        ),
        (
            "usage_cap_overrides[export].enforcement",
            refused(|e| e.usage_cap_overrides.get_mut("export").unwrap().enforcement = 0),
        ),
        (
            "value of big is 2000 bytes",
            refused(|e| {
                if let Some(ent_pb::grant::Kind::Feature(f)) =
                    e.grant.as_mut().and_then(|g| g.kind.as_mut())
                {
                    f.config.insert("big".into(), "x".repeat(2000));
                }
            }),
        ),
    ];
    for (field, err) in cases {
        assert!(err.to_string().contains(field), "expected {field} in {err}");
    }
}

fn request() -> check_pb::CheckRequest {
    check_pb::CheckRequest {
        explain: false,
        idempotency_key: None,
        account_id: "acme".into(),
        subject_id: Some("alice".into()),
        feature_id: "render".into(),
        consume: 3,
        location: Some(check_pb::check_request::Location::Ip("2001:db8::1".into())),
        consistency: Some(check_pb::Consistency {
            requirement: Some(check_pb::consistency::Requirement::AtLeastRevision(9)),
        }),
    }
}

#[test]
fn check_request_round_trips_and_validates() {
    let ours = CheckRequest::try_from(request()).unwrap();
    assert_eq!(ours.consistency, Consistency::AtLeastRevision(9));
    assert_eq!(ours.location, Location::Ip("2001:db8::1".parse().unwrap()));
    let back: check_pb::CheckRequest = ours.clone().into();
    assert_eq!(CheckRequest::try_from(back).unwrap(), ours);

    let mut r = request();
    r.location = Some(check_pb::check_request::Location::Resolved(
        check_pb::ResolvedLocation {
            country: "US".into(),
            continent: "NA".into(),
            subdivisions: vec!["US-CA".into()],
            anonymous_network: true,
        },
    ));
    r.consistency = None;
    let ours = CheckRequest::try_from(r).unwrap();
    assert_eq!(ours.consistency, Consistency::Local);
    let Location::Resolved(facts) = ours.location else {
        panic!("resolved")
    };
    assert_eq!(facts.country, Some(CountryCode::new("US").unwrap()));
    assert!(facts.anonymous.unwrap().is_anonymous());

    type Mutation = Box<dyn FnOnce(&mut check_pb::CheckRequest)>;
    let bad: Vec<(&str, Mutation)> = vec![
        ("account_id", Box::new(|r| r.account_id = "a/b".into())),
        ("feature_id", Box::new(|r| r.feature_id.clear())),
        ("subject_id", Box::new(|r| r.subject_id = Some(" ".into()))),
        ("consume", Box::new(|r| r.consume = u64::MAX)),
        (
            "ip",
            Box::new(|r| {
                r.location = Some(check_pb::check_request::Location::Ip("999.1.1.1".into()))
            }),
        ),
        (
            "resolved.country",
            Box::new(|r| {
                r.location = Some(check_pb::check_request::Location::Resolved(
                    check_pb::ResolvedLocation {
                        country: "usa".into(),
                        ..Default::default()
                    },
                ))
            }),
        ),
        (
            "resolved.subdivisions",
            Box::new(|r| {
                r.location = Some(check_pb::check_request::Location::Resolved(
                    check_pb::ResolvedLocation {
                        subdivisions: vec!["US-CA".into(); 5],
                        ..Default::default()
                    },
                ))
            }),
        ),
    ];
    for (field, mutate) in bad {
        let mut r = request();
        mutate(&mut r);
        let err = CheckRequest::try_from(r).expect_err(field);
        assert_eq!(err.field(), field, "{err}");
    }
}

#[test]
fn batches_are_bounded_and_items_fail_alone() {
    let mut bad_item = request();
    bad_item.feature_id = "no good".into();
    let batch = check_pb::BatchCheckRequest {
        checks: vec![request(), bad_item, request()],
        consistency: None,
    };
    let (items, consistency) = batch_from_proto(batch).unwrap();
    assert_eq!(consistency, Consistency::Local);
    assert!(items[0].is_ok() && items[1].is_err() && items[2].is_ok());
    assert_eq!(
        items[0].as_ref().unwrap().consistency,
        Consistency::Local,
        "the batch's consistency overrides the item's"
    );

    let too_big = check_pb::BatchCheckRequest {
        checks: vec![request(); BATCH_CHECKS_MAX + 1],
        consistency: None,
    };
    assert_eq!(batch_from_proto(too_big).unwrap_err().field(), "checks");
}

#[test]
fn reasons_map_one_to_one() {
    use tollgate_engine::Reason;
    let mut seen = std::collections::HashSet::new();
    for r in Reason::ALL {
        let wire = check_pb::Reason::from(r);
        assert_ne!(wire, check_pb::Reason::Unspecified);
        assert!(seen.insert(wire as i32), "{r} collides");
        assert_eq!(Reason::try_from(wire).unwrap(), r);
        assert_eq!(
            wire.as_str_name(),
            format!("REASON_{}", r.code()),
            "the wire name is the stable code"
        );
    }
    assert!(Reason::try_from(check_pb::Reason::Unspecified).is_err());
}
