//! API keys and who may call what. A key is issued once as a bearer token
//! `tg_<key id>.<secret>`, stored only as the SHA-256 of the secret, and
//! checked on every request. Scopes say what a key may do (`admin` may do
//! everything); its owner says on whose behalf: the tenant (the vendor, any
//! account) or one customer account (that account only).
//!
//! Authorization happens in one place, [`authorize`], a layer on every
//! route built from the route table: authenticate, check the route's scope,
//! then, for an account's key, the route's [`AccountKeys`] policy. It runs
//! before the handler reads the body, so a key without the scope gets 403,
//! never a 4xx about a body it may not send. Handlers receive the
//! [`Caller`] it found.

use crate::openapi::{AccountKeys, ACCOUNT_PARAM};
use crate::problem::Problem;
use crate::store::OriginStore;
use crate::AppState;
use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use std::collections::BTreeSet;
use tollgate_model::{AccountId, UnixSeconds};
use tollgate_origin::{keys, ApiKeyRecord, KeyOwner, Scope};
use tollgate_signing::digest::{constant_time_eq, sha256_hex};

pub const TOKEN_PREFIX: &str = "tg_";
/// Longest Authorization header considered, in bytes.
const AUTHORIZATION_LEN_MAX: usize = 512;

/// A new key: the token (shown once, never stored) and what the origin keeps.
pub struct IssuedKey {
    pub token: String,
    pub record: ApiKeyRecord,
}

/// Generates a tenant key with a random id and a 256-bit random secret.
pub fn issue_key(
    name: &str,
    scopes: BTreeSet<Scope>,
    now: UnixSeconds,
) -> Result<IssuedKey, Problem> {
    issue_key_for(name, scopes, KeyOwner::Tenant, now)
}

/// Generates a key of `owner` with a random id and a 256-bit random secret.
/// (The state machine refuses an account's key with a tenant's scope.)
pub fn issue_key_for(
    name: &str,
    scopes: BTreeSet<Scope>,
    owner: KeyOwner,
    now: UnixSeconds,
) -> Result<IssuedKey, Problem> {
    let mut random = [0u8; 40];
    tollgate_clock::random::fill(&mut random)
        .map_err(|e| Problem::internal(format!("no randomness for a new key: {e}")))?;
    let id: String = format!(
        "key-{}",
        random[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let secret = B64.encode(&random[8..]);
    Ok(IssuedKey {
        token: format!("{TOKEN_PREFIX}{id}.{secret}"),
        record: ApiKeyRecord {
            id,
            name: name.to_string(),
            secret_sha256: sha256_hex(secret.as_bytes()),
            scopes,
            created_at: now,
            revoked: false,
            owner,
        },
    })
}

/// The authenticated caller of a request: its key id stamps every command
/// it commits (the audit log's actor), its owner bounds what it reaches.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKeyRecord,
}

impl Caller {
    /// The account the caller is confined to; `None` for a tenant key.
    pub fn account(&self) -> Option<&AccountId> {
        self.key.account()
    }

    /// 403 unless the key has `scope` and is the tenant's. For callers
    /// outside the route table (gRPC): an account's key is refused unless
    /// the caller checks the account with [`Caller::require_for`].
    pub fn require(&self, scope: Scope) -> Result<(), Problem> {
        self.require_scope(scope)?;
        match self.account() {
            None => Ok(()),
            Some(account) => Err(account_refused(&self.key.id, account)),
        }
    }

    /// 403 unless the key has `scope` and may act on `account`: a tenant
    /// key, or that account's own key.
    pub fn require_for(&self, scope: Scope, account: &AccountId) -> Result<(), Problem> {
        self.require_scope(scope)?;
        match self.account() {
            Some(own) if own != account => Err(other_account(&self.key.id, own)),
            _ => Ok(()),
        }
    }

    fn require_scope(&self, scope: Scope) -> Result<(), Problem> {
        if self.key.allows(scope) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "API key {} lacks the scope {}",
                self.key.id,
                scope.name()
            )))
        }
    }
}

fn account_refused(key: &str, account: &AccountId) -> Problem {
    Problem::forbidden(format!(
        "API key {key} belongs to account {account}; this endpoint is for the tenant's keys"
    ))
}

fn other_account(key: &str, account: &AccountId) -> Problem {
    Problem::forbidden(format!(
        "API key {key} belongs to account {account} and reaches no other account"
    ))
}

impl<S: OriginStore> FromRequestParts<AppState<S>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<S>) -> Result<Self, Problem> {
        // Put there by `authorize`; a route without a scope authenticates
        // here.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        authenticate(
            &*state.store,
            parts
                .headers
                .get(axum::http::header::AUTHORIZATION)
                .map(|h| h.as_bytes()),
        )
    }
}

