//! The usage page: each metered feature the account holds, its use in the
//! current period against its cap, and a chart of a year of daily use with
//! the period and the 80 % and 100 % lines.

use crate::auth::Viewer;
use crate::chart::{usage_chart_svg, UsageSeries};
use crate::customer::{entitlements_of, guard, nav, CatalogCache};
use crate::web::{page, Chrome, PageError};
use crate::words;
use crate::Shared;
use askama::Template;
use axum::extract::{Path, State};
use axum::response::Response;
use serde::Deserialize;
use std::collections::BTreeMap;
use tollgate_api::{OriginStore, Page};
use tollgate_model::*;
use tollgate_origin::quota;
use tollgate_raft::logic::ReadError;

/// Days of history a chart shows.
const HISTORY_DAYS: i64 = 365;

/// The origin's applied state as the quota rules read it.
struct StoreRead<'a, S>(&'a S);

impl<S: OriginStore> tollgate_raft::ReadState for StoreRead<'_, S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReadError> {
        self.0.get(key).map_err(|e| ReadError(e.to_string()))
    }
}

/// One metered feature on the page.
pub(crate) struct Meter {
    pub name: String,
    pub unit: String,
    pub period: String,
    pub used: String,
    pub cap: String,
    pub percent: Option<u64>,
    pub level: &'static str,
    pub resets: String,
    pub chart: String,
    pub days: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "customer/usage.html")]
struct UsagePage {
    chrome: Chrome,
    meters: Vec<Meter>,
}

/// Mirrors the API's usage row (only what the page needs).
#[derive(Deserialize)]
struct UsageRow {
    feature: String,
    period: String,
    consumed: u64,
}

#[derive(Deserialize)]
struct DailyUsage {
    day: String,
    consumed: u64,
}

fn day_number(text: &str) -> Option<i64> {
    let mut parts = text.splitn(3, '-');
    let y: i64 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next()?.parse().ok()?;
    let d: u32 = parts.next()?.parse().ok()?;
    Some(words::days_from_civil(y, m, d))
}

/// The first and last day of the period containing `today`.
fn period_days(period: UsagePeriod, today: i64) -> Option<(i64, i64)> {
    match period {
        UsagePeriod::Day => Some((today, today)),
        UsagePeriod::Month => {
            let (y, m, _) = words::civil_from_days(today);
            let first = words::days_from_civil(y, m, 1);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            Some((first, words::days_from_civil(ny, nm, 1) - 1))
        }
        UsagePeriod::Lifetime => None,
    }
}

pub(crate) fn routes<S: OriginStore>() -> axum::Router<Shared<S>> {
    axum::Router::new().route("/a/{account}/usage", axum::routing::get(usage::<S>))
}

async fn usage<S: OriginStore>(
    State(portal): State<Shared<S>>,
    viewer: Viewer,
    Path(account): Path<String>,
) -> Result<Response, PageError> {
    let account = guard(&viewer, &account)?;
    let at = portal.app.clock.now();
    let today = at.0.div_euclid(86_400);
    let entitlements = entitlements_of(&portal, &viewer, &account).await?;
    // Every metered feature the account's live grants name.
    let mut cache = CatalogCache::new(&*portal.app.store);
    let mut metered: BTreeMap<String, Feature> = BTreeMap::new();
    for e in entitlements
        .iter()
        .filter(|e| e.status != EntitlementStatus::Revoked)
    {
        let grants = match &e.grant {
            Grant::Plan(p) => cache.plan(p)?.map(|p| p.features).unwrap_or_default(),
            Grant::Addon(a) => cache.addon(a)?.map(|a| a.features).unwrap_or_default(),
            Grant::Feature(f) => vec![f.clone()],
        };
        for g in grants {
            if let Some(feature) = cache.feature(&g.feature)? {
                if matches!(feature.kind, FeatureKind::Metered { .. }) {
                    metered.insert(feature.id.to_string(), feature);
                }
            }
        }
    }
    let rows: Page<UsageRow> = portal
        .api
        .get(&viewer.caller, &format!("/v1/accounts/{account}/usage"))
        .await?;
    let rows = rows.items;
    let state = StoreRead(&*portal.app.store);
    let mut meters = Vec::with_capacity(metered.len());
    for (i, feature) in metered.values().enumerate() {
        let FeatureKind::Metered { unit, period } = &feature.kind else {
            continue;
        };
        let key = period.key_at(at);
        let used: u64 = rows
            .iter()
            .filter(|r| r.feature == feature.id.as_str() && r.period == key.to_string())
            .map(|r| r.consumed)
            .sum();
        let counter = UsageCounter {
            account: account.clone(),
            feature: feature.id.clone(),
            period: key,
        };
        let (hard, soft) =
            quota::caps(&state, &counter, at).map_err(|e| PageError::Internal(e.0))?;
        let cap = hard.or(soft);
        let daily: Page<DailyUsage> = portal
            .api
            .get(
                &viewer.caller,
                &format!(
                    "/v1/accounts/{account}/usage/daily?feature={}&days={HISTORY_DAYS}",
                    feature.id
                ),
            )
            .await?;
        let points: Vec<(i64, u64)> = daily
            .items
            .iter()
            .filter_map(|d| day_number(&d.day).map(|n| (n, d.consumed)))
            .collect();
        let period_span = period_days(*period, today);
        let chart = usage_chart_svg(&UsageSeries {
            id: format!("usage-{i}"),
            feature: feature.name.clone(),
            unit: unit.clone(),
            first_day: today - HISTORY_DAYS + 1,
            last_day: today,
            points: points.clone(),
            hard_cap: hard,
            soft_cap: soft,
            period: period_span,
        })
        .map_err(|e| PageError::Internal(format!("usage chart: {e}")))?;
        let percent = cap.filter(|c| *c > 0).map(|c| used.saturating_mul(100) / c);
        let level = match percent {
            Some(p) if p >= 100 => "bad",
            Some(p) if p >= 80 => "warn",
            _ => "ok",
        };
        let mut days: Vec<(String, String)> = points
            .iter()
            .rev()
            .take(31)
            .map(|(d, n)| (crate::chart::iso_date(*d), words::number(*n)))
            .collect();
        days.shrink_to_fit();
        meters.push(Meter {
            name: feature.name.clone(),
            unit: unit.clone(),
            period: match period {
                UsagePeriod::Day => "today".into(),
                UsagePeriod::Month => "this month".into(),
                UsagePeriod::Lifetime => "in all".into(),
            },
            used: words::number(used),
            cap: match (hard, soft) {
                (Some(c), _) => format!("{} (hard limit)", words::number(c)),
                (None, Some(c)) => format!("{} (billed past it)", words::number(c)),
                (None, None) => "no limit".into(),
            },
            percent,
            level,
            resets: period
                .resets_at(at)
                .map_or_else(|| "never".to_string(), words::date_time),
            chart,
            days,
        });
    }
    page(&UsagePage {
        chrome: viewer.chrome("Usage", nav(&viewer, &account, "/usage")),
        meters,
    })
}
