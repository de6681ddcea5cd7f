//! The claims a license token carries (its PASETO message), and how an
//! entitlement is resolved into them.

use crate::error::LicenseError;
use crate::id::RandomId;
use crate::time::{is_rfc3339_range, rfc3339};
use serde::{Deserialize, Serialize};
use tollgate_model::limits::GRANTS_PER_BUNDLE_MAX;
use tollgate_model::{
    AccountId, AddonId, Catalog, ConfigValues, Entitlement, EntitlementId, EntitlementStatus,
    FeatureId, GeoRule, Grant, OfflinePolicy, PlanId, SeatMode, Seats, SubjectId, UnixSeconds,
    UsageCap,
};

/// Most entitlements in one license. An account may hold more
/// (`ENTITLEMENTS_PER_ACCOUNT_MAX`); a license is for one product or
/// audience, and 256 keeps the worst-case token, and the work of parsing it,
/// small.
pub const ENTITLEMENTS_PER_LICENSE_MAX: usize = 256;
pub use tollgate_model::{valid_region_name, AUDIENCE_BYTES_MAX, REGION_NAME_BYTES_MAX};
/// `iss` of a token the origin signed.
pub const ISSUER_ORIGIN: &str = "tollgate-origin";
/// `iss` of a token a region signed is this, then the region's name.
pub const ISSUER_REGION_PREFIX: &str = "tollgate-region:";

/// `tollgate-region:<region>`, the `iss` of a token a region signs.
pub fn region_issuer(region: &str) -> String {
    format!("{ISSUER_REGION_PREFIX}{region}")
}

/// The claims of a license token: the PASETO message, as JSON.
///
/// Unknown fields are refused, like everywhere in the model: a verifier that
/// silently ignored a claim it does not know could grant more than the issuer
/// meant. A new claim therefore needs verifiers upgraded before issuers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseClaims {
    /// [`ISSUER_ORIGIN`] or `tollgate-region:<region>` ([`region_issuer`]).
    pub iss: String,
    /// The account, or `<account>/<subject>` ([`LicenseClaims::subject_of`]).
    pub sub: String,
    /// The product id or audience string the token is for.
    pub aud: String,
    /// Issued at (RFC 3339 UTC on the wire).
    #[serde(with = "rfc3339")]
    pub iat: UnixSeconds,
    /// Not before (RFC 3339 UTC on the wire); `iat <= nbf`.
    #[serde(with = "rfc3339")]
    pub nbf: UnixSeconds,
    /// Expires (RFC 3339 UTC on the wire); `nbf < exp`. Refused from `exp`.
    #[serde(with = "rfc3339")]
    pub exp: UnixSeconds,
    /// Token id, for revocation.
    pub jti: RandomId,
    pub account: AccountId,
    /// Set when the license is for one user or device of the account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<SubjectId>,
    /// The origin revision the entitlements were read at.
    pub revision: u64,
    /// Whether the token is bound to a device fingerprint (through the
    /// implicit assertion; see the crate docs).
    pub device_bound: bool,
    /// At most [`ENTITLEMENTS_PER_LICENSE_MAX`].
    pub entitlements: Vec<LicenseEntitlement>,
}

impl LicenseClaims {
    /// The `sub` for an account, or for one of its subjects.
    pub fn subject_of(account: &AccountId, subject: Option<&SubjectId>) -> String {
        match subject {
            Some(subject) => format!("{account}/{subject}"),
            None => account.to_string(),
        }
    }

    /// Whether `sub` is [`LicenseClaims::subject_of`] the account and subject
    /// (compared in place: this runs on every verification).
    fn sub_matches(&self) -> bool {
        let rest = self.sub.strip_prefix(self.account.as_str());
        match (&self.subject, rest) {
            (None, Some("")) => true,
            (Some(subject), Some(rest)) => rest.strip_prefix('/') == Some(subject.as_str()),
            _ => false,
        }
    }

    /// The token's lifetime, `exp - iat`, in seconds.
    pub fn ttl_seconds(&self) -> u64 {
        self.exp.seconds_since(self.iat)
    }

    /// The region named by `iss`, or `None` for the origin. `Err` when `iss`
    /// is neither.
    pub fn issuer_region(&self) -> Result<Option<&str>, LicenseError> {
        if self.iss == ISSUER_ORIGIN {
            return Ok(None);
        }
        match self.iss.strip_prefix(ISSUER_REGION_PREFIX) {
            Some(region) if valid_region_name(region) => Ok(Some(region)),
            _ => Err(LicenseError::ClaimsInvalid(format!(
                "iss must be {ISSUER_ORIGIN:?} or \"{ISSUER_REGION_PREFIX}<region>\""
            ))),
        }
    }

