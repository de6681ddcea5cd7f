//! Regions, webhooks, API keys and application credentials, signing keys,
//! the vendor's portal users.
//!
//! Everything but the regions page goes through the REST API as the
//! signed-in user, so a support user's session reaches what their scopes
//! reach (webhooks, keys and signing need `admin`), and every change is in
//! the audit log. The regions page reads the regions' reports from the
//! origin's state, as `GET /v1/regions` does; staff are portal users, read
//! and changed as the customer's users page does.

use super::{admin_only, nav, vendor_only};
use crate::auth::{read_json, CsrfOnly, Viewer};
use crate::web::{encode_query, page, random_token, sha256_hex, Chrome, PageError};
use crate::words;
use crate::{Shared, BASE};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use std::collections::{BTreeSet, VecDeque};
use tollgate_api::{OriginStore, Page};
use tollgate_model::{EntitlementId, UnixSeconds};
use tollgate_origin::portal::{PortalInvite, PortalRole, PortalUser};
use tollgate_origin::regions::{MemberRole, RegionStatusRecord};
use tollgate_origin::{
    keys, DeliveryOutcome, DeliveryRecord, KeyOwner, Op, Scope, WebhookEvent, WebhookRecord,
    WebhookSpec,
};
use tollgate_signing::{KeyStatus, PublicKeySet};

/// How often a region's leader reports (its `report_interval`); a region
/// silent for three of them is flagged.
const REPORT_INTERVAL_SECONDS: i64 = 15;
const REPORT_LATE_SECONDS: i64 = 3 * REPORT_INTERVAL_SECONDS;
/// A member out of touch with the origin this long is flagged.
const STALE_WARN_SECONDS: u64 = 60;
const STALE_BAD_SECONDS: u64 = 15 * 60;
/// A geo database older than this is flagged (MaxMind rebuilds weekly).
const GEO_OLD_SECONDS: i64 = 35 * 86_400;
/// Newest deliveries a webhook's page shows.
const DELIVERIES_SHOWN: usize = 100;
/// Calls to the delivery log for one webhook page, at most.
const DELIVERY_CALLS_MAX: usize = 40;
/// Portal users examined when listing the staff, at most.
const STAFF_SCAN_MAX: usize = 20_000;

/// Fixed notices after a change (never text from the query string).
fn notice(done: Option<&str>) -> Option<String> {
    let text = match done? {
        "webhook_saved" => "The webhook is saved. It receives events committed from now on.",
        "webhook_deleted" => "The webhook is deleted. Nothing more is sent to it.",
        "redelivery_queued" => {
            "Queued for redelivery. The event is sent again within seconds, with the same event id; \
             the log below shows it as a redelivery."
        }
        "key_revoked" => "The API key is revoked. It is refused from now on.",
        "credential_revoked" => {
            "The credential is revoked. Every region refuses it once it applies the change."
        }
        "key_rotated" => {
            "A new signing key is active. The previous key keeps verifying until its date below."
        }
        "key_retired" => "The key is retired. Nothing it signed verifies any more.",
        "user_changed" => "Saved.",
        "user_removed" => "The user is removed and signed out everywhere.",
        _ => return None,
    };
    Some(text.to_string())
}

#[derive(Deserialize, Default)]
struct Done {
    done: Option<String>,
}

fn back(path: &str, done: &str) -> Response {
    Redirect::to(&format!("{BASE}/vendor{path}?done={done}")).into_response()
}

/// "45 seconds", "2 minutes", "3 hours", "5 days" (rounded down).
fn age(seconds: u64) -> String {
    let plural = |n: u64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{} {unit}s", words::number(n))
        }
    };
    match seconds {
        s if s < 60 => plural(s, "second"),
        s if s < 3_600 => plural(s / 60, "minute"),
        s if s < 86_400 => plural(s / 3_600, "hour"),
        s => plural(s / 86_400, "day"),
    }
}

/// The origin's own head revision.
fn head_revision<S: OriginStore>(portal: &Shared<S>) -> Result<u64, PageError> {
    Ok(read_json(&*portal.app.store, keys::HEAD_REVISION)?.unwrap_or(0))
}

/// A path id (webhook, key, credential): the id rules, or 404.
fn path_id(raw: &str) -> Result<String, PageError> {
    EntitlementId::try_from(raw.to_string())
        .map(|id| id.to_string())
        .map_err(|_| PageError::NotFound)
}

/// Anything a committing API call answers; only its success matters here.
type Answer = serde_json::Value;

// ----- Regions ----------------------------------------------------------

/// A status in words, with its class (never colour alone).
pub(crate) struct Status {
    pub text: String,
    pub class: &'static str,
}

fn status(text: impl Into<String>, class: &'static str) -> Status {
    Status {
        text: text.into(),
        class,
    }
}

pub(crate) struct GeoLine {
    pub slot: String,
    pub database_type: String,
    pub built: String,
    pub old: bool,
}

pub(crate) struct NodeRow {
    pub node_id: u64,
    pub addr: String,
    pub role: &'static str,
    pub reachable: Status,
    pub applied: String,
    pub lag: Status,
    pub contact: Status,
    pub geo: Vec<GeoLine>,
}

pub(crate) struct RegionView {
    pub name: String,
    pub health: Status,
    pub heard: Status,
    pub received_at: String,
    pub leader: String,
    pub term: u64,
    pub reporter: u64,
    pub nodes: Vec<NodeRow>,
    pub seat_entitlements: usize,
    pub seats_truncated: bool,
}

#[derive(Template)]
#[template(path = "vendor/regions.html")]
struct RegionsPage {
    chrome: Chrome,
    head: u64,
    regions: Vec<RegionView>,
    late_after: String,
}

