//! Every request message of every gRPC service (`tollgate-proto`) and the
//! conversions the services make of them into model values; and the answers
//! clients decode, with theirs.

use prost::Message;
use std::fmt::Debug;
use tollgate_engine::{CheckRequest, WatchEvent, WatchRequest};
use tollgate_license::{IssueRequest, VerifyRequest};
use tollgate_model::region_report::RegionReport;
use tollgate_proto::check::v1 as check;
use tollgate_proto::cluster::v1 as cluster;
use tollgate_proto::convert::{
    batch_from_proto, initial_members, raft_result_from_proto, AddLearner, BatchAnswer,
    ChangeMembership, CheckAnswer, Leased, QuotaLease, QuotaReport, SeatAnswer, SeatHolder,
    SeatLease, SeatRelease, Subscription, UsageAnswer, UsageReport,
};
use tollgate_proto::license::v1 as license;
use tollgate_proto::origin::v1 as origin;
use tollgate_proto::usage::v1 as usage;

/// Decodes `bytes` as a message: a message that decodes re-encodes to bytes
/// that decode to the same message, of the same length (maps may encode
/// in another order).
fn decode<M: Message + Default + PartialEq + Debug>(bytes: &[u8]) -> Option<M> {
    let message = M::decode(bytes).ok()?;
    let encoded = message.encode_to_vec();
    assert_eq!(encoded.len(), message.encoded_len());
    let again = M::decode(encoded.as_slice()).expect("a re-encoded message decodes");
    assert_eq!(again, message);
    assert_eq!(
        again.encoded_len(),
        encoded.len(),
        "encoding is a fixed point"
    );
    Some(message)
}

/// The service's conversion of `message` into a model value: when it
/// accepts, the value converted back to the wire converts to the same value
/// again (compared by `Debug`, which every model value has).
fn convert<P, M, E>(message: P)
where
    M: TryFrom<P, Error = E> + Debug,
    P: From<M>,
    E: Debug,
{
    let Ok(value) = M::try_from(message) else {
        return;
    };
    let shown = format!("{value:?}");
    let again = M::try_from(P::from(value)).expect("a converted value converts back");
    assert_eq!(format!("{again:?}"), shown);
}

