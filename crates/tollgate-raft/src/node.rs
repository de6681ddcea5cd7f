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

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, Config, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tollgate_proto::cluster::v1 as pb;
use tollgate_proto::cluster::v1::cluster_admin_client::ClusterAdminClient;

use crate::codec::{decode, encode};
use crate::error::Error;
use crate::logic::StateMachineLogic;
use crate::network::{ChannelPool, NetworkConfig, NetworkFactory};
use crate::store::{open_storage, FlushStats, StateView, StorageConfig};
use crate::types::{NodeId, Raft};

/// Everything a node needs to know. Every field has a default except the
/// id and the data directory.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's Raft id: unique in the cluster, never reused, not 0.
    pub node_id: NodeId,
    /// A name for logs; members of one cluster should agree on it.
    pub cluster_name: String,
    /// Where and how the data is kept.
    pub storage: StorageConfig,
    /// The address other members reach this node at. Default: the
    /// listener's local address.
    pub advertise_addr: Option<String>,
    /// Leader heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Election timeout, lower bound (randomised per round).
    pub election_timeout_ms_min: u64,
    /// Election timeout, upper bound.
    pub election_timeout_ms_max: u64,
    /// Build a snapshot (and then purge the log) after this many entries
    /// were applied since the last one.
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log behind the snapshot, for followers that are
    /// only a little behind.
    pub max_in_snapshot_log_to_keep: u64,
    /// Largest snapshot chunk per InstallSnapshot call, in bytes.
    pub snapshot_chunk_bytes_max: u64,
    /// Time allowed for one snapshot chunk to be sent and installed.
    pub install_snapshot_timeout_ms: u64,
    /// Most entries in one AppendEntries call.
    pub max_payload_entries: u64,
    /// Transport limits and timing.
    pub network: NetworkConfig,
    /// Largest serialised command accepted, in bytes.
    pub command_bytes_max: usize,
    /// Commands waiting for the batcher; a full queue rejects writes
    /// (`Error::Overloaded`).
    pub write_queue_capacity: usize,
    /// Most commands in one log entry.
    pub write_batch_max: usize,
    /// Most serialised command bytes in one log entry.
    pub write_batch_bytes_max: usize,
    /// Entries proposed but not yet committed, at most. Default 1: openraft
    /// 0.9 flushes every append on its own and its core waits for that flush,
    /// so each extra entry in flight costs one more fsync on every node;
    /// measured on one shared disk, one entry in flight (with everything that
    /// queued meanwhile batched into the next) commits the most writes per
    /// second at every client count tried (1, 16, 64).
    pub writes_in_flight_max: usize,
    /// A write to a follower is forwarded to the leader at most this many
    /// hops; 0 answers `NotLeader` instead.
    pub forward_hops_max: u32,
    /// Time allowed for a forwarded write.
    pub forward_timeout_ms: u64,
    /// Campaign at once when the leader's port refuses connections, instead
    /// of waiting out its lease (see the `failover` module).
    pub fast_failover: bool,
}

impl NodeConfig {
    /// Defaults for a node with `node_id` keeping its data in `data_dir`.
    pub fn new(node_id: NodeId, data_dir: impl Into<std::path::PathBuf>) -> Self {
        NodeConfig {
            node_id,
            cluster_name: "tollgate".into(),
            storage: StorageConfig::new(data_dir),
            advertise_addr: None,
            heartbeat_interval_ms: 50,
            election_timeout_ms_min: 150,
            election_timeout_ms_max: 300,
            snapshot_logs_since_last: 10_000,
            max_in_snapshot_log_to_keep: 1_000,
            snapshot_chunk_bytes_max: 1024 * 1024,
            install_snapshot_timeout_ms: 2_000,
            max_payload_entries: 256,
            network: NetworkConfig::default(),
            command_bytes_max: 256 * 1024,
            write_queue_capacity: 8_192,
            write_batch_max: 512,
            write_batch_bytes_max: 512 * 1024,
            writes_in_flight_max: 1,
            forward_hops_max: 1,
            forward_timeout_ms: 5_000,
            fast_failover: true,
        }
    }

