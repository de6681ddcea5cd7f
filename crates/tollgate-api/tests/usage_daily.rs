//! `GET /v1/accounts/{account}/usage/daily`: the daily usage history over
//! real HTTP: the last `days` days ending at the server's today, days
//! without usage left out, regions summed, the account's own key admitted
//! and another account's refused.

mod common;

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use tollgate_api::{MemStore, OriginStore};
use tollgate_model::*;
use tollgate_origin::quota::QuotaSync;
use tollgate_origin::{Op, OriginCommand, OriginResponse};

const DAY: i64 = 86_400;

/// The server's clock (the tests serve the API with the system clock).
fn now() -> i64 {
    tollgate_api::Clock::system().now_secs()
}

fn iso(day: i64) -> String {
    UnixSeconds(day * DAY).to_string()[..10].to_string()
}

async fn commit(store: &MemStore, at: i64, op: Op) {
    let answer = store
        .write(OriginCommand {
            actor: "test".into(),
            at: UnixSeconds(at),
            reason: None,
            op,
        })
        .await
        .unwrap();
    assert!(
        matches!(answer, OriginResponse::Committed { .. }),
        "{answer:?}"
    );
}

/// A region's cumulative total of `feature` for acme, reported at `at`.
async fn report(store: &MemStore, at: i64, region: &str, feature: &str, consumed: u64) {
    let counter = UsageCounter {
        account: AccountId::new("acme").unwrap(),
        feature: FeatureId::new(feature).unwrap(),
        period: UsagePeriod::Lifetime.key_at(UnixSeconds(at)),
    };
    commit(
        store,
        at,
        Op::SyncQuota {
            region: region.into(),
            entries: vec![QuotaSync {
                counter,
                consumed,
                released: 0,
            }],
        },
    )
    .await;
}

async fn get(http: &Client, base: &str, token: &str, path: &str) -> (StatusCode, Value) {
    let resp = http
        .get(format!("{base}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap())
}

fn rows(body: &Value) -> Vec<(String, String, u64)> {
    body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a page: {body}"))
        .iter()
        .map(|r| {
            (
                r["feature"].as_str().unwrap().to_string(),
                r["day"].as_str().unwrap().to_string(),
                r["consumed"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn daily_usage_reads_the_last_days_ending_today() {
    let store = Arc::new(MemStore::default());
    let (base, admin) = common::serve(store.clone()).await;
    let http = Client::new();
    for id in ["acme", "globex"] {
        commit(
            &store,
            0,
            Op::PutAccount(Account {
                id: AccountId::new(id).unwrap(),
                name: id.into(),
                status: AccountStatus::Active,
            }),
        )
        .await;
    }

    // The server's today is its clock's: a phase that straddles midnight
    // is run again rather than judged against the wrong day.
    for attempt in 0..2 {
        let today = now().div_euclid(DAY);
        let store = Arc::new(MemStore::default());
        let (base, admin) = common::serve(store.clone()).await;
        commit(
            &store,
            0,
            Op::PutAccount(Account {
                id: AccountId::new("acme").unwrap(),
                name: "Acme".into(),
                status: AccountStatus::Active,
            }),
        )
        .await;
        tracing::info!("Reports over several days and regions become daily deltas.");
        let noon = |day: i64| day * DAY + DAY / 2;
        report(&store, noon(today - 400), "eu", "exports", 7).await;
        report(&store, noon(today - 2), "eu", "exports", 12).await;
        report(&store, noon(today - 1), "eu", "exports", 15).await;
        report(&store, noon(today) - DAY / 2, "us", "exports", 10).await;
        report(&store, noon(today) - DAY / 2, "eu", "renders", 4).await;

        let (status, body) = get(
            &http,
            &base,
            &admin,
            "/v1/accounts/acme/usage/daily?feature=exports",
        )
        .await;
        let (status_all, body_all) = get(
            &http,
            &base,
            &admin,
            "/v1/accounts/acme/usage/daily?days=731",
        )
        .await;
        let (status_one, body_one) = get(
            &http,
            &base,
            &admin,
            "/v1/accounts/acme/usage/daily?feature=exports&days=1",
        )
        .await;
        if now().div_euclid(DAY) != today && attempt == 0 {
            continue;
        }
        assert_eq!(status, StatusCode::OK, "{body}");
        let ex = |d: i64, n: u64| ("exports".to_string(), iso(d), n);
        assert_eq!(
            rows(&body),
            vec![ex(today - 2, 5), ex(today - 1, 3), ex(today, 10)],
            "the default 365 days leave out day -400; deltas, not totals"
        );
        assert_eq!(status_all, StatusCode::OK, "{body_all}");
        assert_eq!(
            rows(&body_all),
            vec![
                ex(today - 400, 7),
                ex(today - 2, 5),
                ex(today - 1, 3),
                ex(today, 10),
                ("renders".to_string(), iso(today), 4),
            ],
            "every feature, by feature then day"
        );
        assert_eq!(status_one, StatusCode::OK, "{body_one}");
        assert_eq!(rows(&body_one), vec![ex(today, 10)]);
        break;
    }

    tracing::info!("The account's own key reads it; another account's is refused.");
    let key = |account: &str| {
        let http = http.clone();
        let (base, admin) = (base.clone(), admin.clone());
        let account = account.to_string();
        async move {
            let resp = http
                .post(format!("{base}/v1/api-keys"))
                .bearer_auth(&admin)
                .json(&json!({"name": "portal", "scopes": ["read"], "account": account}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::CREATED);
            let body: Value = resp.json().await.unwrap();
            body["token"].as_str().unwrap().to_string()
        }
    };
    let acme = key("acme").await;
    let globex = key("globex").await;
    let path = "/v1/accounts/acme/usage/daily?feature=exports";
    let (status, body) = get(&http, &base, &acme, path).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(rows(&body), vec![], "no usage yet: an empty page");
    let (status, body) = get(&http, &base, &globex, path).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("FORBIDDEN"))
    );

    tracing::info!("Past 64 features, an answer of every feature asks for one.");
    let entries = (0..65)
        .map(|i| QuotaSync {
            counter: UsageCounter {
                account: AccountId::new("globex").unwrap(),
                feature: FeatureId::new(format!("f{i:02}")).unwrap(),
                period: UsagePeriod::Lifetime.key_at(UnixSeconds(now())),
            },
            consumed: 1,
            released: 0,
        })
        .collect();
    commit(
        &store,
        now(),
        Op::SyncQuota {
            region: "eu".into(),
            entries,
        },
    )
    .await;
    let (status, body) = get(&http, &base, &admin, "/v1/accounts/globex/usage/daily").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = get(
        &http,
        &base,
        &admin,
        "/v1/accounts/globex/usage/daily?feature=f64",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(rows(&body).len(), 1, "{body}");

    tracing::info!("Out-of-range days, bad ids and unknown accounts are refused.");
    for (path, expected) in [
        (
            "/v1/accounts/acme/usage/daily?days=0",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/accounts/acme/usage/daily?days=732",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/accounts/acme/usage/daily?days=-1",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/accounts/acme/usage/daily?feature=a%2Fb",
            StatusCode::BAD_REQUEST,
        ),
        ("/v1/accounts/nobody/usage/daily", StatusCode::NOT_FOUND),
    ] {
        let (status, body) = get(&http, &base, &admin, path).await;
        assert_eq!(status, expected, "{path}: {body}");
        assert!(body["code"].is_string(), "{path}: a problem: {body}");
    }
}
