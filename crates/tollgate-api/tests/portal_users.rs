//! `/v1/portal-users` over real HTTP on 127.0.0.1:0, backed by the origin's
//! state machine in memory: a user created with an invitation whose link
//! the portal accepts (its token hashes to what is stored), 409 for a user
//! who exists, the role and account rules, lists that show no hash, token
//! or session, pages and the account filter, a fresh invitation that keeps
//! the password, removal, an account's key refused, and every change
//! audited with the key as its actor.

mod common;

use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use tollgate_api::{MemStore, OriginStore};
use tollgate_model::UnixSeconds;
use tollgate_origin::portal::PortalUser;
use tollgate_origin::{Op, OriginCommand, OriginResponse};
use tollgate_signing::digest::sha256_hex;

const WEEK_SECONDS: i64 = 7 * 24 * 3600;

/// The server's clock (the tests serve the API with the system clock).
fn now_secs() -> i64 {
    tollgate_api::Clock::system().now_secs()
}

struct Api {
    base: String,
    http: Client,
    admin: String,
    store: Arc<MemStore>,
}

impl Api {
    async fn start() -> Api {
        let store = Arc::new(MemStore::default());
        let (base, admin) = common::serve(store.clone()).await;
        Api {
            base,
            http: Client::new(),
            admin,
            store,
        }
    }

    /// Any request as `token`: the status and the body (every error a
    /// problem document with a code).
    async fn send(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value, String) {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if !status.is_success() {
            assert!(
                value["code"].is_string(),
                "{method} {path}: an error is a problem with a code: {status} {text}"
            );
        }
        (status, value, text)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, value, _) = self.send(&self.admin, method, path, body).await;
        (status, value)
    }

    /// The stored user, as the portal reads it.
    fn stored(&self, id: &str) -> PortalUser {
        let bytes = self
            .store
            .get(&tollgate_origin::keys::portal_user(id))
            .unwrap()
            .unwrap_or_else(|| panic!("portal user {id} is stored"));
        serde_json::from_slice(&bytes).unwrap()
    }

    /// Every item of `/v1/portal-users<query>`, following the pages.
    async fn list_all(&self, query: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let joiner = if query.is_empty() { "?" } else { "&" };
            let path = match &after {
                Some(a) => format!("/v1/portal-users{query}{joiner}limit=1&after={a}"),
                None => format!("/v1/portal-users{query}{joiner}limit=1"),
            };
            let (status, page) = self.admin(Method::GET, &path, None).await;
            assert_eq!(status, StatusCode::OK, "{path}: {page}");
            let page_items = page["items"].as_array().unwrap();
            assert!(page_items.len() <= 1, "limit=1: {page}");
            items.extend(page_items.iter().cloned());
            match page["next_after"].as_str() {
                Some(next) => after = Some(next.replace('@', "%40")),
                None => return items,
            }
        }
    }
}

/// The token of an invitation path, checked for its shape.
fn token_of(path: &str, id: &str) -> String {
    let want = format!("/portal/invite?user={}&token=", id.replace('@', "%40"));
    let token = path
        .strip_prefix(&want)
        .unwrap_or_else(|| panic!("{path} starts with {want}"));
    assert_eq!(token.len(), 43, "32 bytes, base64url without padding");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{token}"
    );
    token.to_string()
}