fn region_view(record: RegionStatusRecord, head: u64, at: UnixSeconds) -> RegionView {
    let report = record.report;
    let silent = (at.0 - record.received_at.0).max(0);
    let heard = if silent > REPORT_LATE_SECONDS {
        status(format!("No report for {}", age(silent as u64)), "bad")
    } else {
        status(format!("Reported {} ago", age(silent as u64)), "ok")
    };
    let mut nodes = Vec::with_capacity(report.members.len());
    let mut unreachable = 0;
    let mut behind = 0;
    for m in &report.members {
        let reachable = if m.reachable {
            status("Reachable", "ok")
        } else {
            unreachable += 1;
            status(
                format!(
                    "Unreachable: {}",
                    m.error.as_deref().unwrap_or("no answer to the leader")
                ),
                "bad",
            )
        };
        let (applied, lag, contact, geo) = match &m.facts {
            None => (
                "unknown".to_string(),
                status("Unknown", "warn"),
                status("Unknown", "warn"),
                Vec::new(),
            ),
            Some(f) => {
                // Every report is itself a revision, so a region is always
                // a few behind the head: it is fine while it has applied all
                // it heard of and hears from the origin often.
                let behind_by = head.saturating_sub(f.applied_revision);
                let to_apply = f.origin_head_revision.saturating_sub(f.applied_revision);
                let fresh = f.staleness_seconds.is_some_and(|s| s < STALE_WARN_SECONDS);
                let plural = |n: u64| if n == 1 { "" } else { "s" };
                let lag = if behind_by == 0 {
                    status("Up to date", "ok")
                } else if to_apply == 0 && fresh {
                    status(
                        format!(
                            "{} revision{} behind: all it has heard of is applied",
                            words::number(behind_by),
                            plural(behind_by)
                        ),
                        "ok",
                    )
                } else {
                    behind += 1;
                    let detail = if to_apply > 0 {
                        format!("{} heard of, not yet applied", words::number(to_apply))
                    } else {
                        "not hearing from the origin".to_string()
                    };
                    status(
                        format!(
                            "{} revision{} behind ({detail})",
                            words::number(behind_by),
                            plural(behind_by)
                        ),
                        "warn",
                    )
                };
                let contact = match (f.staleness_seconds, f.last_origin_contact) {
                    (None, None) => status("Has not heard from the origin", "bad"),
                    (stale, last) => {
                        let stale = stale.unwrap_or(0);
                        let when = last
                            .map(|l| format!(" (last at {})", words::date_time(l)))
                            .unwrap_or_default();
                        let class = if stale >= STALE_BAD_SECONDS {
                            "bad"
                        } else if stale >= STALE_WARN_SECONDS {
                            "warn"
                        } else {
                            "ok"
                        };
                        status(format!("Heard {} ago{when}", age(stale)), class)
                    }
                };
                let geo = f
                    .geo
                    .iter()
                    .map(|g| {
                        let built = UnixSeconds(g.build_epoch.min(i64::MAX as u64) as i64);
                        GeoLine {
                            slot: g.slot.clone(),
                            database_type: g.database_type.clone(),
                            built: words::date(built),
                            old: at.0 - built.0 > GEO_OLD_SECONDS,
                        }
                    })
                    .collect();
                (words::number(f.applied_revision), lag, contact, geo)
            }
        };
        nodes.push(NodeRow {
            node_id: m.node_id,
            addr: m.addr.clone(),
            role: match m.role {
                MemberRole::Leader => "Leader",
                MemberRole::Follower => "Follower",
                MemberRole::Learner => "Learner",
            },
            reachable,
            applied,
            lag,
            contact,
            geo,
        });
    }
    let health = if heard.class == "bad" {
        status("Silent: the origin has no recent report", "bad")
    } else if report.leader_id == 0 {
        status("No leader", "bad")
    } else if unreachable > 0 {
        status(
            format!(
                "{unreachable} of {} nodes unreachable",
                report.members.len()
            ),
            "warn",
        )
    } else if behind > 0 {
        status("Catching up", "warn")
    } else {
        status("Healthy", "ok")
    };
    RegionView {
        name: report.region,
        health,
        heard,
        received_at: words::date_time(record.received_at),
        leader: if report.leader_id == 0 {
            "none".to_string()
        } else {
            format!("node {}", report.leader_id)
        },
        term: report.term,
        reporter: report.node_id,
        nodes,
        seat_entitlements: report.seats.len(),
        seats_truncated: report.seats_truncated,
    }
}

async fn regions<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
) -> Result<Response, PageError> {
    vendor_only(&viewer)?;
    let head = head_revision(&portal)?;
    let at = portal.app.clock.now();
    let mut records = crate::regions::statuses(&*portal.app.store)?;
    records.sort_by(|a, b| a.report.region.cmp(&b.report.region));
    let regions = records
        .into_iter()
        .map(|r| region_view(r, head, at))
        .collect();
    page(&RegionsPage {
        chrome: viewer.chrome("Regions", nav("/regions")),
        head,
        regions,
        late_after: age(REPORT_LATE_SECONDS as u64),
    })
}

// ----- Webhooks ---------------------------------------------------------

/// Every event a webhook can subscribe to, with words for the form.
const EVENTS: [(WebhookEvent, &str); 5] = [
    (
        WebhookEvent::EntitlementChanged,
        "An entitlement was granted, changed, suspended, resumed or revoked",
    ),
    (
        WebhookEvent::AccessRequestCreated,
        "An access request was filed",
    ),
    (
        WebhookEvent::AccessRequestApproved,
        "An access request was approved",
    ),
    (
        WebhookEvent::AccessRequestDenied,
        "An access request was denied",
    ),
    (
        WebhookEvent::UsageThreshold,
        "An account's use crossed 80 % or 100 % of a cap",
    ),
];

