//! `tollgate.origin.v1` Quota <-> model: the slices of hard caps and of
//! floating seats a region leases from the origin, and the usage totals it
//! reports back.
//!
//! The quota's own types (the origin's ops, `QuotaSync`) live in
//! `tollgate-origin`, which depends on this crate through `tollgate-raft`,
//! so the requests are plain values here, in model types; the origin's
//! service turns them into its ops. Region names are the origin's rule and
//! are checked there.

use super::{AtField, ConvertError};
use crate::origin::v1 as pb;
use tollgate_model::{AccountId, EntitlementId, FeatureId, UsageCounter};

/// A counter from the wire; errors name the field.
pub fn usage_counter_from_proto(
    field: &str,
    c: Option<pb::Counter>,
) -> Result<UsageCounter, ConvertError> {
    let c = c.ok_or_else(|| ConvertError::missing(field))?;
    Ok(UsageCounter {
        account: AccountId::new(c.account_id).at(&format!("{field}.account_id"))?,
        feature: FeatureId::new(c.feature_id).at(&format!("{field}.feature_id"))?,
        period: c
            .period
            .parse()
            .map_err(|e: String| ConvertError::out_of_range(&format!("{field}.period"), e))?,
    })
}

impl From<&UsageCounter> for pb::Counter {
    fn from(c: &UsageCounter) -> Self {
        pb::Counter {
            account_id: c.account.to_string(),
            feature_id: c.feature.to_string(),
            period: c.period.to_string(),
        }
    }
}

fn entitlement_from_proto(id: String) -> Result<EntitlementId, ConvertError> {
    EntitlementId::new(id).at("entitlement_id")
}

fn at_least_one(want: u64) -> Result<(), ConvertError> {
    if want == 0 {
        return Err(ConvertError::out_of_range("want", "must be at least 1"));
    }
    Ok(())
}

/// A region asks for up to `want` more units of `counter`, whose hard cap
/// is `limit`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaLease {
    pub region: String,
    pub counter: UsageCounter,
    pub limit: u64,
    pub want: u64,
}

impl From<QuotaLease> for pb::LeaseRequest {
    fn from(l: QuotaLease) -> Self {
        pb::LeaseRequest {
            region: l.region,
            counter: Some((&l.counter).into()),
            limit: l.limit,
            want: l.want,
        }
    }
}

impl TryFrom<pb::LeaseRequest> for QuotaLease {
    type Error = ConvertError;

    fn try_from(r: pb::LeaseRequest) -> Result<Self, ConvertError> {
        let counter = usage_counter_from_proto("counter", r.counter)?;
        at_least_one(r.want)?;
        Ok(QuotaLease {
            region: r.region,
            counter,
            limit: r.limit,
            want: r.want,
        })
    }
}

/// A region asks for `want` more floating seats of `entitlement`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatLease {
    pub region: String,
    pub entitlement: EntitlementId,
    pub want: u32,
}

impl From<SeatLease> for pb::LeaseSeatsRequest {
    fn from(l: SeatLease) -> Self {
        pb::LeaseSeatsRequest {
            region: l.region,
            entitlement_id: l.entitlement.into(),
            want: l.want,
        }
    }
}

impl TryFrom<pb::LeaseSeatsRequest> for SeatLease {
    type Error = ConvertError;

    fn try_from(r: pb::LeaseSeatsRequest) -> Result<Self, ConvertError> {
        at_least_one(r.want.into())?;
        Ok(SeatLease {
            region: r.region,
            entitlement: entitlement_from_proto(r.entitlement_id)?,
            want: r.want,
        })
    }
}

/// A region hands seats of `entitlement` back: `released_total` is every
/// seat it has released so far (cumulative, so a repeated report is
/// harmless).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatRelease {
    pub region: String,
    pub entitlement: EntitlementId,
    pub released_total: u64,
}

impl From<SeatRelease> for pb::ReleaseSeatsRequest {
    fn from(r: SeatRelease) -> Self {
        pb::ReleaseSeatsRequest {
            region: r.region,
            entitlement_id: r.entitlement.into(),
            released_total: r.released_total,
        }
    }
}

impl TryFrom<pb::ReleaseSeatsRequest> for SeatRelease {
    type Error = ConvertError;

    fn try_from(r: pb::ReleaseSeatsRequest) -> Result<Self, ConvertError> {
        Ok(SeatRelease {
            region: r.region,
            entitlement: entitlement_from_proto(r.entitlement_id)?,
            released_total: r.released_total,
        })
    }
}

/// A region's totals for one counter: units consumed, and units of its
/// slices handed back unused (both cumulative).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterTotals {
    pub counter: UsageCounter,
    pub consumed: u64,
    pub released: u64,
}

/// A region reports its usage totals. The origin bounds the number of
/// entries (before converting them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaReport {
    pub region: String,
    pub entries: Vec<CounterTotals>,
}

