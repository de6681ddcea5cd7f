//! The customer's pages, under `/portal/a/{account}`: what the account
//! owns, its usage, seats and people, licenses, requests for more, its
//! audit trail and its portal users. A customer's session sees only its
//! own account (anything else is 404); the vendor's staff see any.

use crate::auth::{read_json, Viewer};
use crate::web::{encode_query, page, random_token, sha256_hex, Chrome, NavLink, PageError};
use crate::words;
use crate::{Shared, BASE};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tollgate_api::licensing::{IssueLicense, IssuedLicense};
use tollgate_api::{OriginStore, Page};
use tollgate_model::*;
use tollgate_origin::licenses::LicenseRecord;
use tollgate_origin::portal::{PortalInvite, PortalRole, PortalUser};
use tollgate_origin::{
    keys, AccessRequest, AccessRequestSpec, AccessRequestStatus, AccessTarget, AuditRecord, Op,
    SEATS_MORE_MAX,
};

/// The catalog objects an account's pages name, read once per page.
pub(crate) struct CatalogCache<'a, S> {
    store: &'a S,
    plans: BTreeMap<String, Option<Plan>>,
    addons: BTreeMap<String, Option<Addon>>,
    features: BTreeMap<String, Option<Feature>>,
    products: BTreeMap<String, Option<Product>>,
}

impl<'a, S: OriginStore> CatalogCache<'a, S> {
    pub fn new(store: &'a S) -> Self {
        CatalogCache {
            store,
            plans: BTreeMap::new(),
            addons: BTreeMap::new(),
            features: BTreeMap::new(),
            products: BTreeMap::new(),
        }
    }

    pub fn plan(&mut self, id: &PlanId) -> Result<Option<Plan>, PageError> {
        if !self.plans.contains_key(id.as_str()) {
            let plan = read_json(self.store, &keys::plan(id))?;
            self.plans.insert(id.to_string(), plan);
        }
        Ok(self.plans[id.as_str()].clone())
    }

    pub fn addon(&mut self, id: &AddonId) -> Result<Option<Addon>, PageError> {
        if !self.addons.contains_key(id.as_str()) {
            let addon = read_json(self.store, &keys::addon(id))?;
            self.addons.insert(id.to_string(), addon);
        }
        Ok(self.addons[id.as_str()].clone())
    }

    pub fn feature(&mut self, id: &FeatureId) -> Result<Option<Feature>, PageError> {
        if !self.features.contains_key(id.as_str()) {
            let feature = read_json(self.store, &keys::feature(id))?;
            self.features.insert(id.to_string(), feature);
        }
        Ok(self.features[id.as_str()].clone())
    }

    pub fn product(&mut self, id: &ProductId) -> Result<Option<Product>, PageError> {
        if !self.products.contains_key(id.as_str()) {
            let product = read_json(self.store, &keys::product(id))?;
            self.products.insert(id.to_string(), product);
        }
        Ok(self.products[id.as_str()].clone())
    }

    /// The name of what `grant` grants (its id when the catalog lost it).
    pub fn grant_name(&mut self, grant: &Grant) -> Result<String, PageError> {
        Ok(match grant {
            Grant::Plan(p) => self.plan(p)?.map_or_else(|| p.to_string(), |p| p.name),
            Grant::Addon(a) => self.addon(a)?.map_or_else(|| a.to_string(), |a| a.name),
            Grant::Feature(f) => self
                .feature(&f.feature)?
                .map_or_else(|| f.feature.to_string(), |f| f.name),
        })
    }

    pub fn default_offline(&self) -> Result<OfflinePolicy, PageError> {
        Ok(read_json(self.store, keys::DEFAULT_OFFLINE_POLICY)?.unwrap_or_default())
    }
}

/// 404 unless the viewer may see `account`.
pub(crate) fn guard(viewer: &Viewer, account: &str) -> Result<AccountId, PageError> {
    if !viewer.sees(account) {
        return Err(PageError::NotFound);
    }
    AccountId::try_from(account.to_string()).map_err(|_| PageError::NotFound)
}

fn can_manage(viewer: &Viewer) -> bool {
    matches!(
        viewer.user.role,
        PortalRole::CustomerAdmin | PortalRole::VendorAdmin | PortalRole::VendorSupport
    )
}

/// The customer pages' navigation, with `current` marked.
pub(crate) fn nav(viewer: &Viewer, account: &AccountId, current: &str) -> Vec<NavLink> {
    let base = format!("{BASE}/a/{account}");
    let mut links = vec![
        ("", "Overview"),
        ("/usage", "Usage"),
        ("/seats", "Seats and people"),
        ("/licenses", "Licenses"),
        ("/requests", "Requests"),
        ("/audit", "Activity"),
    ];
    if can_manage(viewer) {
        links.push(("/users", "Portal users"));
    }
    let mut nav: Vec<NavLink> = Vec::new();
    if viewer.is_vendor() {
        nav.push(NavLink {
            href: format!("{BASE}/vendor"),
            label: "Vendor console",
            current: false,
        });
    }
    nav.extend(links.into_iter().map(|(path, label)| NavLink {
        href: format!("{base}{path}"),
        label,
        current: path == current,
    }));
    nav
}

