//! The origin's state machine, applied over an in-memory state: revisions,
//! change records, audit, orders (idempotent), entitlement lifecycle and
//! access requests, and refusals that write nothing.

use std::collections::BTreeMap;
use tollgate_model::*;
use tollgate_origin::keys;
use tollgate_origin::*;
use tollgate_raft::{ApplyContext, MemState};

const NOW: UnixSeconds = UnixSeconds(1_795_821_662);
const DAY: i64 = 86_400;

fn id<T: TryFrom<String, Error = ModelError>>(s: &str) -> T {
    T::try_from(s.to_string()).unwrap()
}

struct Origin {
    state: MemState,
}

impl Origin {
    fn new() -> Self {
        Origin {
            state: MemState::default(),
        }
    }

    fn apply_as(&mut self, actor: &str, reason: Option<&str>, op: Op) -> OriginResponse {
        let ctx = ApplyContext {
            log_index: 1,
            term: 1,
            position_in_entry: 0,
        };
        let cmd = OriginCommand {
            actor: actor.into(),
            at: NOW,
            reason: reason.map(Into::into),
            op,
        };
        self.state
            .apply(&OriginLogic, &ctx, &cmd)
            .expect("reads never fail in memory")
    }

    fn apply(&mut self, op: Op) -> OriginResponse {
        self.apply_as("key-admin", None, op)
    }

    fn committed(&mut self, op: Op) -> u64 {
        let action = op.action();
        match self.apply(op) {
            OriginResponse::Committed { revision, .. } => revision,
            other => panic!("{action}: expected a commit, got {other:?}"),
        }
    }

