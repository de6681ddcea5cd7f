//! Region reports and seat releases at the origin: a report is stored
//! under `region-status/<region>` stamped with the commit time and carries
//! no changefeed mutation; one past a bound or with a bad region name is
//! refused, writing nothing. A seat release is published to regions only
//! for a floating-seat entitlement of the named account (404 otherwise).

use tollgate_model::region_report::*;
use tollgate_model::*;
use tollgate_origin::regions::{decode_region_statuses, RegionStatusRecord, REGIONS_MAX};
use tollgate_origin::*;
use tollgate_raft::{ApplyContext, MemState, ReadState};

const NOW: UnixSeconds = UnixSeconds(1_795_821_662);
const CTX: ApplyContext = ApplyContext {
    log_index: 0,
    term: 0,
    position_in_entry: 0,
};

fn id<T: TryFrom<String, Error = ModelError>>(s: &str) -> T {
    T::try_from(s.to_string()).unwrap()
}

fn run(state: &mut MemState, op: Op) -> OriginResponse {
    let cmd = OriginCommand {
        actor: "tester".into(),
        at: NOW,
        reason: None,
        op,
    };
    state.apply(&OriginLogic, &CTX, &cmd).unwrap()
}

fn revision(answer: &OriginResponse) -> u64 {
    match answer {
        OriginResponse::Committed { revision, .. } => *revision,
        other => panic!("not committed: {other:?}"),
    }
}

