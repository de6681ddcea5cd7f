//! Accounts, entitlements and their progress to the regions, access
//! requests and auto-approval rules, orders.
//!
//! Every read but the regions' reports and every change goes through the
//! REST API as the signed-in member of staff, so the API decides what
//! their role may do and the audit log names them. A change answers with
//! the revision it committed under; the account page links it to
//! `/vendor/revisions/{revision}`, which says which regions have applied
//! it.

use super::{nav, vendor_only};
use crate::auth::Viewer;
use crate::customer::{holdings, request_rows, Holding, RequestRow};
use crate::web::{encode_query, page, random_token, sha256_hex, Chrome, PageError};
use crate::{words, Shared, BASE};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tollgate_api::{OriginStore, Page, WriteResult, REASON_HEADER_LEN_MAX};
use tollgate_model::region_report::MemberRole;
use tollgate_model::*;
use tollgate_origin::{AccessRequest, AuditRecord, OrderKind, OrderRecord, Scope};

/// Items asked of the API per page (its maximum).
const API_PAGE: usize = 500;
/// Accounts a search shows per page.
const ACCOUNT_MATCHES_MAX: usize = 50;
/// Accounts a search examines per page before it offers "next" anyway.
const ACCOUNTS_SCANNED_MAX: usize = 10_000;
/// Longest search text, in bytes.
const SEARCH_BYTES_MAX: usize = 128;
/// Plans, add-ons or features read for one page's lists.
const CATALOG_ITEMS_MAX: usize = 2_000;
/// Pending requests shown (oldest first).
const PENDING_SHOWN_MAX: usize = 500;
/// Decided requests shown (newest decision first).
const DECIDED_SHOWN: usize = 50;
/// Decided requests read per status and time window.
const DECIDED_SCANNED_MAX: usize = 2_000;
/// Order records read from the audit log per page.
const ORDERS_SCANNED_MAX: usize = 2_000;
/// Orders shown (the newest of those read).
const ORDERS_SHOWN: usize = 100;
/// Most days an auto-approval rule's longest access may be.
const RULE_DAYS_MAX: f64 = 3_650.0;

/// Everything of a paged API list from `path` (which has a query
/// already), up to about `max` items; true when there is more.
async fn read_all<S: OriginStore, T: DeserializeOwned>(
    portal: &Shared<S>,
    viewer: &Viewer,
    path: &str,
    max: usize,
) -> Result<(Vec<T>, Option<String>), PageError> {
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let url = match &after {
            Some(a) => format!("{path}&after={}", encode_query(a)),
            None => path.to_string(),
        };
        let page: Page<T> = portal.api.get(&viewer.caller, &url).await?;
        items.extend(page.items);
        match page.next_after {
            Some(next) if items.len() < max => after = Some(next),
            other => return Ok((items, other)),
        }
    }
}

/// Whether the viewer's role carries `scope`, so a page offers only the
/// forms the API would take from them.
fn may(viewer: &Viewer, scope: Scope) -> bool {
    let scopes = &viewer.caller.key.scopes;
    scopes.contains(&Scope::Admin) || scopes.contains(&scope)
}

/// A reason for the audit log: the API takes one line of visible ASCII.
fn reason(text: &str, required: bool) -> Result<Option<&str>, PageError> {
    let text = text.trim();
    if text.is_empty() {
        return if required {
            Err(PageError::Invalid(
                "Give a reason: it is kept in the audit log.".into(),
            ))
        } else {
            Ok(None)
        };
    }
    if text.len() > REASON_HEADER_LEN_MAX || !text.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err(PageError::Invalid(format!(
            "A reason is at most {REASON_HEADER_LEN_MAX} characters of plain ASCII (letters, digits, punctuation)."
        )));
    }
    Ok(Some(text))
}

/// `YYYY-MM-DD` as 00:00 UTC of that day; empty is `None`.
fn parse_date(text: &str) -> Result<Option<UnixSeconds>, PageError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let invalid =
        || PageError::Invalid("Give the date as YYYY-MM-DD, or leave it empty for no end.".into());
    let mut parts = text.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return Err(invalid());
    }
    let y: i64 = y.parse().map_err(|_| invalid())?;
    let m: u32 = m.parse().map_err(|_| invalid())?;
    let d: u32 = d.parse().map_err(|_| invalid())?;
    if !(1..=12).contains(&m) || d == 0 {
        return Err(invalid());
    }
    let day = words::days_from_civil(y, m, d);
    // 2026-02-30 is not a day: it would come back as 2026-03-02.
    if words::civil_from_days(day) != (y, m, d) {
        return Err(invalid());
    }
    Ok(Some(UnixSeconds(day * 86_400)))
}