    /// Checks what serde cannot: the issuer's form, `sub` against `account`
    /// and `subject`, the audience's length, `iat <= nbf < exp`, that every
    /// time has an RFC 3339 spelling, and the bounds.
    pub fn validate(&self) -> Result<(), LicenseError> {
        let invalid = |reason: String| Err(LicenseError::ClaimsInvalid(reason));
        self.issuer_region()?;
        if !self.sub_matches() {
            return invalid("sub must be the account, or <account>/<subject>".into());
        }
        if self.aud.is_empty() || self.aud.len() > AUDIENCE_BYTES_MAX {
            return invalid(format!("aud must be 1..={AUDIENCE_BYTES_MAX} bytes"));
        }
        for (name, t) in [("iat", self.iat), ("nbf", self.nbf), ("exp", self.exp)] {
            if !is_rfc3339_range(t) {
                return invalid(format!("{name} is outside the years 0000..=9999"));
            }
        }
        if !(self.iat <= self.nbf && self.nbf < self.exp) {
            return invalid(format!(
                "times must satisfy iat <= nbf < exp (iat {}, nbf {}, exp {})",
                self.iat.0, self.nbf.0, self.exp.0
            ));
        }
        if self.entitlements.len() > ENTITLEMENTS_PER_LICENSE_MAX {
            return invalid(format!(
                "{} entitlements, over the limit of {ENTITLEMENTS_PER_LICENSE_MAX}",
                self.entitlements.len()
            ));
        }
        if let Some(e) = self
            .entitlements
            .iter()
            .find(|e| e.features.len() > GRANTS_PER_BUNDLE_MAX)
        {
            return invalid(format!(
                "entitlement {} lists {} features, over the limit of {GRANTS_PER_BUNDLE_MAX}",
                e.id,
                e.features.len()
            ));
        }
        Ok(())
    }

    /// Parses and validates claims (a verified message).
    pub fn from_json(bytes: &[u8]) -> Result<LicenseClaims, LicenseError> {
        let claims: LicenseClaims = serde_json::from_slice(bytes)
            .map_err(|e| LicenseError::ClaimsInvalid(LicenseError::reason(e)))?;
        claims.validate()?;
        Ok(claims)
    }

    /// Validates and encodes the claims.
    pub fn to_json(&self) -> Result<Vec<u8>, LicenseError> {
        self.validate()?;
        serde_json::to_vec(self).map_err(|e| LicenseError::ClaimsInvalid(LicenseError::reason(e)))
    }
}

/// One entitlement as a license carries it: resolved against the catalog at
/// issue time, so that a verifier needs no catalog.
///
/// Rules combine as in the engine (`tollgate_engine::AccountView`): for
/// feature `f` of entitlement `e`, the geo rules that apply are
/// `e.geo_rules` and `f.geo_rule`; the offline policy is
/// [`LicenseEntitlement::offline_policy_for`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseEntitlement {
    pub id: EntitlementId,
    /// What the entitlement grants; the resolved features are in `features`.
    pub grant: LicenseGrant,
    /// The features the grant gives, each with its effective cap.
    pub features: Vec<LicenseFeature>,
    pub valid_from: UnixSeconds,
    /// `None` means perpetual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until: Option<UnixSeconds>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub grace_period_seconds: u64,
    pub status: EntitlementStatus,
    /// The entitlement's own rule and its plan's or add-on's, those that
    /// restrict something. All apply.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "compact_geo::serialize_all"
    )]
    pub geo_rules: Vec<GeoRule>,
    /// The strictest of the entitlement's and its plan's or add-on's
    /// policies, else the default given to [`LicenseEntitlement::resolve`].
    pub offline_policy: OfflinePolicy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seats: Option<LicenseSeats>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub trial: bool,
}

// Defaults are left out of the token: every byte is carried by every request.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One feature as an entitlement in a license grants it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseFeature {
    pub feature: FeatureId,
    /// The entitlement's override, else the plan's or add-on's cap; `None`
    /// means unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_cap: Option<UsageCap>,
    /// The feature's configuration values: the catalog's defaults overlaid
    /// with the grant's, as the engine resolves them.
    #[serde(default, skip_serializing_if = "ConfigValues::is_empty")]
    pub config: ConfigValues,
    /// The feature's own catalog rule, when it restricts something.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "compact_geo::serialize_option"
    )]
    pub geo_rule: Option<GeoRule>,
    /// Set when the feature has its own offline policy: the strictest of it
    /// and the entitlement's and bundle's. `None`: the entitlement's applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_policy: Option<OfflinePolicy>,
}

