//! What can go wrong in an SDK call, and how a gRPC status from a node maps
//! onto it. A denial is never an error: it is a `Decision` with a reason.

use std::time::Duration;
use thiserror::Error;
use tollgate_proto::code_name;
use tonic::{Code, Status};

/// Why a call produced no answer. Switch on [`SdkError::code`] (stable) or
/// on the variant; the messages are for humans.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SdkError {
    /// The client or replica is set up wrongly: no endpoint, a malformed
    /// endpoint URI, no Tokio runtime to run in.
    #[error("configuration: {0}")]
    Config(String),
    /// The request cannot be answered as sent (the node said
    /// `INVALID_ARGUMENT` or `OUT_OF_RANGE`, naming the field, or the SDK
    /// saw it before sending). Never retried.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The node does not know what the request names (`NOT_FOUND`).
    #[error("not found: {0}")]
    NotFound(String),
    /// No endpoint answered before the call's deadline: every one was
    /// unreachable, overloaded or not ready.
    #[error("no endpoint answered (tried {}): {last}", tried.join(", "))]
    Unavailable {
        /// The endpoints tried, in the order they were first tried.
        tried: Vec<String>,
        /// The last failure, with the endpoint it came from.
        last: String,
    },
    /// The call's deadline ran out while an endpoint was still working on
    /// it, or no node could answer in time (e.g. an `at_least_revision`
    /// wait).
    #[error("deadline of {deadline:?} exceeded{}", last.as_deref().map(|l| format!(": {l}")).unwrap_or_default())]
    DeadlineExceeded {
        deadline: Duration,
        last: Option<String>,
    },
    /// The node refused the request for a reason another node would share
    /// (`FAILED_PRECONDITION`, `PERMISSION_DENIED`, `INTERNAL`, ...).
    /// Not retried.
    #[error("refused with {code}: {message}")]
    Refused {
        /// The gRPC code's name, e.g. `FAILED_PRECONDITION`.
        code: &'static str,
        message: String,
    },
    /// A response that does not make sense (does not convert, a missing
    /// field, a stream out of order): a bug or a version mismatch.
    #[error("unexpected response: {0}")]
    Protocol(String),
    /// The local replica cannot answer this request: consumption (metered
    /// by the region), an IP address to resolve, an account outside the
    /// replica's scope. Ask the region with [`crate::Client`].
    #[error("the local replica cannot answer this: {0}")]
    NeedsRegion(String),
    /// The request asks for a revision the local replica has not applied
    /// yet; wait with [`crate::Replica::wait_for_revision`].
    #[error("the local replica has applied revision {applied}; the request needs {wanted}")]
    RevisionNotApplied { wanted: u64, applied: u64 },
}

impl SdkError {
    /// A stable, machine-readable code for the kind of error.
    pub fn code(&self) -> &'static str {
        match self {
            SdkError::Config(_) => "CONFIG",
            SdkError::InvalidRequest(_) => "INVALID_REQUEST",
            SdkError::NotFound(_) => "NOT_FOUND",
            SdkError::Unavailable { .. } => "UNAVAILABLE",
            SdkError::DeadlineExceeded { .. } => "DEADLINE_EXCEEDED",
            SdkError::Refused { .. } => "REFUSED",
            SdkError::Protocol(_) => "PROTOCOL",
            SdkError::NeedsRegion(_) => "NEEDS_REGION",
            SdkError::RevisionNotApplied { .. } => "REVISION_NOT_APPLIED",
        }
    }
}

/// What to do after an endpoint failed a call.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Another endpoint may answer: the connection failed, or the node is
    /// unavailable or overloaded. `timed_out` when the attempt ran out of
    /// time rather than being refused.
    Retry { message: String, timed_out: bool },
    /// Every endpoint would say the same: give up.
    Fatal(SdkError),
}

/// The `&'static` spelling of a code name a node sent as text; `UNKNOWN`
/// for a name that is not a gRPC code.
pub(crate) fn known_code_name(name: &str) -> &'static str {
    const CODES: [Code; 16] = [
        Code::Cancelled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];
    CODES
        .into_iter()
        .map(code_name)
        .find(|known| *known == name)
        .unwrap_or("UNKNOWN")
}

