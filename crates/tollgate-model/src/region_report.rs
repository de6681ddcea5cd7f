//! What a region's leader tells the origin about its region: each member's
//! state as the leader could learn it, and who holds the region's floating
//! seats. The origin keeps the latest report of each region (for the
//! vendor's "regions" page and the customer's seat page); nothing decides
//! on it. Every list and string is bounded, and [`RegionReport::validate`]
//! checks the bounds, so a stored report is always within them.

use crate::{AccountId, EntitlementId, ModelError, SubjectId, UnixSeconds};
use serde::{Deserialize, Serialize};

/// Longest region name, in bytes (`[a-z0-9-]`, as the origin's quota rule).
pub const REGION_NAME_LEN_MAX: usize = 64;
/// Most members one report lists (a Raft group's voters and learners).
pub const REPORT_MEMBERS_MAX: usize = 32;
/// Longest member address, in bytes.
pub const REPORT_ADDR_LEN_MAX: usize = 256;
/// Longest error text of an unreachable member, in bytes.
pub const REPORT_ERROR_LEN_MAX: usize = 512;
/// Most geo databases one member lists.
pub const REPORT_GEO_DATABASES_MAX: usize = 4;
/// Longest geo database type or slot name, in bytes.
pub const REPORT_GEO_TEXT_LEN_MAX: usize = 64;
/// Most floating-seat entitlements one report lists.
pub const REPORT_SEAT_ENTITLEMENTS_MAX: usize = 500;
/// Most seat holders one report lists, over every entitlement (a report
/// must fit the origin's feed port, 256 KiB a message, and its log,
/// 256 KiB a command, with ids of the longest).
pub const REPORT_SEAT_HOLDERS_MAX: usize = 1_000;

/// Whether `name` is a region name: 1..=64 bytes of `[a-z0-9-]`.
pub fn valid_region_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= REGION_NAME_LEN_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// A member's place in its region's Raft group.
#[derive(utoipa::ToSchema, Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    Leader,
    Follower,
    Learner,
}

/// One geo database a member serves with.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeoDatabaseBuild {
    /// `location` or `anonymous` (at most 64 bytes).
    pub slot: String,
    /// The MaxMind database type, e.g. `GeoIP2-City` (at most 64 bytes).
    pub database_type: String,
    /// When MaxMind built it (the metadata's `build_epoch`, Unix seconds).
    pub build_epoch: u64,
}

/// What a member says of itself (its node status), when it answered.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberFacts {
    /// The origin revision the member has applied (as its checks see it).
    pub applied_revision: u64,
    /// The origin's head as the region last heard it.
    pub origin_head_revision: u64,
    /// When the region last heard from the origin, as the member knows it.
    pub last_origin_contact: Option<UnixSeconds>,
    /// Seconds since then, at the member's clock when it answered.
    pub staleness_seconds: Option<u64>,
    /// The geo databases in service (at most 4).
    #[serde(default)]
    pub geo: Vec<GeoDatabaseBuild>,
}

/// One member of the region as the reporting leader saw it.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberReport {
    pub node_id: u64,
    /// Its Raft address (at most 256 bytes).
    pub addr: String,
    pub role: MemberRole,
    /// Whether it answered the leader's status call.
    pub reachable: bool,
    /// Why not, when it did not (at most 512 bytes).
    #[serde(default)]
    pub error: Option<String>,
    /// What it said of itself, when it answered.
    #[serde(default)]
    pub facts: Option<MemberFacts>,
}

/// One lease on a floating seat.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatHolder {
    pub subject: SubjectId,
    /// When the subject took the seat; `None` for a lease older than this
    /// record.
    #[serde(default)]
    pub acquired_at: Option<UnixSeconds>,
    pub expires_at: UnixSeconds,
}

/// The live leases of one floating-seat entitlement in the region.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatHolders {
    pub entitlement: EntitlementId,
    /// The entitlement's account (so a portal lists an account's own).
    pub account: AccountId,
    pub holders: Vec<SeatHolder>,
}

/// A region's state as its leader reports it to the origin.
#[derive(utoipa::ToSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionReport {
    /// The region's name (1..=64 bytes of `[a-z0-9-]`).
    pub region: String,
    /// The node that sent the report.
    pub node_id: u64,
    /// The leader the reporting node knows of (itself, normally).
    pub leader_id: u64,
    /// The Raft term of the report.
    pub term: u64,
    /// Every member (at most 32).
    pub members: Vec<MemberReport>,
    /// The region's floating-seat holders (at most 500 entitlements and
    /// 1,000 holders in all).
    pub seats: Vec<SeatHolders>,
    /// The region holds more than those limits: `seats` lists only the
    /// first (by entitlement id, then subject).
    #[serde(default)]
    pub seats_truncated: bool,
}

fn bounded(kind: &'static str, text: &str, max: usize) -> Result<(), ModelError> {
    if text.len() > max {
        return Err(ModelError::Length {
            kind,
            len: text.len(),
            max,
        });
    }
    Ok(())
}

fn at_most(field: &'static str, len: usize, max: usize) -> Result<(), ModelError> {
    if len > max {
        return Err(ModelError::TooMany { field, len, max });
    }
    Ok(())
}

impl RegionReport {
    /// Checks every bound and the region name.
    pub fn validate(&self) -> Result<(), ModelError> {
        if !valid_region_name(&self.region) {
            return Err(ModelError::Invalid {
                field: "region",
                reason: format!("{:?} is not 1..=64 bytes of [a-z0-9-]", self.region),
            });
        }
        at_most("members", self.members.len(), REPORT_MEMBERS_MAX)?;
        for m in &self.members {
            bounded("members[].addr", &m.addr, REPORT_ADDR_LEN_MAX)?;
            if let Some(error) = &m.error {
                bounded("members[].error", error, REPORT_ERROR_LEN_MAX)?;
            }
            if let Some(facts) = &m.facts {
                at_most("members[].geo", facts.geo.len(), REPORT_GEO_DATABASES_MAX)?;
                for g in &facts.geo {
                    bounded("members[].geo[].slot", &g.slot, REPORT_GEO_TEXT_LEN_MAX)?;
                    bounded(
                        "members[].geo[].database_type",
                        &g.database_type,
                        REPORT_GEO_TEXT_LEN_MAX,
                    )?;
                }
            }
        }
        at_most("seats", self.seats.len(), REPORT_SEAT_ENTITLEMENTS_MAX)?;
        let holders: usize = self.seats.iter().map(|s| s.holders.len()).sum();
        at_most("seats[].holders", holders, REPORT_SEAT_HOLDERS_MAX)?;
        Ok(())
    }

    /// The report with every reading that moves on its own cleared: clock
    /// readings (contact times, staleness, lease expiry) and revisions
    /// (every report commits an origin revision, which the region then
    /// applies: were revisions content, each report would call for the
    /// next). Two reports equal here say the same thing, and the leader
    /// sends the second only as a heartbeat.
    pub fn without_times(&self) -> RegionReport {
        let mut r = self.clone();
        for m in &mut r.members {
            if let Some(f) = &mut m.facts {
                f.applied_revision = 0;
                f.origin_head_revision = 0;
                f.last_origin_contact = None;
                f.staleness_seconds = None;
            }
        }
        for s in &mut r.seats {
            for h in &mut s.holders {
                h.expires_at = UnixSeconds(0);
            }
        }
        r
    }
}
