//! Errors on the wire: an [`Error`] as a gRPC status carrying a stable
//! code (and, for `NOT_LEADER`, where the leader is), and back. The server
//! side maps with [`error_to_status`], a forwarding node with
//! [`status_to_error`].

use tonic::Status;

use crate::error::Error;
use crate::types::NodeId;

/// The metadata key carrying the stable error code.
pub const ERROR_CODE_KEY: &str = "tollgate-error-code";
/// The metadata key naming the leader's id on `NOT_LEADER`.
pub const LEADER_ID_KEY: &str = "tollgate-leader-id";
/// The metadata key naming the leader's address on `NOT_LEADER`.
pub const LEADER_ADDR_KEY: &str = "tollgate-leader-addr";

/// Map an error to a gRPC status carrying its stable code.
pub fn error_to_status(e: &Error) -> Status {
    let code = match e {
        Error::InvalidArgument(_) | Error::InvalidConfig { .. } | Error::Codec(_) => {
            tonic::Code::InvalidArgument
        }
        Error::NotLeader { .. } | Error::AlreadyInitialized | Error::Membership(_) => {
            tonic::Code::FailedPrecondition
        }
        Error::Overloaded { .. } => tonic::Code::ResourceExhausted,
        Error::Timeout(_) => tonic::Code::DeadlineExceeded,
        Error::ShuttingDown | Error::Unavailable(_) | Error::Transport(_) => {
            tonic::Code::Unavailable
        }
        _ => tonic::Code::Internal,
    };
    let mut status = Status::new(code, e.to_string());
    let md = status.metadata_mut();
    md.insert(
        ERROR_CODE_KEY,
        tonic::metadata::MetadataValue::from_static(e.code()),
    );
    if let Error::NotLeader {
        leader_id,
        leader_addr,
    } = e
    {
        if let Some(id) = leader_id {
            if let Ok(v) = id.to_string().parse() {
                md.insert(LEADER_ID_KEY, v);
            }
        }
        if let Some(addr) = leader_addr {
            if let Ok(v) = addr.parse() {
                md.insert(LEADER_ADDR_KEY, v);
            }
        }
    }
    status
}

/// Map a status received from `peer` back to an error.
pub fn status_to_error(status: &Status, peer: NodeId, addr: &str) -> Error {
    let md = status.metadata();
    let code = md
        .get(ERROR_CODE_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match code {
        "ERROR_CODE_NOT_LEADER" | "ERROR_CODE_NO_LEADER" => Error::NotLeader {
            leader_id: md
                .get(LEADER_ID_KEY)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            leader_addr: md
                .get(LEADER_ADDR_KEY)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        },
        "ERROR_CODE_INVALID_ARGUMENT" => Error::InvalidArgument(status.message().to_string()),
        "ERROR_CODE_OVERLOADED" => {
            Error::Unavailable(format!("node {peer} at {addr} is overloaded"))
        }
        _ => Error::Unavailable(format!(
            "node {peer} at {addr}: {}: {}",
            status.code(),
            status.message()
        )),
    }
}