/// The account page after a change, naming the revision it committed at.
fn saved_at(account: &AccountId, revision: u64) -> Response {
    Redirect::to(&format!(
        "{BASE}/vendor/accounts/{account}?done=changed&revision={revision}"
    ))
    .into_response()
}

#[derive(Deserialize, Default)]
struct Done {
    done: Option<String>,
    revision: Option<u64>,
}

impl Done {
    /// The revision a change committed at, when the page comes after one.
    fn saved(&self) -> Option<u64> {
        match self.done.as_deref() {
            Some("changed") => self.revision,
            _ => None,
        }
    }
}

// ----- Accounts ---------------------------------------------------------

#[derive(Template)]
#[template(path = "vendor/accounts.html")]
struct AccountsPage {
    chrome: Chrome,
    q: String,
    accounts: Vec<AccountRow>,
    next: Option<String>,
    /// The search stopped at its bound before finding a full page.
    partial: bool,
    first: bool,
}

struct AccountRow {
    id: String,
    name: String,
    status: &'static str,
    status_class: &'static str,
}

fn account_status(status: AccountStatus) -> (&'static str, &'static str) {
    match status {
        AccountStatus::Active => ("Active", "status-active"),
        AccountStatus::Suspended => ("Suspended", "status-suspended"),
    }
}

#[derive(Deserialize, Default)]
struct AccountsQuery {
    #[serde(default)]
    q: String,
    after: Option<String>,
}

async fn accounts<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Query(query): Query<AccountsQuery>,
) -> Result<Response, PageError> {
    vendor_only(&viewer)?;
    let q = query.q.trim().to_string();
    if q.len() > SEARCH_BYTES_MAX {
        return Err(PageError::Invalid(format!(
            "Search for at most {SEARCH_BYTES_MAX} characters."
        )));
    }
    let needle = q.to_lowercase();
    let mut after = query.after.filter(|a| !a.is_empty());
    let first = after.is_none();
    let mut found: Vec<Account> = Vec::new();
    let mut scanned = 0;
    let mut next = None;
    let mut partial = false;
    'pages: loop {
        let path = match &after {
            Some(a) => format!("/v1/accounts?limit={API_PAGE}&after={}", encode_query(a)),
            None => format!("/v1/accounts?limit={API_PAGE}"),
        };
        let listed: Page<Account> = portal.api.get(&viewer.caller, &path).await?;
        let count = listed.items.len();
        for (i, account) in listed.items.into_iter().enumerate() {
            scanned += 1;
            let hit = needle.is_empty()
                || account.id.as_str().to_lowercase().contains(&needle)
                || account.name.to_lowercase().contains(&needle);
            let id = account.id.to_string();
            if hit {
                found.push(account);
            }
            let last_here = i + 1 == count;
            if found.len() == ACCOUNT_MATCHES_MAX || scanned >= ACCOUNTS_SCANNED_MAX {
                // The list's cursor is the id: the next page starts after
                // this account.
                if !last_here || listed.next_after.is_some() {
                    partial = found.len() < ACCOUNT_MATCHES_MAX;
                    next = Some(id);
                }
                break 'pages;
            }
        }
        match listed.next_after {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    let next = next.map(|after| {
        format!(
            "{BASE}/vendor?q={}&after={}",
            encode_query(&q),
            encode_query(&after)
        )
    });
    let accounts = found
        .into_iter()
        .map(|a| {
            let (status, status_class) = account_status(a.status);
            AccountRow {
                id: a.id.to_string(),
                name: a.name,
                status,
                status_class,
            }
        })
        .collect();
    page(&AccountsPage {
        chrome: viewer.chrome("Accounts", nav("")),
        q,
        accounts,
        next,
        partial,
        first,
    })
}

// ----- One account ------------------------------------------------------

/// One entitlement with what its forms need.
struct EntitlementView {
    h: Holding,
    active: bool,
    suspended: bool,
    revoked: bool,
    /// `YYYY-MM-DD`, or empty for no end.
    until: String,
    /// The seat count, or empty for no seat limit.
    seat_count: String,
    has_seats: bool,
    source_order: Option<String>,
}

#[derive(Template)]
#[template(path = "vendor/account.html")]
struct AccountPage {
    chrome: Chrome,
    id: String,
    name: String,
    status: &'static str,
    status_class: &'static str,
    entitlements: Vec<EntitlementView>,
    plans: Vec<(String, String)>,
    addons: Vec<(String, String)>,
    saved: Option<u64>,
    manage: bool,
}

async fn account<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Path(account): Path<String>,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    vendor_only(&viewer)?;
    let account = AccountId::try_from(account).map_err(|_| PageError::NotFound)?;
    let record: Account = portal
        .api
        .get(&viewer.caller, &format!("/v1/accounts/{account}"))
        .await?;
    let mut listed = crate::customer::entitlements_of(&portal, &viewer, &account).await?;
    // Live first, then by id: a revoked grant is history.
    listed.sort_by(|a, b| {
        (a.status == EntitlementStatus::Revoked, a.id.as_str())
            .cmp(&(b.status == EntitlementStatus::Revoked, b.id.as_str()))
    });
    let words = holdings(&*portal.app.store, &listed)?;
    let entitlements = listed
        .iter()
        .zip(words)
        .map(|(e, h)| EntitlementView {
            h,
            active: e.status == EntitlementStatus::Active,
            suspended: e.status == EntitlementStatus::Suspended,
            revoked: e.status == EntitlementStatus::Revoked,
            until: e.valid_until.map(words::date).unwrap_or_default(),
            seat_count: e
                .seats
                .as_ref()
                .map(|s| s.count.to_string())
                .unwrap_or_default(),
            has_seats: e.seats.is_some(),
            source_order: e.source_order.as_ref().map(|o| o.to_string()),
        })
        .collect();
    let manage = may(&viewer, Scope::AccountsWrite);
    let (plans, addons) = if manage {
        let (plans, _) = read_all::<S, Plan>(
            &portal,
            &viewer,
            &format!("/v1/plans?limit={API_PAGE}"),
            CATALOG_ITEMS_MAX,
        )
        .await?;
        let (addons, _) = read_all::<S, Addon>(
            &portal,
            &viewer,
            &format!("/v1/addons?limit={API_PAGE}"),
            CATALOG_ITEMS_MAX,
        )
        .await?;
        (
            plans
                .into_iter()
                .map(|p| (p.id.to_string(), p.name))
                .collect(),
            addons
                .into_iter()
                .map(|a| (a.id.to_string(), a.name))
                .collect(),
        )
    } else {
        (Vec::new(), Vec::new())
    };
    let (status, status_class) = account_status(record.status);
    page(&AccountPage {
        chrome: viewer.chrome(record.name.clone(), nav("")),
        id: record.id.to_string(),
        name: record.name,
        status,
        status_class,
        entitlements,
        plans,
        addons,
        saved: done.saved(),
        manage,
    })
}

