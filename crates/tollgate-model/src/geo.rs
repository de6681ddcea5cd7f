//! Geography: codes, the rules vendors attach to features, plans and
//! entitlements, and the facts a node knows about a caller's location.

use crate::ModelError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// Most entries in one list of a [`GeoRule`]. There are 249 ISO 3166-1
/// countries, so 300 is every country plus room; more is a mistake.
pub const GEO_LIST_LEN_MAX: usize = 300;

/// An ISO 3166-1 alpha-2 country code, upper case (`DE`, `US`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    pub fn new(code: &str) -> Result<Self, ModelError> {
        match code.as_bytes() {
            [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Ok(Self([*a, *b])),
            _ => Err(ModelError::Code {
                kind: "country code",
                value: code.chars().take(16).collect(),
                expected: "ISO 3166-1 alpha-2, two upper-case letters",
            }),
        }
    }

    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII upper-case letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl TryFrom<String> for CountryCode {
    type Error = ModelError;
    fn try_from(value: String) -> Result<Self, ModelError> {
        Self::new(&value)
    }
}

impl From<CountryCode> for String {
    fn from(code: CountryCode) -> String {
        code.as_str().to_owned()
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({})", self.as_str())
    }
}

/// A continent, with MaxMind's two-letter codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Continent {
    Africa,
    Antarctica,
    Asia,
    Europe,
    NorthAmerica,
    Oceania,
    SouthAmerica,
}

impl Continent {
    pub const ALL: [Continent; 7] = [
        Continent::Africa,
        Continent::Antarctica,
        Continent::Asia,
        Continent::Europe,
        Continent::NorthAmerica,
        Continent::Oceania,
        Continent::SouthAmerica,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Continent::Africa => "AF",
            Continent::Antarctica => "AN",
            Continent::Asia => "AS",
            Continent::Europe => "EU",
            Continent::NorthAmerica => "NA",
            Continent::Oceania => "OC",
            Continent::SouthAmerica => "SA",
        }
    }

    pub fn from_code(code: &str) -> Result<Self, ModelError> {
        Self::ALL
            .into_iter()
            .find(|c| c.code() == code)
            .ok_or_else(|| ModelError::Code {
                kind: "continent code",
                value: code.chars().take(16).collect(),
                expected: "one of AF, AN, AS, EU, NA, OC, SA",
            })
    }
}

impl TryFrom<String> for Continent {
    type Error = ModelError;
    fn try_from(value: String) -> Result<Self, ModelError> {
        Self::from_code(&value)
    }
}

impl From<Continent> for String {
    fn from(c: Continent) -> String {
        c.code().to_owned()
    }
}

impl fmt::Display for Continent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An ISO 3166-2 subdivision code: the country, a hyphen, and one to three
/// upper-case letters or digits (`US-CA`, `GB-ENG`, `FR-75C`). MaxMind
/// reports the part after the hyphen; the geo layer prefixes the country.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SubdivisionCode(String);

impl SubdivisionCode {
    pub fn new(code: &str) -> Result<Self, ModelError> {
        let bytes = code.as_bytes();
        let valid = bytes.len() >= 4
            && bytes.len() <= 6
            && bytes[0].is_ascii_uppercase()
            && bytes[1].is_ascii_uppercase()
            && bytes[2] == b'-'
            && bytes[3..]
                .iter()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
        if valid {
            Ok(Self(code.to_owned()))
        } else {
            Err(ModelError::Code {
                kind: "subdivision code",
                value: code.chars().take(16).collect(),
                expected: "ISO 3166-2, e.g. US-CA",
            })
        }
    }

    /// Builds `US-CA` from a country and MaxMind's `CA`.
    pub fn from_parts(country: CountryCode, local: &str) -> Result<Self, ModelError> {
        Self::new(&format!("{}-{}", country.as_str(), local))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn country(&self) -> CountryCode {
        CountryCode([self.0.as_bytes()[0], self.0.as_bytes()[1]])
    }
}

impl TryFrom<String> for SubdivisionCode {
    type Error = ModelError;
    fn try_from(value: String) -> Result<Self, ModelError> {
        Self::new(&value)
    }
}

impl From<SubdivisionCode> for String {
    fn from(code: SubdivisionCode) -> String {
        code.0
    }
}

impl fmt::Display for SubdivisionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SubdivisionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubdivisionCode({})", self.0)
    }
}

