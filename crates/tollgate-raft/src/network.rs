//! The client side of the Raft transport over tonic.
//!
//! One lazily-connected `tonic::transport::Channel` per peer address is kept
//! in a [`ChannelPool`] and shared by every client to that peer (connection
//! reuse: HTTP/2 multiplexes the calls). A channel whose connection broke
//! reconnects on the next call; openraft waits between attempts to an
//! unreachable peer according to [`RaftNetwork::backoff`], which doubles from
//! `backoff_ms_min` to `backoff_ms_max`.

// openraft's RPCError is large; it is openraft's type and contract.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use tollgate_proto::cluster::v1 as pb;
use tollgate_proto::cluster::v1::raft_service_client::RaftServiceClient;
use tollgate_proto::convert::{
    append_entries_request, install_snapshot_request, raft_result_from_proto, vote_request,
};
use tollgate_tls::{Allow, Expect, Transport};
use tonic::transport::Channel;

use crate::codec::{decode, encode};
use crate::error::Error;
use crate::logic::StateMachineLogic;
use crate::types::{NodeId, TypeConfig};

/// The parts of a snapshot chunk other than its bytes, as sent in
/// `InstallSnapshotRequest.header`.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct SnapshotChunkHeader {
    pub vote: openraft::Vote<NodeId>,
    pub meta: crate::types::SnapshotMeta,
    pub offset: u64,
    pub done: bool,
}

/// Transport limits and timing.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// Largest gRPC message sent or accepted, in bytes.
    pub message_bytes_max: usize,
    /// Time allowed to establish a TCP connection.
    pub connect_timeout_ms: u64,
    /// First wait after a peer was found unreachable.
    pub backoff_ms_min: u64,
    /// Longest wait between attempts to an unreachable peer.
    pub backoff_ms_max: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            message_bytes_max: 8 * 1024 * 1024,
            connect_timeout_ms: 500,
            backoff_ms_min: 25,
            backoff_ms_max: 400,
        }
    }
}

/// Raft calls to one peer that may run out of time in a row, on one
/// connection, before the pool gives that connection up and dials anew.
///
/// A connection whose peer vanished without a reset (its machine lost
/// power and came back while this node was cut off, a middlebox dropped
/// the flow) swallows every call until TCP itself gives up, which takes
/// many minutes. The simulation found one (`tollgate-sim`, seed 211): a
/// leader's link to a follower restarted during a partition stayed dead
/// for the whole two minutes after the heal, since HTTP/2 keepalive pinged
/// only while idle streams allowed it (now `keep_alive_while_idle`, which
/// ends such a link within 15 s). Three calls in a row past their deadline
/// end it sooner: a fresh connection costs one handshake.
pub const TIMEOUTS_BEFORE_RECONNECT: u32 = 3;

/// A peer's channel and the calls that ran out of time on it in a row.
#[derive(Debug)]
struct PooledChannel {
    channel: Channel,
    timeouts_in_a_row: u32,
}

/// Shared, lazily-connected channels, one per peer (id and address).
#[derive(Debug)]
pub struct ChannelPool {
    channels: Mutex<HashMap<(NodeId, String), PooledChannel>>,
    config: NetworkConfig,
    transport: Transport,
    /// Which peers answer, for one report per outage.
    reachability: crate::quiet::Reachability,
}

impl ChannelPool {
    /// An empty pool whose channels are carried by `transport`.
    pub fn new(config: NetworkConfig, transport: Transport) -> Self {
        ChannelPool {
            channels: Mutex::new(HashMap::new()),
            config,
            transport,
            reachability: crate::quiet::Reachability::default(),
        }
    }