#[derive(Deserialize)]
struct ChangeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    entitlement: String,
    /// `suspend`, `resume`, `revoke`, `extend` or `seats`.
    #[serde(default)]
    action: String,
    #[serde(default)]
    reason: String,
    /// `YYYY-MM-DD`; empty: no end.
    #[serde(default)]
    valid_until: String,
    /// A count; empty: no seat limit.
    #[serde(default)]
    seats: String,
    /// `named` or `floating`, for an entitlement that has no seats yet.
    #[serde(default)]
    mode: String,
}

fn parse_seats(
    count: &str,
    mode: &str,
    current: Option<&Seats>,
) -> Result<Option<Seats>, PageError> {
    let count = count.trim();
    if count.is_empty() {
        return Ok(None);
    }
    let count: u32 = count.parse().map_err(|_| {
        PageError::Invalid("Seats must be a whole number, or empty for no seat limit.".into())
    })?;
    let mode = match current {
        Some(s) => s.mode.clone(),
        None if mode == "floating" => SeatMode::Floating {
            lease_ttl_seconds: tollgate_origin::ORDER_FLOATING_LEASE_TTL_SECONDS,
        },
        None => SeatMode::Named {
            assigned: Default::default(),
        },
    };
    Ok(Some(Seats { count, mode }))
}

#[derive(serde::Serialize)]
struct ExtendBody {
    valid_until: Option<UnixSeconds>,
}

