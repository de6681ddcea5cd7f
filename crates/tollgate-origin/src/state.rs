//! The origin's key-value state read back as a [`Dataset`]: what a snapshot
//! carries to a region, and what replicas are compared against.

use crate::keys;
use tollgate_model::Dataset;

/// Rebuilds the data set regions serve (catalog, accounts, subjects,
/// entitlements) from the origin's key-value entries. Origin-only records
/// (orders, access requests, API keys, audit, change records) are skipped.
pub fn dataset_from_entries(
    entries: impl IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
) -> Result<Dataset, String> {
    let mut data = Dataset::default();
    for (key, value) in entries {
        let text = String::from_utf8_lossy(&key);
        let decode_error =
            |e: serde_json::Error| format!("stored value under {text} does not decode: {e}");
        let c = &mut data.catalog;
        if key == keys::DEFAULT_OFFLINE_POLICY {
            c.default_offline_policy = serde_json::from_slice(&value).map_err(decode_error)?;
        } else if text.starts_with("catalog/product/") {
            let v: tollgate_model::Product =
                serde_json::from_slice(&value).map_err(decode_error)?;
            c.products.insert(v.id.clone(), v);
        } else if text.starts_with("catalog/feature/") {
            let v: tollgate_model::Feature =
                serde_json::from_slice(&value).map_err(decode_error)?;
            c.features.insert(v.id.clone(), v);
        } else if text.starts_with("catalog/plan/") {
            let v: tollgate_model::Plan = serde_json::from_slice(&value).map_err(decode_error)?;
            c.plans.insert(v.id.clone(), v);
        } else if text.starts_with("catalog/addon/") {
            let v: tollgate_model::Addon = serde_json::from_slice(&value).map_err(decode_error)?;
            c.addons.insert(v.id.clone(), v);
        } else if text.starts_with("catalog/sku/") {
            let v: tollgate_model::Sku = serde_json::from_slice(&value).map_err(decode_error)?;
            c.skus.insert(v.id.clone(), v);
        } else if text.starts_with("account/") {
            data.accounts
                .push(serde_json::from_slice(&value).map_err(decode_error)?);
        } else if text.starts_with("subject/") {
            data.subjects
                .push(serde_json::from_slice(&value).map_err(decode_error)?);
        } else if text.starts_with("entitlement/") {
            data.entitlements
                .push(serde_json::from_slice(&value).map_err(decode_error)?);
        } else if text.starts_with(keys::REVOKED_LICENSE_PREFIX) {
            data.revoked_licenses
                .push(serde_json::from_slice(&value).map_err(decode_error)?);
        } else if text.starts_with(keys::REVOKED_CERTIFICATE_PREFIX) {
            data.revoked_certificates
                .push(serde_json::from_slice(&value).map_err(decode_error)?);
        }
    }
    Ok(data.canonical())
}
