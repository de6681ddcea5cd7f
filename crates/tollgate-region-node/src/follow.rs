//! On the region's leader: follow the origin's changefeed from the applied
//! revision and propose what the follower verified (records, origin
//! contact, snapshot parts and commit); learn rotated origin keys through an
//! endorsement by a key the region already trusts. A refusal is counted and
//! the feed never advances past it.

use crate::config::RegionConfig;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tollgate_feed::{FeedError, FollowEvent, Follower, FollowerConfig};
use tollgate_origin::keys;
use tollgate_raft::{Node, StateView};
use tollgate_region::{RegionCommand, RegionLogic, RegionResponse};
use tollgate_signing::PublicKeySet;

/// What the origin sync has done on this node (as leader).
#[derive(Debug, Default)]
pub struct SyncStats {
    /// Records or snapshot chunks refused (signature, order, malformed).
    pub refused: AtomicU64,
    /// Origin snapshots installed.
    pub snapshots_installed: AtomicU64,
    /// Connections to the origin that failed or ended.
    pub disconnects: AtomicU64,
}

/// Proposes one command; a refusal by the state machine is an error (the
/// feed is not advanced past it).
async fn propose(node: &Node<RegionLogic>, command: RegionCommand) -> Result<u64, FeedError> {
    let outcome = node.write(command).await.map_err(|e| match e {
        tollgate_raft::Error::NotLeader { .. } => FeedError::LeaderMoved(e.to_string()),
        e => FeedError::Source(format!("proposing to the region failed: {e}")),
    })?;
    match outcome.response {
        RegionResponse::Applied { revision } => Ok(revision),
        RegionResponse::Refused { reason } => Err(FeedError::Source(format!(
            "the region refused the command: {reason}"
        ))),
        other => Err(FeedError::Source(format!(
            "unexpected answer to an origin sync command: {other:?}"
        ))),
    }
}

/// On the leader: follow the origin from the applied revision and propose
/// what verifies; reconnect with backoff. Followers wait.
/// The origin keys the region trusts: the set it accepted at the last
/// rotation, or the configured one before any.
pub(crate) fn trusted_origin_keys(
    view: &StateView,
    configured: &PublicKeySet,
) -> Result<PublicKeySet, String> {
    // A set that cannot be read or decoded is an error, not a fallback to
    // the configured keys: those may include one the origin retired since.
    match view.get(tollgate_region::ORIGIN_KEYS) {
        Ok(Some(bytes)) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("the stored origin key set does not decode: {e}")),
        Ok(None) => Ok(configured.clone()),
        Err(e) => Err(format!("reading the stored origin key set: {e}")),
    }
}

/// After a record signed by a key the region does not know: ask the origin
/// for its key set, accept it if a trusted key endorses it, and record it
/// through the region's log. True when a new set was accepted.
async fn learn_rotated_keys(
    node: &Node<RegionLogic>,
    config: &RegionConfig,
    trusted: &PublicKeySet,
) -> bool {
    let offered = match tollgate_feed::fetch_endorsed_keys(
        &config.origin_feed,
        &config.raft.transport,
        trusted,
        Duration::from_secs(5),
        config.clock.now(),
    )
    .await
    {
        Ok(set) => set,
        Err(error) => {
            tracing::error!(%error, "The origin signs with a key this region does not trust, and no trusted key endorses its key set.");
            return false;
        }
    };
    if &offered == trusted {
        return false;
    }
    let keys_json = serde_json::to_string(&offered).expect("a key set serialises");
    match propose(node, RegionCommand::TrustOriginKeys { keys_json }).await {
        Ok(_) => {
            let kids: Vec<String> = offered.keys.iter().map(|k| k.kid.to_string()).collect();
            tracing::info!(
                ?kids,
                "Accepted the origin's rotated key set, endorsed by a trusted key."
            );
            metrics::counter!("tollgate_region_origin_key_rotations_total").increment(1);
            true
        }
        Err(error) => {
            tracing::warn!(%error, "Could not record the origin's rotated key set.");
            false
        }
    }
}

