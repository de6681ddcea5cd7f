//! What the API needs from the origin's replicated state: commit a command,
//! read a key, scan a prefix. A Raft node provides it in production;
//! [`MemStore`] applies the same state machine in memory for the API's own
//! tests.

use std::future::Future;
use std::sync::Mutex;
use tollgate_origin::{OriginCommand, OriginLogic, OriginResponse};
use tollgate_raft::{ApplyContext, MemState};

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// This node cannot commit; the leader is elsewhere.
    #[error("this origin node is not the leader{}", .leader_addr.as_ref().map(|a| format!("; the leader is at {a}")).unwrap_or_default())]
    NotLeader { leader_addr: Option<String> },
    /// No quorum, shutting down, or timed out.
    #[error("the origin cannot commit right now: {0}")]
    Unavailable(String),
    /// Storage failed underneath.
    #[error("storage failed: {0}")]
    Internal(String),
}

/// Key-value pairs in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

pub trait OriginStore: Send + Sync + 'static {
    /// Commits `command` through the origin's log and returns its response.
    fn write(
        &self,
        command: OriginCommand,
    ) -> impl Future<Output = Result<OriginResponse, StoreError>> + Send;
    /// Waits until this node has applied `revision` (a write forwarded to
    /// the leader returns before the follower that forwarded it applies
    /// it): `Unavailable` after `timeout`.
    fn wait_applied(
        &self,
        revision: u64,
        timeout: std::time::Duration,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The value under `key` in this node's applied state.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Up to `limit` entries whose key starts with `prefix` and sorts after
    /// `after`, in key order.
    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError>;
}

/// The origin's state machine applied in memory, in order.
#[derive(Debug, Default)]
pub struct MemStore {
    state: Mutex<MemState>,
}

impl OriginStore for MemStore {
    async fn write(&self, command: OriginCommand) -> Result<OriginResponse, StoreError> {
        let ctx = ApplyContext {
            log_index: 0,
            term: 0,
            position_in_entry: 0,
        };
        let mut state = self
            .state
            .lock()
            .map_err(|_| StoreError::Internal("poisoned".into()))?;
        state
            .apply(&OriginLogic, &ctx, &command)
            .map_err(|e| StoreError::Internal(e.to_string()))
    }

    async fn wait_applied(
        &self,
        _revision: u64,
        _timeout: std::time::Duration,
    ) -> Result<(), StoreError> {
        // Applied in order, in the call that wrote it.
        Ok(())
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let state = self
            .state
            .lock()
            .map_err(|_| StoreError::Internal("poisoned".into()))?;
        Ok(state.data.get(key).cloned())
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let state = self
            .state
            .lock()
            .map_err(|_| StoreError::Internal("poisoned".into()))?;
        Ok(state
            .data
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| after.is_none_or(|a| k.as_slice() > a))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
