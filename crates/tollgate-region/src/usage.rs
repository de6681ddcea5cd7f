//! Usage counters and the chunks nodes consume from, as the region's log
//! applies them.
//!
//! A node answers a check with `consume` from memory: a hard-capped counter
//! is consumed only out of a *chunk* the node drew through the log
//! ([`DrawChunk`](crate::RegionCommand::DrawChunk)), so no node can spend
//! what another holds and the region never passes the cap it enforces. The
//! node reports what it consumed in batches
//! ([`RecordUsage`](crate::RegionCommand::RecordUsage)), which adds to the
//! counter, uses up the chunk, and counts a report carrying an idempotency
//! key already seen (in the last one to two UTC days) only once.
//!
//! An idempotency key is decided once, by whichever comes first in the log:
//! a report that consumes under it (the key is *counted*) or a *refusal*
//! (a check under that key was denied, [`UsageEntry::refused`]). A
//! consumption under a key already refused is not counted, and a refusal of
//! a key already counted writes nothing; [`Recorded::keys`] says which way
//! each key went, so a node answers every check by the log's verdict. This
//! is what keeps a bill exact when a check's first attempt timed out with
//! its report in flight and its retry, on another node that does not know
//! the key yet, would be denied: the retry waits for the log's verdict.
//!
//! A node's meter has a *lease* in the log ([`MeterLease`]): an incarnation,
//! bumped when the node's meter starts ([`meter_start`]) or when the leader
//! finds it silent for [`METER_LEASE_SECONDS`] while it holds chunks
//! ([`fence_meter`]). Draws, releases and reports carry the incarnation
//! they were made under; one from an older incarnation (a process that was
//! killed, whose last report was still in flight) is *fenced*: nothing is
//! written. So once a node's chunks are handed back, nothing its previous
//! life sent can use them, and its next life numbers reports from 1 again.

use serde::{Deserialize, Serialize};
use tollgate_engine::Reason;
use tollgate_model::UnixSeconds;
use tollgate_raft::logic::ReadError;
use tollgate_raft::{ReadState, Write};

/// Most entries in one usage report.
pub const USAGE_ENTRIES_PER_COMMAND_MAX: usize = 4096;
const DAY_SECONDS: i64 = 86_400;

/// One usage counter (an account's use of a feature in one period).
pub use tollgate_model::UsageCounter as Counter;

/// `region/usage/<account>/<feature>/<period>`: a [`CounterState`].
pub fn counter_key(counter: &Counter) -> Vec<u8> {
    format!("region/usage/{counter}").into_bytes()
}

/// The prefix of every [`counter_key`].
pub const COUNTER_PREFIX: &str = "region/usage/";

/// `region/chunk/<account>/<feature>/<period>/<node>`: the units node
/// `node` may still consume (a JSON integer).
pub fn chunk_key(counter: &Counter, node: u64) -> Vec<u8> {
    format!("region/chunk/{counter}/{node}").into_bytes()
}

/// A counter as the region's log has it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterState {
    /// Units consumed and reported.
    pub consumed: u64,
    /// Units held in nodes' chunks, not yet reported consumed.
    pub reserved: u64,
    /// Units the origin leased to this region, in all.
    #[serde(default)]
    pub slice: u64,
    /// Units of the slice this region handed back, in all.
    #[serde(default)]
    pub released: u64,
}

impl CounterState {
    /// Units nodes may still draw: what the region's slice and the cap
    /// leave after what is consumed and held.
    pub fn available(&self, limit: u64) -> u64 {
        let held = self.slice.saturating_sub(self.released).min(limit);
        held.saturating_sub(self.consumed.saturating_add(self.reserved))
    }
}

/// `region/quota-wanted/<counter>`: a [`Wanted`] for the leader's quota
/// agent to lease from the origin.
pub fn wanted_key(counter: &Counter) -> Vec<u8> {
    format!("{WANTED_PREFIX}{counter}").into_bytes()
}

/// The prefix of every [`wanted_key`].
pub const WANTED_PREFIX: &str = "region/quota-wanted/";

