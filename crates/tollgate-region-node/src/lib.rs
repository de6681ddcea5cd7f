//! A region node: a member of a region's Raft group. Its leader follows the
//! origin's signed changefeed and leases cap slices and seats from the
//! origin; every node answers checks, usage reports, seat leases and
//! license requests from its own applied state.
//!
//! Start-up order: config (the caller validated it), storage, Raft, then the
//! servers on the listeners the caller bound (tests bind `127.0.0.1:0`).
//!
//! Modules, in dependency order (none imports one after it): `meter`
//! (metering consumption); `config`; `credentials` (who may call the check
//! port); `views` (what checks read, in memory,
//! at one revision, and an account's records within the model's limits);
//! `watch` (the `Watch` streams and the account data they and license
//! issuing read); `follow` (the leader's changefeed loop); `quota_agent`
//! (the leader's leases and reports to the origin); `checker` (checks
//! answered); `check_service`, `usage_service` and `license_service` (gRPC
//! on the check port); `http_api` (the check port's HTTP/JSON routes,
//! answered by `check_service`); `ops` (`/healthz`, `/readyz`, `/v1/status`,
//! `/metrics`); `report` (the leader's region report to the origin, and
//! each node's facts in its Raft `Status`); and `node`, which assembles
//! them.

mod check_service;
mod checker;
mod config;
mod credentials;
mod follow;
mod http_api;
mod license_service;
mod meter;
mod node;
mod ops;
mod quota_agent;
mod report;
mod usage_service;
mod views;
mod watch;

pub use checker::REVISION_WAIT_MAX;
pub use config::{RegionConfig, RegionIssuerConfig, RegionListeners};
pub use credentials::{CredentialMode, CHECK_PORT_REFUSED, CREDENTIAL_METADATA_KEY};
pub use follow::SyncStats;
pub use http_api::{
    openapi::document as openapi_document, JSON_BODY_BYTES_MAX, ROUTES as HTTP_ROUTES,
};
pub use meter::{MeterConfig, MeterStats};
pub use node::RegionNode;
pub use ops::{RegionStatus, SyncCounts};
pub use tollgate_server::NodeError;
