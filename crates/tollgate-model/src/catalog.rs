//! What the vendor sells: products, their features, plans (tiers), add-ons
//! (access packages) and SKUs (what a CRM puts on an order).

use crate::geo::GeoRule;
use crate::id::{AddonId, ConfigKey, FeatureId, PlanId, ProductId, SkuId};
use crate::limits::*;
use crate::offline::OfflinePolicy;
use crate::time::UsagePeriod;
use crate::ModelError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Configuration values a feature grant carries (`max_resolution` => `4k`).
pub type ConfigValues = BTreeMap<ConfigKey, String>;

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub id: ProductId,
    pub name: String,
}

/// What kind of thing a feature is.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FeatureKind {
    /// On or off.
    Boolean,
    /// Consumed in units (`exports`, `api_calls`), counted per period.
    Metered { unit: String, period: UsagePeriod },
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    pub id: FeatureId,
    pub product: ProductId,
    pub name: String,
    pub kind: FeatureKind,
    /// Applies wherever the feature is granted (export control, licensing
    /// territory), on top of the plan's and the entitlement's rules.
    #[serde(default)]
    pub geo_rule: GeoRule,
    /// Offline policy for this feature; see [`OfflinePolicy`] for how
    /// several policies combine.
    #[serde(default)]
    pub offline_policy: Option<OfflinePolicy>,
    /// Default configuration values; a grant's values override them key by key.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub config: ConfigValues,
    /// Access requests for this feature alone that meet the rule are
    /// approved when filed; `None`: every such request waits for an
    /// approver. Omitted when unset (a feature without a rule is stored
    /// and sent to regions exactly as before the field existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_approve: Option<AutoApprove>,
}

impl Feature {
    pub fn period(&self) -> Option<UsagePeriod> {
        match &self.kind {
            FeatureKind::Boolean => None,
            FeatureKind::Metered { period, .. } => Some(*period),
        }
    }
}

/// How a usage cap is enforced once reached.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapEnforcement {
    /// Deny with USAGE_CAP_REACHED.
    #[default]
    Hard,
    /// Allow and flag the overage, to be billed.
    Soft,
}

/// A limit on a metered feature's consumption per period.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageCap {
    pub limit: u64,
    #[serde(default)]
    pub enforcement: CapEnforcement,
    /// Adds to the other grants' caps for the same feature (a top-up pack)
    /// instead of competing with them (the larger non-additive cap applies).
    #[serde(default)]
    pub additive: bool,
}

/// One feature as a plan, an add-on or a single-feature entitlement grants it.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeatureGrant {
    pub feature: FeatureId,
    /// `None` means unlimited.
    #[serde(default)]
    pub usage_cap: Option<UsageCap>,
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, String>)]
    pub config: ConfigValues,
}

impl FeatureGrant {
    pub fn new(feature: FeatureId) -> Self {
        Self {
            feature,
            usage_cap: None,
            config: ConfigValues::new(),
        }
    }
}

/// A tier of a product.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub id: PlanId,
    pub product: ProductId,
    pub name: String,
    /// Orders plans of one product from entry level up; upgrade hints
    /// suggest the lowest tier that would help.
    pub tier: u32,
    pub features: Vec<FeatureGrant>,
    /// Seats included when an order does not say.
    #[serde(default)]
    pub included_seats: Option<u32>,
    #[serde(default)]
    pub geo_rule: GeoRule,
    #[serde(default)]
    pub offline_policy: Option<OfflinePolicy>,
}

/// An add-on or access package: features sold or granted on top of a plan.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Addon {
    pub id: AddonId,
    pub product: ProductId,
    pub name: String,
    pub features: Vec<FeatureGrant>,
    /// Plans this add-on can be bought with; empty means any plan.
    #[serde(default)]
    pub compatible_plans: BTreeSet<PlanId>,
    #[serde(default)]
    pub geo_rule: GeoRule,
    #[serde(default)]
    pub offline_policy: Option<OfflinePolicy>,
    /// Access requests for this package that meet the rule are approved
    /// when filed; `None`: every request waits for an approver.
    #[serde(default)]
    pub auto_approve: Option<AutoApprove>,
}

/// When an access request for an access package (an add-on's
/// `auto_approve`) or for a single feature (a feature's `auto_approve`) is
/// approved without an approver. The origin decides as it applies the
/// request, from the request alone, so every node decides alike.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoApprove {
    /// Only requests for at most this long (`None`: any duration, including
    /// open-ended requests).
    #[serde(default)]
    pub max_duration_seconds: Option<u64>,
    /// Only requests naming a user or device of the account.
    #[serde(default)]
    pub require_subject: bool,
}

