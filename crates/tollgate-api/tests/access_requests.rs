//! `GET /v1/access-requests` over real HTTP on 127.0.0.1:0, backed by the
//! origin's state machine in memory: the approval queue oldest first, its
//! filters, pages that cover every request exactly once, the bounds and
//! malformed queries as problems, an account's key confined to its
//! account, and storage failures answered as errors, never as empty pages.

mod common;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tollgate_api::store::Entries;
use tollgate_api::{MemStore, OriginStore, StoreError};
use tollgate_model::UnixSeconds;
use tollgate_origin::{AccessRequestSpec, AccessTarget, Op, OriginCommand, OriginResponse};

/// The server's clock (the tests serve the API with the system clock).
fn now_secs() -> i64 {
    tollgate_api::Clock::system().now_secs()
}

/// A store that fails on demand: scans of the access-request queues, or
/// reads of access requests (as if a queue entry named a request that is
/// not there).
#[derive(Default)]
struct Faulty {
    inner: MemStore,
    fail_queue_scans: AtomicBool,
    hide_requests: AtomicBool,
}

impl OriginStore for Faulty {
    async fn write(&self, command: OriginCommand) -> Result<OriginResponse, StoreError> {
        self.inner.write(command).await
    }

    async fn wait_applied(
        &self,
        revision: u64,
        timeout: std::time::Duration,
    ) -> Result<(), StoreError> {
        self.inner.wait_applied(revision, timeout).await
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if self.hide_requests.load(Ordering::SeqCst) && key.starts_with(b"access-request/") {
            return Ok(None);
        }
        self.inner.get(key)
    }

    fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        if self.fail_queue_scans.load(Ordering::SeqCst)
            && prefix.starts_with(tollgate_origin::keys::ACCESS_REQUEST_QUEUE_PREFIX.as_bytes())
        {
            return Err(StoreError::Internal("disk on fire".into()));
        }
        self.inner.scan(prefix, after, limit)
    }
}

struct Api {
    base: String,
    http: Client,
    admin: String,
    store: Arc<Faulty>,
}

impl Api {
    /// An origin with a catalog (product studio, features export and
    /// render, add-on render-pack) and accounts acme (user alice) and
    /// globex (user bob).
    async fn start() -> Api {
        let store = Arc::new(Faulty::default());
        let (base, admin) = common::serve(store.clone()).await;
        let api = Api {
            base,
            http: Client::new(),
            admin,
            store,
        };
        let put = |path: &str, body: Value| {
            let path = path.to_string();
            let api = &api;
            async move {
                let (status, v) = api.admin(Method::PUT, &path, Some(body)).await;
                assert!(status.is_success(), "{path}: {status} {v}");
            }
        };
        put(
            "/v1/products/studio",
            json!({"id": "studio", "name": "Studio"}),
        )
        .await;
        for f in ["export", "render"] {
            put(
                &format!("/v1/features/{f}"),
                json!({"id": f, "product": "studio", "name": f, "kind": "boolean"}),
            )
            .await;
        }
        put(
            "/v1/addons/render-pack",
            json!({"id": "render-pack", "product": "studio", "name": "Render pack",
                "features": [{"feature": "render"}]}),
        )
        .await;
        for (account, subject) in [("acme", "alice"), ("globex", "bob")] {
            put(
                &format!("/v1/accounts/{account}"),
                json!({"id": account, "name": account}),
            )
            .await;
            put(
                &format!("/v1/accounts/{account}/subjects/{subject}"),
                json!({"id": subject, "account": account, "kind": "user"}),
            )
            .await;
        }
        api
    }

    /// Commits `op` as if proposed at `at`, straight to the store.
    async fn seed(&self, op: Op, at: i64) {
        let action = op.action();
        let outcome = self
            .store
            .write(OriginCommand {
                actor: "test-seed".into(),
                at: UnixSeconds(at),
                reason: None,
                op,
            })
            .await
            .unwrap();
        assert!(
            matches!(outcome, OriginResponse::Committed { .. }),
            "{action}: {outcome:?}"
        );
    }

    /// Files request `id` of `account` for the render-pack add-on, as if at
    /// `at`.
    async fn file(&self, id: &str, account: &str, at: i64) {
        self.seed(
            Op::RequestAccess(AccessRequestSpec {
                id: id.into(),
                account: account.to_string().try_into().unwrap(),
                subject: None,
                target: AccessTarget::Addon("render-pack".to_string().try_into().unwrap()),
                justification: "renders".into(),
                duration_seconds: Some(3600),
            }),
            at,
        )
        .await;
    }

    async fn decide(&self, id: &str, approve: bool, at: i64) {
        self.seed(
            Op::DecideAccess {
                id: id.into(),
                approve,
            },
            at,
        )
        .await;
    }

