//! API keys, kept as a SHA-256 of the secret only. They never leave the
//! origin: their change records carry no mutation. A key belongs to the
//! tenant or to one customer account; an account's key is refused here,
//! whoever proposed it, unless the account exists and every scope is one
//! an account key may hold ([`Scope::ACCOUNT_KEY_SCOPES`]).

use super::{invalid, reject, require_account, touched, Changed, Step, Tx};
use crate::command::{ApiKeyRecord, KeyOwner, RejectCode, Scope, ACTOR_LEN_MAX};
use crate::keys;
use tollgate_model::EntitlementId;

pub(super) fn put_api_key(tx: &mut Tx<'_>, key: &ApiKeyRecord) -> Step<Changed> {
    EntitlementId::new(key.id.as_str()).map_err(invalid)?;
    let hex_ok = key.secret_sha256.len() == 64
        && key
            .secret_sha256
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex_ok || key.name.len() > ACTOR_LEN_MAX || key.scopes.is_empty() {
        return reject(
            RejectCode::Invalid,
            "an API key needs a name of at most 128 bytes, a SHA-256 in lower-case hex and at least one scope",
        );
    }
    if let KeyOwner::Account(account) = &key.owner {
        if let Some(scope) = key.scopes.iter().find(|s| !s.allowed_for_account_keys()) {
            let allowed: Vec<&str> = Scope::ACCOUNT_KEY_SCOPES.iter().map(|s| s.name()).collect();
            return reject(
                RejectCode::Invalid,
                format!(
                    "a key of account {account} cannot hold the scope {}; an account's key holds only {}",
                    scope.name(),
                    allowed.join(", ")
                ),
            );
        }
        require_account(tx, account)?;
    }
    tx.put(keys::api_key(&key.id), key);
    Ok(touched(format!("api-key/{}", key.id)))
}

pub(super) fn revoke_api_key(tx: &mut Tx<'_>, id: &str) -> Step<Changed> {
    let mut key: ApiKeyRecord = tx.require(&keys::api_key(id), &format!("API key {id}"))?;
    if key.revoked {
        return reject(
            RejectCode::Conflict,
            format!("API key {id} is already revoked"),
        );
    }
    key.revoked = true;
    tx.put(keys::api_key(id), &key);
    Ok(touched(format!("api-key/{id}")))
}
