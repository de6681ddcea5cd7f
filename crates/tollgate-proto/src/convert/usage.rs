//! `tollgate.usage.v1` <-> model: usage reported on its own, and floating
//! seat leases.
//!
//! The region's own seat types (`tollgate_region::SeatOutcome`) sit above
//! this crate (through `tollgate-raft`), so the requests and the seat answer
//! are plain values here, in model types.

use super::check::valid_idempotency_key;
use super::{AtField, ConvertError};
use crate::usage::v1 as pb;
use tollgate_engine::CONSUME_MAX;
use tollgate_model::{AccountId, EntitlementId, FeatureId, PeriodKey, SubjectId, UnixSeconds};

/// Usage that already happened, reported on its own (not gated by caps),
/// counted once per idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageReport {
    pub account: AccountId,
    pub feature: FeatureId,
    /// 1..=[`CONSUME_MAX`], as a check's `consume`.
    pub units: u64,
    pub idempotency_key: String,
}

impl From<UsageReport> for pb::ReportUsageRequest {
    fn from(r: UsageReport) -> Self {
        pb::ReportUsageRequest {
            account_id: r.account.into(),
            feature_id: r.feature.into(),
            units: r.units,
            idempotency_key: r.idempotency_key,
        }
    }
}

impl TryFrom<pb::ReportUsageRequest> for UsageReport {
    type Error = ConvertError;

    fn try_from(r: pb::ReportUsageRequest) -> Result<Self, ConvertError> {
        let account = AccountId::new(r.account_id).at("account_id")?;
        let feature = FeatureId::new(r.feature_id).at("feature_id")?;
        if r.units == 0 || r.units > CONSUME_MAX {
            return Err(ConvertError::out_of_range(
                "units",
                format!("must be 1..={CONSUME_MAX}"),
            ));
        }
        if !valid_idempotency_key(&r.idempotency_key) {
            return Err(ConvertError::out_of_range(
                "idempotency_key",
                "required, 1..=128 bytes of [A-Za-z0-9._:@-]",
            ));
        }
        Ok(UsageReport {
            account,
            feature,
            units: r.units,
            idempotency_key: r.idempotency_key,
        })
    }
}

/// A node's answer to a usage report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageAnswer {
    /// False when the idempotency key had already been counted.
    pub counted: bool,
    /// The feature's period counter the units went to.
    pub period: PeriodKey,
}

impl From<UsageAnswer> for pb::ReportUsageResponse {
    fn from(a: UsageAnswer) -> Self {
        pb::ReportUsageResponse {
            counted: a.counted,
            period: a.period.to_string(),
        }
    }
}

impl TryFrom<pb::ReportUsageResponse> for UsageAnswer {
    type Error = ConvertError;

    fn try_from(r: pb::ReportUsageResponse) -> Result<Self, ConvertError> {
        Ok(UsageAnswer {
            counted: r.counted,
            period: r
                .period
                .parse()
                .map_err(|e: String| ConvertError::out_of_range("period", e))?,
        })
    }
}

/// Who wants (or holds) a floating seat of the account's entitlement that
/// grants `feature`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatHolder {
    pub account: AccountId,
    pub subject: SubjectId,
    pub feature: FeatureId,
}

impl From<SeatHolder> for pb::SeatRequest {
    fn from(s: SeatHolder) -> Self {
        pb::SeatRequest {
            account_id: s.account.into(),
            subject_id: s.subject.into(),
            feature_id: s.feature.into(),
        }
    }
}

impl TryFrom<pb::SeatRequest> for SeatHolder {
    type Error = ConvertError;

    fn try_from(r: pb::SeatRequest) -> Result<Self, ConvertError> {
        Ok(SeatHolder {
            account: AccountId::new(r.account_id).at("account_id")?,
            subject: SubjectId::new(r.subject_id).at("subject_id")?,
            feature: FeatureId::new(r.feature_id).at("feature_id")?,
        })
    }
}

/// Where a seat lease stands after a seat call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatState {
    /// The subject holds a seat until the answer's `expires_at`.
    Held,
    /// Every seat is taken (an answer, not an error).
    Full,
    /// No live lease to renew or release.
    NotHeld,
    Released,
}

/// A node's answer to a seat call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeatAnswer {
    pub state: SeatState,
    /// The entitlement whose seat it is, when one was found.
    pub entitlement: Option<EntitlementId>,
    /// For `Held`: when the lease runs out.
    pub expires_at: Option<UnixSeconds>,
    pub used: u32,
    pub total: u32,
    /// For `Full`: who holds the seats.
    pub holders: Vec<SubjectId>,
    /// The node that answered.
    pub answered_by: String,
}

impl From<SeatAnswer> for pb::SeatResponse {
    fn from(a: SeatAnswer) -> Self {
        pb::SeatResponse {
            status: match a.state {
                SeatState::Held => pb::SeatStatus::Held,
                SeatState::Full => pb::SeatStatus::Full,
                SeatState::NotHeld => pb::SeatStatus::NotHeld,
                SeatState::Released => pb::SeatStatus::Released,
            } as i32,
            entitlement_id: a.entitlement.map(String::from).unwrap_or_default(),
            expires_at: a.expires_at.map_or(0, |t| t.0),
            used: a.used,
            total: a.total,
            holders: a.holders.into_iter().map(Into::into).collect(),
            answered_by: a.answered_by,
        }
    }
}

impl TryFrom<pb::SeatResponse> for SeatAnswer {
    type Error = ConvertError;