impl AutoApprove {
    /// Whether a request for `duration_seconds` (`None`: open-ended) that
    /// does or does not name a subject meets the rule.
    pub fn admits(&self, duration_seconds: Option<u64>, names_subject: bool) -> bool {
        let duration_ok = match (self.max_duration_seconds, duration_seconds) {
            (None, _) => true,
            (Some(max), Some(d)) => d <= max,
            // A bounded rule never approves access without an end.
            (Some(_), None) => false,
        };
        duration_ok && (names_subject || !self.require_subject)
    }
}

/// What an SKU sells.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SkuTarget {
    Plan(PlanId),
    Addon(AddonId),
}

/// What an order's quantity means for an SKU.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkuQuantity {
    /// Named seats, assigned to users or devices by the customer.
    #[default]
    NamedSeats,
    /// Floating seats, leased concurrently.
    FloatingSeats,
    /// No seat limit; the quantity must be 1.
    Unmetered,
}

/// A stock-keeping unit a CRM sells.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sku {
    pub id: SkuId,
    pub name: String,
    pub target: SkuTarget,
    #[serde(default)]
    pub quantity: SkuQuantity,
}

/// The whole catalog, as every node holds it.
#[derive(utoipa::ToSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Catalog {
    #[schema(value_type = BTreeMap<String, Product>)]
    pub products: BTreeMap<ProductId, Product>,
    #[schema(value_type = BTreeMap<String, Feature>)]
    pub features: BTreeMap<FeatureId, Feature>,
    #[schema(value_type = BTreeMap<String, Plan>)]
    pub plans: BTreeMap<PlanId, Plan>,
    #[schema(value_type = BTreeMap<String, Addon>)]
    pub addons: BTreeMap<AddonId, Addon>,
    #[schema(value_type = BTreeMap<String, Sku>)]
    pub skus: BTreeMap<SkuId, Sku>,
    /// Applies where no entitlement, plan, add-on or feature sets one.
    pub default_offline_policy: OfflinePolicy,
}

fn validate_name(field: &'static str, name: &str) -> Result<(), ModelError> {
    if name.is_empty() || name.len() > NAME_LEN_MAX {
        return Err(ModelError::Length {
            kind: field,
            len: name.len(),
            max: NAME_LEN_MAX,
        });
    }
    Ok(())
}

pub(crate) fn validate_config(
    field: &'static str,
    config: &ConfigValues,
) -> Result<(), ModelError> {
    if config.len() > CONFIG_ENTRIES_MAX {
        return Err(ModelError::TooMany {
            field,
            len: config.len(),
            max: CONFIG_ENTRIES_MAX,
        });
    }
    if let Some((key, value)) = config.iter().find(|(_, v)| v.len() > CONFIG_VALUE_LEN_MAX) {
        return Err(ModelError::Invalid {
            field,
            reason: format!(
                "value of {key} is {} bytes, at most {CONFIG_VALUE_LEN_MAX} are allowed",
                value.len()
            ),
        });
    }
    Ok(())
}

impl FeatureGrant {
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_config("feature_grant.config", &self.config)
    }
}

fn validate_bundle(field: &'static str, grants: &[FeatureGrant]) -> Result<(), ModelError> {
    if grants.len() > GRANTS_PER_BUNDLE_MAX {
        return Err(ModelError::TooMany {
            field,
            len: grants.len(),
            max: GRANTS_PER_BUNDLE_MAX,
        });
    }
    let mut seen = BTreeSet::new();
    for grant in grants {
        grant.validate()?;
        if !seen.insert(&grant.feature) {
            return Err(ModelError::Invalid {
                field,
                reason: format!("feature {} is listed twice", grant.feature),
            });
        }
    }
    Ok(())
}

impl Product {
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_name("product.name", &self.name)
    }
}

impl Feature {
    /// Checks the feature's own limits (not its references).
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_name("feature.name", &self.name)?;
        validate_config("feature.config", &self.config)?;
        self.geo_rule.validate()?;
        if let FeatureKind::Metered { unit, .. } = &self.kind {
            if unit.is_empty() || unit.len() > UNIT_LEN_MAX {
                return Err(ModelError::Length {
                    kind: "feature.kind.metered.unit",
                    len: unit.len(),
                    max: UNIT_LEN_MAX,
                });
            }
        }
        Ok(())
    }
}

impl Plan {
    /// Checks the plan's own limits (not its references).
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_name("plan.name", &self.name)?;
        self.geo_rule.validate()?;
        validate_bundle("plan.features", &self.features)
    }
}

impl Addon {
    /// Checks the add-on's own limits (not its references).
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_name("addon.name", &self.name)?;
        self.geo_rule.validate()?;
        validate_bundle("addon.features", &self.features)
    }
}

