//! Routes, and the helpers every route uses: bounded JSON bodies mapped to
//! problems, validated path ids, one way to commit a command, one way to
//! read and to list.

mod access_requests;
mod catalog;
mod credentials;
mod entitlements;
mod licenses;
mod orders;
mod origin_admin;
mod portal_users;
mod regions;
mod usage;

use crate::auth::{authorize, Caller, Policy};
pub use crate::openapi::{AccountKeys, Doc, Method, SchemaRef};
use crate::problem::Problem;
use crate::store::OriginStore;
pub use crate::wire::WriteResult;
use crate::{
    AppState, BODY_BYTES_MAX, HEADERS_MAX, HEADER_BYTES_MAX, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX,
    REASON_HEADER_LEN_MAX,
};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tollgate_model::ModelError;
use tollgate_origin::{Op, OriginCommand, OriginResponse, RejectCode};

/// One route: the handler and its documentation, side by side.
pub struct Route<S> {
    pub method: Method,
    pub path: String,
    pub handler: axum::routing::MethodRouter<AppState<S>>,
    pub doc: Doc,
}

pub fn route<S>(
    method: Method,
    path: impl Into<String>,
    handler: axum::routing::MethodRouter<AppState<S>>,
    doc: Doc,
) -> Route<S> {
    Route {
        method,
        path: path.into(),
        handler,
        doc,
    }
}

const PAGE_QUERY: &[(&str, &str)] = &[
    ("after", "Return items after this id (from `next_after`)."),
    ("limit", "Items per page, 1..=500 (default 100)."),
];

/// Every route of the API.
pub fn table<S: OriginStore>() -> Vec<Route<S>> {
    let mut routes = vec![route(
        Method::Get,
        "/healthz",
        get(|| async { "ok" }),
        Doc {
            ok: None,
            ..Doc::new("health", "Liveness: the process answers HTTP.", None)
        },
    )];
    routes.extend(catalog::routes());
    routes.extend(credentials::routes());
    routes.extend(entitlements::routes());
    routes.extend(licenses::routes());
    routes.extend(orders::routes());
    routes.extend(access_requests::routes());
    routes.extend(origin_admin::routes());
    routes.extend(usage::routes());
    routes.extend(regions::routes());
    routes.extend(portal_users::routes());
    routes.push(route(
        Method::Get,
        "/metrics",
        get(metrics_text::<S>),
        Doc {
            ok: None,
            ..Doc::new(
                "health",
                "Prometheus metrics of this node (text format, no authentication; keep the port private).",
                None,
            )
        },
    ));
    routes.push(route(
        Method::Get,
        "/v1/status",
        get(status_json::<S>),
        Doc {
            ok: None,
            ..Doc::new(
                "health",
                "This node's state: id, Raft role, term and leader, head revision, and its TLS \
                 (mode, identity, seconds until its certificate and CA expire).",
                Some(tollgate_origin::Scope::Read),
            )
        },
    ));
    routes.push(route(
        Method::Get,
        "/v1/openapi.json",
        get(openapi_json),
        Doc {
            ok: None,
            ..Doc::new(
                "meta",
                "This document (also checked in as crates/tollgate-api/openapi.json).",
                Some(tollgate_origin::Scope::Read),
            )
            .account_keys(AccountKeys::Any)
        },
    ));
    routes
}

async fn metrics_text<S: OriginStore>(
    axum::extract::State(state): axum::extract::State<AppState<S>>,
) -> Response {
    match &state.metrics {
        Some(render) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            render(),
        )
            .into_response(),
        None => Problem::not_found("metrics are not enabled on this node").into_response(),
    }
}

async fn status_json<S: OriginStore>(
    axum::extract::State(state): axum::extract::State<AppState<S>>,
) -> Result<Json<serde_json::Value>, Problem> {
    match &state.status {
        Some(render) => Ok(Json(render())),
        None => Err(Problem::not_found("status is not enabled on this node")),
    }
}

async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(crate::openapi_document())
}

