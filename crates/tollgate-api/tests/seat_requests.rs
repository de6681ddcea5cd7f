//! Requests for more seats over real HTTP on 127.0.0.1:0: an account's own
//! key files one for its entitlement (never another account's), the
//! tenant's approver approves it, and the entitlement's seat count and
//! revision move in the approval's revision.

mod common;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use tollgate_api::MemStore;

struct Api {
    base: String,
    http: Client,
    admin: String,
}

impl Api {
    /// Any request: the status, the `x-tollgate-revision` header and the
    /// body. Every error is a problem document with a code.
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (StatusCode, Option<u64>, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let revision = resp
            .headers()
            .get("x-tollgate-revision")
            .map(|v| v.to_str().unwrap().parse().unwrap());
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            assert!(
                value["code"].is_string(),
                "{path}: problems carry a code: {value}"
            );
        }
        (status, revision, value)
    }

    async fn admin(&self, method: Method, path: &str, body: Value) {
        let (status, _, v) = self.call(method, path, &self.admin, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {v}");
    }

    /// A key of `account` (or the tenant's, for `None`) with `scopes`.
    async fn key(&self, scopes: &[&str], account: Option<&str>) -> String {
        let mut body = json!({"name": "test", "scopes": scopes});
        if let Some(account) = account {
            body["account"] = json!(account);
        }
        let (status, _, v) = self
            .call(Method::POST, "/v1/api-keys", &self.admin, Some(body))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }
}

fn seats_request(id: &str, entitlement: &str, more: u32) -> Value {
    json!({
        "id": id,
        "account": "acme",
        "target": {"seats": {"entitlement": entitlement, "more": more}},
        "justification": "the team grew",
    })
}

#[tokio::test]
async fn an_account_files_for_more_seats_and_the_tenant_approves() {
    let (base, admin) = common::serve(Arc::new(MemStore::default())).await;
    let api = Api {
        base,
        http: Client::new(),
        admin,
    };
    api.admin(
        Method::PUT,
        "/v1/products/studio",
        json!({"id": "studio", "name": "Studio"}),
    )
    .await;
    api.admin(
        Method::PUT,
        "/v1/features/render",
        json!({"id": "render", "product": "studio", "name": "Render", "kind": "boolean"}),
    )
    .await;
    api.admin(
        Method::PUT,
        "/v1/plans/pro",
        json!({"id": "pro", "product": "studio", "name": "Studio Pro", "tier": 2,
            "features": [{"feature": "render"}]}),
    )
    .await;
    for account in ["acme", "globex"] {
        api.admin(
            Method::PUT,
            &format!("/v1/accounts/{account}"),
            json!({"id": account, "name": account}),
        )
        .await;
        api.admin(
            Method::POST,
            "/v1/entitlements",
            json!({"id": format!("{account}-pro"), "account": account, "grant": {"plan": "pro"},
                "valid_from": 1_700_000_000,
                "seats": {"count": 5, "mode": {"floating": {"lease_ttl_seconds": 300}}}}),
        )
        .await;
    }
    let acme = api.key(&["read", "access:request"], Some("acme")).await;
    let approver = api.key(&["read", "access:approve"], None).await;
    let file = "/v1/accounts/acme/access-requests";

    tracing::info!("An account's key files for more seats on its own entitlement only.");
    let (status, _, v) = api
        .call(
            Method::POST,
            file,
            &acme,
            Some(seats_request("more", "acme-pro", 5)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, _, v) = api
        .call(
            Method::POST,
            file,
            &acme,
            Some(seats_request("theirs", "globex-pro", 5)),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("unknown entitlement globex-pro in account acme"),
        "{v}"
    );
    for more in [0, 10_001] {
        let (status, _, v) = api
            .call(
                Method::POST,
                file,
                &acme,
                Some(seats_request("bad", "acme-pro", more)),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{more}: {v}");
    }
    let mut body = seats_request("elsewhere", "globex-pro", 5);
    body["account"] = json!("globex");
    let (status, _, v) = api
        .call(
            Method::POST,
            "/v1/accounts/globex/access-requests",
            &acme,
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another account's path: {v}");

    tracing::info!("The request waits in the approval queue, words and all.");
    let (status, _, page) = api
        .call(
            Method::GET,
            "/v1/access-requests?status=pending",
            &acme,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(
        items[0]["spec"]["target"],
        json!({"seats": {"entitlement": "acme-pro", "more": 5}})
    );

    tracing::info!("Only the tenant's approver approves; the seat count and revision move.");
    let (status, _, _) = api
        .call(
            Method::POST,
            "/v1/access-requests/more/approve",
            &acme,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "an account cannot approve");
    let (status, revision, v) = api
        .call(
            Method::POST,
            "/v1/access-requests/more/approve",
            &approver,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["entitlements"], json!(["acme-pro"]), "{v}");
    let revision = revision.expect("the approval's revision");
    let (status, _, ent) = api
        .call(Method::GET, "/v1/entitlements/acme-pro", &approver, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{ent}");
    assert_eq!(ent["seats"]["count"], 10, "{ent}");
    assert_eq!(ent["seats"]["mode"]["floating"]["lease_ttl_seconds"], 300);
    assert_eq!(ent["revision"], revision, "{ent}");
    let (status, _, request) = api
        .call(
            Method::GET,
            "/v1/accounts/acme/access-requests/more",
            &acme,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{request}");
    assert_eq!(
        request["status"],
        json!({"approved": {"entitlement": "acme-pro"}})
    );
    let (_, _, theirs) = api
        .call(Method::GET, "/v1/entitlements/globex-pro", &approver, None)
        .await;
    assert_eq!(theirs["seats"]["count"], 5, "another account's seats stay");
}
