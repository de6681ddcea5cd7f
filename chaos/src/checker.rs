//! The checker: a pure function from a recorded history to a report of
//! broken invariants and of what the run measured. No clock, no network:
//! everything it knows is in the events, which is what lets doctored
//! histories test it (`tests/checker.rs`).
//!
//! The invariants, each with the reason it holds in Tollgate:
//!
//! - **acked_write_lost**: an origin write acknowledged with a revision is
//!   durable at the origin and, once healed, applied by every region node
//!   (each node's applied revision reaches the last acknowledged one and its
//!   decisions equal what the origin's final state implies).
//! - **revision_went_back**: a node never answers at a lower revision than
//!   an answer it gave that finished before this one was asked (what it
//!   answered is durable, or it answers nothing until it has caught up
//!   again: a status that says `recovering` is not an answer; nothing here
//!   restores an older backup).
//! - **decision_at_revision**: a node that says it answered at revision `r`
//!   answers what the acknowledged writes up to `r` imply (a region applies
//!   the origin's records in order and whole), or what a newer state
//!   implies that could already have been applied (a label lower than the
//!   data is counted in the stats, not reported: it never claims freshness
//!   the node lacks). A decision from older data than its label is a
//!   violation.
//! - **seat_overbooked**: at no instant do more leases than seats exist,
//!   counting only the time each client was certain to hold its lease (from
//!   the acknowledgement to the release request, or the expiry).
//! - **cap_exceeded**: the consumptions allowed (distinct idempotency keys)
//!   stay within the cap plus the outstanding units the origin reported;
//!   the origin never reports more outstanding than its bound nor more
//!   allotted than the cap.
//! - **region_unavailable**: a region never fails every check of a round
//!   while one of its nodes was up (running, not paused, past its start-up
//!   grace); the nemesis never cuts the checker off from a node.
//! - **sdk_check_failed**: in the scenarios that say so
//!   ([`Meta::sdk_checks_must_answer`]: kill-leader, pause-node,
//!   partition-region), every check through the SDK — every node of the
//!   region an endpoint, as an application has it — is answered: a killed,
//!   paused or cut-off node is failed over or hedged past within the
//!   check's deadline, and a node cut off from the origin still answers.
//! - **billing_mismatch**: after the final heal, once every consumption
//!   has an answer and the regions have reported everything, the origin's
//!   billed total for the capped counter is exactly the number of distinct
//!   keys answered ALLOW: a consumption answered ALLOW is durable before
//!   the answer (never lost with its node), and a retry of a counted key
//!   answers ALLOW without counting it again (never billed twice). Keys
//!   that still have no answer widen the range by their number.
//! - **node_exited**: no node process exits unless the harness stopped it.
//! - **incomplete**: the history has its parameters and a final state (the
//!   run reached the end of its healing phase).

use crate::history::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How many examples a violation lists at most.
const EXAMPLES_MAX: usize = 3;
/// Seat expiries are whole seconds on the node's clock: a client counts
/// its lease as certainly held until this long before the stated expiry.
const SEAT_EXPIRY_MARGIN_MS: u64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    AckedWriteLost,
    RevisionWentBack,
    DecisionAtRevision,
    SeatOverbooked,
    CapExceeded,
    RegionUnavailable,
    SdkCheckFailed,
    BillingMismatch,
    NodeExited,
    Incomplete,
}

impl Invariant {
    pub fn name(self) -> &'static str {
        match self {
            Invariant::AckedWriteLost => "acked_write_lost",
            Invariant::RevisionWentBack => "revision_went_back",
            Invariant::DecisionAtRevision => "decision_at_revision",
            Invariant::SeatOverbooked => "seat_overbooked",
            Invariant::CapExceeded => "cap_exceeded",
            Invariant::RegionUnavailable => "region_unavailable",
            Invariant::SdkCheckFailed => "sdk_check_failed",
            Invariant::BillingMismatch => "billing_mismatch",
            Invariant::NodeExited => "node_exited",
            Invariant::Incomplete => "incomplete",
        }
    }
}

