//! Fast failover when the leader's process is gone.
//!
//! openraft 0.9 makes a follower wait out the leader lease
//! (`election_timeout_max`) *plus* an election timeout after the last
//! heartbeat before it campaigns: 450–600 ms with the default 150/300 ms
//! timeouts, before the election itself. When the leader's process has died,
//! its port refuses connections, which is a definite signal that no leader
//! is there (a partition or a slow leader times out instead, and is left to
//! openraft's timers).
//!
//! So each voter watches: when no AppendEntries has arrived for two
//! heartbeat intervals, it asks the leader for its Status with a short
//! deadline. If the connection is *refused*, the survivors compare their
//! logs (Status again) and the one with the longest log (lowest id among
//! equals) campaigns as soon as the other followers' leases on the dead
//! leader have probably expired (they refuse to vote before that; their last
//! heartbeat may have come a little after ours), and again every half
//! heartbeat, at most `CAMPAIGNS_MAX` times, until a leader is known. Only
//! that one node campaigns early, so the retries cannot split the vote, and
//! it is one the others will vote for. Safety is untouched (these
//! are ordinary elections, only started earlier): the election completes
//! about one lease after the last heartbeat instead of a lease plus a
//! randomised election timeout plus a tick.

use std::sync::Weak;
use std::time::Duration;
// tokio's clock: the wall clock in production, the simulated one in a
// simulation.
use tokio::time::Instant;

use openraft::ServerState;
use tokio::time::MissedTickBehavior;
use tollgate_proto::cluster::v1 as pb;
use tollgate_proto::cluster::v1::cluster_admin_client::ClusterAdminClient;

use crate::inner::NodeInner;
use crate::logic::StateMachineLogic;
use crate::types::NodeId;

/// Whether `addr` refuses connections (the process behind it is gone).
async fn refuses<L: StateMachineLogic>(
    inner: &NodeInner<L>,
    peer: NodeId,
    addr: &str,
    deadline: Duration,
) -> bool {
    let Ok(channel) = inner.pool.channel(peer, addr) else {
        return false;
    };
    let mut client = ClusterAdminClient::new(channel);
    let mut request = tonic::Request::new(pb::StatusRequest {});
    request.set_timeout(deadline);
    match tokio::time::timeout(deadline, client.status(request)).await {
        Ok(Err(status)) => status.code() == tonic::Code::Unavailable && connection_refused(&status),
        // Answered, or slow: not proof of death.
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// Whether `status` comes from a refused TCP connection. Other transport
/// failures are not proof that the process is gone: a TLS handshake that
/// fails (a certificate this node does not accept, during a rotation gone
/// wrong) is UNAVAILABLE too, and campaigning against a live leader for it
/// would only disrupt the cluster.
fn connection_refused(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = error.source();
    }
    false
}

/// An early campaign after the leader was found dead.
#[derive(Debug, Clone, Copy)]
struct Campaign {
    /// The dead leader.
    gone: NodeId,
    /// Not before this: the other followers' leases end about then.
    at: Instant,
    /// Whether this node is the one to campaign early.
    eligible: bool,
    /// Campaigns started so far.
    attempts: u32,
    last: Option<Instant>,
}

/// Whether this node should be the early candidate: it has the longest log
/// among the surviving voters that answer (a shorter log would be refused a
/// vote, and its ever higher terms would only delay the right candidate),
/// the lowest id among equals.
async fn is_best_candidate<L: StateMachineLogic>(
    inner: &NodeInner<L>,
    m: &openraft::RaftMetrics<NodeId, openraft::BasicNode>,
    gone: NodeId,
    deadline: Duration,
) -> bool {
    let mine = (m.last_log_index.unwrap_or(0), std::cmp::Reverse(inner.id));
    let membership = m.membership_config.membership();
    for peer in membership
        .voter_ids()
        .filter(|v| *v != gone && *v != inner.id)
    {
        let Some(addr) = membership.get_node(&peer).map(|n| n.addr.clone()) else {
            continue;
        };
        let Ok(channel) = inner.pool.channel(peer, &addr) else {
            continue;
        };
        let mut client = ClusterAdminClient::new(channel);
        let mut request = tonic::Request::new(pb::StatusRequest {});
        request.set_timeout(deadline);
        if let Ok(Ok(status)) = tokio::time::timeout(deadline, client.status(request)).await {
            let theirs = (status.into_inner().last_log_index, std::cmp::Reverse(peer));
            if theirs > mine {
                return false;
            }
        }
    }
    true
}

pub(crate) async fn run_watchdog<L: StateMachineLogic>(inner: Weak<NodeInner<L>>, timing: Timing) {
    // Check twice per heartbeat so that the campaign starts close to the
    // moment the other followers' leases expire.
    let period = timing.heartbeat / 2;
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut campaign: Option<Campaign> = None;
    loop {
        ticker.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let m = inner.raft.metrics().borrow().clone();
        if m.running_state.is_err() || m.state == ServerState::Shutdown {
            return;
        }
        let membership = m.membership_config.membership();
        let is_voter = membership.voter_ids().any(|v| v == inner.id);
        if m.state == ServerState::Leader || m.state == ServerState::Learner || !is_voter {
            campaign = None;
            continue;
        }
        match (m.current_leader, campaign) {
            (Some(leader), Some(c)) if leader != c.gone => {
                // A new leader is known.
                campaign = None;
                continue;
            }
            (Some(leader), None) if leader != inner.id => {
                let silent = inner.leader_contact.silent_for();
                if silent < timing.heartbeat * 2 {
                    continue;
                }
                let Some(addr) = membership.get_node(&leader).map(|n| n.addr.clone()) else {
                    continue;
                };
                if !refuses(&inner, leader, &addr, timing.heartbeat).await {
                    continue;
                }
                let eligible = is_best_candidate(&inner, &m, leader, timing.heartbeat).await;
                // The other followers heard the last heartbeat about when we
                // did; they refuse votes until a lease after it.
                let now = Instant::now();
                let last_heard = now.checked_sub(silent).unwrap_or(now);
                tracing::warn!(leader, %addr, eligible, "Leader refuses connections.");
                campaign = Some(Campaign {
                    gone: leader,
                    at: last_heard + timing.lease + LEASE_MARGIN,
                    eligible,
                    attempts: 0,
                    last: None,
                });
            }
            _ => {}
        }
        let Some(c) = campaign.as_mut() else { continue };
        if !c.eligible || c.attempts >= CAMPAIGNS_MAX || Instant::now() < c.at {
            continue;
        }
        // A campaign refused because a follower's lease had not quite run
        // out is retried shortly; a vote round trip is a few milliseconds.
        if c.last.is_some_and(|t| t.elapsed() < timing.retry) {
            continue;
        }
        c.last = Some(Instant::now());
        c.attempts += 1;
        tracing::info!(
            attempt = c.attempts,
            "Campaigning early: the leader is gone."
        );
        if inner.raft.trigger().elect().await.is_err() {
            return;
        }
    }
}

/// Early campaigns per dead leader; after that openraft's own timers decide
/// (so a wrong guess costs at most this many half-heartbeats).
const CAMPAIGNS_MAX: u32 = 8;

/// Slack added to the followers' lease before campaigning.
const LEASE_MARGIN: Duration = Duration::from_millis(10);

/// The timers the watchdog works with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// The leader's heartbeat period.
    pub heartbeat: Duration,
    /// openraft's leader lease: `election_timeout_max`.
    pub lease: Duration,
    /// Wait between two campaigns: half a heartbeat.
    pub retry: Duration,
}

