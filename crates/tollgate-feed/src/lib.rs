//! The changefeed, both halves.
//!
//! - [`FeedService`] runs on every origin node: `Subscribe(from_revision)`
//!   streams the signed change record of every revision after it, in order
//!   and without gaps, in bounded batches, then new ones as they commit, with
//!   heartbeats carrying the head revision while idle. A subscriber below
//!   the retention floor first gets a signed snapshot of the whole state.
//! - [`Follower`] is what a region's leader runs: it subscribes from the
//!   last revision its region applied and verifies every record (signature,
//!   revision, continuity) before handing it on; a record that fails is
//!   refused and the follower does not move past it.
//!
//! The origin's state is reached through [`ChangeSource`], so the service is
//! the same over a Raft node and over the state machine in memory.

mod error;
mod follower;
mod server;
mod snapshot;
mod source;

pub use error::FeedError;
pub use follower::{
    fetch_endorsed_keys, fetch_public_keys, verify_record, FollowEvent, Follower, FollowerConfig,
};
pub use server::{FeedConfig, FeedService};
pub use snapshot::{SnapshotChunkPayload, SNAPSHOT_CHUNK_BYTES_MAX};
pub use source::ChangeSource;

/// Most records in one batch.
pub const BATCH_RECORDS_MAX: usize = 512;
/// Most payload bytes in one batch.
pub const BATCH_BYTES_MAX: usize = 4 * 1024 * 1024;