/// The form field of an event's checkbox.
fn event_field(event: WebhookEvent) -> String {
    format!("ev_{}", event.name().replace('.', "_"))
}

pub(crate) struct EventChoice {
    pub field: String,
    pub name: &'static str,
    pub label: &'static str,
    pub checked: bool,
}

fn event_choices(selected: &BTreeSet<WebhookEvent>) -> Vec<EventChoice> {
    EVENTS
        .iter()
        .map(|(event, label)| EventChoice {
            field: event_field(*event),
            name: event.name(),
            label,
            checked: selected.contains(event),
        })
        .collect()
}

pub(crate) struct WebhookRow {
    pub id: String,
    pub url: String,
    pub events: String,
    pub plaintext: bool,
    pub processed_through: u64,
    pub behind: u64,
    pub created: String,
}

fn events_words(events: &BTreeSet<WebhookEvent>) -> String {
    events
        .iter()
        .map(|e| e.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Template)]
#[template(path = "vendor/webhooks.html")]
struct WebhooksPage {
    chrome: Chrome,
    webhooks: Vec<WebhookRow>,
    events: Vec<EventChoice>,
    head: u64,
}

async fn webhooks<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    vendor_only(&viewer)?;
    admin_only(&viewer)?;
    let listed: Page<WebhookRecord> = portal
        .api
        .get(&viewer.caller, "/v1/webhooks?limit=500")
        .await?;
    let head = head_revision(&portal)?;
    let webhooks = listed
        .items
        .into_iter()
        .map(|w| WebhookRow {
            events: events_words(&w.spec.events),
            plaintext: w.spec.url.starts_with("http://"),
            behind: head.saturating_sub(w.processed_through),
            id: w.spec.id,
            url: w.spec.url,
            processed_through: w.processed_through,
            created: words::date_time(w.created_at),
        })
        .collect();
    let mut chrome = viewer.chrome("Webhooks", nav("/webhooks"));
    chrome.notice = notice(done.done.as_deref());
    page(&WebhooksPage {
        chrome,
        webhooks,
        events: event_choices(&[WebhookEvent::EntitlementChanged].into()),
        head,
    })
}

#[derive(Deserialize)]
struct WebhookForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    allow_plaintext: Option<String>,
    #[serde(default)]
    ev_entitlement_changed: Option<String>,
    #[serde(default)]
    ev_access_request_created: Option<String>,
    #[serde(default)]
    ev_access_request_approved: Option<String>,
    #[serde(default)]
    ev_access_request_denied: Option<String>,
    #[serde(default)]
    ev_usage_threshold: Option<String>,
}

async fn save_webhook<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<WebhookForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    vendor_only(&viewer)?;
    admin_only(&viewer)?;
    let id = EntitlementId::try_from(form.id.trim().to_string())
        .map_err(|e| PageError::Invalid(format!("The webhook id is not usable: {e}.")))?
        .to_string();
    let mut events = BTreeSet::new();
    for (event, on) in [
        (
            WebhookEvent::EntitlementChanged,
            &form.ev_entitlement_changed,
        ),
        (
            WebhookEvent::AccessRequestCreated,
            &form.ev_access_request_created,
        ),
        (
            WebhookEvent::AccessRequestApproved,
            &form.ev_access_request_approved,
        ),
        (
            WebhookEvent::AccessRequestDenied,
            &form.ev_access_request_denied,
        ),
        (WebhookEvent::UsageThreshold, &form.ev_usage_threshold),
    ] {
        if on.is_some() {
            events.insert(event);
        }
    }
    if events.is_empty() {
        return Err(PageError::Invalid("Choose at least one event.".into()));
    }
    let spec = WebhookSpec {
        id: id.clone(),
        url: form.url.trim().to_string(),
        events,
        allow_plaintext: form.allow_plaintext.is_some(),
    };
    let _: Answer = portal
        .api
        .send(
            &viewer.caller,
            Method::PUT,
            &format!("/v1/webhooks/{id}"),
            Some(&spec),
            None,
        )
        .await?;
    Ok(back(&format!("/webhooks/{id}"), "webhook_saved"))
}

#[derive(Deserialize)]
struct IdForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
}

async fn delete_webhook<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    vendor_only(&viewer)?;
    admin_only(&viewer)?;
    let id = path_id(&id)?;
    let _: Answer = portal
        .api
        .send::<(), _>(
            &viewer.caller,
            Method::DELETE,
            &format!("/v1/webhooks/{id}"),
            None,
            None,
        )
        .await?;
    Ok(back("/webhooks", "webhook_deleted"))
}

pub(crate) struct DeliveryRow {
    pub revision: u64,
    pub event: &'static str,
    pub outcome: Status,
    pub attempts: u32,
    pub status: String,
    pub error: String,
    pub finished: String,
    pub redelivery: bool,
    pub queued: bool,
}

#[derive(Template)]
#[template(path = "vendor/webhook.html")]
struct WebhookPage {
    chrome: Chrome,
    record: WebhookRecord,
    events_text: String,
    events: Vec<EventChoice>,
    head: u64,
    behind: u64,
    created: String,
    deliveries: Vec<DeliveryRow>,
    older_hidden: bool,
    queued: Vec<u64>,
}

