//! Entitlements: an account's right to a plan, an add-on or one feature, and
//! everything that limits it (validity, grace, seats, caps, status, geo,
//! offline policy, role).

use crate::catalog::{validate_config, FeatureGrant, UsageCap};
use crate::geo::GeoRule;
use crate::id::{
    AccountId, AddonId, EntitlementId, FeatureId, GroupName, OrderId, PlanId, RoleName, SubjectId,
};
use crate::limits::*;
use crate::offline::OfflinePolicy;
use crate::time::UnixSeconds;
use crate::ModelError;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// What an entitlement grants.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Grant {
    Plan(PlanId),
    Addon(AddonId),
    Feature(FeatureGrant),
}

#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntitlementStatus {
    #[default]
    Active,
    /// Withdrawn for now (unpaid invoice); may be resumed.
    Suspended,
    /// Withdrawn for good.
    Revoked,
}

/// How seats are held.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SeatMode {
    /// Assigned to particular users or devices.
    Named {
        #[serde(default)]
        assigned: BTreeSet<SubjectId>,
    },
    /// Leased concurrently by any subject while a seat is free; a lease not
    /// renewed within its time to live frees the seat.
    Floating { lease_ttl_seconds: u32 },
}

#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seats {
    pub count: u32,
    pub mode: SeatMode,
}

/// An account's right to a plan, an add-on or one feature.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entitlement {
    pub id: EntitlementId,
    pub account: AccountId,
    pub grant: Grant,
    pub valid_from: UnixSeconds,
    /// `None` means perpetual.
    #[serde(default)]
    pub valid_until: Option<UnixSeconds>,
    /// After `valid_until`, checks answer IN_GRACE (allowed) for this long.
    #[serde(default)]
    pub grace_period_seconds: u64,
    /// `None` means any subject of the account may use it.
    #[serde(default)]
    pub seats: Option<Seats>,
    /// Caps that replace the plan's or add-on's caps for these features.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, UsageCap>)]
    pub usage_cap_overrides: BTreeMap<FeatureId, UsageCap>,
    #[serde(default)]
    pub status: EntitlementStatus,
    #[serde(default)]
    pub geo_rule: GeoRule,
    #[serde(default)]
    pub offline_policy: Option<OfflinePolicy>,
    /// A subject must hold this role.
    #[serde(default)]
    pub required_role: Option<RoleName>,
    /// If not empty, a subject must belong to one of these groups.
    #[serde(default)]
    pub allowed_groups: BTreeSet<GroupName>,
    /// The order that created or last changed it.
    #[serde(default)]
    pub source_order: Option<OrderId>,
    /// Origin revision of the last change.
    #[serde(default)]
    pub revision: u64,
    /// A trial: it allows like any other entitlement, and decisions say so,
    /// so applications can show it and sales can convert it.
    #[serde(default)]
    pub trial: bool,
}

