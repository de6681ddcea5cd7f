//! The audit log, API keys, and the public key set.

use super::{
    commit, list, path_id, read, route, Body, Doc, Method, Page, PageQuery, Route, SchemaRef,
    PAGE_QUERY,
};
use super::{Path, Query};
use crate::auth::{issue_key_for, Caller};
use crate::problem::Problem;
use crate::store::OriginStore;
use crate::{AppState, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use tollgate_model::{AccountId, UnixSeconds};
use tollgate_origin::{
    keys, ApiKeyRecord, AuditRecord, DeliveryRecord, KeyOwner, Op, Scope, WebhookRecord,
    WebhookSpec,
};
use tollgate_signing::PublicKeySet;

/// Most audit records examined for one page of a filtered query, so a
/// filter that matches nothing cannot make one request scan the whole log.
pub const AUDIT_SCAN_MAX: usize = 10_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    /// Records after this revision.
    after: Option<u64>,
    limit: Option<usize>,
    /// Only this API key's changes.
    actor: Option<String>,
    /// Only this action (`order.place`, `entitlement.revoke`, ...).
    action: Option<String>,
    /// Only targets starting with this (`entitlement/acme-pro`, `order/`).
    target: Option<String>,
}

async fn audit<S: OriginStore>(
    State(state): State<AppState<S>>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<Page<AuditRecord>>, Problem> {
    let limit = q.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    if limit == 0 || limit > PAGE_LIMIT_MAX {
        return Err(Problem::bad_request(format!(
            "limit must be 1..={PAGE_LIMIT_MAX}"
        )));
    }
    let mut cursor = q.after.map(keys::audit);
    let mut items = Vec::new();
    let mut scanned = 0;
    let mut last_revision = None;
    let mut at_end = false;
    while items.len() < limit && scanned < AUDIT_SCAN_MAX {
        let chunk = state.store.scan(
            keys::AUDIT_PREFIX.as_bytes(),
            cursor.as_deref(),
            PAGE_LIMIT_MAX,
        )?;
        if chunk.is_empty() {
            at_end = true;
            break;
        }
        for (key, value) in chunk {
            scanned += 1;
            cursor = Some(key);
            let record: AuditRecord = serde_json::from_slice(&value).map_err(|e| {
                Problem::internal(format!("stored audit record is unreadable: {e}"))
            })?;
            last_revision = Some(record.revision);
            let keep = q.actor.as_ref().is_none_or(|a| &record.actor == a)
                && q.action.as_ref().is_none_or(|a| &record.action == a)
                && q.target
                    .as_ref()
                    .is_none_or(|t| record.target.starts_with(t.as_str()));
            if keep {
                items.push(record);
                if items.len() == limit {
                    break;
                }
            }
        }
    }
    let next_after = if at_end {
        None
    } else {
        last_revision.map(|r| r.to_string())
    };
    Ok(Json(Page { items, next_after }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountAuditQuery {
    /// Records before (older than) this revision.
    before: Option<u64>,
    limit: Option<usize>,
}

/// One account's own audit trail, newest first: what was done to its
/// entitlements, users and devices, licenses, requests and portal users.
async fn account_audit<S: OriginStore>(
    State(state): State<AppState<S>>,
    Path(account): Path<String>,
    Query(q): Query<AccountAuditQuery>,
) -> Result<Json<Page<AuditRecord>>, Problem> {
    let account: AccountId = super::path_id(account)?;
    let limit = q.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    if limit == 0 || limit > PAGE_LIMIT_MAX {
        return Err(Problem::bad_request(format!(
            "limit must be 1..={PAGE_LIMIT_MAX}"
        )));
    }
    let prefix = keys::account_audit_prefix(&account);
    // Keys hold the inverted revision: newest first; "before r" starts
    // right after r's own key.
    let after = q.before.map(|r| keys::account_audit(&account, r));
    let index = state
        .store
        .scan(prefix.as_bytes(), after.as_deref(), limit + 1)?;
    let mut items = Vec::with_capacity(limit);
    for (_, value) in index.iter().take(limit) {
        let revision: u64 = serde_json::from_slice(value)
            .map_err(|e| Problem::internal(format!("stored audit index is unreadable: {e}")))?;
        match state.store.get(&keys::audit(revision))? {
            Some(bytes) => {
                items.push(serde_json::from_slice::<AuditRecord>(&bytes).map_err(|e| {
                    Problem::internal(format!("stored audit record is unreadable: {e}"))
                })?)
            }
            None => {
                return Err(Problem::internal(format!(
                    "the audit index names revision {revision}, which has no record"
                )))
            }
        }
    }
    let next_after = if index.len() > limit {
        items.last().map(|r| r.revision.to_string())
    } else {
        None
    };
    Ok(Json(Page { items, next_after }))
}

#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    scopes: BTreeSet<Scope>,
    /// The customer account the key belongs to (it then acts on that
    /// account only, with the scopes `read`, `accounts:write` and
    /// `access:request` at most); without it, a tenant key.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    account: Option<AccountId>,
}

/// A new key's token, shown once.
#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct IssuedKeyView {
    pub id: String,
    pub token: String,
    pub scopes: BTreeSet<Scope>,
    pub owner: KeyOwner,
    pub revision: u64,
}

/// A key as listed: no hash, no secret.
#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct KeyView {
    pub id: String,
    pub name: String,
    pub scopes: BTreeSet<Scope>,
    pub created_at: UnixSeconds,
    pub revoked: bool,
    pub owner: KeyOwner,
}

async fn create_key<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body<NewKey>,
) -> Result<Response, Problem> {
    let owner = match body.account {
        None => KeyOwner::Tenant,
        Some(account) => {
            // Said here for a clear answer; the state machine refuses it
            // anyway, whoever proposes the key.
            if let Some(scope) = body.scopes.iter().find(|s| !s.allowed_for_account_keys()) {
                return Err(Problem::invalid(format!(
                    "an account's key cannot hold the scope {}; it may hold read, accounts:write and access:request",
                    scope.name()
                )));
            }
            KeyOwner::Account(account)
        }
    };
    let issued = issue_key_for(&body.name, body.scopes, owner, state.clock.now())?;
    let response = commit(
        &state,
        &caller,
        &headers,
        Op::PutApiKey(issued.record.clone()),
    )
    .await?;
    let revision = response
        .headers()
        .get("x-tollgate-revision")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((
        axum::http::StatusCode::CREATED,
        Json(IssuedKeyView {
            id: issued.record.id,
            token: issued.token,
            scopes: issued.record.scopes,
            owner: issued.record.owner,
            revision,
        }),
    )
        .into_response())
}

