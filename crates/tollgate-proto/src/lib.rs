//! The only crate that sees prost types. Generated code lives in the modules
//! named after the proto packages; conversions between them and
//! `tollgate-model` live in `convert/`, one file per message family.

#![allow(clippy::large_enum_variant)]

pub mod convert;

pub use convert::ConvertError;

/// Generated from `proto/tollgate/entitlement/v1/`.
pub mod entitlement {
    pub mod v1 {
        tonic::include_proto!("tollgate.entitlement.v1");
    }
}

/// Generated from `proto/tollgate/check/v1/`.
pub mod check {
    pub mod v1 {
        tonic::include_proto!("tollgate.check.v1");
    }
}

/// Generated from `proto/tollgate/cluster/v1/`: the Raft transport and the
/// cluster-admin service.
pub mod cluster {
    pub mod v1 {
        tonic::include_proto!("tollgate.cluster.v1");
    }
}

/// Generated from `proto/tollgate/origin/v1/`: the changefeed and the quota
/// service.
pub mod origin {
    pub mod v1 {
        tonic::include_proto!("tollgate.origin.v1");
    }
}

/// Generated from `proto/tollgate/usage/v1/`: usage reports and seats.
pub mod usage {
    pub mod v1 {
        tonic::include_proto!("tollgate.usage.v1");
    }
}

/// Generated from `proto/tollgate/license/v1/`: license tokens.
pub mod license {
    pub mod v1 {
        tonic::include_proto!("tollgate.license.v1");
    }
}

/// The encoded descriptor set of every Tollgate proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/tollgate_descriptor.bin"));

/// The gRPC reflection services over [`FILE_DESCRIPTOR_SET`], both
/// versions: `v1`, and `v1alpha`, which older grpcurl and grpcio clients
/// still ask for. Every gRPC port of every node serves both.
pub fn reflection_services() -> Result<
    (
        tonic_reflection::server::v1::ServerReflectionServer<
            impl tonic_reflection::server::v1::ServerReflection,
        >,
        tonic_reflection::server::v1alpha::ServerReflectionServer<
            impl tonic_reflection::server::v1alpha::ServerReflection,
        >,
    ),
    tonic_reflection::server::Error,
> {
    let v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    Ok((v1, v1alpha))
}

/// The name of a gRPC status code as the gRPC spec spells it
/// (`FAILED_PRECONDITION`): the default `tollgate-error-code` of a node's
/// error, and what the SDK reports.
pub fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