/// The newest [`DELIVERIES_SHOWN`] entries of a webhook's delivery log,
/// newest first, and whether older ones exist. The API lists the log
/// oldest first, so it is read in windows of revisions going back from the
/// head (each window read forward, each one wider than the last), until
/// enough are found; at most [`DELIVERY_CALLS_MAX`] calls in all.
async fn newest_deliveries<S: OriginStore>(
    portal: &Shared<S>,
    viewer: &Viewer,
    id: &str,
    head: u64,
) -> Result<(Vec<DeliveryRecord>, bool), PageError> {
    // Newest last; everything with a revision above `bound` is read.
    let mut newest: VecDeque<DeliveryRecord> = VecDeque::new();
    let mut bound = head;
    let mut window: u64 = 1_000;
    let mut calls = 0;
    loop {
        let from = bound.saturating_sub(window);
        let mut chunk: VecDeque<DeliveryRecord> = VecDeque::new();
        let mut after = (from > 0).then(|| format!("{from:020}"));
        'pages: loop {
            if calls == DELIVERY_CALLS_MAX {
                // Show what was found; the rest is older.
                chunk.extend(newest);
                let mut list: Vec<DeliveryRecord> = chunk.into();
                list.reverse();
                list.truncate(DELIVERIES_SHOWN);
                return Ok((list, true));
            }
            calls += 1;
            let path = match &after {
                Some(a) => format!(
                    "/v1/webhooks/{id}/deliveries?limit=500&after={}",
                    encode_query(a)
                ),
                None => format!("/v1/webhooks/{id}/deliveries?limit=500"),
            };
            let listed: Page<DeliveryRecord> = portal.api.get(&viewer.caller, &path).await?;
            for d in listed.items {
                if d.revision > bound {
                    break 'pages;
                }
                // The redeliveries of `from` sort after its key; they belong
                // to the next window, with their first delivery.
                if d.revision <= from {
                    continue;
                }
                if chunk.len() == DELIVERIES_SHOWN {
                    chunk.pop_front();
                }
                chunk.push_back(d);
            }
            match listed.next_after {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        chunk.extend(newest);
        while chunk.len() > DELIVERIES_SHOWN {
            chunk.pop_front();
        }
        newest = chunk;
        if newest.len() >= DELIVERIES_SHOWN || from == 0 {
            let mut list: Vec<DeliveryRecord> = newest.into();
            list.reverse();
            let older = from > 0 || list.len() >= DELIVERIES_SHOWN;
            return Ok((list, older));
        }
        bound = from;
        window = window.saturating_mul(4);
    }
}

async fn webhook<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    vendor_only(&viewer)?;
    admin_only(&viewer)?;
    let id = path_id(&id)?;
    let record: WebhookRecord = portal
        .api
        .get(&viewer.caller, &format!("/v1/webhooks/{id}"))
        .await?;
    let head = head_revision(&portal)?;
    let (log, older_hidden) = newest_deliveries(&portal, &viewer, &id, head).await?;
    let queued: Vec<u64> =
        read_json(&*portal.app.store, &keys::webhook_redeliveries(&id))?.unwrap_or_default();
    let deliveries = log
        .into_iter()
        .map(|d| DeliveryRow {
            revision: d.revision,
            event: d.event.name(),
            outcome: match d.outcome {
                DeliveryOutcome::Delivered => status("Delivered", "ok"),
                DeliveryOutcome::GaveUp => status("Gave up", "bad"),
            },
            attempts: d.attempts,
            status: d
                .last_status
                .map_or_else(|| "-".to_string(), |s| s.to_string()),
            error: d.last_error.unwrap_or_default(),
            finished: words::date_time(d.finished_at),
            redelivery: d.redelivery,
            queued: !d.redelivery && queued.contains(&d.revision),
        })
        .collect();
    let mut chrome = viewer.chrome(format!("Webhook {id}"), nav("/webhooks"));
    chrome.notice = notice(done.done.as_deref());
    page(&WebhookPage {
        chrome,
        events_text: events_words(&record.spec.events),
        events: event_choices(&record.spec.events),
        behind: head.saturating_sub(record.processed_through),
        created: words::date_time(record.created_at),
        record,
        head,
        deliveries,
        older_hidden,
        queued,
    })
}

#[derive(Deserialize)]
struct RedeliverForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    revision: String,
}

async fn redeliver<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<RedeliverForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    vendor_only(&viewer)?;
    admin_only(&viewer)?;
    let id = path_id(&id)?;
    let revision: u64 = form
        .revision
        .trim()
        .parse()
        .map_err(|_| PageError::Invalid("Choose a delivery to send again.".into()))?;
    let _: Answer = portal
        .api
        .send::<(), _>(
            &viewer.caller,
            Method::POST,
            &format!("/v1/webhooks/{id}/deliveries/{revision}/redeliver"),
            None,
            None,
        )
        .await?;
    Ok(back(&format!("/webhooks/{id}"), "redelivery_queued"))
}

// ----- API keys and application credentials -----------------------------

/// An API key as `GET /v1/api-keys` lists it.
#[derive(Deserialize)]
struct KeyListed {
    id: String,
    name: String,
    scopes: BTreeSet<Scope>,
    created_at: UnixSeconds,
    revoked: bool,
    owner: KeyOwner,
}

/// A credential as `GET /v1/credentials` lists it.
#[derive(Deserialize)]
struct CredentialListed {
    id: String,
    name: String,
    accounts: serde_json::Value,
    products: serde_json::Value,
    verbs: BTreeSet<tollgate_model::Verb>,
    created_at: UnixSeconds,
    revoked_at: Option<UnixSeconds>,
}

#[derive(Deserialize)]
struct IssuedKey {
    id: String,
    token: String,
}