    /// Check the whole config; errors name the key.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |key, reason: &str| {
            Err(Error::InvalidConfig {
                key,
                reason: reason.to_string(),
            })
        };
        if self.node_id == 0 {
            return invalid("node_id", "must not be 0");
        }
        if self.write_batch_max == 0 {
            return invalid("write_batch_max", "must be at least 1");
        }
        if self.writes_in_flight_max == 0 {
            return invalid("writes_in_flight_max", "must be at least 1");
        }
        if self.write_queue_capacity == 0 {
            return invalid("write_queue_capacity", "must be at least 1");
        }
        // A log entry (the batch, JSON, plus its envelope) must stay below
        // sled's inline limit.
        if self.write_batch_bytes_max + 64 * 1024 > crate::store::STORED_VALUE_BYTES_MAX {
            return invalid(
                "write_batch_bytes_max",
                "must leave 64 KiB below store::STORED_VALUE_BYTES_MAX",
            );
        }
        if self.command_bytes_max > self.write_batch_bytes_max {
            return invalid("command_bytes_max", "must not exceed write_batch_bytes_max");
        }
        // One entry must fit in one message, with room for the envelope.
        if self.write_batch_bytes_max.saturating_mul(2) > self.network.message_bytes_max {
            return invalid(
                "write_batch_bytes_max",
                "must be at most half of network.message_bytes_max",
            );
        }
        if self.snapshot_chunk_bytes_max as usize + 64 * 1024 > self.network.message_bytes_max {
            return invalid(
                "snapshot_chunk_bytes_max",
                "must leave 64 KiB below network.message_bytes_max",
            );
        }
        if self.snapshot_logs_since_last == 0 {
            return invalid("snapshot_logs_since_last", "must be at least 1");
        }
        self.raft_config()?;
        Ok(())
    }

    fn raft_config(&self) -> Result<Config, Error> {
        let config = Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_ms_min,
            election_timeout_max: self.election_timeout_ms_max,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            max_payload_entries: self.max_payload_entries,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes_max,
            ..Default::default()
        };
        Ok(config.validate()?)
    }
}

/// The outcome of a committed write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome<R> {
    /// The state machine's response.
    pub response: R,
    /// The log index of the entry that carried the command.
    pub log_index: u64,
    /// The leader that committed it.
    pub leader_id: NodeId,
}

struct WriteRequest<L: StateMachineLogic> {
    command: L::Command,
    bytes: usize,
    reply: oneshot::Sender<Result<WriteOutcome<L::Response>, Error>>,
}

/// The parts of a node shared with its gRPC services.
pub(crate) struct NodeInner<L: StateMachineLogic> {
    pub(crate) id: NodeId,
    pub(crate) addr: String,
    pub(crate) config: NodeConfig,
    pub(crate) raft: Raft<L>,
    pub(crate) view: StateView,
    pub(crate) pool: Arc<ChannelPool>,
    pub(crate) leader_contact: crate::failover::LeaderContact,
    write_tx: mpsc::Sender<WriteRequest<L>>,
}

/// A running cluster member.
pub struct Node<L: StateMachineLogic> {
    inner: Arc<NodeInner<L>>,
    flush_stats: Arc<FlushStats>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    server_stop: Option<oneshot::Sender<()>>,
    batcher: JoinHandle<()>,
    watchdog: Option<JoinHandle<()>>,
}

fn not_leader(f: openraft::error::ForwardToLeader<NodeId, BasicNode>) -> Error {
    Error::NotLeader {
        leader_id: f.leader_id,
        leader_addr: f.leader_node.map(|n| n.addr),
    }
}

fn client_write_error(e: ClientWriteError<NodeId, BasicNode>) -> Error {
    match e {
        ClientWriteError::ForwardToLeader(f) => not_leader(f),
        ClientWriteError::ChangeMembershipError(e) => Error::Membership(e.to_string()),
    }
}