async fn change<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(account): Path<String>,
    Form(form): Form<ChangeForm>,
) -> Result<Response, PageError> {
    vendor_only(&viewer)?;
    viewer.check(&headers, &form.csrf)?;
    let account = AccountId::try_from(account).map_err(|_| PageError::NotFound)?;
    let id = EntitlementId::try_from(form.entitlement.trim().to_string())
        .map_err(|_| PageError::NotFound)?;
    let path = format!("/v1/entitlements/{id}");
    let current: Entitlement = portal.api.get(&viewer.caller, &path).await?;
    // The form names the account in its path: only that account's.
    if current.account != account {
        return Err(PageError::NotFound);
    }
    let api = &portal.api;
    let caller = &viewer.caller;
    let written: WriteResult = match form.action.as_str() {
        action @ ("suspend" | "resume") => {
            let why = reason(&form.reason, false)?;
            api.send::<(), _>(caller, Method::POST, &format!("{path}/{action}"), None, why)
                .await?
        }
        "revoke" => {
            let why = reason(&form.reason, true)?;
            api.send::<(), _>(caller, Method::POST, &format!("{path}/revoke"), None, why)
                .await?
        }
        "extend" => {
            let why = reason(&form.reason, false)?;
            let body = ExtendBody {
                valid_until: parse_date(&form.valid_until)?,
            };
            api.send(
                caller,
                Method::POST,
                &format!("{path}/extend"),
                Some(&body),
                why,
            )
            .await?
        }
        "seats" => {
            let why = reason(&form.reason, false)?;
            let seats = parse_seats(&form.seats, &form.mode, current.seats.as_ref())?;
            api.send(
                caller,
                Method::PUT,
                &format!("{path}/seats"),
                Some(&seats),
                why,
            )
            .await?
        }
        _ => return Err(PageError::Invalid("Unknown action.".into())),
    };
    Ok(saved_at(&account, written.revision))
}

#[derive(Deserialize)]
struct GrantForm {
    #[serde(default)]
    csrf: String,
    /// `plan:<id>` or `addon:<id>`.
    #[serde(default)]
    grant: String,
    #[serde(default)]
    valid_until: String,
    #[serde(default)]
    seats: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    reason: String,
}

async fn grant<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(account): Path<String>,
    Form(form): Form<GrantForm>,
) -> Result<Response, PageError> {
    vendor_only(&viewer)?;
    viewer.check(&headers, &form.csrf)?;
    let account = AccountId::try_from(account).map_err(|_| PageError::NotFound)?;
    let choose = || PageError::Invalid("Choose a plan or an add-on.".into());
    let grant = match form.grant.split_once(':') {
        Some(("plan", id)) => Grant::Plan(PlanId::try_from(id.to_string()).map_err(|_| choose())?),
        Some(("addon", id)) => {
            Grant::Addon(AddonId::try_from(id.to_string()).map_err(|_| choose())?)
        }
        _ => return Err(choose()),
    };
    // A fresh id per form: a double submit grants twice, visibly, rather
    // than replacing what the first one granted.
    let suffix = &sha256_hex(&random_token()?)[..8];
    let stem: String = account
        .as_str()
        .chars()
        .take(ID_LEN_MAX - suffix.len() - 1)
        .collect();
    let id = EntitlementId::try_from(format!("{stem}-{suffix}"))
        .map_err(|e| PageError::Internal(format!("a fresh entitlement id: {e}")))?;
    let entitlement = Entitlement {
        id,
        account: account.clone(),
        grant,
        valid_from: portal.app.clock.now(),
        valid_until: parse_date(&form.valid_until)?,
        grace_period_seconds: 0,
        seats: parse_seats(&form.seats, &form.mode, None)?,
        usage_cap_overrides: Default::default(),
        status: EntitlementStatus::Active,
        geo_rule: GeoRule::default(),
        offline_policy: None,
        required_role: None,
        allowed_groups: Default::default(),
        source_order: None,
        revision: 0,
        trial: false,
    };
    let written: WriteResult = portal
        .api
        .send(
            &viewer.caller,
            Method::POST,
            "/v1/entitlements",
            Some(&entitlement),
            reason(&form.reason, false)?,
        )
        .await?;
    Ok(saved_at(&account, written.revision))
}

// ----- A revision's progress to the regions ----------------------------

struct NodeRow {
    node: u64,
    role: &'static str,
    applied_revision: String,
    applied: &'static str,
    applied_class: &'static str,
}

struct RegionView {
    name: String,
    age: String,
    nodes: Vec<NodeRow>,
}

#[derive(Template)]
#[template(path = "vendor/revision.html")]
struct RevisionPage {
    chrome: Chrome,
    revision: u64,
    record: Option<AuditRecord>,
    future: bool,
    when: String,
    regions: Vec<RegionView>,
    summary: String,
    summary_class: &'static str,
    not_reporting: Vec<String>,
}