/// What a [`GeoRule`] does with a caller whose location is unknown: no
/// address given, an address the location database does not list, no
/// database loaded, or a lookup that failed. "Unknown" means nothing at all
/// is known (no country, continent or subdivision).
#[derive(
    utoipa::ToSchema,
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum UnknownLocation {
    /// Blocked (`GEO_BLOCKED`). Also under a rule without location lists:
    /// the caller's location must then be known.
    Deny,
    /// Passes the location lists: deny-lists cannot match it and
    /// allow-lists are not asked. `block_anonymous` still applies.
    Allow,
}

/// Geographic limits on a feature, a plan, an add-on or one entitlement.
///
/// Semantics (the engine implements them, documented here so both agree):
/// - A deny-list match always blocks, whatever the allow-lists say.
/// - When any allow-list is non-empty, the location must match at least one
///   allowed country, continent or subdivision.
/// - An unknown location (nothing known: no country, continent or
///   subdivision) gets `unknown_location`. Unset, the default fails closed
///   for compliance use: a rule with any location list (allow or deny)
///   denies it, so a deny-list of sanctioned countries does not let through
///   a caller the node could not place; a rule without location lists does
///   not look at location. `"allow"` lets unknown locations through the
///   lists; `"deny"` blocks them even under a rule without lists.
/// - `block_anonymous` blocks callers that the anonymous-IP data marks as
///   anonymous. Without such data the caller is not known to be anonymous
///   and passes: the rule cannot be stricter than the databases loaded.
///
/// Stored data and clients from before `unknown_location` may still send
/// the boolean `deny_unknown_location`: `true` reads as
/// `unknown_location: "deny"`, `false` as unset. Setting both is refused.
#[derive(utoipa::ToSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, try_from = "GeoRuleFields")]
pub struct GeoRule {
    pub allow_countries: BTreeSet<CountryCode>,
    pub deny_countries: BTreeSet<CountryCode>,
    pub allow_continents: BTreeSet<Continent>,
    pub deny_continents: BTreeSet<Continent>,
    pub allow_subdivisions: BTreeSet<SubdivisionCode>,
    pub deny_subdivisions: BTreeSet<SubdivisionCode>,
    pub block_anonymous: bool,
    /// What a caller whose location is unknown gets. Unset (or null):
    /// denied by a rule with any location list, not looked at by one
    /// without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_location: Option<UnknownLocation>,
}

/// What a [`GeoRule`] reads as: its fields plus the older
/// `deny_unknown_location`, which must not come with `unknown_location`.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct GeoRuleFields {
    allow_countries: BTreeSet<CountryCode>,
    deny_countries: BTreeSet<CountryCode>,
    allow_continents: BTreeSet<Continent>,
    deny_continents: BTreeSet<Continent>,
    allow_subdivisions: BTreeSet<SubdivisionCode>,
    deny_subdivisions: BTreeSet<SubdivisionCode>,
    block_anonymous: bool,
    unknown_location: Option<UnknownLocation>,
    deny_unknown_location: Option<bool>,
}

impl TryFrom<GeoRuleFields> for GeoRule {
    type Error = ModelError;

    fn try_from(f: GeoRuleFields) -> Result<Self, ModelError> {
        let unknown_location = match (f.unknown_location, f.deny_unknown_location) {
            (Some(_), Some(_)) => {
                return Err(ModelError::Invalid {
                    field: "geo_rule.unknown_location",
                    reason: "set together with the older deny_unknown_location; \
                             set unknown_location (\"deny\" or \"allow\") only"
                        .to_owned(),
                })
            }
            (Some(u), None) => Some(u),
            (None, Some(true)) => Some(UnknownLocation::Deny),
            (None, Some(false) | None) => None,
        };
        Ok(GeoRule {
            allow_countries: f.allow_countries,
            deny_countries: f.deny_countries,
            allow_continents: f.allow_continents,
            deny_continents: f.deny_continents,
            allow_subdivisions: f.allow_subdivisions,
            deny_subdivisions: f.deny_subdivisions,
            block_anonymous: f.block_anonymous,
            unknown_location,
        })
    }
}