/// What an entitlement grants, by id. The model's `Grant::Feature` also
/// holds the grant's cap and configuration; in a license those are resolved
/// into [`LicenseEntitlement::features`], so they are not repeated here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LicenseGrant {
    Plan(PlanId),
    Addon(AddonId),
    Feature(FeatureId),
}

impl From<&Grant> for LicenseGrant {
    fn from(grant: &Grant) -> Self {
        match grant {
            Grant::Plan(id) => LicenseGrant::Plan(id.clone()),
            Grant::Addon(id) => LicenseGrant::Addon(id.clone()),
            Grant::Feature(grant) => LicenseGrant::Feature(grant.feature.clone()),
        }
    }
}

/// Geo rules written without their empty lists and false flags: the model's
/// `GeoRule` writes every list and flag, which in a token is mostly `[]` and
/// `false` on every request. Reading back uses the model's own
/// `Deserialize`, whose `#[serde(default)]` fills in what is left out.
///
/// An explicit `unknown_location: "deny"` keeps its older spelling,
/// `deny_unknown_location: true`, which the model still reads: a token
/// outlives the SDK that verifies it, and SDKs from before
/// `unknown_location` refuse claims with a field they do not know. Only
/// `"allow"`, which they cannot express, is written as `unknown_location`.
mod compact_geo {
    use serde::{Serialize, Serializer};
    use std::collections::BTreeSet;
    use tollgate_model::{Continent, CountryCode, GeoRule, SubdivisionCode, UnknownLocation};

    #[derive(Serialize)]
    struct Compact<'a> {
        #[serde(skip_serializing_if = "BTreeSet::is_empty")]
        allow_countries: &'a BTreeSet<CountryCode>,
        #[serde(skip_serializing_if = "BTreeSet::is_empty")]
        deny_countries: &'a BTreeSet<CountryCode>,
        #[serde(skip_serializing_if = "BTreeSet::is_empty")]
        allow_continents: &'a BTreeSet<Continent>,
        #[serde(skip_serializing_if = "BTreeSet::is_empty")]
        deny_continents: &'a BTreeSet<Continent>,
        #[serde(skip_serializing_if = "BTreeSet::is_empty")]
        allow_subdivisions: &'a BTreeSet<SubdivisionCode>,
        #[serde(skip_serializing_if = "BTreeSet::is_empty")]
        deny_subdivisions: &'a BTreeSet<SubdivisionCode>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        block_anonymous: bool,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        deny_unknown_location: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        unknown_location: Option<UnknownLocation>,
    }

    fn compact(rule: &GeoRule) -> Compact<'_> {
        // No `..`: a field added to GeoRule must be added here, or it would
        // silently drop out of every license.
        let GeoRule {
            allow_countries,
            deny_countries,
            allow_continents,
            deny_continents,
            allow_subdivisions,
            deny_subdivisions,
            block_anonymous,
            unknown_location,
        } = rule;
        Compact {
            allow_countries,
            deny_countries,
            allow_continents,
            deny_continents,
            allow_subdivisions,
            deny_subdivisions,
            block_anonymous: *block_anonymous,
            deny_unknown_location: *unknown_location == Some(UnknownLocation::Deny),
            unknown_location: unknown_location.filter(|u| *u == UnknownLocation::Allow),
        }
    }

    pub fn serialize_all<S: Serializer>(rules: &[GeoRule], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(rules.iter().map(compact))
    }

    pub fn serialize_option<S: Serializer>(
        rule: &Option<GeoRule>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match rule {
            Some(rule) => s.serialize_some(&compact(rule)),
            None => s.serialize_none(),
        }
    }
}

/// Seats, without the list of assigned subjects: that list can hold up to a
/// million ids, far too many for a token, and whether a subject holds a
/// named seat is decided when a license is issued for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseSeats {
    pub count: u32,
    pub mode: LicenseSeatMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LicenseSeatMode {
    Named,
    Floating { lease_ttl_seconds: u32 },
}

impl From<&Seats> for LicenseSeats {
    fn from(seats: &Seats) -> Self {
        LicenseSeats {
            count: seats.count,
            mode: match seats.mode {
                SeatMode::Named { .. } => LicenseSeatMode::Named,
                SeatMode::Floating { lease_ttl_seconds } => {
                    LicenseSeatMode::Floating { lease_ttl_seconds }
                }
            },
        }
    }
}

