//! The HTTP/JSON check API, served on the check port beside gRPC (same
//! listener, same TLS, HTTP/1.1 and HTTP/2): `POST /v1/check`,
//! `POST /v1/checks` and `GET /v1/watch` (Server-Sent Events). Each is
//! answered by the gRPC method it mirrors, called in process with the
//! request's headers as metadata and its connection's facts, so the
//! credentials, scopes, rate limits, revision waits, batch limits and
//! reasons are the same code's. Errors are RFC 9457 problem documents
//! carrying the stable code a gRPC error carries in `tollgate-error-code`.
//! `GET /v1/openapi.json` is the document (`openapi.json`, checked in).

pub mod openapi;
pub mod wire;

use crate::checker::Checker;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use tollgate_engine::WatchEvent;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::check::v1::check_service_server::CheckService;
use tollgate_server::limits::RETRY_AFTER_KEY;
use tollgate_server::status::error_code;
use tonic::{Code, Status};

/// Largest JSON body: a full batch ([`tollgate_engine::BATCH_CHECKS_MAX`]
/// checks) in JSON is about four times its protobuf size, which the gRPC
/// side bounds at 64 KiB.
pub const JSON_BODY_BYTES_MAX: usize = 256 * 1024;

/// Every route, with its method: the router and the OpenAPI document are
/// both built from it.
pub const ROUTES: &[(&str, &str)] = &[
    ("/v1/check", "post"),
    ("/v1/checks", "post"),
    ("/v1/watch", "get"),
    ("/v1/openapi.json", "get"),
];

/// The routes, merged into the check port's gRPC router by `node`.
pub(crate) fn router(checker: Arc<Checker>) -> axum::Router {
    axum::Router::new()
        .route(ROUTES[0].0, post(check))
        .route(ROUTES[1].0, post(batch_check))
        .route(ROUTES[2].0, get(watch))
        .route(ROUTES[3].0, get(document))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(checker)
}

/// A problem document: `status`, a stable `code` and a sentence.
pub fn problem(status: StatusCode, code: &str, detail: impl Into<String>) -> Response {
    tollgate_server::status::problem(status, code, &detail.into()).map(Body::from)
}

/// The HTTP status for a gRPC error, with its stable code and
/// `Retry-After` when the error carries one.
fn status_problem(status: &Status) -> Response {
    let code = error_code(status);
    let http = match status.code() {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted | Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::ResourceExhausted if code == tollgate_server::grpc::MESSAGE_TOO_LARGE => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable | Code::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    let mut response = problem(http, code, status.message());
    if let Some(retry) = status.metadata().get(RETRY_AFTER_KEY) {
        if let Ok(value) = HeaderValue::from_bytes(retry.as_bytes()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    response
}

async fn not_found(headers: HeaderMap) -> Response {
    if tollgate_server::limits::Wire::of(&headers) == tollgate_server::limits::Wire::Grpc {
        // An unknown gRPC method, answered as gRPC answers one.
        let (parts, ()) = Status::unimplemented("no such method on the check port")
            .into_http::<()>()
            .into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    problem(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such route; the check port serves POST /v1/check, POST /v1/checks, \
         GET /v1/watch and GET /v1/openapi.json",
    )
}

async fn method_not_allowed() -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "the route exists, with another method (see /v1/openapi.json)",
    )
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object))
)]
async fn document() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::document_json(),
    )
        .into_response()
}

/// A JSON body within [`JSON_BODY_BYTES_MAX`], parsed, and the request's
/// headers and extensions as the gRPC request's metadata and extensions.
async fn json_request<T: serde::de::DeserializeOwned>(
    request: Request,
) -> Result<(tonic::metadata::MetadataMap, http::Extensions, T), Response> {
    let (parts, body) = request.into_parts();
    let json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(problem(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            "send the body as JSON, with content-type: application/json",
        ));
    }
    let too_large = || {
        problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            tollgate_server::grpc::MESSAGE_TOO_LARGE,
            format!("the body is larger than {JSON_BODY_BYTES_MAX} bytes"),
        )
    };
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > DRAINED_BYTES_MAX as u64) {
        return Err(too_large());
    }
    let bytes = read_body(body).await.map_err(|e| match e {
        BodyError::TooLarge => too_large(),
        BodyError::Read(e) => problem(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            format!("the body could not be read: {e}"),
        ),
    })?;
    let value = serde_json::from_slice(&bytes).map_err(|e| {
        problem(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            format!("the body is not a valid request: {e}"),
        )
    })?;
    Ok((
        tonic::metadata::MetadataMap::from_headers(parts.headers),
        parts.extensions,
        value,
    ))
}