impl From<QuotaReport> for pb::SyncRequest {
    fn from(r: QuotaReport) -> Self {
        pb::SyncRequest {
            region: r.region,
            entries: r
                .entries
                .into_iter()
                .map(|e| pb::SyncEntry {
                    counter: Some((&e.counter).into()),
                    consumed: e.consumed,
                    released: e.released,
                })
                .collect(),
        }
    }
}

impl TryFrom<pb::SyncRequest> for QuotaReport {
    type Error = ConvertError;

    fn try_from(r: pb::SyncRequest) -> Result<Self, ConvertError> {
        let entries = r
            .entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                Ok(CounterTotals {
                    counter: usage_counter_from_proto(&format!("entries[{i}].counter"), e.counter)?,
                    consumed: e.consumed,
                    released: e.released,
                })
            })
            .collect::<Result<_, ConvertError>>()?;
        Ok(QuotaReport {
            region: r.region,
            entries,
        })
    }
}

/// What a lease granted: `granted` now, `granted_total` to the region so
/// far, at origin revision `revision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leased {
    pub granted: u64,
    pub granted_total: u64,
    pub revision: u64,
}

impl From<Leased> for pb::LeaseResponse {
    fn from(l: Leased) -> Self {
        pb::LeaseResponse {
            granted: l.granted,
            granted_total: l.granted_total,
            revision: l.revision,
        }
    }
}

impl From<pb::LeaseResponse> for Leased {
    fn from(r: pb::LeaseResponse) -> Self {
        Leased {
            granted: r.granted,
            granted_total: r.granted_total,
            revision: r.revision,
        }
    }
}

/// The answer to a report or a release: the origin revision that recorded
/// it, or 0 when it held nothing new (a retry).
pub fn sync_response(revision: u64) -> pb::SyncResponse {
    pb::SyncResponse { revision }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counter() -> UsageCounter {
        UsageCounter {
            account: AccountId::new("acme").unwrap(),
            feature: FeatureId::new("render").unwrap(),
            period: "month-24322".parse().unwrap(),
        }
    }

    #[test]
    fn every_request_survives_the_round_trip() {
        let lease = QuotaLease {
            region: "eu".into(),
            counter: counter(),
            limit: 100,
            want: 12,
        };
        assert_eq!(
            QuotaLease::try_from(pb::LeaseRequest::from(lease.clone())).unwrap(),
            lease
        );
        let seats = SeatLease {
            region: "eu".into(),
            entitlement: EntitlementId::new("e-1").unwrap(),
            want: 2,
        };
        assert_eq!(
            SeatLease::try_from(pb::LeaseSeatsRequest::from(seats.clone())).unwrap(),
            seats
        );
        let release = SeatRelease {
            region: "eu".into(),
            entitlement: EntitlementId::new("e-1").unwrap(),
            released_total: 3,
        };
        assert_eq!(
            SeatRelease::try_from(pb::ReleaseSeatsRequest::from(release.clone())).unwrap(),
            release
        );
        let report = QuotaReport {
            region: "eu".into(),
            entries: vec![CounterTotals {
                counter: counter(),
                consumed: 5,
                released: 1,
            }],
        };
        assert_eq!(
            QuotaReport::try_from(pb::SyncRequest::from(report.clone())).unwrap(),
            report
        );
        let leased = Leased {
            granted: 4,
            granted_total: 9,
            revision: 77,
        };
        assert_eq!(Leased::from(pb::LeaseResponse::from(leased)), leased);
    }

    #[test]
    fn a_bad_request_names_the_field() {
        let no_want = pb::LeaseRequest {
            counter: Some((&counter()).into()),
            ..Default::default()
        };
        let no_counter = pb::LeaseRequest {
            want: 1,
            ..Default::default()
        };
        let bad_entry = pb::SyncRequest {
            entries: vec![
                pb::SyncEntry {
                    counter: Some((&counter()).into()),
                    ..Default::default()
                },
                pb::SyncEntry {
                    counter: Some(pb::Counter {
                        period: "someday".into(),
                        ..(&counter()).into()
                    }),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let rows = [
            (QuotaLease::try_from(no_want).map(drop), "want"),
            (QuotaLease::try_from(no_counter).map(drop), "counter"),
            (
                SeatLease::try_from(pb::LeaseSeatsRequest {
                    want: 1,
                    entitlement_id: "bad id!".into(),
                    ..Default::default()
                })
                .map(drop),
                "entitlement_id",
            ),
            (
                SeatLease::try_from(pb::LeaseSeatsRequest {
                    entitlement_id: "e-1".into(),
                    ..Default::default()
                })
                .map(drop),
                "want",
            ),
            (
                QuotaReport::try_from(bad_entry).map(drop),
                "entries[1].counter.period",
            ),
        ];
        for (result, field) in rows {
            assert_eq!(result.unwrap_err().field(), field);
        }
    }
}