/// Fixed notices after a change (never text from the query string).
fn notice(done: Option<&str>) -> Option<String> {
    let text = match done? {
        "seat_released" => "The seat is released. Regions apply it within seconds.",
        "person_added" => "Saved.",
        "person_removed" => "Removed.",
        "license_revoked" => {
            "The license is revoked. Every region refuses it once it applies the change."
        }
        "request_filed" => "Your request is filed. You will see its status here.",
        "user_invited" => "Invitation created. Send the link below to the person you invited.",
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

fn back(account: &AccountId, page: &str, done: &str) -> Response {
    Redirect::to(&format!("{BASE}/a/{account}{page}?done={done}")).into_response()
}

// ----- Overview ---------------------------------------------------------

/// One feature of a grant, in words.
pub(crate) struct FeatureLine {
    pub name: String,
    pub limit: String,
    pub geography: Option<String>,
}

/// One entitlement, in words.
pub(crate) struct Holding {
    pub id: String,
    pub kind: &'static str,
    pub name: String,
    pub product: String,
    pub status: &'static str,
    pub status_class: &'static str,
    pub trial: bool,
    pub validity: String,
    pub seats: String,
    pub geography: Option<String>,
    pub offline: String,
    /// Shared between the entitlements of one plan or add-on without cap
    /// overrides: an account with 1,000 grants of a plan words it once.
    pub features: std::sync::Arc<[FeatureLine]>,
    pub revision: u64,
}

fn feature_lines<S: OriginStore>(
    cache: &mut CatalogCache<'_, S>,
    grants: &[FeatureGrant],
    overrides: &BTreeMap<FeatureId, UsageCap>,
) -> Result<Vec<FeatureLine>, PageError> {
    let mut lines = Vec::with_capacity(grants.len());
    for grant in grants {
        let feature = cache.feature(&grant.feature)?;
        let (name, limit, geography) = match &feature {
            Some(f) => {
                let limit = match &f.kind {
                    FeatureKind::Boolean => "Included".to_string(),
                    FeatureKind::Metered { unit, period } => words::cap(
                        overrides.get(&grant.feature).or(grant.usage_cap.as_ref()),
                        unit,
                        *period,
                    ),
                };
                (f.name.clone(), limit, words::geography(&f.geo_rule))
            }
            None => (grant.feature.to_string(), "Included".to_string(), None),
        };
        lines.push(FeatureLine {
            name,
            limit,
            geography,
        });
    }
    Ok(lines)
}

/// The strictest of the offline policies that apply (shortest grace, deny
/// if any denies), as the engine applies them.
fn strictest(
    policies: impl IntoIterator<Item = OfflinePolicy>,
    default: OfflinePolicy,
) -> OfflinePolicy {
    let mut out: Option<OfflinePolicy> = None;
    for p in policies {
        out = Some(match out {
            None => p,
            Some(o) => OfflinePolicy {
                offline_grace_seconds: o.offline_grace_seconds.min(p.offline_grace_seconds),
                after_grace: o.after_grace.max(p.after_grace),
            },
        });
    }
    out.unwrap_or(default)
}

/// What an entitlement grants, named: its kind and name, the product,
/// the catalog item's feature grants, geography and offline policy.
struct Granted {
    kind: &'static str,
    name: String,
    product: Option<ProductId>,
    grants: Vec<FeatureGrant>,
    geo: Option<GeoRule>,
    offline: Option<OfflinePolicy>,
}

fn granted<S: OriginStore>(
    cache: &mut CatalogCache<'_, S>,
    grant: &Grant,
) -> Result<Granted, PageError> {
    Ok(match grant {
        Grant::Plan(id) => match cache.plan(id)? {
            Some(p) => Granted {
                kind: "Plan",
                name: p.name,
                product: Some(p.product),
                grants: p.features,
                geo: Some(p.geo_rule),
                offline: p.offline_policy,
            },
            None => Granted {
                kind: "Plan",
                name: id.to_string(),
                product: None,
                grants: Vec::new(),
                geo: None,
                offline: None,
            },
        },
        Grant::Addon(id) => match cache.addon(id)? {
            Some(a) => Granted {
                kind: "Add-on",
                name: a.name,
                product: Some(a.product),
                grants: a.features,
                geo: Some(a.geo_rule),
                offline: a.offline_policy,
            },
            None => Granted {
                kind: "Add-on",
                name: id.to_string(),
                product: None,
                grants: Vec::new(),
                geo: None,
                offline: None,
            },
        },
        Grant::Feature(fg) => {
            let feature = cache.feature(&fg.feature)?;
            Granted {
                kind: "Feature",
                name: feature
                    .as_ref()
                    .map_or_else(|| fg.feature.to_string(), |f| f.name.clone()),
                product: feature.map(|f| f.product),
                grants: vec![fg.clone()],
                geo: None,
                offline: None,
            }
        }
    })
}

/// An entitlement's kind and name only ("Plan", "Studio Pro"): what a page
/// that lists many needs.
pub(crate) fn holding_name<S: OriginStore>(
    cache: &mut CatalogCache<'_, S>,
    e: &Entitlement,
) -> Result<(&'static str, String), PageError> {
    let g = granted(cache, &e.grant)?;
    Ok((g.kind, g.name))
}

pub(crate) fn holdings<S: OriginStore>(
    store: &S,
    entitlements: &[Entitlement],
) -> Result<Vec<Holding>, PageError> {
    let mut cache = CatalogCache::new(store);
    let default_offline = cache.default_offline()?;
    // Worded once per catalog item, for grants without overrides.
    let mut shared: BTreeMap<String, std::sync::Arc<[FeatureLine]>> = BTreeMap::new();
    let mut out = Vec::with_capacity(entitlements.len());
    for e in entitlements {
        let g = granted(&mut cache, &e.grant)?;
        let product = match &g.product {
            Some(id) => cache
                .product(id)?
                .map_or_else(|| id.to_string(), |p| p.name),
            None => String::new(),
        };
        let features = if e.usage_cap_overrides.is_empty() && !matches!(e.grant, Grant::Feature(_))
        {
            let key = match &e.grant {
                Grant::Plan(id) => format!("plan/{id}"),
                Grant::Addon(id) => format!("addon/{id}"),
                Grant::Feature(f) => format!("feature/{}", f.feature),
            };
            match shared.get(&key) {
                Some(lines) => lines.clone(),
                None => {
                    let lines: std::sync::Arc<[FeatureLine]> =
                        feature_lines(&mut cache, &g.grants, &e.usage_cap_overrides)?.into();
                    shared.insert(key, lines.clone());
                    lines
                }
            }
        } else {
            feature_lines(&mut cache, &g.grants, &e.usage_cap_overrides)?.into()
        };
        let mut geo_words: Vec<String> = Vec::new();
        if let Some(words) = g.geo.as_ref().and_then(words::geography) {
            geo_words.push(words);
        }
        if let Some(words) = words::geography(&e.geo_rule) {
            geo_words.push(words);
        }
        let (status, status_class) = words::status(e.status);
        out.push(Holding {
            id: e.id.to_string(),
            kind: g.kind,
            name: g.name,
            product,
            status,
            status_class,
            trial: e.trial,
            validity: words::validity(e.valid_from, e.valid_until, e.grace_period_seconds),
            seats: words::seats(e.seats.as_ref()),
            geography: if geo_words.is_empty() {
                None
            } else {
                Some(geo_words.join(". "))
            },
            offline: words::offline(&strictest(
                g.offline.into_iter().chain(e.offline_policy),
                default_offline,
            )),
            features,
            revision: e.revision,
        });
    }
    Ok(out)
}

/// Entitlements one overview page words in full.
const OVERVIEW_PAGE: usize = 50;

#[derive(Template)]
#[template(path = "customer/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    account: Account,
    summary: String,
    holdings: Vec<Holding>,
    ended: Vec<(&'static str, String, &'static str)>,
    previous: Option<String>,
    next: Option<String>,
}

/// Every entitlement of an account the viewer may read. The API decides
/// whether they may (reading the account itself, as the viewer: 404 when
/// not theirs); the entitlements are then read from this node's state as
/// the API reads them, without a JSON round trip of every one.
pub(crate) async fn entitlements_of<S: OriginStore>(
    portal: &Shared<S>,
    viewer: &Viewer,
    account: &AccountId,
) -> Result<Vec<Entitlement>, PageError> {
    let _: Account = portal
        .api
        .get(&viewer.caller, &format!("/v1/accounts/{account}"))
        .await?;
    let store = &*portal.app.store;
    let ids: Vec<EntitlementId> =
        read_json(store, &keys::account_entitlements(account))?.unwrap_or_default();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match read_json::<S, Entitlement>(store, &keys::entitlement(&id))? {
            Some(e) => out.push(e),
            None => {
                return Err(PageError::Internal(format!(
                    "account {account} lists entitlement {id}, which is not stored"
                )))
            }
        }
    }
    Ok(out)
}

