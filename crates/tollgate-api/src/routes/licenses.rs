//! License tokens, region certificates and key rotation over REST. The work
//! is in [`crate::licensing`], shared with the origin's gRPC service.

use super::{
    list, path_id, reason, route, AccountKeys, Body, Doc, Method, Page, PageQuery, Route,
    SchemaRef, PAGE_QUERY,
};
use super::{Path, Query};
use crate::auth::Caller;
use crate::licensing::{
    certify_region, issue_license, Actor, CertifyRegion, IssueLicense, IssuedCertificate,
    IssuedLicense, ROTATION_OVERLAP_DEFAULT_SECONDS,
};
use crate::problem::Problem;
use crate::store::OriginStore;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::{Deserialize, Serialize};
use tollgate_model::{AccountId, UnixSeconds};
use tollgate_origin::licenses::{CertificateRecord, LicenseRecord};
use tollgate_origin::{keys, Op, Scope};
use tollgate_signing::{KeyId, PublicKeySet};

fn actor(caller: &Caller, headers: &HeaderMap) -> Result<Actor, Problem> {
    Ok(Actor {
        id: caller.key.id.clone(),
        reason: reason(headers)?,
    })
}

/// A JSON body that may be absent: an empty body or `null` means every
/// default.
fn optional_body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, Problem> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice::<Option<T>>(bytes)
        .map(Option::unwrap_or_default)
        .map_err(|e| Problem::invalid(format!("body: {e}")))
}

fn created<T: Serialize>(revision: u64, body: T) -> Response {
    (
        StatusCode::CREATED,
        [("x-tollgate-revision", revision.to_string())],
        Json(body),
    )
        .into_response()
}

async fn issue<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(account): Path<String>,
    Body(request): Body<IssueLicense>,
) -> Result<Response, Problem> {
    let account: AccountId = path_id(account)?;
    let actor = actor(&caller, &headers)?;
    let issued = issue_license(&state, &actor, account, request, state.clock.now()).await?;
    tracing::info!(id = %issued.id, kid = %issued.kid, expires_at = issued.expires_at.0, "Issued a license token.");
    Ok(created(issued.revision, issued))
}

async fn licenses<S: OriginStore>(
    State(state): State<AppState<S>>,
    Path(account): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<LicenseRecord>>, Problem> {
    let account: AccountId = path_id(account)?;
    let prefix = String::from_utf8(keys::license(&account, ""))
        .map_err(|_| Problem::internal("license keys are ASCII"))?;
    Ok(Json(list(&state, &prefix, &page)?))
}

/// What revoking a token needs beyond its id.
#[derive(utoipa::ToSchema, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeLicense {
    /// Only for a token a region issued (the origin has no record of it):
    /// its expiry, after which the revocation can be forgotten.
    #[serde(default)]
    expires_at: Option<UnixSeconds>,
}

async fn revoke_license<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path((account, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Problem> {
    let account: AccountId = path_id(account)?;
    let expires_at = optional_body::<RevokeLicense>(&body)?.expires_at;
    // A revocation without an origin record is keyed by the token id
    // alone, whoever's token it is: only the tenant may make one.
    if expires_at.is_some() && caller.account().is_some() {
        return Err(Problem::forbidden(
            "an account's key revokes only tokens the origin issued for it; expires_at is for the tenant's keys",
        ));
    }
    super::commit(
        &state,
        &caller,
        &headers,
        Op::RevokeLicense {
            account,
            id,
            expires_at,
        },
    )
    .await
}

async fn certify<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(region): Path<String>,
    Body(request): Body<CertifyRegion>,
) -> Result<Response, Problem> {
    if !tollgate_license::valid_region_name(&region) {
        return Err(Problem::bad_request(
            "path: a region name is 1..=64 bytes of [a-z0-9-]",
        ));
    }
    let actor = actor(&caller, &headers)?;
    let issued = certify_region(&state, &actor, region, request, state.clock.now()).await?;
    tracing::info!(serial = %issued.serial, region = %issued.region, kid = %issued.kid, "Certified a region key.");
    Ok(created(issued.revision, issued))
}

async fn certificates<S: OriginStore>(
    State(state): State<AppState<S>>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<CertificateRecord>>, Problem> {
    Ok(Json(list(&state, keys::CERTIFICATE_PREFIX, &page)?))
}

async fn revoke_certificate<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(serial): Path<String>,
) -> Result<Response, Problem> {
    super::commit(&state, &caller, &headers, Op::RevokeCertificate { serial }).await
}

#[derive(utoipa::ToSchema, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotate {
    /// How long the old key keeps verifying (default 7 days).
    #[serde(default)]
    overlap_seconds: Option<u64>,
}