    /// The transport settings.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    /// The channel to member `peer` at `addr` (`host:port`), created on
    /// first use. Does not connect: the first call does. Over TLS the
    /// member must prove it is `peer` of this node's own cluster.
    pub fn channel(&self, peer: NodeId, addr: &str) -> Result<Channel, Error> {
        let mut channels = match self.channels.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key = (peer, addr.to_string());
        if let Some(pooled) = channels.get(&key) {
            return Ok(pooled.channel.clone());
        }
        let url = format!("{}://{addr}", self.transport.scheme());
        // Keepalive pings while idle too (the transport's default).
        let endpoint = self
            .transport
            .endpoint(&url)
            .map_err(|e| Error::InvalidArgument(format!("bad peer address {addr:?}: {e}")))?
            .connect_timeout(Duration::from_millis(self.config.connect_timeout_ms))
            .tcp_nodelay(true);
        let expect = match self.transport.identity().and_then(|me| me.sibling(peer)) {
            Some(sibling) => Expect::Peers(vec![Allow::Exactly(sibling.subject)]),
            // Plaintext (no identity to check), or a holder that is not a
            // node (a tool): any member of the trust domain's clusters.
            None => Expect::Peers(vec![Allow::OriginNodes, Allow::RegionNodes]),
        };
        let channel =
            endpoint.connect_with_connector_lazy(self.transport.connector(expect, "raft"));
        channels.insert(
            key,
            PooledChannel {
                channel: channel.clone(),
                timeouts_in_a_row: 0,
            },
        );
        Ok(channel)
    }

    /// A call to `peer` at `addr` answered, or failed otherwise than by
    /// running out of time (`timed_out: false`), or ran out of time
    /// (`true`). After [`TIMEOUTS_BEFORE_RECONNECT`] timeouts in a row the
    /// peer's channel is dropped, so the next call dials a new connection.
    pub fn record(&self, peer: NodeId, addr: &str, timed_out: bool) {
        let mut channels = match self.channels.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        let key = (peer, addr.to_string());
        let Some(pooled) = channels.get_mut(&key) else {
            return;
        };
        if !timed_out {
            pooled.timeouts_in_a_row = 0;
            return;
        }
        pooled.timeouts_in_a_row += 1;
        if pooled.timeouts_in_a_row >= TIMEOUTS_BEFORE_RECONNECT {
            channels.remove(&key);
            metrics::counter!("tollgate_raft_reconnects_total").increment(1);
            // DEBUG: while a peer is down this repeats every few calls;
            // the outage itself is reported once (`quiet::Reachability`).
            tracing::debug!(
                peer,
                addr,
                timeouts = TIMEOUTS_BEFORE_RECONNECT,
                "Raft calls to a peer kept running out of time; dialling a new connection."
            );
        }
    }
}

/// Builds a [`NetworkClient`] per peer for openraft.
pub struct NetworkFactory<L> {
    pool: Arc<ChannelPool>,
    _logic: PhantomData<fn() -> L>,
}

impl<L> NetworkFactory<L> {
    /// A factory drawing channels from `pool`.
    pub fn new(pool: Arc<ChannelPool>) -> Self {
        NetworkFactory {
            pool,
            _logic: PhantomData,
        }
    }
}

impl<L: StateMachineLogic> RaftNetworkFactory<TypeConfig<L>> for NetworkFactory<L> {
    type Network = NetworkClient<L>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        if let Err(e) = self.pool.channel(target, &node.addr) {
            tracing::warn!(target_node = target, addr = %node.addr, error = %e, "Peer address is unusable.");
        }
        NetworkClient {
            target,
            addr: node.addr.clone(),
            pool: self.pool.clone(),
            message_bytes_max: self.pool.config.message_bytes_max,
            backoff_ms_min: self.pool.config.backoff_ms_min,
            backoff_ms_max: self.pool.config.backoff_ms_max,
            stream: None,
            unary_only: false,
            _logic: PhantomData,
        }
    }
}

/// An open `AppendEntriesStream` to one peer: every request sent is
/// answered by one response, in order.
struct AppendStream {
    requests: tokio::sync::mpsc::Sender<pb::AppendEntriesRequest>,
    responses: tonic::Streaming<pb::RaftResponse>,
}

/// The Raft transport to one peer.
pub struct NetworkClient<L> {
    target: NodeId,
    addr: String,
    pool: Arc<ChannelPool>,
    message_bytes_max: usize,
    backoff_ms_min: u64,
    backoff_ms_max: u64,
    /// The stream AppendEntries go over, between calls. A call takes it
    /// out and puts it back only once answered: a call that fails, runs
    /// out of time or is dropped half-way drops it, so a late answer can
    /// never be read as the next call's. The next call opens a new one.
    stream: Option<AppendStream>,
    /// The peer answered the stream UNIMPLEMENTED (a member not yet
    /// upgraded): AppendEntries go as single calls from then on.
    unary_only: bool,
    _logic: PhantomData<fn() -> L>,
}

