//! A cluster member: storage, Raft, the gRPC endpoint and the write path.
//!
//! Start-up order: validate config, open storage, build Raft, spawn the
//! write batcher, serve on the given listener. [`Node::start`] takes the
//! listener so tests bind `127.0.0.1:0`; [`run`] adds a shutdown future for
//! the binary.
//!
//! Writes go through a batcher, because openraft 0.9 appends (and flushes,
//! with its core waiting) every `client_write` as an entry of its own:
//! commands queue in a bounded channel; the batcher drains whatever is
//! queued (up to `write_batch_max` commands and `write_batch_bytes_max`
//! bytes) into one log entry and hands it to Raft, with up to
//! `writes_in_flight_max` entries uncommitted at once (default 1). A lone
//! writer's command goes out at once (no timer); under load, the commands
//! that arrive while an entry is in flight share the next one, and so one
//! append, one fsync per node and one apply batch.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, RaftMetrics};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tollgate_tls::net::TcpListener;

use crate::config::NodeConfig;
use crate::error::{client_write_error, Error};
use crate::inner::{LeaderContact, NodeInner, WriteOutcome, WriteRequest};
use crate::logic::StateMachineLogic;
use crate::network::{ChannelPool, NetworkFactory};
use crate::recovery::Serving;
use crate::store::{open_storage, FlushStats, LogStore, SledStateMachine, StateView};
use crate::types::{NodeId, Raft};

/// A running cluster member.
pub struct Node<L: StateMachineLogic> {
    inner: Arc<NodeInner<L>>,
    flush_stats: Arc<FlushStats>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    server_stop: Option<tokio::sync::watch::Sender<bool>>,
    batcher: JoinHandle<()>,
    watchdog: Option<JoinHandle<()>>,
    /// Triggers a snapshot when the log grew past `snapshot_log_bytes_max`.
    snapshots: Option<JoinHandle<()>>,
    /// After an unclean stop: opens reads once caught up ([`Serving`]).
    recovery: Option<JoinHandle<()>>,
    /// Marks a clean stop at `shutdown`.
    stop_store: LogStore<L>,
    /// The state machine, for the clean stop's write-back of the applies
    /// it still holds in memory.
    stop_state_machine: SledStateMachine<L>,
}

/// Start a node and serve until `shutdown` resolves; then shut down
/// gracefully.
pub async fn run<L: StateMachineLogic>(
    config: NodeConfig,
    logic: L,
    listener: impl Into<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let node = Node::start(config, logic, listener).await?;
    shutdown.await;
    node.shutdown().await
}

impl<L: StateMachineLogic> Node<L> {
    /// Open storage, start Raft and serve the Raft transport and the cluster
    /// admin service on `listener`.
    pub async fn start(
        config: NodeConfig,
        logic: L,
        listener: impl Into<TcpListener>,
    ) -> Result<Self, Error> {
        config.validate()?;
        let listener = listener.into();
        let local = listener.local_addr()?;
        let addr = config
            .advertise_addr
            .clone()
            .unwrap_or_else(|| local.to_string());
        let raft_config = Arc::new(config.raft_config()?);

        let storage_config = config.storage.clone();
        let logic = Arc::new(logic);
        // Opening sled may wait for the directory lock: keep it off the
        // runtime. A memory disk never waits, and opens inline (no thread
        // whose timing would vary in a simulation).
        let node_id = config.node_id;
        let open = move || -> Result<_, Error> {
            let (log_store, state_machine) = open_storage(&storage_config, logic)?;
            log_store.set_node_id(node_id);
            let clean = log_store.take_clean_stop()?;
            Ok((log_store, state_machine, clean))
        };
        let (log_store, state_machine, clean) = match config.storage.memory.is_some() {
            true => open()?,
            false => tokio::task::spawn_blocking(open)
                .await
                .map_err(|e| Error::Raft(format!("storage open task failed: {e}")))??,
        };
        if !clean {
            tracing::warn!(
                node_id = config.node_id,
                "This node did not stop cleanly: it answers reads once it has caught up with a leader."
            );
        }
        let serving = Serving::new(clean);
        let stop_store = log_store.clone();
        let stop_state_machine = state_machine.clone_handle();
        let flush_stats = log_store.flush_stats();
        let growth = log_store.log_growth();
        growth.set_limit(config.snapshot_log_bytes_max);
        let view = state_machine.view();

        let pool = Arc::new(ChannelPool::new(
            config.network.clone(),
            config.transport.clone(),
        ));
        let network = NetworkFactory::<L>::new(pool.clone());
        let raft = openraft::Raft::new(
            config.node_id,
            raft_config,
            network,
            log_store,
            state_machine,
        )
        .await?;

        let recovery =
            (!clean).then(|| tokio::spawn(serving.clone().watch(config.node_id, raft.clone())));
        let snapshots = (config.snapshot_log_bytes_max > 0)
            .then(|| tokio::spawn(run_snapshot_trigger::<L>(raft.clone(), growth)));
        let (write_tx, write_rx) = mpsc::channel(config.write_queue_capacity);
        let batcher = tokio::spawn(run_batcher::<L>(
            config.node_id,
            raft.clone(),
            write_rx,
            config.write_batch_max,
            config.write_batch_bytes_max,
            config.writes_in_flight_max,
        ));

        let inner = Arc::new(NodeInner {
            id: config.node_id,
            addr,
            config,
            raft,
            view,
            pool,
            leader_contact: LeaderContact::new(),
            serving,
            write_tx,
            role_status: std::sync::RwLock::new(None),
        });
        let watchdog = inner.config.fast_failover.then(|| {
            let timing = crate::failover::Timing {
                heartbeat: Duration::from_millis(inner.config.heartbeat_interval_ms),
                lease: Duration::from_millis(inner.config.election_timeout_ms_max),
                retry: Duration::from_millis(inner.config.heartbeat_interval_ms / 2),
            };
            tokio::spawn(crate::failover::run_watchdog(
                Arc::downgrade(&inner),
                timing,
            ))
        });
        let (server_stop, stop_rx) = tokio::sync::watch::channel(false);
        let incoming = crate::server::incoming(&inner, listener, stop_rx.clone())?;
        let server = tokio::spawn(crate::server::serve(inner.clone(), incoming, stop_rx));
        tracing::info!(node_id = inner.id, addr = %inner.addr, "Node started.");
        Ok(Node {
            inner,
            flush_stats,
            server: Some(server),
            server_stop: Some(server_stop),
            batcher,
            watchdog,
            snapshots,
            recovery,
            stop_store,
            stop_state_machine,
        })
    }

