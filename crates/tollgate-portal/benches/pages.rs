//! How long the portal takes to render its heaviest pages, server side:
//! an account with 1,000 entitlements and a year of daily usage of a
//! metered feature. Each page is requested through the whole router (the
//! session lookup, the in-process API calls, the template and, for usage,
//! the chart), 300 times after a warm-up; p50, p99 and the maximum are
//! printed. The target is p99 <= 20 ms.
//!
//! `cargo bench -p tollgate-portal --bench pages`

use axum::body::Body;
use axum::http::Request;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tollgate_api::{AppState, Clock, MemStore, OriginStore};
use tollgate_model::*;
use tollgate_origin::portal::{PortalRole, PortalSession, PortalUser, SignInMethod};
use tollgate_origin::quota::QuotaSync;
use tollgate_origin::{Op, OriginCommand, OriginResponse};
use tower::ServiceExt;

const ENTITLEMENTS: usize = 1_000;
const DAYS: i64 = 365;
const RUNS: usize = 300;

async fn commit(store: &MemStore, at: i64, op: Op) {
    let response = store
        .write(OriginCommand {
            actor: "bench".into(),
            at: UnixSeconds(at),
            reason: None,
            op,
        })
        .await
        .expect("the store commits");
    assert!(
        !matches!(response, OriginResponse::Rejected(_)),
        "seeding: {response:?}"
    );
}

fn json<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("bench data decodes")
}

async fn seeded(now: i64) -> Arc<MemStore> {
    let store = Arc::new(MemStore::default());
    commit(
        &store,
        now,
        Op::PutProduct(json(serde_json::json!({"id": "studio", "name": "Studio"}))),
    )
    .await;
    commit(
        &store,
        now,
        Op::PutFeature(json(serde_json::json!({
            "id": "renders", "product": "studio", "name": "Cloud renders",
            "kind": {"metered": {"unit": "renders", "period": "month"}}
        }))),
    )
    .await;
    for f in ["export", "share", "history"] {
        commit(
            &store,
            now,
            Op::PutFeature(json(serde_json::json!({
                "id": f, "product": "studio", "name": f, "kind": "boolean",
                "geo_rule": {"allow_continents": ["EU"]}
            }))),
        )
        .await;
    }
    commit(
        &store,
        now,
        Op::PutPlan(json(serde_json::json!({
            "id": "studio-pro", "product": "studio", "name": "Studio Pro", "tier": 2,
            "features": [
                {"feature": "renders", "usage_cap": {"limit": 1_000_000}},
                {"feature": "export"}, {"feature": "share"}, {"feature": "history"}
            ]
        }))),
    )
    .await;
    commit(
        &store,
        now,
        Op::PutAccount(json(serde_json::json!({"id": "bigco", "name": "Big Co"}))),
    )
    .await;
    for i in 0..ENTITLEMENTS {
        commit(
            &store,
            now,
            Op::Grant(json(serde_json::json!({
                "id": format!("bigco-{i:04}"), "account": "bigco",
                "grant": {"plan": "studio-pro"}, "valid_from": now - 400 * 86_400,
                "valid_until": now + 365 * 86_400, "grace_period_seconds": 86_400 * 14,
                "seats": {"count": 5, "mode": {"floating": {"lease_ttl_seconds": 900}}}
            }))),
        )
        .await;
    }
    // A year of daily use, reported by one region at noon each day: the
    // month's cumulative total grows by 100 + day % 50 a day.
    let today = now.div_euclid(86_400);
    let mut month_total = 0u64;
    let mut month = None;
    for day in (today - DAYS + 1)..=today {
        let at = UnixSeconds(day * 86_400 + 43_200);
        let key = UsagePeriod::Month.key_at(at);
        if month != Some(key) {
            month = Some(key);
            month_total = 0;
        }
        month_total += 100 + (day % 50) as u64;
        commit(
            &store,
            at.0,
            Op::SyncQuota {
                region: "eu".into(),
                entries: vec![QuotaSync {
                    counter: UsageCounter {
                        account: AccountId::try_from("bigco".to_string()).unwrap(),
                        feature: FeatureId::try_from("renders".to_string()).unwrap(),
                        period: key,
                    },
                    consumed: month_total,
                    released: 0,
                }],
            },
        )
        .await;
    }
    store
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        // The portal reads the same clock the seed was stamped with.
        let clock = Clock::system();
        let now = clock.now_secs();
        let store = seeded(now).await;
        let hash = tollgate_portal::hash_password("bench password 123").unwrap();
        commit(
            &store,
            now,
            Op::PutPortalUser(PortalUser {
                id: "admin@bigco.example".into(),
                name: "Admin".into(),
                role: PortalRole::CustomerAdmin,
                account: Some(AccountId::try_from("bigco".to_string()).unwrap()),
                password_hash: Some(hash),
                oidc_subject: None,
                invite: None,
                failed_sign_ins: 0,
                locked_until: None,
                disabled: false,
                created_at: UnixSeconds(now),
                sessions: Vec::new(),
            }),
        )
        .await;
        let token = "bench-session-token";
        let id: String = {
            use sha2::Digest;
            sha2::Sha256::digest(token.as_bytes())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        commit(
            &store,
            now,
            Op::StartPortalSession(PortalSession {
                id,
                user: "admin@bigco.example".into(),
                created_at: UnixSeconds(now),
                expires_at: UnixSeconds(now + 3_600),
                csrf: "c".repeat(43),
                method: SignInMethod::Password,
            }),
        )
        .await;
        let keys = tollgate_api::licensing::OriginKeys::new(
            tollgate_signing::SealKey::generate().expect("a seal key"),
        );
        let app = AppState {
            store: store.clone(),
            keys,
            metrics: None,
            status: None,
            rate: None,
            clock,
        };
        let config = tollgate_portal::PortalConfig {
            secure_cookies: false,
            ..Default::default()
        };
        let router = tollgate_portal::router(app, config);
        println!(
            "account bigco: {ENTITLEMENTS} entitlements, {DAYS} days of daily usage; {RUNS} requests per page"
        );
        for page in ["/portal/a/bigco", "/portal/a/bigco/usage", "/portal/a/bigco/seats"] {
            let mut times = Vec::with_capacity(RUNS);
            let mut bytes = 0;
            for run in 0..(RUNS + 20) {
                let request = Request::get(page)
                    .header("cookie", format!("tg_session={token}"))
                    .body(Body::empty())
                    .unwrap();
                let started = Instant::now();
                let response = router.clone().oneshot(request).await.unwrap();
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                    .await
                    .unwrap();
                let took = started.elapsed();
                assert_eq!(status, 200, "{page}: {}", String::from_utf8_lossy(&body));
                bytes = body.len();
                if run >= 20 {
                    times.push(took);
                }
            }
            times.sort();
            let p99 = percentile(&times, 0.99);
            println!(
                "{page:<26} p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms   {:>8} bytes   {}",
                percentile(&times, 0.5).as_secs_f64() * 1e3,
                p99.as_secs_f64() * 1e3,
                times[times.len() - 1].as_secs_f64() * 1e3,
                bytes,
                if p99 <= Duration::from_millis(20) {
                    "within 20 ms"
                } else {
                    "OVER 20 ms"
                }
            );
        }
    });
}
