//! The REST API, called in process as the signed-in user: the portal reads
//! and changes nothing the user's own API key could not.

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tollgate_api::auth::{Caller, PortalCaller};
use tower::ServiceExt;

/// Largest API answer the portal reads, in bytes.
const ANSWER_BYTES_MAX: usize = 32 * 1024 * 1024;

/// What went wrong with a call, as the portal shows it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 404, and 403 too: a page never says that something it may not show
    /// exists.
    #[error("not found: {0}")]
    NotFound(String),
    /// 400, 409, 422: the user's input or the state refused it; the detail
    /// is shown.
    #[error("{0}")]
    Refused(String),
    /// 429 and 503: try again.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
}

#[derive(Clone)]
pub struct Api {
    router: Router,
}

impl Api {
    pub fn new(router: Router) -> Api {
        Api { router }
    }

    /// GET `path` as `caller`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        caller: &Caller,
        path: &str,
    ) -> Result<T, ApiError> {
        let bytes = self.call(caller, Method::GET, path, None, None).await?;
        decode(path, &bytes)
    }

    /// `method` `path` with a JSON body as `caller`, recording `reason`.
    pub async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        caller: &Caller,
        method: Method,
        path: &str,
        body: Option<&B>,
        reason: Option<&str>,
    ) -> Result<T, ApiError> {
        let body = body
            .map(|b| {
                serde_json::to_vec(b)
                    .map_err(|e| ApiError::Internal(format!("encoding a request: {e}")))
            })
            .transpose()?;
        let bytes = self.call(caller, method, path, body, reason).await?;
        decode(path, &bytes)
    }

    /// [`Api::send`] for a change whose answer the page does not show.
    pub async fn act<B: Serialize>(
        &self,
        caller: &Caller,
        method: Method,
        path: &str,
        body: Option<&B>,
        reason: Option<&str>,
    ) -> Result<(), ApiError> {
        let _: serde_json::Value = self.send(caller, method, path, body, reason).await?;
        Ok(())
    }

    async fn call(
        &self,
        caller: &Caller,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        reason: Option<&str>,
    ) -> Result<Vec<u8>, ApiError> {
        let mut request = Request::builder().method(method).uri(path);
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(reason) = reason.filter(|r| !r.trim().is_empty()) {
            request = request.header("x-tollgate-reason", reason.trim());
        }
        let mut request = request
            .body(Body::from(body.unwrap_or_default()))
            .map_err(|e| ApiError::Internal(format!("building a request to {path}: {e}")))?;
        request
            .extensions_mut()
            .insert(PortalCaller(caller.clone()));
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| ApiError::Internal(format!("calling {path}: {e}")))?;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), ANSWER_BYTES_MAX)
            .await
            .map_err(|e| ApiError::Internal(format!("reading the answer of {path}: {e}")))?;
        if status.is_success() {
            return Ok(bytes.to_vec());
        }
        let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        Err(match status {
            StatusCode::NOT_FOUND | StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => {
                ApiError::NotFound(detail)
            }
            StatusCode::BAD_REQUEST
            | StatusCode::CONFLICT
            | StatusCode::UNPROCESSABLE_ENTITY
            | StatusCode::PAYLOAD_TOO_LARGE => ApiError::Refused(detail),
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                ApiError::Unavailable(detail)
            }
            _ => ApiError::Internal(format!("{path} answered {status}: {detail}")),
        })
    }
}

fn decode<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::Internal(format!("the answer of {path} does not decode: {e}")))
}
