//! `tollgate serve --config node.toml`: run one node until SIGINT or
//! SIGTERM, then shut down cleanly (drain, flush, exit 0).

use crate::config::{NodeFile, Role};
use crate::exit;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tollgate_origin_node::{OriginConfig, OriginListeners, OriginNode};

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The node's config file (TOML): `role = "origin"` or `"region"`; see
    /// deploy/config/origin.example.toml and deploy/config/region.example.toml.
    #[arg(long, env = "TOLLGATE_CONFIG")]
    config: PathBuf,
    /// Only check the config file, then exit (0: valid, 2: invalid).
    #[arg(long)]
    check: bool,
}

pub fn run(args: ServeArgs) -> u8 {
    let file = match NodeFile::load(&args.config) {
        Ok(file) => file,
        Err(error) => {
            eprintln!("error: {error:#}");
            return exit::INVALID_INPUT;
        }
    };
    if args.check {
        return check(&args.config, &file);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            eprintln!("error: starting the async runtime: {error}");
            return exit::FAILURE;
        }
    };
    let result = match file.role {
        Role::Origin => runtime.block_on(serve_origin(file)),
        Role::Region => runtime.block_on(serve_region(file)),
    };
    match result {
        Ok(()) => exit::OK,
        Err(error) => {
            eprintln!("error: {error:#}");
            exit::FAILURE
        }
    }
}

/// `serve --check`: loads what `serve` loads before it binds a port, the
/// TLS files, the geo databases and an origin's seal key, as `serve`
/// would: a config whose certificate does not load, or whose geo database
/// or seal key `serve` would refuse, is not valid (exit 2, with the message
/// `serve` would give).
fn check(path: &std::path::Path, file: &NodeFile) -> u8 {
    let invalid = |error: anyhow::Error| {
        eprintln!("error: {}: {error:#}", path.display());
        exit::INVALID_INPUT
    };
    let seal = match origin_seal_check(file) {
        Ok(seal) => seal,
        Err(error) => return invalid(error),
    };
    let transport = match file.transport(tollgate_clock::Clock::system().now_secs()) {
        Ok(transport) => transport,
        Err(error) => return invalid(error),
    };
    let geo = match file.geo_databases() {
        Ok(geo) => geo,
        Err(error) => return invalid(error),
    };
    let geo = geo
        .map(|g| {
            let health = g.health();
            let anonymous = health
                .anonymous
                .map(|a| format!(" and {}", a.database_type))
                .unwrap_or_default();
            format!("; geo: {}{anonymous}", health.location.database_type)
        })
        .unwrap_or_default();
    let geo = format!("{geo}{seal}");
    match transport {
        tollgate_tls::Transport::Plaintext => {
            eprintln!("{PLAINTEXT_WARNING}");
            println!(
                "{}: valid (WARNING: tls.insecure_plaintext{geo})",
                path.display()
            );
        }
        transport => {
            let identity = transport
                .identity()
                .map(|i| i.to_string())
                .unwrap_or_default();
            println!("{}: valid (TLS as {identity}{geo})", path.display());
        }
    }
    exit::OK
}

/// An origin's seal key and key file to import, read as `serve` reads
/// them: what `serve --check` says of them (`""` for a region).
fn origin_seal_check(file: &NodeFile) -> anyhow::Result<String> {
    if file.role != crate::config::Role::Origin {
        return Ok(String::new());
    }
    let seal_path = file
        .signing
        .seal_key_path
        .clone()
        .unwrap_or_else(|| file.data_dir.join("origin-seal.key"));
    let seal = if seal_path.exists() {
        let seal = tollgate_signing::SealKey::load(&seal_path).context("signing.seal_key_path")?;
        format!("; seal key {}", seal.fingerprint())
    } else {
        format!("; seal key {} is made at first start", seal_path.display())
    };
    if let Some(import) = &file.signing.keys_path {
        tollgate_signing::KeyRing::load(import).context("signing.keys_path")?;
    }
    Ok(seal)
}

/// What a node running without TLS says at start (and `serve --check`).
const PLAINTEXT_WARNING: &str = "WARNING: tls.insecure_plaintext is set: every port serves \
     without TLS and without checking who calls; admin API keys, entitlements and Raft \
     traffic cross the network in clear. Not for production.";