/// The first byte picks a message, the rest is its encoding: every request
/// message of every gRPC service, with the conversion the service makes of
/// it (0..=23), then the answers a client (the SDK, a region node, `ctl`)
/// decodes from a server, with their conversions (24..=31).
pub fn proto_requests(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 32 {
        // tollgate.check.v1.Check
        0 => {
            if let Some(m) = decode::<check::CheckRequest>(bytes) {
                convert::<_, CheckRequest, _>(m);
            }
        }
        1 => {
            if let Some(m) = decode::<check::BatchCheckRequest>(bytes) {
                if let Ok((items, _consistency)) = batch_from_proto(m.clone()) {
                    assert_eq!(items.len(), m.checks.len());
                    for (item, wire) in items.into_iter().zip(m.checks) {
                        if let Ok(request) = item {
                            let shown = format!("{request:?}");
                            let back = CheckRequest::try_from(check::CheckRequest::from(request))
                                .expect("a converted item converts back");
                            assert_eq!(format!("{back:?}"), shown);
                        } else {
                            assert!(CheckRequest::try_from(wire).is_err());
                        }
                    }
                }
            }
        }
        2 => {
            if let Some(m) = decode::<check::WatchRequest>(bytes) {
                convert::<_, WatchRequest, _>(m);
            }
        }
        // tollgate.usage.v1.Usage
        3 => {
            if let Some(m) = decode::<usage::ReportUsageRequest>(bytes) {
                convert::<_, UsageReport, _>(m);
            }
        }
        4 => {
            if let Some(m) = decode::<usage::SeatRequest>(bytes) {
                convert::<_, SeatHolder, _>(m);
            }
        }
        // tollgate.license.v1.Licenses
        5 => {
            if let Some(m) = decode::<license::IssueLicenseRequest>(bytes) {
                convert::<_, IssueRequest, _>(m);
            }
        }
        6 => {
            if let Some(m) = decode::<license::VerifyLicenseRequest>(bytes) {
                convert::<_, VerifyRequest, _>(m);
            }
        }
        // tollgate.origin.v1.Changefeed
        7 => {
            if let Some(m) = decode::<origin::SubscribeRequest>(bytes) {
                let s = Subscription::from(m.clone());
                assert_eq!(origin::SubscribeRequest::from(s), m);
            }
        }
        8 => {
            decode::<origin::GetPublicKeysRequest>(bytes);
        }
        // tollgate.origin.v1.Quota
        9 => {
            if let Some(m) = decode::<origin::LeaseRequest>(bytes) {
                convert::<_, QuotaLease, _>(m);
            }
        }
        10 => {
            if let Some(m) = decode::<origin::SyncRequest>(bytes) {
                convert::<_, QuotaReport, _>(m);
            }
        }
        11 => {
            if let Some(m) = decode::<origin::LeaseSeatsRequest>(bytes) {
                convert::<_, SeatLease, _>(m);
            }
        }
        12 => {
            if let Some(m) = decode::<origin::ReleaseSeatsRequest>(bytes) {
                convert::<_, SeatRelease, _>(m);
            }
        }
        13 => {
            if let Some(m) = decode::<origin::RegionReportRequest>(bytes) {
                if let Ok(report) = RegionReport::try_from(m) {
                    let shown = format!("{report:?}");
                    let again = RegionReport::try_from(origin::RegionReportRequest::from(&report))
                        .expect("a converted report converts back");
                    assert_eq!(format!("{again:?}"), shown);
                }
            }
        }
        // tollgate.cluster.v1.ClusterAdmin
        14 => {
            if let Some(m) = decode::<cluster::InitializeRequest>(bytes) {
                let _ = initial_members(m);
            }
        }
        15 => {
            if let Some(m) = decode::<cluster::AddLearnerRequest>(bytes) {
                convert::<_, AddLearner, _>(m);
            }
        }
        16 => {
            if let Some(m) = decode::<cluster::ChangeMembershipRequest>(bytes) {
                let c = ChangeMembership::from(m);
                let shown = format!("{c:?}");
                let again = ChangeMembership::from(cluster::ChangeMembershipRequest::from(c));
                assert_eq!(format!("{again:?}"), shown);
            }
        }
        17 => {
            decode::<cluster::RemoveNodeRequest>(bytes);
        }
        18 => {
            decode::<cluster::StatusRequest>(bytes);
        }
        19 => {
            decode::<cluster::ClientWriteRequest>(bytes);
        }
        20 => {
            decode::<cluster::ReadLocalRequest>(bytes);
        }
        21 => {
            decode::<cluster::TriggerSnapshotRequest>(bytes);
        }
        // tollgate.cluster.v1.RaftService (their JSON payloads: raft_log)
        22 => {
            decode::<cluster::AppendEntriesRequest>(bytes);
            decode::<cluster::VoteRequest>(bytes);
        }
        23 => {
            decode::<cluster::InstallSnapshotRequest>(bytes);
        }
        // Answers, as clients decode them.
        24 => {
            if let Some(m) = decode::<check::CheckResponse>(bytes) {
                convert::<_, CheckAnswer, _>(m);
            }
        }
        25 => {
            if let Some(m) = decode::<check::BatchCheckResponse>(bytes) {
                convert::<_, BatchAnswer, _>(m);
            }
        }
        26 => {
            if let Some(m) = decode::<check::WatchResponse>(bytes) {
                convert::<_, WatchEvent, _>(m);
            }
        }
        27 => {
            if let Some(m) = decode::<usage::ReportUsageResponse>(bytes) {
                convert::<_, UsageAnswer, _>(m);
            }
        }
        28 => {
            if let Some(m) = decode::<usage::SeatResponse>(bytes) {
                convert::<_, SeatAnswer, _>(m);
            }
        }
        29 => {
            if let Some(m) = decode::<origin::LeaseResponse>(bytes) {
                let leased = Leased::from(m);
                let shown = format!("{leased:?}");
                let again = Leased::from(origin::LeaseResponse::from(leased));
                assert_eq!(format!("{again:?}"), shown);
            }
        }
        30 => {
            decode::<license::IssueLicenseResponse>(bytes);
            decode::<license::VerifyLicenseResponse>(bytes);
            decode::<origin::SyncResponse>(bytes);
        }
        _ => {
            decode::<cluster::StatusResponse>(bytes);
            decode::<cluster::MembershipResponse>(bytes);
            decode::<cluster::ClientWriteResponse>(bytes);
            decode::<cluster::ReadLocalResponse>(bytes);
            if let Some(m) = decode::<cluster::RaftResponse>(bytes) {
                let _ = raft_result_from_proto(m);
            }
        }
    }
}