/// A counter the region needs more of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wanted {
    pub counter: Counter,
    /// The cap, as the node that asked read it.
    pub limit: u64,
    /// Units asked for and not granted.
    pub want: u64,
}

/// One line of a usage report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageEntry {
    pub counter: Counter,
    pub units: u64,
    /// A retried report with the same key is counted once.
    pub idempotency_key: Option<String>,
    /// The units came out of the reporting node's chunk (a hard cap).
    pub from_chunk: bool,
    /// Not a consumption: the check under `idempotency_key` was denied for
    /// this reason. Decides the key unless a consumption counted it first;
    /// `units` is 0 and nothing is counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<Reason>,
}

/// `region/meter/<node>`: a node's [`MeterLease`].
pub fn meter_key(node: u64) -> Vec<u8> {
    format!("{METER_PREFIX}{node}").into_bytes()
}

/// The prefix of every [`meter_key`].
pub const METER_PREFIX: &str = "region/meter/";

/// The prefix of every [`chunk_key`].
pub const CHUNK_PREFIX: &str = "region/chunk/";

/// The default for how long a node that holds chunks and has not drawn,
/// reported or released (by the proposers' clocks) is taken for gone: the
/// leader fences it and hands its chunks back. A live node hands an idle
/// chunk back within seconds, so only a dead or cut-off one is this quiet
/// with chunks held; a cut-off one cannot report anyway, and learns it was
/// fenced from its next write. The leader names the figure it applies in
/// its `FenceMeter` (apply reads no configuration).
pub const METER_LEASE_SECONDS: i64 = 60;

/// A node's meter as the log knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeterLease {
    /// Draws, releases and reports are accepted only under this number.
    pub incarnation: u64,
    /// The proposer's clock at the node's last draw, release or report.
    pub seen_at: UnixSeconds,
}

/// The lease of node `node`'s meter (incarnation 0 before its first start).
pub fn meter_lease(state: &dyn ReadState, node: u64) -> Result<MeterLease, ReadError> {
    read_json(state, &meter_key(node))
}

/// `Some(current)` when `incarnation` is not the node's current one.
pub fn fenced(
    state: &dyn ReadState,
    node: u64,
    incarnation: u64,
) -> Result<Option<u64>, ReadError> {
    let lease = meter_lease(state, node)?;
    Ok((lease.incarnation != incarnation).then_some(lease.incarnation))
}

/// Node `node`'s lease stamped as seen at `at`, when that moves it
/// forward (never back: proposers' clocks differ).
fn seen(
    state: &dyn ReadState,
    node: u64,
    at: UnixSeconds,
) -> Result<Option<MeterLease>, ReadError> {
    let lease = meter_lease(state, node)?;
    Ok((at > lease.seen_at).then_some(MeterLease {
        seen_at: at,
        ..lease
    }))
}

/// The write that stamps node `node`'s lease as seen at `at`, if any.
fn stamp(state: &dyn ReadState, node: u64, at: UnixSeconds) -> Result<Option<Write>, ReadError> {
    Ok(seen(state, node, at)?.map(|lease| put_json(meter_key(node), &lease)))
}

/// The writes that start `lease`'s incarnation: the lease, and report
/// numbers from 1 again.
fn new_incarnation(node: u64, lease: &MeterLease) -> Vec<Write> {
    vec![
        put_json(meter_key(node), lease),
        put_json(batch_key(node), &0u64),
    ]
}

/// Node `node`'s meter starts at `at`: a new incarnation (whatever its
/// previous life still had in flight is fenced from now on) and report
/// numbers from 1. Its chunks stay until it hands them back under the new
/// incarnation, once it has read them at or after this entry.
pub fn meter_start(
    state: &dyn ReadState,
    node: u64,
    at: UnixSeconds,
) -> Result<(Vec<Write>, MeterLease), ReadError> {
    let old = meter_lease(state, node)?;
    let lease = MeterLease {
        incarnation: old.incarnation + 1,
        seen_at: at.max(old.seen_at),
    };
    Ok((new_incarnation(node, &lease), lease))
}