pub fn router<S: OriginStore>(state: AppState<S>) -> Router {
    let mut by_path: std::collections::BTreeMap<String, axum::routing::MethodRouter<AppState<S>>> =
        std::collections::BTreeMap::new();
    for r in table::<S>() {
        // Every route, whoever declared it, is authorized by the same layer
        // from its own table entry; `route_layer` leaves a 405 alone.
        assert!(
            r.doc.account_keys != AccountKeys::OwnAccount
                || r.path
                    .contains(&format!("{{{}}}", crate::openapi::ACCOUNT_PARAM)),
            "{} is for an account's own key but names no {{account}}",
            r.path
        );
        let policy = Policy {
            scope: r.doc.scope,
            account_keys: r.doc.account_keys,
        };
        let handler = r.handler.route_layer(axum::middleware::from_fn_with_state(
            (state.clone(), policy),
            authorize::<S>,
        ));
        let merged = match by_path.remove(&r.path) {
            Some(existing) => existing.merge(handler),
            None => handler,
        };
        by_path.insert(r.path, merged);
    }
    let mut router = Router::new();
    for (path, handler) in by_path {
        router = router.route(&path, handler);
    }
    router
        .fallback(|| async { Problem::not_found("no such endpoint") })
        .layer(axum::middleware::map_response(problem_for_every_error))
        .layer(axum::middleware::from_fn(bounded_headers))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

/// 431 as a problem document for a request with more than
/// [`HEADERS_MAX`] headers or [`HEADER_BYTES_MAX`] bytes of them. hyper
/// refuses past its own limits first, with an empty 431 of its own; a
/// server that sets hyper's limits above these gets this answer instead.
async fn bounded_headers(request: Request, next: axum::middleware::Next) -> Response {
    let headers = request.headers();
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if headers.len() > HEADERS_MAX || bytes > HEADER_BYTES_MAX {
        return Problem::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "HEADERS_TOO_LARGE",
            format!(
                "at most {HEADERS_MAX} headers and {HEADER_BYTES_MAX} bytes of them; this request has {} and {bytes}",
                headers.len()
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// Longest body of a non-problem error kept as the problem's detail.
const ERROR_DETAIL_BYTES_MAX: usize = 1024;

/// Turns an error that is not yet a problem document (a 405 from the
/// router, a rejection of an extractor a handler used directly) into one,
/// keeping its status and headers (`Allow`): every error the API answers is
/// `application/problem+json` with a stable code.
async fn problem_for_every_error(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, ERROR_DETAIL_BYTES_MAX)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let code = match status {
        StatusCode::BAD_REQUEST => "INVALID_ARGUMENT",
        StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
        StatusCode::FORBIDDEN => "FORBIDDEN",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::METHOD_NOT_ALLOWED => "METHOD_NOT_ALLOWED",
        StatusCode::CONFLICT => "CONFLICT",
        StatusCode::PAYLOAD_TOO_LARGE => "PAYLOAD_TOO_LARGE",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "UNSUPPORTED_MEDIA_TYPE",
        StatusCode::UNPROCESSABLE_ENTITY => "INVALID_ARGUMENT",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "HEADERS_TOO_LARGE",
        StatusCode::TOO_MANY_REQUESTS => "RESOURCE_EXHAUSTED",
        StatusCode::SERVICE_UNAVAILABLE => "UNAVAILABLE",
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => "DEADLINE_EXCEEDED",
        s if s.is_client_error() => "INVALID_ARGUMENT",
        _ => "INTERNAL",
    };
    let detail = if text.is_empty() {
        match status {
            StatusCode::METHOD_NOT_ALLOWED => "this endpoint does not take that method".to_string(),
            _ => status.canonical_reason().unwrap_or("error").to_string(),
        }
    } else {
        text
    };
    let problem = Problem::new(status, code, detail).into_response();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.extend(
        problem
            .headers()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone())),
    );
    Response::from_parts(parts, problem.into_body())
}

/// Path parameters whose rejections are problem documents (400, naming
/// what is wrong), never axum's plain text.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(match &rejection {
                PathRejection::FailedToDeserializePathParams(_) => {
                    Problem::bad_request(format!("path: {}", rejection.body_text()))
                }
                _ => Problem::internal(format!("path: {}", rejection.body_text())),
            }),
        }
    }
}

/// A query string whose rejections are problem documents (400 naming the
/// parameter: `?limit=abc`, an unknown parameter), never axum's plain text.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Problem> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(match &rejection {
                QueryRejection::FailedToDeserializeQueryString(_) => {
                    Problem::bad_request(format!("query: {}", rejection.body_text()))
                }
                _ => Problem::bad_request(rejection.body_text()),
            }),
        }
    }
}

