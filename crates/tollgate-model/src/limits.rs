//! Limits on the size of model values. Every one is checked by a `validate`
//! method, so an oversized value is an error naming the field, never a slow
//! decision or an unbounded allocation further in. The limits on how many
//! objects the state holds (`*_PER_ACCOUNT_MAX`, [`CATALOG_ENTRIES_MAX`])
//! span many values, so the origin's apply checks them instead, refusing
//! the object that would pass them; a region may then read such a set
//! whole with a scan bounded by the same limit.

/// Longest display name (products, features, plans, accounts, ...), in bytes.
pub const NAME_LEN_MAX: usize = 256;
/// Most configuration values on one feature or grant.
pub const CONFIG_ENTRIES_MAX: usize = 64;
/// Longest configuration value, in bytes.
pub const CONFIG_VALUE_LEN_MAX: usize = 1024;
/// Most features in one plan or add-on.
pub const GRANTS_PER_BUNDLE_MAX: usize = 1024;
/// Most per-feature cap overrides on one entitlement.
pub const CAP_OVERRIDES_MAX: usize = 256;
/// Most roles or groups on a subject, or groups on an entitlement.
pub const ROLES_OR_GROUPS_MAX: usize = 64;
/// Most seats on one entitlement.
pub const SEATS_MAX: u32 = 1_000_000;
/// Longest floating-seat lease without a heartbeat, in seconds (one day).
pub const LEASE_TTL_SECONDS_MAX: u32 = 86_400;
/// Longest grace period after expiry, in seconds (one year).
pub const GRACE_PERIOD_SECONDS_MAX: u64 = 366 * 86_400;
/// Longest unit name of a metered feature, in bytes.
pub const UNIT_LEN_MAX: usize = 32;
/// Most entitlements one account may hold.
pub const ENTITLEMENTS_PER_ACCOUNT_MAX: usize = 4096;
/// Most subjects (users and devices) one account may hold.
pub const SUBJECTS_PER_ACCOUNT_MAX: usize = 4096;
/// Most catalog objects (products, features, plans, add-ons and SKUs
/// together) the catalog may hold. The default offline policy, once set,
/// is one of them: it is one more entry under the catalog's keys.
pub const CATALOG_ENTRIES_MAX: usize = 100_000;

/// Most application credentials an origin holds, revoked ones included:
/// every region node keeps them all in memory.
pub const CREDENTIALS_MAX: usize = 10_000;