pub(crate) async fn follow_origin(
    node: Arc<Node<RegionLogic>>,
    config: RegionConfig,
    stats: Arc<SyncStats>,
    mut stop: watch::Receiver<bool>,
) {
    let view = node.view();
    let initial_backoff = Duration::from_millis(50);
    let mut backoff = initial_backoff;
    loop {
        if *stop.borrow() {
            return;
        }
        if node.metrics().current_leader != Some(node.id()) {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                _ = stop.changed() => return,
            }
        }
        // Where to resume and whom to trust come from the region's state; if
        // it cannot be read, following from 0 or from stale keys would be
        // wrong: wait and read again.
        let (from, trusted) = match (
            tollgate_server::served::read_u64(&view, keys::HEAD_REVISION),
            trusted_origin_keys(&view, &config.origin_keys),
        ) {
            (Ok(from), Ok(trusted)) => (from, trusted),
            (Err(error), _) | (_, Err(error)) => {
                tracing::error!(%error, "Cannot read where to follow the origin from; retrying.");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.changed() => return,
                }
                backoff = (backoff * 2).min(config.reconnect_backoff_max);
                continue;
            }
        };
        let follower_config = FollowerConfig {
            endpoint: config.origin_feed.clone(),
            transport: config.raft.transport.clone(),
            keys: trusted.clone(),
            max_batch_records: tollgate_region::RECORDS_PER_COMMAND_MAX as u32,
            subscriber: format!("region node {}", config.name),
            connect_timeout: config.origin_connect_timeout,
            idle_timeout: config.origin_idle_timeout,
            clock: config.clock.clone(),
        };
        let result = async {
            let mut follower = Follower::connect(&follower_config, from).await?;
            backoff = initial_backoff;
            let mut keys_checked = tokio::time::Instant::now();
            // Parts of the snapshot being installed, proposed so far.
            let mut snapshot_parts = 0u32;
            loop {
                if node.metrics().current_leader != Some(node.id()) {
                    return Ok(());
                }
                if keys_checked.elapsed() >= config.origin_keys_refresh {
                    keys_checked = tokio::time::Instant::now();
                    if learn_rotated_keys(&node, &config, &trusted).await {
                        // Follow again under the new set.
                        return Ok(());
                    }
                }
                let command = match follower.next().await? {
                    FollowEvent::Records(records) => RegionCommand::ApplyChanges {
                        records,
                        heard_at: config.clock.now(),
                    },
                    FollowEvent::Heartbeat { head_revision, .. } => RegionCommand::OriginContact {
                        head_revision,
                        heard_at: config.clock.now(),
                    },
                    FollowEvent::SnapshotChunk {
                        revision,
                        index,
                        last,
                        mutations,
                    } => {
                        if index == 0 {
                            tracing::info!(revision, "Installing the origin's snapshot: this region is below the origin's retention floor.");
                            snapshot_parts = 0;
                        }
                        for part in tollgate_region::snapshot_parts(mutations) {
                            let command = RegionCommand::SnapshotPart {
                                revision,
                                seq: snapshot_parts,
                                mutations: part,
                            };
                            propose(&node, command).await?;
                            snapshot_parts += 1;
                        }
                        if !last {
                            continue;
                        }
                        RegionCommand::SnapshotCommit {
                            revision,
                            parts: snapshot_parts,
                            heard_at: config.clock.now(),
                        }
                    }
                };
                let commit = match &command {
                    RegionCommand::SnapshotCommit {
                        revision, parts, ..
                    } => Some((*revision, *parts)),
                    _ => None,
                };
                propose(&node, command).await?;
                if let Some((revision, parts)) = commit {
                    stats.snapshots_installed.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("tollgate_region_snapshots_installed_total").increment(1);
                    tracing::info!(revision, parts, "Installed the origin's snapshot.");
                }
            }
        };
        tokio::select! {
            outcome = result => {
                if let Err(error) = outcome {
                    stats.disconnects.fetch_add(1, Ordering::Relaxed);
                    if let FeedError::Signature {
                        source: tollgate_signing::VerifyError::UnknownKey(_),
                        ..
                    } = &error
                    {
                        if learn_rotated_keys(&node, &config, &trusted).await {
                            backoff = initial_backoff;
                            continue;
                        }
                    }
                    if matches!(error, FeedError::Refused { .. } | FeedError::Signature { .. }) {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    if matches!(error, FeedError::LeaderMoved(_)) {
                        // An election, as at start: not a failure to follow.
                        tracing::info!(%error, origin = %config.origin_feed, "Leadership moved while following the origin.");
                    } else {
                        tracing::warn!(%error, origin = %config.origin_feed, "Following the origin failed; reconnecting.");
                    }
                }
            }
            _ = stop.changed() => return,
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(config.reconnect_backoff_max);
    }
}