    fn rejected(&mut self, op: Op, code: RejectCode, needle: &str) {
        let before = self.state.clone();
        match self.apply(op) {
            OriginResponse::Rejected(r) => {
                assert_eq!(r.code, code, "{}", r.message);
                assert!(
                    r.message.contains(needle),
                    "expected {needle:?} in {:?}",
                    r.message
                );
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
        assert_eq!(self.state, before, "a refused command writes nothing");
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &[u8]) -> Option<T> {
        self.state
            .data
            .get(key)
            .map(|v| serde_json::from_slice(v).unwrap())
    }

    fn head(&self) -> u64 {
        self.get(keys::HEAD_REVISION).unwrap_or(0)
    }

    fn entitlement(&self, eid: &str) -> Entitlement {
        self.get(&keys::entitlement(&id(eid)))
            .expect("entitlement exists")
    }

    fn changes(&self) -> Vec<ChangeRecord> {
        (1..=self.head())
            .map(|rev| {
                self.get(&keys::change(rev))
                    .expect("every revision has a change record")
            })
            .collect()
    }
}

/// A catalog: product studio, features export and render, plans starter
/// (tier 1) and pro (tier 2), SKUs for both (named seats) and an unmetered
/// add-on SKU; account acme with user alice.
fn seeded() -> Origin {
    let mut o = Origin::new();
    o.committed(Op::PutProduct(Product {
        id: id("studio"),
        name: "Studio".into(),
    }));
    for f in ["export", "render"] {
        o.committed(Op::PutFeature(Feature {
            id: id(f),
            product: id("studio"),
            name: f.into(),
            kind: FeatureKind::Boolean,
            geo_rule: GeoRule::default(),
            offline_policy: None,
            config: ConfigValues::new(),
            auto_approve: None,
        }));
    }
    for (p, tier, features) in [
        ("starter", 1, vec!["export"]),
        ("pro", 2, vec!["export", "render"]),
    ] {
        o.committed(Op::PutPlan(Plan {
            id: id(p),
            product: id("studio"),
            name: p.into(),
            tier,
            features: features
                .into_iter()
                .map(|f| FeatureGrant::new(id(f)))
                .collect(),
            included_seats: None,
            geo_rule: GeoRule::default(),
            offline_policy: None,
        }));
    }
    o.committed(Op::PutAddon(Addon {
        id: id("render-pack"),
        product: id("studio"),
        name: "Render pack".into(),
        features: vec![FeatureGrant::new(id("render"))],
        compatible_plans: Default::default(),
        geo_rule: GeoRule::default(),
        offline_policy: None,
        auto_approve: None,
    }));
    for (sku, target, quantity) in [
        (
            "STU-STARTER",
            SkuTarget::Plan(id("starter")),
            SkuQuantity::NamedSeats,
        ),
        (
            "STU-PRO",
            SkuTarget::Plan(id("pro")),
            SkuQuantity::NamedSeats,
        ),
        (
            "STU-PACK",
            SkuTarget::Addon(id("render-pack")),
            SkuQuantity::Unmetered,
        ),
    ] {
        o.committed(Op::PutSku(Sku {
            id: id(sku),
            name: sku.into(),
            target,
            quantity,
        }));
    }
    o.committed(Op::PutAccount(Account {
        id: id("acme"),
        name: "Acme".into(),
        status: AccountStatus::Active,
    }));
    o.committed(Op::PutSubject(Subject {
        id: id("alice"),
        account: id("acme"),
        kind: SubjectKind::User,
        roles: Default::default(),
        groups: Default::default(),
    }));
    o
}

fn order(order_id: &str, sku: &str, kind: OrderKind, quantity: u32) -> Order {
    Order {
        id: id(order_id),
        account: id("acme"),
        sku: id(sku),
        tier: None,
        kind,
        quantity,
        term_start: NOW,
        term_end: Some(UnixSeconds(NOW.0 + 365 * DAY)),
        entitlement: None,
        grace_period_seconds: 7 * DAY as u64,
    }
}

#[test]
fn every_commit_gets_the_next_revision_a_change_record_and_an_audit_line() {
    let mut o = seeded();
    assert_eq!(o.head(), 11);
    let changes = o.changes();
    assert_eq!(changes.len(), 11);
    for (i, change) in changes.iter().enumerate() {
        assert_eq!(change.revision, i as u64 + 1, "revisions are gap-free");
        assert_eq!(change.committed_at, NOW);
    }
    assert!(
        matches!(&changes[0].mutations[..], [Mutation::PutProduct(p)] if p.id.as_str() == "studio")
    );

    let rev = match o.apply_as(
        "key-crm",
        Some("ticket 42"),
        Op::PlaceOrder(order("ord-1", "STU-PRO", OrderKind::New, 5)),
    ) {
        OriginResponse::Committed {
            revision,
            entitlements,
        } => {
            assert_eq!(entitlements, vec![id::<EntitlementId>("ord-1")]);
            revision
        }
        other => panic!("{other:?}"),
    };
    let audit: AuditRecord = o.get(&keys::audit(rev)).unwrap();
    assert_eq!(
        audit,
        AuditRecord {
            revision: rev,
            at: NOW,
            actor: "key-crm".into(),
            action: "order.place".into(),
            target: "order/ord-1".into(),
            reason: Some("ticket 42".into()),
        }
    );
}

#[test]
fn catalog_references_must_resolve() {
    let mut o = seeded();
    let mut plan = Plan {
        id: id("ghostly"),
        product: id("studio"),
        name: "Ghostly".into(),
        tier: 9,
        features: vec![FeatureGrant::new(id("teleport"))],
        included_seats: None,
        geo_rule: GeoRule::default(),
        offline_policy: None,
    };
    o.rejected(
        Op::PutPlan(plan.clone()),
        RejectCode::NotFound,
        "unknown feature teleport",
    );
    plan.features.clear();
    plan.product = id("other");
    o.rejected(
        Op::PutPlan(plan),
        RejectCode::NotFound,
        "unknown product other",
    );
    o.rejected(
        Op::PutSku(Sku {
            id: id("X"),
            name: "X".into(),
            target: SkuTarget::Addon(id("nope")),
            quantity: SkuQuantity::Unmetered,
        }),
        RejectCode::NotFound,
        "unknown add-on nope",
    );
    o.rejected(
        Op::PutSubject(Subject {
            id: id("bob"),
            account: id("globex"),
            kind: SubjectKind::User,
            roles: Default::default(),
            groups: Default::default(),
        }),
        RejectCode::NotFound,
        "unknown account globex",
    );
    o.rejected(
        Op::PutProduct(Product {
            id: id("p"),
            name: String::new(),
        }),
        RejectCode::Invalid,
        "product.name",
    );
}

#[test]
fn orders_are_idempotent_and_conflicting_replays_are_refused() {
    let mut o = seeded();
    let first = o.apply(Op::PlaceOrder(order(
        "ord-1",
        "STU-STARTER",
        OrderKind::New,
        3,
    )));
    let OriginResponse::Committed { revision, .. } = first else {
        panic!("{first:?}")
    };
    let ent = o.entitlement("ord-1");
    assert_eq!(ent.grant, Grant::Plan(id("starter")));
    assert_eq!(ent.seats.as_ref().map(|s| s.count), Some(3));
    assert_eq!(ent.source_order, Some(id("ord-1")));
    assert_eq!(ent.revision, revision);

    let head = o.head();
    let again = o.apply(Op::PlaceOrder(order(
        "ord-1",
        "STU-STARTER",
        OrderKind::New,
        3,
    )));
    match again {
        OriginResponse::Unchanged {
            revision: r,
            entitlements,
            note,
        } => {
            assert_eq!(r, revision, "the replay names the original revision");
            assert_eq!(entitlements, vec![id::<EntitlementId>("ord-1")]);
            assert!(note.contains("already applied"), "{note}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(o.head(), head, "a replay commits nothing");
    o.rejected(
        Op::PlaceOrder(order("ord-1", "STU-STARTER", OrderKind::New, 4)),
        RejectCode::Conflict,
        "different body",
    );
    o.rejected(
        Op::PlaceOrder(order("ord-2", "STU-NOPE", OrderKind::New, 1)),
        RejectCode::NotFound,
        "unknown SKU STU-NOPE",
    );
    let mut stranger = order("ord-3", "STU-PRO", OrderKind::New, 1);
    stranger.account = id("globex");
    o.rejected(
        Op::PlaceOrder(stranger),
        RejectCode::NotFound,
        "unknown account globex",
    );
    o.rejected(
        Op::PlaceOrder(order("ord-4", "STU-PACK", OrderKind::New, 2)),
        RejectCode::Invalid,
        "quantity must be 1",
    );
    let mut mismatched = order("ord-6", "STU-PRO", OrderKind::New, 1);
    mismatched.tier = Some(id("starter"));
    o.rejected(
        Op::PlaceOrder(mismatched),
        RejectCode::Invalid,
        "does not sell the tier",
    );
    let mut matching = order("ord-7", "STU-PRO", OrderKind::New, 1);
    matching.tier = Some(id("pro"));
    o.committed(Op::PlaceOrder(matching));
    let mut backwards = order("ord-5", "STU-PRO", OrderKind::New, 1);
    backwards.term_end = Some(UnixSeconds(NOW.0 - 1));
    o.rejected(Op::PlaceOrder(backwards), RejectCode::Invalid, "term_end");
}

#[test]
fn upgrade_renew_and_cancel_change_the_same_entitlement() {
    let mut o = seeded();
    o.committed(Op::PlaceOrder(order(
        "ord-1",
        "STU-STARTER",
        OrderKind::New,
        3,
    )));
    o.committed(Op::ChangeEntitlement {
        id: id("ord-1"),
        change: EntitlementChange::SetSeats(Some(Seats {
            count: 3,
            mode: SeatMode::Named {
                assigned: [id("alice")].into_iter().collect(),
            },
        })),
    });

    let rev = o.committed(Op::PlaceOrder(order(
        "ord-2",
        "STU-PRO",
        OrderKind::Change,
        10,
    )));
    let ent = o.entitlement("ord-1");
    assert_eq!(
        ent.grant,
        Grant::Plan(id("pro")),
        "upgraded in place: no new license"
    );
    assert_eq!(ent.seats.as_ref().map(|s| s.count), Some(10));
    assert!(
        matches!(&ent.seats.as_ref().unwrap().mode, SeatMode::Named { assigned } if assigned.contains("alice")),
        "assigned seats survive the upgrade"
    );
    assert_eq!(
        (ent.revision, ent.source_order.clone()),
        (rev, Some(id("ord-2")))
    );

    let mut renew = order("ord-3", "STU-PRO", OrderKind::Renew, 10);
    renew.term_end = Some(UnixSeconds(NOW.0 + 730 * DAY));
    o.committed(Op::PlaceOrder(renew.clone()));
    assert_eq!(
        o.entitlement("ord-1").valid_until,
        Some(UnixSeconds(NOW.0 + 730 * DAY))
    );
    renew.id = id("ord-3b");
    o.rejected(Op::PlaceOrder(renew), RejectCode::Invalid, "later");

    let mut cancel = order("ord-4", "STU-PRO", OrderKind::Cancel, 10);
    cancel.term_end = None;
    o.committed(Op::PlaceOrder(cancel));
    assert_eq!(o.entitlement("ord-1").status, EntitlementStatus::Revoked);
    o.rejected(
        Op::PlaceOrder(order("ord-5", "STU-PRO", OrderKind::Change, 10)),
        RejectCode::NotFound,
        "holds no plan",
    );
}

#[test]
fn downgrading_below_assigned_seats_is_refused() {
    let mut o = seeded();
    o.committed(Op::PlaceOrder(order("ord-1", "STU-PRO", OrderKind::New, 3)));
    let two_seats = Op::ChangeEntitlement {
        id: id("ord-1"),
        change: EntitlementChange::SetSeats(Some(Seats {
            count: 3,
            mode: SeatMode::Named {
                assigned: ["alice", "bob"].into_iter().map(id).collect(),
            },
        })),
    };
    o.rejected(
        two_seats.clone(),
        RejectCode::NotFound,
        "unknown subject bob",
    );
    o.committed(Op::PutSubject(Subject {
        id: id("bob"),
        account: id("acme"),
        kind: SubjectKind::Device,
        roles: Default::default(),
        groups: Default::default(),
    }));
    o.committed(two_seats);
    o.rejected(
        Op::PlaceOrder(order("ord-2", "STU-STARTER", OrderKind::Change, 1)),
        RejectCode::Conflict,
        "unassign 1",
    );
}

#[test]
fn entitlement_lifecycle() {
    let mut o = seeded();
    let ent = Entitlement {
        id: id("e1"),
        account: id("acme"),
        grant: Grant::Plan(id("pro")),
        valid_from: NOW,
        valid_until: None,
        grace_period_seconds: 0,
        seats: None,
        usage_cap_overrides: BTreeMap::new(),
        status: EntitlementStatus::Active,
        geo_rule: GeoRule::default(),
        offline_policy: None,
        required_role: None,
        allowed_groups: Default::default(),
        source_order: None,
        revision: 0,
        trial: false,
    };
    let granted = o.committed(Op::Grant(ent.clone()));
    assert_eq!(
        o.entitlement("e1").revision,
        granted,
        "the origin stamps the revision"
    );
    o.rejected(
        Op::Grant(ent.clone()),
        RejectCode::Conflict,
        "already exists",
    );
    let mut orphan = ent.clone();
    orphan.id = id("e2");
    orphan.grant = Grant::Plan(id("gold"));
    o.rejected(Op::Grant(orphan), RejectCode::NotFound, "unknown plan gold");

    let change = |c| Op::ChangeEntitlement {
        id: id("e1"),
        change: c,
    };
    o.committed(change(EntitlementChange::Suspend));
    assert_eq!(o.entitlement("e1").status, EntitlementStatus::Suspended);
    o.committed(change(EntitlementChange::Resume));
    assert_eq!(o.entitlement("e1").status, EntitlementStatus::Active);
    o.committed(change(EntitlementChange::Extend {
        valid_until: Some(UnixSeconds(NOW.0 + DAY)),
    }));
    o.rejected(
        change(EntitlementChange::Extend {
            valid_until: Some(UnixSeconds(NOW.0 - DAY)),
        }),
        RejectCode::Invalid,
        "valid_until",
    );
    let revoked = o.committed(change(EntitlementChange::Revoke));
    assert_eq!(o.entitlement("e1").revision, revoked);
    o.rejected(
        change(EntitlementChange::Resume),
        RejectCode::Conflict,
        "revoked",
    );
    o.rejected(
        Op::ChangeEntitlement {
            id: id("nope"),
            change: EntitlementChange::Revoke,
        },
        RejectCode::NotFound,
        "unknown entitlement nope",
    );
}

#[test]
fn access_requests_are_approved_into_entitlements_or_denied() {
    let mut o = seeded();
    let spec = |rid: &str| AccessRequestSpec {
        id: rid.into(),
        account: id("acme"),
        subject: Some(id("alice")),
        target: AccessTarget::Addon(id("render-pack")),
        justification: "quarter-end renders".into(),
        duration_seconds: Some(30 * DAY as u64),
    };
    o.committed(Op::RequestAccess(spec("ar-1")));
    let filed: AccessRequest = o.get(&keys::access_request("ar-1")).unwrap();
    assert_eq!(filed.status, AccessRequestStatus::Pending);
    assert!(
        o.changes().last().unwrap().mutations.is_empty(),
        "filing a request changes nothing regions serve"
    );
    assert!(matches!(
        o.apply(Op::RequestAccess(spec("ar-1"))),
        OriginResponse::Unchanged { .. }
    ));

    let rev = match o.apply_as(
        "key-approver",
        Some("approved by finance"),
        Op::DecideAccess {
            id: "ar-1".into(),
            approve: true,
        },
    ) {
        OriginResponse::Committed {
            revision,
            entitlements,
        } => {
            assert_eq!(entitlements, vec![id::<EntitlementId>("ar-1")]);
            revision
        }
        other => panic!("{other:?}"),
    };
    let ent = o.entitlement("ar-1");
    assert_eq!(ent.grant, Grant::Addon(id("render-pack")));
    assert_eq!(ent.valid_until, Some(UnixSeconds(NOW.0 + 30 * DAY)));
    let decided: AccessRequest = o.get(&keys::access_request("ar-1")).unwrap();
    assert_eq!(
        decided.status,
        AccessRequestStatus::Approved {
            entitlement: id("ar-1")
        }
    );
    assert_eq!(decided.decided_by.as_deref(), Some("key-approver"));
    assert_eq!(
        decided.decision_reason.as_deref(),
        Some("approved by finance")
    );
    assert_eq!(decided.revision, rev);
    o.rejected(
        Op::DecideAccess {
            id: "ar-1".into(),
            approve: false,
        },
        RejectCode::Conflict,
        "already decided",
    );

    o.committed(Op::RequestAccess(spec("ar-2")));
    o.committed(Op::DecideAccess {
        id: "ar-2".into(),
        approve: false,
    });
    let denied: AccessRequest = o.get(&keys::access_request("ar-2")).unwrap();
    assert_eq!(denied.status, AccessRequestStatus::Denied);
    assert!(o
        .get::<Entitlement>(&keys::entitlement(&id("ar-2")))
        .is_none());

    let mut bad = spec("ar-3");
    bad.target = AccessTarget::Feature(id("teleport"));
    o.rejected(
        Op::RequestAccess(bad),
        RejectCode::NotFound,
        "unknown feature teleport",
    );
    o.rejected(
        Op::DecideAccess {
            id: "ar-9".into(),
            approve: true,
        },
        RejectCode::NotFound,
        "unknown access request ar-9",
    );
}

#[test]
fn replaying_the_change_records_rebuilds_what_the_origin_holds() {
    // What a region does: apply every change record in order. The result
    // must equal the origin's own objects.
    let mut o = seeded();
    o.committed(Op::PlaceOrder(order(
        "ord-1",
        "STU-STARTER",
        OrderKind::New,
        3,
    )));
    o.committed(Op::PlaceOrder(order(
        "ord-2",
        "STU-PRO",
        OrderKind::Change,
        4,
    )));
    o.committed(Op::PlaceOrder(order(
        "ord-3",
        "STU-PACK",
        OrderKind::New,
        1,
    )));
    o.committed(Op::DeleteSubject {
        account: id("acme"),
        subject: id("alice"),
    });

    let mut replica = Dataset::default();
    for change in o.changes() {
        for m in change.mutations {
            replica.apply(m);
        }
    }
    replica.validate().expect("the replica is a valid data set");
    assert!(replica.subjects.is_empty());
    assert_eq!(replica.entitlements.len(), 2);
    for e in &replica.entitlements {
        assert_eq!(e, &o.entitlement(e.id.as_str()));
    }
    assert_eq!(o.entitlement("ord-1").grant, Grant::Plan(id("pro")));
    let origin_view = dataset_from_entries(o.state.data.clone()).unwrap();
    assert_eq!(
        replica.canonical(),
        origin_view,
        "replaying the feed equals reading the origin"
    );
}

#[test]
fn api_keys_are_kept_as_hashes_and_never_reach_the_changefeed() {
    let mut o = Origin::new();
    let key = ApiKeyRecord {
        id: "key-crm".into(),
        name: "CRM".into(),
        secret_sha256: "ab".repeat(32),
        scopes: [Scope::OrdersWrite].into_iter().collect(),
        created_at: NOW,
        revoked: false,
        owner: KeyOwner::Tenant,
    };
    o.committed(Op::PutApiKey(key.clone()));
    assert!(
        o.changes()[0].mutations.is_empty(),
        "regions never see API keys"
    );
    let stored: ApiKeyRecord = o.get(&keys::api_key("key-crm")).unwrap();
    assert!(stored.allows(Scope::OrdersWrite) && !stored.allows(Scope::AccessApprove));
    let mut bad = key.clone();
    bad.secret_sha256 = "not-hex".into();
    o.rejected(Op::PutApiKey(bad), RejectCode::Invalid, "SHA-256");
    let mut no_scope = key.clone();
    no_scope.scopes.clear();
    o.rejected(Op::PutApiKey(no_scope), RejectCode::Invalid, "scope");
    o.committed(Op::RevokeApiKey {
        id: "key-crm".into(),
    });
    let stored: ApiKeyRecord = o.get(&keys::api_key("key-crm")).unwrap();
    assert!(
        stored.revoked && !stored.allows(Scope::OrdersWrite),
        "a revoked key allows nothing"
    );
    o.rejected(
        Op::RevokeApiKey {
            id: "key-crm".into(),
        },
        RejectCode::Conflict,
        "already revoked",
    );
    for scope in Scope::ALL {
        assert_eq!(Scope::parse(scope.name()), Some(scope));
        assert_eq!(
            serde_json::to_string(&scope).unwrap(),
            format!("\"{}\"", scope.name())
        );
    }
}

#[test]
fn compaction_drops_old_change_records_and_moves_the_floor() {
    let mut o = seeded();
    let head = o.head();
    o.committed(Op::CompactChanges { through: 5 });
    for rev in 1..=5 {
        assert!(
            o.get::<ChangeRecord>(&keys::change(rev)).is_none(),
            "revision {rev} is compacted"
        );
    }
    assert!(o.get::<ChangeRecord>(&keys::change(6)).is_some());
    assert_eq!(o.get::<u64>(keys::CHANGE_FLOOR), Some(5));
    assert_eq!(o.head(), head + 1, "compaction is itself a revision");
    o.rejected(
        Op::CompactChanges { through: 3 },
        RejectCode::Conflict,
        "already compacted",
    );
    o.rejected(
        Op::CompactChanges { through: 999 },
        RejectCode::Invalid,
        "the head is",
    );
}

#[test]
fn access_packages_with_an_auto_approval_rule_approve_matching_requests_at_once() {
    let mut o = seeded();
    o.committed(Op::PutAddon(Addon {
        id: id("trial-pack"),
        product: id("studio"),
        name: "Trial".into(),
        features: vec![FeatureGrant::new(id("render"))],
        compatible_plans: Default::default(),
        geo_rule: GeoRule::default(),
        offline_policy: None,
        auto_approve: Some(AutoApprove {
            max_duration_seconds: Some(14 * DAY as u64),
            require_subject: true,
        }),
    }));
    let spec = |rid: &str, subject: Option<&str>, days: Option<u64>| AccessRequestSpec {
        id: rid.into(),
        account: id("acme"),
        subject: subject.map(id),
        target: AccessTarget::Addon(id("trial-pack")),
        justification: "evaluation".into(),
        duration_seconds: days.map(|d| d * DAY as u64),
    };
    let rev = o.committed(Op::RequestAccess(spec("ok", Some("alice"), Some(7))));
    let req: AccessRequest = o.get(&keys::access_request("ok")).unwrap();
    assert_eq!(
        req.status,
        AccessRequestStatus::Approved {
            entitlement: id("ok")
        }
    );
    assert_eq!(req.decided_by.as_deref(), Some(AUTO_APPROVER));
    assert_eq!(
        o.entitlement("ok").revision,
        rev,
        "granted in the filing's revision"
    );
    for (rid, subject, days) in [
        ("too-long", Some("alice"), Some(30)),
        ("open-ended", Some("alice"), None),
        ("anonymous", None, Some(7)),
    ] {
        o.committed(Op::RequestAccess(spec(rid, subject, days)));
        let req: AccessRequest = o.get(&keys::access_request(rid)).unwrap();
        assert_eq!(
            req.status,
            AccessRequestStatus::Pending,
            "{rid} waits for an approver"
        );
    }
}

#[test]
fn single_features_with_an_auto_approval_rule_approve_matching_requests_at_once() {
    let mut o = seeded();
    // The render feature gets a rule; export keeps none. An add-on whose
    // rule would admit anything also grants export: its rule is for
    // requests of the add-on, never of its features one by one.
    o.committed(Op::PutFeature(Feature {
        id: id("render"),
        product: id("studio"),
        name: "render".into(),
        kind: FeatureKind::Boolean,
        geo_rule: GeoRule::default(),
        offline_policy: None,
        config: ConfigValues::new(),
        auto_approve: Some(AutoApprove {
            max_duration_seconds: Some(14 * DAY as u64),
            require_subject: true,
        }),
    }));
    o.committed(Op::PutAddon(Addon {
        id: id("export-pack"),
        product: id("studio"),
        name: "Export pack".into(),
        features: vec![FeatureGrant::new(id("export"))],
        compatible_plans: Default::default(),
        geo_rule: GeoRule::default(),
        offline_policy: None,
        auto_approve: Some(AutoApprove {
            max_duration_seconds: None,
            require_subject: false,
        }),
    }));
    let spec =
        |rid: &str, feature: &str, subject: Option<&str>, days: Option<u64>| AccessRequestSpec {
            id: rid.into(),
            account: id("acme"),
            subject: subject.map(id),
            target: AccessTarget::Feature(id(feature)),
            justification: "evaluation".into(),
            duration_seconds: days.map(|d| d * DAY as u64),
        };

    // A request within the feature's rule is approved in the filing's revision.
    let rev = match o.apply(Op::RequestAccess(spec(
        "ok",
        "render",
        Some("alice"),
        Some(14),
    ))) {
        OriginResponse::Committed {
            revision,
            entitlements,
        } => {
            assert_eq!(entitlements, vec![id::<EntitlementId>("ok")]);
            revision
        }
        other => panic!("{other:?}"),
    };
    let req: AccessRequest = o.get(&keys::access_request("ok")).unwrap();
    assert_eq!(
        req.status,
        AccessRequestStatus::Approved {
            entitlement: id("ok")
        }
    );
    assert_eq!(req.decided_by.as_deref(), Some(AUTO_APPROVER));
    assert_eq!(
        req.decision_reason.as_deref(),
        Some("the feature's auto-approval rule")
    );
    assert_eq!(req.requested_by, "key-admin", "the requester is kept");
    let ent = o.entitlement("ok");
    assert_eq!(ent.grant, Grant::Feature(FeatureGrant::new(id("render"))));
    assert_eq!(ent.account, id("acme"));
    assert_eq!(ent.valid_until, Some(UnixSeconds(NOW.0 + 14 * DAY)));
    assert_eq!(ent.revision, rev, "granted in the filing's revision");
    assert!(
        o.changes()
            .last()
            .unwrap()
            .mutations
            .iter()
            .any(|m| matches!(m, Mutation::PutEntitlement(e) if e.id.as_str() == "ok")),
        "regions learn of the grant in the same revision"
    );

    // Requests outside the rule, or for a feature without one, wait.
    for (rid, feature, subject, days) in [
        ("too-long", "render", Some("alice"), Some(15)),
        ("open-ended", "render", Some("alice"), None),
        ("anonymous", "render", None, Some(7)),
        ("no-rule", "export", Some("alice"), Some(1)),
    ] {
        o.committed(Op::RequestAccess(spec(rid, feature, subject, days)));
        let req: AccessRequest = o.get(&keys::access_request(rid)).unwrap();
        assert_eq!(
            req.status,
            AccessRequestStatus::Pending,
            "{rid} waits for an approver"
        );
        assert_eq!(req.decided_by, None, "{rid}");
        assert!(
            o.get::<Entitlement>(&keys::entitlement(&id(rid))).is_none(),
            "{rid} grants nothing"
        );
        assert!(
            o.changes().last().unwrap().mutations.is_empty(),
            "{rid}: filing changes nothing regions serve"
        );
    }

    // A rule removed from the feature approves nothing more.
    o.committed(Op::PutFeature(Feature {
        id: id("render"),
        product: id("studio"),
        name: "render".into(),
        kind: FeatureKind::Boolean,
        geo_rule: GeoRule::default(),
        offline_policy: None,
        config: ConfigValues::new(),
        auto_approve: None,
    }));
    o.committed(Op::RequestAccess(spec(
        "after",
        "render",
        Some("alice"),
        Some(1),
    )));
    let req: AccessRequest = o.get(&keys::access_request("after")).unwrap();
    assert_eq!(req.status, AccessRequestStatus::Pending);
}

#[test]
fn access_requests_are_queued_by_status_and_account_as_they_change() {
    let mut o = seeded();
    let spec = |rid: &str| AccessRequestSpec {
        id: rid.into(),
        account: id("acme"),
        subject: Some(id("alice")),
        target: AccessTarget::Addon(id("render-pack")),
        justification: "quarter-end renders".into(),
        duration_seconds: Some(DAY as u64),
    };
    let entries =
        |rid: &str, status: &str| keys::access_request_queue_entries(&id("acme"), status, NOW, rid);
    let queue_keys = |o: &Origin| -> Vec<Vec<u8>> {
        o.state
            .data
            .keys()
            .filter(|k| k.starts_with(keys::ACCESS_REQUEST_QUEUE_PREFIX.as_bytes()))
            .cloned()
            .collect()
    };

    // A filed request is in the four queues of its status, naming itself.
    o.committed(Op::RequestAccess(spec("ar-1")));
    let pending = entries("ar-1", "pending");
    for key in &pending {
        assert_eq!(o.get::<String>(key).as_deref(), Some("ar-1"));
    }
    let mut expected: Vec<Vec<u8>> = pending.to_vec();
    expected.sort();
    assert_eq!(queue_keys(&o), expected, "nothing else is queued");

    // A decision moves it to the queues of its new status.
    o.committed(Op::DecideAccess {
        id: "ar-1".into(),
        approve: true,
    });
    let mut expected: Vec<Vec<u8>> = entries("ar-1", "approved").to_vec();
    expected.sort();
    assert_eq!(queue_keys(&o), expected);
    let approved = entries("ar-1", "approved");
    assert_eq!(
        (&approved[0], &approved[2]),
        (&pending[0], &pending[2]),
        "its place in the queues of every request and of the account is kept"
    );

    // A refused request or decision queues nothing.
    o.rejected(
        Op::DecideAccess {
            id: "ar-1".into(),
            approve: false,
        },
        RejectCode::Conflict,
        "already decided",
    );
    let mut bad = spec("ar-2");
    bad.account = id("nobody");
    o.rejected(Op::RequestAccess(bad), RejectCode::NotFound, "nobody");

    // Positions sort by filing time, then id, whatever the sign of the time.
    let mut positions: Vec<String> = [(-5, "b"), (-5, "a"), (0, "z"), (1, "a"), (i64::MAX, "a")]
        .iter()
        .map(|(at, rid)| keys::access_request_position(UnixSeconds(*at), rid))
        .collect();
    let in_order = positions.clone();
    positions.sort();
    assert_eq!(
        positions[0],
        keys::access_request_position(UnixSeconds(-5), "a")
    );
    assert_eq!(positions[1], in_order[0]);
    assert_eq!(&positions[2..], &in_order[2..]);
    for at in [i64::MIN, -1, 0, 1, NOW.0, i64::MAX] {
        let text = keys::access_request_time(UnixSeconds(at));
        assert_eq!(
            keys::parse_access_request_time(&text),
            Some(UnixSeconds(at))
        );
    }
    assert_eq!(keys::parse_access_request_time("12"), None);
}

#[test]
fn licenses_and_certificates_are_recorded_and_revocations_replicate() {
    use tollgate_origin::licenses::{CertificateRecord, LicenseRecord};
    let mut o = seeded();
    let jti = "0123456789abcdef0123456789abcdef";
    let license = LicenseRecord {
        id: jti.into(),
        account: id("acme"),
        subject: None,
        audience: "studio".into(),
        issued_at: NOW,
        not_before: NOW,
        expires_at: NOW.plus_seconds(3600),
        kid: "ed25519-0011223344556677".into(),
        device_bound: false,
        entitlements_revision: 3,
        revoked_at: None,
    };
    o.committed(Op::IssueLicense(license.clone()));
    o.rejected(
        Op::IssueLicense(license.clone()),
        RejectCode::Conflict,
        "already exists",
    );
    o.rejected(
        Op::IssueLicense(LicenseRecord {
            id: "not-hex".into(),
            ..license.clone()
        }),
        RejectCode::Invalid,
        "hex",
    );
    o.rejected(
        Op::IssueLicense(LicenseRecord {
            account: id("nobody"),
            id: "fedcba9876543210fedcba9876543210".into(),
            ..license.clone()
        }),
        RejectCode::NotFound,
        "nobody",
    );
    // Issuing publishes nothing: regions learn of licenses only when revoked.
    let before = o.changes().len();
    let revoked = o.committed(Op::RevokeLicense {
        account: id("acme"),
        id: jti.into(),
        expires_at: None,
    });
    let records = o.changes();
    assert_eq!(records.len(), before + 1);
    assert_eq!(
        records.last().unwrap().mutations,
        vec![Mutation::RevokeLicense(RevokedLicense {
            id: jti.into(),
            account: id("acme"),
            expires_at: NOW.plus_seconds(3600),
            revoked_at: NOW,
        })],
        "the record's own expiry, at revision {revoked}"
    );
    let stored: LicenseRecord = o.get(&keys::license(&id("acme"), jti)).unwrap();
    assert_eq!(stored.revoked_at, Some(NOW));
    o.rejected(
        Op::RevokeLicense {
            account: id("acme"),
            id: jti.into(),
            expires_at: None,
        },
        RejectCode::Conflict,
        "already revoked",
    );
    // A token a region issued: unknown here, revocable with its expiry.
    let region_token = "00000000000000000000000000000001";
    o.rejected(
        Op::RevokeLicense {
            account: id("acme"),
            id: region_token.into(),
            expires_at: None,
        },
        RejectCode::NotFound,
        "expires_at",
    );
    o.committed(Op::RevokeLicense {
        account: id("acme"),
        id: region_token.into(),
        expires_at: Some(NOW.plus_seconds(600)),
    });

    let serial = "abcdefabcdefabcdefabcdefabcdef01";
    let cert = CertificateRecord {
        serial: serial.into(),
        region: "eu".into(),
        kid: "ed25519-8899aabbccddeeff".into(),
        public_key: "AAAA".into(),
        not_before: NOW,
        not_after: NOW.plus_seconds(86_400),
        certificate: "{}".into(),
        revoked_at: None,
    };
    o.committed(Op::CertifyRegion(cert.clone()));
    o.rejected(
        Op::CertifyRegion(CertificateRecord {
            not_after: NOW,
            serial: "abcdefabcdefabcdefabcdefabcdef02".into(),
            ..cert.clone()
        }),
        RejectCode::Invalid,
        "not_before",
    );
    o.committed(Op::RevokeCertificate {
        serial: serial.into(),
    });
    assert!(matches!(
        &o.changes().last().unwrap().mutations[..],
        [Mutation::RevokeCertificate(r)] if r.serial == serial && r.region == "eu"
    ));
    o.rejected(
        Op::RevokeCertificate {
            serial: "ffffffffffffffffffffffffffffffff".into(),
        },
        RejectCode::NotFound,
        "certificate",
    );

    // What regions serve now carries both revocations.
    let served = tollgate_origin::dataset_from_entries(o.state.data.clone()).unwrap();
    assert_eq!(served.revoked_licenses.len(), 2);
    assert_eq!(served.revoked_certificates.len(), 1);
    served.validate().unwrap();
}

#[test]
fn requests_filed_before_the_queues_existed_are_queued_once_asked() {
    let mut o = seeded();
    let spec = AccessRequestSpec {
        id: "old-1".into(),
        account: id("acme"),
        subject: Some(id("alice")),
        target: AccessTarget::Addon(id("render-pack")),
        justification: "filed by an earlier version".into(),
        duration_seconds: Some(DAY as u64),
    };
    o.committed(Op::RequestAccess(spec));
    let queue_keys = |o: &Origin| -> Vec<Vec<u8>> {
        o.state
            .data
            .keys()
            .filter(|k| k.starts_with(keys::ACCESS_REQUEST_QUEUE_PREFIX.as_bytes()))
            .cloned()
            .collect()
    };
    let queued = queue_keys(&o);
    assert_eq!(queued.len(), 4, "all, pending, acme, acme pending");
    // As an earlier version left it: the request, no queue entries.
    for key in &queued {
        o.state.data.remove(key);
    }
    let rev = o.committed(Op::QueueAccessRequests {
        ids: vec!["old-1".into()],
    });
    assert_eq!(queue_keys(&o), queued, "the same four entries, back");
    let audit: AuditRecord = o.get(&keys::audit(rev)).unwrap();
    assert_eq!(audit.action, "access_request.queue");
    // Queueing it again rewrites the same entries; nothing else changes.
    o.committed(Op::QueueAccessRequests {
        ids: vec!["old-1".into()],
    });
    assert_eq!(queue_keys(&o), queued);
    o.rejected(
        Op::QueueAccessRequests {
            ids: vec!["never-filed".into()],
        },
        RejectCode::NotFound,
        "access request never-filed",
    );
    o.rejected(
        Op::QueueAccessRequests { ids: vec![] },
        RejectCode::Invalid,
        "1..=",
    );
    o.rejected(
        Op::QueueAccessRequests {
            ids: vec!["old-1".into(); QUEUE_BACKFILL_MAX + 1],
        },
        RejectCode::Invalid,
        "at a time",
    );
}
