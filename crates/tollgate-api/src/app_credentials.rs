//! Application credentials for region check ports: made here (a random id
//! and secret; only the secret's SHA-256 is kept), by the REST route and by
//! `tollgate dev` alike.

use crate::problem::Problem;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::Deserialize;
use std::collections::BTreeSet;
use tollgate_model::{
    AccountId, AppCredential, ProductId, Targets, UnixSeconds, Verb, CREDENTIAL_TOKEN_PREFIX,
};
use tollgate_signing::digest::sha256_hex;

/// A credential to create.
#[derive(utoipa::ToSchema, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCredential {
    /// What it is for, for people (1..=128 bytes).
    pub name: String,
    /// The accounts it may act for: `"*"` or a list of account ids.
    #[schema(value_type = Object)]
    pub accounts: Targets<AccountId>,
    /// The products whose features it may check: `"*"` or a list.
    #[schema(value_type = Object)]
    pub products: Targets<ProductId>,
    /// What it may do: `check`, `watch`, `watch_all`, `report_usage`,
    /// `seats`, `issue_licenses`.
    pub verbs: BTreeSet<Verb>,
}

/// A random id and secret, and the record that keeps only the secret's
/// hash.
pub fn issue_credential(
    body: NewCredential,
    now: UnixSeconds,
) -> Result<(String, AppCredential), Problem> {
    let mut random = [0u8; 40];
    tollgate_clock::random::fill(&mut random)
        .map_err(|e| Problem::internal(format!("no randomness for a new credential: {e}")))?;
    let id: String = format!(
        "cred-{}",
        random[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let secret = B64.encode(&random[8..]);
    let record = AppCredential {
        id: id.clone(),
        name: body.name,
        secret_sha256: sha256_hex(secret.as_bytes()),
        accounts: body.accounts,
        products: body.products,
        verbs: body.verbs,
        created_at: now,
        revoked_at: None,
    };
    Ok((format!("{CREDENTIAL_TOKEN_PREFIX}{id}.{secret}"), record))
}

impl NewCredential {
    /// Every account, every product, every verb: what `tollgate dev` and
    /// the test suites hand their own clients.
    pub fn everything(name: impl Into<String>) -> NewCredential {
        NewCredential {
            name: name.into(),
            accounts: Targets::Every,
            products: Targets::Every,
            verbs: Verb::ALL.into_iter().collect(),
        }
    }
}
