//! `tollgate.origin.v1` ReportRegion <-> model: a region leader's report of
//! its members and floating-seat holders. Counts are checked before any
//! entry is converted, then the whole report against the model's bounds.

use super::{AtField, ConvertError};
use crate::origin::v1 as pb;
use tollgate_model::region_report::{
    GeoDatabaseBuild, MemberFacts, MemberReport, MemberRole, RegionReport, SeatHolder, SeatHolders,
    REPORT_GEO_DATABASES_MAX, REPORT_MEMBERS_MAX, REPORT_SEAT_ENTITLEMENTS_MAX,
    REPORT_SEAT_HOLDERS_MAX,
};
use tollgate_model::{AccountId, EntitlementId, SubjectId, UnixSeconds};

fn bounded(field: &str, len: usize, max: usize) -> Result<(), ConvertError> {
    if len > max {
        return Err(ConvertError::out_of_range(
            field,
            format!("{len} entries; at most {max}"),
        ));
    }
    Ok(())
}

impl From<MemberRole> for pb::MemberRole {
    fn from(r: MemberRole) -> Self {
        match r {
            MemberRole::Leader => pb::MemberRole::Leader,
            MemberRole::Follower => pb::MemberRole::Follower,
            MemberRole::Learner => pb::MemberRole::Learner,
        }
    }
}

impl From<&RegionReport> for pb::RegionReportRequest {
    fn from(r: &RegionReport) -> Self {
        pb::RegionReportRequest {
            region: r.region.clone(),
            node_id: r.node_id,
            leader_id: r.leader_id,
            term: r.term,
            members: r
                .members
                .iter()
                .map(|m| {
                    let facts = m.facts.clone();
                    pb::RegionMember {
                        node_id: m.node_id,
                        addr: m.addr.clone(),
                        role: pb::MemberRole::from(m.role) as i32,
                        reachable: m.reachable,
                        error: m.error.clone().unwrap_or_default(),
                        applied_revision: facts.as_ref().map_or(0, |f| f.applied_revision),
                        origin_head_revision: facts.as_ref().map_or(0, |f| f.origin_head_revision),
                        last_origin_contact: facts
                            .as_ref()
                            .and_then(|f| f.last_origin_contact)
                            .map_or(0, |c| c.0),
                        staleness_seconds: facts.as_ref().and_then(|f| f.staleness_seconds),
                        geo: facts
                            .map(|f| f.geo)
                            .unwrap_or_default()
                            .into_iter()
                            .map(|g| pb::GeoDatabaseBuild {
                                slot: g.slot,
                                database_type: g.database_type,
                                build_epoch: g.build_epoch,
                            })
                            .collect(),
                    }
                })
                .collect(),
            seats: r
                .seats
                .iter()
                .map(|s| pb::SeatHolders {
                    entitlement_id: s.entitlement.to_string(),
                    account_id: s.account.to_string(),
                    holders: s
                        .holders
                        .iter()
                        .map(|h| pb::SeatHolder {
                            subject_id: h.subject.to_string(),
                            acquired_at: h.acquired_at.map_or(0, |a| a.0),
                            expires_at: h.expires_at.0,
                        })
                        .collect(),
                })
                .collect(),
            seats_truncated: r.seats_truncated,
        }
    }
}

impl TryFrom<pb::RegionReportRequest> for RegionReport {
    type Error = ConvertError;

    fn try_from(r: pb::RegionReportRequest) -> Result<Self, ConvertError> {
        bounded("members", r.members.len(), REPORT_MEMBERS_MAX)?;
        bounded("seats", r.seats.len(), REPORT_SEAT_ENTITLEMENTS_MAX)?;
        let holders: usize = r.seats.iter().map(|s| s.holders.len()).sum();
        bounded("seats.holders", holders, REPORT_SEAT_HOLDERS_MAX)?;
        let mut members = Vec::with_capacity(r.members.len());
        for (i, m) in r.members.into_iter().enumerate() {
            let field = |name: &str| format!("members[{i}].{name}");
            bounded(&field("geo"), m.geo.len(), REPORT_GEO_DATABASES_MAX)?;
            let role = match pb::MemberRole::try_from(m.role) {
                Ok(pb::MemberRole::Leader) => MemberRole::Leader,
                Ok(pb::MemberRole::Follower) => MemberRole::Follower,
                Ok(pb::MemberRole::Learner) => MemberRole::Learner,
                _ => {
                    return Err(ConvertError::out_of_range(
                        &field("role"),
                        format!("{} is not a member role", m.role),
                    ))
                }
            };
            let facts = m.reachable.then(|| MemberFacts {
                applied_revision: m.applied_revision,
                origin_head_revision: m.origin_head_revision,
                last_origin_contact: (m.last_origin_contact > 0)
                    .then_some(UnixSeconds(m.last_origin_contact)),
                staleness_seconds: m.staleness_seconds,
                geo: m
                    .geo
                    .into_iter()
                    .map(|g| GeoDatabaseBuild {
                        slot: g.slot,
                        database_type: g.database_type,
                        build_epoch: g.build_epoch,
                    })
                    .collect(),
            });
            members.push(MemberReport {
                node_id: m.node_id,
                addr: m.addr,
                role,
                reachable: m.reachable,
                error: (!m.error.is_empty()).then_some(m.error),
                facts,
            });
        }
        let mut seats = Vec::with_capacity(r.seats.len());
        for (i, s) in r.seats.into_iter().enumerate() {
            let field = |name: &str| format!("seats[{i}].{name}");
            let mut holders = Vec::with_capacity(s.holders.len());
            for (j, h) in s.holders.into_iter().enumerate() {
                holders.push(SeatHolder {
                    subject: SubjectId::new(h.subject_id)
                        .at(&field(&format!("holders[{j}].subject_id")))?,
                    acquired_at: (h.acquired_at > 0).then_some(UnixSeconds(h.acquired_at)),
                    expires_at: UnixSeconds(h.expires_at),
                });
            }
            seats.push(SeatHolders {
                entitlement: EntitlementId::new(s.entitlement_id).at(&field("entitlement_id"))?,
                account: AccountId::new(s.account_id).at(&field("account_id"))?,
                holders,
            });
        }
        let report = RegionReport {
            region: r.region,
            node_id: r.node_id,
            leader_id: r.leader_id,
            term: r.term,
            members,
            seats,
            seats_truncated: r.seats_truncated,
        };
        report.validate().at("report")?;
        Ok(report)
    }
}
