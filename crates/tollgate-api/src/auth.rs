//! API keys: issued once as a bearer token `tg_<key id>.<secret>`, stored
//! only as the SHA-256 of the secret, checked on every request. Scopes say
//! what a key may do; `admin` may do everything.

use crate::problem::Problem;
use crate::store::OriginStore;
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use std::collections::BTreeSet;
use tollgate_model::UnixSeconds;
use tollgate_origin::{keys, ApiKeyRecord, Scope};
use tollgate_signing::digest::{constant_time_eq, sha256_hex};

pub const TOKEN_PREFIX: &str = "tg_";
/// Longest Authorization header considered, in bytes.
const AUTHORIZATION_LEN_MAX: usize = 512;

/// A new key: the token (shown once, never stored) and what the origin keeps.
pub struct IssuedKey {
    pub token: String,
    pub record: ApiKeyRecord,
}

/// Generates a key with a random id and a 256-bit random secret.
pub fn issue_key(
    name: &str,
    scopes: BTreeSet<Scope>,
    now: UnixSeconds,
) -> Result<IssuedKey, Problem> {
    let mut random = [0u8; 40];
    getrandom::fill(&mut random)
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
        },
    })
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: ApiKeyRecord,
}

impl Caller {
    /// 403 unless the key has `scope`.
    pub fn require(&self, scope: Scope) -> Result<(), Problem> {
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

impl<S: OriginStore> FromRequestParts<AppState<S>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AppState<S>) -> Result<Self, Problem> {
        authenticate(
            &*state.store,
            parts
                .headers
                .get(axum::http::header::AUTHORIZATION)
                .map(|h| h.as_bytes()),
        )
    }
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
