//! Responses from the wire into the engine's and the SDK's types. The
//! requests go out through `tollgate-proto`'s `From` impls, and a seat answer
//! comes back through its `TryFrom`; the way back for a decision is not there
//! yet (nodes never read decisions), so it lives here.
//! Everything a node sends is checked: a value that does not convert is
//! [`SdkError::Protocol`], never a panic.

use crate::answer::{Checked, Seat, SeatStatus};
use crate::error::SdkError;
use tollgate_engine::{Decision, Reason, SeatInfo, UpgradeHint, UpgradeTarget};
use tollgate_model::{ConfigKey, ConfigValues, EntitlementId, ModelError, SubjectId, UnixSeconds};
use tollgate_proto::check::v1 as pb;
use tollgate_proto::convert::{SeatAnswer, SeatState};
use tollgate_proto::usage::v1 as usage;

fn protocol(field: &str, reason: impl std::fmt::Display) -> SdkError {
    SdkError::Protocol(format!("{field}: {reason}"))
}

fn id<T>(field: &str, value: String) -> Result<T, SdkError>
where
    T: TryFrom<String, Error = ModelError>,
{
    T::try_from(value).map_err(|e| protocol(field, e))
}

/// A decision as a node sent it. `revision` and `staleness_seconds` come
/// from the response around it; `metering` does not travel (it is the
/// node's business), so it is `None`.
pub(crate) fn decision_from_proto(
    d: pb::Decision,
    revision: u64,
    staleness_seconds: Option<u64>,
) -> Result<Decision, SdkError> {
    let reason = pb::Reason::try_from(d.reason)
        .map_err(|_| protocol("decision.reason", format!("unknown reason {}", d.reason)))?;
    let reason = Reason::try_from(reason).map_err(|e| protocol("decision", e))?;
    if reason.is_allowed() != d.allowed {
        return Err(protocol(
            "decision.allowed",
            format!("{} with reason {reason}", d.allowed),
        ));
    }
    let entitlement = if d.entitlement_id.is_empty() {
        None
    } else {
        Some(id::<EntitlementId>(
            "decision.entitlement_id",
            d.entitlement_id,
        )?)
    };
    let upgrade_hint = match d.upgrade_hint {
        None => None,
        Some(hint) => {
            let target = match hint.target {
                Some(pb::upgrade_hint::Target::PlanId(p)) => {
                    UpgradeTarget::Plan(id("decision.upgrade_hint.plan_id", p)?)
                }
                Some(pb::upgrade_hint::Target::AddonId(a)) => {
                    UpgradeTarget::Addon(id("decision.upgrade_hint.addon_id", a)?)
                }
                None => return Err(protocol("decision.upgrade_hint.target", "is missing")),
            };
            Some(UpgradeHint {
                target,
                limit: hint.limit,
            })
        }
    };
    let seats = match d.seats {
        None => None,
        Some(s) => Some(SeatInfo {
            used: s.used,
            total: s.total,
            holders: s
                .holders
                .into_iter()
                .map(|h| id::<SubjectId>("decision.seats.holders", h))
                .collect::<Result<_, _>>()?,
        }),
    };
    let config: ConfigValues = d
        .config
        .into_iter()
        .map(|(k, v)| Ok((id::<ConfigKey>("decision.config", k)?, v)))
        .collect::<Result<_, SdkError>>()?;
    Ok(Decision {
        reason,
        entitlement,
        limit: d.limit,
        remaining: d.remaining,
        overage: d.overage,
        valid_until: d.valid_until.map(UnixSeconds),
        upgrade_hint,
        seats,
        config,
        trial: d.trial,
        staleness_seconds,
        revision,
        metering: None,
    })
}

