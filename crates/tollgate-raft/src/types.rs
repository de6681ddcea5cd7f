//! openraft's type configuration, generic over the role's state machine.

use std::cmp::Ordering;
use std::fmt;
use std::marker::PhantomData;

use crate::logic::StateMachineLogic;

/// A member's Raft id: unique in its cluster, never reused, never 0.
pub type NodeId = u64;

/// openraft's type configuration for a role `L`.
///
/// One Raft log entry carries a *batch* of the role's commands (the write
/// batcher in [`crate::node`] packs concurrent proposals into one entry), and
/// its response is the list of the commands' responses, in order.
pub struct TypeConfig<L>(PhantomData<fn() -> L>);

// Manual impls: deriving would demand the same traits of `L`, which is only a
// marker here.
impl<L> Clone for TypeConfig<L> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<L> Copy for TypeConfig<L> {}
impl<L> Default for TypeConfig<L> {
    fn default() -> Self {
        TypeConfig(PhantomData)
    }
}
impl<L> fmt::Debug for TypeConfig<L> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TypeConfig")
    }
}
impl<L> PartialEq for TypeConfig<L> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<L> Eq for TypeConfig<L> {}
impl<L> PartialOrd for TypeConfig<L> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<L> Ord for TypeConfig<L> {
    fn cmp(&self, _: &Self) -> Ordering {
        Ordering::Equal
    }
}

impl<L: StateMachineLogic> openraft::RaftTypeConfig for TypeConfig<L> {
    type D = Vec<L::Command>;
    type R = Vec<L::Response>;
    type NodeId = NodeId;
    type Node = openraft::BasicNode;
    type Entry = openraft::Entry<TypeConfig<L>>;
    type SnapshotData = crate::snapshot_data::SnapshotData;
    type AsyncRuntime = crate::runtime::Runtime;
    type Responder = openraft::impls::OneshotResponder<TypeConfig<L>>;
}

/// The openraft handle for role `L`.
pub type Raft<L> = openraft::Raft<TypeConfig<L>>;
/// A log entry for role `L`.
pub type Entry<L> = openraft::Entry<TypeConfig<L>>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// A storage error.
pub type StorageError = openraft::StorageError<NodeId>;
/// Membership as stored.
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
