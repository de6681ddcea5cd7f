//! Running nodes, assembled from their parts. Start-up order: config (the
//! caller validated it), storage and keys, Raft, then the servers on the
//! listeners the caller bound (tests bind `127.0.0.1:0`). Shutdown: stop
//! accepting, drain the servers with a deadline, shut Raft down (which
//! flushes storage).

mod error;
mod license_api;
mod meter;
mod ops;
mod origin;
mod quota_agent;
mod quota_api;
mod region;
mod state;
pub mod telemetry;
mod usage_api;
mod watch;
mod webhooks;

pub use error::NodeError;
pub use license_api::RegionIssuerConfig;
pub use meter::{MeterConfig, MeterStats};
pub use ops::{RegionStatus, SyncCounts};
pub use origin::{OriginConfig, OriginListeners, OriginNode};
pub use region::{RegionConfig, RegionListeners, RegionNode, SyncStats};
pub use webhooks::WebhookConfig;
