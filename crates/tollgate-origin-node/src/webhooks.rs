//! Outgoing webhooks: on the origin's leader, every event a webhook
//! subscribes to is POSTed to it, in revision order, signed with the
//! origin's key, retried with exponential backoff, and recorded in the
//! webhook's delivery log (through Raft, so a new leader resumes where the
//! old one stopped: at-least-once delivery). An operator may ask for an
//! event to be delivered again (`Op::RedeliverWebhook`): the deliverer
//! sends it with the same event id and `Tollgate-Delivery` header, so a
//! receiver that dedupes sees it once, and logs it as a redelivery.

use crate::store::OriginState;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tollgate_model::{ChangeRecord, EntitlementId, Mutation, UnixSeconds};
use tollgate_origin::{
    keys, AuditRecord, DeliveryOutcome, DeliveryRecord, Op, OriginCommand, WebhookEvent,
    WebhookRecord,
};
use tollgate_signing::{SharedRing, CONTEXT_WEBHOOK};

/// Audit records examined per webhook per round.
const SCAN_BATCH: usize = 256;
/// Skipped records after which the cursor is persisted even without a
/// delivery (so a new leader does not rescan them all).
const PERSIST_SKIPPED_AFTER: u64 = 10_000;
/// Longest error text kept in the delivery log, in bytes.
const ERROR_LEN_MAX: usize = 512;
/// Queued redeliveries sent per webhook per round (the rest wait for the
/// next round, so new events keep flowing).
const REDELIVERIES_PER_ROUND: usize = 10;

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// How often the leader looks for new events when idle.
    pub poll_interval: Duration,
    /// Time allowed for one POST.
    pub request_timeout: Duration,
    /// Attempts per event before giving up on it.
    pub attempts_max: u32,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// A CA bundle trusted for `https://` receivers besides the operating
    /// system's store (an internal CA).
    pub ca: Option<std::path::PathBuf>,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            poll_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            attempts_max: 8,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            ca: None,
        }
    }
}

/// The body of a delivery.
#[derive(Debug, Serialize)]
struct Event<'a> {
    /// `<webhook id>-<revision>`: the same on every retry, for deduplication.
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    revision: u64,
    occurred_at: UnixSeconds,
    actor: &'a str,
    target: &'a str,
    reason: Option<&'a str>,
    /// Entitlements the change touched (when its change record is still
    /// retained).
    entitlements: Vec<EntitlementId>,
}

pub(crate) async fn run(
    state: Arc<OriginState>,
    keys_ring: SharedRing,
    config: WebhookConfig,
    mut stop: watch::Receiver<bool>,
) {
    // Receivers' certificates are verified against the system's CA store
    // and `ca`; without a usable root, https:// deliveries fail (and say
    // why in the delivery log) rather than go unverified.
    let mut builder = reqwest::Client::builder()
        .timeout(config.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .https_only(false);
    match tollgate_tls::web_client_config(config.ca.as_deref()) {
        Ok(tls) => builder = builder.use_preconfigured_tls((*tls).clone()),
        Err(error) => tracing::warn!(%error, "Webhooks to https:// receivers will fail."),
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(error) => {
            tracing::error!(%error, "Cannot build the webhook HTTP client; webhooks are off.");
            return;
        }
    };
    // One task per webhook, so a slow or dead receiver delays only itself.
    let mut workers: HashMap<String, JoinHandle<()>> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(config.poll_interval) => {}
            _ = stop.changed() => {}
        }
        let node = &state.node;
        let leading = node.metrics().current_leader == Some(node.id());
        if *stop.borrow() || !leading {
            for (_, worker) in workers.drain() {
                worker.abort();
            }
            if *stop.borrow() {
                return;
            }
            continue;
        }
        let ids: Vec<String> = read(&state, keys::WEBHOOK_INDEX).unwrap_or_default();
        workers.retain(|id, worker| {
            let keep = ids.contains(id) && !worker.is_finished();
            if !keep {
                worker.abort();
            }
            keep
        });
        for id in ids {
            workers.entry(id.clone()).or_insert_with(|| {
                let worker = Worker {
                    state: state.clone(),
                    keys: keys_ring.clone(),
                    client: client.clone(),
                    config: config.clone(),
                    id,
                    stop: stop.clone(),
                };
                tokio::spawn(worker.run())
            });
        }
    }
}

/// Delivers one webhook's events, in order.
struct Worker {
    state: Arc<OriginState>,
    keys: SharedRing,
    client: reqwest::Client,
    config: WebhookConfig,
    id: String,
    stop: watch::Receiver<bool>,
}