#[derive(Deserialize, Default)]
struct PageNumber {
    page: Option<usize>,
}

async fn overview<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Path(account): Path<String>,
    Query(q): Query<PageNumber>,
) -> Result<Response, PageError> {
    let account = guard(&viewer, &account)?;
    let record: Account = portal
        .api
        .get(&viewer.caller, &format!("/v1/accounts/{account}"))
        .await?;
    let entitlements = entitlements_of(&portal, &viewer, &account).await?;
    let (live, ended): (Vec<Entitlement>, Vec<Entitlement>) = entitlements
        .into_iter()
        .partition(|e| e.status != EntitlementStatus::Revoked);
    let suspended = live
        .iter()
        .filter(|e| e.status == EntitlementStatus::Suspended)
        .count();
    let summary = format!(
        "{} active, {} suspended, {} ended.",
        words::number((live.len() - suspended) as u64),
        words::number(suspended as u64),
        words::number(ended.len() as u64)
    );
    let pages = live.len().div_ceil(OVERVIEW_PAGE).max(1);
    let page_number = q.page.unwrap_or(1).clamp(1, pages);
    let shown: Vec<Entitlement> = live
        .into_iter()
        .skip((page_number - 1) * OVERVIEW_PAGE)
        .take(OVERVIEW_PAGE)
        .collect();
    let holdings = holdings(&*portal.app.store, &shown)?;
    let mut cache = CatalogCache::new(&*portal.app.store);
    let ended = ended
        .iter()
        .take(OVERVIEW_PAGE)
        .map(|e| {
            holding_name(&mut cache, e).map(|(kind, name)| (kind, name, words::status(e.status).0))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let link = |n: usize| format!("{BASE}/a/{account}?page={n}");
    let mut chrome = viewer.chrome(record.name.clone(), nav(&viewer, &account, ""));
    if pages > 1 {
        chrome.title = format!("{} (page {page_number} of {pages})", record.name);
    }
    page(&OverviewPage {
        chrome,
        account: record,
        summary,
        holdings,
        ended,
        previous: (page_number > 1).then(|| link(page_number - 1)),
        next: (page_number < pages).then(|| link(page_number + 1)),
    })
}

// ----- Seats and people -------------------------------------------------

/// A subject holding a floating seat, as the regions last reported.
pub(crate) struct Holder {
    pub subject: String,
    pub region: String,
    pub since: String,
    pub expires: String,
    pub releasing: bool,
}

pub(crate) struct FloatingSeats {
    pub entitlement: String,
    pub name: String,
    pub count: u32,
    pub holders: Vec<Holder>,
}

pub(crate) struct NamedSeats {
    pub name: String,
    pub count: u32,
    pub assigned: Vec<String>,
}

#[derive(Template)]
#[template(path = "customer/seats.html")]
struct SeatsPage {
    chrome: Chrome,
    account: AccountId,
    floating: Vec<FloatingSeats>,
    named: Vec<NamedSeats>,
    people: Vec<Subject>,
    manage: bool,
}

async fn seats<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Path(account): Path<String>,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let account = guard(&viewer, &account)?;
    let entitlements = entitlements_of(&portal, &viewer, &account).await?;
    let people: Page<Subject> = portal
        .api
        .get(
            &viewer.caller,
            &format!("/v1/accounts/{account}/subjects?limit=500"),
        )
        .await?;
    let live: Vec<&Entitlement> = entitlements
        .iter()
        .filter(|e| e.status != EntitlementStatus::Revoked)
        .collect();
    let mut cache = CatalogCache::new(&*portal.app.store);
    let names = live
        .iter()
        .map(|e| holding_name(&mut cache, e).map(|(_, name)| name))
        .collect::<Result<Vec<_>, _>>()?;
    let holders =
        crate::regions::seat_holders(&*portal.app.store, &account, portal.app.clock.now())?;
    let mut floating = Vec::new();
    let mut named = Vec::new();
    for (e, h) in live.iter().zip(&names) {
        match e.seats.as_ref().map(|s| (&s.mode, s.count)) {
            Some((SeatMode::Floating { .. }, count)) => floating.push(FloatingSeats {
                entitlement: e.id.to_string(),
                name: h.clone(),
                count,
                holders: holders
                    .get(e.id.as_str())
                    .map(|list| {
                        list.iter()
                            .map(|(region, held)| Holder {
                                subject: held.subject.clone(),
                                region: region.clone(),
                                since: held.since.map_or_else(|| "-".to_string(), words::date_time),
                                expires: words::date_time(held.expires_at),
                                releasing: held.releasing,
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some((SeatMode::Named { assigned }, count)) => named.push(NamedSeats {
                name: h.clone(),
                count,
                assigned: assigned.iter().map(|s| s.to_string()).collect(),
            }),
            None => {}
        }
    }
    let mut chrome = viewer.chrome("Seats and people", nav(&viewer, &account, "/seats"));
    chrome.notice = notice(done.done.as_deref());
    page(&SeatsPage {
        chrome,
        account,
        floating,
        named,
        people: people.items,
        manage: can_manage(&viewer),
    })
}

#[derive(Deserialize)]
struct ReleaseForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    entitlement: String,
    #[serde(default)]
    subject: String,
}

async fn release_seat<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(account): Path<String>,
    Form(form): Form<ReleaseForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    let account = guard(&viewer, &account)?;
    let entitlement = EntitlementId::try_from(form.entitlement).map_err(|_| PageError::NotFound)?;
    let subject = SubjectId::try_from(form.subject).map_err(|_| PageError::NotFound)?;
    portal
        .api
        .act::<()>(
            &viewer.caller,
            Method::POST,
            &format!("/v1/accounts/{account}/entitlements/{entitlement}/seats/{subject}/release"),
            None,
            Some("released in the portal"),
        )
        .await?;
    Ok(back(&account, "/seats", "seat_released"))
}

#[derive(Deserialize)]
struct PersonForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    kind: String,
}

async fn add_person<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(account): Path<String>,
    Form(form): Form<PersonForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    let account = guard(&viewer, &account)?;
    let id = SubjectId::try_from(form.id.trim().to_string())
        .map_err(|e| PageError::Invalid(format!("That name cannot be used: {e}")))?;
    let kind = match form.kind.as_str() {
        "device" => SubjectKind::Device,
        _ => SubjectKind::User,
    };
    let subject = Subject {
        id: id.clone(),
        account: account.clone(),
        kind,
        roles: Default::default(),
        groups: Default::default(),
    };
    portal
        .api
        .act(
            &viewer.caller,
            Method::PUT,
            &format!("/v1/accounts/{account}/subjects/{id}"),
            Some(&subject),
            Some("added in the portal"),
        )
        .await?;
    Ok(back(&account, "/seats", "person_added"))
}

#[derive(Deserialize)]
struct SubjectForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    subject: String,
}

async fn remove_person<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(account): Path<String>,
    Form(form): Form<SubjectForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    let account = guard(&viewer, &account)?;
    let id = SubjectId::try_from(form.subject).map_err(|_| PageError::NotFound)?;
    portal
        .api
        .act::<()>(
            &viewer.caller,
            Method::DELETE,
            &format!("/v1/accounts/{account}/subjects/{id}"),
            None,
            Some("removed in the portal"),
        )
        .await?;
    Ok(back(&account, "/seats", "person_removed"))
}

// ----- Licenses ---------------------------------------------------------

pub(crate) struct LicenseRow {
    pub id: String,
    pub subject: String,
    pub audience: String,
    pub issued: String,
    pub expires: String,
    pub state: &'static str,
    pub state_class: &'static str,
    pub revocable: bool,
}

#[derive(Template)]
#[template(path = "customer/licenses.html")]
struct LicensesPage {
    chrome: Chrome,
    account: AccountId,
    licenses: Vec<LicenseRow>,
    products: Vec<(String, String)>,
    people: Vec<String>,
    issued: Option<IssuedView>,
    manage: bool,
}

pub(crate) struct IssuedView {
    pub device_fingerprint: String,
    pub id: String,
    pub token: String,
    pub audience: String,
    pub expires: String,
    pub verify: String,
}

/// The command that verifies a license file offline.
fn verify_command(id: &str, audience: &str) -> String {
    format!(
        "tollgate ctl license verify @license-{id}.tgl --keys origin-keys.public.json --audience {audience}"
    )
}

async fn licenses_page<S: OriginStore>(
    portal: &Shared<S>,
    viewer: &Viewer,
    account: AccountId,
    issued: Option<IssuedView>,
    notice_text: Option<String>,
) -> Result<Response, PageError> {
    let records: Page<LicenseRecord> = portal
        .api
        .get(
            &viewer.caller,
            &format!("/v1/accounts/{account}/licenses?limit=500"),
        )
        .await?;
    let at = portal.app.clock.now();
    let mut licenses: Vec<LicenseRow> = records
        .items
        .into_iter()
        .map(|r| {
            let (state, state_class) = if r.revoked_at.is_some() {
                ("Revoked", "bad")
            } else if r.expires_at <= at {
                ("Expired", "muted")
            } else {
                ("Valid", "ok")
            };
            LicenseRow {
                revocable: r.revoked_at.is_none() && r.expires_at > at,
                id: r.id,
                subject: r
                    .subject
                    .map_or_else(|| "Whole account".to_string(), |s| s.to_string()),
                audience: r.audience,
                issued: words::date_time(r.issued_at),
                expires: words::date(r.expires_at),
                state,
                state_class,
            }
        })
        .collect();
    licenses.reverse();
    let entitlements = entitlements_of(portal, viewer, &account).await?;
    let mut cache = CatalogCache::new(&*portal.app.store);
    let mut products = BTreeMap::new();
    for e in &entitlements {
        let product = match &e.grant {
            Grant::Plan(p) => cache.plan(p)?.map(|p| p.product),
            Grant::Addon(a) => cache.addon(a)?.map(|a| a.product),
            Grant::Feature(f) => cache.feature(&f.feature)?.map(|f| f.product),
        };
        if let Some(product) = product {
            let name = cache
                .product(&product)?
                .map_or_else(|| product.to_string(), |p| p.name);
            products.insert(product.to_string(), name);
        }
    }
    let people: Page<Subject> = portal
        .api
        .get(
            &viewer.caller,
            &format!("/v1/accounts/{account}/subjects?limit=500"),
        )
        .await?;
    let mut chrome = viewer.chrome("Licenses", nav(viewer, &account, "/licenses"));
    chrome.notice = notice_text;
    page(&LicensesPage {
        chrome,
        account,
        licenses,
        products: products.into_iter().collect(),
        people: people.items.into_iter().map(|s| s.id.to_string()).collect(),
        issued,
        manage: can_manage(viewer),
    })
}

async fn licenses<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Path(account): Path<String>,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let account = guard(&viewer, &account)?;
    licenses_page(
        &portal,
        &viewer,
        account,
        None,
        notice(done.done.as_deref()),
    )
    .await
}

