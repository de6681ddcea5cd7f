//! The origin's quota service (on the changefeed port): regions lease
//! slices of hard caps and report their usage totals, each through the
//! origin's log (`LeaseQuota`, `SyncQuota`).

use crate::store::OriginState;
use std::sync::Arc;
use tollgate_origin::quota::{valid_region_name, QuotaSync, SYNC_ENTRIES_MAX};
use tollgate_origin::{Op, OriginCommand, OriginResponse, RejectCode};
use tollgate_proto::convert::usage_counter_from_proto;
use tollgate_proto::origin::v1 as pb;
use tollgate_server::clock::now;
use tonic::{Request, Response, Status};

pub(crate) struct QuotaService {
    pub state: Arc<OriginState>,
    /// The overshoot bound: units leased and not yet reported consumed,
    /// per counter, all regions.
    pub outstanding_max: u64,
}

fn region(name: String) -> Result<String, Status> {
    if valid_region_name(&name) {
        Ok(name)
    } else {
        Err(Status::invalid_argument(
            "region: 1..=64 bytes of [a-z0-9-]",
        ))
    }
}

impl QuotaService {
    /// Publishes the overshoot bound in force: units leased and not yet
    /// reported consumed, over every counter (`tollgate_quota_outstanding_units`).
    fn publish_outstanding(&self) {
        let total = tollgate_server::served::read_u64(
            &self.state.view,
            tollgate_origin::quota::OUTSTANDING_TOTAL,
        )
        .unwrap_or(0);
        metrics::gauge!("tollgate_quota_outstanding_units").set(total as f64);
    }

    async fn commit(&self, actor: &str, op: Op) -> Result<OriginResponse, Status> {
        let command = OriginCommand {
            actor: format!("region:{actor}"),
            at: now(),
            reason: None,
            op,
        };
        let result = self.state.node.write(command).await;
        self.publish_outstanding();
        result.map(|o| o.response).map_err(|e| match e {
            tollgate_raft::Error::NotLeader { leader_addr, .. } => Status::unavailable(format!(
                "not the origin's leader; try {}",
                leader_addr.unwrap_or_else(|| "another origin node".into())
            )),
            other => Status::unavailable(other.to_string()),
        })
    }
}

/// A lease's answer: what was granted, FAILED_PRECONDITION when nothing
/// is left, NOT_FOUND for an unknown entitlement.
fn leased(response: OriginResponse) -> Result<Response<pb::LeaseResponse>, Status> {
    match response {
        OriginResponse::Leased {
            revision,
            granted,
            granted_total,
        } => Ok(Response::new(pb::LeaseResponse {
            granted,
            granted_total,
            revision,
        })),
        OriginResponse::Rejected(r) => Err(match r.code {
            RejectCode::Conflict => Status::failed_precondition(r.message),
            RejectCode::NotFound => Status::not_found(r.message),
            RejectCode::Invalid => Status::invalid_argument(r.message),
        }),
        other => Err(Status::internal(format!("unexpected answer: {other:?}"))),
    }
}

/// A report's answer: the revision that recorded it, or 0 when it held
/// nothing new (a retry).
fn synced(response: OriginResponse) -> Result<Response<pb::SyncResponse>, Status> {
    match response {
        OriginResponse::Committed { revision, .. } => {
            Ok(Response::new(pb::SyncResponse { revision }))
        }
        OriginResponse::Rejected(r) if r.code == RejectCode::Conflict => {
            Ok(Response::new(pb::SyncResponse { revision: 0 }))
        }
        OriginResponse::Rejected(r) => Err(Status::invalid_argument(r.message)),
        other => Err(Status::internal(format!("unexpected answer: {other:?}"))),
    }
}

fn entitlement(id: String) -> Result<tollgate_model::EntitlementId, Status> {
    tollgate_model::EntitlementId::new(id)
        .map_err(|e| Status::invalid_argument(format!("entitlement_id: {e}")))
}

#[tonic::async_trait]
impl pb::quota_server::Quota for QuotaService {
    async fn lease_seats(
        &self,
        request: Request<pb::LeaseSeatsRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        let r = request.into_inner();
        let region = region(r.region)?;
        if r.want == 0 {
            return Err(Status::invalid_argument("want: must be at least 1"));
        }
        let op = Op::LeaseSeats {
            region: region.clone(),
            entitlement: entitlement(r.entitlement_id)?,
            want: r.want,
        };
        leased(self.commit(&region, op).await?)
    }

    async fn release_seats(
        &self,
        request: Request<pb::ReleaseSeatsRequest>,
    ) -> Result<Response<pb::SyncResponse>, Status> {
        let r = request.into_inner();
        let region = region(r.region)?;
        let op = Op::ReleaseSeats {
            region: region.clone(),
            entitlement: entitlement(r.entitlement_id)?,
            released_total: r.released_total,
        };
        synced(self.commit(&region, op).await?)
    }

    async fn lease(
        &self,
        request: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        let r = request.into_inner();
        let region = region(r.region)?;
        let counter = usage_counter_from_proto("counter", r.counter)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if r.want == 0 {
            return Err(Status::invalid_argument("want: must be at least 1"));
        }
        let op = Op::LeaseQuota {
            region: region.clone(),
            counter,
            limit: r.limit,
            want: r.want,
            outstanding_max: self.outstanding_max,
        };
        leased(self.commit(&region, op).await?)
    }

    async fn sync(
        &self,
        request: Request<pb::SyncRequest>,
    ) -> Result<Response<pb::SyncResponse>, Status> {
        let r = request.into_inner();
        let region = region(r.region)?;
        if r.entries.len() > SYNC_ENTRIES_MAX {
            return Err(Status::invalid_argument(format!(
                "entries: at most {SYNC_ENTRIES_MAX}"
            )));
        }
        let entries = r
            .entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                Ok(QuotaSync {
                    counter: usage_counter_from_proto(&format!("entries[{i}].counter"), e.counter)
                        .map_err(|e| Status::invalid_argument(e.to_string()))?,
                    consumed: e.consumed,
                    released: e.released,
                })
            })
            .collect::<Result<Vec<_>, Status>>()?;
        let op = Op::SyncQuota {
            region: region.clone(),
            entries,
        };
        synced(self.commit(&region, op).await?)
    }
}