impl LicenseEntitlement {
    /// Resolves `entitlement` against `catalog`: the features its plan,
    /// add-on or single-feature grant gives, each with its effective cap
    /// (`usage_cap_overrides` over the bundle's cap), and the rules that
    /// apply. `default_offline` is the policy where none is set (normally
    /// `catalog.default_offline_policy`). `None` if the plan or add-on is not
    /// in the catalog: such an entitlement grants nothing, as in the engine.
    pub fn resolve(
        entitlement: &Entitlement,
        catalog: &Catalog,
        default_offline: OfflinePolicy,
    ) -> Option<LicenseEntitlement> {
        let (grants, bundle_geo, bundle_offline) = match &entitlement.grant {
            Grant::Plan(id) => {
                let plan = catalog.plans.get(id)?;
                (
                    plan.features.as_slice(),
                    Some(&plan.geo_rule),
                    plan.offline_policy,
                )
            }
            Grant::Addon(id) => {
                let addon = catalog.addons.get(id)?;
                (
                    addon.features.as_slice(),
                    Some(&addon.geo_rule),
                    addon.offline_policy,
                )
            }
            Grant::Feature(grant) => (std::slice::from_ref(grant), None, None),
        };
        let own_offline = [entitlement.offline_policy, bundle_offline]
            .into_iter()
            .flatten()
            .reduce(OfflinePolicy::strictest);
        let features = grants
            .iter()
            .map(|grant| {
                let feature = catalog.features.get(&grant.feature);
                let mut config = feature.map(|f| f.config.clone()).unwrap_or_default();
                config.extend(grant.config.iter().map(|(k, v)| (k.clone(), v.clone())));
                LicenseFeature {
                    feature: grant.feature.clone(),
                    config,
                    usage_cap: entitlement
                        .usage_cap_overrides
                        .get(&grant.feature)
                        .copied()
                        .or(grant.usage_cap),
                    geo_rule: feature
                        .map(|f| &f.geo_rule)
                        .filter(|rule| !rule.is_unrestricted())
                        .cloned(),
                    offline_policy: feature
                        .and_then(|f| f.offline_policy)
                        .map(|policy| own_offline.map_or(policy, |own| own.strictest(policy))),
                }
            })
            .collect();
        let geo_rules = [Some(&entitlement.geo_rule), bundle_geo]
            .into_iter()
            .flatten()
            .filter(|rule| !rule.is_unrestricted())
            .cloned()
            .collect();
        Some(LicenseEntitlement {
            id: entitlement.id.clone(),
            grant: LicenseGrant::from(&entitlement.grant),
            features,
            valid_from: entitlement.valid_from,
            valid_until: entitlement.valid_until,
            grace_period_seconds: entitlement.grace_period_seconds,
            status: entitlement.status,
            geo_rules,
            offline_policy: own_offline.unwrap_or(default_offline),
            seats: entitlement.seats.as_ref().map(LicenseSeats::from),
            trial: entitlement.trial,
        })
    }

    /// The instant from which it no longer allows at all (`valid_until` plus
    /// the grace); `None` means perpetual.
    pub fn usable_until(&self) -> Option<UnixSeconds> {
        self.valid_until
            .map(|until| until.plus_seconds(self.grace_period_seconds))
    }

    /// Status active and `valid_from <= now < usable_until`.
    pub fn is_active_at(&self, now: UnixSeconds) -> bool {
        self.status == EntitlementStatus::Active
            && self.valid_from <= now
            && self.usable_until().is_none_or(|until| now < until)
    }

    /// The feature, if this entitlement grants it.
    pub fn feature(&self, feature: &FeatureId) -> Option<&LicenseFeature> {
        self.features.iter().find(|f| &f.feature == feature)
    }

    /// The offline policy that applies to `feature`, if granted.
    pub fn offline_policy_for(&self, feature: &FeatureId) -> Option<OfflinePolicy> {
        self.feature(feature)
            .map(|f| f.offline_policy.unwrap_or(self.offline_policy))
    }
}