#[derive(Deserialize)]
struct IssuedCredential {
    token: String,
    credential: CredentialListed,
}

pub(crate) struct KeyRow {
    pub id: String,
    pub name: String,
    pub scopes: String,
    pub owner: String,
    pub created: String,
    pub revoked: bool,
}

pub(crate) struct CredentialRow {
    pub id: String,
    pub name: String,
    pub accounts: String,
    pub products: String,
    pub verbs: String,
    pub created: String,
    pub revoked: Option<String>,
}

/// A token shown once, right after its creation.
pub(crate) struct NewToken {
    pub what: &'static str,
    pub id: String,
    pub token: String,
}

pub(crate) struct Choice {
    pub field: String,
    pub label: &'static str,
}

#[derive(Template)]
#[template(path = "vendor/keys.html")]
struct KeysPage {
    chrome: Chrome,
    keys: Vec<KeyRow>,
    credentials: Vec<CredentialRow>,
    created: Option<NewToken>,
    scopes: Vec<Choice>,
    verbs: Vec<Choice>,
}

fn scope_label(scope: Scope) -> &'static str {
    match scope {
        Scope::Admin => "admin: everything, including keys, webhooks and signing",
        Scope::CatalogWrite => "catalog:write: products, features, plans, add-ons, SKUs",
        Scope::AccountsWrite => "accounts:write: accounts, users and devices, entitlements",
        Scope::OrdersWrite => "orders:write: orders from a CRM or billing system",
        Scope::AccessRequest => "access:request: file access requests",
        Scope::AccessApprove => "access:approve: approve or deny access requests",
        Scope::Read => "read: read everything but API keys",
    }
}

fn verb_label(verb: tollgate_model::Verb) -> &'static str {
    use tollgate_model::Verb;
    match verb {
        Verb::Check => "check: checks without consumption, license verification",
        Verb::Watch => "watch: watch one account it names",
        Verb::WatchAll => "watch_all: watch every account",
        Verb::ReportUsage => "report_usage: report usage, checks that consume",
        Verb::Seats => "seats: acquire, renew and release floating seats",
        Verb::IssueLicenses => "issue_licenses: issue license tokens at the region",
    }
}

fn targets_words(targets: &serde_json::Value) -> String {
    match targets {
        serde_json::Value::String(s) if s == "*" => "every one".to_string(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}

fn credential_row(c: CredentialListed) -> CredentialRow {
    CredentialRow {
        accounts: targets_words(&c.accounts),
        products: targets_words(&c.products),
        verbs: c
            .verbs
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(", "),
        created: words::date_time(c.created_at),
        revoked: c.revoked_at.map(words::date_time),
        id: c.id,
        name: c.name,
    }
}

async fn keys_page<S: OriginStore>(
    portal: &Shared<S>,
    viewer: &Viewer,
    created: Option<NewToken>,
    notice_text: Option<String>,
) -> Result<Response, PageError> {
    let listed: Vec<KeyListed> = portal.api.get(&viewer.caller, "/v1/api-keys").await?;
    let keys = listed
        .into_iter()
        .map(|k| KeyRow {
            scopes: k
                .scopes
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", "),
            owner: match k.owner {
                KeyOwner::Tenant => "The vendor".to_string(),
                KeyOwner::Account(a) => format!("Account {a}"),
            },
            created: words::date_time(k.created_at),
            revoked: k.revoked,
            id: k.id,
            name: k.name,
        })
        .collect();
    let credentials: Page<CredentialListed> = portal
        .api
        .get(&viewer.caller, "/v1/credentials?limit=500")
        .await?;
    let mut chrome = viewer.chrome("API keys and credentials", nav("/keys"));
    chrome.notice = notice_text;
    page(&KeysPage {
        chrome,
        keys,
        credentials: credentials.items.into_iter().map(credential_row).collect(),
        created,
        scopes: Scope::ALL
            .into_iter()
            .map(|s| Choice {
                field: format!("scope_{}", s.name().replace(':', "_")),
                label: scope_label(s),
            })
            .collect(),
        verbs: tollgate_model::Verb::ALL
            .into_iter()
            .map(|v| Choice {
                field: format!("verb_{}", v.name()),
                label: verb_label(v),
            })
            .collect(),
    })
}

async fn keys<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    vendor_only(&viewer)?;
    admin_only(&viewer)?;
    keys_page(&portal, &viewer, None, notice(done.done.as_deref())).await
}

/// A form whose checkboxes are named from the model's own lists
/// (`scope_read`, `verb_check`), read as its pairs.
type FreeForm = Vec<(String, String)>;

trait Fields {
    fn value(&self, name: &str) -> &str;
    fn has(&self, name: &str) -> bool;
}

impl Fields for FreeForm {
    fn value(&self, name: &str) -> &str {
        self.iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }

    fn has(&self, name: &str) -> bool {
        self.iter().any(|(k, _)| k == name)
    }
}

async fn create_key<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<FreeForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, form.value("csrf"))?;
    vendor_only(&viewer)?;
    admin_only(&viewer)?;
    let scopes: Vec<&str> = Scope::ALL
        .into_iter()
        .filter(|s| form.has(&format!("scope_{}", s.name().replace(':', "_"))))
        .map(|s| s.name())
        .collect();
    if scopes.is_empty() {
        return Err(PageError::Invalid("Choose at least one scope.".into()));
    }
    let account = form.value("account").trim();
    let mut body = serde_json::json!({
        "name": form.value("name").trim(),
        "scopes": scopes,
    });
    if !account.is_empty() {
        body["account"] = serde_json::Value::String(account.to_string());
    }
    let issued: IssuedKey = portal
        .api
        .send(
            &viewer.caller,
            Method::POST,
            "/v1/api-keys",
            Some(&body),
            None,
        )
        .await?;
    let created = NewToken {
        what: "API key",
        id: issued.id,
        token: issued.token,
    };
    keys_page(
        &portal,
        &viewer,
        Some(created),
        Some("The API key is created. Copy its token now: it is not shown again.".into()),
    )
    .await
}

