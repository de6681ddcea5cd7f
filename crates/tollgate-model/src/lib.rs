//! Tollgate's entitlement model: what a vendor sells (the catalog), who buys
//! it (accounts and their subjects), and what they hold (entitlements), with
//! the rules that limit it. Values only: no I/O, no clock, no randomness.
//!
//! Every value from outside the process is validated on the way in:
//! identifiers are [`id`] newtypes, codes are [`geo`] newtypes, and the
//! composite types have `validate` methods whose errors name the field.

mod account;
mod catalog;
mod change;
mod credential;
mod dataset;
mod entitlement;
mod error;
pub mod geo;
pub mod id;
pub mod limits;
mod offline;
pub mod region_report;
mod revocation;
mod schema;
pub mod stored;
mod time;

pub use account::{Account, AccountStatus, Subject, SubjectKind};
pub use catalog::{
    Addon, AutoApprove, CapEnforcement, Catalog, ConfigValues, Feature, FeatureGrant, FeatureKind,
    Plan, Product, Sku, SkuQuantity, SkuTarget, UsageCap,
};
pub use change::{ChangeRecord, Mutation};
pub use credential::{
    split_credential_token, validate_credential_id, AppCredential, Targets, Verb,
    CREDENTIAL_ID_LEN_MAX, CREDENTIAL_NAME_LEN_MAX, CREDENTIAL_TARGETS_MAX,
    CREDENTIAL_TOKEN_PREFIX,
};
pub use dataset::Dataset;
pub use entitlement::{Entitlement, EntitlementStatus, Grant, SeatMode, Seats};
pub use error::ModelError;
pub use geo::{
    AnonymousNetwork, Continent, CountryCode, GeoFacts, GeoRule, SubdivisionCode, UnknownLocation,
};
pub use id::*;
pub use offline::{AfterGrace, OfflinePolicy};
pub use revocation::{
    valid_region_name, validate_revocation_id, RevokedCertificate, RevokedLicense,
    AUDIENCE_BYTES_MAX, REGION_NAME_BYTES_MAX, REVOCATION_ID_LEN,
};
pub use time::{PeriodKey, UnixSeconds, UsageCounter, UsagePeriod, UsagePeriodTag};
