//! The portal the origin serves at `/portal`: customer self-service and the
//! vendor's console, as server-rendered HTML.
//!
//! - **Who may call.** Every page but sign-in, the static files and the CSP
//!   report needs a session: a cookie whose token's SHA-256 names a
//!   [`tollgate_origin::portal::PortalSession`] in the origin's replicated
//!   state. A session's user acts through the REST API, in process, as a
//!   key that exists only for the request ([`tollgate_api::auth::PortalCaller`]):
//!   the scopes of the user's role, owned by the user's account or the
//!   tenant. So a customer's session reaches exactly what that account's own
//!   API key reaches, checked by the same code, and every change is in the
//!   audit log as `portal:<user>`. A page of another account answers 404.
//! - **Forms.** Every POST carries the session's CSRF token and is refused
//!   (403) without it, or when the browser says it came from another site.
//! - **Headers.** Every response carries a Content-Security-Policy that
//!   allows no inline script or style, no framing and no foreign form
//!   target; pages are `no-store`.
//! - **Assets.** One CSS and one small JavaScript file, compiled into the
//!   binary; the pages work without the script.

pub mod api;
mod auth;
pub mod chart;
mod customer;
pub mod oidc;
mod regions;
mod usage;
mod vendor;
mod web;
mod words;

pub use auth::{hash_password, PasswordError};
pub use web::{COOKIE_SESSION, COOKIE_SESSION_INSECURE, CSP};

use axum::Router;
use std::sync::Arc;
use tollgate_api::{AppState, OriginStore};

/// Where the portal is mounted.
pub const BASE: &str = "/portal";

/// How the portal behaves; `Default` is what `tollgate serve` uses.
#[derive(Debug, Clone)]
pub struct PortalConfig {
    /// Cookies are `Secure` and `__Host-` (the origin serves TLS). Off only
    /// for `--insecure-plaintext`.
    pub secure_cookies: bool,
    /// How long a session lasts from sign-in.
    pub session_seconds: u64,
    /// Wrong passwords in a row before a user is locked out...
    pub lock_after: u32,
    /// ...for this long.
    pub lock_seconds: u64,
    /// Password hashes computed at once (each takes 19 MiB and tens of ms);
    /// more sign-ins wait, and past [`PortalConfig::hash_wait_ms`] get 503.
    pub hash_concurrency: usize,
    pub hash_wait_ms: u64,
    /// OIDC sign-in for the vendor's staff, if configured.
    pub oidc: Option<oidc::OidcConfig>,
    /// A CA bundle (PEM) the OIDC client trusts besides the system's.
    pub oidc_ca_path: Option<std::path::PathBuf>,
    /// How long an invitation link stays valid.
    pub invite_seconds: u64,
}

impl Default for PortalConfig {
    fn default() -> Self {
        PortalConfig {
            secure_cookies: true,
            session_seconds: 8 * 3600,
            lock_after: 5,
            lock_seconds: 15 * 60,
            hash_concurrency: 2,
            hash_wait_ms: 2_000,
            oidc: None,
            oidc_ca_path: None,
            invite_seconds: 7 * 24 * 3600,
        }
    }
}

/// What every portal handler reaches.
pub struct Portal<S> {
    pub app: AppState<S>,
    pub api: api::Api,
    pub config: PortalConfig,
    hashing: tokio::sync::Semaphore,
    oidc: tokio::sync::OnceCell<oidc::OidcClient>,
}

pub(crate) type Shared<S> = Arc<Portal<S>>;

/// The portal as a router to merge into the origin's REST router; its
/// routes all start with [`BASE`].
pub fn router<S: OriginStore>(app: AppState<S>, config: PortalConfig) -> Router {
    let portal = Arc::new(Portal {
        api: api::Api::new(tollgate_api::router(app.clone())),
        hashing: tokio::sync::Semaphore::new(config.hash_concurrency.max(1)),
        oidc: tokio::sync::OnceCell::new(),
        app,
        config,
    });
    let routes = Router::new()
        .merge(auth::routes::<S>())
        .merge(customer::routes::<S>())
        .merge(usage::routes::<S>())
        .merge(vendor::routes::<S>())
        .merge(web::routes::<S>())
        .fallback(web::not_found)
        .with_state(portal);
    Router::new()
        .nest(BASE, routes)
        // `/portal/` (as `dev` prints it) is `/portal`: nesting matches only
        // the latter.
        .route(
            "/portal/",
            axum::routing::get(|| async { axum::response::Redirect::to(BASE) }),
        )
        .layer(axum::middleware::from_fn(web::security_headers))
}
