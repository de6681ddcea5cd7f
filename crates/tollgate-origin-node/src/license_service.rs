//! The `Licenses` gRPC service (license/v1) at the origin, on the
//! changefeed port: issuing needs an API key with `accounts:write` (the same
//! keys as REST) and signs with the origin's active key, through the same
//! code as `POST /v1/accounts/{id}/licenses`; verifying checks the origin's
//! own revocations.

use crate::store::OriginState;
use tollgate_api::licensing::{issue_license, Actor, IssueLicense};
use tollgate_api::problem::Problem;
use tollgate_api::AppState;
use tollgate_origin::keys;
use tollgate_proto::license::v1 as pb;
use tollgate_server::clock::now;
use tollgate_server::licenses::{authorization, ids, verify, Verifiers};
use tollgate_server::served::read_u64;
use tonic::{Request, Response, Status};

/// A problem from the REST layer as a gRPC status.
pub(crate) fn problem_status(p: Problem) -> Status {
    let message = format!("{}: {}", p.code, p.detail);
    match p.status {
        400 | 413 | 415 | 422 => Status::invalid_argument(message),
        401 => Status::unauthenticated(message),
        403 => Status::permission_denied(message),
        404 => Status::not_found(message),
        409 => Status::already_exists(message),
        503 => Status::unavailable(message),
        _ => Status::internal(message),
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
            .map_err(problem_status)?;
        caller
            .require(tollgate_origin::Scope::AccountsWrite)
            .map_err(problem_status)?;
        let r = request.into_inner();
        let (account, subject) = ids(&r.account_id, &r.subject_id)?;
        let issue = IssueLicense {
            subject,
            audience: r.audience,
            ttl_seconds: (r.ttl_seconds > 0).then_some(r.ttl_seconds),
            not_before: None,
            device_fingerprint: (!r.device_fingerprint.is_empty()).then_some(r.device_fingerprint),
        };
        let actor = Actor {
            id: caller.key.id.clone(),
            reason: Some("gRPC IssueLicense".into()),
        };
        let issued = issue_license(&self.app, &actor, account, issue, now())
            .await
            .map_err(problem_status)?;
        Ok(Response::new(pb::IssueLicenseResponse {
            id: issued.id,
            token: issued.token,
            kid: issued.kid,
            issuer: tollgate_license::ISSUER_ORIGIN.to_string(),
            issued_at: issued.issued_at.0,
            not_before: issued.not_before.0,
            expires_at: issued.expires_at.0,
            entitlements_revision: issued.entitlements_revision,
        }))
    }

    async fn verify_license(
        &self,
        request: Request<pb::VerifyLicenseRequest>,
    ) -> Result<Response<pb::VerifyLicenseResponse>, Status> {
        let keys = self.app.keys.public_set().map_err(problem_status)?;
        let store = &self.app.store;
        let contains =
            |key: &[u8]| matches!(tollgate_api::OriginStore::get(&**store, key), Ok(Some(_)));
        let revision = read_u64(&store.view, keys::HEAD_REVISION).unwrap_or(0);
        verify(
            &self.verifiers,
            &keys,
            request.into_inner(),
            &contains,
            revision,
        )
        .map(Response::new)
    }
}
