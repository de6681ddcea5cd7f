//! Tenant isolation over real HTTP: a customer account's API key reads and
//! changes its own account and nothing else, through every route of the
//! OpenAPI document (the route list comes from the document, not from a
//! list here), and every error on the way is a problem document.

mod common;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use tollgate_api::MemStore;

/// Account A, whose key attacks, and account B, the target.
const A: &str = "acme";
const B: &str = "globex";

struct Api {
    base: String,
    http: Client,
    admin: String,
}

struct Answer {
    status: StatusCode,
    body: Value,
    headers: reqwest::header::HeaderMap,
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

    /// Any request; every error must be a problem document with a code.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if !status.is_success() {
            let content_type = headers
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default();
            assert!(
                content_type.starts_with("application/problem+json") && body["code"].is_string(),
                "{method} {path}: errors are problem documents with a code: {status} {content_type} {body}"
            );
        }
        Answer {
            status,
            body,
            headers,
        }
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let a = self
            .send(method.clone(), path, Some(&self.admin), body.as_ref())
            .await;
        assert!(
            a.status.is_success(),
            "{method} {path}: {} {}",
            a.status,
            a.body
        );
        a.body
    }

    /// An account's key with every scope an account key may hold.
    async fn account_key(&self, account: &str) -> (String, String) {
        let a = self
            .send(
                Method::POST,
                "/v1/api-keys",
                Some(&self.admin),
                Some(&json!({"name": format!("{account} portal"),
                    "scopes": ["read", "accounts:write", "access:request"], "account": account})),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        assert_eq!(a.body["owner"], json!({ "account": account }));
        (
            a.body["id"].as_str().unwrap().to_string(),
            a.body["token"].as_str().unwrap().to_string(),
        )
    }

    /// The last committed revision.
    async fn head(&self) -> u64 {
        let mut after = None::<String>;
        let mut head = 0;
        loop {
            let path = match &after {
                Some(a) => format!("/v1/audit?limit=500&after={a}"),
                None => "/v1/audit?limit=500".to_string(),
            };
            let page = self.admin(Method::GET, &path, None).await;
            if let Some(last) = page["items"].as_array().unwrap().last() {
                head = last["revision"].as_u64().unwrap();
            }
            match page["next_after"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => return head,
            }
        }
    }
}

/// One account's objects, as the test created them.
struct Ids {
    account: &'static str,
    subject: &'static str,
    entitlement: String,
    order: String,
    access_request: String,
    license: String,
    key: String,
}

impl Ids {
    /// What to put in the path parameter `param` that follows `collection`.
    fn param(&self, collection: &str, param: &str) -> String {
        match (collection, param) {
            (_, "account") | ("accounts", _) => self.account.into(),
            (_, "subject") | ("subjects", _) => self.subject.into(),
            ("entitlements", _) => self.entitlement.clone(),
            ("orders", _) => self.order.clone(),
            ("access-requests", _) => self.access_request.clone(),
            ("licenses", _) => self.license.clone(),
            ("api-keys", _) => self.key.clone(),
            ("products", _) => "studio".into(),
            ("features", _) => "export".into(),
            ("plans", _) => "pro".into(),
            ("addons", _) => "render-pack".into(),
            ("skus", _) => "STU-PRO".into(),
            ("webhooks", _) => "wh-1".into(),
            ("regions", _) => "eu".into(),
            // Whatever else a route names (keys, certificates,
            // credentials...): tenant objects, refused before any lookup.
            _ => format!("{}-object", self.account),
        }
    }