    /// Whether this node answers reads from its applied state (false after
    /// an unclean stop until it has caught up: see [`crate::recovery`]).
    pub fn serving(&self) -> Arc<Serving> {
        self.inner.serving.clone()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The address other members reach this node at.
    pub fn addr(&self) -> &str {
        &self.inner.addr
    }

    /// How this node talks to its peers (TLS with its identity, or not).
    pub fn transport(&self) -> &tollgate_tls::Transport {
        &self.inner.config.transport
    }

    /// The openraft handle.
    pub fn raft(&self) -> &Raft<L> {
        &self.inner.raft
    }

    /// A read view of this node's applied state (any role: leader,
    /// follower, learner).
    pub fn view(&self) -> StateView {
        self.inner.view.clone()
    }

    /// The log store's group-commit counters.
    pub fn flush_stats(&self) -> Arc<FlushStats> {
        self.flush_stats.clone()
    }

    /// The latest Raft metrics.
    pub fn metrics(&self) -> RaftMetrics<NodeId, BasicNode> {
        self.inner.raft.metrics().borrow().clone()
    }

    /// Propose a command. On a follower it is forwarded to the leader (if
    /// `forward_hops_max` allows) or answered with `Error::NotLeader` naming
    /// the leader.
    pub async fn write(&self, command: L::Command) -> Result<WriteOutcome<L::Response>, Error> {
        self.inner.write(command, 0).await
    }

    /// This node's view of its cluster, as its `Status` RPC answers.
    pub fn status(&self) -> tollgate_proto::convert::NodeStatus {
        self.inner.status()
    }

    /// What this node's `Status` carries as `role_status`: `render` is
    /// called for every Status call (JSON of the role's choosing, at most
    /// `ROLE_STATUS_BYTES_MAX` bytes). Hold no strong reference to the node
    /// in it.
    pub fn set_role_status(&self, render: impl Fn() -> Vec<u8> + Send + Sync + 'static) {
        let mut slot = match self.inner.role_status.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        *slot = Some(Arc::new(render));
    }

    /// Asks member `peer` at `addr` (its Raft address) for its `Status`,
    /// within `timeout`, over the cluster's own link (the member must
    /// prove it is `peer`).
    pub async fn peer_status(
        &self,
        peer: NodeId,
        addr: &str,
        timeout: Duration,
    ) -> Result<tollgate_proto::cluster::v1::StatusResponse, Error> {
        self.inner.peer_status(peer, addr, timeout).await
    }

    /// Make `members` (id, address) the first voters of a new cluster.
    pub async fn initialize(&self, members: &[(NodeId, String)]) -> Result<(), Error> {
        self.inner.initialize(members).await
    }

    /// Builds a snapshot of this node's applied state now; the log index it
    /// covers.
    pub async fn trigger_snapshot(&self, timeout: std::time::Duration) -> Result<u64, Error> {
        self.inner.trigger_snapshot(timeout).await
    }

    /// Add a learner (must run on the leader).
    pub async fn add_learner(
        &self,
        id: NodeId,
        addr: &str,
        wait_caught_up: bool,
    ) -> Result<u64, Error> {
        self.inner.add_learner(id, addr, wait_caught_up).await
    }

    /// Set the voters (must run on the leader).
    pub async fn change_membership(
        &self,
        voters: BTreeSet<NodeId>,
        keep_as_learners: bool,
    ) -> Result<u64, Error> {
        self.inner.change_membership(voters, keep_as_learners).await
    }

    /// Remove a node from voters and learners (must run on the leader).
    pub async fn remove_node(&self, id: NodeId) -> Result<u64, Error> {
        self.inner.remove_node(id).await
    }

    /// Wait until this node's metrics satisfy `condition`, for at most
    /// `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        condition: impl Fn(&RaftMetrics<NodeId, BasicNode>) -> bool + Send,
    ) -> Result<RaftMetrics<NodeId, BasicNode>, Error> {
        self.inner
            .raft
            .wait(Some(timeout))
            .metrics(condition, what)
            .await
            .map_err(|e| Error::Timeout(format!("node {}: {what}: {e}", self.inner.id)))
    }

