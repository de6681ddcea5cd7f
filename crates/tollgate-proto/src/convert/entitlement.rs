//! `tollgate.entitlement.v1` <-> model.

use super::{parse_set, AtField, ConvertError};
use crate::entitlement::v1 as pb;
use std::collections::BTreeMap;
use tollgate_model::geo::GEO_LIST_LEN_MAX;
use tollgate_model::limits::{CAP_OVERRIDES_MAX, CONFIG_ENTRIES_MAX, ROLES_OR_GROUPS_MAX};
use tollgate_model::{
    AccountId, AddonId, AfterGrace, CapEnforcement, ConfigKey, ConfigValues, Continent,
    CountryCode, Entitlement, EntitlementId, EntitlementStatus, FeatureGrant, FeatureId, GeoRule,
    Grant, GroupName, OfflinePolicy, OrderId, PlanId, RoleName, SeatMode, Seats, SubdivisionCode,
    SubjectId, UnixSeconds, UnknownLocation, UsageCap,
};

fn config_from_proto(
    field: &str,
    config: std::collections::HashMap<String, String>,
) -> Result<ConfigValues, ConvertError> {
    if config.len() > CONFIG_ENTRIES_MAX {
        return Err(ConvertError::out_of_range(
            field,
            format!(
                "holds {} entries, at most {CONFIG_ENTRIES_MAX} are allowed",
                config.len()
            ),
        ));
    }
    config
        .into_iter()
        .map(|(k, v)| Ok((ConfigKey::new(k).at(field)?, v)))
        .collect()
}

fn config_to_proto(config: ConfigValues) -> std::collections::HashMap<String, String> {
    config.into_iter().map(|(k, v)| (k.into(), v)).collect()
}

impl From<UsageCap> for pb::UsageCap {
    fn from(cap: UsageCap) -> Self {
        pb::UsageCap {
            limit: cap.limit,
            enforcement: match cap.enforcement {
                CapEnforcement::Hard => pb::CapEnforcement::Hard,
                CapEnforcement::Soft => pb::CapEnforcement::Soft,
            } as i32,
            additive: cap.additive,
        }
    }
}

fn cap_from_proto(field: &str, cap: pb::UsageCap) -> Result<UsageCap, ConvertError> {
    let enforcement = match pb::CapEnforcement::try_from(cap.enforcement) {
        Ok(pb::CapEnforcement::Hard) => CapEnforcement::Hard,
        Ok(pb::CapEnforcement::Soft) => CapEnforcement::Soft,
        _ => {
            return Err(ConvertError::out_of_range(
                &format!("{field}.enforcement"),
                "must be HARD or SOFT",
            ))
        }
    };
    Ok(UsageCap {
        limit: cap.limit,
        enforcement,
        additive: cap.additive,
    })
}

impl From<FeatureGrant> for pb::FeatureGrant {
    fn from(g: FeatureGrant) -> Self {
        pb::FeatureGrant {
            feature_id: g.feature.into(),
            usage_cap: g.usage_cap.map(Into::into),
            config: config_to_proto(g.config),
        }
    }
}

fn feature_grant_from_proto(
    field: &str,
    g: pb::FeatureGrant,
) -> Result<FeatureGrant, ConvertError> {
    let grant = FeatureGrant {
        feature: FeatureId::new(g.feature_id).at(&format!("{field}.feature_id"))?,
        usage_cap: g
            .usage_cap
            .map(|c| cap_from_proto(&format!("{field}.usage_cap"), c))
            .transpose()?,
        config: config_from_proto(&format!("{field}.config"), g.config)?,
    };
    grant.validate().at(field)?;
    Ok(grant)
}

impl From<GeoRule> for pb::GeoRule {
    fn from(r: GeoRule) -> Self {
        fn strings<T: Into<String>>(set: impl IntoIterator<Item = T>) -> Vec<String> {
            set.into_iter().map(Into::into).collect()
        }
        pb::GeoRule {
            allow_countries: strings(r.allow_countries),
            deny_countries: strings(r.deny_countries),
            allow_continents: strings(r.allow_continents),
            deny_continents: strings(r.deny_continents),
            allow_subdivisions: strings(r.allow_subdivisions),
            deny_subdivisions: strings(r.deny_subdivisions),
            block_anonymous: r.block_anonymous,
            // The older spelling too, for readers from before
            // `unknown_location`; read back, it agrees with DENY.
            #[allow(deprecated)]
            deny_unknown_location: r.unknown_location == Some(UnknownLocation::Deny),
            unknown_location: match r.unknown_location {
                None => pb::UnknownLocation::Unspecified,
                Some(UnknownLocation::Deny) => pb::UnknownLocation::Deny,
                Some(UnknownLocation::Allow) => pb::UnknownLocation::Allow,
            } as i32,
        }
    }
}