impl GeoRule {
    /// True when the rule restricts nothing.
    pub fn is_unrestricted(&self) -> bool {
        !self.has_location_lists()
            && !self.block_anonymous
            && self.unknown_location != Some(UnknownLocation::Deny)
    }

    pub fn has_allow_lists(&self) -> bool {
        !(self.allow_countries.is_empty()
            && self.allow_continents.is_empty()
            && self.allow_subdivisions.is_empty())
    }

    pub fn has_deny_lists(&self) -> bool {
        !(self.deny_countries.is_empty()
            && self.deny_continents.is_empty()
            && self.deny_subdivisions.is_empty())
    }

    /// Any allow- or deny-list of countries, continents or subdivisions.
    pub fn has_location_lists(&self) -> bool {
        self.has_allow_lists() || self.has_deny_lists()
    }

    /// What an unknown location gets under this rule, the default applied:
    /// `Deny` for a rule with location lists, `Allow` (not looked at) for
    /// one without, unless `unknown_location` says otherwise.
    pub fn unknown_location_effective(&self) -> UnknownLocation {
        match self.unknown_location {
            Some(chosen) => chosen,
            None if self.has_location_lists() => UnknownLocation::Deny,
            None => UnknownLocation::Allow,
        }
    }

    pub fn validate(&self) -> Result<(), ModelError> {
        let lists = [
            ("geo_rule.allow_countries", self.allow_countries.len()),
            ("geo_rule.deny_countries", self.deny_countries.len()),
            ("geo_rule.allow_subdivisions", self.allow_subdivisions.len()),
            ("geo_rule.deny_subdivisions", self.deny_subdivisions.len()),
        ];
        for (field, len) in lists {
            if len > GEO_LIST_LEN_MAX {
                return Err(ModelError::TooMany {
                    field,
                    len,
                    max: GEO_LIST_LEN_MAX,
                });
            }
        }
        Ok(())
    }
}

/// Which kinds of anonymous network an address belongs to, as a MaxMind
/// Anonymous IP database reports them.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AnonymousNetwork {
    pub vpn: bool,
    pub tor_exit_node: bool,
    pub public_proxy: bool,
    pub residential_proxy: bool,
    pub hosting_provider: bool,
}

impl AnonymousNetwork {
    pub fn is_anonymous(&self) -> bool {
        self.vpn
            || self.tor_exit_node
            || self.public_proxy
            || self.residential_proxy
            || self.hosting_provider
    }
}

/// What a node knows about where a caller is. Resolved outside the engine
/// (from an IP with MaxMind, or from a trusted proxy's header) and passed in,
/// so the engine stays a pure function.
#[derive(utoipa::ToSchema, Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GeoFacts {
    pub country: Option<CountryCode>,
    pub continent: Option<Continent>,
    /// Most general first, as MaxMind lists them.
    pub subdivisions: Vec<SubdivisionCode>,
    /// `None` when no anonymous-network data was available for this caller.
    pub anonymous: Option<AnonymousNetwork>,
}

impl GeoFacts {
    /// No location at all.
    pub fn unknown() -> Self {
        Self::default()
    }

