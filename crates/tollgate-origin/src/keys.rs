//! Where the origin keeps each object in its replicated key-value state.
//! Keys are `/`-separated ASCII; ids cannot contain `/` (see
//! `tollgate_model::id`), so a key names exactly one object. Revisions are
//! zero-padded so that byte order is revision order.

use tollgate_model::{
    AccountId, AddonId, EntitlementId, FeatureId, OrderId, PlanId, ProductId, SkuId, SubjectId,
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
pub fn webhook_delivery(id: &str, revision: u64) -> Vec<u8> {
    format!("webhook-delivery/{id}/{revision:020}").into_bytes()
}
