//! Subjects of an account, and entitlements: grant, read, replace, and the
//! lifecycle actions (extend, seats, suspend, resume, revoke). Every change
//! reaches running applications at their next check: no new license file.

use super::{
    commit, list, path_id, read, route, AccountKeys, Body, Doc, Method, Page, PageQuery, Route,
    SchemaRef, PAGE_QUERY,
};
use super::{Path, Query};
use crate::auth::Caller;
use crate::problem::Problem;
use crate::store::OriginStore;
use crate::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Json;
use serde::Deserialize;
use tollgate_model::*;
use tollgate_origin::{keys, EntitlementChange, Op, Scope};

async fn put_subject<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path((account, subject)): Path<(String, String)>,
    Body(body): Body<Subject>,
) -> Result<Response, Problem> {
    let account: AccountId = path_id(account)?;
    let subject: SubjectId = path_id(subject)?;
    if body.account != account || body.id != subject {
        return Err(Problem::invalid(
            "the body's account and id must match the path",
        ));
    }
    commit(&state, &caller, &headers, Op::PutSubject(body)).await
}

async fn get_subject<S: OriginStore>(
    State(state): State<AppState<S>>,
    Path((account, subject)): Path<(String, String)>,
) -> Result<Json<Subject>, Problem> {
    let account: AccountId = path_id(account)?;
    let subject: SubjectId = path_id(subject)?;
    read(
        &state,
        &keys::subject(&account, &subject),
        &format!("subject {subject} in account {account}"),
    )
    .map(Json)
}

async fn delete_subject<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path((account, subject)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let account: AccountId = path_id(account)?;
    let subject: SubjectId = path_id(subject)?;
    commit(
        &state,
        &caller,
        &headers,
        Op::DeleteSubject { account, subject },
    )
    .await
}

async fn list_subjects<S: OriginStore>(
    State(state): State<AppState<S>>,
    Path(account): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<Subject>>, Problem> {
    let account: AccountId = path_id(account)?;
    list(&state, &format!("subject/{account}/"), &page).map(Json)
}

async fn account_entitlements<S: OriginStore>(
    State(state): State<AppState<S>>,
    Path(account): Path<String>,
) -> Result<Json<Page<Entitlement>>, Problem> {
    let account: AccountId = path_id(account)?;
    let _: Account = read(
        &state,
        &keys::account(&account),
        &format!("account {account}"),
    )?;
    let ids: Vec<EntitlementId> = match state.store.get(&keys::account_entitlements(&account))? {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            Problem::internal(format!("stored entitlement list is unreadable: {e}"))
        })?,
        None => Vec::new(),
    };
    let items = ids
        .iter()
        .map(|id| read(&state, &keys::entitlement(id), &format!("entitlement {id}")))
        .collect::<Result<_, _>>()?;
    Ok(Json(Page {
        items,
        next_after: None,
    }))
}

async fn grant<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body<Entitlement>,
) -> Result<Response, Problem> {
    commit(&state, &caller, &headers, Op::Grant(body)).await
}

async fn get_entitlement<S: OriginStore>(
    State(state): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<Json<Entitlement>, Problem> {
    let id: EntitlementId = path_id(id)?;
    read(
        &state,
        &keys::entitlement(&id),
        &format!("entitlement {id}"),
    )
    .map(Json)
}

async fn change<S: OriginStore>(
    state: &AppState<S>,
    caller: &Caller,
    headers: &HeaderMap,
    id: String,
    change: EntitlementChange,
) -> Result<Response, Problem> {
    let id: EntitlementId = path_id(id)?;
    commit(state, caller, headers, Op::ChangeEntitlement { id, change }).await
}

async fn replace<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body<Entitlement>,
) -> Result<Response, Problem> {
    change(
        &state,
        &caller,
        &headers,
        id,
        EntitlementChange::Replace(Box::new(body)),
    )
    .await
}

#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Extend {
    /// `null`: perpetual.
    valid_until: Option<UnixSeconds>,
}

async fn extend<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(body): Body<Extend>,
) -> Result<Response, Problem> {
    change(
        &state,
        &caller,
        &headers,
        id,
        EntitlementChange::Extend {
            valid_until: body.valid_until,
        },
    )
    .await
}

