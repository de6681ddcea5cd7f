//! Where the origin keeps each object in its replicated key-value state.
//! Keys are `/`-separated ASCII; ids cannot contain `/` (see
//! `tollgate_model::id`), so a key names exactly one object. Revisions are
//! zero-padded so that byte order is revision order.

use tollgate_model::{
    AccountId, AddonId, EntitlementId, FeatureId, OrderId, PlanId, ProductId, SkuId, SubjectId,
    UnixSeconds,
};

pub const HEAD_REVISION: &[u8] = b"meta/revision";
/// Change records up to and including this revision were compacted away.
pub const CHANGE_FLOOR: &[u8] = b"meta/change-floor";
pub const DEFAULT_OFFLINE_POLICY: &[u8] = b"catalog/default_offline_policy";
/// How many objects the catalog holds (a number): its products, features,
/// plans, add-ons and SKUs, and the default offline policy once set. Kept
/// in step by every catalog put, so `CATALOG_ENTRIES_MAX` is checked with
/// one read rather than a scan. Origin only: regions never see it.
pub const CATALOG_ENTRIES: &[u8] = b"meta/catalog-entries";

pub const CHANGE_PREFIX: &str = "change/";
/// The origin's signing key ring, secrets sealed (a
/// [`crate::SigningRing`]; origin only: regions learn the public keys from
/// the changefeed's endorsements).
pub const SIGNING_RING: &[u8] = b"meta/signing-ring";
/// The ids of every webhook (a bounded list).
pub const WEBHOOK_INDEX: &[u8] = b"meta/webhooks";
pub const AUDIT_PREFIX: &str = "audit/";

fn key(parts: &[&str]) -> Vec<u8> {
    parts.join("/").into_bytes()
}

