//! An origin node: a member of the origin's Raft group serving the REST API,
//! the changefeed, the quota service and license tokens, keeping the
//! changefeed within its retention and delivering outgoing webhooks.
//!
//! Start-up order: config (the caller validated it), storage and keys, Raft,
//! then the servers on the listeners the caller bound (tests bind
//! `127.0.0.1:0`). Shutdown: stop accepting, drain the servers with a
//! deadline, shut Raft down (which flushes storage).
//!
//! Modules, in dependency order: `store` (the replicated state as REST and
//! the changefeed see it), `quota_service` and `license_service` (gRPC on
//! the changefeed port), `webhooks`, and `node`, which assembles them.

mod license_service;
mod node;
mod queues;
mod quota_service;
mod store;
mod webhooks;

pub use node::{OriginConfig, OriginListeners, OriginNode};
pub use tollgate_server::NodeError;
pub use webhooks::WebhookConfig;