type RpcErr<E> = RPCError<NodeId, BasicNode, E>;

fn status_to_rpc<E: std::error::Error>(status: tonic::Status) -> RpcErr<E> {
    match status.code() {
        // Connection refused / reset / not yet up: openraft backs off.
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

fn local_error<E: std::error::Error>(e: Error) -> RpcErr<E> {
    RPCError::Network(NetworkError::new(&e))
}

fn decode_response<T: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
    target: NodeId,
    response: pb::RaftResponse,
) -> Result<T, RpcErr<E>> {
    match raft_result_from_proto(response) {
        Ok(Ok(bytes)) => decode(&bytes).map_err(local_error),
        Ok(Err(bytes)) => {
            let e: E = decode(&bytes).map_err(local_error)?;
            Err(RPCError::RemoteError(RemoteError::new(target, e)))
        }
        Err(e) => Err(local_error(Error::InvalidArgument(format!(
            "a malformed Raft response: {e}"
        )))),
    }
}

impl<L: StateMachineLogic> NetworkClient<L> {
    /// Notes whether the peer answered (any answer, an error of its own
    /// included) or could not be reached.
    fn observe<T, E: std::error::Error>(
        &self,
        result: Result<T, RpcErr<E>>,
    ) -> Result<T, RpcErr<E>> {
        let reach = &self.pool.reachability;
        match &result {
            Err(RPCError::Unreachable(e)) => {
                reach.failed(self.target, &self.addr, "unreachable", e)
            }
            Err(RPCError::Timeout(e)) => reach.failed(self.target, &self.addr, "timeout", e),
            Err(RPCError::Network(e)) => reach.failed(self.target, &self.addr, "network", e),
            Err(RPCError::PayloadTooLarge(_)) => {}
            Ok(_) | Err(RPCError::RemoteError(_)) => reach.answered(self.target, &self.addr),
        }
        result
    }

    /// The peer's client, on the pool's current channel (a new one after
    /// the pool gave a connection up).
    fn client<E: std::error::Error>(&self) -> Result<RaftServiceClient<Channel>, RpcErr<E>> {
        match self.pool.channel(self.target, &self.addr) {
            Ok(channel) => Ok(RaftServiceClient::new(channel)
                .max_decoding_message_size(self.message_bytes_max)
                .max_encoding_message_size(self.message_bytes_max)),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(
                &Error::InvalidArgument(e.to_string()),
            ))),
        }
    }
}

fn with_deadline<T>(message: T, option: &RPCOption) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(option.hard_ttl());
    request
}

/// Whether a call to a peer ran out of time: our own deadline (the outer
/// `Err`), tonic's for the request (`Cancelled`) or the server's
/// (`DeadlineExceeded`). Every caller on a pooled channel reports it with
/// [`ChannelPool::record`], so a dead connection is given up whichever
/// kind of call finds it.
pub(crate) fn ran_out_of_time<T, E>(outcome: &Result<Result<T, tonic::Status>, E>) -> bool {
    match outcome {
        Err(_) => true,
        Ok(Err(status)) => status_ran_out_of_time(status),
        Ok(Ok(_)) => false,
    }
}

fn status_ran_out_of_time(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Cancelled | tonic::Code::DeadlineExceeded
    )
}

/// A call's answer, or the deadline it ran past.
type Timed<T> = Result<Result<tonic::Response<T>, tonic::Status>, Duration>;

