//! gRPC statuses as every port answers them: a stable error code in the
//! `tollgate-error-code` metadata, and the client's `grpc-timeout`. Below
//! `grpc` and `limits`, which both answer with them.

use tonic::{Code, Status};

/// The metadata key carrying an error's stable, machine-readable code.
pub const ERROR_CODE_KEY: &str = tollgate_raft::status::ERROR_CODE_KEY;

/// A status's stable code: its `tollgate-error-code`, or the gRPC code's
/// name when it carries none (a status from tonic itself).
pub fn error_code(status: &Status) -> &str {
    status
        .metadata()
        .get(ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or(tollgate_proto::code_name(status.code()))
}

/// An RFC 9457 problem document (`application/problem+json`): `status`,
/// a stable `code` and a sentence for a person. Every HTTP refusal a node
/// writes itself is one of these.
pub fn problem(status: http::StatusCode, code: &str, detail: &str) -> http::Response<String> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "code": code,
        "detail": detail,
    });
    let mut response = http::Response::new(body.to_string());
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/problem+json"),
    );
    response
}

/// A status carrying `error_code` (stable, upper snake case) in its
/// `tollgate-error-code` trailer.
pub fn error_status(code: Code, error_code: &'static str, message: impl Into<String>) -> Status {
    let mut status = Status::new(code, message);
    status.metadata_mut().insert(
        ERROR_CODE_KEY,
        tonic::metadata::MetadataValue::from_static(error_code),
    );
    status
}

/// The time the client gave the call (its `grpc-timeout` header), if any.
/// A malformed header counts as none: the call then gets the server's own
/// bounds.
pub fn request_timeout<T>(request: &tonic::Request<T>) -> Option<std::time::Duration> {
    parse_grpc_timeout(request.metadata().get("grpc-timeout")?.to_str().ok()?)
}

/// A `grpc-timeout` header's value as a duration (`None` if malformed).
pub fn parse_grpc_timeout(value: &str) -> Option<std::time::Duration> {
    // At most 8 digits and a unit (gRPC over HTTP/2, "Timeout").
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    use std::time::Duration;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}