/// The node's transport from `[tls]`, with the warning a plaintext node
/// gives at start.
fn transport(file: &NodeFile) -> anyhow::Result<tollgate_tls::Transport> {
    let transport = file
        .transport(tollgate_clock::Clock::system().now_secs())
        .context("tls")?;
    match &transport {
        tollgate_tls::Transport::Plaintext => tracing::warn!("{PLAINTEXT_WARNING}"),
        tollgate_tls::Transport::Tls(tls) => tracing::info!(
            identity = %tls.identity().map(|i| i.to_string()).unwrap_or_default(),
            "TLS on every port and link."
        ),
    }
    Ok(transport)
}

async fn bind(addr: std::net::SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    tollgate_tls::net::bind(addr).with_context(|| format!("listen.{key}: cannot bind {addr}"))
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn serve_origin(file: NodeFile) -> anyhow::Result<()> {
    let mut config = OriginConfig::new(file.node_id, &file.data_dir);
    config.raft.transport = transport(&file)?;
    config.limits = file.limits.to_limits();
    // REST, the changefeed and the Raft port.
    config.limits.connections_max = file.limits.connections_max_within_descriptors(3);
    config.tls_reload_interval = file.tls_reload_interval();
    let scheme = config.raft.transport.scheme();
    config.raft.advertise_addr = file.advertise.raft.clone();
    file.raft.apply(&mut config.raft);
    config.raft.storage.cache_capacity_bytes = file.storage.cache_capacity_bytes;
    if let Some(path) = &file.signing.seal_key_path {
        config.seal_key_path = path.clone();
    }
    if let Some(path) = &file.signing.keys_path {
        config.import_keys_path = path.clone();
    }
    config.feed.heartbeat_interval = Duration::from_millis(file.changefeed.heartbeat_interval_ms);
    config.retention_revisions = file.changefeed.retention_revisions;
    config.quota_outstanding_max = file.quota.outstanding_max;
    let w = &file.webhooks;
    config.webhooks = tollgate_origin_node::WebhookConfig {
        poll_interval: Duration::from_millis(w.poll_interval_ms),
        request_timeout: Duration::from_millis(w.request_timeout_ms),
        attempts_max: w.attempts_max,
        backoff_initial: Duration::from_millis(w.backoff_initial_ms),
        backoff_max: Duration::from_millis(w.backoff_max_ms),
        ca: w.ca.clone(),
    };
    let p = &file.portal;
    config.portal.session_seconds = p.session_minutes * 60;
    config.portal.lock_after = p.lock_after;
    config.portal.lock_seconds = p.lock_minutes * 60;
    config.portal.invite_seconds = p.invite_days * 86_400;
    config.portal.oidc_ca_path = p.oidc_ca.clone();
    if let (Some(issuer), Some(client_id), Some(redirect_url)) =
        (&p.oidc_issuer, &p.oidc_client_id, &p.oidc_redirect_url)
    {
        let client_secret = match &p.oidc_client_secret_path {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("portal.oidc_client_secret_path {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            None => None,
        };
        config.portal.oidc = Some(tollgate_portal::oidc::OidcConfig {
            issuer: issuer.clone(),
            client_id: client_id.clone(),
            client_secret,
            redirect_url: redirect_url.clone(),
            scopes: tollgate_portal::oidc::OidcConfig::default_scopes(),
        });
    }
    config
        .raft
        .validate()
        .context("the raft settings are invalid")?;

    let (Some(http), Some(feed)) = (file.listen.http, file.listen.feed) else {
        anyhow::bail!("listen.http and listen.feed are required for an origin node");
    };
    let listeners = OriginListeners {
        raft: bind(file.listen.raft, "raft").await?.into(),
        http: bind(http, "http").await?.into(),
        feed: bind(feed, "feed").await?.into(),
    };
    let origin = OriginNode::start(config, listeners)
        .await
        .context("starting the origin node")?;
    println!(
        "tollgate origin node {}: http={scheme}://{} feed={scheme}://{} raft={}",
        file.node_id,
        origin.http_addr(),
        origin.feed_addr(),
        origin.raft().addr()
    );
    // The public half, for regions' `origin.public_keys_path` (a volume
    // shared with them, or a file copied by the operator): written once the
    // node holds the cluster's keys, and again after every rotation.
    let public_path = file.data_dir.join("origin-keys.public.json");
    let public_writer = tokio::spawn(write_public_keys(origin.key_ring(), public_path));

    if file.cluster.bootstrap {
        let members: Vec<(u64, String)> = if file.cluster.members.is_empty() {
            vec![(file.node_id, origin.raft().addr().to_string())]
        } else {
            file.cluster
                .members
                .iter()
                .map(|m| (m.id, m.raft.clone()))
                .collect()
        };
        match origin.raft().initialize(&members).await {
            Ok(()) => tracing::info!(members = members.len(), "Initialised a new origin cluster."),
            Err(tollgate_raft::Error::AlreadyInitialized) => {}
            Err(error) => return Err(error).context("cluster.bootstrap: initialising the cluster"),
        }
    }

    // The first leader of a new cluster writes the bootstrap admin key. The
    // other members may start minutes later (a StatefulSet's pods, a host
    // that reboots): wait for them as long as it takes, saying so, and stop
    // at once when asked.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    if file.cluster.bootstrap {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("Shutdown requested.");
                public_writer.abort();
                origin.shutdown().await.context("shutting down")?;
                return Ok(());
            }
            written = bootstrap_admin_key(&origin, &file) => written?,
        }
    }

    shutdown.await;
    tracing::info!("Shutdown requested.");
    public_writer.abort();
    origin.shutdown().await.context("shutting down")?;
    Ok(())
}

