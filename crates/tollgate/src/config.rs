//! A node's config file (TOML), validated as a whole before any port is
//! bound; every error names the key. `deploy/config/origin.example.toml` documents
//! every key with its default.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Origin,
    Region,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    pub role: Role,
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub listen: Listen,
    #[serde(default)]
    pub advertise: Advertise,
    #[serde(default)]
    pub cluster: Cluster,
    #[serde(default)]
    pub raft: Raft,
    #[serde(default)]
    pub signing: Signing,
    #[serde(default)]
    pub changefeed: Changefeed,
    #[serde(default)]
    pub quota: Quota,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default)]
    pub webhooks: Webhooks,
    /// Origin nodes: the portal at `/portal` on the REST port.
    #[serde(default)]
    pub portal: PortalSection,
    /// Region nodes: the origin to follow.
    #[serde(default)]
    pub origin: Option<OriginLink>,
    /// Region nodes: MaxMind databases.
    #[serde(default)]
    pub geo: Option<Geo>,
    /// Region nodes: the name this node answers as (default `node-<id>`).
    #[serde(default)]
    pub name: Option<String>,
    /// Region nodes: the region's name at the origin (quota leases and
    /// usage reports); every node of a region has the same. Default
    /// "region".
    #[serde(default)]
    pub region: Option<String>,
    /// Region nodes: believe a location resolved by a proxy in the request.
    #[serde(default)]
    pub trust_proxy_location: bool,
    /// Region nodes: issue license tokens with the region's own key.
    #[serde(default)]
    pub licenses: Option<Licenses>,
    /// Region nodes: how checks are answered.
    #[serde(default)]
    pub checks: Checks,
    /// Every port's limits: connections, timeouts, concurrency, rate.
    #[serde(default)]
    pub limits: LimitsSection,
    /// TLS on every port and link (required: either the files, or
    /// `insecure_plaintext = true` on purpose).
    #[serde(default)]
    pub tls: Option<TlsSection>,
}

/// `[tls]`: the node's certificate, its key and the CA bundle peers'
/// certificates must chain to; PEM files, reloaded when replaced.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// CA certificates (PEM) every peer's certificate must chain to.
    pub ca: Option<PathBuf>,
    /// This node's certificate chain (PEM, its own first), naming it as
    /// `spiffe://<trust-domain>/origin/node/<id>` or
    /// `spiffe://<trust-domain>/region/<region>/node/<id>`.
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub key: Option<PathBuf>,
    /// How often the three files are checked for a replacement.
    #[serde(default = "default_tls_reload_interval_ms")]
    pub reload_interval_ms: u64,
    /// Serve and call without TLS. Only for a lab: anyone on the network
    /// can read admin keys and entitlements, and impersonate a node.
    #[serde(default)]
    pub insecure_plaintext: bool,
}

fn default_tls_reload_interval_ms() -> u64 {
    5_000
}

/// Region nodes: how checks are answered.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checks {
    /// Longest wait for `at_least_revision`, whatever the request's
    /// deadline (a shorter deadline ends the wait sooner).
    pub revision_wait_max_ms: u64,
    /// Most accounts' views kept in memory (known and unknown account ids
    /// alike); past it, one is dropped for each new one.
    pub account_views_cached_max: usize,
    /// Threads serving the check port, each answering its connections'
    /// requests start to end; 0 means one per core.
    pub threads: usize,
    /// `required` (the default): every call to the check port presents an
    /// application credential the origin issued. `off`: a call without
    /// one is served (a presented one is still checked) — only for a
    /// port no one else can reach.
    pub credentials: CredentialsSetting,
}

/// `[checks] credentials`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialsSetting {
    #[default]
    Required,
    Off,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            revision_wait_max_ms: 30_000,
            account_views_cached_max: 100_000,
            threads: 0,
            credentials: CredentialsSetting::Required,
        }
    }
}

/// `[limits]`: what bounds every port of the node (REST and changefeed at
/// the origin; check and operations at a region; each port has its own
/// count of each). A limit that is hit is refused at once and counted in
/// `tollgate_requests_refused_total{port,reason}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Longest a request may take (gRPC: the client's deadline, if
    /// shorter); a streamed answer (Watch, the changefeed) is not bounded.
    pub request_timeout_ms: u64,
    /// Most requests answered at once per port; past it a request gets
    /// 503 / UNAVAILABLE `OVERLOADED` at once instead of a queue.
    pub concurrency_max: usize,
    /// Most connections open at once per port; past it a new connection
    /// is closed at once. Keep the node's ports' sum well under the
    /// process's descriptor limit (`LimitNOFILE`, `ulimit -n`).
    pub connections_max: usize,
    /// Time a client gets to finish its TLS handshake.
    pub handshake_timeout_ms: u64,
    /// Time a client gets to send an HTTP/1 request head.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight this long is closed (one
    /// that sends nothing, or drips a request that never completes).
    pub idle_timeout_ms: u64,
    /// HTTP/2 keepalive: a ping to a quiet peer this often; no answer in
    /// as long and the connection is dropped.
    pub keepalive_interval_ms: u64,
    /// Each caller's sustained requests per second (origin REST: per API
    /// key; region check port: per client); 0 turns rate limiting off.
    pub rate_per_second: u32,
    /// Each caller's burst above the sustained rate.
    pub rate_burst: u32,
    /// Most callers whose rate is remembered.
    pub rate_keys_max: usize,
    /// Region nodes: messages buffered per Watch stream; a watcher that
    /// leaves them unread for `request_timeout_ms` is dropped
    /// (`WATCHER_TOO_SLOW`).
    pub watch_buffer: usize,
    /// The whole of a shutdown (SIGTERM): stop accepting, drain requests
    /// in flight, flush usage, close streams, stop Raft. Keep it under
    /// the orchestrator's grace period (Kubernetes: 30 s).
    pub shutdown_deadline_ms: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let d = tollgate_server::limits::Limits::default();
        LimitsSection {
            request_timeout_ms: d.request_timeout.as_millis() as u64,
            concurrency_max: d.concurrency_max,
            connections_max: d.connections_max,
            handshake_timeout_ms: d.handshake_timeout.as_millis() as u64,
            header_read_timeout_ms: d.header_read_timeout.as_millis() as u64,
            idle_timeout_ms: d.idle_timeout.as_millis() as u64,
            keepalive_interval_ms: d.keepalive_interval.as_millis() as u64,
            rate_per_second: d.rate_per_second,
            rate_burst: d.rate_burst,
            rate_keys_max: d.rate_keys_max,
            watch_buffer: d.watch_buffer,
            shutdown_deadline_ms: d.shutdown_deadline.as_millis() as u64,
        }
    }
}