fn rejected(answer: OriginResponse, code: RejectCode) -> String {
    match answer {
        OriginResponse::Rejected(r) if r.code == code => r.message,
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

fn report(region: &str) -> RegionReport {
    RegionReport {
        region: region.into(),
        node_id: 1,
        leader_id: 1,
        term: 3,
        members: (1..=3)
            .map(|n| MemberReport {
                node_id: n,
                addr: format!("127.0.0.1:700{n}"),
                role: if n == 1 {
                    MemberRole::Leader
                } else {
                    MemberRole::Follower
                },
                reachable: n != 3,
                error: (n == 3).then(|| "connection refused".to_string()),
                facts: (n != 3).then(|| MemberFacts {
                    applied_revision: 7,
                    origin_head_revision: 7,
                    last_origin_contact: Some(NOW),
                    staleness_seconds: Some(0),
                    geo: vec![GeoDatabaseBuild {
                        slot: "location".into(),
                        database_type: "GeoIP2-City".into(),
                        build_epoch: 1_700_000_000,
                    }],
                }),
            })
            .collect(),
        seats: vec![SeatHolders {
            entitlement: id("e-cad"),
            account: id("acme"),
            holders: vec![SeatHolder {
                subject: id("alice"),
                acquired_at: Some(NOW),
                expires_at: UnixSeconds(NOW.0 + 60),
            }],
        }],
        seats_truncated: false,
    }
}

fn stored(state: &MemState, region: &str) -> Option<RegionStatusRecord> {
    state
        .get(&keys::region_status(region))
        .unwrap()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

fn change(state: &MemState, revision: u64) -> ChangeRecord {
    serde_json::from_slice(&state.get(&keys::change(revision)).unwrap().unwrap()).unwrap()
}

fn audit(state: &MemState, revision: u64) -> AuditRecord {
    serde_json::from_slice(&state.get(&keys::audit(revision)).unwrap().unwrap()).unwrap()
}

#[test]
fn a_report_is_stored_stamped_and_never_published() {
    let mut state = MemState::default();
    let rev = revision(&run(&mut state, Op::RecordRegionReport(report("eu-west"))));
    let record = stored(&state, "eu-west").expect("stored under region-status/eu-west");
    assert_eq!(record.report, report("eu-west"));
    assert_eq!((record.received_at, record.revision), (NOW, rev));
    assert!(change(&state, rev).mutations.is_empty(), "origin only");
    assert!(
        state.get(&keys::audit(rev)).unwrap().is_none(),
        "a report is telemetry: no audit record"
    );

    // The next report replaces it; readers list every region by prefix.
    let mut newer = report("eu-west");
    newer.seats.clear();
    let rev2 = revision(&run(&mut state, Op::RecordRegionReport(newer.clone())));
    revision(&run(&mut state, Op::RecordRegionReport(report("us-east"))));
    let entries: Vec<(Vec<u8>, Vec<u8>)> = state
        .data
        .range(keys::REGION_STATUS_PREFIX.as_bytes().to_vec()..)
        .take_while(|(k, _)| k.starts_with(keys::REGION_STATUS_PREFIX.as_bytes()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let all = decode_region_statuses(entries).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!((all[0].report.clone(), all[0].revision), (newer, rev2));
    assert_eq!(all[1].report.region, "us-east");
}

#[test]
fn a_report_out_of_bounds_or_misnamed_is_refused_and_writes_nothing() {
    let mut state = MemState::default();
    let before = state.clone();
    let cases: Vec<(&str, RegionReport)> = vec![
        ("bad region name", report("EU_West")),
        ("empty region name", report("")),
        ("too many members", {
            let mut r = report("eu");
            let one = r.members[0].clone();
            r.members = vec![one; REPORT_MEMBERS_MAX + 1];
            r
        }),
        ("too many seat holders", {
            let mut r = report("eu");
            let one = r.seats[0].holders[0].clone();
            r.seats[0].holders = vec![one; REPORT_SEAT_HOLDERS_MAX + 1];
            r
        }),
        ("too many seat entitlements", {
            let mut r = report("eu");
            let mut one = r.seats[0].clone();
            one.holders.clear();
            r.seats = vec![one; REPORT_SEAT_ENTITLEMENTS_MAX + 1];
            r
        }),
        ("an address too long", {
            let mut r = report("eu");
            r.members[0].addr = "a".repeat(REPORT_ADDR_LEN_MAX + 1);
            r
        }),
        ("an error text too long", {
            let mut r = report("eu");
            r.members[2].error = Some("e".repeat(REPORT_ERROR_LEN_MAX + 1));
            r
        }),
        ("too many geo databases", {
            let mut r = report("eu");
            let facts = r.members[0].facts.as_mut().unwrap();
            facts.geo = vec![facts.geo[0].clone(); REPORT_GEO_DATABASES_MAX + 1];
            r
        }),
    ];
    for (what, r) in cases {
        let message = rejected(
            run(&mut state, Op::RecordRegionReport(r)),
            RejectCode::Invalid,
        );
        assert!(!message.is_empty(), "{what}");
        assert_eq!(state, before, "{what}: nothing written");
    }
}

#[test]
fn reports_are_kept_for_a_bounded_number_of_regions() {
    let mut state = MemState::default();
    for n in 0..REGIONS_MAX {
        revision(&run(
            &mut state,
            Op::RecordRegionReport(report(&format!("r{n}"))),
        ));
    }
    // A known region still reports; a new one past the bound is refused.
    revision(&run(&mut state, Op::RecordRegionReport(report("r0"))));
    let message = rejected(
        run(&mut state, Op::RecordRegionReport(report("one-too-many"))),
        RejectCode::Invalid,
    );
    assert!(message.contains("64 regions"), "{message}");
}

fn seed_seats(state: &mut MemState) {
    revision(&run(
        state,
        Op::PutProduct(Product {
            id: id("studio"),
            name: "Studio".into(),
        }),
    ));
    revision(&run(
        state,
        Op::PutFeature(Feature {
            id: id("cad"),
            product: id("studio"),
            name: "CAD".into(),
            kind: FeatureKind::Boolean,
            geo_rule: GeoRule::default(),
            offline_policy: None,
            config: ConfigValues::new(),
            auto_approve: None,
        }),
    ));
    for account in ["acme", "globex"] {
        revision(&run(
            state,
            Op::PutAccount(Account {
                id: id(account),
                name: account.into(),
                status: AccountStatus::Active,
            }),
        ));
    }
    for (ent, seats) in [
        (
            "e-cad",
            Some(Seats {
                count: 2,
                mode: SeatMode::Floating {
                    lease_ttl_seconds: 60,
                },
            }),
        ),
        ("e-plain", None),
    ] {
        revision(&run(
            state,
            Op::Grant(Entitlement {
                id: id(ent),
                account: id("acme"),
                grant: Grant::Feature(FeatureGrant::new(id("cad"))),
                valid_from: UnixSeconds(0),
                valid_until: None,
                grace_period_seconds: 0,
                seats,
                usage_cap_overrides: Default::default(),
                status: EntitlementStatus::Active,
                geo_rule: GeoRule::default(),
                offline_policy: None,
                required_role: None,
                allowed_groups: Default::default(),
                source_order: None,
                revision: 0,
                trial: false,
            }),
        ));
    }
}

fn release(account: &str, ent: &str, subject: &str) -> Op {
    Op::ReleaseSeatHolder {
        account: id(account),
        entitlement: id(ent),
        subject: id(subject),
    }
}

#[test]
fn a_seat_release_is_published_to_regions_and_audited() {
    let mut state = MemState::default();
    seed_seats(&mut state);
    // The subject need not exist (a removed device may still hold a seat).
    let rev = revision(&run(&mut state, release("acme", "e-cad", "alice")));
    let mutations = change(&state, rev).mutations;
    assert_eq!(
        mutations,
        vec![Mutation::ReleaseSeat {
            account: id("acme"),
            entitlement: id("e-cad"),
            subject: id("alice"),
        }]
    );
    assert!(!mutations[0].is_for_replicas(), "region nodes only");
    let audit = audit(&state, rev);
    assert_eq!(
        (audit.action.as_str(), audit.target.as_str()),
        ("seat.release", "seat/e-cad/alice")
    );
}

#[test]
fn a_seat_release_of_another_accounts_or_a_seatless_entitlement_is_refused() {
    let mut state = MemState::default();
    seed_seats(&mut state);
    let before = state.clone();
    // Another account's entitlement answers exactly as an unknown one.
    let other = rejected(
        run(&mut state, release("globex", "e-cad", "alice")),
        RejectCode::NotFound,
    );
    let unknown = rejected(
        run(&mut state, release("globex", "e-nope", "alice")),
        RejectCode::NotFound,
    );
    assert!(other.contains("e-cad in account globex"), "{other}");
    assert!(unknown.contains("e-nope in account globex"), "{unknown}");
    rejected(
        run(&mut state, release("acme", "e-plain", "alice")),
        RejectCode::Invalid,
    );
    assert_eq!(state, before, "nothing written");
}