/// The leader, at `at`, fences node `node`'s meter if it is still in
/// `incarnation` and silent for `silent_seconds`: `Some(lease)` with
/// the new incarnation, under which the leader then hands the node's chunks
/// back. `None` (nothing written) when the node was seen since, or started
/// again.
pub fn fence_meter(
    state: &dyn ReadState,
    node: u64,
    incarnation: u64,
    at: UnixSeconds,
    silent_seconds: i64,
) -> Result<(Vec<Write>, Option<MeterLease>), ReadError> {
    let old = meter_lease(state, node)?;
    if old.incarnation != incarnation || at.0 - old.seen_at.0 < silent_seconds.max(1) {
        return Ok((Vec::new(), None));
    }
    let lease = MeterLease {
        incarnation: old.incarnation + 1,
        seen_at: old.seen_at,
    };
    Ok((new_incarnation(node, &lease), Some(lease)))
}

/// The node and counter a `region/chunk/<account>/<feature>/<period>/<node>`
/// key names.
pub fn parse_chunk_key(key: &[u8]) -> Option<(Counter, u64)> {
    let text = std::str::from_utf8(key).ok()?.strip_prefix(CHUNK_PREFIX)?;
    let (counter, node) = text.rsplit_once('/')?;
    Some((parse_counter(counter)?, node.parse().ok()?))
}

/// The counter a `region/usage/<account>/<feature>/<period>` key names.
pub fn parse_counter_key(key: &[u8]) -> Option<Counter> {
    parse_counter(
        std::str::from_utf8(key)
            .ok()?
            .strip_prefix(COUNTER_PREFIX)?,
    )
}

fn parse_counter(text: &str) -> Option<Counter> {
    let mut parts = text.split('/');
    let (account, feature, period) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    Some(Counter {
        account: tollgate_model::AccountId::new(account).ok()?,
        feature: tollgate_model::FeatureId::new(feature).ok()?,
        period: period.parse().ok()?,
    })
}

fn day(at: UnixSeconds) -> i64 {
    at.0.div_euclid(DAY_SECONDS)
}

/// The oldest day whose idempotency keys are kept.
const KEYS_KEPT_FROM: &[u8] = b"region/usage-key-kept-from";

fn idempotency_key(day: i64, key: &str) -> Vec<u8> {
    format!("region/usage-key/{day:08}/{key}").into_bytes()
}

/// How the log decided an idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyVerdict {
    /// A consumption under it was counted.
    Counted,
    /// A check under it was denied first, for this reason.
    Refused(Reason),
}

/// What a decided key is stored as: a counted one as the time it was
/// counted (a JSON integer, as before refusals), a refused one as its
/// reason and time.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum StoredKey {
    Counted(i64),
    Refused { refused: Reason, at: i64 },
}

/// How a report with `key` was decided (today or yesterday, as of `at`),
/// if it was.
pub fn idempotency_key_verdict(
    state: &dyn ReadState,
    key: &str,
    at: UnixSeconds,
) -> Result<Option<KeyVerdict>, ReadError> {
    let today = day(at);
    for day in [today, today - 1] {
        let stored: Option<StoredKey> = read_json(state, &idempotency_key(day, key))?;
        match stored {
            Some(StoredKey::Counted(_)) => return Ok(Some(KeyVerdict::Counted)),
            Some(StoredKey::Refused { refused, .. }) => {
                return Ok(Some(KeyVerdict::Refused(refused)))
            }
            None => {}
        }
    }
    Ok(None)
}