impl std::fmt::Display for Invariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Violation {
    pub invariant: Invariant,
    /// When it was observed, if it has a time.
    pub at_ms: Option<Millis>,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub violations: Vec<Violation>,
    pub stats: Stats,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether any violation of `invariant` was found.
    pub fn has(&self, invariant: Invariant) -> bool {
        self.violations.iter().any(|v| v.invariant == invariant)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub regions: BTreeMap<String, RegionStats>,
    pub checks_attempted: u64,
    pub checks_answered: u64,
    pub availability_percent: f64,
    /// Checks through the SDK (every node of a region an endpoint), and
    /// how many were answered: what an application sees.
    #[serde(default)]
    pub sdk_checks_attempted: u64,
    #[serde(default)]
    pub sdk_checks_answered: u64,
    #[serde(default)]
    pub sdk_answered_percent: f64,
    /// The longest an answered SDK check took.
    #[serde(default)]
    pub sdk_check_ms_max: Option<u64>,
    /// The largest `staleness_seconds` any answer carried.
    pub max_staleness_seconds: Option<u64>,
    /// The most revisions an answer was behind the newest write
    /// acknowledged before the check was sent.
    pub max_lag_revisions: u64,
    pub writes_acked: u64,
    pub writes_failed: u64,
    pub writes_indeterminate: u64,
    pub revocations_acked: u64,
    /// Per fault that cut a region off from the origin: how long after the
    /// heal the newest revocation acknowledged during the cut reached every
    /// node of every region.
    pub convergence: Vec<Convergence>,
    pub elections: u64,
    /// The longest election seen in any region (see
    /// [`RegionStats::election_ms`]).
    #[serde(default)]
    pub election_ms_max: Option<u64>,
    /// Answers whose decision came from data newer than the revision they
    /// were labelled with (not a violation: the label is a lower bound,
    /// but the response says it is the revision the node had applied).
    pub answers_labelled_below_their_data: u64,
    pub answer_labelled_below_its_data: Option<String>,
    pub faults: u64,
    /// Windows in which a region failed every check of consecutive rounds
    /// (violations or not: e.g. while every node was down).
    pub unavailable_windows: u64,
    pub cap: CapStats,
    pub seats: SeatStats,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RegionStats {
    pub checks_attempted: u64,
    pub checks_answered: u64,
    pub availability_percent: f64,
    #[serde(default)]
    pub sdk_checks_attempted: u64,
    #[serde(default)]
    pub sdk_checks_answered: u64,
    #[serde(default)]
    pub sdk_answered_percent: f64,
    #[serde(default)]
    pub sdk_check_ms_max: Option<u64>,
    pub max_staleness_seconds: Option<u64>,
    pub max_lag_revisions: u64,
    /// Terms in which a leader was seen, less the first.
    pub elections: u64,
    /// How long each election took, in order: from the last status (of
    /// any node) naming the previous term's leader to the first naming the
    /// new term's leader. Measured at the status poll's resolution (each
    /// node every 100 ms), so an instant election shows as about one poll.
    #[serde(default)]
    pub election_ms: Vec<u64>,
    pub consumed_allowed: u64,
    pub seat_grants: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    pub step: u32,
    pub regions: Vec<String>,
    /// The newest revocation acknowledged during the cut (`None`: none was).
    pub revision: Option<u64>,
    pub healed_at_ms: Millis,
    /// `None`: never reached every node within the run.
    pub converged_after_ms: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CapStats {
    pub cap: u64,
    /// Distinct idempotency keys allowed.
    pub allowed: u64,
    pub attempts: u64,
    pub errors: u64,
    /// Allowed past the cap (0 when within it).
    pub overshoot: u64,
    /// The most outstanding units the origin reported during the run.
    pub outstanding_observed_max: u64,
    /// The origin's configured bound.
    pub outstanding_max: u64,
    /// The origin's billing total after healing.
    pub billed: Option<u64>,
    /// Whether it had settled when read (`None`: not known).
    #[serde(default)]
    pub billing_settled: Option<bool>,
    /// Consumption keys that never got an answer, even after the final
    /// retries.
    #[serde(default)]
    pub unanswered: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SeatStats {
    pub seat_count: u64,
    pub acquires: u64,
    pub grants: u64,
    pub full: u64,
    /// The most leases certainly held at one instant.
    pub max_concurrent: u64,
}

/// Checks `events` (a whole history).
pub fn check(events: &[Event]) -> Report {
    let mut report = Report::default();
    let meta = events.iter().find_map(|e| match e {
        Event::Meta(m) => Some(m),
        _ => None,
    });
    let Some(meta) = meta else {
        report.violations.push(Violation {
            invariant: Invariant::Incomplete,
            at_ms: None,
            detail: "the history has no meta event (not a chaos run's history?)".into(),
        });
        return report;
    };
    let h = Indexed::new(events);
    node_exits(&h, &mut report);
    acked_writes(meta, &h, &mut report);
    revisions_monotonic(&h, &mut report);
    decisions_at_revision(&h, &mut report);
    seats(meta, &h, &mut report);
    cap(meta, &h, &mut report);
    billing(&h, &mut report);
    availability(meta, &h, &mut report);
    sdk_checks(meta, &h, &mut report);
    measure(meta, &h, &mut report);
    report
}

/// The history's events by kind.
struct Indexed<'a> {
    writes: Vec<&'a Write>,
    checks: Vec<&'a Check>,
    sdk_checks: Vec<&'a SdkCheck>,
    /// The SDK checks a node answered, as checks of that node (round 0):
    /// judged like the prober's for revisions and decisions. Their
    /// `start_ms` is when the SDK was asked, at or before the attempt that
    /// was answered, which only makes those judgements more lenient.
    sdk_answers: Vec<Check>,
    consumes: Vec<&'a Consume>,
    seats: Vec<&'a Seat>,
    statuses: Vec<&'a Status>,
    nodes: Vec<&'a NodeChange>,
    faults: Vec<&'a Fault>,
    usage: Vec<&'a UsageSample>,
    last_final: Option<&'a Final>,
}

impl<'a> Indexed<'a> {
    fn new(events: &'a [Event]) -> Indexed<'a> {
        let mut h = Indexed {
            writes: vec![],
            checks: vec![],
            sdk_checks: vec![],
            sdk_answers: vec![],
            consumes: vec![],
            seats: vec![],
            statuses: vec![],
            nodes: vec![],
            faults: vec![],
            usage: vec![],
            last_final: None,
        };
        for e in events {
            match e {
                Event::Meta(_) => {}
                Event::Write(w) => h.writes.push(w),
                Event::Check(c) => h.checks.push(c),
                Event::SdkCheck(c) => {
                    h.sdk_checks.push(c);
                    if let (Some(node), Answer::Answered { .. }) = (&c.node, &c.outcome) {
                        h.sdk_answers.push(Check {
                            start_ms: c.start_ms,
                            end_ms: c.end_ms,
                            region: c.region.clone(),
                            node: node.clone(),
                            round: 0,
                            slot: c.slot,
                            outcome: c.outcome.clone(),
                        });
                    }
                }
                Event::Consume(c) => h.consumes.push(c),
                Event::Seat(s) => h.seats.push(s),
                Event::Status(s) => h.statuses.push(s),
                Event::Node(n) => h.nodes.push(n),
                Event::Fault(f) => h.faults.push(f),
                Event::Usage(u) => h.usage.push(u),
                Event::Final(f) => h.last_final = Some(f),
            }
        }
        h
    }

    fn acked(&self) -> impl Iterator<Item = (&'a Write, u64)> + '_ {
        self.writes.iter().filter_map(|w| match w.outcome {
            Ack::Acked { revision } => Some((*w, revision)),
            _ => None,
        })
    }

    /// Every answered check of a node: the prober's and the SDK's.
    fn node_checks(&self) -> impl Iterator<Item = &Check> + '_ {
        self.checks.iter().copied().chain(&self.sdk_answers)
    }

    /// (node, start, end, revision, what) for every answer carrying the
    /// node's applied revision.
    fn observations(&self) -> BTreeMap<&str, Vec<(Millis, Millis, u64, &'static str)>> {
        let mut obs: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        for c in self.node_checks() {
            if let Answer::Answered { revision, .. } = c.outcome {
                obs.entry(c.node.as_str())
                    .or_default()
                    .push((c.start_ms, c.end_ms, revision, "check"));
            }
        }
        for s in &self.statuses {
            if let StatusOutcome::Ok {
                applied_revision,
                recovering: false,
                ..
            } = s.outcome
            {
                obs.entry(s.node.as_str()).or_default().push((
                    s.start_ms,
                    s.end_ms,
                    applied_revision,
                    "status",
                ));
            }
        }
        obs
    }
}

fn examples(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(EXAMPLES_MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > EXAMPLES_MAX {
        s.push_str(&format!("; and {} more", items.len() - EXAMPLES_MAX));
    }
    s
}

fn node_exits(h: &Indexed, report: &mut Report) {
    for n in h.nodes.iter().filter(|n| n.state == NodeState::Exited) {
        report.violations.push(Violation {
            invariant: Invariant::NodeExited,
            at_ms: Some(n.at_ms),
            detail: format!(
                "{} exited without being asked to ({}); see its log",
                n.node, n.cause
            ),
        });
    }
}

/// The decision a slot's last write implies.
fn implied(op: Option<WriteOp>) -> &'static str {
    match op {
        None => "NOT_ENTITLED",
        Some(WriteOp::Grant | WriteOp::Order | WriteOp::Resume) => "ALLOW",
        Some(WriteOp::Suspend) => "SUSPENDED",
        Some(WriteOp::Revoke) => "REVOKED",
    }
}

fn acked_writes(meta: &Meta, h: &Indexed, report: &mut Report) {
    let Some(fin) = h.last_final else {
        report.violations.push(Violation {
            invariant: Invariant::Incomplete,
            at_ms: None,
            detail: "no final state: the run did not finish its healing phase, so \
                     acknowledged writes could not be compared"
                .into(),
        });
        return;
    };
    let last_acked = h.acked().map(|(_, r)| r).max().unwrap_or(0);

    // At the origin: every acknowledged write is there.
    let mut lost = Vec::new();
    for (w, revision) in h.acked() {
        let status = fin.origin_entitlements.get(&w.entitlement);
        // A revocation is final; any other write may be followed by
        // another, so only its entitlement's existence is certain here (the
        // final status is judged per slot below).
        let ok = match w.op {
            WriteOp::Revoke => status.map(String::as_str) == Some("revoked"),
            _ => status.is_some(),
        };
        if !ok {
            lost.push(format!(
                "{:?} of {} acked at revision {revision}, origin has {}",
                w.op,
                w.entitlement,
                status.map_or("nothing", String::as_str)
            ));
        }
    }
    if !lost.is_empty() {
        report.violations.push(Violation {
            invariant: Invariant::AckedWriteLost,
            at_ms: Some(fin.at_ms),
            detail: format!(
                "the origin lost {} acknowledged write(s): {}",
                lost.len(),
                examples(&lost)
            ),
        });
    }

    // The origin's final state agrees with each slot's last acknowledged
    // write, for slots whose writes all have known outcomes (a write of
    // unknown outcome may land at any later revision).
    let mut contradicted = Vec::new();
    for slot in 0..meta.slots {
        let writes: Vec<&&Write> = h.writes.iter().filter(|w| w.slot == slot).collect();
        if writes
            .iter()
            .any(|w| matches!(w.outcome, Ack::Indeterminate { .. }))
        {
            continue;
        }
        let Some(last) = writes
            .iter()
            .filter_map(|w| match w.outcome {
                Ack::Acked { revision } => Some((revision, *w)),
                _ => None,
            })
            .max_by_key(|(r, _)| *r)
            .map(|(_, w)| w)
        else {
            continue;
        };
        let expected = implied(Some(last.op));
        if let Some(truth) = fin.truth.get(&slot) {
            if truth != expected {
                contradicted.push(format!(
                    "slot {slot}: last acked {:?} of {} implies {expected}, origin says {truth}",
                    last.op, last.entitlement
                ));
            }
        }
    }
    if !contradicted.is_empty() {
        report.violations.push(Violation {
            invariant: Invariant::AckedWriteLost,
            at_ms: Some(fin.at_ms),
            detail: format!(
                "the origin's final state contradicts acknowledged writes: {}",
                examples(&contradicted)
            ),
        });
    }

    // In every region node, after healing.
    let expected_nodes: BTreeSet<&str> = meta
        .regions
        .values()
        .flatten()
        .map(String::as_str)
        .collect();
    let reported: BTreeSet<&str> = fin.nodes.iter().map(|n| n.node.as_str()).collect();
    for missing in expected_nodes.difference(&reported) {
        report.violations.push(Violation {
            invariant: Invariant::AckedWriteLost,
            at_ms: Some(fin.at_ms),
            detail: format!("{missing}: no final state recorded after healing"),
        });
    }
    for node in &fin.nodes {
        match node.applied_revision {
            None => report.violations.push(Violation {
                invariant: Invariant::AckedWriteLost,
                at_ms: Some(fin.at_ms),
                detail: format!(
                    "{}: did not answer its status after healing (converged: {})",
                    node.node, fin.converged
                ),
            }),
            Some(applied) if applied < last_acked => report.violations.push(Violation {
                invariant: Invariant::AckedWriteLost,
                at_ms: Some(fin.at_ms),
                detail: format!(
                    "{}: applied revision {applied} after healing, below the last acknowledged \
                     write's {last_acked}",
                    node.node
                ),
            }),
            Some(_) => {}
        }
        let differs: Vec<String> = fin
            .truth
            .iter()
            .filter_map(|(slot, truth)| {
                let got = node.decisions.get(slot).map_or("nothing", String::as_str);
                (got != truth).then(|| format!("slot {slot}: {got}, origin implies {truth}"))
            })
            .collect();
        if !differs.is_empty() {
            report.violations.push(Violation {
                invariant: Invariant::AckedWriteLost,
                at_ms: Some(fin.at_ms),
                detail: format!(
                    "{}: {} of {} slots answer differently from the origin after healing: {}",
                    node.node,
                    differs.len(),
                    fin.truth.len(),
                    examples(&differs)
                ),
            });
        }
    }
}

fn revisions_monotonic(h: &Indexed, report: &mut Report) {
    for (node, mut obs) in h.observations() {
        obs.sort_by_key(|o| (o.0, o.1));
        let mut by_end: Vec<_> = obs.clone();
        by_end.sort_by_key(|o| o.1);
        let mut j = 0;
        // The highest revision among answers that finished before the
        // current one was asked.
        let mut best: Option<(u64, Millis, &str)> = None;
        let mut bad = Vec::new();
        let mut first_at = None;
        for &(start, _end, revision, what) in &obs {
            while j < by_end.len() && by_end[j].1 < start {
                let (_, e, r, w) = by_end[j];
                if best.is_none_or(|b| r > b.0) {
                    best = Some((r, e, w));
                }
                j += 1;
            }
            if let Some((r, e, w)) = best {
                if revision < r {
                    first_at.get_or_insert(start);
                    bad.push(format!(
                        "{what} sent at {start} answered revision {revision} after a {w} \
                         answered {r} at {e}"
                    ));
                }
            }
        }
        if !bad.is_empty() {
            report.violations.push(Violation {
                invariant: Invariant::RevisionWentBack,
                at_ms: first_at,
                detail: format!(
                    "{node}: {} answer(s) at a lower revision than an earlier one: {}",
                    bad.len(),
                    examples(&bad)
                ),
            });
        }
    }
}

fn decisions_at_revision(h: &Indexed, report: &mut Report) {
    // Slot → acknowledged writes by revision, and when its first write of
    // unknown outcome was sent (after which its history is unknowable).
    let mut acked: BTreeMap<u32, Vec<(u64, WriteOp, Millis)>> = BTreeMap::new();
    let mut unknown_from: BTreeMap<u32, Millis> = BTreeMap::new();
    for w in &h.writes {
        match w.outcome {
            Ack::Acked { revision } => acked
                .entry(w.slot)
                .or_default()
                .push((revision, w.op, w.start_ms)),
            Ack::Indeterminate { .. } => {
                let t = unknown_from.entry(w.slot).or_insert(w.start_ms);
                *t = (*t).min(w.start_ms);
            }
            Ack::Failed { .. } => {}
        }
    }
    for writes in acked.values_mut() {
        writes.sort_by_key(|(r, _, _)| *r);
    }
    let mut bad: BTreeMap<&str, (Millis, Vec<String>)> = BTreeMap::new();
    let no_writes = Vec::new();
    for c in h.node_checks() {
        let Answer::Answered {
            revision, reason, ..
        } = &c.outcome
        else {
            continue;
        };
        if unknown_from.get(&c.slot).is_some_and(|t| c.end_ms >= *t) {
            continue;
        }
        let writes = acked.get(&c.slot).unwrap_or(&no_writes);
        let last = writes
            .iter()
            .rev()
            .find(|(r, _, _)| r <= revision)
            .map(|(_, op, _)| *op);
        let expected = implied(last);
        if reason == expected {
            continue;
        }
        // Newer states the node may have read: writes above the label that
        // were sent before the answer came back. A decision from one of
        // them is newer data under an older label, not stale data.
        let newer = writes
            .iter()
            .filter(|(r, _, start)| r > revision && *start < c.end_ms)
            .any(|(_, op, _)| implied(Some(*op)) == reason);
        if newer {
            let stats = &mut report.stats;
            stats.answers_labelled_below_their_data += 1;
            stats.answer_labelled_below_its_data.get_or_insert_with(|| {
                format!(
                    "{} answered slot {} {reason} under revision {revision}, which implies \
                     {expected}: its data was newer than its label",
                    c.node, c.slot
                )
            });
            continue;
        }
        let entry = bad.entry(c.node.as_str()).or_insert((c.start_ms, vec![]));
        entry.1.push(format!(
            "slot {} at revision {revision}: {reason}, the acked writes imply {expected}",
            c.slot
        ));
    }
    for (node, (at, items)) in bad {
        report.violations.push(Violation {
            invariant: Invariant::DecisionAtRevision,
            at_ms: Some(at),
            detail: format!(
                "{node}: {} answer(s) disagree with the writes acknowledged up to their revision: {}",
                items.len(),
                examples(&items)
            ),
        });
    }
}

fn seats(meta: &Meta, h: &Indexed, report: &mut Report) {
    let stats = &mut report.stats.seats;
    stats.seat_count = meta.seat_count;
    // (region, holder) → its calls in order.
    let mut by_holder: BTreeMap<(&str, &str), Vec<&Seat>> = BTreeMap::new();
    for s in &h.seats {
        by_holder
            .entry((s.region.as_str(), s.holder.as_str()))
            .or_default()
            .push(s);
        if s.op == SeatOp::Acquire {
            stats.acquires += 1;
            match s.outcome {
                SeatOutcome::Held { .. } => stats.grants += 1,
                SeatOutcome::Full => stats.full += 1,
                _ => {}
            }
        }
    }
    // Intervals in which each lease was certainly held.
    let mut intervals: Vec<(Millis, Millis, String)> = Vec::new();
    for ((region, holder), mut calls) in by_holder {
        calls.sort_by_key(|s| s.start_ms);
        let key = format!("{holder}@{region}");
        let mut open: Option<(Millis, Millis)> = None; // (from, certain until)
        for s in calls {
            match (s.op, &s.outcome) {
                (SeatOp::Acquire, SeatOutcome::Held { expires_at_s }) => {
                    let until = (*expires_at_s as u64 * 1000).saturating_sub(SEAT_EXPIRY_MARGIN_MS);
                    open = match open {
                        // A renewal of a lease still held extends it.
                        Some((from, old_until)) if old_until > s.end_ms => {
                            Some((from, old_until.max(until)))
                        }
                        Some((from, old_until)) => {
                            intervals.push((from, old_until, key.clone()));
                            Some((s.end_ms, until))
                        }
                        None => Some((s.end_ms, until)),
                    };
                }
                (SeatOp::Release, _) => {
                    // From the moment a release is asked for, the client
                    // no longer claims the seat, whatever the answer.
                    if let Some((from, until)) = open.take() {
                        intervals.push((from, until.min(s.start_ms), key.clone()));
                    }
                }
                (SeatOp::Acquire, _) => {}
            }
        }
        if let Some((from, until)) = open {
            intervals.push((from, until, key.clone()));
        }
    }
    intervals.retain(|(from, until, _)| until > from);
    // Sweep: ends before starts at the same instant.
    let mut points: Vec<(Millis, u8, usize)> = Vec::new();
    for (i, (from, until, _)) in intervals.iter().enumerate() {
        points.push((*from, 1, i));
        points.push((*until, 0, i));
    }
    points.sort();
    let mut held: BTreeSet<usize> = BTreeSet::new();
    let mut overbooked = Vec::new();
    let mut first_at = None;
    for (t, kind, i) in points {
        if kind == 0 {
            held.remove(&i);
            continue;
        }
        held.insert(i);
        let holders: BTreeSet<&str> = held.iter().map(|j| intervals[*j].2.as_str()).collect();
        report.stats.seats.max_concurrent =
            report.stats.seats.max_concurrent.max(holders.len() as u64);
        if holders.len() as u64 > meta.seat_count {
            first_at.get_or_insert(t);
            overbooked.push(format!(
                "at {t}: {} leases held at once ({})",
                holders.len(),
                holders.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    if !overbooked.is_empty() {
        report.violations.push(Violation {
            invariant: Invariant::SeatOverbooked,
            at_ms: first_at,
            detail: format!(
                "{} seats, {} instant(s) with more leases held: {}",
                meta.seat_count,
                overbooked.len(),
                examples(&overbooked)
            ),
        });
    }
}

fn cap(meta: &Meta, h: &Indexed, report: &mut Report) {
    let mut allowed: BTreeSet<&str> = BTreeSet::new();
    let stats = &mut report.stats.cap;
    stats.cap = meta.cap;
    stats.outstanding_max = meta.outstanding_max;
    for c in &h.consumes {
        stats.attempts += 1;
        match c.outcome {
            ConsumeOutcome::Allowed { .. } => {
                allowed.insert(c.key.as_str());
            }
            ConsumeOutcome::Error { .. } => stats.errors += 1,
            ConsumeOutcome::Denied { .. } => {}
        }
    }
    stats.allowed = allowed.len() as u64;
    stats.overshoot = stats.allowed.saturating_sub(meta.cap);
    stats.outstanding_observed_max = h.usage.iter().map(|u| u.outstanding).max().unwrap_or(0);
    stats.billed = h.last_final.and_then(|f| f.billed);
    let bound = stats.outstanding_observed_max;
    if stats.allowed > meta.cap + bound {
        let at = h
            .consumes
            .iter()
            .filter(|c| matches!(c.outcome, ConsumeOutcome::Allowed { .. }))
            .map(|c| c.end_ms)
            .nth((meta.cap + bound) as usize);
        report.violations.push(Violation {
            invariant: Invariant::CapExceeded,
            at_ms: at,
            detail: format!(
                "{} consumptions allowed against a cap of {} (overshoot {}, more than the {} \
                 outstanding units the origin reported)",
                stats.allowed, meta.cap, stats.overshoot, bound
            ),
        });
    }
    if let Some(u) = h
        .usage
        .iter()
        .find(|u| u.outstanding > meta.outstanding_max)
    {
        report.violations.push(Violation {
            invariant: Invariant::CapExceeded,
            at_ms: Some(u.at_ms),
            detail: format!(
                "the origin reported {} outstanding units, past its bound of {}",
                u.outstanding, meta.outstanding_max
            ),
        });
    }
    if let Some(u) = h.usage.iter().find(|u| u.limit > 0 && u.allotted > u.limit) {
        report.violations.push(Violation {
            invariant: Invariant::CapExceeded,
            at_ms: Some(u.at_ms),
            detail: format!(
                "the origin allotted {} units of a cap of {}",
                u.allotted, u.limit
            ),
        });
    }
}

fn billing(h: &Indexed, report: &mut Report) {
    let Some(fin) = h.last_final else {
        // `incomplete` says so already.
        return;
    };
    let mut allowed: BTreeSet<&str> = BTreeSet::new();
    let mut answered: BTreeSet<&str> = BTreeSet::new();
    let mut keys: BTreeSet<&str> = BTreeSet::new();
    for c in &h.consumes {
        keys.insert(c.key.as_str());
        match c.outcome {
            ConsumeOutcome::Allowed { .. } => {
                allowed.insert(c.key.as_str());
                answered.insert(c.key.as_str());
            }
            ConsumeOutcome::Denied { .. } => {
                answered.insert(c.key.as_str());
            }
            ConsumeOutcome::Error { .. } => {}
        }
    }
    let unanswered: Vec<&str> = keys.difference(&answered).copied().collect();
    let stats = &mut report.stats.cap;
    stats.unanswered = unanswered.len() as u64;
    stats.billing_settled = fin.billing_settled;
    let (low, high) = (
        allowed.len() as u64,
        (allowed.len() + unanswered.len()) as u64,
    );
    let expected = if low == high {
        format!("the {low} distinct key(s) answered ALLOW")
    } else {
        format!(
            "between the {low} distinct key(s) answered ALLOW and {high} with the {} never \
             answered ({})",
            unanswered.len(),
            examples(&unanswered.iter().map(|k| k.to_string()).collect::<Vec<_>>())
        )
    };
    let settled = match fin.billing_settled {
        Some(false) => " (read before it settled: a region still had usage to report)",
        _ => "",
    };
    let problem = match fin.billed {
        None if low == 0 => None,
        None => Some(format!(
            "the origin bills nothing for the capped counter, but it should bill {expected}"
        )),
        Some(billed) if billed < low => Some(format!(
            "the origin bills {billed} unit(s){settled}, fewer than {expected}: usage answered \
             ALLOW was lost"
        )),
        Some(billed) if billed > high => Some(format!(
            "the origin bills {billed} unit(s){settled}, more than {expected}: a consumption was \
             counted twice, or counted without being allowed"
        )),
        Some(_) => None,
    };
    if let Some(detail) = problem {
        report.violations.push(Violation {
            invariant: Invariant::BillingMismatch,
            at_ms: Some(fin.at_ms),
            detail,
        });
    }
}

/// Each node's state changes, to ask whether it was up throughout a window.
struct Liveness<'a> {
    changes: BTreeMap<&'a str, Vec<(Millis, NodeState)>>,
    grace_ms: u64,
}

impl<'a> Liveness<'a> {
    fn new(h: &Indexed<'a>, grace_ms: u64) -> Liveness<'a> {
        let mut changes: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        for n in &h.nodes {
            changes
                .entry(n.node.as_str())
                .or_default()
                .push((n.at_ms, n.state));
        }
        for c in changes.values_mut() {
            c.sort_by_key(|(t, _)| *t);
        }
        Liveness { changes, grace_ms }
    }

    /// Up since at least `grace_ms` before `from`, with no change until `to`.
    fn up_throughout(&self, node: &str, from: Millis, to: Millis) -> bool {
        let Some(changes) = self.changes.get(node) else {
            return false;
        };
        let since = from.saturating_sub(self.grace_ms);
        let before = changes.iter().rev().find(|(t, _)| *t <= since);
        let changed_inside = changes.iter().any(|(t, _)| *t > since && *t <= to);
        matches!(before, Some((_, NodeState::Up))) && !changed_inside
    }
}

fn availability(meta: &Meta, h: &Indexed, report: &mut Report) {
    let live = Liveness::new(h, meta.up_grace_ms);
    // (region, round) → (first sent, last answered, answered any).
    let mut rounds: BTreeMap<(&str, u64), (Millis, Millis, bool)> = BTreeMap::new();
    for c in &h.checks {
        let e = rounds
            .entry((c.region.as_str(), c.round))
            .or_insert((c.start_ms, c.end_ms, false));
        e.0 = e.0.min(c.start_ms);
        e.1 = e.1.max(c.end_ms);
        e.2 |= matches!(c.outcome, Answer::Answered { .. });
    }
    for (region, nodes) in &meta.regions {
        let mut windows: Vec<(Millis, Millis, u64)> = Vec::new();
        let mut current: Option<(Millis, Millis, u64)> = None;
        for (_, (from, to, answered)) in
            rounds.range((region.as_str(), 0)..=(region.as_str(), u64::MAX))
        {
            if *answered {
                windows.extend(current.take());
            } else {
                current = Some(match current {
                    Some((f, t, n)) => (f, t.max(*to), n + 1),
                    None => (*from, *to, 1),
                });
            }
        }
        windows.extend(current);
        report.stats.unavailable_windows += windows.len() as u64;
        for (from, to, n) in windows {
            if to - from < meta.unavailable_window_ms_min {
                continue;
            }
            let up: Vec<&str> = nodes
                .iter()
                .map(String::as_str)
                .filter(|node| live.up_throughout(node, from, to))
                .collect();
            if !up.is_empty() {
                report.violations.push(Violation {
                    invariant: Invariant::RegionUnavailable,
                    at_ms: Some(from),
                    detail: format!(
                        "region {region}: every check of {n} round(s) failed from {from} to {to} \
                         ({} ms) while {} was up",
                        to - from,
                        up.join(", ")
                    ),
                });
            }
        }
    }
}

fn sdk_checks(meta: &Meta, h: &Indexed, report: &mut Report) {
    let percent = |answered: u64, attempted: u64| {
        if attempted == 0 {
            100.0
        } else {
            answered as f64 * 100.0 / attempted as f64
        }
    };
    // Region → (first failure, failures).
    let mut failed: BTreeMap<&str, (Millis, Vec<String>)> = BTreeMap::new();
    for c in &h.sdk_checks {
        let stats = &mut report.stats;
        let region = stats.regions.entry(c.region.clone()).or_default();
        region.sdk_checks_attempted += 1;
        stats.sdk_checks_attempted += 1;
        match &c.outcome {
            Answer::Answered { .. } => {
                region.sdk_checks_answered += 1;
                stats.sdk_checks_answered += 1;
                let took = Some(c.end_ms.saturating_sub(c.start_ms));
                region.sdk_check_ms_max = region.sdk_check_ms_max.max(took);
                stats.sdk_check_ms_max = stats.sdk_check_ms_max.max(took);
            }
            Answer::Error { error } => {
                let entry = failed
                    .entry(c.region.as_str())
                    .or_insert((c.start_ms, Vec::new()));
                entry.1.push(format!(
                    "slot {} asked at {} failed after {} ms: {error}",
                    c.slot,
                    c.start_ms,
                    c.end_ms.saturating_sub(c.start_ms)
                ));
            }
        }
    }
    let stats = &mut report.stats;
    stats.sdk_answered_percent = percent(stats.sdk_checks_answered, stats.sdk_checks_attempted);
    for r in stats.regions.values_mut() {
        r.sdk_answered_percent = percent(r.sdk_checks_answered, r.sdk_checks_attempted);
    }
    if !meta.sdk_checks_must_answer {
        return;
    }
    for (region, (at, items)) in failed {
        report.violations.push(Violation {
            invariant: Invariant::SdkCheckFailed,
            at_ms: Some(at),
            detail: format!(
                "region {region}: {} check(s) through the SDK (every node an endpoint) were not \
                 answered: {}",
                items.len(),
                examples(&items)
            ),
        });
    }
}

fn measure(meta: &Meta, h: &Indexed, report: &mut Report) {
    let stats = &mut report.stats;
    for w in &h.writes {
        match w.outcome {
            Ack::Acked { .. } => {
                stats.writes_acked += 1;
                if w.op == WriteOp::Revoke {
                    stats.revocations_acked += 1;
                }
            }
            Ack::Failed { .. } => stats.writes_failed += 1,
            Ack::Indeterminate { .. } => stats.writes_indeterminate += 1,
        }
    }
    stats.faults = h
        .faults
        .iter()
        .filter(|f| f.phase == Phase::Start && f.step != u32::MAX)
        .count() as u64;

    // Acknowledged writes by completion time, with the running maximum
    // revision, for the lag of each answer.
    let mut acked: Vec<(Millis, u64)> = h.acked().map(|(w, r)| (w.end_ms, r)).collect();
    acked.sort();
    let mut running = 0;
    for a in acked.iter_mut() {
        running = running.max(a.1);
        a.1 = running;
    }
    let head_before = |t: Millis| -> u64 {
        let i = acked.partition_point(|(end, _)| *end < t);
        if i == 0 {
            0
        } else {
            acked[i - 1].1
        }
    };

    for region in meta.regions.keys() {
        stats.regions.entry(region.clone()).or_default();
    }
    for c in &h.checks {
        let r = stats.regions.entry(c.region.clone()).or_default();
        r.checks_attempted += 1;
        stats.checks_attempted += 1;
        if let Answer::Answered {
            revision,
            staleness_seconds,
            ..
        } = c.outcome
        {
            r.checks_answered += 1;
            stats.checks_answered += 1;
            if let Some(s) = staleness_seconds {
                r.max_staleness_seconds = Some(r.max_staleness_seconds.unwrap_or(0).max(s));
                stats.max_staleness_seconds = Some(stats.max_staleness_seconds.unwrap_or(0).max(s));
            }
            let lag = head_before(c.start_ms).saturating_sub(revision);
            r.max_lag_revisions = r.max_lag_revisions.max(lag);
            stats.max_lag_revisions = stats.max_lag_revisions.max(lag);
        }
    }
    let percent = |answered: u64, attempted: u64| {
        if attempted == 0 {
            100.0
        } else {
            answered as f64 * 100.0 / attempted as f64
        }
    };
    stats.availability_percent = percent(stats.checks_answered, stats.checks_attempted);
    let mut terms: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for s in &h.statuses {
        if let StatusOutcome::Ok {
            term,
            leader: Some(_),
            ..
        } = s.outcome
        {
            terms.entry(s.region.as_str()).or_default().insert(term);
        }
    }
    let mut durations = election_durations(&h.statuses);
    let mut allowed_keys: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for c in &h.consumes {
        if matches!(c.outcome, ConsumeOutcome::Allowed { .. }) {
            allowed_keys
                .entry(c.region.as_str())
                .or_default()
                .insert(c.key.as_str());
        }
    }
    for (name, r) in stats.regions.iter_mut() {
        r.availability_percent = percent(r.checks_answered, r.checks_attempted);
        r.elections = terms
            .get(name.as_str())
            .map_or(0, |t| (t.len() as u64).saturating_sub(1));
        r.election_ms = durations.remove(name.as_str()).unwrap_or_default();
        r.consumed_allowed = allowed_keys
            .get(name.as_str())
            .map_or(0, |k| k.len() as u64);
        r.seat_grants = h
            .seats
            .iter()
            .filter(|s| s.region == *name && matches!(s.outcome, SeatOutcome::Held { .. }))
            .filter(|s| s.op == SeatOp::Acquire)
            .count() as u64;
    }
    stats.elections = stats.regions.values().map(|r| r.elections).sum();
    stats.election_ms_max = stats
        .regions
        .values()
        .flat_map(|r| r.election_ms.iter().copied())
        .max();

    // Convergence after each cut from the origin heals.
    let obs = h.observations();
    let all_nodes: Vec<&str> = meta
        .regions
        .values()
        .flatten()
        .map(String::as_str)
        .collect();
    let mut starts: BTreeMap<u32, &Fault> = BTreeMap::new();
    for f in &h.faults {
        match f.phase {
            Phase::Start => {
                starts.insert(f.step, f);
            }
            Phase::Stop => {
                let Some(start) = starts.remove(&f.step) else {
                    continue;
                };
                if start.cut_from_origin.is_empty() {
                    continue;
                }
                let revision = h
                    .acked()
                    .filter(|(w, _)| w.op == WriteOp::Revoke)
                    .filter(|(w, _)| w.start_ms >= start.at_ms && w.end_ms <= f.at_ms)
                    .map(|(_, r)| r)
                    .max();
                let converged_after_ms = revision.and_then(|r| {
                    let mut latest = f.at_ms;
                    for node in &all_nodes {
                        let reached = obs
                            .get(node)?
                            .iter()
                            .filter(|o| o.2 >= r)
                            .map(|o| o.1)
                            .min()?;
                        latest = latest.max(reached);
                    }
                    Some(latest - f.at_ms)
                });
                stats.convergence.push(Convergence {
                    step: f.step,
                    regions: start.cut_from_origin.clone(),
                    revision,
                    healed_at_ms: f.at_ms,
                    converged_after_ms,
                });
            }
        }
    }
}

/// Per region, how long each election took: for every term in which a
/// leader was seen (after the first), from the last status that named a
/// leader of an earlier term, up to the first naming the new one, to that
/// first. A deposed leader that still names itself afterwards (cut off from
/// its followers) does not stretch the window.
fn election_durations<'a>(statuses: &[&'a Status]) -> BTreeMap<&'a str, Vec<u64>> {
    let mut sightings: BTreeMap<&str, Vec<(Millis, u64)>> = BTreeMap::new();
    for s in statuses {
        if let StatusOutcome::Ok {
            term,
            leader: Some(_),
            ..
        } = s.outcome
        {
            sightings
                .entry(s.region.as_str())
                .or_default()
                .push((s.end_ms, term));
        }
    }
    let mut out = BTreeMap::new();
    for (region, seen) in sightings {
        let mut first_seen: BTreeMap<u64, Millis> = BTreeMap::new();
        for &(at, term) in &seen {
            let first = first_seen.entry(term).or_insert(at);
            *first = (*first).min(at);
        }
        let durations: Vec<u64> = first_seen
            .iter()
            .skip(1)
            .filter_map(|(&term, &elected)| {
                seen.iter()
                    .filter(|&&(at, t)| t < term && at <= elected)
                    .map(|&(at, _)| at)
                    .max()
                    .map(|last| elected - last)
            })
            .collect();
        out.insert(region, durations);
    }
    out
}
