//! Access requests: filed by a requester (the tenant's key, or an
//! account's own key within its account), read, listed as an approval
//! queue, approved or denied.
//!
//! The list reads the queues apply keeps (`keys::access_request_queue`):
//! one per filter, in filing order, so a page is one range scan of at most
//! `limit + 1` entries and `limit` reads, whatever the filter.

use super::{commit, path_id, read, route, AccountKeys, Body, Doc, Method, Page, Route, SchemaRef};
use super::{Path, Query};
use crate::auth::Caller;
use crate::problem::Problem;
use crate::store::OriginStore;
use crate::{AppState, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::Deserialize;
use tollgate_model::{AccountId, EntitlementId, UnixSeconds};
use tollgate_origin::{keys, AccessRequest, AccessRequestSpec, AccessRequestStatus, Op, Scope};

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
    let id: EntitlementId = path_id(raw)?;
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

/// `GET /v1/access-requests`: every filter narrows; times are Unix seconds
/// of the request's `requested_at`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// `pending`, `approved` or `denied`.
    status: Option<String>,
    account: Option<String>,
    /// Filed strictly after this time.
    created_after: Option<i64>,
    /// Filed strictly before this time.
    created_before: Option<i64>,
    /// Filed at least this long ago.
    older_than_seconds: Option<u64>,
    /// Filed less than this long ago.
    newer_than_seconds: Option<u64>,
    /// The cursor a previous page gave as `next_after`.
    after: Option<String>,
    limit: Option<usize>,
}

const LIST_QUERY: &[(&str, &str)] = &[
    (
        "status",
        "Only requests with this status: pending, approved or denied.",
    ),
    (
        "account",
        "Only this account's requests. An account's own key sees only its own account \
         (naming another is 403).",
    ),
    (
        "created_after",
        "Only requests filed strictly after this Unix time (seconds).",
    ),
    (
        "created_before",
        "Only requests filed strictly before this Unix time (seconds).",
    ),
    (
        "older_than_seconds",
        "Only requests filed at least this many seconds ago (by the origin's clock).",
    ),
    (
        "newer_than_seconds",
        "Only requests filed less than this many seconds ago (by the origin's clock).",
    ),
    (
        "after",
        "The opaque cursor from the previous page's `next_after`; the same filters should be \
         given again.",
    ),
    ("limit", "Requests per page, 1..=500 (default 100)."),
];

/// Where a page starts in a queue: the position (`<time>/<id>`) of the
/// last request the previous page examined, base64url, so clients treat
/// it as opaque.
fn encode_cursor(position: &str) -> String {
    B64.encode(position)
}

/// The position a cursor holds, or 400: only cursors this endpoint gave
/// out are taken.
fn decode_cursor(cursor: &str) -> Result<String, Problem> {
    let refused = || Problem::bad_request("after: not a cursor from GET /v1/access-requests");
    let bytes = B64.decode(cursor).map_err(|_| refused())?;
    let position = String::from_utf8(bytes).map_err(|_| refused())?;
    let (time, id) = position.split_once('/').ok_or_else(refused)?;
    keys::parse_access_request_time(time).ok_or_else(refused)?;
    EntitlementId::try_from(id.to_string()).map_err(|_| refused())?;
    Ok(position)
}

/// The time window of a query, `[from, until)` in Unix seconds; `i128`
/// so that no bound a caller gives can overflow.
fn window(q: &ListQuery, now: UnixSeconds) -> (i128, i128) {
    let now = i128::from(now.0);
    let mut from = i128::from(i64::MIN);
    let mut until = i128::from(i64::MAX) + 1;
    if let Some(t) = q.created_after {
        from = from.max(i128::from(t) + 1);
    }
    if let Some(t) = q.created_before {
        until = until.min(i128::from(t));
    }
    if let Some(n) = q.newer_than_seconds {
        from = from.max(now - i128::from(n) + 1);
    }
    if let Some(n) = q.older_than_seconds {
        until = until.min(now - i128::from(n) + 1);
    }
    (from, until)
}