/// How much of a body over [`JSON_BODY_BYTES_MAX`] is read (and thrown
/// away) before the 413: a client still sending when the answer comes
/// would see its connection reset rather than the answer. Past this, the
/// connection is closed on it.
const DRAINED_BYTES_MAX: usize = 4 * JSON_BODY_BYTES_MAX;

enum BodyError {
    TooLarge,
    Read(axum::Error),
}

/// The body, if it is within [`JSON_BODY_BYTES_MAX`].
async fn read_body(body: Body) -> Result<Bytes, BodyError> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    // A check's body comes in one chunk: kept as it came, without a copy;
    // only a body in several chunks is gathered.
    let mut first: Option<Bytes> = None;
    let mut gathered: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Read)?;
        seen += chunk.len();
        if seen > DRAINED_BYTES_MAX {
            return Err(BodyError::TooLarge);
        }
        if seen > JSON_BODY_BYTES_MAX {
            continue; // drained, not kept
        }
        match first.take() {
            None if gathered.is_empty() => first = Some(chunk),
            None => gathered.extend_from_slice(&chunk),
            Some(earlier) => {
                gathered.extend_from_slice(&earlier);
                gathered.extend_from_slice(&chunk);
            }
        }
    }
    if seen > JSON_BODY_BYTES_MAX {
        return Err(BodyError::TooLarge);
    }
    Ok(first.unwrap_or_else(|| Bytes::from(gathered)))
}

fn invalid(detail: String) -> Response {
    problem(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", detail)
}

/// One check.
#[utoipa::path(
    post,
    path = "/v1/check",
    operation_id = "check",
    request_body = wire::CheckBody,
    responses(
        (status = 200, description = "The decision (a denial too)", body = wire::CheckAnswerBody),
    )
)]
async fn check(State(checker): State<Arc<Checker>>, request: Request) -> Response {
    match grpc_request(request, wire::CheckBody::into_proto).await {
        Ok(request) => respond(
            CheckService::check(checker.as_ref(), request).await,
            wire::CheckAnswerBody::from_proto,
        ),
        Err(refused) => refused,
    }
}

/// Up to 128 checks at one revision; each result is a decision or that
/// item's error, in the order of the checks.
#[utoipa::path(
    post,
    path = "/v1/checks",
    operation_id = "batch_check",
    request_body = wire::BatchBody,
    responses(
        (status = 200, description = "The results, in order", body = wire::BatchAnswerBody),
    )
)]
async fn batch_check(State(checker): State<Arc<Checker>>, request: Request) -> Response {
    match grpc_request(request, wire::BatchBody::into_proto).await {
        Ok(request) => respond(
            CheckService::batch_check(checker.as_ref(), request).await,
            wire::BatchAnswerBody::from_proto,
        ),
        Err(refused) => refused,
    }
}

/// The gRPC request a JSON request makes, or the refusal.
async fn grpc_request<B: serde::de::DeserializeOwned, P>(
    request: Request,
    into_proto: fn(B) -> Result<P, String>,
) -> Result<tonic::Request<P>, Response> {
    let (metadata, extensions, body) = json_request::<B>(request).await?;
    let message = into_proto(body).map_err(invalid)?;
    Ok(tonic::Request::from_parts(metadata, extensions, message))
}

/// A gRPC method's answer as JSON, or its error as a problem.
fn respond<T, J: serde::Serialize>(
    answer: Result<tonic::Response<T>, Status>,
    to_json: fn(T) -> Result<J, Status>,
) -> Response {
    match answer.and_then(|answer| to_json(answer.into_inner())) {
        Ok(body) => json(&body),
        Err(status) => status_problem(&status),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => problem(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            format!("the answer could not be written as JSON: {e}"),
        ),
    }
}

/// The `Last-Event-ID` a reconnecting client sends: the last revision it
/// has; `Err` when it is there but not a revision.
fn last_event_id(headers: &HeaderMap) -> Result<Option<u64>, String> {
    let Some(value) = headers.get("last-event-id") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| "Last-Event-ID must be a revision (an unsigned integer)".into())
}