/// A caller the portal vouches for: its signed-in user, as a key that
/// exists only for the request (`portal:<user id>`, the scopes of the
/// user's role, owned by the user's account or the tenant). Set as a request
/// extension by an in-process call; [`authorize`] then applies the route's
/// scope and account policy to it exactly as to an API key.
#[derive(Debug, Clone)]
pub struct PortalCaller(pub Caller);

/// What [`authorize`] enforces for one route: its scope (`None`: public)
/// and how it treats an account's key.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub scope: Option<Scope>,
    pub account_keys: AccountKeys,
}

/// The layer on every route: authenticate (401), check the scope (403),
/// check an account key against the route's policy (403), then hand the
/// [`Caller`] to the handler. Runs before any extractor reads the body.
pub async fn authorize<S: OriginStore>(
    State((state, policy)): State<(AppState<S>, Policy)>,
    request: Request,
    next: Next,
) -> Response {
    let Some(scope) = policy.scope else {
        return next.run(request).await;
    };
    let (mut parts, body) = request.into_parts();
    // The portal calls the API in process as its signed-in user; a request
    // from the network can carry no extension.
    let portal = parts.extensions.remove::<PortalCaller>();
    let caller = match portal.map(|p| p.0).map(Ok).unwrap_or_else(|| {
        authenticate(
            &*state.store,
            parts
                .headers
                .get(axum::http::header::AUTHORIZATION)
                .map(|h| h.as_bytes()),
        )
    }) {
        Ok(caller) => caller,
        Err(problem) => return problem.into_response(),
    };
    // Counted once the key is proven, so no one can spend another key's
    // budget by naming its id.
    if let Some(rate) = &state.rate {
        if let Err(seconds) = rate(&caller.key.id) {
            let mut response = Problem::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                format!(
                    "too many requests with API key {}; retry after {seconds} s",
                    caller.key.id
                ),
            )
            .into_response();
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds.max(1)),
            );
            return response;
        }
    }
    if let Err(problem) = caller.require_scope(scope) {
        return problem.into_response();
    }
    if let Some(own) = caller.account() {
        let allowed = match policy.account_keys {
            AccountKeys::Refused => Err(account_refused(&caller.key.id, own)),
            AccountKeys::Filtered | AccountKeys::Any => Ok(()),
            AccountKeys::OwnAccount => {
                match RawPathParams::from_request_parts(&mut parts, &()).await {
                    Ok(params) => {
                        let named = params
                            .iter()
                            .find(|(name, _)| *name == ACCOUNT_PARAM)
                            .map(|(_, value)| value);
                        match named {
                            Some(value) if value == own.as_str() => Ok(()),
                            Some(_) => Err(other_account(&caller.key.id, own)),
                            // The route table promised a parameter it lacks:
                            // refuse rather than guess.
                            None => Err(Problem::internal(
                                "this endpoint names no account; refusing an account's key",
                            )),
                        }
                    }
                    Err(rejection) => Err(Problem::bad_request(format!(
                        "path: {}",
                        rejection.body_text()
                    ))),
                }
            }
        };
        if let Err(problem) = allowed {
            return problem.into_response();
        }
    }
    parts.extensions.insert(caller);
    next.run(Request::from_parts(parts, body)).await
}

/// The caller an `Authorization` value (`Bearer tg_<id>.<secret>`) names,
/// for the REST API and for gRPC calls that carry an API key.
pub fn authenticate<S: OriginStore>(store: &S, header: Option<&[u8]>) -> Result<Caller, Problem> {
    let header = header.ok_or_else(|| {
        Problem::unauthenticated("an API key is required: Authorization: Bearer tg_...")
    })?;
    if header.len() > AUTHORIZATION_LEN_MAX {
        return Err(Problem::unauthenticated(
            "the Authorization header is too long",
        ));
    }
    let token = std::str::from_utf8(header)
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .and_then(|t| t.strip_prefix(TOKEN_PREFIX))
        .ok_or_else(|| {
            Problem::unauthenticated("expected Authorization: Bearer tg_<key id>.<secret>")
        })?;
    let (id, secret) = token
        .split_once('.')
        .ok_or_else(|| Problem::unauthenticated("malformed API key"))?;
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(Problem::unauthenticated("malformed API key"));
    }
    let stored = store.get(&keys::api_key(id))?;
    let key: ApiKeyRecord = match stored.map(|b| serde_json::from_slice(&b)) {
        Some(Ok(key)) => key,
        Some(Err(e)) => {
            return Err(Problem::internal(format!(
                "stored API key {id} is unreadable: {e}"
            )))
        }
        None => return Err(Problem::unauthenticated("unknown or wrong API key")),
    };
    if !constant_time_eq(
        sha256_hex(secret.as_bytes()).as_bytes(),
        key.secret_sha256.as_bytes(),
    ) {
        return Err(Problem::unauthenticated("unknown or wrong API key"));
    }
    if key.revoked {
        return Err(Problem::unauthenticated(format!("API key {id} is revoked")));
    }
    Ok(Caller { key })
}