async fn list_keys<S: OriginStore>(
    State(state): State<AppState<S>>,
) -> Result<Json<Vec<KeyView>>, Problem> {
    // Keys are few (operators create them by hand); one bounded scan.
    let entries = state.store.scan(b"api-key/", None, PAGE_LIMIT_MAX)?;
    entries
        .into_iter()
        .map(|(_, v)| {
            let k: ApiKeyRecord = serde_json::from_slice(&v)
                .map_err(|e| Problem::internal(format!("stored API key is unreadable: {e}")))?;
            Ok(KeyView {
                id: k.id,
                name: k.name,
                scopes: k.scopes,
                created_at: k.created_at,
                revoked: k.revoked,
                owner: k.owner,
            })
        })
        .collect::<Result<_, _>>()
        .map(Json)
}

async fn revoke_key<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id: tollgate_model::EntitlementId = path_id(id)?;
    commit(
        &state,
        &caller,
        &headers,
        Op::RevokeApiKey { id: id.into() },
    )
    .await
}

async fn public_keys<S: OriginStore>(
    State(state): State<AppState<S>>,
) -> Result<Json<PublicKeySet>, Problem> {
    Ok(Json(state.keys.public_set()?))
}

fn webhook_id(raw: String) -> Result<String, Problem> {
    let id: tollgate_model::EntitlementId = path_id(raw)?;
    Ok(id.into())
}

async fn put_webhook<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(spec): Body<WebhookSpec>,
) -> Result<Response, Problem> {
    if webhook_id(id)? != spec.id {
        return Err(Problem::invalid("the body's id must match the path"));
    }
    commit(&state, &caller, &headers, Op::PutWebhook(spec)).await
}

