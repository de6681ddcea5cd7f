//! The checker against doctored histories: a clean history passes, and for
//! every invariant a history that breaks it (and only it) is caught. Each
//! invariant also gets a near miss that must *not* be reported, so a
//! checker that flags everything fails too. The doctored histories are one
//! table of named rows (how the clean history is doctored, what the checker
//! must find); `check` runs every row and then fails naming each row that
//! was not judged as expected. The clean history's and a few near misses'
//! measurements have tests of their own. No root, no network, no nodes.

use std::collections::BTreeMap;
use tollgate_chaos::checker::{self, Invariant, Report};
use tollgate_chaos::history::*;
use Expect::{Caught, Exactly, Passes};
use Invariant::*;

const NODES: [&str; 6] = ["eu-1", "eu-2", "eu-3", "us-1", "us-2", "us-3"];
/// Seat leases in the clean history expire long after everything else.
const EXPIRES_AT_S: i64 = 100;

fn region_of(node: &str) -> String {
    node[..2].to_string()
}

fn meta() -> Meta {
    Meta {
        scenario: "test".into(),
        seed: 1,
        duration_seconds: 10,
        regions: BTreeMap::from([
            (
                "eu".into(),
                vec!["eu-1".into(), "eu-2".into(), "eu-3".into()],
            ),
            (
                "us".into(),
                vec!["us-1".into(), "us-2".into(), "us-3".into()],
            ),
        ]),
        slots: 2,
        cap: 10,
        outstanding_max: 5,
        seat_count: 2,
        up_grace_ms: 1_000,
        unavailable_window_ms_min: 0,
        sdk_checks_must_answer: true,
    }
}

fn write(slot: u32, id: &str, op: WriteOp, start_ms: Millis, outcome: Ack) -> Event {
    Event::Write(Write {
        start_ms,
        end_ms: start_ms + 10,
        slot,
        entitlement: id.into(),
        op,
        outcome,
    })
}

fn answered(node: &str, round: u64, slot: u32, at: Millis, revision: u64, reason: &str) -> Event {
    Event::Check(Check {
        start_ms: at,
        end_ms: at + 5,
        region: region_of(node),
        node: node.into(),
        round,
        slot,
        outcome: Answer::Answered {
            revision,
            reason: reason.into(),
            allowed: reason == "ALLOW",
            staleness_seconds: Some(0),
        },
    })
}

fn failed(node: &str, round: u64, at: Millis) -> Event {
    Event::Check(Check {
        start_ms: at,
        end_ms: at + 2_000,
        region: region_of(node),
        node: node.into(),
        round,
        slot: 0,
        outcome: Answer::Error {
            error: "Unavailable: connection refused".into(),
        },
    })
}

/// A check through the SDK, answered by `node` (a node of `region`).
fn sdk_answered(node: &str, slot: u32, at: Millis, revision: u64, reason: &str) -> Event {
    Event::SdkCheck(SdkCheck {
        start_ms: at,
        end_ms: at + 10,
        region: region_of(node),
        node: Some(node.into()),
        slot,
        outcome: Answer::Answered {
            revision,
            reason: reason.into(),
            allowed: reason == "ALLOW",
            staleness_seconds: Some(0),
        },
    })
}

/// A check through the SDK in `region` that no node answered in time.
fn sdk_failed(region: &str, at: Millis) -> Event {
    Event::SdkCheck(SdkCheck {
        start_ms: at,
        end_ms: at + 2_000,
        region: region.into(),
        node: None,
        slot: 1,
        outcome: Answer::Error {
            error: "DEADLINE_EXCEEDED: deadline of 2s exceeded".into(),
        },
    })
}

fn seat(holder: &str, op: SeatOp, start_ms: Millis, outcome: SeatOutcome) -> Event {
    Event::Seat(Seat {
        start_ms,
        end_ms: start_ms + 10,
        region: region_of(holder),
        node: format!("{}-1", region_of(holder)),
        holder: holder.into(),
        op,
        outcome,
    })
}

fn held() -> SeatOutcome {
    SeatOutcome::Held {
        expires_at_s: EXPIRES_AT_S,
    }
}

fn consume(region: &str, key: &str, at: Millis, outcome: ConsumeOutcome) -> Event {
    Event::Consume(Consume {
        start_ms: at,
        end_ms: at + 5,
        region: region.into(),
        node: format!("{region}-1"),
        key: key.into(),
        outcome,
    })
}

