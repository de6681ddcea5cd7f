//! The region's state machine over the origin's real change records: in any
//! batching, with resends, the region ends up holding exactly what the
//! origin serves; gaps are refused; region-local facts only move forward.

use proptest::prelude::*;
use std::collections::BTreeMap;
use tollgate_model::*;
use tollgate_origin::{dataset_from_entries, keys, Op, OriginCommand, OriginLogic, OriginResponse};
use tollgate_raft::{ApplyContext, MemState};
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

/// An origin with a catalog, accounts, subjects, grants, changes and a
/// deleted subject; returns its state and its change records.
fn origin() -> (MemState, Vec<ChangeRecord>) {
    let mut state = MemState::default();
    let mut commit = |op: Op| {
        let cmd = OriginCommand {
            actor: "test".into(),
            at: NOW,
            reason: None,
            op,
        };
        let r = state.apply(&OriginLogic, &CTX, &cmd).unwrap();
        assert!(matches!(r, OriginResponse::Committed { .. }), "{r:?}");
    };
    commit(Op::PutProduct(Product {
        id: id("studio"),
        name: "Studio".into(),
    }));
    commit(Op::PutFeature(Feature {
        id: id("export"),
        product: id("studio"),
        name: "Export".into(),
        kind: FeatureKind::Boolean,
        geo_rule: GeoRule::default(),
        offline_policy: None,
        config: ConfigValues::new(),
    }));
    commit(Op::PutPlan(Plan {
        id: id("pro"),
        product: id("studio"),
        name: "Pro".into(),
        tier: 1,
        features: vec![FeatureGrant::new(id("export"))],
        included_seats: None,
        geo_rule: GeoRule::default(),
        offline_policy: None,
    }));
    for a in ["acme", "globex"] {
        commit(Op::PutAccount(Account {
            id: id(a),
            name: a.into(),
            status: AccountStatus::Active,
        }));
        commit(Op::PutSubject(Subject {
            id: id("alice"),
            account: id(a),
            kind: SubjectKind::User,
            roles: Default::default(),
            groups: Default::default(),
        }));
    }
    for (e, a) in [("e1", "acme"), ("e2", "globex")] {
        commit(Op::Grant(Entitlement {
            id: id(e),
            account: id(a),
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
        }));
    }
    commit(Op::ChangeEntitlement {
        id: id("e1"),
        change: tollgate_origin::EntitlementChange::Revoke,
    });
    commit(Op::DeleteSubject {
        account: id("globex"),
        subject: id("alice"),
    });
    let head: u64 = serde_json::from_slice(&state.data[keys::HEAD_REVISION]).unwrap();
    let records = (1..=head)
        .map(|rev| serde_json::from_slice(&state.data[&keys::change(rev)]).unwrap())
        .collect();
    (state, records)
}

fn apply(region: &mut MemState, cmd: RegionCommand) -> RegionResponse {
    region.apply(&RegionLogic, &CTX, &cmd).unwrap()
}

fn served(state: &MemState) -> BTreeMap<Vec<u8>, Vec<u8>> {
    state
        .data
        .iter()
        .filter(|(k, _)| {
            ["catalog/", "account/", "subject/", "entitlement/"]
                .iter()
                .any(|p| k.starts_with(p.as_bytes()))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

proptest! {
    #[test]
    fn any_batching_with_resends_converges_on_the_origin(
        cuts in prop::collection::vec(1usize..5, 1..20),
        resend in any::<bool>(),
    ) {
        let (origin, records) = origin();
        let mut region = MemState::default();
        let mut at = 0;
        for (i, size) in cuts.iter().cycle().enumerate() {
            if at >= records.len() {
                break;
            }
            // A new leader may resend the last batch it saw proposed.
            let from = if resend && i % 3 == 2 { at.saturating_sub(2) } else { at };
            let end = (at + size).min(records.len());
            let response = apply(&mut region, RegionCommand::ApplyChanges {
                records: records[from..end].to_vec(),
                heard_at: NOW,
            });
            prop_assert_eq!(response, RegionResponse::Applied { revision: end as u64 });
            at = end;
        }
        prop_assert_eq!(served(&region), served(&origin), "byte for byte");
        prop_assert_eq!(
            dataset_from_entries(region.data.clone()).unwrap(),
            dataset_from_entries(origin.data.clone()).unwrap()
        );
    }
}

#[test]
fn a_gap_is_refused_and_writes_nothing() {
    let (_, records) = origin();
    let mut region = MemState::default();
    apply(
        &mut region,
        RegionCommand::ApplyChanges {
            records: records[..3].to_vec(),
            heard_at: NOW,
        },
    );
    let before = region.clone();
    let response = apply(
        &mut region,
        RegionCommand::ApplyChanges {
            records: records[4..6].to_vec(),
            heard_at: UnixSeconds(NOW.0 + 5),
        },
    );
    assert!(
        matches!(response, RegionResponse::Refused { ref reason } if reason.contains("gap")),
        "{response:?}"
    );
    assert_eq!(region, before, "nothing written, not even the contact time");
}

#[test]
fn origin_contact_and_head_only_move_forward() {
    let mut region = MemState::default();
    let read = |r: &MemState, k: &[u8]| -> u64 {
        r.data
            .get(k)
            .map(|v| serde_json::from_slice(v).unwrap())
            .unwrap_or(0)
    };
    apply(
        &mut region,
        RegionCommand::OriginContact {
            head_revision: 7,
            heard_at: NOW,
        },
    );
    assert_eq!(read(&region, ORIGIN_CONTACT), NOW.0 as u64);
    assert_eq!(read(&region, ORIGIN_HEAD), 7);
    apply(
        &mut region,
        RegionCommand::OriginContact {
            head_revision: 5,
            heard_at: UnixSeconds(NOW.0 - 60),
        },
    );
    assert_eq!(
        read(&region, ORIGIN_CONTACT),
        NOW.0 as u64,
        "a late message never makes the region look fresher-then-staler"
    );
    assert_eq!(read(&region, ORIGIN_HEAD), 7);
    apply(
        &mut region,
        RegionCommand::OriginContact {
            head_revision: 9,
            heard_at: UnixSeconds(NOW.0 + 1),
        },
    );
    assert_eq!(
        (read(&region, ORIGIN_CONTACT), read(&region, ORIGIN_HEAD)),
        (NOW.0 as u64 + 1, 9)
    );
    let response = apply(
        &mut region,
        RegionCommand::ApplyChanges {
            records: vec![],
            heard_at: NOW,
        },
    );
    assert_eq!(
        response,
        RegionResponse::Applied { revision: 0 },
        "no records: nothing applied"
    );
    let big = vec![
        ChangeRecord {
            revision: 1,
            committed_at: NOW,
            mutations: vec![]
        };
        RECORDS_PER_COMMAND_MAX + 1
    ];
    assert!(matches!(
        apply(
            &mut region,
            RegionCommand::ApplyChanges {
                records: big,
                heard_at: NOW
            }
        ),
        RegionResponse::Refused { .. }
    ));
}
