//! `tollgate.check.v1` <-> engine.

use super::{AtField, ConvertError};
use crate::check::v1 as pb;
use tollgate_engine::{
    Check, CheckRequest, Consistency, Decision, Location, Reason, SeatInfo, UpgradeHint,
    UpgradeTarget, WatchEvent, WatchRequest, BATCH_CHECKS_MAX, CONSUME_MAX, SUBDIVISIONS_MAX,
};
use tollgate_model::{
    AccountId, AddonId, AnonymousNetwork, ChangeRecord, ConfigKey, ConfigValues, Continent,
    CountryCode, EntitlementId, FeatureId, GeoFacts, Mutation, PlanId, SubdivisionCode, SubjectId,
    UnixSeconds,
};

impl From<Reason> for pb::Reason {
    fn from(r: Reason) -> Self {
        match r {
            Reason::Allow => pb::Reason::Allow,
            Reason::InGrace => pb::Reason::InGrace,
            Reason::NotEntitled => pb::Reason::NotEntitled,
            Reason::UnknownAccount => pb::Reason::UnknownAccount,
            Reason::UnknownSubject => pb::Reason::UnknownSubject,
            Reason::NotYetValid => pb::Reason::NotYetValid,
            Reason::Expired => pb::Reason::Expired,
            Reason::Suspended => pb::Reason::Suspended,
            Reason::Revoked => pb::Reason::Revoked,
            Reason::RoleRequired => pb::Reason::RoleRequired,
            Reason::GeoBlocked => pb::Reason::GeoBlocked,
            Reason::AnonymousNetworkBlocked => pb::Reason::AnonymousNetworkBlocked,
            Reason::SeatLimit => pb::Reason::SeatLimit,
            Reason::UsageCapReached => pb::Reason::UsageCapReached,
            Reason::StaleData => pb::Reason::StaleData,
        }
    }
}

impl TryFrom<pb::Reason> for Reason {
    type Error = ConvertError;
    fn try_from(r: pb::Reason) -> Result<Self, ConvertError> {
        Reason::ALL
            .into_iter()
            .find(|ours| pb::Reason::from(*ours) == r)
            .ok_or_else(|| {
                ConvertError::out_of_range("reason", "REASON_UNSPECIFIED is not a reason")
            })
    }
}

