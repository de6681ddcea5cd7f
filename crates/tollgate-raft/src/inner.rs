//! The parts of a node its gRPC services, its failover watchdog and its
//! handle share: identity, config, Raft, the state view, the channel pool
//! and the write queue, with the operations they perform (writing locally
//! or forwarding to the leader, membership changes, status).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
// tokio's clock: the wall clock in production, the simulated one in a
// simulation.
use tokio::time::Instant;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, RaftMetrics, ServerState};
use tokio::sync::{mpsc, oneshot};
use tollgate_proto::cluster::v1::cluster_admin_client::ClusterAdminClient;
use tollgate_proto::convert::{client_write_request, ClusterMember, NodeStatus, RaftRole};

use crate::codec::{decode, encode};
use crate::config::NodeConfig;
use crate::error::{raft_error, Error};
use crate::logic::StateMachineLogic;
use crate::network::ChannelPool;
use crate::store::StateView;
use crate::types::{NodeId, Raft};

/// When this node last heard from a leader (AppendEntries or snapshot), as
/// milliseconds since `epoch`.
#[derive(Debug)]
pub(crate) struct LeaderContact {
    epoch: Instant,
    last_ms: AtomicU64,
}

impl LeaderContact {
    pub(crate) fn new() -> Self {
        LeaderContact {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn touch(&self) {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    pub(crate) fn silent_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
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

pub(crate) struct WriteRequest<L: StateMachineLogic> {
    pub(crate) command: L::Command,
    pub(crate) bytes: usize,
    pub(crate) reply: oneshot::Sender<Result<WriteOutcome<L::Response>, Error>>,
}

/// The parts of a node shared with its gRPC services.
pub(crate) struct NodeInner<L: StateMachineLogic> {
    pub(crate) id: NodeId,
    pub(crate) addr: String,
    pub(crate) config: NodeConfig,
    pub(crate) raft: Raft<L>,
    pub(crate) view: StateView,
    pub(crate) pool: Arc<ChannelPool>,
    pub(crate) leader_contact: LeaderContact,
    /// Whether reads may be answered ([`crate::recovery`]).
    pub(crate) serving: Arc<crate::recovery::Serving>,
    pub(crate) write_tx: mpsc::Sender<WriteRequest<L>>,
    /// The role's own facts about this node, for `Status`
    /// ([`crate::Node::set_role_status`]).
    pub(crate) role_status: std::sync::RwLock<Option<RoleStatus>>,
}

/// Renders a role's facts about its node (JSON) for `Status`.
pub(crate) type RoleStatus = Arc<dyn Fn() -> Vec<u8> + Send + Sync>;

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

    /// Asks member `peer` at `addr` for its `Status`, within `timeout`.
    pub(crate) async fn peer_status(
        &self,
        peer: NodeId,
        addr: &str,
        timeout: Duration,
    ) -> Result<tollgate_proto::cluster::v1::StatusResponse, Error> {
        let channel = self.pool.channel(peer, addr)?;
        let mut client = ClusterAdminClient::new(channel)
            .max_decoding_message_size(self.config.network.message_bytes_max);
        let mut request = tonic::Request::new(tollgate_proto::cluster::v1::StatusRequest {});
        request.set_timeout(timeout);
        let outcome = tokio::time::timeout(timeout, client.status(request)).await;
        self.pool
            .record(peer, addr, crate::network::ran_out_of_time(&outcome));
        match outcome {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(status)) => Err(crate::status::status_to_error(&status, peer, addr)),
            Err(_) => Err(Error::Unavailable(format!(
                "node {peer} at {addr} did not answer Status within {timeout:?}"
            ))),
        }
    }

    /// The role's facts about this node, within `ROLE_STATUS_BYTES_MAX`
    /// (a larger rendering is dropped, logged: a role bug, not an outage).
    fn role_status(&self) -> Vec<u8> {
        let render = match self.role_status.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let Some(render) = render else {
            return Vec::new();
        };
        let bytes = render();
        if bytes.len() > tollgate_proto::convert::ROLE_STATUS_BYTES_MAX {
            tracing::warn!(
                bytes = bytes.len(),
                max = tollgate_proto::convert::ROLE_STATUS_BYTES_MAX,
                "The role's status of this node is too large; Status carries none."
            );
            return Vec::new();
        }
        bytes
    }

    async fn forward(
        &self,
        addr: &str,
        leader_id: NodeId,
        command: &L::Command,
        hops: u32,
    ) -> Result<WriteOutcome<L::Response>, Error> {
        let channel = self.pool.channel(leader_id, addr)?;
        let mut client = ClusterAdminClient::new(channel)
            .max_decoding_message_size(self.config.network.message_bytes_max)
            .max_encoding_message_size(self.config.network.message_bytes_max);
        let mut request = tonic::Request::new(client_write_request(encode(command)?, hops));
        let timeout = Duration::from_millis(self.config.forward_timeout_ms);
        request.set_timeout(timeout);
        let outcome = tokio::time::timeout(timeout, client.client_write(request)).await;
        self.pool
            .record(leader_id, addr, crate::network::ran_out_of_time(&outcome));
        let response = match outcome {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(status)) => {
                return Err(crate::status::status_to_error(&status, leader_id, addr))
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
        // Asked first: openraft logs an ERROR ("Can not initialize") when an
        // initialised node is asked, and a node whose config keeps
        // `bootstrap = true` asks on every start.
        if self.raft.is_initialized().await.map_err(Error::from)? {
            return Err(Error::AlreadyInitialized);
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

    /// This node's view of its cluster, from openraft's metrics.
    pub(crate) fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let addr = |id: &NodeId| membership.get_node(id).map(|n| n.addr.clone());
        let member = |id: NodeId| ClusterMember {
            node_id: id,
            addr: addr(&id).unwrap_or_default(),
        };
        NodeStatus {
            node_id: self.id,
            role: match m.state {
                ServerState::Learner => RaftRole::Learner,
                ServerState::Follower => RaftRole::Follower,
                ServerState::Candidate => RaftRole::Candidate,
                ServerState::Leader => RaftRole::Leader,
                ServerState::Shutdown => RaftRole::Shutdown,
            },
            current_term: m.current_term,
            leader_id: m.current_leader,
            leader_addr: m.current_leader.as_ref().and_then(addr),
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
            voters: membership.voter_ids().map(member).collect(),
            learners: membership.learner_ids().map(member).collect(),
            role_status: self.role_status(),
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
