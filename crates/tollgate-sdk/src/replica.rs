//! The local replica: a copy of one account's (or every account's)
//! entitlements and the catalog, kept current by a `Watch` stream from a
//! region node, answering checks in-process with the engine the nodes use.

use crate::client::{Client, MESSAGE_BYTES_MAX};
use crate::error::SdkError;
use crate::store::{Dirty, Store, Views};
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tollgate_clock::Clock;
use tollgate_engine::{
    decide, AccountView, CheckRequest, Consistency, Decision, Environment, Freshness, Location,
    NoLiveState, WatchEvent, WatchRequest,
};
use tollgate_model::{AccountId, Dataset, GeoFacts, Mutation, SeatMode, UnixSeconds};
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_client::CheckServiceClient;

/// Default for [`ReplicaBuilder::reconnect_backoff`].
pub const RECONNECT_BACKOFF_MIN_DEFAULT: Duration = Duration::from_millis(50);
pub const RECONNECT_BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(5);
/// Default for [`ReplicaBuilder::idle_timeout`]: six of a node's default
/// heartbeat intervals (5 s).
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);
/// Default for [`ReplicaBuilder::objects_max`].
pub const OBJECTS_MAX_DEFAULT: usize = 1_000_000;

/// `origin_contact` when nothing is known.
const CONTACT_UNKNOWN: i64 = i64::MIN;

/// How stale a local answer may be, from two sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Staleness {
    /// Seconds since the region last heard from the origin, as far as the
    /// replica knows: a node's heartbeat says how stale it was when sent,
    /// and a change record was committed at the origin when it says; the
    /// time since then is added. `None` while neither has arrived. This is
    /// the staleness the engine judges offline policies by.
    pub origin_seconds: Option<u64>,
    /// How long since the replica last heard from a region node; `None` for
    /// a replica built from a data set.
    pub since_region: Option<Duration>,
}

/// A decision made in-process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDecision {
    pub decision: Decision,
    /// The origin revision the replica had applied.
    pub revision: u64,
    pub staleness: Staleness,
    /// The decision read state only the region has: a usage counter under
    /// a cap (the replica counts nothing as consumed, so `remaining` is the
    /// whole cap) or floating-seat leases (the replica sees none held).
    /// Ask the region ([`Client::check`]) for the exact answer.
    pub approximate: bool,
}

/// The views at one revision: what a check reads.
struct Snapshot {
    revision: u64,
    views: Views,
}

#[derive(Debug, Clone, Copy)]
struct Progress {
    revision: u64,
}

struct Shared {
    scope: Option<AccountId>,
    snapshot: ArcSwap<Snapshot>,
    /// Written only by the follower task (or at construction).
    store: Mutex<Store>,
    progress: watch::Sender<Progress>,
    /// Unix seconds of the region's last origin contact, as estimated;
    /// `CONTACT_UNKNOWN` when not known.
    origin_contact: AtomicI64,
    /// Nanoseconds after `epoch` when a node last sent something, plus
    /// one; 0 = never.
    heard_at: AtomicU64,
    epoch: Instant,
    /// Built from a data set: the data is as current as it gets.
    fixed: bool,
    /// The node followed right now.
    endpoint: Mutex<Option<String>>,
    /// The wall clock: staleness, contact estimates and the time local
    /// checks decide at. Swappable ([`Replica::with_clock`]).
    clock: ArcSwap<Clock>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn new(
        scope: Option<AccountId>,
        store: Store,
        revision: u64,
        fixed: bool,
        clock: Clock,
    ) -> Shared {
        let views = store.views();
        Shared {
            scope,
            snapshot: ArcSwap::from_pointee(Snapshot { revision, views }),
            store: Mutex::new(store),
            progress: watch::Sender::new(Progress { revision }),
            origin_contact: AtomicI64::new(CONTACT_UNKNOWN),
            heard_at: AtomicU64::new(0),
            epoch: Instant::now(),
            fixed,
            endpoint: Mutex::new(None),
            clock: ArcSwap::from_pointee(clock),
        }
    }

    /// The replica's clock, read now.
    fn now(&self) -> UnixSeconds {
        self.clock.load().now()
    }

