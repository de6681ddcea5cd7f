//! Outgoing webhooks: their definitions and their deliverer's progress
//! through the event stream. They never leave the origin: their change
//! records carry no mutation.

use super::{invalid, reject, touched, Changed, Step, Tx};
use crate::command::{
    DeliveryRecord, OriginCommand, RejectCode, WebhookRecord, WebhookSpec, REASON_LEN_MAX,
    WEBHOOKS_MAX, WEBHOOK_REDELIVERIES_MAX, WEBHOOK_URL_LEN_MAX,
};
use crate::keys;
use tollgate_model::EntitlementId;

pub(super) fn put_webhook(
    tx: &mut Tx<'_>,
    cmd: &OriginCommand,
    spec: &WebhookSpec,
    revision: u64,
) -> Step<Changed> {
    EntitlementId::new(spec.id.as_str()).map_err(invalid)?;
    let url_ok = (spec.url.starts_with("http://") || spec.url.starts_with("https://"))
        && spec.url.len() <= WEBHOOK_URL_LEN_MAX
        && !spec.url.chars().any(char::is_whitespace);
    if !url_ok {
        return reject(
            RejectCode::Invalid,
            format!("url must be http:// or https://, without spaces, at most {WEBHOOK_URL_LEN_MAX} bytes"),
        );
    }
    if spec.url.starts_with("http://") && !spec.allow_plaintext {
        return reject(
            RejectCode::Invalid,
            "url is plain http://: use https://, or set allow_plaintext to deliver in clear",
        );
    }
    if spec.allow_plaintext && spec.url.starts_with("http://") {
        // The audit log says, in the action itself, that this receiver
        // gets events in clear.
        tx.action = Some("webhook.put.insecure_plaintext");
    }
    if spec.events.is_empty() {
        return reject(RejectCode::Invalid, "a webhook needs at least one event");
    }
    let existing: Option<WebhookRecord> = tx.get(&keys::webhook(&spec.id))?;
    if existing.is_none() {
        let mut ids: Vec<String> = tx.get(keys::WEBHOOK_INDEX)?.unwrap_or_default();
        if ids.len() >= WEBHOOKS_MAX {
            return reject(
                RejectCode::Invalid,
                format!("at most {WEBHOOKS_MAX} webhooks"),
            );
        }
        ids.push(spec.id.clone());
        tx.put(keys::WEBHOOK_INDEX.to_vec(), &ids);
    }
    // A new webhook hears about what commits after it; a replaced one keeps
    // its place in the event stream.
    let record = WebhookRecord {
        spec: spec.clone(),
        created_at: existing.as_ref().map_or(cmd.at, |e| e.created_at),
        created_revision: existing.as_ref().map_or(revision, |e| e.created_revision),
        processed_through: existing.as_ref().map_or(revision, |e| e.processed_through),
    };
    tx.put(keys::webhook(&spec.id), &record);
    Ok(Changed {
        target: format!("webhook/{}", spec.id),
        entitlements: Vec::new(),
    })
}

pub(super) fn delete_webhook(tx: &mut Tx<'_>, id: &str) -> Step<Changed> {
    let _: WebhookRecord = tx.require(&keys::webhook(id), &format!("webhook {id}"))?;
    tx.delete(keys::webhook(id));
    if tx.exists(&keys::webhook_redeliveries(id))? {
        tx.delete(keys::webhook_redeliveries(id));
    }
    let mut ids: Vec<String> = tx.get(keys::WEBHOOK_INDEX)?.unwrap_or_default();
    ids.retain(|x| x != id);
    tx.put(keys::WEBHOOK_INDEX.to_vec(), &ids);
    Ok(touched(format!("webhook/{id}")))
}

pub(super) fn webhook_progress(
    tx: &mut Tx<'_>,
    id: &str,
    through: u64,
    delivery: Option<&DeliveryRecord>,
    revision: u64,
) -> Step<Changed> {
    let mut record: WebhookRecord = tx.require(&keys::webhook(id), &format!("webhook {id}"))?;
    if through <= record.processed_through {
        return reject(
            RejectCode::Conflict,
            format!("webhook {id} already processed revision {through}"),
        );
    }
    if through >= revision {
        return reject(
            RejectCode::Invalid,
            format!("revision {through} is not committed yet"),
        );
    }
    record.processed_through = through;
    tx.put(keys::webhook(id), &record);
    if let Some(d) = delivery {
        if d.last_error
            .as_ref()
            .is_some_and(|e| e.len() > REASON_LEN_MAX)
        {
            return reject(RejectCode::Invalid, "last_error is too long");
        }
        tx.put(keys::webhook_delivery(id, d.revision), d);
    }
    Ok(touched(format!("webhook/{id}")))
}

/// Queues the event of `of` for redelivery to webhook `id`: only a
/// revision its delivery log holds (one it was sent), once at a time, at
/// most [`WEBHOOK_REDELIVERIES_MAX`] queued.
pub(super) fn redeliver_webhook(tx: &mut Tx<'_>, id: &str, of: u64) -> Step<Changed> {
    let _: WebhookRecord = tx.require(&keys::webhook(id), &format!("webhook {id}"))?;
    if !tx.exists(&keys::webhook_delivery(id, of))? {
        return reject(
            RejectCode::NotFound,
            format!("webhook {id} was never sent revision {of}"),
        );
    }
    let key = keys::webhook_redeliveries(id);
    let mut queued: Vec<u64> = tx.get(&key)?.unwrap_or_default();
    if queued.contains(&of) {
        return reject(
            RejectCode::Conflict,
            format!("revision {of} is already queued for redelivery to webhook {id}"),
        );
    }
    if queued.len() >= WEBHOOK_REDELIVERIES_MAX {
        return reject(
            RejectCode::Conflict,
            format!(
                "webhook {id} already has {WEBHOOK_REDELIVERIES_MAX} redeliveries queued; wait for them"
            ),
        );
    }
    queued.push(of);
    queued.sort_unstable();
    tx.put(key, &queued);
    Ok(touched(format!("webhook/{id}")))
}

/// The deliverer redelivered a queued revision: out of the queue, into the
/// delivery log after the first delivery.
pub(super) fn webhook_redelivered(
    tx: &mut Tx<'_>,
    id: &str,
    delivery: &DeliveryRecord,
    revision: u64,
) -> Step<Changed> {
    let _: WebhookRecord = tx.require(&keys::webhook(id), &format!("webhook {id}"))?;
    let key = keys::webhook_redeliveries(id);
    let mut queued: Vec<u64> = tx.get(&key)?.unwrap_or_default();
    let before = queued.len();
    queued.retain(|r| *r != delivery.revision);
    if queued.len() == before {
        return reject(
            RejectCode::Conflict,
            format!(
                "revision {} is not queued for redelivery to webhook {id}",
                delivery.revision
            ),
        );
    }
    if delivery
        .last_error
        .as_ref()
        .is_some_and(|e| e.len() > REASON_LEN_MAX)
    {
        return reject(RejectCode::Invalid, "last_error is too long");
    }
    if queued.is_empty() {
        tx.delete(key);
    } else {
        tx.put(key, &queued);
    }
    let record = DeliveryRecord {
        redelivery: true,
        ..delivery.clone()
    };
    tx.put(
        keys::webhook_redelivery(id, delivery.revision, revision),
        &record,
    );
    Ok(touched(format!("webhook/{id}")))
}