/// A JSON body whose rejections are problem documents: 400 for malformed
/// JSON, 413 for an oversized body, 415 without a JSON content type, 422
/// for a body of the wrong shape (unknown field, wrong type, invalid id).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Problem> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(match &rejection {
                JsonRejection::JsonSyntaxError(_) => Problem::new(
                    StatusCode::BAD_REQUEST,
                    "MALFORMED_BODY",
                    rejection.body_text(),
                ),
                JsonRejection::JsonDataError(_) => Problem::invalid(rejection.body_text()),
                JsonRejection::MissingJsonContentType(_) => Problem::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UNSUPPORTED_MEDIA_TYPE",
                    "expected Content-Type: application/json",
                ),
                _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PAYLOAD_TOO_LARGE",
                    format!("the body exceeds {BODY_BYTES_MAX} bytes"),
                ),
                _ => Problem::bad_request(rejection.body_text()),
            }),
        }
    }
}

/// Parses a path segment into a validated id, or 400 naming it.
pub fn path_id<T: TryFrom<String, Error = ModelError>>(raw: String) -> Result<T, Problem> {
    T::try_from(raw).map_err(|e| Problem::bad_request(format!("path: {e}")))
}

pub(crate) fn reason(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    match headers.get("x-tollgate-reason") {
        None => Ok(None),
        Some(v) if v.len() > REASON_HEADER_LEN_MAX => Err(Problem::bad_request(format!(
            "X-Tollgate-Reason exceeds {REASON_HEADER_LEN_MAX} bytes"
        ))),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.to_string()))
            .map_err(|_| Problem::bad_request("X-Tollgate-Reason must be visible ASCII")),
    }
}

/// Commits `op` as `caller`, mapping the outcome to a response.
pub async fn commit<S: OriginStore>(
    state: &AppState<S>,
    caller: &Caller,
    headers: &HeaderMap,
    op: Op,
) -> Result<Response, Problem> {
    let command = OriginCommand {
        actor: caller.key.id.clone(),
        at: state.clock.now(),
        reason: reason(headers)?,
        op,
    };
    let result = match state.store.write(command).await? {
        OriginResponse::Committed {
            revision,
            entitlements,
        } => WriteResult {
            revision,
            unchanged: false,
            entitlements,
            note: None,
        },
        // Quota leases come from regions over gRPC, not from REST.
        OriginResponse::Leased { revision, .. } => WriteResult {
            revision,
            unchanged: false,
            entitlements: Vec::new(),
            note: None,
        },
        OriginResponse::Unchanged {
            revision,
            entitlements,
            note,
        } => WriteResult {
            revision,
            unchanged: true,
            entitlements,
            note: Some(note),
        },
        OriginResponse::Rejected(r) => {
            return Err(match r.code {
                RejectCode::NotFound => Problem::not_found(r.message),
                RejectCode::Conflict => Problem::conflict(r.message),
                RejectCode::Invalid => Problem::invalid(r.message),
            })
        }
    };
    Ok((
        [("x-tollgate-revision", result.revision.to_string())],
        Json(result),
    )
        .into_response())
}

/// Reads one object.
pub fn read<S: OriginStore, T: DeserializeOwned>(
    state: &AppState<S>,
    key: &[u8],
    what: &str,
) -> Result<T, Problem> {
    match state.store.get(key)? {
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Problem::internal(format!("stored {what} is unreadable: {e}"))),
        None => Err(Problem::not_found(format!("unknown {what}"))),
    }
}

/// `?after=<cursor>&limit=<n>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub after: Option<String>,
    pub limit: Option<usize>,
}

/// One page of a list.
#[derive(Debug, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; absent on the last page.
    pub next_after: Option<String>,
}

/// Lists objects under `prefix`, paginated by the key suffix.
pub fn list<S: OriginStore, T: DeserializeOwned>(
    state: &AppState<S>,
    prefix: &str,
    page: &PageQuery,
) -> Result<Page<T>, Problem> {
    let limit = page.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    if limit == 0 || limit > PAGE_LIMIT_MAX {
        return Err(Problem::bad_request(format!(
            "limit must be 1..={PAGE_LIMIT_MAX}"
        )));
    }
    let after = page
        .after
        .as_ref()
        .map(|a| format!("{prefix}{a}").into_bytes());
    // One more than asked tells whether there is a next page.
    let entries = state
        .store
        .scan(prefix.as_bytes(), after.as_deref(), limit + 1)?;
    let more = entries.len() > limit;
    let mut items = Vec::with_capacity(limit.min(entries.len()));
    let mut last = None;
    for (key, value) in entries.into_iter().take(limit) {
        items.push(serde_json::from_slice(&value).map_err(|e| {
            Problem::internal(format!("stored value under {prefix} is unreadable: {e}"))
        })?);
        last = Some(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
    }
    Ok(Page {
        items,
        next_after: if more { last } else { None },
    })
}
