//! The crate's error type.

use crate::types::NodeId;
use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;

impl From<crate::kv::KvError> for Error {
    fn from(e: crate::kv::KvError) -> Self {
        match e {
            crate::kv::KvError::Sled(e) => Error::Storage(e),
            crate::kv::KvError::Io(e) => Error::Io(e),
        }
    }
}

/// Everything that can go wrong in the replicated storage layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// sled failed (I/O, corruption, a lock held by another process).
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    /// A stored value could not be decoded: the data directory is corrupt or
    /// was written by an incompatible version.
    #[error("corrupt stored value under {key}: {source}")]
    Corrupt {
        /// Which key held the bad value.
        key: String,
        /// The decoding failure.
        #[source]
        source: serde_json::Error,
    },
    /// A message could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[from] serde_json::Error),
    /// openraft reported a fatal error; the node stops.
    #[error("raft: {0}")]
    Fatal(Box<openraft::error::Fatal<NodeId>>),
    /// openraft refused the configuration.
    #[error("invalid raft config: {0}")]
    Config(Box<openraft::ConfigError>),
    /// A configuration value is out of range; names the key.
    #[error("invalid config `{key}`: {reason}")]
    InvalidConfig {
        /// The config key.
        key: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// This node is not the leader; the leader is named when known.
    #[error("not the leader; leader is {leader_id:?} at {leader_addr:?}")]
    NotLeader {
        /// The leader's id, when known.
        leader_id: Option<NodeId>,
        /// The leader's cluster address, when known.
        leader_addr: Option<String>,
    },
    /// A membership change could not be made.
    #[error("membership: {0}")]
    Membership(String),
    /// The cluster is already initialised.
    #[error("cluster already initialised")]
    AlreadyInitialized,
    /// A request breaks a limit or is malformed.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The write queue is full.
    #[error("overloaded: write queue of {capacity} is full")]
    Overloaded {
        /// The queue's capacity.
        capacity: usize,
    },
    /// A call to another member failed.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A wait did not see its condition before the deadline.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The node is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// Any other openraft error (storage failure inside Raft, etc.).
    #[error("raft: {0}")]
    Raft(String),
    /// Binding or serving the gRPC endpoint failed.
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// Plain I/O.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl From<openraft::error::Fatal<NodeId>> for Error {
    fn from(e: openraft::error::Fatal<NodeId>) -> Self {
        Error::Fatal(Box::new(e))
    }
}

impl From<openraft::ConfigError> for Error {
    fn from(e: openraft::ConfigError) -> Self {
        Error::Config(Box::new(e))
    }
}

impl Error {
    /// The stable reason code for this error, as named in
    /// `tollgate.cluster.v1.ErrorCode`.
    pub fn code(&self) -> &'static str {
        match self {
            Error::NotLeader {
                leader_id: Some(_), ..
            } => "ERROR_CODE_NOT_LEADER",
            Error::NotLeader {
                leader_id: None, ..
            } => "ERROR_CODE_NO_LEADER",
            Error::InvalidArgument(_) | Error::InvalidConfig { .. } | Error::Codec(_) => {
                "ERROR_CODE_INVALID_ARGUMENT"
            }
            Error::AlreadyInitialized => "ERROR_CODE_ALREADY_INITIALIZED",
            Error::Membership(_) => "ERROR_CODE_MEMBERSHIP_CONFLICT",
            Error::Storage(_) | Error::Corrupt { .. } | Error::Io(_) => "ERROR_CODE_STORAGE",
            Error::ShuttingDown | Error::Fatal(_) => "ERROR_CODE_SHUTTING_DOWN",
            Error::Overloaded { .. } => "ERROR_CODE_OVERLOADED",
            Error::Unavailable(_) | Error::Timeout(_) | Error::Transport(_) => {
                "ERROR_CODE_UNAVAILABLE"
            }
            Error::Config(_) => "ERROR_CODE_INVALID_ARGUMENT",
            Error::Raft(_) => "ERROR_CODE_UNAVAILABLE",
        }
    }
}

/// openraft's refusal of a write: where the leader is, or why not.
fn not_leader(f: openraft::error::ForwardToLeader<NodeId, BasicNode>) -> Error {
    Error::NotLeader {
        leader_id: f.leader_id,
        leader_addr: f.leader_node.map(|n| n.addr),
    }
}

pub(crate) fn client_write_error(e: ClientWriteError<NodeId, BasicNode>) -> Error {
    match e {
        ClientWriteError::ForwardToLeader(f) => not_leader(f),
        ClientWriteError::ChangeMembershipError(e) => Error::Membership(e.to_string()),
    }
}

pub(crate) fn raft_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> Error {
    match e {
        RaftError::APIError(e) => client_write_error(e),
        RaftError::Fatal(openraft::error::Fatal::Stopped) => Error::ShuttingDown,
        RaftError::Fatal(f) => Error::from(f),
    }
}
