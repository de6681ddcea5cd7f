//! The `Licenses` gRPC service (license/v1) at the origin, on the
//! changefeed port: issuing needs an API key with `accounts:write` (the same
//! keys as REST) and signs with the origin's active key, through the same
//! code as `POST /v1/accounts/{id}/licenses`; verifying checks the origin's
//! own revocations.

use crate::store::OriginState;
use tollgate_api::licensing::{issue_license, Actor, IssueLicense};
use tollgate_api::problem::Problem;
use tollgate_api::AppState;
use tollgate_license::{IssueRequest, IssuedToken};
use tollgate_proto::license::v1 as pb;
use tollgate_proto::ConvertError;
use tollgate_server::grpc::error_status;
use tollgate_server::licenses::{authorization, verify, Verifiers};
use tonic::{Code, Request, Response, Status};

/// Why the origin's `Licenses` service refused a call, by what it means.
/// Issuing shares the REST layer's code (authentication, scopes,
/// `issue_license`), whose refusals are [`Problem`]s: a problem is sorted
/// by its stable `code` (never its HTTP status), and that code travels to
/// the client in the `tollgate-error-code` trailer.
#[derive(Debug)]
pub(crate) enum LicensesError {
    /// A field of the request that does not convert.
    BadRequest(ConvertError),
    /// No API key, or an unknown, wrong or revoked one.
    Unauthenticated(Problem),
    /// The key lacks the scope.
    Forbidden(Problem),
    /// An unknown account or subject.
    NotFound(Problem),
    /// What the origin already holds says no.
    Conflict(Problem),
    /// A value the origin refuses (audience, lifetime, fingerprint).
    Invalid(Problem),
    /// Over a size limit.
    TooLarge(Problem),
    /// Not now: this node does not lead, or its storage is unavailable.
    Unavailable(Problem),
    /// The origin failed (or a code this service does not know).
    Internal(Problem),
}

impl LicensesError {
    /// The gRPC code, and the stable code for the trailer.
    fn codes(&self) -> (Code, &'static str) {
        use LicensesError as E;
        match self {
            E::BadRequest(_) => (Code::InvalidArgument, "INVALID_ARGUMENT"),
            E::Unauthenticated(p) => (Code::Unauthenticated, p.code),
            E::Forbidden(p) => (Code::PermissionDenied, p.code),
            E::NotFound(p) => (Code::NotFound, p.code),
            E::Conflict(p) => (Code::AlreadyExists, p.code),
            E::Invalid(p) => (Code::InvalidArgument, p.code),
            E::TooLarge(p) => (Code::ResourceExhausted, p.code),
            E::Unavailable(p) => (Code::Unavailable, p.code),
            E::Internal(p) => (Code::Internal, p.code),
        }
    }
}

impl std::fmt::Display for LicensesError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use LicensesError as E;
        match self {
            E::BadRequest(e) => e.fmt(f),
            E::Unauthenticated(p)
            | E::Forbidden(p)
            | E::NotFound(p)
            | E::Conflict(p)
            | E::Invalid(p)
            | E::TooLarge(p)
            | E::Unavailable(p)
            | E::Internal(p) => write!(f, "{}: {}", p.code, p.detail),
        }
    }
}

impl std::error::Error for LicensesError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LicensesError::BadRequest(e) => Some(e),
            _ => None,
        }
    }
}

impl From<ConvertError> for LicensesError {
    fn from(e: ConvertError) -> Self {
        LicensesError::BadRequest(e)
    }
}

impl From<Problem> for LicensesError {
    fn from(p: Problem) -> Self {
        match p.code {
            "UNAUTHENTICATED" => LicensesError::Unauthenticated(p),
            "FORBIDDEN" => LicensesError::Forbidden(p),
            "NOT_FOUND" => LicensesError::NotFound(p),
            "CONFLICT" => LicensesError::Conflict(p),
            "INVALID_ARGUMENT" | "MALFORMED_BODY" | "UNSUPPORTED_MEDIA_TYPE" => {
                LicensesError::Invalid(p)
            }
            "PAYLOAD_TOO_LARGE" => LicensesError::TooLarge(p),
            "NOT_LEADER" | "UNAVAILABLE" => LicensesError::Unavailable(p),
            _ => LicensesError::Internal(p),
        }
    }
}

impl From<LicensesError> for Status {
    fn from(e: LicensesError) -> Status {
        let (code, error_code) = e.codes();
        error_status(code, error_code, e.to_string())
    }
}

/// The service at the origin.
pub(crate) struct OriginLicenses {
    pub app: AppState<OriginState>,
    verifiers: Verifiers,
}

impl OriginLicenses {
    pub(crate) fn new(app: AppState<OriginState>) -> OriginLicenses {
        OriginLicenses {
            app,
            verifiers: Verifiers::default(),
        }
    }
}