/// The entitlements a token for the account in `data` (or one subject of
/// it) carries: those that allow now or will, resolved against the catalog.
/// What the origin and a region both put in the tokens they issue.
pub fn license_entitlements(
    data: &tollgate_model::Dataset,
    subject: Option<&SubjectId>,
    now: UnixSeconds,
) -> Vec<LicenseEntitlement> {
    let subject = subject.and_then(|id| data.subjects.iter().find(|s| &s.id == id));
    data.entitlements
        .iter()
        .filter(|e| e.status == EntitlementStatus::Active)
        .filter(|e| e.usable_until().is_none_or(|until| until > now))
        .filter(|e| match subject {
            None => true,
            Some(s) => {
                e.required_role.as_ref().is_none_or(|r| s.roles.contains(r))
                    && (e.allowed_groups.is_empty()
                        || e.allowed_groups.iter().any(|g| s.groups.contains(g)))
            }
        })
        .filter_map(|e| {
            LicenseEntitlement::resolve(e, &data.catalog, data.catalog.default_offline_policy)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, subject: Option<&str>) -> LicenseClaims {
        LicenseClaims {
            iss: ISSUER_ORIGIN.into(),
            sub: sub.into(),
            aud: "studio".into(),
            iat: UnixSeconds(0),
            nbf: UnixSeconds(0),
            exp: UnixSeconds(60),
            jti: RandomId::from_bytes([0; 16]),
            account: AccountId::new("acme").unwrap(),
            subject: subject.map(|s| SubjectId::new(s).unwrap()),
            revision: 0,
            device_bound: false,
            entitlements: Vec::new(),
        }
    }

    #[test]
    fn sub_must_be_the_account_or_account_slash_subject() {
        for (sub, subject, ok) in [
            ("acme", None, true),
            ("acme/laptop", Some("laptop"), true),
            ("acme/", None, false),
            ("acme/laptop", None, false),
            ("acme", Some("laptop"), false),
            ("acmex/laptop", Some("laptop"), false),
            ("acme/laptop/x", Some("laptop"), false),
            ("globex", None, false),
        ] {
            let claims = claims(sub, subject);
            assert_eq!(claims.validate().is_ok(), ok, "{sub:?} {subject:?}");
            assert_eq!(
                claims.sub == LicenseClaims::subject_of(&claims.account, claims.subject.as_ref()),
                ok,
                "sub_matches agrees with subject_of: {sub:?} {subject:?}"
            );
        }
    }

    #[test]
    fn iss_is_the_origin_or_a_valid_region() {
        for (iss, ok) in [
            ("tollgate-origin", true),
            ("tollgate-region:eu-west-1", true),
            ("tollgate-region:", false),
            ("tollgate-region:EU", false),
            ("tollgate-region:eu/west", false),
            ("tollgate-origin ", false),
            ("https://origin", false),
        ] {
            let mut claims = claims("acme", None);
            claims.iss = iss.into();
            assert_eq!(claims.validate().is_ok(), ok, "{iss:?}");
        }
    }

    #[test]
    fn geo_rules_round_trip_compactly() {
        use tollgate_model::{Continent, CountryCode, SubdivisionCode, UnknownLocation};
        let full = GeoRule {
            allow_countries: [CountryCode::new("DE").unwrap()].into(),
            deny_countries: [CountryCode::new("KP").unwrap()].into(),
            allow_continents: [Continent::Europe].into(),
            deny_continents: [Continent::Antarctica].into(),
            allow_subdivisions: [SubdivisionCode::new("US-CA").unwrap()].into(),
            deny_subdivisions: [SubdivisionCode::new("GB-ENG").unwrap()].into(),
            block_anonymous: true,
            unknown_location: Some(UnknownLocation::Deny),
        };
        let allow_unknown = GeoRule {
            deny_countries: [CountryCode::new("KP").unwrap()].into(),
            unknown_location: Some(UnknownLocation::Allow),
            ..GeoRule::default()
        };
        let deny_only = GeoRule {
            deny_countries: [CountryCode::new("KP").unwrap()].into(),
            ..GeoRule::default()
        };
        let feature = |rule: GeoRule| LicenseFeature {
            feature: FeatureId::new("f").unwrap(),
            usage_cap: None,
            config: ConfigValues::new(),
            geo_rule: Some(rule),
            offline_policy: None,
        };
        for rule in [full.clone(), allow_unknown.clone(), deny_only.clone()] {
            let json = serde_json::to_string(&feature(rule.clone())).unwrap();
            let back: LicenseFeature = serde_json::from_str(&json).unwrap();
            assert_eq!(back.geo_rule, Some(rule), "{json}");
        }
        assert_eq!(
            serde_json::to_string(&feature(deny_only)).unwrap(),
            r#"{"feature":"f","geo_rule":{"deny_countries":["KP"]}}"#
        );
        // An explicit deny keeps the spelling older SDKs read; only
        // "allow" needs the new field.
        let json = serde_json::to_string(&feature(full)).unwrap();
        assert!(
            json.contains(r#""deny_unknown_location":true"#)
                && !json.contains(r#""unknown_location""#),
            "{json}"
        );
        assert_eq!(
            serde_json::to_string(&feature(allow_unknown)).unwrap(),
            r#"{"feature":"f","geo_rule":{"deny_countries":["KP"],"unknown_location":"allow"}}"#
        );
    }
}