fn location_from_proto(loc: Option<pb::check_request::Location>) -> Result<Location, ConvertError> {
    Ok(match loc {
        None => Location::Unknown,
        Some(pb::check_request::Location::Ip(ip)) => Location::Ip(ip.parse().map_err(|_| {
            ConvertError::out_of_range(
                "ip",
                format!("{:?} is not an IPv4 or IPv6 address", truncate(&ip)),
            )
        })?),
        Some(pb::check_request::Location::Resolved(r)) => {
            let country = if r.country.is_empty() {
                None
            } else {
                Some(CountryCode::new(&r.country).at("resolved.country")?)
            };
            let continent = if r.continent.is_empty() {
                None
            } else {
                Some(Continent::from_code(&r.continent).at("resolved.continent")?)
            };
            if r.subdivisions.len() > SUBDIVISIONS_MAX {
                return Err(ConvertError::out_of_range(
                    "resolved.subdivisions",
                    format!(
                        "holds {} entries, at most {SUBDIVISIONS_MAX} are allowed",
                        r.subdivisions.len()
                    ),
                ));
            }
            let subdivisions = r
                .subdivisions
                .iter()
                .enumerate()
                .map(|(i, s)| SubdivisionCode::new(s).at(&format!("resolved.subdivisions[{i}]")))
                .collect::<Result<_, _>>()?;
            Location::Resolved(GeoFacts {
                country,
                continent,
                subdivisions,
                // The proxy's flag is one bit; it does not say which kind.
                anonymous: Some(AnonymousNetwork {
                    public_proxy: r.anonymous_network,
                    ..Default::default()
                }),
            })
        }
    })
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

fn consistency_from_proto(c: Option<pb::Consistency>) -> Consistency {
    match c.and_then(|c| c.requirement) {
        None | Some(pb::consistency::Requirement::Local(_)) => Consistency::Local,
        Some(pb::consistency::Requirement::AtLeastRevision(rev)) => {
            Consistency::AtLeastRevision(rev)
        }
    }
}

impl TryFrom<pb::CheckRequest> for CheckRequest {
    type Error = ConvertError;

    fn try_from(r: pb::CheckRequest) -> Result<Self, ConvertError> {
        if r.consume > CONSUME_MAX {
            return Err(ConvertError::out_of_range(
                "consume",
                format!("{} exceeds the maximum of {CONSUME_MAX}", r.consume),
            ));
        }
        Ok(CheckRequest {
            check: Check {
                account: AccountId::new(r.account_id).at("account_id")?,
                subject: r
                    .subject_id
                    .map(|s| SubjectId::new(s).at("subject_id"))
                    .transpose()?,
                feature: FeatureId::new(r.feature_id).at("feature_id")?,
                consume: r.consume,
            },
            location: location_from_proto(r.location)?,
            consistency: consistency_from_proto(r.consistency),
            idempotency_key: r
                .idempotency_key
                .map(|key| {
                    if valid_idempotency_key(&key) {
                        Ok(key)
                    } else {
                        Err(ConvertError::out_of_range(
                            "idempotency_key",
                            "must be 1..=128 bytes of [A-Za-z0-9._:@-]",
                        ))
                    }
                })
                .transpose()?,
        })
    }
}

impl From<CheckRequest> for pb::CheckRequest {
    fn from(r: CheckRequest) -> Self {
        pb::CheckRequest {
            // Applications leave the explanation off; tools ask for it.
            explain: false,
            idempotency_key: r.idempotency_key,
            account_id: r.check.account.into(),
            subject_id: r.check.subject.map(Into::into),
            feature_id: r.check.feature.into(),
            consume: r.check.consume,
            location: match r.location {
                Location::Unknown => None,
                Location::Ip(ip) => Some(pb::check_request::Location::Ip(ip.to_string())),
                Location::Resolved(facts) => Some(pb::check_request::Location::Resolved(
                    pb::ResolvedLocation {
                        country: facts.country.map(String::from).unwrap_or_default(),
                        continent: facts.continent.map(String::from).unwrap_or_default(),
                        subdivisions: facts.subdivisions.into_iter().map(Into::into).collect(),
                        anonymous_network: facts.anonymous.is_some_and(|a| a.is_anonymous()),
                    },
                )),
            },
            consistency: Some(consistency_to_proto(r.consistency)),
        }
    }
}

fn consistency_to_proto(c: Consistency) -> pb::Consistency {
    pb::Consistency {
        requirement: Some(match c {
            Consistency::Local => pb::consistency::Requirement::Local(true),
            Consistency::AtLeastRevision(rev) => pb::consistency::Requirement::AtLeastRevision(rev),
        }),
    }
}

/// A check that asks the node to explain its decision, as tools do
/// (`CheckRequest.explain`); applications send a plain [`CheckRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explained(pub CheckRequest);

impl From<Explained> for pb::CheckRequest {
    fn from(Explained(r): Explained) -> Self {
        pb::CheckRequest {
            explain: true,
            ..r.into()
        }
    }
}

/// A whole batch from model values. The wire has one consistency per
/// batch, so each check goes without its own and the batch waits for the
/// highest `AtLeastRevision` among them (`Local` when none asks for one).
/// The inverse of [`batch_from_proto`], which gives every item the batch's.
pub fn batch_to_proto(checks: Vec<CheckRequest>) -> pb::BatchCheckRequest {
    let wanted = checks
        .iter()
        .filter_map(|c| match c.consistency {
            Consistency::AtLeastRevision(rev) => Some(rev),
            Consistency::Local => None,
        })
        .max();
    pb::BatchCheckRequest {
        checks: checks
            .into_iter()
            .map(|c| pb::CheckRequest {
                consistency: None,
                ..c.into()
            })
            .collect(),
        consistency: Some(consistency_to_proto(
            wanted.map_or(Consistency::Local, Consistency::AtLeastRevision),
        )),
    }
}

/// Validates a batch: its size as a whole, then each item on its own (an
/// invalid item is an error for that item only, as the proto promises).
pub fn batch_from_proto(
    r: pb::BatchCheckRequest,
) -> Result<(Vec<Result<CheckRequest, ConvertError>>, Consistency), ConvertError> {
    if r.checks.len() > BATCH_CHECKS_MAX {
        return Err(ConvertError::out_of_range(
            "checks",
            format!(
                "holds {} checks, at most {BATCH_CHECKS_MAX} are allowed",
                r.checks.len()
            ),
        ));
    }
    let consistency = consistency_from_proto(r.consistency);
    let items = r
        .checks
        .into_iter()
        .map(|c| {
            CheckRequest::try_from(c).map(|mut c| {
                c.consistency = consistency;
                c
            })
        })
        .collect();
    Ok((items, consistency))
}

/// The wire form of a decision, with its explanation filled in (what a
/// request with `explain` gets).
pub fn decision_to_proto(d: Decision) -> pb::Decision {
    let explanation = d.explain();
    pb::Decision {
        explanation,
        ..pb::Decision::from(d)
    }
}

/// The wire form of a decision without its explanation (formatting one
/// costs time on every answer; see `CheckRequest.explain`).
impl From<Decision> for pb::Decision {
    fn from(d: Decision) -> pb::Decision {
        pb::Decision {
            allowed: d.allowed(),
            reason: pb::Reason::from(d.reason) as i32,
            entitlement_id: d.entitlement.map(String::from).unwrap_or_default(),
            limit: d.limit,
            remaining: d.remaining,
            overage: d.overage,
            valid_until: d.valid_until.map(|t| t.0),
            upgrade_hint: d.upgrade_hint.map(|h: UpgradeHint| pb::UpgradeHint {
                target: Some(match h.target {
                    UpgradeTarget::Plan(p) => pb::upgrade_hint::Target::PlanId(p.into()),
                    UpgradeTarget::Addon(a) => pb::upgrade_hint::Target::AddonId(a.into()),
                }),
                limit: h.limit,
            }),
            seats: d.seats.map(|s: SeatInfo| pb::SeatInfo {
                used: s.used,
                total: s.total,
                holders: s.holders.into_iter().map(Into::into).collect(),
            }),
            config: d.config.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            explanation: String::new(),
            trial: d.trial,
        }
    }
}

/// A decision as a node sent it. Its `revision` and `staleness_seconds`
/// travel in the response around it (0 and `None` here; the answers'
/// conversions fill them in), and `metering` does not travel at all (it is
/// the node's business), so it is `None`. The explanation is text for
/// people and is dropped.
impl TryFrom<pb::Decision> for Decision {
    type Error = ConvertError;

    fn try_from(d: pb::Decision) -> Result<Self, ConvertError> {
        let reason = pb::Reason::try_from(d.reason).map_err(|_| {
            ConvertError::out_of_range("reason", format!("unknown reason {}", d.reason))
        })?;
        let reason = Reason::try_from(reason)?;
        if reason.is_allowed() != d.allowed {
            return Err(ConvertError::out_of_range(
                "allowed",
                format!("{} with reason {reason}", d.allowed),
            ));
        }
        let entitlement = if d.entitlement_id.is_empty() {
            None
        } else {
            Some(EntitlementId::new(d.entitlement_id).at("entitlement_id")?)
        };
        let upgrade_hint = d
            .upgrade_hint
            .map(|h| {
                let target = match h.target {
                    Some(pb::upgrade_hint::Target::PlanId(p)) => {
                        UpgradeTarget::Plan(PlanId::new(p).at("upgrade_hint.plan_id")?)
                    }
                    Some(pb::upgrade_hint::Target::AddonId(a)) => {
                        UpgradeTarget::Addon(AddonId::new(a).at("upgrade_hint.addon_id")?)
                    }
                    None => return Err(ConvertError::missing("upgrade_hint.target")),
                };
                Ok(UpgradeHint {
                    target,
                    limit: h.limit,
                })
            })
            .transpose()?;
        let seats = d
            .seats
            .map(|s| {
                Ok::<_, ConvertError>(SeatInfo {
                    used: s.used,
                    total: s.total,
                    holders: s
                        .holders
                        .into_iter()
                        .enumerate()
                        .map(|(i, h)| SubjectId::new(h).at(&format!("seats.holders[{i}]")))
                        .collect::<Result<_, _>>()?,
                })
            })
            .transpose()?;
        let config: ConfigValues = d
            .config
            .into_iter()
            .map(|(k, v)| Ok((ConfigKey::new(k).at("config")?, v)))
            .collect::<Result<_, ConvertError>>()?;
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
            staleness_seconds: None,
            revision: 0,
            metering: None,
        })
    }
}

