//! The catalog: products, features, plans, add-ons, SKUs and the default
//! offline policy. Every reference a catalog object makes (a feature's
//! product, a bundle's features, an add-on's compatible plans, an SKU's
//! plan or add-on) must resolve when it is written, and a new object must
//! fit under [`CATALOG_ENTRIES_MAX`].

use super::{check_target, invalid, reject, touched, Changed, Step, Tx};
use crate::command::RejectCode;
use crate::keys;
use tollgate_model::limits::CATALOG_ENTRIES_MAX;
use tollgate_model::{
    Addon, Feature, FeatureGrant, Mutation, OfflinePolicy, Plan, Product, ProductId, Sku,
};

pub(super) fn put_product(tx: &mut Tx<'_>, p: &Product) -> Step<Changed> {
    p.validate().map_err(invalid)?;
    let key = keys::product(&p.id);
    count_entry(tx, &key)?;
    tx.publish(key, p, Mutation::PutProduct(p.clone()));
    Ok(touched(format!("product/{}", p.id)))
}

pub(super) fn put_feature(tx: &mut Tx<'_>, f: &Feature) -> Step<Changed> {
    f.validate().map_err(invalid)?;
    if !tx.exists(&keys::product(&f.product))? {
        return reject(
            RejectCode::NotFound,
            format!("unknown product {}", f.product),
        );
    }
    let key = keys::feature(&f.id);
    count_entry(tx, &key)?;
    tx.publish(key, f, Mutation::PutFeature(f.clone()));
    Ok(touched(format!("feature/{}", f.id)))
}

pub(super) fn put_plan(tx: &mut Tx<'_>, p: &Plan) -> Step<Changed> {
    p.validate().map_err(invalid)?;
    check_bundle(tx, &p.product, &p.features)?;
    let key = keys::plan(&p.id);
    count_entry(tx, &key)?;
    tx.publish(key, p, Mutation::PutPlan(p.clone()));
    Ok(touched(format!("plan/{}", p.id)))
}

pub(super) fn put_addon(tx: &mut Tx<'_>, a: &Addon) -> Step<Changed> {
    a.validate().map_err(invalid)?;
    check_bundle(tx, &a.product, &a.features)?;
    for plan in &a.compatible_plans {
        if !tx.exists(&keys::plan(plan))? {
            return reject(
                RejectCode::NotFound,
                format!("unknown plan {plan} in compatible_plans"),
            );
        }
    }
    let key = keys::addon(&a.id);
    count_entry(tx, &key)?;
    tx.publish(key, a, Mutation::PutAddon(a.clone()));
    Ok(touched(format!("addon/{}", a.id)))
}

pub(super) fn put_sku(tx: &mut Tx<'_>, s: &Sku) -> Step<Changed> {
    s.validate().map_err(invalid)?;
    check_target(tx, &s.target)?;
    let key = keys::sku(&s.id);
    count_entry(tx, &key)?;
    tx.publish(key, s, Mutation::PutSku(s.clone()));
    Ok(touched(format!("sku/{}", s.id)))
}

pub(super) fn set_default_offline_policy(tx: &mut Tx<'_>, p: &OfflinePolicy) -> Step<Changed> {
    count_entry(tx, keys::DEFAULT_OFFLINE_POLICY)?;
    tx.publish(
        keys::DEFAULT_OFFLINE_POLICY.to_vec(),
        p,
        Mutation::SetDefaultOfflinePolicy(*p),
    );
    Ok(touched("catalog/default_offline_policy".into()))
}

/// Counts the catalog object about to be written under `key`, refusing a
/// new one once the catalog holds [`CATALOG_ENTRIES_MAX`]; replacing an
/// object changes nothing. Called after every other check, so a command
/// refused for another reason is refused as it always was.
///
/// The count is kept under [`keys::CATALOG_ENTRIES`] and written in the
/// command's own batch (as `meta/quota-outstanding` is), not found by a
/// scan: apply reads the state by key only, and counting up to 100,000
/// entries on every catalog write would cost far more than one read and
/// one write of a number.
fn count_entry(tx: &mut Tx<'_>, key: &[u8]) -> Step<()> {
    if tx.exists(key)? {
        return Ok(());
    }
    let count: u64 = tx.get(keys::CATALOG_ENTRIES)?.unwrap_or(0);
    if count >= CATALOG_ENTRIES_MAX as u64 {
        return reject(
            RejectCode::Invalid,
            format!("the catalog already holds {CATALOG_ENTRIES_MAX} entries, the maximum"),
        );
    }
    tx.put(keys::CATALOG_ENTRIES.to_vec(), &(count + 1));
    Ok(())
}

/// A plan's or add-on's features must exist and belong to its product.
fn check_bundle(tx: &Tx<'_>, product: &ProductId, grants: &[FeatureGrant]) -> Step<()> {
    if !tx.exists(&keys::product(product))? {
        return reject(RejectCode::NotFound, format!("unknown product {product}"));
    }
    for grant in grants {
        let feature: Feature = tx.require(
            &keys::feature(&grant.feature),
            &format!("feature {}", grant.feature),
        )?;
        if &feature.product != product {
            return reject(
                RejectCode::Invalid,
                format!(
                    "feature {} belongs to product {}, not {product}",
                    grant.feature, feature.product
                ),
            );
        }
    }
    Ok(())
}
