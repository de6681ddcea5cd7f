//! Portal users and sessions ([`crate::portal`]). Nothing here reaches a
//! region: the change records carry no mutation.

use super::*;
use crate::portal::{
    is_sha256_hex, PortalSession, PortalUser, SESSIONS_PER_USER_MAX, USERS_PER_ACCOUNT_MAX,
};

/// Longest a session may be asked to last (the portal's own default is
/// much shorter).
const SESSION_SECONDS_MAX: u64 = 30 * 24 * 3600;
/// Bounds on the lockout a proposer may stamp.
const LOCK_AFTER_MAX: u32 = 1_000;
const LOCK_SECONDS_MAX: u64 = 7 * 24 * 3600;

fn user_target(id: &str) -> String {
    format!("portal-user/{id}")
}

fn require_user(tx: &Tx<'_>, id: &str) -> Step<PortalUser> {
    tx.require(&keys::portal_user(id), &format!("portal user {id}"))
}

fn invalid_text(message: impl Into<String>) -> Stop {
    Stop::Reject(Rejection {
        code: RejectCode::Invalid,
        message: message.into(),
    })
}

/// Ends every session in `ids`.
fn end_sessions(tx: &mut Tx<'_>, ids: &[String]) {
    for id in ids {
        tx.delete(keys::portal_session(id));
    }
}

pub(super) fn put_user(tx: &mut Tx<'_>, cmd: &OriginCommand, user: &PortalUser) -> Step<Changed> {
    if let Some(problem) = user.invalid() {
        return Err(invalid_text(problem));
    }
    if let Some(invite) = &user.invite {
        if !is_sha256_hex(&invite.token_sha256) {
            return Err(invalid_text("an invitation's token must be a SHA-256 hex"));
        }
    }
    if let Some(account) = &user.account {
        require_account(tx, account)?;
    }
    let key = keys::portal_user(&user.id);
    let stored: Option<PortalUser> = tx.get(&key)?;
    let mut next = user.clone();
    match &stored {
        Some(old) => {
            // A user never moves between accounts: a customer's admin who
            // could re-home a user would reach another account's people.
            if old.account != user.account {
                return reject(
                    RejectCode::Conflict,
                    format!(
                        "portal user {} belongs to {}; a user never changes account",
                        user.id,
                        old.account.as_ref().map_or("the vendor", |a| a.as_str())
                    ),
                );
            }
            next.password_hash = old.password_hash.clone();
            next.failed_sign_ins = old.failed_sign_ins;
            next.locked_until = old.locked_until;
            next.sessions = old.sessions.clone();
            next.created_at = old.created_at;
            if next.oidc_subject.is_none() {
                next.oidc_subject = old.oidc_subject.clone();
            }
            if next.disabled && !old.disabled {
                end_sessions(tx, &old.sessions);
                next.sessions.clear();
            }
        }
        None => {
            next.failed_sign_ins = 0;
            next.locked_until = None;
            next.sessions = Vec::new();
            next.created_at = cmd.at;
            if let Some(account) = &user.account {
                let index = keys::account_portal_user(account, &user.id);
                let count_key = format!("meta/portal-users/{account}").into_bytes();
                let count: u64 = tx.get(&count_key)?.unwrap_or(0);
                if count >= USERS_PER_ACCOUNT_MAX as u64 {
                    return reject(
                        RejectCode::Invalid,
                        format!(
                            "account {account} already has {USERS_PER_ACCOUNT_MAX} portal users, the maximum"
                        ),
                    );
                }
                tx.put(count_key, &(count + 1));
                tx.put(index, &user.id);
            }
        }
    }
    tx.put(key, &next);
    Ok(touched(user_target(&user.id)))
}

pub(super) fn create_user(
    tx: &mut Tx<'_>,
    cmd: &OriginCommand,
    user: &PortalUser,
) -> Step<Changed> {
    if tx.exists(&keys::portal_user(&user.id))? {
        return reject(
            RejectCode::Conflict,
            format!("portal user {} already exists", user.id),
        );
    }
    put_user(tx, cmd, user)
}

pub(super) fn delete_user(tx: &mut Tx<'_>, id: &str) -> Step<Changed> {
    let user = require_user(tx, id)?;
    end_sessions(tx, &user.sessions);
    if let Some(account) = &user.account {
        tx.delete(keys::account_portal_user(account, id));
        let count_key = format!("meta/portal-users/{account}").into_bytes();
        let count: u64 = tx.get(&count_key)?.unwrap_or(0);
        tx.put(count_key, &count.saturating_sub(1));
    }
    tx.delete(keys::portal_user(id));
    Ok(touched(user_target(id)))
}