/// A decision inside a response at `path`, with the response's revision
/// and staleness; whether it came explained.
fn answered_decision(
    path: &str,
    d: pb::Decision,
    revision: u64,
    staleness_seconds: Option<u64>,
) -> Result<(Decision, bool), ConvertError> {
    let explain = !d.explanation.is_empty();
    let mut decision = Decision::try_from(d).map_err(|e| e.within(path))?;
    decision.revision = revision;
    decision.staleness_seconds = staleness_seconds;
    Ok((decision, explain))
}

impl TryFrom<pb::WatchRequest> for WatchRequest {
    type Error = ConvertError;

    fn try_from(r: pb::WatchRequest) -> Result<Self, ConvertError> {
        Ok(WatchRequest {
            account: r
                .account_id
                .map(|a| AccountId::new(a).at("account_id"))
                .transpose()?,
            from_revision: r.from_revision,
        })
    }
}

impl From<WatchRequest> for pb::WatchRequest {
    fn from(r: WatchRequest) -> Self {
        pb::WatchRequest {
            account_id: r.account.map(Into::into),
            from_revision: r.from_revision,
        }
    }
}

/// 1..=128 bytes of `[A-Za-z0-9._:@-]` (a UUID fits).
pub fn valid_idempotency_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b))
}

fn mutations_json(mutations: &[Mutation]) -> Vec<u8> {
    serde_json::to_vec(mutations).expect("model values serialise")
}

