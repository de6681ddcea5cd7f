//! Usage analytics: what each account consumed of each metered feature, per
//! period and per region, as the regions reported it (the billing figures),
//! with what is leased and outstanding; and which features an account is
//! entitled to but never used. JSON, or CSV with `?format=csv`.

use super::{path_id, read, route, AccountKeys, Doc, Method, Page, Route, SchemaRef};
use super::{Path, Query};
use crate::problem::Problem;
use crate::store::OriginStore;
use crate::AppState;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tollgate_model::*;
use tollgate_origin::quota::{
    account_quota_prefix, account_usage_days_prefix, decode_usage_day, usage_day_key, usage_day_of,
    usage_days_prefix, QuotaState,
};
use tollgate_origin::{keys, Scope};

/// Most counters one account's report reads.
const COUNTERS_MAX: usize = 10_000;

/// One region's share of a counter.
#[derive(utoipa::ToSchema, Debug, Clone, Serialize)]
pub struct RegionUsage {
    /// Units leased to the region, in all.
    pub granted: u64,
    /// Units it handed back.
    pub released: u64,
    /// Units it reported consumed.
    pub consumed: u64,
}

/// An account's use of one feature in one period.
#[derive(utoipa::ToSchema, Debug, Clone, Serialize)]
pub struct UsageRow {
    pub account: String,
    pub feature: String,
    /// e.g. `month-24322` (months since year 0), `day-20500`, `lifetime-0`.
    pub period: String,
    /// The hard cap leased from, if one was (0: none known).
    pub limit: u64,
    /// The billing total: consumed, all regions.
    pub consumed: u64,
    /// Leased to regions and not handed back.
    pub allotted: u64,
    /// Leased and not yet reported consumed: how far consumption could
    /// still exceed a cap lowered now (the overshoot bound).
    pub outstanding: u64,
    pub regions: BTreeMap<String, RegionUsage>,
}

#[derive(Debug, Deserialize)]
struct UsageQuery {
    /// Only this feature.
    feature: Option<String>,
    /// `json` (default) or `csv`.
    format: Option<String>,
}

fn rows<S: OriginStore>(
    state: &AppState<S>,
    account: &AccountId,
    feature: Option<&FeatureId>,
) -> Result<Vec<UsageRow>, Problem> {
    let prefix = account_quota_prefix(account);
    let entries = state.store.scan(prefix.as_bytes(), None, COUNTERS_MAX)?;
    let mut rows = Vec::new();
    for (key, value) in entries {
        let rest = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
        let Some((feature_id, period)) = rest.split_once('/') else {
            continue;
        };
        if feature.is_some_and(|f| f.as_str() != feature_id) {
            continue;
        }
        let quota: QuotaState = serde_json::from_slice(&value)
            .map_err(|e| Problem::internal(format!("stored usage is unreadable: {e}")))?;
        rows.push(UsageRow {
            account: account.to_string(),
            feature: feature_id.to_string(),
            period: period.to_string(),
            limit: quota.limit,
            consumed: quota.consumed(),
            allotted: quota.allotted(),
            outstanding: quota.outstanding(),
            regions: quota
                .regions
                .iter()
                .map(|(name, share)| {
                    (
                        name.clone(),
                        RegionUsage {
                            granted: share.granted,
                            released: share.released,
                            consumed: share.consumed,
                        },
                    )
                })
                .collect(),
        });
    }
    Ok(rows)
}

fn csv(rows: &[UsageRow]) -> String {
    let mut out = String::from("account,feature,period,region,limit,granted,released,consumed\n");
    for row in rows {
        for (region, share) in &row.regions {
            // Ids and region names cannot hold commas or quotes.
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{}\n",
                row.account,
                row.feature,
                row.period,
                region,
                row.limit,
                share.granted,
                share.released,
                share.consumed
            ));
        }
    }
    out
}

async fn account_usage<S: OriginStore>(
    State(state): State<AppState<S>>,
    Path(account): Path<String>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, Problem> {
    let account: AccountId = path_id(account)?;
    let _: Account = read(
        &state,
        &keys::account(&account),
        &format!("account {account}"),
    )?;
    let feature: Option<FeatureId> = q.feature.map(path_id).transpose()?;
    let rows = rows(&state, &account, feature.as_ref())?;
    match q.format.as_deref() {
        None | Some("json") => Ok(Json(Page {
            items: rows,
            next_after: None,
        })
        .into_response()),
        Some("csv") => Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            csv(&rows),
        )
            .into_response()),
        Some(other) => Err(Problem::bad_request(format!(
            "format must be json or csv, not {other:?}"
        ))),
    }
}