impl Sku {
    pub fn validate(&self) -> Result<(), ModelError> {
        validate_name("sku.name", &self.name)
    }
}

impl Catalog {
    /// Checks limits and that every reference resolves: features belong to
    /// known products, plans and add-ons grant known features of their own
    /// product, SKUs sell known plans or add-ons.
    pub fn validate(&self) -> Result<(), ModelError> {
        let unknown = |field: &'static str, what: String| ModelError::Invalid {
            field,
            reason: format!("refers to unknown {what}"),
        };
        for p in self.products.values() {
            p.validate()?;
        }
        for f in self.features.values() {
            f.validate()?;
            if !self.products.contains_key(&f.product) {
                return Err(unknown("feature.product", format!("product {}", f.product)));
            }
        }
        let check_grants = |field: &'static str,
                            product: &ProductId,
                            grants: &[FeatureGrant]|
         -> Result<(), ModelError> {
            for g in grants {
                match self.features.get(&g.feature) {
                    None => return Err(unknown(field, format!("feature {}", g.feature))),
                    Some(f) if &f.product != product => {
                        return Err(ModelError::Invalid {
                            field,
                            reason: format!(
                                "feature {} belongs to product {}, not {product}",
                                g.feature, f.product
                            ),
                        })
                    }
                    Some(_) => {}
                }
            }
            Ok(())
        };
        for plan in self.plans.values() {
            plan.validate()?;
            if !self.products.contains_key(&plan.product) {
                return Err(unknown("plan.product", format!("product {}", plan.product)));
            }
            check_grants("plan.features", &plan.product, &plan.features)?;
        }
        for addon in self.addons.values() {
            addon.validate()?;
            if !self.products.contains_key(&addon.product) {
                return Err(unknown(
                    "addon.product",
                    format!("product {}", addon.product),
                ));
            }
            check_grants("addon.features", &addon.product, &addon.features)?;
            if let Some(plan) = addon
                .compatible_plans
                .iter()
                .find(|p| !self.plans.contains_key(*p))
            {
                return Err(unknown("addon.compatible_plans", format!("plan {plan}")));
            }
        }
        for sku in self.skus.values() {
            sku.validate()?;
            match &sku.target {
                SkuTarget::Plan(p) if !self.plans.contains_key(p) => {
                    return Err(unknown("sku.target", format!("plan {p}")))
                }
                SkuTarget::Addon(a) if !self.addons.contains_key(a) => {
                    return Err(unknown("sku.target", format!("add-on {a}")))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The features a plan or add-on grants, or `None` if it is unknown.
    pub fn bundle(&self, target: &SkuTarget) -> Option<&[FeatureGrant]> {
        match target {
            SkuTarget::Plan(p) => self.plans.get(p).map(|p| p.features.as_slice()),
            SkuTarget::Addon(a) => self.addons.get(a).map(|a| a.features.as_slice()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_auto_approval_rule_admits_only_requests_within_its_bounds() {
        let bounded = AutoApprove {
            max_duration_seconds: Some(3600),
            require_subject: true,
        };
        // (duration, names a subject, admitted)
        for (duration, subject, admitted) in [
            (Some(3600), true, true),
            (Some(1), true, true),
            (Some(3601), true, false),
            (None, true, false),
            (Some(60), false, false),
        ] {
            assert_eq!(
                bounded.admits(duration, subject),
                admitted,
                "{duration:?} {subject}"
            );
        }
        let open = AutoApprove {
            max_duration_seconds: None,
            require_subject: false,
        };
        assert!(open.admits(None, false) && open.admits(Some(u64::MAX), true));
    }

    #[test]
    fn a_feature_without_a_rule_reads_and_writes_as_before() {
        let feature = Feature {
            id: FeatureId::try_from("export".to_string()).unwrap(),
            product: ProductId::try_from("studio".to_string()).unwrap(),
            name: "Export".into(),
            kind: FeatureKind::Boolean,
            geo_rule: GeoRule::default(),
            offline_policy: None,
            config: ConfigValues::new(),
            auto_approve: None,
        };
        let written = serde_json::to_value(&feature).unwrap();
        assert!(written.get("auto_approve").is_none(), "{written}");
        // What was stored before the field existed reads as no rule.
        let read: Feature = serde_json::from_value(written.clone()).unwrap();
        assert_eq!(read, feature);
        let mut with_rule = written;
        with_rule["auto_approve"] = serde_json::json!({"max_duration_seconds": 86_400});
        let read: Feature = serde_json::from_value(with_rule).unwrap();
        assert_eq!(
            read.auto_approve,
            Some(AutoApprove {
                max_duration_seconds: Some(86_400),
                require_subject: false,
            })
        );
    }
}