/// Decides `key` by `entry` (a consumption, or a refusal when
/// `entry.refused`) unless the log decided it before, and says how it went
/// and whether this entry decided it.
fn decide_key(
    overlay: &mut Overlay<'_>,
    key: &str,
    entry: &UsageEntry,
    at: UnixSeconds,
) -> Result<(KeyOutcome, bool), ReadError> {
    Ok(match idempotency_key_verdict(overlay, key, at)? {
        Some(before) => (KeyOutcome::decided_before(before), false),
        None => {
            let (stored, outcome) = match entry.refused {
                Some(reason) => (
                    StoredKey::Refused {
                        refused: reason,
                        at: at.0,
                    },
                    KeyOutcome::Refused(reason),
                ),
                None => (StoredKey::Counted(at.0), KeyOutcome::Counted),
            };
            overlay.put(idempotency_key(day(at), key), &stored);
            (outcome, true)
        }
    })
}

fn read_json<T: serde::de::DeserializeOwned + Default>(
    state: &dyn ReadState,
    key: &[u8],
) -> Result<T, ReadError> {
    match state.get(key)? {
        None => Ok(T::default()),
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            ReadError(format!(
                "stored value under {} does not decode: {e}",
                String::from_utf8_lossy(key)
            ))
        }),
    }
}

fn put_json<T: Serialize>(key: Vec<u8>, value: &T) -> Write {
    Write::Put {
        key,
        value: serde_json::to_vec(value).expect("plain values serialise"),
    }
}

/// A counter's state.
pub fn counter_state(state: &dyn ReadState, counter: &Counter) -> Result<CounterState, ReadError> {
    read_json(state, &counter_key(counter))
}

/// The units node `node` may still consume from its chunk of `counter`.
pub fn chunk(state: &dyn ReadState, counter: &Counter, node: u64) -> Result<u64, ReadError> {
    read_json(state, &chunk_key(counter, node))
}

/// A region asks the origin for more once fewer than this many draws of
/// the current size are left in its slice.
pub const LOW_WATER_DRAWS: u64 = 4;

/// What [`draw_chunk`] granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drawn {
    /// Units added to the node's chunk (0: the cap is reached in this region).
    pub granted: u64,
    /// The node's chunk after the draw.
    pub chunk: u64,
}

/// Node `node` asks for up to `want` more units of `counter`, whose cap is
/// `limit` (as the node read it from the replicated entitlements).
pub fn draw_chunk(
    state: &dyn ReadState,
    node: u64,
    counter: &Counter,
    limit: u64,
    want: u64,
    at: UnixSeconds,
) -> Result<(Vec<Write>, Drawn), ReadError> {
    let mut counted = counter_state(state, counter)?;
    let held = chunk(state, counter, node)?;
    let available = counted.available(limit);
    let granted = want.min(available);
    let mut writes: Vec<Write> = stamp(state, node, at)?.into_iter().collect();
    // Running low (less than a few more draws left) and the region's slice
    // is short of the cap: the leader's quota agent leases more from the
    // origin, before the nodes run dry.
    let low = available - granted < want.saturating_mul(LOW_WATER_DRAWS);
    if low && counted.slice.saturating_sub(counted.released) < limit {
        let wanted = Wanted {
            counter: counter.clone(),
            limit,
            want: want.saturating_mul(LOW_WATER_DRAWS),
        };
        writes.push(put_json(wanted_key(counter), &wanted));
    }
    if granted > 0 {
        counted.reserved += granted;
        writes.push(put_json(counter_key(counter), &counted));
        writes.push(put_json(chunk_key(counter, node), &(held + granted)));
    }
    Ok((
        writes,
        Drawn {
            granted,
            chunk: held + granted,
        },
    ))
}

/// The origin leased the region `granted_total` units of `counter` in all
/// (cumulative, so a repeated grant changes nothing).
pub fn slice_granted(
    state: &dyn ReadState,
    counter: &Counter,
    granted_total: u64,
) -> Result<Vec<Write>, ReadError> {
    let mut counted = counter_state(state, counter)?;
    let mut writes = vec![Write::Delete {
        key: wanted_key(counter),
    }];
    if granted_total > counted.slice {
        counted.slice = granted_total;
        writes.push(put_json(counter_key(counter), &counted));
    }
    Ok(writes)
}

