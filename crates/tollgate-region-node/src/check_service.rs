//! The check service (`tollgate.check.v1.CheckService`): requests converted
//! at the edge, answered by the `Checker`, decisions converted back.

use crate::checker::{read_u64, Checker};
use tollgate_engine::{CheckRequest, Decision, WatchRequest};
use tollgate_origin::keys;
use tollgate_proto::check::v1 as pb;
use tollgate_proto::convert::{batch_from_proto, decision_to_proto};
use tollgate_server::telemetry;
use tonic::{Request, Response, Status};

/// Counts a decision by reason and records how long it took.
fn observe(decision: &Decision, started: std::time::Instant) {
    metrics::counter!(telemetry::CHECKS, "reason" => decision.reason.code()).increment(1);
    metrics::histogram!(telemetry::CHECK_DURATION).record(started.elapsed().as_secs_f64());
}

fn invalid(e: tollgate_proto::ConvertError) -> Status {
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl pb::check_service_server::CheckService for Checker {
    async fn check(
        &self,
        request: Request<pb::CheckRequest>,
    ) -> Result<Response<pb::CheckResponse>, Status> {
        let request = CheckRequest::try_from(request.into_inner()).map_err(invalid)?;
        if let tollgate_engine::Consistency::AtLeastRevision(rev) = request.consistency {
            self.wait_for(rev).await?;
        }
        let started = std::time::Instant::now();
        let (decision, revision) = self.answer(&request).await?;
        observe(&decision, started);
        Ok(Response::new(pb::CheckResponse {
            staleness_seconds: decision.staleness_seconds,
            decision: Some(decision_to_proto(decision)),
            revision,
            answered_by: self.name.clone(),
        }))
    }

    async fn batch_check(
        &self,
        request: Request<pb::BatchCheckRequest>,
    ) -> Result<Response<pb::BatchCheckResponse>, Status> {
        let (items, consistency) = batch_from_proto(request.into_inner()).map_err(invalid)?;
        if let tollgate_engine::Consistency::AtLeastRevision(rev) = consistency {
            self.wait_for(rev).await?;
        }
        let mut results = Vec::with_capacity(items.len());
        let (mut revision, mut staleness) = (read_u64(&self.view, keys::HEAD_REVISION), None);
        for item in items {
            let result = match item {
                Ok(request) => {
                    let started = std::time::Instant::now();
                    let (decision, rev) = self.answer(&request).await?;
                    observe(&decision, started);
                    revision = rev;
                    staleness = decision.staleness_seconds;
                    pb::batch_check_result::Result::Decision(decision_to_proto(decision))
                }
                Err(e) => pb::batch_check_result::Result::Error(pb::CheckError {
                    code: "INVALID_ARGUMENT".into(),
                    message: e.to_string(),
                }),
            };
            results.push(pb::BatchCheckResult {
                result: Some(result),
            });
        }
        Ok(Response::new(pb::BatchCheckResponse {
            results,
            revision,
            staleness_seconds: staleness,
            answered_by: self.name.clone(),
        }))
    }

    type WatchStream = crate::watch::WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let request = WatchRequest::try_from(request.into_inner()).map_err(invalid)?;
        Ok(Response::new(self.watches.start(request)?))
    }
}
