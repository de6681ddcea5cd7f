//! An account's entitlements, indexed by feature once (when they change) so
//! that a decision only looks at the grants of the feature it is asked about.

use std::collections::HashMap;
use tollgate_model::{
    Account, AddonId, Catalog, ConfigValues, Entitlement, EntitlementId, FeatureId, GeoRule, Grant,
    OfflinePolicy, PlanId, Subject, SubjectId, UsageCap, UsagePeriod,
};

/// Where a resolved grant came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantSource {
    Plan {
        plan: PlanId,
        tier: u32,
    },
    Addon(AddonId),
    /// A single-feature entitlement.
    Direct,
}

/// One feature as one entitlement grants it, with everything the decision
/// needs already resolved against the catalog.
#[derive(Debug, Clone)]
pub struct ResolvedGrant {
    /// Index into [`AccountView::entitlements`].
    pub entitlement: usize,
    pub source: GrantSource,
    /// The entitlement's override, else the plan's or add-on's cap.
    pub usage_cap: Option<UsageCap>,
    /// The feature's period when it is metered.
    pub period: Option<UsagePeriod>,
    /// The feature's defaults overlaid with the grant's values.
    pub config: ConfigValues,
    /// The entitlement's, the bundle's and the feature's rules; only those
    /// that restrict something.
    pub geo_rules: Vec<GeoRule>,
    /// The strictest of the policies set on the entitlement, the bundle and
    /// the feature, else the catalog default.
    pub offline_policy: OfflinePolicy,
}

/// An account with its subjects and entitlements, ready for decisions.
#[derive(Debug, Clone)]
pub struct AccountView {
    pub account: Account,
    pub subjects: HashMap<SubjectId, Subject>,
    pub entitlements: Vec<Entitlement>,
    by_feature: HashMap<FeatureId, Vec<ResolvedGrant>>,
    /// Entitlements whose plan or add-on is not in the catalog: they grant
    /// nothing until it is. Kept so operators can be told.
    pub dangling: Vec<EntitlementId>,
}

impl AccountView {
    /// Indexes `entitlements` (those of other accounts are ignored) by the
    /// features they grant.
    pub fn build(
        account: Account,
        subjects: impl IntoIterator<Item = Subject>,
        entitlements: impl IntoIterator<Item = Entitlement>,
        catalog: &Catalog,
    ) -> AccountView {
        let subjects: HashMap<_, _> = subjects
            .into_iter()
            .filter(|s| s.account == account.id)
            .map(|s| (s.id.clone(), s))
            .collect();
        let entitlements: Vec<_> = entitlements
            .into_iter()
            .filter(|e| e.account == account.id)
            .collect();
        let mut by_feature: HashMap<FeatureId, Vec<ResolvedGrant>> = HashMap::new();
        let mut dangling = Vec::new();

        for (index, ent) in entitlements.iter().enumerate() {
            let (source, grants, bundle_geo, bundle_offline) = match &ent.grant {
                Grant::Plan(id) => match catalog.plans.get(id) {
                    Some(plan) => (
                        GrantSource::Plan {
                            plan: id.clone(),
                            tier: plan.tier,
                        },
                        plan.features.as_slice(),
                        Some(&plan.geo_rule),
                        plan.offline_policy,
                    ),
                    None => {
                        dangling.push(ent.id.clone());
                        continue;
                    }
                },
                Grant::Addon(id) => match catalog.addons.get(id) {
                    Some(addon) => (
                        GrantSource::Addon(id.clone()),
                        addon.features.as_slice(),
                        Some(&addon.geo_rule),
                        addon.offline_policy,
                    ),
                    None => {
                        dangling.push(ent.id.clone());
                        continue;
                    }
                },
                Grant::Feature(grant) => {
                    (GrantSource::Direct, std::slice::from_ref(grant), None, None)
                }
            };
            for grant in grants {
                let feature = catalog.features.get(&grant.feature);
                let mut config = feature.map(|f| f.config.clone()).unwrap_or_default();
                config.extend(grant.config.iter().map(|(k, v)| (k.clone(), v.clone())));
                let geo_rules = [
                    Some(&ent.geo_rule),
                    bundle_geo,
                    feature.map(|f| &f.geo_rule),
                ]
                .into_iter()
                .flatten()
                .filter(|rule| !rule.is_unrestricted())
                .cloned()
                .collect();
                let offline_policy = [
                    ent.offline_policy,
                    bundle_offline,
                    feature.and_then(|f| f.offline_policy),
                ]
                .into_iter()
                .flatten()
                .reduce(OfflinePolicy::strictest)
                .unwrap_or(catalog.default_offline_policy);
                by_feature
                    .entry(grant.feature.clone())
                    .or_default()
                    .push(ResolvedGrant {
                        entitlement: index,
                        source: source.clone(),
                        usage_cap: ent
                            .usage_cap_overrides
                            .get(&grant.feature)
                            .copied()
                            .or(grant.usage_cap),
                        period: feature.and_then(|f| f.period()),
                        config,
                        geo_rules,
                        offline_policy,
                    });
            }
        }

        AccountView {
            account,
            subjects,
            entitlements,
            by_feature,
            dangling,
        }
    }

    /// The grants of `feature` by this account's entitlements.
    pub fn grants_for(&self, feature: &str) -> &[ResolvedGrant] {
        self.by_feature
            .get(feature)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// The plans this account holds (any status), for upgrade hints.
    pub fn plans_held(&self) -> impl Iterator<Item = &PlanId> {
        self.entitlements.iter().filter_map(|e| match &e.grant {
            Grant::Plan(p) => Some(p),
            _ => None,
        })
    }
}
