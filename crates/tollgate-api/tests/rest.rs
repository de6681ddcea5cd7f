//! The REST API over real HTTP on 127.0.0.1:0, backed by the origin's state
//! machine in memory. (The same API over a Raft-replicated origin is tested
//! in the top-level tests/.)

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
    async fn start() -> Api {
        let (base, admin) = common::serve(Arc::new(MemStore::default())).await;
        Api {
            base,
            http: Client::new(),
            admin,
        }
    }

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
            assert!(is_problem, "errors are problem documents: {status} {value}");
            assert!(value["code"].is_string(), "problems carry a code: {value}");
        }
        (status, value)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, path, Some(&self.admin.clone()), body)
            .await
    }

    async fn ok(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, value) = self.admin(method, path, Some(body)).await;
        assert!(status.is_success(), "{path}: {status} {value}");
        value
    }

    async fn key(&self, scopes: &[&str]) -> String {
        let (status, v) = self
            .admin(
                Method::POST,
                "/v1/api-keys",
                Some(json!({"name": "test", "scopes": scopes})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    async fn head(&self) -> u64 {
        let (_, page) = self.admin(Method::GET, "/v1/audit?limit=500", None).await;
        page["items"]
            .as_array()
            .unwrap()
            .last()
            .map_or(0, |r| r["revision"].as_u64().unwrap())
    }

    async fn catalog(&self) {
        self.ok(
            Method::PUT,
            "/v1/products/studio",
            json!({"id": "studio", "name": "Studio"}),
        )
        .await;
        for f in ["export", "render"] {
            self.ok(
                Method::PUT,
                &format!("/v1/features/{f}"),
                json!({"id": f, "product": "studio", "name": f, "kind": "boolean"}),
            )
            .await;
        }
        self.ok(
            Method::PUT,
            "/v1/plans/starter",
            json!({"id": "starter", "product": "studio", "name": "Starter", "tier": 1,
            "features": [{"feature": "export"}]}),
        )
        .await;
        self.ok(
            Method::PUT,
            "/v1/plans/pro",
            json!({"id": "pro", "product": "studio", "name": "Pro", "tier": 2,
            "features": [{"feature": "export"}, {"feature": "render"}]}),
        )
        .await;
        self.ok(
            Method::PUT,
            "/v1/addons/render-pack",
            json!({"id": "render-pack", "product": "studio",
            "name": "Render pack", "features": [{"feature": "render"}]}),
        )
        .await;
        self.ok(
            Method::PUT,
            "/v1/skus/STU-STARTER",
            json!({"id": "STU-STARTER", "name": "Starter", "target": {"plan": "starter"}}),
        )
        .await;
        self.ok(
            Method::PUT,
            "/v1/skus/STU-PRO",
            json!({"id": "STU-PRO", "name": "Pro", "target": {"plan": "pro"}}),
        )
        .await;
        self.ok(
            Method::PUT,
            "/v1/accounts/acme",
            json!({"id": "acme", "name": "Acme"}),
        )
        .await;
        self.ok(
            Method::PUT,
            "/v1/accounts/acme/subjects/alice",
            json!({"id": "alice", "account": "acme", "kind": "user"}),
        )
        .await;
    }
}

fn order(id: &str, sku: &str, kind: &str, quantity: u32) -> Value {
    json!({"id": id, "account": "acme", "sku": sku, "kind": kind, "quantity": quantity,
           "term_start": 1_795_000_000, "term_end": 1_830_000_000})
}

#[tokio::test]
async fn keys_and_scopes_guard_every_endpoint_but_health_and_the_key_set() {
    let api = Api::start().await;
    let (s, _) = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, keys) = api
        .call(Method::GET, "/.well-known/tollgate-keys.json", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(keys["keys"][0]["algorithm"], "Ed25519");

    let (s, p) = api.call(Method::GET, "/v1/products", None, None).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED"))
    );
    let (s, _) = api
        .call(Method::GET, "/v1/products", Some("tg_key-0000.wrong"), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let tampered = format!("{}x", api.admin);
    let (s, _) = api
        .call(Method::GET, "/v1/products", Some(&tampered), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let reader = api.key(&["read"]).await;
    let (s, _) = api
        .call(Method::GET, "/v1/products", Some(&reader), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, p) = api
        .call(
            Method::PUT,
            "/v1/products/x",
            Some(&reader),
            Some(json!({"id": "x", "name": "X"})),
        )
        .await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("FORBIDDEN"))
    );
    assert!(p["detail"].as_str().unwrap().contains("catalog:write"));
    let (s, _) = api
        .call(Method::GET, "/v1/api-keys", Some(&reader), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "listing keys is for admins");

    let (_, keys) = api.admin(Method::GET, "/v1/api-keys", None).await;
    let reader_id = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["scopes"] == json!(["read"]))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !keys.to_string().contains("sha256"),
        "no hash is ever served"
    );
    let (s, _) = api
        .admin(Method::DELETE, &format!("/v1/api-keys/{reader_id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, p) = api
        .call(Method::GET, "/v1/products", Some(&reader), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{p}");
}

#[tokio::test]
async fn catalog_objects_are_written_read_and_listed_page_by_page() {
    let api = Api::start().await;
    api.catalog().await;
    let (s, plan) = api.admin(Method::GET, "/v1/plans/pro", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(plan["tier"], 2);
    let (_, page) = api.admin(Method::GET, "/v1/features?limit=1", None).await;
    assert_eq!(page["items"][0]["id"], "export");
    assert_eq!(page["next_after"], "export");
    let (_, page) = api
        .admin(Method::GET, "/v1/features?limit=1&after=export", None)
        .await;
    assert_eq!(page["items"][0]["id"], "render");
    let (_, last) = api
        .admin(Method::GET, "/v1/features?limit=1&after=render", None)
        .await;
    assert_eq!(last["items"], json!([]));
    assert!(last["next_after"].is_null());
    let (s, _) = api.admin(Method::GET, "/v1/plans/gold", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api
        .admin(Method::GET, "/v1/features?limit=100000", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn orders_grant_replay_conflict_upgrade_and_cancel() {
    let api = Api::start().await;
    api.catalog().await;
    let first = api
        .ok(
            Method::POST,
            "/v1/orders",
            order("ord-1", "STU-STARTER", "new", 3),
        )
        .await;
    assert_eq!(first["unchanged"], false);
    assert_eq!(first["entitlements"], json!(["ord-1"]));
    let again = api
        .ok(
            Method::POST,
            "/v1/orders",
            order("ord-1", "STU-STARTER", "new", 3),
        )
        .await;
    assert_eq!(
        again["unchanged"], true,
        "the same order twice changes nothing, and says so"
    );
    assert_eq!(again["revision"], first["revision"]);
    let (s, p) = api
        .admin(
            Method::POST,
            "/v1/orders",
            Some(order("ord-1", "STU-STARTER", "new", 4)),
        )
        .await;
    assert_eq!(
        (s, p["code"].as_str()),
        (StatusCode::CONFLICT, Some("CONFLICT"))
    );
    let (s, p) = api
        .admin(
            Method::POST,
            "/v1/orders",
            Some(order("ord-2", "STU-GOLD", "new", 1)),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{p}");
    assert!(p["detail"].as_str().unwrap().contains("unknown SKU"));
    let mut stranger = order("ord-3", "STU-PRO", "new", 1);
    stranger["account"] = json!("globex");
    let (s, _) = api.admin(Method::POST, "/v1/orders", Some(stranger)).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    api.ok(
        Method::POST,
        "/v1/orders",
        order("ord-4", "STU-PRO", "change", 5),
    )
    .await;
    let (_, ent) = api.admin(Method::GET, "/v1/entitlements/ord-1", None).await;
    assert_eq!(ent["grant"], json!({"plan": "pro"}), "upgraded in place");
    assert_eq!(ent["seats"]["count"], 5);
    let (_, record) = api.admin(Method::GET, "/v1/orders/ord-4", None).await;
    assert_eq!(record["entitlements"], json!(["ord-1"]));

    let mut cancel = order("ord-5", "STU-PRO", "cancel", 5);
    cancel["term_end"] = Value::Null;
    api.ok(Method::POST, "/v1/orders", cancel).await;
    let (_, list) = api
        .admin(Method::GET, "/v1/accounts/acme/entitlements", None)
        .await;
    assert_eq!(list["items"][0]["status"], "revoked");
}

#[tokio::test]
async fn entitlement_lifecycle_over_http() {
    let api = Api::start().await;
    api.catalog().await;
    let grant = json!({"id": "e1", "account": "acme", "grant": {"plan": "pro"}, "valid_from": 1_795_000_000});
    let r = api
        .ok(Method::POST, "/v1/entitlements", grant.clone())
        .await;
    let rev = r["revision"].as_u64().unwrap();
    let (s, _) = api
        .admin(Method::POST, "/v1/entitlements", Some(grant))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    for action in ["suspend", "resume"] {
        api.ok(
            Method::POST,
            &format!("/v1/entitlements/e1/{action}"),
            json!(null),
        )
        .await;
    }
    api.ok(
        Method::POST,
        "/v1/entitlements/e1/extend",
        json!({"valid_until": 1_900_000_000}),
    )
    .await;
    api.ok(
        Method::PUT,
        "/v1/entitlements/e1/seats",
        json!({"count": 2, "mode": {"floating": {"lease_ttl_seconds": 60}}}),
    )
    .await;
    let r = api
        .ok(Method::POST, "/v1/entitlements/e1/revoke", json!(null))
        .await;
    let (_, ent) = api.admin(Method::GET, "/v1/entitlements/e1", None).await;
    assert_eq!(ent["status"], "revoked");
    assert_eq!(ent["valid_until"], 1_900_000_000);
    assert_eq!(ent["revision"], r["revision"]);
    assert!(r["revision"].as_u64().unwrap() > rev);
    let (s, p) = api
        .admin(Method::POST, "/v1/entitlements/e1/resume", None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{p}");
}

#[tokio::test]
async fn access_requests_need_the_approve_scope() {
    let api = Api::start().await;
    api.catalog().await;
    let requester = api.key(&["access:request"]).await;
    let orders_only = api.key(&["orders:write"]).await;
    let approver = api.key(&["access:approve", "read"]).await;
    for id in ["ar-1", "ar-2"] {
        let (s, v) = api
            .call(
                Method::POST,
                "/v1/access-requests",
                Some(&requester),
                Some(json!({
                "id": id, "account": "acme", "subject": "alice",
                "target": {"addon": "render-pack"}, "justification": "quarter end"})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let (s, _) = api
        .call(
            Method::POST,
            "/v1/access-requests/ar-1/approve",
            Some(&orders_only),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "approval needs access:approve");
    let (s, _) = api
        .call(
            Method::POST,
            "/v1/access-requests/ar-1/approve",
            Some(&requester),
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "requesters cannot approve their own requests"
    );
    let resp = api
        .http
        .post(format!("{}/v1/access-requests/ar-1/approve", api.base))
        .bearer_auth(&approver)
        .header("x-tollgate-reason", "finance ok")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().contains_key("x-tollgate-revision"));
    let (s, _) = api
        .call(
            Method::POST,
            "/v1/access-requests/ar-2/deny",
            Some(&approver),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, ar1) = api
        .call(
            Method::GET,
            "/v1/access-requests/ar-1",
            Some(&approver),
            None,
        )
        .await;
    assert_eq!(ar1["status"], json!({"approved": {"entitlement": "ar-1"}}));
    assert_eq!(ar1["decision_reason"], "finance ok");
    let (_, ar2) = api
        .call(
            Method::GET,
            "/v1/access-requests/ar-2",
            Some(&approver),
            None,
        )
        .await;
    assert_eq!(ar2["status"], "denied");
    let (s, _) = api.admin(Method::GET, "/v1/entitlements/ar-2", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a denied request grants nothing");

    let (_, trail) = api
        .admin(Method::GET, "/v1/audit?target=access-request/", None)
        .await;
    let actions: Vec<&str> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "access_request.create",
            "access_request.create",
            "access_request.approve",
            "access_request.deny"
        ]
    );
    let approval = &trail["items"][2];
    assert_eq!(approval["reason"], "finance ok");
    assert!(approval["actor"].as_str().unwrap().starts_with("key-"));
}

#[tokio::test]
async fn bad_input_gets_a_problem_and_changes_nothing() {
    let api = Api::start().await;
    api.catalog().await;
    let head = api.head().await;
    let url = format!("{}/v1/orders", api.base);
    let send = |body: reqwest::Body, content_type: &'static str| {
        api.http
            .post(&url)
            .bearer_auth(&api.admin)
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let r = send("{\"id\": ".into(), "application/json").await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "MALFORMED_BODY");
    let mut unknown_field = order("ord-9", "STU-PRO", "new", 1);
    unknown_field["colour"] = json!("blue");
    let r = send(unknown_field.to_string().into(), "application/json")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("colour"));
    let r = send(
        order("ord-9", "STU-PRO", "new", 1).to_string().into(),
        "text/plain",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = format!("{{\"id\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let r = send(huge.into(), "application/json").await.unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let mut bad_id = order("ord 9", "STU-PRO", "new", 1);
    bad_id["id"] = json!("ord 9");
    let r = send(bad_id.to_string().into(), "application/json")
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);

    let (s, _) = api.admin(Method::GET, "/v1/plans/no%20such", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "an invalid id in the path");
    let (s, p) = api
        .admin(
            Method::PUT,
            "/v1/products/studio",
            Some(json!({"id": "other", "name": "Other"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    let (s, _) = api.admin(Method::GET, "/v1/nowhere", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = api
        .admin(
            Method::PUT,
            "/v1/plans/x",
            Some(
                json!({"id": "x", "product": "studio", "name": "X", "tier": 1,
            "features": [{"feature": "teleport"}]}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(
        api.head().await,
        head,
        "no refused request committed anything"
    );
}