async fn revoke_key<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<IdForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    vendor_only(&viewer)?;
    admin_only(&viewer)?;
    let id = path_id(&form.id)?;
    let _: Answer = portal
        .api
        .send::<(), _>(
            &viewer.caller,
            Method::DELETE,
            &format!("/v1/api-keys/{id}"),
            None,
            None,
        )
        .await?;
    Ok(back("/keys", "key_revoked"))
}

/// `*` (or nothing) for every one, else a comma-separated list.
fn targets(text: &str) -> serde_json::Value {
    let text = text.trim();
    if text.is_empty() || text == "*" {
        return serde_json::Value::String("*".into());
    }
    serde_json::Value::Array(
        text.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| serde_json::Value::String(t.to_string()))
            .collect(),
    )
}

async fn create_credential<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<FreeForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, form.value("csrf"))?;
    vendor_only(&viewer)?;
    admin_only(&viewer)?;
    let verbs: Vec<&str> = tollgate_model::Verb::ALL
        .into_iter()
        .filter(|v| form.has(&format!("verb_{}", v.name())))
        .map(|v| v.name())
        .collect();
    if verbs.is_empty() {
        return Err(PageError::Invalid(
            "Choose at least one thing it may do.".into(),
        ));
    }
    let body = serde_json::json!({
        "name": form.value("name").trim(),
        "accounts": targets(form.value("accounts")),
        "products": targets(form.value("products")),
        "verbs": verbs,
    });
    let issued: IssuedCredential = portal
        .api
        .send(
            &viewer.caller,
            Method::POST,
            "/v1/credentials",
            Some(&body),
            None,
        )
        .await?;
    let created = NewToken {
        what: "Application credential",
        id: issued.credential.id,
        token: issued.token,
    };
    keys_page(
        &portal,
        &viewer,
        Some(created),
        Some(
            "The credential is created; regions accept it within seconds. Copy its token now: \
             it is not shown again."
                .into(),
        ),
    )
    .await
}

async fn revoke_credential<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<IdForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    vendor_only(&viewer)?;
    admin_only(&viewer)?;
    let id = form.id.trim();
    if tollgate_model::validate_credential_id(id).is_err() {
        return Err(PageError::NotFound);
    }
    let _: Answer = portal
        .api
        .send::<(), _>(
            &viewer.caller,
            Method::POST,
            &format!("/v1/credentials/{id}/revoke"),
            None,
            None,
        )
        .await?;
    Ok(back("/keys", "credential_revoked"))
}

// ----- Signing keys -----------------------------------------------------

pub(crate) struct SigningRow {
    pub kid: String,
    pub status: Status,
    pub created: String,
    pub public_key: String,
    /// It may be retired: it no longer signs and is not retired yet.
    pub retirable: bool,
}

#[derive(Template)]
#[template(path = "vendor/signing.html")]
struct SigningPage {
    chrome: Chrome,
    keys: Vec<SigningRow>,
}

async fn signing<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    vendor_only(&viewer)?;
    admin_only(&viewer)?;
    let set: PublicKeySet = portal.api.get(&viewer.caller, "/v1/keys").await?;
    let at = portal.app.clock.now();
    let keys = set
        .keys
        .into_iter()
        .map(|k| {
            let (status, retirable) = match k.status {
                KeyStatus::Active => (status("Active: signs now", "ok"), false),
                KeyStatus::Overlap { until } if until > at => (
                    status(
                        format!(
                            "Retiring: no longer signs, verifies until {} ({} from now)",
                            words::date_time(until),
                            age((until.0 - at.0) as u64)
                        ),
                        "warn",
                    ),
                    true,
                ),
                KeyStatus::Overlap { until } => (
                    status(
                        format!("Expired {}: verifies nothing", words::date_time(until)),
                        "bad",
                    ),
                    true,
                ),
                KeyStatus::Retired => (status("Retired: verifies nothing", "bad"), false),
            };
            SigningRow {
                kid: k.kid.to_string(),
                status,
                created: words::date_time(k.created_at),
                public_key: k.public_key,
                retirable,
            }
        })
        .collect();
    let mut chrome = viewer.chrome("Signing keys", nav("/signing"));
    chrome.notice = notice(done.done.as_deref());
    page(&SigningPage { chrome, keys })
}

#[derive(Deserialize)]
struct RotateForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    overlap_days: String,
    #[serde(default)]
    reason: String,
}

/// Longest overlap the form takes, in days.
const OVERLAP_DAYS_MAX: u64 = 365;

async fn rotate<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<RotateForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    vendor_only(&viewer)?;
    admin_only(&viewer)?;
    let days: u64 = form
        .overlap_days
        .trim()
        .parse()
        .ok()
        .filter(|d| *d <= OVERLAP_DAYS_MAX)
        .ok_or_else(|| {
            PageError::Invalid(format!(
                "The overlap must be a whole number of days, 0 to {OVERLAP_DAYS_MAX}."
            ))
        })?;
    let body = serde_json::json!({ "overlap_seconds": days * 86_400 });
    let _: Answer = portal
        .api
        .send(
            &viewer.caller,
            Method::POST,
            "/v1/keys/rotate",
            Some(&body),
            Some(&form.reason),
        )
        .await?;
    Ok(back("/signing", "key_rotated"))
}

