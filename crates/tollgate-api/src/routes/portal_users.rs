//! Portal users over REST, for the tenant's admin keys: what creates a
//! deployment's first vendor administrator (`tollgate ctl portal-users
//! invite`), and what hands out a fresh invitation when a link is lost or a
//! password forgotten.
//!
//! An invitation is made as the portal makes one: 32 random bytes,
//! base64url, kept only as their SHA-256 hex; the link
//! (`/portal/invite?user=...&token=...`) is answered once and never again.
//! A list never shows a password hash, a session or an invitation's hash.
//! Every change commits through [`commit`], so the audit log names the key.

use super::{commit, read, route, Body, Doc, Method, Page, Path, Query, Route, SchemaRef};
use crate::auth::Caller;
use crate::problem::Problem;
use crate::store::OriginStore;
use crate::{AppState, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use tollgate_model::{AccountId, UnixSeconds};
use tollgate_origin::portal::{valid_user_id, PortalInvite, PortalRole, PortalUser};
use tollgate_origin::{keys, Op, Scope};
use tollgate_signing::digest::sha256_hex;

/// How long an invitation made here stays valid: the portal's own default
/// (`[portal] invite_days = 7`).
pub const INVITE_SECONDS: u64 = 7 * 24 * 3600;
/// Where the portal takes invitations, below the origin's base URL.
const INVITE_PATH: &str = "/portal/invite";

const LIST_QUERY: &[(&str, &str)] = &[
    (
        "account",
        "Only this customer account's users (without it: every user, the vendor's staff \
         included).",
    ),
    ("after", "Return users after this id (from `next_after`)."),
    ("limit", "Users per page, 1..=500 (default 100)."),
];

/// A portal user to create.
#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPortalUser {
    /// The sign-in name: an e-mail address (kept in lower case, at most
    /// 120 bytes).
    pub email: String,
    /// The name shown in the portal (1..=128 bytes).
    pub name: String,
    /// `vendor_admin`, `vendor_support`, `customer_admin` or
    /// `customer_member`.
    #[schema(value_type = String, example = "vendor_admin")]
    pub role: PortalRole,
    /// The account of a customer role; none for a vendor role.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub account: Option<AccountId>,
}

/// A new invitation: the only time its token is shown.
#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct IssuedInvite {
    /// The user's id (their e-mail address, lower case).
    pub id: String,
    /// `/portal/invite?user=<id>&token=<token>`, below the origin's base
    /// URL: where the user chooses a password. Not stored anywhere.
    pub invite_path: String,
    /// When the link stops working (Unix seconds).
    pub expires_at: UnixSeconds,
    /// The revision that stored the invitation.
    pub revision: u64,
}

/// A portal user as listed: never a password hash, a session or an
/// invitation's hash.
#[derive(utoipa::ToSchema, Debug, Serialize, Deserialize)]
pub struct PortalUserView {
    pub id: String,
    pub name: String,
    /// `vendor_admin`, `vendor_support`, `customer_admin` or
    /// `customer_member`.
    pub role: String,
    /// The account of a customer role; none for the vendor's staff.
    pub account: Option<String>,
    /// `disabled`, `locked` (after wrong passwords), `invited` (has not
    /// chosen a password or signed in with the identity provider yet) or
    /// `active`, the first that holds.
    pub state: String,
    /// When an open invitation expires, if there is one (an active user
    /// may have one: a password reset).
    pub invite_expires_at: Option<UnixSeconds>,
    pub created_at: UnixSeconds,
}

impl PortalUserView {
    fn of(user: PortalUser, now: UnixSeconds) -> PortalUserView {
        PortalUserView {
            state: state_of(&user, now).to_string(),
            invite_expires_at: user.invite.as_ref().map(|i| i.expires_at),
            id: user.id,
            name: user.name,
            role: user.role.name().to_string(),
            account: user.account.map(String::from),
            created_at: user.created_at,
        }
    }
}

/// As the vendor's staff page tells them apart.
fn state_of(user: &PortalUser, now: UnixSeconds) -> &'static str {
    if user.disabled {
        "disabled"
    } else if user.locked_at(now) {
        "locked"
    } else if user.invite.is_some() && user.password_hash.is_none() && user.oidc_subject.is_none() {
        "invited"
    } else {
        "active"
    }
}

