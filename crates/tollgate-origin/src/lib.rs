//! The origin: the source of truth for the catalog, accounts, entitlements,
//! orders and access requests. This crate holds its replicated state
//! machine: [`OriginLogic`], a pure apply function over the origin's
//! key-value state that gives every committed change the next revision, a
//! change record for the changefeed and an audit record.

mod apply;
pub mod command;
pub mod keys;
pub mod licenses;
pub mod portal;
pub mod quota;
pub mod regions;
pub mod signing;
mod state;

pub use apply::{
    OriginLogic, AUTO_APPROVER, COMPACT_RECORDS_MAX, ORDER_FLOATING_LEASE_TTL_SECONDS,
};
pub use command::*;
pub use signing::{SigningRing, ROTATION_OVERLAP_MAX_SECONDS};
pub use state::dataset_from_entries;
