//! What the origin records of the license tokens and region certificates
//! its node signed, and their revocations (which replicate to regions).

use super::{invalid, reject, require_account, touched, Changed, Step, Tx};
use crate::command::{OriginCommand, RejectCode};
use crate::keys;
use crate::licenses::{CertificateRecord, LicenseRecord, AUDIENCE_BYTES_MAX};
use tollgate_model::{AccountId, Mutation, RevokedCertificate, RevokedLicense, UnixSeconds};

pub(super) fn issue_license(tx: &mut Tx<'_>, record: &LicenseRecord) -> Step<Changed> {
    tollgate_model::validate_revocation_id("id", &record.id).map_err(invalid)?;
    require_account(tx, &record.account)?;
    let sane = record.revoked_at.is_none()
        && !record.audience.is_empty()
        && record.audience.len() <= AUDIENCE_BYTES_MAX
        && record.not_before < record.expires_at;
    if !sane {
        return reject(
            RejectCode::Invalid,
            "a license needs an audience of 1..=256 bytes, not_before before expires_at, and no revocation",
        );
    }
    let key = keys::license(&record.account, &record.id);
    if tx.exists(&key)? {
        return reject(
            RejectCode::Conflict,
            format!("license {} already exists", record.id),
        );
    }
    tx.put(key, record);
    Ok(touched(format!("license/{}/{}", record.account, record.id)))
}

pub(super) fn revoke_license(
    tx: &mut Tx<'_>,
    cmd: &OriginCommand,
    account: &AccountId,
    id: &str,
    expires_at: Option<UnixSeconds>,
) -> Step<Changed> {
    tollgate_model::validate_revocation_id("id", id).map_err(invalid)?;
    require_account(tx, account)?;
    let revoked_key = keys::revoked_license(id);
    if tx.exists(&revoked_key)? {
        return reject(
            RejectCode::Conflict,
            format!("license {id} is already revoked"),
        );
    }
    let key = keys::license(account, id);
    let expires_at = match tx.get::<LicenseRecord>(&key)? {
        Some(mut record) => {
            record.revoked_at = Some(cmd.at);
            tx.put(key, &record);
            record.expires_at
        }
        None => match expires_at {
            Some(at) => at,
            None => {
                return reject(
                    RejectCode::NotFound,
                    format!("no license {id} was issued by the origin for account {account}; to revoke a token a region issued, give its expires_at"),
                )
            }
        },
    };
    let revoked = RevokedLicense {
        id: id.to_string(),
        account: account.clone(),
        expires_at,
        revoked_at: cmd.at,
    };
    tx.publish(
        revoked_key,
        &revoked,
        Mutation::RevokeLicense(revoked.clone()),
    );
    Ok(touched(format!("license/{account}/{id}")))
}

pub(super) fn certify_region(tx: &mut Tx<'_>, record: &CertificateRecord) -> Step<Changed> {
    tollgate_model::validate_revocation_id("serial", &record.serial).map_err(invalid)?;
    let sane = !record.region.is_empty()
        && record.region.len() <= 64
        && record.not_before < record.not_after
        && record.revoked_at.is_none();
    if !sane {
        return reject(
            RejectCode::Invalid,
            "a certificate needs a region of 1..=64 bytes, not_before before not_after, and no revocation",
        );
    }
    let key = keys::certificate(&record.serial);
    if tx.exists(&key)? {
        return reject(
            RejectCode::Conflict,
            format!("certificate {} already exists", record.serial),
        );
    }
    tx.put(key, record);
    Ok(touched(format!("certificate/{}", record.serial)))
}

pub(super) fn revoke_certificate(
    tx: &mut Tx<'_>,
    cmd: &OriginCommand,
    serial: &str,
) -> Step<Changed> {
    let key = keys::certificate(serial);
    let mut record: CertificateRecord = tx.require(&key, &format!("certificate {serial}"))?;
    if record.revoked_at.is_some() {
        return reject(
            RejectCode::Conflict,
            format!("certificate {serial} is already revoked"),
        );
    }
    record.revoked_at = Some(cmd.at);
    tx.put(key, &record);
    let revoked = RevokedCertificate {
        serial: serial.to_string(),
        region: record.region.clone(),
        not_after: record.not_after,
        revoked_at: cmd.at,
    };
    tx.publish(
        keys::revoked_certificate(serial),
        &revoked,
        Mutation::RevokeCertificate(revoked.clone()),
    );
    Ok(touched(format!("certificate/{serial}")))
}