#[derive(Deserialize)]
struct RetireForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    kid: String,
    #[serde(default)]
    reason: String,
}

async fn retire<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<RetireForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    vendor_only(&viewer)?;
    admin_only(&viewer)?;
    let kid = tollgate_signing::KeyId::try_from(form.kid.trim().to_string())
        .map_err(|_| PageError::NotFound)?;
    let _: Answer = portal
        .api
        .send::<(), _>(
            &viewer.caller,
            Method::POST,
            &format!("/v1/keys/{kid}/retire"),
            None,
            Some(&form.reason),
        )
        .await?;
    Ok(back("/signing", "key_retired"))
}

// ----- The vendor's staff -----------------------------------------------

pub(crate) struct StaffRow {
    pub id: String,
    pub name: String,
    pub role: &'static str,
    pub state: Status,
    pub disabled: bool,
    pub sign_in: &'static str,
    pub is_self: bool,
}

#[derive(Template)]
#[template(path = "vendor/users.html")]
struct UsersPage {
    chrome: Chrome,
    users: Vec<StaffRow>,
    invite_link: Option<String>,
    truncated: bool,
}

/// The vendor's portal users (those of no account), and whether the scan
/// stopped at [`STAFF_SCAN_MAX`] users.
fn staff<S: OriginStore>(portal: &Shared<S>) -> Result<(Vec<PortalUser>, bool), PageError> {
    let prefix = keys::PORTAL_USER_PREFIX.as_bytes();
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    let mut scanned = 0;
    loop {
        let chunk = portal.app.store.scan(prefix, after.as_deref(), 1_000)?;
        let len = chunk.len();
        for (key, value) in chunk {
            scanned += 1;
            let user: PortalUser = serde_json::from_slice(&value).map_err(|e| {
                PageError::Internal(format!(
                    "stored {} is unreadable: {e}",
                    String::from_utf8_lossy(&key)
                ))
            })?;
            if user.account.is_none() {
                out.push(user);
            }
            after = Some(key);
        }
        if len < 1_000 {
            return Ok((out, false));
        }
        if scanned >= STAFF_SCAN_MAX {
            return Ok((out, true));
        }
    }
}

fn staff_state(u: &PortalUser, now: UnixSeconds) -> Status {
    if u.disabled {
        status("Disabled", "bad")
    } else if u.locked_at(now) {
        status("Locked out after wrong passwords", "warn")
    } else if u.invite.is_some() && u.password_hash.is_none() && u.oidc_subject.is_none() {
        status("Invited", "warn")
    } else {
        status("Active", "ok")
    }
}

async fn users_page<S: OriginStore>(
    portal: &Shared<S>,
    viewer: &Viewer,
    invite_link: Option<String>,
    notice_text: Option<String>,
) -> Result<Response, PageError> {
    let (list, truncated) = staff(portal)?;
    let now = portal.app.clock.now();
    let users = list
        .into_iter()
        .map(|u| StaffRow {
            state: staff_state(&u, now),
            disabled: u.disabled,
            role: u.role.label(),
            sign_in: match (&u.password_hash, &u.oidc_subject) {
                (Some(_), Some(_)) => "Password or identity provider",
                (Some(_), None) => "Password",
                (None, Some(_)) => "Identity provider",
                (None, None) => "Not yet",
            },
            is_self: u.id == viewer.user.id,
            id: u.id,
            name: u.name,
        })
        .collect();
    let mut chrome = viewer.chrome("Staff", nav("/users"));
    chrome.notice = notice_text;
    page(&UsersPage {
        chrome,
        users,
        invite_link,
        truncated,
    })
}

async fn users<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    vendor_only(&viewer)?;
    admin_only(&viewer)?;
    users_page(&portal, &viewer, None, notice(done.done.as_deref())).await
}

#[derive(Deserialize)]
struct InviteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    role: String,
}

async fn invite_user<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<InviteForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    vendor_only(&viewer)?;
    admin_only(&viewer)?;
    let role = match form.role.as_str() {
        "vendor_admin" => PortalRole::VendorAdmin,
        "vendor_support" => PortalRole::VendorSupport,
        _ => return Err(PageError::Invalid("Choose a role.".into())),
    };
    let id = form.email.trim().to_lowercase();
    if portal.read_user(&id)?.is_some() {
        return Err(PageError::Invalid(
            "A portal user with that e-mail address already exists.".into(),
        ));
    }
    let token = random_token()?;
    let now = portal.app.clock.now();
    let user = PortalUser {
        id: id.clone(),
        name: form.name.trim().to_string(),
        role,
        account: None,
        password_hash: None,
        oidc_subject: None,
        invite: Some(PortalInvite {
            token_sha256: sha256_hex(&token),
            expires_at: now.plus_seconds(portal.config.invite_seconds),
            invited_by: viewer.user.id.clone(),
        }),
        failed_sign_ins: 0,
        locked_until: None,
        disabled: false,
        created_at: now,
        sessions: Vec::new(),
    };
    if let Some(problem) = user.invalid() {
        return Err(PageError::Invalid(problem));
    }
    portal
        .commit(&viewer.user.id, Op::CreatePortalUser(user))
        .await?
        .map_err(PageError::Invalid)?;
    let link = format!(
        "{BASE}/invite?user={}&token={}",
        encode_query(&id),
        encode_query(&token)
    );
    users_page(
        &portal,
        &viewer,
        Some(link),
        Some("Invitation created. Send the link below to the person you invited.".into()),
    )
    .await
}

