//! Usage metering on a region node: checks with `consume` are decided from
//! memory (hard caps out of chunks drawn through the region's log), and a
//! consumption is answered ALLOW only once it is durable in the log. Many
//! checks share one report (group commit): while one report is in flight,
//! the next gathers every consumption that arrives, so a report costs one
//! Raft entry whatever the load.
//!
//! Guarantees:
//! - **No allowed unit is unbilled**: a check that consumes is answered
//!   ALLOW after the report carrying it is committed (a majority of the
//!   region flushed it); a node killed before that never answered.
//! - **None is billed twice**: a report carries the meter's incarnation and
//!   a sequence (a retried report is skipped), and a consumption's
//!   idempotency key is counted once (a client retrying a check whose
//!   answer it lost, on any node, is answered ALLOW and counted nothing).
//!   A consumption without a key whose answer is lost (the node died after
//!   the commit, the caller's deadline passed) is billed without the caller
//!   seeing ALLOW: the SDK gives every consumption a key, so it can retry.
//! - **A hard cap holds across the region's nodes**: a node consumes only
//!   out of its chunk, and chunks come out of what the cap leaves.
//! - **A dead node's chunk goes back to the pool**: when the node starts
//!   again (its meter starts a new incarnation, which fences what its last
//!   life had in flight, and hands back every chunk it finds), or when the
//!   leader finds it silent for the meter's `lease` (default
//!   [`usage::METER_LEASE_SECONDS`]) with chunks held. Until then, the cap is over-reserved by at most that node's
//!   chunks: one per counter, at most `chunk_units_max` (or a sixteenth of
//!   the cap) each.
//! - **An error is never an answer**: a storage read that fails, a report
//!   the log did not take, a meter that is starting or was fenced: the
//!   check answers UNAVAILABLE (counted in `tollgate_meter_errors_total`),
//!   never ALLOW past a cap, and nothing is counted twice or skipped.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;
use tollgate_clock::Clock;
use tollgate_engine::Reason;
use tollgate_raft::{Node, StateView, WriteOutcome};
use tollgate_region::usage::{
    self, counter_state, parse_chunk_key, MeterLease, CHUNK_PREFIX, USAGE_ENTRIES_PER_COMMAND_MAX,
};
use tollgate_region::{
    Counter, KeyVerdict, RegionCommand, RegionLogic, RegionResponse, UsageEntry,
};
use tollgate_server::served::scan_all;

/// Keys this node knows decided (counted or refused) in the log, to answer
/// a retry on the same node before its report is applied here.
const RECENT_KEYS_MAX: usize = 100_000;
/// After a wait for a slice came back empty, checks are denied at once
/// for this long instead of waiting again.
const STARVED_FOR: Duration = Duration::from_secs(2);
/// Most consumptions waiting for a report before new consumption is
/// refused (the region's log has been unreachable for a while).
const PENDING_MAX: usize = 100_000;
/// Most reports committed and not yet applied on this node that it keeps
/// counting as unreported.
const UNAPPLIED_MAX: usize = 10_000;
/// How often a check waiting for a slice looks again.
const SLICE_POLL: Duration = Duration::from_millis(10);
/// How often the leader looks for silent nodes holding chunks (at most;
/// twice per lease when the lease is shorter).
const FENCE_SWEEP_EVERY: Duration = Duration::from_secs(10);
/// How long a meter that cannot start yet (no leader elected) logs it at
/// DEBUG before it warns.
const START_QUIET: Duration = Duration::from_secs(10);
/// At most one WARN this often for reports that keep failing.
const WARN_EVERY: Duration = Duration::from_secs(10);
/// The metric every metering error is counted in, by kind.
const METER_ERRORS: &str = "tollgate_meter_errors_total";

/// How a node meters.
#[derive(Debug, Clone, Copy)]
pub struct MeterConfig {
    /// How often a report that failed is retried, and chunks looked at.
    pub flush_interval: Duration,
    /// Most units a node draws at once for a hard-capped counter (it draws
    /// less for small caps, so several nodes can share them).
    pub chunk_units_max: u64,
    /// A chunk unused this long is handed back.
    pub chunk_idle: Duration,
    /// How long a check waits for the region to lease more of a cap from
    /// the origin before it is denied.
    pub slice_wait: Duration,
    /// How long a consuming check waits for its report to be durable
    /// before it answers UNAVAILABLE (its outcome unknown: retry it with
    /// the same idempotency key).
    pub durable_wait: Duration,
    /// A node holding chunks and silent this long is fenced by the leader
    /// and its chunks handed back (whole seconds; see
    /// [`usage::METER_LEASE_SECONDS`]).
    pub lease: Duration,
}

impl Default for MeterConfig {
    fn default() -> Self {
        MeterConfig {
            flush_interval: Duration::from_millis(20),
            chunk_units_max: 1_000,
            chunk_idle: Duration::from_secs(2),
            slice_wait: Duration::from_secs(1),
            durable_wait: Duration::from_secs(2),
            lease: Duration::from_secs(usage::METER_LEASE_SECONDS as u64),
        }
    }
}