    pub fn is_location_known(&self) -> bool {
        self.country.is_some() || self.continent.is_some() || !self.subdivisions.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_validate() {
        assert_eq!(CountryCode::new("DE").unwrap().as_str(), "DE");
        for bad in ["de", "DEU", "D", "", "1A"] {
            assert!(CountryCode::new(bad).is_err(), "{bad}");
        }
        assert_eq!(Continent::from_code("EU").unwrap(), Continent::Europe);
        assert!(Continent::from_code("XX").is_err());
        let sub = SubdivisionCode::new("US-CA").unwrap();
        assert_eq!(sub.country().as_str(), "US");
        assert!(SubdivisionCode::new("FR-75C").is_ok());
        for bad in ["US", "USCA", "us-ca", "US-", "US-ABCD"] {
            assert!(SubdivisionCode::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_location_reads_old_and_new_spellings_and_refuses_both() {
        let read = |json: &str| serde_json::from_str::<GeoRule>(json);
        let deny_ru = r#""deny_countries": ["RU"]"#;
        for (json, expected) in [
            (format!("{{{deny_ru}}}"), None),
            (
                format!(r#"{{{deny_ru}, "deny_unknown_location": true}}"#),
                Some(UnknownLocation::Deny),
            ),
            (
                format!(r#"{{{deny_ru}, "deny_unknown_location": false}}"#),
                None,
            ),
            (
                format!(r#"{{{deny_ru}, "unknown_location": "deny"}}"#),
                Some(UnknownLocation::Deny),
            ),
            (
                format!(r#"{{{deny_ru}, "unknown_location": "allow"}}"#),
                Some(UnknownLocation::Allow),
            ),
        ] {
            let rule = read(&json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(rule.unknown_location, expected, "{json}");
            assert_eq!(rule.deny_countries.len(), 1, "{json}");
        }
        for both in [
            r#"{"deny_unknown_location": true, "unknown_location": "allow"}"#,
            r#"{"deny_unknown_location": false, "unknown_location": "deny"}"#,
        ] {
            let err = read(both).expect_err(both).to_string();
            assert!(
                err.contains("geo_rule.unknown_location") && err.contains("deny_unknown_location"),
                "{both}: {err}"
            );
        }
        for bad in [
            r#"{"unknown_location": "maybe"}"#,
            r#"{"deny_unknown_location": "yes"}"#,
            r#"{"unknown_locations": "deny"}"#,
        ] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_location_is_written_only_when_chosen_and_reads_back() {
        let mut rule = GeoRule::default();
        rule.deny_countries.insert(CountryCode::new("RU").unwrap());
        let json = serde_json::to_string(&rule).unwrap();
        assert!(
            !json.contains("unknown_location"),
            "unset is not written: {json}"
        );
        for chosen in [UnknownLocation::Deny, UnknownLocation::Allow] {
            rule.unknown_location = Some(chosen);
            let json = serde_json::to_string(&rule).unwrap();
            assert!(!json.contains("deny_unknown_location"), "{json}");
            assert_eq!(serde_json::from_str::<GeoRule>(&json).unwrap(), rule);
        }
    }

    #[test]
    fn an_unknown_location_is_denied_by_default_where_the_rule_names_places() {
        use UnknownLocation::{Allow, Deny};
        let de = || BTreeSet::from([CountryCode::new("DE").unwrap()]);
        let allow_de = GeoRule {
            allow_countries: de(),
            ..GeoRule::default()
        };
        let deny_de = GeoRule {
            deny_countries: de(),
            ..GeoRule::default()
        };
        let anonymous_only = GeoRule {
            block_anonymous: true,
            ..GeoRule::default()
        };
        for (rule, chosen, effective, unrestricted) in [
            (GeoRule::default(), None, Allow, true),
            (GeoRule::default(), Some(Allow), Allow, true),
            (GeoRule::default(), Some(Deny), Deny, false),
            (anonymous_only, None, Allow, false),
            (allow_de.clone(), None, Deny, false),
            (allow_de, Some(Allow), Allow, false),
            (deny_de.clone(), None, Deny, false),
            (deny_de.clone(), Some(Deny), Deny, false),
            (deny_de, Some(Allow), Allow, false),
        ] {
            let rule = GeoRule {
                unknown_location: chosen,
                ..rule
            };
            assert_eq!(rule.unknown_location_effective(), effective, "{rule:?}");
            assert_eq!(rule.is_unrestricted(), unrestricted, "{rule:?}");
        }
    }

    #[test]
    fn oversized_lists_are_rejected_with_the_field_named() {
        let mut rule = GeoRule::default();
        for a in b'A'..=b'Z' {
            for b in b'A'..=b'Z' {
                rule.deny_countries
                    .insert(CountryCode::new(std::str::from_utf8(&[a, b]).unwrap()).unwrap());
            }
        }
        let err = rule.validate().unwrap_err();
        assert!(err.to_string().contains("geo_rule.deny_countries"), "{err}");
    }
}
