//! A node's configuration: every field has a default except the id and the
//! data directory.

use openraft::{Config, SnapshotPolicy};

use crate::error::Error;
use crate::network::NetworkConfig;
use crate::store::StorageConfig;
use crate::types::NodeId;

/// Default of [`NodeConfig::snapshot_log_bytes_max`]: 256 MiB.
pub const SNAPSHOT_LOG_BYTES_MAX_DEFAULT: u64 = 256 * 1024 * 1024;

/// Everything a node needs to know. Every field has a default except the
/// id and the data directory.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's Raft id: unique in the cluster, never reused, not 0.
    pub node_id: NodeId,
    /// A name for logs; members of one cluster should agree on it.
    pub cluster_name: String,
    /// Where and how the data is kept.
    pub storage: StorageConfig,
    /// The address other members reach this node at. Default: the
    /// listener's local address.
    pub advertise_addr: Option<String>,
    /// Leader heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Election timeout, lower bound (randomised per round).
    pub election_timeout_ms_min: u64,
    /// Election timeout, upper bound.
    pub election_timeout_ms_max: u64,
    /// Build a snapshot (and then purge the log) after this many entries
    /// were applied since the last one.
    pub snapshot_logs_since_last: u64,
    /// Also build a snapshot once the log grew by this many bytes since the
    /// last one began (or since the node started): a region catching up on
    /// the origin writes entries of up to 256 KiB, so counting entries
    /// alone lets the log reach gigabytes. 0: entries only.
    pub snapshot_log_bytes_max: u64,
    /// Entries kept in the log behind the snapshot, for followers that are
    /// only a little behind.
    pub max_in_snapshot_log_to_keep: u64,
    /// Largest snapshot chunk per InstallSnapshot call, in bytes.
    pub snapshot_chunk_bytes_max: u64,
    /// Time allowed for one snapshot chunk to be sent and installed.
    pub install_snapshot_timeout_ms: u64,
    /// Most entries in one AppendEntries call.
    pub max_payload_entries: u64,
    /// Transport limits and timing.
    pub network: NetworkConfig,
    /// Largest serialised command accepted, in bytes.
    pub command_bytes_max: usize,
    /// Commands waiting for the batcher; a full queue rejects writes
    /// (`Error::Overloaded`).
    pub write_queue_capacity: usize,
    /// Most commands in one log entry.
    pub write_batch_max: usize,
    /// Most serialised command bytes in one log entry.
    pub write_batch_bytes_max: usize,
    /// Entries proposed but not yet committed, at most. Default 1: openraft
    /// 0.9 flushes every append on its own and its core waits for that flush,
    /// so each extra entry in flight costs one more fsync on every node;
    /// measured on one shared disk, one entry in flight (with everything that
    /// queued meanwhile batched into the next) commits the most writes per
    /// second at every client count tried (1, 16, 64).
    pub writes_in_flight_max: usize,
    /// A write to a follower is forwarded to the leader at most this many
    /// hops; 0 answers `NotLeader` instead.
    pub forward_hops_max: u32,
    /// Time allowed for a forwarded write.
    pub forward_timeout_ms: u64,
    /// Campaign at once when the leader's port refuses connections, instead
    /// of waiting out its lease (see the `failover` module).
    pub fast_failover: bool,
    /// How members talk: mutual TLS, each proving it is a member of this
    /// node's own cluster (an operator's certificate may also call the
    /// cluster admin service), or plaintext. Default plaintext, for this
    /// crate's own tests; nodes set it from their config, where plaintext
    /// takes an explicit `insecure_plaintext = true`.
    pub transport: tollgate_tls::Transport,
}

impl NodeConfig {
    /// Defaults for a node with `node_id` keeping its data in `data_dir`.
    pub fn new(node_id: NodeId, data_dir: impl Into<std::path::PathBuf>) -> Self {
        NodeConfig {
            node_id,
            cluster_name: "tollgate".into(),
            storage: StorageConfig::new(data_dir),
            advertise_addr: None,
            heartbeat_interval_ms: 50,
            election_timeout_ms_min: 150,
            election_timeout_ms_max: 300,
            snapshot_logs_since_last: 10_000,
            snapshot_log_bytes_max: SNAPSHOT_LOG_BYTES_MAX_DEFAULT,
            max_in_snapshot_log_to_keep: 1_000,
            snapshot_chunk_bytes_max: 1024 * 1024,
            install_snapshot_timeout_ms: 2_000,
            max_payload_entries: 256,
            network: NetworkConfig::default(),
            command_bytes_max: 256 * 1024,
            write_queue_capacity: 8_192,
            write_batch_max: 512,
            write_batch_bytes_max: 512 * 1024,
            writes_in_flight_max: 1,
            forward_hops_max: 1,
            forward_timeout_ms: 5_000,
            fast_failover: true,
            transport: tollgate_tls::Transport::Plaintext,
        }
    }

    /// Check the whole config; errors name the key.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |key, reason: &str| {
            Err(Error::InvalidConfig {
                key,
                reason: reason.to_string(),
            })
        };
        if self.node_id == 0 {
            return invalid("node_id", "must not be 0");
        }
        if self.write_batch_max == 0 {
            return invalid("write_batch_max", "must be at least 1");
        }
        if self.writes_in_flight_max == 0 {
            return invalid("writes_in_flight_max", "must be at least 1");
        }
        if self.write_queue_capacity == 0 {
            return invalid("write_queue_capacity", "must be at least 1");
        }
        // A log entry (the batch, JSON, plus its envelope) must stay below
        // sled's inline limit.
        if self.write_batch_bytes_max + 64 * 1024 > crate::store::STORED_VALUE_BYTES_MAX {
            return invalid(
                "write_batch_bytes_max",
                "must leave 64 KiB below store::STORED_VALUE_BYTES_MAX",
            );
        }
        if self.command_bytes_max > self.write_batch_bytes_max {
            return invalid("command_bytes_max", "must not exceed write_batch_bytes_max");
        }
        // One entry must fit in one message, with room for the envelope.
        if self.write_batch_bytes_max.saturating_mul(2) > self.network.message_bytes_max {
            return invalid(
                "write_batch_bytes_max",
                "must be at most half of network.message_bytes_max",
            );
        }
        if self.snapshot_chunk_bytes_max as usize + 64 * 1024 > self.network.message_bytes_max {
            return invalid(
                "snapshot_chunk_bytes_max",
                "must leave 64 KiB below network.message_bytes_max",
            );
        }
        if self.snapshot_logs_since_last == 0 {
            return invalid("snapshot_logs_since_last", "must be at least 1");
        }
        if self.snapshot_log_bytes_max != 0 && self.snapshot_log_bytes_max < 1024 * 1024 {
            return invalid(
                "snapshot_log_bytes_max",
                "must be 0 (off) or at least 1 MiB",
            );
        }
        self.raft_config()?;
        Ok(())
    }

    pub(crate) fn raft_config(&self) -> Result<Config, Error> {
        let config = Config {
            cluster_name: self.cluster_name.clone(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_ms_min,
            election_timeout_max: self.election_timeout_ms_max,
            install_snapshot_timeout: self.install_snapshot_timeout_ms,
            max_payload_entries: self.max_payload_entries,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            max_in_snapshot_log_to_keep: self.max_in_snapshot_log_to_keep,
            snapshot_max_chunk_size: self.snapshot_chunk_bytes_max,
            ..Default::default()
        };
        Ok(config.validate()?)
    }
}
