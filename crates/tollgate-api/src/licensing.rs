//! License tokens, region certificates and the origin's signing keys: the
//! operations behind `/v1/accounts/{id}/licenses`, `/v1/regions/{region}/
//! certificates` and `/v1/keys`, shared with the origin's gRPC service so
//! both edges issue exactly the same tokens.
//!
//! Signing happens here, at the node, with the origin's active key; the
//! state machine then records what was signed (`Op::IssueLicense`,
//! `Op::CertifyRegion`). A token is handed out only after its record has
//! committed, so every token in a customer's hands can be listed and revoked.

use crate::problem::Problem;
use crate::store::OriginStore;
use crate::AppState;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use tollgate_license::{Issuer, LicenseClaims, RandomId, RegionCertificate, ISSUER_ORIGIN};
use tollgate_model::{AccountId, Dataset, EntitlementId, SubjectId, UnixSeconds};
use tollgate_origin::licenses::{CertificateRecord, LicenseRecord, AUDIENCE_BYTES_MAX};
use tollgate_origin::SigningRing;
use tollgate_origin::{dataset_from_entries, keys, Op, OriginCommand, OriginResponse, RejectCode};
use tollgate_signing::{KeyId, KeyRing, PublicKeySet, SealKey, SealedKey, SharedRing};

/// A license lives this long when the request does not say.
pub const LICENSE_TTL_DEFAULT_SECONDS: u64 = 30 * 24 * 3600;
/// The longest a license may live: a year and a month of slack.
pub const LICENSE_TTL_MAX_SECONDS: u64 = 400 * 24 * 3600;
/// Longest device fingerprint, in bytes.
pub const DEVICE_FINGERPRINT_LEN_MAX: usize = 256;
/// A region certificate lives this long when the request does not say.
pub const CERTIFICATE_VALIDITY_DEFAULT_SECONDS: u64 = 7 * 24 * 3600;
/// The longest a region certificate may live.
pub const CERTIFICATE_VALIDITY_MAX_SECONDS: u64 = 90 * 24 * 3600;
/// The longest token a region may sign, when the request does not say.
pub const REGION_TOKEN_TTL_DEFAULT_SECONDS: u64 = 3600;
/// The longest token any region may ever sign.
pub const REGION_TOKEN_TTL_MAX_SECONDS: u64 = 24 * 3600;
/// An old key keeps verifying this long after a rotation, when the request
/// does not say.
pub const ROTATION_OVERLAP_DEFAULT_SECONDS: u64 = 7 * 24 * 3600;

/// The origin's signing keys, as the REST API and the gRPC service share
/// them with the changefeed and the webhooks: the ring this node signs
/// with, loaded from the cluster's replicated ring
/// ([`keys::SIGNING_RING`]) and unsealed with this node's seal key. A
/// rotation or a retirement is a command of the origin's log, so it
/// reaches every origin node, and the audit log, like any other change.
#[derive(Clone)]
pub struct OriginKeys {
    pub ring: SharedRing,
    seal: Arc<SealKey>,
    /// The stored ring this node last loaded, as stored: an unchanged ring
    /// is recognised by comparing bytes, without decoding or unsealing it.
    loaded: Arc<Mutex<Option<Vec<u8>>>>,
}

