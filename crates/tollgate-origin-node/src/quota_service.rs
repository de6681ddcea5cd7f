//! The origin's quota service (on the changefeed port): regions lease
//! slices of hard caps and report their usage totals, each through the
//! origin's log (`LeaseQuota`, `SyncQuota`). The caps and seat counts split
//! are the origin's own, from its entitlements and catalog: a region's
//! figure is never trusted.

use crate::store::OriginState;
use std::sync::Arc;
use tollgate_origin::quota::{hard_cap, valid_region_name, NoHardCap, QuotaSync, SYNC_ENTRIES_MAX};
use tollgate_origin::{Op, OriginCommand, OriginResponse, RejectCode};
use tollgate_proto::convert::{
    sync_response, Leased, QuotaLease, QuotaReport, SeatLease, SeatRelease,
};
use tollgate_proto::origin::v1 as pb;
use tollgate_proto::ConvertError;
use tonic::{Request, Response, Status};

pub(crate) struct QuotaService {
    pub state: Arc<OriginState>,
    /// The overshoot bound: units leased and not yet reported consumed,
    /// per counter, all regions.
    pub outstanding_max: u64,
}

/// Checked first, on the wire, as the region is the origin's rule.
fn region(name: &str) -> Result<(), Status> {
    if valid_region_name(name) {
        Ok(())
    } else {
        Err(Status::invalid_argument(
            "region: 1..=64 bytes of [a-z0-9-]",
        ))
    }
}

/// A region node may lease, release and report only for its own region:
/// the region named in the request must be the one its certificate names.
/// (The feed port's handshake already admitted only region nodes, origin
/// nodes and operators; only region nodes use this service.) A node run
/// with `insecure_plaintext` proved no identity and checks none.
fn authorize<T>(request: &Request<T>, region: &str) -> Result<(), Status> {
    let Some(peer) = request.extensions().get::<tollgate_tls::PeerInfo>() else {
        return Err(refuse(
            region,
            "-",
            "the connection carries no peer information",
        ));
    };
    if !peer.tls {
        return Ok(());
    }
    match peer.identity.as_deref() {
        Some(tollgate_tls::Identity {
            subject: tollgate_tls::Subject::RegionNode { region: own, .. },
            ..
        }) if own == region => Ok(()),
        Some(identity) => Err(refuse(
            region,
            &identity.to_string(),
            "only that region's own nodes may lease, release or report for it",
        )),
        None => Err(refuse(region, "-", "no client certificate")),
    }
}

fn refuse(region: &str, who: &str, why: &str) -> Status {
    metrics::counter!("tollgate_quota_calls_refused_total").increment(1);
    tracing::warn!(region, caller = who, "Refused a quota call: {why}.");
    tollgate_server::grpc::error_status(
        tonic::Code::PermissionDenied,
        "CALLER_NOT_ALLOWED",
        format!("{who} may not act for region {region:?}: {why}"),
    )
}

fn invalid(e: ConvertError) -> Status {
    Status::invalid_argument(e.to_string())
}

impl QuotaService {
    /// Publishes the overshoot bound in force: units leased and not yet
    /// reported consumed, over every counter (`tollgate_quota_outstanding_units`).
    fn publish_outstanding(&self) {
        // A failed read leaves the gauge as it was: 0 would say no cap is
        // at risk.
        match tollgate_server::served::read_u64(
            &self.state.view,
            tollgate_origin::quota::OUTSTANDING_TOTAL,
        ) {
            Ok(total) => metrics::gauge!("tollgate_quota_outstanding_units").set(total as f64),
            Err(error) => tracing::warn!(%error, "Could not read the outstanding quota total."),
        }
    }

