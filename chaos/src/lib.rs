//! Chaos testing for Tollgate.
//!
//! A run starts real `tollgate serve` processes (one origin, two regions of
//! three nodes), each in its own network namespace on a bridge the harness
//! creates ([`net`], [`cluster`]); drives a workload against them while a
//! nemesis injects faults from a seeded, printed schedule ([`workload`],
//! [`nemesis`]); records everything that happened as JSON lines
//! ([`history`]); heals, waits for convergence, and hands the history to a
//! pure checker ([`checker`]) that looks for broken invariants.
//!
//! The checker is the part that must be able to fail: it takes a history
//! and nothing else (no clock, no network), so doctored histories test it
//! without root (`tests/checker.rs`).

pub mod checker;
pub mod cluster;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod proxy;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod workload;
