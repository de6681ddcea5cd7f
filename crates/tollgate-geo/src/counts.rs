//! How often an address resolved to no location at all: the figure that
//! shows a geo database answering "unknown" for everyone, which the probe
//! at load cannot rule out for every kind of bad file.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tollgate_model::GeoFacts;

/// The metric: addresses resolved for checks, by `location` (`known` or
/// `unknown`).
pub const LOCATIONS_METRIC: &str = "tollgate_checks_geo_total";

/// Counts of the addresses one node resolved for checks. Only a check that
/// came with an address to resolve counts: one without an address, or with
/// a location a trusted proxy resolved, says nothing about the database.
/// An address resolves to an unknown location when the database has no
/// record for it, when no database is loaded, or when its lookup failed.
///
/// The metric's two series are looked up once, when the counts are made
/// (after the process's recorder is installed), not on every check.
#[derive(Debug)]
pub struct LocationCounts {
    checks: AtomicU64,
    unknown_location: AtomicU64,
    known_series: metrics::Counter,
    unknown_series: metrics::Counter,
}

impl Default for LocationCounts {
    fn default() -> Self {
        LocationCounts {
            checks: AtomicU64::new(0),
            unknown_location: AtomicU64::new(0),
            known_series: metrics::counter!(LOCATIONS_METRIC, "location" => "known"),
            unknown_series: metrics::counter!(LOCATIONS_METRIC, "location" => "unknown"),
        }
    }
}

/// [`LocationCounts`] at one moment, for `/v1/status`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LocationShare {
    /// Checks that came with an address to resolve.
    pub checks: u64,
    /// Of those, the ones whose address resolved to no location.
    pub unknown_location: u64,
    /// `unknown_location / checks`, 0 before the first check.
    pub unknown_share: f64,
}

impl LocationCounts {
    /// Counts one check's resolved address, here and in the metric.
    pub fn record(&self, facts: &GeoFacts) {
        self.checks.fetch_add(1, Ordering::Relaxed);
        if facts.is_location_known() {
            self.known_series.increment(1);
        } else {
            self.unknown_location.fetch_add(1, Ordering::Relaxed);
            self.unknown_series.increment(1);
        }
    }

    pub fn share(&self) -> LocationShare {
        // Read unknown first: a check counted between the two reads can
        // only make the share smaller than the truth, never over 1.
        let unknown_location = self.unknown_location.load(Ordering::Relaxed);
        let checks = self.checks.load(Ordering::Relaxed).max(unknown_location);
        LocationShare {
            checks,
            unknown_location,
            unknown_share: if checks == 0 {
                0.0
            } else {
                unknown_location as f64 / checks as f64
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_model::CountryCode;

    #[test]
    fn the_share_counts_unknown_locations_among_resolved_addresses() {
        let counts = LocationCounts::default();
        assert_eq!(counts.share().unknown_share, 0.0);
        let known = GeoFacts {
            country: Some(CountryCode::new("SE").unwrap()),
            ..GeoFacts::default()
        };
        for facts in [&known, &GeoFacts::unknown(), &known, &known] {
            counts.record(facts);
        }
        let share = counts.share();
        assert_eq!((share.checks, share.unknown_location), (4, 1));
        assert_eq!(share.unknown_share, 0.25);
    }
}