fn node(at_ms: Millis, node: &str, state: NodeState) -> Event {
    Event::Node(NodeChange {
        at_ms,
        node: node.into(),
        state,
        cause: "test".into(),
    })
}

fn final_state() -> Final {
    Final {
        at_ms: 9_000,
        converged: true,
        origin_head: 12,
        origin_entitlements: BTreeMap::from([
            ("s0-1".into(), "revoked".into()),
            ("s1-1".into(), "active".into()),
        ]),
        truth: BTreeMap::from([(0, "REVOKED".into()), (1, "ALLOW".into())]),
        nodes: NODES
            .iter()
            .map(|n| FinalNode {
                region: region_of(n),
                node: n.to_string(),
                applied_revision: Some(12),
                decisions: BTreeMap::from([(0, "REVOKED".into()), (1, "ALLOW".into())]),
            })
            .collect(),
        billed: Some(8),
        billing_settled: Some(true),
    }
}

/// A run in which nothing went wrong: two slots written, a cut of eu from
/// the origin during which slot 0 is revoked, probes in both regions,
/// checks through the SDK answered in both, consumption within the cap
/// and billed exactly, seats within their count.
fn clean() -> Vec<Event> {
    let mut h = vec![Event::Meta(meta())];
    for n in NODES {
        h.push(node(1_000, n, NodeState::Up));
    }
    h.push(write(
        0,
        "s0-1",
        WriteOp::Grant,
        2_000,
        Ack::Acked { revision: 10 },
    ));
    h.push(write(
        1,
        "s1-1",
        WriteOp::Grant,
        2_100,
        Ack::Acked { revision: 11 },
    ));
    h.push(Event::Fault(Fault {
        at_ms: 2_900,
        step: 0,
        phase: Phase::Start,
        description: "partition region eu from the origin".into(),
        cut_from_origin: vec!["eu".into()],
    }));
    h.push(write(
        0,
        "s0-1",
        WriteOp::Revoke,
        3_000,
        Ack::Acked { revision: 12 },
    ));
    h.push(Event::Fault(Fault {
        at_ms: 3_200,
        step: 0,
        phase: Phase::Stop,
        description: "partition region eu from the origin".into(),
        cut_from_origin: vec![],
    }));
    for (i, n) in NODES.iter().enumerate() {
        let round = 1;
        // Before the revocation: slot 0 allowed at 11; after: revoked at 12.
        h.push(answered(n, round, 0, 2_500 + i as u64, 11, "ALLOW"));
        h.push(answered(n, round + 1, 0, 3_500 + i as u64, 12, "REVOKED"));
        h.push(answered(n, round + 2, 1, 4_000 + i as u64, 12, "ALLOW"));
        h.push(Event::Status(Status {
            start_ms: 4_500,
            end_ms: 4_510,
            region: region_of(n),
            node: n.to_string(),
            outcome: StatusOutcome::Ok {
                role: if n.ends_with('1') {
                    "leader"
                } else {
                    "follower"
                }
                .into(),
                term: 1,
                leader: Some(1),
                applied_revision: 12,
                staleness_seconds: Some(0),
                recovering: false,
            },
        }));
    }
    h.push(sdk_answered("eu-2", 0, 2_600, 11, "ALLOW"));
    h.push(sdk_answered("eu-3", 1, 4_100, 12, "ALLOW"));
    h.push(sdk_answered("us-1", 0, 4_200, 12, "REVOKED"));
    for i in 0..8 {
        let region = if i % 2 == 0 { "eu" } else { "us" };
        h.push(consume(
            region,
            &format!("{region}-{i}"),
            2_000 + i * 100,
            ConsumeOutcome::Allowed { revision: 11 },
        ));
    }
    h.push(consume(
        "us",
        "us-9",
        3_000,
        ConsumeOutcome::Denied {
            reason: "USAGE_CAP_REACHED".into(),
        },
    ));
    h.push(Event::Usage(UsageSample {
        at_ms: 3_000,
        limit: 10,
        consumed: 6,
        allotted: 10,
        outstanding: 3,
    }));
    // Two seats: eu-u0 and us-u0 hold them; eu-u1 gets one after eu-u0
    // asked to release.
    h.push(seat("eu-u0", SeatOp::Acquire, 2_000, held()));
    h.push(seat("us-u0", SeatOp::Acquire, 2_100, held()));
    h.push(seat("eu-u1", SeatOp::Acquire, 2_200, SeatOutcome::Full));
    h.push(seat("eu-u0", SeatOp::Release, 2_500, SeatOutcome::Released));
    h.push(seat("eu-u1", SeatOp::Acquire, 2_600, held()));
    h.push(seat("us-u0", SeatOp::Release, 3_000, SeatOutcome::Released));
    h.push(seat("eu-u1", SeatOp::Release, 3_100, SeatOutcome::Released));
    h.push(Event::Final(final_state()));
    h
}

