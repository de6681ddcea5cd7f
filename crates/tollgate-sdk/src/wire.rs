//! Responses from the wire into the SDK's types. The requests go out, and
//! the answers come back, through `tollgate-proto`'s `From` and `TryFrom`
//! impls; what is left here is the SDK's own shape of them.
//! Everything a node sends is checked: a value that does not convert is
//! [`SdkError::Protocol`] naming the field, never a panic.

use crate::answer::{BatchChecked, Checked, Seat, SeatStatus, UsageReported};
use crate::error::SdkError;
use tollgate_engine::Decision;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::convert::{
    BatchAnswer, BatchItem, CheckAnswer, SeatAnswer, SeatState, UsageAnswer,
};
use tollgate_proto::usage::v1 as usage;
use tollgate_proto::ConvertError;

fn protocol(e: ConvertError) -> SdkError {
    SdkError::Protocol(e.to_string())
}

pub(crate) fn checked(
    response: pb::CheckResponse,
    endpoint: &str,
    idempotency_key: Option<String>,
) -> Result<Checked, SdkError> {
    let answer = CheckAnswer::try_from(response).map_err(protocol)?;
    Ok(Checked {
        staleness_seconds: answer.decision.staleness_seconds,
        decision: answer.decision,
        revision: answer.revision,
        answered_by: answer.answered_by,
        endpoint: endpoint.to_string(),
        idempotency_key,
    })
}

/// The answers to a batch of `count` checks, in request order.
pub(crate) fn batch_checked(
    response: pb::BatchCheckResponse,
    endpoint: &str,
    count: usize,
) -> Result<BatchChecked, SdkError> {
    if response.results.len() != count {
        return Err(SdkError::Protocol(format!(
            "results: {} for {count} checks",
            response.results.len()
        )));
    }
    let answer = BatchAnswer::try_from(response).map_err(protocol)?;
    Ok(BatchChecked {
        results: answer.items.into_iter().map(batch_item).collect(),
        revision: answer.revision,
        staleness_seconds: answer.staleness_seconds,
        answered_by: answer.answered_by,
        endpoint: endpoint.to_string(),
    })
}

/// One item of a batch: a decision, or why the node could not evaluate it.
fn batch_item(item: BatchItem) -> Result<Decision, SdkError> {
    match item {
        BatchItem::Decided { decision, .. } => Ok(decision),
        BatchItem::Failed { code, message } => Err(match code.as_str() {
            "INVALID_ARGUMENT" | "OUT_OF_RANGE" => SdkError::InvalidRequest(message),
            "NOT_FOUND" => SdkError::NotFound(message),
            code => SdkError::Refused {
                code: crate::error::known_code_name(code),
                message,
            },
        }),
    }
}

pub(crate) fn usage_reported(
    response: usage::ReportUsageResponse,
    endpoint: &str,
    idempotency_key: String,
) -> Result<UsageReported, SdkError> {
    let answer = UsageAnswer::try_from(response).map_err(protocol)?;
    Ok(UsageReported {
        counted: answer.counted,
        period: answer.period.to_string(),
        idempotency_key,
        endpoint: endpoint.to_string(),
    })
}

pub(crate) fn seat(response: usage::SeatResponse, endpoint: &str) -> Result<Seat, SdkError> {
    let answer = SeatAnswer::try_from(response).map_err(protocol)?;
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
    use tollgate_engine::Reason;

    fn answer() -> CheckAnswer {
        CheckAnswer {
            decision: Decision {
                reason: Reason::NotEntitled,
                entitlement: None,
                limit: None,
                remaining: None,
                overage: false,
                valid_until: None,
                upgrade_hint: None,
                seats: None,
                config: Default::default(),
                trial: false,
                staleness_seconds: Some(4),
                revision: 7,
                metering: None,
            },
            explain: false,
            revision: 7,
            answered_by: "eu-1".into(),
        }
    }

    #[test]
    fn a_check_answer_keeps_where_it_came_from() {
        let expected = answer();
        let checked = checked(expected.clone().into(), "http://a", Some("k-1".into())).unwrap();
        assert_eq!(checked.decision, expected.decision);
        assert_eq!((checked.revision, checked.staleness_seconds), (7, Some(4)));
        assert_eq!(checked.answered_by, "eu-1");
        assert_eq!(checked.endpoint, "http://a");
        assert_eq!(checked.idempotency_key.as_deref(), Some("k-1"));
    }

    #[test]
    fn a_response_that_does_not_convert_is_a_protocol_error_naming_the_field() {
        type Corrupt = fn(&mut pb::CheckResponse);
        let cases: [(Corrupt, &str); 4] = [
            (
                |r| r.decision.as_mut().unwrap().reason = 999,
                "decision.reason",
            ),
            (
                |r| r.decision.as_mut().unwrap().allowed = true,
                "decision.allowed",
            ),
            (
                |r| r.decision.as_mut().unwrap().entitlement_id = "not an id!".into(),
                "decision.entitlement_id",
            ),
            (|r| r.decision = None, "decision"),
        ];
        for (corrupt, field) in cases {
            let mut wire = pb::CheckResponse::from(answer());
            corrupt(&mut wire);
            match checked(wire, "http://a", None) {
                Err(SdkError::Protocol(message)) => {
                    assert!(message.starts_with(field), "{field}: {message}")
                }
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_batch_item_the_node_could_not_decide_is_its_error() {
        let wire = pb::BatchCheckResponse::from(BatchAnswer {
            items: vec![
                BatchItem::Decided {
                    decision: answer().decision,
                    explain: false,
                },
                BatchItem::Failed {
                    code: "OUT_OF_RANGE".into(),
                    message: "consume: too much".into(),
                },
                BatchItem::Failed {
                    code: "NOT_FOUND".into(),
                    message: "account acme".into(),
                },
                BatchItem::Failed {
                    code: "FAILED_PRECONDITION".into(),
                    message: "no".into(),
                },
            ],
            revision: 7,
            staleness_seconds: Some(4),
            answered_by: "eu-1".into(),
        });
        assert!(matches!(
            batch_checked(wire.clone(), "http://a", 3),
            Err(SdkError::Protocol(m)) if m.starts_with("results")
        ));
        let batch = batch_checked(wire, "http://a", 4).unwrap();
        assert_eq!(batch.results[0].as_ref().unwrap(), &answer().decision);
        assert!(
            matches!(&batch.results[1], Err(SdkError::InvalidRequest(m)) if m == "consume: too much")
        );
        assert!(matches!(&batch.results[2], Err(SdkError::NotFound(_))));
        assert!(matches!(
            &batch.results[3],
            Err(SdkError::Refused {
                code: "FAILED_PRECONDITION",
                ..
            })
        ));
    }
}
