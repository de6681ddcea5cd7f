//! Who may call the check port: application credentials the origin issued,
//! replicated here as a SHA-256 of the secret and verified locally (cut off
//! from the origin included). An application sends
//! `authorization: Bearer tgc_<id>.<secret>` with every call; the
//! credential names the accounts and products it covers and its verbs.
//!
//! - No credential: UNAUTHENTICATED `CREDENTIAL_REQUIRED` (unless the node
//!   runs with `[checks] credentials = "off"`, where a call without one is
//!   served and a presented one is still verified).
//! - Unknown id or wrong secret: UNAUTHENTICATED `CREDENTIAL_INVALID` (one
//!   message for both); revoked: UNAUTHENTICATED `CREDENTIAL_REVOKED`.
//! - Outside its scope: PERMISSION_DENIED `CREDENTIAL_SCOPE`, naming what
//!   was missing.
//!
//! Every refusal counts in `tollgate_check_port_refused_total{reason}`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use tollgate_model::{
    split_credential_token, AccountId, AppCredential, Catalog, FeatureId, ProductId, Verb,
};
use tollgate_server::grpc::error_status;
use tollgate_signing::digest::{constant_time_eq, sha256, sha256_from_hex};
use tonic::metadata::MetadataMap;
use tonic::{Code, Status};

/// The metric counting calls the check port refused, by reason.
pub const CHECK_PORT_REFUSED: &str = "tollgate_check_port_refused_total";

/// Whether the check port demands a credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CredentialMode {
    /// Every call presents a valid credential covering what it asks.
    #[default]
    Required,
    /// A call without a credential is served as if it held every scope (a
    /// deliberate, logged choice for private networks and benchmarks); a
    /// presented credential is still verified and its scope enforced.
    Off,
}

struct Refusals {
    required: metrics::Counter,
    invalid: metrics::Counter,
    revoked: metrics::Counter,
    scope: metrics::Counter,
}

fn refusals() -> &'static Refusals {
    static R: OnceLock<Refusals> = OnceLock::new();
    R.get_or_init(|| Refusals {
        required: metrics::counter!(CHECK_PORT_REFUSED, "reason" => "credential_required"),
        invalid: metrics::counter!(CHECK_PORT_REFUSED, "reason" => "credential_invalid"),
        revoked: metrics::counter!(CHECK_PORT_REFUSED, "reason" => "credential_revoked"),
        scope: metrics::counter!(CHECK_PORT_REFUSED, "reason" => "credential_scope"),
    })
}

struct Entry {
    credential: Arc<AppCredential>,
    secret_sha256: [u8; 32],
}

/// Every credential this node holds, at one applied revision.
#[derive(Default)]
pub struct Credentials {
    by_id: HashMap<String, Entry>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({} held)", self.by_id.len())
    }
}

impl Credentials {
    /// From the stored records; a record that does not hold a valid hash is
    /// an error (the state is not what the origin wrote).
    pub fn from_records(
        records: impl IntoIterator<Item = AppCredential>,
    ) -> Result<Credentials, String> {
        let mut by_id = HashMap::new();
        for credential in records {
            let secret_sha256 = sha256_from_hex(&credential.secret_sha256)
                .ok_or_else(|| format!("credential {} holds no valid SHA-256", credential.id))?;
            by_id.insert(
                credential.id.clone(),
                Entry {
                    credential: Arc::new(credential),
                    secret_sha256,
                },
            );
        }
        Ok(Credentials { by_id })
    }

    /// The credential a presented token proves.
    fn verify(&self, token: &str) -> Result<Arc<AppCredential>, Status> {
        let invalid = || {
            refusals().invalid.increment(1);
            error_status(
                Code::Unauthenticated,
                "CREDENTIAL_INVALID",
                "unknown or wrong application credential",
            )
        };
        let (id, secret) = split_credential_token(token).ok_or_else(invalid)?;
        let entry = self.by_id.get(id).ok_or_else(invalid)?;
        if !constant_time_eq(&sha256(secret.as_bytes()), &entry.secret_sha256) {
            return Err(invalid());
        }
        if entry.credential.is_revoked() {
            refusals().revoked.increment(1);
            return Err(error_status(
                Code::Unauthenticated,
                "CREDENTIAL_REVOKED",
                format!("application credential {id} is revoked"),
            ));
        }
        Ok(entry.credential.clone())
    }
}