    fn heard(&self) {
        let nanos = self.epoch.elapsed().as_nanos().min(u64::MAX as u128 - 1) as u64;
        self.heard_at.store(nanos + 1, Ordering::Relaxed);
    }

    /// The region heard from the origin at `at` or later.
    fn contact_at_least(&self, at: UnixSeconds) {
        self.origin_contact.fetch_max(at.0, Ordering::Relaxed);
    }

    fn freshness(&self, revision: u64, now: UnixSeconds) -> (Freshness, Staleness) {
        if self.fixed {
            return (
                Freshness::current(revision, now),
                Staleness {
                    origin_seconds: Some(0),
                    since_region: None,
                },
            );
        }
        let contact = self.origin_contact.load(Ordering::Relaxed);
        let last_origin_contact = (contact != CONTACT_UNKNOWN).then_some(UnixSeconds(contact));
        let heard = self.heard_at.load(Ordering::Relaxed);
        let since_region = (heard > 0).then(|| {
            self.epoch
                .elapsed()
                .saturating_sub(Duration::from_nanos(heard - 1))
        });
        (
            Freshness {
                applied_revision: revision,
                last_origin_contact,
            },
            Staleness {
                origin_seconds: last_origin_contact.map(|t| now.seconds_since(t)),
                since_region,
            },
        )
    }

    /// Publishes the views at `revision` (never moving backwards).
    fn publish(&self, revision: u64, views: Views) {
        let revision = revision.max(self.snapshot.load().revision);
        self.snapshot.store(Arc::new(Snapshot { revision, views }));
        self.progress.send_modify(|p| p.revision = revision);
    }
}

/// An in-process replica of a region's entitlement data. Checks against it
/// take no network round trip and give the decision a node would give for
/// the same inputs (same engine, same views, same freshness rule), except
/// for the state only the region has: see [`LocalDecision::approximate`].
/// Consumption is never local.
///
/// Dropping the replica stops its follower task.
pub struct Replica {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("scope", &self.shared.scope)
            .field("revision", &self.revision())
            .field("endpoint", &self.endpoint())
            .finish()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Builds a following [`Replica`]; see [`Replica::builder`].
#[derive(Debug, Clone)]
pub struct ReplicaBuilder {
    client: Client,
    scope: Option<AccountId>,
    backoff_min: Duration,
    backoff_max: Duration,
    idle_timeout: Duration,
    objects_max: usize,
}

impl ReplicaBuilder {
    /// Follow only this account (and the catalog); `None` (the default)
    /// follows every account.
    pub fn scope(mut self, account: Option<AccountId>) -> Self {
        self.scope = account;
        self
    }

    /// Pause before reconnecting after a node failed, doubling from `min`
    /// to `max` while failures go on (defaults 50 ms and 5 s). A stream
    /// that ended after delivering something is resumed on the next node
    /// at once.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff_min = min;
        self.backoff_max = max.max(min);
        self
    }

    /// A stream silent for this long is dropped and resumed on the next
    /// node (default 30 s; nodes send a heartbeat every 5 s when idle).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Most objects (accounts, subjects, entitlements) the replica holds
    /// (default 1,000,000); a state past it is refused and the stream
    /// retried.
    pub fn objects_max(mut self, objects: usize) -> Self {
        self.objects_max = objects;
        self
    }

    /// Spawns the follower on the current Tokio runtime. The replica starts
    /// empty at revision 0; [`Replica::wait_for_revision`] waits for data.
    pub fn start(self) -> Result<Replica, SdkError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| SdkError::Config("start the replica inside a Tokio runtime".into()))?;
        if self.idle_timeout.is_zero() || self.backoff_min.is_zero() {
            return Err(SdkError::Config(
                "idle_timeout and the reconnect backoff must be above zero".into(),
            ));
        }
        let shared = Arc::new(Shared::new(
            self.scope.clone(),
            Store::default(),
            0,
            false,
            self.client.clock().clone(),
        ));
        let task = runtime.spawn(follow(shared.clone(), self));
        Ok(Replica {
            shared,
            task: Some(task),
        })
    }
}