    /// Stop gracefully: stop serving, shut Raft down (its tasks end and
    /// release storage), then return.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        tracing::info!(node_id = self.inner.id, "Node shutting down.");
        if let Some(stop) = self.server_stop.take() {
            stop.send_replace(true);
        }
        // Raft stops, and once it has stopped applying, what it applied
        // goes to disk and the stop is marked clean.
        let stopped = self.shutdown_raft().await;
        if let Some(server) = self.server.take() {
            // The server drains in-flight calls; Raft is already down so they
            // end quickly. Bounded anyway.
            match tokio::time::timeout(Duration::from_secs(5), server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "gRPC server ended with an error."),
                Ok(Err(e)) => tracing::warn!(error = %e, "gRPC server task failed."),
                Err(_) => tracing::warn!("gRPC server did not stop within 5 s."),
            }
        }
        self.abort_tasks();
        stopped
    }

    /// Stops Raft through a shared handle (where [`Self::shutdown`] cannot
    /// take the node: a request still holds it) and, once it has stopped,
    /// marks the stop clean as `shutdown` does. The endpoint and the
    /// node's own tasks stop when the last holder drops it.
    pub async fn shutdown_raft(&self) -> Result<(), Error> {
        self.inner
            .raft
            .shutdown()
            .await
            .map_err(|e| Error::Raft(format!("raft core task failed: {e}")))?;
        self.stop_state_machine.write_back_pending()?;
        self.stop_store.mark_clean_stop().await
    }

    /// Stop abruptly, as close to a crash as one process allows: the
    /// endpoint and the write path are aborted mid-flight (in-flight writes
    /// get no answer), no final flush is made, and Raft's tasks are stopped
    /// without waiting for anything in progress to finish cleanly. What is
    /// on disk is whatever the store had flushed or sled had written.
    pub async fn crash(mut self) {
        tracing::info!(
            node_id = self.inner.id,
            "Node crashing (abort without graceful shutdown)."
        );
        // A dead process's listening socket closes: stop accepting, so the
        // port can be bound again by whoever restarts the node.
        if let Some(stop) = self.server_stop.take() {
            stop.send_replace(true);
        }
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
        self.abort_tasks();
        // openraft 0.9 offers no way to stop its tasks other than shutdown;
        // it does not flush anything on the way out.
        let _ = self.inner.raft.shutdown().await;
    }
}

impl<L: StateMachineLogic> Node<L> {
    /// Stops the node's own tasks (the batcher, the watchdog, the snapshot
    /// trigger); Raft's are stopped by its shutdown.
    fn abort_tasks(&self) {
        self.batcher.abort();
        if let Some(watchdog) = &self.watchdog {
            watchdog.abort();
        }
        if let Some(snapshots) = &self.snapshots {
            snapshots.abort();
        }
        if let Some(recovery) = &self.recovery {
            recovery.abort();
        }
    }
}

impl<L: StateMachineLogic> Drop for Node<L> {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.abort_tasks();
        // openraft's core holds a sender to itself and so never stops on its
        // own: a Node dropped without `shutdown()` would keep its Raft (and
        // its data directory's lock) alive. Stop it in the background.
        // (After `shutdown()` or `crash()` this returns at once.)
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let raft = self.inner.raft.clone();
            handle.spawn(async move {
                let _ = raft.shutdown().await;
            });
        }
    }
}