/// Sorts a failed call into retry-elsewhere or give-up. A status with a
/// source was made on this side of the wire (tonic could not connect, the
/// connection broke, a local timeout fired): that is a transport failure,
/// so another endpoint may answer. A status without one came from a node.
pub(crate) fn classify(status: &Status) -> Failure {
    let local = std::error::Error::source(status).is_some();
    let message = if status.message().is_empty() {
        code_name(status.code()).to_string()
    } else {
        format!("{}: {}", code_name(status.code()), status.message())
    };
    let retry = |timed_out| Failure::Retry {
        message: message.clone(),
        timed_out,
    };
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted => retry(false),
        // tonic's own timer (`grpc-timeout`) reports a local CANCELLED.
        Code::Cancelled if local => retry(true),
        // Local, or the node's: it could not answer within the attempt's
        // share of the deadline (its request timeout, a revision it had
        // not applied in time). Another node may, in the time left; when
        // none does, the call ends DEADLINE_EXCEEDED all the same.
        Code::DeadlineExceeded => retry(true),
        Code::Unknown | Code::Aborted if local => retry(false),
        Code::InvalidArgument | Code::OutOfRange => {
            Failure::Fatal(SdkError::InvalidRequest(status.message().to_string()))
        }
        Code::NotFound => Failure::Fatal(SdkError::NotFound(status.message().to_string())),
        _ if local => Failure::Fatal(SdkError::Protocol(message.clone())),
        code => Failure::Fatal(SdkError::Refused {
            code: code_name(code),
            message: status.message().to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A status made on this side of the wire (it has a source), as tonic
    /// makes them for connection failures and local timeouts.
    fn local(code: Code) -> Status {
        Status::from_error(Box::new(LocalError(Status::new(code, "connection reset"))))
    }

    #[derive(Debug)]
    struct LocalError(Status);
    impl std::fmt::Display for LocalError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "local: {}", self.0.message())
        }
    }
    impl std::error::Error for LocalError {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    fn check(status: Status, expected: &str) {
        let got = match classify(&status) {
            Failure::Retry {
                timed_out: false, ..
            } => "retry".to_string(),
            Failure::Retry {
                timed_out: true, ..
            } => "retry-timeout".to_string(),
            Failure::Fatal(e) => e.code().to_string(),
        };
        assert_eq!(got, expected, "{status:?}");
    }

    #[test]
    fn every_status_maps_to_retry_or_a_typed_error() {
        let cases = [
            (Status::unavailable("node not ready"), "retry"),
            (Status::resource_exhausted("too many watchers"), "retry"),
            (
                Status::invalid_argument("feature_id: bad"),
                "INVALID_REQUEST",
            ),
            (Status::out_of_range("consume: too much"), "INVALID_REQUEST"),
            (Status::not_found("account x"), "NOT_FOUND"),
            (Status::failed_precondition("no floating seats"), "REFUSED"),
            (Status::permission_denied("no"), "REFUSED"),
            (Status::internal("bug"), "REFUSED"),
            (Status::unknown("from the node"), "REFUSED"),
            (Status::cancelled("by the node"), "REFUSED"),
            (
                Status::deadline_exceeded("revision 9 was not applied"),
                "retry-timeout",
            ),
            (local(Code::Unavailable), "retry"),
            (local(Code::Unknown), "retry"),
            (local(Code::Cancelled), "retry-timeout"),
            (local(Code::Internal), "PROTOCOL"),
        ];
        for (status, expected) in cases {
            check(status, expected);
        }
    }

    #[test]
    fn refused_keeps_the_grpc_code_name() {
        match classify(&Status::failed_precondition("nope")) {
            Failure::Fatal(SdkError::Refused { code, message }) => {
                assert_eq!(code, "FAILED_PRECONDITION");
                assert_eq!(message, "nope");
            }
            other => panic!("{other:?}"),
        }
    }
}
