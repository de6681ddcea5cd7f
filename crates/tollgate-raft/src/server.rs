//! The gRPC services a node serves: the Raft transport and the cluster
//! admin.

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest};
use serde::Serialize;
use tollgate_proto::cluster::v1 as pb;
use tollgate_proto::cluster::v1::cluster_admin_server::{ClusterAdmin, ClusterAdminServer};
use tollgate_proto::cluster::v1::raft_service_server::{RaftService, RaftServiceServer};
use tollgate_proto::convert::{
    client_write_response, initial_members, raft_response, read_local_response,
    trigger_snapshot_response, AddLearner, ChangeMembership, Membership,
};
use tollgate_tls::net::TcpListener;
use tollgate_tls::{Allow, ClientAuth};
use tonic::{Request, Response, Status};

use crate::codec::{decode, encode};
use crate::error::Error;
use crate::inner::NodeInner;
use crate::logic::StateMachineLogic;
use crate::network::SnapshotChunkHeader;
pub use crate::status::{
    error_to_status, status_to_error, ERROR_CODE_KEY, LEADER_ADDR_KEY, LEADER_ID_KEY,
};
use crate::types::{NodeId, TypeConfig};

/// The connections to serve on `listener`: over TLS, only from members of
/// this node's own cluster and from operators (`tollgate ctl cluster`);
/// anyone else is refused at the handshake, before any request is read.
pub(crate) fn incoming<L: StateMachineLogic>(
    inner: &NodeInner<L>,
    listener: TcpListener,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tollgate_tls::Incoming, crate::Error> {
    let transport = &inner.config.transport;
    let mut allow = vec![Allow::Operators];
    if let Some(cluster) = transport.identity().and_then(|me| me.own_cluster()) {
        allow.push(cluster);
    }
    tollgate_tls::listen(
        listener,
        transport,
        ClientAuth::required(allow),
        "raft",
        false,
        stop,
    )
    .map_err(|e| crate::Error::InvalidArgument(e.to_string()))
}

/// Serve both services on `incoming` until `stop`.
pub(crate) async fn serve<L: StateMachineLogic>(
    inner: Arc<NodeInner<L>>,
    incoming: tollgate_tls::Incoming,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let limit = inner.config.network.message_bytes_max;
    let raft = RaftServiceServer::new(RaftGrpc {
        inner: inner.clone(),
        stop: stop.clone(),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    let admin = ClusterAdminServer::new(AdminGrpc { inner })
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    // The standard health service and reflection, as on every gRPC port:
    // this port answers as soon as it serves (a member that is catching up
    // still takes appends and votes), so both services report SERVING.
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<RaftServiceServer<RaftGrpc<L>>>().await;
    health
        .set_serving::<ClusterAdminServer<AdminGrpc<L>>>()
        .await;
    // The descriptor set is compiled into the binary: failing to read it
    // is a bug, not an operating error.
    let (reflection_v1, reflection_v1alpha) = tollgate_proto::reflection_services()
        .expect("the compiled-in descriptor set builds the reflection services");
    tonic::transport::Server::builder()
        .tcp_nodelay(true)
        // Bound the streams one connection may open (every peer multiplexes
        // its calls on one connection).
        .max_concurrent_streams(Some(1024))
        // A dead peer's connection is dropped when a ping goes unanswered
        // (connections are capped and idle ones closed by tollgate-tls).
        .http2_keepalive_interval(Some(tollgate_tls::limits::KEEPALIVE_INTERVAL_DEFAULT))
        .http2_keepalive_timeout(Some(tollgate_tls::limits::KEEPALIVE_INTERVAL_DEFAULT))
        .add_service(raft)
        .add_service(admin)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(incoming, async move {
            // A closed channel is a stop too.
            while !*stop.borrow_and_update() {
                if stop.changed().await.is_err() {
                    return;
                }
            }
        })
        .await
}

/// One AppendEntries, unary or streamed.
async fn append<L: StateMachineLogic>(
    inner: &NodeInner<L>,
    request: pb::AppendEntriesRequest,
) -> Result<pb::RaftResponse, Status> {
    let rpc: AppendEntriesRequest<TypeConfig<L>> = decode(&request.payload).map_err(bad_request)?;
    inner.leader_contact.touch();
    let (leader_term, leader_commit) = (rpc.vote.leader_id().term, rpc.leader_commit);
    let result = inner.raft.append_entries(rpc).await;
    // Any answer but a higher vote means this node took the sender as its
    // leader: its commit index may let reads open (see `recovery`).
    if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
        inner
            .serving
            .leader_committed(leader_term, leader_commit.as_ref());
    }
    reply(result).map(Response::into_inner)
}

fn reply<T: Serialize, E: Serialize>(
    result: Result<T, E>,
) -> Result<Response<pb::RaftResponse>, Status> {
    let result = match result {
        Ok(ok) => Ok(encode(&ok).map_err(|e| error_to_status(&e))?),
        Err(err) => Err(encode(&err).map_err(|e| error_to_status(&e))?),
    };
    Ok(Response::new(raft_response(result)))
}

fn bad_request(e: Error) -> Status {
    error_to_status(&Error::InvalidArgument(e.to_string()))
}

/// Who may call a method of the Raft port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Callers {
    /// Members of this node's own cluster: the Raft RPCs, and a write a
    /// follower forwards to its leader.
    Members,
    /// Operators (`tollgate ctl cluster`): membership changes, snapshots,
    /// local reads.
    Operators,
    /// Either: the status members' failover watchdogs and operators ask.
    MembersAndOperators,
}

/// Checks the TLS identity the caller proved against `callers`. A node run
/// with `insecure_plaintext` checks nothing (it proved nothing); over TLS
/// the handshake already admitted only members and operators, and this
/// keeps each to its own methods: an operator cannot append a raw command
/// to the log, a member cannot change the membership.
fn authorize<L: StateMachineLogic, T>(
    inner: &NodeInner<L>,
    request: &Request<T>,
    callers: Callers,
    method: &'static str,
) -> Result<(), Status> {
    let Some(peer) = request.extensions().get::<tollgate_tls::PeerInfo>() else {
        return Err(refuse(
            method,
            "-",
            "the connection carries no peer information",
        ));
    };
    if !peer.tls {
        return Ok(());
    }
    let Some(identity) = &peer.identity else {
        return Err(refuse(method, "-", "no client certificate"));
    };
    let (member, operator) = inner.config.transport.classify(identity);
    let allowed = match callers {
        Callers::Members => member,
        Callers::Operators => operator,
        Callers::MembersAndOperators => member || operator,
    };
    if allowed {
        return Ok(());
    }
    let who = match callers {
        Callers::Members => "members of this cluster",
        Callers::Operators => "operators",
        Callers::MembersAndOperators => "members of this cluster and operators",
    };
    Err(refuse(
        method,
        &identity.to_string(),
        &format!("only {who} may call it"),
    ))
}

fn refuse(method: &'static str, who: &str, why: &str) -> Status {
    metrics::counter!("tollgate_raft_calls_refused_total", "method" => method).increment(1);
    tracing::warn!(
        method,
        caller = who,
        "Refused a call on the Raft port: {why}."
    );
    let mut status = Status::permission_denied(format!("{method}: {who} may not call it: {why}"));
    status.metadata_mut().insert(
        ERROR_CODE_KEY,
        tonic::metadata::MetadataValue::from_static("CALLER_NOT_ALLOWED"),
    );
    status
}

struct RaftGrpc<L: StateMachineLogic> {
    inner: Arc<NodeInner<L>>,
    /// The server's stop: it ends every append stream, which the server's
    /// drain would otherwise wait on for as long as its leader runs.
    stop: tokio::sync::watch::Receiver<bool>,
}

#[tonic::async_trait]
impl<L: StateMachineLogic> RaftService for RaftGrpc<L> {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::RaftResponse>, Status> {
        authorize(&self.inner, &request, Callers::Members, "AppendEntries")?;
        append(&self.inner, request.into_inner())
            .await
            .map(Response::new)
    }

    type AppendEntriesStreamStream = std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<pb::RaftResponse, Status>> + Send + 'static>,
    >;

    async fn append_entries_stream(
        &self,
        request: Request<tonic::Streaming<pb::AppendEntriesRequest>>,
    ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
        authorize(
            &self.inner,
            &request,
            Callers::Members,
            "AppendEntriesStream",
        )?;
        let state = (self.inner.clone(), request.into_inner(), self.stop.clone());
        // One request at a time: the next is read only when tonic asks for
        // the next response, so the stream never holds more than one
        // request's work. A malformed request ends the stream with its
        // status; the leader opens a new one. The server's stop ends it
        // between requests.
        let responses = futures::stream::unfold(Some(state), |state| async move {
            let (inner, mut requests, mut stop) = state?;
            let next = tokio::select! {
                next = requests.message() => next,
                _ = stop.wait_for(|stopped| *stopped) => return None,
            };
            match next {
                Ok(Some(request)) => {
                    let response = append(&inner, request).await;
                    let next = response.is_ok().then_some((inner, requests, stop));
                    Some((response, next))
                }
                // The leader closed its side.
                Ok(None) => None,
                Err(status) => Some((Err(status), None)),
            }
        });
        Ok(Response::new(Box::pin(responses)))
    }

    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::RaftResponse>, Status> {
        authorize(&self.inner, &request, Callers::Members, "Vote")?;
        let rpc = decode(&request.into_inner().payload).map_err(bad_request)?;
        reply(self.inner.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::RaftResponse>, Status> {
        authorize(&self.inner, &request, Callers::Members, "InstallSnapshot")?;
        let message = request.into_inner();
        self.inner.leader_contact.touch();
        let header: SnapshotChunkHeader = decode(&message.header).map_err(bad_request)?;
        let rpc = InstallSnapshotRequest::<TypeConfig<L>> {
            vote: header.vote,
            meta: header.meta,
            offset: header.offset,
            data: message.chunk,
            done: header.done,
        };
        reply(self.inner.raft.install_snapshot(rpc).await)
    }
}

struct AdminGrpc<L: StateMachineLogic> {
    inner: Arc<NodeInner<L>>,
}

impl<L: StateMachineLogic> AdminGrpc<L> {
    fn membership_response(&self, log_index: u64) -> pb::MembershipResponse {
        let status = self.inner.status();
        Membership {
            log_index,
            voters: status.voters,
            learners: status.learners,
        }
        .into()
    }
}

#[tonic::async_trait]
impl<L: StateMachineLogic> ClusterAdmin for AdminGrpc<L> {
    async fn initialize(
        &self,
        request: Request<pb::InitializeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        authorize(&self.inner, &request, Callers::Operators, "Initialize")?;
        let members: Vec<(NodeId, String)> = initial_members(request.into_inner())
            .into_iter()
            .map(|m| (m.node_id, m.addr))
            .collect();
        self.inner
            .initialize(&members)
            .await
            .map_err(|e| error_to_status(&e))?;
        Ok(Response::new(self.membership_response(0)))
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        authorize(&self.inner, &request, Callers::Operators, "AddLearner")?;
        let request = AddLearner::try_from(request.into_inner())
            .map_err(|e| error_to_status(&Error::InvalidArgument(e.to_string())))?;
        let index = self
            .inner
            .add_learner(
                request.member.node_id,
                &request.member.addr,
                request.wait_caught_up,
            )
            .await
            .map_err(|e| error_to_status(&e))?;
        Ok(Response::new(self.membership_response(index)))
    }

    async fn change_membership(
        &self,
        request: Request<pb::ChangeMembershipRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        authorize(
            &self.inner,
            &request,
            Callers::Operators,
            "ChangeMembership",
        )?;
        let request = ChangeMembership::from(request.into_inner());
        let index = self
            .inner
            .change_membership(request.voters, request.keep_removed_as_learners)
            .await
            .map_err(|e| error_to_status(&e))?;
        Ok(Response::new(self.membership_response(index)))
    }

    async fn remove_node(
        &self,
        request: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::MembershipResponse>, Status> {
        authorize(&self.inner, &request, Callers::Operators, "RemoveNode")?;
        let index = self
            .inner
            .remove_node(request.into_inner().node_id)
            .await
            .map_err(|e| error_to_status(&e))?;
        Ok(Response::new(self.membership_response(index)))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        authorize(
            &self.inner,
            &request,
            Callers::MembersAndOperators,
            "Status",
        )?;
        Ok(Response::new(self.inner.status().into()))
    }

    async fn trigger_snapshot(
        &self,
        request: Request<pb::TriggerSnapshotRequest>,
    ) -> Result<Response<pb::TriggerSnapshotResponse>, Status> {
        authorize(&self.inner, &request, Callers::Operators, "TriggerSnapshot")?;
        const SNAPSHOT_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(60);
        let snapshot_index = self
            .inner
            .trigger_snapshot(SNAPSHOT_WAIT_MAX)
            .await
            .map_err(|e| error_to_status(&e))?;
        Ok(Response::new(trigger_snapshot_response(snapshot_index)))
    }

    async fn read_local(
        &self,
        request: Request<pb::ReadLocalRequest>,
    ) -> Result<Response<pb::ReadLocalResponse>, Status> {
        authorize(&self.inner, &request, Callers::Operators, "ReadLocal")?;
        let key = request.into_inner().key;
        if key.is_empty() || key.len() > crate::logic::KEY_BYTES_MAX {
            return Err(error_to_status(&Error::InvalidArgument(format!(
                "key of {} bytes; want 1..={}",
                key.len(),
                crate::logic::KEY_BYTES_MAX
            ))));
        }
        if !self.inner.serving.is_serving() {
            return Err(error_to_status(&Error::Unavailable(
                "this node stopped uncleanly and has not caught up with a leader yet".into(),
            )));
        }
        let view = &self.inner.view;
        let applied_index = view
            .last_applied()
            .map_err(|e| error_to_status(&e))?
            .map(|l| l.index)
            .unwrap_or(0);
        let value = view.get(&key).map_err(|e| error_to_status(&e))?;
        Ok(Response::new(read_local_response(value, applied_index)))
    }

    async fn client_write(
        &self,
        request: Request<pb::ClientWriteRequest>,
    ) -> Result<Response<pb::ClientWriteResponse>, Status> {
        authorize(&self.inner, &request, Callers::Members, "ClientWrite")?;
        let request = request.into_inner();
        if request.command.len() > self.inner.config.command_bytes_max {
            return Err(error_to_status(&Error::InvalidArgument(format!(
                "command of {} bytes exceeds {}",
                request.command.len(),
                self.inner.config.command_bytes_max
            ))));
        }
        let command: L::Command = decode(&request.command).map_err(bad_request)?;
        let outcome = self
            .inner
            .write(command, request.forward_hops)
            .await
            .map_err(|e| error_to_status(&e))?;
        Ok(Response::new(client_write_response(
            encode(&outcome.response).map_err(|e| error_to_status(&e))?,
            outcome.log_index,
            outcome.leader_id,
        )))
    }
}