// ---- The table runner ----

/// How a doctored history must come out of the checker.
enum Expect {
    /// With no violation at all: a near miss.
    Passes,
    /// With violations of this invariant, and of no other.
    Caught(Invariant),
    /// With exactly these violations, one each, in this order.
    Exactly(&'static [Invariant]),
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Passes => f.write_str("no violation"),
            Caught(invariant) => write!(f, "violations of {invariant} only"),
            Exactly(invariants) => write!(f, "exactly the violations {invariants:?}"),
        }
    }
}

impl Expect {
    /// Why `report` is not what was expected, if it is not.
    fn mismatch(&self, report: &Report) -> Option<String> {
        let found: Vec<Invariant> = report.violations.iter().map(|v| v.invariant).collect();
        let ok = match self {
            Passes => found.is_empty(),
            Caught(invariant) => !found.is_empty() && found.iter().all(|i| i == invariant),
            Exactly(invariants) => found == *invariants,
        };
        if ok {
            return None;
        }
        let found = if found.is_empty() {
            "none".to_string()
        } else {
            report
                .violations
                .iter()
                .map(|v| {
                    let at = v.at_ms.map(|ms| format!(" at {ms} ms")).unwrap_or_default();
                    format!("\n    {}{at}: {}", v.invariant, v.detail)
                })
                .collect()
        };
        Some(format!("expected {self}, found {found}"))
    }
}