#[derive(Deserialize)]
struct IssueForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    audience: String,
    #[serde(default)]
    subject: String,
    #[serde(default)]
    days: String,
    #[serde(default)]
    device_fingerprint: String,
}

/// Most days a license issued in the portal lasts (the API's own bound).
const LICENSE_DAYS_MAX: u64 = 400;

async fn issue_license<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(account): Path<String>,
    Form(form): Form<IssueForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    let account = guard(&viewer, &account)?;
    let days: u64 = match form.days.trim() {
        "" => 30,
        text => text
            .parse()
            .ok()
            .filter(|d| (1..=LICENSE_DAYS_MAX).contains(d))
            .ok_or_else(|| {
                PageError::Invalid(format!(
                    "Days must be a whole number from 1 to {LICENSE_DAYS_MAX}."
                ))
            })?,
    };
    let subject = match form.subject.trim() {
        "" => None,
        s => Some(SubjectId::try_from(s.to_string()).map_err(|_| PageError::NotFound)?),
    };
    let request = IssueLicense {
        subject,
        audience: form.audience.trim().to_string(),
        ttl_seconds: Some(days * 86_400),
        not_before: None,
        device_fingerprint: Some(form.device_fingerprint.trim().to_string())
            .filter(|d| !d.is_empty()),
    };
    let issued: IssuedLicense = portal
        .api
        .send(
            &viewer.caller,
            Method::POST,
            &format!("/v1/accounts/{account}/licenses"),
            Some(&request),
            Some("issued in the portal"),
        )
        .await?;
    let view = IssuedView {
        device_fingerprint: request.device_fingerprint.clone().unwrap_or_default(),
        verify: verify_command(&issued.id, &request.audience),
        id: issued.id,
        token: issued.token,
        audience: request.audience,
        expires: words::date(issued.expires_at),
    };
    licenses_page(
        &portal,
        &viewer,
        account,
        Some(view),
        Some("License issued. Download it now: it is shown only once.".into()),
    )
    .await
}

