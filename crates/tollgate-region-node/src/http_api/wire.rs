//! The HTTP/JSON check API's bodies, and their conversions to and from the
//! gRPC messages the same service answers. Field names are the ones
//! `tollgate ctl check --output json` prints and `sdk/PROTOCOL.md` states.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tollgate_model::{ChangeRecord, Mutation};
use tollgate_proto::check::v1 as pb;

/// `POST /v1/check`, and each item of `POST /v1/checks`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    pub account: String,
    /// The user or device; needed by roles, groups and seats.
    #[serde(default)]
    pub subject: Option<String>,
    pub feature: String,
    /// Units of a metered feature this check consumes (0: only check).
    #[serde(default)]
    pub consume: u64,
    /// The caller's address, resolved with the node's location databases.
    #[serde(default)]
    pub ip: Option<String>,
    /// A location an edge proxy resolved; used only by a node configured
    /// to trust its proxy. Exclusive with `ip`.
    #[serde(default)]
    pub location: Option<LocationBody>,
    /// Answer only once this node has applied this origin revision
    /// (504 `REVISION_NOT_APPLIED` past the wait).
    #[serde(default)]
    pub at_least_revision: Option<u64>,
    /// A consuming check sent again with the same key is counted once.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Fill `explanation`.
    #[serde(default)]
    pub explain: bool,
}

/// A location resolved by a trusted proxy.
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LocationBody {
    /// ISO 3166-1 alpha-2.
    #[serde(default)]
    pub country: Option<String>,
    /// `AF`, `AN`, `AS`, `EU`, `NA`, `OC` or `SA`.
    #[serde(default)]
    pub continent: Option<String>,
    /// ISO 3166-2 subdivision codes, most general first.
    #[serde(default)]
    pub subdivisions: Vec<String>,
    #[serde(default)]
    pub anonymous_network: bool,
}

/// `POST /v1/checks`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    pub checks: Vec<CheckBody>,
    /// For the whole batch.
    #[serde(default)]
    pub at_least_revision: Option<u64>,
}

fn consistency(at_least_revision: Option<u64>) -> Option<pb::Consistency> {
    at_least_revision.map(|revision| pb::Consistency {
        requirement: Some(pb::consistency::Requirement::AtLeastRevision(revision)),
    })
}

impl CheckBody {
    /// The gRPC request; `Err` names what is wrong.
    pub fn into_proto(self) -> Result<pb::CheckRequest, String> {
        let location = match (self.ip, self.location) {
            (Some(_), Some(_)) => return Err("give either ip or location, not both".into()),
            (Some(ip), None) => Some(pb::check_request::Location::Ip(ip)),
            // The wire's empty string is "not given", as an absent field
            // is here: the node's conversion reads both as unknown, which
            // geo rules judge by their unknown-location policy.
            (None, Some(l)) => Some(pb::check_request::Location::Resolved(
                pb::ResolvedLocation {
                    country: l.country.unwrap_or_default(),
                    continent: l.continent.unwrap_or_default(),
                    subdivisions: l.subdivisions,
                    anonymous_network: l.anonymous_network,
                },
            )),
            (None, None) => None,
        };
        Ok(pb::CheckRequest {
            account_id: self.account,
            subject_id: self.subject,
            feature_id: self.feature,
            consume: self.consume,
            location,
            consistency: consistency(self.at_least_revision),
            idempotency_key: self.idempotency_key,
            explain: self.explain,
        })
    }
}

impl BatchBody {
    pub fn into_proto(self) -> Result<pb::BatchCheckRequest, String> {
        let checks = self
            .checks
            .into_iter()
            .enumerate()
            .map(|(i, c)| c.into_proto().map_err(|e| format!("checks[{i}]: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(pb::BatchCheckRequest {
            checks,
            consistency: consistency(self.at_least_revision),
        })
    }
}

/// Seat occupancy of the deciding entitlement.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SeatsBody {
    pub used: u32,
    pub total: u32,
    /// Listed only when the answer is `SEAT_LIMIT`.
    pub holders: Vec<String>,
}

/// What would change a `NOT_ENTITLED` or `USAGE_CAP_REACHED` answer: a
/// plan or an add-on, and the cap it gives (`null`: unlimited).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UpgradeHintBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub addon: Option<String>,
    pub limit: Option<u64>,
}

/// A decision. A denial is an answer (200), not an error.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DecisionBody {
    /// True exactly for `ALLOW` and `IN_GRACE`.
    pub allowed: bool,
    /// `ALLOW`, `IN_GRACE`, `NOT_ENTITLED`, `UNKNOWN_ACCOUNT`,
    /// `UNKNOWN_SUBJECT`, `NOT_YET_VALID`, `EXPIRED`, `SUSPENDED`,
    /// `REVOKED`, `ROLE_REQUIRED`, `GEO_BLOCKED`,
    /// `ANONYMOUS_NETWORK_BLOCKED`, `SEAT_LIMIT`, `USAGE_CAP_REACHED` or
    /// `STALE_DATA`.
    pub reason: &'static str,
    /// One line for a human when the request asked (`explain`), else
    /// empty; not stable: switch on `reason`.
    pub explanation: String,
    /// The entitlement that decided, if one did.
    pub entitlement: Option<String>,
    /// The cap of a metered feature in the current period.
    pub limit: Option<u64>,
    /// Units left in the period after this check's consumption.
    pub remaining: Option<u64>,
    /// Allowed past a soft cap: billed as overage.
    pub overage: bool,
    /// Unix seconds.
    pub valid_until: Option<i64>,
    pub trial: bool,
    pub seats: Option<SeatsBody>,
    pub upgrade_hint: Option<UpgradeHintBody>,
    /// The winning grant's configuration values.
    pub config: BTreeMap<String, String>,
}