/// Asks Raft for a snapshot whenever the log grew past the byte limit
/// since the last one began (see [`crate::store::LogGrowth`]).
async fn run_snapshot_trigger<L: StateMachineLogic>(
    raft: Raft<L>,
    growth: Arc<crate::store::LogGrowth>,
) {
    loop {
        growth.reached().await;
        let mut metrics = raft.metrics();
        let before = metrics.borrow().snapshot;
        let grown = growth.bytes();
        tracing::info!(
            log_bytes = grown,
            "The log grew past snapshot_log_bytes_max since the last snapshot: building one."
        );
        if raft.trigger().snapshot().await.is_err() {
            return; // Raft stopped.
        }
        // Until a build began (it resets the count) or one in progress
        // ended (then a new one is asked for).
        loop {
            let ended = metrics.borrow().snapshot != before;
            if ended || growth.bytes() < grown {
                break;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    }
}

async fn run_batcher<L: StateMachineLogic>(
    node_id: NodeId,
    raft: Raft<L>,
    mut rx: mpsc::Receiver<WriteRequest<L>>,
    batch_max: usize,
    batch_bytes_max: usize,
    in_flight_max: usize,
) {
    let in_flight = Arc::new(Semaphore::new(in_flight_max));
    let mut carry: Option<WriteRequest<L>> = None;
    loop {
        // Wait for room first: commands that arrive meanwhile join the batch.
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < batch_max {
            match rx.try_recv() {
                Ok(r) if bytes + r.bytes > batch_bytes_max => {
                    carry = Some(r);
                    break;
                }
                Ok(r) => {
                    bytes += r.bytes;
                    batch.push(r);
                }
                Err(_) => break,
            }
        }
        let (commands, replies): (Vec<_>, Vec<_>) =
            batch.into_iter().map(|r| (r.command, r.reply)).unzip();
        // The term this node leads in now, if it does; a node that does not
        // lead has openraft answer with the leader at once.
        let leading_term = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            (m.current_leader == Some(node_id)).then_some(m.current_term)
        };
        // `client_write_ff` queues the entry in Raft in call order and
        // returns at once; the answer is awaited in a task of its own.
        let receiver = match raft.client_write_ff(commands).await {
            Ok(rx) => rx,
            Err(e) => {
                let e = match e {
                    openraft::error::Fatal::Stopped => Error::ShuttingDown,
                    other => Error::from(other),
                };
                for reply in replies {
                    let _ = reply.send(Err(Error::Raft(e.to_string())));
                }
                continue;
            }
        };
        let mut metrics = raft.metrics();
        tokio::spawn(async move {
            let _permit = permit;
            // openraft does not always answer an entry its leader loses:
            // one appended by a leader deposed before it committed, then
            // replaced by a snapshot from the next leader, is never
            // answered. Waiting for it would hold the batcher's
            // permit, and so every later write, forever. Once this node no
            // longer leads in the term it accepted the entry in, the
            // outcome is unknown: say so (a caller retries, and every
            // command is idempotent) and let the writes behind it go.
            let deposed = async {
                match leading_term {
                    Some(term) => {
                        let _ = metrics
                            .wait_for(|m| {
                                m.current_term != term || m.current_leader != Some(node_id)
                            })
                            .await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let result = tokio::select! {
                answer = receiver => match answer {
                    Ok(Ok(resp)) => Ok(resp),
                    Ok(Err(e)) => Err(client_write_error(e)),
                    Err(_) => Err(Error::ShuttingDown),
                },
                _ = deposed => {
                    tracing::warn!(
                        commands = replies.len(),
                        "This node stopped leading before Raft answered a write; its outcome is unknown."
                    );
                    Err(Error::NotLeader {
                        leader_id: None,
                        leader_addr: None,
                    })
                }
            };
            match result {
                Ok(resp) => {
                    let log_index = resp.log_id.index;
                    // One response per command, in order, by construction of
                    // the apply loop.
                    debug_assert_eq!(resp.data.len(), replies.len());
                    for (reply, response) in replies.into_iter().zip(resp.data) {
                        let _ = reply.send(Ok(WriteOutcome {
                            response,
                            log_index,
                            leader_id: node_id,
                        }));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(clone_error(&e)));
                    }
                }
            }
        });
    }
}

/// The errors a batch can end with, copied for each of its commands.
fn clone_error(e: &Error) -> Error {
    match e {
        Error::NotLeader {
            leader_id,
            leader_addr,
        } => Error::NotLeader {
            leader_id: *leader_id,
            leader_addr: leader_addr.clone(),
        },
        Error::ShuttingDown => Error::ShuttingDown,
        Error::Membership(m) => Error::Membership(m.clone()),
        other => Error::Raft(other.to_string()),
    }
}

/// Membership of a node, for tests and the admin service: voters and
/// learners as (id, address).
pub fn membership_of(
    metrics: &RaftMetrics<NodeId, BasicNode>,
) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
    let m = metrics.membership_config.membership();
    (m.voter_ids().collect(), m.learner_ids().collect())
}