    fn try_from(r: pb::SeatResponse) -> Result<Self, ConvertError> {
        let state = match pb::SeatStatus::try_from(r.status) {
            Ok(pb::SeatStatus::Held) => SeatState::Held,
            Ok(pb::SeatStatus::Full) => SeatState::Full,
            Ok(pb::SeatStatus::NotHeld) => SeatState::NotHeld,
            Ok(pb::SeatStatus::Released) => SeatState::Released,
            Ok(pb::SeatStatus::Unspecified) | Err(_) => {
                return Err(ConvertError::out_of_range(
                    "status",
                    format!("{} is not a seat status", r.status),
                ))
            }
        };
        let entitlement = if r.entitlement_id.is_empty() {
            None
        } else {
            Some(EntitlementId::new(r.entitlement_id).at("entitlement_id")?)
        };
        let holders = r
            .holders
            .into_iter()
            .enumerate()
            .map(|(i, h)| SubjectId::new(h).at(&format!("holders[{i}]")))
            .collect::<Result<_, _>>()?;
        Ok(SeatAnswer {
            state,
            entitlement,
            // Only a held seat has an expiry; 0 elsewhere means none.
            expires_at: (state == SeatState::Held).then_some(UnixSeconds(r.expires_at)),
            used: r.used,
            total: r.total,
            holders,
            answered_by: r.answered_by,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_survive_the_round_trip() {
        let report = UsageReport {
            account: AccountId::new("hooli").unwrap(),
            feature: FeatureId::new("render").unwrap(),
            units: 5,
            idempotency_key: "retry-1".into(),
        };
        let wire = pb::ReportUsageRequest::from(report.clone());
        assert_eq!(UsageReport::try_from(wire).unwrap(), report);
        let holder = SeatHolder {
            account: AccountId::new("acme").unwrap(),
            subject: SubjectId::new("alice").unwrap(),
            feature: FeatureId::new("export").unwrap(),
        };
        let wire = pb::SeatRequest::from(holder.clone());
        assert_eq!(SeatHolder::try_from(wire).unwrap(), holder);
    }

    #[test]
    fn a_bad_report_names_the_field() {
        let good = pb::ReportUsageRequest {
            account_id: "hooli".into(),
            feature_id: "render".into(),
            units: 1,
            idempotency_key: "k-1".into(),
        };
        let rows = [
            (
                pb::ReportUsageRequest {
                    account_id: "bad id!".into(),
                    ..good.clone()
                },
                "account_id",
            ),
            (
                pb::ReportUsageRequest {
                    units: 0,
                    ..good.clone()
                },
                "units",
            ),
            (
                pb::ReportUsageRequest {
                    units: CONSUME_MAX + 1,
                    ..good.clone()
                },
                "units",
            ),
            (
                pb::ReportUsageRequest {
                    idempotency_key: String::new(),
                    ..good.clone()
                },
                "idempotency_key",
            ),
        ];
        for (wire, field) in rows {
            assert_eq!(UsageReport::try_from(wire).unwrap_err().field(), field);
        }
    }

    #[test]
    fn usage_answers_survive_the_round_trip() {
        for (counted, period) in [
            (true, "month-24322"),
            (false, "day-20500"),
            (true, "lifetime-0"),
        ] {
            let answer = UsageAnswer {
                counted,
                period: period.parse().unwrap(),
            };
            let wire = pb::ReportUsageResponse::from(answer);
            assert_eq!(wire.period, period);
            assert_eq!(UsageAnswer::try_from(wire), Ok(answer));
        }
    }

    #[test]
    fn a_usage_answer_without_a_period_names_the_field() {
        for period in ["", "month", "week-3", "month-x"] {
            let wire = pb::ReportUsageResponse {
                counted: true,
                period: period.into(),
            };
            let error = UsageAnswer::try_from(wire).unwrap_err();
            assert_eq!(error.field(), "period", "{error}");
        }
    }

    #[test]
    fn seat_answers_survive_the_round_trip() {
        let answers = [
            SeatAnswer {
                state: SeatState::Held,
                entitlement: Some(EntitlementId::new("e-1").unwrap()),
                expires_at: Some(UnixSeconds(1_900_000_000)),
                used: 1,
                total: 3,
                holders: Vec::new(),
                answered_by: "eu-1".into(),
            },
            SeatAnswer {
                state: SeatState::Full,
                entitlement: Some(EntitlementId::new("e-1").unwrap()),
                expires_at: None,
                used: 3,
                total: 3,
                holders: vec![SubjectId::new("alice").unwrap()],
                answered_by: "eu-1".into(),
            },
            SeatAnswer {
                state: SeatState::NotHeld,
                entitlement: None,
                expires_at: None,
                used: 0,
                total: 0,
                holders: Vec::new(),
                answered_by: "eu-2".into(),
            },
        ];
        for answer in answers {
            let wire = pb::SeatResponse::from(answer.clone());
            assert_eq!(SeatAnswer::try_from(wire).unwrap(), answer);
        }
    }

    #[test]
    fn a_bad_seat_answer_names_the_field() {
        let rows = [
            (
                pb::SeatResponse {
                    status: 0,
                    ..Default::default()
                },
                "status",
            ),
            (
                pb::SeatResponse {
                    status: 99,
                    ..Default::default()
                },
                "status",
            ),
            (
                pb::SeatResponse {
                    status: pb::SeatStatus::Full as i32,
                    holders: vec!["alice".into(), "bad id!".into()],
                    ..Default::default()
                },
                "holders[1]",
            ),
        ];
        for (wire, field) in rows {
            assert_eq!(SeatAnswer::try_from(wire).unwrap_err().field(), field);
        }
    }
}
