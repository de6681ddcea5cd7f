//! The origin's REST API: JSON over HTTP at `/v1`, for CRMs, billing
//! systems, admin tools and the customer portal.
//!
//! - Every endpoint but `/healthz`, `/metrics` and the public key set needs
//!   an API key (`Authorization: Bearer tg_...`) with the right scope: 401
//!   without a valid key, 403 without the scope, both before the body is
//!   read. A customer account's key reaches only its own account
//!   ([`openapi::AccountKeys`], per route); see [`auth`].
//! - Every write goes through the origin's Raft log as one
//!   [`tollgate_origin::OriginCommand`] stamped with the caller's key id, the
//!   time and the `X-Tollgate-Reason` header; it commits under the next
//!   revision (returned in the body and the `X-Tollgate-Revision` header) or
//!   changes nothing.
//! - Errors are `application/problem+json` with a stable `code`.
//! - Bodies are bounded ([`BODY_BYTES_MAX`]); lists are paginated.

pub mod app_credentials;
pub mod auth;
pub mod licensing;
pub mod openapi;
pub mod problem;
mod routes;
pub mod store;
mod wire;

use axum::Router;
use std::sync::Arc;
pub use tollgate_clock::Clock;

pub use routes::Page;
pub use store::{MemStore, OriginStore, StoreError};
pub use wire::WriteResult;

/// Largest request body accepted, in bytes.
pub const BODY_BYTES_MAX: usize = 1024 * 1024;
/// Most items one list page returns.
pub const PAGE_LIMIT_MAX: usize = 500;
/// Items per page when the caller does not say.
pub const PAGE_LIMIT_DEFAULT: usize = 100;
/// Most request headers accepted.
pub const HEADERS_MAX: usize = 100;
/// Most bytes of request headers (names and values) accepted.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;
/// Longest `X-Tollgate-Reason`, in bytes.
pub const REASON_HEADER_LEN_MAX: usize = tollgate_origin::REASON_LEN_MAX;

/// What every handler can reach.
pub struct AppState<S> {
    pub store: Arc<S>,
    /// The origin's signing keys: licenses and region certificates are
    /// signed with them, and their public half is served without
    /// authentication.
    pub keys: licensing::OriginKeys,
    /// Renders the node's metrics for `/metrics` (Prometheus text); `None`:
    /// the endpoint answers 404.
    pub metrics: Option<MetricsRenderer>,
    /// Renders the node's state for `/v1/status` (role, term, leader, head,
    /// TLS); `None`: the endpoint answers 404.
    pub status: Option<StatusRenderer>,
    /// Counts a request of an authenticated API key (by its id) against the
    /// key's rate: `Err(seconds)` to wait past it (429, `Retry-After`).
    /// `None`: no rate limit.
    pub rate: Option<RateCheck>,
    /// The wall clock every handler reads (stamps, expiry, usage days): the
    /// node's, handed from outside.
    pub clock: Clock,
}

/// See [`AppState::rate`].
pub type RateCheck = Arc<dyn Fn(&str) -> Result<(), u64> + Send + Sync>;

/// Renders a node's state as JSON.
pub type StatusRenderer = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Renders metrics in the Prometheus text format.
pub type MetricsRenderer = Arc<dyn Fn() -> String + Send + Sync>;

impl<S> Clone for AppState<S> {
    fn clone(&self) -> Self {
        AppState {
            store: self.store.clone(),
            keys: self.keys.clone(),
            metrics: self.metrics.clone(),
            status: self.status.clone(),
            rate: self.rate.clone(),
            clock: self.clock.clone(),
        }
    }
}

/// The OpenAPI document of the whole API.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    let table = routes::table::<MemStore>();
    openapi::document(table.iter().map(|r| (r.path.as_str(), r.method, &r.doc)))
}

/// The paths and methods of every route, for checking them against the
/// document.
pub fn route_list() -> Vec<(String, &'static str)> {
    routes::table::<MemStore>()
        .into_iter()
        .map(|r| {
            let method = match r.method {
                routes::Method::Get => "get",
                routes::Method::Put => "put",
                routes::Method::Post => "post",
                routes::Method::Delete => "delete",
            };
            (r.path, method)
        })
        .collect()
}

/// The whole API as an axum router.
pub fn router<S: OriginStore>(state: AppState<S>) -> Router {
    routes::router(state)
}
