//! License verification as every node does it: against a key set and the
//! revocations the node holds (the origin's own, or a region's replica of
//! them), with verifiers cached per audience. The origin's and a region's
//! `Licenses` services both answer `VerifyLicense` through here.

use crate::served::read_u64;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tollgate_license::{Revocations, Verification, Verifier, VerifyRequest};
use tollgate_model::UnixSeconds;
use tollgate_origin::keys;
use tollgate_proto::license::v1 as pb;
use tollgate_raft::StateView;
use tollgate_signing::PublicKeySet;
use tonic::{Request, Status};

/// Most audiences whose verifiers a node keeps at once.
const VERIFIERS_MAX: usize = 64;

pub fn authorization<T>(request: &Request<T>) -> Option<&[u8]> {
    request
        .metadata()
        .get("authorization")
        .map(|v| v.as_bytes())
}

/// Revocations as a node's state holds them (the origin's, or a region's
/// replica of them), through `lookup` (is this key present?). A lookup that
/// fails answers "revoked" and is remembered, so the call fails closed
/// instead of accepting a token whose revocation could not be read.
struct StateRevocations<F> {
    lookup: F,
    failed: std::cell::RefCell<Option<String>>,
}

impl<F: Fn(&[u8]) -> Result<bool, String>> StateRevocations<F> {
    fn held(&self, key: &[u8]) -> bool {
        (self.lookup)(key).unwrap_or_else(|error| {
            *self.failed.borrow_mut() = Some(error);
            true
        })
    }
}

impl<F: Fn(&[u8]) -> Result<bool, String>> Revocations for StateRevocations<F> {
    fn license_revoked(&self, jti: &str) -> bool {
        self.held(&keys::revoked_license(jti))
    }
    fn certificate_revoked(&self, serial: &str) -> bool {
        self.held(&keys::revoked_certificate(serial))
    }
}

/// The state could not be read: the caller should try another node.
pub fn unreadable(what: &str, error: impl std::fmt::Display) -> Status {
    crate::grpc::error_status(
        tonic::Code::Unavailable,
        "STATE_UNREADABLE",
        format!("{what} could not be read: {error}"),
    )
}

/// Verifiers by audience, for one key set: parsing the keys once per
/// audience rather than once per token. A new key set (a rotation) starts
/// over.
#[derive(Default)]
pub struct Verifiers {
    cached: Mutex<VerifierCache>,
}

/// The key set the verifiers were built for, and one verifier per audience.
type VerifierCache = (Option<PublicKeySet>, HashMap<String, Arc<Verifier>>);

impl Verifiers {
    pub fn get(&self, keys: &PublicKeySet, audience: &str) -> Result<Arc<Verifier>, Status> {
        let mut cached = self
            .cached
            .lock()
            .map_err(|_| Status::internal("the verifier cache lock is poisoned"))?;
        if cached.0.as_ref() != Some(keys) {
            *cached = (Some(keys.clone()), HashMap::new());
        }
        if let Some(v) = cached.1.get(audience) {
            return Ok(v.clone());
        }
        let verifier =
            Arc::new(Verifier::new(keys, audience).map_err(|e| {
                Status::failed_precondition(format!("the key set is unusable: {e}"))
            })?);
        if cached.1.len() >= VERIFIERS_MAX {
            cached.1.clear();
        }
        cached.1.insert(audience.to_string(), verifier.clone());
        Ok(verifier)
    }
}

/// Verifies the token a `VerifyLicense` call carries, for the origin's and a
/// region's services alike, against `keys` and the revocations in `view`:
/// converted at the edge, answered on the wire. A refusal is an answer
/// (`valid: false` with its stable code), not an error; a state that cannot
/// be read is an error (UNAVAILABLE), never a valid token.
pub fn verify(
    verifiers: &Verifiers,
    keys: &PublicKeySet,
    request: pb::VerifyLicenseRequest,
    view: &StateView,
    now: UnixSeconds,
) -> Result<pb::VerifyLicenseResponse, Status> {
    verify_against(
        verifiers,
        keys,
        request,
        now,
        read_u64(view, keys::HEAD_REVISION),
        |key| {
            view.get(key)
                .map(|v| v.is_some())
                .map_err(|e| e.to_string())
        },
    )
}

