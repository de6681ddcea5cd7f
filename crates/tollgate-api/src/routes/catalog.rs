//! Products, features, plans, add-ons, SKUs and accounts: `PUT` creates or
//! replaces one (the body's id must match the path), `GET` reads one, and
//! `GET` on the collection lists them in id order.

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
use axum::routing::{get, put};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::Display;
use tollgate_model::*;
use tollgate_origin::{keys, Op, Scope};

/// An object kept under its own key, written whole.
pub trait Resource: Serialize + DeserializeOwned + utoipa::ToSchema + Send + 'static {
    type Id: TryFrom<String, Error = ModelError> + PartialEq + Display + Send;
    /// For messages: `product`, `plan`, ...
    const WHAT: &'static str;
    /// The key prefix of the collection (see `tollgate_origin::keys`).
    const PREFIX: &'static str;
    /// Who may write it.
    const SCOPE: Scope;
    fn id(&self) -> &Self::Id;
    fn key(id: &Self::Id) -> Vec<u8>;
    fn into_op(self) -> Op;
}

macro_rules! resource {
    ($ty:ty, $id:ty, $what:literal, $prefix:literal, $scope:expr, $key:path, $op:path) => {
        impl Resource for $ty {
            type Id = $id;
            const WHAT: &'static str = $what;
            const PREFIX: &'static str = $prefix;
            const SCOPE: Scope = $scope;
            fn id(&self) -> &$id {
                &self.id
            }
            fn key(id: &$id) -> Vec<u8> {
                $key(id)
            }
            fn into_op(self) -> Op {
                $op(self)
            }
        }
    };
}

resource!(
    Product,
    ProductId,
    "product",
    "catalog/product/",
    Scope::CatalogWrite,
    keys::product,
    Op::PutProduct
);
resource!(
    Feature,
    FeatureId,
    "feature",
    "catalog/feature/",
    Scope::CatalogWrite,
    keys::feature,
    Op::PutFeature
);
resource!(
    Plan,
    PlanId,
    "plan",
    "catalog/plan/",
    Scope::CatalogWrite,
    keys::plan,
    Op::PutPlan
);
resource!(
    Addon,
    AddonId,
    "add-on",
    "catalog/addon/",
    Scope::CatalogWrite,
    keys::addon,
    Op::PutAddon
);
resource!(
    Sku,
    SkuId,
    "SKU",
    "catalog/sku/",
    Scope::CatalogWrite,
    keys::sku,
    Op::PutSku
);
resource!(
    Account,
    AccountId,
    "account",
    "account/",
    Scope::AccountsWrite,
    keys::account,
    Op::PutAccount
);

async fn put_one<S: OriginStore, R: Resource>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Body(body): Body<R>,
) -> Result<Response, Problem> {
    let id: R::Id = path_id(raw)?;
    if body.id() != &id {
        return Err(Problem::invalid(format!(
            "the body's id {} differs from the path's {id}",
            body.id()
        )));
    }
    commit(&state, &caller, &headers, body.into_op()).await
}

async fn get_one<S: OriginStore, R: Resource>(
    State(state): State<AppState<S>>,
    Path(raw): Path<String>,
) -> Result<Json<R>, Problem> {
    let id: R::Id = path_id(raw)?;
    read(&state, &R::key(&id), &format!("{} {id}", R::WHAT)).map(Json)
}