#[derive(Deserialize)]
struct UserActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    action: String,
}

async fn change_user<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<UserActionForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    vendor_only(&viewer)?;
    admin_only(&viewer)?;
    let mut user = portal.read_user(&form.user)?.ok_or(PageError::NotFound)?;
    // Only the vendor's own staff here; customers' users are on their
    // account's pages.
    if user.account.is_some() {
        return Err(PageError::NotFound);
    }
    if user.id == viewer.user.id {
        return Err(PageError::Invalid(
            "You cannot disable or remove yourself; ask another administrator.".into(),
        ));
    }
    let (op, done) = match form.action.as_str() {
        "disable" => {
            user.disabled = true;
            (Op::PutPortalUser(user), "user_changed")
        }
        "enable" => {
            user.disabled = false;
            (Op::PutPortalUser(user), "user_changed")
        }
        "remove" => (Op::DeletePortalUser { id: user.id }, "user_removed"),
        _ => return Err(PageError::Invalid("Unknown action.".into())),
    };
    portal
        .commit(&viewer.user.id, op)
        .await?
        .map_err(PageError::Invalid)?;
    Ok(back("/users", done))
}

pub(crate) fn routes<S: OriginStore>() -> Router<Shared<S>> {
    Router::new()
        .route("/vendor/regions", get(regions::<S>))
        .route(
            "/vendor/webhooks",
            get(webhooks::<S>).post(save_webhook::<S>),
        )
        .route("/vendor/webhooks/{id}", get(webhook::<S>))
        .route("/vendor/webhooks/{id}/delete", post(delete_webhook::<S>))
        .route("/vendor/webhooks/{id}/redeliver", post(redeliver::<S>))
        .route("/vendor/keys", get(keys::<S>).post(create_key::<S>))
        .route("/vendor/keys/revoke", post(revoke_key::<S>))
        .route("/vendor/credentials", post(create_credential::<S>))
        .route("/vendor/credentials/revoke", post(revoke_credential::<S>))
        .route("/vendor/signing", get(signing::<S>))
        .route("/vendor/signing/rotate", post(rotate::<S>))
        .route("/vendor/signing/retire", post(retire::<S>))
        .route("/vendor/users", get(users::<S>).post(invite_user::<S>))
        .route("/vendor/users/change", post(change_user::<S>))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_origin::regions::{GeoDatabaseBuild, MemberFacts, MemberReport, RegionReport};

    fn member(node_id: u64, reachable: bool, facts: Option<MemberFacts>) -> MemberReport {
        MemberReport {
            node_id,
            addr: format!("10.0.0.{node_id}:7000"),
            role: if node_id == 1 {
                MemberRole::Leader
            } else {
                MemberRole::Follower
            },
            reachable,
            error: (!reachable).then(|| "connection refused".to_string()),
            facts,
        }
    }

    fn facts(applied: u64, heard: u64, stale: u64) -> MemberFacts {
        MemberFacts {
            applied_revision: applied,
            origin_head_revision: heard,
            last_origin_contact: Some(UnixSeconds(1_000 - stale as i64)),
            staleness_seconds: Some(stale),
            geo: vec![GeoDatabaseBuild {
                slot: "location".into(),
                database_type: "GeoIP2-City".into(),
                build_epoch: 1_000,
            }],
        }
    }

    fn record(received_at: i64, members: Vec<MemberReport>) -> RegionStatusRecord {
        RegionStatusRecord {
            report: RegionReport {
                region: "eu".into(),
                node_id: 1,
                leader_id: 1,
                term: 3,
                members,
                seats: Vec::new(),
                seats_truncated: false,
            },
            received_at: UnixSeconds(received_at),
            revision: 99,
        }
    }

    #[test]
    fn a_healthy_region_a_few_revisions_behind_its_own_reports_is_ok() {
        let view = region_view(
            record(990, vec![member(1, true, Some(facts(97, 97, 2)))]),
            100,
            UnixSeconds(1_000),
        );
        assert_eq!(view.health.class, "ok", "{}", view.health.text);
        assert_eq!(view.heard.text, "Reported 10 seconds ago");
        assert_eq!(view.nodes[0].lag.class, "ok", "{}", view.nodes[0].lag.text);
        assert!(view.nodes[0].lag.text.starts_with("3 revisions behind"));
        assert_eq!(view.nodes[0].geo[0].built, "1970-01-01");
    }

    #[test]
    fn silence_unreachable_nodes_and_lag_are_flagged_in_words() {
        let view = region_view(
            record(
                1_000 - 130,
                vec![
                    member(1, true, Some(facts(50, 90, 2))),
                    member(2, false, None),
                    member(3, true, Some(facts(97, 97, 20 * 60))),
                ],
            ),
            100,
            UnixSeconds(1_000),
        );
        assert_eq!(view.heard.class, "bad");
        assert_eq!(view.heard.text, "No report for 2 minutes");
        assert_eq!(view.health.class, "bad");
        assert_eq!(view.nodes[0].lag.class, "warn");
        assert!(view.nodes[0]
            .lag
            .text
            .contains("40 heard of, not yet applied"));
        assert_eq!(view.nodes[1].reachable.class, "bad");
        assert_eq!(
            view.nodes[1].reachable.text,
            "Unreachable: connection refused"
        );
        assert_eq!(view.nodes[2].contact.class, "bad");
        assert!(view.nodes[2]
            .contact
            .text
            .starts_with("Heard 20 minutes ago"));
        assert_eq!(
            view.nodes[2].lag.class, "warn",
            "not hearing from the origin"
        );
    }
}