    /// Any request; every error must be a problem document with a code.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let is_problem = resp
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/problem+json"));
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            assert!(
                is_problem,
                "{path}: errors are problem documents: {status} {value}"
            );
            assert!(
                value["code"].is_string(),
                "{path}: problems carry a code: {value}"
            );
        }
        (status, value)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, path, Some(&self.admin.clone()), body)
            .await
    }

    /// A key of `account` (or the tenant's) with `scopes`.
    async fn key(&self, scopes: &[&str], account: Option<&str>) -> String {
        let mut body = json!({"name": "test", "scopes": scopes});
        if let Some(account) = account {
            body["account"] = json!(account);
        }
        let (status, v) = self.admin(Method::POST, "/v1/api-keys", Some(body)).await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    /// Every page of `query` with `token`, following `next_after`: the
    /// pages' ids. Every page but the last is full, and the last says so.
    async fn pages(&self, token: &str, query: &str, limit: usize) -> Vec<Vec<String>> {
        let mut pages = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/v1/access-requests?limit={limit}");
            if !query.is_empty() {
                path.push('&');
                path.push_str(query);
            }
            if let Some(a) = &after {
                path.push_str(&format!("&after={a}"));
            }
            let (status, page) = self.call(Method::GET, &path, Some(token), None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {page}");
            let ids = ids(&page);
            assert!(ids.len() <= limit, "{path}: {page}");
            let next = page["next_after"].as_str().map(str::to_string);
            if next.is_some() {
                assert_eq!(ids.len(), limit, "{path}: a page before the last is full");
            }
            pages.push(ids);
            assert!(pages.len() <= 100, "{query}: the pages end");
            match next {
                Some(next) => after = Some(next),
                None => return pages,
            }
        }
    }

    /// Every id of `query`, page after page.
    async fn all(&self, token: &str, query: &str, limit: usize) -> Vec<String> {
        self.pages(token, query, limit).await.concat()
    }
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a page has items: {page}"))
        .iter()
        .map(|r| r["spec"]["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_queue_is_oldest_first_and_filters_by_status_account_and_age() {
    let api = Api::start().await;
    let t0 = now_secs() - 10_000;
    tracing::info!("Requests filed out of time order, two of them in one second.");
    api.file("ar-a1", "acme", t0 + 1_000).await;
    api.file("ar-g1", "globex", t0 + 2_000).await;
    api.file("ar-a3", "acme", t0 + 3_000).await;
    api.file("ar-a2", "acme", t0 + 3_000).await;
    // Committed last, filed (by the proposer's clock) first.
    api.file("ar-g2", "globex", t0 + 500).await;
    api.decide("ar-a2", true, t0 + 3_100).await;
    api.decide("ar-g1", false, t0 + 3_200).await;

    tracing::info!("Oldest first by requested_at, then id; each filter narrows.");
    let admin = api.admin.clone();
    for (query, expected) in [
        (
            "".to_string(),
            vec!["ar-g2", "ar-a1", "ar-g1", "ar-a2", "ar-a3"],
        ),
        (
            "status=pending".to_string(),
            vec!["ar-g2", "ar-a1", "ar-a3"],
        ),
        ("status=approved".to_string(), vec!["ar-a2"]),
        ("status=denied".to_string(), vec!["ar-g1"]),
        ("account=acme".to_string(), vec!["ar-a1", "ar-a2", "ar-a3"]),
        (
            "account=acme&status=pending".to_string(),
            vec!["ar-a1", "ar-a3"],
        ),
        ("account=globex&status=approved".to_string(), vec![]),
        ("account=nobody".to_string(), vec![]),
        (
            format!("created_after={}", t0 + 1_000),
            vec!["ar-g1", "ar-a2", "ar-a3"],
        ),
        (
            format!("created_before={}", t0 + 3_000),
            vec!["ar-g2", "ar-a1", "ar-g1"],
        ),
        (
            format!("created_after={}&created_before={}", t0 + 500, t0 + 3_000),
            vec!["ar-a1", "ar-g1"],
        ),
        (
            format!("created_after={}&created_before={}", t0 + 499, t0 + 501),
            vec!["ar-g2"],
        ),
        (
            format!("created_after={}&created_before={}", t0 + 3_000, t0),
            vec![],
        ),
        // At least 8,500 s old: filed by t0 + 1,500 (the clock may move a
        // little while the test runs; the gaps are wide).
        (
            "older_than_seconds=8500".to_string(),
            vec!["ar-g2", "ar-a1"],
        ),
        // Less than 7,500 s old: filed after t0 + 2,500.
        (
            "newer_than_seconds=7500".to_string(),
            vec!["ar-a2", "ar-a3"],
        ),
        (
            "newer_than_seconds=9200&older_than_seconds=7500".to_string(),
            vec!["ar-a1", "ar-g1"],
        ),
        (
            "status=pending&newer_than_seconds=7500".to_string(),
            vec!["ar-a3"],
        ),
        ("older_than_seconds=20000".to_string(), vec![]),
    ] {
        let got = api.all(&admin, &query, 500).await;
        assert_eq!(got, expected, "?{query}");
    }

    tracing::info!("Items are whole requests, with their status and decision.");
    let (_, page) = api
        .admin(Method::GET, "/v1/access-requests?status=approved", None)
        .await;
    let approved = &page["items"][0];
    assert_eq!(
        approved["status"],
        json!({"approved": {"entitlement": "ar-a2"}})
    );
    assert_eq!(approved["requested_at"], t0 + 3_000);
    assert_eq!(approved["decided_at"], t0 + 3_100);
    assert_eq!(approved["spec"]["account"], "acme");
    assert!(page["next_after"].is_null(), "{page}");

    tracing::info!("Requests filed over REST and auto-approved ones are queued too.");
    let (status, v) = api
        .admin(
            Method::POST,
            "/v1/access-requests",
            Some(json!({"id": "ar-rest", "account": "acme",
                "target": {"feature": "export"}, "justification": "now"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let newest = api
        .all(&admin, "status=pending&newer_than_seconds=600", 10)
        .await;
    assert_eq!(newest, ["ar-rest"]);
}

#[tokio::test]
async fn pages_cover_every_request_exactly_once() {
    let api = Api::start().await;
    let t0 = now_secs() - 100_000;
    tracing::info!("41 requests over two accounts, several per second, some decided.");
    let mut filed = Vec::new();
    for i in 0..41i64 {
        let account = if i % 3 == 0 { "globex" } else { "acme" };
        let id = format!("ar-{:02}", (i * 17) % 41);
        let at = t0 + (i / 4) * 10;
        api.file(&id, account, at).await;
        filed.push((at, id, account));
    }
    let mut decided = BTreeSet::new();
    for (n, (_, id, _)) in filed.iter().enumerate() {
        if n % 5 == 1 {
            api.decide(id, n % 2 == 0, t0 + 1_000).await;
            decided.insert(id.clone());
        }
    }
    filed.sort();
    let expect = |keep: &dyn Fn(&(i64, String, &str)) -> bool| -> Vec<String> {
        filed
            .iter()
            .filter(|r| keep(r))
            .map(|(_, id, _)| id.clone())
            .collect()
    };

    tracing::info!("Every page size: no request twice, none missed, in order.");
    let admin = api.admin.clone();
    let everything = expect(&|_| true);
    let pending = expect(&|(_, id, _)| !decided.contains(id));
    let acme_pending = expect(&|(_, id, a)| *a == "acme" && !decided.contains(id));
    let window = expect(&|(at, _, _)| *at > t0 + 20 && *at < t0 + 70);
    for limit in [1, 2, 3, 7, 40, 41, 500] {
        for (query, expected) in [
            (String::new(), &everything),
            ("status=pending".to_string(), &pending),
            ("status=pending&account=acme".to_string(), &acme_pending),
            (
                format!("created_after={}&created_before={}", t0 + 20, t0 + 70),
                &window,
            ),
        ] {
            let pages = api.pages(&admin, &query, limit).await;
            let got: Vec<String> = pages.concat();
            assert_eq!(&got, expected, "?{query} by {limit}");
            assert_eq!(
                pages.len(),
                expected.len().div_ceil(limit).max(1),
                "?{query} by {limit}: full pages, and no empty page after a full last one"
            );
        }
    }

    tracing::info!(
        "Paging on while the queue changes: a request decided at the cursor, and one filed \
         since, are neither repeated nor missed."
    );
    let (_, first) = api
        .admin(
            Method::GET,
            "/v1/access-requests?status=pending&limit=3",
            None,
        )
        .await;
    let first_ids = ids(&first);
    assert_eq!(first_ids, pending[..3]);
    api.decide(&first_ids[2], true, t0 + 2_000).await;
    api.file("ar-late", "acme", now_secs()).await;
    let cursor = first["next_after"].as_str().unwrap();
    let mut rest = Vec::new();
    let mut after = cursor.to_string();
    loop {
        let (status, page) = api
            .admin(
                Method::GET,
                &format!("/v1/access-requests?status=pending&limit=4&after={after}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        rest.extend(ids(&page));
        match page["next_after"].as_str() {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    let mut expected = pending[3..].to_vec();
    expected.push("ar-late".into());
    assert_eq!(rest, expected);
}

#[tokio::test]
async fn limits_and_malformed_queries_are_problems() {
    let api = Api::start().await;
    api.file("ar-1", "acme", now_secs()).await;
    let garbage_cursor = "not-a-cursor!";
    // Base64url of a position whose time is not 20 digits.
    let forged_cursor = "MTIzL2FyLTE"; // "123/ar-1"
    for query in [
        "limit=0",
        "limit=501",
        "limit=abc",
        "limit=-1",
        "status=open",
        "status=PENDING",
        "status=pending&status=denied",
        "account=a%20b",
        "account=%FF",
        "created_after=yesterday",
        "created_before=1.5",
        "older_than_seconds=-5",
        "newer_than_seconds=99999999999999999999999",
        &format!("after={garbage_cursor}"),
        &format!("after={forged_cursor}"),
        "colour=blue",
    ] {
        let path = format!("/v1/access-requests?{query}");
        let (status, problem) = api.admin(Method::GET, &path, None).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT")),
            "?{query}: {problem}"
        );
    }
    let (status, problem) = api
        .admin(Method::GET, "/v1/access-requests?limit=501", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        problem["detail"].as_str().unwrap().contains("1..=500"),
        "the bound is named: {problem}"
    );
    let (status, page) = api
        .admin(Method::GET, "/v1/access-requests?limit=500", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(ids(&page), ["ar-1"]);
    let (status, _) = api
        .call(Method::GET, "/v1/access-requests", None, None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_account_key_sees_only_its_own_accounts_requests() {
    let api = Api::start().await;
    let t0 = now_secs() - 1_000;
    for i in 0..6 {
        api.file(&format!("ar-acme-{i}"), "acme", t0 + i).await;
        api.file(&format!("ar-globex-{i}"), "globex", t0 + i).await;
    }
    api.decide("ar-acme-0", true, t0 + 100).await;
    api.decide("ar-globex-1", true, t0 + 100).await;
    let acme = api
        .key(&["read", "accounts:write", "access:request"], Some("acme"))
        .await;

    tracing::info!("A's key lists A's requests only, on every page and under every filter.");
    for (query, expected) in [
        (
            "",
            (0..6).map(|i| format!("ar-acme-{i}")).collect::<Vec<_>>(),
        ),
        (
            "account=acme",
            (0..6).map(|i| format!("ar-acme-{i}")).collect(),
        ),
        (
            "status=pending",
            (1..6).map(|i| format!("ar-acme-{i}")).collect(),
        ),
        ("status=approved", vec!["ar-acme-0".to_string()]),
    ] {
        for limit in [1, 4, 100] {
            assert_eq!(api.all(&acme, query, limit).await, expected, "?{query}");
        }
    }
    let (status, page) = api
        .call(Method::GET, "/v1/access-requests", Some(&acme), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!page.to_string().contains("globex"), "{page}");

    tracing::info!("Naming another account is refused, not answered empty.");
    let (status, problem) = api
        .call(
            Method::GET,
            "/v1/access-requests?account=globex",
            Some(&acme),
            None,
        )
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("FORBIDDEN")),
        "{problem}"
    );

    tracing::info!("A key without the read scope is refused; the tenant sees every account.");
    let filer = api.key(&["access:request"], Some("acme")).await;
    let (status, _) = api
        .call(Method::GET, "/v1/access-requests", Some(&filer), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let approver = api.key(&["read", "access:approve"], None).await;
    let globex = api
        .all(&approver, "account=globex&status=approved", 10)
        .await;
    assert_eq!(globex, ["ar-globex-1"]);
    assert_eq!(api.all(&approver, "", 5).await.len(), 12);
}

#[tokio::test]
async fn a_storage_failure_is_an_error_never_an_empty_list() {
    let api = Api::start().await;
    api.file("ar-1", "acme", now_secs()).await;

    tracing::info!("A failed scan is a 500 problem.");
    api.store.fail_queue_scans.store(true, Ordering::SeqCst);
    let (status, problem) = api.admin(Method::GET, "/v1/access-requests", None).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, Some("INTERNAL")),
        "{problem}"
    );
    api.store.fail_queue_scans.store(false, Ordering::SeqCst);

    tracing::info!("A queue entry naming a request that cannot be read is a 500 problem.");
    api.store.hide_requests.store(true, Ordering::SeqCst);
    let (status, problem) = api
        .admin(Method::GET, "/v1/access-requests?status=pending", None)
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::INTERNAL_SERVER_ERROR, Some("INTERNAL")),
        "{problem}"
    );
    api.store.hide_requests.store(false, Ordering::SeqCst);
    let (status, page) = api.admin(Method::GET, "/v1/access-requests", None).await;
    assert_eq!((status, ids(&page)), (StatusCode::OK, vec!["ar-1".into()]));
}