#[derive(Deserialize)]
struct DownloadForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    audience: String,
    #[serde(default)]
    device_fingerprint: String,
}

/// Longest license token echoed back as a file, in bytes.
const TOKEN_BYTES_MAX: usize = 64 * 1024;

/// Echoes a license the page just showed back as a file, once the
/// origin's keys prove it is one of this account's.
async fn download_license<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(account): Path<String>,
    Form(form): Form<DownloadForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    let account = guard(&viewer, &account)?;
    let token = form.token.trim();
    if token.is_empty() || token.len() > TOKEN_BYTES_MAX {
        return Err(PageError::Invalid("That is not a license token.".into()));
    }
    let keys = portal
        .app
        .keys
        .public_set()
        .map_err(|p| PageError::Unavailable(p.detail))?;
    let fingerprint = Some(form.device_fingerprint.trim()).filter(|f| !f.is_empty());
    let license = tollgate_license::Verifier::new(&keys, form.audience.trim())
        .and_then(|v| {
            v.verify(
                token,
                portal.app.clock.now(),
                fingerprint.map(str::as_bytes),
                &tollgate_license::RevocationList::new(),
            )
        })
        .map_err(|_| {
            PageError::Invalid("That is not a valid license token of this origin.".into())
        })?;
    let claims = license.claims();
    if claims.account != account {
        return Err(PageError::NotFound);
    }
    let name = format!("license-{}.tgl", claims.jti.as_str());
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        format!("{token}\n"),
    )
        .into_response())
}