/// A fresh invitation by `caller`: what to store, and its token.
fn new_invite(caller: &Caller, now: UnixSeconds) -> Result<(PortalInvite, String), Problem> {
    let mut bytes = [0u8; 32];
    tollgate_clock::random::fill(&mut bytes)
        .map_err(|e| Problem::internal(format!("no randomness for an invitation: {e}")))?;
    let token = B64.encode(bytes);
    Ok((
        PortalInvite {
            token_sha256: sha256_hex(token.as_bytes()),
            expires_at: now.plus_seconds(INVITE_SECONDS),
            invited_by: caller.key.id.clone(),
        },
        token,
    ))
}

/// Percent-encodes a query value as the portal does.
fn encode_query(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn invite_path(id: &str, token: &str) -> String {
    format!(
        "{INVITE_PATH}?user={}&token={}",
        encode_query(id),
        encode_query(token)
    )
}

fn user_id(raw: String) -> Result<String, Problem> {
    if valid_user_id(&raw) {
        Ok(raw)
    } else {
        Err(Problem::bad_request(format!(
            "path: a portal user id is an e-mail address in lower case, at most {} bytes",
            tollgate_origin::portal::USER_ID_LEN_MAX
        )))
    }
}

/// Commits `user` (carrying the invitation of `token`) and answers with
/// the link, under `status`.
async fn commit_invite<S: OriginStore>(
    state: &AppState<S>,
    caller: &Caller,
    headers: &HeaderMap,
    op: Op,
    token: &str,
    status: StatusCode,
) -> Result<Response, Problem> {
    let user = match &op {
        Op::PutPortalUser(user) | Op::CreatePortalUser(user) => user,
        _ => return Err(Problem::internal("an invitation is a portal user's put")),
    };
    let (id, expires_at) = match &user.invite {
        Some(invite) => (user.id.clone(), invite.expires_at),
        None => return Err(Problem::internal("an invitation without its invite")),
    };
    let response = commit(state, caller, headers, op).await?;
    let revision: u64 = response
        .headers()
        .get("x-tollgate-revision")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| Problem::internal("the commit named no revision"))?;
    Ok((
        status,
        [("x-tollgate-revision", revision.to_string())],
        Json(IssuedInvite {
            invite_path: invite_path(&id, token),
            id,
            expires_at,
            revision,
        }),
    )
        .into_response())
}

async fn create<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body<NewPortalUser>,
) -> Result<Response, Problem> {
    let now = state.clock.now();
    let id = body.email.trim().to_lowercase();
    let (invite, token) = new_invite(&caller, now)?;
    let user = PortalUser {
        id: id.clone(),
        name: body.name.trim().to_string(),
        role: body.role,
        account: body.account,
        password_hash: None,
        oidc_subject: None,
        invite: Some(invite),
        failed_sign_ins: 0,
        locked_until: None,
        disabled: false,
        created_at: now,
        sessions: Vec::new(),
    };
    if let Some(problem) = user.invalid() {
        return Err(Problem::invalid(problem));
    }
    // An existing user is a conflict rather than a silent new invitation
    // (that is `POST .../invite`). Said here for the hint; the commit
    // (`CreatePortalUser`) refuses one too, so two requests at once cannot
    // both create.
    if state.store.get(&keys::portal_user(&id))?.is_some() {
        return Err(Problem::conflict(format!(
            "portal user {id} exists; POST /v1/portal-users/{id}/invite gives them a new invitation"
        )));
    }
    commit_invite(
        &state,
        &caller,
        &headers,
        Op::CreatePortalUser(user),
        &token,
        StatusCode::CREATED,
    )
    .await
}

async fn reinvite<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = user_id(id)?;
    let mut user: PortalUser = read(
        &state,
        &keys::portal_user(&id),
        &format!("portal user {id}"),
    )?;
    if user.disabled {
        // The portal refuses a disabled user's invitation: a link that
        // cannot work is not handed out.
        return Err(Problem::conflict(format!(
            "portal user {id} is disabled; enable them in the portal first"
        )));
    }
    // The password stays until the invitation is accepted (apply keeps it
    // on a put), so a reset link that is never used locks nobody out.
    let (invite, token) = new_invite(&caller, state.clock.now())?;
    user.invite = Some(invite);
    commit_invite(
        &state,
        &caller,
        &headers,
        Op::PutPortalUser(user),
        &token,
        StatusCode::OK,
    )
    .await
}

async fn remove<S: OriginStore>(
    State(state): State<AppState<S>>,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let id = user_id(id)?;
    commit(&state, &caller, &headers, Op::DeletePortalUser { id }).await
}

