//! `tollgate.check.v1` <-> engine.

use super::{AtField, ConvertError};
use crate::check::v1 as pb;
use tollgate_engine::{
    Check, CheckRequest, Consistency, Decision, Location, Reason, SeatInfo, UpgradeHint,
    UpgradeTarget, WatchEvent, WatchRequest, BATCH_CHECKS_MAX, CONSUME_MAX, SUBDIVISIONS_MAX,
};
use tollgate_model::{
    AccountId, AnonymousNetwork, ChangeRecord, Continent, CountryCode, FeatureId, GeoFacts,
    Mutation, SubdivisionCode, SubjectId, UnixSeconds,
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
            consistency: Some(pb::Consistency {
                requirement: Some(match r.consistency {
                    Consistency::Local => pb::consistency::Requirement::Local(true),
                    Consistency::AtLeastRevision(rev) => {
                        pb::consistency::Requirement::AtLeastRevision(rev)
                    }
                }),
            }),
        }
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
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
pub enum BatchItem {
    Decided { decision: Decision, explain: bool },
    Failed { code: String, message: String },
}

/// A whole batch, answered at one revision.
#[derive(Debug, Clone)]
pub struct BatchAnswer {
    pub items: Vec<BatchItem>,
    pub revision: u64,
    pub staleness_seconds: Option<u64>,
    pub answered_by: String,
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