impl LimitsSection {
    fn validate(&self) -> anyhow::Result<()> {
        within(
            "limits.request_timeout_ms",
            self.request_timeout_ms,
            10..=3_600_000,
        )?;
        within(
            "limits.concurrency_max",
            self.concurrency_max as u64,
            1..=1_000_000,
        )?;
        within(
            "limits.connections_max",
            self.connections_max as u64,
            1..=1_000_000,
        )?;
        within(
            "limits.handshake_timeout_ms",
            self.handshake_timeout_ms,
            10..=600_000,
        )?;
        within(
            "limits.header_read_timeout_ms",
            self.header_read_timeout_ms,
            10..=600_000,
        )?;
        within(
            "limits.idle_timeout_ms",
            self.idle_timeout_ms,
            10..=86_400_000,
        )?;
        within(
            "limits.keepalive_interval_ms",
            self.keepalive_interval_ms,
            100..=3_600_000,
        )?;
        within(
            "limits.rate_per_second",
            u64::from(self.rate_per_second),
            0..=10_000_000,
        )?;
        within(
            "limits.rate_burst",
            u64::from(self.rate_burst),
            1..=10_000_000,
        )?;
        within(
            "limits.rate_keys_max",
            self.rate_keys_max as u64,
            32..=100_000_000,
        )?;
        within("limits.watch_buffer", self.watch_buffer as u64, 1..=4096)?;
        within(
            "limits.shutdown_deadline_ms",
            self.shutdown_deadline_ms,
            1_000..=600_000,
        )?;
        Ok(())
    }

    /// The limits the node runs with.
    pub fn to_limits(&self) -> tollgate_server::limits::Limits {
        use std::time::Duration;
        tollgate_server::limits::Limits {
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            concurrency_max: self.concurrency_max,
            connections_max: self.connections_max,
            handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            keepalive_interval: Duration::from_millis(self.keepalive_interval_ms),
            rate_per_second: self.rate_per_second,
            rate_burst: self.rate_burst,
            rate_keys_max: self.rate_keys_max,
            watch_buffer: self.watch_buffer,
            shutdown_deadline: Duration::from_millis(self.shutdown_deadline_ms),
        }
    }

    /// `connections_max` as the process's descriptor limit allows (Linux:
    /// the soft limit in `/proc/self/limits`): when `ports` ports of
    /// `connections_max` each, plus what the node itself needs, would not
    /// fit, it is lowered to fit and a WARN says so; either way it is
    /// logged. Running out of descriptors fails every accept on every port
    /// (and the node's own files), where the per-port cap refuses only the
    /// excess.
    pub fn connections_max_within_descriptors(&self, ports: usize) -> usize {
        // The node's own files, Raft links, the origin link, sled.
        const RESERVED: u64 = 256;
        let soft = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3).map(str::to_string))
            })
            .and_then(|v| v.parse::<u64>().ok());
        let Some(soft) = soft else {
            return self.connections_max;
        };
        let ports = ports.max(1) as u64;
        let fits = (soft.saturating_sub(RESERVED) / ports).max(16) as usize;
        if fits < self.connections_max {
            tracing::warn!(
                descriptors_max = soft,
                configured = self.connections_max,
                connections_max = fits,
                ports,
                "limits.connections_max lowered to fit the descriptor limit ({RESERVED} kept \
                 for the node itself); raise LimitNOFILE / ulimit -n to allow more."
            );
            fits
        } else {
            tracing::info!(
                descriptors_max = soft,
                connections_max = self.connections_max,
                ports,
                "Connection limits fit the descriptor limit."
            );
            self.connections_max
        }
    }
}