fn raft_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Error {
    match e {
        RaftError::APIError(e) => client_write_error(e),
        RaftError::Fatal(openraft::error::Fatal::Stopped) => Error::ShuttingDown,
        RaftError::Fatal(f) => Error::from(f),
    }
}

/// Start a node and serve until `shutdown` resolves; then shut down
/// gracefully.
pub async fn run<L: StateMachineLogic>(
    config: NodeConfig,
    logic: L,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let node = Node::start(config, logic, listener).await?;
    shutdown.await;
    node.shutdown().await
}

impl<L: StateMachineLogic> Node<L> {
    /// Open storage, start Raft and serve the Raft transport and the cluster
    /// admin service on `listener`.
    pub async fn start(config: NodeConfig, logic: L, listener: TcpListener) -> Result<Self, Error> {
        config.validate()?;
        let local = listener.local_addr()?;
        let addr = config
            .advertise_addr
            .clone()
            .unwrap_or_else(|| local.to_string());
        let raft_config = Arc::new(config.raft_config()?);

        let storage_config = config.storage.clone();
        let logic = Arc::new(logic);
        // Opening may wait for the directory lock: keep it off the runtime.
        let (log_store, state_machine) =
            tokio::task::spawn_blocking(move || open_storage(&storage_config, logic))
                .await
                .map_err(|e| Error::Raft(format!("storage open task failed: {e}")))??;
        let flush_stats = log_store.flush_stats();
        let view = state_machine.view();

        let pool = Arc::new(ChannelPool::new(config.network.clone()));
        let network = NetworkFactory::<L>::new(pool.clone());
        let raft = openraft::Raft::new(
            config.node_id,
            raft_config,
            network,
            log_store,
            state_machine,
        )
        .await?;

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
            leader_contact: crate::failover::LeaderContact::new(),
            write_tx,
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
        let (server_stop, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(crate::server::serve(inner.clone(), listener, async move {
            let _ = stop_rx.await;
        }));
        tracing::info!(node_id = inner.id, addr = %inner.addr, "Node started.");
        Ok(Node {
            inner,
            flush_stats,
            server: Some(server),
            server_stop: Some(server_stop),
            batcher,
            watchdog,
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The address other members reach this node at.
    pub fn addr(&self) -> &str {
        &self.inner.addr
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
            let _ = stop.send(());
        }
        let raft_result = self.inner.raft.shutdown().await;
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
        self.batcher.abort();
        if let Some(watchdog) = &self.watchdog {
            watchdog.abort();
        }
        raft_result.map_err(|e| Error::Raft(format!("raft core task failed: {e}")))
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
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
        self.batcher.abort();
        if let Some(watchdog) = &self.watchdog {
            watchdog.abort();
        }
        // openraft 0.9 offers no way to stop its tasks other than shutdown;
        // it does not flush anything on the way out.
        let _ = self.inner.raft.shutdown().await;
    }
}

impl<L: StateMachineLogic> Drop for Node<L> {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
        }
        self.batcher.abort();
        if let Some(watchdog) = &self.watchdog {
            watchdog.abort();
        }
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
            // one appended by a node that still believed it led after a
            // restart, then replaced by a snapshot from the real leader,
            // is never answered. Waiting for it would hold the batcher's
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

impl<L: StateMachineLogic> NodeInner<L> {
    /// Propose on this node; `NotLeader` when it is not the leader.
    pub(crate) async fn write_local(
        &self,
        command: L::Command,
    ) -> Result<WriteOutcome<L::Response>, Error> {
        let bytes = crate::codec::encoded_len(&command)?;
        if bytes > self.config.command_bytes_max {
            return Err(Error::InvalidArgument(format!(
                "command of {bytes} bytes exceeds command_bytes_max {}",
                self.config.command_bytes_max
            )));
        }
        let (reply, rx) = oneshot::channel();
        self.write_tx
            .try_send(WriteRequest {
                command,
                bytes,
                reply,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Error::Overloaded {
                    capacity: self.config.write_queue_capacity,
                },
                mpsc::error::TrySendError::Closed(_) => Error::ShuttingDown,
            })?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }

    pub(crate) async fn write(
        &self,
        command: L::Command,
        hops: u32,
    ) -> Result<WriteOutcome<L::Response>, Error> {
        // Skip the queue when another node is known to lead.
        let known_other = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            match metrics.current_leader {
                Some(leader) if leader != self.id => Some(self.leader_error(&metrics)),
                _ => None,
            }
        };
        let local = match known_other {
            Some(e) => Err(e),
            // Keep a copy only when the write may still be forwarded (the
            // leader may change while it is queued).
            None if hops < self.config.forward_hops_max => self.write_local(command.clone()).await,
            None => return self.write_local(command).await,
        };
        match local {
            Err(Error::NotLeader {
                leader_id: Some(leader_id),
                leader_addr: Some(addr),
            }) if hops < self.config.forward_hops_max && leader_id != self.id => {
                self.forward(&addr, leader_id, &command, hops + 1).await
            }
            other => other,
        }
    }

    fn leader_error(&self, metrics: &RaftMetrics<NodeId, BasicNode>) -> Error {
        let leader_id = metrics.current_leader;
        let leader_addr = leader_id.and_then(|id| {
            metrics
                .membership_config
                .membership()
                .get_node(&id)
                .map(|n| n.addr.clone())
        });
        Error::NotLeader {
            leader_id,
            leader_addr,
        }
    }

    async fn forward(
        &self,
        addr: &str,
        leader_id: NodeId,
        command: &L::Command,
        hops: u32,
    ) -> Result<WriteOutcome<L::Response>, Error> {
        let channel = self.pool.channel(addr)?;
        let mut client = ClusterAdminClient::new(channel)
            .max_decoding_message_size(self.config.network.message_bytes_max)
            .max_encoding_message_size(self.config.network.message_bytes_max);
        let mut request = tonic::Request::new(pb::ClientWriteRequest {
            command: encode(command)?,
            forward_hops: hops,
        });
        let timeout = Duration::from_millis(self.config.forward_timeout_ms);
        request.set_timeout(timeout);
        let response = match tokio::time::timeout(timeout, client.client_write(request)).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => {
                return Err(crate::server::status_to_error(&status, leader_id, addr))
            }
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "forwarded write to {addr} timed out"
                )))
            }
        };
        Ok(WriteOutcome {
            response: decode(&response.response)?,
            log_index: response.log_index,
            leader_id: response.leader_id,
        })
    }

    pub(crate) async fn initialize(&self, members: &[(NodeId, String)]) -> Result<(), Error> {
        if members.is_empty() || members.len() > 16 {
            return Err(Error::InvalidArgument(format!(
                "{} initial members; want 1..=16",
                members.len()
            )));
        }
        let mut nodes = BTreeMap::new();
        for (id, addr) in members {
            check_member(*id, addr)?;
            if nodes.insert(*id, BasicNode::new(addr)).is_some() {
                return Err(Error::InvalidArgument(format!(
                    "node id {id} appears twice"
                )));
            }
        }
        if !nodes.contains_key(&self.id) {
            return Err(Error::InvalidArgument(format!(
                "this node ({}) is not among the initial members",
                self.id
            )));
        }
        self.raft.initialize(nodes).await.map_err(|e| match e {
            RaftError::APIError(InitializeError::NotAllowed(_)) => Error::AlreadyInitialized,
            RaftError::APIError(InitializeError::NotInMembers(e)) => {
                Error::InvalidArgument(e.to_string())
            }
            RaftError::Fatal(f) => Error::from(f),
        })
    }

    /// Builds a snapshot of everything applied now, and waits (at most
    /// `timeout`) until it is in place; the index it covers. The log behind
    /// it is then purged per the node's policy.
    pub(crate) async fn trigger_snapshot(
        &self,
        timeout: std::time::Duration,
    ) -> Result<u64, Error> {
        let applied = self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0);
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| Error::Unavailable(format!("triggering a snapshot: {e}")))?;
        let metrics = self
            .raft
            .wait(Some(timeout))
            .metrics(
                |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "snapshot covers the applied index",
            )
            .await
            .map_err(|e| Error::Timeout(format!("waiting for the snapshot: {e}")))?;
        Ok(metrics.snapshot.map(|s| s.index).unwrap_or(0))
    }

    pub(crate) async fn add_learner(
        &self,
        id: NodeId,
        addr: &str,
        wait_caught_up: bool,
    ) -> Result<u64, Error> {
        check_member(id, addr)?;
        let resp = self
            .raft
            .add_learner(id, BasicNode::new(addr), wait_caught_up)
            .await
            .map_err(raft_error)?;
        Ok(resp.log_id.index)
    }

    pub(crate) async fn change_membership(
        &self,
        voters: BTreeSet<NodeId>,
        keep_as_learners: bool,
    ) -> Result<u64, Error> {
        if voters.is_empty() || voters.len() > 16 {
            return Err(Error::InvalidArgument(format!(
                "{} voters; want 1..=16",
                voters.len()
            )));
        }
        let resp = self
            .raft
            .change_membership(voters, keep_as_learners)
            .await
            .map_err(raft_error)?;
        Ok(resp.log_id.index)
    }

    pub(crate) async fn remove_node(&self, id: NodeId) -> Result<u64, Error> {
        let metrics = self.raft.metrics().borrow().clone();
        if metrics.current_leader != Some(self.id) {
            return Err(self.leader_error(&metrics));
        }
        let membership = metrics.membership_config.membership().clone();
        if membership.voter_ids().any(|v| v == id) {
            let voters: BTreeSet<NodeId> = membership.voter_ids().filter(|v| *v != id).collect();
            if voters.is_empty() {
                return Err(Error::Membership("cannot remove the last voter".into()));
            }
            self.change_membership(voters, false).await
        } else if membership.learner_ids().any(|l| l == id) {
            let resp = self
                .raft
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(raft_error)?;
            Ok(resp.log_id.index)
        } else {
            Err(Error::InvalidArgument(format!("node {id} is not a member")))
        }
    }

    pub(crate) fn status(&self) -> pb::StatusResponse {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let member = |id: NodeId| pb::Member {
            node_id: id,
            addr: membership
                .get_node(&id)
                .map(|n| n.addr.clone())
                .unwrap_or_default(),
        };
        let state = match m.state {
            ServerState::Learner => pb::ServerState::Learner,
            ServerState::Follower => pb::ServerState::Follower,
            ServerState::Candidate => pb::ServerState::Candidate,
            ServerState::Leader => pb::ServerState::Leader,
            ServerState::Shutdown => pb::ServerState::Shutdown,
        };
        let leader_id = m.current_leader.unwrap_or(0);
        pb::StatusResponse {
            node_id: self.id,
            state: state as i32,
            current_term: m.current_term,
            leader_id,
            leader_addr: m
                .current_leader
                .and_then(|id| membership.get_node(&id))
                .map(|n| n.addr.clone())
                .unwrap_or_default(),
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
            voters: membership.voter_ids().map(member).collect(),
            learners: membership.learner_ids().map(member).collect(),
        }
    }
}

fn check_member(id: NodeId, addr: &str) -> Result<(), Error> {
    if id == 0 {
        return Err(Error::InvalidArgument("node id 0 is reserved".into()));
    }
    if addr.is_empty() || addr.len() > 256 {
        return Err(Error::InvalidArgument(format!(
            "address of node {id} must be 1..=256 bytes"
        )));
    }
    Ok(())
}

/// Membership of a node, for tests and the admin service: voters and
/// learners as (id, address).
pub fn membership_of(
    metrics: &RaftMetrics<NodeId, BasicNode>,
) -> (BTreeSet<NodeId>, BTreeSet<NodeId>) {
    let m = metrics.membership_config.membership();
    (m.voter_ids().collect(), m.learner_ids().collect())
}