fn mutations_from_json(field: &str, bytes: &[u8]) -> Result<Vec<Mutation>, ConvertError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ConvertError::out_of_range(field, format!("not a JSON array of mutations: {e}"))
    })
}

impl From<WatchEvent> for pb::WatchResponse {
    fn from(event: WatchEvent) -> Self {
        use pb::watch_response::Event;
        let event = match event {
            WatchEvent::State {
                revision,
                index,
                last,
                mutations,
            } => Event::State(pb::StateChunk {
                revision,
                index,
                last,
                mutations: mutations_json(&mutations),
            }),
            WatchEvent::Changes {
                changes,
                through_revision,
            } => Event::Changes(pb::ChangeBatch {
                changes: changes
                    .into_iter()
                    .map(|c| pb::Change {
                        revision: c.revision,
                        committed_at: c.committed_at.0,
                        mutations: mutations_json(&c.mutations),
                    })
                    .collect(),
                through_revision,
            }),
            WatchEvent::Heartbeat {
                applied_revision,
                staleness_seconds,
            } => Event::Heartbeat(pb::Heartbeat {
                applied_revision,
                staleness_seconds,
            }),
        };
        pb::WatchResponse { event: Some(event) }
    }
}

impl TryFrom<pb::WatchResponse> for WatchEvent {
    type Error = ConvertError;