/// `POST /v1/check`'s answer.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CheckAnswerBody {
    #[serde(flatten)]
    pub decision: DecisionBody,
    /// The origin revision this node had applied.
    pub revision: u64,
    /// Seconds since the region last heard from the origin; `null` if never.
    pub staleness_seconds: Option<u64>,
    /// The node that answered.
    pub answered_by: String,
}

/// A batch item that could not be decided.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ItemError {
    /// Stable, as in a problem document's `code`.
    pub code: String,
    pub message: String,
}

/// One batch item: a decision or an error.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchResult {
    Decision(DecisionBody),
    Error(ItemError),
}

/// `POST /v1/checks`' answer, its results in the order of the checks.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BatchAnswerBody {
    pub results: Vec<BatchResult>,
    pub revision: u64,
    pub staleness_seconds: Option<u64>,
    pub answered_by: String,
}

/// The stable name of a wire reason (`REASON_GEO_BLOCKED` → `GEO_BLOCKED`).
fn reason_name(reason: i32) -> &'static str {
    let name = pb::Reason::try_from(reason)
        .unwrap_or(pb::Reason::Unspecified)
        .as_str_name();
    name.strip_prefix("REASON_").unwrap_or(name)
}

impl From<pb::Decision> for DecisionBody {
    fn from(d: pb::Decision) -> Self {
        let reason = reason_name(d.reason);
        DecisionBody {
            allowed: d.allowed,
            reason,
            explanation: d.explanation,
            entitlement: (!d.entitlement_id.is_empty()).then_some(d.entitlement_id),
            limit: d.limit,
            remaining: d.remaining,
            overage: d.overage,
            valid_until: d.valid_until,
            trial: d.trial,
            seats: d.seats.map(|s| SeatsBody {
                used: s.used,
                total: s.total,
                holders: s.holders,
            }),
            upgrade_hint: d.upgrade_hint.and_then(|h| {
                let (plan, addon) = match h.target? {
                    pb::upgrade_hint::Target::PlanId(id) => (Some(id), None),
                    pb::upgrade_hint::Target::AddonId(id) => (None, Some(id)),
                };
                Some(UpgradeHintBody {
                    plan,
                    addon,
                    limit: h.limit,
                })
            }),
            config: d.config.into_iter().collect(),
        }
    }
}

impl CheckAnswerBody {
    /// `Err` when the answer holds no decision (a bug): never read as a
    /// denial, nor as an allow.
    pub fn from_proto(r: pb::CheckResponse) -> Result<Self, tonic::Status> {
        let decision = r.decision.ok_or_else(|| {
            tonic::Status::internal("the check service answered without a decision")
        })?;
        Ok(CheckAnswerBody {
            decision: decision.into(),
            revision: r.revision,
            staleness_seconds: r.staleness_seconds,
            answered_by: r.answered_by,
        })
    }
}

impl BatchAnswerBody {
    pub fn from_proto(r: pb::BatchCheckResponse) -> Result<Self, tonic::Status> {
        use pb::batch_check_result::Result as Item;
        Ok(BatchAnswerBody {
            results: r
                .results
                .into_iter()
                .map(|item| match item.result {
                    Some(Item::Decision(d)) => BatchResult::Decision(d.into()),
                    Some(Item::Error(e)) => BatchResult::Error(ItemError {
                        code: e.code,
                        message: e.message,
                    }),
                    None => BatchResult::Error(ItemError {
                        code: "INTERNAL".into(),
                        message: "the node sent an empty result".into(),
                    }),
                })
                .collect(),
            revision: r.revision,
            staleness_seconds: r.staleness_seconds,
            answered_by: r.answered_by,
        })
    }
}

/// The `state` event: part of the scope's state. On `index` 0 drop what
/// is held; the state is whole at `revision` once `last` is true.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StateEvent<'a> {
    pub revision: u64,
    pub index: u32,
    pub last: bool,
    #[schema(value_type = Vec<Mutation>)]
    pub mutations: &'a [Mutation],
}

/// The `changes` event: apply in order; everything through
/// `through_revision` has been sent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChangesEvent<'a> {
    #[schema(value_type = Vec<ChangeRecord>)]
    pub changes: &'a [ChangeRecord],
    pub through_revision: u64,
}

/// The `heartbeat` event: the stream is alive, and how current the node is.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HeartbeatEvent {
    pub applied_revision: u64,
    /// `null` when the region never heard from the origin.
    pub staleness_seconds: Option<u64>,
}

/// `GET /v1/watch`'s query.
#[derive(Debug, Clone, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// One account (plus the catalog); omitted: every account (needs the
    /// `watch_all` verb).
    pub account: Option<String>,
    /// Changes after this revision (0: the whole state first).
    /// `Last-Event-ID`, when sent, takes its place.
    #[serde(default)]
    pub from_revision: u64,
}
