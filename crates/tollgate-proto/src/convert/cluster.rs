//! `tollgate.cluster.v1` <-> plain values: the Raft transport and the
//! cluster-admin service every Raft member serves.
//!
//! `tollgate-raft` owns these concepts but depends on this crate, so the
//! status and membership a node reports are plain types here (the node
//! builds them from openraft's metrics). The Raft transport carries
//! openraft's RPCs as bytes `tollgate-raft` encodes with its codec: the
//! functions here only put those bytes in their envelopes and take them out.

use super::ConvertError;
use crate::cluster::v1 as pb;
use std::collections::BTreeSet;

/// A member of a Raft cluster: its id and its Raft address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMember {
    pub node_id: u64,
    /// `host:port`.
    pub addr: String,
}

impl From<ClusterMember> for pb::Member {
    fn from(m: ClusterMember) -> Self {
        pb::Member {
            node_id: m.node_id,
            addr: m.addr,
        }
    }
}

impl From<pb::Member> for ClusterMember {
    fn from(m: pb::Member) -> Self {
        ClusterMember {
            node_id: m.node_id,
            addr: m.addr,
        }
    }
}

/// A node's role in its Raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaftRole {
    Learner,
    Follower,
    Candidate,
    Leader,
    Shutdown,
}

impl From<RaftRole> for pb::ServerState {
    fn from(r: RaftRole) -> Self {
        match r {
            RaftRole::Learner => pb::ServerState::Learner,
            RaftRole::Follower => pb::ServerState::Follower,
            RaftRole::Candidate => pb::ServerState::Candidate,
            RaftRole::Leader => pb::ServerState::Leader,
            RaftRole::Shutdown => pb::ServerState::Shutdown,
        }
    }
}

/// One node's view of its cluster. Log indexes are 0 when there is none
/// yet (nothing logged, applied, snapshotted or purged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub node_id: u64,
    pub role: RaftRole,
    pub current_term: u64,
    /// The leader this node knows of, if any.
    pub leader_id: Option<u64>,
    /// The leader's address, when the membership names it.
    pub leader_addr: Option<String>,
    pub last_log_index: u64,
    pub last_applied_index: u64,
    pub snapshot_index: u64,
    pub purged_index: u64,
    pub voters: Vec<ClusterMember>,
    pub learners: Vec<ClusterMember>,
    /// The role's own facts about this node (JSON, at most
    /// [`ROLE_STATUS_BYTES_MAX`]); empty when the role sets none.
    pub role_status: Vec<u8>,
}

/// Largest `role_status` a node sends, in bytes (`admin.proto`).
pub const ROLE_STATUS_BYTES_MAX: usize = 4096;

impl From<NodeStatus> for pb::StatusResponse {
    fn from(s: NodeStatus) -> Self {
        pb::StatusResponse {
            node_id: s.node_id,
            state: pb::ServerState::from(s.role) as i32,
            current_term: s.current_term,
            leader_id: s.leader_id.unwrap_or(0),
            leader_addr: s.leader_addr.unwrap_or_default(),
            last_log_index: s.last_log_index,
            last_applied_index: s.last_applied_index,
            snapshot_index: s.snapshot_index,
            purged_index: s.purged_index,
            voters: s.voters.into_iter().map(Into::into).collect(),
            learners: s.learners.into_iter().map(Into::into).collect(),
            role_status: s.role_status,
        }
    }
}

/// The membership after a change, and the log index of the entry that
/// carried it (0 for `Initialize`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    pub log_index: u64,
    pub voters: Vec<ClusterMember>,
    pub learners: Vec<ClusterMember>,
}

impl From<Membership> for pb::MembershipResponse {
    fn from(m: Membership) -> Self {
        pb::MembershipResponse {
            log_index: m.log_index,
            voters: m.voters.into_iter().map(Into::into).collect(),
            learners: m.learners.into_iter().map(Into::into).collect(),
        }
    }
}

