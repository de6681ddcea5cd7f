//! Access requests for more seats: filed only for an active entitlement of
//! the request's own account that has seats, within 1..=SEATS_MORE_MAX and
//! the model's SEATS_MAX; approved by a person into a higher seat count on
//! that entitlement in the approval's revision (its change record carries
//! it to regions); denied without touching it; never auto-approved.

use std::collections::{BTreeMap, BTreeSet};
use tollgate_model::limits::SEATS_MAX;
use tollgate_model::*;
use tollgate_origin::keys;
use tollgate_origin::*;
use tollgate_raft::{ApplyContext, MemState};

const NOW: UnixSeconds = UnixSeconds(1_795_821_662);

fn id<T: TryFrom<String, Error = ModelError>>(s: &str) -> T {
    T::try_from(s.to_string()).unwrap()
}

struct Origin {
    state: MemState,
}

impl Origin {
    fn apply_as(&mut self, actor: &str, op: Op) -> OriginResponse {
        let ctx = ApplyContext {
            log_index: 1,
            term: 1,
            position_in_entry: 0,
        };
        let cmd = OriginCommand {
            actor: actor.into(),
            at: NOW,
            reason: None,
            op,
        };
        self.state
            .apply(&OriginLogic, &ctx, &cmd)
            .expect("reads never fail in memory")
    }

    /// Commits `op`; its revision and the entitlements it names.
    fn committed_as(&mut self, actor: &str, op: Op) -> (u64, Vec<EntitlementId>) {
        let action = op.action();
        match self.apply_as(actor, op) {
            OriginResponse::Committed {
                revision,
                entitlements,
            } => (revision, entitlements),
            other => panic!("{action}: expected a commit, got {other:?}"),
        }
    }

    fn committed(&mut self, op: Op) -> u64 {
        self.committed_as("key-admin", op).0
    }