/// Hands back what the region holds of `counter` and no node has drawn
/// (a period that is over); the units released.
pub fn release_slice(
    state: &dyn ReadState,
    counter: &Counter,
) -> Result<(Vec<Write>, u64), ReadError> {
    let mut counted = counter_state(state, counter)?;
    let unused = counted
        .slice
        .saturating_sub(counted.released)
        .saturating_sub(counted.consumed.saturating_add(counted.reserved));
    if unused == 0 {
        return Ok((Vec::new(), 0));
    }
    counted.released += unused;
    Ok((vec![put_json(counter_key(counter), &counted)], unused))
}

/// Node `node` hands back `units` of its chunk of `counter` (at most what
/// the chunk holds). The node names the units it stopped counting on: its
/// chunk may meanwhile hold more (a draw that raced the release, units it
/// consumed and has not reported), and those stay reserved.
pub fn release_chunk(
    state: &dyn ReadState,
    node: u64,
    counter: &Counter,
    units: u64,
    at: UnixSeconds,
) -> Result<Vec<Write>, ReadError> {
    let held = chunk(state, counter, node)?;
    let released = units.min(held);
    let mut writes: Vec<Write> = stamp(state, node, at)?.into_iter().collect();
    if released == 0 {
        return Ok(writes);
    }
    let mut counted = counter_state(state, counter)?;
    counted.reserved = counted.reserved.saturating_sub(released);
    let left = held - released;
    writes.extend([
        put_json(counter_key(counter), &counted),
        if left == 0 {
            Write::Delete {
                key: chunk_key(counter, node),
            }
        } else {
            put_json(chunk_key(counter, node), &left)
        },
    ]);
    Ok(writes)
}

fn batch_key(node: u64) -> Vec<u8> {
    format!("region/usage-batch/{node}").into_bytes()
}

/// The last usage report batch of `node` the log applied.
pub fn last_batch(state: &dyn ReadState, node: u64) -> Result<u64, ReadError> {
    read_json(state, &batch_key(node))
}

/// What [`record_usage`] counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    /// Entries added to their counters.
    pub counted: u32,
    /// Entries whose idempotency key was already counted.
    pub duplicates: u32,
    /// The whole batch was applied before (a retried report): nothing done.
    pub repeated_batch: bool,
    /// Consumptions not counted because their key was refused first, and
    /// refusals that decided their key.
    #[serde(default)]
    pub refused: u32,
    /// How the log decided the key of each entry that has one, in order
    /// (for a repeated batch too: as the state has them now). Empty from a
    /// node that predates refusals.
    #[serde(default)]
    pub keys: Vec<KeyOutcome>,
}

/// How the log decided one keyed entry of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyOutcome {
    /// This entry counted its key.
    Counted,
    /// The key was counted before (by this consumption's earlier attempt,
    /// elsewhere or in this report): nothing more counted.
    AlreadyCounted,
    /// The key is refused, by this entry or before it: nothing counted.
    Refused(Reason),
}

impl KeyOutcome {
    /// The outcome for an entry whose key the log decided before it.
    pub fn decided_before(verdict: KeyVerdict) -> KeyOutcome {
        match verdict {
            KeyVerdict::Counted => KeyOutcome::AlreadyCounted,
            KeyVerdict::Refused(reason) => KeyOutcome::Refused(reason),
        }
    }

    /// How the key stands after this entry.
    pub fn verdict(self) -> KeyVerdict {
        match self {
            KeyOutcome::Counted | KeyOutcome::AlreadyCounted => KeyVerdict::Counted,
            KeyOutcome::Refused(reason) => KeyVerdict::Refused(reason),
        }
    }
}

