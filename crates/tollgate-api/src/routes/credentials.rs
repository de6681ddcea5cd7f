//! Application credentials: what applications present on a region's check
//! port (`authorization: Bearer tgc_<id>.<secret>`). Created here, shown
//! once, replicated to every region as a hash of the secret, and revoked
//! here like any other change.

use super::{commit, list, read, route, Body, Doc, Method, Page, PageQuery, Route};
use super::{Path, Query, SchemaRef, PAGE_QUERY};
use crate::app_credentials::{issue_credential, NewCredential};
use crate::auth::Caller;
use crate::problem::Problem;
use crate::store::OriginStore;
use crate::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Json;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use tollgate_model::{AccountId, AppCredential, ProductId, Targets, UnixSeconds, Verb};
use tollgate_origin::{keys, Op, Scope};

/// A credential as listed: never its secret or hash.
#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct CredentialView {
    pub id: String,
    pub name: String,
    #[schema(value_type = Object)]
    pub accounts: Targets<AccountId>,
    #[schema(value_type = Object)]
    pub products: Targets<ProductId>,
    pub verbs: BTreeSet<Verb>,
    pub created_at: UnixSeconds,
    pub revoked_at: Option<UnixSeconds>,
}

impl From<AppCredential> for CredentialView {
    fn from(c: AppCredential) -> Self {
        CredentialView {
            id: c.id,
            name: c.name,
            accounts: c.accounts,
            products: c.products,
            verbs: c.verbs,
            created_at: c.created_at,
            revoked_at: c.revoked_at,
        }
    }
}

/// A new credential with its token, shown once.
#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct IssuedCredential {
    /// `tgc_<id>.<secret>`: what the application sends. Not stored anywhere.
    pub token: String,
    pub credential: CredentialView,
    /// The revision that created it: a region has it once it applied this.
    pub revision: u64,
}

async fn create<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body<NewCredential>,
) -> Result<Response, Problem> {
    let (token, record) = issue_credential(body, state.clock.now())?;
    // Said here for a clear answer; the state machine checks it again.
    record
        .validate()
        .map_err(|e| Problem::invalid(e.to_string()))?;
    let response = commit(&state, &caller, &headers, Op::PutCredential(record.clone())).await?;
    let revision: u64 = response
        .headers()
        .get("x-tollgate-revision")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Problem::internal("the commit named no revision"))?;
    Ok((
        StatusCode::CREATED,
        [("x-tollgate-revision", revision.to_string())],
        Json(IssuedCredential {
            token,
            credential: record.into(),
            revision,
        }),
    )
        .into_response())
}

fn credential_id(raw: String) -> Result<String, Problem> {
    tollgate_model::validate_credential_id(&raw)
        .map_err(|e| Problem::bad_request(format!("path: {e}")))?;
    Ok(raw)
}

async fn get_one<S: OriginStore>(
    State(state): State<AppState<S>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<CredentialView>, Problem> {
    let id = credential_id(id)?;
    let record: AppCredential = read(&state, &keys::credential(&id), &format!("credential {id}"))?;
    Ok(Json(record.into()))
}

async fn list_all<S: OriginStore>(
    State(state): State<AppState<S>>,
    _caller: Caller,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<CredentialView>>, Problem> {
    let page: Page<AppCredential> = list(&state, keys::CREDENTIAL_PREFIX, &page)?;
    Ok(Json(Page {
        items: page.items.into_iter().map(Into::into).collect(),
        next_after: page.next_after,
    }))
}

async fn revoke<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = credential_id(id)?;
    commit(&state, &caller, &headers, Op::RevokeCredential { id }).await
}

pub fn routes<S: OriginStore>() -> Vec<Route<S>> {
    vec![
        route(
            Method::Post,
            "/v1/credentials",
            post(create::<S>),
            Doc {
                ok_status: 201,
                ..Doc::new(
                    "credentials",
                    "Create an application credential for region check ports; its token \
                     (`tgc_<id>.<secret>`) is shown once. Scoped to accounts, products and verbs; \
                     regions verify it locally once they applied the returned revision.",
                    Some(Scope::Admin),
                )
                .body(SchemaRef::of::<NewCredential>())
                .ok(SchemaRef::of::<IssuedCredential>())
            },
        ),
        route(
            Method::Get,
            "/v1/credentials",
            get(list_all::<S>),
            Doc::new(
                "credentials",
                "List application credentials (never their secrets).",
                Some(Scope::Admin),
            )
            .ok(SchemaRef::page_of::<CredentialView>())
            .query(PAGE_QUERY),
        ),
        route(
            Method::Get,
            "/v1/credentials/{id}",
            get(get_one::<S>),
            Doc::new(
                "credentials",
                "One application credential (never its secret).",
                Some(Scope::Admin),
            )
            .ok(SchemaRef::of::<CredentialView>()),
        ),
        route(
            Method::Post,
            "/v1/credentials/{id}/revoke",
            post(revoke::<S>),
            Doc::new(
                "credentials",
                "Revoke an application credential: every region refuses it once it applied \
                 the revision returned.",
                Some(Scope::Admin),
            ),
        ),
    ]
}
