//! Usage counters, chunks and floating seats as the region's log applies
//! them: no node spends beyond the cap through its chunks, a retried report
//! counts once, periods keep separate counters, and seats are never handed
//! out twice; expired leases free their seats.

use proptest::prelude::*;
use std::collections::BTreeMap;
use tollgate_model::*;
use tollgate_raft::{ApplyContext, MemState};
use tollgate_region::usage::{self, chunk, counter_state, last_batch};
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

fn counter(period_index: i64) -> Counter {
    Counter {
        account: id("acme"),
        feature: id("exports"),
        period: PeriodKey {
            period: UsagePeriodTag::Month,
            index: period_index,
        },
    }
}

fn apply(state: &mut MemState, cmd: RegionCommand) -> RegionResponse {
    state.apply(&RegionLogic, &CTX, &cmd).unwrap()
}

/// The origin leased the region `total` units of counter `period`, in all.
fn slice(state: &mut MemState, period: i64, total: u64) {
    apply(
        state,
        RegionCommand::SliceGranted {
            counter: counter(period),
            granted_total: total,
        },
    );
}

fn draw(state: &mut MemState, node: u64, limit: u64, want: u64) -> Drawn {
    match apply(
        state,
        RegionCommand::DrawChunk {
            node,
            incarnation: 0,
            at: NOW,
            counter: counter(1),
            limit,
            want,
        },
    ) {
        RegionResponse::Drawn(d) => d,
        other => panic!("{other:?}"),
    }
}

fn report(state: &mut MemState, node: u64, entries: Vec<UsageEntry>) -> Recorded {
    let batch = last_batch(state, node).unwrap() + 1;
    match apply(state, record(node, batch, entries)) {
        RegionResponse::Recorded(r) => r,
        other => panic!("{other:?}"),
    }
}

/// Node `node`'s usage report number `batch` (incarnation 0, at `NOW`).
fn record(node: u64, batch: u64, entries: Vec<UsageEntry>) -> RegionCommand {
    RegionCommand::RecordUsage {
        node,
        incarnation: 0,
        batch,
        at: NOW,
        entries,
    }
}

fn entry(units: u64, key: Option<&str>, from_chunk: bool) -> UsageEntry {
    UsageEntry {
        counter: counter(1),
        units,
        idempotency_key: key.map(str::to_string),
        from_chunk,
        refused: None,
    }
}

proptest! {
    /// Whatever nodes draw, consume and report, in any order, the units
    /// consumed plus those still held never pass the cap.
    #[test]
    fn chunks_never_let_a_region_pass_its_cap(
        steps in prop::collection::vec((1u64..4, 0u64..40, 0u8..3), 1..60),
        limit in 0u64..200,
    ) {
        let mut state = MemState::default();
        slice(&mut state, 1, limit);
        // What each node may still spend, as it tracks it.
        let mut local: BTreeMap<u64, u64> = BTreeMap::new();
        let mut spent = 0u64;
        for (node, amount, kind) in steps {
            match kind {
                0 => {
                    let drawn = draw(&mut state, node, limit, amount);
                    *local.entry(node).or_default() += drawn.granted;
                    prop_assert_eq!(drawn.chunk, local[&node]);
                }
                1 => {
                    let have = local.get(&node).copied().unwrap_or(0);
                    let units = amount.min(have);
                    local.insert(node, have - units);
                    spent += units;
                    report(&mut state, node, vec![entry(units, None, true)]);
                }
                _ => {
                    // The node stops counting on what it holds and says so.
                    let units = local.insert(node, 0).unwrap_or(0);
                    apply(
                        &mut state,
                        RegionCommand::ReleaseChunk { node, incarnation: 0, counter: counter(1), units, at: NOW },
                    );
                }
            }
            let c = counter_state(&state, &counter(1)).unwrap();
            prop_assert_eq!(c.consumed, spent);
            prop_assert!(c.consumed + c.reserved <= limit, "{:?} over {}", c, limit);
            prop_assert_eq!(c.reserved, local.values().sum::<u64>());
        }
    }
}