/// A named way to doctor the clean history, and how the result must be
/// judged.
type Row = (&'static str, fn(&mut Vec<Event>), Expect);

/// Doctors a clean history per row and checks it, then fails naming every
/// row that was not judged as expected (a row that panics fails too), not
/// only the first.
fn check(rows: &[Row]) {
    tollgate_testkit::check_rows(
        rows,
        |(name, _, _)| name,
        |(_, doctor, expect)| {
            let mut h = clean();
            doctor(&mut h);
            expect.mismatch(&checker::check(&h))
        },
    );
}

/// Checks `history` and asserts it passes; returns the report for the
/// test's measurements.
fn passes(history: &[Event]) -> Report {
    let report = checker::check(history);
    assert!(report.passed(), "{:#?}", report.violations);
    report
}

// ---- Doctoring ----

fn final_mut(h: &mut [Event]) -> &mut Final {
    h.iter_mut()
        .find_map(|e| match e {
            Event::Final(f) => Some(f),
            _ => None,
        })
        .expect("a final state")
}

/// Slot 1 (active since 11) is suspended at 13; the final state says so.
fn suspend_slot_1(h: &mut Vec<Event>) {
    h.push(write(
        1,
        "s1-1",
        WriteOp::Suspend,
        5_000,
        Ack::Acked { revision: 13 },
    ));
    let f = final_mut(h);
    f.origin_head = 13;
    f.origin_entitlements
        .insert("s1-1".into(), "suspended".into());
    f.truth.insert(1, "SUSPENDED".into());
    for n in &mut f.nodes {
        n.applied_revision = Some(13);
        n.decisions.insert(1, "SUSPENDED".into());
    }
}

/// Slot 1 suspended, and a node answering it suspended at 13.
fn suspended_and_answered(h: &mut Vec<Event>) {
    suspend_slot_1(h);
    h.push(answered("eu-2", 20, 1, 5_100, 13, "SUSPENDED"));
}

/// Slot 1 granted by an order instead of a grant.
fn ordered_slot_1(h: &mut [Event]) {
    for e in h.iter_mut() {
        if let Event::Write(w) = e {
            if w.entitlement == "s1-1" {
                w.op = WriteOp::Order;
            }
        }
    }
}

/// Slot 1 ordered, suspended at 13, resumed at 14 and answered allowed at
/// 14; the final state says so.
fn ordered_suspended_resumed(h: &mut Vec<Event>) {
    ordered_slot_1(h);
    suspend_slot_1(h);
    h.push(write(
        1,
        "s1-1",
        WriteOp::Resume,
        6_000,
        Ack::Acked { revision: 14 },
    ));
    h.push(answered("eu-2", 22, 1, 6_100, 14, "ALLOW"));
    let f = final_mut(h);
    f.origin_head = 14;
    f.origin_entitlements.insert("s1-1".into(), "active".into());
    f.truth.insert(1, "ALLOW".into());
    for n in &mut f.nodes {
        n.applied_revision = Some(14);
        n.decisions.insert(1, "ALLOW".into());
    }
}

// ---- The table ----

#[test]
fn doctored_histories() {
    check(&[
        // Acknowledged writes.
        (
            "an acknowledged write missing from a region after healing: a node behind",
            |h| final_mut(h).nodes[1].applied_revision = Some(11),
            Caught(AckedWriteLost),
        ),
        (
            "an acknowledged write missing from a region after healing: a revoked slot allowed",
            |h| {
                final_mut(h).nodes[4].decisions.insert(0, "ALLOW".into());
            },
            Caught(AckedWriteLost),
        ),
        (
            "an acknowledged write missing from a region after healing: nothing applied",
            |h| final_mut(h).nodes[5].applied_revision = None,
            Caught(AckedWriteLost),
        ),
        (
            "an acknowledged write missing at the origin: a revocation undone",
            |h| {
                let f = final_mut(h);
                f.origin_entitlements.insert("s0-1".into(), "active".into());
            },
            Caught(AckedWriteLost),
        ),
        (
            "an acknowledged write missing at the origin: a grant gone",
            |h| {
                final_mut(h).origin_entitlements.remove("s1-1");
            },
            Caught(AckedWriteLost),
        ),
        (
            "a write of unknown outcome is not held against the origin",
            |h| {
                // A revoke that timed out may or may not have landed: the
                // origin's final word on slot 1 stands, whichever it is.
                h.insert(
                    h.len() - 1,
                    write(
                        1,
                        "s1-1",
                        WriteOp::Revoke,
                        5_000,
                        Ack::Indeterminate {
                            error: "timed out".into(),
                        },
                    ),
                );
            },
            Passes,
        ),
        (
            "a suspension the origin forgot is caught",
            |h| {
                suspend_slot_1(h);
                let f = final_mut(h);
                f.origin_entitlements.insert("s1-1".into(), "active".into());
                f.truth.insert(1, "ALLOW".into());
                for n in &mut f.nodes {
                    n.decisions.insert(1, "ALLOW".into());
                }
            },
            Caught(AckedWriteLost),
        ),
        // Revisions.
        (
            "a node answering at a lower revision than before is caught",
            // eu-2 answered 12 at 3_501..3_506; later it answers slot 1 at 11.
            |h| h.push(answered("eu-2", 9, 1, 5_000, 11, "ALLOW")),
            Caught(RevisionWentBack),
        ),
        (
            "a status at a lower revision than an answer before it is caught",
            // eu-2 answered 12 at 3_501..3_506.
            |h| h.push(status_at("eu-2", 5_000, 11, false)),
            Caught(RevisionWentBack),
        ),
        (
            "a status that says the node is recovering from a crash is no answer",
            // Its revision is what its disk kept; it answers no check
            // until it has caught up with its leader again.
            |h| h.push(status_at("eu-2", 5_000, 3, true)),
            Passes,
        ),
        (
            "overlapping answers at different revisions are not a regression",
            // Sent before the answer at 12 came back: it may have been
            // served first.
            |h| h.push(answered("eu-2", 9, 1, 3_503, 11, "ALLOW")),
            Passes,
        ),
        // Decisions.
        (
            "a decision that contradicts its revision is caught",
            // At 12 slot 0 is revoked; allowing it claims a revision it did
            // not apply.
            |h| h.push(answered("us-3", 9, 0, 5_000, 12, "ALLOW")),
            Caught(DecisionAtRevision),
        ),
        (
            "a decision no sent write explains is caught",
            // At 2_950 nobody had asked for the revoke yet.
            |h| h.push(answered("eu-3", 9, 0, 2_950, 11, "REVOKED")),
            Caught(DecisionAtRevision),
        ),
        (
            "decisions after a write of unknown outcome are not judged",
            |h| {
                h.insert(
                    1,
                    write(
                        0,
                        "s0-2",
                        WriteOp::Grant,
                        4_800,
                        Ack::Indeterminate {
                            error: "timed out".into(),
                        },
                    ),
                );
                h.push(answered("us-3", 9, 0, 5_000, 12, "ALLOW"));
            },
            Passes,
        ),
        (
            "a suspension is judged like a revocation: answered suspended",
            suspended_and_answered,
            Passes,
        ),
        (
            "a suspension is judged like a revocation: allowed at its revision",
            |h| {
                suspended_and_answered(h);
                // Allowing slot 1 at 13 contradicts the suspension.
                h.push(answered("us-2", 21, 1, 5_200, 13, "ALLOW"));
            },
            Caught(DecisionAtRevision),
        ),
        (
            "an order grants like a grant",
            |h| ordered_slot_1(h),
            Passes,
        ),
        (
            "a resume restores an ordered, suspended slot",
            ordered_suspended_resumed,
            Passes,
        ),
        (
            "a resume restores an ordered, suspended slot: suspended at its revision",
            |h| {
                ordered_suspended_resumed(h);
                // SUSPENDED at 14 is a decision from before the resume.
                h.push(answered("us-1", 23, 1, 6_200, 14, "SUSPENDED"));
            },
            Caught(DecisionAtRevision),
        ),
        // Seats.
        (
            "a seat held by more leases than seats is caught",
            |h| {
                // eu-u0 and us-u0 hold both seats from 2_010 / 2_110; us-u1
                // gets one too at 2_300.
                h.push(seat("us-u1", SeatOp::Acquire, 2_300, held()));
                h.push(seat("us-u1", SeatOp::Release, 2_400, SeatOutcome::Released));
            },
            Caught(SeatOverbooked),
        ),
        (
            "a lease that expired frees its seat",
            |h| {
                // eu-u0's first lease expires (at 5 s, less the margin) long
                // before us-u1 takes a seat at 60 s without eu-u0 ever
                // releasing.
                h.retain(|e| !matches!(e, Event::Seat(_)));
                h.push(seat(
                    "eu-u0",
                    SeatOp::Acquire,
                    2_000,
                    SeatOutcome::Held { expires_at_s: 5 },
                ));
                h.push(seat("us-u0", SeatOp::Acquire, 2_100, held()));
                h.push(seat("us-u1", SeatOp::Acquire, 60_000, held()));
            },
            Passes,
        ),
        // The usage cap.
        (
            "a cap exceeded beyond the bound is caught",
            |h| {
                // 8 allowed already; 6 more makes 14 > cap 10 + 3
                // outstanding.
                for i in 0..6 {
                    h.push(consume(
                        "us",
                        &format!("extra-{i}"),
                        4_000 + i,
                        ConsumeOutcome::Allowed { revision: 12 },
                    ));
                }
                // Billed as allowed: only the cap is broken.
                final_mut(h).billed = Some(14);
            },
            Caught(CapExceeded),
        ),
        (
            "an origin past its outstanding bound is caught",
            |h| {
                h.push(Event::Usage(UsageSample {
                    at_ms: 4_000,
                    limit: 10,
                    consumed: 2,
                    allotted: 9,
                    outstanding: 7,
                }))
            },
            Caught(CapExceeded),
        ),
        // Availability.
        (
            "a region that answers nothing while a node is up is caught",
            |h| {
                for n in ["eu-1", "eu-2", "eu-3"] {
                    h.push(failed(n, 20, 6_000));
                }
            },
            Caught(RegionUnavailable),
        ),
        (
            "a region with every node down may answer nothing",
            |h| {
                for n in ["eu-1", "eu-2", "eu-3"] {
                    h.push(node(5_500, n, NodeState::Down));
                    h.push(failed(n, 20, 6_000));
                }
                // Back up, but inside the start-up grace: still not a
                // violation.
                for n in ["eu-1", "eu-2", "eu-3"] {
                    h.push(node(8_500, n, NodeState::Up));
                    h.push(failed(n, 21, 8_600));
                }
            },
            Passes,
        ),
        // Checks through the SDK.
        (
            "an SDK check no node answered is caught where every one must be",
            |h| h.push(sdk_failed("eu", 5_000)),
            Caught(SdkCheckFailed),
        ),
        (
            "an SDK check no node answered is counted, not judged, where none must be",
            |h| {
                h.push(sdk_failed("eu", 5_000));
                for e in h.iter_mut() {
                    if let Event::Meta(m) = e {
                        m.sdk_checks_must_answer = false;
                    }
                }
            },
            Passes,
        ),
        (
            "an SDK answer that contradicts its revision is caught like a probe's",
            // At 12 slot 0 is revoked.
            |h| h.push(sdk_answered("us-3", 0, 5_000, 12, "ALLOW")),
            Caught(DecisionAtRevision),
        ),
        (
            "an SDK answer below a revision its node answered before is caught",
            // us-1 answered 12 at 4_200..4_210 (and its probes 12 by 3_510).
            |h| h.push(sdk_answered("us-1", 1, 5_000, 11, "ALLOW")),
            Caught(RevisionWentBack),
        ),
        // Billing.
        (
            "one unit billed more than the keys allowed is caught",
            |h| final_mut(h).billed = Some(9),
            Caught(BillingMismatch),
        ),
        (
            "one unit billed fewer than the keys allowed is caught",
            |h| final_mut(h).billed = Some(7),
            Caught(BillingMismatch),
        ),
        (
            "nothing billed while consumptions were allowed is caught",
            |h| final_mut(h).billed = None,
            Caught(BillingMismatch),
        ),
        (
            "a key allowed on several nodes is billed once",
            |h| {
                for node in ["eu-2", "eu-3"] {
                    h.push(Event::Consume(Consume {
                        start_ms: 4_000,
                        end_ms: 4_005,
                        region: "eu".into(),
                        node: node.into(),
                        key: "eu-0".into(),
                        outcome: ConsumeOutcome::Allowed { revision: 12 },
                    }));
                }
            },
            Passes,
        ),
        (
            "a key that never got an answer may have been billed",
            |h| {
                h.push(consume(
                    "eu",
                    "eu-lost",
                    4_000,
                    ConsumeOutcome::Error {
                        error: "timed out".into(),
                    },
                ));
                final_mut(h).billed = Some(9);
            },
            Passes,
        ),
        (
            "a key that never got an answer is billed once at most",
            |h| {
                h.push(consume(
                    "eu",
                    "eu-lost",
                    4_000,
                    ConsumeOutcome::Error {
                        error: "timed out".into(),
                    },
                ));
                final_mut(h).billed = Some(10);
            },
            Caught(BillingMismatch),
        ),
        (
            "a lost answer retried to a denial is not billed",
            |h| {
                h.push(consume(
                    "eu",
                    "eu-late",
                    4_000,
                    ConsumeOutcome::Error {
                        error: "timed out".into(),
                    },
                ));
                h.push(consume(
                    "eu",
                    "eu-late",
                    8_000,
                    ConsumeOutcome::Denied {
                        reason: "USAGE_CAP_REACHED".into(),
                    },
                ));
                final_mut(h).billed = Some(9);
            },
            Caught(BillingMismatch),
        ),
        // Nodes and the run.
        (
            "a node that exits on its own is caught",
            |h| h.push(node(5_000, "us-2", NodeState::Exited)),
            Caught(NodeExited),
        ),
        (
            "a history without its final state is incomplete",
            |h| h.retain(|e| !matches!(e, Event::Final(_))),
            Exactly(&[Incomplete]),
        ),
    ]);
}

// ---- Measurements ----

#[test]
fn a_clean_history_passes_and_is_measured() {
    let report = passes(&clean());
    let s = &report.stats;
    assert_eq!((s.checks_attempted, s.checks_answered), (18, 18));
    assert_eq!(s.availability_percent, 100.0);
    assert_eq!((s.sdk_checks_attempted, s.sdk_checks_answered), (3, 3));
    assert_eq!(s.sdk_answered_percent, 100.0);
    assert_eq!(s.sdk_check_ms_max, Some(10));
    assert_eq!(s.cap.billed, Some(8));
    assert_eq!(s.cap.unanswered, 0);
    assert_eq!(s.writes_acked, 3);
    assert_eq!(s.revocations_acked, 1);
    assert_eq!(s.cap.allowed, 8);
    assert_eq!(s.cap.overshoot, 0);
    assert_eq!(s.seats.max_concurrent, 2);
    assert_eq!(s.convergence.len(), 1);
    let c = &s.convergence[0];
    assert_eq!(c.revision, Some(12));
    // Every node answered at 12 by 3_510 at the latest; healed at 3_200.
    assert_eq!(c.converged_after_ms, Some(3_510 - 3_200));
    // At 2_500 the newest acked write was 11 and every answer was at 11.
    assert_eq!(s.max_lag_revisions, 0);
}

#[test]
fn a_decision_from_newer_data_under_an_older_label_is_counted_not_reported() {
    let mut h = clean();
    // The revoke at 12 was sent at 3_000: an answer ending at 3_010 may
    // come from it even though the node labelled it 11.
    h.push(answered("eu-3", 9, 0, 3_005, 11, "REVOKED"));
    let report = passes(&h);
    assert_eq!(report.stats.answers_labelled_below_their_data, 1);
}

#[test]
fn retries_of_one_consumption_count_once() {
    let mut h = clean();
    // The same key allowed on three nodes is one consumption: 8 in all.
    for _ in 0..6 {
        h.push(consume(
            "eu",
            "eu-0",
            4_000,
            ConsumeOutcome::Allowed { revision: 12 },
        ));
    }
    let report = passes(&h);
    assert_eq!(report.stats.cap.allowed, 8);
}

/// A status of `node` at `applied_revision`, recovering or not.
fn status_at(node: &str, end_ms: Millis, applied_revision: u64, recovering: bool) -> Event {
    status_of(node, end_ms, 1, Some(1), applied_revision, recovering)
}

fn status(node: &str, end_ms: Millis, term: u64, leader: Option<u64>) -> Event {
    status_of(node, end_ms, term, leader, 12, false)
}

fn status_of(
    node: &str,
    end_ms: Millis,
    term: u64,
    leader: Option<u64>,
    applied_revision: u64,
    recovering: bool,
) -> Event {
    Event::Status(Status {
        start_ms: end_ms - 10,
        end_ms,
        region: region_of(node),
        node: node.into(),
        outcome: StatusOutcome::Ok {
            role: "follower".into(),
            term,
            leader,
            applied_revision,
            staleness_seconds: Some(0),
            recovering,
        },
    })
}

#[test]
fn elections_are_counted_and_timed_from_the_last_old_leader_to_the_first_new_one() {
    let mut h = clean();
    h.extend([
        // eu: term 1's leader last named at 5_000; a candidate in term 2
        // (no leader) at 5_300; term 2's leader first named at 5_900.
        status("eu-2", 5_000, 1, Some(1)),
        status("eu-3", 5_300, 2, None),
        status("eu-3", 5_900, 2, Some(2)),
        status("eu-2", 6_200, 2, Some(2)),
        // The deposed leader, cut off, still names itself later: it does
        // not stretch the election.
        status("eu-1", 6_500, 1, Some(1)),
        // Term 3 after 400 ms.
        status("eu-2", 7_000, 2, Some(2)),
        status("eu-2", 7_400, 3, Some(3)),
    ]);
    let report = passes(&h);
    let eu = &report.stats.regions["eu"];
    assert_eq!(eu.elections, 2);
    assert_eq!(eu.election_ms, vec![900, 400]);
    // us saw one term only: no election, none timed.
    let us = &report.stats.regions["us"];
    assert_eq!((us.elections, us.election_ms.len()), (0, 0));
    assert_eq!(report.stats.election_ms_max, Some(900));
}

#[test]
fn sdk_checks_are_measured_per_region() {
    let mut h = clean();
    h.push(sdk_failed("eu", 5_000));
    h.push(sdk_failed("eu", 7_000));
    let report = checker::check(&h);
    let eu = &report.stats.regions["eu"];
    assert_eq!((eu.sdk_checks_attempted, eu.sdk_checks_answered), (4, 2));
    assert_eq!(eu.sdk_answered_percent, 50.0);
    let us = &report.stats.regions["us"];
    assert_eq!((us.sdk_checks_attempted, us.sdk_checks_answered), (1, 1));
    assert_eq!(report.stats.sdk_checks_attempted, 5);
    assert_eq!(report.stats.sdk_answered_percent, 60.0);
    // One violation per region, naming both checks.
    let failed: Vec<_> = report
        .violations
        .iter()
        .filter(|v| v.invariant == SdkCheckFailed)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(
        failed[0].detail.contains("2 check(s)"),
        "{}",
        failed[0].detail
    );
}