/// How often a node waiting for its cluster's first leader says so.
const LEADER_WAIT_REPORT: Duration = Duration::from_secs(10);

/// Once the cluster has a leader: if it is this node, the bootstrap admin
/// API key, written to `<data_dir>/admin.token` (once per cluster).
async fn bootstrap_admin_key(origin: &OriginNode, file: &NodeFile) -> anyhow::Result<()> {
    let id = file.node_id;
    let leader = loop {
        match origin
            .raft()
            .wait_until(LEADER_WAIT_REPORT, "a leader", |m| {
                m.current_leader.is_some()
            })
            .await
        {
            Ok(metrics) => break metrics.current_leader,
            Err(_) => tracing::info!(
                members = file.cluster.members.len(),
                "No leader yet: waiting for a majority of the members to start."
            ),
        }
    };
    if leader == Some(id) {
        let token_path = file.data_dir.join("admin.token");
        if origin.bootstrap_admin_key(&token_path).await?.is_some() {
            println!(
                "bootstrap admin API key written to {}",
                token_path.display()
            );
        }
    }
    Ok(())
}

/// Keeps `path` the public half of `ring`, rewriting it (atomically) on
/// every change. A failed write is logged: regions would keep an old set,
/// which the changefeed's endorsements bring up to date.
async fn write_public_keys(ring: tollgate_signing::SharedRing, path: std::path::PathBuf) {
    let mut changes = ring.subscribe();
    loop {
        let current = changes.borrow_and_update().clone();
        if let Some(ring) = current {
            let written = serde_json::to_vec_pretty(&ring.public_set())
                .map_err(std::io::Error::other)
                .and_then(|public| {
                    let tmp = path.with_extension("tmp");
                    std::fs::write(&tmp, public).and_then(|()| std::fs::rename(&tmp, &path))
                });
            match written {
                Ok(()) => {
                    tracing::info!(path = %path.display(), active = %ring.active_kid(), "Wrote the origin's public keys.")
                }
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "Cannot write the origin's public keys.")
                }
            }
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

/// The region's license issuer from `[licenses]`; `None` (with a warning
/// naming the key to certify) while the certificate file is missing.
fn region_issuer(
    licenses: &crate::config::Licenses,
    region: &str,
) -> anyhow::Result<Option<tollgate_region_node::RegionIssuerConfig>> {
    use base64::Engine as _;
    let now = tollgate_clock::Clock::system().now();
    let ring = tollgate_signing::KeyRing::load_or_create(&licenses.key_path, now)
        .context("licenses.key_path")?;
    let signing_key = ring.active_signing_key().1.clone();
    if !licenses.certificate_path.exists() {
        let public = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(signing_key.verifying_key().as_bytes());
        tracing::warn!(
            certificate_path = %licenses.certificate_path.display(),
            "No license certificate yet: this node verifies tokens but issues none. Certify the region's key at the origin: POST /v1/regions/{region}/certificates {{\"public_key\": \"{public}\"}}, and save the answer's `certificate` there."
        );
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&licenses.certificate_path).context("licenses.certificate_path")?;
    let certificate: tollgate_signing::Signed = serde_json::from_str(&text)
        .context("licenses.certificate_path: not a signed certificate")?;
    Ok(Some(tollgate_region_node::RegionIssuerConfig {
        signing_key,
        certificate,
    }))
}

async fn serve_region(file: NodeFile) -> anyhow::Result<()> {
    use std::sync::Arc;
    use tollgate_region_node::{RegionConfig, RegionListeners, RegionNode};
    let origin = file
        .origin
        .as_ref()
        .context("origin: required for a region node")?;
    let keys_text = std::fs::read_to_string(&origin.public_keys_path).with_context(|| {
        format!(
            "origin.public_keys_path: reading {}",
            origin.public_keys_path.display()
        )
    })?;
    let keys: tollgate_signing::PublicKeySet = serde_json::from_str(&keys_text)
        .context("origin.public_keys_path: not a public key set")?;
    let mut config = RegionConfig::new(file.node_id, &file.data_dir, origin.feed.clone(), keys);
    config.raft.transport = transport(&file)?;
    config.limits = file.limits.to_limits();
    // The check, operations and Raft ports.
    config.limits.connections_max = file.limits.connections_max_within_descriptors(3);
    config.tls_reload_interval = file.tls_reload_interval();
    let scheme = config.raft.transport.scheme();
    config.raft.advertise_addr = file.advertise.raft.clone();
    file.raft.apply(&mut config.raft);
    config.raft.storage.cache_capacity_bytes = file.storage.cache_capacity_bytes;
    config.origin_idle_timeout = Duration::from_millis(origin.idle_timeout_ms);
    config.reconnect_backoff_max = Duration::from_millis(origin.reconnect_backoff_max_ms);
    config.origin_connect_timeout = Duration::from_millis(origin.connect_timeout_ms);
    config.trust_proxy_location = file.trust_proxy_location;
    config.revision_wait_max = Duration::from_millis(file.checks.revision_wait_max_ms);
    config.account_views_cached_max = file.checks.account_views_cached_max;
    if file.checks.threads > 0 {
        config.check_threads = file.checks.threads;
    }
    config.credentials = match file.checks.credentials {
        crate::config::CredentialsSetting::Required => {
            tollgate_region_node::CredentialMode::Required
        }
        crate::config::CredentialsSetting::Off => tollgate_region_node::CredentialMode::Off,
    };
    if let Some(name) = &file.name {
        config.name = name.clone();
    }
    if let Some(region) = &file.region {
        config.region = region.clone();
    }
    if let Some(licenses) = &file.licenses {
        config.license_issuer = region_issuer(licenses, &config.region)?;
    }
    config
        .raft
        .validate()
        .context("the raft settings are invalid")?;

    let (geo, watcher_stop) = match (&file.geo, file.geo_databases()?) {
        (Some(g), Some(dbs)) => {
            let dbs = Arc::new(dbs);
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            tollgate_geo::spawn_watcher(
                dbs.clone(),
                Duration::from_millis(g.reload_interval_ms),
                async move {
                    let _ = rx.await;
                },
            );
            (Some(dbs), Some(tx))
        }
        _ => {
            tracing::warn!(
                "No geo databases configured: every IP address resolves to an unknown \
                 location, which geo rules with location lists deny unless they set \
                 unknown_location = allow."
            );
            (None, None)
        }
    };
    let Some(grpc) = file.listen.grpc else {
        anyhow::bail!("listen.grpc is required for a region node");
    };
    let http = match file.listen.http {
        Some(addr) => Some(bind(addr, "http").await?),
        None => None,
    };
    let listeners = RegionListeners {
        raft: bind(file.listen.raft, "raft").await?.into(),
        grpc: bind(grpc, "grpc").await?.into(),
        http: http.map(Into::into),
    };
    let region = RegionNode::start(config, listeners, geo)
        .await
        .context("starting the region node")?;
    println!(
        "tollgate region node {}: grpc={scheme}://{} raft={}{}",
        file.node_id,
        region.grpc_addr(),
        region.raft().addr(),
        region
            .http_addr()
            .map(|a| format!(" status={scheme}://{a}/v1/status"))
            .unwrap_or_default()
    );
    if file.cluster.bootstrap {
        let members: Vec<(u64, String)> = if file.cluster.members.is_empty() {
            vec![(file.node_id, region.raft().addr().to_string())]
        } else {
            file.cluster
                .members
                .iter()
                .map(|m| (m.id, m.raft.clone()))
                .collect()
        };
        match region.raft().initialize(&members).await {
            Ok(()) => tracing::info!(members = members.len(), "Initialised a new region cluster."),
            Err(tollgate_raft::Error::AlreadyInitialized) => {}
            Err(error) => return Err(error).context("cluster.bootstrap: initialising the cluster"),
        }
    }
    shutdown_signal().await;
    tracing::info!("Shutdown requested.");
    if let Some(stop) = watcher_stop {
        let _ = stop.send(());
    }
    region.shutdown().await.context("shutting down")?;
    Ok(())
}