/// Access requests oldest first (by `requested_at`, then id), filtered and
/// paginated; an account's own key sees only its own account.
async fn list_requests<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<AccessRequest>>, Problem> {
    let limit = q.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    if limit == 0 || limit > PAGE_LIMIT_MAX {
        return Err(Problem::bad_request(format!(
            "limit must be 1..={PAGE_LIMIT_MAX}"
        )));
    }
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            AccessRequestStatus::NAMES
                .into_iter()
                .find(|name| *name == s)
                .ok_or_else(|| {
                    Problem::bad_request(format!(
                        "status must be one of {}",
                        AccessRequestStatus::NAMES.join(", ")
                    ))
                })?,
        ),
    };
    let asked: Option<AccountId> = q
        .account
        .clone()
        .map(AccountId::try_from)
        .transpose()
        .map_err(|e| Problem::bad_request(format!("account: {e}")))?;
    let account = match (caller.account(), asked) {
        (None, asked) => asked,
        (Some(own), Some(asked)) if &asked != own => {
            return Err(Problem::forbidden(format!(
                "API key {} belongs to account {own} and sees no other account's requests",
                caller.key.id
            )))
        }
        (Some(own), _) => Some(own.clone()),
    };
    let cursor = q.after.as_deref().map(decode_cursor).transpose()?;
    let (from, until) = window(&q, state.clock.now());
    if from >= until {
        return Ok(Json(Page {
            items: Vec::new(),
            next_after: None,
        }));
    }

    let prefix = keys::access_request_queue(account.as_ref(), status);
    // Start after the cursor or just before the window, whichever is later
    // (`from` is a time here: at least i64::MIN, and below `until`).
    let floor = i64::try_from(from)
        .map(|from| format!("{prefix}{}", keys::access_request_time(UnixSeconds(from))))
        .map_err(|_| Problem::internal("the time window left the range of times"))?;
    let start = match cursor {
        Some(position) => floor.max(format!("{prefix}{position}")),
        None => floor,
    };
    // One more than asked tells whether a next page exists.
    let entries = state
        .store
        .scan(prefix.as_bytes(), Some(start.as_bytes()), limit + 1)?;
    let mut items = Vec::with_capacity(limit.min(entries.len()));
    let mut last = None;
    let mut more = false;
    for (examined, (key, value)) in entries.into_iter().enumerate() {
        let position = std::str::from_utf8(&key[prefix.len()..])
            .ok()
            .and_then(|p| {
                let (time, _) = p.split_once('/')?;
                Some((p, keys::parse_access_request_time(time)?))
            });
        let Some((position, requested_at)) = position else {
            return Err(Problem::internal(format!(
                "stored access-request queue key {} is malformed",
                String::from_utf8_lossy(&key)
            )));
        };
        if i128::from(requested_at.0) >= until {
            break;
        }
        if examined == limit {
            more = true;
            break;
        }
        let id: String = serde_json::from_slice(&value).map_err(|e| {
            Problem::internal(format!(
                "stored access-request queue entry {position} is unreadable: {e}"
            ))
        })?;
        let request: AccessRequest = match state.store.get(&keys::access_request(&id))? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Problem::internal(format!("stored access request {id} is unreadable: {e}"))
            })?,
            None => {
                return Err(Problem::internal(format!(
                    "access-request queue entry {position} names request {id}, which does not exist"
                )))
            }
        };
        last = Some(position.to_string());
        // A request decided between the scan and this read has left the
        // queue of its old status: it is no longer what was asked for.
        let still_matches = status.is_none_or(|s| request.status.name() == s)
            && account.as_ref().is_none_or(|a| &request.spec.account == a);
        if still_matches {
            items.push(request);
        }
    }
    Ok(Json(Page {
        items,
        next_after: if more {
            last.as_deref().map(encode_cursor)
        } else {
            None
        },
    }))
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
            "/v1/access-requests",
            post(file::<S>),
            Doc::new(
                "access",
                "File an access request.",
                Some(Scope::AccessRequest),
            )
            .body(SchemaRef::of::<AccessRequestSpec>()),
        ),
        route(
            Method::Get,
            "/v1/access-requests",
            get(list_requests::<S>),
            Doc::new(
                "access",
                "List access requests, oldest first (by requested_at, then id): the approval \
                 queue is ?status=pending. Filters by status, account and when they were filed; \
                 pages follow `next_after` (opaque).",
                Some(Scope::Read),
            )
            .ok(SchemaRef::page_of::<AccessRequest>())
            .query(LIST_QUERY)
            .account_keys(AccountKeys::Filtered),
        ),
        route(
            Method::Get,
            "/v1/access-requests/{id}",
            get(get_request::<S>),
            Doc::new("access", "Read an access request.", Some(Scope::Read))
                .ok(SchemaRef::of::<AccessRequest>()),
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
            Doc::new(
                "access",
                "Read an access request of this account.",
                Some(Scope::Read),
            )
            .ok(SchemaRef::of::<AccessRequest>())
            .account_keys(AccountKeys::OwnAccount),
        ),
        route(
            Method::Post,
            "/v1/access-requests/{id}/approve",
            post(approve::<S>),
            Doc::new(
                "access",
                "Approve: grants the entitlement, or for more seats raises the named \
                 entitlement's seat count. The reason header is recorded.",
                Some(Scope::AccessApprove),
            ),
        ),
        route(
            Method::Post,
            "/v1/access-requests/{id}/deny",
            post(deny::<S>),
            Doc::new(
                "access",
                "Deny. The reason header is recorded.",
                Some(Scope::AccessApprove),
            ),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(pairs: &str) -> ListQuery {
        serde_json::from_value(serde_json::from_str(pairs).unwrap()).unwrap()
    }

    #[test]
    fn the_window_is_half_open_and_every_bound_narrows_it() {
        let now = UnixSeconds(1_000);
        let all = query("{}");
        assert_eq!(
            window(&all, now),
            (i128::from(i64::MIN), i128::from(i64::MAX) + 1)
        );
        let q = query(r#"{"created_after": 100, "created_before": 900}"#);
        assert_eq!(window(&q, now), (101, 900));
        // Older than 60 s: filed at or before 940; newer than 600 s: after 400.
        let q = query(r#"{"older_than_seconds": 60, "newer_than_seconds": 600}"#);
        assert_eq!(window(&q, now), (401, 941));
        let q = query(
            r#"{"created_after": 500, "newer_than_seconds": 600, "created_before": 700, "older_than_seconds": 60}"#,
        );
        assert_eq!(window(&q, now), (501, 700));
        let q = query(
            r#"{"created_after": 9223372036854775807, "older_than_seconds": 18446744073709551615}"#,
        );
        let (from, until) = window(&q, now);
        assert!(from >= until, "nothing can match, and nothing overflowed");
    }

    #[test]
    fn only_cursors_this_endpoint_gives_out_are_taken() {
        let position = keys::access_request_position(UnixSeconds(1_795_000_000), "ar-1");
        assert_eq!(decode_cursor(&encode_cursor(&position)).unwrap(), position);
        for bad in [
            "not base64!",
            &B64.encode("no-slash"),
            &B64.encode("123/ar-1"),
            &B64.encode(format!("{}/", keys::access_request_time(UnixSeconds(5)))),
            &B64.encode(format!("{}/a b", keys::access_request_time(UnixSeconds(5)))),
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
