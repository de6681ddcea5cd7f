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
        auto_approve: None,
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

fn read_u64(r: &MemState, k: &[u8]) -> u64 {
    r.data
        .get(k)
        .map(|v| serde_json::from_slice(v).unwrap())
        .unwrap_or(0)
}

/// Stages `mutations` as the leader does and commits them at `revision`.
fn install(region: &mut MemState, revision: u64, mutations: Vec<Mutation>) -> RegionResponse {
    let parts = snapshot_parts(mutations);
    for (seq, part) in parts.iter().enumerate() {
        let r = apply(
            region,
            RegionCommand::SnapshotPart {
                revision,
                seq: seq as u32,
                mutations: part.clone(),
            },
        );
        assert!(matches!(r, RegionResponse::Applied { .. }), "{r:?}");
    }
    apply(
        region,
        RegionCommand::SnapshotCommit {
            revision,
            parts: parts.len() as u32,
            heard_at: NOW,
        },
    )
}

#[test]
fn a_snapshot_replaces_stale_state_and_the_records_after_it_follow() {
    let (origin, records) = origin();
    let head = records.len() as u64;
    // A region that saw the first records, including globex's alice, who
    // is deleted later: the snapshot must remove her.
    let mut region = MemState::default();
    apply(
        &mut region,
        RegionCommand::ApplyChanges {
            records: records[..8].to_vec(),
            heard_at: NOW,
        },
    );
    assert!(region.data.contains_key(&change(8)));
    let snapshot_at = head - 2;
    let mut at_snapshot = MemState::default();
    apply(
        &mut at_snapshot,
        RegionCommand::ApplyChanges {
            records: records[..snapshot_at as usize].to_vec(),
            heard_at: NOW,
        },
    );
    let dataset = dataset_from_entries(at_snapshot.data.clone()).unwrap();
    let response = install(&mut region, snapshot_at, dataset.to_mutations());
    assert_eq!(
        response,
        RegionResponse::Applied {
            revision: snapshot_at
        }
    );
    // The snapshot spells out the default offline policy, which the origin
    // never stored: compare what is served, as data.
    let dataset_of = |s: &MemState| dataset_from_entries(served(s)).unwrap();
    assert!(
        dataset_of(&region) == dataset,
        "the snapshot's data set is served"
    );
    assert_eq!(read_u64(&region, keys::HEAD_REVISION), snapshot_at);
    assert_eq!(read_u64(&region, CHANGE_FLOOR), snapshot_at);
    assert!(
        !region
            .data
            .keys()
            .any(|k| k.starts_with(b"region/snapshot/")),
        "staging is cleared"
    );
    assert!(
        !region.data.contains_key(&change(3)),
        "records before the snapshot are no longer served to watchers"
    );
    let response = apply(
        &mut region,
        RegionCommand::ApplyChanges {
            records: records.clone(),
            heard_at: NOW,
        },
    );
    assert_eq!(response, RegionResponse::Applied { revision: head });
    assert!(
        dataset_of(&region) == dataset_of(&origin),
        "converged on the origin"
    );
    assert!(region.data.contains_key(&change(head)));
}

#[test]
fn snapshot_parts_out_of_order_or_miscounted_are_refused() {
    let (_, records) = origin();
    let mut region = MemState::default();
    let part = |seq: u32, revision: u64| RegionCommand::SnapshotPart {
        revision,
        seq,
        mutations: vec![],
    };
    assert!(matches!(
        apply(&mut region, part(0, 5)),
        RegionResponse::Applied { .. }
    ));
    let before = region.clone();
    for wrong in [part(2, 5), part(1, 6)] {
        let r = apply(&mut region, wrong);
        assert!(matches!(r, RegionResponse::Refused { .. }), "{r:?}");
        assert_eq!(region, before, "a refused part writes nothing");
    }
    let commit = |parts: u32, revision: u64| RegionCommand::SnapshotCommit {
        revision,
        parts,
        heard_at: NOW,
    };
    for wrong in [commit(2, 5), commit(1, 6)] {
        let r = apply(&mut region, wrong);
        assert!(matches!(r, RegionResponse::Refused { .. }), "{r:?}");
        assert_eq!(region, before, "a refused commit writes nothing");
    }
    // A new part 0 starts over: the old staging is dropped.
    assert!(matches!(
        apply(&mut region, part(0, 7)),
        RegionResponse::Applied { .. }
    ));
    assert!(matches!(
        apply(&mut region, commit(1, 5)),
        RegionResponse::Refused { .. }
    ));
    // Not ahead of the applied revision: refused.
    apply(
        &mut region,
        RegionCommand::ApplyChanges {
            records: records[..8].to_vec(),
            heard_at: NOW,
        },
    );
    assert!(matches!(
        apply(&mut region, part(0, 8)),
        RegionResponse::Refused { .. }
    ));
    assert!(matches!(
        apply(&mut region, commit(1, 7)),
        RegionResponse::Refused { .. }
    ));
}

#[test]
fn only_the_newest_records_are_retained_for_watchers() {
    let mut region = MemState::default();
    let total = CHANGES_RETAINED + 700;
    let mut next = 1;
    while next <= total {
        let end = (next + RECORDS_PER_COMMAND_MAX as u64 - 1).min(total);
        let records = (next..=end)
            .map(|revision| ChangeRecord {
                revision,
                committed_at: NOW,
                mutations: vec![],
            })
            .collect();
        apply(
            &mut region,
            RegionCommand::ApplyChanges {
                records,
                heard_at: NOW,
            },
        );
        next = end + 1;
    }
    assert_eq!(read_u64(&region, CHANGE_FLOOR), 700);
    assert!(!region.data.contains_key(&change(700)));
    assert!(region.data.contains_key(&change(701)));
    assert!(region.data.contains_key(&change(total)));
    let retained = region
        .data
        .keys()
        .filter(|k| k.starts_with(b"region/change/"))
        .count() as u64;
    assert_eq!(retained, CHANGES_RETAINED);
}

#[test]
fn snapshot_parts_are_bounded_and_keep_every_mutation_in_order() {
    let mutations: Vec<Mutation> = (0..5000)
        .map(|i| {
            Mutation::PutSubject(Subject {
                id: id(&format!("user-{i:06}")),
                account: id("acme"),
                kind: SubjectKind::User,
                roles: Default::default(),
                groups: Default::default(),
            })
        })
        .collect();
    let parts = snapshot_parts(mutations.clone());
    assert!(parts.len() > 1, "{} parts", parts.len());
    for part in &parts {
        let bytes = serde_json::to_vec(part).unwrap().len();
        assert!(bytes <= SNAPSHOT_PART_BYTES_MAX, "a part of {bytes} bytes");
    }
    assert_eq!(parts.concat(), mutations);
}
