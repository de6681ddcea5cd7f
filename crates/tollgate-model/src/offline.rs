//! Offline policy: how long a region may keep allowing while cut off from
//! the origin, and what it does after. Features, plans, add-ons and
//! entitlements each may set one (the catalog and entitlements both name
//! it, so it lives apart from both).

use serde::{Deserialize, Serialize};

/// What a region does once it has not heard from the origin for longer than
/// the grace.
#[derive(
    utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum AfterGrace {
    /// Keep answering from the last data it has.
    Allow,
    /// Deny with STALE_DATA until it hears from the origin again.
    Deny,
}

/// How long a region may keep allowing while cut off from the origin.
///
/// An entitlement, its plan or add-on, and the feature may each set one. The
/// strictest applies: the shortest grace, and deny if any of them denies.
/// That way a vendor's compliance rule on a feature cannot be loosened by a
/// generous entitlement, and vice versa.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OfflinePolicy {
    pub offline_grace_seconds: u64,
    pub after_grace: AfterGrace,
}

impl Default for OfflinePolicy {
    /// Three days, then deny: long enough to ride out a weekend outage,
    /// short enough that a revoked customer does not keep access for long.
    fn default() -> Self {
        Self {
            offline_grace_seconds: 3 * 86_400,
            after_grace: AfterGrace::Deny,
        }
    }
}

impl OfflinePolicy {
    /// The stricter combination of two policies.
    pub fn strictest(self, other: OfflinePolicy) -> OfflinePolicy {
        OfflinePolicy {
            offline_grace_seconds: self.offline_grace_seconds.min(other.offline_grace_seconds),
            after_grace: self.after_grace.max(other.after_grace),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictest_offline_policy_takes_shortest_grace_and_deny() {
        let lenient = OfflinePolicy {
            offline_grace_seconds: 1000,
            after_grace: AfterGrace::Allow,
        };
        let strict = OfflinePolicy {
            offline_grace_seconds: 10,
            after_grace: AfterGrace::Deny,
        };
        assert_eq!(lenient.strictest(strict), strict);
        assert_eq!(strict.strictest(lenient), strict);
    }
}
