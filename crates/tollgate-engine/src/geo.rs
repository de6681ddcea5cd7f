//! Geo rules against geo facts. The semantics are documented on
//! [`tollgate_model::GeoRule`].

use tollgate_model::{GeoFacts, GeoRule, UnknownLocation};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GeoVerdict {
    Pass,
    /// Outside the location rules, or an unknown location the rule denies.
    Blocked,
    /// Inside them, but on an anonymous network the rule blocks.
    Anonymous,
}

pub(crate) fn geo_verdict(rule: &GeoRule, facts: &GeoFacts) -> GeoVerdict {
    if !facts.is_location_known() {
        // Nothing to match the lists against: the rule says what an
        // unknown location gets (by default, denied where the rule names
        // places at all), never "no deny-list matched, so allowed".
        if rule.unknown_location_effective() == UnknownLocation::Deny {
            return GeoVerdict::Blocked;
        }
    } else {
        let denied = facts
            .country
            .is_some_and(|c| rule.deny_countries.contains(&c))
            || facts
                .continent
                .is_some_and(|c| rule.deny_continents.contains(&c))
            || facts
                .subdivisions
                .iter()
                .any(|s| rule.deny_subdivisions.contains(s));
        if denied {
            return GeoVerdict::Blocked;
        }
        if rule.has_allow_lists() {
            let allowed = facts
                .country
                .is_some_and(|c| rule.allow_countries.contains(&c))
                || facts
                    .continent
                    .is_some_and(|c| rule.allow_continents.contains(&c))
                || facts
                    .subdivisions
                    .iter()
                    .any(|s| rule.allow_subdivisions.contains(s));
            if !allowed {
                return GeoVerdict::Blocked;
            }
        }
    }
    if rule.block_anonymous && facts.anonymous.is_some_and(|a| a.is_anonymous()) {
        return GeoVerdict::Anonymous;
    }
    GeoVerdict::Pass
}