    async fn commit(&self, actor: &str, op: Op) -> Result<OriginResponse, Status> {
        let command = OriginCommand {
            actor: format!("region:{actor}"),
            at: self.state.clock.now(),
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
/// is left (or, found only in the log, no hard cap), NOT_FOUND for an
/// unknown entitlement or account.
fn leased(response: OriginResponse) -> Result<Response<pb::LeaseResponse>, Status> {
    match response {
        OriginResponse::Leased {
            revision,
            granted,
            granted_total,
        } => Ok(Response::new(
            Leased {
                granted,
                granted_total,
                revision,
            }
            .into(),
        )),
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
        OriginResponse::Committed { revision, .. } => Ok(Response::new(sync_response(revision))),
        OriginResponse::Rejected(r) if r.code == RejectCode::Conflict => {
            Ok(Response::new(sync_response(0)))
        }
        OriginResponse::Rejected(r) => Err(Status::invalid_argument(r.message)),
        other => Err(Status::internal(format!("unexpected answer: {other:?}"))),
    }
}

#[tonic::async_trait]
impl pb::quota_server::Quota for QuotaService {
    async fn report_region(
        &self,
        request: Request<pb::RegionReportRequest>,
    ) -> Result<Response<pb::SyncResponse>, Status> {
        region(&request.get_ref().region)?;
        authorize(&request, &request.get_ref().region)?;
        let report = tollgate_model::region_report::RegionReport::try_from(request.into_inner())
            .map_err(invalid)?;
        let region = report.region.clone();
        match self.commit(&region, Op::RecordRegionReport(report)).await? {
            OriginResponse::Committed { revision, .. } => {
                Ok(Response::new(sync_response(revision)))
            }
            OriginResponse::Rejected(r) => Err(match r.code {
                RejectCode::Invalid => Status::invalid_argument(r.message),
                RejectCode::NotFound => Status::not_found(r.message),
                RejectCode::Conflict => Status::failed_precondition(r.message),
            }),
            other => Err(Status::internal(format!("unexpected answer: {other:?}"))),
        }
    }

    async fn lease_seats(
        &self,
        request: Request<pb::LeaseSeatsRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        region(&request.get_ref().region)?;
        authorize(&request, &request.get_ref().region)?;
        let r = request.into_inner();
        let lease = SeatLease::try_from(r).map_err(invalid)?;
        let op = Op::LeaseSeats {
            region: lease.region.clone(),
            entitlement: lease.entitlement,
            want: lease.want,
        };
        leased(self.commit(&lease.region, op).await?)
    }

    async fn release_seats(
        &self,
        request: Request<pb::ReleaseSeatsRequest>,
    ) -> Result<Response<pb::SyncResponse>, Status> {
        region(&request.get_ref().region)?;
        authorize(&request, &request.get_ref().region)?;
        let r = request.into_inner();
        let release = SeatRelease::try_from(r).map_err(invalid)?;
        let op = Op::ReleaseSeats {
            region: release.region.clone(),
            entitlement: release.entitlement,
            released_total: release.released_total,
        };
        synced(self.commit(&release.region, op).await?)
    }

    async fn lease(
        &self,
        request: Request<pb::LeaseRequest>,
    ) -> Result<Response<pb::LeaseResponse>, Status> {
        region(&request.get_ref().region)?;
        authorize(&request, &request.get_ref().region)?;
        let r = request.into_inner();
        let lease = QuotaLease::try_from(r).map_err(invalid)?;
        // The cap is the origin's own (`hard_cap`, applied again in the
        // log, which decides). Read here too to refuse a counter with no
        // hard cap without a log entry, with a precise code, and to tell
        // when the region's figure differs. That is not refused: a region
        // reads its cap from a replica that may be a few revisions behind
        // (a top-up just granted), and the lease is bounded by the origin's
        // cap whatever the region sent.
        match hard_cap(&self.state.view, &lease.counter, self.state.clock.now()) {
            Ok(Ok(cap)) if cap != lease.limit => tracing::debug!(
                region = %lease.region,
                counter = %lease.counter,
                region_limit = lease.limit,
                origin_limit = cap,
                "A region asked for a lease with a cap other than the origin's; the origin's applies."
            ),
            Ok(Ok(_)) => {}
            Ok(Err(no)) => {
                let code = match no {
                    NoHardCap::UnknownAccount(_) => tonic::Code::NotFound,
                    NoHardCap::WrongPeriod { .. } => tonic::Code::InvalidArgument,
                    _ => tonic::Code::FailedPrecondition,
                };
                return Err(tollgate_server::grpc::error_status(
                    code,
                    no.code(),
                    format!("nothing to lease of {}: {no}", lease.counter),
                ));
            }
            Err(error) => {
                return Err(Status::unavailable(format!(
                    "could not read the origin's data: {error}"
                )))
            }
        }
        let op = Op::LeaseQuota {
            region: lease.region.clone(),
            counter: lease.counter,
            limit: lease.limit,
            want: lease.want,
            outstanding_max: self.outstanding_max,
        };
        leased(self.commit(&lease.region, op).await?)
    }

    async fn sync(
        &self,
        request: Request<pb::SyncRequest>,
    ) -> Result<Response<pb::SyncResponse>, Status> {
        region(&request.get_ref().region)?;
        authorize(&request, &request.get_ref().region)?;
        let r = request.into_inner();
        // Bounded before anything is converted.
        if r.entries.len() > SYNC_ENTRIES_MAX {
            return Err(Status::invalid_argument(format!(
                "entries: at most {SYNC_ENTRIES_MAX}"
            )));
        }
        let report = QuotaReport::try_from(r).map_err(invalid)?;
        let op = Op::SyncQuota {
            region: report.region.clone(),
            entries: report
                .entries
                .into_iter()
                .map(|e| QuotaSync {
                    counter: e.counter,
                    consumed: e.consumed,
                    released: e.released,
                })
                .collect(),
        };
        synced(self.commit(&report.region, op).await?)
    }
}
