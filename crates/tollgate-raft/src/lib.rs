//! Tollgate's replicated storage layer: one openraft 0.9 group whose log and
//! state machine live in sled and whose members talk over tonic.
//!
//! The crate is generic over a role's state machine ([`StateMachineLogic`]):
//! the origin and every region plug their own commands in. The apply function
//! is pure (command + read access to the current state -> writes + response),
//! so it is tested without sled and can run in a simulation.
//!
//! Map:
//! - [`logic`]: the role trait, the read view, and [`KvLogic`], a small
//!   key-value state machine for tests and benchmarks.
//! - [`store`]: the sled log store and the sled state machine with its
//!   snapshot builder; every durability point is a sled flush plus an
//!   fdatasync of sled's file (sled 0.34's own flush does not fsync).
//! - [`network`]: the tonic client side of the Raft transport.
//! - [`server`]: the gRPC services, the Raft transport and the cluster admin.
//! - [`node`]: a node that ties them together, with a write batcher in front
//!   of `client_write` so that concurrent proposals share one log entry (and
//!   so one append and one fsync per node), and a failover watchdog
//!   (`failover`) that campaigns at once when the leader's port refuses
//!   connections.
//!
//! Invariants:
//! - The state machine is only written through Raft apply; apply and
//!   `last_applied` are one sled batch.
//! - `append` reports entries flushed only after they are on disk (sled
//!   flush, then fdatasync); the vote is on disk before `save_vote` returns.
//! - The commit index and the applied state are not flushed on the write
//!   path: after an unclean stop a node answers reads only once it has
//!   caught up with a leader ([`recovery`]).
//! - Nothing here reads the clock inside apply: time is part of a command.

pub mod codec;
mod config;
pub mod error;
mod failover;
mod inner;
pub mod kv;
pub mod logic;
pub mod network;
pub mod node;
pub mod quiet;
pub mod recovery;
pub mod runtime;
pub mod server;
mod snapshot_data;
pub mod status;
pub mod store;
pub mod types;

pub use config::{NodeConfig, SNAPSHOT_LOG_BYTES_MAX_DEFAULT};
pub use error::Error;
pub use inner::WriteOutcome;
pub use logic::{
    Applied, ApplyContext, KvCommand, KvLogic, KvResponse, MemState, ReadState, StateMachineLogic,
    Write,
};
pub use node::Node;
pub use store::{
    open_db_for_inspection, open_storage, LogGrowth, LogStore, SledStateMachine, StateView,
    StorageConfig,
};
pub use types::{NodeId, TypeConfig};
