//! Accounts (customer organisations) and their subjects (users and
//! devices), at most [`SUBJECTS_PER_ACCOUNT_MAX`] to an account.

use super::{invalid, reject, require_account, touched, Changed, Step, Tx};
use crate::command::RejectCode;
use crate::keys;
use tollgate_model::limits::SUBJECTS_PER_ACCOUNT_MAX;
use tollgate_model::{Account, AccountId, Mutation, Subject, SubjectId};

pub(super) fn put_account(tx: &mut Tx<'_>, a: &Account) -> Step<Changed> {
    a.validate().map_err(invalid)?;
    tx.publish(keys::account(&a.id), a, Mutation::PutAccount(a.clone()));
    Ok(touched(format!("account/{}", a.id)))
}

pub(super) fn put_subject(tx: &mut Tx<'_>, s: &Subject) -> Step<Changed> {
    s.validate().map_err(invalid)?;
    require_account(tx, &s.account)?;
    let key = keys::subject(&s.account, &s.id);
    if !tx.exists(&key)? {
        // A count kept in the same batch, not a scan of the account's
        // subjects: apply reads by key only, and one read and one write of
        // a number is the cheapest bound there is.
        let count_key = keys::account_subject_count(&s.account);
        let count: u64 = tx.get(&count_key)?.unwrap_or(0);
        if count >= SUBJECTS_PER_ACCOUNT_MAX as u64 {
            return reject(
                RejectCode::Invalid,
                format!(
                    "account {} already holds {SUBJECTS_PER_ACCOUNT_MAX} subjects, the maximum",
                    s.account
                ),
            );
        }
        tx.put(count_key, &(count + 1));
    }
    tx.publish(key, s, Mutation::PutSubject(s.clone()));
    Ok(touched(format!("subject/{}/{}", s.account, s.id)))
}

pub(super) fn delete_subject(
    tx: &mut Tx<'_>,
    account: &AccountId,
    subject: &SubjectId,
) -> Step<Changed> {
    let key = keys::subject(account, subject);
    if !tx.exists(&key)? {
        return reject(
            RejectCode::NotFound,
            format!("unknown subject {subject} in account {account}"),
        );
    }
    tx.delete(key);
    let count_key = keys::account_subject_count(account);
    let count: u64 = tx.get(&count_key)?.unwrap_or(0);
    // Saturating: an origin whose subjects predate the count holds more
    // than it says, and must not wrap below zero.
    tx.put(count_key, &count.saturating_sub(1));
    tx.mutations.push(Mutation::DeleteSubject {
        account: account.clone(),
        subject: subject.clone(),
    });
    Ok(touched(format!("subject/{account}/{subject}")))
}