async fn get_webhook<S: OriginStore>(
    State(state): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<Json<WebhookRecord>, Problem> {
    let id = webhook_id(id)?;
    read(&state, &keys::webhook(&id), &format!("webhook {id}")).map(Json)
}

async fn list_webhooks<S: OriginStore>(
    State(state): State<AppState<S>>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<WebhookRecord>>, Problem> {
    list(&state, "webhook/", &page).map(Json)
}

async fn delete_webhook<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = webhook_id(id)?;
    commit(&state, &caller, &headers, Op::DeleteWebhook { id }).await
}

async fn deliveries<S: OriginStore>(
    State(state): State<AppState<S>>,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<DeliveryRecord>>, Problem> {
    let id = webhook_id(id)?;
    list(&state, &format!("webhook-delivery/{id}/"), &page).map(Json)
}

/// Queues a delivered (or given-up) event for delivery again.
async fn redeliver<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path((id, revision)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let id = webhook_id(id)?;
    let revision: u64 = revision
        .parse()
        .map_err(|_| Problem::bad_request("path: the revision must be a number"))?;
    commit(
        &state,
        &caller,
        &headers,
        Op::RedeliverWebhook { id, revision },
    )
    .await
}

pub fn routes<S: OriginStore>() -> Vec<Route<S>> {
    vec![
        route(
            Method::Get,
            "/v1/audit",
            get(audit::<S>),
            Doc::new(
                "audit",
                "The audit log: who changed what, when, why, at which revision.",
                Some(Scope::Read),
            )
            .ok(SchemaRef::page_of::<AuditRecord>())
            .query(&[
                ("after", "Records after this revision."),
                ("limit", "Records per page, 1..=500 (default 100)."),
                ("actor", "Only this API key's changes."),
                ("action", "Only this action, e.g. order.place."),
                (
                    "target",
                    "Only targets starting with this, e.g. entitlement/acme-pro.",
                ),
            ]),
        ),
        route(
            Method::Get,
            "/v1/accounts/{account}/audit",
            get(account_audit::<S>),
            Doc::new(
                "audit",
                "One account's audit trail, newest first: its entitlements, users and devices, \
                 licenses, access requests and portal users. `next_after` is the `before` of the \
                 next page.",
                Some(Scope::Read),
            )
            .ok(SchemaRef::page_of::<AuditRecord>())
            .query(&[
                ("before", "Records older than this revision."),
                ("limit", "Records per page, 1..=500 (default 100)."),
            ])
            .account_keys(super::AccountKeys::OwnAccount),
        ),
        route(
            Method::Get,
            "/v1/api-keys",
            get(list_keys::<S>),
            Doc::new(
                "keys",
                "List API keys (never their secrets).",
                Some(Scope::Admin),
            )
            .ok(SchemaRef::array_of::<KeyView>()),
        ),
        route(
            Method::Post,
            "/v1/api-keys",
            post(create_key::<S>),
            Doc {
                ok_status: 201,
                ..Doc::new(
                    "keys",
                    "Create an API key; its token is shown once. With `account`, the key belongs \
                 to that customer account and reaches nothing else.",
                    Some(Scope::Admin),
                )
                .body(SchemaRef::of::<NewKey>())
                .ok(SchemaRef::of::<IssuedKeyView>())
            },
        ),
        route(
            Method::Delete,
            "/v1/api-keys/{id}",
            delete(revoke_key::<S>),
            Doc::new("keys", "Revoke an API key.", Some(Scope::Admin)),
        ),
        route(
            Method::Get,
            "/v1/webhooks",
            get(list_webhooks::<S>),
            Doc::new("webhooks", "List outgoing webhooks.", Some(Scope::Admin))
                .ok(SchemaRef::page_of::<WebhookRecord>())
                .query(PAGE_QUERY),
        ),
        route(
            Method::Put,
            "/v1/webhooks/{id}",
            put(put_webhook::<S>),
            Doc::new(
                "webhooks",
                "Create or replace a webhook. Deliveries are POSTed with Tollgate-Event, Tollgate-Delivery and \
                 Tollgate-Signature (t=<unix>,kid=<key id>,sig=<base64url Ed25519 over \"tollgate.webhook.v1\", NUL, \
                 \"<t>.\" and the body>) headers, retried with backoff.",
                Some(Scope::Admin),
            )
            .body(SchemaRef::of::<WebhookSpec>()),
        ),
        route(
            Method::Get,
            "/v1/webhooks/{id}",
            get(get_webhook::<S>),
            Doc::new("webhooks", "Read a webhook and how far it has been delivered.", Some(Scope::Admin))
                .ok(SchemaRef::of::<WebhookRecord>()),
        ),
        route(
            Method::Delete,
            "/v1/webhooks/{id}",
            delete(delete_webhook::<S>),
            Doc::new("webhooks", "Delete a webhook.", Some(Scope::Admin)),
        ),
        route(
            Method::Get,
            "/v1/webhooks/{id}/deliveries",
            get(deliveries::<S>),
            Doc::new("webhooks", "A webhook's delivery log, by revision.", Some(Scope::Admin))
                .ok(SchemaRef::page_of::<DeliveryRecord>())
                .query(PAGE_QUERY),
        ),
        route(
            Method::Post,
            "/v1/webhooks/{id}/deliveries/{revision}/redeliver",
            post(redeliver::<S>),
            Doc::new(
                "webhooks",
                "Deliver the event of a revision in the webhook's delivery log again, with the same \
                 event id and Tollgate-Delivery header (receivers dedupe on it); logged as a \
                 redelivery. 404 for a revision the webhook was never sent; 409 when it is already \
                 queued or 100 are.",
                Some(Scope::Admin),
            ),
        ),
        route(
            Method::Get,
            "/.well-known/tollgate-keys.json",
            get(public_keys::<S>),
            Doc::new(
                "keys",
                "The origin's public signing keys (no authentication).",
                None,
            )
            .ok(SchemaRef::of::<PublicKeySet>()),
        ),
        route(
            Method::Get,
            "/v1/keys",
            get(public_keys::<S>),
            Doc::new(
                "keys",
                "The origin's public signing keys (no authentication).",
                None,
            )
            .ok(SchemaRef::of::<PublicKeySet>()),
        ),
    ]
}