async fn timed<T>(
    option: &RPCOption,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Timed<T> {
    tokio::time::timeout(option.hard_ttl(), fut)
        .await
        .map_err(|_| option.hard_ttl())
}

impl<L> NetworkClient<L> {
    /// The call's result, after telling the pool whether it ran out of
    /// time.
    fn settle<T, E: std::error::Error>(&self, outcome: Timed<T>) -> Result<T, RpcErr<E>> {
        match outcome {
            Ok(Ok(response)) => {
                self.pool.record(self.target, &self.addr, false);
                Ok(response.into_inner())
            }
            Ok(Err(status)) => Err(self.failed(Ok(status))),
            Err(ttl) => Err(self.failed(Err(ttl))),
        }
    }

    /// A call that failed (a status, or the deadline it ran past): tells
    /// the pool whether it ran out of time and says why.
    fn failed<E: std::error::Error>(&self, failure: Result<tonic::Status, Duration>) -> RpcErr<E> {
        let timed_out = failure.as_ref().map_or(true, status_ran_out_of_time);
        self.pool.record(self.target, &self.addr, timed_out);
        match failure {
            Ok(status) => status_to_rpc(status),
            Err(ttl) => local_error(Error::Timeout(format!("Raft RPC exceeded {ttl:?}"))),
        }
    }
}

impl<L: StateMachineLogic> NetworkClient<L> {
    /// Sends `request` over the peer's append stream (opened first when
    /// there is none) and reads its answer; `Ok(Err(request))` when the
    /// peer serves no stream, for the caller to send it as one call.
    async fn append_streamed(
        &mut self,
        request: pb::AppendEntriesRequest,
        option: &RPCOption,
    ) -> Result<Result<pb::RaftResponse, pb::AppendEntriesRequest>, RpcErr<RaftError<NodeId>>> {
        let ttl = option.hard_ttl();
        let deadline = tokio::time::Instant::now() + ttl;
        let mut stream = match self.stream.take() {
            Some(stream) => stream,
            None => {
                let mut client = self.client()?;
                // One request in flight at a time: openraft awaits each.
                let (requests, outgoing) = tokio::sync::mpsc::channel(1);
                let opened = tokio::time::timeout_at(
                    deadline,
                    client.append_entries_stream(tokio_stream::wrappers::ReceiverStream::new(
                        outgoing,
                    )),
                )
                .await;
                match opened {
                    Ok(Ok(response)) => AppendStream {
                        requests,
                        responses: response.into_inner(),
                    },
                    Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
                        tracing::info!(
                            peer = self.target,
                            addr = %self.addr,
                            "The peer serves no append stream (an older version); sending appends as single calls."
                        );
                        self.unary_only = true;
                        return Ok(Err(request));
                    }
                    Ok(Err(status)) => return Err(self.failed(Ok(status))),
                    Err(_) => return Err(self.failed(Err(ttl))),
                }
            }
        };
        if stream.requests.send(request).await.is_err() {
            return Err(self.failed(Ok(tonic::Status::unavailable(
                "the append stream to the peer has ended",
            ))));
        }
        match tokio::time::timeout_at(deadline, stream.responses.message()).await {
            Ok(Ok(Some(response))) => {
                self.pool.record(self.target, &self.addr, false);
                self.stream = Some(stream);
                Ok(Ok(response))
            }
            Ok(Ok(None)) => Err(self.failed(Ok(tonic::Status::unavailable(
                "the peer ended the append stream",
            )))),
            Ok(Err(status)) => Err(self.failed(Ok(status))),
            Err(_) => Err(self.failed(Err(ttl))),
        }
    }
}