#[derive(Deserialize)]
struct RevokeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    id: String,
}

async fn revoke_license<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(account): Path<String>,
    Form(form): Form<RevokeForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    let account = guard(&viewer, &account)?;
    if form.id.len() != 32 || !form.id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(PageError::NotFound);
    }
    portal
        .api
        .act::<()>(
            &viewer.caller,
            Method::POST,
            &format!("/v1/accounts/{account}/licenses/{}/revoke", form.id),
            None,
            Some("revoked in the portal"),
        )
        .await?;
    Ok(back(&account, "/licenses", "license_revoked"))
}

// ----- Requests ---------------------------------------------------------

pub(crate) struct RequestRow {
    pub id: String,
    pub what: String,
    pub who: String,
    pub when: String,
    pub status: String,
    pub status_class: &'static str,
    pub justification: String,
}

#[derive(Template)]
#[template(path = "customer/requests.html")]
struct RequestsPage {
    chrome: Chrome,
    account: AccountId,
    requests: Vec<RequestRow>,
    addons: Vec<(String, String)>,
    features: Vec<(String, String)>,
    /// The account's active entitlements with seats: id, and name with the
    /// current count.
    seat_options: Vec<(String, String)>,
    seats_more_max: u32,
}

pub(crate) fn request_rows<S: OriginStore>(
    store: &S,
    requests: Vec<AccessRequest>,
) -> Result<Vec<RequestRow>, PageError> {
    let mut cache = CatalogCache::new(store);
    let mut rows = Vec::with_capacity(requests.len());
    for r in requests {
        let what = match &r.spec.target {
            AccessTarget::Feature(f) => format!(
                "Feature: {}",
                cache.feature(f)?.map_or_else(|| f.to_string(), |f| f.name)
            ),
            AccessTarget::Addon(a) => format!(
                "Add-on: {}",
                cache.addon(a)?.map_or_else(|| a.to_string(), |a| a.name)
            ),
            // "More seats: 5 for Studio Pro (acme-pro)"; the entitlement's
            // id alone if it is gone.
            AccessTarget::Seats { entitlement, more } => {
                let held: Option<Entitlement> = read_json(store, &keys::entitlement(entitlement))?;
                let name = match held {
                    Some(e) => format!("{} ({entitlement})", cache.grant_name(&e.grant)?),
                    None => entitlement.to_string(),
                };
                format!("More seats: {} for {name}", words::number(u64::from(*more)))
            }
        };
        let (status, status_class) = match &r.status {
            AccessRequestStatus::Pending => ("Waiting for approval".to_string(), "warn"),
            AccessRequestStatus::Approved { entitlement } => {
                (format!("Approved ({entitlement})"), "ok")
            }
            AccessRequestStatus::Denied => ("Denied".to_string(), "bad"),
        };
        rows.push(RequestRow {
            id: r.spec.id.clone(),
            what,
            who: r
                .spec
                .subject
                .as_ref()
                .map_or_else(|| r.requested_by.clone(), |s| s.to_string()),
            when: words::date_time(r.requested_at),
            status,
            status_class,
            justification: r.spec.justification.clone(),
        });
    }
    Ok(rows)
}