/// Most days one daily-usage answer covers (two years, a leap day
/// included).
const DAILY_DAYS_MAX: u32 = 731;
/// Days covered when `days` is not given.
const DAILY_DAYS_DEFAULT: u32 = 365;
/// Most features one daily-usage answer without `feature` covers: past it,
/// the caller is asked to name one (so an answer holds at most 64 × 731
/// rows).
const DAILY_FEATURES_MAX: usize = 64;

/// What an account's feature consumed on one UTC day, as the regions
/// reported it that day.
#[derive(utoipa::ToSchema, Debug, Clone, Serialize)]
pub struct DailyUsage {
    pub feature: String,
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// Units the regions reported consumed that day (all regions and
    /// periods together); never 0: days without usage are not listed.
    pub consumed: u64,
}

#[derive(Debug, Deserialize)]
struct DailyQuery {
    /// Only this feature.
    feature: Option<String>,
    /// Days ending today, 1..=731 (default 365).
    days: Option<u32>,
}

/// `YYYY-MM-DD` of a day number.
fn iso_day(day: u32) -> String {
    let midnight = UnixSeconds(i64::from(day) * 86_400).to_string();
    // RFC 3339 `YYYY-MM-DDT00:00:00Z`: the date is the first ten bytes for
    // every day a usage key holds (years 1970..=275 000 print 4 to 6
    // digits, so cut at the `T`).
    match midnight.split_once('T') {
        Some((date, _)) => date.to_string(),
        None => midnight,
    }
}

/// One feature's days from `first` to `last`, days without usage left out:
/// one scan, at most `last - first + 1` entries.
fn feature_days<S: OriginStore>(
    state: &AppState<S>,
    account: &AccountId,
    feature: &FeatureId,
    first: u32,
    last: u32,
    out: &mut Vec<DailyUsage>,
) -> Result<(), Problem> {
    let prefix = usage_days_prefix(account, feature);
    let after = first
        .checked_sub(1)
        .map(|d| usage_day_key(account, feature, d));
    let limit = (last - first + 1) as usize;
    for (key, value) in state
        .store
        .scan(prefix.as_bytes(), after.as_deref(), limit)?
    {
        let (day, consumed) = decode_usage_day(prefix.as_bytes(), &key, &value)
            .map_err(|e| Problem::internal(format!("stored usage is unreadable: {e}")))?;
        // A day past today: a report stamped by a node whose clock runs
        // ahead of this one's; it shows once that day has come.
        if day > last {
            break;
        }
        if consumed > 0 {
            out.push(DailyUsage {
                feature: feature.to_string(),
                day: iso_day(day),
                consumed,
            });
        }
    }
    Ok(())
}

/// The features with a daily history under the account, in order: one
/// scan of a single entry per feature, skipping past each feature's days.
fn features_with_days<S: OriginStore>(
    state: &AppState<S>,
    account: &AccountId,
) -> Result<Vec<FeatureId>, Problem> {
    let prefix = account_usage_days_prefix(account);
    let mut features = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let entries = state.store.scan(prefix.as_bytes(), after.as_deref(), 1)?;
        let Some((key, _)) = entries.into_iter().next() else {
            return Ok(features);
        };
        let rest = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
        let Some((feature, _)) = rest.split_once('/') else {
            return Err(Problem::internal(format!(
                "stored usage key {rest:?} names no day"
            )));
        };
        let feature: FeatureId = FeatureId::try_from(feature.to_string())
            .map_err(|e| Problem::internal(format!("stored usage key: {e}")))?;
        if features.len() == DAILY_FEATURES_MAX {
            return Err(Problem::bad_request(format!(
                "the account has daily usage of more than {DAILY_FEATURES_MAX} features; \
                 name one with `feature`"
            )));
        }
        // `~` sorts after every byte an id or a day holds: past this
        // feature's last day, before the next feature.
        let mut next = usage_days_prefix(account, &feature).into_bytes();
        next.push(b'~');
        after = Some(next);
        features.push(feature);
    }
}

async fn daily_usage<S: OriginStore>(
    State(state): State<AppState<S>>,
    Path(account): Path<String>,
    Query(q): Query<DailyQuery>,
) -> Result<Json<Page<DailyUsage>>, Problem> {
    let account: AccountId = path_id(account)?;
    let feature: Option<FeatureId> = q.feature.map(path_id).transpose()?;
    let days = q.days.unwrap_or(DAILY_DAYS_DEFAULT);
    if !(1..=DAILY_DAYS_MAX).contains(&days) {
        return Err(Problem::bad_request(format!(
            "days must be 1..={DAILY_DAYS_MAX}, not {days}"
        )));
    }
    let _: Account = read(
        &state,
        &keys::account(&account),
        &format!("account {account}"),
    )?;
    let Some(today) = usage_day_of(state.clock.now()) else {
        return Err(Problem::internal(
            "this node's clock is outside the days the usage history holds",
        ));
    };
    let first = today.saturating_sub(days - 1);
    let features = match feature {
        Some(feature) => vec![feature],
        None => features_with_days(&state, &account)?,
    };
    let mut items = Vec::new();
    for feature in &features {
        feature_days(&state, &account, feature, first, today, &mut items)?;
    }
    Ok(Json(Page {
        items,
        next_after: None,
    }))
}