fn refusal(key: &str, reason: tollgate_engine::Reason) -> UsageEntry {
    UsageEntry {
        refused: Some(reason),
        ..entry(0, Some(key), false)
    }
}

/// A key is decided once, by the first of a consumption and a refusal in
/// the log: the consumption of a key already refused counts nothing (and
/// still leaves the chunk), and a refusal of a key already counted
/// writes nothing, each saying how the key went.
#[test]
fn a_key_is_decided_by_the_first_of_its_consumption_and_its_refusal() {
    use tollgate_engine::Reason::{Revoked, UsageCapReached};
    let mut state = MemState::default();
    slice(&mut state, 1, 100);
    draw(&mut state, 1, 100, 10);
    // Refused first (a retry denied on node 2 while node 1's report of
    // the first attempt was in flight): node 1's report counts nothing.
    let refused = report(&mut state, 2, vec![refusal("k-1", UsageCapReached)]);
    assert_eq!(refused.keys, vec![KeyOutcome::Refused(UsageCapReached)]);
    assert_eq!((refused.counted, refused.refused), (0, 1));
    let late = report(&mut state, 1, vec![entry(3, Some("k-1"), true)]);
    assert_eq!(late.keys, vec![KeyOutcome::Refused(UsageCapReached)]);
    assert_eq!((late.counted, late.refused), (0, 1));
    let c = counter_state(&state, &counter(1)).unwrap();
    assert_eq!(c.consumed, 0, "a refused key is never billed");
    assert_eq!(c.reserved, 7, "its units left node 1's chunk all the same");
    assert_eq!(
        usage::idempotency_key_verdict(&state, "k-1", NOW).unwrap(),
        Some(KeyVerdict::Refused(UsageCapReached))
    );
    // A second refusal keeps the first reason.
    let again = report(&mut state, 2, vec![refusal("k-1", Revoked)]);
    assert_eq!(again.keys, vec![KeyOutcome::Refused(UsageCapReached)]);
    assert_eq!(again.refused, 0);
    // Counted first: a later refusal writes nothing and says so.
    let counted = report(&mut state, 1, vec![entry(2, Some("k-2"), true)]);
    assert_eq!(counted.keys, vec![KeyOutcome::Counted]);
    let refusal_after = report(&mut state, 2, vec![refusal("k-2", UsageCapReached)]);
    assert_eq!(refusal_after.keys, vec![KeyOutcome::AlreadyCounted]);
    assert_eq!(refusal_after.refused, 0);
    assert_eq!(counter_state(&state, &counter(1)).unwrap().consumed, 2);
    // Within one report, in order; keyless entries have no outcome.
    let mixed = report(
        &mut state,
        2,
        vec![
            refusal("k-3", UsageCapReached),
            entry(1, None, false),
            entry(1, Some("k-3"), false),
            entry(1, Some("k-4"), false),
        ],
    );
    assert_eq!(
        mixed.keys,
        vec![
            KeyOutcome::Refused(UsageCapReached),
            KeyOutcome::Refused(UsageCapReached),
            KeyOutcome::Counted,
        ]
    );
    assert_eq!(counter_state(&state, &counter(1)).unwrap().consumed, 4);
}

/// A report applied before says, when it comes again, how each of its keys
/// stands now, so a node whose answer was lost still answers by the log.
#[test]
fn a_repeated_report_says_how_its_keys_stand() {
    use tollgate_engine::Reason::UsageCapReached;
    let mut state = MemState::default();
    let command = record(
        1,
        1,
        vec![
            entry(1, Some("c"), false),
            refusal("r", UsageCapReached),
            entry(1, None, false),
        ],
    );
    let first = apply(&mut state, command.clone());
    let again = apply(&mut state, command);
    let RegionResponse::Recorded(first) = first else {
        panic!("{first:?}")
    };
    assert_eq!(
        first.keys,
        vec![KeyOutcome::Counted, KeyOutcome::Refused(UsageCapReached)]
    );
    assert_eq!(
        again,
        RegionResponse::Recorded(Recorded {
            repeated_batch: true,
            keys: vec![
                KeyOutcome::AlreadyCounted,
                KeyOutcome::Refused(UsageCapReached)
            ],
            ..Recorded::default()
        })
    );
    assert_eq!(counter_state(&state, &counter(1)).unwrap().consumed, 2);
}