async fn revision<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Path(revision): Path<String>,
) -> Result<Response, PageError> {
    vendor_only(&viewer)?;
    let revision: u64 = revision.parse().map_err(|_| PageError::NotFound)?;
    // The audit record of the revision, when it has one (the first record
    // after the one before).
    let records: Page<AuditRecord> = portal
        .api
        .get(
            &viewer.caller,
            &format!("/v1/audit?after={}&limit=1", revision.saturating_sub(1)),
        )
        .await?;
    // Nothing at or after it: no change has that revision yet.
    let future = records.items.is_empty();
    let record = records.items.into_iter().find(|r| r.revision == revision);
    let at = portal.app.clock.now();
    let mut regions = Vec::new();
    let mut waiting = Vec::new();
    let mut not_reporting = Vec::new();
    let mut statuses = crate::regions::statuses(&*portal.app.store)?;
    statuses.sort_by(|a, b| a.report.region.cmp(&b.report.region));
    for status in statuses {
        let report = status.report;
        let mut nodes = Vec::with_capacity(report.members.len());
        for member in report.members {
            let role = match member.role {
                MemberRole::Leader => "Leader",
                MemberRole::Follower => "Follower",
                MemberRole::Learner => "Learner",
            };
            let row = match member.facts.as_ref().filter(|_| member.reachable) {
                Some(facts) => {
                    let done = facts.applied_revision >= revision;
                    if !done {
                        waiting.push(format!("{} node {}", report.region, member.node_id));
                    }
                    NodeRow {
                        node: member.node_id,
                        role,
                        applied_revision: facts.applied_revision.to_string(),
                        applied: if done { "yes" } else { "no" },
                        applied_class: if done { "ok" } else { "warn" },
                    }
                }
                None => {
                    not_reporting.push(format!("{} node {}", report.region, member.node_id));
                    NodeRow {
                        node: member.node_id,
                        role,
                        applied_revision: "-".into(),
                        applied: "not reported",
                        applied_class: "muted",
                    }
                }
            };
            nodes.push(row);
        }
        nodes.sort_by_key(|n| n.node);
        let age = u64::try_from(at.0.saturating_sub(status.received_at.0)).unwrap_or(0);
        regions.push(RegionView {
            name: report.region,
            age: format!("{} ago", words::duration(age)),
            nodes,
        });
    }
    let (summary, summary_class) = if regions.is_empty() {
        ("No region has reported yet.".to_string(), "muted")
    } else if waiting.is_empty() {
        (
            "Applied by every reporting node of every region.".to_string(),
            "ok",
        )
    } else {
        (format!("Waiting for: {}.", waiting.join(", ")), "warn")
    };
    let when = record
        .as_ref()
        .map(|r| words::date_time(r.at))
        .unwrap_or_default();
    page(&RevisionPage {
        chrome: viewer.chrome(format!("Revision {revision}"), nav("")),
        revision,
        record,
        future,
        when,
        regions,
        summary,
        summary_class,
        not_reporting,
    })
}

// ----- Access requests and auto-approval -------------------------------

struct PendingRow {
    row: RequestRow,
    account: String,
}

struct DecidedRow {
    row: RequestRow,
    account: String,
    by: String,
    at: String,
    reason: String,
    revision: u64,
}

struct RuleRow {
    /// `feature` or `addon`.
    kind: &'static str,
    kind_label: &'static str,
    id: String,
    name: String,
    words: String,
    enabled: bool,
    max_days: String,
    require_subject: bool,
}

#[derive(Template)]
#[template(path = "vendor/requests.html")]
struct RequestsPage {
    chrome: Chrome,
    pending: Vec<PendingRow>,
    more_pending: bool,
    decided: Vec<DecidedRow>,
    decided_partial: bool,
    rules: Vec<RuleRow>,
    decide: bool,
    manage_rules: bool,
    saved: Option<u64>,
}

fn rule_words(rule: Option<&AutoApprove>) -> String {
    match rule {
        None => "Every request waits for an approver".into(),
        Some(r) => {
            let mut text = "Approved when filed".to_string();
            match r.max_duration_seconds {
                Some(s) => text.push_str(&format!(", for at most {}", words::duration(s))),
                None => text.push_str(", for any time"),
            }
            if r.require_subject {
                text.push_str(", if it names a user or device");
            }
            text
        }
    }
}

fn days_text(seconds: Option<u64>) -> String {
    match seconds {
        None => String::new(),
        Some(s) if s % 86_400 == 0 => (s / 86_400).to_string(),
        Some(s) => {
            let text = format!("{:.4}", s as f64 / 86_400.0);
            text.trim_end_matches('0').trim_end_matches('.').to_string()
        }
    }
}