    /// `path` with every `{param}` replaced by this account's id.
    fn fill(&self, path: &str) -> String {
        let segments: Vec<&str> = path.split('/').collect();
        segments
            .iter()
            .enumerate()
            .map(
                |(i, s)| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(param) => self.param(segments[i - 1], param),
                    None => s.to_string(),
                },
            )
            .collect::<Vec<_>>()
            .join("/")
    }

    /// A request body of `schema` that names account `self` (and, for
    /// `target`'s objects, their ids).
    fn body(&self, schema: &str) -> Option<Value> {
        let (account, subject) = (self.account, self.subject);
        Some(match schema {
            "Subject" => json!({"id": subject, "account": account, "kind": "user"}),
            "IssueLicense" => json!({"audience": "studio-desktop", "subject": subject}),
            "RevokeLicense" => json!({}),
            "AccessRequestSpec" => json!({"id": format!("ar-new-{account}"), "account": account,
                "subject": subject, "target": {"addon": "render-pack"}, "justification": "please"}),
            "Entitlement" => json!({"id": format!("e-new-{account}"), "account": account,
                "grant": {"plan": "pro"}, "valid_from": 1_795_000_000}),
            "Order" => order(&format!("ord-new-{account}"), account),
            "Account" => json!({"id": account, "name": "Taken over"}),
            "NewKey" => json!({"name": "x", "scopes": ["admin"], "account": account}),
            _ => return None,
        })
    }
}

fn order(id: &str, account: &str) -> Value {
    json!({"id": id, "account": account, "sku": "STU-PRO", "kind": "new", "quantity": 2,
           "term_start": 1_795_000_000, "term_end": 1_830_000_000})
}

/// The catalog, accounts A and B, each with a user, an entitlement, an
/// order, an access request, a license and an account key.
async fn seeded(api: &Api) -> (Ids, Ids, String) {
    let put = |path: &'static str, body: Value| api.admin(Method::PUT, path, Some(body));
    put(
        "/v1/products/studio",
        json!({"id": "studio", "name": "Studio"}),
    )
    .await;
    put(
        "/v1/features/export",
        json!({"id": "export", "product": "studio", "name": "export", "kind": "boolean"}),
    )
    .await;
    put(
        "/v1/features/render",
        json!({"id": "render", "product": "studio", "name": "render", "kind": "boolean"}),
    )
    .await;
    put(
        "/v1/plans/pro",
        json!({"id": "pro", "product": "studio", "name": "Pro", "tier": 2,
        "features": [{"feature": "export"}, {"feature": "render"}]}),
    )
    .await;
    put(
        "/v1/addons/render-pack",
        json!({"id": "render-pack", "product": "studio", "name": "Render pack",
        "features": [{"feature": "render"}]}),
    )
    .await;
    put(
        "/v1/skus/STU-PRO",
        json!({"id": "STU-PRO", "name": "Pro", "target": {"plan": "pro"}}),
    )
    .await;
    let mut ids = Vec::new();
    for (account, subject) in [(A, "alice"), (B, "bob")] {
        let ent = format!("e-{account}");
        let ord = format!("ord-{account}");
        let ar = format!("ar-{account}");
        api.admin(
            Method::PUT,
            &format!("/v1/accounts/{account}"),
            Some(json!({"id": account, "name": account})),
        )
        .await;
        api.admin(
            Method::PUT,
            &format!("/v1/accounts/{account}/subjects/{subject}"),
            Some(json!({"id": subject, "account": account, "kind": "user"})),
        )
        .await;
        api.admin(
            Method::POST,
            "/v1/entitlements",
            Some(
                json!({"id": ent, "account": account, "grant": {"plan": "pro"},
                "valid_from": 1_795_000_000}),
            ),
        )
        .await;
        api.admin(Method::POST, "/v1/orders", Some(order(&ord, account)))
            .await;
        api.admin(
            Method::POST,
            "/v1/access-requests",
            Some(json!({"id": ar, "account": account, "subject": subject,
                "target": {"addon": "render-pack"}, "justification": "quarter end"})),
        )
        .await;
        let license = api
            .admin(
                Method::POST,
                &format!("/v1/accounts/{account}/licenses"),
                Some(json!({"audience": "studio-desktop"})),
            )
            .await;
        let (key, token) = api.account_key(account).await;
        ids.push((
            Ids {
                account,
                subject,
                entitlement: ent,
                order: ord,
                access_request: ar,
                license: license["id"].as_str().unwrap().to_string(),
                key,
            },
            token,
        ));
    }
    let (b, _) = ids.pop().unwrap();
    let (a, a_token) = ids.pop().unwrap();
    (a, b, a_token)
}

