//! What every Tollgate node serves with, whichever cluster it belongs to:
//! gRPC servers carrying the standard health service (following the node's
//! readiness) and reflection (`grpc`), the process's metrics registry
//! (`telemetry`), the stop signal (`shutdown`), the wall clock
//! (`Clock`, from `tollgate-clock`), reading a node's applied state (`served`), and license verification
//! against the revocations a node holds (`licenses`), and the per-request
//! limits and rate limiter every port shares (`limits`).
//!
//! The origin node (`tollgate-origin-node`) and the region node
//! (`tollgate-region-node`) build on this crate; it knows neither of them,
//! and never serves REST.

mod error;
pub use tollgate_clock::Clock;
pub mod grpc;
pub mod licenses;
pub mod limits;
pub mod served;
pub mod shutdown;
pub mod status;
pub mod telemetry;

pub use error::NodeError;