/// A refusal that allows, or names no key, is refused whole.
#[test]
fn a_refusal_must_deny_and_name_its_key() {
    use tollgate_engine::Reason::{Allow, UsageCapReached};
    let mut state = MemState::default();
    for bad in [
        refusal("k", Allow),
        UsageEntry {
            idempotency_key: None,
            ..refusal("k", UsageCapReached)
        },
    ] {
        let answer = apply(&mut state, record(1, 1, vec![entry(1, None, false), bad]));
        assert!(
            matches!(answer, RegionResponse::Refused { .. }),
            "{answer:?}"
        );
    }
    assert_eq!(counter_state(&state, &counter(1)).unwrap().consumed, 0);
    assert_eq!(last_batch(&state, 1).unwrap(), 0);
}

#[test]
fn a_retried_report_is_counted_once_and_still_leaves_the_chunk() {
    let mut state = MemState::default();
    slice(&mut state, 1, 100);
    draw(&mut state, 1, 100, 10);
    draw(&mut state, 2, 100, 10);
    let first = report(&mut state, 1, vec![entry(3, Some("req-1"), true)]);
    assert_eq!(
        first,
        Recorded {
            counted: 1,
            duplicates: 0,
            repeated_batch: false,
            keys: vec![KeyOutcome::Counted],
            ..Recorded::default()
        }
    );
    // The same batch again (a report whose answer was lost): skipped whole.
    let again = apply(
        &mut state,
        record(
            1,
            1,
            vec![entry(3, Some("req-1"), true), entry(4, None, false)],
        ),
    );
    assert_eq!(
        again,
        RegionResponse::Recorded(Recorded {
            counted: 0,
            duplicates: 0,
            repeated_batch: true,
            keys: vec![KeyOutcome::AlreadyCounted],
            ..Recorded::default()
        })
    );
    // The same request retried on node 2: counted once, but node 2 did
    // spend from its chunk.
    let retry = report(&mut state, 2, vec![entry(3, Some("req-1"), true)]);
    assert_eq!(
        retry,
        Recorded {
            counted: 0,
            duplicates: 1,
            repeated_batch: false,
            keys: vec![KeyOutcome::AlreadyCounted],
            ..Recorded::default()
        }
    );
    let c = counter_state(&state, &counter(1)).unwrap();
    assert_eq!(c.consumed, 3);
    assert_eq!(c.reserved, 7 + 7);
    assert_eq!(chunk(&state, &counter(1), 2).unwrap(), 7);
    // Within one report too.
    let both = report(
        &mut state,
        1,
        vec![
            entry(1, Some("req-2"), false),
            entry(1, Some("req-2"), false),
        ],
    );
    assert_eq!(
        both,
        Recorded {
            counted: 1,
            duplicates: 1,
            repeated_batch: false,
            keys: vec![KeyOutcome::Counted, KeyOutcome::AlreadyCounted],
            ..Recorded::default()
        }
    );
    // The next day the key is still known; two days on it is forgotten.
    let later = |days: i64, batch: u64| RegionCommand::RecordUsage {
        node: 1,
        incarnation: 0,
        batch,
        at: UnixSeconds(NOW.0 + days * 86_400),
        entries: vec![entry(1, Some("req-1"), false)],
    };
    assert_eq!(
        apply(&mut state, later(1, 10)),
        RegionResponse::Recorded(Recorded {
            counted: 0,
            duplicates: 1,
            repeated_batch: false,
            keys: vec![KeyOutcome::AlreadyCounted],
            ..Recorded::default()
        })
    );
    assert_eq!(
        apply(&mut state, later(3, 11)),
        RegionResponse::Recorded(Recorded {
            counted: 1,
            duplicates: 0,
            repeated_batch: false,
            keys: vec![KeyOutcome::Counted],
            ..Recorded::default()
        })
    );
    assert!(
        !state
            .data
            .keys()
            .any(|k| k.starts_with(format!("region/usage-key/{:08}/", NOW.0 / 86_400).as_bytes())),
        "keys older than yesterday are dropped"
    );
}