impl Replica {
    /// A following replica of `client`'s region; it reads the client's
    /// clock ([`ClientBuilder::clock`](crate::ClientBuilder::clock)).
    pub fn builder(client: &Client) -> ReplicaBuilder {
        ReplicaBuilder {
            client: client.clone(),
            scope: None,
            backoff_min: RECONNECT_BACKOFF_MIN_DEFAULT,
            backoff_max: RECONNECT_BACKOFF_MAX_DEFAULT,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            objects_max: OBJECTS_MAX_DEFAULT,
        }
    }

    /// Follows the client's endpoints with the default settings: `scope`
    /// is one account (plus the catalog), or every account. The replica
    /// reads the client's clock ([`ClientBuilder::clock`](crate::ClientBuilder::clock)).
    pub fn start(client: &Client, scope: Option<AccountId>) -> Result<Replica, SdkError> {
        Replica::builder(client).scope(scope).start()
    }

    /// A replica holding `dataset` at `revision`, following nothing: for
    /// tests and benchmarks. Its data counts as current (staleness 0).
    /// It reads the system clock; [`Replica::with_clock`] gives another.
    pub fn from_dataset(dataset: Dataset, revision: u64) -> Result<Replica, SdkError> {
        dataset
            .validate()
            .map_err(|e| SdkError::InvalidRequest(format!("dataset: {e}")))?;
        Ok(Replica {
            shared: Arc::new(Shared::new(
                None,
                Store::from_dataset(dataset),
                revision,
                true,
                Clock::system(),
            )),
            task: None,
        })
    }

    /// A replica holding the state `mutations` describe at `revision`,
    /// applied in order exactly as a following replica applies a `Watch`
    /// state (a put replaces the object with the same id, a delete removes
    /// it), following nothing: for data delivered some other way (a file, a
    /// recorded stream), tests and the conformance cases. Like
    /// [`Replica::from_dataset`], the result must be a valid data set, and
    /// its data counts as current unless a check says otherwise
    /// ([`Replica::check_at`]). It reads the system clock;
    /// [`Replica::with_clock`] gives another.
    pub fn from_mutations(
        mutations: impl IntoIterator<Item = Mutation>,
        revision: u64,
    ) -> Result<Replica, SdkError> {
        let mut store = Store::default();
        let mut dirty = Dirty::default();
        for m in mutations {
            store.apply(m, &mut dirty);
        }
        store
            .to_dataset()
            .validate()
            .map_err(|e| SdkError::InvalidRequest(format!("dataset: {e}")))?;
        Ok(Replica {
            shared: Arc::new(Shared::new(None, store, revision, true, Clock::system())),
            task: None,
        })
    }

    /// The same replica reading `clock` from now on, for its staleness,
    /// its estimates of the region's last origin contact and the time
    /// [`Replica::check`] decides at: for a replica from a data set or
    /// mutations (which read the system clock otherwise). A following
    /// replica reads its client's clock
    /// ([`ClientBuilder::clock`](crate::ClientBuilder::clock)) from the
    /// start; a contact estimated before the change stays as it was.
    pub fn with_clock(self, clock: Clock) -> Replica {
        self.shared.clock.store(Arc::new(clock));
        self
    }

    /// The wall clock the replica reads.
    pub fn clock(&self) -> Clock {
        Clock::clone(&self.shared.clock.load())
    }

    /// The origin revision applied.
    pub fn revision(&self) -> u64 {
        self.shared.snapshot.load().revision
    }

    /// The account followed, if only one is.
    pub fn scope(&self) -> Option<&AccountId> {
        self.shared.scope.as_ref()
    }

    /// The node followed right now; `None` while (re)connecting.
    pub fn endpoint(&self) -> Option<String> {
        lock(&self.shared.endpoint).clone()
    }

    /// How stale local answers are right now.
    pub fn staleness(&self) -> Staleness {
        self.shared.freshness(self.revision(), self.shared.now()).1
    }

    /// The data held, in canonical order.
    /// Reads the revocations the replica holds (the catalog-level part of
    /// its store, where `Dataset::apply` keeps them).
    pub(crate) fn with_revocations<T>(&self, read: impl FnOnce(&Dataset) -> T) -> T {
        read(lock(&self.shared.store).rest())
    }