    fn try_from(r: pb::WatchResponse) -> Result<Self, ConvertError> {
        use pb::watch_response::Event;
        Ok(
            match r.event.ok_or_else(|| ConvertError::missing("event"))? {
                Event::State(s) => WatchEvent::State {
                    revision: s.revision,
                    index: s.index,
                    last: s.last,
                    mutations: mutations_from_json("state.mutations", &s.mutations)?,
                },
                Event::Changes(batch) => WatchEvent::Changes {
                    changes: batch
                        .changes
                        .into_iter()
                        .enumerate()
                        .map(|(i, c)| {
                            Ok(ChangeRecord {
                                revision: c.revision,
                                committed_at: UnixSeconds(c.committed_at),
                                mutations: mutations_from_json(
                                    &format!("changes.changes[{i}].mutations"),
                                    &c.mutations,
                                )?,
                            })
                        })
                        .collect::<Result<_, ConvertError>>()?,
                    through_revision: batch.through_revision,
                },
                Event::Heartbeat(h) => WatchEvent::Heartbeat {
                    applied_revision: h.applied_revision,
                    staleness_seconds: h.staleness_seconds,
                },
            },
        )
    }
}

/// What a node answered one check with: the decision (explained when the
/// request asked) and where it stood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckAnswer {
    pub decision: Decision,
    pub explain: bool,
    pub revision: u64,
    pub answered_by: String,
}

impl From<CheckAnswer> for pb::CheckResponse {
    fn from(a: CheckAnswer) -> pb::CheckResponse {
        pb::CheckResponse {
            staleness_seconds: a.decision.staleness_seconds,
            decision: Some(if a.explain {
                decision_to_proto(a.decision)
            } else {
                a.decision.into()
            }),
            revision: a.revision,
            answered_by: a.answered_by,
        }
    }
}

/// One item of a batch: a decision (explained or not), or why the item was
/// not decided, as a stable code and a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchItem {
    Decided { decision: Decision, explain: bool },
    Failed { code: String, message: String },
}

/// A whole batch, answered at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchAnswer {
    pub items: Vec<BatchItem>,
    pub revision: u64,
    pub staleness_seconds: Option<u64>,
    pub answered_by: String,
}

/// A check's answer as a node sent it: the decision carries the response's
/// revision and staleness; `explain` says whether it came explained.
impl TryFrom<pb::CheckResponse> for CheckAnswer {
    type Error = ConvertError;

    fn try_from(r: pb::CheckResponse) -> Result<Self, ConvertError> {
        let decision = r
            .decision
            .ok_or_else(|| ConvertError::missing("decision"))?;
        let (decision, explain) =
            answered_decision("decision", decision, r.revision, r.staleness_seconds)?;
        Ok(CheckAnswer {
            decision,
            explain,
            revision: r.revision,
            answered_by: r.answered_by,
        })
    }
}

/// A batch's answer as a node sent it, item by item in request order. A
/// decision that does not convert fails the whole answer (the node is
/// broken, not the item); an item the node could not decide is `Failed`.
impl TryFrom<pb::BatchCheckResponse> for BatchAnswer {
    type Error = ConvertError;

    fn try_from(r: pb::BatchCheckResponse) -> Result<Self, ConvertError> {
        let (revision, staleness_seconds) = (r.revision, r.staleness_seconds);
        let items = r
            .results
            .into_iter()
            .enumerate()
            .map(|(i, result)| match result.result {
                Some(pb::batch_check_result::Result::Decision(d)) => {
                    let path = format!("results[{i}].decision");
                    let (decision, explain) =
                        answered_decision(&path, d, revision, staleness_seconds)?;
                    Ok(BatchItem::Decided { decision, explain })
                }
                Some(pb::batch_check_result::Result::Error(e)) => Ok(BatchItem::Failed {
                    code: e.code,
                    message: e.message,
                }),
                None => Err(ConvertError::missing(&format!("results[{i}].result"))),
            })
            .collect::<Result<_, _>>()?;
        Ok(BatchAnswer {
            items,
            revision,
            staleness_seconds,
            answered_by: r.answered_by,
        })
    }
}

