//! What happened during a run, as events: one JSON object per line in
//! `<run dir>/history.jsonl`. The checker reads nothing else, so a history
//! can be re-checked later (`chaos check <file>`) or doctored in a test.
//! Each line is `{"kind": "<event>", "data": {...}}` (adjacently tagged:
//! map keys stay numbers, which internally tagged enums cannot carry).
//!
//! Times are Unix milliseconds from the harness's clock (the nodes run on
//! the same machine, so seat expiries from the nodes compare with them).
//! Every client operation records when it was sent (`start_ms`) and when
//! its answer, or its failure, came back (`end_ms`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

/// Unix milliseconds.
pub type Millis = u64;

/// Now, in Unix milliseconds.
pub fn now_ms() -> Millis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "snake_case")]
pub enum Event {
    Meta(Meta),
    Write(Write),
    Check(Check),
    SdkCheck(SdkCheck),
    Consume(Consume),
    Seat(Seat),
    Status(Status),
    Node(NodeChange),
    Fault(Fault),
    Usage(UsageSample),
    Final(Final),
}

/// The run's parameters the checker needs; the first event of a history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    pub scenario: String,
    pub seed: u64,
    pub duration_seconds: u64,
    /// Region name → its nodes' names.
    pub regions: BTreeMap<String, Vec<String>>,
    /// Entitlement slots the writer grants and revokes (one feature each).
    pub slots: u32,
    /// The hard cap of the metered feature both regions consume.
    pub cap: u64,
    /// The origin's `[quota] outstanding_max`.
    pub outstanding_max: u64,
    /// Floating seats of the seat entitlement, shared by both regions.
    pub seat_count: u64,
    /// A node counts as up for availability only this long after it was
    /// (re)started or continued: it has to open its sled tree and bind.
    pub up_grace_ms: u64,
    /// Shorter windows in which every node of a region failed are not
    /// reported (a slow answer under load is not an outage).
    pub unavailable_window_ms_min: u64,
    /// Every check through the SDK must be answered (`sdk_check_failed`):
    /// the scenario's faults always leave a node of each region up and
    /// reachable. Absent in histories from before the SDK prober.
    #[serde(default)]
    pub sdk_checks_must_answer: bool,
}

/// An origin write through REST.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Write {
    pub start_ms: Millis,
    pub end_ms: Millis,
    pub slot: u32,
    pub entitlement: String,
    pub op: WriteOp,
    pub outcome: Ack,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteOp {
    /// A new entitlement to the slot's feature (`POST /v1/entitlements`).
    Grant,
    /// A new entitlement to the slot's plan, through a CRM order
    /// (`POST /v1/orders`, kind `new`: the entitlement's id is the order's).
    Order,
    /// `POST /v1/entitlements/{id}/suspend`.
    Suspend,
    /// `POST /v1/entitlements/{id}/resume`.
    Resume,
    Revoke,
}