async fn requests<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Path(account): Path<String>,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let account = guard(&viewer, &account)?;
    let listed: Page<AccessRequest> = portal
        .api
        .get(
            &viewer.caller,
            &format!("/v1/access-requests?account={account}&limit=500"),
        )
        .await?;
    let mut listed = listed.items;
    listed.reverse();
    let rows = request_rows(&*portal.app.store, listed)?;
    // What can be asked for: the add-ons and features of the products the
    // account already has.
    let entitlements = entitlements_of(&portal, &viewer, &account).await?;
    let mut cache = CatalogCache::new(&*portal.app.store);
    let mut products = std::collections::BTreeSet::new();
    let mut owned_addons = std::collections::BTreeSet::new();
    for e in entitlements
        .iter()
        .filter(|e| e.status == EntitlementStatus::Active)
    {
        match &e.grant {
            Grant::Plan(p) => products.extend(cache.plan(p)?.map(|p| p.product)),
            Grant::Addon(a) => {
                owned_addons.insert(a.to_string());
                products.extend(cache.addon(a)?.map(|a| a.product));
            }
            Grant::Feature(f) => products.extend(cache.feature(&f.feature)?.map(|f| f.product)),
        }
    }
    let mut addons = Vec::new();
    for (key, value) in portal.app.store.scan(b"catalog/addon/", None, 1_000)? {
        let addon: Addon = serde_json::from_slice(&value).map_err(|e| {
            PageError::Internal(format!(
                "stored {} is unreadable: {e}",
                String::from_utf8_lossy(&key)
            ))
        })?;
        if products.contains(&addon.product) && !owned_addons.contains(addon.id.as_str()) {
            addons.push((addon.id.to_string(), addon.name));
        }
    }
    let mut features = Vec::new();
    for (key, value) in portal.app.store.scan(b"catalog/feature/", None, 1_000)? {
        let feature: Feature = serde_json::from_slice(&value).map_err(|e| {
            PageError::Internal(format!(
                "stored {} is unreadable: {e}",
                String::from_utf8_lossy(&key)
            ))
        })?;
        if products.contains(&feature.product) {
            features.push((feature.id.to_string(), feature.name));
        }
    }
    let mut chrome = viewer.chrome("Requests", nav(&viewer, &account, "/requests"));
    chrome.notice = notice(done.done.as_deref());
    // More seats: on any active entitlement that has seats.
    let mut seat_options = Vec::new();
    for e in entitlements
        .iter()
        .filter(|e| e.status == EntitlementStatus::Active)
    {
        if let Some(seats) = &e.seats {
            let kind = match seats.mode {
                SeatMode::Named { .. } => "named",
                SeatMode::Floating { .. } => "floating",
            };
            seat_options.push((
                e.id.to_string(),
                format!(
                    "{} ({}): {} {kind} seat{} now",
                    cache.grant_name(&e.grant)?,
                    e.id,
                    words::number(u64::from(seats.count)),
                    if seats.count == 1 { "" } else { "s" }
                ),
            ));
        }
    }
    page(&RequestsPage {
        chrome,
        account,
        requests: rows,
        addons,
        features,
        seat_options,
        seats_more_max: SEATS_MORE_MAX,
    })
}

#[derive(Deserialize)]
struct RequestForm {
    #[serde(default)]
    csrf: String,
    /// `addon:<id>`, `feature:<id>`, or `seats` (with `entitlement` and
    /// `more`).
    #[serde(default)]
    target: String,
    #[serde(default)]
    entitlement: String,
    /// Text, so an empty or odd field is our message, not a form error.
    #[serde(default)]
    more: String,
    #[serde(default)]
    justification: String,
}

/// What the "More seats" form asks for.
fn seats_target(form: &RequestForm) -> Result<AccessTarget, PageError> {
    let entitlement = EntitlementId::try_from(form.entitlement.clone())
        .map_err(|_| PageError::Invalid("Choose the subscription that needs more seats.".into()))?;
    let more = form
        .more
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=SEATS_MORE_MAX).contains(n))
        .ok_or_else(|| {
            PageError::Invalid(format!(
                "How many more seats: a whole number from 1 to {}.",
                words::number(u64::from(SEATS_MORE_MAX))
            ))
        })?;
    Ok(AccessTarget::Seats { entitlement, more })
}

async fn file_request<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    headers: HeaderMap,
    Path(account): Path<String>,
    Form(form): Form<RequestForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    let account = guard(&viewer, &account)?;
    let target = match form.target.split_once(':') {
        Some(("addon", id)) => AccessTarget::Addon(
            AddonId::try_from(id.to_string())
                .map_err(|_| PageError::Invalid("Choose what you ask for.".into()))?,
        ),
        Some(("feature", id)) => AccessTarget::Feature(
            FeatureId::try_from(id.to_string())
                .map_err(|_| PageError::Invalid("Choose what you ask for.".into()))?,
        ),
        None if form.target == "seats" => seats_target(&form)?,
        _ => return Err(PageError::Invalid("Choose what you ask for.".into())),
    };
    // A fresh id per form: a double submit files two requests, which the
    // vendor sees side by side, rather than one that silently is not.
    let id = format!("req-{}", &sha256_hex(&random_token()?)[..16]);
    let spec = AccessRequestSpec {
        id,
        account: account.clone(),
        subject: None,
        target,
        justification: form.justification.trim().to_string(),
        duration_seconds: None,
    };
    portal
        .api
        .act(
            &viewer.caller,
            Method::POST,
            &format!("/v1/accounts/{account}/access-requests"),
            Some(&spec),
            None,
        )
        .await?;
    Ok(back(&account, "/requests", "request_filed"))
}

// ----- Activity (the account's audit trail) ----------------------------

pub(crate) struct AuditRow {
    pub revision: u64,
    pub when: String,
    pub who: String,
    pub action: String,
    pub target: String,
    pub reason: String,
}

pub(crate) fn audit_rows(records: Vec<AuditRecord>) -> Vec<AuditRow> {
    records
        .into_iter()
        .map(|r| AuditRow {
            revision: r.revision,
            when: words::date_time(r.at),
            who: r.actor,
            action: r.action,
            target: r.target,
            reason: r.reason.unwrap_or_default(),
        })
        .collect()
}

#[derive(Template)]
#[template(path = "customer/audit.html")]
struct AuditPage {
    chrome: Chrome,
    rows: Vec<AuditRow>,
    older: Option<String>,
}

#[derive(Deserialize)]
struct AuditQuery {
    before: Option<u64>,
}

