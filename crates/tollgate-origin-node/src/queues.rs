//! Access requests filed before the listing queues existed (an origin that
//! ran an earlier version) are put into them by the leader after it starts:
//! scanned page by page and queued `QUEUE_BACKFILL_MAX` at a time, so an
//! approver's `GET /v1/access-requests` shows every request, old ones too.
//! An origin with nothing to queue commits nothing.

use crate::store::OriginState;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tollgate_origin::{keys, AccessRequest, Op, OriginCommand, OriginResponse, QUEUE_BACKFILL_MAX};
use tollgate_server::shutdown::stopped;

/// How often a node that is not (yet) the leader looks again.
const RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// Requests read per scan.
const SCAN_PAGE: usize = 500;

/// Runs until this process has queued every request outside the queues
/// once as leader, or stops.
pub(crate) async fn backfill(state: Arc<OriginState>, stop: watch::Receiver<bool>) {
    let stop = stopped(stop);
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(RETRY_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        if state.node.metrics().current_leader != Some(state.node.id()) {
            continue;
        }
        match backfill_once(&state).await {
            Ok(0) => return,
            Ok(queued) => {
                tracing::info!(
                    queued,
                    "Queued the access requests filed before the listing queues existed."
                );
                return;
            }
            Err(error) => {
                tracing::warn!(%error, "Could not queue older access requests for listing yet; retrying.")
            }
        }
    }
}

async fn backfill_once(state: &OriginState) -> Result<usize, String> {
    let prefix = keys::access_request("");
    let all = keys::access_request_queue(None, None);
    let mut after: Option<Vec<u8>> = None;
    let (mut missing, mut queued) = (Vec::new(), 0);
    loop {
        let page = state
            .view
            .scan(&prefix, after.as_deref(), SCAN_PAGE)
            .map_err(|e| e.to_string())?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = Some(last.clone());
        for (key, value) in &page {
            let request: AccessRequest = serde_json::from_slice(value).map_err(|e| {
                format!(
                    "stored value under {} does not decode: {e}",
                    String::from_utf8_lossy(key)
                )
            })?;
            let entry = format!(
                "{all}{}",
                keys::access_request_position(request.requested_at, &request.spec.id)
            );
            let queued_already = state
                .view
                .get(entry.as_bytes())
                .map_err(|e| e.to_string())?
                .is_some();
            if !queued_already {
                missing.push(request.spec.id);
            }
            if missing.len() == QUEUE_BACKFILL_MAX {
                queued += commit(state, std::mem::take(&mut missing)).await?;
            }
        }
    }
    if !missing.is_empty() {
        queued += commit(state, missing).await?;
    }
    Ok(queued)
}

async fn commit(state: &OriginState, ids: Vec<String>) -> Result<usize, String> {
    let count = ids.len();
    let command = OriginCommand {
        actor: format!("origin-node-{}", state.node.id()),
        at: state.clock.now(),
        reason: Some("filed before the listing queues existed".into()),
        op: Op::QueueAccessRequests { ids },
    };
    match state.node.write(command).await {
        Ok(outcome) => match outcome.response {
            OriginResponse::Rejected(r) => Err(r.message),
            _ => Ok(count),
        },
        Err(e) => Err(e.to_string()),
    }
}