fn rule_row(kind: &'static str, id: String, name: String, rule: Option<&AutoApprove>) -> RuleRow {
    RuleRow {
        kind,
        kind_label: if kind == "feature" {
            "Feature"
        } else {
            "Add-on"
        },
        id,
        name,
        words: rule_words(rule),
        enabled: rule.is_some(),
        max_days: days_text(rule.and_then(|r| r.max_duration_seconds)),
        require_subject: rule.is_some_and(|r| r.require_subject),
    }
}

/// The last decided requests, newest decision first. The API lists by
/// filing time, oldest first, so this reads recent filings first and
/// widens the window only while it has found too few; true when a window
/// held more than it read.
async fn recent_decisions<S: OriginStore>(
    portal: &Shared<S>,
    viewer: &Viewer,
) -> Result<(Vec<AccessRequest>, bool), PageError> {
    let mut partial = false;
    let mut decided: Vec<AccessRequest> = Vec::new();
    for window in [Some(7 * 86_400u64), Some(90 * 86_400), None] {
        decided.clear();
        partial = false;
        for status in ["approved", "denied"] {
            let path = match window {
                Some(s) => format!(
                    "/v1/access-requests?status={status}&newer_than_seconds={s}&limit={API_PAGE}"
                ),
                None => format!("/v1/access-requests?status={status}&limit={API_PAGE}"),
            };
            let (items, more) =
                read_all::<S, AccessRequest>(portal, viewer, &path, DECIDED_SCANNED_MAX).await?;
            partial |= more.is_some();
            decided.extend(items);
        }
        if decided.len() >= DECIDED_SHOWN {
            break;
        }
    }
    decided.sort_by_key(|r| std::cmp::Reverse((r.decided_at, r.revision)));
    decided.truncate(DECIDED_SHOWN);
    Ok((decided, partial))
}

async fn requests<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    vendor_only(&viewer)?;
    let store = &*portal.app.store;
    let listed: Page<AccessRequest> = portal
        .api
        .get(
            &viewer.caller,
            &format!("/v1/access-requests?status=pending&limit={PENDING_SHOWN_MAX}"),
        )
        .await?;
    let more_pending = listed.next_after.is_some();
    let accounts: Vec<String> = listed
        .items
        .iter()
        .map(|r| r.spec.account.to_string())
        .collect();
    let pending = request_rows(store, listed.items)?
        .into_iter()
        .zip(accounts)
        .map(|(row, account)| PendingRow { row, account })
        .collect();

    let (decided, decided_partial) = recent_decisions(&portal, &viewer).await?;
    let extras: Vec<(String, String, String, String, u64)> = decided
        .iter()
        .map(|r| {
            (
                r.spec.account.to_string(),
                r.decided_by.clone().unwrap_or_default(),
                r.decided_at.map(words::date_time).unwrap_or_default(),
                r.decision_reason.clone().unwrap_or_default(),
                r.revision,
            )
        })
        .collect();
    let decided = request_rows(store, decided)?
        .into_iter()
        .zip(extras)
        .map(|(row, (account, by, at, reason, revision))| DecidedRow {
            row,
            account,
            by,
            at,
            reason,
            revision,
        })
        .collect();

    let (features, _) = read_all::<S, Feature>(
        &portal,
        &viewer,
        &format!("/v1/features?limit={API_PAGE}"),
        CATALOG_ITEMS_MAX,
    )
    .await?;
    let (addons, _) = read_all::<S, Addon>(
        &portal,
        &viewer,
        &format!("/v1/addons?limit={API_PAGE}"),
        CATALOG_ITEMS_MAX,
    )
    .await?;
    let rules = addons
        .into_iter()
        .map(|a| rule_row("addon", a.id.to_string(), a.name, a.auto_approve.as_ref()))
        .chain(
            features
                .into_iter()
                .map(|f| rule_row("feature", f.id.to_string(), f.name, f.auto_approve.as_ref())),
        )
        .collect();
    page(&RequestsPage {
        chrome: viewer.chrome("Access requests", nav("/requests")),
        pending,
        more_pending,
        decided,
        decided_partial,
        rules,
        decide: may(&viewer, Scope::AccessApprove),
        manage_rules: may(&viewer, Scope::CatalogWrite),
        saved: done.saved(),
    })
}

fn requests_saved(revision: u64) -> Response {
    Redirect::to(&format!(
        "{BASE}/vendor/requests?done=changed&revision={revision}"
    ))
    .into_response()
}

#[derive(Deserialize)]
struct DecideForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
    /// `approve` or `deny`.
    #[serde(default)]
    decision: String,
    #[serde(default)]
    reason: String,
}

