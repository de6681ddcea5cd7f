//! License verification as every node does it: against a key set and the
//! revocations the node holds (the origin's own, or a region's replica of
//! them), with verifiers cached per audience. The origin's and a region's
//! `Licenses` services both answer `VerifyLicense` through here.

use crate::clock::now;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tollgate_license::{Revocations, Verification, Verifier, VerifyRequest};
use tollgate_origin::keys;
use tollgate_proto::license::v1 as pb;
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

/// Revocations as a key-value state holds them (the origin's, or a
/// region's replica of them).
pub struct StateRevocations<'a> {
    pub contains: &'a dyn Fn(&[u8]) -> bool,
}

impl Revocations for StateRevocations<'_> {
    fn license_revoked(&self, jti: &str) -> bool {
        (self.contains)(&keys::revoked_license(jti))
    }
    fn certificate_revoked(&self, serial: &str) -> bool {
        (self.contains)(&keys::revoked_certificate(serial))
    }
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
/// region's services alike: converted at the edge, answered on the wire. A
/// refusal is an answer (`valid: false` with its stable code), not an error.
pub fn verify(
    verifiers: &Verifiers,
    keys: &PublicKeySet,
    request: pb::VerifyLicenseRequest,
    contains: &dyn Fn(&[u8]) -> bool,
    revision: u64,
) -> Result<pb::VerifyLicenseResponse, Status> {
    let request =
        VerifyRequest::try_from(request).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let verifier = verifiers.get(keys, &request.audience)?;
    let outcome = verifier.verify(
        &request.token,
        now(),
        request.device_fingerprint.as_deref().map(str::as_bytes),
        &StateRevocations { contains },
    );
    Ok(Verification { outcome, revision }.into())
}