#[test]
fn periods_have_separate_counters_and_released_chunks_free_their_units() {
    let mut state = MemState::default();
    slice(&mut state, 1, 10);
    slice(&mut state, 2, 10);
    draw(&mut state, 1, 10, 10);
    assert_eq!(
        draw(&mut state, 2, 10, 5).granted,
        0,
        "all 10 held by node 1"
    );
    apply(
        &mut state,
        RegionCommand::ReleaseChunk {
            node: 1,
            incarnation: 0,
            at: NOW,
            counter: counter(1),
            units: 10,
        },
    );
    assert_eq!(
        draw(&mut state, 2, 10, 5).granted,
        5,
        "released units are free again"
    );
    report(&mut state, 2, vec![entry(5, None, true)]);
    // The next month's counter starts from nothing.
    let next = match apply(
        &mut state,
        RegionCommand::DrawChunk {
            node: 2,
            incarnation: 0,
            at: NOW,
            counter: counter(2),
            limit: 10,
            want: 10,
        },
    ) {
        RegionResponse::Drawn(d) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(next.granted, 10);
    assert_eq!(counter_state(&state, &counter(1)).unwrap().consumed, 5);
    assert_eq!(counter_state(&state, &counter(2)).unwrap().consumed, 0);
}

#[test]
fn a_region_draws_only_from_its_slice_and_asks_for_more() {
    use tollgate_region::usage::{wanted_key, Wanted};
    let mut state = MemState::default();
    assert_eq!(draw(&mut state, 1, 100, 10).granted, 0, "no slice yet");
    let wanted: Wanted = serde_json::from_slice(&state.data[&wanted_key(&counter(1))]).unwrap();
    assert_eq!((wanted.limit, wanted.want), (100, 40), "four draws' worth");
    slice(&mut state, 1, 30);
    assert!(
        !state.data.contains_key(&wanted_key(&counter(1))),
        "answered"
    );
    assert_eq!(draw(&mut state, 1, 100, 20).granted, 20);
    assert_eq!(
        draw(&mut state, 2, 100, 20).granted,
        10,
        "the rest of the slice"
    );
    assert!(
        state.data.contains_key(&wanted_key(&counter(1))),
        "asks again"
    );
    // A repeated, older grant changes nothing; a lower cap bounds the slice.
    slice(&mut state, 1, 25);
    assert_eq!(counter_state(&state, &counter(1)).unwrap().slice, 30);
    report(&mut state, 1, vec![entry(5, None, true)]);
    apply(
        &mut state,
        RegionCommand::ReleaseChunk {
            node: 1,
            incarnation: 0,
            at: NOW,
            counter: counter(1),
            units: 15,
        },
    );
    // 30 leased, 5 consumed, 10 held by node 2: 15 go back.
    let released = apply(
        &mut state,
        RegionCommand::ReleaseSlice {
            counter: counter(1),
        },
    );
    assert_eq!(released, RegionResponse::Released { units: 15 });
    let c = counter_state(&state, &counter(1)).unwrap();
    assert_eq!(
        (c.slice, c.released, c.consumed, c.reserved),
        (30, 15, 5, 10)
    );
    assert_eq!(c.available(100), 0);
}

fn floating_entitlement(state: &mut MemState, seats: u32) {
    let ent = Entitlement {
        id: id("e-float"),
        account: id("acme"),
        grant: Grant::Feature(FeatureGrant::new(id("cad"))),
        valid_from: UnixSeconds(0),
        valid_until: None,
        grace_period_seconds: 0,
        seats: Some(Seats {
            count: seats,
            mode: SeatMode::Floating {
                lease_ttl_seconds: 60,
            },
        }),
        usage_cap_overrides: BTreeMap::new(),
        status: EntitlementStatus::Active,
        geo_rule: GeoRule::default(),
        offline_policy: None,
        required_role: None,
        allowed_groups: Default::default(),
        source_order: None,
        revision: 1,
        trial: false,
    };
    apply(
        state,
        RegionCommand::ApplyChanges {
            records: vec![ChangeRecord {
                revision: 1,
                committed_at: NOW,
                mutations: vec![Mutation::PutEntitlement(ent)],
            }],
            heard_at: NOW,
        },
    );
    seat_slice(state, seats as u64);
}

fn seat_slice(state: &mut MemState, granted_total: u64) {
    apply(
        state,
        RegionCommand::SeatSliceGranted {
            entitlement: id("e-float"),
            granted_total,
        },
    );
}

/// The region hands back the seats of `e-float` no live lease uses at
/// `at` seconds.
fn release_seat_slice(state: &mut MemState, at: i64) -> RegionResponse {
    apply(
        state,
        RegionCommand::ReleaseSeatSlice {
            entitlement: id("e-float"),
            at: UnixSeconds(NOW.0 + at),
        },
    )
}

fn seat(state: &mut MemState, action: SeatAction, subject: &str, at: i64) -> SeatOutcome {
    match apply(
        state,
        RegionCommand::Seat {
            action,
            entitlement: id("e-float"),
            subject: id(subject),
            at: UnixSeconds(NOW.0 + at),
        },
    ) {
        RegionResponse::Seat(outcome) => outcome,
        other => panic!("{other:?}"),
    }
}

#[test]
fn seats_are_never_handed_out_twice_and_expired_leases_free_them() {
    let mut state = MemState::default();
    floating_entitlement(&mut state, 2);
    assert!(matches!(
        seat(&mut state, SeatAction::Acquire, "ann", 0),
        SeatOutcome::Held { used: 1, .. }
    ));
    assert!(matches!(
        seat(&mut state, SeatAction::Acquire, "bob", 0),
        SeatOutcome::Held { used: 2, .. }
    ));
    // Acquiring again is a renewal, not a second seat.
    assert!(matches!(
        seat(&mut state, SeatAction::Acquire, "ann", 10),
        SeatOutcome::Held { used: 2, .. }
    ));
    match seat(&mut state, SeatAction::Acquire, "cyd", 10) {
        SeatOutcome::Full { total, holders } => {
            assert_eq!(total, 2);
            assert_eq!(holders.len(), 2);
        }
        other => panic!("{other:?}"),
    }
    // Ann renews; Bob does not and his lease runs out at 60 s.
    assert!(matches!(
        seat(&mut state, SeatAction::Renew, "ann", 50),
        SeatOutcome::Held { .. }
    ));
    assert!(matches!(
        seat(&mut state, SeatAction::Acquire, "cyd", 61),
        SeatOutcome::Held { used: 2, .. }
    ));
    assert_eq!(
        seat(&mut state, SeatAction::Renew, "bob", 62),
        SeatOutcome::NotHeld
    );
    assert_eq!(
        seat(&mut state, SeatAction::Release, "cyd", 63),
        SeatOutcome::Released
    );
    assert!(matches!(
        seat(&mut state, SeatAction::Acquire, "bob", 64),
        SeatOutcome::Held { used: 2, .. }
    ));
    let unknown = match apply(
        &mut state,
        RegionCommand::Seat {
            action: SeatAction::Acquire,
            entitlement: id("e-none"),
            subject: id("ann"),
            at: NOW,
        },
    ) {
        RegionResponse::Seat(o) => o,
        other => panic!("{other:?}"),
    };
    assert_eq!(unknown, SeatOutcome::NoFloatingSeats);
}

/// Found by the whole-system simulation (seed 316): a release its caller
/// gave up on, held on a link for seconds, reached the log after the same
/// holder had taken a new seat, freed it, and the region handed the seat
/// back to the origin while it was in use.
#[test]
fn a_release_asked_for_before_a_lease_was_taken_leaves_that_lease() {
    let mut state = MemState::default();
    floating_entitlement(&mut state, 2);
    assert!(matches!(
        seat(&mut state, SeatAction::Acquire, "ann", 27),
        SeatOutcome::Held { used: 1, .. }
    ));
    // The release asked for at 22 s, before this lease was taken at 27 s.
    assert_eq!(
        seat(&mut state, SeatAction::Release, "ann", 22),
        SeatOutcome::Released
    );
    assert!(
        matches!(
            seat(&mut state, SeatAction::Renew, "ann", 28),
            SeatOutcome::Held { used: 1, .. }
        ),
        "the stale release left ann's seat"
    );
    let released = release_seat_slice(&mut state, 28);
    assert_eq!(
        released,
        RegionResponse::Released { units: 1 },
        "only the seat nobody uses goes back to the origin"
    );
    // A release asked for in the same second as the acquire, or later,
    // frees it.
    assert_eq!(
        seat(&mut state, SeatAction::Release, "ann", 27),
        SeatOutcome::Released
    );
    assert!(matches!(
        seat(&mut state, SeatAction::Renew, "ann", 28),
        SeatOutcome::NotHeld
    ));
}

#[test]
fn a_region_hands_out_only_the_seats_the_origin_leased_it() {
    use tollgate_region::seats::{seat_slice as slice_of, seat_wanted_key};
    let mut state = MemState::default();
    floating_entitlement(&mut state, 2);
    release_seat_slice(&mut state, 0);
    assert_eq!(
        slice_of(&state, &id("e-float")).unwrap().held(),
        0,
        "none in use: all back"
    );
    // The origin leases this region one of the two seats (3 in all, 2
    // of them handed back).
    seat_slice(&mut state, 3);
    assert_eq!(slice_of(&state, &id("e-float")).unwrap().held(), 1);
    assert!(matches!(
        seat(&mut state, SeatAction::Acquire, "ann", 0),
        SeatOutcome::Held { .. }
    ));
    assert!(matches!(
        seat(&mut state, SeatAction::Acquire, "bob", 0),
        SeatOutcome::Full { .. }
    ));
    assert!(
        state.data.contains_key(&seat_wanted_key(&id("e-float"))),
        "short of the entitlement's two seats: asks the origin"
    );
    seat_slice(&mut state, 4);
    assert!(!state.data.contains_key(&seat_wanted_key(&id("e-float"))));
    assert!(matches!(
        seat(&mut state, SeatAction::Acquire, "bob", 1),
        SeatOutcome::Held { used: 2, .. }
    ));
    assert_eq!(
        seat(&mut state, SeatAction::Release, "ann", 2),
        SeatOutcome::Released
    );
    let released = release_seat_slice(&mut state, 3);
    assert_eq!(
        released,
        RegionResponse::Released { units: 1 },
        "bob's seat stays"
    );
    assert_eq!(slice_of(&state, &id("e-float")).unwrap().held(), 1);
}

fn lease(state: &mut MemState, cmd: RegionCommand) -> Option<MeterLease> {
    match apply(state, cmd) {
        RegionResponse::Meter(lease) => lease,
        other => panic!("{other:?}"),
    }
}

/// A restarted node's previous life is fenced: its late draw, release and
/// report (same sequence numbers the new life uses) write nothing, and
/// the new life hands back what the old one held.
#[test]
fn a_new_meter_incarnation_fences_the_previous_life() {
    let mut state = MemState::default();
    slice(&mut state, 1, 100);
    let first = lease(&mut state, RegionCommand::MeterStart { node: 1, at: NOW }).unwrap();
    assert_eq!(first.incarnation, 1);
    let drawn = match apply(
        &mut state,
        RegionCommand::DrawChunk {
            node: 1,
            incarnation: 1,
            counter: counter(1),
            limit: 100,
            want: 10,
            at: NOW,
        },
    ) {
        RegionResponse::Drawn(d) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!(drawn.granted, 10);
    // The process dies; its report of batch 1 is still in flight.
    let late_report = RegionCommand::RecordUsage {
        node: 1,
        incarnation: 1,
        batch: 1,
        at: NOW,
        entries: vec![UsageEntry {
            counter: counter(1),
            units: 3,
            idempotency_key: Some("late".into()),
            from_chunk: true,
            refused: None,
        }],
    };
    let second = lease(&mut state, RegionCommand::MeterStart { node: 1, at: NOW }).unwrap();
    assert_eq!(second.incarnation, 2);
    assert_eq!(last_batch(&state, 1).unwrap(), 0, "numbers start over");
    let before = state.clone();
    assert_eq!(
        apply(&mut state, late_report),
        RegionResponse::Fenced { incarnation: 2 }
    );
    assert_eq!(
        apply(
            &mut state,
            RegionCommand::DrawChunk {
                node: 1,
                incarnation: 1,
                counter: counter(1),
                limit: 100,
                want: 10,
                at: NOW,
            }
        ),
        RegionResponse::Fenced { incarnation: 2 }
    );
    assert_eq!(state, before, "a fenced command writes nothing");
    // The new life hands the old chunk back, under its own incarnation.
    apply(
        &mut state,
        RegionCommand::ReleaseChunk {
            node: 1,
            incarnation: 2,
            counter: counter(1),
            units: 10,
            at: NOW,
        },
    );
    let c = counter_state(&state, &counter(1)).unwrap();
    assert_eq!((c.consumed, c.reserved), (0, 0));
    assert_eq!(chunk(&state, &counter(1), 1).unwrap(), 0);
    // Its first report is batch 1 again, and counts.
    let recorded = report_as(&mut state, 1, 2, 1);
    assert_eq!(recorded.counted, 1);
}

fn report_as(state: &mut MemState, node: u64, incarnation: u64, batch: u64) -> Recorded {
    match apply(
        state,
        RegionCommand::RecordUsage {
            node,
            incarnation,
            batch,
            at: NOW,
            entries: vec![UsageEntry {
                counter: counter(1),
                units: 1,
                idempotency_key: None,
                from_chunk: false,
                refused: None,
            }],
        },
    ) {
        RegionResponse::Recorded(r) => r,
        other => panic!("{other:?}"),
    }
}

/// The leader fences a node only after it has been silent for the lease,
/// and only in the incarnation it saw: a node seen since, or started
/// again, is left alone.
#[test]
fn a_silent_meter_is_fenced_after_its_lease_only() {
    let mut state = MemState::default();
    let at = |s: i64| UnixSeconds(NOW.0 + s);
    lease(&mut state, RegionCommand::MeterStart { node: 7, at: NOW });
    let early = RegionCommand::FenceMeter {
        node: 7,
        incarnation: 1,
        at: at(usage::METER_LEASE_SECONDS - 1),
        silent_seconds: usage::METER_LEASE_SECONDS,
    };
    assert_eq!(lease(&mut state, early), None);
    // Seen later through a report: the lease runs from then.
    report_as(&mut state, 7, 1, 1);
    let seen_at = usage::meter_lease(&state, 7).unwrap().seen_at;
    assert_eq!(seen_at, NOW);
    let stale = RegionCommand::FenceMeter {
        node: 7,
        incarnation: 0,
        at: at(usage::METER_LEASE_SECONDS),
        silent_seconds: usage::METER_LEASE_SECONDS,
    };
    assert_eq!(lease(&mut state, stale), None, "another incarnation");
    let due = RegionCommand::FenceMeter {
        node: 7,
        incarnation: 1,
        at: at(usage::METER_LEASE_SECONDS),
        silent_seconds: usage::METER_LEASE_SECONDS,
    };
    assert_eq!(lease(&mut state, due).map(|l| l.incarnation), Some(2));
    assert_eq!(
        apply(
            &mut state,
            RegionCommand::RecordUsage {
                node: 7,
                incarnation: 1,
                batch: 2,
                at: NOW,
                entries: Vec::new(),
            }
        ),
        RegionResponse::Fenced { incarnation: 2 }
    );
}

#[test]
fn chunk_and_counter_keys_parse_back() {
    let c = counter(3);
    assert_eq!(
        usage::parse_chunk_key(&usage::chunk_key(&c, 42)),
        Some((c.clone(), 42))
    );
    assert_eq!(usage::parse_counter_key(&usage::counter_key(&c)), Some(c));
    assert_eq!(usage::parse_chunk_key(b"region/chunk/a/b"), None);
}
