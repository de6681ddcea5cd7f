//! The origin's replicated state as the REST API (`OriginStore`) and the
//! changefeed (`ChangeSource`) read and write it: writes go through the
//! origin's Raft group, reads come from this node's applied state.

use std::sync::Arc;
use tokio::sync::watch;
use tollgate_api::{OriginStore, StoreError};
use tollgate_feed::{ChangeSource, FeedError};
use tollgate_model::{ChangeRecord, Mutation};
use tollgate_origin::{dataset_from_entries, keys, OriginCommand, OriginLogic, OriginResponse};
use tollgate_raft::{Node, StateView};
use tollgate_server::served::{read_u64, scan_all, served_entries};

/// Attempts at a consistent snapshot before giving up for this subscriber.
const SNAPSHOT_ATTEMPTS_MAX: usize = 5;

/// The origin's state as the API and the changefeed read and write it.
pub(crate) struct OriginState {
    pub(crate) node: Arc<Node<OriginLogic>>,
    pub(crate) view: StateView,
    /// The applied head revision, for changefeed streams to wait on.
    pub(crate) heads: watch::Sender<u64>,
    /// Every reading of the time this node makes (the node's config's).
    pub(crate) clock: tollgate_clock::Clock,
}

impl OriginStore for OriginState {
    async fn write(&self, command: OriginCommand) -> Result<OriginResponse, StoreError> {
        match self.node.write(command).await {
            Ok(outcome) => Ok(outcome.response),
            Err(tollgate_raft::Error::NotLeader { leader_addr, .. }) => {
                Err(StoreError::NotLeader { leader_addr })
            }
            Err(
                e @ (tollgate_raft::Error::Overloaded { .. }
                | tollgate_raft::Error::ShuttingDown
                | tollgate_raft::Error::Timeout(_)),
            ) => Err(StoreError::Unavailable(e.to_string())),
            Err(e) => Err(StoreError::Internal(e.to_string())),
        }
    }

    async fn wait_applied(
        &self,
        revision: u64,
        timeout: std::time::Duration,
    ) -> Result<(), StoreError> {
        let mut heads = self.heads.subscribe();
        let reached = tokio::time::timeout(timeout, heads.wait_for(|head| *head >= revision)).await;
        match reached {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Unavailable("the node is stopping".into())),
            Err(_) => Err(StoreError::Unavailable(format!(
                "revision {revision} committed, and this node had not applied it within {} ms",
                timeout.as_millis()
            ))),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.view
            .get(key)
            .map_err(|e| StoreError::Internal(e.to_string()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<tollgate_api::store::Entries, StoreError> {
        self.view
            .scan(prefix, after, limit)
            .map_err(|e| StoreError::Internal(e.to_string()))
    }
}

impl ChangeSource for OriginState {
    fn head(&self) -> Result<u64, FeedError> {
        read_u64(&self.view, keys::HEAD_REVISION).map_err(FeedError::Source)
    }

    fn floor(&self) -> Result<u64, FeedError> {
        read_u64(&self.view, keys::CHANGE_FLOOR).map_err(FeedError::Source)
    }

    fn records(&self, after: u64, limit: usize) -> Result<Vec<ChangeRecord>, FeedError> {
        let entries = self
            .view
            .scan(
                keys::CHANGE_PREFIX.as_bytes(),
                Some(&keys::change(after)),
                limit,
            )
            .map_err(|e| FeedError::Source(e.to_string()))?;
        entries
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| FeedError::Source(e.to_string())))
            .collect()
    }

    fn snapshot(&self) -> Result<(u64, Vec<Mutation>), FeedError> {
        // sled has no point-in-time read across keys: read the head before
        // and after, and retry if a commit landed in between.
        for _ in 0..SNAPSHOT_ATTEMPTS_MAX {
            let before = self.head()?;
            let entries =
                served_entries(&self.view).map_err(|e| FeedError::Source(e.to_string()))?;
            // Credentials are for region nodes, not part of the data set.
            let credentials = scan_all(&self.view, keys::CREDENTIAL_PREFIX)
                .map_err(|e| FeedError::Source(e.to_string()))?;
            if self.head()? == before {
                let dataset = dataset_from_entries(entries).map_err(FeedError::Source)?;
                let mut mutations = dataset.to_mutations();
                for (key, value) in credentials {
                    let credential = serde_json::from_slice(&value).map_err(|e| {
                        FeedError::Source(format!(
                            "stored value under {} does not decode: {e}",
                            String::from_utf8_lossy(&key)
                        ))
                    })?;
                    mutations.push(Mutation::PutCredential(credential));
                }
                return Ok((before, mutations));
            }
        }
        Err(FeedError::Source(format!(
            "the state kept changing; no consistent snapshot after {SNAPSHOT_ATTEMPTS_MAX} attempts"
        )))
    }

    fn head_changes(&self) -> watch::Receiver<u64> {
        self.heads.subscribe()
    }
}
