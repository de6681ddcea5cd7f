//! Tollgate's decision engine (the policy decision point): a pure function
//!
//! ```text
//! decide(check, account view, geo facts, environment { catalog, live usage
//!        and seat state, freshness, now }) -> Decision
//! ```
//!
//! No I/O, no clock, no randomness: time and geography are parameters, so
//! the same inputs give the same decision on a region node, in the SDK's
//! local replica, in a table test and in a simulation. Every outcome carries
//! a stable [`Reason`]; the order in which reasons are tested is documented
//! there.

mod decide;
mod geo;
mod reason;
mod request;
mod view;

pub use decide::{
    decide, Check, Decision, Environment, Freshness, LiveState, Metering, NoLiveState, SeatInfo,
    SeatLease, UpgradeHint, UpgradeTarget, SEAT_HOLDERS_LISTED_MAX,
};
pub use reason::Reason;
pub use request::{
    CheckRequest, Consistency, Location, WatchEvent, WatchRequest, BATCH_CHECKS_MAX, CONSUME_MAX,
    SUBDIVISIONS_MAX,
};
pub use view::{AccountView, GrantSource, ResolvedGrant};