async fn list_all<S: OriginStore, R: Resource>(
    State(state): State<AppState<S>>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<R>>, Problem> {
    list(&state, R::PREFIX, &page).map(Json)
}

/// Accounts in id order; an account's own key finds only its account.
async fn list_accounts<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<Account>>, Problem> {
    let Some(own) = caller.account() else {
        return list(&state, Account::PREFIX, &page).map(Json);
    };
    let after_own = page.after.as_deref().is_some_and(|a| a >= own.as_str());
    let items = if after_own {
        Vec::new()
    } else {
        vec![read(
            &state,
            &keys::account(own),
            &format!("account {own}"),
        )?]
    };
    Ok(Json(Page {
        items,
        next_after: None,
    }))
}

/// The list, put and get routes of a collection whose one object's path
/// parameter is `param`.
fn resource<S: OriginStore, R: Resource>(
    collection: &str,
    param: &str,
    tag: &'static str,
) -> Vec<Route<S>> {
    let one = format!("{collection}/{{{param}}}");
    vec![
        route(
            Method::Get,
            collection,
            get(list_all::<S, R>),
            Doc::new(
                tag,
                format!("List {}s in id order.", R::WHAT),
                Some(Scope::Read),
            )
            .ok(SchemaRef::page_of::<R>())
            .query(PAGE_QUERY),
        ),
        route(
            Method::Put,
            one.clone(),
            put(put_one::<S, R>),
            Doc::new(
                tag,
                format!(
                    "Create or replace a {} (the body's id must match the path).",
                    R::WHAT
                ),
                Some(R::SCOPE),
            )
            .body(SchemaRef::of::<R>()),
        ),
        route(
            Method::Get,
            one,
            get(get_one::<S, R>),
            Doc::new(tag, format!("Read a {}.", R::WHAT), Some(Scope::Read))
                .ok(SchemaRef::of::<R>()),
        ),
    ]
}

async fn put_default_offline_policy<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Body(policy): Body<OfflinePolicy>,
) -> Result<Response, Problem> {
    commit(
        &state,
        &caller,
        &headers,
        Op::SetDefaultOfflinePolicy(policy),
    )
    .await
}

async fn get_default_offline_policy<S: OriginStore>(
    State(state): State<AppState<S>>,
) -> Result<Json<OfflinePolicy>, Problem> {
    // Unset is the default policy; a stored one that does not decode is an
    // error, never silently the default.
    match state.store.get(keys::DEFAULT_OFFLINE_POLICY)? {
        None => Ok(Json(OfflinePolicy::default())),
        Some(bytes) => serde_json::from_slice(&bytes).map(Json).map_err(|e| {
            Problem::internal(format!(
                "the stored default offline policy is unreadable: {e}"
            ))
        }),
    }
}

pub fn routes<S: OriginStore>() -> Vec<Route<S>> {
    let mut routes = Vec::new();
    routes.extend(resource::<S, Product>("/v1/products", "id", "catalog"));
    routes.extend(resource::<S, Feature>("/v1/features", "id", "catalog"));
    routes.extend(resource::<S, Plan>("/v1/plans", "id", "catalog"));
    routes.extend(resource::<S, Addon>("/v1/addons", "id", "catalog"));
    routes.extend(resource::<S, Sku>("/v1/skus", "id", "catalog"));
    // An account's own key reads its account and finds only it in the
    // list; creating or changing accounts is the tenant's.
    for mut r in resource::<S, Account>("/v1/accounts", "account", "accounts") {
        match (r.method, r.path.ends_with('}')) {
            (Method::Get, false) => {
                r.handler = get(list_accounts::<S>);
                r.doc = r.doc.account_keys(AccountKeys::Filtered);
            }
            (Method::Get, true) => r.doc = r.doc.account_keys(AccountKeys::OwnAccount),
            _ => {}
        }
        routes.push(r);
    }
    routes.push(route(
        Method::Put,
        "/v1/catalog/default-offline-policy",
        put(put_default_offline_policy::<S>),
        Doc::new(
            "catalog",
            "Set the offline policy used where none is set.",
            Some(Scope::CatalogWrite),
        )
        .body(SchemaRef::of::<OfflinePolicy>()),
    ));
    routes.push(route(
        Method::Get,
        "/v1/catalog/default-offline-policy",
        get(get_default_offline_policy::<S>),
        Doc::new(
            "catalog",
            "Read the default offline policy.",
            Some(Scope::Read),
        )
        .ok(SchemaRef::of::<OfflinePolicy>()),
    ));
    routes
}
