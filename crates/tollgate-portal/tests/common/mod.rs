//! The portal and the REST API served over an in-memory origin on
//! 127.0.0.1:0, with a small catalog, two accounts and their portal users;
//! and a client that keeps cookies as a browser does.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tollgate_api::auth::issue_key;
use tollgate_api::{AppState, Clock, MemStore, OriginStore};
use tollgate_model::*;
use tollgate_origin::portal::{PortalRole, PortalUser};
use tollgate_origin::{Op, OriginCommand, OriginResponse, Scope};
use tollgate_portal::PortalConfig;
use tollgate_signing::SealKey;

pub const CUSTOMER: &str = "admin@acme.example";
pub const MEMBER: &str = "member@acme.example";
pub const OTHER: &str = "admin@globex.example";
pub const VENDOR: &str = "admin@vendor.example";
pub const PASSWORD: &str = "correct horse battery";

pub struct TestPortal {
    pub base: String,
    pub store: Arc<MemStore>,
    pub admin_token: String,
}

pub async fn commit(store: &MemStore, op: Op) {
    let response = store
        .write(OriginCommand {
            actor: "test".into(),
            at: UnixSeconds(1_700_000_000),
            reason: None,
            op,
        })
        .await
        .unwrap();
    assert!(
        !matches!(response, OriginResponse::Rejected(_)),
        "seeding: {response:?}"
    );
}

fn user(id: &str, role: PortalRole, account: Option<&str>, hash: &str) -> PortalUser {
    PortalUser {
        id: id.into(),
        name: format!("User {id}"),
        role,
        account: account.map(|a| AccountId::try_from(a.to_string()).unwrap()),
        password_hash: Some(hash.to_string()),
        oidc_subject: None,
        invite: None,
        failed_sign_ins: 0,
        locked_until: None,
        disabled: false,
        created_at: UnixSeconds(0),
        sessions: Vec::new(),
    }
}

/// Serves the REST API and the portal (as the origin node merges them).
pub async fn serve(config: PortalConfig) -> TestPortal {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    serve_on(listener, config).await
}

/// [`serve`] on a listener the caller bound (to know the address first).
pub async fn serve_on(listener: tokio::net::TcpListener, config: PortalConfig) -> TestPortal {
    let store = Arc::new(MemStore::default());
    let admin = issue_key("admin", [Scope::Admin].into(), UnixSeconds(0)).unwrap();
    commit(&store, Op::PutApiKey(admin.record.clone())).await;
    let keys = tollgate_api::licensing::OriginKeys::new(SealKey::generate().unwrap());
    keys.initialize(
        &*store,
        &tollgate_api::licensing::Actor {
            id: "bootstrap".into(),
            reason: None,
        },
        None,
        UnixSeconds(0),
    )
    .await
    .unwrap();
    let data: serde_json::Value = serde_json::json!({
        "product": {"id": "studio", "name": "Studio"},
        "feature": {"id": "export", "product": "studio", "name": "Export", "kind": "boolean"},
        "plan": {"id": "studio-pro", "product": "studio", "name": "Studio Pro", "tier": 2,
                 "features": [{"feature": "export"}]},
    });
    commit(
        &store,
        Op::PutProduct(serde_json::from_value(data["product"].clone()).unwrap()),
    )
    .await;
    commit(
        &store,
        Op::PutFeature(serde_json::from_value(data["feature"].clone()).unwrap()),
    )
    .await;
    commit(
        &store,
        Op::PutPlan(serde_json::from_value(data["plan"].clone()).unwrap()),
    )
    .await;
    for (id, name) in [("acme", "Acme"), ("globex", "Globex")] {
        commit(
            &store,
            Op::PutAccount(Account {
                id: AccountId::try_from(id.to_string()).unwrap(),
                name: name.into(),
                status: Default::default(),
            }),
        )
        .await;
        commit(
            &store,
            Op::Grant(
                serde_json::from_value(serde_json::json!({
                    "id": format!("{id}-pro"),
                    "account": id,
                    "grant": {"plan": "studio-pro"},
                    "valid_from": 1_672_531_200u64,
                }))
                .unwrap(),
            ),
        )
        .await;
    }
    let hash = tollgate_portal::hash_password(PASSWORD).unwrap();
    for u in [
        user(CUSTOMER, PortalRole::CustomerAdmin, Some("acme"), &hash),
        user(MEMBER, PortalRole::CustomerMember, Some("acme"), &hash),
        user(OTHER, PortalRole::CustomerAdmin, Some("globex"), &hash),
        user(VENDOR, PortalRole::VendorAdmin, None, &hash),
    ] {
        commit(&store, Op::PutPortalUser(u)).await;
    }
    let app_state = AppState {
        store: store.clone(),
        keys,
        metrics: None,
        status: None,
        rate: None,
        clock: Clock::system(),
    };
    let app =
        tollgate_api::router(app_state.clone()).merge(tollgate_portal::router(app_state, config));
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    TestPortal {
        base: format!("http://{addr}"),
        store,
        admin_token: admin.token,
    }
}

/// The portal's config in tests: plain HTTP (so no `Secure` cookies), and
/// a short lockout.
pub fn test_config() -> PortalConfig {
    PortalConfig {
        secure_cookies: false,
        lock_after: 3,
        lock_seconds: 3,
        ..PortalConfig::default()
    }
}

/// An answer as a test reads it.
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn location(&self) -> Option<&str> {
        self.headers.get("location").and_then(|v| v.to_str().ok())
    }

    /// The value of the first `name="csrf"` field.
    pub fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).expect("a form with a CSRF token") + marker.len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_string()
    }
}

/// A browser: keeps cookies, follows no redirects.
pub struct Browser {
    pub base: String,
    pub cookies: Mutex<BTreeMap<String, String>>,
    http: reqwest::Client,
}

impl Browser {
    pub fn new(base: &str) -> Browser {
        Browser {
            base: base.to_string(),
            cookies: Mutex::new(BTreeMap::new()),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn finish(&self, response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for set in headers.get_all("set-cookie") {
            let text = set.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            let expired = text.contains("Max-Age=0");
            let mut cookies = self.cookies.lock().unwrap();
            if expired {
                cookies.remove(name);
            } else {
                cookies.insert(name.to_string(), value.to_string());
            }
        }
        Answer {
            status,
            headers,
            body: response.text().await.unwrap(),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.finish(response).await
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Answer {
        self.post_with(path, form, &[]).await
    }

    pub async fn post_with(
        &self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(form);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        self.finish(response).await
    }

    /// Signs in through the form; the answer to the form's POST.
    pub async fn sign_in(&self, email: &str, password: &str) -> Answer {
        let form = self.get("/portal/sign-in").await;
        assert_eq!(form.status, 200);
        let csrf = form.csrf();
        self.post(
            "/portal/sign-in",
            &[
                ("email", email),
                ("password", password),
                ("csrf", &csrf),
                ("next", ""),
            ],
        )
        .await
    }

    /// The session cookie's value, if signed in.
    pub fn session(&self) -> Option<String> {
        self.cookies.lock().unwrap().get("tg_session").cloned()
    }
}