#[cfg(test)]
mod tests {
    use super::connection_refused;
    use std::time::Duration;
    use tollgate_proto::cluster::v1 as pb;
    use tollgate_proto::cluster::v1::cluster_admin_client::ClusterAdminClient;
    use tollgate_tls::{
        ca, Allow, ClientAuth, Expect, Identity, Subject, Tls, TlsFiles, Transport,
    };

    async fn status_from(channel: tonic::transport::Channel) -> tonic::Status {
        let mut request = tonic::Request::new(pb::StatusRequest {});
        request.set_timeout(Duration::from_secs(5));
        ClusterAdminClient::new(channel)
            .status(request)
            .await
            .expect_err("nothing answers")
    }

    fn now() -> i64 {
        tollgate_clock::Clock::system().now_secs()
    }

    fn member(dir: &std::path::Path, ca_pem: &ca::Pem, id: u64) -> Transport {
        let subject = Subject::OriginNode(id);
        let pem = ca::issue(
            ca_pem,
            &ca::Request {
                identity: Identity::new("t.example", subject.clone()).unwrap(),
                dns: vec![],
                ips: vec![std::net::IpAddr::from([127, 0, 0, 1])],
                not_before: now() - 60,
                not_after: now() + 3600,
            },
        )
        .unwrap();
        let (cert, key) = ca::write(dir, &format!("n{id}"), &pem).unwrap();
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: Some(cert),
            key: Some(key),
        };
        Transport::Tls(Tls::load(files, Some(subject), now()).unwrap())
    }

    #[tokio::test]
    async fn only_a_refused_connection_is_proof_of_a_dead_leader() {
        // A port nothing listens on: refused.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_lazy();
        let status = status_from(channel).await;
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(connection_refused(&status), "{status:?}");

        // A live server whose certificate this node does not accept (it
        // names another node): UNAVAILABLE too, but not proof of death.
        let dir = tempfile::tempdir().unwrap();
        let ca_pem = ca::create_ca("t.example", now() - 60, now() + 3600).unwrap();
        ca::write(dir.path(), "ca", &ca_pem).unwrap();
        let server = member(dir.path(), &ca_pem, 3);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_stop, stop_rx) = tokio::sync::watch::channel(false);
        let incoming = tollgate_tls::listen(
            listener,
            &server,
            ClientAuth::required(vec![Allow::OriginNodes]),
            "raft",
            false,
            stop_rx,
        )
        .unwrap();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(tonic_health::server::health_reporter().1)
                .serve_with_incoming(incoming)
                .await
        });
        let client = member(dir.path(), &ca_pem, 1);
        let endpoint = client.endpoint(&format!("https://{addr}")).unwrap();
        let channel = client.lazy_channel(
            &endpoint,
            Expect::Peers(vec![Allow::Exactly(Subject::OriginNode(2))]),
            "raft",
        );
        let status = status_from(channel).await;
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(!connection_refused(&status), "{status:?}");
    }
}
