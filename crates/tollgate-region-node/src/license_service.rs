//! The `Licenses` gRPC service (license/v1) at every region node, on the
//! check port: issuing needs an application credential with
//! `issue_licenses` for the account (and the audience, when it names a
//! product the credential is limited to), and signs with the
//! region's own key, which the origin certified, from the node's local
//! state, so it works while the region is cut off from the origin. Tokens
//! are short-lived (the certificate's maximum). Verifying checks the
//! revocations replicated to the region; it needs a credential with
//! `check`.

use crate::config::RegionIssuerConfig;
use crate::credentials::Gate;
use crate::views::Views;
use std::sync::Arc;
use tollgate_license::{IssueRequest, IssuedToken, Issuer, LicenseClaims};
use tollgate_model::{ProductId, Verb};
use tollgate_origin::keys;
use tollgate_proto::license::v1 as pb;
use tollgate_raft::StateView;
use tollgate_server::licenses::{unreadable, verify, Verifiers};
use tollgate_server::served::read_u64;
use tollgate_server::NodeError;
use tollgate_signing::PublicKeySet;
use tonic::{Request, Response, Status};

/// The service at a region node.
pub(crate) struct RegionLicenses {
    pub view: StateView,
    /// The origin keys from the node's configuration (the region's state
    /// may hold a newer, endorsed set).
    pub configured_keys: PublicKeySet,
    pub issuer: Option<Issuer>,
    verifiers: Verifiers,
    views: Arc<Views>,
    gate: Gate,
    clock: tollgate_clock::Clock,
}

impl RegionLicenses {
    pub(crate) fn new(
        view: StateView,
        views: Arc<Views>,
        gate: Gate,
        configured_keys: PublicKeySet,
        region: &str,
        issuer: Option<RegionIssuerConfig>,
        clock: tollgate_clock::Clock,
    ) -> Result<RegionLicenses, NodeError> {
        let issuer = match issuer {
            None => None,
            Some(config) => {
                let issuer =
                    Issuer::region(config.signing_key, config.certificate).map_err(|e| {
                        NodeError::Other(format!("the region's license certificate: {e}"))
                    })?;
                let certified = issuer.certificate().map(|c| c.region.as_str());
                if certified != Some(region) {
                    return Err(NodeError::Other(format!(
                        "the license certificate is for region {certified:?}, but this node is in region {region:?}"
                    )));
                }
                Some(issuer)
            }
        };
        Ok(RegionLicenses {
            view,
            configured_keys,
            issuer,
            verifiers: Verifiers::default(),
            views,
            gate,
            clock,
        })
    }
}

#[tonic::async_trait]
impl pb::licenses_server::Licenses for RegionLicenses {
    async fn issue_license(
        &self,
        request: Request<pb::IssueLicenseRequest>,
    ) -> Result<Response<pb::IssueLicenseResponse>, Status> {
        let caller = self.views.caller(&self.gate, &request)?;
        let r = IssueRequest::try_from(request.into_inner())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (account, subject) = (r.account, r.subject);
        caller.account(Verb::IssueLicenses, &account)?;
        // The audience is the product a token is for: a credential limited
        // to some products issues only for them.
        match ProductId::new(r.audience.as_str()) {
            Ok(product) => caller.product(&product)?,
            Err(_) => caller.every_product()?,
        }
        let Some(issuer) = &self.issuer else {
            return Err(Status::failed_precondition(
                "this region has no certified key; it cannot issue licenses (see [licenses] in the region config)",
            ));
        };
        if r.audience.is_empty() || r.audience.len() > tollgate_origin::licenses::AUDIENCE_BYTES_MAX
        {
            return Err(Status::invalid_argument("audience must be 1..=256 bytes"));
        }
        let cert = issuer
            .certificate()
            .ok_or_else(|| Status::internal("a region issuer has a certificate"))?;
        let at = self.clock.now();
        if at < cert.not_before || at >= cert.not_after {
            return Err(Status::failed_precondition(format!(
                "the region's certificate {} is valid from {} to {}; renew it at the origin",
                cert.serial, cert.not_before.0, cert.not_after.0
            )));
        }
        let ttl_max = cert
            .token_ttl_max_seconds
            .min(cert.not_after.seconds_since(at));
        let ttl = match r.ttl_seconds {
            None => ttl_max,
            Some(ttl) if ttl > ttl_max => {
                return Err(Status::invalid_argument(format!(
                    "ttl_seconds {ttl} is over what this region may sign now ({ttl_max})"
                )));
            }
            Some(ttl) => ttl,
        };
        let data = crate::watch::account_dataset(&self.view, &account)?;
        if !data.accounts.iter().any(|a| a.id == account) {
            return Err(Status::not_found(format!("unknown account {account}")));
        }
        if let Some(s) = &subject {
            if !data.subjects.iter().any(|x| &x.id == s) {
                return Err(Status::not_found(format!(
                    "unknown subject {s} in account {account}"
                )));
            }
        }
        // The token names the revision its entitlements come from: one that
        // cannot be read issues nothing.
        let revision = read_u64(&self.view, keys::HEAD_REVISION)
            .map_err(|e| unreadable("the applied revision", e))?;
        let mut random = [0u8; 16];
        tollgate_clock::random::fill(&mut random)
            .map_err(|e| Status::internal(format!("no randomness for a token id: {e}")))?;
        let id = tollgate_license::RandomId::from_bytes(random);
        let device_bound = r.device_fingerprint.is_some();
        let claims = LicenseClaims {
            iss: issuer.issuer_name(),
            sub: LicenseClaims::subject_of(&account, subject.as_ref()),
            aud: r.audience,
            iat: at,
            nbf: at,
            exp: at.plus_seconds(ttl),
            jti: id.clone(),
            account: account.clone(),
            subject: subject.clone(),
            revision,
            device_bound,
            entitlements: tollgate_license::license_entitlements(&data, subject.as_ref(), at),
        };
        let token = issuer
            .issue(&claims, r.device_fingerprint.as_deref().map(str::as_bytes))
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        tracing::info!(id = %id, %account, region = %cert.region, expires_at = claims.exp.0, "Issued a region license token.");
        Ok(Response::new(
            IssuedToken {
                id: id.to_string(),
                token,
                kid: issuer.kid().to_string(),
                issuer: claims.iss,
                issued_at: at,
                not_before: at,
                expires_at: claims.exp,
                entitlements_revision: revision,
            }
            .into(),
        ))
    }

    async fn verify_license(
        &self,
        request: Request<pb::VerifyLicenseRequest>,
    ) -> Result<Response<pb::VerifyLicenseResponse>, Status> {
        self.views.caller(&self.gate, &request)?.verb(Verb::Check)?;
        let keys = crate::follow::trusted_origin_keys(&self.view, &self.configured_keys)
            .map_err(|e| unreadable("the trusted origin keys", e))?;
        verify(
            &self.verifiers,
            &keys,
            request.into_inner(),
            &self.view,
            self.clock.now(),
        )
        .map(Response::new)
    }
}