    pub fn dataset(&self) -> Dataset {
        lock(&self.shared.store).to_dataset()
    }

    /// Waits until the replica has applied `revision` (e.g. the revision an
    /// origin write returned); the revision reached.
    pub async fn wait_for_revision(
        &self,
        revision: u64,
        deadline: Duration,
    ) -> Result<u64, SdkError> {
        let mut progress = self.shared.progress.subscribe();
        let reached = async {
            progress
                .wait_for(|p| p.revision >= revision)
                .await
                .map(|p| p.revision)
        };
        match tokio::time::timeout(deadline, reached).await {
            Ok(Ok(reached)) => Ok(reached),
            // The sender lives in `shared`, which `self` holds.
            Ok(Err(_)) => Err(SdkError::Config("the replica is gone".into())),
            Err(_) => Err(SdkError::DeadlineExceeded {
                deadline,
                last: Some(format!(
                    "the replica is at revision {}, waiting for {revision}",
                    self.revision()
                )),
            }),
        }
    }

    /// Decides `request` in-process, without the network, at the time the
    /// replica's clock reads ([`Replica::clock`]). Refused
    /// ([`SdkError::NeedsRegion`]) when only the region can answer: a check
    /// that consumes (metering is the region's), a location given as an IP
    /// address (the replica resolves none: pass `Location::Resolved`), an
    /// account outside the replica's scope. A resolved location is used as
    /// given (a node uses it only when configured to trust the proxy).
    pub fn check(&self, request: &CheckRequest) -> Result<LocalDecision, SdkError> {
        self.decide_local(request, self.shared.now(), None)
    }

    /// Decides `request` as [`Replica::check`] does, but at `now` rather
    /// than the replica's clock, and as if the region last heard from the
    /// origin at `last_origin_contact` (`None`: never) rather than when the
    /// replica estimates it did: offline policies and
    /// [`LocalDecision::staleness`] follow these. For applications that
    /// keep their own trusted time, for replaying recorded inputs, and for
    /// the conformance cases every SDK runs (`sdk/conformance`). Refused
    /// for the same reasons as [`Replica::check`].
    pub fn check_at(
        &self,
        request: &CheckRequest,
        now: UnixSeconds,
        last_origin_contact: Option<UnixSeconds>,
    ) -> Result<LocalDecision, SdkError> {
        self.decide_local(request, now, Some(last_origin_contact))
    }

    /// `check` and `check_at`: `contact`, when given, replaces the
    /// replica's own estimate of the last origin contact.
    fn decide_local(
        &self,
        request: &CheckRequest,
        now: UnixSeconds,
        contact: Option<Option<UnixSeconds>>,
    ) -> Result<LocalDecision, SdkError> {
        if request.check.consume > 0 {
            return Err(SdkError::NeedsRegion(
                "a check that consumes units is metered by the region: use Client::consume".into(),
            ));
        }
        let unknown;
        let geo = match &request.location {
            Location::Unknown => {
                unknown = GeoFacts::unknown();
                &unknown
            }
            Location::Resolved(facts) => facts,
            Location::Ip(ip) => {
                return Err(SdkError::NeedsRegion(format!(
                    "the location is an IP address ({ip}) and the replica resolves none: \
                     pass a resolved location, or ask the region with Client::check"
                )))
            }
        };
        if let Some(scope) = &self.shared.scope {
            if *scope != request.check.account {
                return Err(SdkError::NeedsRegion(format!(
                    "account {} is outside this replica's scope ({scope})",
                    request.check.account
                )));
            }
        }
        let snapshot = self.shared.snapshot.load();
        if let Consistency::AtLeastRevision(wanted) = request.consistency {
            if wanted > snapshot.revision {
                return Err(SdkError::RevisionNotApplied {
                    wanted,
                    applied: snapshot.revision,
                });
            }
        }
        let (mut freshness, mut staleness) = self.shared.freshness(snapshot.revision, now);
        if let Some(contact) = contact {
            freshness.last_origin_contact = contact;
            staleness.origin_seconds = contact.map(|t| now.seconds_since(t));
        }
        let view = snapshot
            .views
            .accounts
            .get(request.check.account.as_str())
            .map(Arc::as_ref);
        let env = Environment {
            catalog: &snapshot.views.catalog,
            live: &NoLiveState,
            freshness,
            now,
        };
        let decision = decide(&request.check, view, geo, &env);
        let approximate = approximate(&decision, view);
        Ok(LocalDecision {
            decision,
            revision: snapshot.revision,
            staleness,
            approximate,
        })
    }
}