/// `?account=<id>&after=<user id>&limit=<n>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    account: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

async fn list_users<S: OriginStore>(
    State(state): State<AppState<S>>,
    _caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<Json<Page<PortalUserView>>, Problem> {
    let limit = q.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    if limit == 0 || limit > PAGE_LIMIT_MAX {
        return Err(Problem::bad_request(format!(
            "limit must be 1..={PAGE_LIMIT_MAX}"
        )));
    }
    let account: Option<AccountId> = q
        .account
        .map(AccountId::try_from)
        .transpose()
        .map_err(|e| Problem::bad_request(format!("account: {e}")))?;
    // Every user, or the account's index (`account-portal-user/<a>/<id>`,
    // whose value is the user's id): either way the key ends in the id,
    // so the cursor is the last id.
    let prefix = match &account {
        None => keys::PORTAL_USER_PREFIX.to_string(),
        Some(account) => keys::account_portal_users_prefix(account),
    };
    let after = q
        .after
        .as_ref()
        .map(|a| format!("{prefix}{a}").into_bytes());
    // One more than asked tells whether there is a next page.
    let entries = state
        .store
        .scan(prefix.as_bytes(), after.as_deref(), limit + 1)?;
    let more = entries.len() > limit;
    let now = state.clock.now();
    let mut items = Vec::with_capacity(limit.min(entries.len()));
    let mut last = None;
    for (key, value) in entries.into_iter().take(limit) {
        let user: Option<PortalUser> = match &account {
            None => Some(serde_json::from_slice(&value).map_err(|e| {
                Problem::internal(format!(
                    "stored {} is unreadable: {e}",
                    String::from_utf8_lossy(&key)
                ))
            })?),
            Some(_) => {
                let id: String = serde_json::from_slice(&value).map_err(|e| {
                    Problem::internal(format!(
                        "stored {} is unreadable: {e}",
                        String::from_utf8_lossy(&key)
                    ))
                })?;
                // Written in the batch that writes the user; a missing one
                // would be a bug, skipped rather than failing the page.
                match state.store.get(&keys::portal_user(&id))? {
                    Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
                        Problem::internal(format!("stored portal user {id} is unreadable: {e}"))
                    })?),
                    None => None,
                }
            }
        };
        if let Some(user) = user {
            items.push(PortalUserView::of(user, now));
        }
        last = Some(String::from_utf8_lossy(&key[prefix.len()..]).into_owned());
    }
    Ok(Json(Page {
        items,
        next_after: if more { last } else { None },
    }))
}

pub fn routes<S: OriginStore>() -> Vec<Route<S>> {
    vec![
        route(
            Method::Get,
            "/v1/portal-users",
            get(list_users::<S>),
            Doc::new(
                "portal-users",
                "List portal users in id order: name, role, account and state (active, invited, \
                 disabled, locked); never password hashes, sessions or invitation hashes.",
                Some(Scope::Admin),
            )
            .ok(SchemaRef::page_of::<PortalUserView>())
            .query(LIST_QUERY),
        ),
        route(
            Method::Post,
            "/v1/portal-users",
            post(create::<S>),
            Doc {
                ok_status: 201,
                ..Doc::new(
                    "portal-users",
                    "Create a portal user with an invitation valid 7 days; the invitation's path \
                     (below the origin's base URL) is answered once. 409 when the user exists. A \
                     vendor role has no account, a customer role needs one. How a deployment \
                     gets its first vendor administrator.",
                    Some(Scope::Admin),
                )
                .body(SchemaRef::of::<NewPortalUser>())
                .ok(SchemaRef::of::<IssuedInvite>())
            },
        ),
        route(
            Method::Post,
            "/v1/portal-users/{id}/invite",
            post(reinvite::<S>),
            Doc::new(
                "portal-users",
                "A fresh invitation (valid 7 days) for an existing user: a lost link or a \
                 forgotten password. Replaces any earlier invitation; a password the user has \
                 keeps working until they accept it. 409 for a disabled user.",
                Some(Scope::Admin),
            )
            .ok(SchemaRef::of::<IssuedInvite>()),
        ),
        route(
            Method::Delete,
            "/v1/portal-users/{id}",
            delete(remove::<S>),
            Doc::new(
                "portal-users",
                "Remove a portal user and end every session of theirs.",
                Some(Scope::Admin),
            ),
        ),
    ]
}
