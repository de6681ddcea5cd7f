//! Usage metering on a region node: checks with `consume` are answered from
//! memory, hard caps out of chunks drawn through the region's log, and what
//! was consumed is reported to the log in batches (one Raft write per flush,
//! not per check).
//!
//! Guarantees:
//! - A hard cap holds across the region's nodes: a node consumes only out
//!   of its chunk, and chunks come out of what the cap leaves.
//! - A consumption is counted once: a report carries the node's batch
//!   sequence (a retried batch is skipped) and the checks' idempotency keys.
//! - A node that crashes loses the consumption it had not flushed yet (at
//!   most one flush interval's worth); its chunk stays reserved until it
//!   releases it, so caps still hold.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tollgate_raft::{Node, StateView};
use tollgate_region::usage::{counter_state, USAGE_ENTRIES_PER_COMMAND_MAX};
use tollgate_region::{Counter, RegionCommand, RegionLogic, RegionResponse, UsageEntry};
use tollgate_server::clock::now;

/// Keys of recently consumed checks this node remembers, to answer a retry
/// on the same node before its report is applied.
const RECENT_KEYS_MAX: usize = 100_000;
/// After a wait for a slice came back empty, checks are denied at once
/// for this long instead of waiting again.
const STARVED_FOR: Duration = Duration::from_secs(2);
/// Most keyed consumptions waiting for a report before new consumption
/// is refused (the region's log has been unreachable for a while).
const PENDING_KEYED_MAX: usize = 100_000;
/// Most counters with unreported keyless consumption, likewise.
const PENDING_COUNTERS_MAX: usize = 100_000;
/// How often a check waiting for a slice looks again.
const SLICE_POLL: Duration = Duration::from_millis(10);

/// How a node meters.
#[derive(Debug, Clone, Copy)]
pub struct MeterConfig {
    /// How often consumption is reported to the region's log.
    pub flush_interval: Duration,
    /// Most units a node draws at once for a hard-capped counter (it draws
    /// less for small caps, so several nodes can share them).
    pub chunk_units_max: u64,
    /// A chunk unused this long is handed back.
    pub chunk_idle: Duration,
    /// How long a check waits for the region to lease more of a cap from
    /// the origin before it is denied.
    pub slice_wait: Duration,
}

impl Default for MeterConfig {
    fn default() -> Self {
        MeterConfig {
            flush_interval: Duration::from_millis(20),
            chunk_units_max: 1_000,
            chunk_idle: Duration::from_secs(2),
            slice_wait: Duration::from_secs(1),
        }
    }
}

#[derive(Default)]
struct State {
    /// Units this node may still take per hard-capped counter (its chunk
    /// in the log, less what it took and has not reported).
    chunks: HashMap<Counter, (u64, Instant)>,
    /// Consumptions with an idempotency key not yet reported (each key must
    /// reach the log).
    pending: Vec<UsageEntry>,
    /// Consumptions without a key not yet reported, summed per counter and
    /// chunk: a report carries one line for a thousand plain checks.
    sums: HashMap<(Counter, bool), u64>,
    /// Units taken but not yet visible in the applied counters.
    unreported: HashMap<Counter, u64>,
    recent_keys: HashSet<String>,
    recent_order: VecDeque<String>,
    /// The last report batch sequence used.
    batch: u64,
    /// Counters whose last wait for a slice came back empty, and when.
    starved: HashMap<Counter, Instant>,
    /// A report sent but not known applied: retried as is (same sequence)
    /// before anything newer.
    inflight: Option<(u64, Vec<UsageEntry>)>,
}

/// A node's metering, for its status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MeterStats {
    /// Units consumed on this node and not yet seen applied.
    pub unreported_units: u64,
    /// Consumptions waiting for the next report.
    pub pending_entries: u64,
    /// Counters this node holds a chunk of, and the units left in them.
    pub chunks: u64,
    pub chunk_units: u64,
    /// Usage reports this node has sent.
    pub batches: u64,
}

