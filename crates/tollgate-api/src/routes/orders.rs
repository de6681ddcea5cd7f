//! Orders from a CRM or billing system, and access requests.

use super::Path;
use super::{commit, path_id, read, route, AccountKeys, Body, Doc, Method, Route, SchemaRef};
use crate::auth::Caller;
use crate::problem::Problem;
use crate::store::OriginStore;
use crate::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Json;
use tollgate_model::{AccountId, OrderId};
use tollgate_origin::{keys, AccessRequest, AccessRequestSpec, Op, Order, OrderRecord, Scope};

async fn place<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Body(order): Body<Order>,
) -> Result<Response, Problem> {
    commit(&state, &caller, &headers, Op::PlaceOrder(order)).await
}

async fn get_order<S: OriginStore>(
    State(state): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<Json<OrderRecord>, Problem> {
    let id: OrderId = path_id(id)?;
    read(&state, &keys::order(&id), &format!("order {id}")).map(Json)
}

async fn file<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Body(spec): Body<AccessRequestSpec>,
) -> Result<Response, Problem> {
    commit(&state, &caller, &headers, Op::RequestAccess(spec)).await
}

/// Filing within an account: the self-service portal's way, open to the
/// account's own key.
async fn file_for_account<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(account): Path<String>,
    Body(spec): Body<AccessRequestSpec>,
) -> Result<Response, Problem> {
    let account: AccountId = path_id(account)?;
    if spec.account != account {
        return Err(Problem::invalid("the body's account must match the path"));
    }
    commit(&state, &caller, &headers, Op::RequestAccess(spec)).await
}

async fn get_account_request<S: OriginStore>(
    State(state): State<AppState<S>>,
    Path((account, id)): Path<(String, String)>,
) -> Result<Json<AccessRequest>, Problem> {
    let account: AccountId = path_id(account)?;
    let id = request_id(id)?;
    let what = format!("access request {id} in account {account}");
    let request: AccessRequest = read(&state, &keys::access_request(&id), &what)?;
    // Request ids are global: one of another account is not found here.
    if request.spec.account != account {
        return Err(Problem::not_found(format!("unknown {what}")));
    }
    Ok(Json(request))
}

fn request_id(raw: String) -> Result<String, Problem> {
    let id: tollgate_model::EntitlementId = path_id(raw)?;
    Ok(id.into())
}

async fn get_request<S: OriginStore>(
    State(state): State<AppState<S>>,
    Path(id): Path<String>,
) -> Result<Json<AccessRequest>, Problem> {
    let id = request_id(id)?;
    read(
        &state,
        &keys::access_request(&id),
        &format!("access request {id}"),
    )
    .map(Json)
}

async fn decide<S: OriginStore>(
    state: AppState<S>,
    caller: Caller,
    headers: HeaderMap,
    id: String,
    approve: bool,
) -> Result<Response, Problem> {
    let id = request_id(id)?;
    commit(&state, &caller, &headers, Op::DecideAccess { id, approve }).await
}

async fn approve<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    decide(state, caller, headers, id, true).await
}

async fn deny<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    decide(state, caller, headers, id, false).await
}

pub fn routes<S: OriginStore>() -> Vec<Route<S>> {
    vec![
        route(
            Method::Post,
            "/v1/orders",
            post(place::<S>),
            Doc::new(
                "orders",
                "Apply an order: new, change (upgrade or downgrade), renew or cancel. Idempotent by order id; \
                 the same id with a different body is a conflict.",
                Some(Scope::OrdersWrite),
            )
            .body(SchemaRef::of::<Order>()),
        ),
        route(
            Method::Get,
            "/v1/orders/{id}",
            get(get_order::<S>),
            Doc::new("orders", "Read an applied order.", Some(Scope::Read)).ok(SchemaRef::of::<OrderRecord>()),
        ),
        route(
            Method::Post,
            "/v1/access-requests",
            post(file::<S>),
            Doc::new("access", "File an access request.", Some(Scope::AccessRequest))
                .body(SchemaRef::of::<AccessRequestSpec>()),
        ),
        route(
            Method::Get,
            "/v1/access-requests/{id}",
            get(get_request::<S>),
            Doc::new("access", "Read an access request.", Some(Scope::Read)).ok(SchemaRef::of::<AccessRequest>()),
        ),
        route(
            Method::Post,
            "/v1/accounts/{account}/access-requests",
            post(file_for_account::<S>),
            Doc::new(
                "access",
                "File an access request for this account (the body's account must match).",
                Some(Scope::AccessRequest),
            )
            .body(SchemaRef::of::<AccessRequestSpec>())
            .account_keys(AccountKeys::OwnAccount),
        ),
        route(
            Method::Get,
            "/v1/accounts/{account}/access-requests/{id}",
            get(get_account_request::<S>),
            Doc::new("access", "Read an access request of this account.", Some(Scope::Read))
                .ok(SchemaRef::of::<AccessRequest>())
                .account_keys(AccountKeys::OwnAccount),
        ),
        route(
            Method::Post,
            "/v1/access-requests/{id}/approve",
            post(approve::<S>),
            Doc::new("access", "Approve: grants the entitlement. The reason header is recorded.", Some(Scope::AccessApprove)),
        ),
        route(
            Method::Post,
            "/v1/access-requests/{id}/deny",
            post(deny::<S>),
            Doc::new("access", "Deny. The reason header is recorded.", Some(Scope::AccessApprove)),
        ),
    ]
}