/// `Initialize` with the first members of a new cluster.
pub fn initialize_request(members: Vec<ClusterMember>) -> pb::InitializeRequest {
    pb::InitializeRequest {
        members: members.into_iter().map(Into::into).collect(),
    }
}

/// The members an `Initialize` names (the node checks them).
pub fn initial_members(r: pb::InitializeRequest) -> Vec<ClusterMember> {
    r.members.into_iter().map(Into::into).collect()
}

/// Add `member` as a learner; with `wait_caught_up`, answer once it has
/// caught up with the leader's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddLearner {
    pub member: ClusterMember,
    pub wait_caught_up: bool,
}

impl From<AddLearner> for pb::AddLearnerRequest {
    fn from(a: AddLearner) -> Self {
        pb::AddLearnerRequest {
            member: Some(a.member.into()),
            wait_caught_up: a.wait_caught_up,
        }
    }
}

impl TryFrom<pb::AddLearnerRequest> for AddLearner {
    type Error = ConvertError;

    fn try_from(r: pb::AddLearnerRequest) -> Result<Self, ConvertError> {
        Ok(AddLearner {
            member: r
                .member
                .ok_or_else(|| ConvertError::missing("member"))?
                .into(),
            wait_caught_up: r.wait_caught_up,
        })
    }
}

/// Make exactly `voters` the voters; the others removed stay learners when
/// `keep_removed_as_learners`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeMembership {
    pub voters: BTreeSet<u64>,
    pub keep_removed_as_learners: bool,
}

impl From<ChangeMembership> for pb::ChangeMembershipRequest {
    fn from(c: ChangeMembership) -> Self {
        pb::ChangeMembershipRequest {
            voter_ids: c.voters.into_iter().collect(),
            keep_removed_as_learners: c.keep_removed_as_learners,
        }
    }
}

impl From<pb::ChangeMembershipRequest> for ChangeMembership {
    fn from(r: pb::ChangeMembershipRequest) -> Self {
        ChangeMembership {
            voters: r.voter_ids.into_iter().collect(),
            keep_removed_as_learners: r.keep_removed_as_learners,
        }
    }
}

/// Remove `node_id` from the voters and the learners.
pub fn remove_node_request(node_id: u64) -> pb::RemoveNodeRequest {
    pb::RemoveNodeRequest { node_id }
}

/// The log index a triggered snapshot covers.
pub fn trigger_snapshot_response(snapshot_index: u64) -> pb::TriggerSnapshotResponse {
    pb::TriggerSnapshotResponse { snapshot_index }
}

/// A value read from a node's applied state (`None`: no such key), and the
/// log index applied when it was read.
pub fn read_local_response(value: Option<Vec<u8>>, applied_index: u64) -> pb::ReadLocalResponse {
    pb::ReadLocalResponse {
        found: value.is_some(),
        value: value.unwrap_or_default(),
        applied_index,
    }
}

/// A write forwarded to the leader: the encoded command, and how many
/// times it has been forwarded so far.
pub fn client_write_request(command: Vec<u8>, forward_hops: u32) -> pb::ClientWriteRequest {
    pb::ClientWriteRequest {
        command,
        forward_hops,
    }
}

/// A committed write: the state machine's encoded response, the log index
/// of its entry and the leader that committed it.
pub fn client_write_response(
    response: Vec<u8>,
    log_index: u64,
    leader_id: u64,
) -> pb::ClientWriteResponse {
    pb::ClientWriteResponse {
        response,
        log_index,
        leader_id,
    }
}

/// An encoded openraft `AppendEntriesRequest`.
pub fn append_entries_request(payload: Vec<u8>) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest { payload }
}

/// An encoded openraft `VoteRequest`.
pub fn vote_request(payload: Vec<u8>) -> pb::VoteRequest {
    pb::VoteRequest { payload }
}