/// A region node's meter.
pub struct Meter {
    node: Arc<Node<RegionLogic>>,
    view: StateView,
    config: MeterConfig,
    state: Mutex<State>,
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
    pub fn new(node: Arc<Node<RegionLogic>>, config: MeterConfig) -> Meter {
        let view = node.view();
        let batch = tollgate_region::usage::last_batch(&view, node.id()).unwrap_or(0);
        Meter {
            node,
            view,
            config,
            state: Mutex::new(State {
                batch,
                ..State::default()
            }),
            drawing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn stats(&self) -> MeterStats {
        let state = lock(&self.state);
        MeterStats {
            unreported_units: state.unreported.values().sum(),
            pending_entries: (state.pending.len() + state.sums.len()) as u64,
            chunks: state.chunks.len() as u64,
            chunk_units: state.chunks.values().map(|(units, _)| units).sum(),
            batches: state.batch,
        }
    }

    /// Units consumed on `counter`, as far as this node knows: what the log
    /// applied plus what this node took and has not seen applied yet.
    pub fn consumed(&self, counter: &Counter) -> u64 {
        let applied = counter_state(&self.view, counter)
            .map(|c| c.consumed)
            .unwrap_or(0);
        applied
            + lock(&self.state)
                .unreported
                .get(counter)
                .copied()
                .unwrap_or(0)
    }

    /// Whether a consumption with `key` was already counted here or in the
    /// region.
    pub fn seen(&self, key: &str) -> bool {
        lock(&self.state).recent_keys.contains(key)
            || tollgate_region::usage::idempotency_key_seen(&self.view, key, now()).unwrap_or(false)
    }

    /// Takes `units` of a hard-capped `counter` whose cap is `limit`,
    /// drawing a chunk through the log when this node's is short.
    pub async fn take(&self, counter: &Counter, limit: u64, units: u64) -> Result<Take, String> {
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
            let slice_before = self.slice(counter);
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
                if self.slice(counter) > slice_before {
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
    fn slice(&self, counter: &Counter) -> u64 {
        counter_state(&self.view, counter)
            .map(|c| c.slice.saturating_sub(c.released))
            .unwrap_or(0)
    }

    async fn draw(&self, counter: &Counter, limit: u64, want: u64) -> Result<(), String> {
        let outcome = self
            .node
            .write(RegionCommand::DrawChunk {
                node: self.node.id(),
                counter: counter.clone(),
                limit,
                want,
            })
            .await
            .map_err(|e| format!("drawing a usage chunk failed: {e}"))?;
        let RegionResponse::Drawn(drawn) = outcome.response else {
            return Err(format!(
                "unexpected answer to a chunk draw: {:?}",
                outcome.response
            ));
        };
        let mut state = lock(&self.state);
        let entry = state
            .chunks
            .entry(counter.clone())
            .or_insert((0, Instant::now()));
        entry.0 += drawn.granted;
        Ok(())
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

    /// Whether reports are so far behind (the log unreachable for long)
    /// that new consumption is refused rather than queued without bound.
    pub fn backed_up(&self) -> bool {
        let state = lock(&self.state);
        state.pending.len() >= PENDING_KEYED_MAX || state.sums.len() >= PENDING_COUNTERS_MAX
    }

    /// Records a consumption to report at the next flush.
    pub fn record(&self, counter: Counter, units: u64, key: Option<String>, from_chunk: bool) {
        let mut state = lock(&self.state);
        if let Some(key) = &key {
            if state.recent_keys.insert(key.clone()) {
                state.recent_order.push_back(key.clone());
                if state.recent_order.len() > RECENT_KEYS_MAX {
                    if let Some(old) = state.recent_order.pop_front() {
                        state.recent_keys.remove(&old);
                    }
                }
            }
        }
        *state.unreported.entry(counter.clone()).or_default() += units;
        match key {
            Some(key) => state.pending.push(UsageEntry {
                counter,
                units,
                idempotency_key: Some(key),
                from_chunk,
            }),
            None => *state.sums.entry((counter, from_chunk)).or_default() += units,
        }
    }

    /// Reports what is pending. A report that fails is retried as is at
    /// the next flush (its sequence makes a retry of an applied report a
    /// no-op), so nothing is counted twice or dropped while the node runs.
    async fn flush(&self) -> Result<(), String> {
        let (batch, entries) = {
            let mut state = lock(&self.state);
            if state.inflight.is_none() {
                if state.pending.is_empty() && state.sums.is_empty() {
                    return Ok(());
                }
                let sums: Vec<(Counter, bool)> = state
                    .sums
                    .keys()
                    .take(USAGE_ENTRIES_PER_COMMAND_MAX)
                    .cloned()
                    .collect();
                let mut entries: Vec<UsageEntry> = sums
                    .into_iter()
                    .filter_map(|key| {
                        let units = state.sums.remove(&key)?;
                        Some(UsageEntry {
                            counter: key.0,
                            units,
                            idempotency_key: None,
                            from_chunk: key.1,
                        })
                    })
                    .collect();
                let room = USAGE_ENTRIES_PER_COMMAND_MAX - entries.len();
                let keyed = state.pending.len().min(room);
                entries.extend(state.pending.drain(..keyed));
                state.batch += 1;
                state.inflight = Some((state.batch, entries));
            }
            state.inflight.clone().expect("set above")
        };
        let command = RegionCommand::RecordUsage {
            node: self.node.id(),
            batch,
            at: now(),
            entries: entries.clone(),
        };
        let outcome = self
            .node
            .write(command)
            .await
            .map_err(|e| format!("reporting usage batch {batch} failed: {e}"))?;
        // Until this node has applied the report, keep counting the units
        // as unreported so `consumed` never dips.
        let _ = self
            .node
            .wait_until(Duration::from_secs(10), "usage report applied", |m| {
                m.last_applied.is_some_and(|l| l.index >= outcome.log_index)
            })
            .await;
        let mut state = lock(&self.state);
        state.inflight = None;
        for entry in &entries {
            if let Some(units) = state.unreported.get_mut(&entry.counter) {
                *units = units.saturating_sub(entry.units);
                if *units == 0 {
                    state.unreported.remove(&entry.counter);
                }
            }
        }
        Ok(())
    }

    /// Hands back chunks unused for `chunk_idle` (or all, at shutdown).
    async fn release_idle(&self, all: bool) {
        let idle: Vec<(Counter, u64)> = {
            let mut state = lock(&self.state);
            let cutoff = self.config.chunk_idle;
            let idle: Vec<Counter> = state
                .chunks
                .iter()
                .filter(|(_, (_, used_at))| all || used_at.elapsed() >= cutoff)
                .map(|(c, _)| c.clone())
                .collect();
            idle.into_iter()
                .filter_map(|counter| {
                    let (units, _) = state.chunks.remove(&counter)?;
                    Some((counter, units))
                })
                .filter(|(_, units)| *units > 0)
                .collect()
        };
        for (counter, units) in idle {
            let command = RegionCommand::ReleaseChunk {
                node: self.node.id(),
                counter,
                units,
            };
            if let Err(error) = self.node.write(command).await {
                tracing::warn!(%error, "Releasing a usage chunk failed; it stays reserved.");
            }
        }
    }

    /// Flushes every `flush_interval` until `stop`, then flushes and
    /// releases what is left.
    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut ticker = tokio::time::interval(self.config.flush_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            if let Err(error) = self.flush().await {
                tracing::warn!(%error, "Usage could not be reported yet; retrying.");
            }
            self.release_idle(false).await;
        }
        if let Err(error) = self.flush().await {
            tracing::error!(%error, "Usage could not be reported at shutdown.");
        }
        self.release_idle(true).await;
    }
}