impl WriteOp {
    /// The entitlement status this write leaves at the origin.
    pub fn status(self) -> &'static str {
        match self {
            WriteOp::Grant | WriteOp::Order | WriteOp::Resume => "active",
            WriteOp::Suspend => "suspended",
            WriteOp::Revoke => "revoked",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Ack {
    /// Committed under `revision`.
    Acked { revision: u64 },
    /// Certainly not applied (refused with 4xx, or no connection).
    Failed { error: String },
    /// May or may not have been applied (timeout, 5xx, a dropped answer).
    Indeterminate { error: String },
}

/// One entitlement check (no consumption) on one region node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Check {
    pub start_ms: Millis,
    pub end_ms: Millis,
    pub region: String,
    pub node: String,
    /// Checks of one round go to every node of the region at once.
    pub round: u64,
    pub slot: u32,
    pub outcome: Answer,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Answer {
    Answered {
        revision: u64,
        /// The decision's reason without its prefix: `ALLOW`, `REVOKED`, ...
        reason: String,
        allowed: bool,
        staleness_seconds: Option<u64>,
    },
    Error {
        error: String,
    },
}

/// One check (no consumption) through the SDK's client, whose endpoints
/// are every node of the region: what an application sees, failover and
/// hedging included. `start_ms` is when the client was asked, so it may
/// precede the attempt that was answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SdkCheck {
    pub start_ms: Millis,
    pub end_ms: Millis,
    pub region: String,
    /// The node that answered (its `answered_by`), when one did.
    pub node: Option<String>,
    pub slot: u32,
    pub outcome: Answer,
}

/// A check with `consume = 1` of the hard-capped feature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consume {
    pub start_ms: Millis,
    pub end_ms: Millis,
    pub region: String,
    pub node: String,
    /// The idempotency key: retries of one consumption share it.
    pub key: String,
    pub outcome: ConsumeOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum ConsumeOutcome {
    Allowed { revision: u64 },
    Denied { reason: String },
    Error { error: String },
}

/// A floating-seat call (usage/v1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seat {
    pub start_ms: Millis,
    pub end_ms: Millis,
    pub region: String,
    pub node: String,
    pub holder: String,
    pub op: SeatOp,
    pub outcome: SeatOutcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeatOp {
    Acquire,
    Release,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum SeatOutcome {
    /// The lease is held until `expires_at_s` (Unix seconds, node clock).
    Held {
        expires_at_s: i64,
    },
    Full,
    Released,
    NotHeld,
    Error {
        error: String,
    },
}

/// One poll of a region node's `/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub start_ms: Millis,
    pub end_ms: Millis,
    pub region: String,
    pub node: String,
    pub outcome: StatusOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum StatusOutcome {
    Ok {
        role: String,
        term: u64,
        leader: Option<u64>,
        applied_revision: u64,
        staleness_seconds: Option<u64>,
        /// The node said it is recovering from an unclean stop: it answers
        /// nothing from its state yet, so its revision is no answer.
        #[serde(default)]
        recovering: bool,
    },
    Error {
        error: String,
    },
}

/// A node process changed state (the harness or the nemesis did it, or it
/// exited on its own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeChange {
    pub at_ms: Millis,
    pub node: String,
    pub state: NodeState,
    pub cause: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Running (started, restarted or continued).
    Up,
    /// Killed by the nemesis or stopped by the harness.
    Down,
    /// SIGSTOPped.
    Paused,
    /// Exited without being asked to.
    Exited,
}

/// A nemesis step began or ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub at_ms: Millis,
    /// The step's index in the schedule (`u32::MAX`: the final heal).
    pub step: u32,
    pub phase: Phase,
    /// What was done, resolved (e.g. which node was the leader).
    pub description: String,
    /// Regions this fault cuts off from the origin (for the time a
    /// revocation takes to arrive once healed).
    pub cut_from_origin: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Start,
    Stop,
}

/// The origin's usage row for the capped counter
/// (`GET /v1/accounts/{id}/usage`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageSample {
    pub at_ms: Millis,
    pub limit: u64,
    pub consumed: u64,
    pub allotted: u64,
    pub outstanding: u64,
}

/// The state after the healing phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Final {
    pub at_ms: Millis,
    /// Every node reached the origin's head before the deadline.
    pub converged: bool,
    pub origin_head: u64,
    /// Entitlement id → status at the origin (`active`, `revoked`, ...).
    pub origin_entitlements: BTreeMap<String, String>,
    /// Slot → the decision the origin's state implies (`ALLOW`,
    /// `REVOKED`, `NOT_ENTITLED`).
    pub truth: BTreeMap<u32, String>,
    pub nodes: Vec<FinalNode>,
    /// The origin's billing total for the capped counter.
    pub billed: Option<u64>,
    /// Whether `billed` had settled when it was read: every region node
    /// had reported all it metered, and the total had stopped moving.
    /// `None` in histories from before this was waited for.
    #[serde(default)]
    pub billing_settled: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalNode {
    pub region: String,
    pub node: String,
    /// `None`: the node did not answer its status.
    pub applied_revision: Option<u64>,
    /// Slot → the reason the node answered (`ERROR: ...` if it did not).
    pub decisions: BTreeMap<u32, String>,
}

/// Collects events in memory and appends each to a JSON-lines file.
pub struct Recorder {
    inner: Mutex<Inner>,
}

struct Inner {
    events: Vec<Event>,
    out: Option<std::io::BufWriter<std::fs::File>>,
    write_error: Option<String>,
}