/// [`verify`] over any state: the applied revision as read, and a lookup of
/// revocation keys.
fn verify_against(
    verifiers: &Verifiers,
    keys: &PublicKeySet,
    request: pb::VerifyLicenseRequest,
    now: UnixSeconds,
    revision: Result<u64, String>,
    lookup: impl Fn(&[u8]) -> Result<bool, String>,
) -> Result<pb::VerifyLicenseResponse, Status> {
    let request =
        VerifyRequest::try_from(request).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let revision = revision.map_err(|e| unreadable("the applied revision", e))?;
    let verifier = verifiers.get(keys, &request.audience)?;
    let revocations = StateRevocations {
        lookup,
        failed: std::cell::RefCell::new(None),
    };
    let outcome = verifier.verify(
        &request.token,
        now,
        request.device_fingerprint.as_deref().map(str::as_bytes),
        &revocations,
    );
    if let Some(error) = revocations.failed.into_inner() {
        return Err(unreadable("the revocations", error));
    }
    Ok(Verification { outcome, revision }.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_clock::Clock;
    use tollgate_license::{Issuer, LicenseClaims, RandomId};
    use tollgate_model::AccountId;
    use tollgate_signing::KeyRing;

    fn now() -> UnixSeconds {
        Clock::system().now()
    }

    const AUDIENCE: &str = "studio-desktop";

    fn token(ring: &KeyRing) -> String {
        let at = now();
        let account = AccountId::new("acme").unwrap();
        let claims = LicenseClaims {
            iss: Issuer::origin(ring).issuer_name(),
            sub: LicenseClaims::subject_of(&account, None),
            aud: AUDIENCE.into(),
            iat: at,
            nbf: at,
            exp: at.plus_seconds(3600),
            jti: RandomId::from_bytes([7; 16]),
            account,
            subject: None,
            revision: 3,
            device_bound: false,
            entitlements: Vec::new(),
        };
        Issuer::origin(ring).issue(&claims, None).unwrap()
    }

    #[test]
    fn a_state_that_cannot_be_read_never_verifies_a_token() {
        let ring = KeyRing::generate(now()).unwrap();
        let keys = ring.public_set();
        let request = || pb::VerifyLicenseRequest {
            token: token(&ring),
            audience: AUDIENCE.into(),
            ..Default::default()
        };
        let verifiers = Verifiers::default();
        let broken = || Err::<bool, _>("I/O error".to_string());
        // Name, revision as read, revocation lookup, expected answer
        // (`None`: UNAVAILABLE; `Some(valid)`: an answer).
        type Row<'a> = (
            &'a str,
            Result<u64, String>,
            &'a dyn Fn(&[u8]) -> Result<bool, String>,
            Option<bool>,
        );
        let rows: [Row; 4] = [
            (
                "readable, not revoked: valid",
                Ok(3),
                &|_| Ok(false),
                Some(true),
            ),
            (
                "readable, revoked: an answer, not valid",
                Ok(3),
                &|_| Ok(true),
                Some(false),
            ),
            (
                "revocations unreadable: UNAVAILABLE",
                Ok(3),
                &|_| broken(),
                None,
            ),
            (
                "revision unreadable: UNAVAILABLE",
                Err("I/O error".into()),
                &|_| Ok(false),
                None,
            ),
        ];
        for (row, revision, lookup, expected) in rows {
            let answer = verify_against(&verifiers, &keys, request(), now(), revision, lookup);
            match expected {
                Some(valid) => assert_eq!(answer.unwrap().valid, valid, "{row}"),
                None => {
                    let status = answer.expect_err(row);
                    assert_eq!(status.code(), tonic::Code::Unavailable, "{row}");
                }
            }
        }
    }
}