/// Everything of B's, and what is not any account's but could be changed
/// without a revision (the signing keys), as the tenant sees it.
async fn b_state(api: &Api, b: &Ids) -> Value {
    let mut state = BTreeMap::new();
    for path in [
        format!("/v1/accounts/{B}"),
        format!("/v1/accounts/{B}/subjects"),
        format!("/v1/accounts/{B}/entitlements"),
        format!("/v1/accounts/{B}/licenses"),
        format!("/v1/accounts/{B}/usage"),
        format!("/v1/entitlements/{}", b.entitlement),
        format!("/v1/orders/{}", b.order),
        format!("/v1/access-requests/{}", b.access_request),
        "/v1/api-keys".to_string(),
        "/v1/keys".to_string(),
    ] {
        let value = api.admin(Method::GET, &path, None).await;
        state.insert(path, value);
    }
    json!({"head": api.head().await, "objects": state})
}

/// Every operation of the document: path, method, operation.
fn operations() -> Vec<(String, Method, Value)> {
    let doc = serde_json::to_value(tollgate_api::openapi_document()).unwrap();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            out.push((path.clone(), method, op.clone()));
        }
    }
    assert!(out.len() > 40, "the document lists every route");
    out
}

/// The name of the schema a route's JSON body refers to, if any.
fn body_schema(op: &Value) -> Option<String> {
    let schema = &op["requestBody"]["content"]["application/json"]["schema"];
    if schema.is_null() {
        return None;
    }
    Some(
        schema["$ref"]
            .as_str()
            .map(|r| r.trim_start_matches("#/components/schemas/").to_string())
            .unwrap_or_else(|| "inline".to_string()),
    )
}