impl Recorder {
    /// Records to memory only (tests).
    pub fn in_memory() -> Recorder {
        Recorder {
            inner: Mutex::new(Inner {
                events: Vec::new(),
                out: None,
                write_error: None,
            }),
        }
    }

    /// Records to memory and to `path` (created, truncated).
    pub fn to_file(path: &Path) -> std::io::Result<Recorder> {
        let file = std::fs::File::create(path)?;
        Ok(Recorder {
            inner: Mutex::new(Inner {
                events: Vec::new(),
                out: Some(std::io::BufWriter::new(file)),
                write_error: None,
            }),
        })
    }

    pub fn record(&self, event: Event) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(out) = inner.out.as_mut() {
            // Serialising our own plain types cannot fail; a full disk can.
            let line = serde_json::to_string(&event).expect("an event serialises");
            if let Err(error) = writeln!(out, "{line}") {
                inner.write_error.get_or_insert(error.to_string());
            }
        }
        inner.events.push(event);
    }

    /// Every event so far, in recording order.
    pub fn events(&self) -> Vec<Event> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .events
            .clone()
    }

    /// Flushes the file; the first write error, if any happened.
    pub fn flush(&self) -> Result<(), String> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(out) = inner.out.as_mut() {
            if let Err(error) = out.flush() {
                inner.write_error.get_or_insert(error.to_string());
            }
        }
        match &inner.write_error {
            Some(error) => Err(error.clone()),
            None => Ok(()),
        }
    }
}

/// Reads a history written by [`Recorder::to_file`].
pub fn load(path: &Path) -> anyhow::Result<Vec<Event>> {
    use anyhow::Context;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), i + 1))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json_lines() {
        let dir = std::env::temp_dir().join(format!("tollgate-chaos-history-{}", now_ms()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("history.jsonl");
        let recorder = Recorder::to_file(&path).unwrap();
        let events = vec![
            Event::Write(Write {
                start_ms: 1,
                end_ms: 2,
                slot: 3,
                entitlement: "s3-1".into(),
                op: WriteOp::Grant,
                outcome: Ack::Acked { revision: 9 },
            }),
            Event::Check(Check {
                start_ms: 3,
                end_ms: 4,
                region: "eu".into(),
                node: "eu-1".into(),
                round: 1,
                slot: 3,
                outcome: Answer::Answered {
                    revision: 9,
                    reason: "ALLOW".into(),
                    allowed: true,
                    staleness_seconds: Some(0),
                },
            }),
            Event::SdkCheck(SdkCheck {
                start_ms: 3,
                end_ms: 5,
                region: "eu".into(),
                node: None,
                slot: 3,
                outcome: Answer::Error {
                    error: "deadline of 2s exceeded".into(),
                },
            }),
            Event::Final(Final {
                at_ms: 5,
                converged: true,
                origin_head: 9,
                origin_entitlements: BTreeMap::from([("s3-1".into(), "active".into())]),
                truth: BTreeMap::from([(3, "ALLOW".into())]),
                nodes: vec![],
                billed: None,
                billing_settled: Some(true),
            }),
        ];
        for e in &events {
            recorder.record(e.clone());
        }
        recorder.flush().unwrap();
        assert_eq!(load(&path).unwrap(), events);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_history_from_before_the_sdk_prober_still_loads() {
        let meta = r#"{"kind":"meta","data":{"scenario":"kill-leader","seed":1,
            "duration_seconds":45,"regions":{},"slots":16,"cap":135,"outstanding_max":40,
            "seat_count":2,"up_grace_ms":5000,"unavailable_window_ms_min":4000}}"#;
        let Event::Meta(meta) = serde_json::from_str(meta).unwrap() else {
            panic!("not a meta event")
        };
        assert!(!meta.sdk_checks_must_answer);
        let fin = r#"{"kind":"final","data":{"at_ms":1,"converged":true,"origin_head":3,
            "origin_entitlements":{},"truth":{},"nodes":[],"billed":7}}"#;
        let Event::Final(fin) = serde_json::from_str(fin).unwrap() else {
            panic!("not a final event")
        };
        assert_eq!((fin.billed, fin.billing_settled), (Some(7), None));
    }
}
