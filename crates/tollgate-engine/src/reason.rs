use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a check was answered the way it was. The names are a stable contract
/// (the proto enum mirrors them); clients switch on them.
///
/// # Precedence
/// Account-level reasons are decided first, in this order:
/// `UNKNOWN_ACCOUNT`, `SUSPENDED` (the account), `UNKNOWN_SUBJECT`,
/// `NOT_ENTITLED`. Then each entitlement that grants the feature is judged on
/// its own, stopping at the first failing test, in this order (most severe
/// first):
///
/// `REVOKED` > `SUSPENDED` > `NOT_YET_VALID` > `EXPIRED` > `STALE_DATA` >
/// `ROLE_REQUIRED` > `GEO_BLOCKED` > `ANONYMOUS_NETWORK_BLOCKED` >
/// `SEAT_LIMIT` > `USAGE_CAP_REACHED` > `IN_GRACE` > `ALLOW`.
///
/// Known facts about the entitlement itself (revoked, suspended, outside its
/// validity) come before staleness, because no newer data could make them
/// allow; staleness comes before the rest, because stale data cannot be
/// trusted to allow. When several entitlements grant the feature, the most
/// permissive outcome wins: any allow beats every denial, and among denials
/// the one furthest down this list is reported (it is the closest to being
/// allowed, so it is the most useful to act on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    Allow,
    InGrace,
    NotEntitled,
    UnknownAccount,
    UnknownSubject,
    NotYetValid,
    Expired,
    Suspended,
    Revoked,
    RoleRequired,
    GeoBlocked,
    AnonymousNetworkBlocked,
    SeatLimit,
    UsageCapReached,
    StaleData,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
        Reason::Allow,
        Reason::InGrace,
        Reason::NotEntitled,
        Reason::UnknownAccount,
        Reason::UnknownSubject,
        Reason::NotYetValid,
        Reason::Expired,
        Reason::Suspended,
        Reason::Revoked,
        Reason::RoleRequired,
        Reason::GeoBlocked,
        Reason::AnonymousNetworkBlocked,
        Reason::SeatLimit,
        Reason::UsageCapReached,
        Reason::StaleData,
    ];

    /// ALLOW and IN_GRACE allow; everything else denies.
    pub fn is_allowed(self) -> bool {
        matches!(self, Reason::Allow | Reason::InGrace)
    }

    /// Position in the per-entitlement precedence: higher is more
    /// permissive. Account-level reasons never compete with per-entitlement
    /// ones, so they share the lowest rank.
    pub fn permissiveness(self) -> u8 {
        match self {
            Reason::UnknownAccount | Reason::UnknownSubject | Reason::NotEntitled => 0,
            Reason::Revoked => 1,
            Reason::Suspended => 2,
            Reason::NotYetValid => 3,
            Reason::Expired => 4,
            Reason::StaleData => 5,
            Reason::RoleRequired => 6,
            Reason::GeoBlocked => 7,
            Reason::AnonymousNetworkBlocked => 8,
            Reason::SeatLimit => 9,
            Reason::UsageCapReached => 10,
            Reason::InGrace => 11,
            Reason::Allow => 12,
        }
    }

    /// The stable code, as in the proto enum without its prefix.
    pub fn code(self) -> &'static str {
        match self {
            Reason::Allow => "ALLOW",
            Reason::InGrace => "IN_GRACE",
            Reason::NotEntitled => "NOT_ENTITLED",
            Reason::UnknownAccount => "UNKNOWN_ACCOUNT",
            Reason::UnknownSubject => "UNKNOWN_SUBJECT",
            Reason::NotYetValid => "NOT_YET_VALID",
            Reason::Expired => "EXPIRED",
            Reason::Suspended => "SUSPENDED",
            Reason::Revoked => "REVOKED",
            Reason::RoleRequired => "ROLE_REQUIRED",
            Reason::GeoBlocked => "GEO_BLOCKED",
            Reason::AnonymousNetworkBlocked => "ANONYMOUS_NETWORK_BLOCKED",
            Reason::SeatLimit => "SEAT_LIMIT",
            Reason::UsageCapReached => "USAGE_CAP_REACHED",
            Reason::StaleData => "STALE_DATA",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