pub(crate) fn checked(
    response: pb::CheckResponse,
    endpoint: &str,
    idempotency_key: Option<String>,
) -> Result<Checked, SdkError> {
    let decision = response
        .decision
        .ok_or_else(|| protocol("decision", "is missing"))?;
    Ok(Checked {
        decision: decision_from_proto(decision, response.revision, response.staleness_seconds)?,
        revision: response.revision,
        staleness_seconds: response.staleness_seconds,
        answered_by: response.answered_by,
        endpoint: endpoint.to_string(),
        idempotency_key,
    })
}

/// One item of a batch: a decision, or why the node could not evaluate it.
pub(crate) fn batch_item(
    result: pb::BatchCheckResult,
    revision: u64,
    staleness_seconds: Option<u64>,
) -> Result<Result<Decision, SdkError>, SdkError> {
    match result.result {
        Some(pb::batch_check_result::Result::Decision(d)) => {
            Ok(Ok(decision_from_proto(d, revision, staleness_seconds)?))
        }
        Some(pb::batch_check_result::Result::Error(e)) => Ok(Err(match e.code.as_str() {
            "INVALID_ARGUMENT" | "OUT_OF_RANGE" => SdkError::InvalidRequest(e.message),
            "NOT_FOUND" => SdkError::NotFound(e.message),
            code => SdkError::Refused {
                code: crate::error::known_code_name(code),
                message: e.message,
            },
        })),
        None => Err(protocol("results[].result", "is missing")),
    }
}

pub(crate) fn seat(response: usage::SeatResponse, endpoint: &str) -> Result<Seat, SdkError> {
    let answer = SeatAnswer::try_from(response).map_err(|e| SdkError::Protocol(e.to_string()))?;
    Ok(Seat {
        status: match answer.state {
            SeatState::Held => SeatStatus::Held,
            SeatState::Full => SeatStatus::Full,
            SeatState::NotHeld => SeatStatus::NotHeld,
            SeatState::Released => SeatStatus::Released,
        },
        entitlement: answer.entitlement,
        expires_at: answer.expires_at,
        used: answer.used,
        total: answer.total,
        holders: answer.holders,
        answered_by: answer.answered_by,
        endpoint: endpoint.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_engine::Decision;

    fn sample() -> Decision {
        Decision {
            reason: Reason::UsageCapReached,
            entitlement: Some(EntitlementId::new("e-1").unwrap()),
            limit: Some(10),
            remaining: Some(0),
            overage: false,
            valid_until: Some(UnixSeconds(1_900_000_000)),
            upgrade_hint: Some(UpgradeHint {
                target: UpgradeTarget::Addon("pack".parse().unwrap()),
                limit: Some(20),
            }),
            seats: Some(SeatInfo {
                used: 2,
                total: 3,
                holders: vec!["alice".parse().unwrap()],
            }),
            config: [("tier".parse().unwrap(), "gold".to_string())].into(),
            trial: true,
            staleness_seconds: Some(4),
            revision: 7,
            metering: None,
        }
    }

    #[test]
    fn a_decision_survives_the_round_trip_through_the_wire() {
        let d = sample();
        let wire = tollgate_proto::convert::decision_to_proto(d.clone());
        assert_eq!(decision_from_proto(wire, 7, Some(4)).unwrap(), d);
    }

    #[test]
    fn a_response_that_does_not_convert_is_a_protocol_error() {
        type Corrupt = fn(&mut pb::Decision);
        let cases: [(Corrupt, &str); 4] = [
            (|d| d.reason = 999, "decision.reason"),
            (|d| d.reason = 0, "decision"),
            (|d| d.allowed = true, "decision.allowed"),
            (
                |d| d.entitlement_id = "not an id!".into(),
                "decision.entitlement_id",
            ),
        ];
        for (corrupt, field) in cases {
            let mut wire = tollgate_proto::convert::decision_to_proto(sample());
            corrupt(&mut wire);
            match decision_from_proto(wire, 7, None) {
                Err(SdkError::Protocol(message)) => {
                    assert!(message.starts_with(field), "{field}: {message}")
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
