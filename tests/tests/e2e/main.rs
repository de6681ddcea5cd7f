//! Every cross-crate integration test, in one binary: each module is one
//! scenario with real nodes on 127.0.0.1:0. One binary instead of one per file
//! links the whole stack once, which keeps a cold `cargo test` within the disk
//! and time a CI machine has.

mod bad_input;
mod credentials;
mod http_api;
mod licenses;
mod limits;
mod origin_e2e;
mod origin_webhooks;
mod quota_regions;
mod region_billing;
mod region_check_path;
mod region_e2e;
mod region_geo;
mod region_leader_kill;
mod region_metering;
mod region_ops;
mod region_partition;
mod region_recovery;
mod region_reports;
mod region_scale;
mod region_snapshot;
mod region_tampered;
mod region_watch;
mod sdk;
mod sdk_hung_node;
mod tls;
mod wire_to_decision;