impl From<BatchAnswer> for pb::BatchCheckResponse {
    fn from(a: BatchAnswer) -> pb::BatchCheckResponse {
        let results = a
            .items
            .into_iter()
            .map(|item| pb::BatchCheckResult {
                result: Some(match item {
                    BatchItem::Decided { decision, explain } => {
                        pb::batch_check_result::Result::Decision(if explain {
                            decision_to_proto(decision)
                        } else {
                            decision.into()
                        })
                    }
                    BatchItem::Failed { code, message } => {
                        pb::batch_check_result::Result::Error(pb::CheckError { code, message })
                    }
                }),
            })
            .collect();
        pb::BatchCheckResponse {
            results,
            revision: a.revision,
            staleness_seconds: a.staleness_seconds,
            answered_by: a.answered_by,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decision() -> Decision {
        Decision {
            reason: Reason::UsageCapReached,
            entitlement: Some(EntitlementId::new("e-1").unwrap()),
            limit: Some(10),
            remaining: Some(0),
            overage: false,
            valid_until: Some(UnixSeconds(1_900_000_000)),
            upgrade_hint: Some(UpgradeHint {
                target: UpgradeTarget::Addon(AddonId::new("pack").unwrap()),
                limit: Some(20),
            }),
            seats: Some(SeatInfo {
                used: 2,
                total: 3,
                holders: vec![SubjectId::new("alice").unwrap()],
            }),
            config: [(ConfigKey::new("tier").unwrap(), "gold".to_string())].into(),
            trial: true,
            staleness_seconds: Some(4),
            revision: 7,
            metering: None,
        }
    }

    fn request(consistency: Consistency) -> CheckRequest {
        CheckRequest {
            check: Check {
                account: AccountId::new("acme").unwrap(),
                subject: Some(SubjectId::new("alice").unwrap()),
                feature: FeatureId::new("export").unwrap(),
                consume: 2,
            },
            location: Location::Ip("192.0.2.1".parse().unwrap()),
            consistency,
            idempotency_key: Some("retry-1".into()),
        }
    }

    #[test]
    fn a_decision_survives_the_round_trip() {
        let d = decision();
        let plain = Decision {
            upgrade_hint: Some(UpgradeHint {
                target: UpgradeTarget::Plan(PlanId::new("pro").unwrap()),
                limit: None,
            }),
            seats: None,
            config: ConfigValues::new(),
            ..d.clone()
        };
        for d in [d, plain] {
            // Revision and staleness travel in the response, not here.
            let expected = Decision {
                revision: 0,
                staleness_seconds: None,
                ..d.clone()
            };
            assert_eq!(
                Decision::try_from(pb::Decision::from(d.clone())),
                Ok(expected.clone())
            );
            assert_eq!(Decision::try_from(decision_to_proto(d)), Ok(expected));
        }
    }

    #[test]
    fn answers_survive_the_round_trip() {
        for explain in [false, true] {
            let answer = CheckAnswer {
                decision: decision(),
                explain,
                revision: 7,
                answered_by: "eu-1".into(),
            };
            let wire = pb::CheckResponse::from(answer.clone());
            assert_eq!(CheckAnswer::try_from(wire), Ok(answer));
        }
        let batch = BatchAnswer {
            items: vec![
                BatchItem::Decided {
                    decision: decision(),
                    explain: true,
                },
                BatchItem::Failed {
                    code: "INVALID_ARGUMENT".into(),
                    message: "feature_id: is empty".into(),
                },
                BatchItem::Decided {
                    decision: Decision {
                        reason: Reason::Allow,
                        upgrade_hint: None,
                        ..decision()
                    },
                    explain: false,
                },
            ],
            revision: 7,
            staleness_seconds: Some(4),
            answered_by: "eu-1".into(),
        };
        let wire = pb::BatchCheckResponse::from(batch.clone());
        assert_eq!(BatchAnswer::try_from(wire), Ok(batch));
    }

    #[test]
    fn an_answer_that_does_not_convert_names_the_field() {
        type Corrupt = fn(&mut pb::Decision);
        let rows: [(Corrupt, &str); 7] = [
            (|d| d.reason = 999, "decision.reason"),
            (|d| d.reason = 0, "decision.reason"),
            (|d| d.allowed = true, "decision.allowed"),
            (
                |d| d.entitlement_id = "not an id!".into(),
                "decision.entitlement_id",
            ),
            (
                |d| d.upgrade_hint.as_mut().unwrap().target = None,
                "decision.upgrade_hint.target",
            ),
            (
                |d| d.seats.as_mut().unwrap().holders.push("bad id!".into()),
                "decision.seats.holders[1]",
            ),
            (
                |d| {
                    d.config.insert("bad key!".into(), "x".into());
                },
                "decision.config",
            ),
        ];
        for (corrupt, field) in rows {
            let mut wire = pb::CheckResponse::from(CheckAnswer {
                decision: decision(),
                explain: false,
                revision: 7,
                answered_by: "eu-1".into(),
            });
            corrupt(wire.decision.as_mut().unwrap());
            let error = CheckAnswer::try_from(wire).unwrap_err();
            assert_eq!(error.field(), field, "{error}");
            assert!(error.to_string().starts_with(field), "{error}");
        }
        let missing = pb::CheckResponse::default();
        assert_eq!(
            CheckAnswer::try_from(missing).unwrap_err().field(),
            "decision"
        );

        let mut wire = pb::BatchCheckResponse {
            results: vec![
                pb::BatchCheckResult {
                    result: Some(pb::batch_check_result::Result::Decision(decision().into())),
                },
                pb::BatchCheckResult { result: None },
            ],
            ..Default::default()
        };
        let error = BatchAnswer::try_from(wire.clone()).unwrap_err();
        assert_eq!(error.field(), "results[1].result", "{error}");
        wire.results.pop();
        if let Some(pb::batch_check_result::Result::Decision(d)) = &mut wire.results[0].result {
            d.allowed = true;
        }
        let error = BatchAnswer::try_from(wire).unwrap_err();
        assert_eq!(error.field(), "results[0].decision.allowed", "{error}");
    }

    #[test]
    fn a_batch_waits_for_its_highest_revision() {
        let checks = vec![
            request(Consistency::AtLeastRevision(5)),
            request(Consistency::Local),
            request(Consistency::AtLeastRevision(9)),
        ];
        let wire = batch_to_proto(checks.clone());
        assert!(wire.checks.iter().all(|c| c.consistency.is_none()));
        assert!(wire.checks.iter().all(|c| !c.explain));
        let (items, consistency) = batch_from_proto(wire).unwrap();
        assert_eq!(consistency, Consistency::AtLeastRevision(9));
        let back: Vec<CheckRequest> = items.into_iter().map(Result::unwrap).collect();
        let expected: Vec<CheckRequest> = checks
            .into_iter()
            .map(|c| CheckRequest {
                consistency: Consistency::AtLeastRevision(9),
                ..c
            })
            .collect();
        assert_eq!(back, expected);

        let wire = batch_to_proto(vec![request(Consistency::Local)]);
        assert_eq!(
            wire.consistency.and_then(|c| c.requirement),
            Some(pb::consistency::Requirement::Local(true))
        );
        assert!(batch_to_proto(Vec::new()).checks.is_empty());
    }

    #[test]
    fn an_explained_check_asks_for_the_explanation_and_nothing_else() {
        let r = request(Consistency::AtLeastRevision(3));
        let plain = pb::CheckRequest::from(r.clone());
        let explained = pb::CheckRequest::from(Explained(r.clone()));
        assert!(!plain.explain);
        assert!(explained.explain);
        assert_eq!(
            pb::CheckRequest {
                explain: false,
                ..explained.clone()
            },
            plain
        );
        assert_eq!(CheckRequest::try_from(explained), Ok(r));
    }
}