impl Entitlement {
    /// The instant after which the entitlement no longer allows at all.
    pub fn usable_until(&self) -> Option<UnixSeconds> {
        self.valid_until
            .map(|until| until.plus_seconds(self.grace_period_seconds))
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let invalid = |field: &'static str, reason: String| ModelError::Invalid { field, reason };
        if let Some(until) = self.valid_until {
            if until <= self.valid_from {
                return Err(invalid(
                    "entitlement.valid_until",
                    format!("{until} is not after valid_from {}", self.valid_from),
                ));
            }
        }
        if self.grace_period_seconds > GRACE_PERIOD_SECONDS_MAX {
            return Err(invalid(
                "entitlement.grace_period_seconds",
                format!(
                    "{} exceeds the maximum of {GRACE_PERIOD_SECONDS_MAX}",
                    self.grace_period_seconds
                ),
            ));
        }
        if let Some(seats) = &self.seats {
            if seats.count == 0 || seats.count > SEATS_MAX {
                return Err(invalid(
                    "entitlement.seats.count",
                    format!("{} is outside 1..={SEATS_MAX}", seats.count),
                ));
            }
            match &seats.mode {
                SeatMode::Named { assigned } if assigned.len() > seats.count as usize => {
                    return Err(invalid(
                        "entitlement.seats.mode.named.assigned",
                        format!(
                            "{} subjects assigned to {} seats",
                            assigned.len(),
                            seats.count
                        ),
                    ))
                }
                SeatMode::Floating { lease_ttl_seconds }
                    if *lease_ttl_seconds == 0 || *lease_ttl_seconds > LEASE_TTL_SECONDS_MAX =>
                {
                    return Err(invalid(
                        "entitlement.seats.mode.floating.lease_ttl_seconds",
                        format!("{lease_ttl_seconds} is outside 1..={LEASE_TTL_SECONDS_MAX}"),
                    ))
                }
                _ => {}
            }
        }
        if self.usage_cap_overrides.len() > CAP_OVERRIDES_MAX {
            return Err(ModelError::TooMany {
                field: "entitlement.usage_cap_overrides",
                len: self.usage_cap_overrides.len(),
                max: CAP_OVERRIDES_MAX,
            });
        }
        if self.allowed_groups.len() > ROLES_OR_GROUPS_MAX {
            return Err(ModelError::TooMany {
                field: "entitlement.allowed_groups",
                len: self.allowed_groups.len(),
                max: ROLES_OR_GROUPS_MAX,
            });
        }
        if let Grant::Feature(grant) = &self.grant {
            validate_config("entitlement.grant.feature.config", &grant.config)?;
        }
        self.geo_rule.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Entitlement {
        Entitlement {
            id: EntitlementId::new("e1").unwrap(),
            account: AccountId::new("acme").unwrap(),
            grant: Grant::Plan(PlanId::new("pro").unwrap()),
            valid_from: UnixSeconds(100),
            valid_until: Some(UnixSeconds(200)),
            grace_period_seconds: 10,
            seats: None,
            usage_cap_overrides: BTreeMap::new(),
            status: EntitlementStatus::Active,
            geo_rule: GeoRule::default(),
            offline_policy: None,
            required_role: None,
            allowed_groups: BTreeSet::new(),
            source_order: None,
            revision: 1,
            trial: false,
        }
    }

    #[test]
    fn validation_names_the_field() {
        assert!(base().validate().is_ok());
        type Mutation = Box<dyn Fn(&mut Entitlement)>;
        let cases: Vec<(&str, Mutation)> = vec![
            (
                "valid_until",
                Box::new(|e| e.valid_until = Some(UnixSeconds(100))),
            ),
            (
                "grace_period_seconds",
                Box::new(|e| e.grace_period_seconds = u64::MAX),
            ),
            (
                "seats.count",
                Box::new(|e| {
                    e.seats = Some(Seats {
                        count: 0,
                        mode: SeatMode::Floating {
                            lease_ttl_seconds: 60,
                        },
                    })
                }),
            ),
            (
                "lease_ttl_seconds",
                Box::new(|e| {
                    e.seats = Some(Seats {
                        count: 1,
                        mode: SeatMode::Floating {
                            lease_ttl_seconds: 0,
                        },
                    })
                }),
            ),
            (
                "named.assigned",
                Box::new(|e| {
                    e.seats = Some(Seats {
                        count: 1,
                        mode: SeatMode::Named {
                            assigned: ["a", "b"]
                                .iter()
                                .map(|s| SubjectId::new(*s).unwrap())
                                .collect(),
                        },
                    })
                }),
            ),
        ];
        for (field, mutate) in cases {
            let mut e = base();
            mutate(&mut e);
            let err = e.validate().expect_err(field);
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
    }

    #[test]
    fn usable_until_adds_grace_and_saturates() {
        assert_eq!(base().usable_until(), Some(UnixSeconds(210)));
        let mut e = base();
        e.valid_until = Some(UnixSeconds(i64::MAX - 1));
        e.grace_period_seconds = 100;
        assert_eq!(e.usable_until(), Some(UnixSeconds(i64::MAX)));
    }

    #[test]
    fn json_form_is_readable_and_strict() {
        let json = r#"{"id":"e1","account":"acme","grant":{"plan":"pro"},"valid_from":100,
            "seats":{"count":5,"mode":{"floating":{"lease_ttl_seconds":300}}}}"#;
        let e: Entitlement = serde_json::from_str(json).unwrap();
        assert_eq!(e.status, EntitlementStatus::Active);
        assert!(
            serde_json::from_str::<Entitlement>(&json.replace("\"grant\"", "\"grnat\"")).is_err()
        );
    }
}