/// The account's (or every account's) data, then its changes as they
/// apply: Server-Sent Events `state`, `changes`, `heartbeat` and `error`
/// (see sdk/PROTOCOL.md). Send `Last-Event-ID` to resume.
#[utoipa::path(
    get,
    path = "/v1/watch",
    operation_id = "watch",
    params(
        wire::WatchQuery,
        ("Last-Event-ID" = Option<u64>, Header, description = "The last revision received; takes the place of `from_revision`"),
    ),
    responses(
        (status = 200, description = "`text/event-stream`: events `state` (StateEvent), `changes` (ChangesEvent), `heartbeat` (HeartbeatEvent), `error` (a problem; the stream ends)", content_type = "text/event-stream", body = String),
        (status = 400, description = "A bad query or Last-Event-ID", body = openapi::Problem, content_type = "application/problem+json"),
        (status = 401, description = "No or a wrong credential", body = openapi::Problem, content_type = "application/problem+json"),
        (status = 403, description = "The credential does not cover the account, or every account", body = openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "The node holds as many streams as it allows (`RESOURCE_EXHAUSTED`), or the caller is over its rate", body = openapi::Problem, content_type = "application/problem+json"),
    )
)]
async fn watch(State(checker): State<Arc<Checker>>, request: Request) -> Response {
    let (parts, _body) = request.into_parts();
    let query: wire::WatchQuery = match axum::extract::Query::try_from_uri(&parts.uri) {
        Ok(axum::extract::Query(query)) => query,
        Err(e) => return invalid(format!("the query is not valid: {}", e.body_text())),
    };
    let from_revision = match last_event_id(&parts.headers) {
        Ok(Some(revision)) => revision,
        Ok(None) => query.from_revision,
        Err(e) => return invalid(e),
    };
    let message = pb::WatchRequest {
        account_id: query.account,
        from_revision,
    };
    let request = tonic::Request::from_parts(
        tonic::metadata::MetadataMap::from_headers(parts.headers),
        parts.extensions,
        message,
    );
    let stream = match CheckService::watch(checker.as_ref(), request).await {
        Ok(stream) => stream.into_inner(),
        Err(status) => return status_problem(&status),
    };
    let events = tokio_stream::StreamExt::map(stream, |item| {
        Ok::<Event, std::convert::Infallible>(match item {
            Ok(message) => sse_event(message),
            Err(status) => error_event(&status),
        })
    });
    let mut response = Sse::new(events).into_response();
    // Proxies that buffer would hold the changes back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// An `error` event ends the stream: its data is the problem document.
fn error_event(status: &Status) -> Event {
    let code = error_code(status);
    let data = serde_json::json!({
        "type": "about:blank",
        "title": "Stream ended",
        "code": code,
        "detail": status.message(),
    });
    Event::default().event("error").data(data.to_string())
}

fn sse_event(message: pb::WatchResponse) -> Event {
    let event = match WatchEvent::try_from(message) {
        Ok(event) => event,
        Err(e) => {
            return error_event(&Status::internal(format!(
                "a change could not be read: {e}"
            )))
        }
    };
    let encoded = match &event {
        WatchEvent::State {
            revision,
            index,
            last,
            mutations,
        } => serde_json::to_string(&wire::StateEvent {
            revision: *revision,
            index: *index,
            last: *last,
            mutations,
        })
        .map(|data| {
            let event = Event::default().event("state").data(data);
            if *last {
                event.id(revision.to_string())
            } else {
                event
            }
        }),
        WatchEvent::Changes {
            changes,
            through_revision,
        } => serde_json::to_string(&wire::ChangesEvent {
            changes,
            through_revision: *through_revision,
        })
        .map(|data| {
            Event::default()
                .event("changes")
                .data(data)
                .id(through_revision.to_string())
        }),
        WatchEvent::Heartbeat {
            applied_revision,
            staleness_seconds,
        } => serde_json::to_string(&wire::HeartbeatEvent {
            applied_revision: *applied_revision,
            staleness_seconds: *staleness_seconds,
        })
        .map(|data| Event::default().event("heartbeat").data(data)),
    };
    encoded.unwrap_or_else(|e| {
        error_event(&Status::internal(format!(
            "a change could not be written as JSON: {e}"
        )))
    })
}