#[tonic::async_trait]
impl pb::licenses_server::Licenses for OriginLicenses {
    async fn issue_license(
        &self,
        request: Request<pb::IssueLicenseRequest>,
    ) -> Result<Response<pb::IssueLicenseResponse>, Status> {
        let caller = tollgate_api::auth::authenticate(&*self.app.store, authorization(&request))
            .map_err(LicensesError::from)?;
        let r = IssueRequest::try_from(request.into_inner()).map_err(LicensesError::from)?;
        // An account's own key issues for that account only, as over REST.
        caller
            .require_for(tollgate_origin::Scope::AccountsWrite, &r.account)
            .map_err(LicensesError::from)?;
        let issue = IssueLicense {
            subject: r.subject,
            audience: r.audience,
            ttl_seconds: r.ttl_seconds,
            not_before: None,
            device_fingerprint: r.device_fingerprint,
        };
        let actor = Actor {
            id: caller.key.id.clone(),
            reason: Some("gRPC IssueLicense".into()),
        };
        let issued = issue_license(&self.app, &actor, r.account, issue, self.app.clock.now())
            .await
            .map_err(LicensesError::from)?;
        Ok(Response::new(
            IssuedToken {
                id: issued.id,
                token: issued.token,
                kid: issued.kid,
                issuer: tollgate_license::ISSUER_ORIGIN.to_string(),
                issued_at: issued.issued_at,
                not_before: issued.not_before,
                expires_at: issued.expires_at,
                entitlements_revision: issued.entitlements_revision,
            }
            .into(),
        ))
    }

    async fn verify_license(
        &self,
        request: Request<pb::VerifyLicenseRequest>,
    ) -> Result<Response<pb::VerifyLicenseResponse>, Status> {
        let keys = self.app.keys.public_set().map_err(LicensesError::from)?;
        verify(
            &self.verifiers,
            &keys,
            request.into_inner(),
            &self.app.store.view,
            self.app.clock.now(),
        )
        .map(Response::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_server::grpc::ERROR_CODE_KEY;

    fn check(problem: Problem, code: Code, error_code: &str) {
        let message = format!("{}: {}", problem.code, problem.detail);
        let status = Status::from(LicensesError::from(problem));
        assert_eq!(status.code(), code, "{message}");
        assert_eq!(status.message(), message);
        assert_eq!(
            status.metadata().get(ERROR_CODE_KEY).unwrap(),
            error_code,
            "{message}"
        );
    }

    #[test]
    fn a_problem_maps_by_its_code_and_keeps_it_in_the_trailer() {
        use axum::http::StatusCode;
        let rows = [
            (
                Problem::unauthenticated("no key"),
                Code::Unauthenticated,
                "UNAUTHENTICATED",
            ),
            (
                Problem::forbidden("no scope"),
                Code::PermissionDenied,
                "FORBIDDEN",
            ),
            (Problem::not_found("nobody"), Code::NotFound, "NOT_FOUND"),
            (Problem::conflict("twice"), Code::AlreadyExists, "CONFLICT"),
            (
                Problem::invalid("audience"),
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            ),
            (
                Problem::bad_request("kid"),
                Code::InvalidArgument,
                "INVALID_ARGUMENT",
            ),
            (
                Problem::new(StatusCode::BAD_REQUEST, "MALFORMED_BODY", "json"),
                Code::InvalidArgument,
                "MALFORMED_BODY",
            ),
            (
                Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "big"),
                Code::ResourceExhausted,
                "PAYLOAD_TOO_LARGE",
            ),
            (
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "NOT_LEADER", "follower"),
                Code::Unavailable,
                "NOT_LEADER",
            ),
            (
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "busy"),
                Code::Unavailable,
                "UNAVAILABLE",
            ),
            (Problem::internal("storage"), Code::Internal, "INTERNAL"),
            // The code decides, not the HTTP status.
            (
                Problem::new(StatusCode::BAD_REQUEST, "SOMETHING_NEW", "?"),
                Code::Internal,
                "SOMETHING_NEW",
            ),
        ];
        for (problem, code, error_code) in rows {
            check(problem, code, error_code);
        }
    }

    #[test]
    fn a_request_that_does_not_convert_is_invalid_argument() {
        let error = IssueRequest::try_from(pb::IssueLicenseRequest {
            account_id: "bad id!".into(),
            ..Default::default()
        })
        .unwrap_err();
        let status = Status::from(LicensesError::from(error));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().starts_with("account_id: "), "{status:?}");
        assert_eq!(
            status.metadata().get(ERROR_CODE_KEY).unwrap(),
            "INVALID_ARGUMENT"
        );
    }
}
