//! A seat release the origin publishes (`Mutation::ReleaseSeat`) drops the
//! subject's lease in the region at once, so another subject can take the
//! seat; a subject with no lease changes nothing; several releases of one
//! entitlement in one command all hold.

use std::collections::BTreeMap;
use tollgate_model::*;
use tollgate_origin::{keys, Op, OriginCommand, OriginLogic, OriginResponse};
use tollgate_raft::{ApplyContext, MemState};
use tollgate_region::seats::leases;
use tollgate_region::*;

const NOW: UnixSeconds = UnixSeconds(1_795_821_662);
const CTX: ApplyContext = ApplyContext {
    log_index: 0,
    term: 0,
    position_in_entry: 0,
};

fn id<T: TryFrom<String, Error = ModelError>>(s: &str) -> T {
    T::try_from(s.to_string()).unwrap()
}

/// An origin whose `acme` holds `e-cad` with two floating seats; its
/// state and the records a region applies.
struct Origin {
    state: MemState,
    head: u64,
}

impl Origin {
    fn commit(&mut self, op: Op) {
        let cmd = OriginCommand {
            actor: "test".into(),
            at: NOW,
            reason: None,
            op,
        };
        let r = self.state.apply(&OriginLogic, &CTX, &cmd).unwrap();
        assert!(matches!(r, OriginResponse::Committed { .. }), "{r:?}");
        self.head += 1;
    }

    fn records(&self, from: u64) -> Vec<ChangeRecord> {
        (from..=self.head)
            .map(|rev| serde_json::from_slice(&self.state.data[&keys::change(rev)]).unwrap())
            .collect()
    }

    fn release(&mut self, subject: &str) {
        self.commit(Op::ReleaseSeatHolder {
            account: id("acme"),
            entitlement: id("e-cad"),
            subject: id(subject),
        });
    }
}

fn origin() -> Origin {
    let mut o = Origin {
        state: MemState::default(),
        head: 0,
    };
    o.commit(Op::PutProduct(Product {
        id: id("studio"),
        name: "Studio".into(),
    }));
    o.commit(Op::PutFeature(Feature {
        id: id("cad"),
        product: id("studio"),
        name: "CAD".into(),
        kind: FeatureKind::Boolean,
        geo_rule: GeoRule::default(),
        offline_policy: None,
        config: ConfigValues::new(),
        auto_approve: None,
    }));
    o.commit(Op::PutAccount(Account {
        id: id("acme"),
        name: "Acme".into(),
        status: AccountStatus::Active,
    }));
    o.commit(Op::Grant(Entitlement {
        id: id("e-cad"),
        account: id("acme"),
        grant: Grant::Feature(FeatureGrant::new(id("cad"))),
        valid_from: UnixSeconds(0),
        valid_until: None,
        grace_period_seconds: 0,
        seats: Some(Seats {
            count: 2,
            mode: SeatMode::Floating {
                lease_ttl_seconds: 600,
            },
        }),
        usage_cap_overrides: BTreeMap::new(),
        status: EntitlementStatus::Active,
        geo_rule: GeoRule::default(),
        offline_policy: None,
        required_role: None,
        allowed_groups: Default::default(),
        source_order: None,
        revision: 0,
        trial: false,
    }));
    o
}

fn apply(region: &mut MemState, cmd: RegionCommand) -> RegionResponse {
    region.apply(&RegionLogic, &CTX, &cmd).unwrap()
}

fn changes(region: &mut MemState, records: Vec<ChangeRecord>) {
    let r = apply(
        region,
        RegionCommand::ApplyChanges {
            records,
            heard_at: NOW,
        },
    );
    assert!(matches!(r, RegionResponse::Applied { .. }), "{r:?}");
}

fn seat(region: &mut MemState, subject: &str) -> RegionResponse {
    apply(
        region,
        RegionCommand::Seat {
            action: SeatAction::Acquire,
            entitlement: id("e-cad"),
            subject: id(subject),
            at: NOW,
        },
    )
}

fn holders(region: &MemState) -> Vec<String> {
    leases(region, &id("e-cad"))
        .unwrap()
        .into_iter()
        .map(|l| l.holder.to_string())
        .collect()
}

/// A region with the origin's data, both seats leased, held by alice and
/// bob.
fn full_region(o: &Origin) -> MemState {
    let mut region = MemState::default();
    changes(&mut region, o.records(1));
    apply(
        &mut region,
        RegionCommand::SeatSliceGranted {
            entitlement: id("e-cad"),
            granted_total: 2,
        },
    );
    for s in ["alice", "bob"] {
        let r = seat(&mut region, s);
        assert!(format!("{r:?}").contains("Held"), "{s}: {r:?}");
    }
    let r = seat(&mut region, "carol");
    assert!(format!("{r:?}").contains("Full"), "{r:?}");
    region
}

#[test]
fn a_released_holder_frees_the_seat_for_another_subject() {
    let mut o = origin();
    let mut region = full_region(&o);
    let acquired = leases(&region, &id("e-cad")).unwrap();
    assert!(
        acquired.iter().all(|l| l.acquired_at == Some(NOW)),
        "a lease records when it was taken: {acquired:?}"
    );
    let from = o.head + 1;
    o.release("alice");
    changes(&mut region, o.records(from));
    assert_eq!(holders(&region), ["bob"]);
    let r = seat(&mut region, "carol");
    assert!(format!("{r:?}").contains("Held"), "{r:?}");
    assert_eq!(holders(&region), ["bob", "carol"]);
}

#[test]
fn releasing_a_subject_without_a_lease_changes_nothing() {
    let mut o = origin();
    let mut region = full_region(&o);
    let before = region.data.get(&seats::leases_key(&id("e-cad"))).cloned();
    let from = o.head + 1;
    o.release("nobody");
    changes(&mut region, o.records(from));
    assert_eq!(
        region.data.get(&seats::leases_key(&id("e-cad"))).cloned(),
        before
    );
}

#[test]
fn several_releases_in_one_command_all_hold() {
    let mut o = origin();
    let mut region = full_region(&o);
    let from = o.head + 1;
    o.release("alice");
    o.release("bob");
    changes(&mut region, o.records(from));
    assert!(holders(&region).is_empty(), "{:?}", holders(&region));
}