#[tokio::test]
async fn an_account_key_reaches_no_other_account_through_any_route() {
    let api = Api::start().await;
    let (a, b, a_token) = seeded(&api).await;
    let before = b_state(&api, &b).await;

    tracing::info!("Every route with A's key at B's data: refused, nothing changes.");
    let mut refused = 0;
    for (path, method, op) in operations() {
        if op["security"].is_null() {
            continue; // public: no key is asked for
        }
        let policy = op["x-tollgate-account-keys"]
            .as_str()
            .unwrap_or_else(|| panic!("{method} {path} says how it treats account keys"));
        let schema = body_schema(&op);
        let own_account = policy == "own-account";
        if own_account {
            assert!(
                path.contains("{account}"),
                "{method} {path}: an own-account route names the account in its path"
            );
        }
        let body_for = |ids: &Ids| {
            schema.as_ref().map(|name| {
                ids.body(name).unwrap_or_else(|| {
                    assert!(
                        !own_account,
                        "{method} {path}: add a sample {name} body to tests/tenants.rs"
                    );
                    json!({ "account": ids.account })
                })
            })
        };

        // Every path parameter B's, the body naming B.
        let target = b.fill(&path);
        let answer = api
            .send(
                method.clone(),
                &target,
                Some(&a_token),
                body_for(&b).as_ref(),
            )
            .await;
        match policy {
            "refused" | "own-account" => {
                assert_eq!(
                    (answer.status, answer.body["code"].as_str()),
                    (StatusCode::FORBIDDEN, Some("FORBIDDEN")),
                    "{method} {target} with A's key: {}",
                    answer.body
                );
                refused += 1;
            }
            "filtered" => {
                assert_eq!(answer.status, StatusCode::OK, "{method} {target}");
                assert!(
                    !answer.body.to_string().contains(B),
                    "{method} {target} shows A nothing of B: {}",
                    answer.body
                );
            }
            "any" => assert!(
                answer.status.is_success() && !answer.body.to_string().contains(B),
                "{method} {target}: {} {}",
                answer.status,
                answer.body
            ),
            other => panic!("{method} {path}: unknown account-key policy {other}"),
        }

        // A's own account in the path, every other parameter B's: still
        // nothing of B's is reached.
        if own_account && (path.matches('{').count() > 1 || method != Method::GET) {
            let target = path.replace("{account}", A);
            let target = b.fill(&target);
            let answer = api
                .send(
                    method.clone(),
                    &target,
                    Some(&a_token),
                    body_for(&b).as_ref(),
                )
                .await;
            assert!(
                [
                    StatusCode::FORBIDDEN,
                    StatusCode::NOT_FOUND,
                    StatusCode::UNPROCESSABLE_ENTITY
                ]
                .contains(&answer.status),
                "{method} {target} with A's key and B's objects: {} {}",
                answer.status,
                answer.body
            );
            if method == Method::GET {
                assert_eq!(answer.status, StatusCode::NOT_FOUND, "{target}");
            }
        }
    }
    assert!(refused > 30, "most routes refuse another account's key");
    assert_eq!(
        b_state(&api, &b).await,
        before,
        "B's data, the keys and the revision are unchanged"
    );

    tracing::info!("A's key reads its own account on every own-account GET route.");
    let mut own_reads = 0;
    for (path, method, op) in operations() {
        let policy = op["x-tollgate-account-keys"].as_str().unwrap_or("");
        if method != Method::GET || !["own-account", "filtered"].contains(&policy) {
            continue;
        }
        let target = a.fill(&path);
        let answer = api.send(Method::GET, &target, Some(&a_token), None).await;
        assert_eq!(answer.status, StatusCode::OK, "{target}: {}", answer.body);
        assert!(
            !answer.body.to_string().contains(B),
            "{target} shows nothing of B: {}",
            answer.body
        );
        own_reads += 1;
    }
    assert!(
        own_reads >= 8,
        "accounts, subjects, entitlements, usage, licenses, requests"
    );
    let accounts = api
        .send(Method::GET, "/v1/accounts", Some(&a_token), None)
        .await
        .body;
    assert_eq!(accounts["items"].as_array().unwrap().len(), 1);
    assert_eq!(accounts["items"][0]["id"], A);

    tracing::info!("Tenant routes refuse A's key even for A's own ids.");
    for (path, method, op) in operations() {
        if op["x-tollgate-account-keys"] != "refused" {
            continue;
        }
        let target = a.fill(&path);
        let body = body_schema(&op).map(|s| a.body(&s).unwrap_or(json!({"account": A})));
        let answer = api
            .send(method.clone(), &target, Some(&a_token), body.as_ref())
            .await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{method} {target}: {}",
            answer.body
        );
    }
    for tenant in [
        "/v1/products",
        "/v1/audit",
        "/v1/api-keys",
        "/v1/webhooks",
        "/v1/status",
    ] {
        let answer = api.send(Method::GET, tenant, Some(&a_token), None).await;
        assert_eq!(answer.status, StatusCode::FORBIDDEN, "{tenant}");
    }

    tracing::info!("A's key works on its own account, and the audit log names the key.");
    let head = api.head().await;
    let answer = api
        .send(
            Method::PUT,
            &format!("/v1/accounts/{A}/subjects/carol"),
            Some(&a_token),
            Some(&json!({"id": "carol", "account": A, "kind": "user"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = api
        .send(
            Method::POST,
            &format!("/v1/accounts/{A}/access-requests"),
            Some(&a_token),
            a.body("AccessRequestSpec").as_ref(),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let answer = api
        .send(
            Method::POST,
            &format!("/v1/accounts/{A}/licenses/{}/revoke", a.license),
            Some(&a_token),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    let trail = api
        .admin(Method::GET, &format!("/v1/audit?after={head}"), None)
        .await;
    let actors: Vec<&str> = trail["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["actor"].as_str().unwrap())
        .collect();
    assert_eq!(actors, [a.key.as_str(); 3], "the audit log names A's key");
    let answer = api
        .send(
            Method::POST,
            &format!("/v1/accounts/{A}/licenses/some-token-id/revoke"),
            Some(&a_token),
            Some(&json!({"expires_at": 1_900_000_000})),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::FORBIDDEN,
        "a revocation by token id alone is the tenant's: {}",
        answer.body
    );
}

#[tokio::test]
async fn account_keys_hold_only_account_scopes_and_only_admins_make_keys() {
    let api = Api::start().await;
    let (_, _, a_token) = seeded(&api).await;
    for scopes in [
        json!(["admin"]),
        json!(["read", "catalog:write"]),
        json!(["orders:write"]),
        json!(["access:approve"]),
    ] {
        let answer = api
            .send(
                Method::POST,
                "/v1/api-keys",
                Some(&api.admin),
                Some(&json!({"name": "x", "scopes": scopes, "account": A})),
            )
            .await;
        assert_eq!(
            (answer.status, answer.body["code"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some("INVALID_ARGUMENT")),
            "{scopes}: {}",
            answer.body
        );
    }
    let answer = api
        .send(
            Method::POST,
            "/v1/api-keys",
            Some(&api.admin),
            Some(&json!({"name": "x", "scopes": ["read"], "account": "nobody"})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    let answer = api
        .send(
            Method::POST,
            "/v1/api-keys",
            Some(&a_token),
            Some(&json!({"name": "x", "scopes": ["read"], "account": A})),
        )
        .await;
    assert_eq!(
        answer.status,
        StatusCode::FORBIDDEN,
        "an account key makes no keys"
    );
    let keys = api.admin(Method::GET, "/v1/api-keys", None).await;
    let owners: Vec<&Value> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| &k["owner"])
        .collect();
    assert!(owners.contains(&&json!("tenant")));
    assert!(owners.contains(&&json!({ "account": A })));
}

#[tokio::test]
async fn scopes_are_checked_before_the_body_and_every_error_is_a_problem() {
    let api = Api::start().await;
    let (_, _, a_token) = seeded(&api).await;
    let reader = api
        .send(
            Method::POST,
            "/v1/api-keys",
            Some(&api.admin),
            Some(&json!({"name": "reader", "scopes": ["read"]})),
        )
        .await
        .body["token"]
        .as_str()
        .unwrap()
        .to_string();

    tracing::info!("A key without the scope gets 403 whatever its body.");
    for (token, path) in [
        (&reader, "/v1/orders".to_string()),
        (&reader, format!("/v1/accounts/{A}/subjects/x")),
        (&a_token, "/v1/orders".to_string()),
        (&a_token, format!("/v1/accounts/{B}/subjects/x")),
    ] {
        let method = if path.contains("subjects") {
            reqwest::Method::PUT
        } else {
            reqwest::Method::POST
        };
        let r = api
            .http
            .request(method, format!("{}{path}", api.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body("{\"not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
    }

    tracing::info!("Query, path and method errors are problem documents.");
    let admin = api.admin.clone();
    for (method, path, status, code) in [
        (
            Method::GET,
            "/v1/products?limit=abc",
            400,
            "INVALID_ARGUMENT",
        ),
        (Method::GET, "/v1/audit?after=-1", 400, "INVALID_ARGUMENT"),
        (
            Method::GET,
            "/v1/audit?colour=blue",
            400,
            "INVALID_ARGUMENT",
        ),
        (
            Method::GET,
            "/v1/accounts/%FF/subjects",
            400,
            "INVALID_ARGUMENT",
        ),
        (
            Method::GET,
            "/v1/accounts/acme/usage?feature=a%20b",
            400,
            "INVALID_ARGUMENT",
        ),
        (Method::PATCH, "/v1/products", 405, "METHOD_NOT_ALLOWED"),
        (Method::DELETE, "/v1/orders", 405, "METHOD_NOT_ALLOWED"),
        (Method::GET, "/v1/nowhere", 404, "NOT_FOUND"),
    ] {
        let answer = api.send(method.clone(), path, Some(&admin), None).await;
        assert_eq!(
            (answer.status.as_u16(), answer.body["code"].as_str()),
            (status, Some(code)),
            "{method} {path}: {}",
            answer.body
        );
        if status == 405 {
            assert!(
                answer.headers.contains_key("allow"),
                "405 says what is allowed"
            );
        }
    }
    let r = api
        .http
        .get(format!("{}/v1/products", api.base))
        .bearer_auth(&admin)
        .header("x-pad-1", "v".repeat(9 * 1024))
        .header("x-pad-2", "v".repeat(9 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "oversized headers below hyper's own limit get a problem"
    );
    assert_eq!(
        r.json::<Value>().await.unwrap()["code"],
        "HEADERS_TOO_LARGE"
    );
    let answer = api
        .send(
            Method::GET,
            "/v1/accounts/%FF/subjects",
            Some(&a_token),
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.body);
}