/// How a node admits callers of its check port: whether they need a
/// credential, and the rate each may call at (per credential, or per IP
/// address for a call without one).
#[derive(Clone, Default)]
pub struct Gate {
    pub mode: CredentialMode,
    pub rate: Option<Arc<tollgate_server::limits::RateLimiter>>,
}

impl Gate {
    /// Counts one call of `caller` (from `peer`) against its rate:
    /// RESOURCE_EXHAUSTED `RATE_LIMITED` with `retry-after` past it.
    pub fn admit(&self, caller: &Caller, peer: Option<std::net::IpAddr>) -> Result<(), Status> {
        let Some(rate) = &self.rate else {
            return Ok(());
        };
        match (caller.id(), peer) {
            (Some(id), _) => rate.check_grpc("check", id),
            (None, Some(ip)) => rate.check_grpc("check", &format!("ip:{ip}")),
            (None, None) => Ok(()),
        }
    }
}

/// The metadata key a credential travels in.
pub const CREDENTIAL_METADATA_KEY: &str = "authorization";

/// Who is calling: the credential it proved, or `None` on a node whose
/// credentials are off and a call that presented none.
#[derive(Debug, Clone)]
pub struct Caller(Option<Arc<AppCredential>>);

/// The caller of a request, from its metadata.
pub fn authenticate(
    mode: CredentialMode,
    credentials: &Credentials,
    metadata: &MetadataMap,
) -> Result<Caller, Status> {
    let Some(value) = metadata.get(CREDENTIAL_METADATA_KEY) else {
        return match mode {
            CredentialMode::Off => Ok(Caller(None)),
            CredentialMode::Required => {
                refusals().required.increment(1);
                Err(error_status(
                    Code::Unauthenticated,
                    "CREDENTIAL_REQUIRED",
                    "an application credential is required: send the metadata \
                     authorization: Bearer tgc_<id>.<secret>",
                ))
            }
        };
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            refusals().invalid.increment(1);
            error_status(
                Code::Unauthenticated,
                "CREDENTIAL_INVALID",
                "expected authorization: Bearer tgc_<id>.<secret>",
            )
        })?;
    credentials.verify(token).map(|c| Caller(Some(c)))
}

fn out_of_scope(id: &str, what: String) -> Status {
    refusals().scope.increment(1);
    error_status(
        Code::PermissionDenied,
        "CREDENTIAL_SCOPE",
        format!("application credential {id} does not cover {what}"),
    )
}

impl Caller {
    /// A caller with every scope (tests, and nodes with credentials off).
    pub fn unrestricted() -> Caller {
        Caller(None)
    }

    /// The credential's id, when one was presented (the key rate limits
    /// count by).
    pub fn id(&self) -> Option<&str> {
        self.0.as_deref().map(|c| c.id.as_str())
    }

    /// The credential has `verb`.
    pub fn verb(&self, verb: Verb) -> Result<(), Status> {
        match &self.0 {
            Some(c) if !c.verbs.contains(&verb) => {
                Err(out_of_scope(&c.id, format!("the verb {}", verb.name())))
            }
            _ => Ok(()),
        }
    }

    /// The credential has `verb` for `account`.
    pub fn account(&self, verb: Verb, account: &AccountId) -> Result<(), Status> {
        self.verb(verb)?;
        match &self.0 {
            Some(c) if !c.accounts.covers(account) => {
                Err(out_of_scope(&c.id, format!("the account {account}")))
            }
            _ => Ok(()),
        }
    }

    /// The credential covers `product`.
    pub fn product(&self, product: &ProductId) -> Result<(), Status> {
        match &self.0 {
            Some(c) if !c.products.covers(product) => {
                Err(out_of_scope(&c.id, format!("the product {product}")))
            }
            _ => Ok(()),
        }
    }