/// Why a consumption could not be metered. Every one is answered
/// UNAVAILABLE: the caller may try another node.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MeterError {
    #[error("metering on this node is starting (handing back what its last run held)")]
    Starting,
    #[error("metering on this node is stopping")]
    Stopping,
    #[error("this node's metering was fenced by the region (it was taken for gone); it restarts")]
    Fenced,
    #[error("reading usage state failed: {0}")]
    Storage(String),
    #[error("the region's log: {0}")]
    Log(String),
    #[error("the usage report was not durable within {0:?}; its outcome is unknown (retry with the same idempotency key)")]
    NotDurable(Duration),
    #[error("usage reports are not reaching the region's log; try another node")]
    Backlog,
}

impl MeterError {
    /// The `tollgate-error-code` a check answers with.
    pub fn code(&self) -> &'static str {
        match self {
            MeterError::Starting | MeterError::Stopping => "METER_NOT_READY",
            MeterError::Fenced => "METER_FENCED",
            MeterError::Storage(_) => "STATE_UNREADABLE",
            MeterError::Log(_) | MeterError::NotDurable(_) => "USAGE_UNAVAILABLE",
            MeterError::Backlog => "USAGE_BACKLOG",
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            MeterError::Starting => "starting",
            MeterError::Stopping => "stopping",
            MeterError::Fenced => "fenced",
            MeterError::Storage(_) => "storage",
            MeterError::Log(_) => "log",
            MeterError::NotDurable(_) => "not_durable",
            MeterError::Backlog => "backlog",
        }
    }

    /// Counts this error in [`METER_ERRORS`] and hands it on.
    fn counted(self) -> Self {
        metrics::counter!(METER_ERRORS, "kind" => self.kind()).increment(1);
        self
    }
}

fn storage(error: impl std::fmt::Display) -> MeterError {
    MeterError::Storage(error.to_string()).counted()
}

/// The answer a consumption (or refusal) waits for: how the log decided
/// it. An entry without a key is always counted.
type Waiter = oneshot::Sender<Result<KeyVerdict, MeterError>>;

/// A consumption waiting for a report.
struct Pending {
    entry: UsageEntry,
    waiter: Waiter,
}

/// A report sent and not known taken: retried as is (same incarnation and
/// sequence) until the log answers, so its outcome is never guessed.
struct Inflight {
    batch: u64,
    entries: Vec<UsageEntry>,
    /// Each waiter with the place of its entry among the keyed ones (none:
    /// it has no key, and may share its entry with others).
    waiters: Vec<(Option<usize>, Waiter)>,
}

/// Where the meter is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No incarnation yet (or fenced): `MeterStart` is next.
    Starting,
    /// Started under this incarnation; handing back the chunks a previous
    /// life left before drawing any.
    Reclaiming(u64),
    Ready(u64),
    Stopping,
}

struct State {
    phase: Phase,
    /// Units this node may still take per hard-capped counter (its chunk
    /// in the log, less what it took since).
    chunks: HashMap<Counter, (u64, Instant)>,
    pending: Vec<Pending>,
    inflight: Option<Inflight>,
    /// Units taken and not yet seen applied on this node.
    unreported: HashMap<Counter, u64>,
    /// Reports committed and not yet applied here: (log index, entries).
    unapplied: VecDeque<(u64, Vec<UsageEntry>)>,
    recent_keys: HashMap<String, KeyVerdict>,
    recent_order: VecDeque<String>,
    /// The last report sequence used in this incarnation.
    batch: u64,
    /// Counters whose last wait for a slice came back empty, and when.
    starved: HashMap<Counter, Instant>,
}

/// A node's metering, for its status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MeterStats {
    /// Units consumed on this node and not yet seen applied.
    pub unreported_units: u64,
    /// Consumptions waiting for a report (in flight included).
    pub pending_entries: u64,
    /// Counters this node holds a chunk of, and the units left in them.
    pub chunks: u64,
    pub chunk_units: u64,
    /// Usage reports this node has sent in this incarnation.
    pub batches: u64,
    /// The meter's incarnation in the region's log (0: not started).
    pub incarnation: u64,
    /// Whether consuming checks are metered (started, reclaimed).
    pub ready: bool,
}

/// Failures a test switches on at the meter's storage boundary (every
/// read of the applied state, every write to the region's log), to prove
/// that an error there is answered UNAVAILABLE and loses or doubles
/// nothing. Off unless a test sets them (`RegionNode::meter_faults`).
#[derive(Debug, Default)]
pub struct MeterFaults {
    pub fail_reads: AtomicBool,
    pub fail_writes: AtomicBool,
}

/// A region node's meter.
pub struct Meter {
    node: Arc<Node<RegionLogic>>,
    view: StateView,
    faults: Arc<MeterFaults>,
    config: MeterConfig,
    clock: Clock,
    state: Mutex<State>,
    /// Rings the reporter when a consumption arrives.
    wake: Notify,
    /// One chunk draw at a time.
    drawing: tokio::sync::Mutex<()>,
}