/// One snapshot chunk: its encoded header (vote, meta, offset, done) and
/// its bytes.
pub fn install_snapshot_request(header: Vec<u8>, chunk: Vec<u8>) -> pb::InstallSnapshotRequest {
    pb::InstallSnapshotRequest { header, chunk }
}

/// A Raft RPC's answer: `Ok` with the encoded response, or `Err` with
/// openraft's encoded error.
pub fn raft_response(result: Result<Vec<u8>, Vec<u8>>) -> pb::RaftResponse {
    use pb::raft_response::Result as Answer;
    pb::RaftResponse {
        result: Some(match result {
            Ok(bytes) => Answer::Ok(bytes),
            Err(bytes) => Answer::RaftError(bytes),
        }),
    }
}

/// The encoded response (`Ok`) or openraft error (`Err`) a Raft RPC's
/// answer carries.
pub fn raft_result_from_proto(
    r: pb::RaftResponse,
) -> Result<Result<Vec<u8>, Vec<u8>>, ConvertError> {
    use pb::raft_response::Result as Answer;
    match r.result {
        Some(Answer::Ok(bytes)) => Ok(Ok(bytes)),
        Some(Answer::RaftError(bytes)) => Ok(Err(bytes)),
        None => Err(ConvertError::missing("result")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64) -> ClusterMember {
        ClusterMember {
            node_id: id,
            addr: format!("127.0.0.1:{}", 7000 + id),
        }
    }

    #[test]
    fn a_status_keeps_every_field_and_says_none_with_zero() {
        let status = NodeStatus {
            node_id: 2,
            role: RaftRole::Follower,
            current_term: 5,
            leader_id: Some(1),
            leader_addr: Some(member(1).addr),
            last_log_index: 40,
            last_applied_index: 39,
            snapshot_index: 30,
            purged_index: 20,
            voters: vec![member(1), member(2)],
            learners: vec![member(3)],
            role_status: Vec::new(),
        };
        let wire = pb::StatusResponse::from(status.clone());
        assert_eq!(wire.state(), pb::ServerState::Follower);
        assert_eq!(
            (wire.leader_id, wire.leader_addr.as_str()),
            (1, "127.0.0.1:7001")
        );
        assert_eq!(wire.voters.len(), 2);
        assert_eq!(wire.learners[0].node_id, 3);
        let alone = pb::StatusResponse::from(NodeStatus {
            leader_id: None,
            leader_addr: None,
            ..status
        });
        assert_eq!((alone.leader_id, alone.leader_addr.as_str()), (0, ""));
    }

    #[test]
    fn admin_requests_survive_the_round_trip() {
        let add = AddLearner {
            member: member(4),
            wait_caught_up: true,
        };
        assert_eq!(
            AddLearner::try_from(pb::AddLearnerRequest::from(add.clone())).unwrap(),
            add
        );
        let missing = AddLearner::try_from(pb::AddLearnerRequest::default()).unwrap_err();
        assert_eq!(missing.to_string(), "member is required");
        let change = ChangeMembership {
            voters: BTreeSet::from([1, 2, 4]),
            keep_removed_as_learners: false,
        };
        assert_eq!(
            ChangeMembership::from(pb::ChangeMembershipRequest::from(change.clone())),
            change
        );
        let members = vec![member(1), member(2)];
        assert_eq!(
            initial_members(initialize_request(members.clone())),
            members
        );
    }

    #[test]
    fn a_raft_answer_is_its_bytes_or_its_error() {
        for result in [Ok(vec![1, 2]), Err(vec![3])] {
            assert_eq!(
                raft_result_from_proto(raft_response(result.clone())).unwrap(),
                result
            );
        }
        let empty = raft_result_from_proto(pb::RaftResponse { result: None }).unwrap_err();
        assert_eq!(empty.field(), "result");
        let read = read_local_response(None, 9);
        assert!(!read.found && read.value.is_empty() && read.applied_index == 9);
    }
}