/// The key set after a rotation or a retirement.
#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct KeysChanged {
    /// The key that signs from now on.
    pub active_kid: KeyId,
    pub keys: PublicKeySet,
}

fn keys_changed<S>(state: &AppState<S>) -> Result<Json<KeysChanged>, Problem> {
    let ring = state.keys.current()?;
    Ok(Json(KeysChanged {
        active_kid: ring.active_kid().clone(),
        keys: ring.public_set(),
    }))
}

async fn rotate<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<KeysChanged>, Problem> {
    let overlap = optional_body::<Rotate>(&body)?
        .overlap_seconds
        .unwrap_or(ROTATION_OVERLAP_DEFAULT_SECONDS);
    let actor = actor(&caller, &headers)?;
    state
        .keys
        .rotate(&*state.store, &actor, state.clock.now(), overlap)
        .await?;
    keys_changed(&state)
}

async fn retire<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(kid): Path<String>,
) -> Result<Json<KeysChanged>, Problem> {
    let kid = KeyId::try_from(kid).map_err(|e| Problem::bad_request(format!("path: {e}")))?;
    let actor = actor(&caller, &headers)?;
    state
        .keys
        .retire(&*state.store, &actor, state.clock.now(), &kid)
        .await?;
    keys_changed(&state)
}

pub fn routes<S: OriginStore>() -> Vec<Route<S>> {
    vec![
        route(
            Method::Post,
            "/v1/accounts/{account}/licenses",
            post(issue::<S>),
            Doc {
                ok_status: 201,
                ..Doc::new(
                    "licenses",
                    "Issue a signed license token (PASETO v4.public) carrying the account's \
                     (or one subject's) entitlements, for use offline. The token is shown once.",
                    Some(Scope::AccountsWrite),
                )
                .body(SchemaRef::of::<IssueLicense>())
                .ok(SchemaRef::of::<IssuedLicense>())
                .account_keys(AccountKeys::OwnAccount)
            },
        ),
        route(
            Method::Get,
            "/v1/accounts/{account}/licenses",
            get(licenses::<S>),
            Doc::new(
                "licenses",
                "The license tokens issued for an account (records, not tokens).",
                Some(Scope::Read),
            )
            .ok(SchemaRef::page_of::<LicenseRecord>())
            .query(PAGE_QUERY)
            .account_keys(AccountKeys::OwnAccount),
        ),
        route(
            Method::Post,
            "/v1/accounts/{account}/licenses/{id}/revoke",
            post(revoke_license::<S>),
            Doc::new(
                "licenses",
                "Revoke a license token: every region, and every SDK replica, refuses it once \
                 the revocation reaches it. An account's own key revokes only tokens the \
                 origin issued for it (no expires_at).",
                Some(Scope::AccountsWrite),
            )
            .body(SchemaRef::of::<RevokeLicense>())
            .account_keys(AccountKeys::OwnAccount),
        ),
        route(
            Method::Post,
            "/v1/regions/{region}/certificates",
            post(certify::<S>),
            Doc {
                ok_status: 201,
                ..Doc::new(
                    "keys",
                    "Certify a region's Ed25519 key, so the region can sign short-lived \
                     tokens while cut off from the origin.",
                    Some(Scope::Admin),
                )
                .body(SchemaRef::of::<CertifyRegion>())
                .ok(SchemaRef::of::<IssuedCertificate>())
            },
        ),
        route(
            Method::Get,
            "/v1/certificates",
            get(certificates::<S>),
            Doc::new(
                "keys",
                "The region certificates the origin signed.",
                Some(Scope::Read),
            )
            .ok(SchemaRef::page_of::<CertificateRecord>())
            .query(PAGE_QUERY),
        ),
        route(
            Method::Post,
            "/v1/certificates/{serial}/revoke",
            post(revoke_certificate::<S>),
            Doc::new(
                "keys",
                "Revoke a region certificate: tokens its key signed are refused everywhere.",
                Some(Scope::Admin),
            ),
        ),
        route(
            Method::Post,
            "/v1/keys/rotate",
            post(rotate::<S>),
            Doc::new(
                "keys",
                "Make a new signing key active; the old one keeps verifying for the overlap \
                 window (regions accept the new key because the old one endorses it).",
                Some(Scope::Admin),
            )
            .body(SchemaRef::of::<Rotate>())
            .ok(SchemaRef::of::<KeysChanged>()),
        ),
        route(
            Method::Post,
            "/v1/keys/{kid}/retire",
            post(retire::<S>),
            Doc::new(
                "keys",
                "Retire a key that no longer signs: nothing it signed verifies any more.",
                Some(Scope::Admin),
            )
            .ok(SchemaRef::of::<KeysChanged>()),
        ),
    ]
}