impl<L: StateMachineLogic> RaftNetwork<TypeConfig<L>> for NetworkClient<L> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig<L>>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr<RaftError<NodeId>>> {
        let entries = rpc.entries.len() as u64;
        let payload = encode(&rpc).map_err(local_error)?;
        // Leave room for the envelope.
        if payload.len() + 1024 > self.message_bytes_max && entries > 1 {
            return Err(RPCError::PayloadTooLarge(
                PayloadTooLarge::new_entries_hint(entries / 2),
            ));
        }
        let mut request = append_entries_request(payload);
        if !self.unary_only {
            match self.append_streamed(request, &option).await {
                Ok(Ok(response)) => {
                    return self.observe(decode_response(self.target, response));
                }
                Ok(Err(unsent)) => request = unsent,
                Err(error) => return self.observe(Err(error)),
            }
        }
        let mut client = self.observe(self.client())?;
        let response = timed(
            &option,
            client.append_entries(with_deadline(request, &option)),
        )
        .await;
        let response = self.settle(response);
        self.observe(response.and_then(|r| decode_response(self.target, r)))
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig<L>>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<RaftError<NodeId, InstallSnapshotError>>>
    {
        let header = SnapshotChunkHeader {
            vote: rpc.vote,
            meta: rpc.meta,
            offset: rpc.offset,
            done: rpc.done,
        };
        let header = encode(&header).map_err(local_error)?;
        let mut client = self.observe(self.client())?;
        let message = install_snapshot_request(header, rpc.data);
        let response = timed(
            &option,
            client.install_snapshot(with_deadline(message, &option)),
        )
        .await;
        let response = self.settle(response);
        self.observe(response.and_then(|r| decode_response(self.target, r)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RpcErr<RaftError<NodeId>>> {
        let payload = encode(&rpc).map_err(local_error)?;
        let mut client = self.observe(self.client())?;
        let response = timed(
            &option,
            client.vote(with_deadline(vote_request(payload), &option)),
        )
        .await;
        let response = self.settle(response);
        self.observe(response.and_then(|r| decode_response(self.target, r)))
    }

    fn backoff(&self) -> Backoff {
        let min = self.backoff_ms_min.max(1);
        let max = self.backoff_ms_max.max(min);
        Backoff::new((0..).map(move |attempt: u32| {
            Duration::from_millis(min.saturating_mul(1u64 << attempt.min(20)).min(max))
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use openraft::Vote;
    use tollgate_proto::cluster::v1::raft_service_server::{RaftService, RaftServiceServer};
    use tollgate_proto::convert::raft_response;

    use super::*;
    use crate::logic::KvLogic;

    /// A member of an older version: no append stream, single calls only,
    /// each answered `Success`.
    #[derive(Default)]
    struct OlderMember {
        streams: Arc<AtomicUsize>,
        calls: Arc<AtomicUsize>,
    }

    #[tonic::async_trait]
    impl RaftService for OlderMember {
        async fn append_entries(
            &self,
            _: tonic::Request<pb::AppendEntriesRequest>,
        ) -> Result<tonic::Response<pb::RaftResponse>, tonic::Status> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let ok = encode(&AppendEntriesResponse::<NodeId>::Success).expect("an answer");
            Ok(tonic::Response::new(raft_response(Ok(ok))))
        }

        type AppendEntriesStreamStream =
            futures::stream::Empty<Result<pb::RaftResponse, tonic::Status>>;

        async fn append_entries_stream(
            &self,
            _: tonic::Request<tonic::Streaming<pb::AppendEntriesRequest>>,
        ) -> Result<tonic::Response<Self::AppendEntriesStreamStream>, tonic::Status> {
            self.streams.fetch_add(1, Ordering::SeqCst);
            Err(tonic::Status::unimplemented("not served by this version"))
        }

        async fn vote(
            &self,
            _: tonic::Request<pb::VoteRequest>,
        ) -> Result<tonic::Response<pb::RaftResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }

        async fn install_snapshot(
            &self,
            _: tonic::Request<pb::InstallSnapshotRequest>,
        ) -> Result<tonic::Response<pb::RaftResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("not in this test"))
        }
    }

    fn heartbeat() -> AppendEntriesRequest<TypeConfig<KvLogic>> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: Vec::new(),
        }
    }

    #[tokio::test]
    async fn appends_to_a_member_without_the_stream_go_as_single_calls() {
        let member = OlderMember::default();
        let (streams, calls) = (member.streams.clone(), member.calls.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(RaftServiceServer::new(member))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let pool = Arc::new(ChannelPool::new(
            NetworkConfig::default(),
            Transport::Plaintext,
        ));
        let mut client = NetworkFactory::<KvLogic>::new(pool)
            .new_client(2, &BasicNode::new(addr.to_string()))
            .await;
        let option = RPCOption::new(Duration::from_secs(5));
        for n in 1..=3 {
            let answer = client
                .append_entries(heartbeat(), option.clone())
                .await
                .expect("an answer as a single call");
            assert!(
                matches!(answer, AppendEntriesResponse::Success),
                "{answer:?}"
            );
            assert_eq!(calls.load(Ordering::SeqCst), n);
        }
        // The stream was asked for once, and never again once refused.
        assert_eq!(streams.load(Ordering::SeqCst), 1);
    }
}