/// How long a node waits to apply a key change it committed through the
/// leader before answering.
const APPLIED_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What [`OriginKeys::load`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysLoad {
    /// The cluster has no signing keys yet.
    NotYet,
    /// The ring this node holds is the replicated one.
    Unchanged,
    /// This node now signs with the ring of `revision`.
    Loaded {
        revision: u64,
        active: KeyId,
        keys: usize,
    },
}

impl OriginKeys {
    /// No ring until [`OriginKeys::load`] finds the cluster's; `seal` opens
    /// its secrets and seals new ones.
    pub fn new(seal: SealKey) -> OriginKeys {
        OriginKeys {
            ring: SharedRing::empty(),
            seal: Arc::new(seal),
            loaded: Arc::new(Mutex::new(None)),
        }
    }

    /// The fingerprint of this node's seal key (never the key).
    pub fn seal_fingerprint(&self) -> &str {
        self.seal.fingerprint()
    }

    /// The ring to sign with now: 503 `KEYS_NOT_LOADED` until this node has
    /// loaded the cluster's.
    pub fn current(&self) -> Result<Arc<KeyRing>, Problem> {
        self.ring.current().map_err(|e| {
            Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "KEYS_NOT_LOADED",
                e.to_string(),
            )
        })
    }

    pub fn public_set(&self) -> Result<PublicKeySet, Problem> {
        Ok(self.current()?.public_set())
    }

    /// Loads the replicated ring if it changed since the last load. A ring
    /// this node cannot open (another seal key, an altered secret) is an
    /// error, and the node keeps the ring it had.
    pub fn load<S: OriginStore>(&self, store: &S) -> Result<KeysLoad, Problem> {
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| Problem::internal("the key ring's load lock is poisoned"))?;
        let Some(bytes) = store.get(keys::SIGNING_RING)? else {
            return Ok(KeysLoad::NotYet);
        };
        if loaded.as_deref() == Some(bytes.as_slice()) {
            return Ok(KeysLoad::Unchanged);
        }
        let stored: SigningRing = serde_json::from_slice(&bytes).map_err(|e| {
            Problem::internal(format!("the stored signing key ring is unreadable: {e}"))
        })?;
        let ring = KeyRing::unseal(&stored.keys, &self.seal)
            .map_err(|e| Problem::internal(format!("the origin's signing keys: {e}")))?;
        let active = ring.active_kid().clone();
        self.ring.replace(ring);
        *loaded = Some(bytes);
        Ok(KeysLoad::Loaded {
            revision: stored.revision,
            active,
            keys: stored.keys.len(),
        })
    }

    /// Gives the cluster its first keys if it has none: `import` (a ring
    /// read from a key file, as origins kept it before the ring was
    /// replicated) or a new key. Safe on every node at once: the first
    /// commit wins, the others change nothing. Then loads the ring.
    pub async fn initialize<S: OriginStore>(
        &self,
        store: &S,
        actor: &Actor,
        import: Option<&KeyRing>,
        now: UnixSeconds,
    ) -> Result<KeysLoad, Problem> {
        if store.get(keys::SIGNING_RING)?.is_none() {
            let keys = match import {
                Some(ring) => ring.seal(&self.seal),
                None => SealedKey::generate(now, &self.seal).map(|k| vec![k]),
            }
            .map_err(signing_problem)?;
            let revision = commit_op(store, actor, now, Op::InitSigningKeys { keys }).await?;
            store.wait_applied(revision, APPLIED_WAIT).await?;
        }
        self.load(store)
    }

    /// A new active key, sealed here and committed through the origin's
    /// log; the old one verifies `overlap_seconds` more.
    pub async fn rotate<S: OriginStore>(
        &self,
        store: &S,
        actor: &Actor,
        now: UnixSeconds,
        overlap_seconds: u64,
    ) -> Result<KeyId, Problem> {
        let key = SealedKey::generate(now, &self.seal).map_err(signing_problem)?;
        let kid = key.kid.clone();
        let revision = commit_op(
            store,
            actor,
            now,
            Op::RotateSigningKey {
                key,
                overlap_seconds,
            },
        )
        .await?;
        store.wait_applied(revision, APPLIED_WAIT).await?;
        self.load(store)?;
        tracing::info!(%kid, overlap_seconds, revision, actor = %actor.id, "Rotated the origin's signing key.");
        Ok(kid)
    }

    /// Retires a key that no longer signs: it verifies nothing from now on.
    pub async fn retire<S: OriginStore>(
        &self,
        store: &S,
        actor: &Actor,
        now: UnixSeconds,
        kid: &KeyId,
    ) -> Result<(), Problem> {
        let revision =
            commit_op(store, actor, now, Op::RetireSigningKey { kid: kid.clone() }).await?;
        store.wait_applied(revision, APPLIED_WAIT).await?;
        self.load(store)?;
        tracing::info!(%kid, revision, actor = %actor.id, "Retired an origin signing key.");
        Ok(())
    }
}