#[tokio::test]
async fn portal_users_are_created_listed_reinvited_and_removed() {
    let api = Api::start().await;
    let admin_key_id = api.admin[3..].split('.').next().unwrap().to_string();
    let (status, _) = api
        .admin(
            Method::PUT,
            "/v1/accounts/acme",
            Some(json!({"id": "acme", "name": "Acme"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    tracing::info!("A vendor administrator, created with an invitation the portal accepts.");
    let before = now_secs();
    let (status, created) = api
        .admin(
            Method::POST,
            "/v1/portal-users",
            Some(json!({"email": " Ops@Example.com ", "name": "Ops", "role": "vendor_admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["id"], "ops@example.com");
    let token = token_of(created["invite_path"].as_str().unwrap(), "ops@example.com");
    let expires_at = created["expires_at"].as_i64().unwrap();
    assert!(
        (before + WEEK_SECONDS..=now_secs() + WEEK_SECONDS).contains(&expires_at),
        "valid 7 days: {expires_at}"
    );
    let stored = api.stored("ops@example.com");
    let invite = stored.invite.as_ref().expect("an invitation is stored");
    assert_eq!(
        invite.token_sha256,
        sha256_hex(token.as_bytes()),
        "the link's token is stored as its SHA-256 hex, as the portal checks it"
    );
    assert_eq!(invite.expires_at, UnixSeconds(expires_at));
    assert_eq!(invite.invited_by, admin_key_id);
    assert_eq!(stored.password_hash, None);

    tracing::info!("A user who exists is a conflict, in any case of the address.");
    let (status, problem) = api
        .admin(
            Method::POST,
            "/v1/portal-users",
            Some(json!({"email": "ops@example.com", "name": "Again", "role": "vendor_support"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    assert_eq!(problem["code"], "CONFLICT");
    assert_eq!(
        api.stored("ops@example.com").invite.unwrap().token_sha256,
        sha256_hex(token.as_bytes()),
        "the first invitation still stands"
    );

    tracing::info!("The role and account rules: refused with nothing written.");
    for (body, why) in [
        (
            json!({"email": "a@example.com", "name": "A", "role": "vendor_admin", "account": "acme"}),
            "a vendor role belongs to no account",
        ),
        (
            json!({"email": "b@example.com", "name": "B", "role": "customer_admin"}),
            "a customer role needs its account",
        ),
        (
            json!({"email": "not-an-address", "name": "C", "role": "customer_admin", "account": "acme"}),
            "user id must be an e-mail address",
        ),
        (
            json!({"email": "d@example.com", "name": " ", "role": "customer_admin", "account": "acme"}),
            "user name must be",
        ),
    ] {
        let (status, problem) = api
            .admin(Method::POST, "/v1/portal-users", Some(body.clone()))
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        assert!(
            problem["detail"].as_str().unwrap().contains(why),
            "{body}: {problem}"
        );
    }
    let (status, problem) = api
        .admin(
            Method::POST,
            "/v1/portal-users",
            Some(json!({"email": "e@example.com", "name": "E", "role": "owner"})),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an unknown role: {problem}"
    );

    tracing::info!("A customer member of acme.");
    let (status, member) = api
        .admin(
            Method::POST,
            "/v1/portal-users",
            Some(
                json!({"email": "mia@acme.example", "name": "Mia", "role": "customer_member",
                "account": "acme"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{member}");
    let member_token = token_of(member["invite_path"].as_str().unwrap(), "mia@acme.example");

    tracing::info!("The list: both users, invited, and no hash, token or session in it.");
    let (status, page, text) = api
        .send(&api.admin, Method::GET, "/v1/portal-users", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["next_after"], Value::Null);
    let items = page["items"].as_array().unwrap();
    let ids: Vec<&str> = items.iter().map(|u| u["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["mia@acme.example", "ops@example.com"], "in id order");
    assert_eq!(items[0]["role"], "customer_member");
    assert_eq!(items[0]["account"], "acme");
    assert_eq!(items[1]["role"], "vendor_admin");
    assert_eq!(items[1]["account"], Value::Null);
    for item in items {
        assert_eq!(item["state"], "invited", "{item}");
        assert!(item["invite_expires_at"].is_i64(), "{item}");
    }
    for secret in [
        token.clone(),
        member_token.clone(),
        sha256_hex(token.as_bytes()),
        sha256_hex(member_token.as_bytes()),
    ] {
        assert!(!text.contains(&secret), "the list leaks {secret}: {text}");
    }
    for word in ["hash", "token", "session", "argon2", "invited_by"] {
        assert!(!text.contains(word), "the list names {word}: {text}");
    }

    tracing::info!("Pages of one cover every user once; the account filter.");
    let all = api.list_all("").await;
    assert_eq!(all.len(), 2);
    assert_eq!(all[0]["id"], "mia@acme.example");
    assert_eq!(all[1]["id"], "ops@example.com");
    let acme = api.list_all("?account=acme").await;
    assert_eq!(acme.len(), 1);
    assert_eq!(acme[0]["id"], "mia@acme.example");
    let (status, page) = api
        .admin(Method::GET, "/v1/portal-users?account=globex", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["items"], json!([]));
    for bad in [
        "/v1/portal-users?limit=0",
        "/v1/portal-users?limit=501",
        "/v1/portal-users?account=a%20b",
        "/v1/portal-users?role=x",
    ] {
        let (status, problem) = api.admin(Method::GET, bad, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {problem}");
    }

    tracing::info!("A fresh invitation keeps the password until it is accepted.");
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo";
    let outcome = api
        .store
        .write(OriginCommand {
            actor: "portal:ops@example.com".into(),
            at: UnixSeconds(now_secs()),
            reason: None,
            op: Op::SetPortalPassword {
                user: "ops@example.com".into(),
                password_hash: hash.into(),
                keep_session: None,
            },
        })
        .await
        .unwrap();
    assert!(
        matches!(outcome, OriginResponse::Committed { .. }),
        "{outcome:?}"
    );
    let (status, again) = api
        .admin(
            Method::POST,
            "/v1/portal-users/ops@example.com/invite",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    let new_token = token_of(again["invite_path"].as_str().unwrap(), "ops@example.com");
    assert_ne!(new_token, token);
    let stored = api.stored("ops@example.com");
    assert_eq!(stored.password_hash.as_deref(), Some(hash));
    assert_eq!(
        stored.invite.unwrap().token_sha256,
        sha256_hex(new_token.as_bytes())
    );
    let (_, page, text) = api
        .send(&api.admin, Method::GET, "/v1/portal-users", None)
        .await;
    let ops = &page["items"][1];
    assert_eq!(ops["state"], "active", "{ops}");
    assert_eq!(ops["invite_expires_at"], again["expires_at"]);
    assert!(!text.contains("argon2id"), "{text}");
    let (status, _) = api
        .admin(
            Method::POST,
            "/v1/portal-users/nobody@example.com/invite",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = api
        .admin(Method::POST, "/v1/portal-users/not-an-id/invite", None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    tracing::info!("An account's key reaches none of it.");
    let (status, key) = api
        .admin(
            Method::POST,
            "/v1/api-keys",
            Some(
                json!({"name": "acme portal", "scopes": ["read", "accounts:write"],
                "account": "acme"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{key}");
    let account_token = key["token"].as_str().unwrap();
    for (method, path, body) in [
        (Method::GET, "/v1/portal-users?account=acme", None),
        (
            Method::POST,
            "/v1/portal-users",
            Some(
                json!({"email": "x@acme.example", "name": "X", "role": "customer_admin",
                "account": "acme"}),
            ),
        ),
        (
            Method::POST,
            "/v1/portal-users/mia@acme.example/invite",
            None,
        ),
        (Method::DELETE, "/v1/portal-users/mia@acme.example", None),
    ] {
        let (status, problem, _) = api.send(account_token, method.clone(), path, body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {problem}");
    }
    assert!(
        api.stored("mia@acme.example").invite.is_some(),
        "still there"
    );

    tracing::info!("Removal: 404 for an unknown user, then gone from the list.");
    let (status, problem) = api
        .admin(Method::DELETE, "/v1/portal-users/nobody@example.com", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    let (status, done) = api
        .admin(Method::DELETE, "/v1/portal-users/mia@acme.example", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert!(api.list_all("?account=acme").await.is_empty());
    assert_eq!(api.list_all("").await.len(), 1);

    tracing::info!("Every change is audited with the API key as its actor.");
    let (_, audit) = api.admin(Method::GET, "/v1/audit?limit=500", None).await;
    let portal: Vec<(String, String, String)> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["action"]
                .as_str()
                .is_some_and(|a| a.starts_with("portal_user."))
        })
        .map(|r| {
            (
                r["action"].as_str().unwrap().to_string(),
                r["target"].as_str().unwrap().to_string(),
                r["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let key = admin_key_id.as_str();
    let want: Vec<(String, String, String)> = [
        ("portal_user.create", "portal-user/ops@example.com", key),
        ("portal_user.create", "portal-user/mia@acme.example", key),
        (
            "portal_user.set_password",
            "portal-user/ops@example.com",
            "portal:ops@example.com",
        ),
        ("portal_user.put", "portal-user/ops@example.com", key),
        ("portal_user.delete", "portal-user/mia@acme.example", key),
    ]
    .iter()
    .map(|(a, t, k)| (a.to_string(), t.to_string(), k.to_string()))
    .collect();
    assert_eq!(portal, want);
}

#[tokio::test]
async fn a_disabled_user_gets_no_invitation() {
    let api = Api::start().await;
    let (status, _) = api
        .admin(
            Method::POST,
            "/v1/portal-users",
            Some(json!({"email": "gone@example.com", "name": "Gone", "role": "vendor_support"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut user = api.stored("gone@example.com");
    user.disabled = true;
    let outcome = api
        .store
        .write(OriginCommand {
            actor: "portal:admin@example.com".into(),
            at: UnixSeconds(now_secs()),
            reason: None,
            op: Op::PutPortalUser(user),
        })
        .await
        .unwrap();
    assert!(
        matches!(outcome, OriginResponse::Committed { .. }),
        "{outcome:?}"
    );
    let (status, problem) = api
        .admin(
            Method::POST,
            "/v1/portal-users/gone@example.com/invite",
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let (_, page) = api.admin(Method::GET, "/v1/portal-users", None).await;
    assert_eq!(page["items"][0]["state"], "disabled");
}