/// Whether `decision` depended on usage counters or floating seats.
fn approximate(decision: &Decision, view: Option<&AccountView>) -> bool {
    if decision.metering.is_some_and(|m| m.limit.is_some()) {
        return true;
    }
    // Only an entitlement with seats reports them; look it up only then.
    decision.seats.is_some()
        && decision
            .entitlement
            .as_ref()
            .and_then(|id| view?.entitlements.iter().find(|e| &e.id == id))
            .is_some_and(|e| {
                matches!(
                    e.seats.as_ref().map(|s| &s.mode),
                    Some(SeatMode::Floating { .. })
                )
            })
}

/// The follower: one `Watch` stream at a time, from the replica's revision,
/// moving to the next endpoint when a stream fails or ends.
async fn follow(shared: Arc<Shared>, config: ReplicaBuilder) {
    let mut next = config.client.preferred();
    let mut backoff = config.backoff_min;
    loop {
        let index = next;
        next = (next + 1) % config.client.endpoint_count();
        let mut delivered = false;
        let result = session(&shared, &config, index, &mut delivered).await;
        *lock(&shared.endpoint) = None;
        let (uri, _) = config.client.endpoint(index);
        match result {
            Ok(()) => {
                tracing::info!(endpoint = %uri, "The watch stream ended; resuming on the next node.")
            }
            Err(error) => {
                tracing::warn!(endpoint = %uri, %error, "The watch stream failed; resuming on the next node.")
            }
        }
        if delivered {
            backoff = config.backoff_min;
        } else {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(config.backoff_max);
        }
    }
}

/// A state being received, chunk by chunk.
struct Staging {
    revision: u64,
    next_index: u32,
    store: Store,
}

/// Follows one node until its stream ends (`Ok`) or fails.
async fn session(
    shared: &Shared,
    config: &ReplicaBuilder,
    index: usize,
    delivered: &mut bool,
) -> Result<(), String> {
    let (uri, channel) = config.client.endpoint(index);
    let from_revision = shared.progress.borrow().revision;
    let request = pb::WatchRequest::from(WatchRequest {
        account: shared.scope.clone(),
        from_revision,
    });
    let mut client = CheckServiceClient::new(channel).max_decoding_message_size(MESSAGE_BYTES_MAX);
    let mut stream = tokio::time::timeout(config.client.deadline(), client.watch(request))
        .await
        .map_err(|_| "the stream did not open before the deadline".to_string())?
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?
        .into_inner();
    *lock(&shared.endpoint) = Some(uri.to_string());
    tracing::info!(endpoint = %uri, from_revision, "Following a region node.");
    let mut staging: Option<Staging> = None;
    loop {
        let message = match tokio::time::timeout(config.idle_timeout, stream.message()).await {
            Err(_) => return Err(format!("no message for {:?}", config.idle_timeout)),
            Ok(Err(status)) => return Err(format!("{:?}: {}", status.code(), status.message())),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(message))) => message,
        };
        shared.heard();
        let event = WatchEvent::try_from(message).map_err(|e| format!("an event: {e}"))?;
        apply_event(shared, event, &mut staging, config.objects_max)?;
        // Only a node that sent something usable resets the backoff: one
        // that fails every stream at once must not be retried in a loop.
        *delivered = true;
    }
}