async fn set_seats<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
    Body(seats): Body<Option<Seats>>,
) -> Result<Response, Problem> {
    change(
        &state,
        &caller,
        &headers,
        id,
        EntitlementChange::SetSeats(seats),
    )
    .await
}

async fn suspend<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    change(&state, &caller, &headers, id, EntitlementChange::Suspend).await
}

async fn resume<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    change(&state, &caller, &headers, id, EntitlementChange::Resume).await
}

async fn revoke<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    change(&state, &caller, &headers, id, EntitlementChange::Revoke).await
}

pub fn routes<S: OriginStore>() -> Vec<Route<S>> {
    let subject = "/v1/accounts/{account}/subjects/{subject}";
    let action = |path: &'static str, handler, summary: &'static str| {
        route(
            Method::Post,
            path,
            handler,
            Doc::new("entitlements", summary, Some(Scope::AccountsWrite)),
        )
    };
    vec![
        route(
            Method::Get,
            "/v1/accounts/{account}/subjects",
            get(list_subjects::<S>),
            Doc::new(
                "accounts",
                "List an account's users and devices.",
                Some(Scope::Read),
            )
            .ok(SchemaRef::page_of::<Subject>())
            .query(PAGE_QUERY)
            .account_keys(AccountKeys::OwnAccount),
        ),
        route(
            Method::Put,
            subject,
            put(put_subject::<S>),
            Doc::new(
                "accounts",
                "Create or replace a user or device.",
                Some(Scope::AccountsWrite),
            )
            .body(SchemaRef::of::<Subject>())
            .account_keys(AccountKeys::OwnAccount),
        ),
        route(
            Method::Get,
            subject,
            get(get_subject::<S>),
            Doc::new("accounts", "Read a user or device.", Some(Scope::Read))
                .ok(SchemaRef::of::<Subject>())
                .account_keys(AccountKeys::OwnAccount),
        ),
        route(
            Method::Delete,
            subject,
            delete(delete_subject::<S>),
            Doc::new(
                "accounts",
                "Remove a user or device.",
                Some(Scope::AccountsWrite),
            )
            .account_keys(AccountKeys::OwnAccount),
        ),
        route(
            Method::Get,
            "/v1/accounts/{account}/entitlements",
            get(account_entitlements::<S>),
            Doc::new(
                "entitlements",
                "Every entitlement of an account.",
                Some(Scope::Read),
            )
            .ok(SchemaRef::page_of::<Entitlement>())
            .account_keys(AccountKeys::OwnAccount),
        ),
        route(
            Method::Post,
            "/v1/entitlements",
            post(grant::<S>),
            Doc::new(
                "entitlements",
                "Grant a new entitlement.",
                Some(Scope::AccountsWrite),
            )
            .body(SchemaRef::of::<Entitlement>()),
        ),
        route(
            Method::Get,
            "/v1/entitlements/{id}",
            get(get_entitlement::<S>),
            Doc::new("entitlements", "Read an entitlement.", Some(Scope::Read))
                .ok(SchemaRef::of::<Entitlement>()),
        ),
        route(
            Method::Put,
            "/v1/entitlements/{id}",
            put(replace::<S>),
            Doc::new(
                "entitlements",
                "Change an entitlement (id and account stay).",
                Some(Scope::AccountsWrite),
            )
            .body(SchemaRef::of::<Entitlement>()),
        ),
        route(
            Method::Post,
            "/v1/entitlements/{id}/extend",
            post(extend::<S>),
            Doc::new(
                "entitlements",
                "Move valid_until (null: perpetual).",
                Some(Scope::AccountsWrite),
            )
            .body(SchemaRef::of::<Extend>()),
        ),
        route(
            Method::Put,
            "/v1/entitlements/{id}/seats",
            put(set_seats::<S>),
            Doc::new(
                "entitlements",
                "Set the seats (null: no seat limit).",
                Some(Scope::AccountsWrite),
            )
            .body(SchemaRef::of::<Seats>()),
        ),
        action(
            "/v1/entitlements/{id}/suspend",
            post(suspend::<S>),
            "Suspend an entitlement.",
        ),
        action(
            "/v1/entitlements/{id}/resume",
            post(resume::<S>),
            "Resume a suspended entitlement.",
        ),
        action(
            "/v1/entitlements/{id}/revoke",
            post(revoke::<S>),
            "Revoke an entitlement for good.",
        ),
    ]
}