/// Node `node` reports usage at `at` in its report number `batch` (a
/// batch at or below the last one applied is a retry: skipped). The writes are computed entry by
/// entry over the state as the earlier entries left it, so a report may
/// hold the same counter (or key) several times.
pub fn record_usage(
    state: &dyn ReadState,
    node: u64,
    batch: u64,
    at: UnixSeconds,
    entries: &[UsageEntry],
) -> Result<(Vec<Write>, Recorded), ReadError> {
    if batch <= last_batch(state, node)? {
        // Applied before: each key is as that application (or an earlier
        // entry) left it.
        let mut keys = Vec::new();
        for entry in entries {
            let Some(key) = &entry.idempotency_key else {
                continue;
            };
            keys.push(match idempotency_key_verdict(state, key, at)? {
                Some(before) => KeyOutcome::decided_before(before),
                // Forgotten since (two days on): as it was first decided.
                None => match entry.refused {
                    Some(reason) => KeyOutcome::Refused(reason),
                    None => KeyOutcome::AlreadyCounted,
                },
            });
        }
        let recorded = Recorded {
            repeated_batch: true,
            keys,
            ..Recorded::default()
        };
        return Ok((Vec::new(), recorded));
    }
    let mut overlay = Overlay {
        base: state,
        writes: std::collections::BTreeMap::new(),
    };
    let mut recorded = Recorded::default();
    let today = day(at);
    for entry in entries {
        if entry.refused.is_some() {
            // A refusal counts nothing and holds no chunk: it only decides
            // its key, unless a consumption decided it first (apply refuses
            // a refusal without a key).
            let Some(key) = &entry.idempotency_key else {
                continue;
            };
            let (outcome, decided) = decide_key(&mut overlay, key, entry, at)?;
            recorded.refused += u32::from(decided);
            recorded.keys.push(outcome);
            continue;
        }
        let counter = &entry.counter;
        let mut counted = counter_state(&overlay, counter)?;
        if entry.from_chunk {
            // The node consumed these units out of its chunk whether or not
            // they are counted: they leave the chunk either way.
            let held = chunk(&overlay, counter, node)?;
            let used = entry.units.min(held);
            counted.reserved = counted.reserved.saturating_sub(used);
            overlay.put(chunk_key(counter, node), &(held - used));
        }
        let outcome = match &entry.idempotency_key {
            Some(key) => Some(decide_key(&mut overlay, key, entry, at)?.0),
            None => None,
        };
        match outcome {
            Some(KeyOutcome::AlreadyCounted) => recorded.duplicates += 1,
            Some(KeyOutcome::Refused(_)) => recorded.refused += 1,
            Some(KeyOutcome::Counted) | None => {
                counted.consumed = counted.consumed.saturating_add(entry.units);
                recorded.counted += 1;
            }
        }
        recorded.keys.extend(outcome);
        overlay.put(counter_key(counter), &counted);
    }
    overlay.put(batch_key(node), &batch);
    if let Some(lease) = seen(&overlay, node, at)? {
        overlay.put(meter_key(node), &lease);
    }
    // Keys older than yesterday are no longer looked at: drop the days
    // between the oldest kept and the day before yesterday.
    let mut writes: Vec<Write> = Vec::new();
    let kept_from: i64 = read_json(state, KEYS_KEPT_FROM)?;
    if kept_from < today - 1 {
        let first = if kept_from == 0 {
            today - 2
        } else {
            kept_from.max(today - 400)
        };
        for old_day in first..=today - 2 {
            writes.push(Write::DeletePrefix {
                prefix: format!("region/usage-key/{old_day:08}/").into_bytes(),
            });
        }
        overlay.put(KEYS_KEPT_FROM.to_vec(), &(today - 1));
    }
    writes.extend(
        overlay
            .writes
            .into_iter()
            .map(|(key, value)| Write::Put { key, value }),
    );
    Ok((writes, recorded))
}

/// The state with this command's earlier writes on top.
struct Overlay<'a> {
    base: &'a dyn ReadState,
    writes: std::collections::BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Overlay<'_> {
    fn put<T: Serialize>(&mut self, key: Vec<u8>, value: &T) {
        self.writes.insert(
            key,
            serde_json::to_vec(value).expect("plain values serialise"),
        );
    }
}

impl ReadState for Overlay<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        match self.writes.get(key) {
            Some(value) => Ok(Some(value.clone())),
            None => self.base.get(key),
        }
    }
}