impl Worker {
    async fn run(self) {
        // The in-memory cursor runs ahead of the persisted one past records
        // that are not events for this webhook.
        let mut cursor = 0;
        loop {
            if *self.stop.borrow() {
                return;
            }
            if !process(
                &self.state,
                &self.keys,
                &self.client,
                &self.config,
                &self.id,
                &mut cursor,
                &self.stop,
            )
            .await
            {
                return; // the webhook is gone
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }
}

fn read<T: serde::de::DeserializeOwned>(state: &OriginState, key: &[u8]) -> Option<T> {
    state
        .view
        .get(key)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

async fn persist(
    state: &OriginState,
    id: &str,
    through: u64,
    delivery: Option<DeliveryRecord>,
) -> bool {
    write(
        state,
        id,
        Op::WebhookProgress {
            id: id.to_string(),
            through,
            delivery,
        },
    )
    .await
}

async fn write(state: &OriginState, id: &str, op: Op) -> bool {
    let command = OriginCommand {
        actor: "webhooks".into(),
        at: state.clock.now(),
        reason: None,
        op,
    };
    match state.node.write(command).await {
        Ok(_) => true,
        Err(error) => {
            tracing::warn!(webhook = id, %error, "Could not record webhook progress; will retry.");
            false
        }
    }
}

/// One round for one webhook; `false` when the webhook no longer exists.
async fn process(
    state: &OriginState,
    keys_ring: &SharedRing,
    client: &reqwest::Client,
    config: &WebhookConfig,
    id: &str,
    cursor: &mut u64,
    stop: &watch::Receiver<bool>,
) -> bool {
    let Some(record) = read::<WebhookRecord>(state, &keys::webhook(id)) else {
        return false;
    };
    if !redeliver(state, keys_ring, client, config, &record, stop).await {
        return true;
    }
    let persisted = record.processed_through;
    *cursor = (*cursor).max(persisted);
    let Ok(batch) = state.view.scan(
        keys::AUDIT_PREFIX.as_bytes(),
        Some(&keys::audit(*cursor)),
        SCAN_BATCH,
    ) else {
        return true;
    };
    for (_, value) in batch {
        let Ok(audit) = serde_json::from_slice::<AuditRecord>(&value) else {
            continue;
        };
        let event =
            WebhookEvent::of_action(&audit.action).filter(|e| record.spec.events.contains(e));
        let Some(event) = event else {
            *cursor = audit.revision;
            continue;
        };
        let delivery = deliver(
            state, keys_ring, client, config, &record, event, &audit, stop,
        )
        .await;
        let Some(delivery) = delivery else {
            return true; // shutting down: the next leader redelivers
        };
        if !persist(state, id, audit.revision, Some(delivery)).await {
            return true;
        }
        *cursor = audit.revision;
    }
    if *cursor > persisted + PERSIST_SKIPPED_AFTER {
        persist(state, id, *cursor, None).await;
    }
    true
}

/// Sends the queued redeliveries of one webhook (a few per round), each
/// recorded through the log, which takes it off the queue; `false` when
/// stopping.
async fn redeliver(
    state: &OriginState,
    keys_ring: &SharedRing,
    client: &reqwest::Client,
    config: &WebhookConfig,
    record: &WebhookRecord,
    stop: &watch::Receiver<bool>,
) -> bool {
    let id = &record.spec.id;
    let queued: Vec<u64> = read(state, &keys::webhook_redeliveries(id)).unwrap_or_default();
    for revision in queued.into_iter().take(REDELIVERIES_PER_ROUND) {
        let first = read::<DeliveryRecord>(state, &keys::webhook_delivery(id, revision));
        let audit = read::<AuditRecord>(state, &keys::audit(revision));
        let event = first.as_ref().map(|d| d.event).or_else(|| {
            audit
                .as_ref()
                .and_then(|a| WebhookEvent::of_action(&a.action))
        });
        let Some(event) = event else {
            tracing::warn!(webhook = %id, revision, "A queued redelivery names no known event.");
            continue;
        };
        let delivery = match &audit {
            Some(audit) => {
                tracing::info!(webhook = %id, revision, "Redelivering a webhook event.");
                match deliver(state, keys_ring, client, config, record, event, audit, stop).await {
                    Some(d) => d,
                    None => return false,
                }
            }
            None => DeliveryRecord {
                revision,
                event,
                attempts: 0,
                outcome: DeliveryOutcome::GaveUp,
                last_status: None,
                last_error: Some("the event's audit record is gone".into()),
                finished_at: state.clock.now(),
                redelivery: true,
            },
        };
        let delivery = DeliveryRecord {
            redelivery: true,
            ..delivery
        };
        if !write(
            state,
            id,
            Op::WebhookRedelivered {
                id: id.clone(),
                delivery,
            },
        )
        .await
        {
            return true;
        }
    }
    true
}

#[allow(clippy::too_many_arguments)]
async fn deliver(
    state: &OriginState,
    keys_ring: &SharedRing,
    client: &reqwest::Client,
    config: &WebhookConfig,
    record: &WebhookRecord,
    event: WebhookEvent,
    audit: &AuditRecord,
    stop: &watch::Receiver<bool>,
) -> Option<DeliveryRecord> {
    let entitlements = read::<ChangeRecord>(state, &keys::change(audit.revision))
        .map(|c| {
            c.mutations
                .into_iter()
                .filter_map(|m| match m {
                    Mutation::PutEntitlement(e) => Some(e.id),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let delivery_id = format!("{}-{}", record.spec.id, audit.revision);
    let body = serde_json::to_vec(&Event {
        id: delivery_id.clone(),
        kind: event.name(),
        revision: audit.revision,
        occurred_at: audit.at,
        actor: &audit.actor,
        target: &audit.target,
        reason: audit.reason.as_deref(),
        entitlements,
    })
    .expect("events serialise");

    // A plain http:// receiver only with its explicit opt-in (a webhook
    // stored before the opt-in existed has none): never sent in clear by
    // default.
    if record.spec.url.starts_with("http://") && !record.spec.allow_plaintext {
        tracing::error!(
            webhook = %record.spec.id,
            "Not delivering to a plain http:// URL without allow_plaintext."
        );
        metrics::counter!("tollgate_webhook_deliveries_total", "outcome" => "refused_plaintext")
            .increment(1);
        return Some(DeliveryRecord {
            revision: audit.revision,
            event,
            attempts: 0,
            outcome: DeliveryOutcome::GaveUp,
            last_status: None,
            last_error: Some(
                "the url is plain http:// and the webhook does not set allow_plaintext".into(),
            ),
            finished_at: state.clock.now(),
            redelivery: false,
        });
    }
    let mut backoff = config.backoff_initial;
    let (mut last_status, mut last_error) = (None, None);
    for attempt in 1..=config.attempts_max.max(1) {
        if *stop.borrow() {
            return None;
        }
        let timestamp = state.clock.now().0;
        let mut signed = format!("{timestamp}.").into_bytes();
        signed.extend_from_slice(&body);
        // Without the cluster's keys loaded the node signs nothing: that
        // counts as a failed attempt, retried like any other.
        let result = match keys_ring.current() {
            Ok(ring) => {
                let signature = ring.sign(CONTEXT_WEBHOOK, signed);
                let header = format!(
                    "t={timestamp},kid={},sig={}",
                    signature.kid,
                    B64.encode(&signature.signature)
                );
                client
                    .post(&record.spec.url)
                    .header("content-type", "application/json")
                    .header("tollgate-event", event.name())
                    .header("tollgate-delivery", &delivery_id)
                    .header("tollgate-signature", header)
                    .body(body.clone())
                    .send()
                    .await
                    // With its causes: "... invalid peer certificate: UnknownIssuer".
                    .map_err(|error| tollgate_tls::error_chain(&error))
            }
            Err(not_loaded) => Err(not_loaded.to_string()),
        };
        match result {
            Ok(resp) if resp.status().is_success() => {
                metrics::counter!("tollgate_webhook_deliveries_total", "outcome" => "delivered")
                    .increment(1);
                return Some(DeliveryRecord {
                    revision: audit.revision,
                    event,
                    attempts: attempt,
                    outcome: DeliveryOutcome::Delivered,
                    last_status: Some(resp.status().as_u16()),
                    last_error: None,
                    finished_at: state.clock.now(),
                    redelivery: false,
                });
            }
            Ok(resp) => {
                last_status = Some(resp.status().as_u16());
                last_error = Some(format!("HTTP {}", resp.status()));
            }
            Err(mut text) => {
                last_status = None;
                if text.len() > ERROR_LEN_MAX {
                    let mut end = ERROR_LEN_MAX;
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    text.truncate(end);
                }
                last_error = Some(text);
            }
        }
        tracing::warn!(
            webhook = %record.spec.id,
            revision = audit.revision,
            attempt,
            error = last_error.as_deref().unwrap_or(""),
            "Webhook delivery failed."
        );
        if attempt < config.attempts_max {
            let mut stop = stop.clone();
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => return None,
            }
            backoff = (backoff * 2).min(config.backoff_max);
        }
    }
    tracing::error!(
        webhook = %record.spec.id,
        revision = audit.revision,
        "Gave up on a webhook delivery; the receiver must catch up from the audit log."
    );
    metrics::counter!("tollgate_webhook_deliveries_total", "outcome" => "failed").increment(1);
    Some(DeliveryRecord {
        revision: audit.revision,
        event,
        attempts: config.attempts_max.max(1),
        outcome: DeliveryOutcome::GaveUp,
        last_status,
        last_error,
        finished_at: state.clock.now(),
        redelivery: false,
    })
}