async fn decide<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<DecideForm>,
) -> Result<Response, PageError> {
    vendor_only(&viewer)?;
    viewer.check(&headers, &form.csrf)?;
    let id =
        EntitlementId::try_from(form.id.trim().to_string()).map_err(|_| PageError::NotFound)?;
    let (decision, required) = match form.decision.as_str() {
        "approve" => ("approve", false),
        "deny" => ("deny", true),
        _ => return Err(PageError::Invalid("Unknown decision.".into())),
    };
    let written: WriteResult = portal
        .api
        .send::<(), _>(
            &viewer.caller,
            Method::POST,
            &format!("/v1/access-requests/{id}/{decision}"),
            None,
            reason(&form.reason, required)?,
        )
        .await?;
    Ok(requests_saved(written.revision))
}

#[derive(Deserialize)]
struct RuleForm {
    #[serde(default)]
    csrf: String,
    /// `feature` or `addon`.
    #[serde(default)]
    kind: String,
    #[serde(default)]
    id: String,
    /// `on` or `off`.
    #[serde(default)]
    rule: String,
    /// Longest access approved without an approver, in days; empty: any.
    #[serde(default)]
    max_days: String,
    /// Present when checked.
    require_subject: Option<String>,
    #[serde(default)]
    reason: String,
}

fn parse_rule(form: &RuleForm) -> Result<Option<AutoApprove>, PageError> {
    if form.rule != "on" {
        return Ok(None);
    }
    let max_duration_seconds = match form.max_days.trim() {
        "" => None,
        text => {
            let days: f64 = text
                .parse()
                .ok()
                .filter(|d: &f64| d.is_finite() && *d > 0.0 && *d <= RULE_DAYS_MAX)
                .ok_or_else(|| {
                    PageError::Invalid(format!(
                        "The longest access is a number of days above 0 and at most {RULE_DAYS_MAX}, or empty for any."
                    ))
                })?;
            Some(((days * 86_400.0).round() as u64).max(1))
        }
    };
    Ok(Some(AutoApprove {
        max_duration_seconds,
        require_subject: form.require_subject.is_some(),
    }))
}

async fn set_rule<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<RuleForm>,
) -> Result<Response, PageError> {
    vendor_only(&viewer)?;
    viewer.check(&headers, &form.csrf)?;
    let rule = parse_rule(&form)?;
    let why = reason(&form.reason, false)?;
    let api = &portal.api;
    let caller = &viewer.caller;
    // Read, change one field, write back: the rest stays as stored.
    let written: WriteResult = match form.kind.as_str() {
        "feature" => {
            let id = FeatureId::try_from(form.id.clone()).map_err(|_| PageError::NotFound)?;
            let path = format!("/v1/features/{id}");
            let mut feature: Feature = api.get(caller, &path).await?;
            feature.auto_approve = rule;
            api.send(caller, Method::PUT, &path, Some(&feature), why)
                .await?
        }
        "addon" => {
            let id = AddonId::try_from(form.id.clone()).map_err(|_| PageError::NotFound)?;
            let path = format!("/v1/addons/{id}");
            let mut addon: Addon = api.get(caller, &path).await?;
            addon.auto_approve = rule;
            api.send(caller, Method::PUT, &path, Some(&addon), why)
                .await?
        }
        _ => return Err(PageError::NotFound),
    };
    Ok(requests_saved(written.revision))
}

// ----- Orders -----------------------------------------------------------

struct OrderRow {
    id: String,
    revision: u64,
    when: String,
    who: String,
}

#[derive(Template)]
#[template(path = "vendor/orders.html")]
struct OrdersPage {
    chrome: Chrome,
    orders: Vec<OrderRow>,
    read: usize,
    later: Option<String>,
}

#[derive(Deserialize, Default)]
struct OrdersQuery {
    after: Option<u64>,
}

async fn orders<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Query(query): Query<OrdersQuery>,
) -> Result<Response, PageError> {
    vendor_only(&viewer)?;
    // The audit log lists oldest first: read to the end (within the
    // bound) and keep the newest.
    let mut records: Vec<AuditRecord> = Vec::new();
    let mut read = 0;
    let mut after = query.after;
    let mut later = None;
    loop {
        let path = match after {
            Some(a) => format!("/v1/audit?action=order.place&limit={API_PAGE}&after={a}"),
            None => format!("/v1/audit?action=order.place&limit={API_PAGE}"),
        };
        let page: Page<AuditRecord> = portal.api.get(&viewer.caller, &path).await?;
        read += page.items.len();
        records.extend(page.items);
        if records.len() > ORDERS_SHOWN {
            records.drain(..records.len() - ORDERS_SHOWN);
        }
        let Some(next) = page.next_after.and_then(|n| n.parse::<u64>().ok()) else {
            break;
        };
        if read >= ORDERS_SCANNED_MAX {
            later = Some(format!("{BASE}/vendor/orders?after={next}"));
            break;
        }
        after = Some(next);
    }
    records.reverse();
    let orders = records
        .into_iter()
        .map(|r| OrderRow {
            id: r
                .target
                .strip_prefix("order/")
                .unwrap_or(&r.target)
                .to_string(),
            revision: r.revision,
            when: words::date_time(r.at),
            who: r.actor,
        })
        .collect();
    page(&OrdersPage {
        chrome: viewer.chrome("Orders", nav("/orders")),
        orders,
        read,
        later,
    })
}