pub(super) fn set_password(
    tx: &mut Tx<'_>,
    id: &str,
    password_hash: &str,
    keep_session: Option<&str>,
) -> Step<Changed> {
    let mut user = require_user(tx, id)?;
    user.password_hash = Some(password_hash.to_string());
    if let Some(problem) = user.invalid() {
        return Err(invalid_text(problem));
    }
    user.invite = None;
    user.failed_sign_ins = 0;
    user.locked_until = None;
    // A new password ends every other session: whoever knew the old one
    // is signed out.
    let (kept, ended): (Vec<String>, Vec<String>) = user
        .sessions
        .iter()
        .cloned()
        .partition(|s| Some(s.as_str()) == keep_session);
    end_sessions(tx, &ended);
    user.sessions = kept;
    tx.put(keys::portal_user(id), &user);
    Ok(touched(user_target(id)))
}

pub(super) fn start_session(
    tx: &mut Tx<'_>,
    cmd: &OriginCommand,
    session: &PortalSession,
) -> Step<Changed> {
    if !is_sha256_hex(&session.id) {
        return Err(invalid_text("a session id must be a SHA-256 hex"));
    }
    if session.csrf.len() < 32 || session.csrf.len() > 128 {
        return Err(invalid_text(
            "a session's CSRF token must be 32..=128 bytes",
        ));
    }
    if session.expires_at <= cmd.at
        || session.expires_at.seconds_since(cmd.at) > SESSION_SECONDS_MAX
    {
        return Err(invalid_text(format!(
            "a session must last 1..={SESSION_SECONDS_MAX} seconds"
        )));
    }
    let mut user = require_user(tx, &session.user)?;
    if user.disabled {
        return reject(
            RejectCode::Conflict,
            format!("portal user {} is disabled", user.id),
        );
    }
    if user.locked_at(cmd.at) {
        return reject(
            RejectCode::Conflict,
            format!("portal user {} is locked out", user.id),
        );
    }
    if tx.exists(&keys::portal_session(&session.id))? {
        return reject(RejectCode::Conflict, "that session already exists");
    }
    // Drop sessions that have ended on their own, then the oldest past
    // the bound.
    let mut live = Vec::with_capacity(user.sessions.len() + 1);
    for id in std::mem::take(&mut user.sessions) {
        let stored: Option<PortalSession> = tx.get(&keys::portal_session(&id))?;
        match stored {
            Some(s) if s.expires_at > cmd.at => live.push(id),
            Some(_) => tx.delete(keys::portal_session(&id)),
            None => {}
        }
    }
    while live.len() >= SESSIONS_PER_USER_MAX {
        let oldest = live.remove(0);
        tx.delete(keys::portal_session(&oldest));
    }
    live.push(session.id.clone());
    user.sessions = live;
    user.failed_sign_ins = 0;
    user.locked_until = None;
    tx.put(keys::portal_user(&user.id), &user);
    tx.put(keys::portal_session(&session.id), session);
    Ok(touched(user_target(&user.id)))
}

pub(super) fn end_session(tx: &mut Tx<'_>, id: &str) -> Step<Changed> {
    let session: PortalSession = tx.require(&keys::portal_session(id), "session")?;
    tx.delete(keys::portal_session(id));
    let user_key = keys::portal_user(&session.user);
    if let Some(mut user) = tx.get::<PortalUser>(&user_key)? {
        user.sessions.retain(|s| s != id);
        tx.put(user_key, &user);
    }
    Ok(touched(user_target(&session.user)))
}

pub(super) fn sign_in_failed(
    tx: &mut Tx<'_>,
    cmd: &OriginCommand,
    id: &str,
    lock_after: u32,
    lock_seconds: u64,
) -> Step<Changed> {
    if lock_after == 0 || lock_after > LOCK_AFTER_MAX || lock_seconds > LOCK_SECONDS_MAX {
        return Err(invalid_text(format!(
            "lockout must be after 1..={LOCK_AFTER_MAX} failures, for at most {LOCK_SECONDS_MAX} seconds"
        )));
    }
    let mut user = require_user(tx, id)?;
    if user.locked_at(cmd.at) {
        // Already locked: the count does not grow, the lock does not move.
        return Err(Stop::Unchanged {
            revision: tx.get(keys::HEAD_REVISION)?.unwrap_or(0),
            entitlements: Vec::new(),
            note: format!("portal user {id} is already locked out"),
        });
    }
    user.failed_sign_ins = user.failed_sign_ins.saturating_add(1);
    if user.failed_sign_ins >= lock_after {
        user.failed_sign_ins = 0;
        user.locked_until = Some(cmd.at.plus_seconds(lock_seconds));
    }
    tx.put(keys::portal_user(id), &user);
    Ok(touched(user_target(id)))
}
