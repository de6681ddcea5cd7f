use crate::FeedError;
use tokio::sync::watch;
use tollgate_model::{ChangeRecord, Mutation};

/// The origin's committed changes, as the changefeed reads them.
pub trait ChangeSource: Send + Sync + 'static {
    /// The newest committed revision (0 before the first).
    fn head(&self) -> Result<u64, FeedError>;
    /// Records after this revision are retained; older ones were compacted
    /// away and a subscriber below it needs a snapshot. 0 when nothing was
    /// compacted.
    fn floor(&self) -> Result<u64, FeedError>;
    /// Up to `limit` records after `after`, ascending and consecutive.
    fn records(&self, after: u64, limit: usize) -> Result<Vec<ChangeRecord>, FeedError>;
    /// The whole state at one revision, as the mutations that rebuild it.
    fn snapshot(&self) -> Result<(u64, Vec<Mutation>), FeedError>;
    /// Changes whenever the head may have moved.
    fn head_changes(&self) -> watch::Receiver<u64>;
}
