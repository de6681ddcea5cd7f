//! Application credentials, kept as a SHA-256 of the secret only and
//! published to every region, which verifies callers of its check port
//! with them.

use super::{invalid, reject, touched, Changed, Step, Tx};
use crate::command::{OriginCommand, RejectCode};
use crate::keys;
use tollgate_model::limits::CREDENTIALS_MAX;
use tollgate_model::{AppCredential, Mutation};

pub(super) fn put_credential(tx: &mut Tx<'_>, credential: &AppCredential) -> Step<Changed> {
    credential.validate().map_err(invalid)?;
    let key = keys::credential(&credential.id);
    if tx.exists(&key)? {
        return reject(
            RejectCode::Conflict,
            format!("credential {} already exists", credential.id),
        );
    }
    if credential.is_revoked() {
        return reject(RejectCode::Invalid, "a new credential cannot be revoked");
    }
    let count: u64 = tx.get(keys::CREDENTIAL_COUNT)?.unwrap_or(0);
    if count >= CREDENTIALS_MAX as u64 {
        return reject(
            RejectCode::Invalid,
            format!("the origin already holds {CREDENTIALS_MAX} credentials, the maximum"),
        );
    }
    tx.put(keys::CREDENTIAL_COUNT.to_vec(), &(count + 1));
    tx.publish(key, credential, Mutation::PutCredential(credential.clone()));
    Ok(touched(format!("credential/{}", credential.id)))
}

pub(super) fn revoke_credential(tx: &mut Tx<'_>, cmd: &OriginCommand, id: &str) -> Step<Changed> {
    let key = keys::credential(id);
    let mut credential: AppCredential = tx.require(&key, &format!("credential {id}"))?;
    if credential.is_revoked() {
        return reject(
            RejectCode::Conflict,
            format!("credential {id} is already revoked"),
        );
    }
    credential.revoked_at = Some(cmd.at);
    tx.publish(
        key,
        &credential,
        Mutation::PutCredential(credential.clone()),
    );
    Ok(touched(format!("credential/{id}")))
}