pub(crate) fn geo_rule_from_proto(field: &str, r: pb::GeoRule) -> Result<GeoRule, ConvertError> {
    let f = |name: &str| format!("{field}.{name}");
    #[allow(deprecated)]
    let deny_unknown_location = r.deny_unknown_location;
    let unknown_location = match (
        pb::UnknownLocation::try_from(r.unknown_location),
        deny_unknown_location,
    ) {
        (Ok(pb::UnknownLocation::Unspecified), false) => None,
        (Ok(pb::UnknownLocation::Unspecified | pb::UnknownLocation::Deny), true)
        | (Ok(pb::UnknownLocation::Deny), false) => Some(UnknownLocation::Deny),
        (Ok(pb::UnknownLocation::Allow), false) => Some(UnknownLocation::Allow),
        (Ok(pb::UnknownLocation::Allow), true) => return Err(ConvertError::out_of_range(
            &f("unknown_location"),
            "ALLOW contradicts the older deny_unknown_location = true; set unknown_location only",
        )),
        (Err(_), _) => {
            return Err(ConvertError::out_of_range(
                &f("unknown_location"),
                "must be UNSPECIFIED, DENY or ALLOW",
            ))
        }
    };
    Ok(GeoRule {
        allow_countries: parse_set(
            &f("allow_countries"),
            r.allow_countries,
            GEO_LIST_LEN_MAX,
            CountryCode::new,
        )?,
        deny_countries: parse_set(
            &f("deny_countries"),
            r.deny_countries,
            GEO_LIST_LEN_MAX,
            CountryCode::new,
        )?,
        allow_continents: parse_set(
            &f("allow_continents"),
            r.allow_continents,
            7,
            Continent::from_code,
        )?,
        deny_continents: parse_set(
            &f("deny_continents"),
            r.deny_continents,
            7,
            Continent::from_code,
        )?,
        allow_subdivisions: parse_set(
            &f("allow_subdivisions"),
            r.allow_subdivisions,
            GEO_LIST_LEN_MAX,
            SubdivisionCode::new,
        )?,
        deny_subdivisions: parse_set(
            &f("deny_subdivisions"),
            r.deny_subdivisions,
            GEO_LIST_LEN_MAX,
            SubdivisionCode::new,
        )?,
        block_anonymous: r.block_anonymous,
        unknown_location,
    })
}

impl From<OfflinePolicy> for pb::OfflinePolicy {
    fn from(p: OfflinePolicy) -> Self {
        pb::OfflinePolicy {
            offline_grace_seconds: p.offline_grace_seconds,
            after_grace: match p.after_grace {
                AfterGrace::Allow => pb::AfterGrace::Allow,
                AfterGrace::Deny => pb::AfterGrace::Deny,
            } as i32,
        }
    }
}

fn offline_policy_from_proto(
    field: &str,
    p: pb::OfflinePolicy,
) -> Result<OfflinePolicy, ConvertError> {
    let after_grace = match pb::AfterGrace::try_from(p.after_grace) {
        Ok(pb::AfterGrace::Allow) => AfterGrace::Allow,
        Ok(pb::AfterGrace::Deny) => AfterGrace::Deny,
        _ => {
            return Err(ConvertError::out_of_range(
                &format!("{field}.after_grace"),
                "must be ALLOW or DENY",
            ))
        }
    };
    Ok(OfflinePolicy {
        offline_grace_seconds: p.offline_grace_seconds,
        after_grace,
    })
}

impl From<Seats> for pb::Seats {
    fn from(s: Seats) -> Self {
        pb::Seats {
            count: s.count,
            mode: Some(match s.mode {
                SeatMode::Named { assigned } => pb::seats::Mode::Named(pb::NamedSeats {
                    assigned_subject_ids: assigned.into_iter().map(Into::into).collect(),
                }),
                SeatMode::Floating { lease_ttl_seconds } => {
                    pb::seats::Mode::Floating(pb::FloatingSeats { lease_ttl_seconds })
                }
            }),
        }
    }
}

fn seats_from_proto(field: &str, s: pb::Seats) -> Result<Seats, ConvertError> {
    let mode = match s.mode {
        None => return Err(ConvertError::missing(&format!("{field}.mode"))),
        Some(pb::seats::Mode::Named(n)) => SeatMode::Named {
            assigned: parse_set(
                &format!("{field}.named.assigned_subject_ids"),
                n.assigned_subject_ids,
                s.count as usize,
                |s| SubjectId::new(s),
            )?,
        },
        Some(pb::seats::Mode::Floating(f)) => SeatMode::Floating {
            lease_ttl_seconds: f.lease_ttl_seconds,
        },
    };
    Ok(Seats {
        count: s.count,
        mode,
    })
}

