//! The check service (`tollgate.check.v1.CheckService`): requests converted
//! at the edge, answered by the `Checker` at one revision, decisions
//! converted back (explained only when the request asks).

use crate::checker::Checker;
use tollgate_engine::{CheckRequest, Consistency, Decision, Reason, WatchRequest};
use tollgate_model::Verb;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::convert::{batch_from_proto, BatchAnswer, BatchItem, CheckAnswer};
use tollgate_server::grpc::{error_status, request_timeout};
use tollgate_server::telemetry;
use tonic::{Code, Request, Response, Status};

/// The check metrics' handles, registered once: looking a labelled series
/// up in the registry on every check would cost a hash and a lock each.
struct CheckMetrics {
    by_reason: Vec<(Reason, metrics::Counter)>,
    duration: metrics::Histogram,
}

fn check_metrics() -> &'static CheckMetrics {
    static METRICS: std::sync::OnceLock<CheckMetrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| CheckMetrics {
        by_reason: Reason::ALL
            .iter()
            .map(|r| {
                (
                    *r,
                    metrics::counter!(telemetry::CHECKS, "reason" => r.code()),
                )
            })
            .collect(),
        duration: metrics::histogram!(telemetry::CHECK_DURATION),
    })
}

/// Counts a decision by reason and records how long it took.
fn observe(decision: &Decision, started: std::time::Instant) {
    let metrics = check_metrics();
    match metrics
        .by_reason
        .iter()
        .find(|(r, _)| *r == decision.reason)
    {
        Some((_, counter)) => counter.increment(1),
        // A reason added without a handle still counts.
        None => {
            metrics::counter!(telemetry::CHECKS, "reason" => decision.reason.code()).increment(1)
        }
    }
    metrics.duration.record(started.elapsed().as_secs_f64());
}

fn invalid(e: tollgate_proto::ConvertError) -> Status {
    error_status(Code::InvalidArgument, "INVALID_ARGUMENT", e.to_string())
}

/// A batch item's error as its stable code and message.
fn item_error(status: &Status) -> BatchItem {
    let code = tollgate_server::status::error_code(status).to_string();
    BatchItem::Failed {
        code,
        message: status.message().to_string(),
    }
}

#[tonic::async_trait]
impl pb::check_service_server::CheckService for Checker {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let deadline = request_timeout(&request);
        let caller = self.caller(&request)?;
        let wire = request.into_inner();
        let explain = wire.explain;
        let request = CheckRequest::try_from(wire).map_err(invalid)?;
        if let Consistency::AtLeastRevision(revision) = request.consistency {
            self.wait_for(revision, deadline).await?;
        }
        let started = std::time::Instant::now();
        let (snapshot, mut answers) = self.answer(&caller, &[&request]).await?;
        let decision = answers.pop().expect("one answer per request")?;
        observe(&decision, started);
        Ok(Response::new(
            CheckAnswer {
                decision,
                explain,
                revision: snapshot.revision,
                answered_by: self.name.clone(),
            }
            .into(),
        ))
    }

    async fn batch_check(
        &self,
        request: Request<pb::BatchCheckRequest>,
    ) -> Result<Response<pb::BatchCheckResponse>, Status> {
        let deadline = request_timeout(&request);
        let caller = self.caller(&request)?;
        let wire = request.into_inner();
        let explain: Vec<bool> = wire.checks.iter().map(|c| c.explain).collect();
        let (items, consistency) = batch_from_proto(wire).map_err(invalid)?;
        if let Consistency::AtLeastRevision(revision) = consistency {
            self.wait_for(revision, deadline).await?;
        }
        let started = std::time::Instant::now();
        let valid: Vec<&CheckRequest> = items.iter().filter_map(|i| i.as_ref().ok()).collect();
        let (snapshot, answers) = self.answer(&caller, &valid).await?;
        let mut answers = answers.into_iter();
        let mut out = Vec::with_capacity(items.len());
        for (item, explain) in items.into_iter().zip(explain) {
            out.push(match item {
                Err(e) => BatchItem::Failed {
                    code: "INVALID_ARGUMENT".into(),
                    message: e.to_string(),
                },
                Ok(_) => match answers.next().expect("one answer per valid item") {
                    Ok(decision) => {
                        observe(&decision, started);
                        BatchItem::Decided { decision, explain }
                    }
                    Err(status) => item_error(&status),
                },
            });
        }
        let staleness_seconds = snapshot
            .origin_contact
            .map(|contact| self.clock.now().seconds_since(contact));
        Ok(Response::new(
            BatchAnswer {
                items: out,
                revision: snapshot.revision,
                staleness_seconds,
                answered_by: self.name.clone(),
            }
            .into(),
        ))
    }

    type WatchStream = crate::watch::WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let caller = self.caller(&request)?;
        let request = WatchRequest::try_from(request.into_inner()).map_err(invalid)?;
        // A stream carries an account's whole data, every product's.
        match &request.account {
            Some(account) => caller.account(Verb::Watch, account)?,
            None => caller.verb(Verb::WatchAll)?,
        }
        caller.every_product()?;
        Ok(Response::new(self.watches.start(request)?))
    }
}
