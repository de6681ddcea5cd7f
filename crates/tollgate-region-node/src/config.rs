//! A region node's configuration and the sockets it serves, as the caller
//! (`tollgate serve`, `tollgate dev`, a test) hands them over.

use crate::meter::MeterConfig;
use std::time::Duration;
use tollgate_raft::{NodeConfig, NodeId};
use tollgate_signing::{PublicKeySet, Signed};
use tollgate_tls::net::TcpListener;

#[derive(Debug, Clone)]
pub struct RegionConfig {
    pub raft: NodeConfig,
    /// The wall clock every reading of the time on this node comes from
    /// (staleness, usage periods, stamps): the system's, or a
    /// simulation's.
    pub clock: tollgate_clock::Clock,
    /// The name this node answers as (`answered_by`).
    pub name: String,
    /// The origin's changefeed endpoint, e.g. `http://origin:7200`.
    pub origin_feed: String,
    /// The origin's public keys: only records they verify are applied.
    pub origin_keys: PublicKeySet,
    /// Believe a location resolved by a proxy in the request.
    pub trust_proxy_location: bool,
    /// Longest wait for `at_least_revision` (the request's deadline ends it
    /// sooner; never more than `checker::REVISION_WAIT_MAX`).
    pub revision_wait_max: Duration,
    /// Most accounts' views kept in memory for checks.
    pub account_views_cached_max: usize,
    /// Threads serving the check port, each with its own single-threaded
    /// runtime (a request never changes threads). Default: one per core.
    pub check_threads: usize,
    /// Longest pause between reconnection attempts to the origin.
    pub reconnect_backoff_max: Duration,
    /// With no message from the origin for this long, reconnect.
    pub origin_idle_timeout: Duration,
    /// One attempt to connect and subscribe to the origin gives up after
    /// this long (a SYN into a partition is otherwise retried for minutes).
    pub origin_connect_timeout: Duration,
    /// A `Watch` stream with nothing to send sends a heartbeat this often.
    pub watch_heartbeat: Duration,
    /// Most `Watch` streams served at once.
    pub watchers_max: usize,
    /// Ready only with a geo database loaded.
    pub geo_required: bool,
    /// Ready only within this many revisions of the origin's head.
    pub ready_lag_revisions_max: u64,
    /// Usage reporting and chunk sizes.
    pub meter: MeterConfig,
    /// The region's name at the origin (quota leases and usage reports).
    pub region: String,
    /// How often the leader leases what nodes need from the origin.
    pub quota_lease_interval: Duration,
    /// How often the leader reports the region's usage to the origin.
    pub quota_sync_interval: Duration,
    /// Most units of a cap leased from the origin at once.
    pub slice_units_max: u64,
    /// The leader reports the region (members, seat holders) to the origin
    /// at least this often, and at once when it changes (revisions and
    /// clock readings aside). `None`: no reports (each one commits an origin
    /// revision; tests that count revisions turn them off).
    pub report_interval: Option<Duration>,
    /// A counter this region has not used for this long hands the unused
    /// part of its slice back to the origin, for other regions.
    pub slice_idle: Duration,
    /// How often the leader asks the origin for its key set, to learn of a
    /// retirement (a rotation is learnt at the first record the new key
    /// signs).
    pub origin_keys_refresh: Duration,
    /// The region's certified key, to issue license tokens while cut off
    /// from the origin. `None`: the node verifies tokens but issues none.
    pub license_issuer: Option<RegionIssuerConfig>,
    /// How often the TLS files are checked for a replacement (the
    /// transport itself is `raft.transport`, used on every port and link).
    pub tls_reload_interval: Duration,
    /// The check and operations ports' limits (`[limits]`): connections,
    /// idle and header timeouts, concurrency, request timeout, each
    /// caller's rate on the check port, the Watch buffer.
    pub limits: tollgate_server::limits::Limits,
    /// Whether callers of the check port must present an application
    /// credential (`Required` unless configured otherwise, on purpose).
    pub credentials: crate::credentials::CredentialMode,
}

impl RegionConfig {
    pub fn new(
        node_id: NodeId,
        data_dir: impl Into<std::path::PathBuf>,
        origin_feed: String,
        origin_keys: PublicKeySet,
    ) -> Self {
        RegionConfig {
            raft: NodeConfig::new(node_id, data_dir),
            clock: tollgate_clock::Clock::system(),
            name: format!("node-{node_id}"),
            origin_feed,
            origin_keys,
            trust_proxy_location: false,
            revision_wait_max: crate::checker::REVISION_WAIT_MAX,
            account_views_cached_max: crate::views::ACCOUNT_VIEWS_CACHED_MAX_DEFAULT,
            check_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            reconnect_backoff_max: Duration::from_secs(5),
            origin_idle_timeout: Duration::from_secs(10),
            origin_connect_timeout: Duration::from_secs(5),
            watch_heartbeat: Duration::from_secs(5),
            watchers_max: 1024,
            geo_required: true,
            ready_lag_revisions_max: 1000,
            meter: MeterConfig::default(),
            license_issuer: None,
            origin_keys_refresh: Duration::from_secs(60),
            region: "region".into(),
            quota_lease_interval: Duration::from_millis(50),
            quota_sync_interval: Duration::from_secs(1),
            slice_units_max: 10_000,
            report_interval: Some(Duration::from_secs(15)),
            slice_idle: Duration::from_secs(60),
            tls_reload_interval: Duration::from_secs(5),
            limits: tollgate_server::limits::Limits::default(),
            credentials: crate::credentials::CredentialMode::Required,
        }
    }
}

pub struct RegionListeners {
    pub raft: TcpListener,
    /// The check service (gRPC).
    pub grpc: TcpListener,
    /// The operations endpoints (`/healthz`, `/readyz`, `/v1/status`).
    pub http: Option<TcpListener>,
}

/// What a region needs to issue tokens itself.
#[derive(Clone)]
pub struct RegionIssuerConfig {
    /// The region's Ed25519 key (the same on every node of the region).
    pub signing_key: ed25519_dalek::SigningKey,
    /// The origin's certificate for that key. Callers issue with an
    /// application credential holding `issue_licenses`.
    pub certificate: Signed,
}

impl std::fmt::Debug for RegionIssuerConfig {
    // Never prints the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegionIssuerConfig")
            .field("certificate_kid", &self.certificate.kid)
            .finish_non_exhaustive()
    }
}