    /// `op` is refused with `code` and a message containing `needle`, and
    /// writes nothing.
    fn rejected(&mut self, op: Op, code: RejectCode, needle: &str) {
        let before = self.state.clone();
        match self.apply_as("key-admin", op) {
            OriginResponse::Rejected(r) => {
                assert_eq!(r.code, code, "{}", r.message);
                assert!(
                    r.message.contains(needle),
                    "expected {needle:?} in {:?}",
                    r.message
                );
            }
            other => panic!("expected a rejection with {needle:?}, got {other:?}"),
        }
        assert_eq!(self.state, before, "a refused command writes nothing");
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Option<T> {
        self.state
            .data
            .get(key)
            .map(|v| serde_json::from_slice(v).unwrap())
    }

    fn entitlement(&self, eid: &str) -> Entitlement {
        self.get(&keys::entitlement(&id(eid)))
            .expect("entitlement exists")
    }

    fn request(&self, rid: &str) -> AccessRequest {
        self.get(&keys::access_request(rid))
            .expect("access request exists")
    }

    fn last_change(&self) -> ChangeRecord {
        let head: u64 = self.get(keys::HEAD_REVISION).unwrap();
        self.get(&keys::change(head)).unwrap()
    }
}

fn entitlement(eid: &str, account: &str, grant: Grant, seats: Option<Seats>) -> Entitlement {
    Entitlement {
        id: id(eid),
        account: id(account),
        grant,
        valid_from: NOW,
        valid_until: None,
        grace_period_seconds: 0,
        seats,
        usage_cap_overrides: BTreeMap::new(),
        status: EntitlementStatus::Active,
        geo_rule: GeoRule::default(),
        offline_policy: None,
        required_role: None,
        allowed_groups: Default::default(),
        source_order: None,
        revision: 0,
        trial: false,
    }
}

fn named(count: u32, assigned: &[&str]) -> Option<Seats> {
    Some(Seats {
        count,
        mode: SeatMode::Named {
            assigned: assigned.iter().map(|s| id(s)).collect::<BTreeSet<_>>(),
        },
    })
}

fn floating(count: u32) -> Option<Seats> {
    Some(Seats {
        count,
        mode: SeatMode::Floating {
            lease_ttl_seconds: 300,
        },
    })
}

/// Product studio with feature render (auto-approval rule: anything),
/// plan pro and add-on render-pack (auto-approval rule: anything);
/// accounts acme (user alice) and globex. Entitlements:
/// - acme-pro: acme, plan pro, 5 named seats (alice holds one);
/// - acme-float: acme, add-on render-pack, 3 floating seats;
/// - acme-open: acme, plan pro, no seat limit;
/// - acme-paused: acme, plan pro, 2 named seats, suspended;
/// - acme-old: acme, plan pro, 2 named seats, revoked;
/// - acme-huge: acme, plan pro, SEATS_MAX - 5 floating seats;
/// - globex-pro: globex, plan pro, 5 named seats.
fn seeded() -> Origin {
    let mut o = Origin {
        state: MemState::default(),
    };
    let anything = Some(AutoApprove {
        max_duration_seconds: None,
        require_subject: false,
    });
    o.committed(Op::PutProduct(Product {
        id: id("studio"),
        name: "Studio".into(),
    }));
    o.committed(Op::PutFeature(Feature {
        id: id("render"),
        product: id("studio"),
        name: "Render".into(),
        kind: FeatureKind::Boolean,
        geo_rule: GeoRule::default(),
        offline_policy: None,
        config: ConfigValues::new(),
        auto_approve: anything,
    }));
    o.committed(Op::PutPlan(Plan {
        id: id("pro"),
        product: id("studio"),
        name: "Studio Pro".into(),
        tier: 2,
        features: vec![FeatureGrant::new(id("render"))],
        included_seats: None,
        geo_rule: GeoRule::default(),
        offline_policy: None,
    }));
    o.committed(Op::PutAddon(Addon {
        id: id("render-pack"),
        product: id("studio"),
        name: "Render pack".into(),
        features: vec![FeatureGrant::new(id("render"))],
        compatible_plans: Default::default(),
        geo_rule: GeoRule::default(),
        offline_policy: None,
        auto_approve: anything,
    }));
    for account in ["acme", "globex"] {
        o.committed(Op::PutAccount(Account {
            id: id(account),
            name: account.into(),
            status: AccountStatus::Active,
        }));
    }
    o.committed(Op::PutSubject(Subject {
        id: id("alice"),
        account: id("acme"),
        kind: SubjectKind::User,
        roles: Default::default(),
        groups: Default::default(),
    }));
    let pro = || Grant::Plan(id("pro"));
    for ent in [
        entitlement("acme-pro", "acme", pro(), named(5, &["alice"])),
        entitlement(
            "acme-float",
            "acme",
            Grant::Addon(id("render-pack")),
            floating(3),
        ),
        entitlement("acme-open", "acme", pro(), None),
        entitlement("acme-paused", "acme", pro(), named(2, &[])),
        entitlement("acme-old", "acme", pro(), named(2, &[])),
        entitlement("acme-huge", "acme", pro(), floating(SEATS_MAX - 5)),
        entitlement("globex-pro", "globex", pro(), named(5, &[])),
    ] {
        o.committed(Op::Grant(ent));
    }
    for (eid, change) in [
        ("acme-paused", EntitlementChange::Suspend),
        ("acme-old", EntitlementChange::Revoke),
    ] {
        o.committed(Op::ChangeEntitlement {
            id: id(eid),
            change,
        });
    }
    o
}

/// A request of acme for `more` seats on `eid`.
fn seats(rid: &str, eid: &str, more: u32) -> AccessRequestSpec {
    AccessRequestSpec {
        id: rid.into(),
        account: id("acme"),
        subject: None,
        target: AccessTarget::Seats {
            entitlement: id(eid),
            more,
        },
        justification: "the team grew".into(),
        duration_seconds: None,
    }
}

#[test]
fn the_target_is_spelled_like_the_others_and_unknown_fields_are_refused() {
    let target: AccessTarget =
        serde_json::from_str(r#"{"seats": {"entitlement": "acme-pro", "more": 5}}"#).unwrap();
    assert_eq!(
        target,
        AccessTarget::Seats {
            entitlement: id("acme-pro"),
            more: 5
        }
    );
    assert_eq!(
        serde_json::to_value(&target).unwrap(),
        serde_json::json!({"seats": {"entitlement": "acme-pro", "more": 5}})
    );
    for bad in [
        r#"{"seats": {"entitlement": "acme-pro"}}"#,
        r#"{"seats": {"entitlement": "acme-pro", "more": -1}}"#,
        r#"{"seats": {"entitlement": "acme-pro", "more": 5, "mode": "floating"}}"#,
    ] {
        assert!(
            serde_json::from_str::<AccessTarget>(bad).is_err(),
            "{bad} is refused"
        );
    }
}

#[test]
fn filing_is_refused_unless_the_entitlement_is_the_accounts_own_active_one_with_seats() {
    let mut o = seeded();
    let mut with_duration = seats("with-duration", "acme-pro", 1);
    with_duration.duration_seconds = Some(86_400);
    let rows: Vec<(&str, AccessRequestSpec, RejectCode, &str)> = vec![
        (
            "another account's entitlement",
            seats("r", "globex-pro", 1),
            RejectCode::NotFound,
            "unknown entitlement globex-pro in account acme",
        ),
        (
            "an unknown entitlement",
            seats("r", "nope", 1),
            RejectCode::NotFound,
            "unknown entitlement nope in account acme",
        ),
        (
            "a revoked entitlement",
            seats("r", "acme-old", 1),
            RejectCode::Conflict,
            "entitlement acme-old is revoked",
        ),
        (
            "a suspended entitlement",
            seats("r", "acme-paused", 1),
            RejectCode::Conflict,
            "entitlement acme-paused is suspended",
        ),
        (
            "an entitlement without seats",
            seats("r", "acme-open", 1),
            RejectCode::Invalid,
            "entitlement acme-open has no seats",
        ),
        (
            "no seats at all",
            seats("r", "acme-pro", 0),
            RejectCode::Invalid,
            "more seats must be 1..=10000, not 0",
        ),
        (
            "more than one request may ask for",
            seats("r", "acme-pro", SEATS_MORE_MAX + 1),
            RejectCode::Invalid,
            "more seats must be 1..=10000, not 10001",
        ),
        (
            "past the model's maximum",
            seats("r", "acme-huge", 6),
            RejectCode::Invalid,
            "would pass the maximum of 1000000",
        ),
        (
            "a duration",
            with_duration,
            RejectCode::Invalid,
            "duration_seconds",
        ),
    ];
    for (why, spec, code, needle) in rows {
        eprintln!("refused: {why}");
        o.rejected(Op::RequestAccess(spec), code, needle);
    }

    // Within the bounds, on either kind of seats, it is filed and waits.
    for (rid, eid, more) in [
        ("most", "acme-pro", SEATS_MORE_MAX),
        ("up-to-the-maximum", "acme-huge", 5),
        ("floating", "acme-float", 1),
    ] {
        let before = o.entitlement(eid);
        let (_, entitlements) =
            o.committed_as("key-acme", Op::RequestAccess(seats(rid, eid, more)));
        assert!(entitlements.is_empty(), "{rid}: filing grants nothing");
        assert_eq!(o.request(rid).status, AccessRequestStatus::Pending, "{rid}");
        assert_eq!(o.entitlement(eid), before, "{rid}: filing changes nothing");
        assert!(
            o.last_change().mutations.is_empty(),
            "{rid}: filing changes nothing regions serve"
        );
    }
}

#[test]
fn approval_raises_the_seat_count_and_the_entitlements_revision() {
    let mut o = seeded();
    o.committed_as(
        "key-acme",
        Op::RequestAccess(seats("more-named", "acme-pro", 5)),
    );
    o.committed_as(
        "key-acme",
        Op::RequestAccess(seats("more-floating", "acme-float", 2)),
    );
    let before = o.entitlement("acme-pro");

    let (rev, entitlements) = o.committed_as(
        "key-approver",
        Op::DecideAccess {
            id: "more-named".into(),
            approve: true,
        },
    );
    assert_eq!(entitlements, vec![id::<EntitlementId>("acme-pro")]);
    let after = o.entitlement("acme-pro");
    assert_eq!(
        after.seats,
        named(10, &["alice"]),
        "5 more, assignments kept"
    );
    assert_eq!(
        after.revision, rev,
        "the entitlement moved to the approval's revision"
    );
    assert!(after.revision > before.revision);
    let mut unchanged = after.clone();
    unchanged.seats = before.seats.clone();
    unchanged.revision = before.revision;
    assert_eq!(unchanged, before, "nothing but the seats changed");
    assert_eq!(
        o.last_change().mutations,
        vec![Mutation::PutEntitlement(after.clone())],
        "regions get the new count in the approval's change record"
    );
    let request = o.request("more-named");
    assert_eq!(
        request.status,
        AccessRequestStatus::Approved {
            entitlement: id("acme-pro")
        }
    );
    assert_eq!(request.decided_by.as_deref(), Some("key-approver"));
    assert_eq!(request.revision, rev);
    assert!(
        o.get::<Entitlement>(&keys::entitlement(&id("more-named")))
            .is_none(),
        "no entitlement is created under the request's id"
    );
    let audit: AuditRecord = o.get(&keys::audit(rev)).unwrap();
    assert_eq!(audit.action, "access_request.approve");
    assert_eq!(audit.target, "access-request/more-named");

    o.committed(Op::DecideAccess {
        id: "more-floating".into(),
        approve: true,
    });
    assert_eq!(o.entitlement("acme-float").seats, floating(5));
    o.rejected(
        Op::DecideAccess {
            id: "more-floating".into(),
            approve: true,
        },
        RejectCode::Conflict,
        "already decided",
    );
}

#[test]
fn approval_checks_the_entitlement_again() {
    let mut o = seeded();
    o.committed(Op::RequestAccess(seats("late", "acme-pro", 5)));
    o.committed(Op::RequestAccess(seats("crowded", "acme-huge", 5)));
    o.committed(Op::ChangeEntitlement {
        id: id("acme-pro"),
        change: EntitlementChange::Revoke,
    });
    o.committed(Op::ChangeEntitlement {
        id: id("acme-huge"),
        change: EntitlementChange::SetSeats(floating(SEATS_MAX - 1)),
    });
    let approve = |rid: &str| Op::DecideAccess {
        id: rid.into(),
        approve: true,
    };
    o.rejected(approve("late"), RejectCode::Conflict, "is revoked");
    o.rejected(approve("crowded"), RejectCode::Invalid, "maximum");
    assert_eq!(o.request("late").status, AccessRequestStatus::Pending);
    // Still pending, so it can be denied.
    o.committed(Op::DecideAccess {
        id: "late".into(),
        approve: false,
    });
    assert_eq!(o.request("late").status, AccessRequestStatus::Denied);
}

#[test]
fn denial_changes_nothing_but_the_request() {
    let mut o = seeded();
    o.committed(Op::RequestAccess(seats("no", "acme-pro", 5)));
    let before = o.entitlement("acme-pro");
    let (_, entitlements) = o.committed_as(
        "key-approver",
        Op::DecideAccess {
            id: "no".into(),
            approve: false,
        },
    );
    assert!(entitlements.is_empty());
    assert_eq!(
        o.entitlement("acme-pro"),
        before,
        "same seats, same revision"
    );
    assert!(o.last_change().mutations.is_empty());
    let request = o.request("no");
    assert_eq!(request.status, AccessRequestStatus::Denied);
    assert_eq!(request.decided_by.as_deref(), Some("key-approver"));
}

#[test]
fn an_auto_approval_rule_never_approves_seats() {
    // The add-on and its feature both approve anything at once; a request
    // for more seats on the add-on's entitlement still waits for a person.
    let mut o = seeded();
    o.committed(Op::RequestAccess(AccessRequestSpec {
        id: "pack".into(),
        account: id("acme"),
        subject: Some(id("alice")),
        target: AccessTarget::Addon(id("render-pack")),
        justification: "control: the rule does approve the add-on".into(),
        duration_seconds: Some(86_400),
    }));
    assert_eq!(o.request("pack").decided_by.as_deref(), Some(AUTO_APPROVER));

    let before = o.entitlement("acme-float");
    let mut spec = seats("seats", "acme-float", 1);
    spec.subject = Some(id("alice"));
    let (_, entitlements) = o.committed_as("key-acme", Op::RequestAccess(spec));
    assert!(entitlements.is_empty());
    let request = o.request("seats");
    assert_eq!(request.status, AccessRequestStatus::Pending);
    assert_eq!(request.decided_by, None);
    assert_eq!(o.entitlement("acme-float"), before);
    assert!(o.last_change().mutations.is_empty());
}
