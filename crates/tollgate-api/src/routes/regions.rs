//! What the origin knows of its regions (each leader's latest report:
//! members, their revisions and geo databases, floating-seat holders), and
//! freeing a floating seat from the origin, in every region at once.

use super::{commit, list, path_id, route, AccountKeys, Doc, Method, Page, PageQuery, Route};
use super::{Path, Query, SchemaRef, PAGE_QUERY};
use crate::auth::Caller;
use crate::problem::Problem;
use crate::store::OriginStore;
use crate::AppState;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Json;
use tollgate_model::{AccountId, EntitlementId, SubjectId};
use tollgate_origin::keys::REGION_STATUS_PREFIX;
use tollgate_origin::regions::RegionStatusRecord;
use tollgate_origin::{Op, Scope};

async fn list_regions<S: OriginStore>(
    State(state): State<AppState<S>>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<RegionStatusRecord>>, Problem> {
    list(&state, REGION_STATUS_PREFIX, &page).map(Json)
}

async fn release_seat<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path((account, entitlement, subject)): Path<(String, String, String)>,
) -> Result<Response, Problem> {
    let account: AccountId = path_id(account)?;
    let entitlement: EntitlementId = path_id(entitlement)?;
    let subject: SubjectId = path_id(subject)?;
    // Apply answers 404 for an entitlement of another account, as for an
    // unknown one.
    commit(
        &state,
        &caller,
        &headers,
        Op::ReleaseSeatHolder {
            account,
            entitlement,
            subject,
        },
    )
    .await
}

pub fn routes<S: OriginStore>() -> Vec<Route<S>> {
    vec![
        route(
            Method::Get,
            "/v1/regions",
            get(list_regions::<S>),
            Doc::new(
                "regions",
                "Each region's latest report from its leader, stamped with when the origin \
                 received it: members (role, reachable or the error, applied revision, origin \
                 contact and staleness, geo database builds) and floating-seat holders.",
                Some(Scope::Read),
            )
            .ok(SchemaRef::page_of::<RegionStatusRecord>())
            .query(PAGE_QUERY),
        ),
        route(
            Method::Post,
            "/v1/accounts/{account}/entitlements/{entitlement}/seats/{subject}/release",
            post(release_seat::<S>),
            Doc::new(
                "entitlements",
                "Free a user's or device's floating seat of one of the account's entitlements, \
                 in every region (a region where it holds none changes nothing). 404 for an \
                 entitlement of another account.",
                Some(Scope::AccountsWrite),
            )
            .account_keys(AccountKeys::OwnAccount),
        ),
    ]
}
