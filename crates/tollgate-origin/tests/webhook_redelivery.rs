//! Redelivering a webhook's event (`Op::RedeliverWebhook`): only a revision
//! the webhook's delivery log holds, never twice in the queue, at most
//! `WEBHOOK_REDELIVERIES_MAX` queued; the deliverer's
//! `Op::WebhookRedelivered` takes it off the queue and logs it after the
//! first delivery, marked a redelivery; deleting the webhook drops its
//! queue. A refusal writes nothing.

use std::collections::BTreeSet;
use tollgate_model::UnixSeconds;
use tollgate_origin::keys;
use tollgate_origin::*;
use tollgate_raft::{ApplyContext, MemState};

const NOW: UnixSeconds = UnixSeconds(1_795_821_662);
const CTX: ApplyContext = ApplyContext {
    log_index: 1,
    term: 1,
    position_in_entry: 0,
};

fn apply(state: &mut MemState, op: Op) -> OriginResponse {
    let cmd = OriginCommand {
        actor: "key-admin".into(),
        at: NOW,
        reason: None,
        op,
    };
    state
        .apply(&OriginLogic, &CTX, &cmd)
        .expect("reads never fail in memory")
}

fn commit(state: &mut MemState, op: Op) -> u64 {
    let action = op.action();
    match apply(state, op) {
        OriginResponse::Committed { revision, .. } => revision,
        other => panic!("{action}: expected a commit, got {other:?}"),
    }
}

fn refused(state: &mut MemState, op: Op, code: RejectCode, needle: &str) {
    let before = state.clone();
    match apply(state, op) {
        OriginResponse::Rejected(r) => {
            assert_eq!(r.code, code, "{}", r.message);
            assert!(r.message.contains(needle), "{needle:?} in {:?}", r.message);
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(*state == before, "a refused command writes nothing");
}

fn delivery(revision: u64) -> DeliveryRecord {
    DeliveryRecord {
        revision,
        event: WebhookEvent::EntitlementChanged,
        attempts: 1,
        outcome: DeliveryOutcome::GaveUp,
        last_status: Some(503),
        last_error: Some("HTTP 503".into()),
        finished_at: NOW,
        redelivery: false,
    }
}

fn queued(state: &MemState) -> Vec<u64> {
    state
        .data
        .get(&keys::webhook_redeliveries("crm"))
        .map_or_else(Vec::new, |v| serde_json::from_slice(v).unwrap())
}

fn redeliver(revision: u64) -> Op {
    Op::RedeliverWebhook {
        id: "crm".into(),
        revision,
    }
}

fn webhook(id: &str) -> Op {
    Op::PutWebhook(WebhookSpec {
        id: id.into(),
        url: "https://crm.example/hook".into(),
        events: BTreeSet::from([WebhookEvent::EntitlementChanged]),
        allow_plaintext: false,
    })
}

/// A webhook `crm` whose log holds deliveries of `revisions` revisions.
fn webhook_with_log(revisions: usize) -> (MemState, Vec<u64>) {
    let mut state = MemState::default();
    commit(&mut state, webhook("crm"));
    // Any committed revision stands for an event here.
    let delivered: Vec<u64> = (0..revisions)
        .map(|_| commit(&mut state, webhook("filler")))
        .collect();
    for r in &delivered {
        commit(
            &mut state,
            Op::WebhookProgress {
                id: "crm".into(),
                through: *r,
                delivery: Some(delivery(*r)),
            },
        );
    }
    (state, delivered)
}

#[test]
fn only_a_delivered_revision_is_queued_once_and_redelivery_empties_the_queue() {
    let (mut state, delivered) = webhook_with_log(2);
    let (first, second) = (delivered[0], delivered[1]);
    refused(
        &mut state,
        redeliver(first + 10_000),
        RejectCode::NotFound,
        "never sent",
    );
    refused(&mut state, redeliver(1), RejectCode::NotFound, "never sent");
    refused(
        &mut state,
        Op::RedeliverWebhook {
            id: "nobody".into(),
            revision: first,
        },
        RejectCode::NotFound,
        "unknown webhook",
    );
    commit(&mut state, redeliver(second));
    commit(&mut state, redeliver(first));
    assert_eq!(queued(&state), [first, second], "ascending");
    refused(
        &mut state,
        redeliver(first),
        RejectCode::Conflict,
        "already queued",
    );

    let recorded = commit(
        &mut state,
        Op::WebhookRedelivered {
            id: "crm".into(),
            delivery: DeliveryRecord {
                outcome: DeliveryOutcome::Delivered,
                last_status: Some(200),
                last_error: None,
                ..delivery(first)
            },
        },
    );
    assert_eq!(queued(&state), [second]);
    let logged: DeliveryRecord =
        serde_json::from_slice(&state.data[&keys::webhook_redelivery("crm", first, recorded)])
            .unwrap();
    assert!(logged.redelivery, "marked a redelivery");
    assert_eq!(logged.outcome, DeliveryOutcome::Delivered);
    let original: DeliveryRecord =
        serde_json::from_slice(&state.data[&keys::webhook_delivery("crm", first)]).unwrap();
    assert_eq!(original, delivery(first), "the first delivery is kept");
    // Not queued (any more): refused, so a stale deliverer logs nothing.
    refused(
        &mut state,
        Op::WebhookRedelivered {
            id: "crm".into(),
            delivery: delivery(first),
        },
        RejectCode::Conflict,
        "not queued",
    );
    // Queued again after it went: accepted.
    commit(&mut state, redeliver(first));

    commit(&mut state, Op::DeleteWebhook { id: "crm".into() });
    assert!(
        queued(&state).is_empty(),
        "deleting the webhook drops its queue"
    );
}

#[test]
fn at_most_the_limit_is_queued() {
    let (mut state, delivered) = webhook_with_log(WEBHOOK_REDELIVERIES_MAX + 1);
    for r in &delivered[..WEBHOOK_REDELIVERIES_MAX] {
        commit(&mut state, redeliver(*r));
    }
    refused(
        &mut state,
        redeliver(delivered[WEBHOOK_REDELIVERIES_MAX]),
        RejectCode::Conflict,
        "redeliveries queued",
    );
}