async fn audit<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Path(account): Path<String>,
    Query(q): Query<AuditQuery>,
) -> Result<Response, PageError> {
    let account = guard(&viewer, &account)?;
    let path = match q.before {
        Some(before) => format!("/v1/accounts/{account}/audit?limit=100&before={before}"),
        None => format!("/v1/accounts/{account}/audit?limit=100"),
    };
    let records: Page<AuditRecord> = portal.api.get(&viewer.caller, &path).await?;
    let older = records
        .next_after
        .map(|r| format!("{BASE}/a/{account}/audit?before={}", encode_query(&r)));
    page(&AuditPage {
        chrome: viewer.chrome("Activity", nav(&viewer, &account, "/audit")),
        rows: audit_rows(records.items),
        older,
    })
}

// ----- Portal users of the account -------------------------------------

pub(crate) struct UserRow {
    pub id: String,
    pub name: String,
    pub role: &'static str,
    pub state: String,
    pub is_self: bool,
}

#[derive(Template)]
#[template(path = "customer/users.html")]
struct UsersPage {
    chrome: Chrome,
    account: AccountId,
    users: Vec<UserRow>,
    invite_link: Option<String>,
}

fn user_state(u: &PortalUser, now: UnixSeconds) -> String {
    if u.disabled {
        "Disabled".into()
    } else if u.locked_at(now) {
        "Locked out after wrong passwords".into()
    } else if u.invite.is_some() && u.password_hash.is_none() {
        "Invited".into()
    } else {
        "Active".into()
    }
}

pub(crate) fn account_users<S: OriginStore>(
    portal: &Shared<S>,
    account: &AccountId,
) -> Result<Vec<PortalUser>, PageError> {
    let prefix = keys::account_portal_users_prefix(account);
    let mut users = Vec::new();
    for (_, value) in portal.app.store.scan(prefix.as_bytes(), None, 1_000)? {
        let id: String = serde_json::from_slice(&value)
            .map_err(|e| PageError::Internal(format!("stored portal user index: {e}")))?;
        if let Some(user) = portal.read_user(&id)? {
            users.push(user);
        }
    }
    Ok(users)
}

fn require_manager(viewer: &Viewer) -> Result<(), PageError> {
    if matches!(
        viewer.user.role,
        PortalRole::CustomerAdmin | PortalRole::VendorAdmin
    ) {
        Ok(())
    } else {
        Err(PageError::NotFound)
    }
}

async fn users_page<S: OriginStore>(
    portal: &Shared<S>,
    viewer: &Viewer,
    account: AccountId,
    invite_link: Option<String>,
    notice_text: Option<String>,
) -> Result<Response, PageError> {
    let now = portal.app.clock.now();
    let users = account_users(portal, &account)?
        .into_iter()
        .map(|u| UserRow {
            state: user_state(&u, now),
            role: u.role.label(),
            is_self: u.id == viewer.user.id,
            id: u.id,
            name: u.name,
        })
        .collect();
    let mut chrome = viewer.chrome("Portal users", nav(viewer, &account, "/users"));
    chrome.notice = notice_text;
    page(&UsersPage {
        chrome,
        account,
        users,
        invite_link,
    })
}

async fn users<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Path(account): Path<String>,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let account = guard(&viewer, &account)?;
    require_manager(&viewer)?;
    users_page(
        &portal,
        &viewer,
        account,
        None,
        notice(done.done.as_deref()),
    )
    .await
}

#[derive(Deserialize, Serialize)]
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
    Path(account): Path<String>,
    Form(form): Form<InviteForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    let account = guard(&viewer, &account)?;
    require_manager(&viewer)?;
    let role = match form.role.as_str() {
        "customer_admin" => PortalRole::CustomerAdmin,
        _ => PortalRole::CustomerMember,
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
        account: Some(account.clone()),
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
        account,
        Some(link),
        notice(Some("user_invited")),
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
    Path(account): Path<String>,
    Form(form): Form<UserActionForm>,
) -> Result<Response, PageError> {
    viewer.check(&headers, &form.csrf)?;
    let account = guard(&viewer, &account)?;
    require_manager(&viewer)?;
    let mut user = portal.read_user(&form.user)?.ok_or(PageError::NotFound)?;
    // Only this account's users, never the vendor's or another account's.
    if user.account.as_ref() != Some(&account) {
        return Err(PageError::NotFound);
    }
    if user.id == viewer.user.id {
        return Err(PageError::Invalid(
            "You cannot change or remove yourself here.".into(),
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
    Ok(back(&account, "/users", done))
}

pub(crate) fn routes<S: OriginStore>() -> Router<Shared<S>> {
    Router::new()
        .route("/a/{account}", get(overview::<S>))
        .route("/a/{account}/seats", get(seats::<S>))
        .route("/a/{account}/seats/release", post(release_seat::<S>))
        .route("/a/{account}/people", post(add_person::<S>))
        .route("/a/{account}/people/remove", post(remove_person::<S>))
        .route(
            "/a/{account}/licenses",
            get(licenses::<S>).post(issue_license::<S>),
        )
        .route(
            "/a/{account}/licenses/download",
            post(download_license::<S>),
        )
        .route("/a/{account}/licenses/revoke", post(revoke_license::<S>))
        .route(
            "/a/{account}/requests",
            get(requests::<S>).post(file_request::<S>),
        )
        .route("/a/{account}/audit", get(audit::<S>))
        .route("/a/{account}/users", get(users::<S>).post(invite_user::<S>))
        .route("/a/{account}/users/change", post(change_user::<S>))
}