fn signing_problem(e: tollgate_signing::SigningError) -> Problem {
    use tollgate_signing::SigningError as E;
    match e {
        E::UnknownKey(_) => Problem::not_found(e.to_string()),
        E::RetireActive(_) | E::Full => Problem::conflict(e.to_string()),
        E::BadKeyId(_) => Problem::bad_request(e.to_string()),
        _ => Problem::internal(e.to_string()),
    }
}

/// A request for a license token.
#[derive(utoipa::ToSchema, Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IssueLicense {
    /// Issue for one subject (user or device) of the account; without it,
    /// for the whole account.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub subject: Option<SubjectId>,
    /// The product the token is for: its `aud`, which verifiers check.
    pub audience: String,
    /// How long the token is valid (default 30 days, at most 400 days).
    #[serde(default)]
    pub ttl_seconds: Option<u64>,
    /// Valid from (default: now).
    #[serde(default)]
    pub not_before: Option<UnixSeconds>,
    /// Binds the token to one device: a verifier must present the same
    /// fingerprint (the PASETO implicit assertion), so a copied token does
    /// not work elsewhere.
    #[serde(default)]
    pub device_fingerprint: Option<String>,
}

/// An issued license token. The token is shown once; the origin keeps only
/// its record.
#[derive(utoipa::ToSchema, Debug, Clone, Deserialize, Serialize)]
pub struct IssuedLicense {
    pub id: String,
    /// `v4.public.…`: what the customer carries (file or string).
    pub token: String,
    pub kid: String,
    pub issued_at: UnixSeconds,
    pub not_before: UnixSeconds,
    pub expires_at: UnixSeconds,
    /// The origin revision the token's entitlements were read at.
    pub entitlements_revision: u64,
    /// The revision the license's record committed under.
    pub revision: u64,
}

/// Who asks, for the audit log.
pub struct Actor {
    pub id: String,
    pub reason: Option<String>,
}

/// Commits `op`; the revision, or the rejection as a problem.
pub async fn commit_op<S: OriginStore>(
    store: &S,
    actor: &Actor,
    at: UnixSeconds,
    op: Op,
) -> Result<u64, Problem> {
    let command = OriginCommand {
        actor: actor.id.clone(),
        at,
        reason: actor.reason.clone(),
        op,
    };
    match store.write(command).await? {
        OriginResponse::Committed { revision, .. }
        | OriginResponse::Leased { revision, .. }
        | OriginResponse::Unchanged { revision, .. } => Ok(revision),
        OriginResponse::Rejected(r) => Err(match r.code {
            RejectCode::NotFound => Problem::not_found(r.message),
            RejectCode::Conflict => Problem::conflict(r.message),
            RejectCode::Invalid => Problem::invalid(r.message),
        }),
    }
}

fn read_u64<S: OriginStore>(store: &S, key: &[u8]) -> Result<u64, Problem> {
    match store.get(key)? {
        None => Ok(0),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| Problem::internal(format!("stored counter is unreadable: {e}"))),
    }
}

/// The catalog, the account, the subject (if any) and the account's
/// entitlements, read at one revision (retried if a commit lands between).
fn account_slice<S: OriginStore>(
    store: &S,
    account: &AccountId,
    subject: Option<&SubjectId>,
) -> Result<(Dataset, u64), Problem> {
    const ATTEMPTS_MAX: usize = 8;
    for _ in 0..ATTEMPTS_MAX {
        let before = read_u64(store, keys::HEAD_REVISION)?;
        let mut entries = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let chunk = store.scan(b"catalog/", after.as_deref(), crate::PAGE_LIMIT_MAX)?;
            let done = chunk.len() < crate::PAGE_LIMIT_MAX;
            after = chunk.last().map(|(k, _)| k.clone());
            entries.extend(chunk);
            if done {
                break;
            }
        }
        let account_key = keys::account(account);
        let Some(bytes) = store.get(&account_key)? else {
            return Err(Problem::not_found(format!("unknown account {account}")));
        };
        entries.push((account_key, bytes));
        if let Some(subject) = subject {
            let key = keys::subject(account, subject);
            let Some(bytes) = store.get(&key)? else {
                return Err(Problem::not_found(format!(
                    "unknown subject {subject} in account {account}"
                )));
            };
            entries.push((key, bytes));
        }
        let ids: Vec<EntitlementId> = match store.get(&keys::account_entitlements(account))? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Problem::internal(format!("stored entitlement index is unreadable: {e}"))
            })?,
            None => Vec::new(),
        };
        for id in ids {
            let key = keys::entitlement(&id);
            if let Some(bytes) = store.get(&key)? {
                entries.push((key, bytes));
            }
        }
        if read_u64(store, keys::HEAD_REVISION)? == before {
            let data = dataset_from_entries(entries).map_err(Problem::internal)?;
            return Ok((data, before));
        }
    }
    Err(Problem::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "UNAVAILABLE",
        "the origin's state kept changing; try again",
    ))
}