    /// The credential covers the product `feature` belongs to. A feature
    /// the catalog does not know belongs to no product: only a credential
    /// for every product may ask about it (the engine then answers
    /// NOT_ENTITLED).
    pub fn feature(&self, catalog: &Catalog, feature: &FeatureId) -> Result<(), Status> {
        let Some(c) = &self.0 else { return Ok(()) };
        if c.products.is_every() {
            return Ok(());
        }
        match catalog.features.get(feature) {
            Some(f) => self.product(&f.product),
            None => Err(out_of_scope(
                &c.id,
                format!("the unknown feature {feature}"),
            )),
        }
    }

    /// The credential covers every product (what a stream of an account's
    /// whole data needs).
    pub fn every_product(&self) -> Result<(), Status> {
        match &self.0 {
            Some(c) if !c.products.is_every() => {
                Err(out_of_scope(&c.id, "every product".to_string()))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_model::{Targets, UnixSeconds};
    use tollgate_signing::digest::sha256_hex;

    fn held(id: &str, secret: &str, accounts: Targets<AccountId>, verbs: &[Verb]) -> AppCredential {
        AppCredential {
            id: id.into(),
            name: id.into(),
            secret_sha256: sha256_hex(secret.as_bytes()),
            accounts,
            products: Targets::Every,
            verbs: verbs.iter().copied().collect(),
            created_at: UnixSeconds(1),
            revoked_at: None,
        }
    }

    fn metadata(value: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert(CREDENTIAL_METADATA_KEY, value.parse().unwrap());
        m
    }

    fn code(status: Status) -> String {
        status
            .metadata()
            .get("tollgate-error-code")
            .unwrap()
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn a_token_is_verified_against_the_hash_and_its_scope() {
        let acme = AccountId::new("acme").unwrap();
        let other = AccountId::new("globex").unwrap();
        let mut revoked = held("cred-2", "s2", Targets::Every, &[Verb::Check]);
        revoked.revoked_at = Some(UnixSeconds(2));
        let creds = Credentials::from_records([
            held(
                "cred-1",
                "s1",
                Targets::Only([acme.clone()].into()),
                &[Verb::Check],
            ),
            revoked,
        ])
        .unwrap();
        let mode = CredentialMode::Required;
        let caller = authenticate(mode, &creds, &metadata("Bearer tgc_cred-1.s1")).unwrap();
        assert_eq!(caller.id(), Some("cred-1"));
        assert!(caller.account(Verb::Check, &acme).is_ok());
        assert_eq!(
            code(caller.account(Verb::Check, &other).unwrap_err()),
            "CREDENTIAL_SCOPE"
        );
        assert_eq!(
            code(caller.account(Verb::Seats, &acme).unwrap_err()),
            "CREDENTIAL_SCOPE"
        );
        let rows = [
            ("Bearer tgc_cred-1.wrong", "CREDENTIAL_INVALID"),
            ("Bearer tgc_cred-9.s1", "CREDENTIAL_INVALID"),
            ("tgc_cred-1.s1", "CREDENTIAL_INVALID"),
            ("Bearer tgc_cred-2.s2", "CREDENTIAL_REVOKED"),
            ("Bearer tgc_cred-2.nope", "CREDENTIAL_INVALID"),
        ];
        for (value, expected) in rows {
            let status = authenticate(mode, &creds, &metadata(value)).unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "{value}");
            assert_eq!(code(status), expected, "{value}");
        }
        let none = authenticate(mode, &creds, &MetadataMap::new()).unwrap_err();
        assert_eq!(code(none), "CREDENTIAL_REQUIRED");
        // Off: nothing presented is served, a bad token is still refused.
        assert!(authenticate(CredentialMode::Off, &creds, &MetadataMap::new()).is_ok());
        assert!(authenticate(
            CredentialMode::Off,
            &creds,
            &metadata("Bearer tgc_cred-1.x")
        )
        .is_err());
    }
}
