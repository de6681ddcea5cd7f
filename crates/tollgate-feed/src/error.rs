use thiserror::Error;
use tollgate_signing::VerifyError;

#[derive(Debug, Error)]
pub enum FeedError {
    /// The origin's state could not be read.
    #[error("reading the origin's state failed: {0}")]
    Source(String),
    /// The node that followed the origin stopped leading its region while
    /// applying what it received: the new leader follows instead.
    #[error("this node stopped leading its region: {0}")]
    LeaderMoved(String),
    /// The subscriber asked for revisions the origin does not have.
    #[error("revision {requested} is ahead of the origin's head {head}")]
    AheadOfOrigin { requested: u64, head: u64 },
    /// A record or snapshot chunk failed verification: the follower stays
    /// on the last good revision.
    #[error("revision {revision} refused: {reason}")]
    Refused { revision: u64, reason: String },
    #[error("signature check failed at revision {revision}: {source}")]
    Signature {
        revision: u64,
        #[source]
        source: VerifyError,
    },
    #[error("the origin at {endpoint} is unreachable: {reason}")]
    Unreachable { endpoint: String, reason: String },
    #[error("the changefeed stream failed: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the changefeed stream ended")]
    Ended,
}