fn random_id() -> Result<RandomId, Problem> {
    let mut bytes = [0u8; 16];
    tollgate_clock::random::fill(&mut bytes)
        .map_err(|e| Problem::internal(format!("no randomness for an id: {e}")))?;
    Ok(RandomId::from_bytes(bytes))
}

/// Issues a license token for `account`, signed with the origin's active key.
pub async fn issue_license<S: OriginStore>(
    state: &AppState<S>,
    actor: &Actor,
    account: AccountId,
    request: IssueLicense,
    now: UnixSeconds,
) -> Result<IssuedLicense, Problem> {
    if request.audience.is_empty() || request.audience.len() > AUDIENCE_BYTES_MAX {
        return Err(Problem::invalid(format!(
            "audience must be 1..={AUDIENCE_BYTES_MAX} bytes"
        )));
    }
    let ttl = request.ttl_seconds.unwrap_or(LICENSE_TTL_DEFAULT_SECONDS);
    if ttl == 0 || ttl > LICENSE_TTL_MAX_SECONDS {
        return Err(Problem::invalid(format!(
            "ttl_seconds must be 1..={LICENSE_TTL_MAX_SECONDS}"
        )));
    }
    if let Some(fp) = &request.device_fingerprint {
        if fp.is_empty() || fp.len() > DEVICE_FINGERPRINT_LEN_MAX {
            return Err(Problem::invalid(format!(
                "device_fingerprint must be 1..={DEVICE_FINGERPRINT_LEN_MAX} bytes"
            )));
        }
    }
    let not_before = request.not_before.unwrap_or(now);
    let expires_at = not_before.plus_seconds(ttl);
    let (data, entitlements_revision) =
        account_slice(&*state.store, &account, request.subject.as_ref())?;
    let id = random_id()?;
    let claims = LicenseClaims {
        iss: ISSUER_ORIGIN.to_string(),
        sub: match &request.subject {
            Some(s) => format!("{account}/{s}"),
            None => account.to_string(),
        },
        aud: request.audience.clone(),
        iat: now,
        nbf: not_before,
        exp: expires_at,
        jti: id.clone(),
        account: account.clone(),
        subject: request.subject.clone(),
        revision: entitlements_revision,
        device_bound: request.device_fingerprint.is_some(),
        entitlements: tollgate_license::license_entitlements(&data, request.subject.as_ref(), now),
    };
    let (token, kid) = {
        let ring = state.keys.current()?;
        let issuer = Issuer::origin(&ring);
        let token = issuer
            .issue(
                &claims,
                request.device_fingerprint.as_deref().map(str::as_bytes),
            )
            .map_err(|e| Problem::invalid(e.to_string()))?;
        (token, ring.active_kid().to_string())
    };
    let record = LicenseRecord {
        id: id.to_string(),
        account: account.clone(),
        subject: request.subject,
        audience: request.audience,
        issued_at: now,
        not_before,
        expires_at,
        kid: kid.clone(),
        device_bound: claims.device_bound,
        entitlements_revision,
        revoked_at: None,
    };
    let revision = commit_op(&*state.store, actor, now, Op::IssueLicense(record)).await?;
    Ok(IssuedLicense {
        id: id.to_string(),
        token,
        kid,
        issued_at: now,
        not_before,
        expires_at,
        entitlements_revision,
        revision,
    })
}