/// A metered feature an account is entitled to and has never used.
#[derive(utoipa::ToSchema, Debug, Clone, Serialize)]
pub struct UnusedFeature {
    pub feature: String,
    /// The entitlements that grant it.
    pub entitlements: Vec<String>,
}

async fn unused_features<S: OriginStore>(
    State(state): State<AppState<S>>,
    Path(account): Path<String>,
) -> Result<Json<Page<UnusedFeature>>, Problem> {
    let account: AccountId = path_id(account)?;
    let _: Account = read(
        &state,
        &keys::account(&account),
        &format!("account {account}"),
    )?;
    let ids: Vec<EntitlementId> = match state.store.get(&keys::account_entitlements(&account))? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Problem::internal(format!("stored entitlement list is unreadable: {e}"))
        })?,
        None => Vec::new(),
    };
    // Which features each live entitlement grants.
    let mut granted: BTreeMap<FeatureId, Vec<String>> = BTreeMap::new();
    for id in &ids {
        let ent: Entitlement = read(&state, &keys::entitlement(id), &format!("entitlement {id}"))?;
        if ent.status == EntitlementStatus::Revoked {
            continue;
        }
        let features: Vec<FeatureId> = match &ent.grant {
            Grant::Feature(g) => vec![g.feature.clone()],
            Grant::Plan(plan) => {
                let plan: Plan = read(&state, &keys::plan(plan), &format!("plan {plan}"))?;
                plan.features.into_iter().map(|g| g.feature).collect()
            }
            Grant::Addon(addon) => {
                let addon: Addon = read(&state, &keys::addon(addon), &format!("add-on {addon}"))?;
                addon.features.into_iter().map(|g| g.feature).collect()
            }
        };
        for feature in features {
            granted.entry(feature).or_default().push(ent.id.to_string());
        }
    }
    let used: BTreeSet<String> = rows(&state, &account, None)?
        .into_iter()
        .filter(|r| r.consumed > 0)
        .map(|r| r.feature)
        .collect();
    let mut items = Vec::new();
    for (feature, entitlements) in granted {
        let metered = match state.store.get(&keys::feature(&feature))? {
            Some(bytes) => serde_json::from_slice::<Feature>(&bytes)
                .map(|f| f.period().is_some())
                .unwrap_or(false),
            None => false,
        };
        if metered && !used.contains(feature.as_str()) {
            items.push(UnusedFeature {
                feature: feature.to_string(),
                entitlements,
            });
        }
    }
    Ok(Json(Page {
        items,
        next_after: None,
    }))
}

pub fn routes<S: OriginStore>() -> Vec<Route<S>> {
    vec![
        route(
            Method::Get,
            "/v1/accounts/{account}/usage",
            get(account_usage::<S>),
            Doc::new(
                "usage",
                "An account's usage per metered feature, period and region, as the regions \
                 reported it (the billing totals), with what is leased and outstanding. \
                 `?format=csv` gives one line per region.",
                Some(Scope::Read),
            )
            .ok(SchemaRef::page_of::<UsageRow>())
            .account_keys(AccountKeys::OwnAccount)
            .query(&[
                ("feature", "Only this feature."),
                ("format", "json (default) or csv."),
            ]),
        ),
        route(
            Method::Get,
            "/v1/accounts/{account}/usage/daily",
            get(daily_usage::<S>),
            Doc::new(
                "usage",
                "An account's usage per UTC day over the last `days` days ending today (the \
                 origin's clock): what the regions' reports raised the billing totals by on \
                 each day, all regions and periods together, by feature then day. Days with \
                 no usage are left out.",
                Some(Scope::Read),
            )
            .ok(SchemaRef::page_of::<DailyUsage>())
            .account_keys(AccountKeys::OwnAccount)
            .query(&[
                (
                    "feature",
                    "Only this feature (default: every feature with usage).",
                ),
                ("days", "Days ending today, 1..=731 (default 365)."),
            ]),
        ),
        route(
            Method::Get,
            "/v1/accounts/{account}/usage/unused",
            get(unused_features::<S>),
            Doc::new(
                "usage",
                "Metered features the account is entitled to and has never used.",
                Some(Scope::Read),
            )
            .ok(SchemaRef::page_of::<UnusedFeature>())
            .account_keys(AccountKeys::OwnAccount),
        ),
    ]
}