/// Applies one event of the stream.
fn apply_event(
    shared: &Shared,
    event: WatchEvent,
    staging: &mut Option<Staging>,
    objects_max: usize,
) -> Result<(), String> {
    match event {
        WatchEvent::State {
            revision,
            index,
            last,
            mutations,
        } => {
            if index == 0 {
                *staging = Some(Staging {
                    revision,
                    next_index: 0,
                    store: Store::default(),
                });
            }
            let Some(state) = staging.as_mut() else {
                return Err(format!("state chunk {index} without chunk 0"));
            };
            if state.next_index != index || state.revision != revision {
                return Err(format!(
                    "state chunk {index} at revision {revision} after chunk {} at revision {}",
                    state.next_index.wrapping_sub(1),
                    state.revision
                ));
            }
            let mut dirty = Dirty::default();
            for m in mutations {
                state.store.apply(m, &mut dirty);
            }
            if state.store.objects() > objects_max {
                return Err(format!(
                    "the state holds more than {objects_max} objects (the replica's limit)"
                ));
            }
            state.next_index += 1;
            if let Some(state) = staging.take_if(|_| last) {
                let views = state.store.views();
                *lock(&shared.store) = state.store;
                // A state replaces the data: its revision is the node's, at
                // least ours.
                shared.publish(state.revision, views);
                tracing::info!(
                    revision = state.revision,
                    "Replaced the replica's data with a state."
                );
            }
            Ok(())
        }
        WatchEvent::Changes {
            changes,
            through_revision,
        } => {
            if staging.is_some() {
                return Err("changes in the middle of a state".into());
            }
            let mut store = lock(&shared.store);
            let mut dirty = Dirty::default();
            let mut committed = None;
            for record in changes {
                committed = committed.max(Some(record.committed_at));
                for m in record.mutations {
                    store.apply(m, &mut dirty);
                }
            }
            if store.objects() > objects_max {
                return Err(format!(
                    "the data holds more than {objects_max} objects (the replica's limit)"
                ));
            }
            let views = store.update_views(&shared.snapshot.load().views, &dirty);
            drop(store);
            if let Some(at) = committed {
                // The region had the record, so it heard from the origin
                // no earlier than the record's commit.
                shared.contact_at_least(at);
            }
            shared.publish(through_revision, views);
            Ok(())
        }
        WatchEvent::Heartbeat {
            staleness_seconds, ..
        } => {
            if let Some(stale) = staleness_seconds {
                let at = shared
                    .now()
                    .0
                    .saturating_sub(i64::try_from(stale).unwrap_or(i64::MAX));
                shared.contact_at_least(UnixSeconds(at));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_engine::{Check, Reason};
    use tollgate_model::{ChangeRecord, EntitlementStatus, Mutation};

    fn sample() -> Dataset {
        serde_json::from_value(serde_json::json!({
            "catalog": {
                "products": {"p": {"id": "p", "name": "P"}},
                "features": {
                    "f": {"id": "f", "product": "p", "name": "F", "kind": "boolean"},
                    "m": {"id": "m", "product": "p", "name": "M",
                          "kind": {"metered": {"unit": "calls", "period": "month"}}}
                }
            },
            "accounts": [{"id": "acme", "name": "Acme"}],
            "subjects": [{"id": "alice", "account": "acme", "kind": "user"}],
            "entitlements": [
                {"id": "e-f", "account": "acme", "grant": {"feature": {"feature": "f"}},
                 "valid_from": 0},
                {"id": "e-m", "account": "acme",
                 "grant": {"feature": {"feature": "m", "usage_cap": {"limit": 10}}},
                 "valid_from": 0}
            ]
        }))
        .unwrap()
    }

    fn request(feature: &str) -> CheckRequest {
        CheckRequest {
            check: Check {
                account: "acme".parse().unwrap(),
                subject: Some("alice".parse().unwrap()),
                feature: feature.parse().unwrap(),
                consume: 0,
            },
            location: Location::Unknown,
            consistency: Consistency::Local,
            idempotency_key: None,
        }
    }

    #[test]
    fn consumption_an_ip_and_a_future_revision_are_refused_locally() {
        let replica = Replica::from_dataset(sample(), 5).unwrap();
        let mut consume = request("m");
        consume.check.consume = 1;
        match replica.check(&consume) {
            Err(SdkError::NeedsRegion(message)) => {
                assert!(message.contains("Client::consume"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        let mut ip = request("f");
        ip.location = Location::Ip("192.0.2.1".parse().unwrap());
        assert!(matches!(replica.check(&ip), Err(SdkError::NeedsRegion(_))));
        let mut ahead = request("f");
        ahead.consistency = Consistency::AtLeastRevision(6);
        assert!(matches!(
            replica.check(&ahead),
            Err(SdkError::RevisionNotApplied {
                wanted: 6,
                applied: 5
            })
        ));
        ahead.consistency = Consistency::AtLeastRevision(5);
        assert!(replica.check(&ahead).unwrap().decision.allowed());
    }

    #[test]
    fn local_decisions_come_from_the_engine_and_flag_region_state() {
        let replica = Replica::from_dataset(sample(), 5).unwrap();
        let f = replica.check(&request("f")).unwrap();
        assert_eq!(f.decision.reason, Reason::Allow);
        assert_eq!(f.revision, 5);
        assert_eq!(f.staleness.origin_seconds, Some(0));
        assert!(!f.approximate);
        let m = replica.check(&request("m")).unwrap();
        assert!(m.decision.allowed());
        assert_eq!(m.decision.remaining, Some(10), "nothing counted locally");
        assert!(m.approximate, "a capped counter lives in the region");
        let mut stranger = request("f");
        stranger.check.account = "globex".parse().unwrap();
        assert_eq!(
            replica.check(&stranger).unwrap().decision.reason,
            Reason::UnknownAccount
        );
    }

    #[test]
    fn a_replica_from_mutations_decides_at_the_time_and_contact_given() {
        let data = sample();
        let mut changes = data.to_mutations();
        let mut suspended = data.entitlements[0].clone();
        suspended.status = EntitlementStatus::Suspended;
        changes.push(Mutation::PutEntitlement(suspended));
        let replica = Replica::from_mutations(changes, 9).unwrap();
        assert_eq!(replica.revision(), 9);
        let f = request("f");
        let at = UnixSeconds(1_800_000_000);
        let local = replica
            .check_at(&f, at, Some(UnixSeconds(at.0 - 30)))
            .unwrap();
        assert_eq!(
            local.decision.reason,
            Reason::Suspended,
            "the later put wins"
        );
        assert_eq!(local.decision.staleness_seconds, Some(30));
        assert_eq!(local.staleness.origin_seconds, Some(30));
        // Never heard from the origin: the default offline policy denies.
        let m = replica.check_at(&request("m"), at, None).unwrap();
        assert_eq!(m.decision.reason, Reason::StaleData);
        assert_eq!(m.staleness.origin_seconds, None);
        // A data set that does not validate is refused.
        let dangling = vec![Mutation::PutSubject(data.subjects[0].clone())];
        assert!(matches!(
            Replica::from_mutations(dangling, 1),
            Err(SdkError::InvalidRequest(_))
        ));
    }

    fn following() -> Shared {
        following_with(Clock::system())
    }

    fn following_with(clock: Clock) -> Shared {
        Shared::new(
            Some("acme".parse().unwrap()),
            Store::default(),
            0,
            false,
            clock,
        )
    }

    #[test]
    fn a_state_in_chunks_then_changes_make_the_data_set() {
        let shared = following();
        let data = sample();
        let mutations = data.to_mutations();
        let (first, second) = mutations.split_at(3);
        let mut staging = None;
        for (index, part) in [first, second].into_iter().enumerate() {
            let event = WatchEvent::State {
                revision: 7,
                index: index as u32,
                last: index == 1,
                mutations: part.to_vec(),
            };
            apply_event(&shared, event, &mut staging, 100).unwrap();
            if index == 0 {
                assert_eq!(
                    shared.snapshot.load().revision,
                    0,
                    "published only when whole"
                );
            }
        }
        assert_eq!(shared.snapshot.load().revision, 7);
        assert_eq!(lock(&shared.store).to_dataset(), data.clone().canonical());

        let mut revoked = data.entitlements[0].clone();
        revoked.status = EntitlementStatus::Revoked;
        let event = WatchEvent::Changes {
            changes: vec![ChangeRecord {
                revision: 9,
                committed_at: UnixSeconds(1_800_000_000),
                mutations: vec![Mutation::PutEntitlement(revoked.clone())],
            }],
            through_revision: 10,
        };
        apply_event(&shared, event, &mut staging, 100).unwrap();
        let mut expected = data;
        expected.apply(Mutation::PutEntitlement(revoked));
        assert_eq!(lock(&shared.store).to_dataset(), expected.canonical());
        let snapshot = shared.snapshot.load();
        assert_eq!(
            snapshot.revision, 10,
            "through_revision, not the last record"
        );
        assert_eq!(
            shared.origin_contact.load(Ordering::Relaxed),
            1_800_000_000,
            "no earlier than the commit"
        );
        let view = &snapshot.views.accounts["acme"];
        assert_eq!(view.entitlements[0].status, EntitlementStatus::Revoked);
    }

    #[test]
    fn a_stream_out_of_order_or_past_the_limit_is_refused() {
        let shared = following();
        let chunk = |index, last| WatchEvent::State {
            revision: 3,
            index,
            last,
            mutations: sample().to_mutations(),
        };
        let mut staging = None;
        assert!(apply_event(&shared, chunk(1, true), &mut staging, 100).is_err());
        apply_event(&shared, chunk(0, false), &mut staging, 100).unwrap();
        let changes = WatchEvent::Changes {
            changes: vec![],
            through_revision: 4,
        };
        assert!(apply_event(&shared, changes, &mut staging, 100).is_err());
        let mut staging = None;
        let error = apply_event(&shared, chunk(0, true), &mut staging, 2).unwrap_err();
        assert!(error.contains("more than 2 objects"), "{error}");
        assert_eq!(shared.snapshot.load().revision, 0);
    }

    #[test]
    fn a_heartbeat_dates_the_origin_contact_and_staleness_follows() {
        let shared = following();
        let (_, unknown) = shared.freshness(0, shared.now());
        assert_eq!(unknown.origin_seconds, None);
        apply_event(
            &shared,
            WatchEvent::Heartbeat {
                applied_revision: 0,
                staleness_seconds: Some(30),
            },
            &mut None,
            100,
        )
        .unwrap();
        let (freshness, staleness) = shared.freshness(0, shared.now());
        assert!(freshness.last_origin_contact.is_some());
        let seconds = staleness.origin_seconds.unwrap();
        assert!((30..=31).contains(&seconds), "{seconds}");
        // An older contact never moves it back.
        shared.contact_at_least(UnixSeconds(0));
        assert_eq!(
            shared.freshness(0, shared.now()).1.origin_seconds,
            Some(seconds)
        );
    }

    #[test]
    fn staleness_follows_the_replica_clock() {
        let start = 1_800_000_000;
        let offset = Arc::new(AtomicI64::new(start));
        let read = offset.clone();
        let clock = Clock::from_fn(move || {
            u64::try_from(read.load(Ordering::SeqCst))
                .ok()
                .map(Duration::from_secs)
        });
        let replica = Replica {
            shared: Arc::new(following_with(clock.clone())),
            task: None,
        };
        assert_eq!(replica.clock(), clock);
        assert_eq!(replica.staleness().origin_seconds, None);
        apply_event(
            &replica.shared,
            WatchEvent::Heartbeat {
                applied_revision: 0,
                staleness_seconds: Some(30),
            },
            &mut None,
            100,
        )
        .unwrap();
        // Dated by the given clock, not the system's.
        assert_eq!(
            replica.shared.origin_contact.load(Ordering::Relaxed),
            start - 30
        );
        assert_eq!(replica.staleness().origin_seconds, Some(30));
        offset.fetch_add(90, Ordering::SeqCst);
        assert_eq!(replica.staleness().origin_seconds, Some(120));
        let local = replica.check(&request("f")).unwrap();
        assert_eq!(local.staleness.origin_seconds, Some(120));
        offset.fetch_add(3_600, Ordering::SeqCst);
        assert_eq!(replica.staleness().origin_seconds, Some(3_720));

        // A replica from a data set reads the system clock unless given one.
        let fixed = Replica::from_dataset(sample(), 1).unwrap();
        assert!(fixed.clock().is_system());
        let fixed = fixed.with_clock(clock.clone());
        assert_eq!(fixed.clock(), clock);
    }
}