/// A request to certify a region's key.
#[derive(utoipa::ToSchema, Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CertifyRegion {
    /// The region's Ed25519 public key, base64url without padding.
    pub public_key: String,
    /// How long the certificate is valid (default 7 days, at most 90).
    #[serde(default)]
    pub valid_seconds: Option<u64>,
    /// The longest token the region may sign (default 1 hour, at most 1 day).
    #[serde(default)]
    pub token_ttl_max_seconds: Option<u64>,
}

/// A region certificate, as the region presents it.
#[derive(utoipa::ToSchema, Debug, Clone, Deserialize, Serialize)]
pub struct IssuedCertificate {
    pub serial: String,
    pub region: String,
    pub kid: String,
    pub not_before: UnixSeconds,
    pub not_after: UnixSeconds,
    /// The signed certificate (JSON of `kid`, `payload`, `signature`): give it
    /// to the region's nodes as their certificate file.
    #[schema(value_type = Object)]
    pub certificate: tollgate_signing::Signed,
    pub revision: u64,
}

/// Certifies `public_key` as region `region`'s token-signing key.
pub async fn certify_region<S: OriginStore>(
    state: &AppState<S>,
    actor: &Actor,
    region: String,
    request: CertifyRegion,
    now: UnixSeconds,
) -> Result<IssuedCertificate, Problem> {
    let valid = request
        .valid_seconds
        .unwrap_or(CERTIFICATE_VALIDITY_DEFAULT_SECONDS);
    if valid == 0 || valid > CERTIFICATE_VALIDITY_MAX_SECONDS {
        return Err(Problem::invalid(format!(
            "valid_seconds must be 1..={CERTIFICATE_VALIDITY_MAX_SECONDS}"
        )));
    }
    let ttl_max = request
        .token_ttl_max_seconds
        .unwrap_or(REGION_TOKEN_TTL_DEFAULT_SECONDS);
    if ttl_max == 0 || ttl_max > REGION_TOKEN_TTL_MAX_SECONDS {
        return Err(Problem::invalid(format!(
            "token_ttl_max_seconds must be 1..={REGION_TOKEN_TTL_MAX_SECONDS}"
        )));
    }
    let public_key = parse_public_key(&request.public_key)?;
    let serial = random_id()?;
    let cert = RegionCertificate::new(
        serial.clone(),
        region.clone(),
        &public_key,
        now,
        now.plus_seconds(valid),
        ttl_max,
    );
    // Refuses a weak (small-order) key, among others.
    cert.check().map_err(|e| Problem::invalid(e.to_string()))?;
    let signed = {
        let ring = state.keys.current()?;
        tollgate_license::certify(&ring, &cert).map_err(|e| Problem::internal(e.to_string()))?
    };
    let record = CertificateRecord {
        serial: serial.to_string(),
        region: region.clone(),
        kid: cert.kid.to_string(),
        public_key: cert.public_key.clone(),
        not_before: cert.not_before,
        not_after: cert.not_after,
        certificate: serde_json::to_string(&signed).expect("a signed value serialises"),
        revoked_at: None,
    };
    let revision = commit_op(&*state.store, actor, now, Op::CertifyRegion(record)).await?;
    Ok(IssuedCertificate {
        serial: serial.to_string(),
        region,
        kid: cert.kid.to_string(),
        not_before: cert.not_before,
        not_after: cert.not_after,
        certificate: signed,
        revision,
    })
}

/// An Ed25519 public key in base64url without padding.
fn parse_public_key(text: &str) -> Result<ed25519_dalek::VerifyingKey, Problem> {
    use base64::Engine as _;
    let bytes: [u8; 32] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text.as_bytes())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            Problem::invalid("public_key must be 32 bytes in base64url without padding")
        })?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes)
        .map_err(|_| Problem::invalid("public_key is not a valid Ed25519 point"))
}