/// Region nodes: the region's license signing key and its certificate.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Licenses {
    /// The region's key (created on first start if missing; copy the same
    /// file to every node of the region).
    pub key_path: PathBuf,
    /// The origin's certificate for that key: the `certificate` of
    /// `POST /v1/regions/{region}/certificates`, as JSON. Without the file
    /// the node starts, verifies tokens, and logs the key to certify.
    /// Callers issue with an application credential holding
    /// `issue_licenses`.
    pub certificate_path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginLink {
    /// The origin's changefeed, e.g. `http://origin-1:7200`.
    pub feed: String,
    /// The origin's public key set (JSON, as served at
    /// /.well-known/tollgate-keys.json): only what it verifies is applied.
    pub public_keys_path: PathBuf,
    /// With nothing from the origin for this long (not even a heartbeat),
    /// the leader drops the stream and reconnects: how soon a silently
    /// broken link (a one-way cut, a dead NAT entry) is noticed. Keep it
    /// several times the origin's `changefeed.heartbeat_interval_ms`.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// Longest pause between reconnection attempts (they start at 50 ms and
    /// double): how soon after a cut heals the region catches up.
    #[serde(default = "default_reconnect_backoff_max_ms")]
    pub reconnect_backoff_max_ms: u64,
    /// One attempt to connect (TCP) and then to subscribe gives up after
    /// this long each. An attempt started during a partition otherwise
    /// waits out the kernel's SYN retries; allow a few of the link's round
    /// trips.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

fn default_connect_timeout_ms() -> u64 {
    5_000
}

fn default_idle_timeout_ms() -> u64 {
    10_000
}

fn default_reconnect_backoff_max_ms() -> u64 {
    5_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Geo {
    /// A GeoIP2/GeoLite2 City or Country database.
    pub location_path: PathBuf,
    /// A GeoIP2 Anonymous IP database (optional).
    #[serde(default)]
    pub anonymous_path: Option<PathBuf>,
    /// How often the files are checked for replacement.
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
}

fn default_reload_interval_ms() -> u64 {
    10_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    pub raft: SocketAddr,
    /// Origin nodes: the REST API. Region nodes: the operations endpoints
    /// (`/healthz`, `/readyz`, `/v1/status`).
    #[serde(default)]
    pub http: Option<SocketAddr>,
    /// Origin nodes: the changefeed.
    #[serde(default)]
    pub feed: Option<SocketAddr>,
    /// Region nodes: the check service.
    #[serde(default)]
    pub grpc: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Advertise {
    /// The Raft address other members use; default: the bound address.
    pub raft: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    /// On first start, make `members` (or this node alone) a new cluster.
    /// Set it on one node only.
    #[serde(default)]
    pub bootstrap: bool,
    #[serde(default)]
    pub members: Vec<Member>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: u64,
    pub raft: String,
}

/// Raft timing, the same on every member of a cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Raft {
    /// The leader's heartbeat period. openraft also uses it as the timeout
    /// of every AppendEntries call: a member whose round trip (plus its
    /// fsync) takes longer never acknowledges, and the cluster cannot
    /// commit. Keep it several times the members' round trip.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in this range
    /// starts an election.
    pub election_timeout_ms_min: u64,
    pub election_timeout_ms_max: u64,
    /// A snapshot is built after this many log entries; it bounds the log
    /// on disk and what a lagging member replays.
    pub snapshot_logs_since_last: u64,
    /// A snapshot is also built once the log grew by this many bytes since
    /// the last one (a region catching up on the origin writes entries of
    /// up to 256 KiB each). 0: count entries only.
    pub snapshot_log_bytes: u64,
    /// The largest snapshot a node accepts from its leader: one that would
    /// grow past it is refused, so a leader gone wrong cannot fill the
    /// disk.
    pub received_snapshot_bytes: u64,
    /// Entries kept behind a snapshot, so a member a little behind catches
    /// up from the log instead of a whole snapshot.
    pub logs_kept_after_snapshot: u64,
}

impl Raft {
    /// Sets these timings on a node's Raft config.
    pub fn apply(&self, config: &mut tollgate_raft::NodeConfig) {
        config.heartbeat_interval_ms = self.heartbeat_interval_ms;
        config.election_timeout_ms_min = self.election_timeout_ms_min;
        config.election_timeout_ms_max = self.election_timeout_ms_max;
        config.snapshot_logs_since_last = self.snapshot_logs_since_last;
        config.snapshot_log_bytes_max = self.snapshot_log_bytes;
        config.storage.received_snapshot_bytes_max = self.received_snapshot_bytes;
        config.max_in_snapshot_log_to_keep = self.logs_kept_after_snapshot;
    }
}

impl Default for Raft {
    fn default() -> Self {
        Raft {
            heartbeat_interval_ms: 50,
            election_timeout_ms_min: 150,
            election_timeout_ms_max: 300,
            snapshot_logs_since_last: 10_000,
            snapshot_log_bytes: tollgate_raft::SNAPSHOT_LOG_BYTES_MAX_DEFAULT,
            received_snapshot_bytes: tollgate_raft::store::RECEIVED_SNAPSHOT_BYTES_MAX_DEFAULT,
            logs_kept_after_snapshot: 1_000,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signing {
    /// The key that seals the origin's private signing keys in its
    /// replicated state: 64 hex digits, the same file on every origin node.
    /// Default: `<data_dir>/origin-seal.key`, created when missing.
    pub seal_key_path: Option<PathBuf>,
    /// A key ring file as origins kept it before the ring was replicated,
    /// imported once when the cluster has no keys. Default:
    /// `<data_dir>/origin-keys.json`, if it exists.
    pub keys_path: Option<PathBuf>,
}

/// Origin nodes: how hard caps are split between regions.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Quota {
    /// The overshoot bound: units of one counter leased to regions and not
    /// yet reported consumed, all regions together.
    pub outstanding_max: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            outstanding_max: 1_000_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Changefeed {
    pub retention_revisions: u64,
    pub heartbeat_interval_ms: u64,
}

impl Default for Changefeed {
    fn default() -> Self {
        Changefeed {
            retention_revisions: 100_000,
            heartbeat_interval_ms: 1_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Storage {
    pub cache_capacity_bytes: u64,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            cache_capacity_bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Webhooks {
    /// A CA bundle (PEM) trusted for https:// receivers besides the
    /// operating system's store.
    pub ca: Option<PathBuf>,
    pub poll_interval_ms: u64,
    pub request_timeout_ms: u64,
    pub attempts_max: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
}

impl Default for Webhooks {
    fn default() -> Self {
        Webhooks {
            ca: None,
            poll_interval_ms: 1_000,
            request_timeout_ms: 10_000,
            attempts_max: 8,
            backoff_initial_ms: 500,
            backoff_max_ms: 60_000,
        }
    }
}

/// Origin nodes: the portal's sessions, lockout and OIDC sign-in.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortalSection {
    /// How long a portal session lasts from sign-in.
    pub session_minutes: u64,
    /// Wrong passwords in a row before a user is locked out...
    pub lock_after: u32,
    /// ...for this long.
    pub lock_minutes: u64,
    /// How long an invitation link stays valid.
    pub invite_days: u64,
    /// OIDC sign-in for the vendor's staff: the identity provider's issuer
    /// URL (https). Unset: passwords only.
    pub oidc_issuer: Option<String>,
    pub oidc_client_id: Option<String>,
    /// A file holding the client secret (unset: a public client, PKCE only).
    pub oidc_client_secret_path: Option<PathBuf>,
    /// This portal's callback as registered at the provider:
    /// `https://<origin>/portal/oidc/callback`.
    pub oidc_redirect_url: Option<String>,
    /// A CA bundle (PEM) trusted for the provider besides the system's.
    pub oidc_ca: Option<PathBuf>,
}

impl Default for PortalSection {
    fn default() -> Self {
        PortalSection {
            session_minutes: 8 * 60,
            lock_after: 5,
            lock_minutes: 15,
            invite_days: 7,
            oidc_issuer: None,
            oidc_client_id: None,
            oidc_client_secret_path: None,
            oidc_redirect_url: None,
            oidc_ca: None,
        }
    }
}

/// Largest config file read, in bytes.
const CONFIG_FILE_LEN_MAX: u64 = 1024 * 1024;

/// The config file's sections: `TOLLGATE_<SECTION>_<KEY>` overrides
/// `<key>` in `[<section>]`.
const SECTIONS: [&str; 16] = [
    "listen",
    "advertise",
    "cluster",
    "raft",
    "signing",
    "changefeed",
    "quota",
    "storage",
    "webhooks",
    "portal",
    "origin",
    "geo",
    "licenses",
    "checks",
    "limits",
    "tls",
];
/// Top-level keys: `TOLLGATE_<KEY>` overrides them.
const TOP_LEVEL_KEYS: [&str; 6] = [
    "role",
    "node_id",
    "data_dir",
    "name",
    "region",
    "trust_proxy_location",
];
/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "TOLLGATE_";

/// Where a `TOLLGATE_...` variable goes: (section, key), or `None` for a
/// variable that is not a config key (e.g. `TOLLGATE_API_KEY` for `ctl`).
fn env_key(var: &str) -> Option<(Option<&'static str>, String)> {
    let rest = var.strip_prefix(ENV_PREFIX)?.to_ascii_lowercase();
    // Kubernetes injects `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT_...` for
    // every Service (e.g. one named tollgate-origin): never config keys.
    if rest.ends_with("_service_host")
        || rest.ends_with("_service_port")
        || rest.contains("_service_port_")
        || rest.ends_with("_port")
        || rest.contains("_port_")
    {
        return None;
    }
    for section in SECTIONS {
        if let Some(key) = rest.strip_prefix(section).and_then(|k| k.strip_prefix('_')) {
            if !key.is_empty() {
                return Some((Some(section), key.to_string()));
            }
        }
    }
    TOP_LEVEL_KEYS
        .iter()
        .any(|k| *k == rest)
        .then_some((None, rest))
}

/// A value from the environment: a TOML literal if it is one (`3`, `true`,
/// `["a"]`, `{ id = 1 }`), otherwise the text as a string.
fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Applies `TOLLGATE_*` overrides from `vars` to `table`; the variables
/// applied, with their raw values.
pub fn apply_env(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut applied = Vec::new();
    let mut vars: Vec<_> = vars.into_iter().collect();
    vars.sort();
    for (var, raw) in vars {
        let Some((section, key)) = env_key(&var) else {
            continue;
        };
        let target = match section {
            None => &mut *table,
            Some(section) => match table
                .entry(section)
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            {
                toml::Value::Table(t) => t,
                _ => anyhow::bail!("{var}: [{section}] in the file is not a table"),
            },
        };
        target.insert(key, env_value(&raw));
        applied.push((var, raw));
    }
    Ok(applied)
}

/// Deserialises `table`. An overridden value was typed by guessing (`123`
/// is a number); when that is the only thing wrong (a name `123`, a hash
/// that happens to parse as a float), the variable is taken as the string
/// it was instead, one at a time. The first error is the one reported.
fn parse_with_string_fallback(
    mut table: toml::Table,
    applied: &[(String, String)],
) -> Result<NodeFile, toml::de::Error> {
    let first = match table.clone().try_into::<NodeFile>() {
        Ok(file) => return Ok(file),
        Err(error) => error,
    };
    for (var, raw) in applied {
        let Some((section, key)) = env_key(var) else {
            continue;
        };
        let slot = match section {
            None => table.get_mut(&key),
            Some(section) => table
                .get_mut(section)
                .and_then(|t| t.as_table_mut())
                .and_then(|t| t.get_mut(&key)),
        };
        let Some(slot) = slot else {
            continue;
        };
        if slot.is_str() {
            continue;
        }
        let typed = std::mem::replace(slot, toml::Value::String(raw.clone()));
        match table.clone().try_into::<NodeFile>() {
            Ok(file) => return Ok(file),
            Err(_) => {
                // Put the guess back unless the string form helped nothing.
                let slot = match section {
                    None => table.get_mut(&key),
                    Some(section) => table
                        .get_mut(section)
                        .and_then(|t| t.as_table_mut())
                        .and_then(|t| t.get_mut(&key)),
                };
                if let Some(slot) = slot {
                    *slot = typed;
                }
            }
        }
    }
    Err(first)
}

/// `Ok` when `value` of `key` lies in `range`; the error names the key.
fn within(key: &str, value: u64, range: std::ops::RangeInclusive<u64>) -> anyhow::Result<()> {
    anyhow::ensure!(
        range.contains(&value),
        "{key}: must be {}..={}",
        range.start(),
        range.end()
    );
    Ok(())
}

impl NodeFile {
    pub fn load(path: &Path) -> anyhow::Result<NodeFile> {
        use anyhow::Context;
        let len = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        anyhow::ensure!(
            len <= CONFIG_FILE_LEN_MAX,
            "{} is larger than {CONFIG_FILE_LEN_MAX} bytes",
            path.display()
        );
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut table: toml::Table = toml::from_str(&text)
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        let applied = apply_env(&mut table, std::env::vars())?;
        let source = if applied.is_empty() {
            path.display().to_string()
        } else {
            let names: Vec<&str> = applied.iter().map(|(var, _)| var.as_str()).collect();
            format!(
                "{} (with {} from the environment)",
                path.display(),
                names.join(", ")
            )
        };
        let file = parse_with_string_fallback(table, &applied)
            .with_context(|| format!("{source} is not a valid node config"))?;
        file.validate()
            .with_context(|| format!("{source} is invalid"))?;
        Ok(file)
    }

    /// Who this node's certificate must say it is.
    pub fn subject(&self) -> tollgate_tls::Subject {
        match self.role {
            Role::Origin => tollgate_tls::Subject::OriginNode(self.node_id),
            Role::Region => tollgate_tls::Subject::RegionNode {
                region: self.region.clone().unwrap_or_else(|| "region".into()),
                node: self.node_id,
            },
        }
    }

    /// How this node's ports and links are carried: its TLS files, read and
    /// checked now (a file that does not load, a certificate naming another
    /// node, an expired one: an error naming the file), or plaintext when
    /// `tls.insecure_plaintext` says so.
    pub fn transport(&self, now: i64) -> anyhow::Result<tollgate_tls::Transport> {
        let tls = self
            .tls
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("tls: required"))?;
        if tls.insecure_plaintext {
            return Ok(tollgate_tls::Transport::Plaintext);
        }
        let (Some(ca), Some(cert), Some(key)) = (&tls.ca, &tls.cert, &tls.key) else {
            anyhow::bail!("tls: ca, cert and key are all required");
        };
        let files = tollgate_tls::TlsFiles {
            ca: ca.clone(),
            cert: Some(cert.clone()),
            key: Some(key.clone()),
        };
        Ok(tollgate_tls::Transport::Tls(tollgate_tls::Tls::load(
            files,
            Some(self.subject()),
            now,
        )?))
    }

    /// The databases `[geo]` names, read and validated now exactly as a
    /// region node does at start (integrity, type, probe lookups: a file
    /// that would resolve every caller to an unknown location is refused),
    /// or `None` without `[geo]`. `serve` and `serve --check` both call it,
    /// so a file one refuses the other refuses with the same message.
    pub fn geo_databases(&self) -> anyhow::Result<Option<tollgate_geo::GeoDatabases>> {
        use anyhow::Context;
        let Some(geo) = &self.geo else {
            return Ok(None);
        };
        let mut config = tollgate_geo::GeoConfig::new(&geo.location_path);
        config.anonymous_path = geo.anonymous_path.clone();
        tollgate_geo::GeoDatabases::open(&config)
            .map(Some)
            .context("geo: loading the databases")
    }

    /// How often TLS files are checked for a replacement.
    pub fn tls_reload_interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.tls
                .as_ref()
                .map_or(default_tls_reload_interval_ms(), |t| t.reload_interval_ms),
        )
    }

    /// Checks the whole file; the error names the key.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.node_id != 0, "node_id: must not be 0");
        self.limits.validate()?;
        match self.role {
            Role::Origin => {
                anyhow::ensure!(
                    self.listen.http.is_some(),
                    "listen.http: required for an origin node"
                );
                anyhow::ensure!(
                    self.listen.feed.is_some(),
                    "listen.feed: required for an origin node"
                );
                anyhow::ensure!(
                    self.origin.is_none(),
                    "origin: only region nodes follow an origin"
                );
                anyhow::ensure!(
                    self.geo.is_none(),
                    "geo: only region nodes resolve geography"
                );
            }
            Role::Region => {
                anyhow::ensure!(
                    self.listen.grpc.is_some(),
                    "listen.grpc: required for a region node"
                );
                let origin = self
                    .origin
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("origin: required for a region node"))?;
                let insecure = self.tls.as_ref().is_some_and(|t| t.insecure_plaintext);
                if insecure {
                    anyhow::ensure!(
                        origin.feed.starts_with("http://"),
                        "origin.feed: must be an http:// URL when tls.insecure_plaintext is set"
                    );
                } else {
                    anyhow::ensure!(
                        origin.feed.starts_with("https://"),
                        "origin.feed: must be an https:// URL (TLS is on; the origin must \
                         prove it is an origin node of the trust domain)"
                    );
                }
                within(
                    "origin.idle_timeout_ms",
                    origin.idle_timeout_ms,
                    100..=3_600_000,
                )?;
                within(
                    "origin.reconnect_backoff_max_ms",
                    origin.reconnect_backoff_max_ms,
                    50..=3_600_000,
                )?;
                within(
                    "origin.connect_timeout_ms",
                    origin.connect_timeout_ms,
                    100..=600_000,
                )?;
                if let Some(geo) = &self.geo {
                    within(
                        "geo.reload_interval_ms",
                        geo.reload_interval_ms,
                        100..=3_600_000,
                    )?;
                }
                if let Some(name) = &self.name {
                    anyhow::ensure!(
                        !name.is_empty() && name.len() <= 64,
                        "name: must be 1..=64 bytes"
                    );
                }
                if let Some(region) = &self.region {
                    anyhow::ensure!(
                        tollgate_origin::quota::valid_region_name(region),
                        "region: must be 1..=64 bytes of [a-z0-9-]"
                    );
                }
                within(
                    "checks.revision_wait_max_ms",
                    self.checks.revision_wait_max_ms,
                    0..=30_000,
                )?;
                within("checks.threads", self.checks.threads as u64, 0..=256)?;
                within(
                    "checks.account_views_cached_max",
                    self.checks.account_views_cached_max as u64,
                    1..=10_000_000,
                )?;
            }
        }
        match &self.tls {
            None => anyhow::bail!(
                "tls: required: set tls.ca, tls.cert and tls.key (see `tollgate ctl certs`), \
                 or tls.insecure_plaintext = true to run without TLS (not for production)"
            ),
            Some(tls) if tls.insecure_plaintext => anyhow::ensure!(
                tls.ca.is_none() && tls.cert.is_none() && tls.key.is_none(),
                "tls.insecure_plaintext: set, but so are TLS files; choose one"
            ),
            Some(tls) => {
                anyhow::ensure!(
                    tls.ca.is_some(),
                    "tls.ca: required (or tls.insecure_plaintext)"
                );
                anyhow::ensure!(
                    tls.cert.is_some(),
                    "tls.cert: required (or tls.insecure_plaintext)"
                );
                anyhow::ensure!(
                    tls.key.is_some(),
                    "tls.key: required (or tls.insecure_plaintext)"
                );
                within(
                    "tls.reload_interval_ms",
                    tls.reload_interval_ms,
                    100..=3_600_000,
                )?;
            }
        }
        let raft = &self.raft;
        within(
            "raft.heartbeat_interval_ms",
            raft.heartbeat_interval_ms,
            10..=10_000,
        )?;
        anyhow::ensure!(
            raft.election_timeout_ms_min >= 2 * raft.heartbeat_interval_ms,
            "raft.election_timeout_ms_min: must be at least twice raft.heartbeat_interval_ms"
        );
        anyhow::ensure!(
            raft.election_timeout_ms_max > raft.election_timeout_ms_min
                && raft.election_timeout_ms_max <= 120_000,
            "raft.election_timeout_ms_max: must be above raft.election_timeout_ms_min and at most 120000"
        );
        within(
            "raft.snapshot_logs_since_last",
            raft.snapshot_logs_since_last,
            100..=10_000_000,
        )?;
        if raft.snapshot_log_bytes != 0 {
            within(
                "raft.snapshot_log_bytes",
                raft.snapshot_log_bytes,
                1024 * 1024..=1024 * 1024 * 1024 * 1024,
            )?;
        }
        within(
            "raft.received_snapshot_bytes",
            raft.received_snapshot_bytes,
            1024 * 1024..=1024 * 1024 * 1024 * 1024,
        )?;
        within(
            "raft.logs_kept_after_snapshot",
            raft.logs_kept_after_snapshot,
            0..=10_000_000,
        )?;
        anyhow::ensure!(
            self.quota.outstanding_max >= 1,
            "quota.outstanding_max: must be at least 1"
        );
        anyhow::ensure!(
            self.changefeed.retention_revisions >= 1,
            "changefeed.retention_revisions: must be at least 1"
        );
        within(
            "changefeed.heartbeat_interval_ms",
            self.changefeed.heartbeat_interval_ms,
            10..=60_000,
        )?;
        anyhow::ensure!(
            self.storage.cache_capacity_bytes >= 1024 * 1024,
            "storage.cache_capacity_bytes: must be at least 1 MiB"
        );
        let w = &self.webhooks;
        within("webhooks.poll_interval_ms", w.poll_interval_ms, 10..=60_000)?;
        within(
            "webhooks.request_timeout_ms",
            w.request_timeout_ms,
            100..=120_000,
        )?;
        within("webhooks.attempts_max", u64::from(w.attempts_max), 1..=100)?;
        anyhow::ensure!(
            w.backoff_initial_ms >= 1 && w.backoff_initial_ms <= w.backoff_max_ms,
            "webhooks.backoff_initial_ms: must be at least 1 and at most webhooks.backoff_max_ms"
        );
        let p = &self.portal;
        within(
            "portal.session_minutes",
            p.session_minutes,
            5..=30 * 24 * 60,
        )?;
        within("portal.lock_after", u64::from(p.lock_after), 1..=100)?;
        within("portal.lock_minutes", p.lock_minutes, 1..=7 * 24 * 60)?;
        within("portal.invite_days", p.invite_days, 1..=30)?;
        let oidc = [
            p.oidc_issuer.is_some(),
            p.oidc_client_id.is_some(),
            p.oidc_redirect_url.is_some(),
        ];
        anyhow::ensure!(
            oidc.iter().all(|set| *set) || oidc.iter().all(|set| !*set),
            "portal.oidc_issuer, portal.oidc_client_id and portal.oidc_redirect_url go together: set all three or none"
        );
        let mut ids = std::collections::BTreeSet::new();
        for m in &self.cluster.members {
            anyhow::ensure!(m.id != 0, "cluster.members: id must not be 0");
            anyhow::ensure!(
                ids.insert(m.id),
                "cluster.members: id {} appears twice",
                m.id
            );
            anyhow::ensure!(
                !m.raft.is_empty(),
                "cluster.members: member {} has no raft address",
                m.id
            );
        }
        if self.cluster.bootstrap && !self.cluster.members.is_empty() {
            anyhow::ensure!(
                ids.contains(&self.node_id),
                "cluster.members: must include this node ({}) when cluster.bootstrap is set",
                self.node_id
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod env_tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn environment_variables_override_keys_by_section_and_type() {
        let mut table: toml::Table = toml::from_str(
            "role = \"region\"\nnode_id = 1\ndata_dir = \"/d\"\n[listen]\nraft = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let applied = apply_env(
            &mut table,
            vars(&[
                ("TOLLGATE_NODE_ID", "3"),
                ("TOLLGATE_LISTEN_GRPC", "0.0.0.0:7300"),
                ("TOLLGATE_ORIGIN_FEED", "http://origin:7200"),
                ("TOLLGATE_ORIGIN_PUBLIC_KEYS_PATH", "/keys.json"),
                ("TOLLGATE_CLUSTER_BOOTSTRAP", "true"),
                ("TOLLGATE_CLUSTER_MEMBERS", "[{ id = 1, raft = \"a:1\" }]"),
                // Not config keys: the CLI's own variables, left alone.
                ("TOLLGATE_LOG", "debug"),
                ("TOLLGATE_API_KEY", "tg_x"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(applied.len(), 6, "{applied:?}");
        let file = parse_with_string_fallback(table, &applied).unwrap();
        assert_eq!(file.node_id, 3);
        assert_eq!(file.listen.grpc.unwrap().port(), 7300);
        let origin = file.origin.unwrap();
        assert_eq!(origin.feed, "http://origin:7200");
        assert_eq!(origin.public_keys_path, PathBuf::from("/keys.json"));
        assert!(file.cluster.bootstrap);
        assert_eq!(file.cluster.members[0].raft, "a:1");
    }

    #[test]
    fn a_string_that_looks_like_a_number_stays_a_string_where_one_is_wanted() {
        let mut table: toml::Table = toml::from_str(
            "role = \"region\"\nnode_id = 1\ndata_dir = \"/d\"\n[listen]\nraft = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let applied = apply_env(
            &mut table,
            vars(&[
                ("TOLLGATE_NAME", "123"),
                ("TOLLGATE_NODE_ID", "3"),
                // Kubernetes service links: not config.
                ("TOLLGATE_ORIGIN_SERVICE_HOST", "10.0.0.1"),
                ("TOLLGATE_ORIGIN_PORT_7200_TCP", "tcp://10.0.0.1:7200"),
            ]),
        )
        .unwrap();
        assert_eq!(applied.len(), 2, "{applied:?}");
        let file = parse_with_string_fallback(table, &applied).unwrap();
        assert_eq!(file.name.as_deref(), Some("123"));
        assert_eq!(file.node_id, 3);
    }

    #[test]
    fn an_unknown_or_mistyped_override_is_refused_with_its_key() {
        let base =
            "role = \"region\"\nnode_id = 1\ndata_dir = \"/d\"\n[listen]\nraft = \"127.0.0.1:1\"\n";
        for (var, value, needle) in [
            ("TOLLGATE_LISTEN_NOPE", "1", "nope"),
            ("TOLLGATE_NODE_ID", "three", "node_id"),
            ("TOLLGATE_LISTEN_RAFT", "not-an-address", "raft"),
        ] {
            let mut table: toml::Table = toml::from_str(base).unwrap();
            let applied = apply_env(&mut table, vars(&[(var, value)])).unwrap();
            let error = parse_with_string_fallback(table, &applied)
                .map(|_| ())
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{var}: {error}");
        }
    }
}

#[cfg(test)]
mod origin_link_tests {
    use super::*;

    const REGION: &str = "role = \"region\"\nnode_id = 1\ndata_dir = \"/d\"\n\
        [tls]\ninsecure_plaintext = true\n\
        [listen]\nraft = \"127.0.0.1:1\"\ngrpc = \"127.0.0.1:2\"\n\
        [origin]\nfeed = \"http://origin:7200\"\npublic_keys_path = \"/k.json\"\n";

    fn parse(extra: &str) -> NodeFile {
        toml::from_str(&format!("{REGION}{extra}")).unwrap()
    }

    #[test]
    fn the_origin_link_timings_default_and_can_be_set() {
        let file = parse("");
        file.validate().unwrap();
        let origin = file.origin.unwrap();
        assert_eq!(
            (
                origin.idle_timeout_ms,
                origin.reconnect_backoff_max_ms,
                origin.connect_timeout_ms
            ),
            (10_000, 5_000, 5_000)
        );
        let file = parse(
            "idle_timeout_ms = 2500\nreconnect_backoff_max_ms = 800\nconnect_timeout_ms = 1500\n",
        );
        file.validate().unwrap();
        let origin = file.origin.unwrap();
        assert_eq!(
            (
                origin.idle_timeout_ms,
                origin.reconnect_backoff_max_ms,
                origin.connect_timeout_ms
            ),
            (2_500, 800, 1_500)
        );
    }

    #[test]
    fn raft_timings_default_to_the_library_defaults_and_are_checked_together() {
        let file = parse("");
        let defaults = tollgate_raft::NodeConfig::new(1, "/d");
        assert_eq!(
            (
                file.raft.heartbeat_interval_ms,
                file.raft.election_timeout_ms_min,
                file.raft.election_timeout_ms_max
            ),
            (
                defaults.heartbeat_interval_ms,
                defaults.election_timeout_ms_min,
                defaults.election_timeout_ms_max
            )
        );
        let file = parse("[raft]\nheartbeat_interval_ms = 200\nelection_timeout_ms_min = 800\nelection_timeout_ms_max = 1600\n");
        file.validate().unwrap();
        for (raft, key) in [
            ("heartbeat_interval_ms = 5\n", "raft.heartbeat_interval_ms"),
            (
                "heartbeat_interval_ms = 100\n",
                "raft.election_timeout_ms_min",
            ),
            (
                "election_timeout_ms_max = 150\n",
                "raft.election_timeout_ms_max",
            ),
        ] {
            let error = parse(&format!("[raft]\n{raft}"))
                .validate()
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(key), "{raft}: {error}");
        }
    }

    #[test]
    fn out_of_range_origin_link_timings_are_refused_by_name() {
        for (extra, key) in [
            ("idle_timeout_ms = 0\n", "origin.idle_timeout_ms"),
            ("idle_timeout_ms = 99\n", "origin.idle_timeout_ms"),
            (
                "reconnect_backoff_max_ms = 10\n",
                "origin.reconnect_backoff_max_ms",
            ),
            (
                "reconnect_backoff_max_ms = 3600001\n",
                "origin.reconnect_backoff_max_ms",
            ),
            ("connect_timeout_ms = 99\n", "origin.connect_timeout_ms"),
        ] {
            let error = parse(extra).validate().unwrap_err().to_string();
            assert!(error.starts_with(key), "{extra}: {error}");
        }
    }
    #[test]
    fn limits_default_can_be_set_and_are_checked_by_name() {
        let defaults = parse("").limits.to_limits();
        assert_eq!(defaults, tollgate_server::limits::Limits::default());
        assert_eq!(
            defaults.connections_max, 512,
            "well under 1,024 descriptors"
        );
        let set = parse(
            "\n[limits]\nconnections_max = 64\nidle_timeout_ms = 1500\nrate_per_second = 0\n\
             request_timeout_ms = 2000\nwatch_buffer = 4\n",
        );
        set.validate().unwrap();
        let limits = set.limits.to_limits();
        assert_eq!(limits.connections_max, 64);
        assert_eq!(limits.idle_timeout, std::time::Duration::from_millis(1500));
        assert_eq!(limits.request_timeout, std::time::Duration::from_secs(2));
        assert_eq!(limits.watch_buffer, 4);
        assert!(limits.rate_limiter().is_none(), "rate 0 turns it off");
        for (extra, key) in [
            ("connections_max = 0\n", "limits.connections_max"),
            ("concurrency_max = 0\n", "limits.concurrency_max"),
            ("idle_timeout_ms = 1\n", "limits.idle_timeout_ms"),
            ("watch_buffer = 0\n", "limits.watch_buffer"),
            ("rate_burst = 0\n", "limits.rate_burst"),
        ] {
            let error = parse(&format!("\n[limits]\n{extra}"))
                .validate()
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(key), "{extra}: {error}");
        }
    }
}