fn status_to_proto(s: EntitlementStatus) -> pb::EntitlementStatus {
    match s {
        EntitlementStatus::Active => pb::EntitlementStatus::Active,
        EntitlementStatus::Suspended => pb::EntitlementStatus::Suspended,
        EntitlementStatus::Revoked => pb::EntitlementStatus::Revoked,
    }
}

impl From<Entitlement> for pb::Entitlement {
    fn from(e: Entitlement) -> Self {
        pb::Entitlement {
            entitlement_id: e.id.into(),
            account_id: e.account.into(),
            grant: Some(pb::Grant {
                kind: Some(match e.grant {
                    Grant::Plan(p) => pb::grant::Kind::PlanId(p.into()),
                    Grant::Addon(a) => pb::grant::Kind::AddonId(a.into()),
                    Grant::Feature(f) => pb::grant::Kind::Feature(f.into()),
                }),
            }),
            valid_from: e.valid_from.0,
            valid_until: e.valid_until.map(|t| t.0),
            grace_period_seconds: e.grace_period_seconds,
            seats: e.seats.map(Into::into),
            usage_cap_overrides: e
                .usage_cap_overrides
                .into_iter()
                .map(|(f, c)| (f.into(), c.into()))
                .collect(),
            status: status_to_proto(e.status) as i32,
            geo_rule: Some(e.geo_rule.into()),
            offline_policy: e.offline_policy.map(Into::into),
            required_role: e.required_role.map(Into::into),
            allowed_groups: e.allowed_groups.into_iter().map(Into::into).collect(),
            source_order_id: e.source_order.map(Into::into),
            revision: e.revision,
            trial: e.trial,
        }
    }
}

impl TryFrom<pb::Entitlement> for Entitlement {
    type Error = ConvertError;

    fn try_from(e: pb::Entitlement) -> Result<Self, ConvertError> {
        let grant = match e.grant.and_then(|g| g.kind) {
            None => return Err(ConvertError::missing("grant")),
            Some(pb::grant::Kind::PlanId(p)) => Grant::Plan(PlanId::new(p).at("grant.plan_id")?),
            Some(pb::grant::Kind::AddonId(a)) => {
                Grant::Addon(AddonId::new(a).at("grant.addon_id")?)
            }
            Some(pb::grant::Kind::Feature(f)) => {
                Grant::Feature(feature_grant_from_proto("grant.feature", f)?)
            }
        };
        if e.usage_cap_overrides.len() > CAP_OVERRIDES_MAX {
            return Err(ConvertError::out_of_range(
                "usage_cap_overrides",
                format!(
                    "holds {} entries, at most {CAP_OVERRIDES_MAX} are allowed",
                    e.usage_cap_overrides.len()
                ),
            ));
        }
        let usage_cap_overrides = e
            .usage_cap_overrides
            .into_iter()
            .map(|(f, c)| {
                let field = format!("usage_cap_overrides[{f}]");
                Ok((FeatureId::new(f).at(&field)?, cap_from_proto(&field, c)?))
            })
            .collect::<Result<BTreeMap<_, _>, ConvertError>>()?;
        let status = match pb::EntitlementStatus::try_from(e.status) {
            Ok(pb::EntitlementStatus::Active) => EntitlementStatus::Active,
            Ok(pb::EntitlementStatus::Suspended) => EntitlementStatus::Suspended,
            Ok(pb::EntitlementStatus::Revoked) => EntitlementStatus::Revoked,
            _ => {
                return Err(ConvertError::out_of_range(
                    "status",
                    "must be ACTIVE, SUSPENDED or REVOKED",
                ))
            }
        };
        let entitlement = Entitlement {
            id: EntitlementId::new(e.entitlement_id).at("entitlement_id")?,
            account: AccountId::new(e.account_id).at("account_id")?,
            grant,
            valid_from: UnixSeconds(e.valid_from),
            valid_until: e.valid_until.map(UnixSeconds),
            grace_period_seconds: e.grace_period_seconds,
            seats: e.seats.map(|s| seats_from_proto("seats", s)).transpose()?,
            usage_cap_overrides,
            status,
            geo_rule: e
                .geo_rule
                .map(|r| geo_rule_from_proto("geo_rule", r))
                .transpose()?
                .unwrap_or_default(),
            offline_policy: e
                .offline_policy
                .map(|p| offline_policy_from_proto("offline_policy", p))
                .transpose()?,
            required_role: e
                .required_role
                .map(|r| RoleName::new(r).at("required_role"))
                .transpose()?,
            allowed_groups: parse_set(
                "allowed_groups",
                e.allowed_groups,
                ROLES_OR_GROUPS_MAX,
                |g| GroupName::new(g),
            )?,
            source_order: e
                .source_order_id
                .map(|o| OrderId::new(o).at("source_order_id"))
                .transpose()?,
            revision: e.revision,
            trial: e.trial,
        };
        entitlement.validate().at("entitlement")?;
        Ok(entitlement)
    }
}
