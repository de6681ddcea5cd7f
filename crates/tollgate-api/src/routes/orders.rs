//! Orders from a CRM or billing system. (Access requests are in
//! `access_requests`.)

use super::Path;
use super::{commit, path_id, read, route, Body, Doc, Method, Route, SchemaRef};
use crate::auth::Caller;
use crate::problem::Problem;
use crate::store::OriginStore;
use crate::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Json;
use tollgate_model::OrderId;
use tollgate_origin::{keys, Op, Order, OrderRecord, Scope};

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
    ]
}