#[derive(Template)]
#[template(path = "vendor/order.html")]
struct OrderPage {
    chrome: Chrome,
    record: OrderRecord,
    kind: &'static str,
    term: String,
    grace: String,
}

async fn order<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    vendor_only(&viewer)?;
    let id = OrderId::try_from(id).map_err(|_| PageError::NotFound)?;
    let record: OrderRecord = portal
        .api
        .get(&viewer.caller, &format!("/v1/orders/{id}"))
        .await?;
    let o = &record.order;
    let kind = match o.kind {
        OrderKind::New => "New",
        OrderKind::Change => "Change (upgrade or downgrade)",
        OrderKind::Renew => "Renewal",
        OrderKind::Cancel => "Cancellation",
    };
    let term = match o.term_end {
        Some(end) => format!("{} to {}", words::date(o.term_start), words::date(end)),
        None => format!("From {}, with no end", words::date(o.term_start)),
    };
    let grace = if o.grace_period_seconds == 0 {
        "None".to_string()
    } else {
        words::duration(o.grace_period_seconds)
    };
    page(&OrderPage {
        chrome: viewer.chrome(format!("Order {id}"), nav("/orders")),
        kind,
        term,
        grace,
        record,
    })
}

pub(crate) fn routes<S: OriginStore>() -> Router<Shared<S>> {
    Router::new()
        .route("/vendor", get(accounts::<S>))
        .route("/vendor/accounts/{account}", get(account::<S>))
        .route("/vendor/accounts/{account}/change", post(change::<S>))
        .route("/vendor/accounts/{account}/grant", post(grant::<S>))
        .route("/vendor/revisions/{revision}", get(revision::<S>))
        .route("/vendor/requests", get(requests::<S>))
        .route("/vendor/requests/decide", post(decide::<S>))
        .route("/vendor/requests/rules", post(set_rule::<S>))
        .route("/vendor/orders", get(orders::<S>))
        .route("/vendor/orders/{id}", get(order::<S>))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_parse_strictly() {
        assert_eq!(parse_date("").unwrap(), None);
        assert_eq!(
            parse_date(" 1970-01-02 ").unwrap(),
            Some(UnixSeconds(86_400))
        );
        let day = parse_date("2026-12-06").unwrap().unwrap();
        assert_eq!(words::date(day), "2026-12-06");
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "26-01-01",
            "2026-1-1",
            "tomorrow",
            "2026-01-01x",
        ] {
            assert!(parse_date(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reasons_are_one_line_of_ascii() {
        assert_eq!(reason("  ", false).unwrap(), None);
        assert!(reason("", true).is_err());
        assert_eq!(
            reason(" unpaid invoice 42 ", true).unwrap(),
            Some("unpaid invoice 42")
        );
        assert!(reason("line\nbreak", false).is_err());
        assert!(reason("café", false).is_err());
        assert!(reason(&"x".repeat(REASON_HEADER_LEN_MAX + 1), false).is_err());
    }

    #[test]
    fn seats_keep_their_mode() {
        let floating = Seats {
            count: 3,
            mode: SeatMode::Floating {
                lease_ttl_seconds: 60,
            },
        };
        let kept = parse_seats("5", "named", Some(&floating)).unwrap().unwrap();
        assert_eq!(kept.count, 5);
        assert_eq!(kept.mode, floating.mode);
        assert_eq!(parse_seats("", "named", Some(&floating)).unwrap(), None);
        assert!(matches!(
            parse_seats("2", "named", None).unwrap().unwrap().mode,
            SeatMode::Named { .. }
        ));
        assert!(parse_seats("-1", "named", None).is_err());
    }

    #[test]
    fn rule_days_round_trip() {
        assert_eq!(days_text(Some(30 * 86_400)), "30");
        assert_eq!(days_text(Some(43_200)), "0.5");
        assert_eq!(days_text(None), "");
    }
}