pub fn product(id: &ProductId) -> Vec<u8> {
    key(&["catalog/product", id.as_str()])
}
pub fn feature(id: &FeatureId) -> Vec<u8> {
    key(&["catalog/feature", id.as_str()])
}
pub fn plan(id: &PlanId) -> Vec<u8> {
    key(&["catalog/plan", id.as_str()])
}
pub fn addon(id: &AddonId) -> Vec<u8> {
    key(&["catalog/addon", id.as_str()])
}
pub fn sku(id: &SkuId) -> Vec<u8> {
    key(&["catalog/sku", id.as_str()])
}
pub fn account(id: &AccountId) -> Vec<u8> {
    key(&["account", id.as_str()])
}
pub fn subject(account: &AccountId, id: &SubjectId) -> Vec<u8> {
    key(&["subject", account.as_str(), id.as_str()])
}
pub fn entitlement(id: &EntitlementId) -> Vec<u8> {
    key(&["entitlement", id.as_str()])
}
/// How many subjects an account holds (a number, kept in step by every
/// subject put and delete; origin only). Not under `subject/`, which
/// regions read as the account's subjects.
pub fn account_subject_count(account: &AccountId) -> Vec<u8> {
    key(&["subject-count", account.as_str()])
}
/// The ids of an account's entitlements (a bounded list).
pub fn account_entitlements(account: &AccountId) -> Vec<u8> {
    key(&["account-entitlements", account.as_str()])
}
/// A revoked license token, replicated to regions; by token id, so a
/// verifier finds it from the token alone.
pub fn revoked_license(id: &str) -> Vec<u8> {
    key(&["revoked-license", id])
}
pub const REVOKED_LICENSE_PREFIX: &str = "revoked-license/";
/// A revoked region certificate, replicated to regions.
pub fn revoked_certificate(serial: &str) -> Vec<u8> {
    key(&["revoked-certificate", serial])
}
pub const REVOKED_CERTIFICATE_PREFIX: &str = "revoked-certificate/";
/// An application credential, replicated to regions (never to SDK
/// replicas).
pub fn credential(id: &str) -> Vec<u8> {
    key(&["credential", id])
}
pub const CREDENTIAL_PREFIX: &str = "credential/";
/// How many credentials the origin holds (a number; origin only).
pub const CREDENTIAL_COUNT: &[u8] = b"meta/credential-count";
/// An issued license token (origin only): who it was for and until when.
pub fn license(account: &AccountId, id: &str) -> Vec<u8> {
    key(&["license", account.as_str(), id])
}
/// A region certificate the origin signed (origin only).
pub fn certificate(serial: &str) -> Vec<u8> {
    key(&["certificate", serial])
}
pub const CERTIFICATE_PREFIX: &str = "certificate/";
pub fn order(id: &OrderId) -> Vec<u8> {
    key(&["order", id.as_str()])
}
pub fn access_request(id: &str) -> Vec<u8> {
    key(&["access-request", id])
}
/// Access requests listed oldest first (origin only), in four queues: all
/// of them, those of one status, one account's, one account's of one
/// status. An entry's key is the queue's prefix
/// ([`access_request_queue`]) and the request's position
/// ([`access_request_position`]); its value is the request's id. So a page
/// of any filter is one bounded range scan; apply moves a request's status
/// entries when it is decided.
pub const ACCESS_REQUEST_QUEUE_PREFIX: &str = "access-request-queue/";
/// The prefix of one access-request queue: `account` and `status`
/// (`pending`, `approved`, `denied`) narrow it.
pub fn access_request_queue(account: Option<&AccountId>, status: Option<&str>) -> String {
    let mut prefix = String::from(ACCESS_REQUEST_QUEUE_PREFIX);
    if let Some(account) = account {
        prefix.push_str("account/");
        prefix.push_str(account.as_str());
        prefix.push('/');
    }
    match status {
        Some(status) => {
            prefix.push_str("status/");
            prefix.push_str(status);
            prefix.push('/');
        }
        None => prefix.push_str("all/"),
    }
    prefix
}
/// A request's place in the queues: when it was filed
/// ([`access_request_time`]), then its id.
pub fn access_request_position(requested_at: UnixSeconds, id: &str) -> String {
    format!("{}/{id}", access_request_time(requested_at))
}
/// A time as the first part of a queue position: the sign bit flipped and
/// zero-padded to 20 digits, so byte order is time order (negative times
/// included). Every position of requests filed at or after `at` sorts
/// after this string alone.
pub fn access_request_time(at: UnixSeconds) -> String {
    format!("{:020}", (at.0 as u64) ^ (1 << 63))
}
/// The time [`access_request_time`] wrote, or `None` for anything else.
pub fn parse_access_request_time(text: &str) -> Option<UnixSeconds> {
    if text.len() != 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let biased: u64 = text.parse().ok()?;
    Some(UnixSeconds((biased ^ (1 << 63)) as i64))
}
/// Every queue entry of a request of `account` with `status`.
pub fn access_request_queue_entries(
    account: &AccountId,
    status: &str,
    requested_at: UnixSeconds,
    id: &str,
) -> [Vec<u8>; 4] {
    let position = access_request_position(requested_at, id);
    [
        access_request_queue(None, None),
        access_request_queue(None, Some(status)),
        access_request_queue(Some(account), None),
        access_request_queue(Some(account), Some(status)),
    ]
    .map(|prefix| format!("{prefix}{position}").into_bytes())
}
pub fn change(revision: u64) -> Vec<u8> {
    format!("{CHANGE_PREFIX}{revision:020}").into_bytes()
}
pub fn audit(revision: u64) -> Vec<u8> {
    format!("{AUDIT_PREFIX}{revision:020}").into_bytes()
}
pub fn api_key(id: &str) -> Vec<u8> {
    key(&["api-key", id])
}
pub fn webhook(id: &str) -> Vec<u8> {
    key(&["webhook", id])
}
/// The latest report of a region (origin only; a
/// [`crate::regions::RegionStatusRecord`]).
pub fn region_status(region: &str) -> Vec<u8> {
    key(&["region-status", region])
}
/// The prefix of every [`region_status`] key: scan it to list the regions.
pub const REGION_STATUS_PREFIX: &str = "region-status/";
/// The names of the regions with a stored report (a bounded list, origin
/// only; `regions::REGIONS_MAX`).
pub const REGION_INDEX: &[u8] = b"meta/regions";
/// When a floating seat's holder was last released from the origin (origin
/// only; a [`crate::regions::SeatReleased`]).
pub fn seat_release(entitlement: &EntitlementId, subject: &SubjectId) -> Vec<u8> {
    key(&["seat-release", entitlement.as_str(), subject.as_str()])
}
pub fn webhook_delivery(id: &str, revision: u64) -> Vec<u8> {
    format!("webhook-delivery/{id}/{revision:020}").into_bytes()
}
/// A redelivery of `revision` in webhook `id`'s delivery log, by the
/// revision that `recorded` it: listed right after the first delivery.
pub fn webhook_redelivery(id: &str, revision: u64, recorded: u64) -> Vec<u8> {
    format!("webhook-delivery/{id}/{revision:020}/{recorded:020}").into_bytes()
}
/// The revisions queued for redelivery to webhook `id`, ascending (a
/// bounded list; origin only).
pub fn webhook_redeliveries(id: &str) -> Vec<u8> {
    key(&["webhook-redeliver", id])
}
pub fn portal_user(id: &str) -> Vec<u8> {
    key(&["portal-user", id])
}
pub const PORTAL_USER_PREFIX: &str = "portal-user/";
pub fn portal_session(token_sha256: &str) -> Vec<u8> {
    key(&["portal-session", token_sha256])
}
/// `account-portal-user/<account>/<user>`: an account's portal users, for
/// listing them without a scan of every user.
pub fn account_portal_user(account: &AccountId, user: &str) -> Vec<u8> {
    format!("account-portal-user/{account}/{user}").into_bytes()
}
pub fn account_portal_users_prefix(account: &AccountId) -> String {
    format!("account-portal-user/{account}/")
}
/// `account-audit/<account>/<inverted revision>`: the account's audit
/// records, newest first in key order (the value is the revision).
pub fn account_audit(account: &AccountId, revision: u64) -> Vec<u8> {
    format!(
        "{}{:020}",
        account_audit_prefix(account),
        u64::MAX - revision
    )
    .into_bytes()
}
pub fn account_audit_prefix(account: &AccountId) -> String {
    format!("account-audit/{account}/")
}