/// What [`Meter::take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    Taken,
    /// Not enough left in this region under the cap.
    Exhausted,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Meter {
    /// A meter that starts (a new incarnation in the log) when [`Meter::run`]
    /// runs; until then consuming checks answer UNAVAILABLE.
    pub fn new(node: Arc<Node<RegionLogic>>, config: MeterConfig, clock: Clock) -> Meter {
        let view = node.view();
        Meter {
            node,
            view,
            config,
            clock,
            state: Mutex::new(State {
                phase: Phase::Starting,
                chunks: HashMap::new(),
                pending: Vec::new(),
                inflight: None,
                unreported: HashMap::new(),
                unapplied: VecDeque::new(),
                recent_keys: HashMap::new(),
                recent_order: VecDeque::new(),
                batch: 0,
                starved: HashMap::new(),
            }),
            wake: Notify::new(),
            drawing: tokio::sync::Mutex::new(()),
            faults: Arc::default(),
        }
    }

    /// The switches of [`MeterFaults`].
    pub fn faults(&self) -> Arc<MeterFaults> {
        self.faults.clone()
    }

    /// The applied state, for a read.
    fn state_view(&self) -> Result<&StateView, MeterError> {
        if self.faults.fail_reads.load(Ordering::Relaxed) {
            return Err(storage("injected read failure"));
        }
        Ok(&self.view)
    }

    /// Proposes `command` to the region's log.
    async fn log_write(
        &self,
        command: RegionCommand,
    ) -> Result<WriteOutcome<RegionResponse>, String> {
        if self.faults.fail_writes.load(Ordering::Relaxed) {
            return Err("injected write failure".into());
        }
        self.node.write(command).await.map_err(|e| e.to_string())
    }

    pub fn stats(&self) -> MeterStats {
        let state = lock(&self.state);
        let (incarnation, ready) = match state.phase {
            Phase::Ready(i) => (i, true),
            Phase::Reclaiming(i) => (i, false),
            Phase::Starting | Phase::Stopping => (0, false),
        };
        MeterStats {
            unreported_units: state.unreported.values().sum(),
            pending_entries: (state.pending.len()
                + state.inflight.as_ref().map_or(0, |i| i.waiters.len()))
                as u64,
            chunks: state.chunks.len() as u64,
            chunk_units: state.chunks.values().map(|(units, _)| units).sum(),
            batches: state.batch,
            incarnation,
            ready,
        }
    }

    /// The incarnation consumption is metered under, or why there is none.
    fn ready(&self) -> Result<u64, MeterError> {
        match lock(&self.state).phase {
            Phase::Ready(incarnation) => Ok(incarnation),
            Phase::Starting | Phase::Reclaiming(_) => Err(MeterError::Starting.counted()),
            Phase::Stopping => Err(MeterError::Stopping.counted()),
        }
    }

    /// Units consumed on `counter`, as far as this node knows: what the log
    /// applied plus what this node took and has not seen applied yet.
    pub fn consumed(&self, counter: &Counter) -> Result<u64, MeterError> {
        let applied = counter_state(self.state_view()?, counter)
            .map_err(storage)?
            .consumed;
        let unreported = lock(&self.state)
            .unreported
            .get(counter)
            .copied()
            .unwrap_or(0);
        Ok(applied.saturating_add(unreported))
    }

    /// How a consumption with `key` was decided (durable), here or in the
    /// region, if it was.
    pub fn verdict(&self, key: &str) -> Result<Option<KeyVerdict>, MeterError> {
        if let Some(verdict) = lock(&self.state).recent_keys.get(key) {
            return Ok(Some(*verdict));
        }
        usage::idempotency_key_verdict(self.state_view()?, key, self.clock.now()).map_err(storage)
    }

    /// Takes `units` of a hard-capped `counter` whose cap is `limit`,
    /// drawing a chunk through the log when this node's is short.
    pub async fn take(
        &self,
        counter: &Counter,
        limit: u64,
        units: u64,
    ) -> Result<Take, MeterError> {
        self.ready()?;
        if self.try_take(counter, units) {
            return Ok(Take::Taken);
        }
        let _drawing = self.drawing.lock().await;
        if self.try_take(counter, units) {
            return Ok(Take::Taken);
        }
        // Small caps are drawn in small pieces, so every node gets some.
        let want = units.max((limit / 16).clamp(1, self.config.chunk_units_max));
        let deadline = Instant::now() + self.config.slice_wait;
        loop {
            if Instant::now() >= deadline {
                return Ok(Take::Exhausted);
            }
            let slice_before = self.slice(counter)?;
            self.draw(counter, limit, want).await?;
            if self.try_take(counter, units) {
                return Ok(Take::Taken);
            }
            // The region's slice is short: the leader's quota agent leases
            // more from the origin; wait for it, within bounds, unless the
            // slice already covers the cap or a wait just came back empty.
            let starved = lock(&self.state)
                .starved
                .get(counter)
                .is_some_and(|at| at.elapsed() < STARVED_FOR);
            if starved || slice_before >= limit {
                return Ok(Take::Exhausted);
            }
            let grew = loop {
                if self.slice(counter)? > slice_before {
                    break true;
                }
                if Instant::now() >= deadline {
                    break false;
                }
                tokio::time::sleep(SLICE_POLL).await;
            };
            if !grew {
                lock(&self.state)
                    .starved
                    .insert(counter.clone(), Instant::now());
                return Ok(Take::Exhausted);
            }
        }
    }

    /// The region's slice of `counter`, as this node applied it.
    fn slice(&self, counter: &Counter) -> Result<u64, MeterError> {
        let c = counter_state(self.state_view()?, counter).map_err(storage)?;
        Ok(c.slice.saturating_sub(c.released))
    }

    async fn draw(&self, counter: &Counter, limit: u64, want: u64) -> Result<(), MeterError> {
        let incarnation = self.ready()?;
        let outcome = self
            .log_write(RegionCommand::DrawChunk {
                node: self.node.id(),
                incarnation,
                counter: counter.clone(),
                limit,
                want,
                at: self.clock.now(),
            })
            .await
            .map_err(|e| MeterError::Log(format!("drawing a usage chunk failed: {e}")).counted())?;
        match outcome.response {
            RegionResponse::Drawn(drawn) => {
                let mut state = lock(&self.state);
                // A fence between the write and here voids the chunk.
                if state.phase == Phase::Ready(incarnation) {
                    let entry = state
                        .chunks
                        .entry(counter.clone())
                        .or_insert((0, Instant::now()));
                    entry.0 += drawn.granted;
                }
                Ok(())
            }
            RegionResponse::Fenced { .. } => {
                self.fenced(incarnation);
                Err(MeterError::Fenced.counted())
            }
            other => Err(
                MeterError::Log(format!("unexpected answer to a chunk draw: {other:?}")).counted(),
            ),
        }
    }

    fn try_take(&self, counter: &Counter, units: u64) -> bool {
        let mut state = lock(&self.state);
        match state.chunks.get_mut(counter) {
            Some((left, used_at)) if *left >= units => {
                *left -= units;
                *used_at = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Meters a consumption the engine allowed and answers once it is
    /// durable in the region's log (or why it is not). `from_chunk`: its
    /// units were taken from this node's chunk with [`Meter::take`].
    /// A keyed one may find its key refused first (nothing counted).
    pub async fn consume(
        &self,
        counter: Counter,
        units: u64,
        key: Option<String>,
        from_chunk: bool,
    ) -> Result<KeyVerdict, MeterError> {
        self.submit(UsageEntry {
            counter,
            units,
            idempotency_key: key,
            from_chunk,
            refused: None,
        })
        .await
    }

    /// Records that a check consuming under `key` was denied for `reason`,
    /// and answers once that is durable: [`KeyVerdict::Refused`], or
    /// [`KeyVerdict::Counted`] when a consumption under the key (an
    /// earlier attempt, perhaps on another node) was counted first. Until
    /// the log decides, the key's outcome is unknown: a denial answered
    /// before could be contradicted by that attempt's report.
    pub async fn refuse(
        &self,
        counter: Counter,
        key: String,
        reason: Reason,
    ) -> Result<KeyVerdict, MeterError> {
        self.submit(UsageEntry {
            counter,
            units: 0,
            idempotency_key: Some(key),
            from_chunk: false,
            refused: Some(reason),
        })
        .await
    }

    async fn submit(&self, entry: UsageEntry) -> Result<KeyVerdict, MeterError> {
        let (counter, units, from_chunk) = (entry.counter.clone(), entry.units, entry.from_chunk);
        let (waiter, answer) = oneshot::channel();
        {
            let mut state = lock(&self.state);
            let refused = match state.phase {
                Phase::Stopping => Some(MeterError::Stopping),
                Phase::Starting | Phase::Reclaiming(_) => Some(MeterError::Starting),
                Phase::Ready(_) if state.pending.len() >= PENDING_MAX => Some(MeterError::Backlog),
                Phase::Ready(_) => None,
            };
            if let Some(error) = refused {
                // Never reported: the units go back where they came from.
                if from_chunk {
                    if let Some((left, _)) = state.chunks.get_mut(&counter) {
                        *left += units;
                    }
                }
                return Err(error.counted());
            }
            if units > 0 {
                *state.unreported.entry(counter).or_default() += units;
            }
            state.pending.push(Pending { entry, waiter });
        }
        self.wake.notify_one();
        match tokio::time::timeout(self.config.durable_wait, answer).await {
            Ok(Ok(result)) => result,
            // The reporter dropped the waiter: it stopped.
            Ok(Err(_)) => Err(MeterError::Stopping.counted()),
            Err(_) => Err(MeterError::NotDurable(self.config.durable_wait).counted()),
        }
    }

    /// Whether reports are so far behind (the log unreachable for long)
    /// that new consumption is refused rather than queued without bound:
    /// asked before a chunk is drawn for it ([`Meter::consume`] refuses
    /// such a consumption itself too).
    pub fn backed_up(&self) -> bool {
        lock(&self.state).pending.len() >= PENDING_MAX
    }

    /// Sends what is pending as one report, or retries the one in flight.
    /// Returns whether more is pending.
    async fn report(&self) -> Result<bool, MeterError> {
        let (incarnation, batch, entries) = {
            let mut state = lock(&self.state);
            let Phase::Ready(incarnation) = state.phase else {
                return Ok(false);
            };
            if state.inflight.is_none() {
                if state.pending.is_empty() {
                    return Ok(false);
                }
                let (entries, waiters) = gather(&mut state.pending);
                state.batch += 1;
                state.inflight = Some(Inflight {
                    batch: state.batch,
                    entries,
                    waiters,
                });
            }
            let inflight = state.inflight.as_ref().expect("set above");
            (incarnation, inflight.batch, inflight.entries.clone())
        };
        let command = RegionCommand::RecordUsage {
            node: self.node.id(),
            incarnation,
            batch,
            at: self.clock.now(),
            entries,
        };
        // An error here leaves the outcome unknown: the report stays in
        // flight and goes again, as is, at the next tick.
        let outcome = self.log_write(command).await.map_err(|e| {
            MeterError::Log(format!("reporting usage batch {batch} failed: {e}")).counted()
        })?;
        let mut state = lock(&self.state);
        let Some(inflight) = state.inflight.take() else {
            return Ok(!state.pending.is_empty());
        };
        match outcome.response {
            RegionResponse::Recorded(recorded) => {
                metrics::counter!("tollgate_meter_reports_total").increment(1);
                // How the log decided each keyed entry, in order. A leader
                // that predates refusals says nothing of keys: its
                // consumptions counted as before; a refusal's outcome is
                // unknown.
                let keyed = inflight
                    .entries
                    .iter()
                    .filter(|e| e.idempotency_key.is_some());
                let verdicts: Vec<Option<KeyVerdict>> =
                    if recorded.keys.len() == keyed.clone().count() {
                        recorded.keys.iter().map(|o| Some(o.verdict())).collect()
                    } else {
                        keyed
                            .clone()
                            .map(|e| e.refused.is_none().then_some(KeyVerdict::Counted))
                            .collect()
                    };
                for (entry, verdict) in keyed.zip(&verdicts) {
                    if let (Some(key), Some(verdict)) = (&entry.idempotency_key, verdict) {
                        remember(&mut state, key, *verdict);
                    }
                }
                if state.unapplied.len() >= UNAPPLIED_MAX {
                    // This node applies far behind its region: stop counting
                    // the oldest report as unreported (its checks read data
                    // that old anyway) rather than remember without bound.
                    if let Some((_, entries)) = state.unapplied.pop_front() {
                        for entry in entries {
                            forget_unreported(&mut state, &entry.counter, entry.units);
                        }
                    }
                }
                state
                    .unapplied
                    .push_back((outcome.log_index, inflight.entries));
                for (keyed, waiter) in inflight.waiters {
                    let answer = match keyed {
                        None => Ok(KeyVerdict::Counted),
                        Some(i) => verdicts.get(i).copied().flatten().ok_or_else(|| {
                            MeterError::Log(
                                "the region's leader did not say how it decided this key \
                                 (it predates refusals); retry with the same key"
                                    .into(),
                            )
                            .counted()
                        }),
                    };
                    // A check that gave up waiting is gone; its usage counts.
                    let _gone = waiter.send(answer);
                }
                return Ok(!state.pending.is_empty());
            }
            RegionResponse::Fenced { .. } => {
                drop(state);
                self.fail(inflight, MeterError::Fenced.counted());
                self.fenced(incarnation);
                return Err(MeterError::Fenced);
            }
            other => {
                // Nothing was written: the consumptions were not counted.
                drop(state);
                self.fail(
                    inflight,
                    MeterError::Log(format!("the log refused a usage report: {other:?}")).counted(),
                );
            }
        }
        Ok(!lock(&self.state).pending.is_empty())
    }

    /// Answers every consumption of a report that was not written with
    /// `error`, and gives their chunk units back.
    fn fail(&self, inflight: Inflight, error: MeterError) {
        let mut state = lock(&self.state);
        for entry in &inflight.entries {
            forget_unreported(&mut state, &entry.counter, entry.units);
            if entry.from_chunk {
                if let Some((left, _)) = state.chunks.get_mut(&entry.counter) {
                    *left += entry.units;
                }
            }
        }
        for (_, waiter) in inflight.waiters {
            let _gone = waiter.send(Err(error.clone()));
        }
    }

    /// The log says incarnation `incarnation` is over: every consumption
    /// waiting is refused, the chunks are void (the region hands them back),
    /// and the meter starts again.
    fn fenced(&self, incarnation: u64) {
        let mut state = lock(&self.state);
        if !matches!(state.phase, Phase::Ready(i) | Phase::Reclaiming(i) if i == incarnation) {
            return;
        }
        tracing::warn!(
            incarnation,
            "This node's metering was fenced by the region; starting it again."
        );
        state.phase = Phase::Starting;
        state.chunks.clear();
        let pending = std::mem::take(&mut state.pending);
        let inflight = state.inflight.take();
        for p in pending {
            forget_unreported(&mut state, &p.entry.counter, p.entry.units);
            let _gone = p.waiter.send(Err(MeterError::Fenced));
        }
        drop(state);
        if let Some(inflight) = inflight {
            self.fail(inflight, MeterError::Fenced);
        }
    }

    /// Reports this node has applied stop counting as unreported.
    fn settle_applied(&self) {
        let applied = self
            .node
            .metrics()
            .last_applied
            .map_or(0, |log_id| log_id.index);
        let mut state = lock(&self.state);
        while state
            .unapplied
            .front()
            .is_some_and(|(index, _)| *index <= applied)
        {
            let (_, entries) = state.unapplied.pop_front().expect("checked above");
            for entry in entries {
                forget_unreported(&mut state, &entry.counter, entry.units);
            }
        }
    }

    /// Starts a new incarnation in the log, then hands back every chunk the
    /// log holds for this node (a previous life's: this one has drawn
    /// none yet).
    async fn start(&self) -> Result<(), MeterError> {
        let phase = lock(&self.state).phase;
        let incarnation = match phase {
            Phase::Ready(_) | Phase::Stopping => return Ok(()),
            Phase::Reclaiming(incarnation) => incarnation,
            Phase::Starting => {
                let outcome = self
                    .log_write(RegionCommand::MeterStart {
                        node: self.node.id(),
                        at: self.clock.now(),
                    })
                    .await
                    .map_err(|e| MeterError::Log(format!("starting the meter failed: {e}")))?;
                let RegionResponse::Meter(Some(MeterLease { incarnation, .. })) = outcome.response
                else {
                    return Err(MeterError::Log(format!(
                        "unexpected answer to a meter start: {:?}",
                        outcome.response
                    )));
                };
                self.applied_here(outcome.log_index).await?;
                let mut state = lock(&self.state);
                if state.phase != Phase::Starting {
                    return Ok(());
                }
                state.phase = Phase::Reclaiming(incarnation);
                state.batch = 0;
                incarnation
            }
        };
        let node = self.node.id();
        for (counter, units) in chunks_held(self.state_view()?, Some(node))?
            .into_iter()
            .map(|(counter, _, units)| (counter, units))
        {
            self.release(node, incarnation, counter, units).await?;
        }
        let mut state = lock(&self.state);
        if state.phase == Phase::Reclaiming(incarnation) {
            state.phase = Phase::Ready(incarnation);
            tracing::info!(incarnation, "Metering started.");
        }
        Ok(())
    }

    /// Waits until this node applied the log up to `index`.
    async fn applied_here(&self, index: u64) -> Result<(), MeterError> {
        self.node
            .wait_until(Duration::from_secs(10), "the meter's entry applied", |m| {
                m.last_applied.is_some_and(|l| l.index >= index)
            })
            .await
            .map(|_| ())
            .map_err(|e| MeterError::Log(e.to_string()))
    }

    /// Hands `units` of node `node`'s chunk of `counter` back under meter
    /// `incarnation`.
    async fn release(
        &self,
        node: u64,
        incarnation: u64,
        counter: Counter,
        units: u64,
    ) -> Result<(), MeterError> {
        let outcome = self
            .log_write(RegionCommand::ReleaseChunk {
                node,
                incarnation,
                counter,
                units,
                at: self.clock.now(),
            })
            .await
            .map_err(|e| MeterError::Log(format!("handing a usage chunk back failed: {e}")))?;
        match outcome.response {
            RegionResponse::Fenced { .. } => Err(MeterError::Fenced),
            _ => Ok(()),
        }
    }

    /// Hands back the chunks unused for `chunk_idle` (every chunk when
    /// `all`, at shutdown) under meter `incarnation`. One that fails stays
    /// reserved in the log until `reclaim_orphans`, this node's next start
    /// or a fence hands it back.
    async fn release_idle(&self, incarnation: u64, all: bool) {
        let idle: Vec<(Counter, u64)> = {
            let mut state = lock(&self.state);
            let cutoff = self.config.chunk_idle;
            let mut idle = Vec::new();
            state.chunks.retain(|counter, (units, used_at)| {
                let keep = !all && used_at.elapsed() < cutoff;
                if !keep && *units > 0 {
                    idle.push((counter.clone(), *units));
                }
                keep
            });
            idle
        };
        for (counter, units) in idle {
            if let Err(error) = self
                .release(self.node.id(), incarnation, counter.clone(), units)
                .await
            {
                metrics::counter!(METER_ERRORS, "kind" => "release").increment(1);
                tracing::warn!(%error, %counter, units, "Handing a usage chunk back failed; it stays reserved until it is found orphaned, this node starts again or the region fences it.");
            }
        }
    }

    /// Hands back what the log holds in this node's chunks that the node no
    /// longer counts on: a draw whose answer was lost (the leader changed
    /// under it) was still granted, and would stay reserved for as long as
    /// the node lives. A counter with a draw or a consumption on the way
    /// is left for the next look.
    async fn reclaim_orphans(&self) -> Result<(), MeterError> {
        let Ok(_drawing) = self.drawing.try_lock() else {
            return Ok(());
        };
        let Phase::Ready(incarnation) = lock(&self.state).phase else {
            return Ok(());
        };
        let node = self.node.id();
        let held = chunks_held(self.state_view()?, Some(node))?;
        let orphans: Vec<(Counter, u64)> = {
            let state = lock(&self.state);
            let busy = |counter: &Counter| {
                let uses = |e: &UsageEntry| e.from_chunk && &e.counter == counter;
                state.pending.iter().any(|p| uses(&p.entry))
                    || state
                        .inflight
                        .as_ref()
                        .is_some_and(|i| i.entries.iter().any(uses))
                    || state.unapplied.iter().any(|(_, es)| es.iter().any(uses))
            };
            held.into_iter()
                .filter(|(counter, _, _)| !state.chunks.contains_key(counter) && !busy(counter))
                .map(|(counter, _, units)| (counter, units))
                .collect()
        };
        for (counter, units) in orphans {
            tracing::info!(%counter, units, "Handing back chunk units this node no longer counts on (a draw whose answer was lost).");
            metrics::counter!("tollgate_meter_orphan_units_total").increment(units);
            self.release(node, incarnation, counter, units).await?;
        }
        Ok(())
    }

    /// On the leader: fences the meters of nodes that hold chunks and have
    /// been silent for the configured `lease`, and hands their
    /// chunks back to the pool.
    async fn fence_silent(&self) -> Result<(), MeterError> {
        let me = self.node.id();
        if self.node.metrics().current_leader != Some(me) {
            return Ok(());
        }
        let at = self.clock.now();
        let mut holders: HashMap<u64, Vec<(Counter, u64)>> = HashMap::new();
        for (counter, node, units) in chunks_held(self.state_view()?, None)? {
            if node != me {
                holders.entry(node).or_default().push((counter, units));
            }
        }
        let silent_seconds = self.config.lease.as_secs().max(1) as i64;
        for (node, chunks) in holders {
            let lease = usage::meter_lease(self.state_view()?, node).map_err(storage)?;
            if at.0 - lease.seen_at.0 < silent_seconds {
                continue;
            }
            let outcome = self
                .log_write(RegionCommand::FenceMeter {
                    node,
                    incarnation: lease.incarnation,
                    at,
                    silent_seconds,
                })
                .await
                .map_err(|e| MeterError::Log(format!("fencing node {node}'s meter failed: {e}")))?;
            let RegionResponse::Meter(Some(fenced)) = outcome.response else {
                continue;
            };
            let units: u64 = chunks.iter().map(|(_, u)| u).sum();
            tracing::warn!(
                node,
                chunks = chunks.len(),
                units,
                silent_since = lease.seen_at.0,
                "A node holding usage chunks went silent; fenced its meter and handing its chunks back."
            );
            metrics::counter!("tollgate_meter_fenced_total").increment(1);
            for (counter, units) in chunks {
                self.release(node, fenced.incarnation, counter, units)
                    .await?;
            }
        }
        Ok(())
    }

    /// Starts, then reports whenever consumption waits (one report in
    /// flight at a time, the next gathering what arrives meanwhile),
    /// retries failed reports every `flush_interval`, hands idle chunks
    /// back, and on the leader fences silent nodes; until `stop`, then
    /// reports what is left and hands every chunk back.
    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.config.flush_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_sweep = Instant::now();
        let started_trying = Instant::now();
        let mut failing_since: Option<Instant> = None;
        let mut last_warned: Option<Instant> = None;
        let mut more = false;
        loop {
            if !more {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = self.wake.notified() => {}
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            if let Err(error) = self.start().await {
                // A region electing its first leader is not news; a meter
                // that cannot start for long is.
                if started_trying.elapsed() < START_QUIET {
                    tracing::debug!(%error, "Metering could not start yet; retrying.");
                } else {
                    tracing::warn!(%error, "Metering could not start yet; retrying.");
                }
                metrics::counter!(METER_ERRORS, "kind" => "start").increment(1);
                more = false;
                continue;
            }
            more = match self.report().await {
                Ok(more) => {
                    failing_since = None;
                    more
                }
                Err(error) => {
                    // Retried every tick: one WARN when it starts failing,
                    // then one every WARN_EVERY while it goes on.
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if last_warned.is_none_or(|at: Instant| at.elapsed() >= WARN_EVERY) {
                        last_warned = Some(Instant::now());
                        tracing::warn!(%error, failing_for = ?since.elapsed(), "Usage could not be reported yet; retrying.");
                    }
                    false
                }
            };
            self.settle_applied();
            if !more {
                let phase = lock(&self.state).phase;
                if let Phase::Ready(incarnation) = phase {
                    self.release_idle(incarnation, false).await;
                }
                if last_sweep.elapsed() >= FENCE_SWEEP_EVERY.min(self.config.lease / 2) {
                    last_sweep = Instant::now();
                    lock(&self.state)
                        .starved
                        .retain(|_, at| at.elapsed() < STARVED_FOR);
                    if let Err(error) = self.reclaim_orphans().await {
                        tracing::warn!(%error, "Looking for lost chunk units failed; retrying.");
                    }
                    if let Err(error) = self.fence_silent().await {
                        tracing::warn!(%error, "Looking for silent metering nodes failed; retrying.");
                    }
                }
            }
        }
        self.stop().await;
    }

    /// At shutdown (after the check port drained): reports what is left,
    /// each report retried while it fails for a few flush intervals, then
    /// hands every chunk back.
    async fn stop(&self) {
        for _ in 0..50 {
            match self.report().await {
                Ok(false) => break,
                Ok(true) => continue,
                Err(MeterError::Fenced) => break,
                Err(error) => {
                    tracing::warn!(%error, "Usage could not be reported at shutdown; retrying.");
                    tokio::time::sleep(self.config.flush_interval).await;
                }
            }
        }
        let (left, phase) = {
            let mut state = lock(&self.state);
            let left = state.pending.len() + state.inflight.as_ref().map_or(0, |i| i.waiters.len());
            (left, std::mem::replace(&mut state.phase, Phase::Stopping))
        };
        if let Phase::Ready(incarnation) = phase {
            self.release_idle(incarnation, true).await;
        }
        if left > 0 {
            tracing::error!(
                consumptions = left,
                "Usage could not be reported at shutdown; those checks were not answered ALLOW."
            );
        }
    }
}

/// Takes as many pending consumptions as one report holds: keyless ones
/// summed per counter and chunk (a report carries one line for a thousand
/// plain checks), keyed ones a line each.
fn gather(pending: &mut Vec<Pending>) -> (Vec<UsageEntry>, Vec<(Option<usize>, Waiter)>) {
    let mut entries: Vec<UsageEntry> = Vec::new();
    let mut sums: HashMap<(Counter, bool), usize> = HashMap::new();
    let mut places = Vec::new();
    let mut keyed = 0;
    for p in pending.iter() {
        let line = match &p.entry.idempotency_key {
            None => sums
                .get(&(p.entry.counter.clone(), p.entry.from_chunk))
                .copied(),
            Some(_) => None,
        };
        if line.is_none() && entries.len() >= USAGE_ENTRIES_PER_COMMAND_MAX {
            break;
        }
        match line {
            Some(i) => {
                entries[i].units += p.entry.units;
                places.push(None);
            }
            None if p.entry.idempotency_key.is_none() => {
                sums.insert((p.entry.counter.clone(), p.entry.from_chunk), entries.len());
                entries.push(p.entry.clone());
                places.push(None);
            }
            None => {
                entries.push(p.entry.clone());
                places.push(Some(keyed));
                keyed += 1;
            }
        }
    }
    let taken = places.len();
    let waiters = places
        .into_iter()
        .zip(pending.drain(..taken))
        .map(|(place, p)| (place, p.waiter))
        .collect();
    (entries, waiters)
}

fn remember(state: &mut State, key: &str, verdict: KeyVerdict) {
    if state.recent_keys.insert(key.to_owned(), verdict).is_none() {
        state.recent_order.push_back(key.to_owned());
        if state.recent_order.len() > RECENT_KEYS_MAX {
            if let Some(old) = state.recent_order.pop_front() {
                state.recent_keys.remove(&old);
            }
        }
    }
}

fn forget_unreported(state: &mut State, counter: &Counter, units: u64) {
    if let Some(left) = state.unreported.get_mut(counter) {
        *left = left.saturating_sub(units);
        if *left == 0 {
            state.unreported.remove(counter);
        }
    }
}

/// The chunks the applied state holds (of `node` only, when given): the
/// counter, the holder and its units.
fn chunks_held(
    view: &StateView,
    node: Option<u64>,
) -> Result<Vec<(Counter, u64, u64)>, MeterError> {
    let mut held = Vec::new();
    for (key, value) in scan_all(view, CHUNK_PREFIX).map_err(storage)? {
        let Some((counter, holder)) = parse_chunk_key(&key) else {
            return Err(storage(format!(
                "a chunk key that does not parse: {}",
                String::from_utf8_lossy(&key)
            )));
        };
        if node.is_some_and(|n| n != holder) {
            continue;
        }
        let units: u64 = serde_json::from_slice(&value).map_err(|e| {
            storage(format!(
                "the chunk under {} does not decode: {e}",
                String::from_utf8_lossy(&key)
            ))
        })?;
        if units > 0 {
            held.push((counter, holder, units));
        }
    }
    Ok(held)
}
